package inbox_test

import (
	"strconv"
	"testing"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
)

// TestErase: an erasure removes exactly the user's messages up to its last
// seq, leaves other users alone, and is seen by another process whose
// cached head is now wrong; an id retried from before it is stored anew
// (and then dedupes as usual), while an id whose message survives still
// answers as a duplicate.
func TestErase(t *testing.T) {
	s := inboxtest.Run(t)
	a := ensure(t, appendConn(t, s.URL()), inbox.Config{})
	b := ensure(t, appendConn(t, s.URL()), inbox.Config{}) // another dispatcher
	for i := range 5 {
		mustAppend(t, a, "alice", "a"+strconv.Itoa(i))
		mustAppend(t, a, "bob", "b"+strconv.Itoa(i))
	}
	last := mustAppend(t, b, "alice", "a5") // b caches alice's head
	e, err := a.Erase(ctx, "alice")
	if err != nil || e.Through != last.Seq || e.Purged != 6 || e.Epoch != a.Epoch() {
		t.Fatalf("Erase = %+v, %v; want through %d, 6 purged", e, err, last.Seq)
	}
	if got := readAll(t, a, "alice"); len(got) != 0 {
		t.Fatalf("alice's log after the erasure: %d messages", len(got))
	}
	if got := readAll(t, a, "bob"); len(got) != 5 {
		t.Fatalf("bob's log after alice's erasure: %d messages, want 5", len(got))
	}

	// b's cached head is wrong now: its append still lands, first in the
	// chain.
	n := mustAppend(t, b, "alice", "after")
	if n.Duplicate || n.Prev != 0 || n.Seq <= last.Seq {
		t.Fatalf("b's append after the erasure = %+v; want a new message with no predecessor", n)
	}
	// A retry of an erased id, inside the duplicate window, is stored anew
	// after the new head; retried again, it is a duplicate of that.
	r := mustAppend(t, a, "alice", "a2")
	if r.Duplicate || r.Prev != n.Seq {
		t.Fatalf("retry of an erased id = %+v; want stored anew after %d", r, n.Seq)
	}
	if again := mustAppend(t, b, "alice", "a2"); !again.Duplicate || again.Seq != r.Seq {
		t.Fatalf("second retry = %+v; want a duplicate of %d", again, r.Seq)
	}
	if dup := mustAppend(t, a, "bob", "b1"); !dup.Duplicate {
		t.Fatalf("bob's retried id = %+v; his message survives, want a duplicate", dup)
	}
	got := readAll(t, a, "alice")
	if len(got) != 2 || got[0].ID != "after" || got[1].ID != "a2" || got[1].Prev != got[0].Seq {
		t.Fatalf("alice's log: %+v; want after, a2 chained", got)
	}

	// Nothing to erase: nothing happens.
	if e, err := a.Erase(ctx, "carol"); err != nil || e.Through != 0 || e.Purged != 0 {
		t.Fatalf("Erase of an empty log = %+v, %v", e, err)
	}
}
