package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/heraldpush/herald/ring/consul/consultest"
)

// The browser tests drive Debian's Chromium with chromedp against a real
// cluster of real processes: herald dev (Consul, NATS, 3 gateways, 2
// dispatchers), with a restart delay longer than the TTL.

var updateDocs = flag.Bool("update-docs", false, "write the screenshot to docs/screenshot.png")

const (
	portOffset = 12000 // every port below the ephemeral range (32768+), where tests pick random ports
	chromium   = "/usr/bin/chromium"
)

var heraldBin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "herald-web-")
	if err != nil {
		panic(err)
	}
	heraldBin = filepath.Join(dir, "herald")
	if out, err := exec.Command("go", "build", "-o", heraldBin, "../cmd/herald").CombinedOutput(); err != nil {
		panic("building herald: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// devState is the part of herald dev's state file the tests read.
type devState struct {
	APIKey      string   `json:"api_key"`
	Dispatchers []string `json:"dispatchers"`
	Children    []struct {
		Name string `json:"name"`
		Kind string `json:"kind"`
		PID  int    `json:"pid"`
	} `json:"children"`
}

// startDev runs herald dev until the test ends.
func startDev(t *testing.T) devState {
	t.Helper()
	consulBin, err := consultest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	logPath := filepath.Join(dir, "cluster.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// The killed gateway stays down for the whole test: were it restarted,
	// alice's tabs could land back on it instead of on the new owner.
	cmd := exec.Command(heraldBin, "dev", "--port-offset", fmt.Sprint(portOffset), "--dir", dir,
		"--consul", consulBin, "--restart-delay", "10m", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(40 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("herald dev output:\n%s", tail(string(b), 60))
		}
	})
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if b, _ := os.ReadFile(logPath); bytes.Contains(b, []byte("herald dev is up")) {
			break
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("herald dev exited:\n%s", tail(string(b), 60))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("herald dev not up within 2 minutes")
		}
	}
	return readState(t, dir)
}

func readState(t *testing.T, dir string) devState {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st devState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func tail(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}

// browser is one headless Chromium; each tab is a device.
type browser struct {
	t   *testing.T
	ctx context.Context
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("no Chromium at %s (make deps installs it): %v", chromium, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("no-first-run", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		cancelBrowser()
		cancelAlloc()
		t.Fatalf("starting Chromium: %v", err)
	}
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	return &browser{t: t, ctx: bctx}
}

// tab opens a new tab on url.
func (b *browser) tab(url string) *tab {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	// A tab lives as long as the context of its first run: open it on the
	// tab's own context, not under a timeout.
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("opening a tab: %v", err)
	}
	tb := &tab{t: b.t, ctx: ctx}
	tb.do(chromedp.Navigate(url))
	return tb
}

type tab struct {
	t   *testing.T
	ctx context.Context
}

func (tb *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.t.Fatalf("browser: %v", err)
	}
}

// eval runs a JavaScript expression and decodes its value into out.
func (tb *tab) eval(expr string, out any) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](expr))
	if err != nil {
		tb.t.Fatalf("evaluating %s: %v", expr, err)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		tb.t.Fatalf("decoding %s: %v", raw, err)
	}
}

// waitJS waits until a JavaScript predicate is true.
func (tb *tab) waitJS(timeout time.Duration, what, expr string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(timeout))); err != nil {
		var status string
		tb.eval(`document.querySelector('#status')?.textContent ?? ''`, &status)
		tb.t.Fatalf("waiting %v for %s (%s): %v; status %q", timeout, what, expr, err, status)
	}
}

func (tb *tab) text(sel string) string {
	tb.t.Helper()
	var s string
	tb.eval(fmt.Sprintf(`(document.querySelector(%q)?.textContent ?? '').trim()`, sel), &s)
	return s
}

