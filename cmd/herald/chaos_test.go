package main

import (
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
)

// TestChaosTallies: the checker finds each kind of violation on raw frames
// and charges it to the span in which the notification was first posted.
func TestChaosTallies(t *testing.T) {
	t0 := time.Now()
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	r := newRun(chaosConfig{}, devState{})
	d := &chaosDevice{user: "u"}
	r.devices = []*chaosDevice{d}
	r.accepted["u"] = map[uint64]string{1: "a", 2: "b", 3: "c", 4: "d", 5: "e"}
	r.posts = map[string]time.Time{"a": at(1), "b": at(2), "c": at(11), "d": at(12), "e": at(13)}
	frame := func(seq uint64, id string) chaosFrame {
		return chaosFrame{ServerFrame: wire.ServerFrame{Type: wire.TypeNotification, Seq: seq, ID: id}, at: at(20)}
	}
	// a and b arrive, b twice; in the second span c arrives after d, e
	// never, and d is also stored a second time at seq 6.
	d.frames = []chaosFrame{frame(1, "a"), frame(2, "b"), frame(2, "b"), frame(4, "d"), frame(3, "c"), frame(6, "d")}
	r.refusals = []time.Time{at(12)}
	r.unknowns = []chaosUnknown{{at: at(3), why: "503 unknown_outcome"}}
	r.closes = []chaosClose{{at: at(14), code: 1013}, {at: at(14), code: 0}}
	r.rehomes = []chaosRehome{{at: at(14), took: 50 * time.Millisecond}}
	ts := r.tallies([]time.Time{at(0), at(10)})
	if len(ts) != 3 || ts[0].accepted != 0 {
		t.Fatalf("tallies %+v: want 3, nothing before the first bound", ts)
	}
	first, second := ts[1], ts[2]
	if first.accepted != 2 || first.lost != 0 || first.dups != 1 || first.disorder != 0 || first.unknown != 1 || first.unavailable != 0 {
		t.Errorf("first span %+v: want 2 accepted, 1 duplicate (not also out of order), 1 unknown", first)
	}
	if got := first.unknownKinds(); got != "503 unknown_outcome×1" {
		t.Errorf("first span's unknown answers %q, want the one 503 unknown_outcome", got)
	}
	if second.accepted != 3 || second.lost != 1 || second.disorder != 1 || second.storedTwice != 1 || second.unavailable != 1 {
		t.Errorf("second span %+v: want 3 accepted, 1 lost, 1 out of order, 1 stored twice, 1 unavailable", second)
	}
	if second.closed() != 2 || second.closeCodes() != "none×1 1013×1" || second.rehome(.99) != 50*time.Millisecond {
		t.Errorf("second span closes %s, re-home p99 %v: want none×1 1013×1 and 50ms", second.closeCodes(), second.rehome(.99))
	}
	if len(first.problems()) == 0 || len(second.problems()) == 0 {
		t.Error("spans with violations report no problems")
	}
}
