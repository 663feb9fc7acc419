package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
)

type appendResult struct {
	a   inbox.Appended
	err error
}

// appendAsync runs an Append in a goroutine; the test must receive from
// the channel before it ends.
func appendAsync(ctx context.Context, l *inbox.Log, user, id string) <-chan appendResult {
	done := make(chan appendResult, 1)
	go func() {
		a, err := l.Append(ctx, user, id, []byte(`{"n":"`+id+`"}`))
		done <- appendResult{a, err}
	}()
	return done
}

// ids lists the Herald-Ids of a user's log, in order.
func ids(tb testing.TB, l *inbox.Log, user string) string {
	tb.Helper()
	var out []string
	for _, m := range readAll(tb, l, user) {
		out = append(out, m.ID)
	}
	return fmt.Sprint(out)
}

// TestSlowUserStallsNobodyElse: while one user's append is stuck (its lock
// held, as an append retrying through a leader election holds it), other
// users' appends go through; the stuck one then completes on its chain.
func TestSlowUserStallsNobodyElse(t *testing.T) {
	s := inboxtest.Run(t)
	l := ensure(t, appendConn(t, s.URL()), inbox.Config{AppendTimeout: 20 * time.Second})
	first := mustAppend(t, l, "alice", "a0")
	release := inbox.HoldUser(t, l, "alice")
	stuck := appendAsync(ctx, l, "alice", "a1")

	for i := range 50 { // with 256 shared stripes, some of these would share alice's
		user := "user-" + strconv.Itoa(i)
		bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := l.Append(bctx, user, "b", []byte(`1`))
		cancel()
		if err != nil {
			release()
			<-stuck
			t.Fatalf("%s's append while alice's is stuck: %v", user, err)
		}
	}
	select {
	case r := <-stuck:
		t.Fatalf("alice's append finished while her lock was held: %+v, %v", r.a, r.err)
	default:
	}
	release()
	r := <-stuck
	if r.err != nil || r.a.Prev != first.Seq {
		t.Fatalf("alice's append once released: %+v, %v; want it chained on seq %d", r.a, r.err, first.Seq)
	}
	if got := ids(t, l, "alice"); got != "[a0 a1]" {
		t.Fatalf("alice's log holds %s", got)
	}
	if n := inbox.LockedUsers(l); n != 0 {
		t.Fatalf("%d users keep a lock after every append ended", n)
	}
}

// TestAppendThatWaitsPastItsDeadline: an append whose deadline passes while
// it waits behind the same user's stuck append sent nothing, so it is
// ErrUnavailable ("certainly not stored"), not ErrUnknownOutcome, and the
// lock it waited for does not stay in the map on its account.
func TestAppendThatWaitsPastItsDeadline(t *testing.T) {
	s := inboxtest.Run(t)
	l := ensure(t, appendConn(t, s.URL()), inbox.Config{AppendTimeout: 10 * time.Second})
	mustAppend(t, l, "alice", "a0") // alice's head is cached: nothing to read before sending
	release := inbox.HoldUser(t, l, "alice")
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	waiting := appendAsync(wctx, l, "alice", "late")
	var r appendResult
	select {
	case r = <-waiting:
	case <-time.After(5 * time.Second):
		release()
		<-waiting
		t.Fatal("an append waiting for its user's lock outlived its deadline by 5s")
	}
	if !errors.Is(r.err, inbox.ErrUnavailable) || errors.Is(r.err, inbox.ErrUnknownOutcome) || !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("append whose deadline passed while waiting: %+v, %v; want ErrUnavailable (deadline exceeded)", r.a, r.err)
	}
	if n := inbox.LockedUsers(l); n != 1 {
		t.Fatalf("%d users have a lock while only the holder's is held, want 1", n)
	}
	release()
	if n := inbox.LockedUsers(l); n != 0 {
		t.Fatalf("%d users keep a lock after it was released", n)
	}
	if got := ids(t, l, "alice"); got != "[a0]" {
		t.Fatalf("alice's log holds %s, want only a0", got)
	}
	// Not stored, so a retry with the same id is a new message, not a
	// duplicate of one stored behind the caller's back.
	if a := mustAppend(t, l, "alice", "late"); a.Duplicate {
		t.Fatalf("retry of the append answered ErrUnavailable is a duplicate: %+v", a)
	}
}

// TestDeadlineBeforeSending: the deadline passes after the append took its
// lock but before it sent its attempt. Nothing was sent: ErrUnavailable.
func TestDeadlineBeforeSending(t *testing.T) {
	s := inboxtest.Run(t)
	l := ensure(t, appendConn(t, s.URL()), inbox.Config{AppendTimeout: 300 * time.Millisecond})
	mustAppend(t, l, "alice", "a0")
	inbox.BeforeSend(l, func(ctx context.Context) { <-ctx.Done() })
	_, err := l.Append(ctx, "alice", "late", []byte(`1`))
	if !errors.Is(err, inbox.ErrUnavailable) || errors.Is(err, inbox.ErrUnknownOutcome) {
		t.Fatalf("append whose deadline passed before it was sent: %v, want ErrUnavailable", err)
	}
	inbox.BeforeSend(l, nil)
	if got := ids(t, l, "alice"); got != "[a0]" {
		t.Fatalf("alice's log holds %s, want only a0", got)
	}
	if a := mustAppend(t, l, "alice", "late"); a.Duplicate {
		t.Fatalf("retry of the append answered ErrUnavailable is a duplicate: %+v", a)
	}
}
