package ring

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// The statistical tests draw member sets and keys from fixed seeds, so they
// are deterministic: a failure is a property of the code, not bad luck.
const (
	sets       = 20
	balanceKey = 1_000_000
)

func randomID(r *rand.Rand) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
	b := make([]byte, 4+r.IntN(20))
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return "gw-" + string(b)
}

func randomMembers(r *rand.Rand, n int) []Member {
	ms := make([]Member, 0, n)
	seen := map[string]bool{}
	for len(ms) < n {
		id := randomID(r)
		if seen[id] {
			continue
		}
		seen[id] = true
		ms = append(ms, Member{ID: id, Weight: 1, URL: "ws://" + id + ":8080/ws"})
	}
	return ms
}

var (
	keyMu    sync.Mutex
	keyCache = map[int][]string{}
)

// keys returns n user IDs drawn from a fixed seed, shared between tests.
func keys(n int) []string {
	keyMu.Lock()
	defer keyMu.Unlock()
	if ks, ok := keyCache[n]; ok {
		return ks
	}
	r := rand.New(rand.NewPCG(42, uint64(n)))
	ks := make([]string, n)
	for i := range ks {
		ks[i] = "user-" + strconv.FormatUint(r.Uint64(), 36)
	}
	keyCache[n] = ks
	return ks
}

func mustNew(tb testing.TB, vnodes int, ms []Member) *Ring {
	tb.Helper()
	r, err := New(vnodes, ms)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return r
}

// owner returns the ID of key's owner. It fails the test when the ring finds
// nobody; it avoids tb.Helper, which would dominate the statistical loops.
func owner(tb testing.TB, r *Ring, key string) string {
	m, ok := r.Owner(key)
	if !ok {
		tb.Fatalf("Owner(%q) found nobody", key)
	}
	return m.ID
}

// referenceOwner is the placement rule of DESIGN.md written as plainly as
// possible: scan every point of every member for the first one ≥ the key's
// hash, wrapping around; on equal points the lowest ID wins.
func referenceOwner(vnodes int, ms []Member, key string) string {
	h := xxhash.Sum64String(key)
	best, bestID := uint64(math.MaxUint64), ""
	lowest, lowestID := uint64(math.MaxUint64), ""
	for _, m := range ms {
		for i := range vnodes * m.Weight {
			p := xxhash.Sum64String(m.ID + "#" + strconv.Itoa(i))
			if p >= h && (p < best || p == best && m.ID < bestID || bestID == "") {
				best, bestID = p, m.ID
			}
			if p < lowest || p == lowest && m.ID < lowestID || lowestID == "" {
				lowest, lowestID = p, m.ID
			}
		}
	}
	if bestID == "" {
		return lowestID
	}
	return bestID
}

func TestOwnerMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	ms := randomMembers(r, 5)
	ms[1].Weight = 3
	ms[3].Weight = 2
	const vnodes = 16
	rg := mustNew(t, vnodes, ms)
	for _, k := range keys(2000) {
		if got, want := owner(t, rg, k), referenceOwner(vnodes, ms, k); got != want {
			t.Fatalf("Owner(%q) = %s, want %s", k, got, want)
		}
	}
	// A key hashing beyond the last point wraps to the first point: find one.
	last := rg.points[len(rg.points)-1]
	for i := 0; ; i++ {
		k := "wrap-" + strconv.Itoa(i)
		if xxhash.Sum64String(k) > last {
			if got, want := owner(t, rg, k), referenceOwner(vnodes, ms, k); got != want {
				t.Fatalf("wrapping key %q owned by %s, want %s", k, got, want)
			}
			break
		}
	}
}

func TestTiesBreakByID(t *testing.T) {
	// Every point of every member hashes to the same value: the lowest ID
	// must win every key, whatever the order members were given in.
	constant := func([]byte) uint64 { return 1 << 63 }
	for _, ms := range [][]Member{
		{{ID: "b", Weight: 1}, {ID: "a", Weight: 2}, {ID: "c", Weight: 1}},
		{{ID: "c", Weight: 1}, {ID: "b", Weight: 1}, {ID: "a", Weight: 2}},
	} {
		rg, err := build(4, ms, constant)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys(1000) {
			if got := owner(t, rg, k); got != "a" {
				t.Fatalf("tied points: Owner(%q) = %s, want a", k, got)
			}
		}
	}
}

func TestOrderDoesNotMatter(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(2, 2))
	ms := randomMembers(r, 16)
	for i := range ms {
		ms[i].Weight = 1 + r.IntN(MaxWeight)
	}
	a := mustNew(t, 0, ms)
	shuffled := slices.Clone(ms)
	r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	b := mustNew(t, 0, shuffled)
	if a.Fingerprint() != b.Fingerprint() {
		t.Fatalf("fingerprints differ: %s vs %s", a.Fingerprint(), b.Fingerprint())
	}
	for _, k := range keys(100_000) {
		if x, y := owner(t, a, k), owner(t, b, k); x != y {
			t.Fatalf("key %q: %s in one order, %s in another", k, x, y)
		}
	}
}

