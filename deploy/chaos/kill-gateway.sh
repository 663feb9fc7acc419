#!/usr/bin/env bash
# SIGKILL a gateway and keep it down past the Consul TTL, so the ring changes.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ctl POST "/children/${1:?usage: kill-gateway.sh gw-N [down]}/stop?signal=KILL&restart=${2:-12s}"
