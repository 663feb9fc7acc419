package inboxtest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LoseTail makes stream lose acknowledged messages, as a single replica
// does whose last writes never reached the disk: it stops the server, cuts
// the stream's last message block in half, removes the stream state file
// the server would otherwise trust, and starts the server again. It fails
// the test unless the stream's last seq went down, and returns it before
// and after.
func (s *Server) LoseTail(stream string) (before, after uint64) {
	s.tb.Helper()
	before = s.lastSeq(stream)
	dir := filepath.Join(s.StoreDir(), "$G", "streams", stream, "msgs")
	s.Stop()
	blocks, err := filepath.Glob(filepath.Join(dir, "*.blk"))
	if err != nil || len(blocks) == 0 {
		s.tb.Fatalf("inboxtest: no message blocks in %s: %v", dir, err)
	}
	index := func(p string) int {
		n, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(p), ".blk"))
		return n
	}
	last := slices.MaxFunc(blocks, func(a, b string) int { return index(a) - index(b) })
	fi, err := os.Stat(last)
	if err != nil {
		s.tb.Fatal(err)
	}
	if err := os.Truncate(last, fi.Size()/2); err != nil {
		s.tb.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "index.db")); err != nil && !os.IsNotExist(err) {
		s.tb.Fatal(err)
	}
	s.Start()
	if after = s.lastSeq(stream); after >= before {
		s.tb.Fatalf("inboxtest: the stream's last seq is %d after cutting its tail, was %d", after, before)
	}
	return before, after
}

func (s *Server) lastSeq(stream string) uint64 {
	s.tb.Helper()
	nc, err := nats.Connect(s.URL())
	if err != nil {
		s.tb.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		s.tb.Fatal(err)
	}
	st, err := js.Stream(context.Background(), stream)
	if err != nil {
		s.tb.Fatal(err)
	}
	return st.CachedInfo().State.LastSeq
}