func TestFingerprint(t *testing.T) {
	base := []Member{
		{ID: "gw-1", Weight: 1, URL: "ws://127.0.0.1:7001/ws"},
		{ID: "gw-2", Weight: 2, URL: "ws://127.0.0.1:7002/ws"},
	}
	fp := mustNew(t, 0, base).Fingerprint()
	if again := mustNew(t, 0, slices.Clone(base)).Fingerprint(); again != fp {
		t.Fatalf("same members, different fingerprint: %s vs %s", again, fp)
	}
	change := func(f func(ms []Member)) []Member {
		ms := slices.Clone(base)
		f(ms)
		return ms
	}
	for name, tc := range map[string]struct {
		vnodes  int
		members []Member
	}{
		"url":     {0, change(func(ms []Member) { ms[0].URL = "ws://127.0.0.1:7009/ws" })},
		"weight":  {0, change(func(ms []Member) { ms[1].Weight = 3 })},
		"id":      {0, change(func(ms []Member) { ms[1].ID = "gw-3" })},
		"vnodes":  {128, base},
		"removed": {0, base[:1]},
		"empty":   {0, nil},
	} {
		if got := mustNew(t, tc.vnodes, tc.members).Fingerprint(); got == fp {
			t.Errorf("%s changed but the fingerprint did not: %s", name, got)
		}
	}
	// The pipe separates fields, so shifting text between ID and URL is a change.
	a := mustNew(t, 0, []Member{{ID: "a", Weight: 1, URL: "1|x"}}).Fingerprint()
	b := mustNew(t, 0, []Member{{ID: "a", Weight: 11, URL: "x"}}).Fingerprint()
	if a == b {
		t.Fatalf("ambiguous fingerprint encoding")
	}
}

// counts returns the number of keys each member owns.
func counts(tb testing.TB, r *Ring, ks []string) map[string]int {
	c := make(map[string]int, r.Len())
	for _, k := range ks {
		c[owner(tb, r, k)]++
	}
	return c
}

func TestBalance(t *testing.T) {
	t.Parallel()
	ks := keys(balanceKey)
	r := rand.New(rand.NewPCG(3, 3))
	var sumCV float64
	for set := range sets {
		ms := randomMembers(r, 16)
		c := counts(t, mustNew(t, 256, ms), ks)
		if len(c) != 16 {
			t.Fatalf("set %d: %d of 16 members own keys", set, len(c))
		}
		mean := float64(len(ks)) / 16
		var ss, maxN float64
		for _, n := range c {
			ss += (float64(n) - mean) * (float64(n) - mean)
			maxN = max(maxN, float64(n))
		}
		cv := math.Sqrt(ss/16) / mean
		sumCV += cv
		if maxN/mean > 1.25 {
			t.Errorf("set %d: max/mean = %.3f, want ≤ 1.25", set, maxN/mean)
		}
	}
	meanCV := sumCV / sets
	t.Logf("mean coefficient of variation over %d sets: %.2f%% (theory 6.25%%)", sets, 100*meanCV)
	if meanCV > 0.07 {
		t.Fatalf("mean CV = %.2f%%, want ≤ 7%%", 100*meanCV)
	}
}

func TestJoinMovesOnlyToNewMember(t *testing.T) {
	t.Parallel()
	ks := keys(balanceKey / 4)
	r := rand.New(rand.NewPCG(4, 4))
	var sumFrac float64
	for set := range sets {
		ms := randomMembers(r, 17)
		before := mustNew(t, 0, ms[:16])
		after := mustNew(t, 0, ms)
		joined := ms[16].ID
		moved := 0
		for _, k := range ks {
			was, is := owner(t, before, k), owner(t, after, k)
			if was == is {
				continue
			}
			moved++
			if is != joined {
				t.Fatalf("set %d: key %q moved %s → %s, not to the new member %s", set, k, was, is, joined)
			}
		}
		sumFrac += float64(moved) / float64(len(ks))
	}
	mean, want := sumFrac/sets, 1.0/17
	t.Logf("a 17th member moved %.3f%% of keys on average (ideal %.3f%%)", 100*mean, 100*want)
	if math.Abs(mean-want)/want > 0.05 {
		t.Fatalf("mean moved fraction %.4f, want %.4f ± 5%%", mean, want)
	}
}

