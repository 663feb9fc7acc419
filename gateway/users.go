package gateway

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/gateway/inbox"
	"github.com/heraldpush/herald/gateway/wire"
)

// logReader is what hubs and sessions need of the users' log: reads of one
// user's chain. *inbox.Log is one; unit tests use a fake.
type logReader interface {
	// Last returns the user's last message, through the stream leader if
	// leader is set (a replica may lag).
	Last(ctx context.Context, user string, leader bool) (inbox.Message, bool, error)
	// ReadAfter returns up to n of the user's messages after seq, in order,
	// from any replica.
	ReadAfter(ctx context.Context, user string, after uint64, n int) ([]inbox.Message, error)
	// ReadAfterLeader is ReadAfter through the stream leader.
	ReadAfterLeader(ctx context.Context, user string, after uint64, n int) ([]inbox.Message, error)
}

var _ logReader = (*inbox.Log)(nil)

// conn is what a session needs of its WebSocket; *websocket.Conn is one.
type conn interface {
	Read(ctx context.Context) (websocket.MessageType, []byte, error)
	Write(ctx context.Context, typ websocket.MessageType, p []byte) error
	Ping(ctx context.Context) error
	Close(code websocket.StatusCode, reason string) error
	CloseNow() error
}

var _ conn = (*websocket.Conn)(nil)

// users is the registry of hubs: one for each user with a socket here, or
// one joining. It holds what hubs and sessions share, so they can be built
// and tested without a Gateway.
type users struct {
	cfg   *Config // read-only
	log   *slog.Logger
	m     *metrics
	tasks *tasks
	ctx   context.Context // ends when the gateway stops
	src   atomic.Pointer[logBox]

	// epoch is the log's epoch as the gateway knows it. confirm refreshes
	// it from the stream, sharing one request among concurrent callers,
	// and returns it: anything read before confirm was called came from
	// that epoch's stream, so a hub that read its user's log checks that
	// the answer is its own epoch before it believes what it read.
	epoch   func() string
	confirm func(ctx context.Context) (string, error)
	// epochChanged asks the gateway to check the epoch now.
	epochChanged func()
	// respond answers a wait=delivered doorbell.
	respond func(reply, status string)
	// encode turns a log message into its frame; a replaceable field only so
	// that tests can make it fail.
	encode func(m inbox.Message) ([]byte, error)

	replays chan struct{} // semaphore of concurrent session log reads

	poisonMu sync.Mutex // guards poisoned
	poisoned poisonSet

	mu      sync.Mutex // guards the following; taken before any hub.mu
	hubs    map[string]*hub
	sockets int // attached sessions
	joining int // places reserved by join and not yet attached or left
}

// logBox holds the log once it is open.
type logBox struct{ logReader }

func newUsers(cfg *Config, log *slog.Logger, m *metrics, t *tasks) *users {
	return &users{
		cfg: cfg, log: log, m: m, tasks: t, ctx: context.Background(),
		encode: func(m inbox.Message) ([]byte, error) {
			return wire.EncodeNotification(m.Seq, m.ID, m.Data, m.TS)
		},
		replays:  make(chan struct{}, cfg.MaxReplays),
		hubs:     make(map[string]*hub),
		poisoned: poisonSet{keys: map[poisonKey]struct{}{}},
	}
}

// reader returns the log, nil until it is open.
func (u *users) reader() logReader {
	if b := u.src.Load(); b != nil {
		return b.logReader
	}
	return nil
}

// join returns the user's hub, creating and initializing it if needed, with
// a place reserved for one more socket; the caller must attach a session or
// call leave. It refuses a user who has MaxSocketsPerUser sockets (and
// joining ones) already, before any work on the log.
func (u *users) join(ctx context.Context, user string) (*hub, error) {
	u.mu.Lock()
	h := u.hubs[user]
	created := h == nil
	if created {
		h = &hub{u: u, user: user, ready: make(chan struct{}), sessions: make(map[*session]struct{})}
		u.hubs[user] = h
	}
	h.mu.Lock()
	full := len(h.sessions)+h.joining >= u.cfg.MaxSocketsPerUser
	if !full {
		h.joining++
		u.joining++
	}
	h.mu.Unlock()
	u.mu.Unlock()
	if full {
		return nil, errTooManySockets
	}

	if created {
		u.initOrLeave(ctx, h)
	}
	select {
	case <-h.ready:
	case <-ctx.Done():
		u.leave(h, nil)
		return nil, ctx.Err()
	}
	h.mu.Lock()
	err := h.initErr
	h.mu.Unlock()
	if err != nil {
		u.leave(h, nil)
		return nil, err
	}
	return h, nil
}

// initOrLeave initializes a new hub; if that panics, it gives the place
// join reserved back before the panic goes on (the other joiners see the
// hub's initErr and leave too, so the hub is removed).
func (u *users) initOrLeave(ctx context.Context, h *hub) {
	defer func() {
		if v := recover(); v != nil {
			u.leave(h, nil)
			panic(v)
		}
	}()
	h.init(ctx)
}

