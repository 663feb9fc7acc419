package dispatcher

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/heraldpush/herald/gateway/wire"
)

// Request decoding. Every decoder here takes untrusted bytes and is strict:
// one JSON object, no unknown fields (a typo such as "date" for "data" must
// not store a notification without its content), nothing after it, and the
// whole body valid UTF-8 (the JSON decoder would otherwise replace bad bytes
// in a user ID, silently addressing someone else, and a gateway could not
// send invalid UTF-8 in a WebSocket text frame).

// notification is a validated notify request.
type notification struct {
	User string
	// Users, when set instead of User, are the users a fan-out notifies,
	// each once, in the order given.
	Users []string
	// ID is the caller's idempotency key, or empty when it sent none (notify
	// makes one then).
	ID   string
	Data json.RawMessage
	// TTL, if set, is how long the notification may be delivered or
	// replayed; Collapse is its collapse key ("": none).
	TTL      time.Duration
	Collapse string
}

type notifyRequest struct {
	User     *string         `json:"user"`
	Users    *[]string       `json:"users"`
	Data     json.RawMessage `json:"data"`
	ID       *string         `json:"id"`
	TTL      json.RawMessage `json:"ttl"`
	Collapse *string         `json:"collapse"`
}

// MaxTTL bounds a notification's ttl: longer than the log keeps anything
// by default (7 days) is pointless, and a year is plainly a mistake.
const MaxTTL = 30 * 24 * time.Hour

// MaxFanout bounds the users of one fan-out ("users" in POST /v1/notify).
const MaxFanout = 1000

// decodeNotify decodes and validates one notification: a notify body or one
// item of a batch. data may be any JSON value except null, at most
// maxPayload bytes as sent. When the user is valid but the rest is not, the
// error comes with the user, so a batch can keep that user's order.
func decodeNotify(b []byte, maxPayload int) (notification, *Error) {
	var req notifyRequest
	if err := decodeStrict(b, &req); err != nil {
		return notification{}, err
	}
	var n notification
	if req.Users != nil {
		users, err := checkUsers(req.User, *req.Users)
		if err != nil {
			return notification{}, err
		}
		n.Users = users
	} else {
		user, err := checkUser(req.User)
		if err != nil {
			return notification{}, err
		}
		n.User = user
	}
	if req.ID != nil {
		if err := wire.ValidateID(*req.ID); err != nil {
			return notification{User: n.User}, errorf(CodeInvalidID, "%v", err)
		}
		n.ID = *req.ID
	}
	if req.TTL != nil {
		secs, perr := strconv.ParseInt(string(req.TTL), 10, 64) // not "5", 5.0 or 5e0: whole seconds
		if perr != nil || secs < 1 || time.Duration(secs)*time.Second > MaxTTL {
			return notification{User: n.User}, errorf(CodeInvalidTTL, "ttl %s: want whole seconds, 1..%d", req.TTL, int64(MaxTTL/time.Second))
		}
		n.TTL = time.Duration(secs) * time.Second
	}
	if req.Collapse != nil {
		if err := wire.ValidateCollapse(*req.Collapse); err != nil {
			return notification{User: n.User}, errorf(CodeInvalidCollapse, "%v", err)
		}
		n.Collapse = *req.Collapse
	}
	data, err := checkData(req.Data, maxPayload)
	if err != nil {
		return notification{User: n.User}, err
	}
	n.Data = data
	return n, nil
}

// checkData checks the data of a notification or a broadcast. JSON null is
// refused with a missing field: a notification without content is a caller's
// bug far more often than a message.
func checkData(data json.RawMessage, maxPayload int) (json.RawMessage, *Error) {
	switch {
	case len(data) == 0:
		return nil, errorf(CodeInvalidData, "data is required: any JSON value except null")
	case string(data) == "null":
		return nil, errorf(CodeInvalidData, "data is null: send any other JSON value")
	case len(data) > maxPayload:
		return nil, errorf(CodePayloadTooLarge, "data is %d bytes, at most %d", len(data), maxPayload)
	}
	return data, nil
}

// batchRequest is a batch body; the items are decoded one by one so that
// one bad item fails only itself.
type batchRequest struct {
	Notifications *[]json.RawMessage `json:"notifications"`
}

// decodeBatch decodes a batch body into its raw items.
func decodeBatch(b []byte, maxBatch int) ([]json.RawMessage, *Error) {
	var req batchRequest
	if err := decodeStrict(b, &req); err != nil {
		return nil, err
	}
	if req.Notifications == nil {
		return nil, errorf(CodeInvalidJSON, `"notifications" is required: an array of notifications`)
	}
	items := *req.Notifications
	if len(items) > maxBatch {
		return nil, errorf(CodeBatchTooLarge, "%d notifications in one batch, at most %d", len(items), maxBatch)
	}
	return items, nil
}

type broadcastRequest struct {
	Data json.RawMessage `json:"data"`
}

func decodeBroadcast(b []byte, maxPayload int) (json.RawMessage, *Error) {
	var req broadcastRequest
	if err := decodeStrict(b, &req); err != nil {
		return nil, err
	}
	return checkData(req.Data, maxPayload)
}

