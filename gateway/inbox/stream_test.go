package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// custom is a stream configured otherwise than the defaults in every
// setting a single server can hold.
var custom = inbox.Config{MaxMsgsPerUser: 7, MaxAge: time.Hour, MaxBytes: 1 << 20, MaxMsgSize: 100_000, Duplicates: 30 * time.Second, Storage: "memory"}

// streamSettings are the stream settings of a Config, comparable.
type streamSettings struct {
	MaxMsgsPerUser, MaxBytes int64
	MaxAge, Duplicates       time.Duration
	MaxMsgSize               int32
	Replicas                 int
	Storage                  string
}

func settingsOf(c inbox.Config) streamSettings {
	return streamSettings{MaxMsgsPerUser: c.MaxMsgsPerUser, MaxAge: c.MaxAge, MaxBytes: c.MaxBytes, MaxMsgSize: c.MaxMsgSize,
		Replicas: c.Replicas, Duplicates: c.Duplicates, Storage: c.Storage}
}

// TestEnsureAdoptsUnsetSettings: a dispatcher that leaves the stream's
// settings unset takes the live stream's, and changes nothing; one that
// gives them as they are is accepted too.
func TestEnsureAdoptsUnsetSettings(t *testing.T) {
	s := inboxtest.Run(t)
	nc := appendConn(t, s.URL())
	ensure(t, nc, custom)
	before := streamInfo(t, nc).Config
	_, written := updates(t, s.URL())

	want := settingsOf(custom)
	want.Replicas = 1
	for _, cfg := range []inbox.Config{{}, custom, {Replicas: 1, Storage: "memory"}} {
		l := ensure(t, appendConn(t, s.URL()), cfg)
		if got := settingsOf(l.Config()); got != want {
			t.Errorf("Ensure(%+v): settings %+v, want the stream's %+v", cfg, got, want)
		}
	}
	if n := written(); n != 0 {
		t.Errorf("%d stream updates from dispatchers that changed nothing", n)
	}
	if after := streamInfo(t, nc).Config; !reflect.DeepEqual(after, before) {
		t.Errorf("the stream's configuration changed:\n%+v\nto\n%+v", before, after)
	}
}

// TestEnsureCreatesWithDefaults: on a fresh server, a setting left unset is
// created with its default, MinMsgSize raises the message size.
func TestEnsureCreatesWithDefaults(t *testing.T) {
	s := inboxtest.Run(t)
	nc := appendConn(t, s.URL())
	l := ensure(t, nc, inbox.Config{MaxAge: 90 * time.Second, MinMsgSize: 1 << 20})
	sc := streamInfo(t, nc).Config
	if sc.MaxMsgsPerSubject != 100 || sc.MaxAge != 90*time.Second || sc.MaxBytes != -1 || sc.MaxMsgSize != 1<<20 ||
		sc.Replicas != 1 || sc.Duplicates != 90*time.Second || sc.Storage != jetstream.FileStorage {
		t.Fatalf("created stream: %+v; want the defaults, MaxAge 90s, MaxMsgSize 1MiB and the duplicate window within MaxAge", sc)
	}
	if got, want := settingsOf(l.Config()), (streamSettings{MaxMsgsPerUser: 100, MaxAge: 90 * time.Second, MaxBytes: -1, MaxMsgSize: 1 << 20,
		Replicas: 1, Duplicates: 90 * time.Second, Storage: "file"}); got != want {
		t.Fatalf("Config() = %+v, want %+v", got, want)
	}
}

