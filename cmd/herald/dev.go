package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// herald dev runs the whole system locally as child processes, as an
// orchestrator would: a Consul dev agent, NATS with JetStream, gateways and
// dispatchers, each restarted after a delay when it exits. A control
// endpoint on loopback lets tools (herald chaos, the browser tests, a
// curious developer) stop, start and restart children and add or remove
// gateways; a state file tells them where everything is.

// devAPIKey is the API key every dev dispatcher accepts, so tools can post
// to any of them.
const devAPIKey = "herald-dev-key"

// Default ports; --port-offset moves them all, so a second cluster (CI's
// chaos run beside a developer's) does not collide.
const (
	devConsulHTTP   = 8500
	devConsulServer = 8300
	devConsulSerf   = 8301 // LAN; WAN is +1
	devNATS         = 4222
	devGateway      = 7001 // gw-1; gw-N is +N-1
	devDispatcher   = 8080 // disp-1; disp-N is +N-1
	devControl      = 8079
	// devAdminOffset puts a child's admin listener (/metrics, pprof) at its
	// port + 1000: disp-1's at 9080. (For gateways, 8001 and up, that stays
	// clear of the control port up to gw-78.)
	devAdminOffset = 1000
)

// adminPort is where the child listening on port has its admin listener.
func adminPort(port int) int { return port + devAdminOffset }

// devState is the state file: where every child is and how it was started.
type devState struct {
	Control     string      `json:"control"`      // control endpoint, host:port
	APIKey      string      `json:"api_key"`      // accepted by every dispatcher
	TokenSecret string      `json:"token_secret"` // signs user tokens (dev only!)
	Dispatchers []string    `json:"dispatchers"`  // base URLs
	ConsulAddr  string      `json:"consul_addr"`
	NATSURL     string      `json:"nats_url"`
	Children    []childInfo `json:"children"`
}

type childInfo struct {
	Name    string   `json:"name"`
	Kind    string   `json:"kind"` // consul, nats, gateway, dispatcher
	PID     int      `json:"pid"`  // 0 while down
	State   string   `json:"state"`
	Ports   []int    `json:"ports"`
	URL     string   `json:"url,omitempty"`
	Admin   string   `json:"admin,omitempty"` // base URL of its admin listener: /metrics, /healthz, /readyz, /debug/pprof/
	Args    []string `json:"args"`
	Starts  int      `json:"starts"`
	Removed bool     `json:"removed,omitempty"`
}

// child is one supervised process.
type child struct {
	info childInfo

	// Guarded by dev.mu.
	cmd       *exec.Cmd
	exited    chan struct{} // closed when the running process has been reaped
	stopping  bool          // a stop was asked for: its exit is not a crash
	restartAt time.Time     // when a down child comes back; zero: stays down
}

type dev struct {
	log          *slog.Logger
	herald       string // this binary
	consulBin    string
	dir          string
	offset       int
	restartDelay time.Duration
	logLevel     string // the children's
	out          io.Writer

	mu       sync.Mutex // guards the following
	children []*child
	nextGW   int
	state    devState
	wake     chan struct{} // the supervisor re-checks restarts
}

