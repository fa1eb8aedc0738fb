package bench

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// WriteSummary writes the human-readable summary of r (and of its
// baselines, side by side in their order) as a plain-text table.
func (r *Result) WriteSummary(w io.Writer) error {
	runs := append([]*Result{r}, r.Baselines...)
	var b strings.Builder
	fmt.Fprintf(&b, "scenario %s: %s mode, seed %d, %s requests", r.Scenario, r.Mode, r.Seed, thousands(r.Requests))
	if sc := r.scenario; sc != nil {
		if sc.Workload.Rate > 0 {
			fmt.Fprintf(&b, " arriving at %s/s", trimFloat(sc.Workload.Rate))
		} else {
			fmt.Fprintf(&b, ", %d in flight", sc.Workload.Concurrency)
		}
	}
	fmt.Fprintf(&b, ", %s of scenario time\n\n", seconds(r.ScenarioDurationMs))

	t := &table{}
	head := []string{""}
	for _, x := range runs {
		head = append(head, x.label(), "")
	}
	t.row(head...)
	t.rowf(runs, "succeeded", func(x *Result) (string, string) {
		return thousands(x.Succeeded), pct(x.SuccessRate)
	})
	t.rowf(runs, "failed", func(x *Result) (string, string) {
		rate := 0.0
		if x.Requests > 0 {
			rate = float64(x.Failed) / float64(x.Requests)
		}
		return thousands(x.Failed), pct(rate)
	})
	t.rowf(runs, "attempts", func(x *Result) (string, string) {
		return thousands(x.Attempts), strconv.FormatFloat(x.Amplification, 'f', 2, 64) + "×"
	})
	if slices.ContainsFunc(runs, func(x *Result) bool { return x.Hedges > 0 }) {
		t.rowf(runs, "  hedges", func(x *Result) (string, string) {
			note := ""
			if x.Requests > 0 && x.Hedges > 0 {
				note = pct(float64(x.Hedges) / float64(x.Requests))
			}
			return thousands(x.Hedges), note
		})
	}
	t.rowf(runs, "latency p50", func(x *Result) (string, string) { return millis(x.LatencyMs.P50), "" })
	t.rowf(runs, "        p90", func(x *Result) (string, string) { return millis(x.LatencyMs.P90), "" })
	t.rowf(runs, "        p99", func(x *Result) (string, string) { return millis(x.LatencyMs.P99), "" })
	t.rowf(runs, "        max", func(x *Result) (string, string) { return millis(x.LatencyMs.Max), "" })

	section := func(title string, m func(*Result) map[string]int64, share func(*Result) int64) {
		keys := map[string]bool{}
		for _, x := range runs {
			for k := range m(x) {
				keys[k] = true
			}
		}
		if len(keys) == 0 {
			return
		}
		t.row(title)
		names := make([]string, 0, len(keys))
		for k := range keys {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			t.rowf(runs, "  "+k, func(x *Result) (string, string) {
				v, ok := m(x)[k]
				if !ok {
					return "-", ""
				}
				note := ""
				if d := share(x); d > 0 && v > 0 {
					note = pct(float64(v) / float64(d))
				}
				return thousands(v), note
			})
		}
	}
	section("attempts by target", func(x *Result) map[string]int64 { return x.AttemptsByTarget }, func(x *Result) int64 { return x.Attempts })
	section("served by target", func(x *Result) map[string]int64 { return x.ServedByTarget }, func(x *Result) int64 { return x.Succeeded })
	section("failures by reason", func(x *Result) map[string]int64 { return x.FailuresByReason }, func(x *Result) int64 { return x.Failed })
	t.rowf(runs, "wall time", func(x *Result) (string, string) {
		return millis(x.Wall.DurationMs), rate(x.Wall.RequestsPerSecond)
	})
	t.write(&b)

	if len(r.Blocks) > 0 {
		b.WriteString("\nblocks seen in the shared health state (" + r.Policy + "):\n")
		type agg struct {
			n        int
			total    float64
			from, to float64
		}
		keys := []string{}
		m := map[string]*agg{}
		for _, s := range r.Blocks {
			k := s.ID + "\x00" + s.Kind
			a, ok := m[k]
			if !ok {
				a = &agg{from: s.FromMs}
				m[k] = a
				keys = append(keys, k)
			}
			a.n++
			a.total += s.ToMs - s.FromMs
			a.to = max(a.to, s.ToMs)
		}
		bt := &table{left: true}
		for _, k := range keys {
			id, kind, _ := strings.Cut(k, "\x00")
			a := m[k]
			spans := "1 span"
			if a.n != 1 {
				spans = strconv.Itoa(a.n) + " spans"
			}
			bt.row("  "+id, kind, spans, seconds(a.total)+" blocked", "between "+seconds(a.from)+" and "+seconds(a.to))
		}
		bt.write(&b)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// table lays out rows of cells: the label left-aligned, then for each run
// a value right-aligned and a note left-aligned after it. The first row is
// the header: a run's name right-aligned over its values. With left set
// every cell is left-aligned.
type table struct {
	rows [][]string
	left bool
}

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) rowf(runs []*Result, label string, f func(*Result) (value, note string)) {
	cells := []string{label}
	for _, x := range runs {
		v, n := f(x)
		cells = append(cells, v, n)
	}
	t.row(cells...)
}

func width(s string) int { return utf8.RuneCountInString(s) }

func (t *table) write(b *strings.Builder) {
	var widths []int
	for i, r := range t.rows {
		for j, c := range r {
			if i == 0 && !t.left && j > 0 {
				continue // a run's name: fitted below
			}
			if j >= len(widths) {
				widths = append(widths, 0)
			}
			widths[j] = max(widths[j], width(c))
		}
	}
	if !t.left && len(t.rows) > 0 {
		// A run's header is right-aligned over its values.
		for j := 1; j < len(widths) && j < len(t.rows[0]); j += 2 {
			widths[j] = max(widths[j], width(t.rows[0][j]))
		}
	}
	for _, r := range t.rows {
		var line strings.Builder
		for j, c := range r {
			pad := func(n int) { line.WriteString(strings.Repeat(" ", max(n, 0))) }
			switch {
			case j == 0:
				line.WriteString(c)
				pad(widths[0] - width(c))
			case t.left:
				line.WriteString("  ")
				line.WriteString(c)
				pad(widths[j] - width(c))
			case j%2 == 1:
				pad(4 + widths[j] - width(c))
				line.WriteString(c)
			default:
				line.WriteString("  ")
				line.WriteString(c)
				pad(widths[j] - width(c))
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " "))
		b.WriteString("\n")
	}
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func pct(f float64) string { return strconv.FormatFloat(100*f, 'f', 2, 64) + "%" }

func millis(ms float64) string {
	switch {
	case ms >= 10000:
		return strconv.FormatFloat(ms/1000, 'f', 1, 64) + " s"
	case ms >= 100:
		return thousands(int64(ms+0.5)) + " ms"
	}
	return strconv.FormatFloat(ms, 'f', 1, 64) + " ms"
}

func seconds(ms float64) string {
	return time.Duration(ms * float64(time.Millisecond)).Round(100 * time.Millisecond).String()
}

func rate(perSec float64) string {
	switch {
	case perSec >= 1e6:
		return strconv.FormatFloat(perSec/1e6, 'f', 2, 64) + "M req/s"
	case perSec >= 1e4:
		return strconv.FormatFloat(perSec/1e3, 'f', 0, 64) + "k req/s"
	}
	return strconv.FormatFloat(perSec, 'f', 0, 64) + " req/s"
}

func trimFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
