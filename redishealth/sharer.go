package redishealth

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/policy"
)

// Sharer connects one health actor to Redis: it publishes the facts the
// actor creates, keeps them in Redis for as long as they last, and applies
// the other replicas' facts to the actor. Make it with New, attach it to
// the actor with HealthOption (or EngineOption) and Start, and Close it.
//
// Nothing a request does waits for it: the actor hands it facts through a
// bounded queue (a full queue drops and counts), and it hands the actor
// facts through Actor.Import, which never blocks. When Redis is
// unreachable the replica works on its own state and the Sharer reconnects
// with backoff; at every (re)connection it writes the actor's live facts
// back (a restarted Redis has lost them) and loads the ones stored.
//
// All methods are safe for concurrent use.
type Sharer struct {
	cfg     *policy.SharedHealth
	c       *policy.Compiled
	rdb     *redis.Client
	id      string
	log     *zap.Logger
	clock   clock.Clock
	onApply func(health.Fact)
	timeout time.Duration

	facts chan health.Fact // the actor's fact sink
	actor *health.Actor    // set by Start

	connected atomic.Bool // subscribed, and the live facts loaded
	sending   atomic.Bool // subscribed: publish (set before the loading, so no fact falls between)
	n         counters
	delays    delays
	probes    prober
	// unsentRecoveries are the recoveries made while Redis was
	// unreachable, replayed at the reconnection (replay.go).
	unsentRecoveries recoveries

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	startOnce sync.Once
	started   atomic.Bool
	closeOnce sync.Once
}

// Option configures a Sharer at New.
type Option func(*Sharer)

// WithLogger sets the logger: connections and disconnections at info and
// warn, refused messages at debug, a summary of drops at warn at most every
// 10 s. Default zap.NewNop().
func WithLogger(l *zap.Logger) Option {
	return func(s *Sharer) {
		if l != nil {
			s.log = l
		}
	}
}

// WithClock sets the clock that turns the time left of a fact into a
// deadline and back. It must be the actor's clock. Default the system's.
func WithClock(c clock.Clock) Option {
	return func(s *Sharer) {
		if c != nil {
			s.clock = c
		}
	}
}

// WithOnApply sets a function called with every fact of another replica
// the Sharer hands to the actor (after Import accepted it), on the
// receiving goroutine: for tests and metrics. It must be quick.
func WithOnApply(f func(health.Fact)) Option {
	return func(s *Sharer) { s.onApply = f }
}

// New makes a Sharer for the finalized shared_health block cfg of the
// configuration compiled into c. It does not connect yet (Start does).
// It returns an error naming the key for a TLS ca_file it cannot use, and
// an error when cfg is nil or disabled.
func New(cfg *policy.SharedHealth, c *policy.Compiled, opts ...Option) (*Sharer, error) {
	if !cfg.On() {
		return nil, errors.New("redishealth: engine.shared_health is not enabled")
	}
	if c == nil {
		return nil, errors.New("redishealth: nil compiled configuration")
	}
	s := &Sharer{
		cfg:     cfg,
		c:       c,
		id:      cfg.ReplicaID,
		log:     zap.NewNop(),
		clock:   clock.New(),
		timeout: cfg.Timeout.D(),
		facts:   make(chan health.Fact, *cfg.QueueSize),
	}
	for _, o := range opts {
		o(s)
	}
	if s.id == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		s.id = hex.EncodeToString(b[:])
	}
	opt := &redis.Options{
		Addr:            cfg.Address,
		Username:        cfg.Username,
		Password:        cfg.Password,
		DB:              *cfg.DB,
		DialTimeout:     s.timeout,
		ReadTimeout:     s.timeout,
		WriteTimeout:    s.timeout,
		PoolSize:        4,
		MaxRetries:      -1, // the Sharer retries on its own terms
		DisableIdentity: true,
		// Plain RESP2 and no maintenance notifications: the Sharer uses
		// pub/sub and simple commands that every Redis since 6 has.
		Protocol:                 2,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if cfg.TLSOn() {
		tc, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
		opt.TLSConfig = tc
	}
	s.rdb = redis.NewClient(opt)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.probes.init()
	return s, nil
}

