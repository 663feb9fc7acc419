package dispatcher

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
)

// historyPage is a 200 answer of GET /v1/users/{user}/notifications.
type historyPage struct {
	User      string             `json:"user"`
	Epoch     string             `json:"epoch"`
	Items     []wire.ServerFrame `json:"items"`
	NextAfter uint64             `json:"next_after"`
	More      bool               `json:"more"`
}

func usersPath(user string) string { return "/v1/users/" + url.PathEscape(user) + "/notifications" }

func (td *testDispatcher) history(user, query string) historyPage {
	td.t.Helper()
	r := td.do("GET", usersPath(user)+query, "", "Authorization", "Bearer "+testKey)
	if r.status != http.StatusOK {
		td.t.Fatalf("GET history of %q%s: %d %s", user, query, r.status, r.body)
	}
	return decodeAs[historyPage](td.t, r)
}

// TestHistoryPagesInOrder: the retained log reads back in seq order, paged,
// each item as the notification frame a socket gets (data byte for byte),
// for user IDs that need percent-encoding; a gap marks what retention
// dropped; bad parameters are refused.
func TestHistoryPagesInOrder(t *testing.T) {
	e := newEnv(t)
	td := e.dispatcher(func(c *Config) { c.Log.MaxMsgsPerUser = 20 })
	for _, user := range []string{"a/b", "100% sure", "alice", "..", "{user}"} {
		t.Run(user, func(t *testing.T) {
			var seqs []uint64
			for i := range 25 {
				n := td.notify(fmt.Sprintf(`{"user":%q,"id":"n%d","data":{"i": %d, "html":"<&>"}}`, user, i, i))
				seqs = append(seqs, n.Seq)
				td.notify(fmt.Sprintf(`{"user":"other-%s","data":1}`, user))
			}
			var got []wire.ServerFrame
			after := uint64(0)
			for pages := 0; ; pages++ {
				p := td.history(user, fmt.Sprintf("?after=%d&limit=7", after))
				if p.User != user || p.Epoch != e.epoch() {
					t.Fatalf("page of %q in %q, want %q in %q", p.User, p.Epoch, user, e.epoch())
				}
				got = append(got, p.Items...)
				after = p.NextAfter
				if !p.More {
					break
				}
				if pages > 10 {
					t.Fatal("paging does not end")
				}
			}
			// The first five were dropped by retention: a gap, then 20.
			if len(got) != 21 || got[0].Type != wire.TypeGap || got[0].After != 0 || got[0].Next != seqs[5] {
				t.Fatalf("items %+v; want a gap before %d, then 20 notifications", got, seqs[5])
			}
			for i, f := range got[1:] {
				want := fmt.Sprintf(`{"i": %d, "html":"<&>"}`, i+5)
				if f.Type != wire.TypeNotification || f.Seq != seqs[i+5] || f.ID != fmt.Sprint("n", i+5) || string(f.Data) != want {
					t.Fatalf("item %d: %+v, want seq %d with %s", i, f, seqs[i+5], want)
				}
			}
			if p := td.history(user, fmt.Sprintf("?after=%d", seqs[10])); len(p.Items) != 14 || p.Items[0].Seq != seqs[11] || p.More || p.NextAfter != seqs[24] {
				t.Fatalf("after %d: %d items from %d, more %v, next %d", seqs[10], len(p.Items), p.Items[0].Seq, p.More, p.NextAfter)
			}
			if p := td.history(user, fmt.Sprintf("?after=%d", seqs[24])); len(p.Items) != 0 || p.More || p.NextAfter != seqs[24] {
				t.Fatalf("after the last: %+v", p)
			}
		})
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=x", "?after=-1", "?after=1.5"} {
		wantError(t, td.do("GET", usersPath("alice")+q, "", "Authorization", "Bearer "+testKey), http.StatusBadRequest, CodeInvalidParameter)
	}
	for _, p := range []string{usersPath("a\x00b"), usersPath(strings.Repeat("x", 257))} {
		wantError(t, td.do("GET", p, "", "Authorization", "Bearer "+testKey), http.StatusBadRequest, CodeInvalidUser)
		wantError(t, td.do("DELETE", p, "", "Authorization", "Bearer "+testKey), http.StatusBadRequest, CodeInvalidUser)
	}
	wantError(t, td.do("GET", usersPath("alice"), ""), http.StatusUnauthorized, CodeUnauthorized)
	wantError(t, td.do("DELETE", usersPath("alice"), ""), http.StatusUnauthorized, CodeUnauthorized)
	r := td.do("POST", usersPath("alice"), "", "Authorization", "Bearer "+testKey)
	wantError(t, r, http.StatusMethodNotAllowed, CodeMethodNotAllowed)
	if r.header.Get("Allow") != "DELETE, GET, HEAD" {
		t.Fatalf("Allow %q", r.header.Get("Allow"))
	}
	for _, p := range []string{"/v1/users//notifications", "/v1/users/a/b/notifications", "/v1/users/alice"} {
		wantError(t, td.do("GET", p, "", "Authorization", "Bearer "+testKey), http.StatusNotFound, CodeNotFound)
	}
}

