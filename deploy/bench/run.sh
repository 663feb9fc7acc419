#!/usr/bin/env bash
# run.sh: `make bench` — a short run of every herald bench scenario against
# a fresh herald dev of its own (port offset 20000, its own data directory),
# writing each report's JSON into data/bench/. The cluster's dispatchers get
# a per-key rate limit above any rate the bench offers (HERALD_RATE_LIMIT),
# so the server, not the limiter, is measured. Everything it starts is
# stopped when it ends, also when it fails. Centrifugo (bin/centrifugo,
# make centrifugo) is measured beside herald in notify, batch, fan-in,
# broadcast and connections, with its memory engine and with its Redis
# engine (a redis-server the bench starts; make redis installs it).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
herald=$root/bin/herald
out=$root/data/bench
dir=$(mktemp -d /tmp/herald-bench-XXXXXX)
mkdir -p "$out"

HERALD_RATE_LIMIT=1000000 HERALD_RATE_BURST=1000000 \
	"$herald" dev --port-offset 20000 --dir "$dir" --log-level warn >"$dir/dev.log" 2>&1 &
dev=$!
cleanup() {
	kill -TERM "$dev" 2>/dev/null || true
	wait "$dev" 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 120); do
	grep -q "herald dev is up" "$dir/dev.log" && break
	kill -0 "$dev" 2>/dev/null || { cat "$dir/dev.log"; exit 1; }
	sleep 1
done
grep -q "herald dev is up" "$dir/dev.log" || { echo "herald dev not up within 2 minutes"; tail -40 "$dir/dev.log"; exit 1; }

state=$dir/state.json
"$herald" bench ring --keys "${BENCH_KEYS:-10000000}" --out "$out/ring.json"
peer=(--peer centrifugo --peer-engine "${BENCH_PEER_ENGINES:-memory,redis}" --centrifugo "$root/bin/centrifugo"
	--centrifugo-config "$root/deploy/bench/centrifugo.json" --centrifugo-redis-config "$root/deploy/bench/centrifugo-redis.json")
# First, while the cluster is fresh: memory per socket is the servers'
# growth from what they hold before.
"$herald" bench connections --state "$state" --sockets "${BENCH_SOCKETS:-15000}" --settle "${BENCH_SETTLE:-60s}" "${peer[@]}" --out "$out/connections.json"
"$herald" bench notify --state "$state" --users 1000 --step "${BENCH_STEP:-5s}" "${peer[@]}" --out "$out/notify.json"
"$herald" bench batch --state "$state" --users 1000 --step "${BENCH_STEP:-5s}" "${peer[@]}" --out "$out/batch.json"
"$herald" bench fan-in --state "$state" --users 10 --step "${BENCH_STEP:-5s}" "${peer[@]}" --out "$out/fan-in.json"
"$herald" bench broadcast --state "$state" --sockets 1000 --rate 10 --duration "${BENCH_STEP:-5s}" "${peer[@]}" --out "$out/broadcast.json"
"$herald" bench replay --state "$state" --users 1000 --stored 100 --out "$out/replay.json"
# Last, as they kill a gateway (and start it again).
"$herald" bench rehome --state "$state" --users "${BENCH_REHOME_USERS:-10000}" --out "$out/rehome-kill.json"
"$herald" bench rehome --state "$state" --users "${BENCH_REHOME_USERS:-10000}" --graceful --out "$out/rehome-drain.json"
echo "bench: reports in $out"