func tlsConfig(cfg *policy.SharedHealth) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.TLS.ServerName}
	if tc.ServerName == "" {
		host, _, err := net.SplitHostPort(cfg.Address)
		if err != nil {
			return nil, fmt.Errorf("redishealth: engine.shared_health.address: %w", err)
		}
		tc.ServerName = host
	}
	if cfg.TLS.CAFile != "" {
		pem, err := os.ReadFile(cfg.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("redishealth: engine.shared_health.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redishealth: engine.shared_health.tls.ca_file: %s holds no PEM certificate", cfg.TLS.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// ReplicaID returns the id this replica puts in its messages.
func (s *Sharer) ReplicaID() string { return s.id }

// HealthOption is the option that makes a health actor export its facts
// to this Sharer (health.WithFactSink). Give it to the actor, or to the
// engine (EngineOption), before Start.
func (s *Sharer) HealthOption() health.Option { return health.WithFactSink(s.facts) }

// EngineOption is HealthOption for the actor engine.New starts. After
// engine.New, call Start(e.Actor()).
func (s *Sharer) EngineOption() engine.Option { return engine.WithHealthOptions(s.HealthOption()) }

// Start begins sharing the facts of a, which must have been made with
// HealthOption: it connects in the background and returns at once.
// Requests are served from the actor's state whether or not Redis is
// reachable. It may be called once; later calls return an error, as does
// a call after Close.
func (s *Sharer) Start(a *health.Actor) error {
	if a == nil {
		return errors.New("redishealth: Start with a nil actor")
	}
	if s.ctx.Err() != nil {
		return errors.New("redishealth: Start after Close")
	}
	err := errors.New("redishealth: already started")
	s.startOnce.Do(func() {
		err = nil
		s.actor = a
		s.started.Store(true)
		s.wg.Add(3)
		go s.sendLoop()
		go s.receiveLoop()
		go s.probeLoop()
	})
	return err
}

// Close stops sharing: it ends the goroutines, waits for them and closes
// the connections. Facts the actor exports afterwards fill the queue and
// are dropped. It is idempotent. The actor keeps its state.
func (s *Sharer) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
		s.connected.Store(false)
		err = s.rdb.Close()
	})
	return err
}

// Stats returns the counters and the propagation delay so far.
func (s *Sharer) Stats() Stats {
	st := Stats{
		ReplicaID:     s.id,
		Connected:     s.connected.Load(),
		Connects:      s.n.connects.Load(),
		ConnectErrors: s.n.connectErrors.Load(),
		FactsSent:     s.n.sent.Load(),
		FactsReceived: s.n.received.Load(),
		FactsLoaded:   s.n.loaded.Load(),
		FactsCapped:   s.n.capped.Load(),
		Echoes:        s.n.echoes.Load(),
		Unsent:        s.n.unsent.Load(),
		Oversized:     s.n.oversized.Load(),
		Malformed:     s.n.malformed.Load(),
		Absurd:        s.n.absurd.Load(),
		Unknown:       s.n.unknown.Load(),
		ImportFull:    s.n.importFull.Load(),
		SendErrors:    s.n.sendErrors.Load(),
		LocksWon:      s.n.locksWon.Load(),
		LocksLost:     s.n.locksLost.Load(),
		LockErrors:    s.n.lockErrors.Load(),
		Replayed:      s.n.replayed.Load(),
	}
	if s.started.Load() {
		st.QueueFull = s.actor.FactsDropped()
	}
	st.DelayP50, st.DelayP99, st.DelaySamples = s.delays.quantiles()
	return st
}

// Keys: prefix + "fact:" + kind + ":" + scope + ":" + name for a stored
// fact (scope "t" for a target, "p" for a provider; a recovery deletes
// the ejection's key), prefix + "probe:" + scope + ":" + name for the
// identifier's probe lock (lockKey).
func (s *Sharer) factKey(f wireFact) string {
	kind := f.Kind
	if kind == kindRecovered {
		kind = kindEjected
	}
	return s.cfg.KeyPrefix + "fact:" + kind + ":" + scope(f.Provider) + ":" + f.Name
}

func scope(provider bool) string {
	if provider {
		return "p"
	}
	return "t"
}

// storeScript writes a fact with the max-expiration merge the actors use:
// a key whose time left is longer is kept.
var storeScript = redis.NewScript(`
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0`)

// store queues the writes of one fact on p: a strike or clear is only
// published.
func (s *Sharer) store(ctx context.Context, p redis.Pipeliner, f wireFact) {
	switch {
	case f.event():
		return
	case f.Kind == kindRecovered:
		p.Del(ctx, s.factKey(f))
		s.markRecovered(ctx, p, f.Provider, f.Name, s.clock.Now().UnixNano())
		return
	}
	ms := max(f.D/int64(time.Millisecond), 1)
	p.EvalSha(ctx, storeScript.Hash(), []string{s.factKey(f)}, encodeStored(f), ms)
}

