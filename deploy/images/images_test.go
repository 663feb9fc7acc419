package images

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// TestNATSConfig: the herald-nats image's configuration parses, serves
// clients and monitoring (its health check's /healthz) on every address,
// stores JetStream in /data, the image's one writable directory, and pings
// clients as `herald nats` and the tests' servers do (every second, two
// unanswered drop the client: natsPingInterval and natsMaxPingsOut in
// cmd/herald/common.go), so a frozen gateway loses its subscriptions in
// seconds.
func TestNATSConfig(t *testing.T) {
	o, err := server.ProcessConfigFile("nats-server.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"client address", o.Host, "0.0.0.0"},
		{"client port", o.Port, 4222},
		{"monitoring address", o.HTTPHost, "0.0.0.0"},
		{"monitoring port", o.HTTPPort, 8222},
		{"JetStream", o.JetStream, true},
		{"JetStream store", o.StoreDir, "/data"},
		{"ping interval", o.PingInterval, time.Second},
		{"pings unanswered before a client is dropped", o.MaxPingsOut, 2},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
}
