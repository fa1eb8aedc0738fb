package redishealth

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/reroute-go/reroute/health"
)

// Recovery marks. A recovery deletes its ejection's key and is published,
// but a replica that is not subscribed at that moment (reconnecting, or
// started later) misses the message, and at its (re)connection it would
// write its own copy of the ejection back and keep it until it ends. So
// every recovery also leaves a mark, "<prefix>recovered:<t|p>:<name>",
// holding when it happened (unix ns, the sender's clock) and lasting as
// long as any ejection of that identifier can. A replica that reconnects
// checks the marks of the ejections it is about to write back: one that
// ends sooner than the shortest cooldown (less its 20 % spread) after the
// mark began before the recovery, and is ended instead of written back. A
// later ejection ends later than that, and is kept.

// recoveredKey is the key of the recovery mark of the identifier of f.
func (s *Sharer) recoveredKey(provider bool, name string) string {
	return s.cfg.KeyPrefix + "recovered:" + scope(provider) + ":" + name
}

// markTTL is how long a recovery mark of identifier name lasts: the
// longest ejection it can supersede, and the probe lock; 0 when the
// configuration has no passive health for it.
func (s *Sharer) markTTL(provider bool, name string) time.Duration {
	id, ok := s.actor.ID(name, provider)
	if !ok {
		return 0
	}
	_, longest := cooldowns(s.c, id)
	if longest == 0 {
		return 0
	}
	return longest + s.cfg.ProbeLockTTL.D()
}

// markRecovered queues on p the mark of a recovery of (provider, name) at
// the unix time at.
func (s *Sharer) markRecovered(ctx context.Context, p redis.Cmdable, provider bool, name string, at int64) {
	if ttl := s.markTTL(provider, name); ttl > 0 {
		p.Set(ctx, s.recoveredKey(provider, name), strconv.FormatInt(at, 10), ttl)
	}
}

// superseded returns, of the live ejections about to be written back, the
// ones a recovery mark says have ended: the keys of the fact map, each
// with the recovery's time.
func (s *Sharer) superseded(ctx context.Context, live []wireFact, blocks map[string]int64) (map[string]int64, error) {
	var keys, facts []string
	var ws []wireFact
	for _, w := range live {
		if w.Kind == kindEjected {
			keys = append(keys, s.recoveredKey(w.Provider, w.Name))
			facts = append(facts, s.factKey(w))
			ws = append(ws, w)
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	var out map[string]int64
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue
		}
		at, err := strconv.ParseInt(str, 10, 64)
		if err != nil || at <= 0 {
			s.n.malformed.Add(1)
			continue
		}
		id, ok := s.actor.ID(ws[i].Name, ws[i].Provider)
		if !ok {
			continue
		}
		shortest, _ := cooldowns(s.c, id)
		if blocks[facts[i]] < at+int64(shortest)*8/10 {
			if out == nil {
				out = map[string]int64{}
			}
			out[facts[i]] = at
		}
	}
	return out, nil
}

// endSuperseded imports the recovery of each superseded ejection into
// this replica's actor.
func (s *Sharer) endSuperseded(live []wireFact, gone map[string]int64) {
	for _, w := range live {
		if at, ok := gone[s.factKey(w)]; ok && w.Kind == kindEjected {
			// Learnt from the store at a connection, like a loaded fact.
			if err := s.actor.Import(health.Fact{Name: w.Name, Provider: w.Provider, Kind: health.Ejected, Recovered: true, Until: at}); err == nil {
				s.n.received.Add(1)
				s.n.loaded.Add(1)
			}
		}
	}
}