// sendLoop publishes the actor's facts, in batches of what has queued up.
func (s *Sharer) sendLoop() {
	defer s.wg.Done()
	batch := make([]wireFact, 0, maxBatch)
	for {
		select {
		case <-s.ctx.Done():
			return
		case f := <-s.facts:
			now := s.clock.Now().UnixNano()
			batch = s.local(batch[:0], f, now)
		more:
			for len(batch) < maxBatch {
				select {
				case f := <-s.facts:
					batch = s.local(batch, f, now)
				default:
					break more
				}
			}
			s.publish(batch)
		}
	}
}

// local converts one of the actor's facts and notes its ejections for the
// probe lock.
func (s *Sharer) local(batch []wireFact, f health.Fact, now int64) []wireFact {
	if f.Kind == health.Ejected && !f.Strike && !f.Clear {
		if id, ok := s.actor.ID(f.Name, f.Provider); ok {
			if f.Recovered {
				s.probes.forget(id)
				if w, ok := toWire(f, now); ok {
					s.unsentRecoveries.madeAt(s.factKey(w), f.Until)
				}
			} else {
				s.probes.track(id, f, now)
			}
		}
	}
	if w, ok := toWire(f, now); ok {
		batch = append(batch, w)
	}
	return batch
}

// publish stores and publishes a batch, in one round trip. While Redis is
// unreachable the batch is counted as unsent: the reconnection writes the
// live facts back.
func (s *Sharer) publish(batch []wireFact) {
	if len(batch) == 0 {
		return
	}
	if !s.sending.Load() {
		s.n.unsent.Add(uint64(len(batch)))
		s.unsentRecoveries.keep(s, batch, s.clock.Now().UnixNano())
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	send := func(p redis.Pipeliner) error {
		for _, f := range batch {
			s.store(ctx, p, f)
			if f.Kind == kindRecovered || (f.Kind == kindEjected && f.E > 1) {
				s.releaseLock(ctx, p, f) // a probe's outcome: the next round starts free
			}
		}
		// Strikes and clears go in a message of their own, first (they
		// came before the ejections they led to): a replica of an
		// earlier version refuses a message with a kind it does not know
		// whole, and should still get the blocks and ejections.
		facts, events := splitEvents(batch)
		for _, m := range [][]wireFact{events, facts} {
			if len(m) > 0 {
				p.Publish(ctx, s.cfg.Channel, encodeMessage(s.id, time.Now().UnixNano(), m))
			}
		}
		return nil
	}
	_, err := s.rdb.Pipelined(ctx, send)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// A Redis that restarted forgot the script before this replica
		// noticed: load it and try once more.
		if err = storeScript.Load(ctx, s.rdb).Err(); err == nil {
			_, err = s.rdb.Pipelined(ctx, send)
		}
	}
	if err != nil {
		s.n.sendErrors.Add(1)
		s.n.unsent.Add(uint64(len(batch)))
		s.unsentRecoveries.keep(s, batch, s.clock.Now().UnixNano())
		s.log.Debug("shared health: publishing facts failed", zap.Int("facts", len(batch)), zap.Error(err))
		return
	}
	s.unsentRecoveries.sent(s, batch)
	s.n.sent.Add(uint64(len(batch)))
	s.retryReplay()
}

// splitEvents returns the facts of batch that are not strikes or clears,
// and those that are, in their order.
func splitEvents(batch []wireFact) (facts, events []wireFact) {
	n := 0
	for i := range batch {
		if batch[i].event() {
			n++
		}
	}
	if n == 0 {
		return batch, nil
	}
	if n == len(batch) {
		return nil, batch
	}
	for _, w := range batch {
		if w.event() {
			events = append(events, w)
		} else {
			facts = append(facts, w)
		}
	}
	return facts, events
}

