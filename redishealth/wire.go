package redishealth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/reroute-go/reroute/health"
)

// The wire format: one JSON object per pub/sub message, a batch of facts,
// and one JSON fact per stored key.
//
//	{"v":1,"r":"9f2c…","t":1712345678901234567,
//	 "f":[{"n":"openai/gpt-4o","k":"retry_after","d":30000000000},
//	      {"n":"openai","p":true,"k":"ejected","d":5000000000,"e":1},
//	      {"n":"openai/gpt-4o","k":"recovered"}]}
//	{"v":1,"r":"9f2c…","t":1712345678901234568,
//	 "f":[{"n":"openai/gpt-4o-mini","k":"strike","d":1200000}]}
//
// v is the format's version, r the sending replica's id, t the sender's
// wall clock at sending (unix ns) for the propagation delay only, and each
// fact's d the time left of the block or ejection when it was sent, in
// nanoseconds: a duration, not a deadline, so that the receiver's clock
// decides when it ends and clocks apart do not matter (the error is the
// message's transit time). A strike (a failure counted toward a streak)
// and a clear (a success that ended one) are events, not blocks: their d is
// their age when sent (0 or more), and they are published, never stored,
// in messages of their own (see Sharer.publish).
// JSON rather than a binary format: facts are
// rare (one per outage and replica, not per request), a message is a few
// hundred bytes, and an operator can read them with redis-cli.
const wireVersion = 1

// Bounds of what a message may hold; anything past them is refused whole.
const (
	// maxMessage bounds a message's size in bytes.
	maxMessage = 32 << 10
	// maxBatch bounds the facts of one message.
	maxBatch = 64
	// maxName bounds a target id or provider name, and a replica id.
	maxName = 256
	// maxRemaining is the longest duration a fact may carry: the longest
	// any configuration allows (max_retry_after_seconds and
	// block_duration_seconds are at most a day). Longer is absurd.
	maxRemaining = 24 * time.Hour
	// maxEjections bounds a fact's number of consecutive ejections.
	maxEjections = 1 << 16
	// maxAge bounds the age of a strike or clear: one older says nothing
	// about a streak of failures in a row now.
	maxAge = time.Minute
)

// The kinds on the wire.
const (
	kindRetryAfter = "retry_after"
	kindLatency    = "latency"
	kindEjected    = "ejected"
	kindRecovered  = "recovered"
	kindStrike     = "strike"
	kindClear      = "clear"
)

// message is one pub/sub message.
type message struct {
	V     int        `json:"v"`
	R     string     `json:"r"`
	T     int64      `json:"t"`
	Facts []wireFact `json:"f"`
}

// wireFact is one fact as sent and stored.
type wireFact struct {
	Name     string `json:"n"`
	Provider bool   `json:"p,omitempty"`
	Kind     string `json:"k"`
	D        int64  `json:"d,omitempty"` // time left, ns (a strike's or clear's age)
	E        int    `json:"e,omitempty"` // ejections
}

// Why a message or a fact is refused.
var (
	errOversized = errors.New("oversized")
	errMalformed = errors.New("malformed")
	errAbsurd    = errors.New("absurd duration")
)

// decodeMessage parses and checks one message. A message that is too
// large, is not valid JSON of the format, or holds any invalid field is
// refused whole (errOversized, errMalformed); a fact whose duration is out
// of range is left out and counted in absurd. Names are not looked up
// here: that depends on the receiver's configuration.
func decodeMessage(b []byte) (m message, absurd int, err error) {
	if len(b) > maxMessage {
		return message{}, 0, errOversized
	}
	if err := strictJSON(b, &m); err != nil {
		return message{}, 0, err
	}
	switch {
	case m.V != wireVersion:
		return message{}, 0, fmt.Errorf("%w: version %d", errMalformed, m.V)
	case m.R == "" || len(m.R) > maxName:
		return message{}, 0, fmt.Errorf("%w: replica id of %d bytes", errMalformed, len(m.R))
	case m.T <= 0:
		return message{}, 0, fmt.Errorf("%w: send time %d", errMalformed, m.T)
	case len(m.Facts) == 0 || len(m.Facts) > maxBatch:
		return message{}, 0, fmt.Errorf("%w: %d facts", errMalformed, len(m.Facts))
	}
	kept := m.Facts[:0]
	for _, f := range m.Facts {
		switch err := f.check(); {
		case errors.Is(err, errAbsurd):
			absurd++
		case err != nil:
			return message{}, 0, err
		default:
			kept = append(kept, f)
		}
	}
	m.Facts = kept
	return m, absurd, nil
}

