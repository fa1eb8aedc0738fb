package health

import (
	"math"
	"slices"
	"testing"
	"time"
)

const sec = int64(time.Second)

// t0 is an arbitrary origin for explicit times.
const t0 = int64(1_000_000_000) * sec

// op is one step of a table-driven State test: an action at a time, and
// the answer expected of it.
type op struct {
	// action: "ra" BlockRetryAfter(id, at+d); "lat" LatencyEvent(id, at,
	// min, window, block); "expire" Expire(at); "look" Lookup(target=id, at).
	do     string
	id     int
	at     int64
	d      int64 // ra: until - at
	min    int
	window time.Duration
	block  time.Duration

	// Expectations. ra: changed; lat: blocked and until; look: status;
	// expire: the identifiers dropped.
	changed bool
	blocked bool
	until   int64
	status  Status
	dropped []int
}

// rel renders a time relative to t0.
func rel(at int64) string {
	if at == 0 {
		return "0"
	}
	return "t0+" + time.Duration(at-t0).String()
}

// sameStatus compares two answers as the engine reads them: blocked or
// not, Latency, and Until and Kind only when blocked (a Status that is not
// blocked may carry a deadline that has passed).
func sameStatus(got, want Status, now int64) bool {
	if got.Blocked(now) != want.Blocked(now) || got.Latency != want.Latency {
		return false
	}
	return !want.Blocked(now) || (got.Until == want.Until && got.Kind == want.Kind)
}

