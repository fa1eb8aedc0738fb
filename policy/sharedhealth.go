package policy

import (
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// SharedHealth is engine.shared_health (docs/configuration.md#shared_health):
// the replicas of a gateway share the health facts they learn (Retry-After
// blocks, latency blocks, ejections and recoveries) through one Redis
// server, so that an outage one replica sees is skipped by all. The block
// absent means off; present, it is on unless Enabled is false. Finalize
// fills every key left out with its default and expands $NAME and ${NAME}
// in Username and Password from the environment.
//
// Only the types and their validation live here: the package that talks to
// Redis is redishealth, which a host (cmd/gateway) attaches to the engine.
type SharedHealth struct {
	Enabled *bool `yaml:"enabled,omitempty"`
	// Address is the Redis server, host:port. Required when enabled.
	Address  string `yaml:"address,omitempty"`
	Username string `yaml:"username,omitempty"`
	Password string `yaml:"password,omitempty"`
	// DB is the Redis logical database (SELECT); default 0.
	DB  *int             `yaml:"db,omitempty"`
	TLS *SharedHealthTLS `yaml:"tls,omitempty"`
	// KeyPrefix starts every key the replicas write; default "reroute:".
	// Replicas that share health must have the same prefix and channel.
	KeyPrefix string `yaml:"key_prefix,omitempty"`
	// Channel is the pub/sub channel of the facts; default
	// "reroute:health".
	Channel string `yaml:"channel,omitempty"`
	// ReplicaID names this process in its messages, so that it ignores
	// its own; default "" (a random one per process, which is what a
	// fleet wants: two processes must never share one).
	ReplicaID string `yaml:"replica_id,omitempty"`
	// Timeout bounds each Redis command and the connection set-up;
	// default 500ms. None of them is ever on a request's path.
	Timeout *Duration `yaml:"timeout,omitempty"`
	// MaxBackoff bounds the wait between two attempts to reconnect
	// (doubling from 50 ms); default 5s.
	MaxBackoff *Duration `yaml:"max_backoff,omitempty"`
	// ProbeLock takes a short lock in Redis before an ejected target's
	// cooldown ends so that one replica of the fleet probes it; default
	// true.
	ProbeLock *bool `yaml:"probe_lock,omitempty"`
	// ProbeLockTTL is how long the lock holds: the other replicas keep the
	// target ejected until the probe's outcome arrives or the lock
	// expires; default 5s.
	ProbeLockTTL *Duration `yaml:"probe_lock_ttl,omitempty"`
	// QueueSize bounds the facts waiting to be sent; past it facts are
	// dropped and counted; default 1024.
	QueueSize *int `yaml:"queue_size,omitempty"`
}

// SharedHealthTLS is engine.shared_health.tls.
type SharedHealthTLS struct {
	Enabled *bool `yaml:"enabled,omitempty"` // default false
	// CAFile is a PEM file of the certificate authorities to trust; ""
	// trusts the system's.
	CAFile string `yaml:"ca_file,omitempty"`
	// ServerName is the name the server's certificate must carry; "" is
	// the host of Address.
	ServerName string `yaml:"server_name,omitempty"`
}

// Defaults and bounds of engine.shared_health.
const (
	DefaultSharedKeyPrefix    = "reroute:"
	DefaultSharedChannel      = "reroute:health"
	DefaultSharedTimeout      = 500 * time.Millisecond
	DefaultSharedMaxBackoff   = 5 * time.Second
	DefaultSharedProbeLockTTL = 5 * time.Second
	DefaultSharedQueueSize    = 1024
	// MaxSharedTimeout bounds timeout and max_backoff.
	MaxSharedTimeout = time.Minute
	// MaxSharedQueueSize bounds queue_size (a fact waiting is ~64 bytes).
	MaxSharedQueueSize = 1 << 20
	// MaxSharedNameLength bounds key_prefix, channel and replica_id.
	MaxSharedNameLength = 200
)

// On reports whether sharing is configured and enabled. A nil s is off.
func (s *SharedHealth) On() bool { return s != nil && s.Enabled != nil && *s.Enabled }

// TLSOn reports whether tls.enabled is true.
func (s *SharedHealth) TLSOn() bool {
	return s != nil && s.TLS != nil && s.TLS.Enabled != nil && *s.TLS.Enabled
}

// sharedHealth checks engine.shared_health and fills its defaults.
func (k *checker) sharedHealth() {
	const p = "engine.shared_health"
	s := k.cfg.Engine.SharedHealth
	if s == nil {
		return
	}
	setDefault(&s.Enabled, true)
	if *s.Enabled {
		if s.Address == "" {
			k.errorf(p+".address", "is required when shared_health is enabled (host:port of the Redis server)")
		}
	}
	if s.Address != "" {
		host, port, err := net.SplitHostPort(s.Address)
		n, perr := strconv.Atoi(port)
		switch {
		case err != nil:
			k.errorf(p+".address", "must be host:port, got %q: %v", s.Address, err)
		case host == "":
			k.errorf(p+".address", "must name a host, got %q", s.Address)
		case perr != nil || n < 1 || n > 65535:
			k.errorf(p+".address", "port must be a number from 1 to 65535, got %q", port)
		}
	}
	s.Username = k.expand(p+".username", s.Username, "it")
	s.Password = k.expand(p+".password", s.Password, "it")
	if s.DB != nil && (*s.DB < 0 || *s.DB > 1<<20) {
		k.errorf(p+".db", "must be between 0 and %d, got %d", 1<<20, *s.DB)
	}
	setDefault(&s.DB, 0)
	if s.TLS == nil {
		s.TLS = &SharedHealthTLS{}
	}
	setDefault(&s.TLS.Enabled, false)
	if !*s.TLS.Enabled && (s.TLS.CAFile != "" || s.TLS.ServerName != "") {
		k.warnf(p+".tls", "ca_file and server_name are ignored while tls.enabled is false")
	}
	if *s.TLS.Enabled && s.TLS.CAFile != "" {
		if _, err := os.Stat(s.TLS.CAFile); err != nil {
			k.errorf(p+".tls.ca_file", "cannot read %q: %v", s.TLS.CAFile, err)
		}
	}
	if s.KeyPrefix == "" {
		s.KeyPrefix = DefaultSharedKeyPrefix
	}
	if s.Channel == "" {
		s.Channel = DefaultSharedChannel
	}
	for _, f := range []struct{ name, v string }{{"key_prefix", s.KeyPrefix}, {"channel", s.Channel}, {"replica_id", s.ReplicaID}} {
		switch {
		case len(f.v) > MaxSharedNameLength:
			k.errorf(p+"."+f.name, "must be at most %d bytes, got %d", MaxSharedNameLength, len(f.v))
		case strings.ContainsAny(f.v, "*?[]\\ \t\r\n"):
			// The keys are listed with SCAN MATCH prefix*: a pattern
			// character in the prefix would match other keys.
			k.errorf(p+"."+f.name, "must not contain spaces or any of * ? [ ] \\, got %q", f.v)
		}
	}
	k.sharedDuration(p+".timeout", &s.Timeout, DefaultSharedTimeout, MaxSharedTimeout)
	k.sharedDuration(p+".max_backoff", &s.MaxBackoff, DefaultSharedMaxBackoff, MaxSharedTimeout)
	k.sharedDuration(p+".probe_lock_ttl", &s.ProbeLockTTL, DefaultSharedProbeLockTTL, MaxEjectionCooldown)
	setDefault(&s.ProbeLock, true)
	if s.QueueSize != nil && (*s.QueueSize < 1 || *s.QueueSize > MaxSharedQueueSize) {
		k.errorf(p+".queue_size", "must be between 1 and %d, got %d", MaxSharedQueueSize, *s.QueueSize)
	}
	setDefault(&s.QueueSize, DefaultSharedQueueSize)
}

// sharedDuration checks a duration key of shared_health: greater than 0, at
// most limit; nil gets def.
func (k *checker) sharedDuration(path string, d **Duration, def, limit time.Duration) {
	switch {
	case *d == nil:
		v := Duration(def)
		*d = &v
	case **d <= 0:
		k.errorf(path, "must be greater than 0, got %s", time.Duration(**d))
	case **d > Duration(limit):
		k.errorf(path, "must be at most %s, got %s", limit, time.Duration(**d))
	}
}
