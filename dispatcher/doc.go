// Package dispatcher is herald's stateless HTTP API. Backends publish
// through it: it validates a notification, appends it to the user's log
// (gateway/inbox) and rings the gateway that owns the user in the ring
// (a doorbell on core NATS). Browsers and apps ask it which gateway their
// socket goes to (/v1/connect). It keeps no state of its own beyond caches,
// so any number of dispatchers serve behind a round-robin load balancer.
//
// # Guarantees
//
// A 202 means the notification is in the log: the gateways deliver it from
// there even if every doorbell is lost. Bad input is refused with a clear
// error and changes nothing. Every notification has an idempotency key,
// the caller's "id" or one the dispatcher makes, so the dispatcher's own
// retries never store a message twice; when an append's outcome stays
// unknown the answer is 503 unknown_outcome with that id, and the caller's
// retry with it is safe. A caller's retry without its own id is safe only
// within the log's duplicate window, and only with that id.
//
// Broadcasts are live-only: they reach the sockets connected at that
// moment and are never stored.
//
// # Decisions the design leaves open
//
//   - Request bodies are strict: one JSON object, valid UTF-8, no unknown
//     fields (a typo such as "date" must not store an empty message), and
//     "data" may be any JSON value except null. Limits are on data's bytes
//     as sent.
//   - A batch answers 202 with one result per item, in order. A user's
//     items are appended in request order; once one fails, that user's
//     later items are not tried ("not attempted", unavailable), so a retry
//     in order keeps the user's order. A batch costs its API key one token
//     per item. wait=delivered is for single notifications only.
//   - ?timeout= above MaxWait is capped, not refused; a malformed timeout,
//     or a timeout without wait=delivered, is 400 invalid_parameter.
//   - wait=delivered with an empty ring answers "offline" at once: nobody
//     could deliver it. A doorbell request that could not be sent, or an
//     unreadable reply, is "timeout": the message is stored either way.
//   - /v1/connect allows every origin (CORS): it authenticates with a
//     bearer token, never a cookie. A token that is expired, not yet
//     valid, or without the required audience or issuer is 401 alike: the
//     clients fetch one fresh token on a 401 and stop on a second.
//   - /v1/cluster maps the cluster (every gateway, its URL and load), so
//     outside dev mode it needs an API key, like the publishing endpoints,
//     but costs the key's rate limit nothing; in dev mode the demo page
//     reads it without one. It caches socket counts for a second, so it
//     cannot be used to load the gateways.
//   - Metrics and profiles are served only on the admin listener
//     (AdminListener or AdminAddr), never on the API's; /healthz and
//     /readyz are on both, for load balancers and for operators.
//   - The grace window after a ring change lasts at least MoveWindow + 2s,
//     and for each previous owner as long as it reports moves pending,
//     plus 2s, up to 2 minutes after the change (grace.go).
//   - /readyz is ready with an empty ring (notifications are stored, and
//     delivered once a gateway joins); it is not ready before the first
//     ring.
//   - A stream deleted under a running dispatcher is created again at the
//     next epoch refresh; its doorbells then carry the new epoch.
//
// # Errors
//
// Every error a client sees is an *Error with a Code; httpStatus maps codes
// to HTTP statuses in one place, and the body is always
// {"error":{"code":"...","message":"..."}}.
//
// # Concurrency
//
// New starts nothing. Run owns every goroutine the dispatcher starts and
// returns only after all have ended:
//
//   - the HTTP servers, the API's and the admin listener's (Serve, and one
//     goroutine per connection, which runs the handlers; both count their
//     handlers in inflight);
//   - the shutdown goroutine, which waits for Run's context, shuts both
//     servers down with a grace period, then cancels the requests still
//     running and waits for their handlers (inflight);
//   - the ring watcher (consul.Watcher.Run, two goroutines of its own);
//   - the ring follower (followRings), which owns the grace state and
//     publishes the current and previous rings through an atomic.Pointer,
//     and at most one goroutine of its own at a time, which asks previous
//     owners for their moves pending; it waits for that one before it
//     returns;
//   - the log loop, which ensures the stream (retrying until it can, and
//     ending Run with an error if the live stream is configured otherwise
//     than Config.Log gives it), then publishes the *inbox.Log through an
//     atomic.Pointer and re-reads its epoch every EpochRefresh.
//
// Handlers may start goroutines (a batch appends up to 16 users at once;
// /v1/cluster asks every gateway in parallel) and always wait for them
// before returning.
//
// Shared state: the ring is the watcher's (an atomic.Pointer inside it);
// the log pointer is an atomic; the API keys and
// their rate limiters are fixed at New (rate.Limiter is safe for concurrent
// use); statsCache.mu guards the cached socket counts and is held while
// fetching them, so concurrent /v1/cluster requests share one round of
// NATS requests; inflight.mu orders handler entry against Run's final wait.
// No lock is held while another is taken.
package dispatcher
