// Package client is herald's publisher client: what a backend uses to send
// notifications through the dispatchers' HTTP API. It depends on the
// standard library only.
//
// It retries exactly as the API contract allows. Every notification carries
// an idempotency id (one is made when the caller gives none), so a retry
// after an unknown outcome, a 503, a dropped connection or a 429 stores it
// at most once; each retry goes to the next dispatcher URL, and a 429 waits
// out its Retry-After. When the deadline passes while the outcome is still
// unknown, the error wraps ErrUnknownOutcome and names the id: retrying with
// it later (within the dispatchers' duplicate window, 2 minutes) is safe.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Config configures a Client. URLs and APIKey are required.
type Config struct {
	// URLs are dispatcher base URLs (http://host:port). Requests go to them
	// in turn; a retry goes to the next.
	URLs []string
	// APIKey is sent as Authorization: Bearer.
	APIKey string
	// HTTPClient, if nil, is a client with a 10s timeout per request.
	HTTPClient *http.Client
	// Deadline bounds each call with its retries, unless the context's
	// deadline is sooner. If zero, 30s.
	Deadline time.Duration
	// BackoffBase and BackoffMax shape the full-jitter backoff between
	// retries. If zero, 100ms and 2s.
	BackoffBase, BackoffMax time.Duration
}

// Client publishes through herald's dispatchers. It is safe for concurrent
// use.
type Client struct {
	cfg  Config
	hc   *http.Client
	next atomic.Uint64 // round-robin over cfg.URLs
}

// New checks cfg and fills in defaults.
func New(cfg Config) (*Client, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("client: Config.URLs is empty")
	}
	for i, u := range cfg.URLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, fmt.Errorf("client: Config.URLs[%d] %q: want http(s)://host:port", i, u)
		}
		cfg.URLs[i] = strings.TrimRight(u, "/")
	}
	if cfg.APIKey == "" {
		return nil, errors.New("client: Config.APIKey is required")
	}
	if cfg.Deadline <= 0 {
		cfg.Deadline = 30 * time.Second
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = 100 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 2 * time.Second
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &Client{cfg: cfg, hc: hc}, nil
}

// ErrUnknownOutcome is wrapped by the error of a call that gave up while a
// notification may or may not have been stored. The *Error it comes with
// names the id to retry with.
var ErrUnknownOutcome = errors.New("herald: the outcome is unknown; retry with the same id")

// Error is an answer of the API that is not a success: its status and
// error code ("invalid_user", "rate_limited", "unknown_outcome", ...).
type Error struct {
	Status  int
	Code    string
	Message string
	// ID is the notification's id, when retrying with it is safe.
	ID string
	// Err is the transport error of a request that got no answer.
	Err error
}

func (e *Error) Error() string {
	switch {
	case e.Err != nil && e.ID != "":
		return fmt.Sprintf("herald: no answer (id %s): %v", e.ID, e.Err)
	case e.Err != nil:
		return fmt.Sprintf("herald: no answer: %v", e.Err)
	case e.ID != "":
		return fmt.Sprintf("herald: %d %s: %s (id %s)", e.Status, e.Code, e.Message, e.ID)
	}
	return fmt.Sprintf("herald: %d %s: %s", e.Status, e.Code, e.Message)
}

// Is makes an unresolved outcome match ErrUnknownOutcome.
func (e *Error) Is(target error) bool {
	return target == ErrUnknownOutcome && e.Code == "unknown_outcome"
}

func (e *Error) Unwrap() error { return e.Err }

// NewID returns a random idempotency id, as the client makes for a
// notification without one.
func NewID() string { return rand.Text() }

// safety is what a retry of a request may do.
type safety int

const (
	// idempotent: every request of the call may be repeated (an id makes
	// the notification land once; a read or an erasure is the same twice).
	idempotent safety = iota
	// once: the request must not be repeated unless it certainly did
	// nothing (a broadcast): it is retried only after a refused
	// connection, a 429 or a 503 "unavailable".
	once
)