func runDev(ctx context.Context, args []string) error {
	fs := newFlagSet("dev", "Run the whole system locally: Consul, NATS, gateways and dispatchers as child processes, restarted when they exit.")
	gateways := fs.Int("gateways", 3, "gateways to start")
	dispatchers := fs.Int("dispatchers", 2, "dispatchers to start")
	restartDelay := fs.Duration("restart-delay", 10*time.Second, "how long after a child exits it is started again (longer than the 6s TTL, so a killed gateway visibly leaves the ring)")
	dir := fs.String("dir", "data/dev", "directory for the state file and NATS's store")
	offset := fs.Int("port-offset", 0, "added to every port (Consul 8500/8300/8301-2, NATS 4222, gateways 7001+, dispatchers 8080+, control 8079; each child's admin listener at its port + 1000)")
	consulBin := fs.String("consul", "", "Consul agent binary (default: consul beside this binary, else bin/consul, else on PATH)")
	logLevel := fs.String("log-level", "info", "children's log level")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *gateways < 1 || *dispatchers < 1 {
		return errors.New("--gateways and --dispatchers must be at least 1")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	d := &dev{
		log:          slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "dev"),
		herald:       self,
		dir:          *dir,
		offset:       *offset,
		restartDelay: *restartDelay,
		out:          os.Stdout,
		wake:         make(chan struct{}, 1),
	}
	if d.consulBin, err = findConsul(*consulBin, self); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(d.dir, "nats"), 0o755); err != nil {
		return err
	}
	d.logLevel = *logLevel
	d.plan(*gateways, *dispatchers)
	if err := d.checkPorts(); err != nil {
		return err
	}
	control, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", devControl+d.offset))
	if err != nil {
		return fmt.Errorf("control endpoint: %w (is another herald dev running?)", err)
	}
	d.state.Control = control.Addr().String()
	srv := &http.Server{Handler: d.controlRoutes(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(control)
	defer srv.Close()

	err = d.startAll(ctx)
	if err == nil {
		d.banner()
		d.supervise(ctx)
	}
	d.stopAll()
	os.Remove(d.statePath())
	return err
}

// findConsul looks for the Consul agent: the flag, beside this binary (both
// live in bin/), bin/consul, then PATH.
func findConsul(flagValue, self string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	for _, p := range []string{filepath.Join(filepath.Dir(self), "consul"), "bin/consul"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("consul"); err == nil {
		return p, nil
	}
	return "", errors.New("no Consul agent: run `make deps` (builds bin/consul) or pass --consul")
}

// plan decides every child's command line.
func (d *dev) plan(gateways, dispatchers int) {
	logLevel := d.logLevel
	o := d.offset
	consulHTTP := devConsulHTTP + o
	natsPort := devNATS + o
	d.state.ConsulAddr = fmt.Sprintf("127.0.0.1:%d", consulHTTP)
	d.state.NATSURL = fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	d.state.APIKey, d.state.TokenSecret = devAPIKey, devSecret
	d.add(&child{info: childInfo{Name: "consul", Kind: "consul",
		Ports: []int{consulHTTP, devConsulServer + o, devConsulSerf + o, devConsulSerf + 1 + o},
		Args: []string{d.consulBin, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-node", "herald-dev",
			"-http-port", strconv.Itoa(consulHTTP), "-dns-port", "-1", "-grpc-port", "-1",
			"-server-port", strconv.Itoa(devConsulServer + o), "-serf-lan-port", strconv.Itoa(devConsulSerf + o),
			"-serf-wan-port", strconv.Itoa(devConsulSerf + 1 + o), "-log-level", "warn"}}})
	d.add(&child{info: childInfo{Name: "nats", Kind: "nats", Ports: []int{natsPort},
		Args: []string{d.herald, "nats", "--addr", fmt.Sprintf("127.0.0.1:%d", natsPort),
			"--store-dir", filepath.Join(d.dir, "nats"), "--log-level", logLevel}}})
	common := []string{"--dev", "--nats-url", d.state.NATSURL, "--consul-addr", d.state.ConsulAddr, "--log-level", logLevel}
	for i := 1; i <= dispatchers; i++ {
		port := devDispatcher + i - 1 + o
		admin := fmt.Sprintf("127.0.0.1:%d", adminPort(port))
		url := fmt.Sprintf("http://127.0.0.1:%d", port)
		d.state.Dispatchers = append(d.state.Dispatchers, url)
		d.add(&child{info: childInfo{Name: "disp-" + strconv.Itoa(i), Kind: "dispatcher", Ports: []int{port, adminPort(port)}, URL: url,
			Admin: "http://" + admin,
			Args: append([]string{d.herald, "dispatcher", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--admin-listen", admin, "--pprof",
				"--api-keys", devAPIKey}, common...)}})
	}
	for range gateways {
		d.add(d.gatewayChild())
	}
}

// gatewayChild plans the next gateway.
func (d *dev) gatewayChild() *child {
	d.nextGW++
	name := "gw-" + strconv.Itoa(d.nextGW)
	port := devGateway + d.nextGW - 1 + d.offset
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	admin := fmt.Sprintf("127.0.0.1:%d", adminPort(port))
	// Every client of a local cluster comes from 127.0.0.1: the cap on
	// sockets waiting to authenticate per address would otherwise throttle
	// a chaos run's reconnects after a crash.
	return &child{info: childInfo{Name: name, Kind: "gateway", Ports: []int{port, adminPort(port)}, URL: "ws://" + listen + "/ws",
		Admin: "http://" + admin,
		Args: []string{d.herald, "gateway", "--id", name, "--listen", listen, "--admin-listen", admin, "--pprof", "--dev",
			"--max-unauthenticated-per-addr", "5000",
			"--nats-url", d.state.NATSURL, "--consul-addr", d.state.ConsulAddr, "--log-level", d.logLevel}}}
}

func (d *dev) add(c *child) {
	d.children = append(d.children, c)
}

// checkPorts fails with a clear message when a port is taken.
func (d *dev) checkPorts() error {
	for _, c := range d.children {
		for _, p := range c.info.Ports {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				return fmt.Errorf("port %d (for %s) is taken: stop what uses it, or use --port-offset", p, c.info.Name)
			}
			l.Close()
		}
	}
	return nil
}

// startAll starts the children in order, waiting for each dependency.
func (d *dev) startAll(ctx context.Context) error {
	for _, c := range d.snapshot() {
		if err := d.start(c); err != nil {
			return err
		}
		var ready func() bool
		switch c.info.Kind {
		case "consul":
			ready = func() bool { return httpOK("http://" + d.state.ConsulAddr + "/v1/status/leader") }
		case "nats":
			ready = func() bool { return dialOK(fmt.Sprintf("127.0.0.1:%d", c.info.Ports[0])) }
		default:
			continue
		}
		if err := waitUntil(ctx, 30*time.Second, ready); err != nil {
			return fmt.Errorf("%s did not come up: %w", c.info.Name, err)
		}
	}
	// Up means every child ready and every dispatcher's ring holding every
	// gateway, so the first users land where they belong.
	return waitUntil(ctx, 60*time.Second, func() bool {
		gateways := 0
		for _, c := range d.snapshot() {
			if c.info.Kind == "gateway" {
				gateways++
				if !httpOK(httpOf(c.info.URL) + "/readyz") {
					return false
				}
			}
		}
		for _, url := range d.state.Dispatchers {
			if !httpOK(url+"/readyz") || ringSize(url) != gateways {
				return false
			}
		}
		return true
	})
}

// ringSize is how many members a dispatcher's ring has; -1 if it cannot tell.
func ringSize(dispatcher string) int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(dispatcher + "/v1/cluster") // dev mode: no API key needed
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var cl struct {
		Members []json.RawMessage `json:"members"`
	}
	if json.NewDecoder(resp.Body).Decode(&cl) != nil {
		return -1
	}
	return len(cl.Members)
}

