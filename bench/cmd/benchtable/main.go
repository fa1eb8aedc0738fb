// Command benchtable reads `go test -bench` output on stdin and prints one
// row per benchmark: the median ns/op, B/op and allocs/op over its runs
// (make bench runs each -count 5 times), with the package it belongs to.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

type row struct {
	pkg, name         string
	ns, bytes, allocs []float64
}

func main() {
	if err := table(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

// table reads benchmark output from in and writes the median table to out.
func table(in io.Reader, out io.Writer) error {
	var (
		pkg   string
		order []string
		rows  = map[string]*row{}
	)
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = p
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		key := pkg + " " + f[0]
		r := rows[key]
		if r == nil {
			r = &row{pkg: pkg, name: f[0]}
			rows[key] = r
			order = append(order, key)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				r.ns = append(r.ns, v)
			case "B/op":
				r.bytes = append(r.bytes, v)
			case "allocs/op":
				r.allocs = append(r.allocs, v)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(order) == 0 {
		return errors.New("no benchmark rows in the input")
	}
	fmt.Fprintf(out, "%-28s %-56s %6s %12s %8s %10s\n", "package", "benchmark", "runs", "ns/op", "B/op", "allocs/op")
	for _, k := range order {
		r := rows[k]
		short := r.pkg
		if i := strings.LastIndex(r.pkg, "reroute/"); i >= 0 {
			short = r.pkg[i+len("reroute/"):]
		}
		fmt.Fprintf(out, "%-28s %-56s %6d %12.2f %8.0f %10.0f\n", short, r.name, len(r.ns), median(r.ns), median(r.bytes), median(r.allocs))
	}
	return nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
