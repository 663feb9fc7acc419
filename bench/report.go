// Package bench measures a running herald cluster the way users compare
// push gateways: the scenarios of `herald bench` (ring, notify, …), each a
// bounded run that ends in a Report — a table for people and JSON for
// machines, with the machine it ran on and the command that produced it.
package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is one scenario's result.
type Report struct {
	Scenario string    `json:"scenario"`
	Command  string    `json:"command"`
	Machine  Machine   `json:"machine"`
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Figures  []Figure  `json:"figures"`
	Notes    []string  `json:"notes,omitempty"`
	// Peers name the peer columns, in the order they were measured.
	Peers []string `json:"peers,omitempty"`
}

// Figure is one measured number. Peers are the same figure for each peer
// system measured in the same run, by the peer's name.
type Figure struct {
	Name  string             `json:"name"`
	Unit  string             `json:"unit"`
	Value float64            `json:"value"`
	Peers map[string]float64 `json:"peers,omitempty"`
}

// Machine says where a report was measured.
type Machine struct {
	CPU    string `json:"cpu"`
	Cores  int    `json:"cores"`
	Memory string `json:"memory"`
	Go     string `json:"go"`
	OS     string `json:"os"`
}

// ThisMachine reads the machine's description from /proc where it can.
func ThisMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	m.CPU = procField("/proc/cpuinfo", "model name")
	m.Memory = procField("/proc/meminfo", "MemTotal")
	return m
}

// procField is the value of the first "name: value" line of a /proc file.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Add appends a figure.
func (r *Report) Add(name, unit string, value float64) {
	r.Figures = append(r.Figures, Figure{Name: name, Unit: unit, Value: value})
}

// Note appends a remark printed under the table.
func (r *Report) Note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// Merge puts the figures of the same scenario measured on the peer beside
// r's, by name, in a column called name, and the peer's notes after r's.
func (r *Report) Merge(peer *Report, name string) {
	r.Peers = append(r.Peers, name)
	for _, pf := range peer.Figures {
		for i := range r.Figures {
			if f := &r.Figures[i]; f.Name == pf.Name {
				if f.Peers == nil {
					f.Peers = map[string]float64{}
				}
				f.Peers[name] = pf.Value
			}
		}
	}
	for _, n := range peer.Notes {
		r.Notes = append(r.Notes, name+": "+n)
	}
}

// Print writes the report as a table: herald's column, then each peer's
// with the ratio herald/peer.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "\nherald bench %s — %s, %d cores, %s, %s; %.0f s\n", r.Scenario, r.Machine.CPU, r.Machine.Cores, r.Machine.Memory, r.Machine.Go, r.Seconds)
	fmt.Fprintf(w, "command: %s\n\n", r.Command)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "figure\therald\t"
	for _, p := range r.Peers {
		head += p + "\tratio\t"
	}
	fmt.Fprintln(tw, head)
	for _, f := range r.Figures {
		line := f.Name + "\t" + format(f.Value, f.Unit) + "\t"
		for _, name := range r.Peers {
			p, ratio := "-", "-"
			if v, ok := f.Peers[name]; ok {
				p = format(v, f.Unit)
				if v != 0 {
					ratio = fmt.Sprintf("%.2f", f.Value/v)
				}
			}
			line += p + "\t" + ratio + "\t"
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	for _, n := range r.Notes {
		fmt.Fprintln(w, "  "+n)
	}
}

func format(v float64, unit string) string {
	switch {
	case v == float64(int64(v)) && (v >= 1000 || v <= -1000):
		return fmt.Sprintf("%d %s", int64(v), unit)
	case v >= 100 || v <= -100:
		return fmt.Sprintf("%.0f %s", v, unit)
	case v >= 1 || v <= -1:
		return fmt.Sprintf("%.2f %s", v, unit)
	default:
		return fmt.Sprintf("%.4g %s", v, unit)
	}
}

// WriteJSON writes the report to path as indented JSON.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