// decodeStored parses and checks the value of a stored fact; its time left
// is the key's TTL, not the value's d.
func decodeStored(b []byte) (wireFact, error) {
	var f wireFact
	if len(b) > maxMessage {
		return f, errOversized
	}
	if err := strictJSON(b, &f); err != nil {
		return f, err
	}
	if f.Kind == kindRecovered || f.Kind == kindStrike || f.Kind == kindClear {
		return f, fmt.Errorf("%w: a %s is not stored", errMalformed, f.Kind)
	}
	f.D = 1 // checked against the TTL by the caller
	return f, f.check()
}

// strictJSON decodes exactly one JSON value into v, refusing unknown
// fields and trailing data.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the JSON value", errMalformed)
	}
	return nil
}

// check validates one fact's fields.
func (f *wireFact) check() error {
	if f.Name == "" || len(f.Name) > maxName {
		return fmt.Errorf("%w: name of %d bytes", errMalformed, len(f.Name))
	}
	if f.E < 0 || f.E > maxEjections {
		return fmt.Errorf("%w: ejections %d", errMalformed, f.E)
	}
	switch f.Kind {
	case kindRecovered:
		if f.D != 0 || f.E != 0 {
			return fmt.Errorf("%w: a recovery carries no duration", errMalformed)
		}
		return nil
	case kindStrike, kindClear:
		switch {
		case f.E != 0:
			return fmt.Errorf("%w: ejections on a %s", errMalformed, f.Kind)
		case f.D < 0 || f.D > int64(maxAge):
			return fmt.Errorf("%w: a %s %d ns old", errAbsurd, f.Kind, f.D)
		}
		return nil
	case kindRetryAfter, kindLatency:
		if f.E != 0 {
			return fmt.Errorf("%w: ejections on a %s fact", errMalformed, f.Kind)
		}
	case kindEjected:
	default:
		return fmt.Errorf("%w: kind %q", errMalformed, f.Kind)
	}
	if f.D <= 0 || f.D > int64(maxRemaining) {
		return fmt.Errorf("%w: %d ns", errAbsurd, f.D)
	}
	return nil
}

// toWire converts a fact of the local actor, whose Until is by its clock
// at now, into the wire form; false when it has already ended or its name
// is too long to send.
func toWire(f health.Fact, now int64) (wireFact, bool) {
	w := wireFact{Name: f.Name, Provider: f.Provider}
	if len(f.Name) == 0 || len(f.Name) > maxName {
		return w, false
	}
	switch {
	case f.Kind == health.Ejected && f.Recovered:
		w.Kind = kindRecovered
		return w, true
	case f.Kind == health.Ejected && (f.Strike || f.Clear):
		w.Kind, w.D = kindStrike, max(now-f.Until, 0)
		if f.Clear {
			w.Kind = kindClear
		}
		return w, w.D <= int64(maxAge)
	case f.Kind == health.Ejected:
		w.Kind, w.E = kindEjected, min(max(f.Ejections, 1), maxEjections)
	case f.Kind == health.Latency:
		w.Kind = kindLatency
	case f.Kind == health.RetryAfter:
		w.Kind = kindRetryAfter
	default:
		return w, false
	}
	w.D = min(f.Until-now, int64(maxRemaining))
	return w, w.D > 0
}

// fact maps a checked wire fact to the health fact it says, without its
// Until (the receiver's clock decides it).
func (f *wireFact) fact() health.Fact {
	h := health.Fact{Name: f.Name, Provider: f.Provider, Kind: health.Ejected, Ejections: f.E}
	switch f.Kind {
	case kindRetryAfter:
		h.Kind = health.RetryAfter
	case kindLatency:
		h.Kind = health.Latency
	case kindRecovered:
		h.Recovered = true
	case kindStrike:
		h.Strike = true
	case kindClear:
		h.Clear = true
	}
	return h
}

// event reports whether the fact is a strike or a clear: D is its age.
func (f *wireFact) event() bool { return f.Kind == kindStrike || f.Kind == kindClear }

// encodeMessage renders a batch; it never fails for facts made by toWire.
func encodeMessage(replica string, sent int64, facts []wireFact) []byte {
	b, _ := json.Marshal(message{V: wireVersion, R: replica, T: sent, Facts: facts})
	return b
}

// encodeStored renders the value of a stored fact.
func encodeStored(f wireFact) []byte {
	f.D = 0 // the key's TTL says how long it lasts
	b, _ := json.Marshal(f)
	return b
}