func TestState(t *testing.T) {
	lat := func(id int, at int64, blocked bool, until int64) op {
		return op{do: "lat", id: id, at: at, min: 3, window: 10 * time.Second, block: 60 * time.Second, blocked: blocked, until: until}
	}
	look := func(target int, at int64, st Status) op { return op{do: "look", id: target, at: at, status: st} }
	ra := func(id int, at, d int64, changed bool) op {
		return op{do: "ra", id: id, at: at, d: d, changed: changed}
	}
	notBlocked := Status{}

	tests := []struct {
		name string
		ops  []op
	}{
		{"max-expiration keeps the later deadline", []op{
			ra(tGPT4o, t0, 100*sec, true),
			ra(tGPT4o, t0, 50*sec, false),
			look(tGPT4o, t0+60*sec, Status{Until: t0 + 100*sec}),
			ra(tGPT4o, t0, 100*sec, false), // equal is not later
			ra(tGPT4o, t0, 150*sec, true),
			look(tGPT4o, t0+120*sec, Status{Until: t0 + 150*sec}),
		}},
		{"a block ending exactly now is over", []op{
			ra(tGPT4o, t0, 10*sec, true),
			look(tGPT4o, t0+10*sec-1, Status{Until: t0 + 10*sec}),
			look(tGPT4o, t0+10*sec, notBlocked),
		}},
		{"provider scope covers every model of the provider and nothing else", []op{
			ra(pOpenAI, t0, 30*sec, true),
			look(tGPT4o, t0, Status{Until: t0 + 30*sec}),
			look(tMini, t0, Status{Until: t0 + 30*sec}),
			look(tClaude, t0, notBlocked),
			look(tMistral, t0, notBlocked),
		}},
		{"model scope covers only the model", []op{
			ra(tMini, t0, 30*sec, true),
			look(tMini, t0, Status{Until: t0 + 30*sec}),
			look(tGPT4o, t0, notBlocked),
		}},
		{"the latest of own and provider deadlines wins", []op{
			ra(tGPT4o, t0, 30*sec, true),
			ra(pOpenAI, t0, 20*sec, true),
			look(tGPT4o, t0, Status{Until: t0 + 30*sec}),
			look(tMini, t0, Status{Until: t0 + 20*sec}),
			// Once the own block is over the provider's still does not cover past 20s.
			look(tGPT4o, t0+25*sec, Status{Until: t0 + 30*sec}),
		}},
		{"trigger window: events just inside count", []op{
			lat(tGPT4o, t0+1, false, 0),
			lat(tGPT4o, t0+5*sec, false, 0),
			lat(tGPT4o, t0+10*sec, true, t0+70*sec), // t0+1 > (t0+10s)-10s: inside
			look(tGPT4o, t0+10*sec, Status{Until: t0 + 70*sec, Kind: Latency, Latency: true}),
			look(tMini, t0+10*sec, notBlocked),
		}},
		{"trigger window: an event exactly window old is outside", []op{
			lat(tGPT4o, t0, false, 0),
			lat(tGPT4o, t0+5*sec, false, 0),
			lat(tGPT4o, t0+10*sec, false, 0), // t0 is not > (t0+10s)-10s
			lat(tGPT4o, t0+11*sec, true, t0+71*sec),
		}},
		{"the window is cleared when a block is created", []op{
			lat(tGPT4o, t0, false, 0),
			lat(tGPT4o, t0+1*sec, false, 0),
			lat(tGPT4o, t0+2*sec, true, t0+62*sec),
			lat(tGPT4o, t0+3*sec, false, 0),
			lat(tGPT4o, t0+4*sec, false, 0),
			lat(tGPT4o, t0+5*sec, true, t0+65*sec), // extends: max-expiration
		}},
		{"a late report stamped after now still counts", []op{
			lat(tGPT4o, t0+9*sec, false, 0),
			lat(tGPT4o, t0+8*sec, false, 0),
			lat(tGPT4o, t0+1*sec, true, t0+69*sec), // 8s and 9s are later than 1s-10s; the block runs from the latest
		}},
		{"latency blocks are lifted by time only", []op{
			{do: "lat", id: tGPT4o, at: t0, min: 1, window: time.Second, block: 60 * time.Second, blocked: true, until: t0 + 60*sec},
			ra(tGPT4o, t0, 5*sec, true), // a shorter Retry-After does not shorten it
			look(tGPT4o, t0+10*sec, Status{Until: t0 + 60*sec, Kind: Latency, Latency: true}),
			{do: "expire", at: t0 + 30*sec, dropped: []int{tGPT4o}}, // drops the retry-after only
			look(tGPT4o, t0+59*sec, Status{Until: t0 + 60*sec, Kind: Latency, Latency: true}),
			look(tGPT4o, t0+60*sec, notBlocked),
		}},
		{"a retry-after ending later than a latency block: kind retry_after, Latency still true", []op{
			{do: "lat", id: pOpenAI, at: t0, min: 1, window: time.Second, block: 10 * time.Second, blocked: true, until: t0 + 10*sec},
			ra(tMini, t0, 30*sec, true),
			look(tMini, t0+5*sec, Status{Until: t0 + 30*sec, Kind: RetryAfter, Latency: true}),
			look(tMini, t0+10*sec, Status{Until: t0 + 30*sec, Kind: RetryAfter, Latency: false}),
		}},
		{"equal deadlines: kind latency", []op{
			{do: "lat", id: tClaude, at: t0, min: 1, window: time.Second, block: 10 * time.Second, blocked: true, until: t0 + 10*sec},
			ra(pAnthropic, t0, 10*sec, true),
			look(tClaude, t0, Status{Until: t0 + 10*sec, Kind: Latency, Latency: true}),
		}},
		{"expiry at the boundary", []op{
			ra(tGPT4o, t0, 10*sec, true),
			ra(tClaude, t0, 11*sec, true),
			{do: "expire", at: t0 + 10*sec - 1},
			{do: "expire", at: t0 + 10*sec, dropped: []int{tGPT4o}},
			look(tClaude, t0+10*sec, Status{Until: t0 + 11*sec}),
			// After expiry a shorter block is accepted again.
			ra(tGPT4o, t0, 11*sec, true),
		}},
		{"minTriggers above the largest configured is clamped to it", []op{
			{do: "lat", id: tMistral, at: t0, min: 50, window: time.Minute, block: time.Minute},
			{do: "lat", id: tMistral, at: t0 + 1, min: 50, window: time.Minute, block: time.Minute},
			{do: "lat", id: tMistral, at: t0 + 2, min: 50, window: time.Minute, block: time.Minute, blocked: true, until: t0 + 2 + 60*sec},
		}},
		{"minTriggers 0 behaves as 1", []op{
			{do: "lat", id: tMistral, at: t0, min: 0, window: time.Minute, block: time.Minute, blocked: true, until: t0 + 60*sec},
		}},
		{"block 0 reaches the threshold but records nothing", []op{
			{do: "lat", id: tMistral, at: t0, min: 1, window: time.Minute, blocked: true},
			look(tMistral, t0, notBlocked),
		}},
		{"out-of-range identifiers are ignored", []op{
			ra(-1, t0, 10*sec, false),
			ra(numTestIDs, t0, 10*sec, false),
			{do: "lat", id: numTestIDs + 5, at: t0, min: 1, window: time.Second, block: time.Minute},
			look(-1, t0, notBlocked),
			look(pOpenAI, t0, notBlocked), // a provider id is not a target
		}},
		{"until ≤ 0 changes nothing", []op{
			ra(tGPT4o, 0, 0, false),
			ra(tGPT4o, -10, 0, false),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewState(testCompiled(t))
			for i, o := range tt.ops {
				switch o.do {
				case "ra":
					if got := s.BlockRetryAfter(o.id, o.at+o.d); got != o.changed {
						t.Fatalf("op %d: BlockRetryAfter(%d, %s) = %v, want %v", i, o.id, rel(o.at+o.d), got, o.changed)
					}
				case "lat":
					b, u := s.LatencyEvent(o.id, o.at, o.min, o.window, o.block)
					if b != o.blocked || u != o.until {
						t.Fatalf("op %d: LatencyEvent(%d, %s) = %v, %s; want %v, %s", i, o.id, rel(o.at), b, rel(u), o.blocked, rel(o.until))
					}
				case "look":
					if got := s.Lookup(o.id, o.at); !sameStatus(got, o.status, o.at) {
						t.Fatalf("op %d: Lookup(%d, %s) = %+v, want %+v", i, o.id, rel(o.at), got, o.status)
					}
					if got := s.Snapshot().Lookup(o.id, o.at); !sameStatus(got, o.status, o.at) {
						t.Fatalf("op %d: Snapshot().Lookup(%d, %s) = %+v, want %+v", i, o.id, rel(o.at), got, o.status)
					}
				case "expire":
					var ids []int
					for _, b := range s.Expire(o.at) {
						ids = append(ids, b.ID)
					}
					if !slices.Equal(ids, o.dropped) {
						t.Fatalf("op %d: Expire dropped %v, want %v", i, ids, o.dropped)
					}
				}
			}
		})
	}
}

