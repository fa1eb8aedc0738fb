package main

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/policy"
	"github.com/reroute-go/reroute/redishealth"
)

// pathShared is the admin endpoint of health sharing
// (docs/shared-health.md#watching-it).
const pathShared = "/debug/reroute/shared"

// newSharer makes the Sharer of engine.shared_health, or nil when it is
// not configured. Its engine option goes to engine.New, then start.
func newSharer(cfg *policy.Config, log *zap.Logger) (*redishealth.Sharer, []engine.Option, error) {
	sh := cfg.Engine.SharedHealth
	if !sh.On() {
		return nil, nil, nil
	}
	s, err := redishealth.New(sh, cfg.Compiled(), redishealth.WithLogger(log.Named("shared_health")))
	if err != nil {
		return nil, nil, err
	}
	return s, []engine.Option{s.EngineOption()}, nil
}

// attachShared exposes s on /metrics and /debug/reroute/shared.
func (a *admin) attachShared(s *redishealth.Sharer) {
	a.shared.Store(s)
	a.reg.MustRegister(sharedCollector{s})
}

// shared answers /debug/reroute/shared: the Sharer's Stats as JSON, or
// {"enabled": false}.
func (a *admin) sharedStats(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	s := a.shared.Load()
	if s == nil {
		_ = json.NewEncoder(w).Encode(map[string]bool{"enabled": false})
		return
	}
	st := s.Stats()
	_ = json.NewEncoder(w).Encode(sharedJSON{
		Enabled: true, ReplicaID: st.ReplicaID, Connected: st.Connected,
		Connects: st.Connects, ConnectErrors: st.ConnectErrors,
		FactsSent: st.FactsSent, FactsReceived: st.FactsReceived, FactsLoaded: st.FactsLoaded,
		FactsCapped: st.FactsCapped, Echoes: st.Echoes, Replayed: st.Replayed,
		Dropped:    drops(st),
		SendErrors: st.SendErrors,
		ProbeLocks: map[string]uint64{"won": st.LocksWon, "lost": st.LocksLost, "error": st.LockErrors},
		DelayP50Ms: float64(st.DelayP50) / 1e6, DelayP99Ms: float64(st.DelayP99) / 1e6, DelaySamples: st.DelaySamples,
	})
}

type sharedJSON struct {
	Enabled       bool              `json:"enabled"`
	ReplicaID     string            `json:"replica_id"`
	Connected     bool              `json:"connected"`
	Connects      uint64            `json:"connects"`
	ConnectErrors uint64            `json:"connect_errors"`
	FactsSent     uint64            `json:"facts_sent"`
	FactsReceived uint64            `json:"facts_received"`
	FactsLoaded   uint64            `json:"facts_loaded"`
	FactsCapped   uint64            `json:"facts_capped"`
	Echoes        uint64            `json:"echoes"`
	Replayed      uint64            `json:"replayed"`
	Dropped       map[string]uint64 `json:"dropped"`
	SendErrors    uint64            `json:"send_errors"`
	ProbeLocks    map[string]uint64 `json:"probe_locks"`
	DelayP50Ms    float64           `json:"delay_p50_ms"`
	DelayP99Ms    float64           `json:"delay_p99_ms"`
	DelaySamples  int               `json:"delay_samples"`
}

func drops(st redishealth.Stats) map[string]uint64 {
	return map[string]uint64{
		"queue_full": st.QueueFull, "unsent": st.Unsent, "oversized": st.Oversized, "malformed": st.Malformed,
		"absurd": st.Absurd, "unknown": st.Unknown, "import_full": st.ImportFull,
	}
}

// sharedCollector exports a Sharer's Stats at each scrape.
type sharedCollector struct{ s *redishealth.Sharer }

var (
	descConnected = prometheus.NewDesc("reroute_shared_health_connected", "1 while the replica is connected to Redis and sharing health facts, else 0.", nil, nil)
	descConnects  = prometheus.NewDesc("reroute_shared_health_connects_total", "Connections to Redis made (the first and every reconnection).", nil, nil)
	descConnErrs  = prometheus.NewDesc("reroute_shared_health_connect_errors_total", "Attempts to connect to Redis that failed.", nil, nil)
	descFacts     = prometheus.NewDesc("reroute_shared_health_facts_total", "Health facts sent to the other replicas (direction sent) and received from them and applied (received; loaded: of those, from the store at a connection).", []string{"direction"}, nil)
	descReplayed  = prometheus.NewDesc("reroute_shared_health_replayed_total", "Recoveries sent again after a send failed or Redis was unreachable, so that the other replicas end their ejections.", nil, nil)
	descCapped    = prometheus.NewDesc("reroute_shared_health_facts_capped_total", "Received facts whose duration was cut to this configuration's maximum.", nil, nil)
	descDropped   = prometheus.NewDesc("reroute_shared_health_dropped_total", "Facts dropped or refused, by reason: queue_full, unsent, oversized, malformed, absurd, unknown, import_full.", []string{"reason"}, nil)
	descLocks     = prometheus.NewDesc("reroute_shared_health_probe_locks_total", "Probe locks tried, by outcome: won (this replica probes), lost (another does), error (probing locally).", []string{"outcome"}, nil)
	descDelay     = prometheus.NewDesc("reroute_shared_health_delay_seconds", "Propagation delay of the last received messages (receiver's clock minus sender's at sending), by quantile.", []string{"quantile"}, nil)
)

func (sharedCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnected, descConnects, descConnErrs, descFacts, descReplayed, descCapped, descDropped, descLocks, descDelay} {
		ch <- d
	}
}

func (c sharedCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	up := 0.0
	if st.Connected {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(descConnects, prometheus.CounterValue, float64(st.Connects))
	ch <- prometheus.MustNewConstMetric(descConnErrs, prometheus.CounterValue, float64(st.ConnectErrors))
	ch <- prometheus.MustNewConstMetric(descFacts, prometheus.CounterValue, float64(st.FactsSent), "sent")
	ch <- prometheus.MustNewConstMetric(descFacts, prometheus.CounterValue, float64(st.FactsReceived), "received")
	ch <- prometheus.MustNewConstMetric(descFacts, prometheus.CounterValue, float64(st.FactsLoaded), "loaded")
	ch <- prometheus.MustNewConstMetric(descReplayed, prometheus.CounterValue, float64(st.Replayed))
	ch <- prometheus.MustNewConstMetric(descCapped, prometheus.CounterValue, float64(st.FactsCapped))
	for reason, n := range drops(st) {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(n), reason)
	}
	ch <- prometheus.MustNewConstMetric(descLocks, prometheus.CounterValue, float64(st.LocksWon), "won")
	ch <- prometheus.MustNewConstMetric(descLocks, prometheus.CounterValue, float64(st.LocksLost), "lost")
	ch <- prometheus.MustNewConstMetric(descLocks, prometheus.CounterValue, float64(st.LockErrors), "error")
	ch <- prometheus.MustNewConstMetric(descDelay, prometheus.GaugeValue, st.DelayP50.Seconds(), "0.5")
	ch <- prometheus.MustNewConstMetric(descDelay, prometheus.GaugeValue, st.DelayP99.Seconds(), "0.99")
}
