#!/usr/bin/env bash
# Add a gateway.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ctl POST /gateways