// receiveLoop keeps a subscription to the channel, reconnecting with
// backoff.
func (s *Sharer) receiveLoop() {
	defer s.wg.Done()
	const minBackoff = 50 * time.Millisecond
	backoff := minBackoff
	var lastErr string
	for s.ctx.Err() == nil {
		up, err := s.session()
		if s.ctx.Err() != nil {
			return
		}
		if up {
			backoff = minBackoff
			s.log.Warn("shared health: lost the connection to Redis; serving on local state, reconnecting",
				zap.String("address", s.cfg.Address), zap.Error(err))
			lastErr = ""
		} else {
			s.n.connectErrors.Add(1)
			if msg := err.Error(); msg != lastErr {
				s.log.Warn("shared health: cannot connect to Redis; serving on local state, retrying",
					zap.String("address", s.cfg.Address), zap.Duration("backoff", backoff), zap.Error(err))
				lastErr = msg
			}
		}
		t := s.clock.Timer(backoff)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff.D())
	}
}

// session subscribes, loads the live facts and applies messages until the
// connection fails. up reports whether it got as far as subscribing.
func (s *Sharer) session() (up bool, err error) {
	ps := s.rdb.Subscribe(s.ctx, s.cfg.Channel)
	defer func() { _ = ps.Close() }()
	// A read in progress does not watch the context: closing the
	// subscription is what ends it at Close.
	defer context.AfterFunc(s.ctx, func() { _ = ps.Close() })()
	defer s.connected.Store(false)
	defer s.sending.Store(false)
	if _, err := ps.ReceiveTimeout(s.ctx, s.timeout); err != nil {
		return false, err
	}
	// Facts made from now on are published; the ones live before are
	// written back by resync, which reads them after this point.
	s.sending.Store(true)
	if err := s.resync(); err != nil {
		return false, err
	}
	s.connected.Store(true)
	s.n.connects.Add(1)
	s.log.Info("shared health: connected to Redis", zap.String("address", s.cfg.Address),
		zap.String("channel", s.cfg.Channel), zap.String("replica_id", s.id), zap.Uint64("facts_loaded", s.n.loaded.Load()))
	// A read that times out sends a ping; two silent intervals in a row
	// mean the server is gone without closing the connection.
	interval := max(4*s.timeout, time.Second)
	silent := 0
	for s.ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(s.ctx, interval)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && silent < 2 {
				silent++
				if err := ps.Ping(s.ctx); err != nil {
					return true, err
				}
				continue
			}
			return true, err
		}
		silent = 0
		switch m := msg.(type) {
		case *redis.Message:
			s.handle([]byte(m.Payload))
		case *redis.Subscription:
			// The client reconnected on its own: what was published
			// meanwhile is lost; load the store again.
			if m.Kind == "subscribe" {
				if err := s.resync(); err != nil {
					return true, err
				}
			}
		}
	}
	return true, s.ctx.Err()
}

// resync writes the actor's live facts to Redis (a restarted server has
// none), with each ejection's number, replays the recoveries made while
// Redis was unreachable, and loads every fact stored there.
func (s *Sharer) resync() error {
	ctx, cancel := context.WithTimeout(s.ctx, 4*s.timeout)
	defer cancel()
	if err := storeScript.Load(ctx, s.rdb).Err(); err != nil {
		return err
	}
	blocks, err := s.actor.Blocks(ctx)
	if err != nil {
		return err
	}
	now := s.clock.Now().UnixNano()
	var live []wireFact
	ejected := map[string]bool{}
	ends := map[string]int64{} // a live ejection's end, by its fact key
	for _, b := range blocks {
		f := health.Fact{Name: b.Name, Provider: b.ID >= s.c.NumTargets(), Kind: b.Kind, Until: b.Until, Ejections: b.Ejections}
		if w, ok := toWire(f, now); ok {
			live = append(live, w)
			if w.Kind == kindEjected {
				ejected[s.factKey(w)] = true
				ends[s.factKey(w)] = b.Until
			}
		}
	}
	// An ejection another replica's probe ended while this one was away
	// (recovered.go) is ended here, not written back.
	gone, err := s.superseded(ctx, live, ends)
	if err != nil {
		return err
	}
	if len(gone) > 0 {
		s.endSuperseded(live, gone)
		live = slices.DeleteFunc(live, func(w wireFact) bool {
			_, ok := gone[s.factKey(w)]
			return ok && w.Kind == kindEjected
		})
		for k := range gone {
			delete(ejected, k)
		}
	}
	// Stored first, then published: a replica that subscribes later loads
	// them, one already subscribed receives them.
	if len(live) > 0 {
		if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, w := range live {
				s.store(ctx, p, w)
			}
			for batch := range slices.Chunk(live, maxBatch) {
				p.Publish(ctx, s.cfg.Channel, encodeMessage(s.id, time.Now().UnixNano(), batch))
			}
			return nil
		}); err != nil {
			return err
		}
	}
	if err := s.replay(ctx, ejected); err != nil {
		return err
	}
	return s.load(ctx)
}

