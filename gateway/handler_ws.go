package gateway

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/gateway/token"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/heraldpush/herald/ring"
)

// ringWait is how long a socket whose client saw another ring waits for
// this gateway's watcher to catch up before it is moved.
const ringWait = 2 * time.Second

// handleWS runs one socket: auth, the owner check, hello, then reading the
// client's frames until the socket ends.
func (g *Gateway) handleWS(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: g.cfg.OriginPatterns})
	if err != nil {
		return // Accept has answered the HTTP request
	}
	defer c.CloseNow()
	if !g.track(c) {
		return // shutting down
	}
	defer g.untrack(c)
	c.SetReadLimit(g.cfg.MaxFrameBytes)
	ctx := g.context() // not r.Context(): it ends with the handler's HTTP bookkeeping
	reject := func(code int, reason string) {
		g.m.closes.WithLabelValues(codeLabel(code)).Inc()
		c.Close(websocket.StatusCode(code), reason)
	}

	if !g.serve.Load() || !g.jsOK.Load() || g.fenced.Load() {
		reject(wire.CloseTryAgainLater, "gateway not ready")
		return
	}

	// The auth frame must come within AuthTimeout. A read context that
	// expires would drop the connection without a close frame, so a timer
	// closes the socket with 4002 instead, and the read then fails.
	timer := time.AfterFunc(g.cfg.AuthTimeout, func() {
		g.conns.Add(1) // the handler still runs, blocked in Read
		defer g.conns.Done()
		reject(wire.CloseAuthTimeout, "no auth frame in time")
	})
	typ, b, err := c.Read(context.Background())
	if !timer.Stop() || err != nil {
		return
	}
	f, err := wire.DecodeClientFrame(b)
	if typ != websocket.MessageText || err != nil || f.Type != wire.TypeAuth {
		reject(wire.CloseUnauthorized, "the first frame must be auth")
		return
	}
	claims, err := g.verifier.Verify(f.Token)
	if errors.Is(err, token.ErrExpired) {
		// Perhaps expired on its way from /v1/connect: the client gets a
		// new one, where 4003 would stop it for good.
		reject(wire.CloseTokenExpired, "token expired")
		return
	}
	if err != nil {
		reject(wire.CloseUnauthorized, "invalid token")
		return
	}
	user := claims.User

	owner, ok := g.owner(ctx, user, f.Ring)
	if !ok {
		reject(wire.CloseTryAgainLater, "no gateways in the ring")
		return
	}
	if owner.ID != g.cfg.ID {
		g.m.moves.WithLabelValues("connect").Inc()
		c.Write(ctx, websocket.MessageText, wire.Encode(wire.Moved{Type: wire.TypeMoved, URL: owner.URL}))
		reject(wire.CloseMoved, "moved")
		return
	}

	g.mu.Lock()
	full := g.sockets >= g.cfg.MaxSockets
	g.mu.Unlock()
	if full {
		reject(wire.CloseTryAgainLater, "gateway full")
		return
	}

	h, err := g.join(ctx, user)
	if err != nil {
		reject(wire.CloseTryAgainLater, "log unavailable")
		return
	}
	// Where the socket resumes is decided before it joins the hub's
	// sessions, so a refusal can still close it cleanly.
	cursor, gap, err := h.startCursor(ctx, f.Since, f.Epoch)
	if err != nil {
		g.leave(h, nil)
		if errors.Is(err, errStaleEpoch) {
			reject(wire.CloseServiceRestart, "log recreated")
		} else {
			reject(wire.CloseTryAgainLater, "log unavailable")
		}
		return
	}
	s := &session{h: h, c: c, wake: make(chan struct{}, 1), ctrl: make(chan []byte, 16), closed: make(chan struct{})}
	h.mu.Lock()
	s.cursor, s.fresh = cursor, cursor == 0
	epoch := h.epoch
	h.mu.Unlock()
	if code := h.attach(s); code != 0 {
		g.leave(h, nil)
		reason := "too many sockets for this user"
		if code == wire.CloseServiceRestart {
			reason = "log recreated"
		}
		reject(code, reason)
		return
	}
	defer g.leave(h, s)
	// A move or fence planned while this socket was joining did not see
	// it: judge it now that it is attached, and every later plan will.
	if owner, ok := g.placement().Owner(user); g.fenced.Load() || !ok || owner.ID != g.cfg.ID {
		if g.fenced.Load() || !ok {
			s.close(wire.CloseTryAgainLater, "try again later")
		} else {
			g.m.moves.WithLabelValues("connect").Inc()
			s.closeWith(wire.Encode(wire.Moved{Type: wire.TypeMoved, URL: owner.URL}), wire.CloseMoved, "moved")
		}
		s.read() // until the closing handshake ends
		return
	}

	hello := wire.Encode(wire.Hello{Type: wire.TypeHello, Gateway: g.cfg.ID, User: user, Epoch: epoch, Cursor: cursor})
	if c.Write(ctx, websocket.MessageText, hello) != nil {
		return
	}
	if gap != nil && c.Write(ctx, websocket.MessageText, gap) != nil {
		return
	}

	expiry := time.AfterFunc(time.Until(claims.Expires), func() { s.close(wire.CloseTokenExpired, "token expired") })
	defer expiry.Stop()

	// The reader runs here until the socket ends; the writer on its own
	// goroutine until the reader is done. Neither cancels the other's
	// read: coder/websocket drops a connection whose read context ends,
	// which would cut a closing handshake short.
	wctx, stopWriter := context.WithCancel(context.Background())
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		s.write(wctx)
	}()
	s.read()
	stopWriter()
	c.CloseNow() // ends a writer blocked in a write; a no-op after a clean close
	<-writerDone
}

// owner returns the user's owner in the gateway's ring. If the client came
// with another ring's fingerprint and this gateway is not the owner, it waits
// a little for its own watcher, which may simply be behind.
func (g *Gateway) owner(ctx context.Context, user, clientRing string) (ring.Member, bool) {
	deadline := time.NewTimer(ringWait)
	defer deadline.Stop()
	for {
		r, changed := g.watcher.Ring()
		m, ok := g.placementOf(r).Owner(user)
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

// read handles the client's frames: acks and pings. A malformed frame closes
// only this socket.
func (s *session) read() {
	for {
		typ, b, err := s.c.Read(context.Background())
		if err != nil {
			return
		}
		f, err := wire.DecodeClientFrame(b)
		if typ != websocket.MessageText || err != nil || f.Type == wire.TypeAuth {
			s.close(wire.CloseBadFrame, "malformed frame")
			continue // the read fails once the close handshake is done
		}
		switch f.Type {
		case wire.TypeAck:
			s.h.ack(s, f.Seq)
		case wire.TypePing:
			select {
			case s.ctrl <- wire.PongFrame:
			default: // pongs pile up only for a client that does not read
			}
		}
	}
}

func codeLabel(code int) string { return strconv.Itoa(code) }