func (tb *tab) signIn(user string) {
	tb.t.Helper()
	tb.do(chromedp.WaitVisible(chromedp.ID("user")), chromedp.SetValue(chromedp.ID("user"), user), chromedp.Click(chromedp.ID("signin")))
	tb.waitJS(30*time.Second, user+" connected", `/\bconnected\b/.test(document.querySelector('#status').textContent)`)
}

// seqs are the notifications the page shows, oldest first.
func (tb *tab) seqs() []uint64 {
	tb.t.Helper()
	var s []uint64
	tb.eval(`[...document.querySelectorAll('#notifications li[data-kind="notification"]')].map(li => Number(li.dataset.seq)).reverse()`, &s)
	return s
}

// frames are the seqs of every raw notification frame the page's client
// received, in order, before its dedupe.
func (tb *tab) frames() []uint64 {
	tb.t.Helper()
	var s []uint64
	tb.eval(`(window.heraldFrames || []).filter(f => f.type === 'notification').map(f => f.seq)`, &s)
	return s
}

func post(t *testing.T, st devState, dispatcher, user, text string) uint64 {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"user": user, "data": map[string]string{"text": text}})
	req, _ := http.NewRequest(http.MethodPost, dispatcher+"/v1/notify", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+st.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res struct {
		Seq uint64 `json:"seq"`
	}
	if resp.StatusCode != http.StatusAccepted || json.NewDecoder(resp.Body).Decode(&res) != nil {
		t.Fatalf("notify %s: status %d", user, resp.StatusCode)
	}
	return res.Seq
}

