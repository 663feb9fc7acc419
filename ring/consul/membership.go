package consul

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heraldpush/herald/ring"
)

// DeadGap is the least time between the two "no responders" answers that
// remove a member that is not passing. One such answer can be a gateway
// between two NATS connections; two, a second apart, from a watcher whose own
// connection has been up for MinUptime, are a process that is gone (NATS
// servers with a 1 s ping interval drop a crashed or cut-off client within
// seconds).
const DeadGap = time.Second

// verdict is what a probe's answer means for a member that is not passing.
type verdict int

const (
	// healthy: its process answers, healthy, with the nonce the catalog
	// lists (if it lists one). It stays however long it is not passing.
	healthy verdict = iota
	// failing: the request timed out, or the answer says unhealthy, or
	// another process answers for the ID. It leaves after the hold period,
	// counting only time during which most of the others are fine.
	failing
	// dead: nobody answers for the ID. A second such answer DeadGap later
	// removes it, however many fail at once.
	dead
	// unknown: the probe could not tell (NATS itself unreachable). Counts as
	// alive: nothing accrues and nothing is removed.
	unknown
)

func (v verdict) String() string {
	switch v {
	case healthy:
		return "healthy"
	case failing:
		return "failing"
	case dead:
		return "dead"
	default:
		return "unknown"
	}
}

// judge reads an answer. nonce is the instance the catalog last listed for
// the ID; empty if it never listed one.
func judge(l Liveness, nonce string) verdict {
	switch l.State {
	case Alive:
		if l.Healthy && (nonce == "" || l.Instance == nonce) {
			return healthy
		}
		return failing
	case Dead:
		return dead
	case Silent:
		return failing
	default:
		return unknown
	}
}

// why says, for the logs, what made an answer failing.
func why(l Liveness, nonce string) string {
	switch {
	case l.State == Silent:
		return "its liveness request timed out"
	case l.State == Alive && nonce != "" && l.Instance != nonce:
		return "another instance answers for it (" + l.Instance + ", the catalog lists " + nonce + ")"
	case l.State == Alive:
		return "it answers unhealthy: " + l.Reason
	}
	return l.State.String()
}

// suspect is the build loop's record of a ring member that is not passing.
type suspect struct {
	since     time.Time     // when this watcher first saw it not passing
	last      Liveness      // the last answer
	verdict   verdict       // what the last answer meant
	inCatalog bool          // the last snapshot lists it
	deadSince time.Time     // probe time of the first of the current run of Dead answers; zero after any other answer
	failing   time.Duration // failing time counted toward the hold
	failedAt  time.Time     // probe time of the last failing (or dead) answer; zero after any other answer
	paused    bool          // the last failing answer counted nothing: most others were not fine either

	loggedPaused bool // paused, as last logged
}

// members is the build loop's bookkeeping: it alone reads and writes it.
type members struct {
	suspects map[string]*suspect // ring members not passing, by ID
	nonces   map[string]string   // the last nonce the catalog listed, by ID, for ring members
}

// build owns the ring: it rebuilds it after each burst of snapshots and, while
// members are held, at every probe interval until they pass or leave.
func (w *Watcher) build(ctx context.Context, snaps chan snapshot) {
	var (
		snap  *snapshot
		book  = members{suspects: map[string]*suspect{}, nonces: map[string]string{}}
		timer = time.NewTimer(0)
		due   time.Time // when timer fires; zero when it is stopped
	)
	<-timer.C
	schedule := func(d time.Duration) {
		at := time.Now().Add(d)
		if due.IsZero() || at.Before(due) {
			timer.Reset(d)
			due = at
		}
	}
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-snaps:
			first := snap == nil
			snap = &s
			w.mu.Lock()
			w.status.Skipped, w.status.Duplicates = s.skipped, s.duplicates
			w.status.Passing = s.passing()
			w.mu.Unlock()
			if first {
				schedule(0) // a watcher with no ring builds it at once
			} else {
				schedule(w.cfg.Debounce)
			}
		case <-timer.C:
			due = time.Time{}
			if next := w.evaluate(ctx, *snap, &book); next > 0 {
				schedule(next)
			}
		}
	}
}

