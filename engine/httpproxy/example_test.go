package httpproxy_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/engine/httpproxy"
	"github.com/reroute-go/reroute/policy"
)

// A gateway in front of two providers: the primary is rate limited, so the
// answer comes from the fallback.
func ExampleNew() {
	openai := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`)
	}))
	defer openai.Close()
	anthropic := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","model":"claude-3-5-sonnet","choices":[]}`)
	}))
	defer anthropic.Close()

	cfg, _, err := policy.Parse([]byte(`
model_providers:
  - model: openai/gpt-4o
    base_url: ` + openai.URL + `/v1
    access_key: sk-openai
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      on_status_codes: [{codes: [429], strategy: different_provider, max_attempts: 2}]
  - model: anthropic/claude-3-5-sonnet
    base_url: ` + anthropic.URL + `/v1
    access_key: sk-ant
    provider_interface: anthropic
`))
	if err != nil {
		panic(err)
	}
	eng, err := engine.New(cfg)
	if err != nil {
		panic(err)
	}
	defer eng.Close()
	h, err := httpproxy.New(eng)
	if err != nil {
		panic(err)
	}
	defer h.CloseIdleConnections()
	gw := httptest.NewServer(h)
	defer gw.Close()

	resp, err := http.Post(gw.URL+httpproxy.Path, "application/json",
		strings.NewReader(`{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}`))
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, resp.Header.Get("X-Reroute-Target"), resp.Header.Get("X-Reroute-Attempts"))
	fmt.Println(string(body))
	// Output:
	// 200 anthropic/claude-3-5-sonnet 2
	// {"id":"chatcmpl-1","object":"chat.completion","model":"claude-3-5-sonnet","choices":[]}
}
