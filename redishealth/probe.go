package redishealth

import (
	"context"
	"sync"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/reroute-go/reroute/health"
)

// The probe lock. Every replica that has an ejection of an identifier would
// let one request probe it when the cooldown ends: with N replicas, N
// probes of a target that is likely still down. Shortly before the end,
// each replica's prober tries SET NX PX on the identifier's lock key; the
// one that gets it probes as usual, the others hold the identifier ejected
// (Actor.Import with Hold) until the lock expires. The winner's probe ends
// the hold early: its recovery, or its failure's new ejection, reaches the
// others as a fact, and the winner releases the lock with it. If the lock cannot
// be had (Redis unreachable) the replica probes on its own, as without
// sharing. Nothing of it runs on a request's path.

// maxLead is the most by which the lock is taken before the cooldown ends;
// a quarter of the cooldown when that is shorter.
const maxLead = 500 * time.Millisecond

// prober is the set of ejections awaiting their lock.
type prober struct {
	mu   sync.Mutex
	ej   map[int]probeEntry // identifier → its latest ejection
	wake chan struct{}      // capacity 1: the set changed
}

type probeEntry struct {
	name     string
	provider bool
	until    int64 // end of the ejection, by the Sharer's clock
	lead     time.Duration
	tried    bool // the lock was tried for this ejection
}

func (p *prober) init() {
	p.ej = map[int]probeEntry{}
	p.wake = make(chan struct{}, 1)
}

// track notes an ejection of id ending at f.Until; a later one replaces
// an earlier.
func (p *prober) track(id int, f health.Fact, now int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.ej[id]; ok && e.until >= f.Until {
		return
	}
	lead := min(maxLead, time.Duration(f.Until-now)/4)
	p.ej[id] = probeEntry{name: f.Name, provider: f.Provider, until: f.Until, lead: lead}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// forget drops id's ejection: it recovered.
func (p *prober) forget(id int) {
	p.mu.Lock()
	delete(p.ej, id)
	p.mu.Unlock()
}

// due returns the entries whose lock time has come, marking them tried,
// and how long until the next one (0: none pending).
func (p *prober) due(now int64) (out []probeEntry, next time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, e := range p.ej {
		if e.tried {
			if e.until < now-int64(time.Minute) {
				delete(p.ej, id) // long over; its outcome was never seen
			}
			continue
		}
		at := e.until - int64(e.lead)
		if at <= now {
			e.tried = true
			p.ej[id] = e
			if e.until > now {
				out = append(out, e)
			}
			continue
		}
		if d := time.Duration(at - now); next == 0 || d < next {
			next = d
		}
	}
	return out, next
}

// probeLoop takes the locks when they are due, and logs a summary of
// drops when they grew.
func (s *Sharer) probeLoop() {
	defer s.wg.Done()
	tick := s.clock.Ticker(10 * time.Second)
	defer tick.Stop()
	lockOn := *s.cfg.ProbeLock
	for {
		var timer *clock.Timer
		var timerc <-chan time.Time
		if lockOn {
			due, next := s.probes.due(s.clock.Now().UnixNano())
			for _, e := range due {
				s.lock(e)
			}
			if next > 0 {
				timer = s.clock.Timer(next)
				timerc = timer.C
			}
		}
		select {
		case <-s.ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case <-s.probes.wake:
		case <-timerc:
		case <-tick.C:
			s.logDrops()
			s.retryReplay()
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// lock tries the probe lock of one ejection.
func (s *Sharer) lock(e probeEntry) {
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	key := s.lockKey(e.provider, e.name)
	ttl := s.cfg.ProbeLockTTL.D()
	ok, err := s.rdb.SetNX(ctx, key, s.id, ttl).Result()
	if err != nil {
		s.n.lockErrors.Add(1)
		return
	}
	if ok {
		s.n.locksWon.Add(1)
		return
	}
	var holder *redis.StringCmd
	var left *redis.DurationCmd
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		holder, left = p.Get(ctx, key), p.PTTL(ctx, key)
		return nil
	}); err != nil || left.Val() <= 0 {
		s.n.lockErrors.Add(1)
		return
	}
	if holder.Val() == s.id {
		s.n.locksWon.Add(1) // taken for an earlier end of the same ejection, or for the last one, not released
		return
	}
	s.n.locksLost.Add(1)
	until := max(e.until, s.clock.Now().UnixNano()+int64(left.Val()))
	if err := s.actor.Import(health.Fact{Name: e.name, Provider: e.provider, Kind: health.Ejected, Hold: true, Until: until}); err != nil {
		s.log.Debug("shared health: cannot hold an ejection for another replica's probe", zap.String("id", e.name), zap.Error(err))
	}
}

// logDrops warns when facts were dropped or refused since the last call.
func (s *Sharer) logDrops() {
	st := s.Stats()
	total := st.QueueFull + st.Unsent + st.Oversized + st.Malformed + st.Absurd + st.Unknown + st.ImportFull
	if total == s.n.dropsLogged {
		return
	}
	s.n.dropsLogged = total
	s.log.Warn("shared health: facts dropped or refused",
		zap.Uint64("queue_full", st.QueueFull), zap.Uint64("unsent", st.Unsent),
		zap.Uint64("oversized", st.Oversized), zap.Uint64("malformed", st.Malformed),
		zap.Uint64("absurd", st.Absurd), zap.Uint64("unknown", st.Unknown), zap.Uint64("import_full", st.ImportFull),
		zap.Bool("connected", st.Connected))
}

// lockKey is the key of an identifier's probe lock. It names the
// identifier only, not the ejection's number, so that replicas agree on
// it whatever they have seen of the ejections before: the holder releases
// it with its probe's outcome (a recovery, or the next ejection), so the
// next round starts free; a lock whose holder never probes ends with its
// TTL.
func (s *Sharer) lockKey(provider bool, name string) string {
	return s.cfg.KeyPrefix + "probe:" + scope(provider) + ":" + name
}

// releaseScript deletes a probe lock if this replica holds it.
const releaseScript = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`

// releaseLock queues on p the release of the probe lock of f's identifier,
// if this replica holds it: f is its probe's outcome.
func (s *Sharer) releaseLock(ctx context.Context, p redis.Pipeliner, f wireFact) {
	if *s.cfg.ProbeLock {
		p.Eval(ctx, releaseScript, []string{s.lockKey(f.Provider, f.Name)}, s.id)
	}
}
