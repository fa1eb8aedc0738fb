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
	lines := map[string]int{"a": 3, "a.b[0]": 7}
	for path, want := range map[string]int{"a": 3, "a.b[0]": 7, "a.b[0].c": 7, "a.b[1].c": 3, "z.y": 0, "": 0} {
		if got := Line(lines, path); got != want {
			t.Errorf("Line(%q) = %d, want %d", path, got, want)
		}
	}
}

func TestCommon(t *testing.T) {
	for _, c := range [][3]string{
		{"x.a[0].b", "x.a[0].c", "x.a[0]"},
		{"x.ab", "x.ac", "x"},
		{"x.a", "x.a.b", "x.a"},
		{"a", "b", ""},
	} {
		if got := Common(c[0], c[1]); got != c[2] {
			t.Errorf("Common(%q, %q) = %q, want %q", c[0], c[1], got, c[2])
		}
	}
}
