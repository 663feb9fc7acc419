//go:build tools

// Package consul pins the Consul agent that herald's tests and `make run` use.
// It is a separate module so Consul's large dependency tree never enters
// herald's own go.mod.
package consul

import _ "github.com/hashicorp/consul"
