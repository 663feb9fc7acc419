package gateway_test

// Hostile and random payloads through the real dispatcher and gateways, with
// real NATS and Consul: what a backend posts is what a socket receives, byte
// for byte, and what the dispatcher refuses it refuses clearly, storing
// nothing.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/dispatcher"
	"github.com/heraldpush/herald/gateway"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"
)

// maxPayload is the dispatcher's default payload limit, which these tests
// run with.
const maxPayload = dispatcher.DefaultMaxPayload

// TestHostilePayloadRegression reproduces a reported crash: 65,000 '<' in a
// JSON string (under the 64 KiB limit) became a ~390 KB frame when the
// gateway re-encoded the data with json.Marshal (each '<' escaped to
// \u003c), and a hub whose buffer then held that one entry, larger than
// BufferBytes, trimmed at index -1 and the gateway panicked. Now the data
// goes into the frame verbatim and the trim keeps a lone oversized entry.
//
// With the default BufferBytes (256 KiB) the frame fits the buffer, and the
// replay to a second socket comes from it; with 1 KiB the entry is alone
// and oversized at once, and the second notification trims it away, so the
// replay reads the log.
func TestHostilePayloadRegression(t *testing.T) {
	for _, tc := range []struct {
		name        string
		bufferBytes int // 0: the default
	}{
		{"default BufferBytes", 0},
		{"BufferBytes 1KiB", 1 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, inbox.Config{})
			g := c.startGateway("gw-1", func(cfg *gateway.Config) { cfg.BufferBytes = tc.bufferBytes })
			d := c.startDispatcher()
			tok := userToken(t, "alice", time.Hour)
			ca := connectUser(t, d, tok)
			if ca.Gateway != "gw-1" || ca.URL != g.url {
				t.Fatalf("/v1/connect sent alice to %+v, want gw-1 at %s", ca, g.url)
			}
			alice := dialRaw(t, ca.URL, wire.ClientFrame{Type: wire.TypeAuth, Token: tok, Ring: ca.Ring})
			if h := alice.waitFrames(t, 1, 5*time.Second, "alice's hello")[0]; h.f.Type != wire.TypeHello || h.f.User != "alice" {
				t.Fatalf("alice's first frame is %s, want her hello", abbrev(h.raw))
			}

			hostile := []byte(`"` + strings.Repeat("<", 65000) + `"`)
			second := []byte(`{"after": "<&>"}`)
			var seqs []uint64
			for _, data := range [][]byte{hostile, second} {
				status, _, body := postNotify(t, d, notifyBody("alice", data))
				var res notifyResult
				if err := json.Unmarshal(body, &res); err != nil || status != http.StatusAccepted || res.Routed != dispatcher.StatusRouted {
					t.Fatalf("POST /v1/notify of %d bytes: %d %s", len(data), status, abbrev(body))
				}
				seqs = append(seqs, res.Seq)
			}
			got := alice.waitFrames(t, 3, 10*time.Second, "both notifications")
			select {
			case err := <-g.done:
				t.Fatalf("the gateway's Run returned: %v", err)
			default:
			}
			if !ready(g.url) {
				t.Fatal("the gateway's /readyz is not 200 after the hostile payload")
			}
			checkNotifications(t, "alice's socket", got[1:], seqs, [][]byte{hostile, second})

			replay := dialRaw(t, ca.URL, wire.ClientFrame{Type: wire.TypeAuth, Token: tok, Ring: ca.Ring})
			got = replay.waitFrames(t, 3, 10*time.Second, "the replay since 0")
			if got[0].f.Type != wire.TypeHello || got[0].f.Cursor != 0 {
				t.Fatalf("the second socket's first frame is %s, want a hello with cursor 0", abbrev(got[0].raw))
			}
			checkNotifications(t, "the replay since 0", got[1:], seqs, [][]byte{hostile, second})
			fromLog := metric(t, g.url, `herald_log_reads_total{reason="replay"}`) > 0
			if wantLog := tc.bufferBytes != 0; fromLog != wantLog {
				t.Fatalf("the replay read the log: %v; want %v (BufferBytes %d)", fromLog, wantLog, tc.bufferBytes)
			}
		})
	}
}

