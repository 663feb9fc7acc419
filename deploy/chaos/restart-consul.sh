#!/usr/bin/env bash
# Restart the Consul dev agent, which forgets every registration.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ctl POST "/children/consul/restart?signal=KILL&delay=1s"
