// Package consul keeps herald's gateway membership in Consul and turns it into
// rings.
//
// A gateway calls Register: it claims its gateway ID (refusing one that a live
// instance holds), registers service "herald-gateway" with a TTL check on its
// local agent, and heartbeats while its health function says it is healthy,
// registering again whenever the agent has forgotten it. Dispatchers and
// gateways alike run a Watcher: it follows the passing gateways with blocking
// queries and publishes a ring.Ring whenever the membership's fingerprint
// changes.
//
// The liveness rule keeps shared failures from moving users: a member that
// stops passing leaves the ring only when a Probe says it is dead (its process
// no longer answers), or after the hold period while it still answers. A probe
// that cannot tell (NATS unreachable) counts as alive. Gateways implement the
// Probe over NATS; this package only defines it.
//
// # Concurrency
//
// Register starts one goroutine, the heartbeat loop, which Close stops and
// waits for. Registration's methods are safe for concurrent use.
//
// Watcher.Run starts two goroutines and returns after both end: the query
// loop, which owns the Consul index and hands each new snapshot of passing
// members to the build loop through a one-slot channel (a newer snapshot
// replaces an unread one); and the build loop, which alone owns the hold
// bookkeeping, calls the Probe, and publishes rings. Ring and Status may be
// called from any goroutine: the ring is published through an atomic.Pointer,
// and the status fields are guarded by Watcher.mu.
package consul
