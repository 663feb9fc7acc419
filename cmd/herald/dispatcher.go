package main

import (
	"context"
	"errors"
	"net"

	"github.com/heraldpush/herald/dispatcher"
	"github.com/heraldpush/herald/web"
	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"
)

func runDispatcher(ctx context.Context, args []string) error {
	fs := newFlagSet("dispatcher", "Run a dispatcher: the stateless HTTP API that stores notifications in each user's log and rings the user's gateway.\n\n"+
		"The stream settings (--replicas to --storage) left unset are the live stream's; one given that the live stream\n"+
		"has otherwise stops the dispatcher at startup. Change a live stream with herald stream apply.")
	var c common
	c.register(fs)
	var d dispatcher.Config
	listen := fs.String("listen", "127.0.0.1:8080", "HTTP listen address of the API")
	adminListen := fs.String("admin-listen", "", "listen address of /metrics, /healthz, /readyz and, with --pprof, /debug/pprof/; keep it off the public network (default: none, and no metrics)")
	fs.envVar("admin-listen", "HERALD_DISPATCHER_ADMIN_LISTEN")
	fs.BoolVar(&d.Pprof, "pprof", false, "serve net/http/pprof's profiles on the admin listener")
	fs.envVar("pprof", "HERALD_DISPATCHER_PPROF")
	apiKeys := fs.String("api-keys", "", "comma-separated API keys for the publishing endpoints (required unless --dev)")
	apiKeysFile := fs.String("api-keys-file", "", "file holding the API keys, one per line or comma-separated (e.g. a mounted secret), instead of --api-keys")
	fs.StringVar(&d.Log.Stream, "stream", "", "JetStream stream of the users' logs (default: the deployment's, HERALD_INBOX without one)")
	streamFlags(fs, &d.Log)
	fs.DurationVar(&d.Log.AppendTimeout, "append-timeout", 0, "deadline of one append, retries included: long enough to ride out a JetStream leader election (default 15s)")
	fs.IntVar(&d.Log.MaxAppends, "max-appends", 0, "appends in flight at once; beyond it a notification gets 503 unavailable at once (default 4096)")
	fs.DurationVar(&d.Watch.Hold, "hold", 0, "how long a member that stops passing but still answers stays in the ring (default 30s)")
	rateLimit := fs.Float64("rate-limit", 0, "notifications per second per API key, each batch item counting as one (default 1000)")
	fs.IntVar(&d.RateBurst, "rate-burst", 0, "burst of the per-key rate limit (default 2000)")
	fs.IntVar(&d.MaxPayload, "max-payload", 0, "largest notification data in bytes (default 65536)")
	fs.IntVar(&d.MaxBatch, "max-batch", 0, "notifications per batch request (default 100)")
	fs.DurationVar(&d.MoveWindow, "move-window", 0, "the gateways' move window: after a ring change, both owners of a moved user are rung for it plus 2s (default 5s)")
	fs.DurationVar(&d.ConnectHold, "connect-hold", 0, "how long /v1/connect?unreachable=<owner> waits for the ring to name another owner; at most 9s (clients give up after 10s), negative: never (default 8s)")
	if err := parse(fs, args); err != nil {
		return err
	}
	keys, err := splitListOrFile("api-keys", *apiKeys, *apiKeysFile)
	if err != nil {
		return err
	}
	d.APIKeys = keys
	if c.dev && *apiKeysFile != "" {
		return errors.New("--dev refused with --api-keys-file: dev mode hands the API key to anyone who asks; use real keys without --dev")
	}
	if err := c.checkDev(d.APIKeys, *listen, *adminListen); err != nil {
		return err
	}
	if d.Pprof && *adminListen == "" {
		return errors.New("--pprof needs --admin-listen: profiles are served only on the admin listener")
	}
	log, err := c.logger("dispatcher")
	if err != nil {
		return err
	}
	if d.TokenSecrets, err = c.tokenSecrets(); err != nil {
		return err
	}
	d.TokenAudience, d.TokenIssuer = c.tokenAudience, c.tokenIssuer
	d.Dev, d.RateLimit, d.Logger = c.dev, rate.Limit(*rateLimit), log
	if d.Deployment, err = c.deploymentName(); err != nil {
		return err
	}
	if d.Dev {
		d.Page, d.PagePaths = web.Handler(), web.Paths
	}
	if d.Listener, err = net.Listen("tcp", *listen); err != nil {
		return err
	}
	d.AdminAddr = *adminListen // Run listens on it, and fails if it is taken
	// Appends must not buffer while reconnecting: a publish then fails at
	// once, and the API can say the notification was not stored.
	if d.NATS, err = c.connectNATS("herald dispatcher "+*listen, log, nats.ReconnectBufSize(-1)); err != nil {
		return err
	}
	defer d.NATS.Close()
	if d.Consul, err = c.consul(); err != nil {
		return err
	}
	disp, err := dispatcher.New(d)
	if err != nil {
		return err
	}
	log.Info("dispatcher starting", "listen", d.Listener.Addr().String(), "admin_listen", *adminListen, "dev", d.Dev)
	return disp.Run(ctx)
}
