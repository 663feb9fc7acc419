package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/gateway/wire"
)

// errDeadSocket ends a socket on which nothing arrived for 2×PingInterval.
var errDeadSocket = errors.New("no frame for 2×PingInterval: socket considered dead")

// outcome is how one socket ended.
type outcome struct {
	url     string
	gateway string // from the hello; "" if none came
	hello   bool
	code    int    // close code the gateway sent; 0 if none
	err     error  // why it ended
	moved   string // URL from a moved frame
	stable  bool   // it lasted StableAfter
}

// session dials url, authenticates and reads the socket until it ends.
// attempt is only reported in the connected status.
func (c *Client) session(ctx context.Context, url, ring, token string, attempt int) outcome {
	out := outcome{url: url}
	c.count(func(st *Stats) { st.Dials++ })
	raw := &rawStream{}
	conn, err := c.dial(ctx, url, raw)
	if err != nil {
		c.count(func(st *Stats) { st.DialFailures++ })
		out.err = err
		return out
	}
	start := time.Now()

	// live bounds every read and write of this connection; cancelling it
	// drops the connection (coder/websocket closes it when an operation's
	// context ends). drop also closes the raw stream, for when no
	// operation of ours is running: coder/websocket's Close may be the one
	// reading, waiting up to 5 s for an answer that will not come.
	live, kill := context.WithCancel(context.Background())
	drop := func() { kill(); raw.Close() }
	// silence is armed by the read loop around each wait for a frame.
	var dead atomic.Bool
	silence := time.AfterFunc(time.Hour, func() { dead.Store(true); kill() })
	silence.Stop()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { c.keepalive(ctx, live, drop, conn, done) })
	defer func() {
		silence.Stop()
		close(done)
		wg.Wait()
		kill()
		conn.CloseNow()
		c.count(func(st *Stats) { st.LastCloseCode = out.code })
	}()

	auth := wire.ClientFrame{Type: wire.TypeAuth, Token: token, Ring: ring}
	auth.Epoch, auth.Since = c.Cursor()
	if auth.Epoch == "" { // no cursor yet: the device chooses where it starts
		auth.Start, auth.Last = c.cfg.Start, c.cfg.Last
	}
	if err := c.write(live, conn, auth); err != nil {
		out.err = fmt.Errorf("sending auth: %w", err)
		return out
	}
	c.read(live, conn, silence, &dead, &out, attempt)
	out.stable = time.Since(start) >= c.cfg.StableAfter
	return out
}

func (c *Client) dial(ctx context.Context, url string, raw *rawStream) (*websocket.Conn, error) {
	// The dial's context must not outlive it; the connection does.
	dctx, cancel := context.WithCancel(context.WithValue(ctx, rawStreamKey{}, raw))
	defer cancel()
	conn, resp, err := websocket.Dial(dctx, url, &websocket.DialOptions{HTTPClient: c.wsClient})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dialing %s: HTTP %d: %w", url, resp.StatusCode, err)
		}
		return nil, fmt.Errorf("dialing %s: %w", url, err)
	}
	conn.SetReadLimit(maxFrameBytes)
	return conn, nil
}

// read is the connection's read loop. It handles each frame in order and
// returns when the socket ends.
func (c *Client) read(live context.Context, conn *websocket.Conn, silence *time.Timer, dead *atomic.Bool, out *outcome, attempt int) {
	for {
		// Only the wait for a frame is timed, not OnEvent.
		silence.Reset(2 * c.cfg.PingInterval)
		typ, b, err := conn.Read(live)
		silence.Stop()
		if err != nil {
			if dead.Load() {
				c.count(func(st *Stats) { st.DeadSockets++ })
				err = errDeadSocket
			}
			if code := websocket.CloseStatus(err); code >= 0 {
				out.code = int(code)
			}
			out.err = err
			c.log.Debug("socket ended", "gateway", out.gateway, "code", out.code, "err", err)
			return
		}
		f, err := wire.DecodeServerFrame(b)
		if typ != websocket.MessageText {
			err = errors.New("binary frame")
		}
		if errors.Is(err, wire.ErrUnknownType) {
			// From a newer gateway: skipping it loses nothing this client
			// could have used.
			c.count(func(st *Stats) { st.IgnoredFrames++ })
			c.log.Debug("frame of an unknown type skipped", "gateway", out.gateway, "err", err)
			continue
		}
		if err != nil {
			// A gateway bug. Resuming from the cursor on a new socket loses
			// nothing, where skipping the frame might.
			c.count(func(st *Stats) { st.BadFrames++ })
			out.err = fmt.Errorf("bad frame from %s: %w", out.url, err)
			c.log.Warn("bad frame", "gateway", out.gateway, "err", err)
			return
		}
		if c.cfg.OnFrame != nil {
			gateway := out.gateway
			if f.Type == wire.TypeHello {
				gateway = f.Gateway
			}
			c.cfg.OnFrame(gateway, f)
		}
		if err := c.handle(live, conn, f, out, attempt); err != nil {
			out.err = err
			return
		}
	}
}

