package inbox

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The stream's configuration has one owner: the operator, through Apply
// (herald stream apply). Ensure creates the stream when there is none and
// otherwise only reads it: it adopts the settings a Config leaves zero and
// refuses one that a Config gives otherwise (see Config). So a dispatcher
// restarted with other flags, or none, can never turn an R3 stream into an
// R1 one, nor shorten its retention.

// A setting is one of the stream's settings a Config gives, or one that
// herald needs (its subjects, retention and discard policies, direct gets),
// which no Config leaves to the stream.
type setting struct {
	// name is the setting as herald names it: the flag of herald
	// dispatcher and herald stream apply.
	name string
	// given reports whether c gives the setting; if not, it is the
	// stream's.
	given func(c Config) bool
	// put writes c's value of the setting into sc, in JetStream's terms.
	put func(sc *jetstream.StreamConfig, c Config)
	// show is sc's value of the setting as herald prints it. Two
	// configurations agree on a setting when show gives the same for
	// both: it is the one comparison.
	show func(sc jetstream.StreamConfig) string
	// take sets c's field to sc's value; nil for herald's own settings.
	take func(c *Config, sc jetstream.StreamConfig)
}

// noLimit is JetStream's "unlimited" for a count or a size.
func noLimit[T int32 | int64](v T) T {
	if v < 0 {
		return -1
	}
	return v
}

func showLimit[T int32 | int64](v T) string {
	if v <= 0 {
		return "unlimited"
	}
	return strconv.FormatInt(int64(v), 10)
}

// takeLimit is a Config's value of a limit: negative for none.
func takeLimit[T int32 | int64](v T) T {
	if v <= 0 {
		return -1
	}
	return v
}

func showStorage(t jetstream.StorageType) string {
	if t == jetstream.MemoryStorage {
		return "memory"
	}
	return "file"
}

var settings = []setting{
	{
		name:  "replicas",
		given: func(c Config) bool { return c.Replicas != 0 },
		put:   func(sc *jetstream.StreamConfig, c Config) { sc.Replicas = c.Replicas },
		show:  func(sc jetstream.StreamConfig) string { return strconv.Itoa(max(sc.Replicas, 1)) },
		take:  func(c *Config, sc jetstream.StreamConfig) { c.Replicas = max(sc.Replicas, 1) },
	}, {
		name:  "max-per-user",
		given: func(c Config) bool { return c.MaxMsgsPerUser != 0 },
		put:   func(sc *jetstream.StreamConfig, c Config) { sc.MaxMsgsPerSubject = noLimit(c.MaxMsgsPerUser) },
		show:  func(sc jetstream.StreamConfig) string { return showLimit(sc.MaxMsgsPerSubject) },
		take:  func(c *Config, sc jetstream.StreamConfig) { c.MaxMsgsPerUser = takeLimit(sc.MaxMsgsPerSubject) },
	}, {
		name:  "max-age",
		given: func(c Config) bool { return c.MaxAge != 0 },
		put:   func(sc *jetstream.StreamConfig, c Config) { sc.MaxAge = max(c.MaxAge, 0) },
		show: func(sc jetstream.StreamConfig) string {
			if sc.MaxAge <= 0 {
				return "unlimited"
			}
			return sc.MaxAge.String()
		},
		take: func(c *Config, sc jetstream.StreamConfig) {
			c.MaxAge = sc.MaxAge
			if c.MaxAge <= 0 {
				c.MaxAge = -1
			}
		},
	}, {
		name:  "max-bytes",
		given: func(c Config) bool { return c.MaxBytes != 0 },
		put:   func(sc *jetstream.StreamConfig, c Config) { sc.MaxBytes = noLimit(c.MaxBytes) },
		show:  func(sc jetstream.StreamConfig) string { return showLimit(sc.MaxBytes) },
		take:  func(c *Config, sc jetstream.StreamConfig) { c.MaxBytes = takeLimit(sc.MaxBytes) },
	}, {
		name:  "max-msg-size",
		given: func(c Config) bool { return c.MaxMsgSize != 0 },
		put:   func(sc *jetstream.StreamConfig, c Config) { sc.MaxMsgSize = noLimit(c.MaxMsgSize) },
		show:  func(sc jetstream.StreamConfig) string { return showLimit(sc.MaxMsgSize) },
		take:  func(c *Config, sc jetstream.StreamConfig) { c.MaxMsgSize = takeLimit(sc.MaxMsgSize) },
	}, {
		name:  "dedupe-window",
		given: func(c Config) bool { return c.Duplicates != 0 },
		put:   func(sc *jetstream.StreamConfig, c Config) { sc.Duplicates = c.Duplicates },
		show:  func(sc jetstream.StreamConfig) string { return sc.Duplicates.String() },
		take:  func(c *Config, sc jetstream.StreamConfig) { c.Duplicates = sc.Duplicates },
	}, {
		name:  "storage",
		given: func(c Config) bool { return c.Storage != "" },
		put: func(sc *jetstream.StreamConfig, c Config) {
			sc.Storage = jetstream.FileStorage
			if c.Storage == "memory" {
				sc.Storage = jetstream.MemoryStorage
			}
		},
		show: func(sc jetstream.StreamConfig) string { return showStorage(sc.Storage) },
		take: func(c *Config, sc jetstream.StreamConfig) { c.Storage = showStorage(sc.Storage) },
	},
	// herald's own: the log does not work without them.
	{
		name:  "subjects",
		given: func(Config) bool { return true },
		put:   func(sc *jetstream.StreamConfig, c Config) { sc.Subjects = c.subjects() },
		show:  func(sc jetstream.StreamConfig) string { return strings.Join(sc.Subjects, ",") },
	}, {
		name:  "retention",
		given: func(Config) bool { return true },
		put:   func(sc *jetstream.StreamConfig, _ Config) { sc.Retention = jetstream.LimitsPolicy },
		show:  func(sc jetstream.StreamConfig) string { return strings.ToLower(sc.Retention.String()) },
	}, {
		name:  "discard",
		given: func(Config) bool { return true },
		put:   func(sc *jetstream.StreamConfig, _ Config) { sc.Discard = jetstream.DiscardOld },
		show: func(sc jetstream.StreamConfig) string {
			return strings.TrimPrefix(strings.ToLower(sc.Discard.String()), "discard")
		},
	}, {
		name:  "allow-direct",
		given: func(Config) bool { return true },
		put:   func(sc *jetstream.StreamConfig, _ Config) { sc.AllowDirect = true },
		show:  func(sc jetstream.StreamConfig) string { return strconv.FormatBool(sc.AllowDirect) },
	},
}

