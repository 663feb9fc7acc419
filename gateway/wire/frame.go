package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"
)

// Frame types.
const (
	TypeAuth         = "auth"
	TypeAck          = "ack"
	TypePing         = "ping"
	TypeHello        = "hello"
	TypeNotification = "notification"
	TypeGap          = "gap"
	TypeBroadcast    = "broadcast"
	TypeMoved        = "moved"
	TypePong         = "pong"
	TypeCaughtUp     = "caught_up"
)

// Where a device with no cursor starts (the auth frame's start). A device
// with a cursor (since > 0) resumes after it whatever it asks, and its hello
// says StartResume.
const (
	StartAll    = "all"  // the whole retained log, as if new (the default)
	StartLast   = "last" // the last Last messages of the retained log
	StartLive   = "live" // only what is appended after the socket starts
	StartResume = "resume"
)

// MaxLast bounds the auth frame's last: the gateway walks back that many
// messages of the chain, one read each.
const MaxLast = 1000

// ClientFrame is a frame a client sends: auth, ack or ping. Fields that do
// not belong to the type are zero.
type ClientFrame struct {
	Type string `json:"type"`
	// auth
	Token string `json:"token,omitempty"`
	Since uint64 `json:"since,omitempty"`
	Epoch string `json:"epoch,omitempty"`
	Ring  string `json:"ring,omitempty"`
	// Start and Last choose where a device without a cursor starts:
	// StartAll (or empty), StartLive, or StartLast with Last messages
	// (1..MaxLast). Last alone means StartLast.
	Start string `json:"start,omitempty"`
	Last  int    `json:"last,omitempty"`
	// ack
	Seq uint64 `json:"seq,omitempty"`
}

// DecodeClientFrame decodes and checks a frame from a client. It accepts
// unknown fields (so clients can grow) but nothing else out of shape.
func DecodeClientFrame(b []byte) (ClientFrame, error) {
	var f ClientFrame
	if err := decodeOne(b, &f); err != nil {
		return ClientFrame{}, err
	}
	switch f.Type {
	case TypeAuth:
		switch {
		case f.Token == "":
			return ClientFrame{}, errors.New("auth frame without a token")
		case len(f.Token) > MaxTokenBytes:
			return ClientFrame{}, fmt.Errorf("auth token over %d bytes", MaxTokenBytes)
		case len(f.Epoch) > MaxEpochBytes:
			return ClientFrame{}, fmt.Errorf("epoch over %d bytes", MaxEpochBytes)
		case len(f.Ring) > MaxRingBytes:
			return ClientFrame{}, fmt.Errorf("ring over %d bytes", MaxRingBytes)
		}
		if err := f.checkStart(); err != nil {
			return ClientFrame{}, err
		}
		f.Seq = 0
	case TypeAck:
		if f.Seq == 0 {
			return ClientFrame{}, errors.New("ack frame without a seq")
		}
		f.Token, f.Since, f.Epoch, f.Ring, f.Start, f.Last = "", 0, "", "", "", 0
	case TypePing:
		f = ClientFrame{Type: TypePing}
	case "":
		return ClientFrame{}, errors.New("frame without a type")
	default:
		return ClientFrame{}, fmt.Errorf("%w %q", ErrUnknownType, f.Type)
	}
	return f, nil
}

// checkStart checks an auth frame's start and last, and spells the choice
// out: Start is StartAll, StartLive or StartLast afterwards.
func (f *ClientFrame) checkStart() error {
	start, err := CheckStart(f.Start, f.Last)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadStart, err)
	}
	f.Start = start
	return nil
}

// ErrBadStart marks an auth frame whose start or last is out of shape. The
// gateway closes such a socket with 1008 (not 4003: the token may be fine).
var ErrBadStart = errors.New("auth frame with a bad start")

