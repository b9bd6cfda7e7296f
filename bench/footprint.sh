#!/usr/bin/env bash
# Footprint (BENCHMARKS.md §5): binary size, start-up time, RSS and CPU at 1 packet per 10 s
# and at 1,000 packets/s, and RSS across a database outage at 100 packets/s.
#   bench/footprint.sh [idle_seconds=60] [busy_seconds=60] [outage_seconds=90]
# RSS = VmRSS of the gateway sampled every 5 s (1 s for start-up); CPU = (utime+stime) over
# the window ÷ wall time, in % of one core. Mosquitto QoS 1 + VictoriaMetrics on loopback.
source "$(dirname "$0")/lib.sh"
IDLE=${1:-60}; BUSY=${2:-60}; OUTAGE=${3:-90}
machine
start_mosquitto; start_vm

echo "binary_size_bytes=$(stat -c %s "$GATEWAY_BIN") ($GATEWAY_BIN)"

# Start-up: spawn -> the '✓ source' checklist line on stderr (median of 5).
gateway_config "$dir/start.toml" $'[source]\nkind = "simulator"\ninterval = "10s"' 1
for i in 1 2 3 4 5; do
  rm -rf "$dir/start.toml.data"
  t0=$(now)
  "$GATEWAY_BIN" --config "$dir/start.toml" 2> "$dir/start$i.log" & pid=$!
  for _ in $(seq 2000); do grep -q '✓ source' "$dir/start$i.log" && break; sleep 0.002; done
  t1=$(now); kill -INT $pid; wait $pid 2>/dev/null || true
  echo "($t1 - $t0) * 1000" | bc -l >> "$dir/startup"
done
printf 'startup_to_source_ready_ms median=%.1f (runs: %s)\n' "$(median < "$dir/startup")" "$(xargs printf '%.1f ' < "$dir/startup")"

# sample PID SECONDS LABEL [period]: RSS min/median/max and CPU% over the window
sample() {
  local pid=$1 secs=$2 label=$3 period=${4:-5} c0 c1 t0 t1
  c0=$(cpu_ticks "$pid"); t0=$(now); : > "$dir/rss-$label"
  for _ in $(seq $((secs / period))); do sleep "$period"; rss_kb "$pid" >> "$dir/rss-$label"; done
  c1=$(cpu_ticks "$pid"); t1=$(now)
  printf '%-28s rss_kb min=%s median=%s max=%s hwm=%s cpu=%.2f%% of one core over %.0f s (samples: %s)\n' "$label" \
    "$(sort -n "$dir/rss-$label" | head -1)" "$(median < "$dir/rss-$label")" "$(sort -n "$dir/rss-$label" | tail -1)" \
    "$(hwm_kb "$pid")" "$(echo "($c1 - $c0) / $TICK * 100 / ($t1 - $t0)" | bc -l)" "$(echo "$t1 - $t0" | bc -l)" \
    "$(xargs < "$dir/rss-$label")"
}

# Phases (SKIP="busy outage" to leave some out): idle busy outage
want() { [[ " ${SKIP:-} " != *" $1 "* ]]; }

# 1 packet per 10 s: the simulator (one remote node), after a 10 s settle.
gateway_config "$dir/idle.toml" $'[source]\nkind = "simulator"\ninterval = "10s"' 1
if want idle; then
  "$GATEWAY_BIN" --config "$dir/idle.toml" 2> "$dir/idle.log" & pid=$!
  sleep 10; sample $pid "$IDLE" "1_packet_per_10s"; kill -INT $pid; wait $pid 2>/dev/null || true
fi

# 1,000 packets/s from a paced feeder on stdin.
gateway_config "$dir/busy.toml" $'[source]\nkind = "stdin"' 1
if want busy; then
  "$BENCHTOOL" lines --count $(( (BUSY + 15) * 1000 )) --rate 1000 \
    | "$GATEWAY_BIN" --config "$dir/busy.toml" 2> "$dir/busy.log" & pid=$!  # the gateway
  sleep 10; sample "$pid" "$BUSY" "1000_packets_per_s"; wait "$pid" || true
fi

# Database outage at 100 packets/s: 30 s up, OUTAGE s with VictoriaMetrics stopped, 60 s up.
gateway_config "$dir/out.toml" $'[source]\nkind = "stdin"\ndrain_timeout = "120s"' 1
if want outage; then
  total=$(( 30 + OUTAGE + 60 + 5 ))
  "$BENCHTOOL" lines --count $(( total * 100 )) --rate 100 \
    | "$GATEWAY_BIN" --config "$dir/out.toml" 2> "$dir/out.log" & pid=$!
  sleep 1
  sample "$pid" 30 "outage_before_100_per_s"
  kill "$VM_PID"; wait "$VM_PID" 2>/dev/null || true
  sample "$pid" "$OUTAGE" "outage_during_${OUTAGE}s"
  start_vm
  sample "$pid" 60 "outage_after_recovery"
  wait "$pid" || true
fi
machine
