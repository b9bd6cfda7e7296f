#!/usr/bin/env bash
# Peer comparison (issue 16): Node-RED + node-red-contrib-influxdb doing the gateway's job.
#   bench/peers/node-red.sh            (about 11 min; QUICK=1: shorter phases, about 5 min)
# Installs node-red@$NR_VERSION and node-red-contrib-influxdb@$NR_INFLUX_VERSION from npm into
# the temp dir (NR_PREFIX=/abs/dir: use, or install into, that dir instead) and runs the same
# load, on one Mosquitto (QoS 1) and one VictoriaMetrics (InfluxDB v2 write API; restarted on
# its data if it exits, as its systemd unit would) on loopback, against:
#   node-red  the flow node-red/flows.json: `tcp in` (stream of "\n"-delimited strings) ->
#             `function` (node-red/decode.js: a line -> 9 messages with the gateway's topics and
#             payloads, 9 points with its measurements, tags and field) -> `mqtt out` (QoS 1)
#             and `influxdb out` (InfluxDB 2.0 config node, precision ns, one point per msg)
#   joined    the same flow with the points going through `join` (900 msgs or 1 s) ->
#             `influxdb batch` (the function's third output, NR_BENCH_JOINED=1)
#   gateway   iiot-gateway: `[source] kind = "stdin"`, fresh outbox, InfluxDB v2 sink
# All get the same feeder, `benchtool lines --count N [--rate R] | unique-values.py` (each
# reading's value made unique, so a point or message delivered twice counts once): over TCP
# to Node-RED, through a FIFO (held open by a `sleep`) to the gateway's stdin, started once
# the system is up and connected (FEED_FROM_FILE=1: flat-out lines `cat` from a file written
# beforehand instead: Node-RED's 20,000-packet run collapsed far less often so). Each phase: a
# fresh process of the system, a wiped VictoriaMetrics, a fresh mosquitto_sub on iiot/#.
# Phases (SKIP="joined:idle" by default):
#   burst   BURST_PACKETS (2,000) flat out. msgs/s = MQTT messages the subscriber got ÷ time
#           from the first line sent to the last message received (polled every 20 ms);
#           CPU = utime+stime of the process (/proc/PID/stat) from the first line sent to the
#           end of the phase, per 1,000 packets; peak RSS = VmHWM. Node-RED's messages and
#           points are checked to be the gateway's (sorted topic+payload lines and sorted
#           series+value lines must be identical).
#   big     BIG_PACKETS (20,000) flat out: messages received and points stored of 9 per
#           packet, msgs/s, VmHWM.
#   idle    1 packet/s, then 10 packets/s (same process): CPU over IDLE_SECONDS (60) each,
#           after SETTLE_SECONDS (10) at that rate.
#   outage  OUTAGE_RATE (100) packets/s: OUTAGE_BEFORE (10) s, VictoriaMetrics stopped for
#           OUTAGE_SECONDS (15) s and restarted on its data, OUTAGE_AFTER (10) s more.
# Counting is exact: messages = distinct numeric topic+payload lines the subscriber printed;
# points = distinct values per series of the 7 measurements in /api/v1/export after
# /internal/force_flush (duplicates are reported apart). A phase ends when every message and
# point is in, or when nothing happened for STABLE_SECONDS (12): no count moved and Node-RED's
# read-only probe (node-red/probe: GET /bench/pending) answered every second that its influx
# write and retry buffers and MQTT.js's unacknowledged and offline queues are empty; the
# influx client gives up on a request after 10 s, so a write still in flight would show
# within that. DRAIN_MAX_SECONDS (180) at most: then the count is marked ‡ (not final).
# Env: SYSTEMS="node-red joined gateway", SKIP (words: phase or system:phase), NR_VERSION,
#   NR_INFLUX_VERSION, NR_PREFIX, BURST_PACKETS, BIG_PACKETS, IDLE_SECONDS, SETTLE_SECONDS,
#   OUTAGE_RATE, OUTAGE_BEFORE, OUTAGE_SECONDS, OUTAGE_AFTER, STABLE_SECONDS, DRAIN_MAX_SECONDS,
#   KEEP_LOGS=DIR (copies every system's and VictoriaMetrics' log), VERBOSE=1 (the drain);
#   GATEWAY_BIN and BENCHTOOL as in bench/lib.sh.
peers=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$peers/../lib.sh"