// call sends method path with body (JSON, or nil) until it gets a definite
// answer or the deadline passes, decoding a 2xx answer into out. id names
// the notification for an unknown outcome.
func (c *Client) call(ctx context.Context, method, path string, body any, out any, s safety, id string) error {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return fmt.Errorf("herald: encoding the request: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Deadline)
	defer cancel()
	start := c.next.Add(1)
	var last *Error
	uncertain := false // a request of this call may have been carried out
	for attempt := 0; ; attempt++ {
		base := c.cfg.URLs[(start+uint64(attempt))%uint64(len(c.cfg.URLs))]
		status, header, resp, sent, err := c.do(ctx, method, base+path, b)
		var wait time.Duration
		switch {
		case err != nil:
			last = &Error{Err: err, ID: id}
			if sent {
				uncertain = true
				if s == once {
					return last
				}
			}
		case status >= 200 && status < 300:
			if out == nil {
				return nil
			}
			if err := json.Unmarshal(resp, out); err != nil {
				return fmt.Errorf("herald: decoding the answer: %w", err)
			}
			return nil
		default:
			last = apiError(status, resp, id)
			switch {
			case status == http.StatusTooManyRequests:
				wait = retryAfter(header, c.cfg.BackoffMax)
			case last.Code == "unknown_outcome":
				uncertain = true
				if s == once {
					return last
				}
			case last.Code == "unavailable":
			case status >= 500 && status != http.StatusInsufficientStorage && s == idempotent:
				uncertain = uncertain || status != http.StatusServiceUnavailable
			default:
				return last // the request is wrong, or the store is full: a retry cannot help
			}
		}
		if wait == 0 {
			wait = c.backoff(attempt)
		}
		// No attempt that the deadline would cut short: one cut short in
		// flight would leave the outcome unknown for nothing.
		if dl, _ := ctx.Deadline(); time.Until(dl) < wait+minAttempt {
			return giveUp(last, uncertain, id)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return giveUp(last, uncertain, id)
		case <-t.C:
		}
	}
}

// minAttempt is the least time left in which call still starts a retry.
const minAttempt = 100 * time.Millisecond

// giveUp is a call's error once it stops retrying: the outcome is unknown
// if any attempt may have been carried out.
func giveUp(last *Error, uncertain bool, id string) *Error {
	if uncertain && id != "" {
		return &Error{Status: http.StatusServiceUnavailable, Code: "unknown_outcome", ID: id,
			Message: fmt.Sprintf("gave up with the outcome unknown; retry with the same id; the last answer: %v", last)}
	}
	return last
}

// do sends one request. sent reports whether its headers were written: a
// request that failed before that never reached a dispatcher.
func (c *Client) do(ctx context.Context, method, url string, body []byte) (status int, h http.Header, b []byte, sent bool, err error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	var wrote atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { wrote.Store(true) }})
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return 0, nil, nil, false, err
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, nil, wrote.Load(), err
	}
	defer resp.Body.Close()
	b, err = io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, nil, nil, true, err
	}
	return resp.StatusCode, resp.Header, b, true, nil
}

func apiError(status int, body []byte, id string) *Error {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			ID      string `json:"id"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Code == "" {
		return &Error{Status: status, Code: "http_" + strconv.Itoa(status), Message: strings.TrimSpace(string(body)), ID: id}
	}
	if e.Error.ID != "" {
		id = e.Error.ID
	}
	return &Error{Status: status, Code: e.Error.Code, Message: e.Error.Message, ID: id}
}

// retryAfter is how long a 429 asks to wait (Retry-After, in seconds), at
// least 1s if it names none it can read, and at most a minute.
func retryAfter(h http.Header, fallback time.Duration) time.Duration {
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s >= 0 {
		return min(time.Duration(s)*time.Second, time.Minute)
	}
	return max(fallback, time.Second)
}

func (c *Client) backoff(attempt int) time.Duration {
	ceil := min(c.cfg.BackoffBase<<min(attempt, 20), c.cfg.BackoffMax)
	return time.Duration(mrand.Int64N(int64(ceil) + 1))
}
