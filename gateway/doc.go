// Package gateway is herald's socket server. It accepts WebSockets, checks
// each user's token and that the ring names this gateway as the user's
// owner, and delivers the user's log over every socket the user has open, in
// order, without gaps or duplicates.
//
// # Rooms
//
//   - accept.go: a socket from its upgrade to a session — readiness, the
//     edge's caps, the auth frame, the owner check, the user's limits, where
//     it resumes — as one function that returns a typed close.
//   - closes.go: every close the gateway sends, and the one place a close
//     reaches a socket.
//   - edge.go: what the public listener lets in before a socket is a user's:
//     unauthenticated sockets per address and in total, connects per user,
//     client addresses behind trusted proxies.
//   - users.go, hub.go, session.go: the users — the registry of hubs, one
//     user's delivery state, one socket's cursor, reader and writer. They
//     read the log through logReader and write through conn, interfaces they
//     own, so they are unit-tested without NATS.
//   - placement.go: placement, which owns the ring view, the moves after a
//     ring change or a drain, and self-fencing.
//   - nats.go: the NATS handlers: doorbells, broadcasts, stats, liveness.
//   - monitor.go: periodic work: the epoch, anti-entropy, slow writes.
//   - gateway.go, tasks.go, http.go: the lifecycle — Config, New, Run, drain,
//     shutdown, the listeners — and the count of every goroutine.
//
// # Delivery
//
// One hub per connected user owns the user's head (the highest seq taken in
// chain order), a small buffer of the latest messages encoded once as frames,
// and the user's sessions. Doorbells from dispatchers are hints: one that
// extends the chain (prev ≤ head < seq) goes into the buffer at once; an old
// one is dropped; one from another epoch makes the gateway check the epoch;
// any other makes the hub read the chain from the log. Anti-entropy re-reads
// every local user's head periodically, after a NATS reconnect and after a
// ring change, so a lost doorbell delays a message by at most one period.
// Every read of the log is confirmed to come from the hub's epoch (a stream
// recreated under it is another log).
//
// Each session has its own cursor and one writer goroutine that sends, in
// seq order, the frames after the cursor: from the buffer, or from the log
// when the session has fallen behind the buffer. Nothing is queued per
// socket, so a slow socket costs a log read, not memory; a write that does
// not finish within the write timeout closes the socket with 4008 and the
// client resumes from its cursor. A message that cannot be put in a frame
// (or whose handling panicked) is remembered and becomes a gap, never a
// retry loop.
//
// # Concurrency
//
// Run starts, in an errgroup, and waits for: the HTTP servers (public and
// admin), the NATS link watcher, the ring watcher, start (log, Consul
// registration, liveness), the monitor, the link watcher and the mover.
// Every other goroutine goes through tasks, which Run waits for last: one
// per socket handler (the session's reader), its writer, its closing
// handshake, a hub's repair (at most one per hub), an anti-entropy pass (at
// most one at a time), and the timers' work (auth timeout, token expiry,
// slow-consumer drop). NATS runs each subscription's callbacks on its own
// goroutine. A panic in any of them is recovered, logged and counted
// (herald_panics_total{where}); at most the user whose hub or socket it
// was loses its sockets.
//
// Lock order: users.mu before hub.mu. users.mu guards the hubs map and the
// socket count; hub.mu guards everything in a hub and its sessions'
// cursors, and is always released with defer. placement.mu guards the
// planned moves and the ring without this gateway; Gateway.mu the open
// connections; edge.mu the edge's counts. No lock is held across network
// I/O: the hub copies what a writer needs and releases the lock before
// writing or reading the log.
package gateway
