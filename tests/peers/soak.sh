#!/usr/bin/env bash
# Soak: ringlb (copy mode, io_uring, send bundles on) in front of three asyncio echo backends,
# with rounds of 48 concurrent Python clients (0 B to 16 MiB, sizes drawn anew each round)
# for SECONDS_TOTAL seconds (default 600). Loopback only; stops by itself.
# Usage: tests/peers/soak.sh [RINGLB_BINARY] [SECONDS_TOTAL] [extra ringlb flags...]
# Prints rounds, failed clients, and ringlb's worker counters at exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../../target/release/ringlb}
total=${2:-600}
shift $(( $# > 2 ? 2 : $# ))
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
sleep "$((total + 120))" | python3 "$here/asyncio_echo.py" 3 > "$work/ports" &
for _ in $(seq 50); do [ -s "$work/ports" ] && break; sleep 0.1; done
read -r p1 p2 p3 < "$work/ports"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" run --listen "127.0.0.1:$port" --backend "127.0.0.1:$p1" --backend "127.0.0.1:$p2" \
    --backend "127.0.0.1:$p3" --mode copy --engine uring "$@" 2> "$work/ringlb.log" &
lb=$!
sleep 0.5
rounds=0 failed=0
end=$((SECONDS + total))
while [ "$SECONDS" -lt "$end" ]; do
    rounds=$((rounds + 1))
    out=$(timeout 120 python3 "$here/echo_clients.py" "$port" "$rounds" 1 || true)
    f=$(printf '%s\n' "$out" | awk '/^clients/ {print $4}')
    failed=$((failed + ${f:-48}))
    [ "${f:-48}" = 0 ] || printf '%s\n' "$out" | grep '^failed' | head -3
done
kill -INT "$lb"; wait "$lb" || true
echo "rounds $rounds clients $((rounds * 48)) failed $failed"
grep -o 'ResetCounts {[^}]*}\|Counters {[^}]*}' "$work/ringlb.log" || true
