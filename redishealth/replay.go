package redishealth

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/reroute-go/reroute/policy"
)

// Recoveries made while Redis was unreachable. A recovery is a deletion of
// the ejection's key and a message, both lost when they cannot be sent:
// the other replicas would keep the ejection (or their hold, waiting for
// this replica's probe) until it ends, and then probe the target
// themselves. So the Sharer keeps the recoveries it could not send and
// replays them at the reconnection, after writing its live facts back,
// unless newer evidence says otherwise:
//
//   - this replica ejected the identifier again since (its live ejection
//     is written back instead);
//   - the ejection stored in Redis is newer than the recovery. Its key's
//     TTL tells: an ejection made after the recovery ends at least the
//     shortest cooldown (less the 20 % spread) after it, so a stored
//     ejection that ends sooner was made before, and the recovery
//     supersedes it (the key is deleted); one that ends later may be
//     newer, and is kept and loaded.
//
// The check and the deletion are one script, so no other replica's write
// falls between them. A recovery whose send failed while the connection
// stayed up is replayed the same way after the next batch published, or
// within 10 s. A recovery older than its identifier's longest
// ejection plus the probe lock's TTL supersedes nothing any more and is
// forgotten.

// pendingRecovery is a recovery not sent: the fact and when it was made,
// by the Sharer's clock.
type pendingRecovery struct {
	w  wireFact
	at int64
}

// recoveries is the set of recoveries not sent, by fact key.
type recoveries struct {
	mu sync.Mutex
	m  map[string]pendingRecovery
	// made is when the latest recovery of each key in flight was made,
	// by the actor's clock (the wire form does not say).
	made map[string]int64
}

// madeAt notes when the actor's recovery of a fact key was made.
func (r *recoveries) madeAt(key string, at int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.made == nil {
		r.made = map[string]int64{}
	}
	r.made[key] = at
}

// keep notes the recoveries of a batch that could not be sent; now is
// their time when the actor did not say.
func (r *recoveries) keep(s *Sharer, batch []wireFact, now int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range batch {
		if w.Kind == kindEjected {
			delete(r.m, s.factKey(w)) // ejected again since: the recovery is over
			continue
		}
		if w.Kind == kindRecovered {
			if r.m == nil {
				r.m = map[string]pendingRecovery{}
			}
			key, at := s.factKey(w), now
			if t, ok := r.made[key]; ok && t > 0 {
				at = t
			}
			r.m[key] = pendingRecovery{w: w, at: at}
		}
	}
}

// sent forgets the recoveries a batch sent supersedes: a later recovery
// or ejection of the same identifier went out.
func (r *recoveries) sent(s *Sharer, batch []wireFact) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range batch {
		if w.Kind == kindRecovered || w.Kind == kindEjected {
			delete(r.m, s.factKey(w))
			delete(r.made, s.factKey(w))
		}
	}
}

// keepOne puts back a recovery taken and not sent.
func (r *recoveries) keepOne(s *Sharer, p pendingRecovery) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]pendingRecovery{}
	}
	if _, newer := r.m[s.factKey(p.w)]; !newer {
		r.m[s.factKey(p.w)] = p
	}
}

// pending reports whether recoveries wait to be replayed.
func (r *recoveries) pending() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m) > 0
}

// take removes and returns the recoveries kept.
func (r *recoveries) take() map[string]pendingRecovery {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.m
	r.m = nil
	return m
}

// replayScript deletes an ejection's key and publishes a recovery unless
// the stored ejection ends more than ARGV[1] ms from now (it may be newer
// than the recovery) or never. It returns 1 when it published.
var replayScript = redis.NewScript(`
local left = redis.call('PTTL', KEYS[1])
if left == -1 or left > tonumber(ARGV[1]) then
  return 0
end
if left >= 0 then
  redis.call('DEL', KEYS[1])
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1`)

// retryReplay replays the recoveries kept, if any, while Redis answers:
// after a batch was published, and on the probe loop's tick, so that a
// recovery whose send failed without the connection being lost does not
// wait for a reconnection.
func (s *Sharer) retryReplay() {
	if !s.sending.Load() || !s.unsentRecoveries.pending() {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	if err := s.replay(ctx, nil); err != nil {
		s.log.Debug("shared health: replaying recoveries failed", zap.Error(err))
	}
}

// replay sends the recoveries kept while Redis was unreachable, except
// those of identifiers in live (this replica ejected them again).
func (s *Sharer) replay(ctx context.Context, live map[string]bool) error {
	pending := s.unsentRecoveries.take()
	now := s.clock.Now().UnixNano()
	for key, r := range pending {
		delete(pending, key)
		if live[key] {
			continue
		}
		id, ok := s.actor.ID(r.w.Name, r.w.Provider)
		if !ok {
			continue
		}
		shortest, longest := cooldowns(s.c, id)
		if longest == 0 || now-r.at > int64(longest+s.cfg.ProbeLockTTL.D()) {
			continue // nothing of that ejection can still be live
		}
		// Stored ejections that end before this were made before the
		// recovery.
		older := time.Duration(r.at + int64(shortest)*8/10 - now).Milliseconds()
		// The mark first: a replica that misses the message below finds
		// it at its own connection (recovered.go).
		if ttl := s.markTTL(r.w.Provider, r.w.Name); ttl > 0 {
			if err := s.rdb.Set(ctx, s.recoveredKey(r.w.Provider, r.w.Name), strconv.FormatInt(r.at, 10), ttl).Err(); err != nil {
				s.unsentRecoveries.keepOne(s, r)
				for _, rest := range pending {
					s.unsentRecoveries.keepOne(s, rest)
				}
				return err
			}
		}
		msg := encodeMessage(s.id, time.Now().UnixNano(), []wireFact{r.w})
		published, err := replayScript.Run(ctx, s.rdb, []string{key}, older, s.cfg.Channel, msg).Int()
		if err != nil {
			// This one and those not tried yet wait for the next
			// reconnection.
			s.unsentRecoveries.keepOne(s, r)
			for _, rest := range pending {
				s.unsentRecoveries.keepOne(s, rest)
			}
			return err
		}
		if published == 0 {
			continue // the stored ejection may be newer: load applies it
		}
		if *s.cfg.ProbeLock {
			_ = s.rdb.Eval(ctx, releaseScript, []string{s.lockKey(r.w.Provider, r.w.Name)}, s.id).Err()
		}
		s.n.replayed.Add(1)
	}
	return nil
}

// cooldowns returns the shortest first cooldown and the longest
// max_cooldown of the rules whose passive health counts for identifier id
// (0, 0 when none).
func cooldowns(c *policy.Compiled, id int) (shortest, longest time.Duration) {
	for t, r := range c.Ejection {
		if r == nil || c.ID(t, r.Scope) != id {
			continue
		}
		if shortest == 0 || r.Cooldown < shortest {
			shortest = r.Cooldown
		}
		longest = max(longest, r.MaxCooldown)
	}
	return shortest, longest
}
