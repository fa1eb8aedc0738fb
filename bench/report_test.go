package bench

import (
	"regexp"
	"strings"
	"testing"
)

// Every block in the timeline's blocks lane is drawn in its kind's colour,
// with its kind in the hover title: an ejection must not pass for a
// Retry-After block. flapping holds Retry-After blocks and ejections on the
// same target, primary-outage latency blocks and ejections.
func TestReportBlockColours(t *testing.T) {
	// Written out rather than taken from the constants, so that a kind
	// drawn in another kind's colour fails here.
	want := map[string]string{
		"retry_after": "#f28e2b",
		"latency":     "#b07aa1",
		"ejected":     "#4e79a7",
	}
	title := map[string]string{
		"retry_after": "Retry-After block",
		"latency":     "latency block",
		"ejected":     "ejected",
	}
	// A bar of the blocks lane: its fill and its hover title.
	bar := regexp.MustCompile(`fill="(#[0-9a-f]{6})" fill-opacity="0\.9"><title>([^<]*?) [0-9.hms]+–[0-9.hms]+</title>`)
	for _, name := range []string{"flapping.yaml", "primary-outage.yaml"} {
		r := mustSimulate(t, mustSample(t, name), Options{}, "")
		var b strings.Builder
		if err := r.WriteReport(&b); err != nil {
			t.Fatal(err)
		}
		page := b.String()
		spans := map[string]int{}
		for _, s := range r.Blocks {
			spans[s.Kind]++
		}
		drawn := map[string]int{}
		for _, m := range bar.FindAllStringSubmatch(page, -1) {
			kind := ""
			for k, l := range title {
				if m[2] == l {
					kind = k
				}
			}
			if kind == "" {
				t.Errorf("%s: a block titled %q", name, m[2])
				continue
			}
			if m[1] != want[kind] {
				t.Errorf("%s: a bar titled %q drawn in %s, want %s", name, m[2], m[1], want[kind])
			}
			drawn[kind]++
		}
		if spans["ejected"] == 0 {
			t.Errorf("%s: no ejection to draw: %v", name, r.Blocks)
		}
		for k, n := range spans {
			if drawn[k] != n {
				t.Errorf("%s: %d %s bars for %d spans", name, drawn[k], k, n)
			}
		}
		for k, c := range want {
			if !strings.Contains(page, `fill="`+c+`" fill-opacity="0.75"/><text`) || !strings.Contains(page, ">"+title[k]+"</text>") {
				t.Errorf("%s: the legend lacks %q in %s", name, title[k], c)
			}
		}
	}
	seen := map[string]string{}
	for k, c := range want {
		if o, ok := seen[c]; ok {
			t.Errorf("%s and %s share %s", k, o, c)
		}
		seen[c] = k
	}
}
