package inbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Appended is the outcome of an append.
type Appended struct {
	Seq uint64
	// Prev is the seq of the user's message before this one, and TS its
	// publish time, when PrevKnown: not for a duplicate, whose original's
	// predecessor this append never learned. A doorbell may carry the
	// message's content only when they are known.
	Prev      uint64
	TS        time.Time
	PrevKnown bool
	// Duplicate reports that the id was already in the log (within the
	// duplicate window); Seq is then the original message's.
	Duplicate bool
	// Epoch of the log the message is in, as this process knows it.
	Epoch string
}

// MsgID is the JetStream deduplication ID of a notification: the caller's id
// scoped to the user, so two users may use the same id.
func MsgID(user, id string) string { return wire.UserKey(user) + "/" + id }

// Append adds a notification to user's log, after the user's last message,
// and returns its seq once JetStream has stored it. id is the idempotency
// key: an id already in the log (within the duplicate window) returns the
// original seq with Duplicate set.
//
// The message names its predecessor (Herald-Prev) and is only stored if that
// predecessor is still the user's last message; on a conflict Append learns
// the new last message and tries again, with jitter, until
// Config.AppendTimeout. Whatever else fails (no stream leader during an
// election, NATS reconnecting, a read of the user's last message) is
// retried the same way, so an outage shorter than the deadline costs the
// caller latency, not an error. When an attempt's outcome is unknown (no
// ack), it is retried with the same id, so it lands at most once; if the
// deadline passes first, Append returns ErrUnknownOutcome. ErrUnavailable
// and ErrStorageFull mean nothing was stored: among others, when the
// deadline passed before anything was sent, such as while waiting for an
// earlier append of the same user.
//
// Append fails at once, ErrUnavailable, when Config.MaxAppends appends are
// in flight already, and when the NATS connection has been down for more
// than Config.MaxDown (Config.DownFor): then also an append in flight
// stops retrying, with ErrUnknownOutcome if an earlier attempt of it may
// have been stored.
func (l *Log) Append(ctx context.Context, user, id string, data []byte) (Appended, error) {
	return l.AppendWith(ctx, user, id, data, Limits{})
}

// Limits are what a notification may carry beyond its data: when it
// expires (zero: never) and its collapse key ("": none). They go into the
// stored message's headers; gateways apply them.
type Limits struct {
	Expires  time.Time
	Collapse string
}