// handle applies one frame: the cursor rules of DESIGN.md, events, acks.
func (c *Client) handle(live context.Context, conn *websocket.Conn, f wire.ServerFrame, out *outcome, attempt int) error {
	switch f.Type {
	case wire.TypeHello:
		// Authoritative: the gateway knows the log; a gap may follow.
		c.setCursor(f.Epoch, f.Cursor)
		out.gateway, out.hello = f.Gateway, true
		c.count(func(st *Stats) { st.Connects++; st.Gateway = f.Gateway })
		c.log.Info("connected", "gateway", f.Gateway, "url", out.url, "epoch", f.Epoch, "cursor", f.Cursor)
		c.emit(Event{Kind: EventStatus, Status: Status{Connected: true, Gateway: f.Gateway, URL: out.url, Attempt: attempt}})
	case wire.TypeNotification:
		if _, seq := c.Cursor(); f.Seq <= seq {
			c.count(func(st *Stats) { st.DroppedDuplicates++ })
			return nil
		}
		c.emit(Event{Kind: EventNotification, Frame: f})
		c.mu.Lock()
		c.seq = f.Seq
		c.stats.Notifications++
		c.mu.Unlock()
		if c.cfg.NoAck {
			return nil
		}
		if err := c.write(live, conn, wire.ClientFrame{Type: wire.TypeAck, Seq: f.Seq}); err != nil {
			return fmt.Errorf("sending ack: %w", err)
		}
		c.count(func(st *Stats) { st.Acks++ })
	case wire.TypeGap:
		c.emit(Event{Kind: EventGap, Frame: f})
		// Next counts the gap's epoch, which may be new: adopting both is
		// what keeps the new log's low seqs from being dropped as old.
		c.setCursor(f.Epoch, f.Next-1)
		c.count(func(st *Stats) { st.Gaps++ })
	case wire.TypeBroadcast:
		c.emit(Event{Kind: EventBroadcast, Frame: f})
		c.count(func(st *Stats) { st.Broadcasts++ })
	case wire.TypeMoved:
		out.moved = f.URL // the 4001 close follows
	case wire.TypeCaughtUp:
		c.emit(Event{Kind: EventCaughtUp, Frame: f})
		c.count(func(st *Stats) { st.CaughtUps++ })
	case wire.TypePong:
		c.count(func(st *Stats) { st.Pongs++ })
	}
	return nil
}

// keepalive pings every PingInterval until the connection ends, and closes
// it with 1000 when ctx ends, dropping it if the gateway does not answer
// within the close grace.
func (c *Client) keepalive(ctx, live context.Context, drop func(), conn *websocket.Conn, done <-chan struct{}) {
	t := time.NewTicker(c.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			force := time.AfterFunc(c.closeGrace, drop)
			defer force.Stop()
			conn.Close(websocket.StatusNormalClosure, "client stopped")
			return
		case <-t.C:
			if err := c.write(live, conn, wire.ClientFrame{Type: wire.TypePing}); err != nil {
				return // the connection is closed; the read loop sees it
			}
			c.count(func(st *Stats) { st.Pings++ })
		}
	}
}

func (c *Client) write(ctx context.Context, conn *websocket.Conn, f wire.ClientFrame) error {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	return conn.Write(ctx, websocket.MessageText, wire.Encode(f))
}

// rawStream is the byte stream under one WebSocket, recorded at the dial so
// the session can drop the connection outright: coder/websocket offers no
// way to cut its Close short.
type rawStream struct {
	mu sync.Mutex // guards c
	c  io.Closer
}

type rawStreamKey struct{}

func (r *rawStream) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.c != nil {
		r.c.Close()
	}
}

// recordRaw is the RoundTripper of the WebSocket dials: it hands the
// upgraded connection (the body of a 101 answer) to the dial's rawStream.
type recordRaw struct{ base http.RoundTripper }

func (t recordRaw) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if raw, ok := req.Context().Value(rawStreamKey{}).(*rawStream); ok && err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
		raw.mu.Lock()
		raw.c = resp.Body
		raw.mu.Unlock()
	}
	return resp, err
}
