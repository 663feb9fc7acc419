package gateway

import (
	"encoding/json"
	"fmt"

	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring/consul"
	"github.com/nats-io/nats.go"
)

// The NATS handlers. NATS runs each subscription's callbacks on one
// goroutine of its own, in order; a panic in one is recovered here (and
// costs at most the user's hub), never the process.

// subscribe listens for doorbells, broadcasts and stats requests. The
// liveness responder starts later, once the gateway serves (start).
func (g *Gateway) subscribe() ([]*nats.Subscription, error) {
	nc := g.cfg.NATS
	handle := g.onDoorbell
	if g.cfg.DoorbellHook != nil {
		handle = g.cfg.DoorbellHook(handle)
	}
	var subs []*nats.Subscription
	for _, sub := range []struct {
		subject string
		where   string
		h       nats.MsgHandler
	}{
		{g.cfg.Deployment.Gateway(g.cfg.ID), "doorbell", handle},
		{g.cfg.Deployment.Broadcast(), "broadcast", g.onBroadcast},
		{g.cfg.Deployment.Stats(g.cfg.ID), "stats", g.onStats},
	} {
		s, err := nc.Subscribe(sub.subject, g.guarded(sub.where, sub.h))
		if err != nil {
			for _, s := range subs {
				s.Unsubscribe()
			}
			return nil, fmt.Errorf("gateway: subscribe %s: %w", sub.subject, err)
		}
		s.SetPendingLimits(-1, 256<<20) // doorbells are small; never drop them for count
		subs = append(subs, s)
	}
	return subs, nil
}

// guarded recovers a panic of a NATS callback: the message is dropped and
// counted. Doorbells are hints: anti-entropy finds what a dropped one
// announced.
func (g *Gateway) guarded(where string, h nats.MsgHandler) nats.MsgHandler {
	return func(m *nats.Msg) {
		defer g.tasks.recover("nats_"+where, nil)
		h(m)
	}
}

// onDoorbell routes a doorbell to its user's hub; a user with no hub here
// has no socket here. A panic in the hub costs that user's sockets.
func (g *Gateway) onDoorbell(m *nats.Msg) {
	d, err := wire.DecodeDoorbell(m.Header, m.Data)
	if err != nil {
		g.m.doorbellBad.Inc()
		g.log.Debug("bad doorbell", "error", err)
		return
	}
	h := g.users.hub(d.User)
	if h == nil {
		g.m.doorbellOffline.Inc()
		if m.Reply != "" {
			g.respond(m.Reply, wire.Offline)
		}
		return
	}
	defer g.tasks.recover("hub", func() { g.users.fail(h) })
	h.doorbell(d, m.Reply)
}

// onBroadcast hands a broadcast to every session. A session whose control
// queue is full misses it: broadcasts are live-only and best effort.
func (g *Gateway) onBroadcast(m *nats.Msg) {
	frame, err := wire.DecodeBroadcast(m.Header, m.Data)
	if err != nil {
		g.log.Debug("bad broadcast", "error", err)
		return
	}
	var sent, dropped int
	g.users.forSessions(func(s *session) {
		select {
		case s.ctrl <- frame:
			sent++
		default:
			dropped++
		}
	})
	g.m.broadcastSent.Add(float64(sent))
	g.m.broadcastDropped.Add(float64(dropped))
}

func (g *Gateway) onStats(m *nats.Msg) {
	b, _ := json.Marshal(g.stats())
	m.Respond(b)
}

// stats are the counts the dispatchers ask for: /v1/cluster shows them, and
// a previous owner's pending moves keep it rung during a drain.
func (g *Gateway) stats() wire.GatewayStats {
	sockets, users := g.users.counts()
	return wire.GatewayStats{Gateway: g.cfg.ID, Sockets: sockets, Users: users, MovesPending: g.place.pending()}
}

// answerLiveness answers a liveness probe with this process's nonce and
// health.
func (g *Gateway) answerLiveness(m *nats.Msg) {
	r := consul.LiveReply{Instance: g.instance, Healthy: true}
	if err := g.health(); err != nil {
		r.Healthy, r.Reason = false, err.Error()
	}
	m.Respond(r.Encode())
}

// deliveryReplies are the encoded answers to wait=delivered doorbells.
var deliveryReplies = map[string][]byte{
	wire.Delivered: wire.Encode(wire.DeliveryReply{Status: wire.Delivered}),
	wire.Offline:   wire.Encode(wire.DeliveryReply{Status: wire.Offline}),
}

func (g *Gateway) respond(reply, status string) {
	if err := g.cfg.NATS.Publish(reply, deliveryReplies[status]); err != nil {
		g.log.Debug("delivery reply", "error", err)
	}
}