// AppendWith is Append of a notification with limits.
func (l *Log) AppendWith(ctx context.Context, user, id string, data []byte, lim Limits) (Appended, error) {
	if err := l.downErr(); err != nil {
		return Appended{}, fmt.Errorf("%w: %v; nothing was sent", ErrUnavailable, err)
	}
	if n := l.inFlight.Add(1); n > int64(l.cfg.MaxAppends) {
		l.inFlight.Add(-1)
		l.busy.Add(1)
		return Appended{}, fmt.Errorf("%w: %d appends in flight already (the limit); nothing was sent", ErrUnavailable, n-1)
	}
	defer l.inFlight.Add(-1)

	ctx, cancel := context.WithTimeout(ctx, l.cfg.AppendTimeout)
	defer cancel()
	ul, err := l.locks.lock(ctx, user)
	if err != nil {
		return Appended{}, fmt.Errorf("%w: waiting for the user's earlier append: %w", ErrUnavailable, err)
	}
	defer l.locks.unlock(user, ul)

	subject := l.subject(user)
	msgID := MsgID(user, id)
	head, headKnown := l.heads.get(user)
	var (
		uncertain bool // an earlier attempt may have been stored
		lastErr   error
		sent      int // publish attempts
	)
	for try := 0; ; try++ {
		if err := l.downErr(); err != nil {
			lastErr = err
			break
		}
		if !headKnown {
			last, found, err := l.lastWithin(ctx, user, false)
			if err != nil {
				// Nothing of this append was sent by the read.
				lastErr = err
				if !l.backoff(ctx, try) {
					break
				}
				continue
			}
			head, headKnown = 0, true
			if found {
				head = last.Seq
			}
		}
		if sent > 0 {
			l.retries.Add(1)
		}
		ts := time.Now()
		m := nats.NewMsg(subject)
		m.Header.Set(jetstream.MsgIDHeader, msgID)
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(head, 10))
		m.Header.Set(wire.HeaderID, id)
		m.Header.Set(wire.HeaderTS, wire.FormatTS(ts))
		m.Header.Set(wire.HeaderPrev, strconv.FormatUint(head, 10))
		if !lim.Expires.IsZero() {
			m.Header.Set(wire.HeaderExpires, wire.FormatTS(lim.Expires))
		}
		if lim.Collapse != "" {
			m.Header.Set(wire.HeaderCollapse, lim.Collapse)
		}
		m.Data = data

		if l.beforeSend != nil {
			l.beforeSend(ctx)
		}
		if !canSend(ctx) {
			// Nothing of this attempt was sent: only an earlier one can
			// have been stored.
			lastErr = fmt.Errorf("deadline passed before attempt %d was sent: %w", sent+1, cmp.Or(ctx.Err(), context.DeadlineExceeded))
			break
		}
		sent++
		st, high := l.known()
		actx, acancel := context.WithTimeout(ctx, l.attemptTimeout(ctx))
		ack, err := l.js.PublishMsg(actx, m, jetstream.WithRetryAttempts(0))
		acancel()
		if err == nil {
			if st != nil {
				if l.owner && !ack.Duplicate && ack.Sequence <= high {
					// A new message at a seq already known to be
					// stored: the stream lost its tail and gives its
					// seqs again. The message is in the new epoch.
					l.recordLoss(ctx, st, st.epoch, fmt.Sprintf("a new message got seq %d, at or below seq %d, which it acknowledged", ack.Sequence, high))
				}
				st.note(ack.Sequence)
			}
			if ack.Duplicate && !uncertain {
				// The original may have been erased (or dropped by
				// retention) inside the duplicate window: then the id is
				// stored anew, under an id of its own that names the
				// original's seq, so that retries of it dedupe in turn.
				gone, gerr := l.gone(ctx, user, ack.Sequence)
				if gerr != nil {
					lastErr = gerr
					if !l.backoff(ctx, try) {
						break
					}
					continue
				}
				if gone {
					l.heads.forget(user)
					headKnown = false
					msgID += "~" + strconv.FormatUint(ack.Sequence, 10)
					continue
				}
			}
			if ack.Duplicate {
				l.heads.forget(user) // the original need not be the head
				// After an unanswered attempt, the duplicate is that attempt.
				return Appended{Seq: ack.Sequence, Duplicate: !uncertain, Epoch: l.Epoch()}, nil
			}
			l.heads.set(user, ack.Sequence)
			return Appended{Seq: ack.Sequence, Prev: head, TS: ts, PrevKnown: true, Epoch: l.Epoch()}, nil
		}
		lastErr = err

		var apiErr *jetstream.APIError
		switch {
		case errors.As(err, &apiErr) && isWrongLast(apiErr):
			l.conflicts.Add(1)
			l.heads.forget(user)
			// Someone appended first, or an unanswered attempt of ours
			// did: the last message tells which. Read it through the
			// leader, which decided the conflict: a lagging replica would
			// only make it happen again.
			last, found, rerr := l.lastWithin(ctx, user, true)
			if rerr != nil {
				lastErr = rerr
				break
			}
			if found && uncertain && last.ID == id {
				l.heads.set(user, last.Seq)
				return Appended{Seq: last.Seq, Prev: last.Prev, TS: last.TS, PrevKnown: true, Epoch: l.Epoch()}, nil
			}
			newHead := uint64(0)
			if found {
				newHead = last.Seq
			}
			if newHead < head {
				// The log went backwards: recreated, or purged. Learn the
				// epoch the message will land in.
				l.Refresh(ctx)
			}
			head = newHead
			if sent == 1 {
				continue // a stale cached head: no one to back off from
			}
		case errors.As(err, &apiErr) && isStorageFull(apiErr):
			if !uncertain {
				return Appended{}, fmt.Errorf("%w: %v", ErrStorageFull, err)
			}
		case sentNothing(err):
			// Certainly not stored by this attempt; keep trying while
			// NATS reconnects, or JetStream elects a stream leader.
		default:
			// A timeout or a lost ack: this attempt may have been stored.
			uncertain = true
		}
		if !l.backoff(ctx, try) {
			break
		}
	}
	if uncertain {
		return Appended{}, fmt.Errorf("%w: %v", ErrUnknownOutcome, lastErr)
	}
	return Appended{}, fmt.Errorf("%w: %v", ErrUnavailable, lastErr)
}

