#!/usr/bin/env bash
# Idle cost (BENCHMARKS.md §5, "Sleep when idle"): CPU seconds and context switches per minute
# of the gateway at 1 packet/s and at 1 packet per 10 s.
#   bench/idle.sh [seconds=60] [runs=1]
# The simulator source (one node), Mosquitto QoS 1 and VictoriaMetrics (v2) on loopback, the
# built-in dashboard off (DASHBOARD=1 turns it on, with no browser connected). After a 10 s
# settle, over the window: CPU = utime+stime of the process; context switches = `perf stat -e
# context-switches` on the process (every thread, including ones that come and go), or, when
# perf is missing, the sum over /proc/PID/task/*/status (threads that exit are missed).
# GATEWAY_BIN picks the binary (A/B against an older build).
source "$(dirname "$0")/lib.sh"
SECS=${1:-60}; RUNS=${2:-1}
machine
start_mosquitto; start_vm
echo "binary: $GATEWAY_BIN"

task_switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s+=$2} END {print s+0}'; }

phase() {  # phase INTERVAL LABEL
  local interval=$1 label=$2 pid c0 c1 w0 w1 switches
  rm -rf "$dir/$label.toml.data"
  gateway_config "$dir/$label.toml" "$(printf '[source]\nkind = "simulator"\ninterval = "%s"' "$interval")" 1
  "$GATEWAY_BIN" --config "$dir/$label.toml" 2> "$dir/$label.log" & pid=$!
  sleep 10
  c0=$(cpu_ticks "$pid"); w0=$(now)
  if command -v perf >/dev/null && perf stat -e context-switches -x, -p "$pid" -o "$dir/$label.perf" -- sleep "$SECS" 2>/dev/null; then
    switches=$(awk -F, '/context-switches/ {print $1}' "$dir/$label.perf")
  else
    local s0; s0=$(task_switches "$pid"); sleep "$SECS"; switches=$(( $(task_switches "$pid") - s0 ))
  fi
  c1=$(cpu_ticks "$pid"); w1=$(now)
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  printf '%-22s cpu_s_per_min=%.3f context_switches_per_min=%.0f (window %.0f s)\n' "$label" \
    "$(echo "($c1 - $c0) / $TICK * 60 / ($w1 - $w0)" | bc -l)" \
    "$(echo "$switches * 60 / ($w1 - $w0)" | bc -l)" "$(echo "$w1 - $w0" | bc -l)"
}

for _ in $(seq "$RUNS"); do
  phase 1s "1_packet_per_s"
  phase 10s "1_packet_per_10s"
done
