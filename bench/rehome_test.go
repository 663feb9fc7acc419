package bench

import (
	"testing"

	"github.com/heraldpush/herald/ring"
)

// TestUsersOwnedBy: the rehome scenario's users all belong to the gateway
// it kills, as the dispatchers' ring places them, and there are as many as
// asked for.
func TestUsersOwnedBy(t *testing.T) {
	members := []ring.Member{{ID: "gw-1", Weight: 1}, {ID: "gw-2", Weight: 1}, {ID: "gw-3", Weight: 1}}
	r, err := ring.New(64, members)
	if err != nil {
		t.Fatal(err)
	}
	users := usersOwnedBy(r.Arcs(), "gw-2", "u", 500)
	if len(users) != 500 {
		t.Fatalf("%d users, want 500", len(users))
	}
	for _, u := range users {
		if m, _ := r.Owner(u); m.ID != "gw-2" {
			t.Fatalf("%s is owned by %s, not gw-2", u, m.ID)
		}
	}
	if got := usersOwnedBy(r.Arcs(), "gw-9", "u", 10); len(got) != 0 {
		t.Fatalf("%d users for a gateway not on the ring", len(got))
	}
}
