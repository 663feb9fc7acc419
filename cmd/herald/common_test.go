package main

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestConnectNATSKeepalive: herald's NATS connections ping every second and
// give up on a server after two unanswered pings, whatever else the caller
// asks for.
func TestConnectNATSKeepalive(t *testing.T) {
	c := common{natsURL: "nats://127.0.0.1:1"} // nobody there: RetryOnFailedConnect returns at once
	nc, err := c.connectNATS("test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.Opts.PingInterval != time.Second || nc.Opts.MaxPingsOut != 2 {
		t.Errorf("ping interval %v, max pings out %d; want 1s and 2", nc.Opts.PingInterval, nc.Opts.MaxPingsOut)
	}
}

// TestNATSServerKeepalive: herald nats pings its clients every second and
// drops one after two unanswered pings.
func TestNATSServerKeepalive(t *testing.T) {
	o, err := natsServerOptions("127.0.0.1:4222", t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if o.PingInterval != time.Second || o.MaxPingsOut != 2 || o.Host != "127.0.0.1" || o.Port != 4222 || !o.JetStream {
		t.Errorf("ping interval %v, max pings out %d, %s:%d, JetStream %v: want 1s, 2, 127.0.0.1:4222 with JetStream",
			o.PingInterval, o.MaxPingsOut, o.Host, o.Port, o.JetStream)
	}
	if _, err := natsServerOptions("127.0.0.1", "", 0); err == nil {
		t.Error("an address without a port was accepted")
	}
}

// TestCheckDev: --dev is refused on any address that is not loopback, and
// with real secrets or API keys; without --dev nothing is checked.
func TestCheckDev(t *testing.T) {
	for _, tc := range []struct {
		name    string
		c       common
		keys    []string
		listen  []string
		refused string // a word of the error; empty: accepted
	}{
		{"loopback v4", common{dev: true}, nil, []string{"127.0.0.1:8080", "127.0.0.1:9080"}, ""},
		{"loopback 127/8", common{dev: true}, nil, []string{"127.1.2.3:8080"}, ""},
		{"loopback v6", common{dev: true}, nil, []string{"[::1]:8080"}, ""},
		{"localhost", common{dev: true}, nil, []string{"localhost:8080"}, ""},
		{"no admin address", common{dev: true}, nil, []string{"127.0.0.1:8080", ""}, ""},
		{"the dev key and secret", common{dev: true, secrets: devSecret}, []string{devAPIKey}, []string{"127.0.0.1:8080"}, ""},
		{"empty host", common{dev: true}, nil, []string{":8080"}, ":8080"},
		{"all interfaces", common{dev: true}, nil, []string{"0.0.0.0:8080"}, "0.0.0.0:8080"},
		{"all v6 interfaces", common{dev: true}, nil, []string{"[::]:8080"}, "[::]:8080"},
		{"a LAN address", common{dev: true}, nil, []string{"192.168.1.10:8080"}, "192.168.1.10"},
		{"a host name", common{dev: true}, nil, []string{"example.com:8080"}, "example.com"},
		{"the admin address public", common{dev: true}, nil, []string{"127.0.0.1:8080", "0.0.0.0:9080"}, "0.0.0.0:9080"},
		{"no port", common{dev: true}, nil, []string{"127.0.0.1"}, "127.0.0.1"},
		{"a real secret", common{dev: true, secrets: strings.Repeat("s", 40)}, nil, []string{"127.0.0.1:8080"}, "--token-secrets"},
		{"the dev secret and a real one", common{dev: true, secrets: devSecret + "," + strings.Repeat("s", 40)}, nil, []string{"127.0.0.1:8080"}, "--token-secrets"},
		{"a real API key", common{dev: true}, []string{"prod-key"}, []string{"127.0.0.1:8080"}, "--api-keys"},
		{"the dev key and a real one", common{dev: true}, []string{devAPIKey, "prod-key"}, []string{"127.0.0.1:8080"}, "--api-keys"},
		{"not dev", common{secrets: strings.Repeat("s", 40)}, []string{"prod-key"}, []string{"0.0.0.0:8080"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.checkDev(tc.keys, tc.listen...)
			switch {
			case tc.refused == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.refused != "" && err == nil:
				t.Fatal("accepted")
			case tc.refused != "" && (!strings.Contains(err.Error(), tc.refused) || !strings.Contains(err.Error(), "--dev refused")):
				t.Fatalf("error %q does not say --dev refused because of %s", err, tc.refused)
			}
		})
	}
}

// TestTokenAudienceIssuerFlags: both components take --token-audience and
// --token-issuer, and HERALD_TOKEN_AUDIENCE / HERALD_TOKEN_ISSUER.
func TestTokenAudienceIssuerFlags(t *testing.T) {
	t.Setenv("HERALD_TOKEN_ISSUER", "https://auth.example")
	var c common
	fs := newFlagSet("gateway", "")
	c.register(fs)
	if err := parse(fs, []string{"--token-audience", "herald"}); err != nil {
		t.Fatal(err)
	}
	if c.tokenAudience != "herald" || c.tokenIssuer != "https://auth.example" {
		t.Errorf("audience %q, issuer %q; want herald and the environment's https://auth.example", c.tokenAudience, c.tokenIssuer)
	}
}
