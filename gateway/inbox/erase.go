package inbox

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Erased is the outcome of an erasure.
type Erased struct {
	// Through is the user's last seq when the erasure began: every message
	// of the user up to it is gone. 0 if the log held nothing.
	Through uint64
	// Purged counts the messages removed.
	Purged uint64
	Epoch  string
}

// Erase removes every message of user's log up to its last seq at the
// moment of the call (JetStream purge by subject, below that seq + 1), so a
// message appended meanwhile by another process survives it. This process's
// appends for the user wait for it, and its cached head is forgotten; other
// processes' cached heads fail their next append's expected-sequence check,
// which reads the head again. An id retried after the erasure, even within
// the duplicate window, is stored anew (Append checks that a duplicate's
// original still exists).
func (l *Log) Erase(ctx context.Context, user string) (Erased, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.AppendTimeout)
	defer cancel()
	ul, err := l.locks.lock(ctx, user)
	if err != nil {
		return Erased{}, fmt.Errorf("%w: waiting for the user's appends: %w", ErrUnavailable, err)
	}
	defer l.locks.unlock(user, ul)
	l.heads.forget(user)
	last, found, err := l.Last(ctx, user, true)
	if err != nil {
		return Erased{}, err
	}
	e := Erased{Epoch: l.Epoch()}
	if !found {
		return e, nil
	}
	e.Through = last.Seq
	req, _ := json.Marshal(struct {
		Filter string `json:"filter"`
		Seq    uint64 `json:"seq"`
	}{l.subject(user), last.Seq + 1})
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	reply, err := l.nc.RequestWithContext(rctx, "$JS.API.STREAM.PURGE."+l.cfg.Stream, req)
	if err != nil {
		// Unanswered: the purge may or may not have run; running it again
		// is harmless.
		return Erased{}, fmt.Errorf("%w: purge: %v", ErrUnavailable, err)
	}
	var resp struct {
		Error *struct {
			Desc string `json:"description"`
		} `json:"error"`
		Success bool   `json:"success"`
		Purged  uint64 `json:"purged"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return Erased{}, fmt.Errorf("purge: %w", err)
	}
	if resp.Error != nil || !resp.Success {
		desc := "no success"
		if resp.Error != nil {
			desc = resp.Error.Desc
		}
		return Erased{}, fmt.Errorf("%w: purge: %s", ErrUnavailable, desc)
	}
	e.Purged = resp.Purged
	return e, nil
}

// gone reports whether the user's message at seq is no longer in the log
// (erased, or dropped by retention), read through the leader.
func (l *Log) gone(ctx context.Context, user string, seq uint64) (bool, error) {
	m, found, err := l.leaderGet(ctx, directGetRequest{Seq: seq, NextFor: l.subject(user)})
	if err != nil {
		return false, err
	}
	return !found || m.Seq != seq, nil
}