// TestEraseRingsTheOwner: DELETE erases the user's messages up to its last
// seq, no one else's, answers what it erased, and rings the user's owner
// with an erase doorbell; a retried id from before is stored anew; a
// second erasure of an empty log erases nothing and rings no one.
func TestEraseRingsTheOwner(t *testing.T) {
	e := newEnv(t)
	gw := e.gateway("gw-a", gatewayOpts{})
	td := e.dispatcher()
	td.waitRing("gw-a")
	user := "erase/me please"
	var last uint64
	for i := range 5 {
		last = td.notify(fmt.Sprintf(`{"user":%q,"id":"x%d","data":%d}`, user, i, i)).Seq
		td.notify(fmt.Sprintf(`{"user":"bystander","id":"x%d","data":%d}`, i, i))
	}
	r := td.do("DELETE", usersPath(user), "", "Authorization", "Bearer "+testKey)
	if r.status != http.StatusOK {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	er := decodeAs[erasedResult](t, r)
	if er.User != user || er.Through != last || er.Purged != 5 || er.Epoch != e.epoch() {
		t.Fatalf("erased %+v; want through %d, 5 purged", er, last)
	}
	if p := td.history(user, ""); len(p.Items) != 0 {
		t.Fatalf("history after the erasure: %+v", p.Items)
	}
	if p := td.history("bystander", ""); len(p.Items) != 5 {
		t.Fatalf("the bystander's history: %d items, want 5", len(p.Items))
	}
	waitFor(t, 5*time.Second, "the erase doorbell", func() bool {
		for _, d := range gw.doorbellsFor(user) {
			if d.Erased && d.Seq == last && d.Epoch == e.epoch() && !d.HasContent {
				return true
			}
		}
		return false
	})
	again := td.notify(fmt.Sprintf(`{"user":%q,"id":"x2","data":2}`, user))
	if again.Duplicate || again.Seq <= last {
		t.Fatalf("a retried id from before the erasure: %+v; want stored anew", again)
	}
	if dup := td.notify(`{"user":"bystander","id":"x2","data":2}`); !dup.Duplicate {
		t.Fatalf("the bystander's retried id: %+v; want a duplicate", dup)
	}
	td.do("DELETE", usersPath(user), "", "Authorization", "Bearer "+testKey)
	waitFor(t, 5*time.Second, "the second erase doorbell", func() bool {
		ds := gw.doorbellsFor(user)
		return len(ds) > 0 && ds[len(ds)-1].Erased && ds[len(ds)-1].Seq == again.Seq
	})
	before := len(gw.doorbellsFor(user))
	r = td.do("DELETE", usersPath(user), "", "Authorization", "Bearer "+testKey)
	if er := decodeAs[erasedResult](t, r); r.status != http.StatusOK || er.Through != 0 || er.Purged != 0 {
		t.Fatalf("erasing an empty log: %d %+v", r.status, er)
	}
	if n := len(gw.doorbellsFor(user)); n != before {
		t.Fatalf("erasing an empty log rang the owner (%d doorbells, was %d)", n, before)
	}
	var body map[string]any
	json.Unmarshal(r.body, &body)
	if len(body) != 4 {
		t.Fatalf("erase answer %s", r.body)
	}
}
