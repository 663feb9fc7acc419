package wire

import (
	"context"
	"errors"

	"github.com/heraldpush/herald/ring/consul"
	"github.com/nats-io/nats.go"
)

// LivenessProbe asks over NATS whether a gateway's process is alive: every
// gateway answers requests on its LiveSubject with its instance nonce. NATS
// answers a request nobody serves with "no responders" at once, so a dead
// process is found in one round trip; any other failure (NATS itself
// unreachable, a timeout) cannot tell, and says so.
func LivenessProbe(nc *nats.Conn) consul.Probe {
	return func(ctx context.Context, id string) consul.Liveness {
		m, err := nc.RequestWithContext(ctx, LiveSubject(id), nil)
		switch {
		case err == nil:
			return consul.Liveness{State: consul.Alive, Instance: string(m.Data)}
		case errors.Is(err, nats.ErrNoResponders):
			return consul.Liveness{State: consul.Dead}
		default:
			return consul.Liveness{State: consul.Unknown}
		}
	}
}