// TestEnsureRefusesMismatch: each setting a dispatcher gives that the live
// stream has otherwise makes Ensure fail, naming the setting and both
// values, and changes nothing.
func TestEnsureRefusesMismatch(t *testing.T) {
	s := inboxtest.Run(t)
	nc := appendConn(t, s.URL())
	ensure(t, nc, inbox.Config{})
	before := streamInfo(t, nc).Config
	_, written := updates(t, s.URL())
	for _, c := range []struct {
		cfg              inbox.Config
		setting, live, w string
	}{
		{inbox.Config{Replicas: 3}, "replicas", "1", "3"},
		{inbox.Config{MaxMsgsPerUser: 50}, "max-per-user", "100", "50"},
		{inbox.Config{MaxMsgsPerUser: -1}, "max-per-user", "100", "unlimited"},
		{inbox.Config{MaxAge: time.Hour}, "max-age", "168h0m0s", "1h0m0s"},
		{inbox.Config{MaxBytes: 1 << 30}, "max-bytes", "unlimited", "1073741824"},
		{inbox.Config{MaxMsgSize: 1 << 20}, "max-msg-size", "69632", "1048576"},
		{inbox.Config{MinMsgSize: 1 << 20}, "max-msg-size", "69632", "at least 1048576 (MinMsgSize)"},
		{inbox.Config{Duplicates: time.Minute}, "dedupe-window", "2m0s", "1m0s"},
		{inbox.Config{Storage: "memory"}, "storage", "file", "memory"},
	} {
		t.Run(c.setting, func(t *testing.T) {
			_, err := inbox.Ensure(ctx, appendConn(t, s.URL()), c.cfg)
			var mm *inbox.MismatchError
			if !errors.As(err, &mm) {
				t.Fatalf("Ensure(%+v) = %v, want a *MismatchError", c.cfg, err)
			}
			want := []inbox.Diff{{Setting: c.setting, Live: c.live, Want: c.w}}
			if mm.Stream != "HERALD_INBOX" || !reflect.DeepEqual(mm.Diffs, want) {
				t.Fatalf("mismatch %+v, want %+v", mm, want)
			}
			msg := fmt.Sprintf("%s is %s on the stream, %s asked", c.setting, c.live, c.w)
			if !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), "herald stream apply") {
				t.Fatalf("error %q does not say %q and how to change the stream", err, msg)
			}
		})
	}
	// Several at once are all named.
	_, err := inbox.Ensure(ctx, nc, inbox.Config{Replicas: 1, MaxMsgsPerUser: 50, Duplicates: time.Minute})
	var mm *inbox.MismatchError
	if !errors.As(err, &mm) || len(mm.Diffs) != 2 {
		t.Fatalf("Ensure with two settings otherwise: %v, want both named", err)
	}
	t.Logf("the error: %v", err)
	if n := written(); n != 0 {
		t.Errorf("%d stream updates from refused dispatchers", n)
	}
	if after := streamInfo(t, nc).Config; !reflect.DeepEqual(after, before) {
		t.Errorf("the stream's configuration changed:\n%+v\nto\n%+v", before, after)
	}
}

// TestEnsureRefusesAForeignStream: a stream of the log's name that lacks
// what herald needs (its subjects, here) is refused, not rewritten.
func TestEnsureRefusesAForeignStream(t *testing.T) {
	s := inboxtest.Run(t)
	nc := appendConn(t, s.URL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "HERALD_INBOX", Subjects: []string{"orders.>"}}); err != nil {
		t.Fatal(err)
	}
	_, err = inbox.Ensure(ctx, nc, inbox.Config{})
	var mm *inbox.MismatchError
	if !errors.As(err, &mm) || mm.Diffs[0].Setting != "subjects" || mm.Diffs[0].Live != "orders.>" || mm.Diffs[0].Want != wire.InboxPrefix+">" {
		t.Fatalf("Ensure on a stream with other subjects: %v, want a mismatch naming subjects", err)
	}
	if got := streamInfo(t, nc).Config.Subjects; !reflect.DeepEqual(got, []string{"orders.>"}) {
		t.Fatalf("the stream's subjects are now %v", got)
	}
}

// TestApply: on a fresh server Apply creates the stream; then it changes
// exactly the settings given that differ, keeping the others and the
// epoch; the same again writes nothing; a storage change is refused before
// anything is written; Show reads what Apply wrote.
func TestApply(t *testing.T) {
	s := inboxtest.Run(t)
	nc := appendConn(t, s.URL())
	a, err := inbox.Apply(ctx, nc, inbox.Config{MaxAge: time.Hour})
	if err != nil || !a.Created || len(a.Changes) != 0 {
		t.Fatalf("Apply on a fresh server = %+v, %v; want the stream created", a, err)
	}
	epoch := a.Epoch
	_, written := updates(t, s.URL())
	a, err = inbox.Apply(ctx, nc, inbox.Config{MaxMsgsPerUser: 50, Duplicates: time.Minute, MaxBytes: 1 << 30, Replicas: 1})
	want := []inbox.Diff{
		{Setting: "max-per-user", Live: "100", Want: "50"},
		{Setting: "max-bytes", Live: "unlimited", Want: "1073741824"},
		{Setting: "dedupe-window", Live: "2m0s", Want: "1m0s"},
	}
	if err != nil || a.Created || !reflect.DeepEqual(a.Changes, want) || a.Epoch != epoch {
		t.Fatalf("Apply = %+v, %v; want changes %+v and epoch %s", a, err, want, epoch)
	}
	sc := streamInfo(t, nc).Config
	if sc.MaxMsgsPerSubject != 50 || sc.Duplicates != time.Minute || sc.MaxBytes != 1<<30 || sc.MaxAge != time.Hour {
		t.Fatalf("stream after Apply: %+v; want the three changed and MaxAge kept", sc)
	}
	if n := written(); n != 1 {
		t.Fatalf("%d stream updates for one Apply", n)
	}
	if a, err := inbox.Apply(ctx, nc, inbox.Config{MaxMsgsPerUser: 50}); err != nil || len(a.Changes) != 0 || a.Created {
		t.Fatalf("Apply of what the stream has = %+v, %v; want nothing to do", a, err)
	}
	if _, err := inbox.Apply(ctx, nc, inbox.Config{Storage: "memory", MaxMsgsPerUser: 9}); err == nil || !strings.Contains(err.Error(), "storage") {
		t.Fatalf("Apply of a storage change = %v, want a refusal", err)
	}
	if n := written(); n != 1 {
		t.Fatalf("%d stream updates after Applies that had nothing to write", n)
	}
	if sc := streamInfo(t, nc).Config; sc.MaxMsgsPerSubject != 50 {
		t.Fatalf("the refused Apply changed max-per-user to %d", sc.MaxMsgsPerSubject)
	}
	if _, err := inbox.Apply(ctx, nc, inbox.Config{Replicas: -1}); err == nil {
		t.Fatal("Apply of negative replicas was accepted")
	}
	st, err := inbox.Show(ctx, nc, inbox.Config{})
	if err != nil || st.Epoch != epoch {
		t.Fatalf("Show = %+v, %v; want epoch %s", st, err, epoch)
	}
	got := map[string]string{}
	for _, s := range st.Settings {
		got[s.Name] = s.Value
	}
	for name, v := range map[string]string{"replicas": "1", "max-per-user": "50", "max-age": "1h0m0s", "max-bytes": "1073741824",
		"max-msg-size": "69632", "dedupe-window": "1m0s", "storage": "file", "subjects": wire.InboxPrefix + ">",
		"retention": "limits", "discard": "old", "allow-direct": "true"} {
		if got[name] != v {
			t.Errorf("Show: %s = %q, want %q", name, got[name], v)
		}
	}
}