// CheckStart checks where a device asks to start and returns the choice
// spelled out: "" is StartAll, and last alone is StartLast.
func CheckStart(start string, last int) (string, error) {
	switch {
	case (start == "" || start == StartAll) && last == 0:
		return StartAll, nil
	case start == StartLive && last == 0:
		return StartLive, nil
	case start == "" || start == StartLast:
		if last < 1 || last > MaxLast {
			return "", fmt.Errorf("start %q needs last in 1..%d, not %d", StartLast, MaxLast, last)
		}
		return StartLast, nil
	case start == StartAll || start == StartLive:
		return "", fmt.Errorf("last %d with start %q: last goes with start %q only", last, start, StartLast)
	default:
		return "", fmt.Errorf("start %q: want %q, %q or %q", start, StartAll, StartLast, StartLive)
	}
}

// decodeOne decodes exactly one JSON object into v.
func decodeOne(b []byte, v any) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return errors.New("frame is not a JSON object")
	}
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("bad frame: %w", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("bad frame: data after the JSON object")
	}
	return nil
}

// Server frames, each encoded as its own struct so every field is always
// present.

// Hello is the first frame after a successful auth.
type Hello struct {
	Type    string `json:"type"`
	Gateway string `json:"gateway"`
	User    string `json:"user"`
	Epoch   string `json:"epoch"`
	// Cursor is the seq the socket resumes after: the client's since (a gap
	// frame follows then if it lost anything), or for a device without a
	// cursor where its start put it (0 for StartAll), which the device
	// keeps as its cursor so that a reconnect resumes rather than chooses
	// again.
	Cursor uint64 `json:"cursor"`
	// Start echoes where the socket starts: StartResume for a client that
	// sent a cursor, else its choice (StartAll, StartLast with Last, or
	// StartLive).
	Start string `json:"start"`
	Last  int    `json:"last,omitempty"`
}

// CaughtUp says the socket has been sent everything its user's log held
// when the socket started, so what follows is live: an app can show the
// backlog before it quietly and the rest as it comes. Sent once per socket,
// after the hello (and gap) and the backlog's frames; Cursor is the
// socket's cursor then.
type CaughtUp struct {
	Type   string `json:"type"`
	Cursor uint64 `json:"cursor"`
}

// Notification carries one message of the user's log.
type Notification struct {
	Type string          `json:"type"`
	Seq  uint64          `json:"seq"`
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data"`
	TS   string          `json:"ts"` // publish time, RFC 3339 with nanoseconds
}

// Gap says the log no longer holds the messages after After and before Next:
// retention dropped them, or the log was recreated (a new epoch, in which
// case After counts the old log and Next the new one).
type Gap struct {
	Type  string `json:"type"`
	Epoch string `json:"epoch"`
	After uint64 `json:"after"`
	Next  uint64 `json:"next"`
}

// Broadcast is a live-only message to every connected socket. It has no seq
// and never moves a cursor.
type Broadcast struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
	TS   string          `json:"ts"`
}

// Moved tells the client which gateway owns it now; the socket closes with
// CloseMoved.
type Moved struct {
	Type string `json:"type"`
	URL  string `json:"url"`
}

// FormatTS formats a timestamp as frames and headers carry it.
func FormatTS(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// ParseTS parses a timestamp written by FormatTS.
func ParseTS(s string) (time.Time, error) { return time.Parse(time.RFC3339Nano, s) }

// MaxFrameOverhead bounds what a notification or broadcast frame adds to its
// data: the type, seq, escaped id and timestamp.
const MaxFrameOverhead = 512

// ErrBadData marks data that cannot go into a frame as it is: not one valid
// JSON value in valid UTF-8. A gateway turns a log message with such data
// into a gap rather than send a frame a client cannot read.
var ErrBadData = errors.New("data is not valid JSON in UTF-8")

// EncodeNotification encodes a notification frame. The gateway encodes each
// message once and writes the same bytes to every socket. data goes into the
// frame byte for byte, as it was posted (it was validated as JSON then):
// re-encoding it would compact it and escape <, > and & six-fold, so a
// 64 KiB payload could become a 390 KB frame. The frame is at most
// len(data) + MaxFrameOverhead bytes. It fails, with ErrBadData or an
// invalid id, for a message no client should be sent.
func EncodeNotification(seq uint64, id string, data []byte, ts time.Time) ([]byte, error) {
	if err := checkData(data); err != nil {
		return nil, err
	}
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(data)+96+2*len(id))
	b = append(b, `{"type":"notification","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"id":`...)
	b = appendString(b, id)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	b = append(b, `,"ts":"`...)
	b = ts.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...), nil
}

