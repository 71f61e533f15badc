#!/bin/sh
# On the router: forward the VIP through a resilient next-hop group that follows the next hops
# BIRD learned over BGP. BIRD 2.0 installs plain multipath routes (hash-threshold), which move
# established flows of the surviving nodes whenever a node comes or goes; it does not manage
# Linux next-hop objects. So BIRD's kernel protocol exports into a table of its own
# (examples/bird.conf: `kernel table 100`), and this script mirrors the VIP's next hops from
# there into a resilient group that the main table's route uses: only idle buckets move when
# a node comes back, and a node that leaves hands over only its own buckets.
#
# Keep three nodes or more: with one next hop left the kernel stops tracking which buckets
# are busy, and adding the second node back moves busy ones too.
#
# Settings, from the environment:
#   PREFIX     the VIP route (default 10.0.100.1/32)
#   TABLE      where BIRD's kernel protocol puts it (default 100)
#   DEV        the interface towards the nodes (default eth0)
#   NODES      the nodes' addresses, in a fixed order: next hop N+1 is the Nth (default
#              "10.0.0.1 10.0.0.2 10.0.0.3"); ids GROUP+1.. are used for them
#   GROUP      the id of the group (default 100)
#   BUCKETS    buckets of the group (default 512)
#   IDLE       idle_timer: seconds without traffic before a bucket may move (default 10)
#   INTERVAL   seconds between looks at the table (default 0.2)
PREFIX=${PREFIX:-10.0.100.1/32}
TABLE=${TABLE:-100}
DEV=${DEV:-eth0}
NODES=${NODES:-"10.0.0.1 10.0.0.2 10.0.0.3"}
GROUP=${GROUP:-100}
BUCKETS=${BUCKETS:-512}
IDLE=${IDLE:-10}
INTERVAL=${INTERVAL:-0.2}

i=0
for node in $NODES; do
    i=$((i + 1))
    ip nexthop replace id $((GROUP + i)) via "$node" dev "$DEV"
done

current=
while :; do
    learned=$(ip -4 route show table "$TABLE" "$PREFIX" | tr ' ' '\n' | grep -A1 -x via | grep -v -x -e via -e --)
    members=
    i=0
    for node in $NODES; do
        i=$((i + 1))
        if printf '%s\n' "$learned" | grep -q -x -F "$node"; then
            members="${members:+$members/}$((GROUP + i))"
        fi
    done
    if [ "$members" != "$current" ]; then
        if [ -z "$members" ]; then
            ip route del "$PREFIX" 2>/dev/null
            ip nexthop del id "$GROUP" 2>/dev/null
        elif [ -z "$current" ]; then
            ip nexthop del id "$GROUP" 2>/dev/null
            ip nexthop add id "$GROUP" group "$members" type resilient buckets "$BUCKETS" \
                idle_timer "$IDLE"
            ip route replace "$PREFIX" nhid "$GROUP"
        else
            ip nexthop replace id "$GROUP" group "$members" type resilient
        fi
        echo "$PREFIX: next hops ${members:-none}"
        current=$members
    fi
    sleep "$INTERVAL"
done
