// Package ring is herald's consistent-hash ring: it maps a user ID to the
// gateway that holds the user's sockets.
//
// A Ring is immutable and a pure function of its inputs, so every dispatcher
// and gateway that sees the same members builds the same ring without talking
// to each other, and two components agree exactly when their fingerprints are
// equal. Membership changes build a new Ring; callers swap rings atomically
// (atomic.Pointer) and never mutate one. The package does no I/O, takes no
// locks and logs nothing.
//
// The algorithm (version 1): the key of a user is xxhash64(userID); gateway g
// of weight w owns the points xxhash64(g + "#" + i) for i in [0, vnodes·w);
// a user belongs to the member of the first point ≥ its key, wrapping around
// to the first point. Points that collide are ordered by gateway ID, so the
// lowest ID wins the tie.
package ring

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// Version is the version of the placement algorithm. It is part of every
// fingerprint, so components running different algorithms never believe they
// agree.
const Version = 1

// DefaultVNodes is the number of points per unit of weight when Config.VNodes
// is zero. With 256 points per member the coefficient of variation of keys per
// member is about 1/√256 = 6.25%.
const DefaultVNodes = 256

// Weights outside [MinWeight, MaxWeight] are rejected.
const (
	MinWeight = 1
	MaxWeight = 16
)

// maxVNodes bounds Config.VNodes so a ring of many heavy members stays a
// reasonable size (512 members × 16 × 4096 points is already 33M points).
const maxVNodes = 4096

// Member is a gateway in the ring.
type Member struct {
	// ID is the gateway ID: [A-Za-z0-9_-]{1,64}. It names the gateway's points
	// on the ring, so it alone decides placement.
	ID string
	// Weight scales the member's share of the keys: 1..16.
	Weight int
	// URL is the public WebSocket URL clients use to reach the gateway. It
	// does not affect placement but is part of the fingerprint: a changed URL
	// is a changed ring.
	URL string
}

// Ring maps keys to members. The zero value is not usable; a nil *Ring is an
// empty ring.
type Ring struct {
	vnodes      int
	members     []Member // sorted by ID
	points      []uint64 // sorted ascending; ties in member ID order
	owners      []uint32 // owners[i] indexes members for points[i]
	fingerprint string

	// The top bits of a hash pick a bucket; bucket b's points are
	// points[buckets[b]:buckets[b+1]]. With about one point per bucket a
	// lookup reads one or two points instead of binary searching them all.
	shift   uint     // 64 - bits of the bucket number
	buckets []uint32 // len 1<<bits + 1
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidateID reports whether id is a valid gateway ID: 1 to 64 characters of
// [A-Za-z0-9_-]. The ID is a Consul service ID and a NATS subject token, so it
// must carry nothing those treat specially.
func ValidateID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("invalid gateway ID %q: want 1 to 64 characters of [A-Za-z0-9_-]", id)
	}
	return nil
}

// ValidateWeight reports whether w is an allowed weight.
func ValidateWeight(w int) error {
	if w < MinWeight || w > MaxWeight {
		return fmt.Errorf("invalid weight %d: want an integer from %d to %d", w, MinWeight, MaxWeight)
	}
	return nil
}

// ParseWeight parses a weight as written in Consul meta: a decimal integer
// from 1 to 16. The empty string is the default weight, 1. Anything else,
// including "1.5", "+2" and "02", is rejected, so two components can never
// read one string as two different weights.
func ParseWeight(s string) (int, error) {
	if s == "" {
		return MinWeight, nil
	}
	w, err := strconv.Atoi(s)
	if err != nil || strconv.Itoa(w) != s {
		return 0, fmt.Errorf("invalid weight %q: want an integer from %d to %d", s, MinWeight, MaxWeight)
	}
	if err := ValidateWeight(w); err != nil {
		return 0, err
	}
	return w, nil
}

// New builds a ring of members with vnodes points per unit of weight (zero
// means DefaultVNodes). The order of members does not matter. It rejects
// invalid IDs and weights and duplicate IDs. No members gives an empty ring,
// in which Owner finds nobody.
func New(vnodes int, members []Member) (*Ring, error) {
	return build(vnodes, members, xxhash.Sum64)
}

// build is New with the point hash as a parameter, so tests can force ties.
func build(vnodes int, members []Member, pointHash func([]byte) uint64) (*Ring, error) {
	if vnodes == 0 {
		vnodes = DefaultVNodes
	}
	if vnodes < 1 || vnodes > maxVNodes {
		return nil, fmt.Errorf("invalid vnodes %d: want 1 to %d", vnodes, maxVNodes)
	}
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	total := 0
	for i, m := range ms {
		if err := ValidateID(m.ID); err != nil {
			return nil, err
		}
		if err := ValidateWeight(m.Weight); err != nil {
			return nil, fmt.Errorf("member %s: %w", m.ID, err)
		}
		if i > 0 && ms[i-1].ID == m.ID {
			return nil, fmt.Errorf("duplicate gateway ID %q", m.ID)
		}
		total += vnodes * m.Weight
	}

	type point struct {
		hash  uint64
		owner uint32
	}
	pts := make([]point, 0, total)
	buf := make([]byte, 0, 64+1+10)
	for i, m := range ms {
		for v := range vnodes * m.Weight {
			buf = append(buf[:0], m.ID...)
			buf = append(buf, '#')
			buf = strconv.AppendInt(buf, int64(v), 10)
			pts = append(pts, point{hash: pointHash(buf), owner: uint32(i)})
		}
	}
	// Members are sorted by ID, so ordering ties by owner index orders them by ID.
	slices.SortFunc(pts, func(a, b point) int {
		if c := cmp.Compare(a.hash, b.hash); c != 0 {
			return c
		}
		return cmp.Compare(a.owner, b.owner)
	})

	r := &Ring{
		vnodes:  vnodes,
		members: ms,
		points:  make([]uint64, len(pts)),
		owners:  make([]uint32, len(pts)),
	}
	for i, p := range pts {
		r.points[i], r.owners[i] = p.hash, p.owner
	}
	r.index()
	r.fingerprint = fingerprint(vnodes, ms)
	return r, nil
}

