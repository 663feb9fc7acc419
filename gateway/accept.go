package gateway

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring"
)

// ringWait is how long a socket whose client saw another ring waits for
// this gateway's watcher to catch up before it is moved.
const ringWait = 2 * time.Second

// handleWS serves GET /ws: one socket, from the upgrade to its end.
func (g *Gateway) handleWS(w http.ResponseWriter, r *http.Request) {
	if !g.tasks.enter() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	defer g.tasks.leave()
	peer := g.edge.clientAddr(r)
	// The socket counts at the edge before the upgrade is answered: a
	// client that has its 101 knows its socket is counted, so the caps hold
	// exactly for the next one it opens. A refusal is sent after the
	// upgrade, as a close code the client can act on.
	release, edgeErr := g.edge.enter(peer)
	if release != nil {
		defer release()
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: g.cfg.OriginPatterns})
	if err != nil {
		return // Accept has answered the HTTP request
	}
	defer c.CloseNow()
	defer g.tasks.recover("socket", nil) // before CloseNow: the socket ends too
	if !g.track(c) {
		return // shutting down
	}
	defer g.untrack(c)
	c.SetReadLimit(g.cfg.MaxFrameBytes)

	s, first, frame, cl := g.accept(c, release, edgeErr)
	if cl != closeNone {
		g.refuse(c, frame, cl)
		return
	}
	defer g.users.leave(s.h, s)
	s.run(first, s.expires)
}

// accept takes a new socket from its upgrade to a session attached to its
// user's hub: the gateway's readiness, the edge's caps (counted before the
// upgrade: release uncounts, edgeErr is a refusal), the auth frame, the
// owner check, the user's limits, and where the session resumes. It returns
// the session and the frames to send first (hello, maybe a gap), or the
// close to refuse the socket with, and the frame to send before it (moved).
func (g *Gateway) accept(c conn, release func(), edgeErr error) (_ *session, first [][]byte, frame []byte, _ wire.Close) {
	ctx := g.users.ctx // not the request's: it ends with the handler's HTTP bookkeeping
	switch {
	case !g.serve.Load() || !g.jsOK.Load():
		return nil, nil, nil, closeNotReady
	case g.place.fenced.Load():
		return nil, nil, nil, closeFenced
	}
	if edgeErr != nil {
		return nil, nil, nil, closeFor(edgeErr)
	}
	f, cl := g.readAuth(c)
	release()
	if cl != closeNone {
		return nil, nil, nil, cl
	}
	claims, err := g.verifier.Verify(f.Token)
	if err != nil {
		return nil, nil, nil, closeFor(err)
	}
	user := claims.User
	if !g.edge.allowConnect(user) {
		return nil, nil, nil, closeConnectRate
	}

	owner, ok := g.owner(ctx, user, f.Ring)
	switch {
	case !ok:
		return nil, nil, nil, closeNoOwner
	case owner.ID != g.cfg.ID:
		g.m.moves.WithLabelValues("connect").Inc()
		frame, cl := moved(owner.URL)
		return nil, nil, frame, cl
	}
	if g.users.load() >= g.cfg.MaxSockets {
		return nil, nil, nil, closeFull
	}

	h, err := g.users.join(ctx, user) // refuses a user with too many sockets before any log read
	if err != nil {
		return nil, nil, nil, closeFor(err)
	}
	attached := false
	defer func() {
		if attached {
			return
		}
		if v := recover(); v != nil {
			// The place join reserved must not leak: the hub would stay,
			// and the user would reach the socket limit for good.
			g.users.leave(h, nil)
			panic(v) // on to handleWS, which counts it
		}
	}()
	// Where the socket resumes is decided before it joins the hub's
	// sessions, so a refusal can still close it cleanly.
	st, err := h.startAt(ctx, f)
	if err != nil {
		g.users.leave(h, nil)
		return nil, nil, nil, closeFor(err)
	}
	s := newSession(h, c, st)
	s.expires = claims.Expires
	if err := g.users.attach(h, s); err != nil {
		g.users.leave(h, nil)
		return nil, nil, nil, closeFor(err)
	}
	attached = true
	// A move or fence planned while this socket was joining did not see
	// it: judge it now that it is attached, and every later plan will.
	if owner, ok := g.place.current().Owner(user); g.place.fenced.Load() || !ok || owner.ID != g.cfg.ID {
		g.users.leave(h, s)
		switch {
		case g.place.fenced.Load():
			return nil, nil, nil, closeFenced
		case !ok:
			return nil, nil, nil, closeNoOwner
		}
		g.m.moves.WithLabelValues("connect").Inc()
		frame, cl := moved(owner.URL)
		return nil, nil, frame, cl
	}
	hello := st.hello
	hello.Type, hello.Gateway, hello.User = wire.TypeHello, g.cfg.ID, user
	first = [][]byte{wire.Encode(hello)}
	if st.gap != nil {
		first = append(first, st.gap)
	}
	return s, first, nil, closeNone
}

// readAuth reads the socket's first frame, which must be auth and come
// within AuthTimeout. A read context that expired would drop the
// connection without a close frame, so a timer sends the 4002 close instead,
// and the read then fails.
func (g *Gateway) readAuth(c conn) (wire.ClientFrame, wire.Close) {
	timer := g.tasks.afterFunc(g.cfg.AuthTimeout, "socket", func() { sendClose(c, closeAuthTimeout) })
	typ, b, err := c.Read(context.Background())
	if !timer.Stop() {
		return wire.ClientFrame{}, closeAuthTimeout
	}
	if err != nil {
		return wire.ClientFrame{}, closeGone
	}
	f, err := wire.DecodeClientFrame(b)
	switch {
	case errors.Is(err, wire.ErrBadStart):
		// An auth frame a client's code got wrong, not a credential: 4003
		// would send it for a new token.
		return wire.ClientFrame{}, closeBadStart
	case typ != websocket.MessageText || err != nil || f.Type != wire.TypeAuth:
		return wire.ClientFrame{}, closeNotAuth
	}
	return f, closeNone
}

// owner returns the user's owner in the gateway's ring. If the client came
// with another ring's fingerprint and this gateway is not the owner, it waits
// a little for its own watcher, which may simply be behind.
func (g *Gateway) owner(ctx context.Context, user, clientRing string) (ring.Member, bool) {
	deadline := time.NewTimer(ringWait)
	defer deadline.Stop()
	for {
		r, changed := g.watcher.Ring()
		m, ok := g.place.of(r).Owner(user)
		if !ok || m.ID == g.cfg.ID || clientRing == "" || clientRing == r.Fingerprint() {
			return m, ok
		}
		select {
		case <-changed:
		case <-deadline.C:
			return m, ok
		case <-ctx.Done():
			return m, ok
		}
	}
}

// Errors accept maps to closes (closeFor).
var (
	errNotReady       = errors.New("gateway not ready")
	errStaleEpoch     = errors.New("the log has another epoch than the hub")
	errTooManySockets = errors.New("too many sockets for this user")
	errUnauthTotal    = errors.New("too many sockets waiting to authenticate")
	errUnauthAddr     = errors.New("too many sockets waiting to authenticate from this address")
)
