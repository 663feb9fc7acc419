#!/usr/bin/env bash
# SIGTERM a gateway: it drains (leaves Consul, moves its users, exits), then comes back.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ctl POST "/children/${1:?usage: drain-gateway.sh gw-N [down]}/stop?signal=TERM&restart=${2:-5s}"
