package gateway_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/wire"
)

func (d *disp) mustNotify(t *testing.T, fields map[string]any) notifyResult {
	t.Helper()
	r, err := d.notifyBody(fields, "")
	if err != nil || r.Status != http.StatusAccepted {
		t.Fatalf("notify %v: %+v, %v", fields, r, err)
	}
	return r
}

// noGaps fails if a socket got a gap frame.
func noGaps(t *testing.T, s *socket) {
	t.Helper()
	for _, f := range s.all() {
		if f.Type == wire.TypeGap {
			t.Fatalf("a gap frame %+v: an expired or collapsed notification must not read as one", f)
		}
	}
}

// TestTTL: a notification whose ttl has passed is neither delivered to a
// device that connects later nor replayed to one resuming, and leaves no
// gap; before it passes it is delivered like any other.
func TestTTL(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1")
	d := c.startDispatcher()
	url := c.gws["gw-1"].url
	live := dial(t, url, auth(t, "alice"))
	live.hello()
	first := d.mustNotify(t, map[string]any{"user": "alice", "data": 0})
	waitFor(t, 5*time.Second, "the first", func() bool { return len(live.notifications()) == 1 })
	live.c.Close(websocket.StatusNormalClosure, "")
	live.waitClosed(5 * time.Second)

	posted := time.Now()
	short := d.mustNotify(t, map[string]any{"user": "alice", "data": 1, "ttl": 1})
	long := d.mustNotify(t, map[string]any{"user": "alice", "data": 2, "ttl": 3600})
	quick := dial(t, url, auth(t, "alice")) // before the ttl passes: all three
	waitFor(t, 5*time.Second, "all three", func() bool { return len(quick.notifications()) == 3 })

	waitFor(t, 5*time.Second, "the ttl to pass", func() bool { return time.Since(posted) > 1100*time.Millisecond })
	after := d.mustNotify(t, map[string]any{"user": "alice", "data": 3})
	fresh := dial(t, url, auth(t, "alice"))
	a := auth(t, "alice")
	a.Since, a.Epoch = first.Seq, c.log.Epoch()
	resumed := dial(t, url, a)
	for name, s := range map[string]*socket{"a fresh device": fresh, "a resuming device": resumed} {
		s.caughtUp()
		want := []uint64{long.Seq, after.Seq}
		if name == "a fresh device" {
			want = append([]uint64{first.Seq}, want...)
		}
		if got := s.notifications(); !equalSeqs(got, want) {
			t.Fatalf("%s got %v, want %v (not %d, expired)", name, got, want, short.Seq)
		}
		noGaps(t, s)
	}
	noGaps(t, quick)
	var page struct {
		Items []wire.ServerFrame `json:"items"`
	}
	req, _ := http.NewRequest("GET", d.url+"/v1/users/alice/notifications", nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(&page)
	var got []uint64
	for _, f := range page.Items {
		got = append(got, f.Seq)
	}
	if want := []uint64{first.Seq, long.Seq, after.Seq}; !equalSeqs(got, want) {
		t.Fatalf("history %+v, want %v: the expired one left out, no gap", page.Items, want)
	}
}

// TestCollapse: a device that had not yet received a notification gets
// only the newest of those sharing its collapse key; other notifications
// and other keys are untouched, nothing reads as a gap, and a device that
// was sent the older one before the newer existed keeps it.
func TestCollapse(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1")
	d := c.startDispatcher()
	url := c.gws["gw-1"].url
	live := dial(t, url, auth(t, "bob"))
	live.hello()
	var seqs []uint64
	post := func(data, key string) uint64 {
		f := map[string]any{"user": "bob", "data": json.RawMessage(data)}
		if key != "" {
			f["collapse"] = key
		}
		seq := d.mustNotify(t, f).Seq
		seqs = append(seqs, seq)
		waitFor(t, 5*time.Second, "the live device to get "+data, func() bool {
			n := live.notifications()
			return len(n) > 0 && n[len(n)-1] == seq
		})
		return seq
	}
	post(`"score 1-0"`, "score")
	other := post(`"hello"`, "")
	post(`"score 1-1"`, "score")
	post(`"lineup"`, "lineup")
	last := post(`"score 2-1"`, "score")
	if got := live.notifications(); !equalSeqs(got, seqs) {
		t.Fatalf("the live device got %v, want every one as it came %v", got, seqs)
	}
	later := dial(t, url, auth(t, "bob"))
	later.caughtUp()
	if got, want := later.notifications(), []uint64{other, seqs[3], last}; !equalSeqs(got, want) {
		t.Fatalf("a device connecting afterwards got %v, want %v: the newest score only", got, want)
	}
	noGaps(t, later)
	noGaps(t, live)
}

// TestLimitsBadInput: a bad ttl or collapse key is refused with its code,
// storing nothing.
func TestLimitsBadInput(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1")
	d := c.startDispatcher()
	for _, tc := range []struct {
		field string
		value any
		code  string
	}{
		{"ttl", 0, "invalid_ttl"}, {"ttl", -1, "invalid_ttl"}, {"ttl", "5", "invalid_ttl"}, {"ttl", 1.5, "invalid_ttl"},
		{"ttl", 30*24*3600 + 1, "invalid_ttl"}, {"ttl", nil, "invalid_ttl"}, {"ttl", json.RawMessage(`1e3`), "invalid_ttl"}, {"ttl", json.RawMessage(`5.0`), "invalid_ttl"},
		{"collapse", "", "invalid_collapse"}, {"collapse", " x", "invalid_collapse"}, {"collapse", 5, "invalid_collapse"},
		{"collapse", strings.Repeat("k", wire.MaxIDBytes+1), "invalid_collapse"}, {"collapse", "a\nb", "invalid_collapse"},
	} {
		r, err := d.notifyBody(map[string]any{"user": "carol", "data": 1, tc.field: tc.value}, "")
		if err != nil || r.Status != http.StatusBadRequest || r.Error.Code != tc.code {
			t.Errorf("%s %v: %+v, %v; want 400 %s", tc.field, tc.value, r, err, tc.code)
		}
	}
	if msgs, err := c.log.ReadAfter(t.Context(), "carol", 0, 10); err != nil || len(msgs) != 0 {
		t.Fatalf("refused posts stored %d messages (%v)", len(msgs), err)
	}
}

// TestCollapseOffline: for a user with no socket (no hub on the gateway),
// a device that connects reads the log and gets only the newest of each
// key, from the start and resuming.
func TestCollapseOffline(t *testing.T) {
	c := newCluster(t, inbox.Config{})
	c.startGateway("gw-1")
	d := c.startDispatcher()
	url := c.gws["gw-1"].url
	first := d.mustNotify(t, map[string]any{"user": "carol", "data": 0}).Seq
	k1 := d.mustNotify(t, map[string]any{"user": "carol", "data": 1, "collapse": "k"}).Seq
	x := d.mustNotify(t, map[string]any{"user": "carol", "data": 2}).Seq
	k2 := d.mustNotify(t, map[string]any{"user": "carol", "data": 3, "collapse": "k"}).Seq
	_ = k1
	a := auth(t, "carol")
	a.Since, a.Epoch = first, c.log.Epoch()
	s := dial(t, url, a)
	s.caughtUp()
	if got, want := s.notifications(), []uint64{x, k2}; !equalSeqs(got, want) {
		t.Fatalf("a resuming device got %v, want %v", got, want)
	}
	noGaps(t, s)
}
