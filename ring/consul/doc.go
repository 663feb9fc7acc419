// Package consul keeps herald's gateway membership in Consul and turns it into
// rings.
//
// A gateway calls Register: it claims its gateway ID (refusing one that a live
// instance holds), registers service "herald-gateway" with a TTL check on its
// local agent, and heartbeats while its health function says it is healthy,
// registering again whenever the agent has forgotten it. Registration.Check
// heartbeats at once, for a gateway whose health has just changed. Dispatchers
// and gateways alike run a Watcher: it follows every registered gateway,
// passing or not, with blocking queries and publishes a ring.Ring whenever the
// membership's fingerprint changes.
//
// # Who is in the ring
//
// The rule keeps shared failures from moving users, while a gateway that is
// really gone leaves within seconds:
//
//   - Every gateway passing in Consul (all its checks, the node's included)
//     is in the ring, admitted at once.
//   - A member that is not passing, or no longer in the catalog at all
//     (absence alone is never evidence: a restarted agent forgets every
//     registration, and gateways register again by themselves), is probed
//     every ProbeInterval. It leaves when its probe says Dead ("no
//     responders") twice, DeadGap apart with no other answer between,
//     however many fail at once. NATSProbe says Dead only once the watcher's
//     own NATS connection has been up for MinUptime.
//   - It stays, however long it is not passing, while it answers healthy
//     (Alive, Healthy, and the instance nonce the catalog listed), and while
//     the probe cannot tell (Unknown: NATS itself unreachable).
//   - It leaves after the hold period if it keeps failing otherwise (the
//     probe times out, the reply says unhealthy, or another instance
//     answers), counting only time during which more than half of the other
//     members were passing or answering healthy, at both ends of each probe
//     interval. So when most fail together (NATS or JetStream down for
//     everyone) no ring shrinks, for any length of time.
//   - A watcher that starts with no ring builds its first one from the
//     passing gateways plus the catalog's non-passing instances that answer
//     one probe round healthy.
//   - If Consul is unreachable, the watcher keeps its last ring and reports
//     itself degraded.
//
// Gateways implement the Probe over NATS with NATSProbe; the Watcher only
// calls it.
//
// # Concurrency
//
// Register starts one goroutine, the heartbeat loop, which Close stops and
// waits for; Check wakes it through a one-slot channel and never blocks.
// Registration's methods are safe for concurrent use.
//
// Watcher.Run starts two goroutines and returns after both end: the query
// loop, which owns the Consul index and hands each new snapshot of the
// service's instances to the build loop through a one-slot channel (a newer
// snapshot replaces an unread one); and the build loop, which alone owns the
// membership bookkeeping (each held member's answers, dead confirmations and
// counted failing time, and the nonces last listed), calls the Probe — for
// one round at a time, each call in its own goroutine, waited for before the
// round ends — and publishes rings. Ring and Status may be called from any
// goroutine: the ring is published through an atomic.Pointer, and the status
// fields are guarded by Watcher.mu.
//
// Link.Run, if the caller runs it, is one goroutine that notes the NATS
// connection's status changes until its context ends; Link's methods are safe
// for concurrent use (Link.mu guards its fields).
package consul
