package httpproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/policy"
)

const (
	gpt    = "openai/gpt-4o"
	mini   = "openai/gpt-4o-mini"
	claude = "anthropic/claude-3-5-sonnet"
	mist   = "mistral/mistral-large"
)

// Every fake upstream gets its own key; the checks at the end of each test
// assert that no key ever reaches an upstream it was not configured for.
var keys = map[string]string{
	gpt:    "sk-proj-GPT4O-secret-1111",
	mini:   "sk-proj-MINI-secret-2222",
	claude: "sk-ant-CLAUDE-secret-3333",
	mist:   "mistral-MISTRAL-secret-4444",
}

// The client's own credentials, sent with every test request.
const (
	clientAuth = "Bearer sk-client-OWN-secret-9999"
	clientXKey = "client-XKEY-secret-8888"
)

// reply is one scripted answer of a fake upstream.
type reply func(w http.ResponseWriter, r *http.Request)

// recorded is one request an upstream received.
type recorded struct {
	path   string
	header http.Header
	body   []byte
}

// upstream is a fake provider on a real loopback socket: it records every
// request and answers the n-th with script[n] (the last one repeats).
type upstream struct {
	target string
	srv    *httptest.Server
	mu     sync.Mutex
	script []reply
	reqs   []recorded
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	n := len(u.reqs)
	u.reqs = append(u.reqs, recorded{path: r.URL.Path, header: r.Header.Clone(), body: body})
	var s reply
	if len(u.script) > 0 {
		s = u.script[min(n, len(u.script)-1)]
	}
	u.mu.Unlock()
	if s == nil {
		s = okJSON(modelName(u.target))
	}
	s(w, r)
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

func (u *upstream) requests() []recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]recorded(nil), u.reqs...)
}

func modelName(target string) string { return target[strings.IndexByte(target, '/')+1:] }

// fixture is a handler on a real front server, in front of one fake
// upstream per configured target.
type fixture struct {
	t       *testing.T
	cfg     *policy.Config
	e       *engine.Engine
	h       *Handler
	front   *httptest.Server
	client  *http.Client
	ups     map[string]*upstream
	release chan struct{} // closed first at cleanup: unblocks every waiting upstream
}

