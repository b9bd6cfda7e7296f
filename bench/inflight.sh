#!/usr/bin/env bash
# What one QoS 1 publisher gets from Mosquitto for a given inflight window (the reasoning
# behind `[mqtt] inflight = 100`, BENCHMARKS.md). Same messages as bench/e2e.sh.
#   bench/inflight.sh [packets=10000] [runs=3] [windows...=10 20 50 100 200 500]
source "$(dirname "$0")/lib.sh"
N=${1:-10000}; RUNS=${2:-3}; shift 2 || true
WINDOWS=${*:-10 20 50 100 200 500}
machine
start_mosquitto
"$BENCHTOOL" lines --count "$N" > "$dir/lines"
for w in $WINDOWS; do
  for r in $(seq "$RUNS"); do
    "$BENCHTOOL" publish --port "$MQ" --lines "$dir/lines" --inflight "$w" \
      | sed 's/.*messages_per_s=\([0-9]*\).*/\1/' >> "$dir/w$w"
  done
  printf 'inflight=%-5s broker_alone_msgs/s median=%s (runs: %s)\n' "$w" "$(median < "$dir/w$w")" "$(xargs < "$dir/w$w")"
done
machine
