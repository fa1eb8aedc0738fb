package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/policy"
)

// epoch is virtual time zero, in unix nanoseconds: 2023-11-14T22:13:20Z.
// It is not 0 because the engine reads 0 as "not set" (deadlines, the
// time budget's start), and it is a plausible date so that an HTTP-date
// Retry-After means something.
const epoch = int64(1_700_000_000) * int64(time.Second)

// Options tune a run. The zero value runs the scenario as written.
type Options struct {
	// Requests overrides workload.requests when > 0.
	Requests int
	// Seed overrides the scenario's seed when not nil.
	Seed *uint64
	// Progress, when not nil, is called from the run's goroutine about
	// every ProgressEvery of wall time (default 1 s), and once at the end.
	Progress      func(Progress)
	ProgressEvery time.Duration
	// Replicas runs the engine as that many replicas (sim mode only),
	// each with its own health state; requests arrive at them in turn.
	// 0 and 1 mean one. Share makes their facts reach each other
	// ShareDelay after they are made (see replicas.go); without it each
	// learns on its own.
	Replicas   int
	Share      bool
	ShareDelay time.Duration
	// ProbeLockTTL, with Share, models the fleet's probe lock with that
	// TTL (see replicas.go); 0 lets every replica probe on its own.
	ProbeLockTTL time.Duration

	// onReplica, when not nil, sees every step of passive health of a run
	// with several replicas (or one, when set), for tests that instrument
	// one (replicaEvent).
	onReplica func(replicaEvent)
}

// Progress is the state of a run in progress.
type Progress struct {
	Policy    string        // "reroute", or the baseline's name (BaselineNaive, BaselineNaiveFailover)
	Elapsed   time.Duration // wall time since the run started
	Done      int64         // requests finished
	Total     int64         // requests of the run
	Succeeded int64
	Scenario  time.Duration // scenario time reached
	Final     bool          // the last call of the run
}

func (o *Options) requests(sc *Scenario) int {
	if o.Requests > 0 {
		return o.Requests
	}
	return sc.Workload.Requests
}

func (o *Options) seed(sc *Scenario) uint64 {
	if o.Seed != nil {
		return *o.Seed
	}
	return sc.Seed
}

func (o *Options) every() time.Duration {
	if o.ProgressEvery > 0 {
		return o.ProgressEvery
	}
	return time.Second
}

// The errors a simulated attempt can end with.
var (
	errSimTimeout = fmt.Errorf("loadgen: attempt timed out: %w", context.DeadlineExceeded)
	errSimReset   = errors.New("loadgen: connection reset by peer")
	// errSimDeadline ends a delivered stream that the request's deadline cut.
	errSimDeadline = fmt.Errorf("loadgen: stream cut by the request's deadline: %w", context.DeadlineExceeded)
	// errSimAbandoned ends the attempt that lost the race with its hedge.
	errSimAbandoned = fmt.Errorf("loadgen: attempt abandoned: %w", context.Canceled)
)

// virtualClock is the engine's clock in a simulation: Now is the virtual
// time of the event being processed. The engine reads it only outside the
// Machine (Result.End of a stream); the Machine gets its time from SetNow.
// Timers come from the embedded real clock and are never used: the
// simulation does not call Engine.Do.
type virtualClock struct {
	clock.Clock
	now int64
}

func (c *virtualClock) Now() time.Time                  { return time.Unix(0, c.now) }
func (c *virtualClock) Since(t time.Time) time.Duration { return time.Duration(c.now - t.UnixNano()) }
func (c *virtualClock) Until(t time.Time) time.Duration { return time.Duration(t.UnixNano() - c.now) }

// request is one in-flight request of a simulation. Slots are reused, so
// a run allocates about as many as its peak concurrency.
type request struct {
	m        engine.Machine
	arrival  int64
	deadline int64
	lane          // the current attempt
	h        lane // the hedge in flight beside it, when h.end != 0
	hedgeIn  time.Duration
	hedgeAt  uint64        // seq of the evHedge armed for the current attempt; 0 none
	n        int           // a baseline's attempts on its current target
	hop      int           // a baseline's current position in sim.chain
	res      engine.Result // a delivered stream, until it ends
	rep      int           // the replica serving it
}

// lane is one attempt in flight of a simulated request: a request has one,
// and two while a hedge runs beside its attempt.
type lane struct {
	start  int64 // the attempt's start
	target int   // the attempt's target
	out    policy.Outcome
	total  time.Duration // a stream's whole answer, known when it commits
	busy   int           // 1 + the target whose capacity the attempt holds; 0 none
	end    uint64        // seq of the event that ends the attempt (evEnd or evCut); 0 none in flight
}