func TestStateIgnoredCounted(t *testing.T) {
	s := NewState(testCompiled(t))
	s.BlockRetryAfter(-1, t0)
	s.BlockRetryAfter(numTestIDs, t0)
	s.LatencyEvent(math.MaxInt, t0, 1, time.Second, time.Second)
	s.Lookup(99, t0) // reads are not counted
	if got := s.Ignored(); got != 3 {
		t.Fatalf("Ignored = %d, want 3", got)
	}
	if got := s.NumIDs(); got != numTestIDs {
		t.Fatalf("NumIDs = %d, want %d", got, numTestIDs)
	}
}

func TestStateSizedByConfig(t *testing.T) {
	s := NewState(testCompiled(t))
	if s.k != 3 {
		t.Fatalf("ring capacity %d, want the largest min_triggers 3", s.k)
	}
	if s.maxWindow != 60*time.Second {
		t.Fatalf("maxWindow %v, want 60s", s.maxWindow)
	}
	if len(s.events) != numTestIDs*3 {
		t.Fatalf("%d event slots, want %d", len(s.events), numTestIDs*3)
	}
	// Many events on one identifier never grow anything.
	for i := range int64(10_000) {
		s.LatencyEvent(tMistral, t0+i*sec, 3, time.Hour, 0)
		s.BlockRetryAfter(tMistral, t0+i*sec)
	}
	if len(s.events) != numTestIDs*3 || cap(s.events) != numTestIDs*3 {
		t.Fatal("event storage grew")
	}
	if s.maxWindow != time.Hour {
		t.Fatalf("maxWindow %v, want the longest window seen, 1h", s.maxWindow)
	}
}

func TestStateExpireForgetsOldEvents(t *testing.T) {
	s := NewState(testCompiled(t)) // longest window 60s
	s.LatencyEvent(tGPT4o, t0, 3, 10*time.Second, time.Minute)
	s.LatencyEvent(tGPT4o, t0+30*sec, 3, 10*time.Second, time.Minute)
	s.Expire(t0 + 60*sec) // the event at t0 is exactly 60s old: dropped
	if s.count[tGPT4o] != 1 {
		t.Fatalf("%d events left, want 1", s.count[tGPT4o])
	}
	s.Expire(t0 + 90*sec)
	if s.count[tGPT4o] != 0 {
		t.Fatalf("%d events left, want 0", s.count[tGPT4o])
	}
}

func TestStateExpireReusesBuffer(t *testing.T) {
	s := NewState(testCompiled(t))
	for id := range numTestIDs {
		s.BlockRetryAfter(id, t0+sec)
	}
	first := s.Expire(t0 + sec)
	if len(first) != numTestIDs {
		t.Fatalf("dropped %d, want %d", len(first), numTestIDs)
	}
	want := Block{ID: pAnthropic, Name: "anthropic", Kind: RetryAfter, Until: t0 + sec}
	if first[pAnthropic] != want {
		t.Fatalf("got %+v, want %+v", first[pAnthropic], want)
	}
	for id := range numTestIDs {
		s.BlockRetryAfter(id, t0+2*sec)
	}
	if allocs := testing.AllocsPerRun(10, func() { s.Expire(t0 + 2*sec) }); allocs != 0 {
		t.Fatalf("Expire allocates %v times", allocs)
	}
}

func TestStateBlocks(t *testing.T) {
	s := NewState(testCompiled(t))
	s.BlockRetryAfter(pOpenAI, t0+10*sec)
	s.BlockRetryAfter(tClaude, t0+5*sec)
	s.LatencyEvent(tMistral, t0, 1, time.Second, 20*time.Second)
	got := s.Blocks(t0 + 5*sec)
	want := []Block{
		{ID: pOpenAI, Name: "openai", Kind: RetryAfter, Until: t0 + 10*sec},
		{ID: tMistral, Name: "mistral/mistral-large", Kind: Latency, Until: t0 + 20*sec},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Blocks = %+v, want %+v", got, want)
	}
}

func TestAddSaturates(t *testing.T) {
	if got := addSat(math.MaxInt64-5, time.Second); got != math.MaxInt64 {
		t.Fatalf("addSat = %d", got)
	}
	if got := addSat(10, 5); got != 15 {
		t.Fatalf("addSat = %d", got)
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{RetryAfter: "retry_after", Latency: "latency", 7: "Kind(7)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", k, got, want)
		}
	}
}
