package main

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats.go"
)

// devSecret signs and verifies user tokens when --dev is given without
// secrets. It is public: never use --dev in production.
const devSecret = "herald-dev-secret-never-use-this-in-production"

// common holds the flags every long-running subcommand has.
type common struct {
	logLevel      string
	logFormat     string
	deployment    string
	natsURL       string
	nats          natsFlags
	consulAddr    string
	secrets       string
	secretsFile   string
	tokenAudience string
	tokenIssuer   string
	dev           bool
}

func (c *common) register(fs *flagSet) {
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.deployment, "deployment", "", "deployment name (a-z, 0-9, inner dashes; 32 at most) scoping every NATS subject, the log's stream and the Consul service, so several deployments can share NATS and Consul; give every process of one deployment the same (default: none, herald's historical names)")
	fs.StringVar(&c.natsURL, "nats-url", "nats://127.0.0.1:4222", "NATS server URLs, comma-separated (user:password@ in a URL is honoured)")
	c.nats.register(fs)
	fs.StringVar(&c.consulAddr, "consul-addr", "", "Consul agent HTTP address; the agent's token, TLS and address also come from the standard CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN(_FILE), CONSUL_HTTP_SSL, CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME variables (default: CONSUL_HTTP_ADDR, or 127.0.0.1:8500)")
	fs.StringVar(&c.secrets, "token-secrets", "", "comma-separated secrets (≥ 32 bytes each) that user tokens may be signed with; the first signs dev tokens")
	fs.StringVar(&c.secretsFile, "token-secrets-file", "", "file holding the token secrets, one per line or comma-separated (e.g. a mounted secret), instead of --token-secrets")
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
	if c.secretsFile != "" {
		return errors.New("--dev refused with --token-secrets-file: dev mode signs tokens for anyone with the first secret; use real secrets without --dev")
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
	secrets, err := splitListOrFile("token-secrets", c.secrets, c.secretsFile)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, s := range secrets {
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

// consul is the client of the local Consul agent: api.DefaultConfig reads
// the standard CONSUL_* variables (address, ACL token, TLS), and
// --consul-addr, if given, wins over CONSUL_HTTP_ADDR.
func (c *common) consul() (*api.Client, error) {
	cfg := api.DefaultConfig()
	if c.consulAddr != "" {
		cfg.Address = c.consulAddr
	}
	return api.NewClient(cfg)
}

// deploymentName checks --deployment.
func (c *common) deploymentName() (wire.Deployment, error) {
	d := wire.Deployment(c.deployment)
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("--deployment: %w", err)
	}
	return d, nil
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
	auth, err := c.nats.options()
	if err != nil {
		return nil, err
	}
	opts = append(append([]nats.Option{
		nats.Name(name),
		nats.PingInterval(cmp.Or(c.nats.pingInterval, natsPingInterval)),
		nats.MaxPingsOutstanding(cmp.Or(c.nats.pingsOut, natsMaxPingsOut)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("NATS disconnected", "error", err) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "url", nc.ConnectedUrl()) }),
	}, auth...), opts...)
	return nats.Connect(c.natsURL, opts...)
}

// natsFlags are how herald authenticates to NATS and keeps the connection
// alive.
type natsFlags struct {
	creds, nkey            string
	tlsCA, tlsCert, tlsKey string
	pingInterval           time.Duration
	pingsOut               int
}

func (n *natsFlags) register(fs *flagSet) {
	fs.StringVar(&n.creds, "nats-creds", "", "NATS credentials file (a user JWT and its nkey seed, as nsc writes it)")
	fs.StringVar(&n.nkey, "nats-nkey", "", "file holding a NATS user nkey seed (SU...), for a server configured with nkeys")
	fs.StringVar(&n.tlsCA, "nats-tls-ca", "", "CA certificates (PEM) the NATS servers' certificates are verified with (default: the system's)")
	fs.StringVar(&n.tlsCert, "nats-tls-cert", "", "client certificate (PEM) for NATS servers that verify clients; with --nats-tls-key")
	fs.StringVar(&n.tlsKey, "nats-tls-key", "", "the client certificate's private key (PEM)")
	fs.DurationVar(&n.pingInterval, "nats-ping-interval", natsPingInterval, "how often the client pings the NATS server; with --nats-pings-outstanding it bounds how long a frozen or cut-off server goes unnoticed")
	fs.IntVar(&n.pingsOut, "nats-pings-outstanding", natsMaxPingsOut, "unanswered pings after which the client drops the NATS server and reconnects")
}

// options turns the flags into connection options; TLS is required as soon
// as any TLS flag is given (and by a tls:// URL).
func (n *natsFlags) options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case n.creds != "" && n.nkey != "":
		return nil, errors.New("--nats-creds and --nats-nkey: give one")
	case n.creds != "":
		opts = append(opts, nats.UserCredentials(n.creds))
	case n.nkey != "":
		o, err := nats.NkeyOptionFromSeed(n.nkey)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if (n.tlsCert == "") != (n.tlsKey == "") {
		return nil, errors.New("--nats-tls-cert and --nats-tls-key go together")
	}
	if n.tlsCA != "" {
		opts = append(opts, nats.RootCAs(n.tlsCA))
	}
	if n.tlsCert != "" {
		opts = append(opts, nats.ClientCert(n.tlsCert, n.tlsKey))
	}
	if n.tlsCA != "" || n.tlsCert != "" {
		opts = append(opts, nats.Secure())
	}
	if n.pingInterval < 0 || n.pingsOut < 0 {
		return nil, errors.New("--nats-ping-interval and --nats-pings-outstanding must be positive")
	}
	return opts, nil
}