type devTokenRequest struct {
	User *string `json:"user"`
}

func decodeDevToken(b []byte) (string, *Error) {
	var req devTokenRequest
	if err := decodeStrict(b, &req); err != nil {
		return "", err
	}
	return checkUser(req.User)
}

// checkUsers checks a fan-out's users: 1..MaxFanout valid IDs, each once
// (a user named twice would get the notification twice, or with one id
// only once: either way not what the caller meant), and no user field.
func checkUsers(user *string, users []string) ([]string, *Error) {
	switch {
	case user != nil:
		return nil, errorf(CodeInvalidUser, "user and users together: send one of them")
	case len(users) == 0:
		return nil, errorf(CodeInvalidUser, "users is empty: name 1..%d users", MaxFanout)
	case len(users) > MaxFanout:
		return nil, errorf(CodeBatchTooLarge, "%d users in one fan-out, at most %d", len(users), MaxFanout)
	}
	seen := make(map[string]bool, len(users))
	for i, u := range users {
		if err := wire.ValidateUser(u); err != nil {
			return nil, errorf(CodeInvalidUser, "users[%d]: %v", i, err)
		}
		if seen[u] {
			return nil, errorf(CodeInvalidUser, "users[%d]: %q is named twice", i, u)
		}
		seen[u] = true
	}
	return users, nil
}

// checkUser checks a request's user field, which is required.
func checkUser(user *string) (string, *Error) {
	if user == nil {
		return "", errorf(CodeInvalidUser, "user is required")
	}
	if err := wire.ValidateUser(*user); err != nil {
		return "", errorf(CodeInvalidUser, "%v", err)
	}
	return *user, nil
}

// fieldCodes names the error of a field whose JSON has the wrong type, so
// {"user": 5} is an invalid user rather than a generic JSON error.
var fieldCodes = map[string]Code{"user": CodeInvalidUser, "users": CodeInvalidUser, "id": CodeInvalidID, "ttl": CodeInvalidTTL, "collapse": CodeInvalidCollapse}

// decodeStrict decodes exactly one JSON object into v, refusing unknown
// fields and anything after the object.
func decodeStrict(b []byte, v any) *Error {
	if !utf8.Valid(b) {
		return errorf(CodeInvalidJSON, "the body is not valid UTF-8")
	}
	trimmed := bytes.TrimLeft(b, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return errorf(CodeInvalidJSON, "the body must be a JSON object")
	}
	d := json.NewDecoder(bytes.NewReader(trimmed))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			if c, ok := fieldCodes[te.Field]; ok {
				return errorf(c, "%s must be a JSON string, not %s", te.Field, te.Value)
			}
		}
		return errorf(CodeInvalidJSON, "bad JSON: %v", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return errorf(CodeInvalidJSON, "bad JSON: data after the object")
	}
	return checkKeys(trimmed, v)
}

// checkKeys refuses an object whose keys are not spelled exactly as v's
// fields, or that names one twice. encoding/json matches keys without
// regard to case and lets the last of two win, so {"user":"alice",
// "USER":"bob"} would notify bob while a proxy or log that reads the first
// key sees alice.
func checkKeys(b []byte, v any) *Error {
	known := map[string]bool{}
	t := reflect.TypeOf(v).Elem()
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" {
			known[name] = true
		}
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.Token() // {, checked by the decode before
	seen := map[string]bool{}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return errorf(CodeInvalidJSON, "bad JSON: %v", err)
		}
		key, _ := tok.(string)
		switch {
		case !known[key]:
			return errorf(CodeInvalidJSON, "bad JSON: unknown field %q (field names are case-sensitive)", key)
		case seen[key]:
			return errorf(CodeInvalidJSON, "bad JSON: field %q appears twice", key)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := d.Decode(&skip); err != nil {
			return errorf(CodeInvalidJSON, "bad JSON: %v", err)
		}
	}
	return nil
}

// maxBodyOverhead is what a notify body may hold beyond its data: the
// user ID and id, each escaped at up to 6 bytes a byte, the keys and
// whitespace. The body reader is capped at the payload limit plus this, so
// an oversized body is refused before it is all read, yet every valid one
// fits.
const maxBodyOverhead = 16 << 10

// maxFanoutOverhead is what a fan-out's users may add to a notify body:
// each ID escaped at up to 6 bytes a byte, quoted, with a comma.
const maxFanoutOverhead = MaxFanout * (6*wire.MaxUserBytes + 3)

// readJSONBody checks the Content-Type and reads the body, at most limit
// bytes.
func readJSONBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *Error) {
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return nil, errorf(CodeUnsupportedMedia, "Content-Type must be application/json, not %q", ct)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return nil, errorf(CodePayloadTooLarge, "the body is over %d bytes", limit)
		}
		return nil, &Error{Code: CodeInvalidJSON, Message: "reading the body failed", Err: fmt.Errorf("read body: %w", err)}
	}
	return b, nil
}
