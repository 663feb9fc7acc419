package dispatcher

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/wire"
	"golang.org/x/sync/errgroup"
)

// Statuses of an accepted notification.
const (
	StatusRouted = "routed" // stored, and the owning gateway was rung
	StatusStored = "stored" // stored; no gateway is in the ring to ring
)

// notifyResult is the 202 answer for one notification.
type notifyResult struct {
	ID        string `json:"id"`
	Seq       uint64 `json:"seq"`
	Gateway   string `json:"gateway"`
	Status    string `json:"status"`
	Duplicate bool   `json:"duplicate"`
	Delivery  string `json:"delivery,omitempty"`
}

// defaultWait is ?timeout= of wait=delivered when none is given.
const defaultWait = 5 * time.Second

// batchConcurrency bounds the users of one batch appended at once.
const batchConcurrency = 16

// handleNotify serves POST /v1/notify.
func (d *Dispatcher) handleNotify(w http.ResponseWriter, r *http.Request) {
	res, err := d.serveNotify(w, r)
	if err == errAnswered {
		return // a fan-out, counted per user; or refused by the rate limit
	}
	d.count(res, err)
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, res)
}

func (d *Dispatcher) serveNotify(w http.ResponseWriter, r *http.Request) (notifyResult, *Error) {
	wait, err := d.parseWait(r.URL.Query())
	if err != nil {
		return notifyResult{}, err
	}
	body, err := readJSONBody(w, r, int64(d.cfg.MaxPayload+maxBodyOverhead+maxFanoutOverhead))
	if err != nil {
		return notifyResult{}, err
	}
	n, err := decodeNotify(body, d.cfg.MaxPayload)
	if err != nil {
		return notifyResult{}, err
	}
	if n.Users != nil {
		return notifyResult{}, d.fanout(w, r, n, wait)
	}
	if len(body) > d.cfg.MaxPayload+maxBodyOverhead {
		return notifyResult{}, errorf(CodePayloadTooLarge, "the body is %d bytes, at most %d", len(body), d.cfg.MaxPayload+maxBodyOverhead)
	}
	return d.notify(r.Context(), n, wait)
}

// errAnswered is fanout's way of saying it has written the answer itself.
var errAnswered = &Error{Code: "answered"}

// fanoutResult is one user's line in a fan-out's answer: the notifyResult
// or the error, with the user.
type fanoutResult struct {
	User string `json:"user"`
	*notifyResult
	Error *errorDetail `json:"error,omitempty"`
}

// fanout appends one notification to each of n.Users' logs and answers
// 202 with a result per user, in the order given: the same data and id
// for each (the id is scoped to the user, so a retry of the whole fan-out
// with it stores nothing twice). Each user is appended to once, so each
// user's order is that of the requests; users go in parallel,
// batchConcurrency at a time. Like a batch, it is charged one token of the
// API key's rate per user, and waits for no delivery.
func (d *Dispatcher) fanout(w http.ResponseWriter, r *http.Request, n notification, wait time.Duration) *Error {
	if wait > 0 {
		return errorf(CodeInvalidParameter, "wait=delivered waits for one user: not with users")
	}
	key := keyOf(r)
	if !d.allow(w, r, key, min(len(n.Users), key.limiter.Burst())-1) {
		return errAnswered
	}
	if n.ID == "" {
		n.ID = crand.Text() // one id for every user, so Append's retries are safe
	}
	results := make([]fanoutResult, len(n.Users))
	var g errgroup.Group
	g.SetLimit(batchConcurrency)
	for i, u := range n.Users {
		g.Go(func() error {
			one := n
			one.User, one.Users = u, nil
			res, err := d.notify(r.Context(), one, 0)
			d.count(res, err)
			results[i].User = u
			if err != nil {
				body := err.body().Error
				results[i].Error = &body
			} else {
				results[i].notifyResult = &res
			}
			return nil
		})
	}
	g.Wait()
	writeJSON(w, http.StatusAccepted, struct {
		ID      string         `json:"id"`
		Results []fanoutResult `json:"results"`
	}{n.ID, results})
	return errAnswered
}

// parseWait reads ?wait=delivered&timeout=: zero means do not wait. A
// timeout above MaxWait is capped; a malformed one is refused rather than
// silently replaced.
func (d *Dispatcher) parseWait(q url.Values) (time.Duration, *Error) {
	mode, ts := q.Get("wait"), q.Get("timeout")
	switch {
	case mode == "" && ts == "":
		return 0, nil
	case mode == "":
		return 0, errorf(CodeInvalidParameter, "timeout is only meaningful with wait=delivered")
	case mode != "delivered":
		return 0, errorf(CodeInvalidParameter, "wait=%q: the only mode is wait=delivered", mode)
	case ts == "":
		return min(defaultWait, d.cfg.MaxWait), nil
	}
	t, err := time.ParseDuration(ts)
	if err != nil || t <= 0 {
		return 0, errorf(CodeInvalidParameter, "timeout=%q: want a positive duration such as 5s or 500ms, at most %v", ts, d.cfg.MaxWait)
	}
	return min(t, d.cfg.MaxWait), nil
}

