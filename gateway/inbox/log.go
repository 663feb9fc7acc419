// Package inbox is the per-user log on NATS JetStream: one stream, one
// subject per user, and in each subject a chain of messages that each name
// the seq of the one before (Herald-Prev). Dispatchers append to it;
// gateways read it.
//
// The chain makes every check exact. An append names the seq it expects to
// follow (Nats-Expected-Last-Subject-Sequence), so a user's log can never
// fork; a reader that finds a message whose Herald-Prev is not the seq it
// read before knows retention dropped what lies between (a gap).
//
// # Epochs
//
// A cursor is (epoch, seq): within one epoch a seq names one message, ever.
// The epoch is the stream's creation time in base 36, so a stream deleted
// and created again is a new epoch. A stream can also go backwards without
// being recreated: a single replica that loses its acknowledged tail in a
// crash, a restore from a backup. Its next messages then get seqs that
// clients and hubs already saw. So a log that goes backwards becomes a new
// epoch too: the creation time, ".", and the value under the stream's
// metadata key herald_epoch (EpochKey). A stream without the key keeps the
// epoch it always had.
//
// Dispatchers detect the loss and record the new epoch, because they own
// the stream (Ensure creates it); gateways only read the epoch
// (Open, Refresh) and close their sockets when it changes. A Log from
// Ensure remembers the highest seq it knows is stored in the epoch: its
// appends' PubAcks and the stream's last seq each time it reads it. The
// stream went backwards when the answer to a fresh stream info, from the
// stream's leader (a replica answering during an election may lag), shows
// a last seq below what was known before that request was sent; or when
// an append is acknowledged, not as a duplicate, with a seq at or below
// what was known before it was sent. Only what was known before the
// request counts: the PubAcks of concurrent appends arrive in any order.
// The Log then pauses a random moment, re-reads the stream, adopts a new
// epoch if another dispatcher recorded one meanwhile, and otherwise
// updates the stream's configuration, as it is, with a new herald_epoch
// (the time in base 36). Ensure and Create never rewrite a live stream,
// and Apply carries its metadata over, so restarts and configuration
// changes keep the epoch; a Log never goes back to an epoch it left while
// the stream stayed.
//
// Until a dispatcher finds the loss (at its next refresh, or its next
// append that meets it), new messages are announced in the old epoch, and
// hubs drop their doorbells as already seen; once the epoch changes,
// clients get a gap and replay the retained log, those messages included.
//
// The limit: only a dispatcher that knew of the lost seqs can tell they
// are gone. A loss while no such dispatcher runs (all of them restarted
// since the lost messages were stored) goes unseen: clients whose cursor is
// beyond the log's last seq still get a gap, as they always did, but those
// whose cursor lies among the reused seqs skip the messages that reuse
// them. Two dispatchers that find a loss within a round trip of each other
// may both record one: the epoch then changes twice, and clients reconnect
// twice.
//
// # Concurrency
//
// A Log is safe for concurrent use and starts no goroutines. Appends for one
// user are serialized within the process by a lock of the user's own
// (userLocks), which a waiter abandons when its deadline passes, so a
// process never races itself on a user's chain and one user's slow append
// holds up no other user; other processes are kept out of the chain by the
// expected-sequence check. heads guards its own map; the epoch state is an
// atomic pointer, its high mark an atomic; mu guards the retired epochs
// and the live stream settings; recording lets one goroutine at a time
// record a new epoch; the count of appends in flight, which MaxAppends
// bounds, and the counters are atomics.
package inbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config describes the log's stream and how appends behave.
//
// The stream's settings (MaxMsgsPerUser to Storage) follow one rule, so
// that no dispatcher ever changes a live stream by starting with other
// flags: a setting left zero is the live stream's, or the default its
// comment names when Ensure creates the stream; a setting given that the
// live stream has otherwise makes Ensure fail with a *MismatchError. Only
// Apply changes a live stream's settings.
type Config struct {
	// Deployment scopes the users' subjects (and, unless Stream names one,
	// the stream): two deployments can share a NATS account. Empty is the
	// default deployment: herald.inbox.<userkey> in HERALD_INBOX.
	Deployment wire.Deployment
	// Stream is the JetStream stream name. If empty, the deployment's
	// (HERALD_INBOX for the default one).
	Stream string
	// MaxMsgsPerUser is how many messages each user's log keeps. If zero,
	// the stream's, or 100 when creating it; negative: no limit.
	MaxMsgsPerUser int64
	// MaxAge is how long a message is kept. If zero, the stream's, or 7
	// days when creating it; negative: no limit.
	MaxAge time.Duration
	// MaxBytes bounds the whole stream; the oldest messages go first. If
	// zero, the stream's, or no limit when creating it; negative: no limit.
	MaxBytes int64
	// MaxMsgSize bounds one message (payload and headers). If zero, the
	// stream's, or 68 KiB (the 64 KiB payload limit plus headers, or
	// MinMsgSize if larger) when creating it; negative: no limit.
	MaxMsgSize int32
	// Replicas of the stream: 1 locally, 3 in production. If zero, the
	// stream's, or 1 when creating it.
	Replicas int
	// Duplicates is the window in which an idempotency key is remembered.
	// If zero, the stream's, or 2 minutes (at most MaxAge) when creating it.
	Duplicates time.Duration
	// Storage is "file" or "memory". If empty, the stream's, or file when
	// creating it.
	Storage string
	// MinMsgSize is the largest message the appender must be able to
	// store: Ensure creates the stream with a MaxMsgSize of at least it,
	// and refuses a live stream whose MaxMsgSize is smaller, as every
	// append of a large payload would be refused. If zero, no minimum.
	MinMsgSize int32

	// AppendTimeout bounds one Append, retries included: long enough to
	// ride out a JetStream leader election (4-9s plus the campaign), so
	// that losing a NATS node costs callers latency, not errors. If zero,
	// 15s.
	AppendTimeout time.Duration
	// HeadCache is how many users' last seqs an appender remembers. If zero,
	// 100,000.
	HeadCache int
	// MaxAppends bounds the appends in flight at once, waiting for their
	// user's earlier append or retrying; one more fails at once with
	// ErrUnavailable. Appends that each wait up to AppendTimeout through an
	// outage would otherwise pile up without end. If zero, 4096: at a
	// thousand appends a second, four seconds of an election, and with
	// 64 KiB payloads at most 256 MiB held.
	MaxAppends int
	// DownFor, if set, is how long the NATS connection has been down
	// without a break, 0 while it is up (consul.Link.Down). While it is
	// more than MaxDown, appends fail at once rather than wait out their
	// deadline for a connection that is not coming back soon; a
	// connection merely reconnecting keeps them trying. If nil, appends
	// always try until their deadline.
	DownFor func() time.Duration
	// MaxDown is how long the connection may be down before appends fail
	// at once (see DownFor). If zero, 2s.
	MaxDown time.Duration
}

