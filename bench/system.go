package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/gateway/client"
	"github.com/heraldpush/herald/gateway/token"
	"github.com/heraldpush/herald/gateway/wire"
)

// System is what a scenario measures: herald, or a peer measured the same
// way on the same machine.
type System interface {
	// Name is the system's column in a report.
	Name() string
	// Connect connects one device per user, living until cctx ends, and
	// returns once every one is ready to receive. Each notification a
	// device receives is passed to onData with its data.
	Connect(ctx, cctx context.Context, users []string, onData func(user string, data []byte)) error
	// Notify posts items in one request (a batch if more than one) and
	// returns how many were accepted.
	Notify(hc *http.Client, i int, items []Item) int
	// Broadcast sends data live to every connected device of users (for
	// herald, to every socket) and reports whether it was accepted.
	Broadcast(hc *http.Client, i int, users []string, data any) bool
	// Procs are every process the system needs, for its CPU.
	Procs() []Process
	// Failures counts the connect attempts that failed so far: herald's
	// client tries again after each; a Centrifugo device gives up.
	Failures() int64
}

// Item is one notification to post.
type Item struct {
	User, ID string
	Data     any
}

// Name is herald.
func (t *Target) Name() string { return "herald" }

// Procs are herald's processes.
func (t *Target) Procs() []Process { return t.Processes }

// Connect connects herald devices through the Go client; onData gets the
// data of notifications and broadcasts.
func (t *Target) Connect(ctx, cctx context.Context, users []string, onData func(string, []byte)) error {
	return t.devices(ctx, cctx, users, func(user string, f wire.ServerFrame) {
		if f.Type == wire.TypeNotification || f.Type == wire.TypeBroadcast {
			onData(user, f.Data)
		}
	}, nil)
}

// Failures counts the sockets that ended or could not be opened.
func (t *Target) Failures() int64 { return t.failed.Load() }

// Broadcast posts to /v1/broadcast, which reaches every socket.
func (t *Target) Broadcast(hc *http.Client, i int, _ []string, data any) bool {
	status, err := t.post(hc, i, "/v1/broadcast", map[string]any{"data": data})
	return err == nil && status == http.StatusAccepted
}

// devices connects one device per user (from Clients in turn, if any),
// living until cctx ends, passes every frame to onFrame and every change of
// connection to onStatus (if not nil), and returns once every one has had
// its hello.
func (t *Target) devices(ctx, cctx context.Context, users []string, onFrame func(user string, f wire.ServerFrame), onStatus func(user string, s client.Status)) error {
	if t.Generators.N > 1 {
		spec := WorkerSpec{System: "herald", Dispatchers: t.Dispatchers, APIKey: t.APIKey, TokenSecret: t.TokenSecret}
		return t.Generators.run(ctx, cctx, spec, users, func(l workerLine) {
			switch {
			case l.Kind == "frame" && l.Frame != nil:
				onFrame(l.User, *l.Frame)
			case l.Kind == "status" && l.Status != nil:
				if !l.Status.Connected {
					t.failed.Add(1)
				}
				if onStatus != nil {
					onStatus(l.User, l.Status.status())
				}
			}
		})
	}
	secret := []byte(t.TokenSecret)
	var ready atomic.Int64
	for i, user := range users {
		var hc *http.Client
		if len(t.Clients) > 0 {
			hc = t.Clients[i%len(t.Clients)]
		}
		c, err := client.New(client.Config{
			Dispatcher: t.Dispatchers[i%len(t.Dispatchers)],
			HTTPClient: hc,
			Token:      func(context.Context) (string, error) { return token.Sign(secret, user, time.Hour) },
			OnFrame:    func(_ string, f wire.ServerFrame) { onFrame(user, f) },
			OnEvent: func(e client.Event) {
				if e.Kind != client.EventStatus {
					return
				}
				if e.Status.Connected {
					ready.Add(1)
				} else {
					t.failed.Add(1)
				}
				if onStatus != nil {
					onStatus(user, e.Status)
				}
			},
		})
		if err != nil {
			return err
		}
		go c.Run(cctx)
	}
	return waitReady(ctx, &ready, len(users))
}

// Notify posts to /v1/notify, or /v1/notify/batch for several.
func (t *Target) Notify(hc *http.Client, i int, items []Item) int {
	one := func(it Item) map[string]any { return map[string]any{"user": it.User, "id": it.ID, "data": it.Data} }
	if len(items) == 1 {
		status, err := t.post(hc, i, "/v1/notify", one(items[0]))
		if err == nil && status == http.StatusAccepted {
			return 1
		}
		return 0
	}
	var body []map[string]any
	for _, it := range items {
		body = append(body, one(it))
	}
	var res struct {
		Results []struct {
			Seq uint64 `json:"seq"`
		} `json:"results"`
	}
	if err := t.postJSON(hc, i, "/v1/notify/batch", map[string]any{"notifications": body}, &res); err != nil {
		return 0
	}
	ok := 0
	for _, r := range res.Results {
		if r.Seq > 0 {
			ok++
		}
	}
	return ok
}