func TestLeaveMovesOnlyLeaversKeys(t *testing.T) {
	t.Parallel()
	ks := keys(balanceKey / 4)
	r := rand.New(rand.NewPCG(5, 5))
	for set := range sets {
		ms := randomMembers(r, 16)
		before := mustNew(t, 0, ms)
		gone := ms[r.IntN(len(ms))].ID
		rest := slices.DeleteFunc(slices.Clone(ms), func(m Member) bool { return m.ID == gone })
		after := mustNew(t, 0, rest)
		for _, k := range ks {
			was, is := owner(t, before, k), owner(t, after, k)
			if was != gone && was != is {
				t.Fatalf("set %d: key %q moved %s → %s though only %s left", set, k, was, is, gone)
			}
			if is == gone {
				t.Fatalf("set %d: key %q still owned by departed %s", set, k, gone)
			}
		}
	}
}

func TestWeights(t *testing.T) {
	t.Parallel()
	ks := keys(balanceKey / 2)
	r := rand.New(rand.NewPCG(6, 6))
	var sumRatio float64
	for range sets {
		ms := randomMembers(r, 16)
		heavy := map[string]bool{}
		for i := range 8 {
			ms[i].Weight = 2
			heavy[ms[i].ID] = true
		}
		var light, heavyN float64
		for id, n := range counts(t, mustNew(t, 0, ms), ks) {
			if heavy[id] {
				heavyN += float64(n)
			} else {
				light += float64(n)
			}
		}
		sumRatio += (heavyN / 8) / (light / 8)
	}
	ratio := sumRatio / sets
	t.Logf("weight-2 members own %.3f× the keys of weight-1 members", ratio)
	if math.Abs(ratio-2)/2 > 0.05 {
		t.Fatalf("weight-2/weight-1 share = %.3f, want 2 ± 5%%", ratio)
	}
}

func TestRejects(t *testing.T) {
	for _, tc := range []struct {
		name    string
		vnodes  int
		members []Member
	}{
		{"weight 0", 0, []Member{{ID: "a", Weight: 0}}},
		{"weight 17", 0, []Member{{ID: "a", Weight: 17}}},
		{"negative weight", 0, []Member{{ID: "a", Weight: -1}}},
		{"empty ID", 0, []Member{{ID: "", Weight: 1}}},
		{"dot in ID", 0, []Member{{ID: "gw.1", Weight: 1}}},
		{"space in ID", 0, []Member{{ID: "gw 1", Weight: 1}}},
		{"65-char ID", 0, []Member{{ID: string(make65()), Weight: 1}}},
		{"duplicate ID", 0, []Member{{ID: "a", Weight: 1}, {ID: "a", Weight: 2}}},
		{"negative vnodes", -1, []Member{{ID: "a", Weight: 1}}},
		{"too many vnodes", maxVNodes + 1, []Member{{ID: "a", Weight: 1}}},
	} {
		if _, err := New(tc.vnodes, tc.members); err == nil {
			t.Errorf("%s: New accepted it", tc.name)
		}
	}
	if _, err := New(0, []Member{{ID: "A-z_0-9", Weight: 16}, {ID: string(make65()[:64]), Weight: 1}}); err != nil {
		t.Errorf("valid members rejected: %v", err)
	}
}

func make65() []byte {
	b := make([]byte, 65)
	for i := range b {
		b[i] = 'x'
	}
	return b
}

func TestParseWeight(t *testing.T) {
	for in, want := range map[string]int{"": 1, "1": 1, "2": 2, "16": 16} {
		got, err := ParseWeight(in)
		if err != nil || got != want {
			t.Errorf("ParseWeight(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "17", "-1", "1.5", "2.0", "+2", "02", " 2", "two", "1e1", "99999999999999999999"} {
		if got, err := ParseWeight(in); err == nil {
			t.Errorf("ParseWeight(%q) = %d, want an error", in, got)
		}
	}
}

func TestEmptyAndSingle(t *testing.T) {
	for name, r := range map[string]*Ring{"nil": nil, "no members": mustNew(t, 0, nil)} {
		if m, ok := r.Owner("alice"); ok {
			t.Errorf("%s ring: Owner = %v, want none", name, m)
		}
		if r.Len() != 0 || len(r.Members()) != 0 {
			t.Errorf("%s ring has members", name)
		}
	}
	if nilFP, emptyFP := (*Ring)(nil).Fingerprint(), mustNew(t, 0, nil).Fingerprint(); nilFP != emptyFP {
		t.Errorf("nil ring and empty ring differ: %s vs %s", nilFP, emptyFP)
	}
	one := mustNew(t, 0, []Member{{ID: "solo", Weight: 3, URL: "ws://solo/ws"}})
	for _, k := range keys(1000) {
		if got := owner(t, one, k); got != "solo" {
			t.Fatalf("single-member ring: Owner(%q) = %s", k, got)
		}
	}
	if m, ok := one.Member("solo"); !ok || m.URL != "ws://solo/ws" {
		t.Fatalf("Member(solo) = %v, %v", m, ok)
	}
	if _, ok := one.Member("other"); ok {
		t.Fatalf("Member(other) found a member")
	}
}

func TestMembersIsACopy(t *testing.T) {
	r := mustNew(t, 0, []Member{{ID: "a", Weight: 1}, {ID: "b", Weight: 1}})
	ms := r.Members()
	ms[0].ID = "zzz"
	if r.Members()[0].ID != "a" {
		t.Fatal("Members exposes the ring's own slice")
	}
}

func TestOwnerDoesNotAllocate(t *testing.T) {
	r := mustNew(t, 0, randomMembers(rand.New(rand.NewPCG(7, 7)), 16))
	ks := keys(1000)
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		r.Owner(ks[i%len(ks)])
		i++
	}); n != 0 {
		t.Fatalf("Owner allocates %.1f times per call", n)
	}
}