// index builds the bucket table over the sorted points.
func (r *Ring) index() {
	bits := uint(1)
	for 1<<bits < len(r.points) && bits < 24 {
		bits++
	}
	r.shift = 64 - bits
	r.buckets = make([]uint32, 1<<bits+1)
	i := 0
	for b := range r.buckets {
		for i < len(r.points) && r.points[i]>>r.shift < uint64(b) {
			i++
		}
		r.buckets[b] = uint32(i)
	}
}

// fingerprint hashes everything that defines the ring, members in ID order.
func fingerprint(vnodes int, ms []Member) string {
	h := sha256.New()
	fmt.Fprintf(h, "herald-ring v%d vnodes=%d\n", Version, vnodes)
	for _, m := range ms {
		fmt.Fprintf(h, "%s|%d|%s\n", m.ID, m.Weight, m.URL)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// Owner returns the member that owns key, and false when the ring is empty.
// It does not allocate.
func (r *Ring) Owner(key string) (Member, bool) {
	if r == nil || len(r.points) == 0 {
		return Member{}, false
	}
	h := xxhash.Sum64String(key)
	b := h >> r.shift
	// The first point ≥ h is in h's bucket or, failing that, the first point
	// of a later bucket, which is buckets[b+1].
	i, end := r.buckets[b], r.buckets[b+1]
	for i < end && r.points[i] < h {
		i++
	}
	if int(i) == len(r.points) {
		i = 0
	}
	return r.members[r.owners[i]], true
}

// Fingerprint identifies the ring: a hex string that depends on the algorithm
// version, the vnodes setting and every member's ID, weight and URL, and on
// nothing else. The empty ring has a fingerprint too.
func (r *Ring) Fingerprint() string {
	if r == nil {
		return fingerprint(DefaultVNodes, nil)
	}
	return r.fingerprint
}

// Members returns a copy of the members, sorted by ID.
func (r *Ring) Members() []Member {
	if r == nil {
		return nil
	}
	return slices.Clone(r.members)
}

// Member returns the member with the given ID, if it is in the ring.
func (r *Ring) Member(id string) (Member, bool) {
	if r == nil {
		return Member{}, false
	}
	i, ok := slices.BinarySearchFunc(r.members, id, func(m Member, id string) int { return cmp.Compare(m.ID, id) })
	if !ok {
		return Member{}, false
	}
	return r.members[i], true
}

// Len returns the number of members.
func (r *Ring) Len() int {
	if r == nil {
		return 0
	}
	return len(r.members)
}

// VNodes returns the number of points per unit of weight.
func (r *Ring) VNodes() int {
	if r == nil {
		return DefaultVNodes
	}
	return r.vnodes
}

// Arc is a stretch of the circle owned by one member, for drawing the ring:
// the keys whose position (see Position) lies in (Start, End] belong to ID.
// Start and End are fractions of the circle, 0 ≤ Start < End ≤ 1.
type Arc struct {
	Start, End float64
	ID         string
}

// Position is where key sits on the circle, as a fraction in [0, 1).
func Position(key string) float64 { return fraction(xxhash.Sum64String(key)) }

func fraction(h uint64) float64 { return float64(h>>11) / (1 << 53) }

// Arcs returns the circle divided among the members, in order from 0 to 1,
// adjacent arcs of one member merged. The first arc starts at 0 and the last
// ends at 1; both belong to the owner of the first point, as a key past the
// last point wraps around to it. An empty ring has no arcs.
func (r *Ring) Arcs() []Arc {
	if r == nil || len(r.points) == 0 {
		return nil
	}
	var arcs []Arc
	add := func(start, end float64, owner uint32) {
		id := r.members[owner].ID
		if n := len(arcs); n > 0 && arcs[n-1].ID == id {
			arcs[n-1].End = end
			return
		}
		arcs = append(arcs, Arc{Start: start, End: end, ID: id})
	}
	start := 0.0
	for i, p := range r.points {
		end := fraction(p)
		if end > start || i == 0 {
			add(start, end, r.owners[i])
		}
		start = end
	}
	add(start, 1, r.owners[0])
	return arcs
}

// ArcOwner is the member whose arc holds key, from arcs as Arcs returns
// them (or as a dispatcher's /v1/cluster lists them): how a tool outside
// the ring checks where a user belongs. "" if no arc holds it.
func ArcOwner(arcs []Arc, key string) string {
	p := Position(key)
	for _, a := range arcs {
		// (Start, End]; the first arc also holds 0 itself.
		if p > a.Start && p <= a.End || p == 0 && a.Start == 0 {
			return a.ID
		}
	}
	return ""
}