// TestApplyScalesReplicas: a dispatcher that starts on an R1 stream
// without --replicas adopts it; one that asks for R3 is refused; the
// operator's Apply makes it R3, keeping the epoch; after that a dispatcher
// without --replicas adopts R3 and one asking for R1 is refused, so none
// turns the stream back into R1.
func TestApplyScalesReplicas(t *testing.T) {
	_, urls := inboxtest.RunCluster(t, 3)
	nc := appendConn(t, urls)
	l := ensure(t, nc, inbox.Config{})
	mustAppend(t, l, "alice", "a0")
	epoch := l.Epoch()
	var mm *inbox.MismatchError
	if _, err := inbox.Ensure(ctx, nc, inbox.Config{Replicas: 3}); !errors.As(err, &mm) {
		t.Fatalf("Ensure(R3) on an R1 stream = %v, want a mismatch", err)
	}
	a, err := inbox.Apply(ctx, nc, inbox.Config{Replicas: 3})
	if err != nil || !reflect.DeepEqual(a.Changes, []inbox.Diff{{Setting: "replicas", Live: "1", Want: "3"}}) || a.Epoch != epoch {
		t.Fatalf("Apply(R3) = %+v, %v; want replicas 1 → 3 in epoch %s", a, err, epoch)
	}
	waitFor(t, 30*time.Second, "three current replicas", func() bool {
		info := streamInfo(t, nc)
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			return false
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current {
				return false
			}
		}
		return true
	})
	if l2 := ensure(t, appendConn(t, urls), inbox.Config{}); l2.Config().Replicas != 3 || l2.Epoch() != epoch {
		t.Fatalf("a dispatcher without replicas: R%d in epoch %s, want R3 in %s", l2.Config().Replicas, l2.Epoch(), epoch)
	}
	if _, err := inbox.Ensure(ctx, nc, inbox.Config{Replicas: 1}); !errors.As(err, &mm) || !strings.Contains(err.Error(), "replicas is 3 on the stream, 1 asked") {
		t.Fatalf("Ensure(R1) on the R3 stream = %v, want a mismatch", err)
	}
	if r := streamInfo(t, nc).Config.Replicas; r != 3 {
		t.Fatalf("the stream is R%d, want R3", r)
	}
	if got := ids(t, l, "alice"); got != "[a0]" {
		t.Fatalf("alice's log after the scale-up: %s", got)
	}
}

// TestConcurrentFirstStarts: two or three dispatchers start at once on a
// fresh 3-node cluster and ask for an R3 stream. Each must have its log
// well within its deadline: none may wait out a request nobody answers
// (an update, or a stream info, sent while another creates the stream).
// Fresh clusters, several rounds: the race is in the timing.
func TestConcurrentFirstStarts(t *testing.T) {
	for round, n := range []int{2, 3, 3} {
		_, urls := inboxtest.RunCluster(t, 3)
		var wg sync.WaitGroup
		took := make([]time.Duration, n)
		errs := make([]error, n)
		epochs := make([]string, n)
		for i := range n {
			nc := appendConn(t, urls)
			wg.Go(func() {
				c, cancel := context.WithTimeout(ctx, 8*time.Second)
				defer cancel()
				start := time.Now()
				l, err := inbox.Ensure(c, nc, inbox.Config{Replicas: 3})
				took[i], errs[i] = time.Since(start), err
				if err == nil {
					epochs[i] = l.Epoch()
				}
			})
		}
		wg.Wait()
		t.Logf("round %d, %d dispatchers: Ensure took %v", round+1, n, took)
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: dispatcher %d: %v after %v", round+1, i, err, took[i])
			}
			if epochs[i] != epochs[0] {
				t.Fatalf("round %d: epochs %v, want one", round+1, epochs)
			}
		}
	}
}
