package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reroute-go/reroute/policy"
)

var long = flag.Bool("gateway.long", false, "run the gateway tests at full length (TestPassiveHealthOutageFullLength, about 100 s)")

// outage is a primary that answers 503 for a while and then recovers, in
// front of a healthy fallback on another provider, with clients sending
// one request every spacing.
type outage struct {
	outage  time.Duration // the primary answers 503 until then, 200 after
	spacing time.Duration // between the starts of two client requests
	// The engine's passive_health cooldown and max_cooldown; 0 leaves
	// the block out of the configuration (the defaults).
	cooldown, maxCooldown time.Duration
	backoffBaseMS         int // same-model backoff: base_ms, with max_ms eight times it
}

// The figures: 503 for 60 s, then recovery; a request every 4 s;
// the default cooldowns (5 s doubling to 30 s) and the example
// configuration's backoff.
var fullLength = outage{outage: 60 * time.Second, spacing: 4 * time.Second, backoffBaseMS: 250}

// The same scenario with every length of time divided by 20.
var scaled = outage{
	outage: 3 * time.Second, spacing: 200 * time.Millisecond,
	cooldown: 250 * time.Millisecond, maxCooldown: 1500 * time.Millisecond,
	backoffBaseMS: 13,
}

// A flapping primary during an outage, with same_model_retries: 2: passive
// health ejects it, so that the outage costs each request at most one
// attempt to it (its probe) instead of three; every request is answered;
// the primary is used again soon after it recovers, and then serves
// everything.
func TestPassiveHealthOutage(t *testing.T) { scaled.run(t) }

func TestPassiveHealthOutageFullLength(t *testing.T) {
	if !*long {
		t.Skip("the outage at full length (60 s of 503, a request every 4 s) takes about 100 s; run it with: go test ./cmd/gateway/ -run TestPassiveHealthOutageFullLength -v -gateway.long")
	}
	fullLength.run(t)
}

// call is one request an upstream received: the client request it
// belongs to, when it arrived (since the scenario's start) and the status
// it was answered with.
type call struct {
	req    int
	at     time.Duration
	status int
}

func (c call) String() string {
	return fmt.Sprintf("%v: %d", c.at.Round(time.Millisecond), c.status)
}

func list(cs []call) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = c.String()
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// calls records every request an upstream receives.
type calls struct {
	mu   sync.Mutex
	list []call
}

func (c *calls) add(x call) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.list = append(c.list, x)
}

func (c *calls) all() []call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]call(nil), c.list...)
}

// reqNumber reads the client request number the test wrote into the first
// message ("request 7"), or -1.
func reqNumber(r *http.Request) int {
	var body struct {
		Messages []struct{ Content string }
	}
	b, _ := io.ReadAll(r.Body)
	if json.Unmarshal(b, &body) != nil || len(body.Messages) == 0 {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimPrefix(body.Messages[0].Content, "request "))
	if err != nil {
		return -1
	}
	return n
}

// result is what the client saw of one request.
type result struct {
	sent, latency time.Duration
	status        int
	target        string
	attempts      int // x-reroute-attempts
	primary       []call
	fallback      int
}