// newFixture builds the handler from yaml (model_providers without
// base_url; access_key defaults to keys[model] unless passthrough_auth).
func newFixture(t *testing.T, yaml string, script map[string][]reply, opts ...Option) *fixture {
	t.Helper()
	cfg, _, err := policy.Parse([]byte(strings.TrimSpace(yaml)))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	f := &fixture{t: t, cfg: cfg, ups: map[string]*upstream{}, release: make(chan struct{})}
	for i := range cfg.ModelProviders {
		mp := &cfg.ModelProviders[i]
		u := &upstream{target: mp.Model, script: script[mp.Model]}
		u.srv = httptest.NewServer(u)
		mp.BaseURL = u.srv.URL + "/v1"
		if mp.AccessKey == "" && !mp.PassthroughAuth {
			mp.AccessKey = keys[mp.Model]
		}
		f.ups[mp.Model] = u
	}
	for target := range script {
		if f.ups[target] == nil {
			t.Fatalf("script for %s, which is not configured", target)
		}
	}
	f.e, err = engine.New(cfg)
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	f.h, err = New(f.e, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.front = httptest.NewServer(f.h)
	f.client = &http.Client{Transport: &http.Transport{}}
	t.Cleanup(func() {
		close(f.release)
		f.front.Close()
		for _, u := range f.ups {
			u.srv.Close()
		}
		f.client.CloseIdleConnections()
		f.h.CloseIdleConnections()
		f.e.Close()
		f.checkCredentials()
	})
	return f
}

// checkCredentials asserts, on the upstream side, that every request a
// fake upstream received carried exactly its own credential in the header
// of its interface, and that no header value anywhere held another
// target's key or the client's own credentials (unless passthrough_auth).
func (f *fixture) checkCredentials() {
	t := f.t
	for i := range f.cfg.ModelProviders {
		mp := &f.cfg.ModelProviders[i]
		for n, rec := range f.ups[mp.Model].requests() {
			where := fmt.Sprintf("%s request %d", mp.Model, n+1)
			auth, xkey := rec.header.Values("Authorization"), rec.header.Values("X-Api-Key")
			anthropic := mp.ProviderInterface == "anthropic"
			switch {
			case mp.PassthroughAuth:
				if len(auth) != 1 || auth[0] != clientAuth {
					t.Errorf("%s: Authorization = %q, want the client's own", where, auth)
				}
			case anthropic:
				if len(xkey) != 1 || xkey[0] != mp.AccessKey || len(auth) != 0 {
					t.Errorf("%s: x-api-key = %q, Authorization = %q; want only x-api-key %q", where, xkey, auth, mp.AccessKey)
				}
			default:
				if len(auth) != 1 || auth[0] != "Bearer "+mp.AccessKey || len(xkey) != 0 {
					t.Errorf("%s: Authorization = %q, x-api-key = %q; want only Bearer %q", where, auth, xkey, mp.AccessKey)
				}
			}
			if anthropic && rec.header.Get("Anthropic-Version") != "2023-06-01" {
				t.Errorf("%s: anthropic-version = %q", where, rec.header.Get("Anthropic-Version"))
			}
			if !anthropic && rec.header.Get("Anthropic-Version") != "" {
				t.Errorf("%s: anthropic-version %q reached an openai-interface target", where, rec.header.Get("Anthropic-Version"))
			}
			for k, vs := range rec.header {
				for _, v := range vs {
					for target, key := range keys {
						if target != mp.Model && strings.Contains(v, key) {
							t.Errorf("%s: header %s carries the key of %s", where, k, target)
						}
					}
					if strings.Contains(v, clientXKey) || (!mp.PassthroughAuth && strings.Contains(v, clientAuth)) {
						t.Errorf("%s: header %s carries the client's credentials", where, k)
					}
				}
			}
		}
	}
}

// url is the front server's chat completions URL.
func (f *fixture) url() string { return f.front.URL + Path }

// post sends body as a chat completion request with the client's
// credentials and the extra header pairs.
func (f *fixture) post(body string, header ...string) *http.Response {
	f.t.Helper()
	resp, err := f.client.Do(f.request(body, header...))
	if err != nil {
		f.t.Fatalf("POST: %v", err)
	}
	return resp
}

func (f *fixture) request(body string, header ...string) *http.Request {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	f.t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url(), strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", clientAuth)
	req.Header.Set("X-Api-Key", clientXKey)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return req
}

// call posts body and reads the whole answer.
func (f *fixture) call(body string, header ...string) (*http.Response, string) {
	f.t.Helper()
	resp := f.post(body, header...)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("read answer: %v", err)
	}
	return resp, string(b)
}

// calls returns how many requests each target's upstream received.
func (f *fixture) calls() map[string]int {
	out := map[string]int{}
	for target, u := range f.ups {
		out[target] = u.count()
	}
	return out
}

func (f *fixture) wantCalls(want map[string]int) {
	f.t.Helper()
	got := f.calls()
	for target, n := range want {
		if got[target] != n {
			f.t.Errorf("%s called %d times, want %d (all: %v)", target, got[target], n, got)
		}
	}
}

// sync waits until the health actor has applied every report so far: the
// barrier between a request that created a global block and the next one.
func (f *fixture) sync() {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.e.Actor().Sync(ctx); err != nil {
		f.t.Fatal(err)
	}
}

// failures returns the engine's failure count of target.
func (f *fixture) failures(target string) int64 {
	return f.e.Counts(target).Failures
}

// chatBody is a client request naming model.
func chatBody(model string) string {
	return `{"model": "` + model + `", "messages": [{"role": "user", "content": "Say hello"}], "temperature": 0.2}`
}

// completion is a non-streaming answer naming the model that answered.
func completion(model string) string {
	return `{"id":"chatcmpl-abc123","object":"chat.completion","created":1767225600,"model":"` + model +
		`","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}`
}

