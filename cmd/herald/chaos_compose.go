package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldpush/herald/ring"
)

// herald chaos --compose drives faults on every engine of the Compose
// cluster (deploy/compose) — NATS nodes, Consul servers, gateways and
// dispatchers — one after another while users are connected and a
// publisher posts at a steady rate, and reports per fault what became of
// the notifications posted from its start until the next one: lost,
// duplicated, reordered, refused as unavailable, left unknown, the sockets
// the servers closed, re-home times and the time until the cluster was
// normal again. It runs in a container on the cluster's networks (the
// compose file's chaos service) and drives Docker through its socket.

// composeFault is one fault of the suite.
type composeFault struct {
	name, what string
	// moves: users move in this fault, so servers may close sockets.
	moves bool
	// refuses: posts may be refused as unavailable or left unknown (and
	// are counted, not failed).
	refuses bool
	inject  func(*composeChaos, context.Context) error
}

// composeStage is one fault as it happened.
type composeStage struct {
	fault                 composeFault
	start, healed, normal time.Time
	note                  string // what the fault observed (e.g. when a dispatcher turned not ready)
	err                   error
}

type composeChaos struct {
	docker   *dockerClient
	project  string
	hold     time.Duration
	stream   string
	run      *chaosRun
	http     *http.Client
	networks map[string]string // edge, nats, consul → the project's network name
	notes    []string          // the current stage's notes
}

var composeFaults = map[string]composeFault{
	"nats-leader-kill": {what: "SIGKILL the NATS node leading the log's stream, 20 s down", inject: (*composeChaos).killStreamLeader},
	"nats-freeze":      {what: "freeze (docker pause) the NATS node with the most clients, 20 s", inject: (*composeChaos).freezeNATS},
	"consul-leader-kill": {what: "SIGKILL the Consul leader for hold + 15 s", inject: func(c *composeChaos, ctx context.Context) error {
		return c.killConsul(ctx, true)
	}},
	"consul-server-kill": {what: "SIGKILL a Consul server that is not the leader for hold + 15 s", inject: func(c *composeChaos, ctx context.Context) error {
		return c.killConsul(ctx, false)
	}},
	"gateway-nats-cut":    {what: "cut a gateway off from NATS, 20 s", moves: true, inject: (*composeChaos).cutGatewayFromNATS},
	"gateway-consul-cut":  {what: "cut a gateway off from Consul for hold + 15 s", inject: (*composeChaos).cutGatewayFromConsul},
	"dispatcher-nats-cut": {what: "cut a dispatcher off from NATS, 20 s", refuses: true, inject: (*composeChaos).cutDispatcherFromNATS},
	"rolling-restart":     {what: "rolling restart of the NATS nodes (lame duck), then of the gateways (drain)", moves: true, inject: (*composeChaos).rollingRestart},
	"nats-all-down":       {what: "the whole NATS cluster down for hold + 15 s", refuses: true, inject: (*composeChaos).natsAllDown},
}

// composeSuites are the fault sequences: short runs in make test, full in
// make chaos-cluster.
var composeSuites = map[string][]string{
	"short": {"nats-leader-kill", "nats-freeze", "consul-leader-kill", "gateway-nats-cut", "gateway-consul-cut",
		"dispatcher-nats-cut", "rolling-restart", "nats-all-down"},
	"full": {"nats-leader-kill", "nats-freeze", "nats-leader-kill", "consul-leader-kill", "consul-server-kill",
		"gateway-nats-cut", "gateway-consul-cut", "nats-leader-kill", "dispatcher-nats-cut", "rolling-restart", "nats-all-down"},
}

type composeConfig struct {
	project, secrets, dockerSocket, suite string
	faults                                []string
	rounds                                int
	hold, normalWithin                    time.Duration
}