func (o outage) run(t *testing.T) {
	const primaryName, fallbackName = "openai/gpt-4o", "anthropic/claude-3-5-sonnet"
	if o.outage%o.spacing != 0 {
		// The recovery bound below counts on a request being sent at
		// the recovery and none in the spacing before it.
		t.Fatalf("outage %v is not a whole number of spacings %v", o.outage, o.spacing)
	}
	maxCooldown := o.maxCooldown
	if maxCooldown == 0 {
		maxCooldown = policy.DefaultMaxCooldown
	}
	// Enough requests to see the primary come back in the worst case
	// (its ejection ends at most max_cooldown after its last failure),
	// and serve a few more.
	n := int((o.outage+maxCooldown)/o.spacing) + 3

	// start is set, and begun closed, just before the first request: the
	// handlers wait on begun to read it.
	var start time.Time
	begun := make(chan struct{})
	var primaryCalls, fallbackCalls calls
	primary := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		<-begun
		at, req := time.Since(start), reqNumber(r)
		w.Header().Set("Content-Type", "application/json")
		if at < o.outage {
			primaryCalls.add(call{req, at, 503})
			w.WriteHeader(503)
			io.WriteString(w, `{"error":{"message":"The server is overloaded or not ready yet.","type":"server_error","param":null,"code":null}}`)
			return
		}
		primaryCalls.add(call{req, at, 200})
		answer("gpt-4o")(w, r)
	})
	fallback := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		<-begun
		fallbackCalls.add(call{reqNumber(r), time.Since(start), 200})
		answer("claude-3-5-sonnet")(w, r)
	})
	health := ""
	if o.cooldown > 0 {
		health = fmt.Sprintf("\nengine:\n  passive_health: {cooldown: %s, max_cooldown: %s}\n", o.cooldown, o.maxCooldown)
	}
	// examples/gateway.yaml's policy, with the default strategy written
	// out and two same-model retries (the configuration);
	// max_attempts leaves room for them and the failover.
	url, stop, logs := gateway(t, `
model_providers:
  - model: `+primaryName+`
    base_url: `+primary.URL+`/v1
    access_key: sk-test
    retry_policy:
      fallback_models: [`+fallbackName+`]
      default_strategy: different_provider
      same_model_retries: 2
      on_status_codes:
        - {codes: [429, 500, 502, 503, 504, 529], strategy: different_provider, max_attempts: 4}
      on_timeout: {strategy: different_provider, max_attempts: 2}
      backoff: {apply_to: same_model, base_ms: `+strconv.Itoa(o.backoffBaseMS)+`, max_ms: `+strconv.Itoa(8*o.backoffBaseMS)+`}
  - model: `+fallbackName+`
    base_url: `+fallback.URL+`/v1
    access_key: sk-ant-test
    provider_interface: anthropic
    retry_policy:
      fallback_models: [`+primaryName+`]
`+health)

	// One client request at a time, each started on a fixed schedule (a
	// request late because the one before it was slow starts at once).
	res := make([]result, n)
	start = time.Now()
	close(begun)
	for k := range n {
		if d := time.Until(start.Add(time.Duration(k) * o.spacing)); d > 0 {
			time.Sleep(d) // spacing requests apart, as the clients do
		}
		sent := time.Since(start)
		resp, body := post(t, url, `{"model":"gpt-4o","messages":[{"role":"user","content":"request `+strconv.Itoa(k)+`"}]}`)
		res[k] = result{sent: sent, latency: time.Since(start) - sent, status: resp.StatusCode,
			target: resp.Header.Get("X-Reroute-Target")}
		res[k].attempts, _ = strconv.Atoi(resp.Header.Get("X-Reroute-Attempts"))
		if resp.StatusCode != 200 || !strings.Contains(body, `"object":"chat.completion"`) {
			t.Errorf("request %d: status %d: %s", k, resp.StatusCode, body)
		}
	}
	if err := stop(); err != nil { // the engine's health actor has logged everything once it returns
		t.Errorf("run after stop: %v", err)
	}
	for _, c := range primaryCalls.all() {
		if c.req < 0 || c.req >= n {
			t.Fatalf("the primary got a request the test did not send: %+v", c)
		}
		res[c.req].primary = append(res[c.req].primary, c)
	}
	for _, c := range fallbackCalls.all() {
		if c.req < 0 || c.req >= n {
			t.Fatalf("the fallback got a request the test did not send: %+v", c)
		}
		res[c.req].fallback++
	}
	var table strings.Builder
	fmt.Fprintf(&table, "req  sent      primary attempts (at: status)          target                       attempts  latency\n")
	for k, r := range res {
		fmt.Fprintf(&table, "%3d  %-8v  %d %-36s %-28s %d         %v\n", k, r.sent.Round(time.Millisecond),
			len(r.primary), list(r.primary), r.target, r.attempts, r.latency.Round(100*time.Microsecond))
	}
	t.Logf("outage until %v, a request every %v, max_cooldown %v:\n%s", o.outage, o.spacing, maxCooldown, table.String())

	// Every answer came from the upstream the gateway names, and the
	// gateway counts the attempts the upstreams saw.
	for k, r := range res {
		want := fallbackName
		if len(r.primary) > 0 && r.primary[len(r.primary)-1].status == 200 {
			want = primaryName
		}
		if r.target != want || r.attempts != len(r.primary)+r.fallback {
			t.Errorf("request %d: x-reroute-target %q, x-reroute-attempts %d; the upstreams saw %d primary and %d fallback attempts",
				k, r.target, r.attempts, len(r.primary), r.fallback)
		}
	}

	// The start of the outage: the primary has no failures yet, so
	// requests 0 and 1 each try it 1 + same_model_retries = 3 times (the
	// engine holds a failure back while the request retries the same
	// target, so the fifth failure in a row, request 1's second, ejects
	// the primary only after its third was decided).
	for k := range 2 {
		if len(res[k].primary) != 3 {
			t.Errorf("request %d made %d primary attempts, want 3 (same_model_retries: 2, not yet ejected)", k, len(res[k].primary))
		}
	}
	// The rest of the outage: one primary attempt at most (a probe), most
	// requests none.
	var outageReqs, probes int
	for k := 2; k < n && res[k].sent < o.outage; k++ {
		outageReqs++
		switch len(res[k].primary) {
		case 0:
		case 1:
			probes++
		default:
			t.Errorf("request %d, during the outage after the ejection, made %d primary attempts: %s", k, len(res[k].primary), list(res[k].primary))
		}
	}
	if outageReqs == 0 || 2*probes >= outageReqs {
		t.Errorf("%d of the %d requests during the outage after the ejection probed the primary; want fewer than half", probes, outageReqs)
	}
	// The recovery: the first request to reach the primary after the
	// outage does so within max_cooldown of the recovery (the ejection
	// in force then began at the last failure, before the recovery, and
	// lasts at most max_cooldown; the request grid puts the next request
	// at most one spacing later, and the last failure at least one spacing
	// before the recovery). From then on the primary serves everything.
	back := -1
	for k, r := range res {
		if len(r.primary) > 0 && r.primary[0].at >= o.outage {
			back = k
			break
		}
	}
	if back < 0 {
		t.Fatalf("no request reached the primary after it recovered at %v (last request sent at %v)", o.outage, res[n-1].sent)
	}
	if after := res[back].primary[0].at - o.outage; after > maxCooldown {
		t.Errorf("the primary was used again %v after it recovered (request %d); want at most max_cooldown %v", after, back, maxCooldown)
	}
	for k := back; k < n; k++ {
		if r := res[k]; len(r.primary) != 1 || r.primary[0].status != 200 || r.fallback != 0 {
			t.Errorf("request %d, after the primary came back at request %d: %d primary attempts %s, %d fallback", k, back, len(r.primary), list(r.primary), r.fallback)
		}
	}

	// The health actor's account: one ejection, one more for each
	// failed probe, each at most max_cooldown long, and one recovery.
	var ejected, again, recovered int
	var account []string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var e struct {
			Msg, ID   string
			Ejections int
			TS        float64 // seconds
			Duration  float64 // seconds
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		switch e.Msg {
		case "target ejected", "target ejected again", "target recovered":
		default:
			continue
		}
		if e.ID != primaryName {
			t.Errorf("the health actor logged %s", line)
		}
		at := time.Duration(e.TS*float64(time.Second)) - time.Duration(start.UnixNano())
		entry := fmt.Sprintf("%v %s", at.Round(time.Millisecond), e.Msg)
		if e.Ejections > 0 {
			entry += fmt.Sprintf(" (ejection %d, for %v)", e.Ejections, time.Duration(e.Duration*float64(time.Second)).Round(time.Millisecond))
		}
		account = append(account, entry)
		switch e.Msg {
		case "target ejected":
			ejected++
		case "target ejected again":
			again++
		case "target recovered":
			recovered++
		}
		if d := time.Duration(e.Duration * float64(time.Second)); d > maxCooldown {
			t.Errorf("ejected for %v, more than max_cooldown %v: %s", d, maxCooldown, line)
		}
	}
	t.Logf("the health actor:\n%s", strings.Join(account, "\n"))
	if ejected != 1 || again != probes || recovered != 1 {
		t.Errorf(`logged "target ejected" %d times, "target ejected again" %d, "target recovered" %d; want 1, %d (the failed probes), 1`,
			ejected, again, recovered, probes)
	}
}
