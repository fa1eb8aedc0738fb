package policy

import (
	"testing"
	"time"
)

const sharedBase = "model_providers:\n  - model: openai/gpt-4o\nengine:\n  shared_health:\n"

func TestSharedHealthOffByDefault(t *testing.T) {
	cfg, _ := mustParse(t, "model_providers:\n  - model: openai/gpt-4o\n")
	if cfg.Engine.SharedHealth.On() {
		t.Fatal("shared health is on without a shared_health block")
	}
	cfg, _ = mustParse(t, sharedBase+"    enabled: false\n")
	if cfg.Engine.SharedHealth.On() {
		t.Fatal("enabled: false is on")
	}
}

func TestSharedHealthDefaults(t *testing.T) {
	t.Setenv("REROUTE_TEST_REDIS_USER", "gw")
	t.Setenv("REROUTE_TEST_REDIS_PASSWORD", "s3cret$")
	cfg, warns := mustParse(t, sharedBase+"    address: redis.internal:6379\n    username: $REROUTE_TEST_REDIS_USER\n    password: ${REROUTE_TEST_REDIS_PASSWORD}\n")
	if len(warns) != 0 {
		t.Fatalf("warnings: %v", warns)
	}
	s := cfg.Engine.SharedHealth
	if !s.On() || s.TLSOn() {
		t.Fatalf("On %v, TLSOn %v; want on without TLS", s.On(), s.TLSOn())
	}
	if s.Username != "gw" || s.Password != "s3cret$" {
		t.Errorf("username %q password %q: not expanded from the environment", s.Username, s.Password)
	}
	if s.KeyPrefix != DefaultSharedKeyPrefix || s.Channel != DefaultSharedChannel || *s.DB != 0 {
		t.Errorf("key_prefix %q channel %q db %d", s.KeyPrefix, s.Channel, *s.DB)
	}
	if s.Timeout.D() != DefaultSharedTimeout || s.MaxBackoff.D() != DefaultSharedMaxBackoff || s.ProbeLockTTL.D() != DefaultSharedProbeLockTTL {
		t.Errorf("timeout %v max_backoff %v probe_lock_ttl %v", s.Timeout.D(), s.MaxBackoff.D(), s.ProbeLockTTL.D())
	}
	if !*s.ProbeLock || *s.QueueSize != DefaultSharedQueueSize {
		t.Errorf("probe_lock %v queue_size %d", *s.ProbeLock, *s.QueueSize)
	}
	// Finalize runs once: an expanded value holding "$" is not expanded
	// again.
	if _, err := cfg.Finalize(); err != nil || s.Password != "s3cret$" {
		t.Errorf("second Finalize: %v, password %q", err, s.Password)
	}
}

func TestSharedHealthEnvMissingWarns(t *testing.T) {
	_, warns := mustParse(t, sharedBase+"    address: 127.0.0.1:6379\n    password: $REROUTE_TEST_UNSET_VARIABLE\n")
	if len(warns) != 1 || warns[0].Path != "engine.shared_health.password" {
		t.Fatalf("warnings %v, want one at engine.shared_health.password", warns)
	}
}

func TestSharedHealthErrors(t *testing.T) {
	const p = "engine.shared_health"
	for _, tt := range []struct {
		name, body string
		want       []want
	}{
		{"address missing", "    key_prefix: x\n", []want{{path: p + ".address", msg: "is required"}}},
		{"address without port", "    address: redis\n", []want{{path: p + ".address", msg: "host:port"}}},
		{"address without host", "    address: \":6379\"\n", []want{{path: p + ".address", msg: "must name a host"}}},
		{"bad port", "    address: redis:99999\n", []want{{path: p + ".address", msg: "1 to 65535"}}},
		{"negative db", "    address: r:1\n    db: -1\n", []want{{path: p + ".db", msg: "between 0"}}},
		{"zero timeout", "    address: r:1\n    timeout: 0s\n", []want{{path: p + ".timeout", msg: "greater than 0"}}},
		{"timeout too long", "    address: r:1\n    timeout: 2m\n", []want{{path: p + ".timeout", msg: "at most 1m0s"}}},
		{"zero max_backoff", "    address: r:1\n    max_backoff: 0\n", []want{{path: p + ".max_backoff", msg: "greater than 0"}}},
		{"lock ttl too long", "    address: r:1\n    probe_lock_ttl: 2h\n", []want{{path: p + ".probe_lock_ttl", msg: "at most 1h0m0s"}}},
		{"zero queue", "    address: r:1\n    queue_size: 0\n", []want{{path: p + ".queue_size", msg: "between 1"}}},
		{"glob in prefix", "    address: r:1\n    key_prefix: \"a*\"\n", []want{{path: p + ".key_prefix", msg: "must not contain"}}},
		{"space in channel", "    address: r:1\n    channel: \"a b\"\n", []want{{path: p + ".channel", msg: "must not contain"}}},
		{"ca file missing", "    address: r:1\n    tls: {enabled: true, ca_file: /nonexistent/ca.pem}\n", []want{{path: p + ".tls.ca_file", msg: "cannot read"}}},
		{"unknown key", "    address: r:1\n    adress: r:2\n", []want{{path: p + ".adress", msg: "unknown"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkProblems(t, "errors", parseError(t, sharedBase+tt.body), tt.want)
		})
	}
}

func TestSharedHealthTLSKeysWithoutTLSWarn(t *testing.T) {
	cfg, warns := mustParse(t, sharedBase+"    address: r:1\n    tls: {server_name: redis.internal}\n    timeout: 250ms\n")
	if len(warns) != 1 || warns[0].Path != "engine.shared_health.tls" {
		t.Fatalf("warnings %v", warns)
	}
	if cfg.Engine.SharedHealth.Timeout.D() != 250*time.Millisecond {
		t.Errorf("timeout %v", cfg.Engine.SharedHealth.Timeout.D())
	}
}
