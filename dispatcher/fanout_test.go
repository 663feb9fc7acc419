package dispatcher

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

type fanoutAnswer struct {
	ID      string `json:"id"`
	Results []struct {
		User      string `json:"user"`
		ID        string `json:"id"`
		Seq       uint64 `json:"seq"`
		Gateway   string `json:"gateway"`
		Status    string `json:"status"`
		Duplicate bool   `json:"duplicate"`
		Error     *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			ID      string `json:"id"`
		} `json:"error"`
	} `json:"results"`
}

// TestFanoutToAList: "users" appends the notification to each user's log
// once, answers per user in the order given with one id, rings each
// owner, keeps each user's order across fan-outs, and a retry with the id
// stores nothing twice; bad lists are refused whole, storing nothing.
func TestFanoutToAList(t *testing.T) {
	e := newEnv(t)
	gw := e.gateway("gw-a", gatewayOpts{})
	td := e.dispatcher()
	td.waitRing("gw-a")
	users := []string{"u/1", "u 2", "u%3", "alice"}
	quoted := `"u/1","u 2","u%3","alice"`
	var seqs [][]uint64 = make([][]uint64, len(users))
	for round := range 3 {
		r := td.publish("/v1/notify", fmt.Sprintf(`{"users":[%s],"id":"f%d","data":{"round":%d}}`, quoted, round, round))
		if r.status != http.StatusAccepted {
			t.Fatalf("fan-out: %d %s", r.status, r.body)
		}
		a := decodeAs[fanoutAnswer](t, r)
		if a.ID != fmt.Sprint("f", round) || len(a.Results) != len(users) {
			t.Fatalf("fan-out answer %s", r.body)
		}
		for i, res := range a.Results {
			if res.User != users[i] || res.Error != nil || res.Seq == 0 || res.ID != a.ID || res.Status != StatusRouted || res.Gateway != "gw-a" || res.Duplicate {
				t.Fatalf("result %d: %+v", i, res)
			}
			seqs[i] = append(seqs[i], res.Seq)
		}
	}
	for i, u := range users {
		log := e.readLog(u)
		if len(log) != 3 {
			t.Fatalf("%s's log has %d messages, want 3", u, len(log))
		}
		for round, m := range log {
			if m.Seq != seqs[i][round] || m.ID != fmt.Sprint("f", round) || string(m.Data) != fmt.Sprintf(`{"round":%d}`, round) {
				t.Fatalf("%s's message %d: %+v, want seq %d", u, round, m, seqs[i][round])
			}
		}
		waitFor(t, 5*time.Second, u+"'s doorbells", func() bool { return len(gw.doorbellsFor(u)) >= 3 })
	}
	// A retry of the last fan-out: a duplicate for everyone.
	a := decodeAs[fanoutAnswer](t, td.publish("/v1/notify", fmt.Sprintf(`{"users":[%s],"id":"f2","data":{"round":2}}`, quoted)))
	for i, res := range a.Results {
		if !res.Duplicate || res.Seq != seqs[i][2] {
			t.Fatalf("retried fan-out, %s: %+v; want a duplicate of %d", users[i], res, seqs[i][2])
		}
	}
	// Without an id: one made, the same for every user.
	a = decodeAs[fanoutAnswer](t, td.publish("/v1/notify", `{"users":["x","y"],"data":1}`))
	if a.ID == "" || a.Results[0].ID != a.ID || a.Results[1].ID != a.ID {
		t.Fatalf("fan-out without an id: %+v", a)
	}

	before := e.streamMsgs()
	many := make([]string, MaxFanout+1)
	for i := range many {
		many[i] = fmt.Sprintf(`"m%d"`, i)
	}
	for _, tc := range []struct {
		body   string
		status int
		code   Code
	}{
		{`{"users":[],"data":1}`, 400, CodeInvalidUser},
		{`{"users":["a","a"],"data":1}`, 400, CodeInvalidUser},
		{`{"users":["a",""],"data":1}`, 400, CodeInvalidUser},
		{`{"users":["a",5],"data":1}`, 400, CodeInvalidUser},
		{`{"users":"a","data":1}`, 400, CodeInvalidUser},
		{`{"users":["a"],"user":"b","data":1}`, 400, CodeInvalidUser},
		{`{"users":["a"]}`, 400, CodeInvalidData},
		{`{"users":["a"],"data":1,"id":" x"}`, 400, CodeInvalidID},
		{`{"users":[` + strings.Join(many, ",") + `],"data":1}`, 413, CodeBatchTooLarge},
	} {
		wantError(t, td.publish("/v1/notify", tc.body), tc.status, tc.code)
	}
	wantError(t, td.publish("/v1/notify?wait=delivered", `{"users":["a"],"data":1}`), 400, CodeInvalidParameter)
	r := td.publish("/v1/notify/batch", `{"notifications":[{"users":["a"],"data":1}]}`)
	if r.status != http.StatusAccepted || !strings.Contains(string(r.body), string(CodeInvalidUser)) {
		t.Fatalf("a fan-out inside a batch: %d %s", r.status, r.body)
	}
	if after := e.streamMsgs(); after != before {
		t.Fatalf("refused fan-outs stored %d messages", after-before)
	}
}
