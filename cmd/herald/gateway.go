package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"

	"github.com/heraldpush/herald/gateway"
)

func runGateway(ctx context.Context, args []string) error {
	fs := newFlagSet("gateway", "Run a gateway: the WebSocket server that holds users' sockets and delivers their notifications.")
	var c common
	c.register(fs)
	d := gateway.Config{}
	listen := fs.String("listen", "127.0.0.1:7001", "WebSocket and health listen address")
	adminListen := fs.String("admin-listen", "", "listen address of /metrics, /healthz, /readyz and, with --pprof, /debug/pprof/; keep it off the public network (default: none, and no metrics)")
	fs.envVar("admin-listen", "HERALD_GATEWAY_ADMIN_LISTEN")
	fs.BoolVar(&d.Pprof, "pprof", false, "serve net/http/pprof's profiles on the admin listener")
	fs.envVar("pprof", "HERALD_GATEWAY_PPROF")
	id := fs.String("id", "", "gateway ID, [A-Za-z0-9_-]{1,64}, unique in the cluster (default: hostname-port)")
	fs.StringVar(&d.PublicURL, "public-url", "", "WebSocket URL clients use to reach this gateway (default: ws://<listen address>/ws)")
	fs.IntVar(&d.Weight, "weight", 1, "ring weight, 1 to 16")
	fs.StringVar(&d.Log.Stream, "stream", "", "JetStream stream of the users' logs (default: the deployment's, HERALD_INBOX without one)")
	fs.DurationVar(&d.TTL, "ttl", 0, "Consul check TTL (default 6s)")
	fs.DurationVar(&d.Watch.Hold, "hold", 0, "how long a member that stops passing but still answers stays in the ring (default 30s)")
	origins := fs.String("origins", "", "comma-separated browser origin patterns allowed to connect (e.g. app.example.com, *.example.com); with --dev and none given, 127.0.0.1:* and localhost:*")
	fs.DurationVar(&d.AuthTimeout, "auth-timeout", 0, "time a socket has to send its auth frame (default 5s)")
	fs.DurationVar(&d.WriteTimeout, "write-timeout", 0, "a write taking longer closes the socket with 4008 (default 10s)")
	fs.DurationVar(&d.PingInterval, "ping-interval", 0, "interval of WebSocket pings (default 30s)")
	fs.IntVar(&d.MaxSocketsPerUser, "max-sockets-per-user", 0, "sockets per user (default 8)")
	fs.Float64Var(&d.ConnectsPerUser, "connects-per-user", 0, "each user's sustained connects per second on this gateway; more are closed with 4009 (default 1)")
	fs.IntVar(&d.ConnectBurst, "connect-burst", 0, "each user's connect burst (default twice --max-sockets-per-user)")
	fs.IntVar(&d.MaxUnauthenticated, "max-unauthenticated", 0, "sockets that have not sent their auth frame yet; more are closed with 1013 (default 2000)")
	fs.IntVar(&d.MaxUnauthenticatedPerAddr, "max-unauthenticated-per-addr", 0, "sockets from one client address that have not sent their auth frame yet (default 200)")
	trusted := fs.String("trusted-proxies", "", "comma-separated addresses or CIDRs of proxies whose X-Forwarded-For names the client address (default: none, the header is ignored)")
	fs.IntVar(&d.MaxSockets, "max-sockets", 0, "sockets on this gateway (default 19000)")
	fs.Int64Var(&d.MaxFrameBytes, "max-frame-bytes", 0, "largest frame a client may send (default 4096)")
	fs.IntVar(&d.BufferSize, "buffer", 0, "recent frames kept per connected user (default 64)")
	fs.IntVar(&d.BufferBytes, "buffer-bytes", 0, "bytes of recent frames kept per connected user (default 262144)")
	fs.IntVar(&d.MaxReplays, "max-replays", 0, "concurrent log reads for sockets catching up (default 64)")
	fs.DurationVar(&d.AntiEntropy, "anti-entropy", 0, "period of the full re-read of connected users' log heads (default 10s)")
	fs.DurationVar(&d.MoveWindow, "move-window", 0, "moves after a ring change are spread over this window; give dispatchers the same (default 5s)")
	fs.IntVar(&d.MovesPerSecond, "moves-per-second", 0, "cap on moves per second (default 1000)")
	fs.DurationVar(&d.DrainConverge, "drain-converge", 0, "on SIGTERM, how long to wait after leaving Consul before moving users (default 2s)")
	fs.DurationVar(&d.DrainTimeout, "drain-timeout", 0, "on SIGTERM, the longest a drain takes before the gateway exits (default 30s)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := c.checkDev(nil, *listen, *adminListen); err != nil {
		return err
	}
	if d.Pprof && *adminListen == "" {
		return errors.New("--pprof needs --admin-listen: profiles are served only on the admin listener")
	}
	d.AdminAddr, d.TrustedProxies = *adminListen, splitList(*trusted)
	deployment, err := c.deploymentName()
	if err != nil {
		return err
	}
	d.Deployment = deployment
	d.TokenAudience, d.TokenIssuer = c.tokenAudience, c.tokenIssuer
	log, err := c.logger("gateway")
	if err != nil {
		return err
	}
	if d.TokenSecrets, err = c.tokenSecrets(); err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(*listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	if d.PublicURL == "" {
		if host == "" || host == "0.0.0.0" || host == "::" {
			if host, err = os.Hostname(); err != nil {
				return err
			}
		}
		d.PublicURL = "ws://" + net.JoinHostPort(host, port) + "/ws"
	}
	d.ID = *id
	if d.ID == "" {
		h, _ := os.Hostname()
		d.ID = regexp.MustCompile(`[^A-Za-z0-9_-]`).ReplaceAllString(h, "-") + "-" + port
	}
	d.OriginPatterns = splitList(*origins)
	if len(d.OriginPatterns) == 0 && c.dev {
		// The demo page is served by a dispatcher on another port.
		d.OriginPatterns = []string{"127.0.0.1:*", "localhost:*"}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	d.Listener, d.Version, d.Logger = ln, version, log.With("gateway", d.ID)
	if d.NATS, err = c.connectNATS("herald gateway "+d.ID, log); err != nil {
		return err
	}
	defer d.NATS.Close()
	if d.Consul, err = c.consul(); err != nil {
		return err
	}
	g, err := gateway.New(d)
	if err != nil {
		return err
	}
	log.Info("gateway starting", "id", d.ID, "listen", ln.Addr().String(), "public_url", d.PublicURL)
	// The first signal drains (deregister, move every user, exit); the
	// second stops at once.
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		select {
		case <-ctx.Done():
			log.Info("draining; a second signal stops at once")
			g.Drain()
		case <-runCtx.Done():
			return
		}
		select {
		case <-hardStop:
			stop()
		case <-runCtx.Done():
		}
	}()
	return g.Run(runCtx)
}
