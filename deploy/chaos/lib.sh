# Shared by the chaos scripts: the herald dev control endpoint.
CONTROL=${HERALD_CONTROL:-127.0.0.1:8079}
ctl() { # method path
	curl -fsS -X "$1" "http://$CONTROL$2" || { echo "control request $1 $2 failed (is herald dev running?)" >&2; exit 1; }
	echo
}
