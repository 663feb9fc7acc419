package gateway

import (
	"runtime/debug"
	"sync"
	"time"
)

// tasks counts the goroutines a gateway starts besides Run's own (socket
// handlers, closing handshakes, hub repairs, the watchdog's drops), so that
// Run returns only after each has ended. Once closed it refuses new ones:
// their work is moot on a stopping gateway, and a WaitGroup must not gain
// a count while Wait runs. Each goroutine's panic is recovered and reported
// to onPanic with where it happened.
type tasks struct {
	onPanic func(where string, v any, stack []byte)

	mu     sync.Mutex // guards closed and the transitions of wg
	closed bool
	wg     sync.WaitGroup
}

// enter counts a goroutine that is already running (an HTTP handler); false
// once closed. The caller calls leave when it ends.
func (t *tasks) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

func (t *tasks) leave() { t.wg.Done() }

// goNamed runs f on a counted goroutine; false (and f never runs) once
// closed.
func (t *tasks) goNamed(where string, f func()) bool {
	if !t.enter() {
		return false
	}
	go func() {
		defer t.leave()
		defer t.recover(where, nil)
		f()
	}()
	return true
}

// afterFunc runs f on a counted goroutine after d, unless stopped or closed
// by then.
func (t *tasks) afterFunc(d time.Duration, where string, f func()) *time.Timer {
	return time.AfterFunc(d, func() { t.goNamed(where, f) })
}

// recover, deferred, reports a panic of the calling goroutine and then runs
// after (which may clean up what the panic left: a hub's sockets).
func (t *tasks) recover(where string, after func()) {
	if v := recover(); v != nil {
		t.onPanic(where, v, debug.Stack())
		if after != nil {
			after()
		}
	}
}

// close refuses new goroutines.
func (t *tasks) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
}

// wait waits for the counted goroutines, at most d (0: as long as it
// takes), and reports whether they all ended. Call it only after close: a
// WaitGroup must not gain a count from zero while Wait runs.
func (t *tasks) wait(d time.Duration) bool {
	if d == 0 {
		t.wg.Wait()
		return true
	}
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-timer.C:
		return false
	}
}