// sim is one discrete-event simulation run.
type sim struct {
	sc      *Scenario
	e       *engine.Engine
	state   *health.State
	clk     *virtualClock
	arrive  *rand.Rand // arrival draws
	draw    *rand.Rand // upstream draws: share and latency
	naive   bool       // a baseline runs instead of the engine
	chain   []int      // the baseline's targets, in order (baselineChain)
	up      []Upstream
	busy    []int           // per target: attempts in progress, for Upstream.Capacity
	timeout []time.Duration // per target: engine.AttemptTimeout
	stream  bool

	total     int64
	issued    int64 // arrivals scheduled
	done      int64
	closed    bool
	rate      float64
	deadline  time.Duration
	h         eventHeap
	slots     []*request
	free      []int32
	rec       *recorder
	nextBlock int64

	reps       []replica // the engines; reps[0] is e and state
	nextRep    int       // the replica the next arrival goes to
	shareDelay time.Duration
	shares     []shareEvent // facts in flight between replicas, oldest first
	lockTTL    time.Duration
	locks      map[int]probeLock // identifier → the holder of its probe lock
	sharing    bool              // the replicas share their facts
	onReplica  func(replicaEvent)
}

// Simulate runs sc in virtual time and returns what it measured. With
// baseline BaselineNone it runs the engine; with a baseline's name it runs
// that baseline's driver instead (baselineChain has its rule; see also
// docs/loadgen.md). The result depends only on the scenario, the seed and
// the request count, apart from its Wall section.
func Simulate(sc *Scenario, o Options, baseline string) (*Result, error) {
	if err := checkBaseline(baseline); err != nil {
		return nil, err
	}
	cfg, err := sc.NewConfig()
	if err != nil {
		return nil, err
	}
	seed := o.seed(sc)
	c := cfg.Compiled()
	clk := &virtualClock{Clock: clock.New(), now: epoch}
	s := &sim{shareDelay: o.ShareDelay, sharing: o.Share && o.Replicas > 1, onReplica: o.onReplica}
	if s.sharing {
		s.lockTTL, s.locks = o.ProbeLockTTL, map[int]probeLock{}
	}
	for i := range max(o.Replicas, 1) {
		st := health.NewState(c)
		h := engine.SyncHealth(st)
		if o.Replicas > 1 || o.onReplica != nil {
			h = &sharingHealth{Health: h, s: s, rep: i, st: st}
		}
		// Each replica its own random stream, as separate processes.
		opts := []engine.Option{engine.WithHealth(newSimHealth(h, c)), engine.WithSeed(seed + uint64(i)), engine.WithClock(clk)}
		if baseline == BaselineNoHedge {
			opts = append(opts, engine.WithoutHedging())
		}
		e, err := engine.New(cfg, opts...)
		if err != nil {
			return nil, err
		}
		defer e.Close()
		s.reps = append(s.reps, replica{e: e, st: st})
	}
	e, st := s.reps[0].e, s.reps[0].st
	primary, ok := e.Compiled().Lookup(sc.Workload.Model)
	if !ok {
		return nil, fmt.Errorf("loadgen: workload.model %q is not configured", sc.Workload.Model)
	}
	n := o.requests(sc)
	*s = sim{
		reps:       s.reps,
		shareDelay: s.shareDelay,
		lockTTL:    s.lockTTL,
		locks:      s.locks,
		sharing:    s.sharing,
		onReplica:  s.onReplica,
		sc:         sc,
		e:          e,
		state:      st,
		clk:        clk,
		arrive:     rand.New(rand.NewPCG(seed, 0x6172726976616c73)), // "arrivals"
		draw:       rand.New(rand.NewPCG(seed, 0x7570737472656d73)), // "upstrems"
		naive:      naiveBaseline(baseline),
		chain:      baselineChain(c, primary, baseline),
		up:         sc.Upstreams,
		timeout:    make([]time.Duration, c.NumTargets()),
		busy:       make([]int, c.NumTargets()),
		stream:     sc.Workload.Stream,
		total:      int64(n),
		closed:     sc.Workload.Concurrency > 0,
		rate:       sc.Workload.Rate,
		deadline:   sc.Workload.Timeout,
		rec:        newRecorder(sc.Targets, bucketWidth(sc.Estimate(n))),
	}
	for t := range s.timeout {
		s.timeout[t] = e.AttemptTimeout(t)
	}
	inflight := 1024
	if s.closed {
		inflight = sc.Workload.Concurrency
	}
	s.h.ev = make([]event, 0, 2*inflight+1)
	s.slots = make([]*request, 0, inflight)
	s.free = make([]int32, 0, inflight)
	s.nextBlock = epoch

	pol := policyName(baseline)
	t0 := time.Now()
	s.run(o, pol, t0)
	res := s.rec.result(sc, "sim", pol, seed, time.Since(t0))
	if !s.naive && len(s.reps) > 1 {
		res.Replicas = len(s.reps)
		if o.Share {
			d := ms(int64(o.ShareDelay))
			res.ShareDelayMs = &d
		}
	}
	return res, nil
}

