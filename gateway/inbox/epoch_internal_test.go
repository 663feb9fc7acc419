package inbox

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats.go/jetstream"
)

func testInfo(created time.Time, mark string, last uint64) *jetstream.StreamInfo {
	info := &jetstream.StreamInfo{Created: created, State: jetstream.StreamState{LastSeq: last}}
	if mark != "" {
		info.Config.Metadata = map[string]string{EpochKey: mark, "_nats.req.level": "0"}
	}
	return info
}

// TestAdoptIgnoresOvertakenReads: answers to stream info reads can arrive
// out of order; one sent before the read the log's epoch came from cannot
// take the log back, but still raises the known high mark of its epoch.
func TestAdoptIgnoresOvertakenReads(t *testing.T) {
	created := time.Unix(1700000000, 5)
	l := &Log{}
	old := l.adopt(1, testInfo(created, "", 10))
	newer := l.adopt(3, testInfo(created, "m2", 12))
	if newer == old {
		t.Fatalf("a later read's new epoch was not adopted: %s", newer)
	}
	if got := l.adopt(2, testInfo(created, "", 11)); got != newer || l.Epoch() != newer {
		t.Fatalf("an overtaken read took the log back to %s (log %s), want %s", got, l.Epoch(), newer)
	}
	if !l.isRetired(old) {
		t.Fatalf("epoch %s, left while the stream stayed, is not retired", old)
	}
	l.adopt(2, testInfo(created, "m2", 20))
	if _, high := l.known(); high != 20 {
		t.Fatalf("high mark %d after reading last seq 20 in the log's epoch", high)
	}
	recreated := l.adopt(4, testInfo(created.Add(time.Second), "", 0))
	if recreated == newer || l.isRetired(newer) {
		t.Fatalf("recreated stream: epoch %s, old one retired %v; want a new epoch, the old not retired (its stream is gone)", recreated, l.isRetired(newer))
	}
}

// TestEpochOf: without a mark the epoch is what it always was; with one it
// is short and safe in frames and headers, whatever the mark holds.
func TestEpochOf(t *testing.T) {
	created := time.Unix(1700000000, 123456789)
	base := epochOf(created, "")
	if want := strconv.FormatInt(created.UnixNano(), 36); base != want {
		t.Fatalf("epochOf without a mark = %q, want %q (the creation time in base 36)", base, want)
	}
	for _, mark := range []string{"dn9p5tbj6zm2", "Not A Mark!", strings.Repeat("z", 100), "a.b\r\n"} {
		e := epochOf(created, mark)
		if !strings.HasPrefix(e, base+".") || len(e) > wire.MaxEpochBytes || strings.ContainsAny(e, " \r\n\"") {
			t.Errorf("epochOf(%q) = %q", mark, e)
		}
		if e2 := epochOf(created, mark+"x"); e2 == e {
			t.Errorf("marks %q and %q give one epoch %q", mark, mark+"x", e)
		}
	}
}

// TestLeaderlessAnswerIsNoLoss: while a replicated stream elects a leader,
// any replica answers a stream info with its own, possibly lagging, last
// seq. That is no proof of a loss; the same answer from a leader is.
func TestLeaderlessAnswerIsNoLoss(t *testing.T) {
	s := inboxtest.Run(t)
	nc := inboxtest.Connect(t, s.URL())
	l, err := Ensure(context.Background(), nc, Config{})
	if err != nil {
		t.Fatal(err)
	}
	old := l.Epoch()
	st, _ := l.known()
	lagging := testInfo(st.created, "", 10)
	lagging.Cluster = &jetstream.ClusterInfo{Name: "c", Leader: ""}
	e, err := l.checkInfo(context.Background(), st, 20, l.ticket(), lagging)
	if err != nil || e != old || l.Stats().NewEpochs != 0 {
		t.Fatalf("a leaderless replica's lagging answer: epoch %s, %v, %d recorded; want %s kept", e, err, l.Stats().NewEpochs, old)
	}
	lagging.Cluster.Leader = "n1" // the control: the same answer from a leader
	e, err = l.checkInfo(context.Background(), st, 20, l.ticket(), lagging)
	if err != nil || e == old || l.Stats().NewEpochs != 1 {
		t.Fatalf("a leader's answer below the known seqs: epoch %s, %v, %d recorded; want a new epoch", e, err, l.Stats().NewEpochs)
	}
}
