package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/policy"
)

// Embedding the engine with the host's zap logger. At debug level the
// engine logs every decision of the request path; zap.NewExample writes
// them as JSON without timestamps.
func ExampleEngine_Do() {
	cfg, _, err := policy.Parse([]byte(`
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      on_status_codes: [{codes: [503], strategy: different_provider, max_attempts: 2}]
  - model: anthropic/claude-3-5-sonnet
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	eng, err := engine.New(cfg, engine.WithLogger(zap.NewExample()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer eng.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A stand-in for the upstream: the primary is unavailable.
	call := func(ctx context.Context, a engine.Attempt) policy.Outcome {
		if a.Target == "openai/gpt-4o" {
			return policy.Outcome{Status: http.StatusServiceUnavailable}
		}
		return policy.Outcome{Status: http.StatusOK}
	}
	res, err := eng.Do(ctx, "openai/gpt-4o", call)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("served by %s with %d after %d attempts\n", res.Target, res.Outcome.Status, res.Attempts)
	// Output:
	// {"level":"debug","msg":"reroute attempt failed","target":"openai/gpt-4o","error_type":"http_503","attempt":1,"retry_after":"0s"}
	// {"level":"debug","msg":"reroute fallback chosen","target":"anthropic/claude-3-5-sonnet","position":0}
	// {"level":"debug","msg":"reroute retry started","from":"openai/gpt-4o","to":"anthropic/claude-3-5-sonnet","attempt":2,"wait":"0s","fallback_position":0}
	// {"level":"debug","msg":"reroute retry succeeded","target":"anthropic/claude-3-5-sonnet","attempts":2}
	// served by anthropic/claude-3-5-sonnet with 200 after 2 attempts
}

// A Call to OpenAI-compatible upstreams: it sends the chat completion to
// the attempt's base_url with the attempt's model name and credential, and
// keeps the body of the answer the engine delivers. Here one local server
// plays both providers: the primary's account is rate limited, the
// fallback answers.
func ExampleEngine_Do_openAICompatible() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model string `json:"model"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") == "Bearer primary-key" {
			w.Header().Set("Retry-After", "20")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":{"message":"rate limited"}}`)
			return
		}
		fmt.Fprintf(w, `{"model":%q,"choices":[{"message":{"role":"assistant","content":"hello"}}]}`, req.Model)
	}))
	defer srv.Close()

	cfg, _, err := policy.Parse([]byte(fmt.Sprintf(`
model_providers:
  - model: openai/gpt-4o
    base_url: %[1]s/openai/v1
    access_key: primary-key
    retry_policy:
      fallback_models: [groq/llama-3.3-70b]
      on_status_codes: [{codes: [429], strategy: different_provider, max_attempts: 2}]
  - model: groq/llama-3.3-70b
    base_url: %[1]s/groq/v1
    access_key: fallback-key
`, srv.URL)))
	if err != nil {
		fmt.Println(err)
		return
	}
	eng, err := engine.New(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer eng.Close()

	client := srv.Client()
	prompt := `{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}]}`
	var body []byte // the delivered answer's body
	call := func(ctx context.Context, a engine.Attempt) policy.Outcome {
		payload := strings.Replace(prompt, `"gpt-4o"`, fmt.Sprintf("%q", a.Model), 1)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.Provider.BaseURL+"/chat/completions", strings.NewReader(payload))
		if err != nil {
			return policy.Outcome{Err: err}
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+a.Provider.AccessKey)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return policy.Outcome{Err: err}
		}
		ttfb := time.Since(start)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return policy.Outcome{Err: err, TTFB: ttfb, Total: time.Since(start)}
		}
		body = b
		return policy.Outcome{Status: resp.StatusCode, Header: resp.Header, TTFB: ttfb, Total: time.Since(start)}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := eng.Do(ctx, "openai/gpt-4o", call)
	if err != nil {
		fmt.Println(err)
		return
	}
	var answer struct {
		Model   string `json:"model"`
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("served by %s after %d attempts\n", res.Target, res.Attempts)
	fmt.Printf("%s says %q\n", answer.Model, answer.Choices[0].Message.Content)
	// Output:
	// served by groq/llama-3.3-70b after 2 attempts
	// llama-3.3-70b says "hello"
}

// Rendering an exhausted request as the gateway's HTTP answer (docs/behaviour.md#the-error-response).
func ExampleExhaustedError_WriteHTTP() {
	cfg, _, err := policy.Parse([]byte(`
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_status_codes: [{codes: [429], strategy: different_provider, max_attempts: 2}]
  - model: anthropic/claude-3-5-sonnet
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	eng, err := engine.New(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer eng.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Both providers are rate limited; the primary says for how long.
	call := func(ctx context.Context, a engine.Attempt) policy.Outcome {
		o := policy.Outcome{Status: http.StatusTooManyRequests}
		if a.Target == "openai/gpt-4o" {
			o.Header = http.Header{"Retry-After": {"7"}}
		}
		return o
	}
	_, err = eng.Do(ctx, "openai/gpt-4o", call)
	var ex *engine.ExhaustedError
	if !errors.As(err, &ex) {
		fmt.Println(err)
		return
	}
	rec := httptest.NewRecorder()
	ex.WriteHTTP(rec, "req-42")
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"), rec.Header().Get("X-Request-Id"))
	var out bytes.Buffer
	_ = json.Indent(&out, rec.Body.Bytes(), "", "  ")
	fmt.Println(out.String())
	// Output:
	// 429 application/json req-42
	// {
	//   "error": {
	//     "message": "All retry attempts exhausted",
	//     "type": "retry_exhausted",
	//     "attempts": [
	//       {
	//         "model": "openai/gpt-4o",
	//         "error_type": "http_429",
	//         "attempt": 1
	//       },
	//       {
	//         "model": "anthropic/claude-3-5-sonnet",
	//         "error_type": "http_429",
	//         "attempt": 2
	//       }
	//     ],
	//     "total_attempts": 2,
	//     "observed_max_retry_after_seconds": 7,
	//     "retry_budget_exhausted": false
	//   }
	// }
}
