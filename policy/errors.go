package policy

import (
	"fmt"
	"strings"
)

// Problem is one finding about a configuration: where it is and what is
// wrong. Errors and warnings share it, and so do the scenario files of
// package bench, which embed a configuration.
type Problem struct {
	// Path is the field path, e.g.
	// "model_providers[0].retry_policy.backoff.max_ms"; "" for a problem
	// of the whole document.
	Path string
	// Model is the model of the provider entry the path is in, when known.
	Model string
	// Line is the 1-based line in the YAML source; 0 when the
	// configuration did not come from YAML or the line is unknown.
	Line int
	// Message says what is wrong and, where it helps, what to write.
	Message string
}

// String renders the problem on one line, leaving out what is unknown:
//
//	line 9: model_providers[0].retry_policy.backoff.apply_to: (model openai/gpt-4o) backoff requires apply_to: …
//
// The line comes first so that problems sorted by line read top down.
func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	if p.Model != "" {
		fmt.Fprintf(&b, "(model %s) ", p.Model)
	}
	b.WriteString(p.Message)
	return b.String()
}

// Warning is a Problem that does not stop a configuration from loading. A
// caller logs or prints it.
type Warning = Problem

// Error is every error found in one configuration. Parse, Load and
// Finalize return it (as error); use errors.As to reach the problems.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "reroute: invalid configuration (%d problem", len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteString("s")
	}
	b.WriteString("):")
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}
