package inbox

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/nats-io/nats.go/jetstream"
)

// EpochKey is the key of the stream's metadata under which dispatchers
// record a new epoch when the stream has lost acknowledged messages.
const EpochKey = "herald_epoch"

// recordJitter bounds the pause before a dispatcher records a new epoch:
// two dispatchers that find the same loss at once then rarely both write,
// as the later one finds the other's epoch when it re-reads the stream.
const recordJitter = 250 * time.Millisecond

// retiredMax is how many left epochs a Log remembers, so that it never goes
// back to one of them.
const retiredMax = 8

// epochState is an epoch as this process knows it.
type epochState struct {
	created time.Time // the stream's creation time
	mark    string    // the value under EpochKey; empty when absent
	epoch   string    // the epoch, made of both
	ticket  uint64    // of the read it came from; a read sent earlier cannot replace it
	// high is the highest seq known to be stored in this epoch: the
	// PubAcks of this process's appends, and the stream's last seq each
	// time it was read. Seqs are never given twice in one stream, so a
	// stream whose last seq is below it, or a new message stored at or
	// below it, lost its tail.
	high atomic.Uint64
}

func newEpochState(ticket uint64, info *jetstream.StreamInfo) *epochState {
	st := &epochState{created: info.Created, mark: info.Config.Metadata[EpochKey], ticket: ticket}
	st.epoch = epochOf(st.created, st.mark)
	st.high.Store(info.State.LastSeq)
	return st
}

// is reports whether info describes this epoch.
func (st *epochState) is(info *jetstream.StreamInfo) bool {
	return st.created.Equal(info.Created) && st.mark == info.Config.Metadata[EpochKey]
}

// note records that seq is stored in this epoch.
func (st *epochState) note(seq uint64) {
	for {
		h := st.high.Load()
		if seq <= h || st.high.CompareAndSwap(h, seq) {
			return
		}
	}
}

// A mark herald wrote: a time in base 36.
var plainMark = regexp.MustCompile(`^[0-9a-z]{1,16}$`)

// epochOf is the epoch of a stream created at created whose EpochKey holds
// mark. Without a mark it is the creation time in base 36, as it always
// was, so the cursors clients hold stay valid. A mark someone else wrote
// is hashed, which keeps the epoch short and safe in frames and headers.
func epochOf(created time.Time, mark string) string {
	e := strconv.FormatInt(created.UnixNano(), 36)
	switch {
	case mark == "":
		return e
	case plainMark.MatchString(mark):
		return e + "." + mark
	default:
		return e + ".x" + strconv.FormatUint(xxhash.Sum64String(mark), 36)
	}
}

func infoEpoch(info *jetstream.StreamInfo) string {
	return epochOf(info.Created, info.Config.Metadata[EpochKey])
}

// adopt makes info's epoch the log's, unless it is the epoch the log has
// already, whose high mark it then raises, or an epoch from a read sent
// before the one the log's epoch came from (answers can overtake each
// other). It returns the log's epoch.
func (l *Log) adopt(ticket uint64, info *jetstream.StreamInfo) string {
	for {
		cur := l.state.Load()
		if cur != nil && cur.is(info) {
			cur.note(info.State.LastSeq)
			return cur.epoch
		}
		if cur != nil && ticket < cur.ticket {
			return cur.epoch
		}
		next := newEpochState(ticket, info)
		if !l.state.CompareAndSwap(cur, next) {
			continue
		}
		if cur != nil {
			l.heads.clear() // every cached head belongs to the old epoch
			if cur.created.Equal(next.created) {
				l.retire(cur.epoch) // the same stream, but its seqs were given again
			}
		}
		return next.epoch
	}
}

// retire remembers an epoch the log left while its stream stayed: that
// epoch's seqs were given again, so it must never come back.
func (l *Log) retire(epoch string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.retired) == retiredMax {
		l.retired = l.retired[1:]
	}
	l.retired = append(l.retired, epoch)
}

func (l *Log) isRetired(epoch string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.retired {
		if e == epoch {
			return true
		}
	}
	return false
}

// ticket numbers a read of the stream's info, taken before it is sent.
func (l *Log) ticket() uint64 { return l.reads.Add(1) }

