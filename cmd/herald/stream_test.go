package main

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/inbox/inboxtest"
	"github.com/nats-io/nats.go/jetstream"
)

// herald runs the herald binary with args, and its environment plus env,
// and returns what it printed; the test fails if it runs for 30s.
func herald(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, heraldBin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("herald %s ran for 30s:\n%s", strings.Join(args, " "), out)
	}
	return string(out), err
}

// setting finds "name value" in herald stream's output.
func setting(out, name string) string {
	m := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(name) + ` +(.*)$`).FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return m[1]
}

// TestStreamApply runs herald stream apply and show against a real NATS
// server: apply creates the stream, then changes only the settings given,
// printing each one's old and new value and keeping the epoch; the same
// again writes nothing; show prints the live settings and the epoch. A
// dispatcher given a setting the stream has otherwise, by flag or by
// environment, refuses to start, naming it and both values; one given
// none serves the stream as it is.
func TestStreamApply(t *testing.T) {
	s := inboxtest.Run(t)
	url := "--nats-url=" + s.URL()
	nc := inboxtest.Connect(t, s.URL())
	live := func() jetstream.StreamConfig {
		t.Helper()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		st, err := js.Stream(context.Background(), "HERALD_INBOX")
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config
	}

	if out, err := herald(t, nil, "stream", "show", url, "--timeout=2s"); err == nil || !strings.Contains(out, "stream not found") {
		t.Fatalf("show before the stream exists: %v\n%s", err, out)
	}
	out, err := herald(t, nil, "stream", "apply", url, "--max-per-user=50")
	if err != nil || !strings.Contains(out, "stream HERALD_INBOX created") || setting(out, "max-per-user") != "50" || setting(out, "replicas") != "1" {
		t.Fatalf("apply on a fresh server: %v\n%s", err, out)
	}
	l, err := inbox.Open(context.Background(), nc, inbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	epoch := l.Epoch()

	out, err = herald(t, nil, "stream", "apply", url, "--max-per-user=70", "--dedupe-window=1m", "--max-age=168h")
	if err != nil || !strings.Contains(out, "changed, epoch "+epoch+" kept") ||
		setting(out, "max-per-user") != "50 -> 70" || setting(out, "dedupe-window") != "2m0s -> 1m0s" || strings.Contains(out, "max-age") {
		t.Fatalf("apply of two changes (and one setting as it is): %v\n%s", err, out)
	}
	if sc := live(); sc.MaxMsgsPerSubject != 70 || sc.Duplicates != time.Minute || sc.MaxAge != 168*time.Hour {
		t.Fatalf("the stream after apply: %+v", sc)
	}
	out, err = herald(t, []string{"HERALD_MAX_PER_USER=70"}, "stream", "apply", url)
	if err != nil || !strings.Contains(out, "nothing was written") {
		t.Fatalf("apply of what the stream has: %v\n%s", err, out)
	}
	if out, err := herald(t, nil, "stream", "apply", url, "--storage=memory"); err == nil || !strings.Contains(out, "cannot change a live stream's storage") {
		t.Fatalf("apply of a storage change: %v\n%s", err, out)
	}
	if out, err := herald(t, nil, "stream", "apply", url, "--replicas=-1"); err == nil || !strings.Contains(out, "negative Replicas") {
		t.Fatalf("apply of negative replicas: %v\n%s", err, out)
	}
	out, err = herald(t, nil, "stream", "show", url)
	if err != nil || setting(out, "epoch") != epoch || setting(out, "max-per-user") != "70" || setting(out, "dedupe-window") != "1m0s" ||
		!strings.Contains(setting(out, "messages"), "0 (") {
		t.Fatalf("show: %v\n%s", err, out)
	}
	t.Logf("herald stream show:\n%s", out)

	dispatcher := []string{"dispatcher", url, "--listen=127.0.0.1:0", "--consul-addr=127.0.0.1:1", "--api-keys=k",
		"--token-secrets=0123456789abcdef0123456789abcdef"}
	for _, c := range []struct {
		env  []string
		args []string
	}{
		{nil, []string{"--max-per-user=50"}},
		{[]string{"HERALD_MAX_PER_USER=50"}, nil},
	} {
		out, err := herald(t, c.env, append(dispatcher, c.args...)...)
		if err == nil || !strings.Contains(out, "max-per-user is 70 on the stream, 50 asked") {
			t.Errorf("dispatcher %v %v on a stream keeping 70 per user: %v\n%s\nwant it to refuse to start", c.env, c.args, err, out)
		}
	}
	if sc := live(); sc.MaxMsgsPerSubject != 70 {
		t.Fatalf("a refused dispatcher changed max-per-user to %d", sc.MaxMsgsPerSubject)
	}

	// Without stream flags, a dispatcher adopts the stream and serves.
	var logs lockedBuffer
	cmd := exec.Command(heraldBin, dispatcher...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(30 * time.Second)
	for !strings.Contains(logs.String(), "log ready") {
		select {
		case err := <-exited:
			t.Fatalf("dispatcher without stream flags exited: %v\n%s", err, logs.String())
		case <-deadline:
			cmd.Process.Kill()
			<-exited
			t.Fatalf("dispatcher without stream flags: no log within 30s\n%s", logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := <-exited; err != nil {
		t.Errorf("dispatcher after SIGTERM: %v\n%s", err, logs.String())
	}
	if got := logs.String(); !strings.Contains(got, "max_per_user=70") || !strings.Contains(got, "dedupe_window=1m0s") {
		t.Errorf("the dispatcher's log settings are not the stream's:\n%s", got)
	}
	if sc := live(); sc.MaxMsgsPerSubject != 70 || sc.Duplicates != time.Minute {
		t.Fatalf("a dispatcher without stream flags changed the stream: %+v", sc)
	}
}
