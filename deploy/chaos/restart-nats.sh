#!/usr/bin/env bash
# Stop NATS (JetStream keeps its store on disk) and start it again.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ctl POST "/children/nats/stop?signal=TERM&restart=${1:-3s}"
