package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/nats-io/nats.go/jetstream"
)

// runLog ensures the stream, publishes the log to the handlers, then
// re-reads the epoch every EpochRefresh until ctx ends. Each refresh also
// checks that the stream did not go backwards (lose acknowledged
// messages), and if it did, records a new epoch in the stream: dispatchers
// own the stream, so they are the ones that detect and record it
// (inbox.Log.Refresh; gateways only read the epoch). It returns an error,
// which ends Run, only when the live stream is configured otherwise than
// the dispatcher's Config says.
func (d *Dispatcher) runLog(ctx context.Context) error {
	l, err := d.ensure(ctx)
	if l == nil {
		return err
	}
	d.inbox.Store(l)
	t := time.NewTicker(d.cfg.EpochRefresh)
	defer t.Stop()
	failing := false
	epoch, recorded := l.Epoch(), l.Stats().NewEpochs
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := d.refreshEpoch(ctx, l)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			d.log.Warn("re-reading the log's epoch failed; doorbells keep the last one known", "error", err)
		case err == nil && failing:
			d.log.Info("the log's epoch can be read again", "epoch", l.Epoch())
		}
		failing = err != nil
		// The epoch may also have changed in an append, since the last
		// refresh: compare with the last one logged.
		if e, n := l.Epoch(), l.Stats().NewEpochs; e != epoch {
			why := "the stream was recreated, or another dispatcher recorded that it lost acknowledged messages"
			if n != recorded {
				why = "the stream lost acknowledged messages: this dispatcher recorded a new epoch"
			}
			d.log.Warn("the log's epoch changed", "old", epoch, "new", e, "why", why)
			epoch, recorded = e, n
		}
	}
}

// ensure creates the stream or checks the live one, retrying with backoff
// until it succeeds: a dispatcher started before NATS is up serves
// /healthz and answers 503 meanwhile. It gives up when ctx ends (nil, nil)
// and when the live stream is configured otherwise than asked (an
// *inbox.MismatchError): retrying cannot help, and a dispatcher must not
// serve a stream it was told to find otherwise. The operator either leaves
// the setting unset, to take the stream's, or changes the stream with
// herald stream apply.
func (d *Dispatcher) ensure(ctx context.Context) (*inbox.Log, error) {
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		l, err := inbox.Ensure(actx, d.cfg.NATS, d.cfg.Log)
		cancel()
		if err == nil {
			c := l.Config()
			d.log.Info("log ready", "stream", c.Stream, "epoch", l.Epoch(), "replicas", c.Replicas,
				"max_per_user", c.MaxMsgsPerUser, "max_age", c.MaxAge, "max_bytes", c.MaxBytes,
				"max_msg_size", c.MaxMsgSize, "dedupe_window", c.Duplicates, "storage", c.Storage)
			return l, nil
		}
		var mm *inbox.MismatchError
		if errors.As(err, &mm) {
			return nil, fmt.Errorf("dispatcher: %w", err)
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		d.log.Warn("creating or reading the log's stream failed; retrying", "attempt", attempt, "retry_in", delay, "error", err)
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil
		case <-t.C:
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// refreshEpoch re-reads the log's epoch. When JetStream answers that the
// stream is gone (deleted by an operator), it creates it again, with the
// settings it had: otherwise every append would fail until a restart. Any
// other failure is only reported: a stream that exists is never rewritten
// here.
func (d *Dispatcher) refreshEpoch(ctx context.Context, l *inbox.Log) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := l.Refresh(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = l.Create(ctx)
	}
	return err
}

func (d *Dispatcher) logStats() inbox.Stats {
	if l := d.inbox.Load(); l != nil {
		return l.Stats()
	}
	return inbox.Stats{}
}