// attach turns the place join reserved into a session. It refuses a hub
// closed meanwhile (its epoch ended, or it failed); the caller then leaves.
func (u *users) attach(h *hub, s *session) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return errStaleEpoch
	}
	h.joining--
	u.joining--
	h.sessions[s] = struct{}{}
	u.sockets++
	return nil
}

// leave detaches s (nil when a join did not end in a session) and removes
// the hub when nobody is left.
func (u *users) leave(h *hub, s *session) {
	u.mu.Lock()
	defer u.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if s != nil {
		if _, ok := h.sessions[s]; ok {
			delete(h.sessions, s)
			u.sockets--
		}
		s.ended = true
	} else {
		h.joining--
		u.joining--
	}
	if len(h.sessions) == 0 && h.joining == 0 && !h.closed {
		h.closed = true
		u.remove(h)
	}
}

// remove drops h from the map if it is still the user's hub. u.mu is held.
func (u *users) remove(h *hub) {
	if u.hubs[h.user] == h {
		delete(u.hubs, h.user)
	}
}

// fail ends a hub whose state a panic may have left inconsistent: it leaves
// the registry (the user's next socket builds a new hub from the log) and
// its sockets are closed; they resume from their cursors. Only this user
// pays for the panic.
func (u *users) fail(h *hub) {
	u.mu.Lock()
	h.mu.Lock()
	h.closed = true
	u.remove(h)
	h.mu.Unlock()
	u.mu.Unlock()
	h.closeAll(nil, closeInternal)
}

// closeEpoch closes every hub: the log has a new epoch. New sockets build
// new hubs in it; the old hubs' sockets are closed with 1012 and come back
// with their old cursors, which get a gap.
func (u *users) closeEpoch() {
	u.mu.Lock()
	hubs := make([]*hub, 0, len(u.hubs))
	for user, h := range u.hubs {
		hubs = append(hubs, h)
		delete(u.hubs, user)
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
	}
	u.mu.Unlock()
	for _, h := range hubs {
		h.closeAll(nil, closeNewEpoch)
	}
}

// hub returns the user's hub; nil if the user has none here.
func (u *users) hub(user string) *hub {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hubs[user]
}

// list and names copy the map's values and keys, so callers work on them
// without holding u.mu.
func (u *users) list() []*hub {
	u.mu.Lock()
	defer u.mu.Unlock()
	hubs := make([]*hub, 0, len(u.hubs))
	for _, h := range u.hubs {
		hubs = append(hubs, h)
	}
	return hubs
}

func (u *users) names() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	names := make([]string, 0, len(u.hubs))
	for name := range u.hubs {
		names = append(names, name)
	}
	return names
}

// sessions calls f for every session, holding no lock during f.
func (u *users) forSessions(f func(*session)) {
	var ss []*session
	u.mu.Lock()
	for _, h := range u.hubs {
		h.mu.Lock()
		for s := range h.sessions {
			ss = append(ss, s)
		}
		h.mu.Unlock()
	}
	u.mu.Unlock()
	for _, s := range ss {
		f(s)
	}
}

// load is the sockets open or on their way: the gateway's MaxSockets
// counts them all, so a burst of connects cannot overshoot it.
func (u *users) load() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.sockets + u.joining
}

// counts returns the open sockets and the users with a hub.
func (u *users) counts() (sockets, users int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.sockets, len(u.hubs)
}

// frame encodes a log message for the user's sockets. It returns nil for a
// message no socket can be sent — one that does not encode, or whose
// handling panicked before — which the sessions turn into a gap instead of
// trying it again and again. A panic while encoding is recovered and poisons
// the message.
func (u *users) frame(epoch, user string, m inbox.Message) (frame []byte) {
	key := poisonKey{epoch: epoch, user: user, seq: m.Seq}
	if u.isPoisoned(key) {
		return nil
	}
	defer u.tasks.recover("encode", func() { u.poison(key); frame = nil })
	frame, err := u.encode(m)
	if err != nil {
		u.m.undeliverable.Inc()
		u.log.Warn("a log message cannot be sent to sockets; its devices get a gap instead", "user", user, "seq", m.Seq, "error", err)
		u.poison(key)
		return nil
	}
	return frame
}

func (u *users) isPoisoned(k poisonKey) bool {
	u.poisonMu.Lock()
	defer u.poisonMu.Unlock()
	_, ok := u.poisoned.keys[k]
	return ok
}

func (u *users) poison(k poisonKey) {
	u.poisonMu.Lock()
	defer u.poisonMu.Unlock()
	u.poisoned.add(k)
}

// poisonSet remembers the last maxPoisoned messages that could not be sent,
// oldest forgotten first.
type poisonSet struct {
	keys  map[poisonKey]struct{}
	order []poisonKey
}

type poisonKey struct {
	epoch, user string
	seq         uint64
}

const maxPoisoned = 4096

func (p *poisonSet) add(k poisonKey) {
	if _, ok := p.keys[k]; ok {
		return
	}
	if len(p.order) >= maxPoisoned {
		delete(p.keys, p.order[0])
		p.order = p.order[1:]
	}
	p.keys[k] = struct{}{}
	p.order = append(p.order, k)
}

// sleep waits d unless ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
