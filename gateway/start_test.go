package gateway_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/wire"
)

// caughtUp waits for the socket's caught_up frame and returns the frames up
// to it, failing if it comes more than once.
func (s *socket) caughtUp() ([]wire.ServerFrame, wire.ServerFrame) {
	s.tb.Helper()
	var at int
	waitFor(s.tb, 5*time.Second, "caught_up", func() bool {
		for i, f := range s.all() {
			if f.Type == wire.TypeCaughtUp {
				at = i
				return true
			}
		}
		return s.isClosed()
	})
	frames := s.all()
	if at == 0 || frames[at].Type != wire.TypeCaughtUp {
		s.tb.Fatalf("frames %+v: no caught_up", frames)
	}
	return frames[:at], frames[at]
}

// TestStartChoices: a device without a cursor starts where its auth frame
// says — the whole retained log, the last N, or only what comes after it
// connects — and the hello echoes the choice and gives the cursor it
// starts from; caught_up follows the backlog once, and then live
// notifications follow it. A socket resuming from that cursor gets what
// came meanwhile, so choosing live loses nothing once connected.
func TestStartChoices(t *testing.T) {
	const kept = 30
	c := newCluster(t, inbox.Config{MaxMsgsPerUser: kept})
	c.startGateway("gw-1")
	url := c.gws["gw-1"].url
	var seqs []uint64 // every seq of alice's, in order; the log keeps the last 30
	for i := range 40 {
		seqs = append(seqs, c.publish("alice", "a"+strconv.Itoa(i), strconv.Itoa(i)).Seq)
		c.publish("bob", "b"+strconv.Itoa(i), `0`) // interleaved: alice's seqs are not consecutive
	}
	for _, tc := range []struct {
		name  string
		start string
		last  int
	}{
		{"all by default", "", 0},
		{"all", wire.StartAll, 0},
		{"last 10", wire.StartLast, 10},
		{"last 1", wire.StartLast, 1},
		{"last alone", "", 7},
		{"last 30, as many as are kept", wire.StartLast, kept},
		{"last 1000, more than are kept", wire.StartLast, wire.MaxLast},
		{"live", wire.StartLive, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Where the device should start: after the seq before the
			// last n, 0 when the log holds fewer.
			retained, head := seqs[len(seqs)-kept:], seqs[len(seqs)-1]
			want, cursor := retained, uint64(0)
			switch start, _ := wire.CheckStart(tc.start, tc.last); start {
			case wire.StartLast:
				if tc.last <= kept {
					want, cursor = seqs[len(seqs)-tc.last:], seqs[len(seqs)-tc.last-1]
				}
			case wire.StartLive:
				want, cursor = nil, head
			}
			a := auth(t, "alice")
			a.Start, a.Last = tc.start, tc.last
			s := dial(t, url, a)
			h := s.hello()
			wantStart, _ := wire.CheckStart(tc.start, tc.last)
			if h.Start != wantStart || h.Last != tc.last || h.Cursor != cursor || h.Epoch != c.log.Epoch() {
				t.Fatalf("hello %+v; want start %q, last %d, cursor %d", h, wantStart, tc.last, cursor)
			}
			backlog, cu := s.caughtUp()
			var got []uint64
			for _, f := range backlog[1:] {
				if f.Type != wire.TypeNotification {
					t.Fatalf("backlog frame %+v, want only notifications", f)
				}
				got = append(got, f.Seq)
			}
			if !equalSeqs(got, want) {
				t.Fatalf("backlog %v, want %v", got, want)
			}
			if cu.Cursor != head {
				t.Fatalf("caught_up at %d, want the log's head %d", cu.Cursor, head)
			}
			live := c.publish("alice", "live-"+tc.name, `"live"`).Seq
			seqs = append(seqs, live)
			waitFor(t, 5*time.Second, "the live notification", func() bool {
				n := s.notifications()
				return len(n) > 0 && n[len(n)-1] == live
			})
			if n := s.notifications(); !equalSeqs(n, append(want[:len(want):len(want)], live)) {
				t.Fatalf("after the live one: %v", n)
			}
			for _, f := range s.all()[len(backlog)+1:] {
				if f.Type == wire.TypeCaughtUp || f.Type == wire.TypeGap {
					t.Fatalf("after caught_up: %+v", f)
				}
			}
		})
	}
}

// TestLiveStartResumesFromItsCursor: a device that chose live and lost its
// socket before anything came resumes from the hello's cursor, so what was
// posted between the two sockets reaches it; and a live start on an empty
// log is caught up at once.
func TestLiveStartResumesFromItsCursor(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1")
	url := c.gws["gw-1"].url
	a := auth(t, "carol")
	a.Start = wire.StartLive
	s := dial(t, url, a)
	h := s.hello()
	if _, cu := s.caughtUp(); h.Cursor != 0 || cu.Cursor != 0 {
		t.Fatalf("empty log: hello cursor %d, caught_up %d; want 0 and 0", h.Cursor, cu.Cursor)
	}
	old := c.publish("carol", "old", `1`).Seq
	waitFor(t, 5*time.Second, "the first live one", func() bool { return len(s.notifications()) == 1 })
	s.c.Close(websocket.StatusNormalClosure, "")
	s.waitClosed(5 * time.Second)

	again := auth(t, "carol")
	again.Start = wire.StartLive
	s2 := dial(t, url, again)
	if h := s2.hello(); h.Cursor != old {
		t.Fatalf("second live start: hello cursor %d, want %d", h.Cursor, old)
	}
	s2.caughtUp()
	s2.c.CloseNow()
	s2.waitClosed(5 * time.Second)
	missed := c.publish("carol", "missed", `2`).Seq
	resume := auth(t, "carol")
	resume.Since, resume.Epoch, resume.Start = old, c.log.Epoch(), wire.StartLive // a cursor wins over start
	s3 := dial(t, url, resume)
	if h := s3.hello(); h.Start != wire.StartResume || h.Cursor != old {
		t.Fatalf("resume hello %+v, want start resume at %d", h, old)
	}
	_, cu := s3.caughtUp()
	if got := s3.notifications(); !equalSeqs(got, []uint64{missed}) || cu.Cursor != missed {
		t.Fatalf("resumed device got %v, caught up at %d; want [%d] and %d", got, cu.Cursor, missed, missed)
	}
}

// TestStartRefusesBadChoices: a start the gateway does not know, or a last
// out of range, closes the socket with 1008 before any hello.
func TestStartRefusesBadChoices(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1")
	url := c.gws["gw-1"].url
	for _, bad := range []struct {
		start string
		last  int
	}{{"newest", 0}, {wire.StartLast, 0}, {wire.StartLast, wire.MaxLast + 1}, {wire.StartLive, 3}, {wire.StartResume, 0}} {
		a := auth(t, "alice")
		a.Start, a.Last = bad.start, bad.last
		s := dial(t, url, a)
		if code := s.waitClosed(5 * time.Second); code != websocket.StatusPolicyViolation || len(s.all()) != 0 {
			t.Errorf("start %q last %d: close %d after %+v, want 1008 and no frame", bad.start, bad.last, code, s.all())
		}
	}
}