// Defaults of the zero Config fields.
const (
	DefaultStream         = "HERALD_INBOX"
	DefaultMaxMsgsPerUser = 100
	DefaultMaxAge         = 7 * 24 * time.Hour
	DefaultMaxMsgSize     = 68 << 10
	DefaultReplicas       = 1
	DefaultDuplicates     = 2 * time.Minute
	DefaultStorage        = "file"
	DefaultAppendTimeout  = 15 * time.Second
	DefaultHeadCache      = 100_000
	DefaultMaxAppends     = 4096
	DefaultMaxDown        = 2 * time.Second
)

// fill fills the defaults of the fields that are not stream settings: those
// come from the live stream, or from withDefaults when it is created.
func (c *Config) fill() {
	c.Stream = cmp.Or(c.Stream, c.Deployment.Stream())
	c.AppendTimeout = cmp.Or(c.AppendTimeout, DefaultAppendTimeout)
	c.HeadCache = cmp.Or(c.HeadCache, DefaultHeadCache)
	c.MaxAppends = cmp.Or(c.MaxAppends, DefaultMaxAppends)
	c.MaxDown = cmp.Or(c.MaxDown, DefaultMaxDown)
}

// withDefaults is c with the defaults of a new stream in the settings c
// leaves zero.
func (c Config) withDefaults() Config {
	c.MaxMsgsPerUser = cmp.Or(c.MaxMsgsPerUser, DefaultMaxMsgsPerUser)
	c.MaxAge = cmp.Or(c.MaxAge, DefaultMaxAge)
	c.MaxBytes = cmp.Or(c.MaxBytes, -1)
	c.MaxMsgSize = cmp.Or(c.MaxMsgSize, max(DefaultMaxMsgSize, c.MinMsgSize))
	c.Replicas = cmp.Or(c.Replicas, DefaultReplicas)
	if c.Duplicates == 0 {
		c.Duplicates = DefaultDuplicates
		if c.MaxAge > 0 {
			c.Duplicates = min(c.Duplicates, c.MaxAge)
		}
	}
	c.Storage = cmp.Or(c.Storage, DefaultStorage)
	return c
}

// Validate checks the fields JetStream would not refuse by itself, so that
// bad input is refused before anything is sent.
func (c Config) Validate() error {
	switch {
	case c.Replicas < 0:
		return fmt.Errorf("inbox: negative Replicas %d", c.Replicas)
	case c.Duplicates < 0:
		return fmt.Errorf("inbox: negative Duplicates %v", c.Duplicates)
	case c.Storage != "" && c.Storage != "file" && c.Storage != "memory":
		return fmt.Errorf("inbox: Storage %q: want file or memory", c.Storage)
	case c.MinMsgSize < 0:
		return fmt.Errorf("inbox: negative MinMsgSize %d", c.MinMsgSize)
	case c.MaxMsgSize > 0 && c.MaxMsgSize < c.MinMsgSize:
		return fmt.Errorf("inbox: MaxMsgSize %d is below MinMsgSize %d: the stream would refuse the largest messages", c.MaxMsgSize, c.MinMsgSize)
	case c.AppendTimeout < 0 || c.MaxDown < 0:
		return errors.New("inbox: negative AppendTimeout or MaxDown")
	case c.HeadCache < 0 || c.MaxAppends < 0:
		return errors.New("inbox: negative HeadCache or MaxAppends")
	}
	return nil
}

// StreamConfig is the JetStream configuration of a new stream: c's
// settings, and the defaults of those c leaves zero.
func (c Config) StreamConfig() jetstream.StreamConfig {
	c.fill()
	d := c.withDefaults()
	sc := jetstream.StreamConfig{
		Name:        c.Stream,
		Description: "herald: one subject per user, a chain of notifications in each",
	}
	for _, s := range settings {
		s.put(&sc, d)
	}
	return sc
}

// subjects are the log's stream's subjects: one per user.
func (c Config) subjects() []string { return []string{c.Deployment.InboxPrefix() + ">"} }

// subject is the subject of user's log.
func (l *Log) subject(user string) string { return l.cfg.Deployment.Inbox(user) }

// Errors of Append and the reads. The dispatcher maps them to HTTP answers.
var (
	// ErrUnavailable: the message was certainly not stored (NATS or
	// JetStream unreachable, the stream missing).
	ErrUnavailable = errors.New("log unavailable")
	// ErrUnknownOutcome: an attempt may have been stored but no answer came
	// before the deadline. Retrying with the same id is safe.
	ErrUnknownOutcome = errors.New("append outcome unknown")
	// ErrStorageFull: the store refuses writes.
	ErrStorageFull = errors.New("log storage full")
)

// Log is the per-user log.
type Log struct {
	cfg Config // as given, with fill's defaults; its stream settings as asked
	nc  *nats.Conn
	js  jetstream.JetStream
	// owner is set by Ensure: this process owns the stream, and records a
	// new epoch when it finds the stream went backwards.
	owner bool

	state     atomic.Pointer[epochState] // the epoch as last read
	reads     atomic.Uint64              // tickets of stream info reads
	recording chan struct{}              // full while a new epoch is being recorded

	mu      sync.Mutex // guards retired and live
	retired []string   // epochs left while the stream stayed, oldest first
	// live is cfg with every stream setting the stream's, as last created
	// or checked: what Config returns, and what Create creates the stream
	// with again after it was deleted.
	live Config

	locks userLocks
	heads headCache

	// beforeSend, if set (by tests), runs before each publish attempt.
	beforeSend func(context.Context)

	inFlight  atomic.Int64 // appends running now
	conflicts atomic.Int64
	retries   atomic.Int64
	epochs    atomic.Int64
	busy      atomic.Int64
	down      atomic.Int64
}

// Ensure creates the stream, or checks the live one against cfg's stream
// settings, and returns the log: a setting cfg leaves zero takes the live
// stream's value, and one cfg gives that the stream has otherwise is a
// *MismatchError. Ensure never changes a live stream's configuration (Apply
// does). Dispatchers call it; gateways Open the stream instead. The log
// owns the stream: when it finds the stream went backwards it records a
// new epoch in it (see the package doc).
//
// For appends, nc should not buffer while reconnecting
// (nats.ReconnectBufSize(-1)): a publish during a reconnect then fails at
// once, and Append can say the message was certainly not stored.
func Ensure(ctx context.Context, nc *nats.Conn, cfg Config) (*Log, error) {
	l, err := newLog(nc, cfg)
	if err != nil {
		return nil, err
	}
	l.owner = true
	if _, err := l.Create(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// Open returns the log of an existing stream. It fails if the stream does
// not exist yet.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Log, error) {
	l, err := newLog(nc, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := l.Refresh(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

func newLog(nc *nats.Conn, cfg Config) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.fill()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	l := &Log{cfg: cfg, live: cfg.withDefaults(), nc: nc, js: js, recording: make(chan struct{}, 1)}
	l.heads.max = cfg.HeadCache
	return l, nil
}

// Config returns the log's configuration with defaults filled in, and for a
// log from Ensure the stream's settings as the live stream has them.
func (l *Log) Config() Config {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live
}

// Epoch identifies this incarnation of the log's seqs: it changes when the
// stream is deleted and created again, which restarts its seqs, and when a
// dispatcher finds the stream lost acknowledged messages, whose seqs it
// then gives again (see the package doc). A cursor is only meaningful
// together with its epoch. Empty until known.
func (l *Log) Epoch() string {
	if st := l.state.Load(); st != nil {
		return st.epoch
	}
	return ""
}

// Refresh reads the stream's epoch from JetStream and returns it. On a Log
// from Ensure it also checks that the stream did not go backwards, and if
// it did, records a new epoch (see the package doc); a Log from Open only
// reads.
func (l *Log) Refresh(ctx context.Context) (string, error) {
	st, high := l.known()
	ticket := l.ticket()
	s, err := l.js.Stream(ctx, l.cfg.Stream)
	if err != nil {
		// Both stay matchable: errors.Is(err, jetstream.ErrStreamNotFound)
		// tells a missing stream from an unreachable one.
		return "", fmt.Errorf("%w: stream %s: %w", ErrUnavailable, l.cfg.Stream, err)
	}
	return l.checkInfo(ctx, st, high, ticket, s.CachedInfo())
}

// Stats are counters for metrics.
type Stats struct {
	Conflicts int64 // appends that found another message at the head
	Retries   int64 // publish attempts beyond the first
	// NewEpochs counts the epochs this Log recorded because the stream
	// had lost acknowledged messages.
	NewEpochs int64
	// InFlight is how many appends are running now.
	InFlight int64
	// Busy counts the appends refused at once because MaxAppends were in
	// flight.
	Busy int64
	// Down counts the appends that failed at once because the NATS
	// connection had been down for more than MaxDown.
	Down int64
}

// Stats returns the log's counters.
func (l *Log) Stats() Stats {
	return Stats{Conflicts: l.conflicts.Load(), Retries: l.retries.Load(), NewEpochs: l.epochs.Load(),
		InFlight: l.inFlight.Load(), Busy: l.busy.Load(), Down: l.down.Load()}
}

// headCache remembers the last seq this process appended for a user. A stale
// entry only costs a conflict and a retry: the expected-sequence check keeps
// the chain intact.
type headCache struct {
	max int
	mu  sync.Mutex // guards m
	m   map[string]uint64
}

func (c *headCache) get(user string) (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seq, ok := c.m[user]
	return seq, ok
}

func (c *headCache) set(user string, seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]uint64)
	}
	if _, ok := c.m[user]; !ok && len(c.m) >= c.max {
		for k := range c.m { // evict an arbitrary entry
			delete(c.m, k)
			break
		}
	}
	c.m[user] = seq
}

func (c *headCache) forget(user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, user)
}

func (c *headCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
}