// bucketWidth is the report's first bucket width: about 200 buckets over
// the expected duration; the series doubles it if the run is longer.
func bucketWidth(est time.Duration) time.Duration {
	w := est / 200
	for _, nice := range []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond,
		100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second,
		5 * time.Second, 10 * time.Second, 30 * time.Second, time.Minute} {
		if w <= nice {
			return nice
		}
	}
	return time.Minute
}

func (s *sim) run(o Options, pol string, t0 time.Time) {
	if s.closed {
		for range min(int64(s.sc.Workload.Concurrency), s.total) {
			s.schedule(epoch)
		}
	} else if s.total > 0 {
		s.schedule(epoch)
	}
	every := o.every()
	last := t0
	report := func(final bool) {
		if o.Progress == nil {
			return
		}
		o.Progress(Progress{Policy: pol, Elapsed: time.Since(t0), Done: s.done, Total: s.total,
			Succeeded: s.rec.succeeded, Scenario: time.Duration(s.clk.now - epoch), Final: final})
	}
	for i := 0; s.h.len() > 0; i++ {
		ev := s.h.pop()
		now := ev.at
		s.clk.now = now
		if !s.naive {
			for now >= s.nextBlock {
				// Sampled ten times a report bucket: a block shorter
				// than that may be missed, which the report accepts.
				s.rec.ser.blocks(s.nextBlock-epoch, s.state.Blocks(s.nextBlock), epoch)
				s.nextBlock += max(s.rec.ser.width/10, int64(10*time.Millisecond))
			}
		}
		switch ev.kind {
		case evArrive:
			s.arrival(now)
		case evStart:
			s.attempt(ev.slot, now)
		case evEnd, evCut:
			s.ended(ev, now)
		case evHedge:
			s.hedge(ev, now)
		case evStreamCut:
			// Committed, then cut by the request's deadline: a failure
			// after commit, surfaced to the client as an error.
			r := s.slots[ev.slot]
			r.res.End(time.Duration(now-r.start), errSimDeadline)
			s.finish(ev.slot, now, -1, string(engine.ReasonDeadline))
		case evStreamEnd:
			r := s.slots[ev.slot]
			r.res.End(r.total, nil)
			s.finish(ev.slot, now, r.target, "")
		case evShare:
			s.deliverShare()
		}
		if o.Progress != nil && i&8191 == 0 {
			if t := time.Now(); t.Sub(last) >= every {
				last = t
				report(false)
			}
		}
	}
	report(true)
}

func (s *sim) alloc() int32 {
	if n := len(s.free); n > 0 {
		i := s.free[n-1]
		s.free = s.free[:n-1]
		return i
	}
	// Slots come in chunks: one allocation per 64 requests of peak
	// concurrency.
	chunk := make([]request, 64)
	for j := range chunk {
		s.slots = append(s.slots, &chunk[j])
	}
	n := len(s.slots)
	for j := n - 1; j > n-len(chunk); j-- {
		s.free = append(s.free, int32(j))
	}
	return int32(n - len(chunk))
}

// schedule schedules an arrival. Arrivals are counted when scheduled, so
// that requests finishing at the same instant in a closed loop cannot
// schedule more than the run's total.
func (s *sim) schedule(at int64) {
	s.issued++
	s.h.push(at, evArrive, -1)
}

func (s *sim) arrival(now int64) {
	if !s.closed && s.issued < s.total {
		gap := s.arrive.ExpFloat64() / s.rate * float64(time.Second)
		s.schedule(now + int64(math.Max(gap, 1)))
	}
	i := s.alloc()
	r := s.slots[i]
	r.arrival, r.deadline, r.n, r.hop = now, now+int64(s.deadline), 0, 0
	s.rec.arrival(now - epoch)
	if s.naive {
		r.target = s.chain[0]
		s.attempt(i, now)
		return
	}
	r.rep = s.nextRep
	s.nextRep = (s.nextRep + 1) % len(s.reps)
	r.m.SetNow(now)
	if err := s.reps[r.rep].e.Begin(&r.m, s.sc.Workload.Model); err != nil {
		panic(err) // the model was validated with the scenario
	}
	r.m.SetDeadline(r.deadline)
	s.step(i, r.m.Start(), now)
}

