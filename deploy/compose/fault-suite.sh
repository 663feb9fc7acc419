#!/usr/bin/env bash
# fault-suite.sh SUITE [herald chaos flags...] runs herald's Compose fault
# suite (SUITE: short, as make test runs it, or full, as make chaos-cluster
# does): it builds the images, brings the cluster of docker-compose.yml up
# under a project name of its own, runs `herald chaos --compose` in the
# chaos service, and removes every container, network and volume it made,
# also when it fails. It prints each stage's time.
#
# With no Docker engine answering it says loudly that it skipped the suite
# and succeeds — unless CI=true, where a missing engine fails the run.
set -euo pipefail

suite=${1:-short}
shift || true
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

if ! docker version >/dev/null 2>&1; then
	if [[ ${CI:-} == true ]]; then
		echo "fault suite: FAIL: no Docker engine answers (docker version failed), and CI=true requires the Compose fault suite" >&2
		exit 1
	fi
	echo "################################################################"
	echo "fault suite: SKIPPED: no Docker engine answers (docker version"
	echo "failed), so the Compose fault suite did not run"
	echo "################################################################"
	exit 0
fi

if ! docker-compose version >/dev/null 2>&1; then
	echo "fault suite: FAIL: a Docker engine answers but docker-compose does not (apt-get install docker-compose)" >&2
	exit 1
fi

stage() { printf 'fault suite: %-28s at %4ds\n' "$1" "$SECONDS"; }

docker version --format 'fault suite: Docker engine {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}}'
echo "fault suite: docker-compose $(docker-compose version --short)"

stage "building the images"
"${MAKE:-make}" -C "$root" --no-print-directory images >/dev/null

project="herald-faults-$(date +%s)-$$"
# The demo's and the API's host ports: any free one, so that runs side by
# side (or a make run) do not collide.
export HERALD_DEMO_PORT= HERALD_API_PORT=
compose() { docker-compose -p "$project" -f "$here/docker-compose.yml" "$@"; }
cleanup() {
	status=$?
	if [[ $status != 0 ]]; then
		echo "fault suite: failed; the last lines of each herald process:"
		compose logs --no-color --tail=30 disp-1 disp-2 gw-1 gw-2 gw-3 2>&1 | tail -200 || true
		echo "fault suite: the dispatchers' warnings and errors other than unavailable, from the start:"
		compose logs --no-color disp-1 disp-2 2>&1 | grep -E 'level=(WARN|ERROR)' | grep -v 'code=unavailable' | tail -100 || true
	fi
	compose --profile chaos down -v --remove-orphans >/dev/null 2>&1 || true
	stage "cleaned up"
	exit $status
}
trap cleanup EXIT

# docker-compose 1.29 cannot recreate containers on newer engines: always
# start from nothing.
compose --profile chaos down -v --remove-orphans >/dev/null 2>&1
stage "starting the cluster"
if ! out=$(compose up -d 2>&1); then
	echo "$out"
	exit 1
fi
compose ps -q | wc -l | xargs printf 'fault suite: %s containers\n'
stage "cluster up"
compose run --rm chaos chaos --compose --suite "$suite" "$@"
stage "suite $suite passed"
