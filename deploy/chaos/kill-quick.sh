#!/usr/bin/env bash
# SIGKILL a gateway and start it again before the TTL: the ring does not change.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ctl POST "/children/${1:?usage: kill-quick.sh gw-N}/stop?signal=KILL&restart=1s"