NR_VERSION=${NR_VERSION:-4.1.8}
NR_INFLUX_VERSION=${NR_INFLUX_VERSION:-0.7.0}
if [ "${QUICK:-0}" = 1 ]; then
  : "${BIG_PACKETS:=5000}" "${IDLE_SECONDS:=15}" "${SETTLE_SECONDS:=5}"
fi
BURST_PACKETS=${BURST_PACKETS:-2000}; BIG_PACKETS=${BIG_PACKETS:-20000}
IDLE_SECONDS=${IDLE_SECONDS:-60}; SETTLE_SECONDS=${SETTLE_SECONDS:-10}
OUTAGE_SECONDS=${OUTAGE_SECONDS:-15}; OUTAGE_BEFORE=${OUTAGE_BEFORE:-10}
OUTAGE_AFTER=${OUTAGE_AFTER:-10}; OUTAGE_RATE=${OUTAGE_RATE:-100}
STABLE_SECONDS=${STABLE_SECONDS:-12}; DRAIN_MAX_SECONDS=${DRAIN_MAX_SECONDS:-180}
SYSTEMS=${SYSTEMS:-node-red joined gateway}
SKIP=${SKIP:-joined:idle}
METRICS='(temperature|humidity|gas_resistance|pressure|rssi|snr|packets_received|crc_errors)_value'

machine
start_mosquitto

# --- Node-RED install -----------------------------------------------------------------------
export NR_PREFIX=${NR_PREFIX:-$dir/nr}  # the probe plugin finds the influx client through it
if [ ! -f "$NR_PREFIX/node_modules/node-red/red.js" ]; then
  echo "installing node-red@$NR_VERSION node-red-contrib-influxdb@$NR_INFLUX_VERSION into $NR_PREFIX ..."
  npm install --prefix "$NR_PREFIX" --no-audit --no-fund --no-save --loglevel=error \
    "node-red@$NR_VERSION" "node-red-contrib-influxdb@$NR_INFLUX_VERSION" > "$dir/npm.log" 2>&1 \
    || { cat "$dir/npm.log" >&2; exit 1; }
fi
pkg_version() { node -p "require('$NR_PREFIX/node_modules/$1/package.json').version"; }
NR_V=$(pkg_version node-red); NRI_V=$(pkg_version node-red-contrib-influxdb)
CLIENT_V=$(pkg_version @influxdata/influxdb-client)
echo "# node-red $NR_V, node-red-contrib-influxdb $NRI_V (@influxdata/influxdb-client $CLIENT_V), node $(node --version)"
echo "# $("$GATEWAY_BIN" --version 2>/dev/null || echo iiot-gateway) ($GATEWAY_BIN); open files limit of every process: $(ulimit -n)"

# --- helpers ----------------------------------------------------------------------------------
want() { [[ " $SYSTEMS " == *" $1 "* && " $SKIP " != *" $1:$2 "* && " $SKIP " != *" $2 "* ]]; }
declare -A R  # results: R[system.key]
ANY_CUT=0; VM_EXITS=0

vm_fresh() {  # VictoriaMetrics on the same port with empty data
  if [ -n "${VM_PID:-}" ]; then kill "$VM_PID" 2>/dev/null || true; wait "$VM_PID" 2>/dev/null || true; fi
  rm -rf "$dir/vm"; start_vm
}
stop_pid() {  # stop_pid PID SIGNAL: signal, wait up to 20 s, then SIGKILL
  kill -"$2" "$1" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
}