// checkNotifications fails unless frames are exactly the notifications seqs
// carrying data, each byte for byte and within the frame overhead bound.
func checkNotifications(t *testing.T, who string, frames []frame, seqs []uint64, data [][]byte) {
	t.Helper()
	if len(frames) != len(seqs) {
		t.Fatalf("%s got %d frames after hello, want the %d notifications %v", who, len(frames), len(seqs), seqs)
	}
	for i, fr := range frames {
		if fr.err != nil || fr.f.Type != wire.TypeNotification || fr.f.Seq != seqs[i] {
			t.Fatalf("%s: frame %d is %s (%v), want notification %d", who, i+1, abbrev(fr.raw), fr.err, seqs[i])
		}
		if !bytes.Equal(fr.f.Data, data[i]) {
			t.Fatalf("%s: notification %d carries data %s, want the posted %s byte for byte", who, seqs[i], abbrev(fr.f.Data), abbrev(data[i]))
		}
		if len(fr.raw) > len(data[i])+wire.MaxFrameOverhead {
			t.Fatalf("%s: notification %d's frame is %d bytes for %d bytes of data: more than wire.MaxFrameOverhead (%d) added",
				who, seqs[i], len(fr.raw), len(data[i]), wire.MaxFrameOverhead)
		}
	}
}