func (d *dev) banner() {
	fmt.Fprintf(d.out, "\nherald dev is up:\n")
	fmt.Fprintf(d.out, "  demo page      %s\n", d.state.Dispatchers[0])
	fmt.Fprintf(d.out, "  dispatchers    %v (API key %q)\n", d.state.Dispatchers, d.state.APIKey)
	for _, c := range d.snapshot() {
		if c.info.Kind == "gateway" {
			fmt.Fprintf(d.out, "  %-14s %s\n", c.info.Name, c.info.URL)
		}
	}
	for _, c := range d.snapshot() {
		if c.info.Admin != "" {
			fmt.Fprintf(d.out, "  %-14s %s/metrics\n", c.info.Name+" admin", c.info.Admin)
		}
	}
	fmt.Fprintf(d.out, "  Consul UI      http://%s/ui\n", d.state.ConsulAddr)
	fmt.Fprintf(d.out, "  control        http://%s/state   state file %s\n", d.state.Control, d.statePath())
	fmt.Fprintf(d.out, "  try            curl -X POST http://%s/children/gw-1/stop?signal=KILL\n\n", d.state.Control)
	fmt.Fprintf(d.out, "Ctrl-C stops everything.\n")
}

func (d *dev) snapshot() []*child {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.children)
}

func (d *dev) find(name string) *child {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.children {
		if c.info.Name == name && !c.info.Removed {
			return c
		}
	}
	return nil
}