# vm_check LABEL: VictoriaMetrics still up? If it exited (a flood of connections can take all
# its file descriptors), note it and start it again on its data, as its systemd unit
# (Restart=on-failure) would.
vm_check() {
  kill -0 "$VM_PID" 2>/dev/null && return 0
  local rc=0; wait "$VM_PID" 2>/dev/null || rc=$?
  VM_EXITS=$((VM_EXITS + 1)); R[${1/ /.}.vmexit]=$(( ${R[${1/ /.}.vmexit]:-0} + 1 ))
  { echo "  $1: VictoriaMetrics exited (status $rc) and was restarted; its last log lines:"
    { grep -E 'FATAL|error' "$dir/vm.log" || tail -n 1 "$dir/vm.log"; } | tail -n 2 | cut -c1-300 | sed 's/^/      /'
  } >> "$dir/notes"
  start_vm
}
# MQTT: numeric payloads the subscriber printed (fast, duplicates included) / "DISTINCT ALL".
mqtt_count() { grep -c '^iiot/[^ ]* -\?[0-9]' "$1" || true; }
mqtt_counts() { { grep '^iiot/[^ ]* -\?[0-9]' "$1" || true; } | awk '!seen[$0]++ {d++} END {print d + 0, NR}'; }
db_export() {
  curl -s "127.0.0.1:$VM/internal/force_flush" > /dev/null || true
  curl -sG "127.0.0.1:$VM/api/v1/export" --data-urlencode "match[]={__name__=~\"$METRICS\"}" \
    --data-urlencode start=0 --data-urlencode "end=$(( $(date +%s) + 86400 ))" || true
}
# db_count: "DISTINCT SAMPLES": points (distinct values per series: unique-values.py made every
# reading's value unique, so a point written twice counts once) and samples stored.
db_count() {
  db_export | python3 -c '
import json, sys
d = n = 0
for l in sys.stdin:
    v = json.loads(l)["values"]; d += len(set(v)); n += len(v)
print(d, n)'
}
# db_values: one "name{labels} value" line per distinct point, sorted (without times)
db_values() {
  db_export | python3 -c '
import json, sys
for l in sys.stdin:
    s = json.loads(l); m = dict(s["metric"]); n = m.pop("__name__")
    k = n + "{" + ",".join(f"{a}={m[a]}" for a in sorted(m)) + "}"
    for v in s["values"]: print(k, v)' | sort -u
}
# feed_start COUNT RATE FIRST_INDEX: the feeder, `benchtool lines | unique-values.py`, with
# its output already open on FEED (the connection made, Python started) but benchtool held
# back until feed_go. Sets FEEDER (its pid). FEED_FROM_FILE=1: flat-out lines come from a
# file written beforehand (`cat`) instead.
feed_start() {
  GATE="$dir/gate-$(now)"; mkfifo "$GATE"
  if [ "${FEED_FROM_FILE:-0}" = 1 ] && [ "$2" = 0 ]; then
    "$BENCHTOOL" lines --count "$1" | python3 "$peers/unique-values.py" "$3" > "$dir/lines"
    { read -r _ < "$GATE"; exec cat "$dir/lines"; } > "$FEED" & FEEDER=$!
  else
    local opt=(); [ "$2" = 0 ] && opt=(--buffered)
    { read -r _ < "$GATE"; exec "$BENCHTOOL" lines --count "$1" --rate "$2"; } \
      | python3 "$peers/unique-values.py" "${opt[@]}" "$3" > "$FEED" & FEEDER=$!
  fi
  sleep 0.5
}
feed_go() { echo go > "$GATE"; }

# start_system SYSTEM NAME: the system up and connected; sets PID (to sample) and FEED
start_system() {
  LABEL="$1 $2"
  case $1 in
    gateway) start_gateway "$2" ;;
    node-red) start_nodered "$2" 0 ;;
    joined) start_nodered "$2" 1 ;;
  esac
  sleep 1
}
stop_system() {
  stop_pid "$PID" "$STOP_SIGNAL"
  if [ -n "${HOLDER:-}" ]; then stop_pid "$HOLDER" TERM; HOLDER=; fi
}

