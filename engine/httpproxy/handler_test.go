package httpproxy

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/policy"
)

// Bad input gets a 4xx OpenAI-shaped error, and no upstream sees it.
func TestBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
  - model: azure/gpt-4o
  - model: anthropic/claude-3-5-sonnet
    provider_interface: anthropic
`, nil, WithMaxBodyBytes(1024))
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		status int
		param  string
		code   string
	}{
		{name: "not JSON", body: `{"model": "gpt-4o",`, status: 400, code: "invalid_json"},
		{name: "not an object", body: `["model", "gpt-4o"]`, status: 400, code: "invalid_json"},
		{name: "no model", body: `{"messages": [{"role": "user", "content": "hi", "model": "nested"}]}`, status: 400, param: "model", code: "missing_model"},
		{name: "model not a string", body: `{"model": 4, "messages": []}`, status: 400, param: "model", code: "invalid_model"},
		{name: "model given twice, differently", body: `{"model": "openai/gpt-4o", "messages": [], "model": "anthropic/claude-3-5-sonnet"}`, status: 400, param: "model", code: "invalid_model"},
		{name: "unknown model", body: chatBody("gpt-5-turbo"), status: 404, param: "model", code: "model_not_found"},
		{name: "ambiguous bare name", body: chatBody("gpt-4o"), status: 400, param: "model", code: "ambiguous_model"},
		{name: "over the size limit", body: `{"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "` + strings.Repeat("a", 1100) + `"}]}`, status: 413, code: "request_too_large"},
		{name: "empty body", body: ``, status: 400, code: "invalid_json"},
		{name: "wrong method", method: http.MethodGet, status: 405, code: "method_not_allowed"},
		{name: "wrong path", path: "/v1/completions", body: chatBody("openai/gpt-4o"), status: 404, code: "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := f.request(tt.body)
			if tt.method != "" {
				req.Method = tt.method
			}
			if tt.path != "" {
				req.URL.Path = tt.path
			}
			resp, err := f.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e struct {
				Error struct {
					Message string  `json:"message"`
					Type    string  `json:"type"`
					Param   *string `json:"param"`
					Code    *string `json:"code"`
				} `json:"error"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatalf("body: %v", err)
			}
			if resp.StatusCode != tt.status || e.Error.Type != "invalid_request_error" || e.Error.Message == "" ||
				e.Error.Code == nil || *e.Error.Code != tt.code || (tt.param == "") != (e.Error.Param == nil) ||
				(e.Error.Param != nil && *e.Error.Param != tt.param) {
				t.Errorf("status %d, error %+v; want %d, code %s, param %q", resp.StatusCode, e.Error, tt.status, tt.code, tt.param)
			}
			if resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("X-Request-Id") == "" {
				t.Errorf("headers %v", resp.Header)
			}
		})
	}
	f.wantCalls(map[string]int{gpt: 0, "azure/gpt-4o": 0, claude: 0})
}

// The client names the primary by target id or by a bare model name that
// one target alone has; the primary gets the model name it knows.
func TestModelNames(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
  - model: anthropic/claude-3-5-sonnet
    provider_interface: anthropic
`, nil)
	for _, tc := range []struct{ model, target, sent string }{
		{"gpt-4o", gpt, chatBody("gpt-4o")},
		{"openai/gpt-4o", gpt, chatBody("gpt-4o")},
		{"claude-3-5-sonnet", claude, chatBody("claude-3-5-sonnet")},
	} {
		resp, body := f.call(chatBody(tc.model))
		if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != tc.target {
			t.Errorf("model %q: status %d, target %q: %s", tc.model, resp.StatusCode, resp.Header.Get("X-Reroute-Target"), body)
			continue
		}
		reqs := f.ups[tc.target].requests()
		if got := string(reqs[len(reqs)-1].body); got != tc.sent {
			t.Errorf("model %q: upstream got %s, want %s", tc.model, got, tc.sent)
		}
	}
}

// Credentials: each target gets its own, in its interface's header; the
// client's never leave the gateway except to a passthrough_auth target.
// (Every fixture checks this on the upstream side at cleanup; this test
// walks a request across all three kinds.)
func TestCredentials(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet, openai/gpt-4o-mini]
      on_status_codes: [{codes: [429], strategy: different_provider, max_attempts: 3}]
  - model: anthropic/claude-3-5-sonnet
    provider_interface: anthropic
    retry_policy: {fallback_models: [openai/gpt-4o-mini], on_status_codes: [{codes: [429], strategy: different_provider, max_attempts: 2}]}
  - model: openai/gpt-4o-mini
    passthrough_auth: true
`, map[string][]reply{gpt: {openaiRateLimited("")}, claude: {respond(429, claude429)}})
	resp, body := f.call(chatBody("gpt-4o"), "Anthropic-Version", "2099-01-01", "Api-Key", "azure-client-key", "OpenAI-Organization", "org-client", "X-Custom", "kept")
	if resp.StatusCode != 429 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	f.wantCalls(map[string]int{gpt: 1, claude: 1, mini: 0})
	// Then the passthrough target as the primary, after anthropic fails.
	resp, body = f.call(`{"model":"anthropic/claude-3-5-sonnet","messages":[]}`)
	if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != mini {
		t.Fatalf("status %d, target %q: %s", resp.StatusCode, resp.Header.Get("X-Reroute-Target"), body)
	}
	for target, u := range f.ups {
		for _, rec := range u.requests() {
			if rec.header.Get("Api-Key") != "" || rec.header.Get("X-Custom") != "kept" && target == gpt {
				t.Errorf("%s: api-key %q, x-custom %q", target, rec.header.Get("Api-Key"), rec.header.Get("X-Custom"))
			}
			if rec.header.Get("Anthropic-Version") == "2099-01-01" {
				t.Errorf("%s: the client's anthropic-version was forwarded", target)
			}
		}
	}
	if got := f.ups[gpt].requests()[0].header.Get("Openai-Organization"); got != "org-client" {
		t.Errorf("other client headers are kept: openai-organization = %q", got)
	}
}

// x-request-id is kept, or generated, and the same on every attempt and
// on the answer.
func TestRequestID(t *testing.T) {
	t.Parallel()
	f := newFixture(t, twoTargets(`{on_status_codes: [{codes: [429], strategy: different_provider, max_attempts: 2}]}`),
		map[string][]reply{gpt: {openaiRateLimited("")}})
	resp, _ := f.call(chatBody("gpt-4o"), "X-Request-Id", "client-req-42")
	if got := resp.Header.Get("X-Request-Id"); got != "client-req-42" {
		t.Errorf("answer x-request-id = %q", got)
	}
	if got := resp.Header.Get("X-Reroute-Upstream-Request-Id"); got != "" {
		t.Errorf("x-reroute-upstream-request-id = %q for an upstream that sent none", got)
	}
	resp, _ = f.call(chatBody("gpt-4o"))
	gen := resp.Header.Get("X-Request-Id")
	if len(gen) != 32 {
		t.Errorf("generated x-request-id = %q", gen)
	}
	// Request 1 went gpt → claude; request 2 ends at claude too
	// (directly if the first 429's reset header blocked gpt meanwhile).
	if got := f.ups[gpt].requests()[0].header.Get("X-Request-Id"); got != "client-req-42" {
		t.Errorf("primary's x-request-id = %q", got)
	}
	c := f.ups[claude].requests()
	if len(c) != 2 || c[0].header.Get("X-Request-Id") != "client-req-42" || c[1].header.Get("X-Request-Id") != gen {
		t.Errorf("secondary's requests: %d, ids %q", len(c), []string{c[0].header.Get("X-Request-Id"), c[len(c)-1].header.Get("X-Request-Id")})
	}
}

// Response headers pass through; the handler adds its own.
func TestResponseHeaders(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
`, map[string][]reply{gpt: {respond(200, completion("gpt-4o-2024-08-06"), "X-Ratelimit-Remaining-Requests", "4987", "Openai-Processing-Ms", "120", "X-Request-Id", "req_up_1")}})
	resp, body := f.call(chatBody("gpt-4o"))
	if body != completion("gpt-4o-2024-08-06") {
		t.Errorf("body = %s, want the upstream's bytes", body)
	}
	h := resp.Header
	if h.Get("X-Ratelimit-Remaining-Requests") != "4987" || h.Get("Openai-Processing-Ms") != "120" ||
		h.Get("X-Reroute-Upstream-Request-Id") != "req_up_1" || h.Get("X-Reroute-Target") != gpt ||
		h.Get("X-Reroute-Attempts") != "1" || h.Get("Content-Length") != itoa(len(body)) {
		t.Errorf("headers %v", h)
	}
}

// A closed engine answers 503; New refuses a configuration without
// base_url.
func TestClosedEngineAndNew(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
`, nil)
	f.e.Close()
	resp, body := f.call(chatBody("gpt-4o"))
	if resp.StatusCode != 503 || !strings.Contains(body, "gateway_closed") {
		t.Errorf("status %d: %s", resp.StatusCode, body)
	}
	f.wantCalls(map[string]int{gpt: 0})

	cfg, _, err := policy.Parse([]byte("model_providers:\n  - model: openai/gpt-4o\n  - model: anthropic/claude\n    base_url: ftp://x\n"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	_, err = New(e)
	if err == nil || !strings.Contains(err.Error(), "model_providers[0].base_url") || !strings.Contains(err.Error(), "model_providers[1].base_url") {
		t.Errorf("New = %v, want both base_url problems", err)
	}
	if _, err := New(nil); err == nil {
		t.Error("New(nil) succeeded")
	}
}
