package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// Notification is one notification for one user. Data is any value that
// encodes as JSON (a json.RawMessage goes as it is); ID, if empty, is made
// by the client, so that retries are safe. TTL, in seconds, if set, is how
// long it may be delivered or replayed; Collapse, if set, is its collapse
// key: a device that has not yet received an older notification with the
// same key gets only the newest.
type Notification struct {
	User     string `json:"user"`
	ID       string `json:"id"`
	Data     any    `json:"data"`
	TTL      int    `json:"ttl,omitempty"`
	Collapse string `json:"collapse,omitempty"`
}

// Result is the dispatcher's answer to an accepted notification.
type Result struct {
	ID        string `json:"id"`
	Seq       uint64 `json:"seq"`
	Gateway   string `json:"gateway"`
	Status    string `json:"status"` // "routed", or "stored" when no gateway is in the ring
	Duplicate bool   `json:"duplicate"`
	// Delivery is set by NotifyAndWait: "delivered" (a socket of the user
	// acknowledged it), "offline" (the user has no socket) or "timeout".
	Delivery string `json:"delivery,omitempty"`
}

// Notify stores a notification in its user's log and rings the user's
// gateway; it returns once the notification is stored.
func (c *Client) Notify(ctx context.Context, n Notification) (Result, error) {
	return c.notify(ctx, n, "")
}

// NotifyAndWait is Notify that also waits, up to wait (at most 30s), until
// a socket of the user has acknowledged the notification.
func (c *Client) NotifyAndWait(ctx context.Context, n Notification, wait time.Duration) (Result, error) {
	if wait <= 0 {
		return Result{}, errors.New("herald: NotifyAndWait needs a positive wait")
	}
	return c.notify(ctx, n, "?wait=delivered&timeout="+url.QueryEscape(wait.String()))
}

func (c *Client) notify(ctx context.Context, n Notification, query string) (Result, error) {
	if n.ID == "" {
		n.ID = NewID()
	}
	var res Result
	err := c.call(ctx, "POST", "/v1/notify"+query, n, &res, idempotent, n.ID)
	return res, err
}

// UserResult is one user's outcome in NotifyMany or one item's in Batch:
// the Result, or Err.
type UserResult struct {
	User string
	Result
	Err *Error
}

// NotifyMany stores the same notification n (one id, n.User unused) in
// each user's log: up to 1000 users, each once. The error is the whole
// request's; each user's own outcome is in its UserResult, in the order
// given. Retrying the users that failed with the same id is safe.
func (c *Client) NotifyMany(ctx context.Context, users []string, n Notification) ([]UserResult, error) {
	if n.ID == "" {
		n.ID = NewID()
	}
	var answer struct {
		Results []struct {
			User string `json:"user"`
			Result
			Error *apiErrorBody `json:"error"`
		} `json:"results"`
	}
	body := struct {
		Users    []string `json:"users"`
		ID       string   `json:"id"`
		Data     any      `json:"data"`
		TTL      int      `json:"ttl,omitempty"`
		Collapse string   `json:"collapse,omitempty"`
	}{users, n.ID, n.Data, n.TTL, n.Collapse}
	if err := c.call(ctx, "POST", "/v1/notify", body, &answer, idempotent, n.ID); err != nil {
		return nil, err
	}
	out := make([]UserResult, len(answer.Results))
	for i, r := range answer.Results {
		out[i] = UserResult{User: r.User, Result: r.Result, Err: r.Error.err(n.ID)}
	}
	return out, nil
}

// Batch stores up to 100 notifications, each for its own user (the same
// user may appear several times: its order is kept). Each item's outcome is
// in its UserResult, in the order given.
func (c *Client) Batch(ctx context.Context, ns []Notification) ([]UserResult, error) {
	items := make([]Notification, len(ns))
	for i, n := range ns {
		if n.ID == "" {
			n.ID = NewID()
		}
		items[i] = n
	}
	var answer struct {
		Results []json.RawMessage `json:"results"`
	}
	body := struct {
		Notifications []Notification `json:"notifications"`
	}{items}
	if err := c.call(ctx, "POST", "/v1/notify/batch", body, &answer, idempotent, ""); err != nil {
		return nil, err
	}
	if len(answer.Results) != len(items) {
		return nil, fmt.Errorf("herald: %d results for %d notifications", len(answer.Results), len(items))
	}
	out := make([]UserResult, len(items))
	for i, raw := range answer.Results {
		var r struct {
			Result
			Error *apiErrorBody `json:"error"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, fmt.Errorf("herald: decoding result %d: %w", i, err)
		}
		out[i] = UserResult{User: items[i].User, Result: r.Result, Err: r.Error.err(items[i].ID)}
	}
	return out, nil
}

type apiErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	ID      string `json:"id"`
}

func (b *apiErrorBody) err(id string) *Error {
	if b == nil {
		return nil
	}
	return &Error{Code: b.Code, Message: b.Message, ID: id}
}

// Broadcast sends data to every socket open now, on every gateway. It is
// live-only (nothing is stored) and has no id, so it is retried only when
// it certainly was not sent.
func (c *Client) Broadcast(ctx context.Context, data any) error {
	return c.call(ctx, "POST", "/v1/broadcast", struct {
		Data any `json:"data"`
	}{data}, nil, once, "")
}

// Item is one entry of a user's history: a notification, or a gap where
// retention or an erasure dropped messages (between After and Next).
type Item struct {
	Type  string          `json:"type"` // "notification" or "gap"
	Seq   uint64          `json:"seq,omitempty"`
	ID    string          `json:"id,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
	TS    string          `json:"ts,omitempty"`
	After uint64          `json:"after,omitempty"`
	Next  uint64          `json:"next,omitempty"`
}

// Page is a page of a user's history.
type Page struct {
	User      string `json:"user"`
	Epoch     string `json:"epoch"`
	Items     []Item `json:"items"`
	NextAfter uint64 `json:"next_after"`
	More      bool   `json:"more"`
}

// History reads up to limit (1..1000; 0 for the dispatcher's 100) of the
// user's retained notifications after seq after, in seq order. Call it
// again with the page's NextAfter while More is set.
func (c *Client) History(ctx context.Context, user string, after uint64, limit int) (Page, error) {
	q := url.Values{"after": {strconv.FormatUint(after, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var p Page
	err := c.call(ctx, "GET", userPath(user)+"?"+q.Encode(), nil, &p, idempotent, "")
	return p, err
}

// Erased is the answer to Erase.
type Erased struct {
	User    string `json:"user"`
	Through uint64 `json:"erased_through"`
	Purged  uint64 `json:"purged"`
	Epoch   string `json:"epoch"`
}

// Erase erases every stored notification of the user, up to the log's last
// seq when it runs; the user's open sockets are told with a gap.
func (c *Client) Erase(ctx context.Context, user string) (Erased, error) {
	var e Erased
	err := c.call(ctx, "DELETE", userPath(user), nil, &e, idempotent, "")
	return e, err
}

func userPath(user string) string { return "/v1/users/" + url.PathEscape(user) + "/notifications" }