func (cc *composeConfig) register(fs *flagSet) {
	fs.StringVar(&cc.project, "project", "", "with --compose, the Compose project (default: the chaos container's own)")
	fs.StringVar(&cc.secrets, "secrets", "/secrets", "with --compose, the cluster's secrets directory (its api-key and token-secret)")
	fs.StringVar(&cc.dockerSocket, "docker-socket", "/var/run/docker.sock", "with --compose, the Docker engine's socket")
	fs.StringVar(&cc.suite, "suite", "short", "with --compose, the fault suite: short (each fault once, the Consul leader only) or full (the NATS leader killed three times, the Consul leader and another server)")
	fs.IntVar(&cc.rounds, "rounds", 1, "with --compose, how many times to run the suite")
	fs.DurationVar(&cc.hold, "hold", 30*time.Second, "with --compose, the cluster's hold period (Consul faults last hold + 15 s)")
	fs.DurationVar(&cc.normalWithin, "normal-within", 2*time.Minute, "with --compose, how long the cluster has to be normal again after a fault")
}

// runComposeChaos runs the suite against the Compose cluster.
func runComposeChaos(ctx context.Context, cfg chaosConfig, cc composeConfig, dispatchers string) error {
	c := &composeChaos{docker: newDockerClient(cc.dockerSocket), project: cc.project, hold: cc.hold,
		http: &http.Client{Timeout: 5 * time.Second}, networks: map[string]string{}}
	if err := c.findProject(ctx); err != nil {
		return err
	}
	var names []string
	for range cc.rounds {
		names = append(names, composeSuites[cc.suite]...)
	}
	if len(cc.faults) > 0 {
		names = cc.faults
	}
	var suite []composeFault
	for _, n := range names {
		f, ok := composeFaults[n]
		if !ok {
			return fmt.Errorf("unknown fault %q: want some of %v", n, slices.Sorted(maps.Keys(composeFaults)))
		}
		f.name = n
		suite = append(suite, f)
	}
	state := devState{Dispatchers: splitList(dispatchers)}
	var err error
	if state.APIKey, err = valueOrFile("api-key", "", filepath.Join(cc.secrets, "api-key")); err != nil {
		return err
	}
	if state.TokenSecret, err = valueOrFile("token-secret", "", filepath.Join(cc.secrets, "token-secret")); err != nil {
		return err
	}
	c.stream = "HERALD_INBOX"
	r := newRun(cfg, state)
	c.run = r
	runID := strconv.FormatUint(cfg.seed%1_000_000, 36)
	fmt.Printf("chaos: Compose project %s: %d users, %.0f notifications/s, faults %v (seed %d)\n",
		c.project, cfg.users, cfg.rate, names, cfg.seed)
	begin := time.Now()
	cctx, stopClients := context.WithCancel(context.Background())
	defer stopClients()
	if err := r.connectUsers(ctx, cctx, runID); err != nil {
		return err
	}
	pctx, stopPublishing := context.WithCancel(ctx)
	published := make(chan struct{})
	go func() { r.publish(pctx, runID); close(published) }()
	var stages []composeStage
	for i, f := range suite {
		if _, err := c.waitNormal(ctx, cc.normalWithin); err != nil {
			stopPublishing()
			<-published
			r.stopUsers(stopClients)
			return fmt.Errorf("before fault %d (%s), the cluster is not normal: %w", i+1, f.name, err)
		}
		st := composeStage{fault: f, start: time.Now()}
		fmt.Printf("chaos: fault %d/%d at %v: %s: %s\n", i+1, len(suite), time.Since(begin).Round(time.Second), f.name, f.what)
		c.notes = nil
		st.err = f.inject(c, ctx)
		st.healed = time.Now()
		if st.err == nil {
			st.normal, st.err = c.waitNormal(ctx, cc.normalWithin)
		}
		st.note = strings.Join(c.notes, "; ")
		stages = append(stages, st)
		fmt.Printf("chaos: fault %d/%d: healed after %v, normal %v later%s\n", i+1, len(suite),
			st.healed.Sub(st.start).Round(time.Second), since(st.healed, st.normal), errSuffix(st.err))
		if st.err != nil {
			break
		}
	}
	// A last quiet stretch, so the last fault's posts have time to land.
	wait(ctx, 2*time.Second)
	stopPublishing()
	<-published
	r.cfg.duration = time.Since(begin)
	late := r.settle()
	r.stopUsers(stopClients)
	return c.report(stages, late, time.Since(begin))
}

