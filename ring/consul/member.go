package consul

import (
	"context"
	"fmt"
	"net/url"

	"github.com/hashicorp/consul/api"
	"github.com/heraldpush/herald/ring"
)

// Service is the Consul service name every gateway registers under.
const Service = "herald-gateway"

// Keys of the service meta a gateway registers.
const (
	MetaURL      = "ws_url"   // the public WebSocket URL clients use
	MetaWeight   = "weight"   // ring weight, "1".."16"
	MetaVersion  = "version"  // herald version, for operators
	MetaInstance = "instance" // random nonce of the registering process
)

// State is what a liveness probe learned about a gateway.
type State int

// Probe outcomes. Unknown is the zero value on purpose: a probe that fails to
// reach a verdict must never remove anyone.
const (
	Unknown State = iota // the probe failed (e.g. NATS unreachable): count as alive
	Alive                // a process answered for the ID
	Dead                 // nobody answers for the ID
	Silent               // NATS is up but nobody answered in time: failing, not dead
)

func (s State) String() string {
	switch s {
	case Alive:
		return "alive"
	case Dead:
		return "dead"
	case Silent:
		return "silent"
	default:
		return "unknown"
	}
}

// Liveness is a probe's answer.
type Liveness struct {
	State State
	// Instance is the nonce the live process answered with.
	Instance string
	// Healthy is the live process's own verdict: it can deliver. Reason
	// says why not.
	Healthy bool
	Reason  string
}

// Probe asks whether a process currently answers for gateway ID id, and
// with what. It must be safe for concurrent use and should return within
// ctx's deadline. Anything short of a definite "nobody answers" must be
// reported as Alive, Silent or Unknown, never Dead: two Dead answers a
// second apart remove a member however many fail at once.
type Probe func(ctx context.Context, id string) Liveness

// ValidateURL checks a gateway's public WebSocket URL: ws or wss, with a host,
// and no user info or fragment.
func ValidateURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid ws_url %q: %w", s, err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return fmt.Errorf("invalid ws_url %q: scheme must be ws or wss", s)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("invalid ws_url %q: no host", s)
	}
	if u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return fmt.Errorf("invalid ws_url %q: no user info, fragment or opaque part allowed", s)
	}
	return nil
}

// memberOf reads a ring member from a catalog entry, checking what the
// gateway should have checked at Register: another writer may have put
// anything in Consul.
func memberOf(s *api.AgentService) (ring.Member, error) {
	if err := ring.ValidateID(s.ID); err != nil {
		return ring.Member{}, err
	}
	w, err := ring.ParseWeight(s.Meta[MetaWeight])
	if err != nil {
		return ring.Member{}, err
	}
	u := s.Meta[MetaURL]
	if err := ValidateURL(u); err != nil {
		return ring.Member{}, err
	}
	return ring.Member{ID: s.ID, Weight: w, URL: u}, nil
}
