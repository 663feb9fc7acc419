package gateway

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/gateway/token"
	"github.com/heraldpush/herald/gateway/wire"
)

// Every way the gateway ends a socket, in one place: the close code tells
// the client what to do next (DESIGN.md, "Wire formats"), the reason is for
// people. No other file names a close code.
var (
	closeNotReady       = wire.Close{Code: wire.CloseTryAgainLater, Reason: "gateway not ready"}
	closeFenced         = wire.Close{Code: wire.CloseTryAgainLater, Reason: "gateway cut off from NATS"}
	closeFull           = wire.Close{Code: wire.CloseTryAgainLater, Reason: "gateway full"}
	closeNoOwner        = wire.Close{Code: wire.CloseTryAgainLater, Reason: "no gateway owns this user"}
	closeLogDown        = wire.Close{Code: wire.CloseTryAgainLater, Reason: "log unavailable"}
	closeUnauthCap      = wire.Close{Code: wire.CloseTryAgainLater, Reason: "too many sockets waiting to authenticate"}
	closeUnauthAddrCap  = wire.Close{Code: wire.CloseTryAgainLater, Reason: "too many sockets waiting to authenticate from this address"}
	closeAuthTimeout    = wire.Close{Code: wire.CloseAuthTimeout, Reason: "no auth frame in time"}
	closeNotAuth        = wire.Close{Code: wire.CloseUnauthorized, Reason: "the first frame must be auth"}
	closeBadToken       = wire.Close{Code: wire.CloseUnauthorized, Reason: "invalid token"}
	closeTokenExpired   = wire.Close{Code: wire.CloseTokenExpired, Reason: "token expired"}
	closeTokenNotYet    = wire.Close{Code: wire.CloseTokenExpired, Reason: "token not valid yet"}
	closeTooManySockets = wire.Close{Code: wire.CloseTooManySockets, Reason: "too many sockets for this user"}
	closeConnectRate    = wire.Close{Code: wire.CloseTooManySockets, Reason: "too many connects for this user"}
	closeSlow           = wire.Close{Code: wire.CloseSlowConsumer, Reason: "slow consumer"}
	closeBadFrame       = wire.Close{Code: wire.CloseBadFrame, Reason: "malformed frame"}
	closeBadStart       = wire.Close{Code: wire.CloseBadFrame, Reason: "bad start: want all, live, or last with last 1..1000"}
	closeNewEpoch       = wire.Close{Code: wire.CloseServiceRestart, Reason: "log recreated"}
	closeShutdown       = wire.Close{Code: wire.CloseServiceRestart, Reason: "gateway shutting down"}
	closeInternal       = wire.Close{Code: wire.CloseServiceRestart, Reason: "internal error"}
	closeMoved          = wire.Close{Code: wire.CloseMoved, Reason: "moved"}
	closeNone           = wire.Close{}                                                        // not a close: the socket goes on
	closeGone           = wire.Close{Code: wire.CloseGoingAway, Reason: "the peer went away"} // nothing to send: the socket is gone
)

// closeFor is the close for an error of accepting a socket.
func closeFor(err error) wire.Close {
	switch {
	case errors.Is(err, token.ErrExpired):
		// Perhaps expired on its way from /v1/connect: the client gets a
		// new one, where 4003 would stop it for good.
		return closeTokenExpired
	case errors.Is(err, token.ErrNotYetValid):
		// Issued a little ahead of this gateway's clock: retry.
		return closeTokenNotYet
	case errors.Is(err, token.ErrInvalid):
		return closeBadToken
	case errors.Is(err, errStaleEpoch):
		return closeNewEpoch
	case errors.Is(err, errTooManySockets):
		return closeTooManySockets
	case errors.Is(err, errUnauthTotal):
		return closeUnauthCap
	case errors.Is(err, errUnauthAddr):
		return closeUnauthAddrCap
	case errors.Is(err, errNotReady):
		return closeNotReady
	default: // the log could not be read
		return closeLogDown
	}
}

// refuse ends a socket that did not become a session.
func (g *Gateway) refuse(c conn, frame []byte, cl wire.Close) {
	switch cl {
	case closeGone:
		return // the handler drops what is left
	case closeAuthTimeout:
		g.m.countClose(cl) // the auth timer has sent it
		return
	}
	// A peer that never answers the close would hold the socket for the
	// handshake's 10 s, uncounted by the edge's caps: a refused socket gets
	// refuseGrace, then it is cut.
	cut := g.tasks.afterFunc(refuseGrace, "socket", func() { c.CloseNow() })
	defer cut.Stop()
	g.m.closeSocket(c, frame, cl, refuseGrace)
}

// refuseGrace bounds the closing handshake of a refused socket.
const refuseGrace = time.Second

// sendClose starts the closing handshake with cl, uncounted: the auth
// timer's, which refuse counts.
func sendClose(c conn, cl wire.Close) {
	c.Close(websocket.StatusCode(cl.Code), cl.Reason)
}

// moved is the frame and close that send a client to the user's owner.
func moved(url string) ([]byte, wire.Close) {
	return wire.Encode(wire.Moved{Type: wire.TypeMoved, URL: url}), closeMoved
}

// closeSocket ends c with cl: frame first if there is one, then the closing
// handshake, each bounded by timeout. It is the one place a close reaches a
// socket, and counts it.
func (m *metrics) closeSocket(c conn, frame []byte, cl wire.Close, timeout time.Duration) {
	m.countClose(cl)
	if frame != nil {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		c.Write(ctx, websocket.MessageText, frame)
		cancel()
	}
	c.Close(websocket.StatusCode(cl.Code), cl.Reason)
}

func (m *metrics) countClose(cl wire.Close) {
	m.closes.WithLabelValues(strconv.Itoa(cl.Code)).Inc()
}
