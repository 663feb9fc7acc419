package dispatcher

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/heraldpush/herald/gateway/wire"
)

func TestDecodeNotify(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want notification
	}{
		{`{"user":"alice","data":{"a":[1,2]}}`, notification{User: "alice", Data: json.RawMessage(`{"a":[1,2]}`)}},
		{` {"data" : "x", "id":"k-1", "user":"日本"} `, notification{User: "日本", ID: "k-1", Data: json.RawMessage(`"x"`)}},
		{`{"user":"a.b>*","data":0,"id":null}`, notification{User: "a.b>*", Data: json.RawMessage(`0`)}},
		{`{"user":"bob","data":false}`, notification{User: "bob", Data: json.RawMessage(`false`)}},
	} {
		got, err := decodeNotify([]byte(tc.in), 100)
		if err != nil || got.User != tc.want.User || got.ID != tc.want.ID || string(got.Data) != string(tc.want.Data) {
			t.Errorf("decodeNotify(%s) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for in, code := range map[string]Code{
		``:                                    CodeInvalidJSON,
		`null`:                                CodeInvalidJSON,
		`"x"`:                                 CodeInvalidJSON,
		`{"user":"a","data":1}{}`:             CodeInvalidJSON,
		`{"user":"a","data":1,"extra":2}`:     CodeInvalidJSON,
		`{"user":"a","data":[1,}`:             CodeInvalidJSON,
		`{"user":["a"],"data":1}`:             CodeInvalidUser,
		`{"user":"a\u0000","data":1}`:         CodeInvalidUser,
		`{"user":"a","data":1,"id":{}}`:       CodeInvalidID,
		`{"user":"a","data":1,"id":"\u0085"}`: CodeInvalidID,
		`{"user":"a"}`:                        CodeInvalidData,
		`{"user":"a","data":null}`:            CodeInvalidData,
		`{"user":"a","data":"` + strings.Repeat("x", 99) + `"}`: CodePayloadTooLarge,
	} {
		if got, err := decodeNotify([]byte(in), 100); err == nil || err.Code != code {
			t.Errorf("decodeNotify(%s) = %+v, %v; want %s", in, got, err, code)
		}
	}
}

func TestHTTPStatusCoversEveryCode(t *testing.T) {
	for _, c := range []Code{CodeInvalidJSON, CodeInvalidUser, CodeInvalidID, CodeInvalidData, CodeInvalidParameter,
		CodeUnauthorized, CodeNotFound, CodeMethodNotAllowed, CodePayloadTooLarge, CodeBatchTooLarge,
		CodeUnsupportedMedia, CodeRateLimited, CodeUnavailable, CodeUnknownOutcome, CodeStorageFull} {
		if s := httpStatus(c); s == 500 {
			t.Errorf("code %s maps to 500", c)
		}
	}
	if s := httpStatus(CodeInternal); s != 500 {
		t.Errorf("internal maps to %d", s)
	}
}

// FuzzDecodeNotify: the decoder never panics, and whatever it accepts is a
// valid notification within the limits.
func FuzzDecodeNotify(f *testing.F) {
	for _, s := range []string{
		`{"user":"alice","data":{"a":1},"id":"x"}`, `{"user":"a","data":null}`, `{"user":"","data":1}`,
		`{"user":"a","data":1} x`, `{"user":"\u0000","data":1}`, `[]`, `{`, "{\"user\":\"\xff\",\"data\":1}",
		`{"user":"a","data":"` + strings.Repeat("x", 70) + `"}`, `{"user":"a","data":1,"id":""}`,
	} {
		f.Add([]byte(s))
	}
	const maxPayload = 64
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := decodeNotify(b, maxPayload)
		if err != nil {
			if err.Message == "" || httpStatus(err.Code) >= 500 {
				t.Fatalf("refusal %+v: want a client error with a message", err)
			}
			return
		}
		if wire.ValidateUser(n.User) != nil || (n.ID != "" && wire.ValidateID(n.ID) != nil) {
			t.Fatalf("accepted user %q, id %q", n.User, n.ID)
		}
		if len(n.Data) == 0 || len(n.Data) > maxPayload || string(n.Data) == "null" || !json.Valid(n.Data) || !utf8.Valid(n.Data) {
			t.Fatalf("accepted data %q", n.Data)
		}
	})
}

// TestDecodeRefusesAmbiguousKeys: a key twice, or in another case, is
// refused rather than resolved the way encoding/json would (last wins,
// case folded), which is not how every other reader of the body sees it.
func TestDecodeRefusesAmbiguousKeys(t *testing.T) {
	for _, body := range []string{
		`{"user":"alice","data":1,"user":"bob"}`,
		`{"user":"alice","USER":"bob","data":1}`,
		`{"User":"bob","data":1}`,
		`{"user":"alice","data":1,"data":2}`,
		`{"user":"alice","data":1,"id":"a","id":"b"}`,
	} {
		if n, err := decodeNotify([]byte(body), 1<<10); err == nil || err.Code != CodeInvalidJSON {
			t.Errorf("decodeNotify(%s) = %+v, %v; want invalid_json", body, n, err)
		}
	}
	if _, err := decodeNotify([]byte(`{"user":"alice","data":{"user":"x","user":"y"},"id":"a"}`), 1<<10); err != nil {
		t.Errorf("keys inside data are the caller's business: %v", err)
	}
}