// waitReady waits up to two minutes for n devices to be ready.
func waitReady(ctx context.Context, ready *atomic.Int64, n int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for ready.Load() < int64(n) {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d users connected within 2 minutes", ready.Load(), n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// Centrifugo is the peer: a Centrifugo server, each user subscribed to its
// personal channel (personal:#<user>, history 100) on connect, published to
// through its HTTP API. deploy/bench/centrifugo.json is its configuration.
type Centrifugo struct {
	URL    string // e.g. http://127.0.0.1:28000
	APIKey string
	Secret string // HMAC secret of connection tokens
	PID    int
	// RedisPID is the Redis server of Centrifugo's Redis engine; 0 with
	// its memory engine.
	RedisPID int
	// Clients, if any, are the HTTP clients devices dial with, in turn
	// (the connections scenario spreads them over source addresses).
	Clients []*http.Client
	// Generators, if more than one, hold the devices in generator
	// processes of their own instead of this one.
	Generators Generators

	failed atomic.Int64 // devices that gave up before their connect reply
}

// Failures counts the devices that failed to connect (in this process;
// a generator process that has any reports its connect failed).
func (c *Centrifugo) Failures() int64 { return c.failed.Load() }

// Name is centrifugo.
func (c *Centrifugo) Name() string { return "centrifugo" }

// Procs is the server process, and Redis if its engine is Redis.
func (c *Centrifugo) Procs() []Process {
	ps := []Process{{Name: "centrifugo", Kind: "centrifugo", PID: c.PID, Metrics: c.URL + "/metrics"}}
	if c.RedisPID > 0 {
		ps = append(ps, Process{Name: "redis", Kind: "redis", PID: c.RedisPID})
	}
	return ps
}

// Connect opens a WebSocket per user speaking Centrifugo's JSON protocol:
// connect with an HS256 token, answer the server's pings, and pass each
// publication's data on.
func (c *Centrifugo) Connect(ctx, cctx context.Context, users []string, onData func(string, []byte)) error {
	if c.Generators.N > 1 {
		spec := WorkerSpec{System: "centrifugo", URL: c.URL, Secret: c.Secret}
		return c.Generators.run(ctx, cctx, spec, users, func(l workerLine) {
			if l.Kind == "data" {
				onData(l.User, l.Data)
			}
		})
	}
	var ready atomic.Int64
	for i, user := range users {
		var hc *http.Client
		if len(c.Clients) > 0 {
			hc = c.Clients[i%len(c.Clients)]
		}
		go c.device(cctx, user, hc, &ready, onData)
	}
	return waitReady(ctx, &ready, len(users))
}

func (c *Centrifugo) device(ctx context.Context, user string, hc *http.Client, ready *atomic.Int64, onData func(string, []byte)) {
	connected := false
	defer func() {
		if !connected && ctx.Err() == nil {
			c.failed.Add(1)
		}
	}()
	tok, err := token.Sign([]byte(c.Secret), user, time.Hour)
	if err != nil {
		return
	}
	ws := "ws" + c.URL[len("http"):] + "/connection/websocket"
	conn, _, err := websocket.Dial(ctx, ws, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	hello, _ := json.Marshal(map[string]any{"id": 1, "connect": map[string]any{"token": tok}})
	if conn.Write(ctx, websocket.MessageText, hello) != nil {
		return
	}
	for {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			return
		}
		// A frame holds one or more JSON replies, one per line.
		sc := bufio.NewScanner(bytes.NewReader(msg))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			var rep struct {
				ID      int             `json:"id"`
				Connect json.RawMessage `json:"connect"`
				Error   json.RawMessage `json:"error"`
				Push    *struct {
					Pub *struct {
						Data json.RawMessage `json:"data"`
					} `json:"pub"`
				} `json:"push"`
			}
			if json.Unmarshal(line, &rep) != nil {
				continue
			}
			switch {
			case string(bytes.TrimSpace(line)) == "{}": // ping
				if conn.Write(ctx, websocket.MessageText, []byte("{}")) != nil {
					return
				}
			case rep.ID == 1 && rep.Connect != nil:
				connected = true
				ready.Add(1)
			case rep.ID == 1 && rep.Error != nil:
				return
			case rep.Push != nil && rep.Push.Pub != nil:
				onData(user, rep.Push.Pub.Data)
			}
		}
	}
}

// Notify publishes through /api/publish, or /api/batch for several.
func (c *Centrifugo) Notify(hc *http.Client, _ int, items []Item) int {
	pub := func(it Item) map[string]any {
		return map[string]any{"channel": "personal:#" + it.User, "data": it.Data}
	}
	if len(items) == 1 {
		var res struct {
			Result *struct{} `json:"result"`
		}
		if c.api(hc, "/api/publish", pub(items[0]), &res) != nil || res.Result == nil {
			return 0
		}
		return 1
	}
	var cmds []map[string]any
	for _, it := range items {
		cmds = append(cmds, map[string]any{"publish": pub(it)})
	}
	var res struct {
		Replies []struct {
			Publish *struct{} `json:"publish"`
		} `json:"replies"`
	}
	if c.api(hc, "/api/batch", map[string]any{"commands": cmds}, &res) != nil {
		return 0
	}
	ok := 0
	for _, r := range res.Replies {
		if r.Publish != nil {
			ok++
		}
	}
	return ok
}

// Broadcast publishes data to every user's personal channel in one
// /api/broadcast request.
func (c *Centrifugo) Broadcast(hc *http.Client, _ int, users []string, data any) bool {
	channels := make([]string, len(users))
	for i, u := range users {
		channels[i] = "personal:#" + u
	}
	var res struct {
		Result *struct{} `json:"result"`
	}
	return c.api(hc, "/api/broadcast", map[string]any{"channels": channels, "data": data}, &res) == nil && res.Result != nil
}

func (c *Centrifugo) api(hc *http.Client, path string, body, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, c.URL+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", c.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
