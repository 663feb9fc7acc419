#!/usr/bin/env bash
# Drain a gateway and remove it for good.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ctl DELETE "/gateways/${1:?usage: scale-in.sh gw-N}?signal=TERM"
