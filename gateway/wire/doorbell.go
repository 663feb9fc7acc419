package wire

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of log messages and doorbells.
const (
	HeaderID    = "Herald-Id"    // the notification's idempotency key
	HeaderTS    = "Herald-Ts"    // publish time, FormatTS
	HeaderPrev  = "Herald-Prev"  // seq of the user's previous message; 0 for the first
	HeaderSeq   = "Herald-Seq"   // doorbells: the message's seq in the log
	HeaderUser  = "Herald-User"  // doorbells: UserKey of the user
	HeaderEpoch = "Herald-Epoch" // doorbells: the log's epoch as the dispatcher knows it
	HeaderErase = "Herald-Erase" // doorbells: "1" when the user's log was erased through Seq
	// HeaderExpires is when a notification posted with a ttl expires
	// (FormatTS): it is neither delivered nor replayed after that.
	HeaderExpires = "Herald-Expires"
	// HeaderCollapse is a notification's collapse key: a device that has
	// not yet received an older notification with the same key gets only
	// the newest.
	HeaderCollapse = "Herald-Collapse"
)

// Doorbell tells the gateway that owns User that the user's log has a new
// message. It is only a hint: doorbells may be lost, duplicated, reordered or
// delayed, and the gateway must deliver everything regardless. A doorbell
// with content carries the whole message, so the gateway can deliver it
// without reading the log; one without (after a duplicate POST) only says
// that Seq exists.
type Doorbell struct {
	User  string
	Seq   uint64
	Epoch string

	// Erased says the user's log was erased through Seq (DELETE
	// /v1/users/{user}/notifications): the gateway drops what it holds of
	// it and tells the user's sockets. Such a doorbell has no content.
	Erased bool

	HasContent bool
	Prev       uint64
	ID         string
	TS         time.Time
	Data       []byte
	Expires    time.Time // zero: never
	Collapse   string    // "": none
}

// Header is a NATS message header. nats.Header has the same underlying
// type, so values pass between them as they are; wire itself depends on
// nothing but the standard library, for the clients that import it. Keys
// are case-sensitive, as in NATS.
type Header = map[string][]string

func get(h Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Header encodes the doorbell's headers. The message's body is Body; both go
// to GatewaySubject of the owner.
func (d Doorbell) Header() Header {
	h := Header{
		HeaderUser:  {UserKey(d.User)},
		HeaderSeq:   {strconv.FormatUint(d.Seq, 10)},
		HeaderEpoch: {d.Epoch},
	}
	if d.Erased {
		h[HeaderErase] = []string{"1"}
		return h
	}
	if d.HasContent {
		h[HeaderPrev] = []string{strconv.FormatUint(d.Prev, 10)}
		h[HeaderID] = []string{d.ID}
		h[HeaderTS] = []string{FormatTS(d.TS)}
		if !d.Expires.IsZero() {
			h[HeaderExpires] = []string{FormatTS(d.Expires)}
		}
		if d.Collapse != "" {
			h[HeaderCollapse] = []string{d.Collapse}
		}
	}
	return h
}

// Body is the doorbell message's body: the data when it carries content.
func (d Doorbell) Body() []byte {
	if d.HasContent && !d.Erased {
		return d.Data
	}
	return nil
}

// DecodeDoorbell decodes and checks a doorbell's headers and body.
func DecodeDoorbell(h Header, body []byte) (Doorbell, error) {
	if h == nil {
		return Doorbell{}, errors.New("doorbell without headers")
	}
	user, err := UserFromKey(get(h, HeaderUser))
	if err != nil {
		return Doorbell{}, fmt.Errorf("doorbell: %w", err)
	}
	seq, err := strconv.ParseUint(get(h, HeaderSeq), 10, 64)
	if err != nil || seq == 0 {
		return Doorbell{}, fmt.Errorf("doorbell: bad seq %q", get(h, HeaderSeq))
	}
	d := Doorbell{User: user, Seq: seq, Epoch: get(h, HeaderEpoch)}
	switch get(h, HeaderErase) {
	case "":
	case "1":
		d.Erased = true
		return d, nil
	default:
		return Doorbell{}, fmt.Errorf("doorbell: bad %s %q", HeaderErase, get(h, HeaderErase))
	}
	prev := get(h, HeaderPrev)
	if prev == "" {
		return d, nil
	}
	if d.Prev, err = strconv.ParseUint(prev, 10, 64); err != nil || d.Prev >= seq {
		return Doorbell{}, fmt.Errorf("doorbell: bad prev %q for seq %d", prev, seq)
	}
	if d.TS, err = ParseTS(get(h, HeaderTS)); err != nil {
		return Doorbell{}, fmt.Errorf("doorbell: bad timestamp: %w", err)
	}
	d.ID = get(h, HeaderID)
	if err := ValidateID(d.ID); err != nil {
		return Doorbell{}, fmt.Errorf("doorbell: %w", err)
	}
	if err := checkData(body); err != nil {
		return Doorbell{}, fmt.Errorf("doorbell: %w", err)
	}
	if d.Expires, d.Collapse, err = ParseLimits(h); err != nil {
		return Doorbell{}, fmt.Errorf("doorbell: %w", err)
	}
	d.HasContent, d.Data = true, body
	return d, nil
}

// ParseLimits reads a message's or a doorbell's expiry and collapse key.
func ParseLimits(h Header) (expires time.Time, collapse string, err error) {
	if v := get(h, HeaderExpires); v != "" {
		if expires, err = ParseTS(v); err != nil {
			return time.Time{}, "", fmt.Errorf("bad %s: %w", HeaderExpires, err)
		}
	}
	if collapse = get(h, HeaderCollapse); collapse != "" {
		if err := ValidateCollapse(collapse); err != nil {
			return time.Time{}, "", err
		}
	}
	return expires, collapse, nil
}

// ValidateCollapse checks a collapse key: the rules of an id (it travels
// in a NATS header too).
func ValidateCollapse(key string) error {
	if err := ValidateID(key); err != nil {
		return fmt.Errorf("collapse key: %s", strings.TrimPrefix(err.Error(), "invalid id: "))
	}
	return nil
}

// Delivery outcomes of a doorbell sent as a request (wait=delivered).
const (
	Delivered = "delivered" // a socket of the user acknowledged the seq
	Offline   = "offline"   // the gateway has no socket for the user
	Timeout   = "timeout"   // no answer in time (never sent by a gateway)
)

// DeliveryReply is a gateway's answer to a doorbell request.
type DeliveryReply struct {
	Status string `json:"status"`
}

// GatewayStats is a gateway's answer on its StatsSubject.
type GatewayStats struct {
	Gateway string `json:"gateway"`
	Sockets int    `json:"sockets"`
	Users   int    `json:"users"`
	// MovesPending counts the users the gateway is still to move (a ring
	// change, a drain): dispatchers keep ringing it as a previous owner
	// while there are any.
	MovesPending int `json:"moves_pending"`
}

// BroadcastHeader is the header of a live-only broadcast for every gateway
// (on BroadcastSubject): the publish time. The body is the data.
func BroadcastHeader(ts time.Time) Header {
	return Header{HeaderTS: {FormatTS(ts)}}
}

// DecodeBroadcast decodes a broadcast into the frame the gateway sends.
func DecodeBroadcast(h Header, body []byte) ([]byte, error) {
	ts, err := ParseTS(get(h, HeaderTS))
	if err != nil {
		return nil, fmt.Errorf("broadcast: bad timestamp: %w", err)
	}
	frame, err := EncodeBroadcast(body, ts)
	if err != nil {
		return nil, fmt.Errorf("broadcast: %w", err)
	}
	return frame, nil
}