// EncodeBroadcast encodes a broadcast frame, data byte for byte as posted.
func EncodeBroadcast(data []byte, ts time.Time) ([]byte, error) {
	if err := checkData(data); err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(data)+64)
	b = append(b, `{"type":"broadcast","data":`...)
	b = append(b, data...)
	b = append(b, `,"ts":"`...)
	b = ts.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...), nil
}

// checkData accepts one JSON value, surrounded by nothing, in valid UTF-8
// (a WebSocket text frame must be UTF-8: a browser fails the connection on
// anything else, and the client would resume into the same frame forever).
func checkData(data []byte) error {
	if len(data) == 0 || !utf8.Valid(data) || !json.Valid(data) ||
		isSpace(data[0]) || isSpace(data[len(data)-1]) {
		return ErrBadData
	}
	return nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// appendString appends s as a JSON string without HTML escaping.
func appendString(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// Encode encodes any of the frame structs, server's or client's, without
// HTML escaping (frames are not HTML, and what a client sent or a backend
// posted should read back unchanged).
func Encode(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("wire: encoding %T: %v", v, err)) // only our own structs come here
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// PongFrame is the reply to a ping.
var PongFrame = []byte(`{"type":"pong"}`)

// ServerFrame is any frame a server sends, as a client decodes it: the
// fields of every type in one struct.
type ServerFrame struct {
	Type    string          `json:"type"`
	Gateway string          `json:"gateway,omitempty"`
	User    string          `json:"user,omitempty"`
	Epoch   string          `json:"epoch,omitempty"`
	Cursor  uint64          `json:"cursor,omitempty"`
	Seq     uint64          `json:"seq,omitempty"`
	ID      string          `json:"id,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	TS      string          `json:"ts,omitempty"`
	After   uint64          `json:"after,omitempty"`
	Next    uint64          `json:"next,omitempty"`
	URL     string          `json:"url,omitempty"`
	Start   string          `json:"start,omitempty"`
	Last    int             `json:"last,omitempty"`
}

// ErrUnknownType marks a well-formed frame whose type this version does not
// know. Clients skip such frames from a gateway, so that a newer gateway can
// add frame types; gateways refuse them from clients (close 1008).
var ErrUnknownType = errors.New("unknown frame type")

// DecodeServerFrame decodes and checks a frame from a gateway.
func DecodeServerFrame(b []byte) (ServerFrame, error) {
	var f ServerFrame
	if err := decodeOne(b, &f); err != nil {
		return ServerFrame{}, err
	}
	switch f.Type {
	case TypeHello:
		if f.Gateway == "" || f.Epoch == "" || ValidateUser(f.User) != nil {
			return ServerFrame{}, errors.New("hello frame without gateway, user or epoch")
		}
	case TypeNotification:
		if f.Seq == 0 {
			return ServerFrame{}, errors.New("notification frame without a seq")
		}
	case TypeGap:
		// Across epochs next may be below after: they count different logs.
		if f.Next == 0 || f.Epoch == "" {
			return ServerFrame{}, fmt.Errorf("gap frame with next %d, epoch %q", f.Next, f.Epoch)
		}
	case TypeMoved:
		if f.URL == "" {
			return ServerFrame{}, errors.New("moved frame without a URL")
		}
	case TypeBroadcast, TypePong, TypeCaughtUp:
	case "":
		return ServerFrame{}, errors.New("frame without a type")
	default:
		return ServerFrame{}, fmt.Errorf("%w %q", ErrUnknownType, f.Type)
	}
	return f, nil
}