// evaluate applies the membership rule to the snapshot and the current ring:
// every passing instance is in; a member that is not passing is probed and
// stays unless two "no responders" DeadGap apart, or the hold period of
// failing while most others are fine, say it should go. A watcher with no
// ring yet also admits the catalog's non-passing instances that answer
// healthy. evaluate publishes the ring if it changed and returns when it must
// run again (zero: not until the next snapshot).
func (w *Watcher) evaluate(ctx context.Context, snap snapshot, book *members) time.Duration {
	now := time.Now()
	cur, _ := w.Ring()
	for id, in := range snap.instances {
		if in.nonce != "" {
			book.nonces[id] = in.nonce
		}
	}
	var in, probed []ring.Member // passing; not passing, to probe
	for _, i := range snap.instances {
		if i.passing {
			in = append(in, i.member)
		} else if cur == nil {
			probed = append(probed, i.member)
		}
	}
	passing := len(in)
	for _, m := range cur.Members() {
		if i, ok := snap.instances[m.ID]; !ok || !i.passing {
			probed = append(probed, m)
		}
	}
	slices.SortFunc(probed, func(a, b ring.Member) int { return strings.Compare(a.ID, b.ID) })
	answers := w.probeAll(ctx, probed)
	verdicts := make([]verdict, len(probed))
	fine := passing // passing or answering healthy
	for i, m := range probed {
		verdicts[i] = judge(answers[i], book.nonces[m.ID])
		if verdicts[i] == healthy {
			fine++
		}
	}

	kept := map[string]bool{}
	for i, m := range probed {
		l, v := answers[i], verdicts[i]
		_, listed := snap.instances[m.ID]
		log := w.log.With("gateway", m.ID)
		if cur == nil { // a fresh watcher: admit only those that answer healthy
			if v != healthy {
				log.Info("not admitting a gateway that is not passing", "verdict", v, "state", l.State, "reason", l.Reason)
				continue
			}
			log.Info("gateway not passing but answers healthy; admitting it", "instance", l.Instance)
			book.suspects[m.ID] = &suspect{since: now, last: l, verdict: v, inCatalog: listed}
			in, kept[m.ID] = append(in, m), true
			continue
		}
		s := book.suspects[m.ID]
		if s == nil {
			s = &suspect{since: now, verdict: -1}
			book.suspects[m.ID] = s
		}
		// More than half of the others (passing members, and the not
		// passing ones probed now) passing or answering healthy: then a
		// failing member fails on its own, and its time counts.
		others, fineOthers := passing+len(probed)-1, fine
		if v == healthy {
			fineOthers--
		}
		if reason := s.observe(now, l, v, 2*fineOthers > others, w.cfg.Hold); reason != "" {
			log.Warn("dropping gateway: "+reason, "not_passing_for", now.Sub(s.since).Round(time.Millisecond),
				"in_catalog", listed, "failing_counted", s.failing.Round(time.Millisecond))
			delete(book.suspects, m.ID)
			continue
		}
		w.logChange(log, s, l, v, book.nonces[m.ID], listed, others, fineOthers)
		s.inCatalog = listed
		in, kept[m.ID] = append(in, m), true
	}
	for id, s := range book.suspects {
		if !kept[id] {
			if i, ok := snap.instances[id]; ok && i.passing {
				w.log.Info("gateway passing again", "gateway", id, "held_for", now.Sub(s.since).Round(time.Millisecond))
			}
			delete(book.suspects, id)
		}
	}

	next, held, detail := w.next(book), make([]string, 0, len(book.suspects)), make([]HeldMember, 0, len(book.suspects))
	for id := range book.suspects {
		held = append(held, id)
	}
	slices.Sort(held)
	for _, id := range held {
		s := book.suspects[id]
		detail = append(detail, HeldMember{ID: id, Since: s.since, InCatalog: s.inCatalog, Liveness: s.last,
			Verdict: s.verdict.String(), Failing: s.failing, Paused: s.paused})
	}
	w.mu.Lock()
	w.status.Held, w.status.HeldMembers = held, detail
	w.mu.Unlock()

	r, err := ring.New(w.cfg.VNodes, in)
	if err != nil { // members were validated; this is a bug
		w.log.Error("building ring", "error", err)
		return next
	}
	if cur == nil || r.Fingerprint() != cur.Fingerprint() {
		w.publish(r, held)
	}
	for id := range book.nonces {
		if _, ok := snap.instances[id]; !ok {
			if _, ok := r.Member(id); !ok {
				delete(book.nonces, id)
			}
		}
	}
	return next
}

// observe records an answer probed at now and returns why the member must
// leave, or "" if it stays. quorum says whether more than half of the other
// members were passing or answering healthy. The time since the last failing
// answer counts toward the hold only if that was so at both ends: when it
// changed in between is not known, and the doubt must not remove anyone.
func (s *suspect) observe(now time.Time, l Liveness, v verdict, quorum bool, hold time.Duration) string {
	s.last = l
	if v != dead {
		s.deadSince = time.Time{}
	}
	switch v {
	case healthy:
		s.failing, s.failedAt, s.paused = 0, time.Time{}, false
	case unknown:
		s.failedAt, s.paused = time.Time{}, false
	case failing, dead:
		if !s.failedAt.IsZero() && quorum && !s.paused {
			s.failing += now.Sub(s.failedAt)
		}
		s.failedAt, s.paused = now, !quorum
	}
	switch {
	case v == dead && s.deadSince.IsZero():
		s.deadSince = now
	case v == dead && now.Sub(s.deadSince) >= DeadGap:
		return "nobody answers for it (no responders twice, " + now.Sub(s.deadSince).Round(time.Millisecond).String() + " apart)"
	}
	if s.failing >= hold {
		return "failing for the hold period while most other members were fine"
	}
	return ""
}

// logChange logs a held member's verdict when it changes, and when its hold
// pauses or resumes: once per decision, not once per probe.
func (w *Watcher) logChange(log *slog.Logger, s *suspect, l Liveness, v verdict, nonce string, listed bool, others, fineOthers int) {
	switch {
	case v != s.verdict:
	case v == failing && s.paused != s.loggedPaused:
		s.loggedPaused = s.paused
		if s.paused {
			log.Warn("most members are failing too; the hold is paused", "fine_others", fineOthers, "others", others,
				"failing_counted", s.failing.Round(time.Millisecond))
		} else {
			log.Info("most members are fine again; the hold resumes", "fine_others", fineOthers, "others", others,
				"failing_counted", s.failing.Round(time.Millisecond))
		}
		return
	default:
		return
	}
	s.verdict, s.loggedPaused = v, s.paused
	attrs := []any{"in_catalog", listed}
	switch v {
	case healthy:
		log.Info("gateway not passing but answers healthy; keeping it", append(attrs, "instance", l.Instance)...)
	case failing:
		log.Warn("gateway not passing and "+why(l, nonce)+"; holding it", append(attrs, "hold", w.cfg.Hold,
			"paused", s.paused, "failing_counted", s.failing.Round(time.Millisecond))...)
	case dead:
		log.Info("gateway not passing and nobody answers for it; confirming in "+DeadGap.String(), attrs...)
	default:
		log.Info("gateway not passing and its liveness cannot be probed; keeping it", attrs...)
	}
}

// next is when held members must be judged again: every probe interval, and
// sooner when a second "no responders" or the end of a hold is due earlier.
func (w *Watcher) next(book *members) time.Duration {
	if len(book.suspects) == 0 {
		return 0
	}
	next := w.cfg.ProbeInterval
	for _, s := range book.suspects {
		if !s.deadSince.IsZero() {
			next = min(next, DeadGap-time.Since(s.deadSince))
		}
		if !s.failedAt.IsZero() && !s.paused {
			next = min(next, w.cfg.Hold-s.failing)
		}
	}
	return max(next, time.Millisecond)
}

// probeAll probes the members concurrently, each within ProbeTimeout.
func (w *Watcher) probeAll(ctx context.Context, ms []ring.Member) []Liveness {
	out := make([]Liveness, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, w.cfg.ProbeTimeout)
			defer cancel()
			w.probes.Add(1)
			out[i] = w.cfg.Probe(pctx, m.ID)
		})
	}
	wg.Wait()
	return out
}

func (w *Watcher) publish(r *ring.Ring, held []string) {
	ids := make([]string, 0, r.Len())
	for _, m := range r.Members() {
		ids = append(ids, m.ID)
	}
	w.log.Info("ring changed", "fingerprint", r.Fingerprint(), "members", ids, "held", held)
	old := w.state.Swap(&published{ring: r, changed: make(chan struct{})})
	close(old.changed)
	w.changes.Add(1)
}