// downErr is why an append stops, counted, when the NATS connection has
// been down for more than MaxDown; nil otherwise.
func (l *Log) downErr() error {
	if l.cfg.DownFor == nil {
		return nil
	}
	if d := l.cfg.DownFor(); d > l.cfg.MaxDown {
		l.down.Add(1)
		return fmt.Errorf("the NATS connection has been down for %v", d.Round(time.Millisecond))
	}
	return nil
}

// minSend is the least time before the deadline in which Append still
// sends an attempt. nats.go refuses to send a request whose context has
// ended and answers with the context's error, which Append could not tell
// from an attempt sent and unanswered; with this margin that takes a stall
// of the goroutine longer than it, and even then the answer is the safe
// one, "unknown".
const minSend = time.Millisecond

// canSend reports whether an attempt may still be sent before ctx ends.
func canSend(ctx context.Context) bool {
	if ctx.Err() != nil {
		return false
	}
	dl, ok := ctx.Deadline()
	return !ok || time.Until(dl) >= minSend
}

// maxAttempt bounds the wait for one attempt's PubAck. A request sent on a
// connection that then breaks (its server stopped) is never answered, and
// nats.go does not fail it: only this timeout ends it, after which the
// retry, on the new connection, lands or finds the first attempt by its
// id. A healthy stream acks in milliseconds, so an attempt unanswered for
// 2s is better tried again.
const maxAttempt = 2 * time.Second

// lastWithin is Last bounded like one attempt: a read sent on a connection
// that then breaks (a NATS node leaving lame duck closes its clients) is
// never answered either, and waiting out Last's own 5s for it would spend
// the append's deadline on one lost request instead of retrying.
func (l *Log) lastWithin(ctx context.Context, user string, leader bool) (Message, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, l.attemptTimeout(ctx))
	defer cancel()
	return l.Last(ctx, user, leader)
}

// attemptTimeout is a quarter of the deadline, so that retries fit in it,
// but at least 250ms and at most maxAttempt.
func (l *Log) attemptTimeout(ctx context.Context) time.Duration {
	d := min(max(l.cfg.AppendTimeout/4, 250*time.Millisecond), maxAttempt)
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	return d
}

// backoff sleeps a jittered, growing delay; false if the deadline comes first.
func (l *Log) backoff(ctx context.Context, attempt int) bool {
	d := time.Duration(rand.Int64N(int64(min(5*time.Millisecond<<min(attempt, 5), 200*time.Millisecond)) + 1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return ctx.Err() == nil
	}
}

func isWrongLast(e *jetstream.APIError) bool {
	return e.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		e.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// JetStream's codes for a store that refuses writes: insufficient resources,
// storage exhausted, store failed.
func isStorageFull(e *jetstream.APIError) bool {
	switch e.ErrorCode {
	case 10023, 10047, 10077:
		return true
	}
	return false
}

// sentNothing reports whether a publish failed before anything reached the
// server, or nobody was there to store it.
func sentNothing(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	// Not ErrConnectionClosed: nats.go also returns it for a request that
	// was sent when the connection closed.
	case errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrInvalidConnection),
		errors.Is(err, nats.ErrConnectionReconnecting):
		return true
	case errors.As(err, &apiErr):
		// Any other refusal (stream not found, bad request...) was not stored.
		return true
	}
	return false
}