// step carries out what the machine decided.
func (s *sim) step(i int32, st engine.Step, now int64) {
	r := s.slots[i]
	switch st.Kind {
	case engine.StepAttempt:
		r.target, r.hedgeIn = st.Target, 0
		if !s.naive {
			r.hedgeIn = r.m.HedgeAfter()
		}
		if st.Wait > 0 {
			s.h.push(now+int64(st.Wait), evStart, i)
			return
		}
		s.attempt(i, now)
	case engine.StepDone:
		s.deliver(i, now)
	case engine.StepFail:
		s.finish(i, now, -1, string(st.Err.Reason))
	case engine.StepAbort:
		s.finish(i, now, -1, "aborted") // not in virtual time: nothing cancels a simulated request
	}
}

// attempt starts an attempt of request i to r.target, and arms its hedge
// when the machine asked for one.
func (s *sim) attempt(i int32, now int64) {
	r := s.slots[i]
	r.n++
	s.release(&r.lane)
	s.launch(i, now, &r.lane)
	if r.hedgeIn > 0 {
		r.hedgeAt = s.h.push(now+int64(r.hedgeIn), evHedge, i)
	}
}

// launch starts the attempt of request i in lane l to l.target: the
// upstream's answer is drawn now, from the phase active now, and its end
// scheduled.
func (s *sim) launch(i int32, now int64, l *lane) {
	r := s.slots[i]
	t := l.target
	l.start = now
	s.rec.attempt(now-epoch, t)
	var a answer
	if c := s.up[t].Capacity; c > 0 && s.busy[t] >= c {
		a = overloaded
	} else {
		a = s.up[t].answer(time.Duration(now-epoch), s.draw)
	}
	s.busy[t]++
	l.busy = t + 1
	to := s.timeout[t]
	var d time.Duration
	switch {
	case a.hang:
		d = to
		if d == 0 {
			d = math.MaxInt64 // until the request's deadline
		}
		l.out = policy.Outcome{Err: errSimTimeout, Total: d}
	case a.reset:
		d = a.ttfb
		l.out = policy.Outcome{Err: errSimReset, Total: d}
	case s.stream && a.status < 300:
		// A stream commits at its first byte: Observe sees the status at
		// TTFB, the rest of the answer is relayed afterwards.
		d = a.ttfb
		l.out = policy.Outcome{Status: a.status, Header: a.header, TTFB: a.ttfb}
		l.total = a.total
	default:
		d = a.total
		l.out = policy.Outcome{Status: a.status, Header: a.header, TTFB: a.ttfb, Total: a.total}
	}
	if to > 0 && d > to {
		d = to
		l.out = policy.Outcome{Err: errSimTimeout, Total: to}
	}
	if d >= time.Duration(r.deadline-now) {
		// The request's own deadline cuts the attempt: the machine
		// decides what that means (Machine.Cut), as it does under Do.
		l.out.Total = time.Duration(r.deadline - now)
		l.end = s.h.push(r.deadline, evCut, i)
		return
	}
	l.end = s.h.push(now+int64(d), evEnd, i)
}

// ended is the end of an attempt (evEnd, or evCut at the deadline): of the
// current one, of the hedge beside it, or of neither (an attempt abandoned
// to a hedge: stale, skipped).
func (s *sim) ended(ev event, now int64) {
	r := s.slots[ev.slot]
	cut := ev.kind == evCut
	switch {
	case r.end != 0 && ev.seq == r.end:
		r.end, r.hedgeAt = 0, 0
		if r.h.end == 0 {
			break
		}
		// The hedge runs beside: this attempt wins if it answers,
		// else the hedge goes on as the request's attempt.
		r.m.SetNow(now)
		if cut || !r.m.Deliverable(&r.out) {
			if cut {
				s.abandon(r, &r.h, now, true)
				break
			}
			s.release(&r.lane)
			r.m.Failed(&r.out, false)
			r.lane, r.h = r.h, lane{}
			return
		}
		s.abandon(r, &r.h, now, true)
	case r.h.end != 0 && ev.seq == r.h.end:
		r.h.end = 0
		r.m.SetNow(now)
		if !cut && !r.m.Deliverable(&r.h.out) {
			s.release(&r.h)
			r.m.Failed(&r.h.out, true)
			r.h = lane{}
			return
		}
		// The hedge answered first (or the deadline struck both): the
		// attempt it hedged is abandoned, and the hedge is the request's.
		s.abandon(r, &r.lane, now, false)
		r.lane, r.h = r.h, lane{}
		r.end, r.hedgeAt = 0, 0
	default:
		return // stale
	}
	if cut {
		s.cut(ev.slot, now)
		return
	}
	if !s.naive {
		r.m.SetTook(time.Duration(now - r.start)) // the time to first token, for delay_percentile
	}
	s.observe(ev.slot, now)
}