// load applies every fact stored under the prefix, with the key's time
// left as its duration.
func (s *Sharer) load(ctx context.Context) error {
	match := s.cfg.KeyPrefix + "fact:*"
	var cursor uint64
	for {
		keys, next, err := s.rdb.Scan(ctx, cursor, match, 256).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			gets := make([]*redis.StringCmd, len(keys))
			ttls := make([]*redis.DurationCmd, len(keys))
			// A command's own error (a key that expired: nil; a key of
			// another type under the prefix: WRONGTYPE) concerns that key
			// only; any other error is the connection's.
			var reply redis.Error
			if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i, k := range keys {
					gets[i], ttls[i] = p.Get(ctx, k), p.PTTL(ctx, k)
				}
				return nil
			}); err != nil && !errors.Is(err, redis.Nil) && !errors.As(err, &reply) {
				return err
			}
			for i := range keys {
				v, err := gets[i].Bytes()
				if errors.Is(err, redis.Nil) {
					continue // expired between SCAN and GET
				}
				if err != nil {
					s.refused(fmt.Errorf("%w: %v", errMalformed, err), "stored fact", keys[i])
					continue
				}
				f, err := decodeStored(v)
				if err != nil {
					s.refused(err, "stored fact", keys[i])
					continue
				}
				// A key without a TTL (-1) is a fact that never ends:
				// absurd, like one longer than a day.
				f.D = int64(ttls[i].Val())
				if left := ttls[i].Val(); left == -1 || left > maxRemaining {
					s.n.absurd.Add(1)
					continue
				}
				if f.D <= 0 {
					continue // expired between GET and PTTL
				}
				s.apply(f, true)
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// handle applies one message of the channel.
func (s *Sharer) handle(payload []byte) {
	at := time.Now()
	m, absurd, err := decodeMessage(payload)
	if err != nil {
		s.refused(err, "message", "")
		return
	}
	s.n.absurd.Add(uint64(absurd))
	if m.R == s.id {
		s.n.echoes.Add(1)
		return
	}
	s.delays.add(max(at.Sub(time.Unix(0, m.T)), 0))
	for _, f := range m.Facts {
		s.apply(f, false)
	}
}

// refused counts and logs a message or stored value refused whole.
func (s *Sharer) refused(err error, what, key string) {
	if errors.Is(err, errOversized) {
		s.n.oversized.Add(1)
	} else {
		s.n.malformed.Add(1)
	}
	s.log.Debug("shared health: refused a "+what, zap.String("key", key), zap.Error(err))
}

// apply hands one checked fact of another replica (or of the store) to the
// actor: a name this configuration has, a kind it has a rule for, its time
// left capped by this configuration's maximum and turned into a deadline
// by this replica's clock.
func (s *Sharer) apply(w wireFact, loaded bool) {
	f := w.fact()
	id, ok := s.actor.ID(w.Name, w.Provider)
	if !ok {
		s.n.unknown.Add(1)
		return
	}
	limit := health.MaxDuration(s.c, id, f.Kind)
	if limit <= 0 {
		s.n.unknown.Add(1)
		return
	}
	now := s.clock.Now().UnixNano()
	switch {
	case w.event():
		f.Until = now - w.D // when it happened, by this clock
	case f.Recovered:
		f.Until = now // about when it happened: the message's transit ago
	default:
		left := time.Duration(w.D)
		if left > limit {
			left = limit
			s.n.capped.Add(1)
		}
		f.Until = now + int64(left)
	}
	switch err := s.actor.Import(f); {
	case err == nil:
	case errors.Is(err, health.ErrImportFull):
		s.n.importFull.Add(1)
		return
	case errors.Is(err, health.ErrUnknownName):
		s.n.unknown.Add(1)
		return
	case errors.Is(err, health.ErrStopped):
		return
	default:
		s.n.malformed.Add(1)
		return
	}
	s.n.received.Add(1)
	if loaded {
		s.n.loaded.Add(1)
	}
	switch {
	case f.Kind != health.Ejected || f.Strike || f.Clear:
	case f.Recovered:
		s.probes.forget(id)
	default:
		s.probes.track(id, f, now)
	}
	if s.onApply != nil {
		s.onApply(f)
	}
}