start_gateway() {  # stdin from a FIFO that a `sleep` holds open, so feeders can come and go
  local c="$dir/gw-$1"
  gateway_config "$c.toml" $'[source]\nkind = "stdin"\ndrain_timeout = "600s"' 1
  mkfifo "$c.fifo"
  sleep 100000 > "$c.fifo" & HOLDER=$!
  : > "$c.log"
  "$GATEWAY_BIN" --config "$c.toml" < "$c.fifo" 2> "$c.log" & PID=$!
  for _ in $(seq 400); do grep -q '✓ source' "$c.log" && break; sleep 0.05; done
  grep -q '✓ source' "$c.log" || { cat "$c.log" >&2; echo "gateway did not start" >&2; exit 1; }
  FEED="$c.fifo"; STOP_SIGNAL=INT; LOG="$c.log"; PROBE=
}

start_nodered() {  # start_nodered NAME JOINED: Node-RED with the flow on fresh ports
  local u="$dir/nr-$1" tcp ui
  tcp=$(port); ui=$(port); mkdir -p "$u"
  cat > "$u/settings.js" <<JS
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: $ui,
    flowFile: "flows.json",
    credentialSecret: false,
    disableEditor: true,
    telemetry: { enabled: false },
    diagnostics: { enabled: false, ui: false },
    editorTheme: { projects: { enabled: false } },
    logging: { console: { level: "info", metrics: false, audit: false } },
    nodesDir: ["$peers/node-red/probe"],
};
JS
  TCP_PORT=$tcp MQ_PORT=$MQ VM_PORT=$VM node -e '
    const fs = require("fs"), [tpl, js, out] = process.argv.slice(1), env = process.env;
    const ports = { TCP_PORT: env.TCP_PORT, MQ_PORT: env.MQ_PORT, VM_PORT: env.VM_PORT };
    const flows = JSON.parse(fs.readFileSync(tpl, "utf8"));
    for (const n of flows) {
      for (const k of Object.keys(n)) {
        if (n[k] === "@DECODE_JS@") n[k] = fs.readFileSync(js, "utf8");
        else if (typeof n[k] === "string") n[k] = n[k].replace(/@(\w+)@/g, (_, p) => ports[p]);
      }
    }
    fs.writeFileSync(out, JSON.stringify(flows, null, 2));
  ' "$peers/node-red/flows.json" "$peers/node-red/decode.js" "$u/flows.json"
  echo '{"vm": {"token": "bench"}}' > "$u/flows_cred.json"
  : > "$u/log"
  NR_BENCH_JOINED=$2 node "$NR_PREFIX/node_modules/node-red/red.js" --userDir "$u" \
    --settings "$u/settings.js" > "$u/log" 2>&1 & PID=$!
  for _ in $(seq 600); do
    grep -q 'Started flows' "$u/log" && grep -q 'Connected to broker' "$u/log" \
      && (exec 3<>"/dev/tcp/127.0.0.1/$tcp") 2>/dev/null && break
    sleep 0.1
  done
  grep -q 'Connected to broker' "$u/log" || { cat "$u/log" >&2; echo "node-red did not start" >&2; exit 1; }
  curl -sf -m 5 "127.0.0.1:$ui/bench/pending" > /dev/null || { cat "$u/log" >&2; echo "no /bench/pending probe" >&2; exit 1; }
  FEED="/dev/tcp/127.0.0.1/$tcp"; STOP_SIGNAL=TERM; LOG="$u/log"; PROBE="127.0.0.1:$ui/bench/pending"
}

