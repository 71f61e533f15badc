#!/bin/sh
# Announce the VIP over BGP only while ringlb is healthy: polls `ringlb ctl health` and, when
# the answer changes, enables or disables BIRD's static protocol that holds the VIP route
# (`protocol static vip` in examples/bird.conf, which starts disabled). Disabling it withdraws
# the route from every BGP peer at once; the router drops this node from its ECMP group.
#
# Run it beside bird, as a service of its own (Restart=always). If this script or bird dies,
# the BGP session (bird) or the route (this script) goes stale: the router's hold timer
# (examples/bird.conf: 3 s) is the bound for a node that dies whole.
#
# Settings, from the environment:
#   RINGLB        the ringlb binary (default: ringlb on PATH)
#   ADMIN_SOCKET  ringlb's admin socket (default /run/ringlb/admin.sock)
#   BIRD_SOCKET   bird's control socket (default /run/bird/bird.ctl)
#   PROTOCOL      the static protocol to switch (default vip)
#   INTERVAL      seconds between checks (default 0.5)
RINGLB=${RINGLB:-ringlb}
ADMIN_SOCKET=${ADMIN_SOCKET:-/run/ringlb/admin.sock}
BIRD_SOCKET=${BIRD_SOCKET:-/run/bird/bird.ctl}
PROTOCOL=${PROTOCOL:-vip}
INTERVAL=${INTERVAL:-0.5}

state=unknown
while :; do
    if "$RINGLB" ctl --socket "$ADMIN_SOCKET" health >/dev/null 2>&1; then
        now=up
    else
        now=down
    fi
    if [ "$now" != "$state" ]; then
        if [ "$now" = up ]; then
            verb=enable
        else
            verb=disable
        fi
        # Retried on the next round when bird is not answering yet.
        if birdc -s "$BIRD_SOCKET" "$verb" "$PROTOCOL" >/dev/null 2>&1; then
            echo "ringlb $now: $verb $PROTOCOL"
            state=$now
        fi
    fi
    sleep "$INTERVAL"
done
