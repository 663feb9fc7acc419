package consultest

import (
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// Ports are loopback ports a test holds for a server it runs, so that no
// other test — in this process or another package's, running beside it —
// can take them: before the server first binds them, and while it is down
// for a restart. They are drawn from a range below the ephemeral ports
// (32768 and up), which the kernel hands to outgoing connections.
type Ports struct {
	Nums []int
	udp  bool

	mu   sync.Mutex  // guards held
	held []io.Closer // listeners holding the ports; none while the server has them
}

// Reserve picks n distinct ports in [lo, hi), free for TCP (and UDP if udp),
// and holds them until Release. They are released when the test ends.
func Reserve(tb testing.TB, lo, hi, n int, udp bool) *Ports {
	tb.Helper()
	p := &Ports{udp: udp}
	seen := map[int]bool{}
	for tries := 0; len(p.Nums) < n; tries++ {
		if tries > 2000 {
			p.Release()
			tb.Fatalf("consultest: no %d free ports in [%d, %d)", n, lo, hi)
		}
		port := lo + rand.IntN(hi-lo)
		if seen[port] {
			continue
		}
		seen[port] = true
		if held, ok := hold(port, udp); ok {
			p.Nums = append(p.Nums, port)
			p.held = append(p.held, held...)
		}
	}
	tb.Cleanup(p.Release)
	return p
}

// Release lets the ports go, for a server about to bind them.
func (p *Ports) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.held {
		c.Close()
	}
	p.held = nil
}

// Guard holds the ports again while their server is down. A TCP connection
// is accepted and closed at once, so to clients the server is simply gone.
// A port something else took meanwhile is left alone.
func (p *Ports) Guard() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, port := range p.Nums {
		if held, ok := hold(port, p.udp); ok {
			p.held = append(p.held, held...)
		}
	}
}

// hold binds port for TCP (accepting and closing connections) and, if udp,
// for UDP.
func hold(port int, udp bool) ([]io.Closer, bool) {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, false
	}
	held := []io.Closer{l}
	if udp {
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			l.Close()
			return nil, false
		}
		held = append(held, u)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return // closed: released
			}
			c.Close()
		}
	}()
	return held, true
}