# drain SUBFILE MESSAGES POINTS: until every message and point is in, or nothing happened for
# STABLE_SECONDS: no count moved and, for Node-RED, its probe (node-red/probe) answered within
# 5 s every second that nothing is pending. The influx client gives up on a request after 10 s,
# so a write in flight shows within that as a point, a retry or a loss. DRAIN_MAX_SECONDS at
# most (then CUT=1: not final). Sets M/MS (distinct/all MQTT messages), D/DS (distinct points
# /samples), CUT, and T_LAST: when the MQTT count last moved (polled every POLL s until
# complete or still for 2 s, then every second).
older() { (( $(echo "$(now) - $1 > $2" | bc) )); }
drain() {
  local file=$1 wm=$2 wd=$3 t start busy pm=-1 pd=-1 p=
  start=$(now); busy=$start; T_LAST=$start; M=0; MS=0; D=0; DS=0; CUT=0
  while :; do
    MS=$(mqtt_count "$file"); t=$(now)
    if [ "$MS" != "$pm" ]; then pm=$MS; busy=$t; T_LAST=$t; fi
    [ "$MS" -ge "$wm" ] && break
    older "$busy" 2 && break
    vm_check "$LABEL"
    sleep "${POLL:-0.1}"
  done
  while :; do
    vm_check "$LABEL"
    read -r D DS < <(db_count)
    read -r M MS < <(mqtt_counts "$file"); t=$(now)
    if [ "$MS" != "$pm" ]; then pm=$MS; busy=$t; T_LAST=$t; fi
    if [ "$DS" != "$pd" ]; then pd=$DS; busy=$t; fi
    if [ -n "$PROBE" ]; then
      p=$(curl -sf -m 5 "$PROBE" || echo unanswered)
      [ "$p" = '{"influx_buffered":0,"influx_retry":0,"mqtt_unacked":0,"mqtt_queued":0}' ] || busy=$(now)
    fi
    [ "${VERBOSE:-0}" = 1 ] && printf '  t=%.1f s messages=%s/%s points=%s/%s %s\n' "$(echo "$t - $start" | bc -l)" "$M" "$MS" "$D" "$DS" "$p" >&2
    [ "$M" -ge "$wm" ] && [ "$D" -ge "$wd" ] && break
    older "$busy" "$STABLE_SECONDS" && break
    if older "$start" "$DRAIN_MAX_SECONDS"; then CUT=1; ANY_CUT=1; break; fi
    sleep 1
  done
  if [ "$MS" != "$M" ] || [ "$DS" != "$D" ]; then
    echo "  ${LABEL}: duplicates (at-least-once retries): $((MS - M)) MQTT messages, $((DS - D)) database samples" >> "$dir/notes"
  fi
}

# log_summary SYSTEM PHASE: what the system logged at error/warning level, grouped
log_summary() {
  local n
  if [ -n "${KEEP_LOGS:-}" ]; then
    mkdir -p "$KEEP_LOGS"; cp "$LOG" "$KEEP_LOGS/$1-$2.log"; cp "$dir/vm.log" "$KEEP_LOGS/vm.log"
  fi
  n=$(grep -ciE '\[error\]|\[warn\]|WARN:|ERROR:| ERROR | WARN ' "$LOG" || true)
  echo "  $1 $2: $n error/warning lines in its log" >> "$dir/notes"
  # The influx client's own account of what it threw away: lines removed from its full retry
  # buffer, and writes it gave up on (after 5 retries or 180 s; one line each in node-red).
  R[$1.$2.dropped]=$(grep -o 'RetryBuffer: [0-9]* oldest lines removed' "$LOG" | awk '{n += $2} END {print n + 0}' || true)
  R[$1.$2.gaveup]=$(grep -cE 'ERROR: Write to InfluxDB failed\.|Max retry time exceeded' "$LOG" || true)
  if [ "${R[$1.$2.dropped]}" != 0 ] || [ "${R[$1.$2.gaveup]}" != 0 ]; then
    echo "    its influx client logged: ${R[$1.$2.dropped]} lines removed from its full retry buffer, ${R[$1.$2.gaveup]} writes given up (lost unless an earlier attempt that timed out had reached the database)" >> "$dir/notes"
  fi
  grep -iE '\[error\]|\[warn\]|WARN:|ERROR:| ERROR | WARN ' "$LOG" | cut -c1-400 \
    | sed -E 's/^[0-9]+ [A-Za-z]+ [0-9:]+ - //; s/^[0-9TZ:.-]+ +//; s/[0-9]+/N/g' \
    | sort | uniq -c | sort -rn | head -6 | sed 's/^/      /' >> "$dir/notes" || true
}

sub_start() { mosquitto_sub -p "$MQ" -q 1 -v -t 'iiot/#' > "$1" & SUB=$!; sleep 0.3; }
sub_stop() { stop_pid "$SUB" TERM; }

