package httpproxy

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestReplaceModel(t *testing.T) {
	tests := []struct {
		name, body, model, want string
		ok                      bool
	}{
		{"plain", `{"model":"gpt-4o","messages":[]}`, "claude", `{"model":"claude","messages":[]}`, true},
		{"whitespace kept", "{ \"messages\" : [] ,\n\t\"model\"\t:\r\n \"gpt-4o\"  }\n", "claude", "{ \"messages\" : [] ,\n\t\"model\"\t:\r\n \"claude\"  }\n", true},
		{"escaped value", `{"model":"gpt\"4o\\\u00e9","x":1}`, "m", `{"model":"m","x":1}`, true},
		{"escaped key", `{"mod\u0065l":"gpt-4o","x":1}`, "m", `{"mod\u0065l":"m","x":1}`, true},
		{"nested model keys untouched", `{"messages":[{"model":"a"}],"tools":{"model":{"model":"b"}},"model":"gpt-4o","metadata":{"model":"gpt-4o"}}`, "m",
			`{"messages":[{"model":"a"}],"tools":{"model":{"model":"b"}},"model":"m","metadata":{"model":"gpt-4o"}}`, true},
		{"strings with braces and quotes", `{"content":"}{\"model\":\"x\"}][","model":"gpt-4o"}`, "m", `{"content":"}{\"model\":\"x\"}][","model":"m"}`, true},
		{"duplicate keys both replaced", `{"model":"a","x":[1,2],"model":"a"}`, "m", `{"model":"m","x":[1,2],"model":"m"}`, true},
		{"new value needs escaping", `{"model":"a"}`, "we\"ird\\/\n\u2028<&>", `{"model":"we\"ird\\/\n\u2028<&>"}`, true},
		{"model not a string", `{"model":4,"x":1}`, "m", "", false},
		{"model null", `{"model":null}`, "m", "", false},
		{"model an object", `{"model":{"name":"gpt-4o"}}`, "m", "", false},
		{"no model", `{"messages":[]}`, "m", "", false},
		{"not an object", `["model","gpt-4o"]`, "m", "", false},
		{"not JSON", `{"model":"gpt-4o"`, "m", "", false},
		{"trailing garbage", `{"model":"gpt-4o"} x`, "m", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ReplaceModel([]byte(tt.body), tt.model)
			if ok != tt.ok || string(got) != tt.want {
				t.Errorf("ReplaceModel = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
			if ok {
				checkModel(t, got, tt.model)
			}
		})
	}
}

func TestRewriteModel(t *testing.T) {
	for body, want := range map[string]string{
		`{"model": 4, "messages": [ 1, 2 ], "model": {"a":1}}`: `{"model":"m","messages":[ 1, 2 ],"model":"m"}`,
		`{ "messages": [] }`: `{"messages":[],"model":"m"}`,
		`{}`:                 `{"model":"m"}`,
	} {
		got, err := RewriteModel([]byte(body), "m")
		if err != nil || string(got) != want {
			t.Errorf("RewriteModel(%s) = %s, %v; want %s", body, got, err, want)
		}
	}
	if _, err := RewriteModel([]byte(`[1]`), "m"); err == nil {
		t.Error("RewriteModel of an array succeeded")
	}
}

func TestRequestModel(t *testing.T) {
	for body, want := range map[string]string{
		`{"model":"gpt-4o"}`:                         "gpt-4o",
		`{"model":"gpt-\u0034o"}`:                    "gpt-4o",
		`{"x":{"model":"no"},"model":"openai/gpt"}`:  "openai/gpt",
		`{"model":"a","model":"a"}`:                  "a",
		`{"model":"a","model":"b"}`:                  "!",
		`{"model":["a"]}`:                            "!",
		`{"messages":[{"model":"nested"}]}`:          "!",
		`{"model":"caf\u00e9","messages":[]}` + "\n": "café",
	} {
		got, err := requestModel([]byte(body))
		if want == "!" {
			if err == nil {
				t.Errorf("requestModel(%s) = %q, want an error", body, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("requestModel(%s) = %q, %v; want %q", body, got, err, want)
		}
	}
}

// checkModel asserts that out is a JSON object whose top-level model is
// model.
func checkModel(t testing.TB, out []byte, model string) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("result is not a JSON object: %v\n%q", err, out)
	}
	var got string
	if err := json.Unmarshal(m["model"], &got); err != nil || got != model {
		t.Fatalf("result's model = %s, want %q", m["model"], model)
	}
}

// FuzzReplaceModel: for any body, ReplaceModel either reports that it
// cannot replace in place, or returns a body that differs from the input
// only inside the top-level model values, decodes to the new model, and
// keeps every other member equal. It never panics.
func FuzzReplaceModel(f *testing.F) {
	for _, seed := range []string{
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`,
		"{ \"model\" :\t\"gpt-4o\" ,\n \"stream\": true }",
		`{"mod\u0065l":"x","model":"y"}`,
		`{"messages":[{"model":"n"}],"model":"gpt\"4o\\"}`,
		`{"a":{"b":[{"model":{"model":"deep"}}]},"model":"m"}`,
		`{"model":12.5e3}`,
		`{"model":null,"x":"\ud83d\ude00"}`,
		`{"model":"a","model":"b"}`,
		`{}`,
		`[]`,
		`{"model":"x"`,
		`"model"`,
	} {
		f.Add([]byte(seed), "anthropic-claude")
	}
	f.Fuzz(func(t *testing.T, body []byte, model string) {
		out, ok := ReplaceModel(body, model)
		if !ok {
			if out != nil {
				t.Fatalf("not ok but returned %q", out)
			}
			// The fallback must then work for every JSON object.
			var obj map[string]json.RawMessage
			if json.Unmarshal(body, &obj) == nil {
				re, err := RewriteModel(body, model)
				if err != nil {
					t.Fatalf("RewriteModel failed on a JSON object: %v", err)
				}
				checkRewritten(t, body, re, model)
			}
			return
		}
		var buf [4]member
		ms, found := findKey(body, "model", buf[:0])
		if !found || len(ms) == 0 {
			t.Fatalf("replaced a body with no top-level model: %q", body)
		}
		// Every byte outside the model values is unchanged.
		enc := appendJSONString(nil, model)
		var want []byte
		prev := 0
		for _, m := range ms {
			want = append(want, body[prev:m.valStart]...)
			want = append(want, enc...)
			prev = m.valEnd
		}
		want = append(want, body[prev:]...)
		if string(out) != string(want) {
			t.Fatalf("bytes outside the model value changed:\nin  %q\nout %q", body, out)
		}
		if !utf8ValidModel(model) {
			return // an invalid UTF-8 model decodes to U+FFFD; the bytes check above holds
		}
		checkRewritten(t, body, out, model)
	})
}

// checkRewritten asserts that out decodes to body with model replaced:
// the same members, equal values, and the new model.
func checkRewritten(t *testing.T, body, out []byte, model string) {
	t.Helper()
	var in, got map[string]any
	if err := json.Unmarshal(body, &in); err != nil {
		return // valid by json.Valid but with duplicate keys of other types: nothing more to compare
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("result is not JSON: %v\n%q", err, out)
	}
	if utf8ValidModel(model) && got["model"] != model {
		t.Fatalf("model = %v, want %q", got["model"], model)
	}
	delete(in, "model")
	delete(got, "model")
	if !reflect.DeepEqual(in, got) {
		t.Fatalf("other members changed:\nin  %v\nout %v", in, got)
	}
}

func utf8ValidModel(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }
