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
// # Concurrency
//
// A Log is safe for concurrent use and starts no goroutines. Appends for one
// user are serialized within the process by a lock of the user's own
// (userLocks), which a waiter abandons when its deadline passes, so a
// process never races itself on a user's chain and one user's slow append
// holds up no other user; other processes are kept out of the chain by the
// expected-sequence check. heads guards its own map; epoch is an atomic
// value.
package inbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config describes the log's stream and how appends behave.
type Config struct {
	// Stream is the JetStream stream name. If empty, defaults to HERALD_INBOX.
	Stream string
	// MaxMsgsPerUser is how many messages each user's log keeps. If zero,
	// defaults to 100.
	MaxMsgsPerUser int64
	// MaxAge is how long a message is kept. If zero, defaults to 7 days.
	MaxAge time.Duration
	// MaxBytes bounds the whole stream; the oldest messages go first. If
	// zero, unlimited.
	MaxBytes int64
	// MaxMsgSize bounds one message (payload and headers). If zero, 68 KiB:
	// the 64 KiB payload limit plus headers.
	MaxMsgSize int32
	// Replicas of the stream: 1 locally, 3 in production. If zero, 1.
	Replicas int
	// Duplicates is the window in which an idempotency key is remembered.
	// If zero, defaults to 2 minutes.
	Duplicates time.Duration
	// AppendTimeout bounds one Append, retries included. If zero, 2s.
	AppendTimeout time.Duration
	// HeadCache is how many users' last seqs an appender remembers. If zero,
	// 100,000.
	HeadCache int
}

func (c *Config) fill() {
	c.Stream = cmp.Or(c.Stream, "HERALD_INBOX")
	c.MaxMsgsPerUser = cmp.Or(c.MaxMsgsPerUser, 100)
	c.MaxAge = cmp.Or(c.MaxAge, 7*24*time.Hour)
	c.MaxBytes = cmp.Or(c.MaxBytes, -1)
	c.MaxMsgSize = cmp.Or(c.MaxMsgSize, 68<<10)
	c.Replicas = cmp.Or(c.Replicas, 1)
	c.Duplicates = cmp.Or(c.Duplicates, 2*time.Minute)
	c.AppendTimeout = cmp.Or(c.AppendTimeout, 2*time.Second)
	c.HeadCache = cmp.Or(c.HeadCache, 100_000)
}

// StreamConfig is the JetStream configuration of the log.
func (c Config) StreamConfig() jetstream.StreamConfig {
	c.fill()
	return jetstream.StreamConfig{
		Name:              c.Stream,
		Description:       "herald: one subject per user, a chain of notifications in each",
		Subjects:          []string{wire.InboxPrefix + ">"},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxMsgsPerSubject: c.MaxMsgsPerUser,
		MaxAge:            c.MaxAge,
		MaxBytes:          c.MaxBytes,
		MaxMsgSize:        c.MaxMsgSize,
		Duplicates:        c.Duplicates,
		Replicas:          c.Replicas,
		AllowDirect:       true,
	}
}

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
	cfg   Config
	nc    *nats.Conn
	js    jetstream.JetStream
	epoch atomic.Pointer[string]

	locks userLocks
	heads headCache

	// beforeSend, if set (by tests), runs before each publish attempt.
	beforeSend func(context.Context)

	conflicts atomic.Int64
	retries   atomic.Int64
}

// Ensure creates the stream or updates its configuration, and returns the
// log. Dispatchers call it; gateways Open the stream instead.
//
// For appends, nc should not buffer while reconnecting
// (nats.ReconnectBufSize(-1)): a publish during a reconnect then fails at
// once, and Append can say the message was certainly not stored.
func Ensure(ctx context.Context, nc *nats.Conn, cfg Config) (*Log, error) {
	l, err := newLog(nc, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := l.Create(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// Create creates the log's stream, or updates its configuration, and
// returns the epoch. A dispatcher calls it again when an operator has
// deleted the stream.
func (l *Log) Create(ctx context.Context) (string, error) {
	st, err := l.js.CreateOrUpdateStream(ctx, l.cfg.StreamConfig())
	if err != nil {
		return "", fmt.Errorf("create or update stream %s: %w", l.cfg.Stream, err)
	}
	return l.setEpoch(st.CachedInfo()), nil
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
	cfg.fill()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	l := &Log{cfg: cfg, nc: nc, js: js}
	l.heads.max = cfg.HeadCache
	return l, nil
}

// Config returns the log's configuration with defaults filled in.
func (l *Log) Config() Config { return l.cfg }

// Epoch identifies this incarnation of the stream: it changes when the
// stream is deleted and created again, which restarts its seqs. A cursor is
// only meaningful together with its epoch. Empty until known.
func (l *Log) Epoch() string {
	if e := l.epoch.Load(); e != nil {
		return *e
	}
	return ""
}

// Refresh reads the stream's epoch from JetStream and returns it.
func (l *Log) Refresh(ctx context.Context) (string, error) {
	st, err := l.js.Stream(ctx, l.cfg.Stream)
	if err != nil {
		// Both stay matchable: errors.Is(err, jetstream.ErrStreamNotFound)
		// tells a missing stream from an unreachable one.
		return "", fmt.Errorf("%w: stream %s: %w", ErrUnavailable, l.cfg.Stream, err)
	}
	return l.setEpoch(st.CachedInfo()), nil
}

func (l *Log) setEpoch(info *jetstream.StreamInfo) string {
	e := strconv.FormatInt(info.Created.UnixNano(), 36)
	if old := l.epoch.Swap(&e); old != nil && *old != e {
		l.heads.clear() // every cached head belongs to the old stream
	}
	return e
}

// Stats are counters for metrics.
type Stats struct {
	Conflicts int64 // appends that found another message at the head
	Retries   int64 // publish attempts beyond the first
}

// Stats returns the log's counters.
func (l *Log) Stats() Stats {
	return Stats{Conflicts: l.conflicts.Load(), Retries: l.retries.Load()}
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