func TestBrowser(t *testing.T) {
	st := startDev(t)
	page := st.Dispatchers[0]
	b := newBrowser(t)
	run := rand.N(1_000_000)
	aliceUser, bobUser := fmt.Sprintf("alice-%d", run), fmt.Sprintf("bob-%d", run)

	alice := b.tab(page)
	alice.signIn(aliceUser)
	bob := b.tab(page)
	bob.signIn(bobUser)
	phone := b.tab(page) // alice's second device
	phone.signIn(aliceUser)
	gw := alice.text("#gateway")
	if gw == "" || phone.text("#gateway") != gw {
		t.Fatalf("alice's tabs are on %q and %q; both must be on her owner", gw, phone.text("#gateway"))
	}

	// Bob sends alice a notification from the page.
	bob.do(chromedp.SetValue(chromedp.ID("to"), aliceUser), chromedp.SetValue(chromedp.ID("message"), "hello from bob"), chromedp.Click(chromedp.ID("send")))
	bob.waitJS(10*time.Second, "the API response", `/seq/.test(document.querySelector('#response').textContent)`)
	var want []uint64
	for _, tb := range []*tab{alice, phone} {
		tb.waitJS(10*time.Second, "bob's notification", `[...document.querySelectorAll('#notifications li[data-kind="notification"]')].some(li => li.textContent.includes('hello from bob'))`)
	}
	want = alice.seqs()
	if len(want) != 1 || !strings.Contains(bob.text("#response"), fmt.Sprint(want[0])) {
		t.Fatalf("alice shows %v; bob's response %q should carry its seq", want, bob.text("#response"))
	}

	// SIGKILL the gateway process that owns alice.
	var fp string
	alice.eval(`document.querySelector('#ring').dataset.fingerprint`, &fp)
	pid := 0
	for _, c := range st.Children {
		if c.Name == gw {
			pid = c.PID
		}
	}
	if pid == 0 {
		t.Fatalf("no PID for %s in the state file", gw)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	alice.waitJS(10*time.Second, "alice's tab to show reconnecting", `/reconnecting/.test(document.querySelector('#status').textContent)`)
	for i := range 5 {
		want = append(want, post(t, st, st.Dispatchers[i%len(st.Dispatchers)], aliceUser, fmt.Sprintf("sent while %s was down #%d", gw, i)))
	}
	for _, tb := range []*tab{alice, phone} {
		tb.waitJS(60*time.Second, "alice connected to another gateway",
			fmt.Sprintf(`/\bconnected\b/.test(document.querySelector('#status').textContent) && document.querySelector('#gateway').textContent.trim() !== %q && document.querySelector('#gateway').textContent.trim() !== ''`, gw))
	}
	t.Logf("alice re-homed from %s to %s %v after the SIGKILL", gw, alice.text("#gateway"), time.Since(killed).Round(time.Millisecond))
	for _, tb := range []*tab{alice, phone} {
		tb.waitJS(20*time.Second, "every notification", fmt.Sprintf(`document.querySelectorAll('#notifications li[data-kind="notification"]').length >= %d`, len(want)))
		if got := tb.seqs(); !slices.Equal(got, want) {
			t.Fatalf("the page shows %v, want exactly %v, oldest first", got, want)
		}
		if got := tb.frames(); !slices.Equal(got, want) {
			t.Fatalf("the client received raw frames %v, want exactly %v: each once, in order", got, want)
		}
	}

	// The ring view shows the change.
	alice.waitJS(20*time.Second, "the ring view without the killed gateway",
		fmt.Sprintf(`document.querySelector('#ring').dataset.fingerprint !== %q && !document.querySelector('#ring path[data-gateway=%q]')`, fp, gw))
	var owner string
	alice.eval(`document.querySelector('#user-marker').dataset.owner`, &owner)
	if owner != alice.text("#gateway") {
		t.Fatalf("the ring marks alice on %q, her socket is on %q", owner, alice.text("#gateway"))
	}

	// A new tab of alice's starts with her last 10 notifications, shown
	// quietly as backlog (no toast), then caught_up, then live ones.
	for i := range 6 {
		want = append(want, post(t, st, page, aliceUser, fmt.Sprintf("before the new tab #%d", i)))
	}
	alice.waitJS(20*time.Second, "the six", fmt.Sprintf(`document.querySelectorAll('#notifications li[data-kind="notification"]').length >= %d`, len(want)))
	third := b.tab(page)
	third.signIn(aliceUser)
	third.waitJS(20*time.Second, "caught_up", `(window.heraldFrames || []).some(f => f.type === 'caught_up')`)
	var types []string
	third.eval(`window.heraldFrames.map(f => f.type)`, &types)
	wantTypes := append(append([]string{"hello"}, slices.Repeat([]string{"notification"}, 10)...), "caught_up")
	if !slices.Equal(types, wantTypes) {
		t.Fatalf("a new tab's frames %v, want hello, the last 10 notifications, caught_up", types)
	}
	if got := third.seqs(); !slices.Equal(got, want[len(want)-10:]) {
		t.Fatalf("a new tab shows %v, want alice's last 10 %v", got, want[len(want)-10:])
	}
	var quiet bool
	third.eval(`[...document.querySelectorAll('#notifications li[data-kind="notification"]')].every(li => li.dataset.backlog === 'true') && !document.querySelector('#toast').classList.contains('show')`, &quiet)
	if !quiet {
		t.Fatal("the new tab's backlog is not marked backlog, or it raised a toast")
	}
	live := post(t, st, page, aliceUser, "after caught_up")
	third.waitJS(20*time.Second, "the live one, with a toast", fmt.Sprintf(
		`document.querySelector('#notifications li[data-seq="%d"]')?.dataset.backlog === 'false' && document.querySelector('#toast').classList.contains('show')`, live))

	shot, err := chromedp.Run(alice.ctx, chromedp.FullScreenshot(100)) // 100 is PNG; less is JPEG
	if err != nil {
		t.Fatal(err)
	}
	artifacts := os.Getenv("HERALD_ARTIFACTS")
	if artifacts == "" {
		artifacts = filepath.Join(os.TempDir(), "herald-artifacts")
	}
	os.MkdirAll(artifacts, 0o755)
	path := filepath.Join(artifacts, "browser-alice.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	if *updateDocs {
		if err := os.WriteFile("../docs/screenshot.png", shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
