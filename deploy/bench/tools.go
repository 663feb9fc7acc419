//go:build tools

// Package bench pins Centrifugo, the peer `herald bench --peer centrifugo`
// measures herald against on the same machine in the same run. It is a
// separate module so Centrifugo's dependency tree never enters herald's own
// go.mod.
package bench

import _ "github.com/centrifugal/centrifugo/v6"