// FuzzEndToEnd posts a random user and data through the real dispatcher to
// the user's socket on its owner, one of two gateways. A request the
// dispatcher must refuse gets its 4xx JSON error, with the predicted code,
// and stores nothing. An accepted one reaches the socket as a notification
// whose data is the posted value byte for byte (the value as the JSON
// parser delimits it: whitespace around it belongs to the request body, not
// to the data), in a frame at most wire.MaxFrameOverhead bytes larger, with
// the seq and id of the 202 answer, and nothing else on the socket; and
// so does a second socket resuming from the same place after the first has
// gone, which reads it back from the log.
//
// The cluster is started by the first input a process runs, not before
// f.Fuzz: under -fuzz the coordinator process runs no input, and only the
// workers need one. It is stopped when the fuzz test ends.
func FuzzEndToEnd(f *testing.F) {
	users := []string{
		"alice", "a.b", "*", ">", "a.*.>", "a b", " alice", "alice ", "😀", "<script>alert(1)</script>",
		strings.Repeat("x", wire.MaxUserBytes), strings.Repeat("<", wire.MaxUserBytes), `"\`, "a\u2028b",
		// Invalid: empty, too long, control characters, U+FFFD, not UTF-8.
		"", strings.Repeat("x", wire.MaxUserBytes+1), "a\x00b", "a\nb", "\u0085", "\ufffd", "\xff",
	}
	for _, u := range users {
		f.Add(u, []byte(`{"n":1}`))
	}
	deep := func(n int) []byte { return []byte(strings.Repeat("[", n) + strings.Repeat("]", n)) }
	for _, data := range []string{
		`"<>&"`, `{"html":"<script>alert('x')</script> &amp; &lt;"}`, `<>&`,
		"\"\u2028\u2029\"", `"\u2028\u2029"`, "[1,\u2028 2]", // U+2028 raw inside a string is JSON; outside it is not whitespace
		`"\ud83d\ude00"`, `"\ud800"`, `"\udc00\ud800"`, `"😀"`,
		`18446744073709551616`, `1e400`, `-0`, `0.1e-999`, `-1.5E+308`, `0`,
		`{ "a" : 1 }`, " \t\r\n{ \"a\" : [ 1 , 2 ] }\n ", `{"a":1,"a":2}`, `"\"\\\/\b\f\n\r\t"`,
		`true`, `false`, `""`, `[]`, `{}`, `"\u0000"`,
		// Refused: null, nothing, not JSON, not UTF-8, two values, a BOM.
		`null`, ` null `, ``, `   `, `{`, `01`, `[1,]`, "\"\xff\"", "\"\xed\xa0\x80\"", `1 2`, "\ufeff1", `1,"user":"bob"`,
	} {
		f.Add("alice", []byte(data))
	}
	f.Add("alice", deep(1000))
	f.Add("alice", deep(9999))  // the frame nests 10000 deep: the most encoding/json decodes
	f.Add("alice", deep(10000)) // the body nests 10001 deep: refused as bad JSON
	atLimit := []byte(`"` + strings.Repeat("a", maxPayload-2) + `"`)
	f.Add("alice", atLimit)
	f.Add(strings.Repeat("<", wire.MaxUserBytes), atLimit) // the largest message the log stores
	f.Add("alice", []byte(`"`+strings.Repeat("<", maxPayload-2)+`"`))
	f.Add("alice", []byte(`"`+strings.Repeat("a", maxPayload-1)+`"`)) // one byte over
	f.Add("alice", []byte(" "+string(atLimit)+" "))                   // the limit counts the value, not the whitespace
	f.Add("alice", []byte(`"`+strings.Repeat("a", 100<<10)+`"`))      // past the body cap too
	f.Add("alice", []byte(strings.Repeat(" ", 100<<10)+"1"))          // a small value in a body over the cap
	f.Add(strings.Repeat("x", 8<<10), []byte("1"))                    // a user far over the limit

	env := &fuzzEnv{tb: &lazyTB{TB: f}}
	f.Cleanup(env.tb.teardown)
	f.Fuzz(func(t *testing.T, user string, data []byte) {
		e := env.get(t)
		body := notifyBody(user, data)
		want, ok := predict(user, data, body)
		if !ok {
			// Data that is not JSON on its own closed the data field and
			// wrote more of the body: another request, not this test's.
			return
		}
		if want.status != http.StatusAccepted {
			e.checkRefused(t, body, want)
			return
		}
		e.checkDelivered(t, user, want.data, body)
	})
}

// outcome is what the dispatcher must answer a notify body with.
type outcome struct {
	status int
	code   string // the error's code when status is not 202
	data   []byte // when 202: the data as the dispatcher takes it
}

// predict says how the dispatcher must answer the body notifyBody built
// from user and data, in the order it checks: the body as JSON, the user,
// then the data. ok is false when data that is not JSON by itself still
// made a valid body (1,"user":"bob"): that is a different request, not this
// one.
func predict(user string, data, body []byte) (_ outcome, ok bool) {
	value := bytes.Trim(data, " \t\r\n") // JSON's whitespace, and only it
	switch {
	case !utf8.Valid(body) || !json.Valid(body): // json.Valid also bounds nesting, as the decoder does
		return outcome{status: http.StatusBadRequest, code: string(dispatcher.CodeInvalidJSON)}, true
	case !json.Valid(data):
		return outcome{}, false
	case wire.ValidateUser(user) != nil:
		return outcome{status: http.StatusBadRequest, code: string(dispatcher.CodeInvalidUser)}, true
	case string(value) == "null":
		return outcome{status: http.StatusBadRequest, code: string(dispatcher.CodeInvalidData)}, true
	case len(value) > maxPayload:
		return outcome{status: http.StatusRequestEntityTooLarge, code: string(dispatcher.CodePayloadTooLarge)}, true
	}
	return outcome{status: http.StatusAccepted, data: value}, true
}

// bodySlack: a body longer than maxPayload+bodySlack may be refused whole
// (413 payload_too_large) by the dispatcher's cap on reading bodies,
// whatever else is right or wrong with it. The cap allows at least this
// much beyond maxPayload for the envelope, so every request whose only
// excess is the data is judged on its data.
const bodySlack = 1 << 10

// fuzzEnv is the cluster one fuzz process shares among its inputs: two
// gateways, so users land on either, and one dispatcher.
type fuzzEnv struct {
	tb   *lazyTB
	once sync.Once
	c    *cluster
	d    *disp
	log  jetstream.Stream
}

// get starts the cluster on the first call; a failure fails that input and
// every later one.
func (e *fuzzEnv) get(t *testing.T) *fuzzEnv {
	e.once.Do(func() {
		e.tb.report(t)
		defer e.tb.report(e.tb.TB)
		// A long append deadline: a loaded machine must not turn a valid
		// input into a 503 the fuzzer would report.
		c := newCluster(e.tb, inbox.Config{AppendTimeout: 15 * time.Second, MaxBytes: 256 << 20})
		// Every input connects its user twice: no connect budget.
		unlimited := func(cfg *gateway.Config) { cfg.ConnectsPerUser = 1e9 }
		c.startGateway("gw-1", unlimited)
		c.startGateway("gw-2", unlimited)
		// No rate limit: the fuzzer is one caller posting as fast as it can.
		d := c.startDispatcher(func(cfg *dispatcher.Config) { cfg.RateLimit = rate.Inf })
		js, err := jetstream.New(c.nc)
		if err != nil {
			t.Fatal(err)
		}
		st, err := js.Stream(context.Background(), c.log.Config().Stream)
		if err != nil {
			t.Fatal(err)
		}
		e.c, e.d, e.log = c, d, st
	})
	if e.c == nil {
		t.Fatal("the cluster did not start (see the first input's failure)")
	}
	return e
}

// lastSeq is the log stream's last seq: unchanged across a refused post
// means nothing was stored.
func (e *fuzzEnv) lastSeq(t *testing.T) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := e.log.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return info.State.LastSeq
}

// checkRefused posts body and fails unless the answer is want's status with
// a JSON error of want's code, and the log is unchanged.
func (e *fuzzEnv) checkRefused(t *testing.T, body []byte, want outcome) {
	t.Helper()
	before := e.lastSeq(t)
	status, h, b := postNotify(t, e.d, body)
	if status == http.StatusRequestEntityTooLarge && len(body) > maxPayload+bodySlack {
		want = outcome{status: status, code: string(dispatcher.CodePayloadTooLarge)}
	}
	var eb struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); status != want.status || err != nil || eb.Error.Code != want.code || eb.Error.Message == "" ||
		h.Get("Content-Type") != "application/json" {
		t.Fatalf("POST %s: %d %q %s; want %d with a JSON error %q and a message", abbrev(body), status, h.Get("Content-Type"), abbrev(b), want.status, want.code)
	}
	if after := e.lastSeq(t); after != before {
		t.Fatalf("POST %s was refused (%s) but the log's last seq went from %d to %d", abbrev(body), eb.Error.Code, before, after)
	}
}

// checkDelivered connects a socket for user to its owner, resuming after
// the user's last message, posts body and fails unless the socket receives
// exactly the one notification, data byte for byte, from the doorbell. Then
// a second socket resumes from the same place once the first has gone and
// the hub with it, so its copy is read back from the log. Each socket is
// closed and waited out (no gateway has a socket or hub left), so nothing
// carries over to the next input.
func (e *fuzzEnv) checkDelivered(t *testing.T, user string, data, body []byte) {
	t.Helper()
	tok := userToken(t, user, time.Hour)
	ca := connectUser(t, e.d, tok)
	g := e.c.gws[ca.Gateway]
	if g == nil || g.url != ca.URL {
		t.Fatalf("/v1/connect for %q answered %+v: not one of the cluster's gateways", user, ca)
	}
	if owner, _ := e.c.ring().Owner(user); owner.ID != ca.Gateway {
		t.Fatalf("/v1/connect sent %q to %s; the gateways' ring names %s", user, ca.Gateway, owner.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var since uint64
	last, found, err := e.c.log.Last(ctx, user, true)
	if err != nil {
		t.Fatalf("last of %q: %v", user, err)
	}
	if found {
		since = last.Seq
	}
	live := e.open(t, user, tok, ca, since)

	status, _, b := postNotify(t, e.d, body)
	var res notifyResult
	if err := json.Unmarshal(b, &res); status != http.StatusAccepted || err != nil {
		if status == http.StatusRequestEntityTooLarge && len(body) > maxPayload+bodySlack {
			// The body cap's answer (whitespace around the value made the
			// body too large), which is allowed: it must store nothing.
			live.close()
			if last, _, err := e.c.log.Last(ctx, user, true); err != nil || last.Seq != since {
				t.Fatalf("POST of a %d-byte body was refused (413) but %q's last seq is %d, was %d (%v)", len(body), user, last.Seq, since, err)
			}
			e.waitIdle(t)
			return
		}
		t.Fatalf("POST %s: %d %s, want 202", abbrev(body), status, abbrev(b))
	}
	if res.Routed != dispatcher.StatusRouted || res.Gateway != ca.Gateway || res.Duplicate || res.Seq <= since || res.ID == "" {
		t.Fatalf("POST %s: %s; want routed to %s, not a duplicate, a seq after %d", abbrev(body), b, ca.Gateway, since)
	}
	e.expectOnly(t, live, fmt.Sprintf("%q's socket", user), res, data)
	e.expectOnly(t, e.open(t, user, tok, ca, since), fmt.Sprintf("%q's socket resuming from the log", user), res, data)
}

// open dials the user's gateway, resuming after since, and checks the hello.
func (e *fuzzEnv) open(t *testing.T, user, tok string, ca connectAnswer, since uint64) *rawSocket {
	t.Helper()
	s := dialRaw(t, ca.URL, wire.ClientFrame{Type: wire.TypeAuth, Token: tok, Since: since, Epoch: e.c.log.Epoch(), Ring: ca.Ring})
	hello := s.waitFrames(t, 1, 10*time.Second, "hello")[0]
	if hello.err != nil || hello.f.Type != wire.TypeHello || hello.f.User != user || hello.f.Gateway != ca.Gateway || hello.f.Cursor != since {
		t.Fatalf("first frame for %q: %s (%v); want a hello from %s with cursor %d", user, abbrev(hello.raw), hello.err, ca.Gateway, since)
	}
	return s
}

// expectOnly fails unless s gets, after its hello, the notification res
// answered for carrying data, and nothing else. It closes s and waits until
// the gateways have let go of it.
func (e *fuzzEnv) expectOnly(t *testing.T, s *rawSocket, who string, res notifyResult, data []byte) {
	t.Helper()
	got := s.waitFrames(t, 2, 10*time.Second, "the notification")
	checkNotifications(t, who, got[1:2], []uint64{res.Seq}, [][]byte{data})
	if n := got[1].f; n.ID != res.ID {
		t.Fatalf("%s: notification %d has id %q; the 202 answer said %q", who, n.Seq, n.ID, res.ID)
	} else if _, err := wire.ParseTS(n.TS); err != nil {
		t.Fatalf("%s: notification %d: bad ts %q: %v", who, n.Seq, n.TS, err)
	}
	s.close()
	if got := s.got(); len(got) != 2 {
		t.Fatalf("%s got %d frames, want hello and one notification; the third: %s", who, len(got), abbrev(got[2].raw))
	}
	e.waitIdle(t)
}

// waitIdle waits until no gateway has a socket or a hub.
func (e *fuzzEnv) waitIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for id := range e.c.gws {
		for {
			m, err := e.c.nc.Request(wire.StatsSubject(id), nil, 5*time.Second)
			var st wire.GatewayStats
			if err == nil {
				err = json.Unmarshal(m.Data, &st)
			}
			if err == nil && st.Sockets == 0 && st.Users == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still has %d sockets and %d hubs after the input's socket closed (%v)", id, st.Sockets, st.Users, err)
			}
			time.Sleep(time.Millisecond) // polling under the deadline above
		}
	}
}

// notifyBody is a notify request for user with data written into it
// verbatim: json.Marshal would compact data and escape <, > and & in it.
func notifyBody(user string, data []byte) []byte {
	u, _ := json.Marshal(user) // a string always encodes (bad UTF-8 becomes U+FFFD)
	b := append([]byte(`{"user":`), u...)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}')
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// postNotify posts body to /v1/notify with the harness's API key.
func postNotify(t testing.TB, d *disp, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, d.url+"/v1/notify", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("POST /v1/notify: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST /v1/notify: reading the answer: %v", err)
	}
	return resp.StatusCode, resp.Header, b
}

type connectAnswer struct {
	Gateway string `json:"gateway"`
	URL     string `json:"url"`
	Ring    string `json:"ring"`
}

// connectUser asks the dispatcher where the token's user connects.
func connectUser(t testing.TB, d *disp, tok string) connectAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, d.url+"/v1/connect", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("POST /v1/connect: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ca connectAnswer
	if err := json.Unmarshal(b, &ca); resp.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("POST /v1/connect: %d %s", resp.StatusCode, b)
	}
	return ca
}

// frame is one message a rawSocket received: its bytes as the gateway wrote
// them and their decoding.
type frame struct {
	raw []byte
	f   wire.ServerFrame
	err error
}

// rawSocket is a WebSocket that keeps every frame's bytes, so a test can
// compare what the gateway wrote rather than what a decoder made of it.
// Its reader reports nothing to the test (it may outlive a fuzz input's T):
// decoding errors stay with their frames.
type rawSocket struct {
	c      *websocket.Conn
	more   chan struct{} // poked on every frame; capacity 1
	closed chan struct{}

	mu     sync.Mutex // guards frames
	frames []frame
}

// dialRaw opens a socket to url and sends a as its auth frame. The socket
// is closed when the test ends, if not before.
func dialRaw(t testing.TB, url string, a wire.ClientFrame) *rawSocket {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.SetReadLimit(1 << 20)
	s := &rawSocket{c: c, more: make(chan struct{}, 1), closed: make(chan struct{})}
	go s.read()
	t.Cleanup(s.close)
	if err := c.Write(ctx, websocket.MessageText, wire.Encode(a)); err != nil {
		t.Fatalf("auth frame: %v", err)
	}
	return s
}

func (s *rawSocket) read() {
	defer close(s.closed)
	for {
		_, b, err := s.c.Read(context.Background())
		if err != nil {
			return
		}
		f, err := wire.DecodeServerFrame(b)
		if err == nil && f.Type == wire.TypeCaughtUp {
			continue // where the backlog ends is TestStartChoices' business
		}
		s.mu.Lock()
		s.frames = append(s.frames, frame{raw: b, f: f, err: err})
		s.mu.Unlock()
		select {
		case s.more <- struct{}{}:
		default:
		}
	}
}

func (s *rawSocket) got() []frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]frame(nil), s.frames...)
}

// waitFrames waits until the socket has received n frames and returns them.
func (s *rawSocket) waitFrames(t testing.TB, n int, timeout time.Duration, what string) []frame {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		got := s.got()
		if len(got) >= n {
			return got
		}
		select {
		case <-s.more:
		case <-s.closed:
			if got := s.got(); len(got) >= n {
				return got
			}
			t.Fatalf("waiting for %s: the socket closed after %d frames: %s", what, len(got), rawList(got))
		case <-timer.C:
			t.Fatalf("timed out after %v waiting for %s; %d frames: %s", timeout, what, len(got), rawList(got))
		}
	}
}

// close closes the socket at once and waits for its reader.
func (s *rawSocket) close() {
	s.c.CloseNow()
	<-s.closed
}

func rawList(fs []frame) string {
	var parts []string
	for _, f := range fs {
		parts = append(parts, abbrev(f.raw))
	}
	return strings.Join(parts, ", ")
}

// abbrev shortens b for a failure message.
func abbrev(b []byte) string {
	if len(b) <= 200 {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("%q…(%d bytes)…%q", b[:120], len(b), b[len(b)-40:])
}

// lazyTB is the testing.TB a fuzz test's shared cluster is built with, so
// that the first input can build it and the fuzz test's end tear it down:
// inside the fuzz function F's methods panic, so cleanups and temporary
// directories are kept here and run from F's Cleanup. Failures and logs go
// to the input's T while it builds, to F otherwise.
type lazyTB struct {
	testing.TB // the F: Name, and reports at teardown

	mu       sync.Mutex // guards the following
	to       testing.TB
	cleanups []func()
}

func (l *lazyTB) report(to testing.TB) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.to = to
}

func (l *lazyTB) reporter() testing.TB {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.to == nil {
		return l.TB
	}
	return l.to
}

// teardown runs the cleanups, last first, as testing does.
func (l *lazyTB) teardown() {
	for {
		l.mu.Lock()
		n := len(l.cleanups)
		if n == 0 {
			l.mu.Unlock()
			return
		}
		fn := l.cleanups[n-1]
		l.cleanups = l.cleanups[:n-1]
		l.mu.Unlock()
		fn()
	}
}

func (l *lazyTB) Helper() {}

func (l *lazyTB) Cleanup(fn func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cleanups = append(l.cleanups, fn)
}

func (l *lazyTB) TempDir() string {
	dir, err := os.MkdirTemp("", "herald-fuzz-")
	if err != nil {
		l.reporter().Fatalf("TempDir: %v", err)
	}
	l.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (l *lazyTB) Error(args ...any)                 { l.reporter().Error(args...) }
func (l *lazyTB) Errorf(format string, args ...any) { l.reporter().Errorf(format, args...) }
func (l *lazyTB) Fatal(args ...any)                 { l.reporter().Fatal(args...) }
func (l *lazyTB) Fatalf(format string, args ...any) { l.reporter().Fatalf(format, args...) }
func (l *lazyTB) Fail()                             { l.reporter().Fail() }
func (l *lazyTB) FailNow()                          { l.reporter().FailNow() }
func (l *lazyTB) Failed() bool                      { return l.reporter().Failed() }
func (l *lazyTB) Log(args ...any)                   { l.reporter().Log(args...) }
func (l *lazyTB) Logf(format string, args ...any)   { l.reporter().Logf(format, args...) }
func (l *lazyTB) Skip(args ...any)                  { l.reporter().Skip(args...) }
func (l *lazyTB) Skipf(format string, args ...any)  { l.reporter().Skipf(format, args...) }
func (l *lazyTB) SkipNow()                          { l.reporter().SkipNow() }
func (l *lazyTB) Context() context.Context          { return context.Background() }
