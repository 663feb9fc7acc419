package inbox

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Message is one message of a user's log.
type Message struct {
	Seq  uint64
	Prev uint64 // seq of the user's message before it; 0 for the first
	ID   string
	TS   time.Time
	Data []byte
	// Expires and Collapse are the notification's ttl (as the time it
	// passes; zero: never) and collapse key ("": none).
	Expires  time.Time
	Collapse string
}

// headBatch is how many users one multi-last request asks about. The server
// answers at most 1024; fewer keeps one answer's size (whole messages) sane.
const headBatch = 256

// Reads go through JetStream's direct get API, answered by any replica
// (AllowDirect), in batches: one request, many replies, then an EOB status.
// Reads "through the leader" use the classic message get API, which only the
// stream leader answers, for when a replica may lag.

func (l *Log) directSubject() string { return "$JS.API.DIRECT.GET." + l.cfg.Stream }

// directGetRequest is JetStream's JSApiMsgGetRequest, the fields herald uses.
type directGetRequest struct {
	Seq       uint64   `json:"seq,omitempty"`
	LastFor   string   `json:"last_by_subj,omitempty"`
	NextFor   string   `json:"next_by_subj,omitempty"`
	Batch     int      `json:"batch,omitempty"`
	MaxBytes  int      `json:"max_bytes,omitempty"`
	MultiLast []string `json:"multi_last,omitempty"`
}

// ReadAfter returns up to n messages of user's log with seqs above after, in
// order. It reads from any replica, which may lag behind the leader.
func (l *Log) ReadAfter(ctx context.Context, user string, after uint64, n int) ([]Message, error) {
	if n <= 0 {
		return nil, nil
	}
	var out []Message
	err := l.batch(ctx, directGetRequest{Seq: after + 1, NextFor: l.subject(user), Batch: n}, func(m *nats.Msg) error {
		msg, err := parseDirect(m)
		if err != nil {
			return err
		}
		out = append(out, msg)
		return nil
	})
	return out, err
}