// start starts c's process, with its output prefixed by its name.
func (d *dev) start(c *child) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c.cmd != nil {
		return nil // running
	}
	cmd := exec.Command(c.info.Args[0], c.info.Args[1:]...)
	// Its own process group, so a terminal's Ctrl-C reaches only herald
	// dev, which stops the children in order; killed with herald dev if it
	// dies (no orphans).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("start %s: %w", c.info.Name, err)
	}
	go prefix(d.out, c.info.Name, pr)
	c.cmd, c.exited, c.stopping, c.restartAt = cmd, make(chan struct{}), false, time.Time{}
	c.info.PID, c.info.State = cmd.Process.Pid, "running"
	c.info.Starts++
	exited := c.exited
	go func() {
		err := cmd.Wait()
		pw.Close()
		d.mu.Lock()
		c.cmd, c.info.PID = nil, 0
		if c.stopping || c.info.Removed {
			c.info.State = "stopped"
		} else {
			c.info.State = "restarting"
			c.restartAt = time.Now().Add(d.restartDelay)
			d.log.Warn("child exited; restarting it later", "child", c.info.Name, "error", err, "after", d.restartDelay)
		}
		close(exited)
		d.mu.Unlock()
		d.saveState()
		d.poke()
	}()
	d.saveStateLocked()
	return nil
}

// stop signals c and waits for it to exit (SIGKILL after 15s). If restart
// is positive the child comes back after it; otherwise it stays down.
func (d *dev) stop(c *child, sig syscall.Signal, restart time.Duration) {
	d.mu.Lock()
	cmd, exited := c.cmd, c.exited
	c.stopping = true
	if cmd == nil {
		c.restartAt = time.Time{}
		if restart > 0 {
			c.restartAt = time.Now().Add(restart)
		}
		d.mu.Unlock()
		return
	}
	d.mu.Unlock()
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
	d.mu.Lock()
	if restart > 0 && !c.info.Removed {
		c.restartAt = time.Now().Add(restart)
		c.info.State = "restarting"
	}
	d.mu.Unlock()
	d.saveState()
	d.poke()
}

func (d *dev) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// supervise restarts children whose time has come, until ctx ends.
func (d *dev) supervise(ctx context.Context) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.wake:
		}
		now := time.Now()
		for _, c := range d.snapshot() {
			d.mu.Lock()
			due := c.cmd == nil && !c.info.Removed && !c.restartAt.IsZero() && !now.Before(c.restartAt)
			d.mu.Unlock()
			if due {
				d.log.Info("starting child", "child", c.info.Name)
				if err := d.start(c); err != nil {
					d.log.Error("restart", "child", c.info.Name, "error", err)
				}
			}
		}
	}
}

// stopAll stops dispatchers and gateways (gateways drain), then NATS, then
// Consul.
func (d *dev) stopAll() {
	fmt.Fprintln(d.out, "stopping every child")
	var wg sync.WaitGroup
	for _, c := range d.snapshot() {
		if c.info.Kind == "gateway" || c.info.Kind == "dispatcher" {
			wg.Go(func() { d.stop(c, syscall.SIGTERM, 0) })
		}
	}
	wg.Wait()
	for _, name := range []string{"nats", "consul"} {
		if c := d.find(name); c != nil {
			d.stop(c, syscall.SIGTERM, 0)
		}
	}
}

func (d *dev) statePath() string { return filepath.Join(d.dir, "state.json") }

func (d *dev) saveState() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.saveStateLocked()
}

// saveStateLocked writes the state file and returns the state it wrote.
func (d *dev) saveStateLocked() devState {
	st := d.state
	st.Children = nil
	for _, c := range d.children {
		st.Children = append(st.Children, c.info)
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	tmp := d.statePath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err == nil {
		os.Rename(tmp, d.statePath())
	}
	return st
}

// prefix copies r to w line by line, each line prefixed with name.
func prefix(w io.Writer, name string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	pad := fmt.Sprintf("%-8s| ", name)
	for sc.Scan() {
		fmt.Fprintln(w, pad+sc.Text())
	}
	io.Copy(io.Discard, r)
}

func httpOK(url string) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func dialOK(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// httpOf turns a gateway's ws://host:port/ws into http://host:port.
func httpOf(wsURL string) string {
	u := wsURL
	if len(u) > 5 && u[:5] == "ws://" {
		u = "http://" + u[5:]
	}
	if n := len(u); n > 3 && u[n-3:] == "/ws" {
		u = u[:n-3]
	}
	return u
}

func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}
