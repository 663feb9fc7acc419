package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats.go"
)

// rung is what ringing a user's owner found.
type rung struct {
	gateway  string // the owner; empty when the ring is empty (stored only)
	delivery string // with a wait: wire.Delivered, wire.Offline or wire.Timeout
}

// ringOwner rings the gateway that owns db.User in the current ring (and,
// within the grace window of a ring change, its previous owner too), on
// core NATS. Doorbells are hints (a lost one is repaired by the gateway's
// anti-entropy), so a failed publish is only counted. With wait > 0 the
// doorbell is a request and the owners' answers are awaited up to wait.
func (d *Dispatcher) ringOwner(ctx context.Context, db wire.Doorbell, wait time.Duration) rung {
	rs := d.rings.Load()
	if rs == nil {
		rs = &rings{cur: d.Ring()}
	}
	owner, ok, previous := rs.owners(db.User, time.Now())
	var targets []string
	if ok {
		targets = append(targets, owner.ID)
	}
	if len(previous) > 0 {
		d.metrics.graceDoorbells.Inc()
		targets = append(targets, previous...)
	}
	if len(targets) == 0 {
		if wait > 0 {
			// Nobody could deliver it: the same answer as a gateway
			// without a socket for the user.
			d.metrics.waits.WithLabelValues(wire.Offline).Inc()
			return rung{delivery: wire.Offline}
		}
		return rung{}
	}
	if wait <= 0 {
		for _, gw := range targets {
			if err := d.cfg.NATS.PublishMsg(d.doorbellMsg(db, gw)); err != nil {
				d.metrics.doorbellFailed.Inc()
				d.log.Debug("doorbell not sent; the gateway's anti-entropy will find the message", "gateway", gw, "seq", db.Seq, "error", err)
			} else {
				d.metrics.doorbellSent.Inc()
			}
		}
		return rung{gateway: owner.ID}
	}
	outcome := d.awaitAny(ctx, db, targets, wait)
	d.metrics.waits.WithLabelValues(outcome).Inc()
	return rung{gateway: owner.ID, delivery: outcome}
}

// awaitAny asks every target and combines their answers: delivered as soon
// as one says so; offline only if all say so (a gateway without the user's
// socket answers offline at once, even while the other is delivering);
// otherwise timeout.
func (d *Dispatcher) awaitAny(ctx context.Context, db wire.Doorbell, targets []string, wait time.Duration) string {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	answers := make(chan string, len(targets))
	for _, gw := range targets {
		go func() { answers <- d.awaitDelivery(ctx, gw, d.doorbellMsg(db, gw), wait) }()
	}
	offline := 0
	for range targets {
		switch <-answers {
		case wire.Delivered:
			return wire.Delivered
		case wire.Offline:
			offline++
		}
	}
	if offline == len(targets) {
		return wire.Offline
	}
	return wire.Timeout
}

// awaitDelivery sends the doorbell as a request and maps the answer to a
// delivery outcome. Only a gateway's definite answer is delivered or
// offline; "no responders" means no process serves the gateway's subject,
// so nobody holds the user's socket: offline. Anything else, including a
// doorbell that could not be sent, is timeout: the message is stored either
// way, and its delivery is simply not known.
func (d *Dispatcher) awaitDelivery(ctx context.Context, gateway string, msg *nats.Msg, wait time.Duration) string {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	reply, err := d.cfg.NATS.RequestMsgWithContext(ctx, msg)
	switch {
	case err == nil:
		d.metrics.doorbellSent.Inc()
		var dr wire.DeliveryReply
		if json.Unmarshal(reply.Data, &dr) == nil && (dr.Status == wire.Delivered || dr.Status == wire.Offline) {
			return dr.Status
		}
		d.log.Warn("gateway answered a doorbell request with nonsense", "gateway", gateway, "reply", string(reply.Data))
		return wire.Timeout
	case errors.Is(err, nats.ErrNoResponders):
		d.metrics.doorbellSent.Inc()
		return wire.Offline
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.Is(err, nats.ErrTimeout):
		d.metrics.doorbellSent.Inc()
		return wire.Timeout
	default:
		d.metrics.doorbellFailed.Inc()
		d.log.Debug("doorbell request not sent", "gateway", gateway, "error", err)
		return wire.Timeout
	}
}

// doorbellMsg is the doorbell as a NATS message to gateway's subject.
func (d *Dispatcher) doorbellMsg(db wire.Doorbell, gateway string) *nats.Msg {
	return &nats.Msg{Subject: d.cfg.Deployment.Gateway(gateway), Header: db.Header(), Data: db.Body()}
}
