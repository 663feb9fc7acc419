// Package gateway is herald's socket server. It accepts WebSockets, checks
// each user's token and that the ring names this gateway as the user's
// owner, and delivers the user's log over every socket the user has open, in
// order, without gaps or duplicates.
//
// # Delivery
//
// One hub per connected user owns the user's head (the highest seq taken in
// chain order), a small buffer of the latest messages encoded once as frames,
// and the user's sessions. Doorbells from dispatchers are hints: one that
// extends the chain (prev ≤ head < seq) goes into the buffer at once; an old
// one is dropped; any other makes the hub read the chain from the log.
// Anti-entropy re-reads every local user's head periodically, after a NATS
// reconnect and after a ring change, so a lost doorbell delays a message by
// at most one period.
//
// Each session has its own cursor and one writer goroutine that sends, in
// seq order, the frames after the cursor: from the buffer, or from the log
// when the session has fallen behind the buffer. Nothing is queued per
// socket, so a slow socket costs a log read, not memory; a write that does
// not finish within the write timeout closes the socket with 4008 and the
// client resumes from its cursor.
//
// # Concurrency
//
// Run starts and waits for: the HTTP server (one goroutine per connection,
// which becomes a session's reader), the watcher, the registration's
// heartbeat, the monitor loop (epoch, health, reconnects, anti-entropy), and
// the NATS subscription callbacks. A session adds a writer goroutine; a hub
// starts at most one repair goroutine at a time.
//
// Lock order: Gateway.mu before hub.mu. Gateway.mu guards the hubs map;
// hub.mu guards everything in a hub and its sessions' cursors. No lock is
// held across network I/O: the hub copies what a writer needs and releases
// the lock before writing or reading the log.
package gateway
