// Package policy holds reroute's configuration: the types of the YAML file,
// strict loading with every problem reported by field path and line,
// validation, and the pure decision functions the engine calls on every
// attempt: classify an outcome, resolve the strategy and max_attempts of a
// failure, compute a backoff delay, and read a Retry-After hint.
//
// Nothing here starts a goroutine, reads a clock or logs: time and
// randomness are passed in, which is what lets the engine, its tests and the
// simulator drive the same code in real or virtual time.
//
// # Usage
//
//	cfg, warnings, err := policy.Load("reroute.yaml")
//	if err != nil {
//		log.Fatal(err) // every problem, one per line, with path and line
//	}
//	for _, w := range warnings {
//		log.Print(w)
//	}
//	c := cfg.Compiled()
//	t, _ := c.Lookup("openai/gpt-4o")
//	rules := c.Rules[t]
//	class, _, _ := rules.Classify(&policy.Outcome{Status: 429})
//	action, key := rules.Resolve(class, 429)
//
// A Config is plain data; once Parse, Load or Finalize has returned it
// without error it must not be modified, and it and its Compiled form are
// then safe for concurrent use.
package policy
