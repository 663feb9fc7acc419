#!/usr/bin/env bash
# smoke.sh checks the images `make images` built, for real, on a private
# Docker network it creates and removes:
#   - each image runs as 65532:65532 and declares a HEALTHCHECK that runs
#     herald healthcheck;
#   - herald prints its version, lists its commands with no arguments, and
#     herald healthcheck exits 0 on a 2xx and 1 (never Docker's reserved 2)
#     otherwise, inside the image;
#   - herald-consul's default command (one server, state in /data) and its dev
#     mode turn healthy, answer /v1/status/leader with a leader, and the
#     server writes its Raft state to /data as 65532; a server that has no
#     leader fails the health check with Consul's "No cluster leader";
#   - herald-nats starts JetStream on /data as 65532 and turns healthy;
#   - a dispatcher and a gateway from the herald image, against those two,
#     turn healthy (the dispatcher through HERALD_HEALTHCHECK_URL), the
#     gateway joins the ring, the dispatcher is ready, and the dispatcher's
#     stream is stored in herald-nats's /data, owned by 65532.
# It removes every container and the network it made, also on failure or
# interrupt, printing the containers' logs first when something failed.
#
# Usage: deploy/images/smoke.sh
# Environment: HERALD_IMAGE, NATS_IMAGE, CONSUL_IMAGE (default the :latest
# tags); HERALD_VERSION, if set, is the version herald must print.
set -euo pipefail

herald=${HERALD_IMAGE:-herald:latest}
nats=${NATS_IMAGE:-herald-nats:latest}
consul=${CONSUL_IMAGE:-herald-consul:latest}
user=65532:65532
prefix=herald-smoke-$$
net=$prefix
containers=()
net_made=false

cleanup() {
	local status=$?
	trap - EXIT INT TERM
	if ((status != 0)); then
		for c in "${containers[@]}"; do
			echo "--- last logs of $c:" >&2
			docker logs --tail 30 "$c" 2>&1 | sed 's/^/    /' >&2 || true
		done
	fi
	if ((${#containers[@]} > 0)); then
		docker rm --force --volumes "${containers[@]}" >/dev/null 2>&1 || true
	fi
	if $net_made; then
		docker network rm "$net" >/dev/null || true
	fi
	if ((status == 0)); then
		echo "smoke.sh: all checks passed in ${SECONDS}s"
	else
		echo "smoke.sh: FAILED (exit $status) after ${SECONDS}s" >&2
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

pass() {
	echo "ok    $*"
}

# start NAME IMAGE [ARGS...] starts a detached container called
# $prefix-NAME, reachable on the network as NAME, whose image's health
# check runs every second instead of every five.
start() {
	local name=$1 image=$2
	shift 2
	containers+=("$prefix-$name")
	docker run --detach --name "$prefix-$name" --network "$net" --network-alias "$name" \
		--health-interval 1s "${extra[@]}" "$image" "$@" >/dev/null
	extra=()
}
extra=()

# wait_healthy NAME waits up to a minute for the container's health check
# to pass, failing at once if it turns unhealthy or the container stops.
wait_healthy() {
	local c=$prefix-$1 deadline=$((SECONDS + 60)) state
	while :; do
		state=$(docker inspect --format '{{.State.Status}} {{.State.Health.Status}}' "$c")
		case $state in
		"running healthy")
			pass "$1 is healthy, $((SECONDS - started))s after the start: $(last_health "$c")"
			return
			;;
		"running starting") ;;
		*) fail "$1: $state; its last health check: $(last_health "$c")" ;;
		esac
		((SECONDS < deadline)) || fail "$1 not healthy within 60s ($state)"
		sleep 0.5
	done
}

# last_health CONTAINER is the output of the container's last health check.
last_health() {
	docker inspect --format '{{with .State.Health}}{{range .Log}}{{.Output}}{{end}}{{end}}' "$1" | grep . | tail -n 1
}

# check_user NAME: every process in the container runs as 65532.
check_user() {
	local uids
	uids=$(docker top "$prefix-$1" -o pid,uid | awk 'NR > 1 { print $2 }' | sort -u | tr '\n' ' ')
	[[ $uids == "65532 " ]] || fail "$1's processes run as uid $uids, want 65532"
	pass "$1 runs as uid 65532"
}

# files NAME PATH lists PATH in the container as tar does, owners numeric.
files() {
	docker cp "$prefix-$1:$2" - | tar --list --verbose --numeric-owner --file -
}

# exec_status NAME ARGS... runs ARGS in the container and prints its exit
# status and output on one line.
exec_status() {
	local name=$1 out status=0
	shift
	out=$(docker exec "$prefix-$name" "$@" 2>&1) || status=$?
	echo "$status $out"
}

for image in "$herald" "$nats" "$consul"; do
	docker image inspect "$image" >/dev/null 2>&1 || fail "no image $image: run make images"
	cfg=$(docker image inspect --format '{{.Config.User}} {{json .Config.Healthcheck.Test}}' "$image")
	[[ $cfg == "$user "*'"/usr/local/bin/herald","healthcheck"'* ]] ||
		fail "$image: user and health check are $cfg, want $user and herald healthcheck"
	pass "$image: user $user, HEALTHCHECK $(cut -d' ' -f2- <<<"$cfg"), $(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.1f MB", $1/1e6}')"
