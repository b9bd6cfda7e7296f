#!/usr/bin/env bash
# Added latency at a steady rate (BENCHMARKS.md §4).
#   bench/latency.sh [rate=100] [seconds=30] [runs=3]
# `benchtool latency` runs the gateway (stdin source, Mosquitto QoS 1, VictoriaMetrics v2,
# default batch_size/flush_interval/inflight), writes `rate` lines/s to its stdin and times
#  - line written -> each of its 9 MQTT messages received by a QoS 1 subscriber (same host,
#    same clock), and
#  - line written -> its point visible in VictoriaMetrics (poll every POLL_MS ms, default 50:
#    /internal/force_flush, then /api/v1/export; resolution ~POLL_MS + the poll's own time).
# Prints each run and the median of each percentile over the runs.
source "$(dirname "$0")/lib.sh"
RATE=${1:-100}; SECS=${2:-30}; RUNS=${3:-3}
machine
start_mosquitto; start_vm
for r in $(seq "$RUNS"); do
  gateway_config "$dir/lat$r.toml" $'[source]\nkind = "stdin"' 1
  "$BENCHTOOL" latency --port "$MQ" --vm "http://127.0.0.1:$VM" --gateway "$GATEWAY_BIN" \
    --config "$dir/lat$r.toml" --rate "$RATE" --seconds "$SECS" --poll-ms "${POLL_MS:-50}" --base $(( (r - 1) * 10000000 )) 2> "$dir/lat$r.log" | tee "$dir/lat$r.out"
done
for leg in line_to_subscriber line_to_database; do
  for p in p50_ms p99_ms max_ms; do
    printf 'MEDIAN %s %s=%s\n' "$leg" "$p" "$(cat "$dir"/lat*.out | grep "^$leg" | sed "s/.*$p=\([0-9.]*\).*/\1/" | median)"
  done
done
machine
