package yamlkeys

import (
	"reflect"
	"strings"
	"testing"
)

func TestUnknown(t *testing.T) {
	type T struct {
		Backoff  int `yaml:"backoff"`
		MaxMs    int `yaml:"max_ms,omitempty"`
		Internal int `yaml:"-"`
		hidden   int
	}
	_ = T{}.hidden // unexported: never a key
	fields := Fields(reflect.TypeOf(T{}))
	if len(fields) != 2 {
		t.Fatalf("fields = %v, want backoff and max_ms", fields)
	}
	if got := Unknown("backof", fields); !strings.Contains(got, `did you mean "backoff"`) {
		t.Errorf("typo: %s", got)
	}
	if got := Unknown("zzzzzzzz", fields); !strings.Contains(got, "known keys here: backoff, max_ms") {
		t.Errorf("far: %s", got)
	}
	if Join("", "a") != "a" || Join("a", "b") != "a.b" {
		t.Error("Join")
	}
}

func TestLine(t *testing.T) {
	lines := Lines{"a": 3, "a.b[0]": 7, `m["x.y[1]"]`: 9}
	for path, want := range map[string]int{
		"a": 3, "a.b[0]": 7, "a.b[0].c": 7, "a.b[1].c": 3, "z.y": 0, "": 0,
		`m["x.y[1]"].c`: 9, // a key holding "." and "[" is one element
		`m["x.y[2]"].c`: 0,
	} {
		if got := lines.Line(path); got != want {
			t.Errorf("Line(%q) = %d, want %d", path, got, want)
		}
	}
	if got := Lines(nil).Line("a"); got != 0 {
		t.Errorf("nil Lines: %d", got)
	}
	if Index("a", 2) != "a[2]" || Key("a", `x"y`) != `a["x\"y"]` {
		t.Error("Index or Key")
	}
}