done

docker network create "$net" >/dev/null
net_made=true
started=$SECONDS

# Consul first (a server waits about five seconds before electing itself),
# and NATS beside it.
start consul "$consul"
start consul-dev "$consul" agent -dev -client=0.0.0.0 -hcl='disable_update_check = true'
start consul-leaderless "$consul" agent -server -bootstrap-expect=3 -data-dir=/data -client=0.0.0.0 -hcl='disable_update_check = true'
start nats "$nats"

# herald on its own, meanwhile.
out=$(docker run --rm --network "$net" "$herald" version)
[[ $out == "herald "* ]] || fail "herald version printed $out"
[[ -z ${HERALD_VERSION:-} || $out == "herald $HERALD_VERSION" ]] || fail "herald version printed $out, want herald $HERALD_VERSION"
pass "herald version: $out"
status=0
out=$(docker run --rm --network "$net" "$herald" 2>&1) || status=$?
[[ $status == 2 && $out == *"healthcheck "* ]] || fail "herald with no arguments: exit $status, $out"
pass "herald with no arguments lists its commands (exit 2)"
status=0
out=$(docker run --rm --network "$net" "$herald" healthcheck http://nats:1/healthz 2>&1) || status=$?
[[ $status == 1 && $out == *"refused"* ]] || fail "herald healthcheck of a closed port: exit $status, $out; want 1, refused"
pass "herald healthcheck of a closed port: exit 1: $out"
status=0
out=$(docker run --rm --network "$net" "$herald" healthcheck nats:8222 2>&1) || status=$?
[[ $status == 1 && $out == *"bad URL"* ]] || fail "herald healthcheck of a bad URL: exit $status, $out; want 1, bad URL"
pass "herald healthcheck of a bad URL: exit 1: $out"

wait_healthy consul
wait_healthy consul-dev
wait_healthy nats
for name in consul consul-dev; do
	read -r status out < <(exec_status "$name" herald healthcheck http://127.0.0.1:8500/v1/status/leader)
	[[ $status == 0 && $out =~ 200\ OK:\ \"[0-9.]+:8300\" ]] || fail "$name's /v1/status/leader: exit $status, $out"
	pass "$name answers /v1/status/leader: $out"
	check_user "$name"
done
files consul /data | grep -E '^[^ ]+ 65532/65532 .* data/raft/raft\.db$' >/dev/null ||
	fail "no data/raft/raft.db owned by 65532 in consul's /data: $(files consul /data)"
pass "consul keeps its Raft state in /data, owned by 65532"
# Consul holds a request up to 7 s for a leader before it answers that there
# is none; a longer timeout than the image's 3 s shows Consul's reason.
read -r status out < <(exec_status consul-leaderless herald healthcheck --timeout 15s http://127.0.0.1:8500/v1/catalog/service/consul)
[[ $status == 1 && $out == *"500 Internal Server Error: No cluster leader"* ]] ||
	fail "the leaderless server's health check: exit $status, $out; want 1, No cluster leader"
pass "a server with no leader fails the health check: $out"

check_user nats
docker logs "$prefix-nats" 2>&1 | grep -q 'Starting JetStream' || fail "nats did not start JetStream"
docker logs "$prefix-nats" 2>&1 | grep -qF 'Store Directory: "/data/jetstream"' || fail "nats's JetStream store is not /data/jetstream"
pass "nats started JetStream, storing in /data/jetstream"

# herald's dispatcher and gateway, against those two.
secret=smoke-secret-smoke-secret-smoke-secret
cluster=(--nats-url nats://nats:4222 --consul-addr consul:8500 --token-secrets "$secret")
extra=(--env HERALD_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz)
started=$SECONDS
start dispatcher "$herald" dispatcher --listen 0.0.0.0:8080 --api-keys smoke-api-key "${cluster[@]}"
start gateway "$herald" gateway --listen 0.0.0.0:7001 --public-url ws://gateway:7001/ws --id smoke-gw "${cluster[@]}"
wait_healthy dispatcher
wait_healthy gateway
check_user dispatcher
check_user gateway
deadline=$((SECONDS + 30))
until out=$(docker exec "$prefix-gateway" herald ring --consul-addr consul:8500 2>&1) && [[ $out == *smoke-gw*ws://gateway:7001/ws* ]]; do
	((SECONDS < deadline)) || fail "the gateway is not in the ring within 30s: $out"
	sleep 0.5
done
pass "the gateway is in the ring: $(head -n 1 <<<"$out")"
read -r status out < <(exec_status dispatcher herald healthcheck http://127.0.0.1:8080/readyz)
[[ $status == 0 ]] || fail "the dispatcher's /readyz: exit $status, $out"
pass "the dispatcher is ready: $out"
deadline=$((SECONDS + 30))
until files nats /data | grep -E '^[^ ]+ 65532/65532 .* data/jetstream/\$G/streams/HERALD_INBOX/' >/dev/null; do
	((SECONDS < deadline)) || fail "no HERALD_INBOX stream owned by 65532 in nats's /data within 30s: $(files nats /data)"
	sleep 0.5
done
pass "the dispatcher's stream HERALD_INBOX is stored in nats's /data, owned by 65532"