# --- phases -----------------------------------------------------------------------------------
burst() {  # burst SYSTEM PHASE PACKETS
  local s=$1 ph=$2 n=$3 c0 c1 t0 sub="$dir/sub-$1-$2"
  vm_fresh; sub_start "$sub"; start_system "$s" "$ph"
  feed_start "$n" 0 0
  c0=$(cpu_ticks "$PID"); t0=$(now)
  feed_go; wait "$FEEDER"
  POLL=$([ "$n" -le 5000 ] && echo 0.02 || echo 0.1) drain "$sub" $((n * 9)) $((n * 9))
  c1=$(cpu_ticks "$PID")
  R[$s.$ph.msgs]=$M; R[$s.$ph.points]=$D; R[$s.$ph.hwm]=$(hwm_kb "$PID"); R[$s.$ph.cut]=$CUT
  R[$s.$ph.secs]=$(echo "$T_LAST - $t0" | bc -l)
  R[$s.$ph.cpu]=$(echo "($c1 - $c0) / $TICK" | bc -l)
  R[$s.$ph.window]=$(echo "$(now) - $t0" | bc -l)
  if [ "$ph" = burst ]; then
    grep '^iiot/[^ ]* -\?[0-9]' "$sub" | sort -u > "$dir/msgs-$s" || true
    db_values > "$dir/points-$s"
  fi
  stop_system; sub_stop; log_summary "$s" "$ph"
  printf '%-9s %-6s packets=%s msgs=%s/%s points=%s/%s seconds_to_last_msg=%.2f cpu_s=%.2f hwm_kb=%s (phase %.1f s%s)\n' \
    "$s" "$ph" "$n" "$M" $((n * 9)) "$D" $((n * 9)) "${R[$s.$ph.secs]}" "${R[$s.$ph.cpu]}" "${R[$s.$ph.hwm]}" "${R[$s.$ph.window]}" \
    "$([ "$CUT" = 0 ] || echo ", cut at DRAIN_MAX_SECONDS: not final")"
}

idle() {  # idle SYSTEM: 1 packet/s then 10 packets/s, one process
  local s=$1 sub="$dir/sub-$1-idle" rate count c0 c1 t0 t1 feeder total=0
  vm_fresh; sub_start "$sub"; start_system "$s" idle
  for rate in 1 10; do
    count=$(( rate * (SETTLE_SECONDS + IDLE_SECONDS) )); total=$(( total + count ))
    feed_start "$count" "$rate" $(( rate == 1 ? 0 : 100000 )); feed_go; feeder=$FEEDER
    sleep "$SETTLE_SECONDS"
    c0=$(cpu_ticks "$PID"); t0=$(now)
    sleep "$IDLE_SECONDS"
    c1=$(cpu_ticks "$PID"); t1=$(now)
    wait "$feeder"
    R[$s.idle$rate.cpu]=$(echo "($c1 - $c0) / $TICK" | bc -l)
    R[$s.idle$rate.pct]=$(echo "($c1 - $c0) / $TICK * 100 / ($t1 - $t0)" | bc -l)
    R[$s.idle$rate.rss]=$(rss_kb "$PID")
  done
  drain "$sub" $((total * 9)) $((total * 9))
  R[$s.idle.hwm]=$(hwm_kb "$PID")
  stop_system; sub_stop; log_summary "$s" idle
  printf '%-9s %-6s 1/s: cpu_s=%.2f (%.2f%%) rss_kb=%s; 10/s: cpu_s=%.2f (%.2f%%) rss_kb=%s; over %s s each; msgs=%s/%s points=%s/%s\n' \
    "$s" idle "${R[$s.idle1.cpu]}" "${R[$s.idle1.pct]}" "${R[$s.idle1.rss]}" "${R[$s.idle10.cpu]}" "${R[$s.idle10.pct]}" \
    "${R[$s.idle10.rss]}" "$IDLE_SECONDS" "$M" $((total * 9)) "$D" $((total * 9))
}

