package main

import (
	"fmt"

	"github.com/hashicorp/consul/api"
)

// Consul ACL rules of each herald component: the least each needs, with
// Consul's default policy "deny". What `herald cluster consul-bootstrap`
// gives each component's token, and what the tests check the components
// work with, and nothing more.

// gatewayRules let a gateway register, heartbeat and deregister its own
// service (the deployment's gateway service) and watch the gateways.
func gatewayRules(service string) string {
	return fmt.Sprintf(`service %q { policy = "write" }
node_prefix "" { policy = "read" }
`, service)
}

// dispatcherRules let a dispatcher watch the gateways, and nothing else.
func dispatcherRules(service string) string {
	return fmt.Sprintf(`service %q { policy = "read" }
node_prefix "" { policy = "read" }
`, service)
}

// agentRules let a Consul client agent register its node and keep its
// services in sync.
func agentRules(node string) string {
	return fmt.Sprintf(`node %q { policy = "write" }
service_prefix "" { policy = "read" }
`, node)
}

// consulToken creates a policy named name with rules and a token holding
// it, through a client with a management token, and returns the token's
// secret.
func consulToken(c *api.Client, name, description, rules string) (string, error) {
	p, _, err := c.ACL().PolicyCreate(&api.ACLPolicy{Name: name, Description: description, Rules: rules}, nil)
	if err != nil {
		return "", fmt.Errorf("consul ACL policy %s: %w", name, err)
	}
	t, _, err := c.ACL().TokenCreate(&api.ACLToken{Description: description, Policies: []*api.ACLTokenPolicyLink{{ID: p.ID}}}, nil)
	if err != nil {
		return "", fmt.Errorf("consul ACL token %s: %w", name, err)
	}
	return t.SecretID, nil
}