// abandon cancels the attempt in lane l, which lost the race: its capacity
// is given back, and the machine learns how long it ran.
func (s *sim) abandon(r *request, l *lane, now int64, hedge bool) {
	s.release(l)
	o := policy.Outcome{Err: errSimAbandoned, Total: time.Duration(now - l.start)}
	r.m.Abandon(&o, hedge)
	l.end = 0
}

// hedge is the end of an attempt's hedge delay: if the attempt is still
// in flight, the machine decides whether a hedge starts beside it.
func (s *sim) hedge(ev event, now int64) {
	r := s.slots[ev.slot]
	if ev.seq != r.hedgeAt || r.end == 0 {
		return // the attempt has ended
	}
	r.hedgeAt = 0
	r.m.SetNow(now)
	if st := r.m.Hedge(); st.Kind == engine.StepAttempt {
		r.h = lane{target: st.Target}
		s.rec.hedges++
		s.launch(ev.slot, now, &r.h)
	}
}

// cut ends the attempt of request i at its deadline.
func (s *sim) cut(i int32, now int64) {
	r := s.slots[i]
	if s.naive {
		s.finish(i, now, -1, string(engine.ReasonDeadline))
		return
	}
	s.release(&r.lane)
	r.m.SetNow(now)
	s.step(i, r.m.Cut(&r.out, context.DeadlineExceeded), now)
}

func (s *sim) observe(i int32, now int64) {
	r := s.slots[i]
	if !s.stream || r.out.Err != nil || r.out.Status >= 300 {
		s.release(&r.lane) // a committed stream holds the upstream until it ends
	}
	if !s.naive {
		r.m.SetNow(now)
		s.step(i, r.m.Observe(&r.out), now)
		return
	}
	o := &r.out
	switch {
	case o.Err == nil && o.Status < 400:
		s.deliver(i, now)
	case r.n < naiveMaxAttempts:
		s.attempt(i, now) // the same target, at once, whatever it said
	case r.hop+1 < len(s.chain):
		r.hop++ // the next target of the chain, at once
		r.target, r.n = s.chain[r.hop], 0
		s.attempt(i, now)
	default:
		s.finish(i, now, -1, string(engine.ReasonMaxAttempts))
	}
}

// deliver ends a request with the answer of its last attempt.
func (s *sim) deliver(i int32, now int64) {
	r := s.slots[i]
	o := &r.out
	switch {
	case o.Err != nil:
		reason := "upstream_error"
		if errors.Is(o.Err, context.DeadlineExceeded) {
			reason = "upstream_timeout"
		}
		s.finish(i, now, -1, reason)
	case o.Status < 200 || o.Status >= 300:
		s.finish(i, now, -1, s.rec.passThrough(o.Status))
	case s.stream:
		if !s.naive {
			r.res = r.m.Result()
		}
		if end := r.start + int64(r.total); end >= r.deadline {
			s.h.push(r.deadline, evStreamCut, i)
			return
		}
		end := r.start + int64(r.total)
		s.h.push(end, evStreamEnd, i)
	default:
		s.finish(i, now, r.target, "")
	}
}

// release gives back the upstream capacity the attempt in l holds, if
// any.
func (s *sim) release(l *lane) {
	if l.busy > 0 {
		s.busy[l.busy-1]--
		l.busy = 0
	}
}

// finish ends request i at now: served by target when target ≥ 0, else
// failed for reason.
func (s *sim) finish(i int32, now int64, target int, reason string) {
	r := s.slots[i]
	s.release(&r.lane)
	s.release(&r.h)
	if target >= 0 {
		s.rec.success(r.arrival-epoch, now-epoch, target)
	} else {
		s.rec.failure(r.arrival-epoch, now-epoch, reason)
	}
	if !s.naive {
		r.m.Finish()
	}
	r.res = engine.Result{}
	r.lane, r.h, r.hedgeAt, r.hedgeIn = lane{}, lane{}, 0, 0
	s.free = append(s.free, i)
	s.done++
	if s.closed && s.issued < s.total {
		s.schedule(now)
	}
}
