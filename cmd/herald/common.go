package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nats-io/nats.go"
)

// devSecret signs and verifies user tokens when --dev is given without
// secrets. It is public: never use --dev in production.
const devSecret = "herald-dev-secret-never-use-this-in-production"

// common holds the flags every long-running subcommand has.
type common struct {
	logLevel      string
	logFormat     string
	natsURL       string
	consulAddr    string
	secrets       string
	tokenAudience string
	tokenIssuer   string
	dev           bool
}

func (c *common) register(fs *flagSet) {
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.natsURL, "nats-url", "nats://127.0.0.1:4222", "NATS server URLs, comma-separated")
	fs.StringVar(&c.consulAddr, "consul-addr", "127.0.0.1:8500", "Consul agent HTTP address")
	fs.StringVar(&c.secrets, "token-secrets", "", "comma-separated secrets (≥ 32 bytes each) that user tokens may be signed with; the first signs dev tokens")
	fs.StringVar(&c.tokenAudience, "token-audience", "", `if set, user tokens must carry it in "aud" (give dispatchers and gateways the same)`)
	fs.StringVar(&c.tokenIssuer, "token-issuer", "", `if set, user tokens' "iss" must be it (give dispatchers and gateways the same)`)
	fs.BoolVar(&c.dev, "dev", false, "development mode, on loopback only and with the well-known dev secret: never in production (see the subcommand)")
}

// checkDev refuses dev mode where it would be unsafe: dev mode hands out
// user tokens and the API key to whoever asks, and signs with a secret
// everyone knows, so it may listen only on loopback (listen lists every
// address the command listens on), and it is for the dev secret and the dev
// API key only (apiKeys: the command's, if it takes any). Real secrets or
// keys mean a deployment that someone meant to secure. Without --dev it
// checks nothing.
func (c *common) checkDev(apiKeys []string, listen ...string) error {
	if !c.dev {
		return nil
	}
	for _, addr := range listen {
		if addr == "" {
			continue // a listener the command does not open
		}
		if !loopback(addr) {
			return fmt.Errorf("--dev refused: it listens on %s, which is not a loopback address (127.0.0.0/8, ::1, localhost), and dev mode gives user tokens and the API key to anyone who can reach it", addr)
		}
	}
	for _, s := range splitList(c.secrets) {
		if s != devSecret {
			return errors.New("--dev refused with --token-secrets (HERALD_TOKEN_SECRETS): dev mode signs tokens for anyone with the first secret; use real secrets without --dev, or --dev without secrets")
		}
	}
	for _, k := range apiKeys {
		if k != devAPIKey {
			return errors.New("--dev refused with --api-keys (HERALD_API_KEYS): dev mode hands the API key to anyone who asks; use real keys without --dev, or --dev without keys")
		}
	}
	return nil
}

// loopback reports whether the listen address host:port can be reached
// only from this host. An empty host or 0.0.0.0 listens everywhere.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func (c *common) logger(component string) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch c.logFormat {
	case "text":
		h = slog.NewTextHandler(os.Stderr, opts)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, opts)
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", c.logFormat)
	}
	return slog.New(h).With("component", component), nil
}

func (c *common) tokenSecrets() ([][]byte, error) {
	var out [][]byte
	for _, s := range splitList(c.secrets) {
		out = append(out, []byte(s))
	}
	if len(out) == 0 {
		if !c.dev {
			return nil, errors.New("no --token-secrets (HERALD_TOKEN_SECRETS); use --dev for a local, insecure default")
		}
		out = [][]byte{[]byte(devSecret)}
	}
	return out, nil
}

func (c *common) consul() (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = c.consulAddr
	return api.NewClient(cfg)
}

// The keepalive of herald's NATS connections, on both ends: the clients
// ping the server every second and give up on it after two unanswered
// pings, and herald nats does the same to its clients, so a frozen or
// silently cut-off peer is noticed in 2-3s instead of the libraries'
// 2 minutes (the ring's liveness rules count on it: DESIGN.md).
const (
	natsPingInterval = time.Second
	natsMaxPingsOut  = 2
)

// connectNATS connects and keeps reconnecting forever; a gateway or
// dispatcher outlives NATS restarts.
func (c *common) connectNATS(name string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{
		nats.Name(name),
		nats.PingInterval(natsPingInterval),
		nats.MaxPingsOutstanding(natsMaxPingsOut),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("NATS disconnected", "error", err) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "url", nc.ConnectedUrl()) }),
	}, opts...)
	return nats.Connect(c.natsURL, opts...)
}
