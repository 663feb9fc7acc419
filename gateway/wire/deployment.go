package wire

import (
	"fmt"
	"regexp"
	"strings"
)

// Deployment names one herald deployment and scopes every name it uses in
// shared infrastructure — the NATS subjects, the log's stream, KV buckets,
// the gateways' Consul service — so that two deployments can share a NATS
// account or a Consul datacenter without seeing each other. The zero value
// is the default deployment, whose names are herald's historical ones
// (herald.inbox.…, HERALD_INBOX, herald-gateway): upgrading without a name
// changes nothing.
type Deployment string

var deploymentName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

// Validate checks a deployment name: 1 to 32 of a-z, 0-9 and inner dashes,
// so that it fits a NATS subject token, a stream name and a Consul service
// name alike.
func (d Deployment) Validate() error {
	if d != "" && !deploymentName.MatchString(string(d)) {
		return fmt.Errorf("invalid deployment name %q: 1 to 32 of a-z, 0-9 and inner dashes", string(d))
	}
	return nil
}

// prefix is the first tokens of every subject: herald. or herald.<name>.
func (d Deployment) prefix() string {
	if d == "" {
		return "herald."
	}
	return "herald." + string(d) + "."
}

// InboxPrefix prefixes each user's log subject.
func (d Deployment) InboxPrefix() string { return d.prefix() + "inbox." }

// Inbox is the subject of user's log.
func (d Deployment) Inbox(user string) string { return d.InboxPrefix() + UserKey(user) }

// Broadcast carries live-only broadcasts to every gateway.
func (d Deployment) Broadcast() string { return d.prefix() + "broadcast" }

// Gateway is where a gateway's doorbells are rung.
func (d Deployment) Gateway(id string) string { return d.prefix() + "gw." + id }

// Live is where a gateway answers liveness requests.
func (d Deployment) Live(id string) string { return d.Gateway(id) + ".live" }

// Stats is where a gateway answers requests for its counts.
func (d Deployment) Stats(id string) string { return d.Gateway(id) + ".stats" }

// Stream is the JetStream stream of the users' logs.
func (d Deployment) Stream() string { return d.upper() + "INBOX" }

// Bucket is the name of a JetStream KV bucket of the deployment.
func (d Deployment) Bucket(name string) string { return d.upper() + strings.ToUpper(name) }

func (d Deployment) upper() string {
	if d == "" {
		return "HERALD_"
	}
	return "HERALD_" + strings.ToUpper(strings.ReplaceAll(string(d), "-", "_")) + "_"
}

// Service is the Consul service every gateway of the deployment registers.
func (d Deployment) Service() string {
	if d == "" {
		return "herald-gateway"
	}
	return "herald-" + string(d) + "-gateway"
}