func since(from, to time.Time) string {
	if to.IsZero() {
		return "never"
	}
	return to.Sub(from).Round(100 * time.Millisecond).String()
}

func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return " (" + err.Error() + ")"
}

// findProject names the Compose project (by default the one the chaos
// container itself belongs to: its hostname is its ID) and its networks.
func (c *composeChaos) findProject(ctx context.Context) error {
	if c.project == "" {
		host, _ := os.Hostname()
		self, err := c.docker.inspect(ctx, host)
		if err != nil {
			return fmt.Errorf("finding the chaos container's own Compose project (give --project): %w", err)
		}
		c.project = self.Config.Labels["com.docker.compose.project"]
	}
	gw, err := c.container(ctx, "gw-1")
	if err != nil {
		return fmt.Errorf("%w: is deploy/compose's cluster up under that name?", err)
	}
	for name := range gw.NetworkSettings.Networks {
		for _, n := range []string{"edge", "nats", "consul"} {
			if strings.HasSuffix(name, "_"+n) {
				c.networks[n] = name
			}
		}
	}
	if len(c.networks) != 3 {
		return fmt.Errorf("gw-1 is on %v: want the project's edge, nats and consul networks", slices.Sorted(maps.Keys(gw.NetworkSettings.Networks)))
	}
	return nil
}

// container is a service's container, as inspected now.
func (c *composeChaos) container(ctx context.Context, service string) (*dockerContainer, error) {
	return c.docker.service(ctx, c.project, service)
}

// wait sleeps for d unless ctx ends first.
func wait(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func (c *composeChaos) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	c.notes = append(c.notes, s)
	fmt.Println("chaos:   " + s)
}

// getJSON GETs url into out (nil: the answer is not read); a non-2xx
// answer is an error.
func (c *composeChaos) getJSON(ctx context.Context, url string, out any) error {
	return c.fetch(ctx, url, "", out)
}

