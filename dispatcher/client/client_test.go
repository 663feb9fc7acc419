package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// fake is a dispatcher that answers each request with the next of its
// answers (the last one repeats) and records what it got.
type fake struct {
	mu      sync.Mutex
	answers []func(w http.ResponseWriter)
	got     []map[string]any
	at      []time.Time
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var body map[string]any
	json.Unmarshal(b, &body)
	f.mu.Lock()
	n := len(f.got)
	f.got = append(f.got, body)
	f.at = append(f.at, time.Now())
	a := f.answers[min(n, len(f.answers)-1)]
	f.mu.Unlock()
	a(w)
}

func answer(status int, body string, headers ...string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

const accepted = `{"id":"x","seq":7,"gateway":"gw-1","status":"routed","duplicate":false}`

func newFake(t *testing.T, answers ...func(http.ResponseWriter)) (*fake, string) {
	f := &fake{answers: answers}
	s := httptest.NewServer(f)
	t.Cleanup(s.Close)
	return f, s.URL
}

// deadURL is a URL nothing listens on: a connection to it is refused.
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

func newClient(t *testing.T, urls ...string) *Client {
	c, err := New(Config{URLs: urls, APIKey: "k", BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond, Deadline: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRetriesKeepTheID: an unknown outcome, a 503 and a dropped connection
// are retried with the same id, on the next dispatcher; a refused
// connection fails over; the first 2xx ends it.
func TestRetriesKeepTheID(t *testing.T) {
	f, good := newFake(t,
		answer(503, `{"error":{"code":"unknown_outcome","message":"m","id":"ignored"}}`),
		answer(503, `{"error":{"code":"unavailable","message":"m"}}`),
		func(w http.ResponseWriter) { // the connection drops mid-answer
			hj, _ := w.(http.Hijacker)
			conn, _, _ := hj.Hijack()
			conn.Close()
		},
		answer(202, accepted))
	c := newClient(t, deadURL(t), good)
	res, err := c.Notify(context.Background(), Notification{User: "alice", Data: map[string]int{"n": 1}})
	if err != nil || res.Seq != 7 {
		t.Fatalf("Notify = %+v, %v", res, err)
	}
	if len(f.got) != 4 {
		t.Fatalf("%d requests reached the dispatcher, want 4", len(f.got))
	}
	id, _ := f.got[0]["id"].(string)
	for i, b := range f.got {
		if b["id"] != id || id == "" || b["user"] != "alice" {
			t.Fatalf("request %d: %v; want the same made id %q each time", i, b, id)
		}
	}
}

// TestRetryAfter: a 429 waits out its Retry-After before the retry.
func TestRetryAfter(t *testing.T) {
	f, u := newFake(t, answer(429, `{"error":{"code":"rate_limited","message":"m"}}`, "Retry-After", "1"), answer(202, accepted))
	c := newClient(t, u)
	if _, err := c.Notify(context.Background(), Notification{User: "a", ID: "i", Data: 1}); err != nil {
		t.Fatal(err)
	}
	if len(f.at) != 2 || f.at[1].Sub(f.at[0]) < time.Second {
		t.Fatalf("retried after %v, want Retry-After's 1s", f.at[1].Sub(f.at[0]))
	}
}

// TestNoRetryOfBadRequests: a refusal of the request itself is returned at
// once, with its code.
func TestNoRetryOfBadRequests(t *testing.T) {
	for _, a := range []string{`{"error":{"code":"invalid_user","message":"m"}}`, `{"error":{"code":"storage_full","message":"m"}}`} {
		status := 400
		if a[19] == 's' {
			status = 507
		}
		f, u := newFake(t, answer(status, a))
		_, err := newClient(t, u).Notify(context.Background(), Notification{User: "a", Data: 1})
		var e *Error
		if !errors.As(err, &e) || e.Status != status || len(f.got) != 1 || errors.Is(err, ErrUnknownOutcome) {
			t.Fatalf("%s: %v after %d requests; want it returned at once", a, err, len(f.got))
		}
	}
}

// TestUnresolvedOutcome: a call whose deadline passes with the outcome
// still unknown says so, with the id to retry with; one that was only
// refused does not.
func TestUnresolvedOutcome(t *testing.T) {
	_, u := newFake(t, answer(503, `{"error":{"code":"unknown_outcome","message":"m"}}`))
	c := newClient(t, u)
	_, err := c.Notify(context.Background(), Notification{User: "a", ID: "mine", Data: 1})
	var e *Error
	if !errors.Is(err, ErrUnknownOutcome) || !errors.As(err, &e) || e.ID != "mine" {
		t.Fatalf("err %v; want ErrUnknownOutcome naming id mine", err)
	}
	_, u = newFake(t, answer(503, `{"error":{"code":"unavailable","message":"m"}}`))
	_, err = newClient(t, u).Notify(context.Background(), Notification{User: "a", ID: "mine", Data: 1})
	if err == nil || errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("err %v; want unavailable, not unknown", err)
	}
	_, err = newClient(t, deadURL(t)).Notify(context.Background(), Notification{User: "a", ID: "mine", Data: 1})
	if err == nil || errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("err %v; refused connections only: want a definite failure", err)
	}
}

// TestBroadcastIsNotRepeated: a broadcast has no id, so an answer that may
// mean it went out ends the call; a refusal is retried.
func TestBroadcastIsNotRepeated(t *testing.T) {
	f, u := newFake(t, answer(503, `{"error":{"code":"unknown_outcome","message":"m"}}`), answer(202, `{}`))
	if err := newClient(t, u).Broadcast(context.Background(), "x"); err == nil || len(f.got) != 1 {
		t.Fatalf("broadcast: %v after %d requests; want the unknown outcome after one", err, len(f.got))
	}
	f, u = newFake(t, answer(503, `{"error":{"code":"unavailable","message":"m"}}`), answer(202, `{"status":"broadcast"}`))
	if err := newClient(t, deadURL(t), u).Broadcast(context.Background(), "x"); err != nil || len(f.got) != 2 {
		t.Fatalf("broadcast: %v after %d requests; want a retry of the refusals", err, len(f.got))
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{{}, {URLs: []string{"http://d"}}, {URLs: []string{"ftp://d"}, APIKey: "k"}, {URLs: []string{"http://"}, APIKey: "k"}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