// A Setting is one of the stream's settings and its value, as herald names
// and prints them.
type Setting struct{ Name, Value string }

// Settings lists the settings of a stream's configuration, those a Config
// gives and then those herald needs, in a fixed order.
func Settings(sc jetstream.StreamConfig) []Setting {
	out := make([]Setting, len(settings))
	for i, s := range settings {
		out[i] = Setting{s.name, s.show(sc)}
	}
	return out
}

// A Diff is a setting whose live value is not the one wanted.
type Diff struct {
	Setting string
	Live    string // the live stream's value
	Want    string // the value asked for
}

// MismatchError is Ensure's refusal of a live stream that has settings
// otherwise than its Config gives them. Nothing was changed.
type MismatchError struct {
	Stream string
	Diffs  []Diff
}

func (e *MismatchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "stream %s is configured otherwise than asked:", e.Stream)
	for i, d := range e.Diffs {
		if i > 0 {
			b.WriteString(";")
		}
		fmt.Fprintf(&b, " %s is %s on the stream, %s asked", d.Setting, d.Live, d.Want)
	}
	b.WriteString(". Leave a setting unset to take the stream's value, or change the stream with herald stream apply")
	return b.String()
}

// diffs lists the settings cfg gives that live has otherwise.
func diffs(live jetstream.StreamConfig, cfg Config) []Diff {
	var out []Diff
	for _, s := range settings {
		if !s.given(cfg) {
			continue
		}
		want := live
		s.put(&want, cfg)
		if w, l := s.show(want), s.show(live); w != l {
			out = append(out, Diff{Setting: s.name, Live: l, Want: w})
		}
	}
	return out
}

// check is Ensure's verdict on a live stream: nil, or a *MismatchError.
func (l *Log) check(live jetstream.StreamConfig) error {
	ds := diffs(live, l.cfg)
	if m := l.cfg.MinMsgSize; m > 0 && l.cfg.MaxMsgSize == 0 && live.MaxMsgSize > 0 && live.MaxMsgSize < m {
		ds = append(ds, Diff{Setting: "max-msg-size", Live: showLimit(live.MaxMsgSize), Want: fmt.Sprintf("at least %d (MinMsgSize)", m)})
	}
	if len(ds) > 0 {
		return &MismatchError{Stream: l.cfg.Stream, Diffs: ds}
	}
	return nil
}