func FuzzOwner(f *testing.F) {
	f.Add("alice", uint8(3), uint16(1))
	f.Add("", uint8(1), uint16(0))
	f.Add("\xff\x00ü", uint8(16), uint16(7))
	f.Fuzz(func(t *testing.T, key string, n uint8, seed uint16) {
		r := rand.New(rand.NewPCG(uint64(seed), 0))
		ms := randomMembers(r, int(n%20))
		for i := range ms {
			ms[i].Weight = 1 + r.IntN(MaxWeight)
		}
		rg, err := New(1+int(seed%32), ms)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		m, ok := rg.Owner(key)
		if len(ms) == 0 {
			if ok {
				t.Fatalf("empty ring returned %v", m)
			}
			return
		}
		if !ok || !slices.Contains(ms, m) {
			t.Fatalf("Owner(%q) = %v, %v: not a member", key, m, ok)
		}
		// The bucket index must agree with a plain binary search.
		i, _ := slices.BinarySearch(rg.points, xxhash.Sum64String(key))
		if i == len(rg.points) {
			i = 0
		}
		if want := rg.members[rg.owners[i]]; m != want {
			t.Fatalf("Owner(%q) = %s, binary search says %s", key, m.ID, want.ID)
		}
	})
}

func benchmarkOwner(b *testing.B, members int) {
	r := mustNew(b, 0, randomMembers(rand.New(rand.NewPCG(8, uint64(members))), members))
	ks := keys(1 << 16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		r.Owner(ks[i&(len(ks)-1)])
	}
}

func BenchmarkOwner8(b *testing.B)   { benchmarkOwner(b, 8) }
func BenchmarkOwner16(b *testing.B)  { benchmarkOwner(b, 16) }
func BenchmarkOwner32(b *testing.B)  { benchmarkOwner(b, 32) }
func BenchmarkOwner128(b *testing.B) { benchmarkOwner(b, 128) }
func BenchmarkOwner512(b *testing.B) { benchmarkOwner(b, 512) }

func BenchmarkNew16(b *testing.B) {
	ms := randomMembers(rand.New(rand.NewPCG(9, 9)), 16)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(0, ms); err != nil {
			b.Fatal(err)
		}
	}
}

func ExampleRing_Owner() {
	r, err := New(0, []Member{
		{ID: "gw-1", Weight: 1, URL: "ws://10.0.0.1:7001/ws"},
		{ID: "gw-2", Weight: 1, URL: "ws://10.0.0.2:7001/ws"},
	})
	if err != nil {
		panic(err)
	}
	m, _ := r.Owner("alice")
	fmt.Println(m.ID == "gw-1" || m.ID == "gw-2")
	// Output: true
}

// TestArcsAgreeWithOwner: the drawing says the same as the lookup.
func TestArcsAgreeWithOwner(t *testing.T) {
	r := mustNew(t, 16, randomMembers(rand.New(rand.NewPCG(10, 10)), 5))
	arcs := r.Arcs()
	if arcs[0].Start != 0 || arcs[len(arcs)-1].End != 1 {
		t.Fatalf("arcs do not cover the circle: first %+v, last %+v", arcs[0], arcs[len(arcs)-1])
	}
	for i := 1; i < len(arcs); i++ {
		if arcs[i].Start != arcs[i-1].End || arcs[i].ID == arcs[i-1].ID {
			t.Fatalf("arcs %d and %d: %+v %+v (not contiguous, or not merged)", i-1, i, arcs[i-1], arcs[i])
		}
	}
	for _, k := range keys(5000) {
		if got, want := ArcOwner(arcs, k), owner(t, r, k); got != want {
			t.Fatalf("%s at %v: the arc says %q, Owner says %s", k, Position(k), got, want)
		}
	}
	if (*Ring)(nil).Arcs() != nil || mustNew(t, 0, nil).Arcs() != nil {
		t.Fatal("an empty ring has arcs")
	}
}
