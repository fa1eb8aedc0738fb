package health

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/reroute-go/reroute/policy"
)

// refModel is a deliberately naive model of State: maps and slices, every
// answer recomputed from scratch, no rings, no folding. The differential
// tests check that State, its Snapshot and this model agree.
type refModel struct {
	numTargets int
	provider   []int // target → provider identifier
	numIDs     int
	k          int // largest min_triggers: the clamp of minTriggers
	maxWindow  time.Duration
	blocks     map[refKey]int64
	events     map[int][]int64 // every event since the last clear, unbounded
	names      []string
	ej         map[int]*refEject // passive health, by identifier with a rule
}

// refEject is the reference's passive health of one identifier: the
// failures since the last success or ejection, and the ejections so far.
type refEject struct {
	rule     *policy.EjectionRule
	failures int
	ejected  []int64 // end of each consecutive ejection; empty = healthy
	claim    int64
	fails    []int64 // times of every failure counted
	okAt     int64   // latest success
}

type refKey struct {
	id   int
	kind Kind
}

func newRef(c *policy.Compiled) *refModel {
	m := &refModel{
		numTargets: c.NumTargets(),
		numIDs:     c.NumIDs(),
		k:          1,
		blocks:     map[refKey]int64{},
		events:     map[int][]int64{},
	}
	for t := range c.NumTargets() {
		m.provider = append(m.provider, c.ProviderID(t))
	}
	for id := range c.NumIDs() {
		m.names = append(m.names, c.IDName(id))
	}
	for _, r := range c.Rules {
		if r != nil && r.Latency != nil {
			m.k = max(m.k, r.Latency.MinTriggers)
			m.maxWindow = max(m.maxWindow, r.Latency.Window)
		}
	}
	m.ej = map[int]*refEject{}
	for t, r := range c.Ejection {
		if r == nil {
			continue
		}
		if id := c.ID(t, r.Scope); m.ej[id] == nil {
			m.ej[id] = &refEject{rule: r}
		}
	}
	return m
}

func (m *refModel) failure(id int, now int64) (bool, int64) {
	e := m.ej[id]
	if e == nil {
		return false, 0
	}
	if n := len(e.ejected); n > 0 {
		if now < e.ejected[n-1] {
			return false, e.ejected[n-1]
		}
		u := now + int64(cooldown(e.rule, int32(n+1), id, now))
		e.ejected, e.claim = append(e.ejected, u), 0
		return true, u
	}
	if now < e.okAt {
		return false, 0
	}
	e.fails = append(e.fails, now)
	e.failures++
	if e.failures < e.rule.Consecutive {
		return false, 0
	}
	u := now + int64(cooldown(e.rule, 1, id, now))
	e.failures, e.ejected, e.claim = 0, []int64{u}, 0
	return true, u
}

func (m *refModel) success(id int, now int64) bool {
	e := m.ej[id]
	if e == nil {
		return false
	}
	e.okAt = max(e.okAt, now)
	later := len(e.fails) > 0 && slices.Max(e.fails) > now // every failure ever counted
	if !later {
		e.failures = 0
	} else if e.failures > 0 {
		e.failures = 1
	}
	if n := len(e.ejected); n == 0 || now < e.ejected[n-1] {
		return false
	}
	e.ejected, e.claim = nil, 0
	return true
}

func (m *refModel) claim(id int, now, until int64) bool {
	e := m.ej[id]
	if e == nil || len(e.ejected) == 0 || now < e.ejected[len(e.ejected)-1] || now < e.claim {
		return false
	}
	e.claim = until
	return true
}

func (m *refModel) blockRetryAfter(id int, until int64) bool {
	if id < 0 || id >= m.numIDs {
		return false
	}
	key := refKey{id, RetryAfter}
	if until > m.blocks[key] {
		m.blocks[key] = until
		return true
	}
	return false
}

func (m *refModel) latencyEvent(id int, now int64, minTriggers int, window, block time.Duration) (bool, int64) {
	if id < 0 || id >= m.numIDs {
		return false, 0
	}
	if window < 1 {
		window = 1
	}
	if window > m.maxWindow {
		m.maxWindow = window
	}
	need := minTriggers
	if need < 1 {
		need = 1
	}
	if need > m.k {
		need = m.k
	}
	m.events[id] = append(m.events[id], now)
	n := 0
	for _, e := range m.events[id] {
		if e > now-int64(window) {
			n++
		}
	}
	if n < need {
		return false, 0
	}
	last := slices.Max(m.events[id])
	delete(m.events, id)
	key := refKey{id, Latency}
	if block > 0 {
		if u := last + int64(block); u > m.blocks[key] {
			m.blocks[key] = u
		}
	}
	return true, m.blocks[key]
}

func (m *refModel) covers(t int) []int { return []int{t, m.provider[t]} }

