package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDecodeClientFrame(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ClientFrame
	}{
		{`{"type":"auth","token":"t","since":5,"epoch":"e","ring":"r"}`, ClientFrame{Type: TypeAuth, Token: "t", Since: 5, Epoch: "e", Ring: "r", Start: StartAll}},
		{`{"type":"auth","token":"t"}`, ClientFrame{Type: TypeAuth, Token: "t", Start: StartAll}},
		{`{"type":"auth","token":"t","start":"all"}`, ClientFrame{Type: TypeAuth, Token: "t", Start: StartAll}},
		{`{"type":"auth","token":"t","start":"live"}`, ClientFrame{Type: TypeAuth, Token: "t", Start: StartLive}},
		{`{"type":"auth","token":"t","start":"last","last":10}`, ClientFrame{Type: TypeAuth, Token: "t", Start: StartLast, Last: 10}},
		{`{"type":"auth","token":"t","last":1000}`, ClientFrame{Type: TypeAuth, Token: "t", Start: StartLast, Last: MaxLast}},
		{`{"type":"ack","seq":7,"start":"live","last":3}`, ClientFrame{Type: TypeAck, Seq: 7}},
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
		`{"type":"auth","token":"t","start":"last"}`, `{"type":"auth","token":"t","start":"last","last":0}`,
		`{"type":"auth","token":"t","start":"last","last":1001}`, `{"type":"auth","token":"t","last":-1}`,
		`{"type":"auth","token":"t","start":"live","last":5}`, `{"type":"auth","token":"t","start":"all","last":5}`,
		`{"type":"auth","token":"t","start":"new"}`, `{"type":"auth","token":"t","start":"LIVE"}`, `{"type":"auth","token":"t","start":1}`,
		`{"type":"auth","token":"t","start":"resume"}`, `{"type":"auth","token":"t","last":"5"}`,
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
		{Encode(Hello{Type: TypeHello, Gateway: "gw-1", User: "alice", Epoch: "e1", Cursor: 9, Start: StartResume}),
			ServerFrame{Type: TypeHello, Gateway: "gw-1", User: "alice", Epoch: "e1", Cursor: 9, Start: StartResume}},
		{Encode(Hello{Type: TypeHello, Gateway: "gw-1", User: "alice", Epoch: "e1", Start: StartLast, Last: 10}),
			ServerFrame{Type: TypeHello, Gateway: "gw-1", User: "alice", Epoch: "e1", Start: StartLast, Last: 10}},
		{Encode(CaughtUp{Type: TypeCaughtUp, Cursor: 41}), ServerFrame{Type: TypeCaughtUp, Cursor: 41}},
		{Encode(CaughtUp{Type: TypeCaughtUp}), ServerFrame{Type: TypeCaughtUp}},
		{must(EncodeNotification(12, "n-1", []byte(`{"x":1}`), ts)),
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
			got.Gateway != tc.want.Gateway || got.User != tc.want.User || got.Epoch != tc.want.Epoch || got.Cursor != tc.want.Cursor ||
			got.Start != tc.want.Start || got.Last != tc.want.Last {
			t.Errorf("DecodeServerFrame(%s) = %+v, want %+v", tc.b, got, tc.want)
		}
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

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// The data a backend posted reaches the socket byte for byte: no HTML
// escaping, no compaction, nothing re-encoded; and the frame is at most
// MaxFrameOverhead bytes larger.
func TestFramesCarryDataVerbatim(t *testing.T) {
	ts := time.Date(2026, 11, 26, 12, 0, 0, 123456789, time.UTC)
	worstID := strings.Repeat("\u2028", MaxIDBytes/3) + strings.Repeat(`"`, MaxIDBytes%3)
	for _, data := range []string{
		strings.Repeat("<", 65000),
		`"` + strings.Repeat("<>&", 21000) + `"`,
		`{ "a" : [ 1 , 2 ] ,"b":"\u2028\u2029 \ud83d\ude00"}`,
		"\"\u2028\u2029\"",
		`18446744073709551616`,
		strings.Repeat("[", 500) + strings.Repeat("]", 500),
		`"\ud800"`,
	} {
		if !json.Valid([]byte(data)) {
			data = `"` + data + `"`
		}
		for _, id := range []string{"n-1", worstID} {
			b, err := EncodeNotification(1<<63, id, []byte(data), ts)
			if err != nil {
				t.Fatalf("EncodeNotification(%.20q): %v", data, err)
			}
			if len(b) > len(data)+MaxFrameOverhead {
				t.Errorf("frame of %d bytes for %d bytes of data and a %d-byte id", len(b), len(data), len(id))
			}
			f, err := DecodeServerFrame(b)
			if err != nil || string(f.Data) != data || f.ID != id || f.Seq != 1<<63 {
				t.Fatalf("frame for %.20q does not carry it verbatim: %.80s, %v", data, b, err)
			}
		}
		b, err := EncodeBroadcast([]byte(data), ts)
		if err != nil {
			t.Fatal(err)
		}
		f, err := DecodeServerFrame(b)
		if err != nil || string(f.Data) != data || len(b) > len(data)+MaxFrameOverhead {
			t.Fatalf("broadcast frame for %.20q: %.80s, %v", data, b, err)
		}
	}
	for _, bad := range []string{"", "{", " 1", "1 ", "\xff", `"\xff"`, "1 2", "null x"} {
		if b, err := EncodeNotification(1, "x", []byte(bad), ts); !errors.Is(err, ErrBadData) {
			t.Errorf("EncodeNotification(%q) = %s, %v; want ErrBadData", bad, b, err)
		}
	}
	if _, err := EncodeNotification(1, "bad\x00id", []byte("1"), ts); err == nil {
		t.Error("EncodeNotification with an invalid id succeeded")
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
		{User: "carol", Seq: 44, Epoch: "e", Erased: true},
		{User: "dave", Seq: 12, Epoch: "e", HasContent: true, Prev: 3, ID: "n2", TS: ts, Data: []byte(`2`), Expires: ts.Add(time.Hour), Collapse: "score"},
	} {
		got, err := DecodeDoorbell(d.Header(), d.Body())
		if err != nil {
			t.Fatalf("DecodeDoorbell: %v", err)
		}
		if got.User != d.User || got.Seq != d.Seq || got.Epoch != d.Epoch || got.HasContent != d.HasContent ||
			got.Prev != d.Prev || got.ID != d.ID || !got.TS.Equal(d.TS) || !bytes.Equal(got.Data, d.Data) || got.Erased != d.Erased ||
			!got.Expires.Equal(d.Expires) || got.Collapse != d.Collapse {
			t.Errorf("round trip: got %+v, want %+v", got, d)
		}
	}
}

func TestDecodeDoorbellRejects(t *testing.T) {
	good := Doorbell{User: "alice", Seq: 10, Epoch: "e", HasContent: true, Prev: 7, ID: "n1", TS: time.Now(), Data: []byte(`1`)}
	type msg struct {
		h    Header
		data []byte
	}
	for name, edit := range map[string]func(m *msg){
		"no headers":  func(m *msg) { m.h = nil },
		"bad user":    func(m *msg) { m.h[HeaderUser] = []string{"!!"} },
		"no seq":      func(m *msg) { delete(m.h, HeaderSeq) },
		"seq 0":       func(m *msg) { m.h[HeaderSeq] = []string{"0"} },
		"prev ≥ seq":  func(m *msg) { m.h[HeaderPrev] = []string{"10"} },
		"bad prev":    func(m *msg) { m.h[HeaderPrev] = []string{"x"} },
		"bad ts":      func(m *msg) { m.h[HeaderTS] = []string{"yesterday"} },
		"no id":       func(m *msg) { delete(m.h, HeaderID) },
		"bad data":    func(m *msg) { m.data = []byte("{") },
		"not UTF-8":   func(m *msg) { m.data = []byte("\"\xff\"") },
		"two values":  func(m *msg) { m.data = []byte("1 2") },
		"padded data": func(m *msg) { m.data = []byte(" 1") },
		"bad erase":   func(m *msg) { m.h[HeaderErase] = []string{"yes"} },
		"bad expires": func(m *msg) { m.h[HeaderExpires] = []string{"soon"} },
		"bad key":     func(m *msg) { m.h[HeaderCollapse] = []string{" k"} },
	} {
		m := &msg{good.Header(), good.Body()}
		edit(m)
		if d, err := DecodeDoorbell(m.h, m.data); err == nil {
			t.Errorf("%s: DecodeDoorbell = %+v, want an error", name, d)
		}
	}
}

func FuzzDecodeClientFrame(f *testing.F) {
	for _, s := range []string{`{"type":"auth","token":"t","since":5,"epoch":"e","ring":"r"}`, `{"type":"ack","seq":1}`, `{"type":"ping"}`, `{`, `[]`,
		`{"type":"auth","token":"t","start":"last","last":10}`, `{"type":"auth","token":"t","start":"live"}`} {
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
			switch {
			case fr.Start == StartLast && fr.Last >= 1 && fr.Last <= MaxLast:
			case (fr.Start == StartAll || fr.Start == StartLive) && fr.Last == 0:
			default:
				t.Fatalf("accepted auth with start %q last %d", fr.Start, fr.Last)
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
	f.Add(must(EncodeNotification(1, "x", []byte(`{}`), time.Unix(0, 0))))
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
		h := Header{HeaderUser: {user}, HeaderSeq: {seq}, HeaderTS: {ts}, HeaderID: {id}}
		if prev != "" {
			h[HeaderPrev] = []string{prev}
		}
		d, err := DecodeDoorbell(h, data)
		if err != nil {
			return
		}
		if d.Seq == 0 || ValidateUser(d.User) != nil || (d.HasContent && (d.Prev >= d.Seq || !json.Valid(d.Data))) {
			t.Fatalf("accepted %+v", d)
		}
		// What a gateway accepts, it can always put in a frame.
		if d.HasContent {
			b, err := EncodeNotification(d.Seq, d.ID, d.Data, d.TS)
			if err != nil || len(b) > len(d.Data)+MaxFrameOverhead {
				t.Fatalf("accepted %+v but EncodeNotification: %d bytes, %v", d, len(b), err)
			}
			if f, err := DecodeServerFrame(b); err != nil || !bytes.Equal(f.Data, d.Data) {
				t.Fatalf("frame %s does not carry the data verbatim: %v", b, err)
			}
		}
	})
}

func TestBroadcastRoundTrip(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	frame, err := DecodeBroadcast(BroadcastHeader(ts), []byte(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	f, err := DecodeServerFrame(frame)
	if err != nil || f.Type != TypeBroadcast || string(f.Data) != `{"x":1}` || f.TS != FormatTS(ts) || f.Seq != 0 {
		t.Fatalf("broadcast frame %s: %+v, %v", frame, f, err)
	}
	if _, err := DecodeBroadcast(BroadcastHeader(ts), []byte(`{`)); err == nil {
		t.Fatal("broadcast with bad JSON accepted")
	}
}

// TestDeploymentNames: the default deployment keeps herald's historical
// names; a named one scopes every name, and bad names are refused.
func TestDeploymentNames(t *testing.T) {
	var def Deployment
	for got, want := range map[string]string{
		def.Inbox("alice"): "herald.inbox.YWxpY2U", def.Broadcast(): "herald.broadcast", def.Gateway("gw-1"): "herald.gw.gw-1",
		def.Live("gw-1"): "herald.gw.gw-1.live", def.Stats("gw-1"): "herald.gw.gw-1.stats", def.Stream(): "HERALD_INBOX",
		def.Service(): "herald-gateway", def.Bucket("revocations"): "HERALD_REVOCATIONS",
		InboxSubject("alice"): "herald.inbox.YWxpY2U", GatewaySubject("g"): "herald.gw.g", BroadcastSubject: "herald.broadcast",
	} {
		if got != want {
			t.Errorf("default deployment: %q, want %q", got, want)
		}
	}
	d := Deployment("acme-eu")
	for got, want := range map[string]string{
		d.Inbox("alice"): "herald.acme-eu.inbox.YWxpY2U", d.Broadcast(): "herald.acme-eu.broadcast", d.Gateway("gw-1"): "herald.acme-eu.gw.gw-1",
		d.Live("gw-1"): "herald.acme-eu.gw.gw-1.live", d.Stream(): "HERALD_ACME_EU_INBOX", d.Service(): "herald-acme-eu-gateway",
		d.Bucket("revocations"): "HERALD_ACME_EU_REVOCATIONS",
	} {
		if got != want {
			t.Errorf("deployment acme-eu: %q, want %q", got, want)
		}
	}
	for _, bad := range []Deployment{"Acme", "a.b", "a*", "-a", "a-", "a b", Deployment(strings.Repeat("a", 33)), "ä"} {
		if bad.Validate() == nil {
			t.Errorf("Deployment(%q).Validate() = nil, want an error", string(bad))
		}
	}
	for _, ok := range []Deployment{"", "a", "acme-eu", "x1", Deployment(strings.Repeat("a", 32))} {
		if err := ok.Validate(); err != nil {
			t.Errorf("Deployment(%q).Validate() = %v", string(ok), err)
		}
	}
}