// notify appends n to its user's log and rings the owning gateway.
//
// The append runs to its own deadline even if the client goes away: an
// append cut short would have an unknown outcome, and the doorbell after it
// should still be rung. A delivery wait ends with the request.
func (d *Dispatcher) notify(ctx context.Context, n notification, wait time.Duration) (notifyResult, *Error) {
	l := d.inbox.Load()
	if l == nil {
		return notifyResult{}, errorf(CodeUnavailable, "the log is not ready yet; nothing was stored, retry later")
	}
	if n.ID == "" {
		// Made here, once, so that Append's own retries after an unknown
		// outcome land on the same message.
		n.ID = crand.Text()
	}
	var lim inbox.Limits
	if n.TTL > 0 {
		lim.Expires = time.Now().Add(n.TTL)
	}
	lim.Collapse = n.Collapse
	a, err := l.AppendWith(context.WithoutCancel(ctx), n.User, n.ID, n.Data, lim)
	if err != nil {
		return notifyResult{}, appendError(err, n.ID)
	}
	db := wire.Doorbell{User: n.User, Seq: a.Seq, Epoch: a.Epoch}
	// Without a known prev (a duplicate, or an append whose unanswered
	// attempt had landed) the doorbell carries no content: the gateway
	// reads the log rather than trust a made-up prev, which could skip
	// messages.
	if a.PrevKnown {
		db.HasContent, db.Prev, db.ID, db.TS, db.Data = true, a.Prev, n.ID, a.TS, n.Data
		db.Expires, db.Collapse = lim.Expires, lim.Collapse
	}
	rg := d.ringOwner(ctx, db, wait)
	res := notifyResult{ID: n.ID, Seq: a.Seq, Gateway: rg.gateway, Status: StatusRouted, Duplicate: a.Duplicate, Delivery: rg.delivery}
	if rg.gateway == "" {
		res.Status = StatusStored
	}
	return res, nil
}

// count records a notification's result: its status, or its error code.
func (d *Dispatcher) count(res notifyResult, err *Error) {
	if err != nil {
		d.metrics.notifications.WithLabelValues(string(err.Code)).Inc()
		return
	}
	d.metrics.notifications.WithLabelValues(res.Status).Inc()
	if res.Duplicate {
		d.metrics.duplicates.Inc()
	}
}

// handleBatch serves POST /v1/notify/batch: each item is validated and
// appended on its own, and the answer lists the results in request order.
func (d *Dispatcher) handleBatch(w http.ResponseWriter, r *http.Request) {
	if q := r.URL.Query(); q.Has("wait") || q.Has("timeout") {
		d.fail(w, r, errorf(CodeInvalidParameter, "wait=delivered is only supported by /v1/notify"))
		return
	}
	limit := int64(d.cfg.MaxBatch)*int64(d.cfg.MaxPayload+maxBodyOverhead) + 1024
	body, err := readJSONBody(w, r, limit)
	if err != nil {
		d.fail(w, r, err)
		return
	}
	items, err := decodeBatch(body, d.cfg.MaxBatch)
	if err != nil {
		d.fail(w, r, err)
		return
	}
	// The key paid one notification to get here; now the rest, up to its
	// burst in all: a batch larger than the burst is charged the whole
	// burst, so it is slowed down rather than refused forever.
	key := keyOf(r)
	if !d.allow(w, r, key, min(len(items), key.limiter.Burst())-1) {
		return
	}
	writeJSON(w, http.StatusAccepted, struct {
		Results []any `json:"results"`
	}{d.notifyBatch(r.Context(), items)})
}

// fail answers a request-level error of a batch, counted like a single
// notification's.
func (d *Dispatcher) fail(w http.ResponseWriter, r *http.Request, err *Error) {
	d.count(notifyResult{}, err)
	d.writeError(w, r, err)
}

// notifyBatch appends the items, results in item order: a notifyResult or
// an errorBody each. A user's items are appended one after another in
// request order, so one batch keeps each user's order; different users go
// in parallel, batchConcurrency at a time.
//
// Once an item of a user is refused or its append fails, the user's later
// items are not tried:
// had they been stored, the caller's retry of the failed one would land
// after them, out of order. This also bounds a batch during an outage to
// about one append timeout per batchConcurrency users, well within the
// server's write timeout.
func (d *Dispatcher) notifyBatch(ctx context.Context, items []json.RawMessage) []any {
	results := make([]any, len(items))
	ns := make([]notification, len(items))
	bad := make([]*Error, len(items)) // refused items of a known user
	byUser := map[string][]int{}
	var users []string
	for i, raw := range items {
		n, err := decodeNotify(raw, d.cfg.MaxPayload)
		if err == nil && n.Users != nil {
			err = errorf(CodeInvalidUser, "users (a fan-out) is for POST /v1/notify, not a batch item")
		}
		if err != nil && n.User == "" {
			d.count(notifyResult{}, err)
			results[i] = err.body()
			continue
		}
		ns[i], bad[i] = n, err
		if _, ok := byUser[n.User]; !ok {
			users = append(users, n.User)
		}
		byUser[n.User] = append(byUser[n.User], i)
	}
	var g errgroup.Group
	g.SetLimit(batchConcurrency)
	for _, u := range users {
		g.Go(func() error {
			var failed *Error
			for _, i := range byUser[u] {
				var (
					res notifyResult
					err *Error
				)
				switch {
				case failed != nil:
					err = errorf(CodeUnavailable, "not attempted: an earlier notification for this user in the batch failed (%s); nothing was stored, retry them in order", failed.Code)
				case bad[i] != nil:
					err, failed = bad[i], bad[i]
				default:
					if res, err = d.notify(ctx, ns[i], 0); err != nil {
						failed = err
					}
				}
				d.count(res, err)
				if err != nil {
					results[i] = err.body()
				} else {
					results[i] = res
				}
			}
			return nil
		})
	}
	g.Wait()
	return results
}