// okJSON answers 200 with a completion naming model.
func okJSON(model string) reply {
	return respond(200, completion(model))
}

// respond answers status with a JSON body and header pairs.
func respond(status int, body string, header ...string) reply {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// chunk is one chat.completion.chunk event carrying content.
func chunk(model, content string) string {
	return `data: {"id":"chatcmpl-9zX1","object":"chat.completion.chunk","created":1767225600,"model":"` + model +
		`","choices":[{"index":0,"delta":{"content":"` + content + `"},"finish_reason":null}],"usage":null}` + "\n\n"
}

// choiceChunk is a chunk carrying content for choice index (n > 1).
func choiceChunk(model string, index int, content string) string {
	return `data: {"id":"chatcmpl-9zX1","object":"chat.completion.chunk","created":1767225600,"model":"` + model +
		`","choices":[{"index":` + itoa(index) + `,"delta":{"content":"` + content + `"},"finish_reason":null}],"usage":null}` + "\n\n"
}

// finish is the last chunk of choice index: an empty delta and
// finish_reason "stop".
func finish(model string, index int) string {
	return `data: {"id":"chatcmpl-9zX1","object":"chat.completion.chunk","created":1767225600,"model":"` + model +
		`","choices":[{"index":` + itoa(index) + `,"delta":{},"finish_reason":"stop"}],"usage":null}` + "\n\n"
}

// streamOf is a complete stream of model: chunks, a usage chunk, [DONE].
func streamOf(model string, contents ...string) []string {
	var evs []string
	for _, c := range contents {
		evs = append(evs, chunk(model, c))
	}
	evs = append(evs,
		`data: {"id":"chatcmpl-9zX1","object":"chat.completion.chunk","created":1767225600,"model":"`+model+`","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}`+"\n\n",
		done)
	return evs
}

// sse answers 200 text/event-stream, writing and flushing each event in
// turn. An event "" waits for gate (or the request's end) first.
func sse(gate <-chan struct{}, events ...string) reply {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		for _, ev := range events {
			if ev == "" {
				select {
				case <-gate:
				case <-r.Context().Done():
					return
				}
				continue
			}
			io.WriteString(w, ev)
			w.(http.Flusher).Flush()
		}
	}
}

// cut ends a reply by aborting the connection: the client side sees the
// response end in the middle.
func cut(inner reply) reply {
	return func(w http.ResponseWriter, r *http.Request) {
		inner(w, r)
		panic(http.ErrAbortHandler)
	}
}

// hang never answers: it waits for the request's end or gate.
func hang(gate <-chan struct{}) reply {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-gate:
		case <-r.Context().Done():
		}
	}
}

// reset closes the connection with a TCP reset before any response.
func reset() reply {
	return func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		conn.Close()
	}
}

// readEvent reads one SSE event (up to its blank line) from br.
func readEvent(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			t.Fatalf("read event: %v (read %q)", err, b.String())
		}
		if line == "\n" || line == "\r\n" {
			return b.String()
		}
	}
}

// delayed answers with inner after d: a slow upstream. The upstream is
// slow; no test waits on a clock for it.
func delayed(d time.Duration, inner reply) reply {
	return func(w http.ResponseWriter, r *http.Request) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			inner(w, r)
		case <-r.Context().Done():
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// do runs body through the handler's attempts as ServeHTTP does, and
// returns what the engine returned instead of rendering it: a test sees the
// ExhaustedError's fields, not only the body WriteHTTP makes of them.
func (f *fixture) do(body string) (engine.Result, error) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	f.t.Cleanup(cancel)
	r := f.request(body).WithContext(ctx)
	model, err := requestModel([]byte(body))
	if err != nil {
		f.t.Fatalf("requestModel: %v", err)
	}
	t, _ := f.e.Compiled().Resolve(model)
	if t < 0 {
		f.t.Fatalf("model %q is not configured", model)
	}
	rq := &request{h: f.h, r: r, id: requestID(r.Header), body: []byte(body), sent: model}
	rq.header()
	defer rq.release()
	return f.e.DoTarget(ctx, t, rq.call)
}
