package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestDecodeClientFrame(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ClientFrame
	}{
		{`{"type":"auth","token":"t","since":5,"epoch":"e","ring":"r"}`, ClientFrame{Type: TypeAuth, Token: "t", Since: 5, Epoch: "e", Ring: "r"}},
		{`{"type":"auth","token":"t"}`, ClientFrame{Type: TypeAuth, Token: "t"}},
		{` {"type":"ack","seq":7,"token":"ignored"} `, ClientFrame{Type: TypeAck, Seq: 7}},
		{`{"type":"ping","extra":{"a":1}}`, ClientFrame{Type: TypePing}},
	} {
		got, err := DecodeClientFrame([]byte(tc.in))
		if err != nil || got != tc.want {
			t.Errorf("DecodeClientFrame(%s) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{
		``, `null`, `[]`, `"auth"`, `{}`, `{"type":""}`, `{"type":"nope"}`,
		`{"type":"auth"}`, `{"type":"auth","token":""}`, `{"type":"auth","token":5}`,
		`{"type":"auth","token":"t","since":-1}`, `{"type":"auth","token":"t","since":1.5}`,
		`{"type":"auth","token":"` + strings.Repeat("x", MaxTokenBytes+1) + `"}`,
		`{"type":"auth","token":"t","epoch":"` + strings.Repeat("e", MaxEpochBytes+1) + `"}`,
		`{"type":"ack"}`, `{"type":"ack","seq":0}`, `{"type":"ack","seq":"1"}`,
		`{"type":"ping"}{"type":"ping"}`, `{"type":"ping"}]`, `{"type":"ping"}}`, `{"type":"ping"} 1`, `{"type":"ping"`, "{\"type\":\"ping\"}\x00",
	} {
		if f, err := DecodeClientFrame([]byte(in)); err == nil {
			t.Errorf("DecodeClientFrame(%q) = %+v, want an error", in, f)
		}
	}
}

func TestServerFramesRoundTrip(t *testing.T) {
	ts := time.Date(2026, 11, 26, 12, 0, 0, 123456789, time.UTC)
	for _, tc := range []struct {
		b    []byte
		want ServerFrame
	}{
		{Encode(Hello{Type: TypeHello, Gateway: "gw-1", User: "alice", Epoch: "e1", Cursor: 9}),
			ServerFrame{Type: TypeHello, Gateway: "gw-1", User: "alice", Epoch: "e1", Cursor: 9}},
		{EncodeNotification(12, "n-1", []byte(`{"x":1}`), ts),
			ServerFrame{Type: TypeNotification, Seq: 12, ID: "n-1", Data: json.RawMessage(`{"x":1}`), TS: "2026-11-26T12:00:00.123456789Z"}},
		{Encode(Gap{Type: TypeGap, Epoch: "e2", After: 40, Next: 3}),
			ServerFrame{Type: TypeGap, Epoch: "e2", After: 40, Next: 3}},
		{Encode(Moved{Type: TypeMoved, URL: "ws://gw-2/ws"}), ServerFrame{Type: TypeMoved, URL: "ws://gw-2/ws"}},
		{PongFrame, ServerFrame{Type: TypePong}},
	} {
		got, err := DecodeServerFrame(tc.b)
		if err != nil {
			t.Fatalf("DecodeServerFrame(%s): %v", tc.b, err)
		}
		if got.Type != tc.want.Type || got.Seq != tc.want.Seq || got.ID != tc.want.ID || !bytes.Equal(got.Data, tc.want.Data) ||
			got.TS != tc.want.TS || got.After != tc.want.After || got.Next != tc.want.Next || got.URL != tc.want.URL ||
			got.Gateway != tc.want.Gateway || got.User != tc.want.User || got.Epoch != tc.want.Epoch || got.Cursor != tc.want.Cursor {
			t.Errorf("DecodeServerFrame(%s) = %+v, want %+v", tc.b, got, tc.want)
		}
	}
	// A notification whose data is empty is sent as null, still valid JSON.
	if b := EncodeNotification(1, "i", nil, ts); !json.Valid(b) || !bytes.Contains(b, []byte(`"data":null`)) {
		t.Errorf("EncodeNotification with no data = %s", b)
	}
	for _, in := range []string{`{"type":"notification"}`, `{"type":"gap","next":0,"epoch":"e"}`, `{"type":"gap","next":3}`,
		`{"type":"moved"}`, `{"type":"hello","gateway":"g","epoch":"e"}`, `{"type":"what"}`, `{"type":"what"`, `{}`} {
		_, err := DecodeServerFrame([]byte(in))
		if err == nil {
			t.Errorf("DecodeServerFrame(%s) accepted it", in)
		}
		// Only a whole frame of a type this version lacks is "unknown":
		// clients skip those and end the socket on anything else.
		if unknown := in == `{"type":"what"}`; errors.Is(err, ErrUnknownType) != unknown {
			t.Errorf("DecodeServerFrame(%s): %v; unknown type: %v, want %v", in, err, errors.Is(err, ErrUnknownType), unknown)
		}
	}
}

func TestValidateUser(t *testing.T) {
	for _, ok := range []string{"alice", "ü-ñ 日本", strings.Repeat("a", MaxUserBytes), "a.b*c>d", "user@example.com"} {
		if err := ValidateUser(ok); err != nil {
			t.Errorf("ValidateUser(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("a", MaxUserBytes+1), "a\nb", "a\x00", "\x7f", "a\u0085b", "\xff\xfe", "a\ufffdb"} {
		if err := ValidateUser(bad); err == nil {
			t.Errorf("ValidateUser(%q) accepted it", bad)
		}
	}
}

func TestValidateID(t *testing.T) {
	for _, ok := range []string{"order-42", "a b", "ü 日本", strings.Repeat("i", MaxIDBytes)} {
		if err := ValidateID(ok); err != nil {
			t.Errorf("ValidateID(%q): %v", ok, err)
		}
	}
	// NATS headers lose the spaces at a value's ends: "x " would become "x".
	for _, bad := range []string{"", strings.Repeat("i", MaxIDBytes+1), "x ", " x", " ", "a\tb", "a\u0085b", "\xff", "a\ufffdb"} {
		if err := ValidateID(bad); err == nil {
			t.Errorf("ValidateID(%q) accepted it", bad)
		}
	}
}

func TestUserKeyIsSubjectSafeAndReversible(t *testing.T) {
	for _, u := range []string{"alice", "a.b", "*", ">", "with space", "日本", strings.Repeat("é", 128)} {
		k := UserKey(u)
		if strings.ContainsAny(k, ".*> \t") {
			t.Errorf("UserKey(%q) = %q is not one subject token", u, k)
		}
		back, err := UserFromKey(k)
		if err != nil || back != u {
			t.Errorf("UserFromKey(UserKey(%q)) = %q, %v", u, back, err)
		}
	}
	if InboxSubject("a.b") == InboxSubject("a") {
		t.Error("distinct users share a subject")
	}
}

func TestDoorbellRoundTrip(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, d := range []Doorbell{
		{User: "alice", Seq: 10, Epoch: "e", HasContent: true, Prev: 7, ID: "n1", TS: ts, Data: []byte(`{"a":[1,2]}`)},
		{User: "bob.x", Seq: 3, Epoch: "e"},
	} {
		m := d.Msg("gw-1")
		if m.Subject != "herald.gw.gw-1" {
			t.Fatalf("subject %q", m.Subject)
		}
		got, err := DecodeDoorbell(m)
		if err != nil {
			t.Fatalf("DecodeDoorbell: %v", err)
		}
		if got.User != d.User || got.Seq != d.Seq || got.Epoch != d.Epoch || got.HasContent != d.HasContent ||
			got.Prev != d.Prev || got.ID != d.ID || !got.TS.Equal(d.TS) || !bytes.Equal(got.Data, d.Data) {
			t.Errorf("round trip: got %+v, want %+v", got, d)
		}
	}
}

func TestDecodeDoorbellRejects(t *testing.T) {
	good := Doorbell{User: "alice", Seq: 10, Epoch: "e", HasContent: true, Prev: 7, ID: "n1", TS: time.Now(), Data: []byte(`1`)}
	for name, edit := range map[string]func(m *nats.Msg){
		"no headers": func(m *nats.Msg) { m.Header = nil },
		"bad user":   func(m *nats.Msg) { m.Header.Set(HeaderUser, "!!") },
		"no seq":     func(m *nats.Msg) { m.Header.Del(HeaderSeq) },
		"seq 0":      func(m *nats.Msg) { m.Header.Set(HeaderSeq, "0") },
		"prev ≥ seq": func(m *nats.Msg) { m.Header.Set(HeaderPrev, "10") },
		"bad prev":   func(m *nats.Msg) { m.Header.Set(HeaderPrev, "x") },
		"bad ts":     func(m *nats.Msg) { m.Header.Set(HeaderTS, "yesterday") },
		"no id":      func(m *nats.Msg) { m.Header.Del(HeaderID) },
		"bad data":   func(m *nats.Msg) { m.Data = []byte("{") },
	} {
		m := good.Msg("gw")
		edit(m)
		if d, err := DecodeDoorbell(m); err == nil {
			t.Errorf("%s: DecodeDoorbell = %+v, want an error", name, d)
		}
	}
}

func FuzzDecodeClientFrame(f *testing.F) {
	for _, s := range []string{`{"type":"auth","token":"t","since":5,"epoch":"e","ring":"r"}`, `{"type":"ack","seq":1}`, `{"type":"ping"}`, `{`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeClientFrame(b)
		if err != nil {
			return
		}
		// What it accepts is well formed and survives a round trip.
		switch fr.Type {
		case TypeAuth:
			if fr.Token == "" || len(fr.Token) > MaxTokenBytes {
				t.Fatalf("accepted auth %+v", fr)
			}
		case TypeAck:
			if fr.Seq == 0 {
				t.Fatalf("accepted ack %+v", fr)
			}
		case TypePing:
		default:
			t.Fatalf("accepted type %q", fr.Type)
		}
		again, err := DecodeClientFrame(Encode(fr))
		if err != nil || again != fr {
			t.Fatalf("round trip of %+v: %+v, %v", fr, again, err)
		}
	})
}

func FuzzDecodeServerFrame(f *testing.F) {
	f.Add(EncodeNotification(1, "x", []byte(`{}`), time.Unix(0, 0)))
	f.Add(Encode(Gap{Type: TypeGap, Epoch: "e", After: 1, Next: 2}))
	f.Add([]byte(`{"type":"hello","gateway":"g","user":"u","epoch":"e"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeServerFrame(b)
		if err == nil && fr.Type == TypeNotification && fr.Seq == 0 {
			t.Fatalf("accepted %+v", fr)
		}
	})
}

func FuzzDecodeDoorbell(f *testing.F) {
	f.Add("YWxpY2U", "10", "7", "2026-01-02T03:04:05Z", "n1", []byte(`{"a":1}`))
	f.Add("", "0", "", "", "", []byte(nil))
	f.Fuzz(func(t *testing.T, user, seq, prev, ts, id string, data []byte) {
		m := nats.NewMsg("herald.gw.x")
		m.Header.Set(HeaderUser, user)
		m.Header.Set(HeaderSeq, seq)
		if prev != "" {
			m.Header.Set(HeaderPrev, prev)
		}
		m.Header.Set(HeaderTS, ts)
		m.Header.Set(HeaderID, id)
		m.Data = data
		d, err := DecodeDoorbell(m)
		if err != nil {
			return
		}
		if d.Seq == 0 || ValidateUser(d.User) != nil || (d.HasContent && (d.Prev >= d.Seq || !json.Valid(d.Data))) {
			t.Fatalf("accepted %+v", d)
		}
	})
}

func TestBroadcastRoundTrip(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	frame, err := DecodeBroadcast(BroadcastMsg([]byte(`{"x":1}`), ts))
	if err != nil {
		t.Fatal(err)
	}
	f, err := DecodeServerFrame(frame)
	if err != nil || f.Type != TypeBroadcast || string(f.Data) != `{"x":1}` || f.TS != FormatTS(ts) || f.Seq != 0 {
		t.Fatalf("broadcast frame %s: %+v, %v", frame, f, err)
	}
	bad := BroadcastMsg([]byte(`{`), ts)
	if _, err := DecodeBroadcast(bad); err == nil {
		t.Fatal("broadcast with bad JSON accepted")
	}
}