// Heads returns the seq of the last message of each user's log; users whose
// log is empty are absent from the map.
func (l *Log) Heads(ctx context.Context, users []string) (map[string]uint64, error) {
	heads := make(map[string]uint64, len(users))
	byKey := make(map[string]string, len(users))
	for start := 0; start < len(users); start += headBatch {
		chunk := users[start:min(start+headBatch, len(users))]
		subjects := make([]string, len(chunk))
		for i, u := range chunk {
			subjects[i] = l.subject(u)
			byKey[subjects[i]] = u
		}
		err := l.batch(ctx, directGetRequest{MultiLast: subjects, Batch: len(subjects)}, func(m *nats.Msg) error {
			seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
			if err != nil {
				return fmt.Errorf("bad %s header in multi-last reply", jetstream.SequenceHeader)
			}
			if u, ok := byKey[m.Header.Get(jetstream.SubjectHeader)]; ok {
				heads[u] = seq
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return heads, nil
}

// batch sends a direct get request whose answer is a series of messages
// ended by an EOB status (or a single "not found"), and hands each message to
// f.
func (l *Log) batch(ctx context.Context, req directGetRequest, f func(*nats.Msg) error) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	inbox := l.nc.NewRespInbox()
	sub, err := l.nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	defer sub.Unsubscribe()
	if err := l.nc.PublishRequest(l.directSubject(), inbox, body); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return fmt.Errorf("%w: direct get: %v", ErrUnavailable, err)
		}
		switch status := m.Header.Get("Status"); status {
		case "":
			if err := f(m); err != nil {
				return err
			}
		case "204": // end of batch
			return nil
		case "404": // nothing matched
			return nil
		case "503":
			return fmt.Errorf("%w: direct get: no responders for stream %s", ErrUnavailable, l.cfg.Stream)
		default:
			return fmt.Errorf("%w: direct get: status %s %s", ErrUnavailable, status, m.Header.Get("Description"))
		}
	}
}

// parseDirect reads a message from a direct get reply, whose headers are the
// stored ones plus JetStream's.
func parseDirect(m *nats.Msg) (Message, error) {
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil || seq == 0 {
		return Message{}, fmt.Errorf("bad %s header in direct get reply", jetstream.SequenceHeader)
	}
	return parseStored(seq, m.Header, m.Data)
}

// parseStored reads herald's headers of a stored message. A message herald
// did not write (no or malformed headers, published straight to an inbox
// subject) is still returned with what can be read, its predecessor unknown
// (0), so a stray publish can neither stall a user's delivery nor block the
// user's appends.
func parseStored(seq uint64, h nats.Header, data []byte) (Message, error) {
	msg := Message{Seq: seq, ID: h.Get(wire.HeaderID), Data: data}
	if prev, err := strconv.ParseUint(h.Get(wire.HeaderPrev), 10, 64); err == nil && prev < seq {
		msg.Prev = prev
	}
	if ts, err := wire.ParseTS(h.Get(wire.HeaderTS)); err == nil {
		msg.TS = ts
	}
	// Unreadable limits are ignored, as other unreadable headers are: the
	// message is delivered rather than stalled.
	msg.Expires, msg.Collapse, _ = wire.ParseLimits(wire.Header(h))
	if !json.Valid(msg.Data) {
		msg.Data = nil // delivered as null: a frame must stay valid JSON
	}
	return msg, nil
}

// Last returns the last message of user's log; ok is false if the log is
// empty. With leader set it reads through the stream leader, which never
// lags; otherwise any replica answers.
func (l *Log) Last(ctx context.Context, user string, leader bool) (msg Message, ok bool, err error) {
	subj := l.subject(user)
	if leader {
		return l.leaderGet(ctx, directGetRequest{LastFor: subj})
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := l.nc.RequestWithContext(ctx, l.directSubject()+"."+subj, nil)
	if err != nil {
		return Message{}, false, fmt.Errorf("%w: last message: %v", ErrUnavailable, err)
	}
	switch status := m.Header.Get("Status"); status {
	case "":
	case "404":
		return Message{}, false, nil
	default:
		return Message{}, false, fmt.Errorf("%w: last message: status %s %s", ErrUnavailable, status, m.Header.Get("Description"))
	}
	msg, err = parseDirect(m)
	return msg, err == nil, err
}

// ReadAfterLeader is ReadAfter through the stream leader, one message per
// round trip: for when a replica's answer fell short of what must exist.
func (l *Log) ReadAfterLeader(ctx context.Context, user string, after uint64, n int) ([]Message, error) {
	var out []Message
	subj := l.subject(user)
	for len(out) < n {
		m, ok, err := l.leaderGet(ctx, directGetRequest{Seq: after + 1, NextFor: subj})
		if err != nil {
			return out, err
		}
		if !ok {
			break
		}
		out = append(out, m)
		after = m.Seq
	}
	return out, nil
}

// leaderGet is the classic (leader-only) message get.
func (l *Log) leaderGet(ctx context.Context, req directGetRequest) (Message, bool, error) {
	body, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	reply, err := l.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+l.cfg.Stream, body)
	if err != nil {
		return Message{}, false, fmt.Errorf("%w: leader get: %v", ErrUnavailable, err)
	}
	var resp struct {
		Error *struct {
			Code    int    `json:"code"`
			ErrCode int    `json:"err_code"`
			Desc    string `json:"description"`
		} `json:"error"`
		Message *struct {
			Seq    uint64 `json:"seq"`
			Header []byte `json:"hdrs"`
			Data   []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return Message{}, false, fmt.Errorf("leader get: %w", err)
	}
	if resp.Error != nil {
		if resp.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound) {
			return Message{}, false, nil
		}
		return Message{}, false, fmt.Errorf("%w: leader get: %s", ErrUnavailable, resp.Error.Desc)
	}
	if resp.Message == nil {
		return Message{}, false, errors.New("leader get: empty reply")
	}
	h, err := parseHeaderBlock(resp.Message.Header)
	if err != nil {
		return Message{}, false, fmt.Errorf("leader get: message %d: %w", resp.Message.Seq, err)
	}
	msg, err := parseStored(resp.Message.Seq, h, resp.Message.Data)
	return msg, err == nil, err
}

// parseHeaderBlock parses a stored "NATS/1.0\r\nKey: value\r\n\r\n" block.
func parseHeaderBlock(b []byte) (nats.Header, error) {
	if len(b) == 0 {
		return nats.Header{}, nil
	}
	line, rest, ok := bytes.Cut(b, []byte("\r\n"))
	if !ok || !bytes.HasPrefix(line, []byte("NATS/1.0")) {
		return nil, errors.New("bad header block")
	}
	mh, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(rest))).ReadMIMEHeader()
	if err != nil && len(mh) == 0 {
		return nil, fmt.Errorf("bad header block: %w", err)
	}
	return nats.Header(mh), nil
}