// known is the log's epoch and the highest seq known to be stored in it,
// as they are before a request is sent: only what was known then is
// certain to show in the answer.
func (l *Log) known() (*epochState, uint64) {
	st := l.state.Load()
	if st == nil {
		return nil, 0
	}
	return st, st.high.Load()
}

// checkInfo is Refresh's decision on a fresh stream info, read after known
// returned st and high: adopt the epoch, or, for the stream's owner, record
// a new one because the stream went backwards.
func (l *Log) checkInfo(ctx context.Context, st *epochState, high, ticket uint64, info *jetstream.StreamInfo) (string, error) {
	if l.owner && st != nil {
		switch e := infoEpoch(info); {
		case st.is(info) && fromLeader(info) && info.State.LastSeq < high:
			return l.recordLoss(ctx, st, e, fmt.Sprintf("its last seq is %d, below seq %d, which it acknowledged", info.State.LastSeq, high))
		case e != st.epoch && l.isRetired(e):
			// Its configuration was written back with an epoch that
			// was left (a Create racing a recording, a restored
			// configuration): go forward again.
			return l.recordLoss(ctx, st, e, "it is back in epoch "+e+", which ended when the stream lost its tail")
		}
	}
	return l.adopt(ticket, info), nil
}

// fromLeader reports whether a stream info's state is the stream leader's,
// which holds every acknowledged message. While a replicated stream has no
// leader (an election), any replica answers with its own state, which may
// lag: no proof of a loss.
func fromLeader(info *jetstream.StreamInfo) bool {
	return info.Cluster == nil || info.Cluster.Leader != ""
}

// recordLoss records a new epoch for a stream found to be in epoch lost
// while its seqs were being given again, and returns the log's epoch. st
// is the log's state the finding was made against: if this process has
// moved on since, nothing is done. Otherwise, after a random pause, it
// re-reads the stream and adopts what it finds if that is no longer epoch
// lost (another dispatcher recorded a new epoch meanwhile, or the stream
// was recreated); else it updates the stream's configuration as it is,
// changing only EpochKey.
func (l *Log) recordLoss(ctx context.Context, st *epochState, lost, why string) (string, error) {
	select {
	case l.recording <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("%w: recording a new epoch: %w", ErrUnavailable, ctx.Err())
	}
	defer func() { <-l.recording }()
	if cur := l.state.Load(); cur != st {
		return cur.epoch, nil
	}
	t := time.NewTimer(rand.N(recordJitter))
	select {
	case <-ctx.Done():
		t.Stop()
		return "", fmt.Errorf("%w: recording a new epoch: %w", ErrUnavailable, ctx.Err())
	case <-t.C:
	}
	ticket := l.ticket()
	s, err := l.js.Stream(ctx, l.cfg.Stream)
	if err != nil {
		return "", fmt.Errorf("%w: stream %s: %w", ErrUnavailable, l.cfg.Stream, err)
	}
	info := s.CachedInfo()
	if infoEpoch(info) != lost {
		return l.adopt(ticket, info), nil
	}
	cfg := info.Config
	cfg.Metadata = maps.Clone(cfg.Metadata)
	if cfg.Metadata == nil {
		cfg.Metadata = make(map[string]string)
	}
	cfg.Metadata[EpochKey] = newMark(cfg.Metadata[EpochKey])
	ticket = l.ticket()
	s, err = l.js.UpdateStream(ctx, cfg)
	if err != nil {
		return "", fmt.Errorf("%w: stream %s went backwards (%s), and recording a new epoch failed: %w", ErrUnavailable, l.cfg.Stream, why, err)
	}
	l.epochs.Add(1)
	return l.adopt(ticket, s.CachedInfo()), nil
}

// newMark is a mark for a new epoch: the time in base 36, which no earlier
// epoch of the stream has had.
func newMark(old string) string {
	m := strconv.FormatInt(time.Now().UnixNano(), 36)
	if m == old {
		m += "0"
	}
	return m
}

// carried is the metadata Create keeps from the stream's current
// configuration: all of it but the server's own (_nats.*), which the
// server maintains. EpochKey above all: dropping it would take the log
// back to an epoch whose seqs were given again.
func carried(md map[string]string) map[string]string {
	var out map[string]string
	for k, v := range md {
		if strings.HasPrefix(k, "_nats.") {
			continue
		}
		if out == nil {
			out = make(map[string]string)
		}
		out[k] = v
	}
	return out
}
