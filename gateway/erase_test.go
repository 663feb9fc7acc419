package gateway_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/wire"
)

// erase erases user's log and, if ring, rings the owner as a dispatcher
// does.
func (c *cluster) erase(user string, ring bool) inbox.Erased {
	c.tb.Helper()
	e, err := c.log.Erase(context.Background(), user)
	if err != nil {
		c.tb.Fatalf("Erase: %v", err)
	}
	if owner, ok := c.ring().Owner(user); ok && ring && e.Through > 0 {
		d := wire.Doorbell{User: user, Seq: e.Through, Epoch: e.Epoch, Erased: true}
		if err := c.nc.PublishMsg(doorbellMsg(d, owner.ID)); err != nil {
			c.tb.Fatal(err)
		}
	}
	return e
}

// TestErasureReachesConnectedDevices: after an erasure, a device that had
// not received everything gets one gap past the erased messages and
// nothing of them; a device that had gets the gap too, so both start
// afresh; what comes after is delivered without another gap; a new device
// gets only what came after; and with the erase doorbell lost,
// anti-entropy finds the emptied log and does the same.
func TestErasureReachesConnectedDevices(t *testing.T) {
	for _, rung := range []bool{true, false} {
		t.Run(map[bool]string{true: "rung", false: "doorbell lost"}[rung], func(t *testing.T) {
			c := newCluster(t, inbox.Config{})
			c.startGateway("gw-1", func(cfg *gateway.Config) { cfg.AntiEntropy = 300 * time.Millisecond })
			url := c.gws["gw-1"].url
			uptodate := dial(t, url, auth(t, "alice"))
			uptodate.hello()
			var seqs []uint64
			for i := range 5 {
				seqs = append(seqs, c.publish("alice", "a"+strconv.Itoa(i), `1`).Seq)
			}
			waitFor(t, 5*time.Second, "the five", func() bool { return len(uptodate.notifications()) == 5 })

			e := c.erase("alice", rung)
			if e.Through != seqs[4] {
				t.Fatalf("erased through %d, want %d", e.Through, seqs[4])
			}
			waitFor(t, 10*time.Second, "the gap of the erasure", func() bool {
				for _, f := range uptodate.got() {
					if f.Type == wire.TypeGap {
						return true
					}
				}
				return false
			})
			// Anything the gateway still held of the log would reach this
			// fresh device: nothing may, once the gateway knows.
			fresh := dial(t, url, auth(t, "alice"))
			fresh.hello()
			after := c.publish("alice", "after", `2`).Seq
			for _, s := range []*socket{uptodate, fresh} {
				waitFor(t, 5*time.Second, "the one after", func() bool {
					n := s.notifications()
					return len(n) > 0 && n[len(n)-1] == after
				})
			}
			frames := uptodate.got()[6:]
			if len(frames) != 2 || frames[0].Type != wire.TypeGap || frames[0].After != seqs[4] || frames[0].Next != seqs[4]+1 || frames[1].Seq != after {
				t.Fatalf("after the erasure the device got %+v; want gap(%d, %d), then %d", frames, seqs[4], seqs[4]+1, after)
			}
			if got := fresh.notifications(); !equalSeqs(got, []uint64{after}) {
				t.Fatalf("a device connected after the erasure got %v, want only %d", got, after)
			}
		})
	}
}
