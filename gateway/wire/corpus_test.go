package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/pb33f/jsonschema/v6"
)

// corpus is docs/frames.corpus.json: frames every decoder of the protocol
// must accept (valid) or refuse (invalid).
type corpus struct {
	Server, Client struct {
		Valid, Invalid []json.RawMessage
	}
}

// TestFrameCorpus: each frame of the committed corpus is judged alike by
// docs/frames.schema.json and by this package's decoders (the gateway's of
// client frames, the Go client's of server frames; web/herald.test.mjs
// replays the server frames through herald.js). A server frame of an
// unknown type is valid: clients skip it.
func TestFrameCorpus(t *testing.T) {
	b, err := os.ReadFile("../../docs/frames.corpus.json")
	if err != nil {
		t.Fatal(err)
	}
	var c corpus
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	schema, err := os.ReadFile("../../docs/frames.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
	if err != nil {
		t.Fatal(err)
	}
	comp := jsonschema.NewCompiler()
	const url = "frames.schema.json"
	if err := comp.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	server, err := comp.Compile(url + "#/$defs/serverFrame")
	if err != nil {
		t.Fatal(err)
	}
	client, err := comp.Compile(url + "#/$defs/clientFrame")
	if err != nil {
		t.Fatal(err)
	}
	decodeServer := func(b []byte) error {
		if _, err := DecodeServerFrame(b); err != nil && !errors.Is(err, ErrUnknownType) {
			return err
		}
		return nil
	}
	decodeClient := func(b []byte) error { _, err := DecodeClientFrame(b); return err }
	for _, set := range []struct {
		name   string
		schema *jsonschema.Schema
		decode func([]byte) error
		frames []json.RawMessage
		valid  bool
	}{
		{"server", server, decodeServer, c.Server.Valid, true},
		{"server", server, decodeServer, c.Server.Invalid, false},
		{"client", client, decodeClient, c.Client.Valid, true},
		{"client", client, decodeClient, c.Client.Invalid, false},
	} {
		if len(set.frames) < 5 {
			t.Fatalf("%s frames valid=%v: only %d in the corpus", set.name, set.valid, len(set.frames))
		}
		for _, f := range set.frames {
			v, err := jsonschema.UnmarshalJSON(bytes.NewReader(f))
			if err != nil {
				t.Fatal(err)
			}
			serr := set.schema.Validate(v)
			derr := set.decode(f)
			if (serr == nil) != set.valid {
				t.Errorf("%s frame %s: the schema says %v, want valid=%v", set.name, f, serr, set.valid)
			}
			if (derr == nil) != set.valid {
				t.Errorf("%s frame %s: the decoder says %v, want valid=%v", set.name, f, derr, set.valid)
			}
		}
	}
	// What the gateway encodes is valid by the schema too.
	for _, f := range [][]byte{
		Encode(Hello{Type: TypeHello, Gateway: "gw-1", User: "u", Epoch: "e", Start: StartLast, Last: 3}),
		Encode(CaughtUp{Type: TypeCaughtUp}), Encode(Gap{Type: TypeGap, Epoch: "e", After: 1, Next: 2}),
		must(EncodeNotification(1, "i", []byte(`{"a":1}`), time.Unix(1, 0))), PongFrame,
	} {
		v, _ := jsonschema.UnmarshalJSON(bytes.NewReader(f))
		if err := server.Validate(v); err != nil {
			t.Errorf("the gateway's %s fails the schema: %v", f, err)
		}
	}
}
