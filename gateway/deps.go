// Package gateway is herald's socket server.
package gateway

// Dependencies the gateway and dispatcher are being built on; removed once
// the code that uses them lands.
import (
	_ "github.com/coder/websocket"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "golang.org/x/time/rate"
)
