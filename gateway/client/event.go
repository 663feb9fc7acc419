package client

import (
	"time"

	"github.com/heraldpush/herald/gateway/wire"
)

// EventKind says what an Event carries.
type EventKind int

// Event kinds. They start at 1 so a zero Event is recognisably empty.
const (
	// EventNotification carries a notification the application has not
	// seen (after dedupe by seq). It is acked once OnEvent returns.
	EventNotification EventKind = iota + 1
	// EventGap says the log no longer holds some messages the client had
	// not seen (retention, or a new epoch): the application was told, not
	// silently skipped.
	EventGap
	// EventBroadcast carries a live-only broadcast; it never moves the
	// cursor.
	EventBroadcast
	// EventStatus reports a connection coming up or going down.
	EventStatus
	// EventCaughtUp says the socket has delivered everything the user's
	// log held when it started (Frame.Cursor is the cursor then): what
	// follows is live. Once per socket, so once per reconnect too.
	EventCaughtUp
)

func (k EventKind) String() string {
	switch k {
	case EventNotification:
		return "notification"
	case EventGap:
		return "gap"
	case EventBroadcast:
		return "broadcast"
	case EventStatus:
		return "status"
	case EventCaughtUp:
		return "caught_up"
	}
	return "unknown"
}

// Event is what OnEvent receives. Frame is set for notifications, gaps,
// broadcasts and caught_up; Status for status changes.
type Event struct {
	Kind   EventKind
	Frame  wire.ServerFrame
	Status Status
}

// Status describes a change of the connection, so applications can show
// "connected to gw-2" or "reconnecting in 1.2s", and chaos reports can
// explain every reconnect.
type Status struct {
	// Connected is true when a gateway has said hello, false when a socket
	// ended or could not be opened.
	Connected bool
	// Gateway is the ID from the gateway's hello ("" if none came).
	Gateway string
	// URL is the gateway WebSocket URL of the connection.
	URL string
	// Attempt is the backoff attempt counter: how many backoffs there have
	// been since the last stable connection. A disconnection's backoff was
	// drawn from [0, min(BackoffMax, BackoffBase·2^Attempt)].
	Attempt int
	// CloseCode is the close code the gateway sent, or 0 if the socket ended
	// without one.
	CloseCode int
	// Err says why the socket ended or could not be opened.
	Err error
	// Backoff is how long the client waits before connecting again; 0 when
	// it reconnects at once (a move, a new token).
	Backoff time.Duration
}

// Stats are counters over the client's life (all Runs), for tests and
// chaos reports.
type Stats struct {
	TokenFetches    uint64 // calls to Config.Token
	Resolves        uint64 // POST /v1/connect requests
	ResolveFailures uint64 // of which failed (any non-200 or network error)
	Dials           uint64 // WebSocket dials
	DialFailures    uint64 // of which failed
	Connects        uint64 // sockets that got a hello
	// Reconnects counts the times the client went to connect again after a
	// socket ended or could not be opened.
	Reconnects uint64
	Moves      uint64 // sockets closed with 4001
	// MovesViaDispatcher counts the moves that came within the move window
	// of the previous one and went back through /v1/connect with backoff.
	MovesViaDispatcher uint64
	Backoffs           uint64 // waits before a retry (of any length)
	DeadSockets        uint64 // sockets dropped after 2×PingInterval of silence
	BadFrames          uint64 // frames that did not decode; each ends its socket
	IgnoredFrames      uint64 // well-formed frames of a type this client does not know

	Notifications     uint64 // delivered to OnEvent
	DroppedDuplicates uint64 // notifications at or below the cursor
	Gaps              uint64
	Broadcasts        uint64
	CaughtUps         uint64 // caught_up frames: one per socket that caught up
	Acks              uint64
	Pings             uint64
	Pongs             uint64

	// LastCloseCode is the close code of the last socket that ended (0 if
	// it ended without one).
	LastCloseCode int
	// Gateway is the ID of the gateway of the current or last connection.
	Gateway string
}
