package main

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// stats summarizes samples: the median and the spread around it.
type stats struct {
	n                            int
	med, p10, p90, p99, min, max float64
}

func summarize(xs []float64) stats {
	if len(xs) == 0 {
		return stats{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	// Nearest rank.
	pct := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stats{n: len(s), med: med, p10: pct(10), p90: pct(90), p99: pct(99), min: s[0], max: s[len(s)-1]}
}

// median is the median of xs; NaN when there is none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	return summarize(xs).med
}

// row is one figure of the report.
type row struct {
	what   string
	n      int
	unit   string
	value  float64
	lo, hi float64 // the spread; NaN when there is none
	spread string  // what lo and hi are: "p10–p90", "min–max"
	anchor string  // what the figure is compared to
	ratio  string  // the comparison, formatted
	target string  // the goal, empty when there is none
	met    string  // "yes", "no" or "" (no target)
	skip   string  // why the row was not measured
}

// section is one part of the report: a table and notes.
type section struct {
	title    string
	intro    string
	rows     []*row
	notes    []string
	profiles []profileText
	err      error
	took     time.Duration
}

type profileText struct{ title, text string }

// report is docs/BENCHMARKS.md: what the machine is, then the sections.
type report struct {
	machine  [][2]string
	sections []*section
}

// section adds a section to the report.
func (r *report) section(title, intro string) *section {
	s := &section{title: title, intro: intro}
	r.sections = append(r.sections, s)
	return s
}

func (s *section) add(r *row) *row {
	if r.spread == "" && !math.IsNaN(r.lo) {
		r.spread = "min–max"
	}
	s.rows = append(s.rows, r)
	return r
}

// skipRow records a figure that could not be measured, and why.
func (s *section) skipRow(what, why string) {
	s.rows = append(s.rows, &row{what: what, skip: why, lo: math.NaN(), hi: math.NaN()})
	fmt.Fprintf(os.Stderr, "bench: SKIP %s: %s\n", what, why)
}

func (s *section) note(format string, args ...any) {
	s.notes = append(s.notes, fmt.Sprintf(format, args...))
}

// fromStats fills a row's value and spread from samples.
func fromStats(r *row, st stats, spread string) *row {
	r.n = st.n
	r.value = st.med
	r.spread = spread
	switch spread {
	case "p10–p90":
		r.lo, r.hi = st.p10, st.p90
	default:
		r.spread = "min–max"
		r.lo, r.hi = st.min, st.max
	}
	return r
}

func single(r *row, v float64) *row {
	r.n = 1
	r.value = v
	r.lo, r.hi = math.NaN(), math.NaN()
	return r
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// fmtVal prints v in unit.
func fmtVal(unit string, v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	switch unit {
	case "ms", "CPU ms":
		switch {
		case v < 1:
			return fmt.Sprintf("%.3f", v)
		case v < 100:
			return fmt.Sprintf("%.2f", v)
		}
		return fmt.Sprintf("%.0f", v)
	case "µs", "MiB/s", "MB/s", "KiB", "jobs":
		return fmt.Sprintf("%.0f", v)
	case "s", "MiB":
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func ratioX(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	if v >= 10 {
		return fmt.Sprintf("%.0f×", v)
	}
	return fmt.Sprintf("%.2f×", v)
}

func pct(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return fmt.Sprintf("%.0f%%", 100*v)
}

func cell(s string) string {
	s = strings.ReplaceAll(s, "|", "\\|")
	s = strings.ReplaceAll(s, "\n", " ")
	if s == "" {
		return "—"
	}
	return s
}

func (r *report) markdown(header string) string {
	var b strings.Builder
	b.WriteString(header)
	b.WriteString("\n## Machine\n\n| | |\n| --- | --- |\n")
	for _, kv := range r.machine {
		fmt.Fprintf(&b, "| %s | %s |\n", kv[0], cell(kv[1]))
	}

	r.targets(&b)
	for _, s := range r.sections {
		fmt.Fprintf(&b, "\n## %s\n\n", s.title)
		if s.intro != "" {
			b.WriteString(s.intro + "\n\n")
		}
		if s.err != nil {
			fmt.Fprintf(&b, "**This section failed: %s.** The figures below are what it measured before.\n\n", cell(s.err.Error()))
		}
		if len(s.rows) > 0 {
			b.WriteString("| figure | N | median | spread | anchor | ratio | target | met |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
			for _, rw := range s.rows {
				if rw.skip != "" {
					fmt.Fprintf(&b, "| %s | 0 | skipped | %s | | | %s | |\n", cell(rw.what), cell(rw.skip), rw.target)
					continue
				}
				spread := "—"
				if !math.IsNaN(rw.lo) && !math.IsNaN(rw.hi) {
					spread = fmt.Sprintf("%s–%s (%s)", fmtVal(rw.unit, rw.lo), fmtVal(rw.unit, rw.hi), rw.spread)
				}
				fmt.Fprintf(&b, "| %s | %d | %s %s | %s | %s | %s | %s | %s |\n",
					cell(rw.what), rw.n, fmtVal(rw.unit, rw.value), rw.unit, spread,
					cell(rw.anchor), cell(rw.ratio), cell(rw.target), cell(rw.met))
			}
		}
		if len(s.notes) > 0 {
			b.WriteString("\n")
			for _, n := range s.notes {
				fmt.Fprintf(&b, "- %s\n", n)
			}
		}
		for _, p := range s.profiles {
			fmt.Fprintf(&b, "\n<details><summary>%s</summary>\n\n```\n%s\n```\n</details>\n", p.title, strings.TrimRight(p.text, "\n"))
		}
		if s.took > 0 {
			fmt.Fprintf(&b, "\n_Section took %s._\n", s.took.Round(100*time.Millisecond))
		}
	}
	return b.String()
}

// targets writes the table of every figure that has a target.
func (r *report) targets(b *strings.Builder) {
	b.WriteString("\n## Targets\n\n| section | figure | measured | target | met |\n| --- | --- | --- | --- | --- |\n")
	for _, s := range r.sections {
		for _, rw := range s.rows {
			if rw.target == "" {
				continue
			}
			measured := fmtVal(rw.unit, rw.value) + " " + rw.unit + "; " + rw.ratio
			if rw.unit == "" {
				measured = rw.anchor + "; " + rw.ratio
			}
			met := rw.met
			if rw.skip != "" {
				measured, met = "skipped: "+rw.skip, "not measured"
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s | **%s** |\n", cell(shortTitle(s.title)), cell(rw.what), cell(measured), cell(rw.target), cell(met))
		}
	}
}

// shortTitle is a section's title up to its colon: "1. Start latency".
func shortTitle(t string) string {
	if i := strings.Index(t, ":"); i > 0 {
		return t[:i]
	}
	return t
}