// fetch is getJSON with key, if not "", as the bearer token.
func (c *composeChaos) fetch(ctx context.Context, url, key string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

var (
	natsNodes     = []string{"nats-1", "nats-2", "nats-3"}
	consulServers = []string{"consul-1", "consul-2", "consul-3"}
	consulAgents  = []string{"agent-gw-1", "agent-gw-2", "agent-gw-3", "agent-disp-1", "agent-disp-2"}
	gatewayNames  = []string{"gw-1", "gw-2", "gw-3"}
)

// waitNormal waits until the cluster is as it was before any fault: every
// NATS node's /healthz says JetStream is current, the Consul servers agree
// on a leader, every dispatcher is ready and sees all three gateways
// passing in the same ring, every user has a socket on its owner, and every
// notification accepted more than a second ago has arrived. It returns when that first held.
func (c *composeChaos) waitNormal(ctx context.Context, within time.Duration) (time.Time, error) {
	deadline := time.Now().Add(within)
	var why string
	for {
		if why = c.abnormal(ctx); why == "" {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("not normal within %v: %s", within, why)
		}
		if err := wait(ctx, 250*time.Millisecond); err != nil {
			return time.Time{}, err
		}
	}
}

// abnormal says what is not yet normal, or "".
func (c *composeChaos) abnormal(ctx context.Context) string {
	for _, n := range natsNodes {
		if err := c.getJSON(ctx, "http://"+n+":8222/healthz", nil); err != nil {
			return n + ": " + err.Error()
		}
	}
	leaders := map[string]bool{}
	for _, s := range append(slices.Clone(consulServers), consulAgents...) {
		var leader string
		if err := c.getJSON(ctx, "http://"+s+":8500/v1/status/leader", &leader); err != nil || leader == "" {
			return s + " knows no Consul leader"
		}
		leaders[leader] = true
	}
	if len(leaders) != 1 {
		return fmt.Sprintf("the Consul servers and agents name %d leaders", len(leaders))
	}
	for _, g := range gatewayNames {
		if err := c.getJSON(ctx, "http://"+g+".edge:7001/readyz", nil); err != nil {
			return g + " is not ready"
		}
	}
	var arcs []ring.Arc
	fingerprints := map[string]bool{}
	for _, d := range c.run.state.Dispatchers {
		if err := c.getJSON(ctx, d+"/readyz", nil); err != nil {
			return d + " is not ready"
		}
		var cl struct {
			Ring     string
			Degraded bool
			Members  []struct{ ID, State string }
			Arcs     []struct {
				Start, End float64
				Gateway    string
			}
		}
		if err := c.fetch(ctx, d+"/v1/cluster", c.run.state.APIKey, &cl); err != nil {
			return err.Error()
		}
		if cl.Degraded {
			return d + " reports its view of Consul degraded"
		}
		fingerprints[cl.Ring] = true
		arcs = arcs[:0]
		for _, a := range cl.Arcs {
			arcs = append(arcs, ring.Arc{Start: a.Start, End: a.End, ID: a.Gateway})
		}
		passing := 0
		for _, m := range cl.Members {
			if m.State == "passing" {
				passing++
			}
		}
		if passing != len(gatewayNames) || len(cl.Members) != len(gatewayNames) {
			return fmt.Sprintf("%s's ring: %v, want %d gateways passing", d, cl.Members, len(gatewayNames))
		}
	}
	if len(fingerprints) != 1 {
		return "the dispatchers' rings differ"
	}
	for _, d := range c.run.devices {
		gw := d.connected()
		if gw == "" {
			return d.user + " has no socket"
		}
		if owner := ring.ArcOwner(arcs, d.user); owner != gw {
			return fmt.Sprintf("%s is on %s, not on its owner %q", d.user, gw, owner)
		}
	}
	if n := c.run.retrying(); n > 0 {
		return fmt.Sprintf("%d posts are still being retried", n)
	}
	if !c.run.allArrived(time.Now().Add(-time.Second)) {
		return "accepted notifications have not all arrived"
	}
	return ""
}

// streamLeader is the NATS node leading the log's stream, from /jsz.
func (c *composeChaos) streamLeader(ctx context.Context) (string, error) {
	var lastErr error
	for _, n := range natsNodes {
		var jsz struct {
			Accounts []struct {
				Streams []struct {
					Name    string `json:"name"`
					Cluster struct {
						Leader string `json:"leader"`
					} `json:"cluster"`
				} `json:"stream_detail"`
			} `json:"account_details"`
		}
		if lastErr = c.getJSON(ctx, "http://"+n+":8222/jsz?streams=true", &jsz); lastErr != nil {
			continue
		}
		for _, a := range jsz.Accounts {
			for _, s := range a.Streams {
				if s.Name == c.stream && s.Cluster.Leader != "" {
					return s.Cluster.Leader, nil
				}
			}
		}
	}
	return "", fmt.Errorf("no NATS node names a leader of stream %s (%v)", c.stream, lastErr)
}

// heal runs a fault's repair even when ctx has ended (a Ctrl-C must not
// leave a node killed, paused or cut off), retrying a failing Docker call
// for up to two minutes.
func heal(ctx context.Context, what string, fix func(context.Context) error) error {
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	for {
		err := fix(hctx)
		if err == nil {
			return nil
		}
		if wait(hctx, time.Second) != nil {
			return fmt.Errorf("healing (%s): %w", what, err)
		}
	}
}

// down stops a service's container for d (kill: SIGKILL; otherwise its
// stop signal, waiting for it to exit), then starts it again.
func (c *composeChaos) down(ctx context.Context, service string, kill bool, d time.Duration) error {
	ct, err := c.container(ctx, service)
	if err != nil {
		return err
	}
	if kill {
		err = c.docker.kill(ctx, ct.ID)
	} else {
		err = c.docker.stop(ctx, ct.ID)
	}
	if err != nil {
		return err
	}
	werr := wait(ctx, d)
	return errors.Join(werr, heal(ctx, "start "+service, func(ctx context.Context) error { return c.docker.start(ctx, ct.ID) }))
}

func (c *composeChaos) killStreamLeader(ctx context.Context) error {
	leader, err := c.streamLeader(ctx)
	if err != nil {
		return err
	}
	c.note("the stream's leader is %s", leader)
	return c.down(ctx, leader, true, 20*time.Second)
}

func (c *composeChaos) freezeNATS(ctx context.Context) error {
	busiest, most := natsNodes[0], -1
	for _, n := range natsNodes {
		var varz struct {
			Connections int `json:"connections"`
		}
		if err := c.getJSON(ctx, "http://"+n+":8222/varz", &varz); err == nil && varz.Connections > most {
			busiest, most = n, varz.Connections
		}
	}
	c.note("froze %s, which had %d clients", busiest, most)
	ct, err := c.container(ctx, busiest)
	if err != nil {
		return err
	}
	if err := c.docker.pause(ctx, ct.ID); err != nil {
		return err
	}
	werr := wait(ctx, 20*time.Second)
	return errors.Join(werr, heal(ctx, "unpause "+busiest, func(ctx context.Context) error { return c.docker.unpause(ctx, ct.ID) }))
}

// killConsul kills the leader (or another server) for hold + 15 s.
func (c *composeChaos) killConsul(ctx context.Context, leader bool) error {
	var addr string
	if err := c.getJSON(ctx, "http://consul-1:8500/v1/status/leader", &addr); err != nil || addr == "" {
		return fmt.Errorf("no Consul leader: %v", err)
	}
	ip, _, _ := net.SplitHostPort(addr)
	var leaders, others []string
	for _, s := range consulServers {
		ct, err := c.container(ctx, s)
		if err != nil {
			return err
		}
		if ct.NetworkSettings.Networks[c.networks["consul"]].IPAddress == ip {
			leaders = append(leaders, s)
		} else {
			others = append(others, s)
		}
	}
	if len(leaders) != 1 {
		return fmt.Errorf("the leader %s is not exactly one Consul server's address (%v)", addr, leaders)
	}
	target := others[0]
	if leader {
		target = leaders[0]
	}
	c.note("killed %s (the leader is %s)", target, addr)
	return c.down(ctx, target, true, c.hold+15*time.Second)
}

// cut disconnects a service from one of the project's networks for d.
func (c *composeChaos) cut(ctx context.Context, service, network string, d time.Duration, during func(context.Context) error) error {
	ct, err := c.container(ctx, service)
	if err != nil {
		return err
	}
	reconnect, err := c.docker.disconnect(ctx, c.networks[network], ct.ID)
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var derr error
	if during != nil {
		derr = during(dctx)
	}
	<-dctx.Done()
	return errors.Join(derr, ctx.Err(), heal(ctx, "reconnect "+service+" to "+network, reconnect))
}

func (c *composeChaos) cutGatewayFromNATS(ctx context.Context) error {
	c.note("cut gw-2 off from NATS")
	return c.cut(ctx, "gw-2", "nats", 20*time.Second, nil)
}

func (c *composeChaos) cutGatewayFromConsul(ctx context.Context) error {
	c.note("cut gw-3 off from Consul")
	return c.cut(ctx, "gw-3", "consul", c.hold+15*time.Second, nil)
}

// cutDispatcherFromNATS also checks that the dispatcher reports not ready
// (a load balancer then stops sending to it) while cut off.
func (c *composeChaos) cutDispatcherFromNATS(ctx context.Context) error {
	start := time.Now()
	return c.cut(ctx, "disp-2", "nats", 20*time.Second, func(ctx context.Context) error {
		for ctx.Err() == nil {
			if err := c.getJSON(ctx, "http://disp-2.edge:8080/readyz", nil); err != nil {
				c.note("cut disp-2 off from NATS: not ready after %v", time.Since(start).Round(100*time.Millisecond))
				return nil
			}
			wait(ctx, 100*time.Millisecond)
		}
		return errors.New("disp-2 stayed ready while cut off from NATS")
	})
}

// rollingRestart restarts the NATS nodes one by one, each with its stop
// signal (lame duck), the next only once the last one's /healthz says
// JetStream is current; then the gateways, each drained by docker stop,
// the next only once the ring has all three again.
func (c *composeChaos) rollingRestart(ctx context.Context) error {
	for _, n := range natsNodes {
		t := time.Now()
		if err := c.down(ctx, n, false, 0); err != nil {
			return err
		}
		stopped := time.Since(t)
		var herr error
		if err := waitUntil(ctx, 2*time.Minute, func() bool {
			herr = c.getJSON(ctx, "http://"+n+":8222/healthz", nil)
			return herr == nil
		}); err != nil {
			return fmt.Errorf("%s after its restart: %w (%v)", n, err, herr)
		}
		c.note("%s: stopped in %v, current %v later", n, stopped.Round(100*time.Millisecond), (time.Since(t) - stopped).Round(100*time.Millisecond))
	}
	for _, g := range gatewayNames {
		t := time.Now()
		if err := c.down(ctx, g, false, 0); err != nil {
			return err
		}
		stopped := time.Since(t)
		if _, err := c.waitNormal(ctx, 2*time.Minute); err != nil {
			return fmt.Errorf("%s after its restart: %w", g, err)
		}
		c.note("%s: drained in %v, normal %v later", g, stopped.Round(100*time.Millisecond), (time.Since(t) - stopped).Round(100*time.Millisecond))
	}
	return nil
}

func (c *composeChaos) natsAllDown(ctx context.Context) error {
	var ids []string
	for _, n := range natsNodes {
		ct, err := c.container(ctx, n)
		if err != nil {
			return err
		}
		ids = append(ids, ct.ID)
	}
	var errs []error
	for _, id := range ids {
		errs = append(errs, c.docker.kill(ctx, id))
	}
	errs = append(errs, wait(ctx, c.hold+15*time.Second))
	for i, id := range ids {
		errs = append(errs, heal(ctx, "start "+natsNodes[i], func(ctx context.Context) error { return c.docker.start(ctx, id) }))
	}
	return errors.Join(errs...)
}

// report prints the table per fault and fails the run on any violation.
func (c *composeChaos) report(stages []composeStage, late bool, took time.Duration) error {
	bounds := make([]time.Time, len(stages))
	for i, st := range stages {
		bounds[i] = st.start
	}
	ts := c.run.tallies(bounds)
	fmt.Printf("\nchaos report: %d faults in %v; %d notifications accepted\n\n", len(stages), took.Round(time.Second), c.run.count())
	fmt.Println("| # | fault | accepted | lost | dup | reordered | unavailable | unknown_outcome | sockets closed (code×n) | re-home p50 / p99 | time to normal |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	var problems []string
	row := func(i int, name string, t chaosTally, normal string) {
		fmt.Printf("| %d | %s | %d | %d | %d | %d | %d | %d | %s | %v / %v | %s |\n", i, name, t.accepted, t.lost, t.dups+t.storedTwice, t.disorder,
			t.unavailable, t.unknown, t.closeCodes(), t.rehome(.5), t.rehome(.99), normal)
	}
	row(0, "before the first fault", ts[0], "-")
	for _, p := range ts[0].problems() {
		problems = append(problems, "before the first fault: "+p)
	}
	for i, st := range stages {
		t := ts[i+1]
		row(i+1, st.fault.name, t, since(st.healed, st.normal))
		bad := t.problems()
		if !st.fault.refuses && (t.unavailable > 0 || t.unknown > 0) {
			bad = append(bad, fmt.Sprintf("%d unavailable and %d unknown_outcome (first answers: %s)", t.unavailable, t.unknown, t.unknownKinds()))
		}
		if !st.fault.moves && t.closed() > 0 {
			bad = append(bad, fmt.Sprintf("sockets closed: %s", t.closeCodes()))
		}
		if st.err != nil {
			bad = append(bad, st.err.Error())
		}
		for _, b := range bad {
			problems = append(problems, fmt.Sprintf("fault %d (%s): %s", i+1, st.fault.name, b))
		}
	}
	fmt.Println()
	for i, st := range stages {
		if st.note != "" {
			fmt.Printf("  %d %s: %s\n", i+1, st.fault.name, st.note)
		}
	}
	return c.run.verdict(problems, late)
}
