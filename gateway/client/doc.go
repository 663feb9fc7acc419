// Package client is herald's Go client: it keeps one user's WebSocket open
// to the gateway that owns the user, across moves, restarts and failures,
// and hands the application every notification of the user's log once, in
// order. Tests, `herald chaos` and `herald bench` drive herald through it,
// so it follows DESIGN.md ("Delivery: the per-user log", "Routing changes
// without loss", "Wire formats") to the letter and counts what it does.
//
// Each connect asks the dispatcher where the socket goes (POST /v1/connect),
// dials that gateway, and sends an auth frame with the cursor (epoch, seq)
// so the gateway replays what the client has not seen. The gateway's hello
// and gap frames set the cursor; notifications at or below it are dropped as
// duplicates (a safety net: gateways do not send them twice). How a socket
// ended decides what comes next: the moved URL at once (4001), a new token
// (4004), stop (4003), or full-jitter backoff and /v1/connect again. A
// socket that ended without a close frame (a failed dial, a drop, silence)
// names its gateway in that /v1/connect (?unreachable=<id>): if the gateway
// is dead but still in the ring, the dispatcher holds the answer until the
// ring names the new owner, instead of sending the client back to it.
//
// # Concurrency
//
// Run owns its calling goroutine and at most one other. The calling
// goroutine does all the work that has an order: it calls Token, asks the
// dispatcher, dials, runs the connection's read loop, calls OnFrame and
// OnEvent, writes acks and sleeps through backoffs. The state of a run (the
// token, the next URL, the backoff attempt, the time of the last move) is
// local to it. Because the callbacks run there, they are never called
// concurrently with each other, and a callback that blocks holds up reading
// and acking (but not dead-socket detection, which only times the waits for
// a frame).
//
// For each connection Run starts one keepalive goroutine: it writes a ping
// every PingInterval and, when Run's context ends, closes the socket with
// 1000. Run waits for it before it dials again or returns. Two timers
// (time.AfterFunc) drop a connection: one when no frame has arrived for
// 2×PingInterval, one when the gateway does not answer the closing
// handshake within a grace period. The second also closes the raw stream
// under the socket, recorded at the dial, because coder/websocket's Close
// (which may then be the one reading) cannot be cut short any other way.
// coder/websocket allows the keepalive's writes concurrently with the read
// loop's acks and reads.
//
// Client.mu guards the cursor and the counters, which Run's goroutines
// write and Cursor and Stats read from any goroutine; rawStream.mu guards
// the recorded stream, which the dial sets and a timer may close. Neither
// is held while calling out (callbacks, the network). Only one Run may be
// active at a time (running); a Run that has returned may be called again
// and resumes from the cursor.
package client
