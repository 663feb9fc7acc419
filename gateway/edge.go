package gateway

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// edge bounds what the public listener lets in before a socket is a user's:
// sockets that have not authenticated yet, in total and per client address,
// and how often one user may connect. Its methods are safe for concurrent
// use.
type edge struct {
	trusted      []netip.Prefix // proxies whose X-Forwarded-For is believed
	maxUnauth    int
	maxUnauthPer int
	connectRate  rate.Limit
	connectBurst int
	m            *metrics

	mu      sync.Mutex // guards the following
	unauth  int
	perAddr map[string]int
	users   map[string]*userLimit
}

// userLimit is one user's connect budget.
type userLimit struct {
	lim  *rate.Limiter
	used time.Time
}

// maxUserLimits bounds the users whose connect budget is remembered; past
// it, the idlest are forgotten early (their budget starts full again).
const maxUserLimits = 200_000

func newEdge(cfg *Config, m *metrics) (*edge, error) {
	e := &edge{
		maxUnauth: cfg.MaxUnauthenticated, maxUnauthPer: cfg.MaxUnauthenticatedPerAddr,
		connectRate: rate.Limit(cfg.ConnectsPerUser), connectBurst: cfg.ConnectBurst, m: m,
		perAddr: map[string]int{}, users: map[string]*userLimit{},
	}
	for _, p := range cfg.TrustedProxies {
		prefix, err := parsePrefix(p)
		if err != nil {
			return nil, err
		}
		e.trusted = append(e.trusted, prefix)
	}
	return e, nil
}

// parsePrefix reads a CIDR or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// clientAddr is the address a request comes from: the peer's, or, when the
// peer is a trusted proxy, the last address in X-Forwarded-For that is not a
// trusted proxy itself (the nearest one the proxies vouch for).
func (e *edge) clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || !e.isTrusted(peer) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // a malformed hop: trust nothing before it
		}
		if !e.isTrusted(a) {
			return a.Unmap().String()
		}
	}
	return host
}

func (e *edge) isTrusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range e.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// enter counts a socket that has not authenticated yet; release uncounts
// it, once. It refuses one over either cap.
func (e *edge) enter(addr string) (release func(), err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.unauth >= e.maxUnauth:
		e.m.refused.WithLabelValues("unauthenticated").Inc()
		return nil, errUnauthTotal
	case e.perAddr[addr] >= e.maxUnauthPer:
		e.m.refused.WithLabelValues("unauthenticated_per_addr").Inc()
		return nil, errUnauthAddr
	}
	e.unauth++
	e.perAddr[addr]++
	var once sync.Once
	return func() {
		once.Do(func() {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.unauth--
			if e.perAddr[addr]--; e.perAddr[addr] == 0 {
				delete(e.perAddr, addr)
			}
		})
	}, nil
}

// unauthenticated is how many sockets have not authenticated yet.
func (e *edge) unauthenticated() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.unauth
}

// allowConnect spends one of the user's connects: a token bucket of
// ConnectBurst refilled at ConnectsPerUser a second, so a client stuck in
// a reconnect loop is slowed (4009 makes clients back off long), while a
// user's devices all coming back after a ring change are not.
func (e *edge) allowConnect(user string) bool {
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.users[user]
	if l == nil {
		if len(e.users) >= maxUserLimits {
			e.sweepLocked(now, true)
		}
		l = &userLimit{lim: rate.NewLimiter(e.connectRate, e.connectBurst)}
		e.users[user] = l
	}
	l.used = now
	if !l.lim.AllowN(now, 1) {
		e.m.refused.WithLabelValues("connect_rate").Inc()
		return false
	}
	return true
}

// sweep forgets the budgets that have refilled: nothing to remember.
func (e *edge) sweep(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sweepLocked(now, false)
}

func (e *edge) sweepLocked(now time.Time, hard bool) {
	full := time.Duration(float64(e.connectBurst) / float64(e.connectRate) * float64(time.Second))
	for u, l := range e.users {
		if now.Sub(l.used) > full || hard && now.Sub(l.used) > full/4 {
			delete(e.users, u)
		}
	}
}
