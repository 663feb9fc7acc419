package dispatcher

import (
	"bytes"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/wire"
)

// usersRoute is the route label and pattern of a user's notifications: the
// user ID is one path segment, percent-encoded (IDs may hold '/', '%' or
// spaces).
const usersRoute = "/v1/users/{user}/notifications"

// History paging: the default and the most messages one page holds.
const (
	defaultHistory = 100
	maxHistory     = 1000
)

// userFromPath returns the user of a /v1/users/{user}/notifications path,
// read from the escaped path so that an encoded '/' stays in the ID; ok is
// false for any other path.
func userFromPath(escaped string) (user string, ok bool, err *Error) {
	rest, found := strings.CutPrefix(escaped, "/v1/users/")
	if !found {
		return "", false, nil
	}
	seg, found := strings.CutSuffix(rest, "/notifications")
	if !found || seg == "" || strings.Contains(seg, "/") {
		return "", false, nil
	}
	user, uerr := url.PathUnescape(seg)
	if uerr != nil {
		return "", true, errorf(CodeInvalidUser, "the user in the path is not percent-encoded properly: %v", uerr)
	}
	if verr := wire.ValidateUser(user); verr != nil {
		return "", true, &Error{Code: CodeInvalidUser, Message: verr.Error()}
	}
	return user, true, nil
}

// handleHistory serves GET /v1/users/{user}/notifications?after=SEQ&limit=N:
// the user's retained messages after seq, in seq order, as the frames a
// socket would get (notification, and gap where retention or an erasure
// dropped messages), a page at a time. The page's next_after is the
// after of the next page; more says whether there may be one.
func (d *Dispatcher) handleHistory(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("user")
	q := r.URL.Query()
	after, err := uintParam(q, "after", 0, 0)
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	limit, err := uintParam(q, "limit", defaultHistory, maxHistory)
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	if limit == 0 {
		d.writeError(w, r, errorf(CodeInvalidParameter, "limit=0: want 1..%d", maxHistory))
		return
	}
	l := d.inbox.Load()
	if l == nil {
		d.writeError(w, r, errorf(CodeUnavailable, "the log is not ready yet; retry later"))
		return
	}
	msgs, rerr := l.ReadAfter(r.Context(), user, after, int(limit)+1)
	if rerr != nil {
		d.writeError(w, r, &Error{Code: CodeUnavailable, Message: "the log cannot be read now; retry later", Err: rerr})
		return
	}
	more := len(msgs) > int(limit)
	msgs = msgs[:min(len(msgs), int(limit))]
	items, next := historyItems(l.Epoch(), after, msgs)
	var b bytes.Buffer
	b.WriteString(`{"user":`)
	b.Write(wire.Encode(user))
	b.WriteString(`,"epoch":`)
	b.Write(wire.Encode(l.Epoch()))
	b.WriteString(`,"items":[`)
	b.Write(bytes.Join(items, []byte(",")))
	b.WriteString(`],"next_after":`)
	b.WriteString(strconv.FormatUint(next, 10))
	b.WriteString(`,"more":`)
	b.WriteString(strconv.FormatBool(more))
	b.WriteString("}\n")
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	w.Write(b.Bytes())
}

// historyItems turns a page of the log into frames, by the chain rules a
// gateway applies for a socket resuming after after: a message whose
// predecessor is not the one before it follows a gap (unless no seq lies
// between), a message that cannot be put in a frame is a gap over it, and
// one whose ttl has passed, or that a newer one on the page with its
// collapse key replaces, is left out.
// It returns the frames and the seq the next page continues after.
func historyItems(epoch string, after uint64, msgs []inbox.Message) ([][]byte, uint64) {
	var items [][]byte
	var gap *wire.Gap
	addGap := func(from, next uint64) {
		if gap == nil {
			gap = &wire.Gap{Type: wire.TypeGap, Epoch: epoch, After: from}
		}
		gap.Next = next
	}
	flush := func() {
		if gap != nil {
			items = append(items, wire.Encode(*gap))
			gap = nil
		}
	}
	newest := map[string]uint64{}
	for _, m := range msgs {
		if m.Collapse != "" {
			newest[m.Collapse] = m.Seq
		}
	}
	now := time.Now()
	cursor := after
	for _, m := range msgs {
		if m.Prev != cursor && m.Seq != cursor+1 {
			addGap(cursor, m.Seq)
		}
		if (!m.Expires.IsZero() && now.After(m.Expires)) || (m.Collapse != "" && newest[m.Collapse] > m.Seq) {
			cursor = m.Seq // expired, or replaced by a newer one on this page: as a socket would, skipped without a gap
			continue
		}
		frame, err := wire.EncodeNotification(m.Seq, m.ID, m.Data, m.TS)
		if err != nil {
			addGap(cursor, m.Seq+1)
		} else {
			flush()
			items = append(items, frame)
		}
		cursor = m.Seq
	}
	flush()
	return items, cursor
}

// uintParam reads an unsigned query parameter: def when absent, at most
// max unless max is 0.
func uintParam(q url.Values, name string, def, max uint64) (uint64, *Error) {
	if !q.Has(name) {
		return def, nil
	}
	v, err := strconv.ParseUint(q.Get(name), 10, 64)
	if err != nil || (max > 0 && v > max) {
		if max > 0 {
			return 0, errorf(CodeInvalidParameter, "%s=%q: want an integer 0..%d", name, q.Get(name), max)
		}
		return 0, errorf(CodeInvalidParameter, "%s=%q: want a non-negative integer", name, q.Get(name))
	}
	return v, nil
}

// erasedResult is the answer to an erasure.
type erasedResult struct {
	User string `json:"user"`
	// Through is the user's last seq when the erasure began (0 if the log
	// held nothing): every message up to it is gone.
	Through uint64 `json:"erased_through"`
	Purged  uint64 `json:"purged"`
	Epoch   string `json:"epoch"`
}

// handleErase serves DELETE /v1/users/{user}/notifications: it erases the
// user's log through its last seq, then rings the user's owners with an
// erase doorbell, so their hubs drop what they hold and the user's sockets
// move past it after a gap. A lost doorbell is repaired by anti-entropy,
// which finds the log emptied.
func (d *Dispatcher) handleErase(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("user")
	l := d.inbox.Load()
	if l == nil {
		d.writeError(w, r, errorf(CodeUnavailable, "the log is not ready yet; nothing was erased, retry later"))
		return
	}
	e, err := l.Erase(r.Context(), user)
	if err != nil {
		d.writeError(w, r, &Error{Code: CodeUnavailable, Message: "the erasure may not have run; retrying it is safe", Err: err})
		return
	}
	if e.Through > 0 {
		d.ringOwner(r.Context(), wire.Doorbell{User: user, Seq: e.Through, Epoch: e.Epoch, Erased: true}, 0)
	}
	writeJSON(w, http.StatusOK, erasedResult{User: user, Through: e.Through, Purged: e.Purged, Epoch: e.Epoch})
}
