package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// Headers of log messages and doorbells.
const (
	HeaderID    = "Herald-Id"    // the notification's idempotency key
	HeaderTS    = "Herald-Ts"    // publish time, FormatTS
	HeaderPrev  = "Herald-Prev"  // seq of the user's previous message; 0 for the first
	HeaderSeq   = "Herald-Seq"   // doorbells: the message's seq in the log
	HeaderUser  = "Herald-User"  // doorbells: UserKey of the user
	HeaderEpoch = "Herald-Epoch" // doorbells: the log's epoch as the dispatcher knows it
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

	HasContent bool
	Prev       uint64
	ID         string
	TS         time.Time
	Data       []byte
}

// Msg encodes the doorbell as a NATS message to the gateway's subject.
func (d Doorbell) Msg(gatewayID string) *nats.Msg {
	m := nats.NewMsg(GatewaySubject(gatewayID))
	m.Header.Set(HeaderUser, UserKey(d.User))
	m.Header.Set(HeaderSeq, strconv.FormatUint(d.Seq, 10))
	m.Header.Set(HeaderEpoch, d.Epoch)
	if d.HasContent {
		m.Header.Set(HeaderPrev, strconv.FormatUint(d.Prev, 10))
		m.Header.Set(HeaderID, d.ID)
		m.Header.Set(HeaderTS, FormatTS(d.TS))
		m.Data = d.Data
	}
	return m
}

// DecodeDoorbell decodes and checks a doorbell.
func DecodeDoorbell(m *nats.Msg) (Doorbell, error) {
	if m.Header == nil {
		return Doorbell{}, errors.New("doorbell without headers")
	}
	user, err := UserFromKey(m.Header.Get(HeaderUser))
	if err != nil {
		return Doorbell{}, fmt.Errorf("doorbell: %w", err)
	}
	seq, err := strconv.ParseUint(m.Header.Get(HeaderSeq), 10, 64)
	if err != nil || seq == 0 {
		return Doorbell{}, fmt.Errorf("doorbell: bad seq %q", m.Header.Get(HeaderSeq))
	}
	d := Doorbell{User: user, Seq: seq, Epoch: m.Header.Get(HeaderEpoch)}
	prev := m.Header.Get(HeaderPrev)
	if prev == "" {
		return d, nil
	}
	if d.Prev, err = strconv.ParseUint(prev, 10, 64); err != nil || d.Prev >= seq {
		return Doorbell{}, fmt.Errorf("doorbell: bad prev %q for seq %d", prev, seq)
	}
	if d.TS, err = ParseTS(m.Header.Get(HeaderTS)); err != nil {
		return Doorbell{}, fmt.Errorf("doorbell: bad timestamp: %w", err)
	}
	d.ID = m.Header.Get(HeaderID)
	if err := ValidateID(d.ID); err != nil {
		return Doorbell{}, fmt.Errorf("doorbell: %w", err)
	}
	if !json.Valid(m.Data) {
		return Doorbell{}, errors.New("doorbell: data is not JSON")
	}
	d.HasContent, d.Data = true, m.Data
	return d, nil
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
}

// BroadcastMsg encodes a live-only broadcast for every gateway: the data as
// the body, the publish time in a header.
func BroadcastMsg(data []byte, ts time.Time) *nats.Msg {
	m := nats.NewMsg(BroadcastSubject)
	m.Header.Set(HeaderTS, FormatTS(ts))
	m.Data = data
	return m
}

// DecodeBroadcast decodes a broadcast into the frame the gateway sends.
func DecodeBroadcast(m *nats.Msg) ([]byte, error) {
	ts, err := ParseTS(m.Header.Get(HeaderTS))
	if err != nil {
		return nil, fmt.Errorf("broadcast: bad timestamp: %w", err)
	}
	if !json.Valid(m.Data) {
		return nil, errors.New("broadcast: data is not JSON")
	}
	return Encode(Broadcast{Type: TypeBroadcast, Data: m.Data, TS: FormatTS(ts)}), nil
}
