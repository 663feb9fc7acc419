#!/usr/bin/env bash
# Print the herald dev cluster's state.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ctl GET /state