func (m *refModel) lookup(t int, now int64) Status {
	var st Status
	if t < 0 || t >= m.numTargets {
		return st
	}
	for _, id := range m.covers(t) {
		for _, k := range []Kind{RetryAfter, Latency} {
			u, ok := m.blocks[refKey{id, k}]
			if !ok || u <= now {
				continue
			}
			if k == Latency {
				st.Latency = true
			}
			if u > st.Until || (u == st.Until && k == Latency) {
				st.Until, st.Kind = u, k
			}
		}
	}
	for _, id := range m.covers(t) {
		e := m.ej[id]
		if e == nil {
			continue
		}
		if e.failures > 0 || len(e.ejected) > 0 {
			st.Suspect = true
		}
		if n := len(e.ejected); n > 0 && (!st.Ejected || e.ejected[n-1] > st.EjectedUntil) {
			st.Ejected, st.EjectedID, st.EjectedUntil = true, id, e.ejected[n-1]
		}
	}
	return st
}

func (m *refModel) clear(t int) bool {
	if t < 0 || t >= m.numTargets {
		return true
	}
	for _, id := range m.covers(t) {
		for _, k := range []Kind{RetryAfter, Latency} {
			if _, ok := m.blocks[refKey{id, k}]; ok {
				return false
			}
		}
		if e := m.ej[id]; e != nil && (e.failures > 0 || len(e.ejected) > 0) {
			return false
		}
	}
	return true
}

func (m *refModel) expire(now int64) []Block {
	var out []Block
	for key, u := range m.blocks {
		if u <= now {
			out = append(out, Block{ID: key.id, Name: m.names[key.id], Kind: key.kind, Until: u})
			delete(m.blocks, key)
		}
	}
	for id, evs := range m.events {
		var keep []int64
		for _, e := range evs {
			if e > now-int64(m.maxWindow) {
				keep = append(keep, e)
			}
		}
		m.events[id] = keep
	}
	sortBlocks(out)
	return out
}

func (m *refModel) live(now int64) []Block {
	var out []Block
	for key, u := range m.blocks {
		if u > now {
			out = append(out, Block{ID: key.id, Name: m.names[key.id], Kind: key.kind, Until: u})
		}
	}
	for id, e := range m.ej {
		if n := len(e.ejected); n > 0 && e.ejected[n-1] > now {
			out = append(out, Block{ID: id, Name: m.names[id], Kind: Ejected, Until: e.ejected[n-1], Ejections: n})
		}
	}
	sortBlocks(out)
	return out
}

func sortBlocks(bs []Block) {
	slices.SortFunc(bs, func(a, b Block) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.ID, b.ID))
	})
}

// source yields the choices of a differential run: from a seeded generator
// or from fuzz bytes.
type source interface {
	// intn returns a value in [0, n); ok is false when the source is spent.
	intn(n int) (v int, ok bool)
}

type randSource struct {
	r    *rand.Rand
	left int
}

func (s *randSource) intn(n int) (int, bool) {
	if s.left <= 0 {
		return 0, false
	}
	s.left--
	return s.r.IntN(n), true
}

type byteSource struct{ b []byte }

func (s *byteSource) intn(n int) (int, bool) {
	if len(s.b) == 0 {
		return 0, false
	}
	v := int(s.b[0])
	s.b = s.b[1:]
	if n > 256 && len(s.b) > 0 {
		v = v<<8 | int(s.b[0])
		s.b = s.b[1:]
	}
	return v % n, true
}

// diffStats counts what a differential run exercised, so that a test can
// tell a vacuous run from a meaningful one.
type diffStats struct {
	triggers int // latency thresholds reached
	blocked  int // target lookups that were blocked
	latency  int // of which covered by a latency block
	ejected  int // ejections
	probes   int // claims granted
}

