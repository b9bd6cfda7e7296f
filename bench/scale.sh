#!/usr/bin/env bash
# Scale of nodes (BENCHMARKS.md §6): the simulator with N remote nodes per packet,
# interval 10 s, Mosquitto QoS 1 + VictoriaMetrics: RSS and CPU over ~60 s per N.
#   bench/scale.sh [seconds=60] [N...=1000 10000]      (DASHBOARD=1: with the built-in dashboard)
source "$(dirname "$0")/lib.sh"
SECS=${1:-60}; shift || true
NODES=${*:-1000 10000}
machine
start_mosquitto; start_vm
for n in $NODES; do
  gateway_config "$dir/n$n.toml" "$(printf '[source]\nkind = "simulator"\ninterval = "10s"\nremote_nodes = %s' "$n")" 1
  "$GATEWAY_BIN" --config "$dir/n$n.toml" 2> "$dir/n$n.log" & pid=$!
  c0=$(cpu_ticks $pid); t0=$(now); : > "$dir/rss$n"
  for _ in $(seq $((SECS / 5))); do sleep 5; rss_kb $pid >> "$dir/rss$n"; done
  c1=$(cpu_ticks $pid); t1=$(now); split=$(rss_split $pid)
  printf 'remote_nodes=%-6s rss_kb median=%s max=%s hwm=%s (at the end: %s) cpu=%.2f%% of one core over %.0f s (samples: %s)\n' "$n" \
    "$(median < "$dir/rss$n")" "$(sort -n "$dir/rss$n" | tail -1)" "$(hwm_kb $pid)" "$split" \
    "$(echo "($c1 - $c0) / $TICK * 100 / ($t1 - $t0)" | bc -l)" "$(echo "$t1 - $t0" | bc -l)" "$(xargs < "$dir/rss$n")"
  kill -INT $pid; wait $pid 2>/dev/null || true
  grep -iE "error|warn" "$dir/n$n.log" | head -3 || true
done
machine