outage() {  # outage SYSTEM
  local s=$1 sub="$dir/sub-$1-outage" n c0 c1 t0 feeder
  n=$(( OUTAGE_RATE * (OUTAGE_BEFORE + OUTAGE_SECONDS + OUTAGE_AFTER) ))
  vm_fresh; sub_start "$sub"; start_system "$s" outage
  feed_start "$n" "$OUTAGE_RATE" 0
  c0=$(cpu_ticks "$PID"); t0=$(now)
  feed_go; feeder=$FEEDER
  sleep "$OUTAGE_BEFORE"
  vm_check "$LABEL"; kill "$VM_PID"; wait "$VM_PID" 2>/dev/null || true
  sleep "$OUTAGE_SECONDS"
  start_vm
  wait "$feeder"
  drain "$sub" $((n * 9)) $((n * 9))
  c1=$(cpu_ticks "$PID")
  R[$s.outage.msgs]=$M; R[$s.outage.points]=$D; R[$s.outage.sent]=$((n * 9)); R[$s.outage.cut]=$CUT
  R[$s.outage.hwm]=$(hwm_kb "$PID"); R[$s.outage.cpu]=$(echo "($c1 - $c0) / $TICK" | bc -l)
  stop_system; sub_stop; log_summary "$s" outage
  printf '%-9s %-6s packets=%s msgs=%s/%s points=%s/%s cpu_s=%.2f hwm_kb=%s (phase %.1f s%s)\n' \
    "$s" outage "$n" "$M" $((n * 9)) "$D" $((n * 9)) "${R[$s.outage.cpu]}" "${R[$s.outage.hwm]}" "$(echo "$(now) - $t0" | bc -l)" \
    "$([ "$CUT" = 0 ] || echo ", cut at DRAIN_MAX_SECONDS: not final")"
}

: > "$dir/notes"
for ph in burst big idle outage; do
  for s in $SYSTEMS; do
    want "$s" "$ph" || continue
    case $ph in
      burst) burst "$s" burst "$BURST_PACKETS" ;;
      big) burst "$s" big "$BIG_PACKETS" ;;
      idle) idle "$s" ;;
      outage) outage "$s" ;;
    esac
  done
done

