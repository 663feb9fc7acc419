package inbox

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestUserLocks: one holder per user at a time, among holders and waiters
// that give up; users do not wait for each other; the map ends empty.
func TestUserLocks(t *testing.T) {
	var (
		u       userLocks
		holders [2]atomic.Int32
		wg      sync.WaitGroup
	)
	users := [2]string{"alice", "bob"}
	for g := range 8 {
		wg.Go(func() {
			for i := range 300 {
				user := g % 2
				ctx, cancel := context.Background(), func() {}
				if i%3 == 0 { // some give up
					ctx, cancel = context.WithTimeout(ctx, time.Duration(i%5)*time.Microsecond)
				}
				ul, err := u.lock(ctx, users[user])
				cancel()
				if err != nil {
					continue
				}
				if n := holders[user].Add(1); n != 1 {
					t.Errorf("%d holders of %s's lock", n, users[user])
				}
				holders[user].Add(-1)
				u.unlock(users[user], ul)
			}
		})
	}
	wg.Wait()
	if n := u.len(); n != 0 {
		t.Fatalf("%d locks left in the map", n)
	}

	// Held by alice, bob's lock is still free.
	a, err := u.lock(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := u.lock(ctx, "bob")
	if err != nil {
		t.Fatalf("bob waits for alice: %v", err)
	}
	u.unlock("bob", b)
	if _, err := u.lock(canceled(), "carol"); err == nil {
		t.Fatal("an ended context took a free lock")
	}
	if n := u.len(); n != 1 {
		t.Fatalf("%d locks in the map while only alice's is held", n)
	}
	u.unlock("alice", a)
	if n := u.len(); n != 0 {
		t.Fatalf("%d locks left in the map", n)
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