// setLive records the live stream's settings as the log's.
func (l *Log) setLive(sc jetstream.StreamConfig) {
	c := l.cfg
	for _, s := range settings {
		if s.take != nil {
			s.take(&c, sc)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.live = c
}

// The patience of Create's requests. A stream info, or an update, sent
// while a replicated stream's creation is still in flight (assigned, its
// group without a leader yet) is answered by no server: only the stream's
// leader answers those, and the other servers stay silent. So no request
// may wait long for an answer; Create retries quickly instead.
const (
	createTimeout = 5 * time.Second
	infoTimeout   = time.Second
)

// Create creates the log's stream if there is none, or checks the live
// one as Ensure does (never changing it), and returns the epoch. A
// dispatcher calls it again when an operator has deleted the stream; it is
// then created with the settings it had.
//
// It sends the create-only request first, with the log's settings and the
// defaults of those left zero. The meta leader answers it at once, even
// while another process's create of the same stream is in flight: with the
// stream when there is none or it is exactly that, and "already in use"
// when it is otherwise, which Create then reads and compares. It never
// sends an update, and a stream info only when the stream exists: sent
// first, while another dispatcher creates an R3 stream on a fresh cluster,
// either waited its whole timeout unanswered (see infoTimeout). Failures
// are retried quickly, with jitter, until ctx ends; a mismatch is returned
// at once.
func (l *Log) Create(ctx context.Context) (string, error) {
	delay := 20 * time.Millisecond
	for {
		ticket := l.ticket()
		info, err := l.createOrRead(ctx)
		if err == nil {
			if err := l.check(info.Config); err != nil {
				return "", err
			}
			l.setLive(info.Config)
			return l.adopt(ticket, info), nil
		}
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("%w: creating or reading stream %s: %w", ErrUnavailable, l.cfg.Stream, err)
		case <-t.C:
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// createOrRead creates the stream, or reads it when one exists: JetStream
// refuses the create of a stream that exists otherwise configured ("already
// in use"), or that this server could not hold as asked (R3 on a single
// server). The create's error is returned when no stream can be read.
func (l *Log) createOrRead(ctx context.Context) (*jetstream.StreamInfo, error) {
	l.mu.Lock()
	sc := l.live.StreamConfig()
	l.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, createTimeout)
	s, err := l.js.CreateStream(cctx, sc)
	cancel()
	if err == nil {
		return s.CachedInfo(), nil
	}
	ictx, cancel := context.WithTimeout(ctx, infoTimeout)
	defer cancel()
	if s, ierr := l.js.Stream(ictx, l.cfg.Stream); ierr == nil {
		return s.CachedInfo(), nil
	}
	return nil, err
}

// Applied is what Apply did.
type Applied struct {
	// Created: there was no stream; Apply created it with Settings.
	Created bool
	// Changes are the settings Apply changed, from Live to Want. None
	// (and not Created): the stream already was as asked, and nothing was
	// written.
	Changes []Diff
	// Settings are the stream's settings now.
	Settings []Setting
	// Epoch is the log's epoch, which Apply keeps.
	Epoch string
}

// Apply makes the live stream's settings those cfg gives: it creates the
// stream if there is none (with the defaults of the settings cfg leaves
// zero), and otherwise changes each setting cfg gives that the stream has
// otherwise, and each of herald's own settings the stream lacks, leaving
// the others, and the stream's metadata (EpochKey above all), as they are.
// It is the explicit change an operator makes (herald stream apply);
// Ensure never changes a live stream. A storage change is refused before
// anything is written: JetStream cannot change a live stream's storage.
func Apply(ctx context.Context, nc *nats.Conn, cfg Config) (Applied, error) {
	l, err := newLog(nc, cfg)
	if err != nil {
		return Applied{}, err
	}
	s, err := l.js.Stream(ctx, l.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = l.js.CreateStream(ctx, l.cfg.StreamConfig())
		if err == nil {
			info := s.CachedInfo()
			return Applied{Created: true, Settings: Settings(info.Config), Epoch: infoEpoch(info)}, nil
		}
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // created meanwhile
			s, err = l.js.Stream(ctx, l.cfg.Stream)
		}
	}
	if err != nil {
		return Applied{}, fmt.Errorf("stream %s: %w", l.cfg.Stream, err)
	}
	info := s.CachedInfo()
	live := info.Config
	changes := diffs(live, l.cfg)
	if len(changes) == 0 {
		return Applied{Settings: Settings(live), Epoch: infoEpoch(info)}, nil
	}
	if i := slices.IndexFunc(changes, func(d Diff) bool { return d.Setting == "storage" }); i >= 0 {
		return Applied{}, fmt.Errorf("stream %s: storage is %s, %s asked: JetStream cannot change a live stream's storage (a new stream, and a new epoch, would be needed); nothing was changed",
			l.cfg.Stream, changes[i].Live, changes[i].Want)
	}
	next := live
	next.Metadata = carried(live.Metadata)
	for _, st := range settings {
		if st.given(l.cfg) {
			st.put(&next, l.cfg)
		}
	}
	s, err = l.js.UpdateStream(ctx, next)
	if err != nil {
		return Applied{}, fmt.Errorf("stream %s: changing %s: %w", l.cfg.Stream, changeList(changes), err)
	}
	info = s.CachedInfo()
	return Applied{Changes: changes, Settings: Settings(info.Config), Epoch: infoEpoch(info)}, nil
}

func changeList(ds []Diff) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, fmt.Sprintf("%s from %s to %s", d.Setting, d.Live, d.Want))
	}
	return strings.Join(parts, ", ")
}

// Status is a live stream as herald sees it.
type Status struct {
	Settings []Setting
	Epoch    string
	// Info is JetStream's own account: the stream's state (messages,
	// bytes, seqs) and its cluster (leader, replicas and their lag).
	Info *jetstream.StreamInfo
}

// Show reads the live stream cfg names (herald stream show). It changes
// nothing.
func Show(ctx context.Context, nc *nats.Conn, cfg Config) (Status, error) {
	cfg.fill()
	js, err := jetstream.New(nc)
	if err != nil {
		return Status{}, err
	}
	s, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return Status{}, fmt.Errorf("stream %s: %w", cfg.Stream, err)
	}
	info := s.CachedInfo()
	return Status{Settings: Settings(info.Config), Epoch: infoEpoch(info), Info: info}, nil
}