# --- the table --------------------------------------------------------------------------------
has() { [ -n "${R[$1]:-}" ]; }
num() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }  # 20000 -> 20,000
mb() { printf '%.0f MB' "$(echo "$1 / 1024" | bc -l)"; }
lost() {  # lost GOT OF CUT VMEXITS
  printf '%s (%s lost, %.1f %%)' "$1" $(( $2 - $1 )) "$(echo "($2 - $1) * 100 / $2" | bc -l)"
  if [ "${3:-0}" = 1 ]; then printf ' ‡'; fi
  if [ "${4:-0}" != 0 ]; then printf ' §'; fi
}
cell() {  # cell SYSTEM ROW
  local s=$1 k
  case $2 in
    rate) k=$s.burst; has "$k.msgs" || { echo "not run"; return; }
      printf '%.0f msgs/s (%.0f packets/s)' "$(echo "${R[$k.msgs]} / ${R[$k.secs]}" | bc -l)" \
        "$(echo "${R[$k.msgs]} / 9 / ${R[$k.secs]}" | bc -l)" ;;
    cpu) k=$s.burst; has "$k.cpu" || { echo "not run"; return; }
      printf '%.2f s (%.2f s for %s)' "$(echo "${R[$k.cpu]} * 1000 / $BURST_PACKETS" | bc -l)" "${R[$k.cpu]}" "$BURST_PACKETS" ;;
    hwm) has "$s.burst.hwm" && mb "${R[$s.burst.hwm]}" || echo "not run" ;;
    bigmsgs) has "$s.big.msgs" && lost "${R[$s.big.msgs]}" $((BIG_PACKETS * 9)) "${R[$s.big.cut]}" "${R[$s.big.vmexit]:-0}" || echo "not run" ;;
    bigpoints) has "$s.big.points" && lost "${R[$s.big.points]}" $((BIG_PACKETS * 9)) "${R[$s.big.cut]}" "${R[$s.big.vmexit]:-0}" || echo "not run" ;;
    bigrate) k=$s.big; has "$k.msgs" || { echo "not run"; return; }
      printf '%.0f msgs/s, %s' "$(echo "${R[$k.msgs]} / ${R[$k.secs]}" | bc -l)" "$(mb "${R[$k.hwm]}")" ;;
    idle1) has "$s.idle1.cpu" || { echo "not run"; return; }
      printf '%.2f s (%.2f %%)' "${R[$s.idle1.cpu]}" "${R[$s.idle1.pct]}" ;;
    idle10) has "$s.idle10.pct" && printf '%.1f %%' "${R[$s.idle10.pct]}" || echo "not run" ;;
    outpoints) has "$s.outage.points" && lost "${R[$s.outage.points]}" "${R[$s.outage.sent]}" "${R[$s.outage.cut]}" "${R[$s.outage.vmexit]:-0}" || echo "not run" ;;
    outmsgs) has "$s.outage.msgs" && lost "${R[$s.outage.msgs]}" "${R[$s.outage.sent]}" "${R[$s.outage.cut]}" "${R[$s.outage.vmexit]:-0}" || echo "not run" ;;
  esac
}
title() {
  case $1 in
    node-red) echo "Node-RED $NR_V + node-red-contrib-influxdb $NRI_V" ;;
    joined) echo "same, join 900 → influxdb batch" ;;
    gateway) echo "iiot-gateway" ;;
  esac
}
row() {  # row LABEL KEY
  local s line="| $1 |"
  for s in $SYSTEMS; do line+=" $(cell "$s" "$2") |"; done
  echo "$line"
}
echo
echo "errors and warnings logged (numbers as N):"
cat "$dir/notes"
echo
for s in $SYSTEMS; do
  [ "$s" = gateway ] || [ ! -f "$dir/msgs-$s" ] || [ ! -f "$dir/msgs-gateway" ] && continue
  printf '%s vs gateway, %s packets: MQTT topic+payload lines %s, database series+values %s\n' "$s" "$BURST_PACKETS" \
    "$(cmp -s "$dir/msgs-$s" "$dir/msgs-gateway" && echo identical || echo "DIFFER ($(diff "$dir/msgs-$s" "$dir/msgs-gateway" | grep -c '^[<>]') lines)")" \
    "$(cmp -s "$dir/points-$s" "$dir/points-gateway" && echo identical || echo "DIFFER ($(diff "$dir/points-$s" "$dir/points-gateway" | grep -c '^[<>]') lines)")"
done
echo
line="| |"; sep="|---|"
for s in $SYSTEMS; do line+=" $(title "$s") |"; sep+="---|"; done
echo "$line"; echo "$sep"
row "$(num "$BURST_PACKETS") packets as fast as possible" rate
row "CPU per 1,000 packets (same run)" cpu
row "peak RSS (VmHWM, same run)" hwm
row "$(num "$BIG_PACKETS") packets: MQTT messages received of $(num $((BIG_PACKETS * 9)))" bigmsgs
row "$(num "$BIG_PACKETS") packets: points in the database of $(num $((BIG_PACKETS * 9)))" bigpoints
row "$(num "$BIG_PACKETS") packets: msgs/s, peak RSS" bigrate
row "1 packet/s: CPU seconds in $IDLE_SECONDS s" idle1
row "10 packets/s: CPU of one core over $IDLE_SECONDS s" idle10
row "database outage of $OUTAGE_SECONDS s at $OUTAGE_RATE packets/s: points in the database" outpoints
row "same: MQTT messages received" outmsgs
if [ "$VM_EXITS" != 0 ]; then
  echo "§ VictoriaMetrics exited during this phase ($VM_EXITS time(s) in all, see above) and was restarted on its data"
fi
if [ "$ANY_CUT" = 1 ]; then
  echo "‡ Node-RED still busy after DRAIN_MAX_SECONDS=$DRAIN_MAX_SECONDS s: what had arrived by then (more may come), not final"
fi
machine