// differential applies the operations chosen by src to a State and to the
// reference model and fails at the first difference. Times move on a grid
// of half seconds so that deadlines often fall exactly on now.
func differential(t *testing.T, c *policy.Compiled, src source) (st diffStats) {
	t.Helper()
	s := NewState(c)
	m := newRef(c)
	now := int64(1_000_000_000) * int64(time.Second)
	half := int64(time.Second / 2)
	ids := c.NumIDs()
	windows := []time.Duration{0, time.Second, 10 * time.Second, 60 * time.Second, 90 * time.Second}
	blocksD := []time.Duration{0, time.Second, 5 * time.Second, 60 * time.Second}
	step := 0
	for {
		op, ok := src.intn(10)
		if !ok {
			return st
		}
		step++
		switch op {
		case 0: // time passes
			d, _ := src.intn(40)
			now += int64(d) * half
		case 1: // a Retry-After block, sometimes already over, sometimes out of range
			id, _ := src.intn(ids + 2)
			d, _ := src.intn(130)
			until := now + int64(d-10)*half
			got, want := s.BlockRetryAfter(id-1, until), m.blockRetryAfter(id-1, until)
			if got != want {
				t.Fatalf("step %d: BlockRetryAfter(%d, %d) = %v, reference %v", step, id-1, until, got, want)
			}
		case 2, 3: // a latency event, sometimes a little late or early
			id, _ := src.intn(ids + 2)
			skew, _ := src.intn(9)
			mt, _ := src.intn(5)
			wi, _ := src.intn(len(windows))
			bi, _ := src.intn(len(blocksD))
			at := now + int64(skew-6)*half
			gb, gu := s.LatencyEvent(id-1, at, mt, windows[wi], blocksD[bi])
			wb, wu := m.latencyEvent(id-1, at, mt, windows[wi], blocksD[bi])
			if gb {
				st.triggers++
			}
			if gb != wb || gu != wu {
				t.Fatalf("step %d: LatencyEvent(%d, %d, %d, %v, %v) = %v %d, reference %v %d",
					step, id-1, at, mt, windows[wi], blocksD[bi], gb, gu, wb, wu)
			}
		case 4: // expiry
			got := slices.Clone(s.Expire(now))
			sortBlocks(got)
			if want := m.expire(now); !slices.Equal(got, want) {
				t.Fatalf("step %d: Expire(%d) = %v, reference %v", step, now, got, want)
			}
		case 5:
			if got, want := s.Blocks(now), m.live(now); !slices.Equal(got, want) {
				t.Fatalf("step %d: Blocks(%d) = %v, reference %v", step, now, got, want)
			}
		case 6, 7: // a failure that counts for passive health
			id, _ := src.intn(ids + 2)
			ge, gu := s.Failure(id-1, now)
			we, wu := m.failure(id-1, now)
			if ge {
				st.ejected++
			}
			if ge != we || gu != wu {
				t.Fatalf("step %d: Failure(%d, %d) = %v %d, reference %v %d", step, id-1, now, ge, gu, we, wu)
			}
		case 8: // a success
			id, _ := src.intn(ids + 2)
			if got, want := s.Success(id-1, now), m.success(id-1, now); got != want {
				t.Fatalf("step %d: Success(%d, %d) = %v, reference %v", step, id-1, now, got, want)
			}
		case 9: // a probe's claim
			id, _ := src.intn(ids + 2)
			d, _ := src.intn(20)
			until := now + int64(d)*half
			got, want := s.Claim(id-1, now, until), m.claim(id-1, now, until)
			if got {
				st.probes++
			}
			if got != want {
				t.Fatalf("step %d: Claim(%d, %d, %d) = %v, reference %v", step, id-1, now, until, got, want)
			}
		}
		snap := s.Snapshot()
		for tg := -1; tg <= c.NumTargets(); tg++ {
			want := m.lookup(tg, now)
			if want.Blocked(now) {
				st.blocked++
				if want.Latency {
					st.latency++
				}
			}
			for i, got := range [2]Status{s.Lookup(tg, now), snap.Lookup(tg, now)} {
				if !sameStatus(got, want, now) {
					t.Fatalf("step %d: %s.Lookup(%d, %d) = %+v, reference %+v", step, [2]string{"State", "Snapshot"}[i], tg, now, got, want)
				}
			}
			if got, want := snap.Clear(tg), m.clear(tg); got != want {
				t.Fatalf("step %d: Snapshot.Clear(%d) = %v, reference %v", step, tg, got, want)
			}
			if snap.Clear(tg) && snap.Lookup(tg, now).Blocked(now) {
				t.Fatalf("step %d: target %d is clear but blocked", step, tg)
			}
		}
	}
}

// noLatencyConfig has no on_high_latency anywhere: rings of one event and
// no configured window.
const noLatencyConfig = `
model_providers:
  - model: a/x
  - model: a/y
  - model: b/z
  - model: solo
`

// withEjection gives c's targets assorted passive-health rules: short
// thresholds and cooldowns so that a run ejects, probes and recovers often,
// one target with its provider's scope, one with none.
func withEjection(c *policy.Compiled) *policy.Compiled {
	rules := []*policy.EjectionRule{
		{Consecutive: 2, Cooldown: time.Second, MaxCooldown: 4 * time.Second, Scope: policy.ScopeModel},
		nil,
		{Consecutive: 3, Cooldown: 2 * time.Second, MaxCooldown: 30 * time.Second, Scope: policy.ScopeProvider},
		{Consecutive: 1, Cooldown: 500 * time.Millisecond, MaxCooldown: 500 * time.Millisecond, Scope: policy.ScopeModel},
	}
	cc := *c
	cc.Ejection = make([]*policy.EjectionRule, c.NumTargets())
	for t := range cc.Ejection {
		cc.Ejection[t] = rules[t%len(rules)]
	}
	return &cc
}

func TestDifferential(t *testing.T) {
	for name, doc := range map[string]string{"latency": testConfig, "no-latency": noLatencyConfig} {
		t.Run(name, func(t *testing.T) {
			c := withEjection(compiled(t, doc))
			seeds := uint64(200)
			if testing.Short() {
				seeds = 5
			}
			var total diffStats
			for seed := range seeds {
				st := differential(t, c, &randSource{r: rand.New(rand.NewPCG(seed, 0x5eed)), left: 2000})
				total.triggers += st.triggers
				total.blocked += st.blocked
				total.latency += st.latency
				total.ejected += st.ejected
				total.probes += st.probes
			}
			t.Logf("%+v", total)
			if total.triggers == 0 || total.blocked == 0 || total.latency == 0 || total.ejected == 0 || total.probes == 0 {
				t.Fatalf("vacuous run: %+v", total)
			}
		})
	}
}
