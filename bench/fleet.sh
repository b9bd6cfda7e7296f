#!/usr/bin/env bash
# Fleet (BENCHMARKS.md "Fleet", docs/SCALING.md): edge gateways publishing packet events into
# one broker, a central ingest tier of N `kind = "mqtt"` instances (one share group) writing
# to the database.
#   bench/fleet.sh [edges=3] [nodes=100] [seconds=20] [events=20000] [edge_interval=5ms]
# 1. Record `events` packet events: an edge gateway (stdin source, the benchtool's lines,
#    `[mqtt] packet_events = true`) publishes them; mosquitto_sub keeps them in a file.
# 2. Broker ceiling: the file published with `mosquitto_pub -l` (QoS 1) to 1 and to 3
#    mosquitto_sub subscribers of one share group (QoS 1); first publish to last delivery.
# 3. Ingest tier, N = 1, 2, 3: the same file, the same publisher, N gateways in a share group
#    writing to VictoriaMetrics (flush_interval 50 ms); from the first publish until every
#    packet is committed in the instances' outboxes, and until their InfluxDB sinks confirmed
#    every reading (their /api/status), with each instance's CPU and peak RSS.
# 4. A fleet in motion: `edges` gateways with simulator sources (`nodes` remote nodes each,
#    one packet every `edge_interval`) and 3 ingest instances for `seconds`: packets the
#    edges received, packets the ingest tier stored, and how far behind it ended.
# Mosquitto and VictoriaMetrics on loopback, as in every bench script.
source "$(dirname "$0")/lib.sh"
K=${1:-3}; M=${2:-100}; SECS=${3:-20}; P=${4:-20000}; EDGE_INTERVAL=${5:-5ms}
machine
start_mosquitto; start_vm
READINGS=9  # readings per benchtool line

# status_sum FIELD PORT...: sum of a jq-like path over the instances' /api/status
status_sum() {
  local path=$1; shift
  for p in "$@"; do curl -s "127.0.0.1:$p/api/status"; echo; done | python3 -c "
import json, sys
total = 0
for line in sys.stdin:
    line = line.strip()
    if not line: continue
    v = json.loads(line)
    for k in '$path'.split('.'): v = v.get(k, {}) if isinstance(v, dict) else 0
    total += v if isinstance(v, int) else 0
print(total)"
}

# 1. Record the events.
mosquitto_sub -p "$MQ" -q 1 -t 'iiot/gateway/+/packets' -C "$P" > "$dir/events" & rec=$!
sleep 0.3
cat > "$dir/rec.toml" <<CFG
[source]
kind = "stdin"
drain_timeout = "120s"
[gateway]
id = "edge-rec"
site = "bench"
[storage]
dir = "$dir/rec.data"
[http]
enabled = false
[mqtt]
broker_url = "mqtt://127.0.0.1:$MQ"
client_id = "edge-rec"
packet_events = true
CFG
"$BENCHTOOL" lines --count "$P" | "$GATEWAY_BIN" --config "$dir/rec.toml" 2> "$dir/rec.log"
wait $rec
echo "recorded_events=$(wc -l < "$dir/events") of $P"

publish() { mosquitto_pub -p "$MQ" -q 1 -i "bench-pub-$1" -t iiot/gateway/edge-rec/packets -l < "$dir/events"; }

# 2. The broker's own delivery to S subscribers of one share group.
ceiling() {
  local s=$1 pids=() t0 t1
  for i in $(seq "$s"); do
    mosquitto_sub -p "$MQ" -q 1 -i "ceil$s-$i" -t "\$share/ceil$s/iiot/gateway/+/packets" > "$dir/ceil$s-$i" & pids+=($!)
  done
  sleep 0.5
  t0=$(now); publish "ceil$s"
  for _ in $(seq 6000); do
    [ "$(cat "$dir"/ceil"$s"-* | wc -l)" -ge "$P" ] && break; sleep 0.01
  done
  t1=$(now); kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
  printf 'broker_to_%s_subscriber(s): %.2f s, %.0f events/s (%s delivered)\n' "$s" \
    "$(echo "$t1 - $t0" | bc -l)" "$(echo "$P / ($t1 - $t0)" | bc -l)" "$(cat "$dir"/ceil"$s"-* | wc -l)"
  echo "$P / ($t1 - $t0)" | bc -l > "$dir/ceiling$s"
}
ceiling 1
ceiling 3

# ingest_config NAME GROUP HTTP_PORT
ingest_config() {
  cat > "$dir/$1.toml" <<CFG
[source]
kind = "mqtt"
url = "mqtt://127.0.0.1:$MQ"
share_group = "$2"
client_id = "$1"
drain_timeout = "60s"
[storage]
dir = "$dir/$1.data"
[http]
listen = "127.0.0.1:$3"
[influxdb]
url = "http://127.0.0.1:$VM"
api = "v2"
bucket = "bench"
flush_interval = "50ms"
CFG
}

# start_ingest N GROUP: sets PORTS and PIDS
start_ingest() {
  PORTS=(); PIDS=()
  for i in $(seq "$1"); do
    local name="$2-$i" port; port=$(port)
    ingest_config "$name" "$2" "$port"
    "$GATEWAY_BIN" --config "$dir/$name.toml" 2> "$dir/$name.log" & PIDS+=($!); PORTS+=("$port")
  done
  for i in $(seq "$1"); do
    for _ in $(seq 400); do grep -q 'mqtt source connected' "$dir/$2-$i.log" && break; sleep 0.025; done
  done
  sleep 0.3
}

stop_ingest() { kill -INT "${PIDS[@]}"; wait "${PIDS[@]}" 2>/dev/null || true; }

# 3. The ingest tier at N = 1, 2, 3.
for n in 1 2 3; do
  start_ingest "$n" "in$n"
  c0=(); for pid in "${PIDS[@]}"; do c0+=("$(cpu_ticks "$pid")"); done
  t0=$(now); publish "in$n"
  want=$((P * READINGS)); tc=""
  for _ in $(seq 6000); do
    [ -z "$tc" ] && [ "$(status_sum packets "${PORTS[@]}")" -ge "$P" ] && tc=$(now)
    [ "$(status_sum sinks.influxdb.delivered "${PORTS[@]}")" -ge "$want" ] && break; sleep 0.01
  done
  t1=$(now); tc=${tc:-$t1}
  stored=$(status_sum sinks.influxdb.delivered "${PORTS[@]}")
  per=""
  for i in "${!PIDS[@]}"; do
    pid=${PIDS[$i]}
    per+=$(printf ' [%s: %s packets, cpu %.2f s, peak rss %s kB]' "$((i + 1))" \
      "$(status_sum packets "${PORTS[$i]}")" \
      "$(echo "($(cpu_ticks "$pid") - ${c0[$i]}) / $TICK" | bc -l)" "$(hwm_kb "$pid")")
  done
  rate=$(echo "$P / ($t1 - $t0)" | bc -l); crate=$(echo "$P / ($tc - $t0)" | bc -l)
  printf 'ingest_N=%s: committed in %.2f s (%.0f packets/s, %.2f of the broker to 1 subscriber, %.2f of the broker to %s); in the database in %.2f s (%.0f packets/s end to end, %.2f / %.2f; %s of %s readings);%s\n' \
    "$n" "$(echo "$tc - $t0" | bc -l)" "$crate" "$(echo "$crate / $(cat "$dir/ceiling1")" | bc -l)" \
    "$(echo "$crate / $(cat "$dir/ceiling3")" | bc -l)" 3 "$(echo "$t1 - $t0" | bc -l)" "$rate" \
    "$(echo "$rate / $(cat "$dir/ceiling1")" | bc -l)" "$(echo "$rate / $(cat "$dir/ceiling3")" | bc -l)" "$stored" "$want" "$per"
  stop_ingest
done

# 4. A fleet in motion.
start_ingest 3 live
ingest_ports=("${PORTS[@]}"); ingest_pids=("${PIDS[@]}")
edge_ports=(); edge_pids=()
for e in $(seq "$K"); do
  p=$(port)
  cat > "$dir/edge$e.toml" <<CFG
[source]
kind = "simulator"
interval = "$EDGE_INTERVAL"
remote_nodes = $M
[gateway]
id = "edge-$e"
site = "site-$e"
[storage]
dir = "$dir/edge$e.data"
[http]
listen = "127.0.0.1:$p"
[mqtt]
broker_url = "mqtt://127.0.0.1:$MQ"
client_id = "edge-$e"
packet_events = true
CFG
  "$GATEWAY_BIN" --config "$dir/edge$e.toml" 2> "$dir/edge$e.log" & edge_pids+=($!); edge_ports+=("$p")
done
sleep "$SECS"
edges_packets=$(status_sum packets "${edge_ports[@]}")
ingest_packets=$(status_sum packets "${ingest_ports[@]}")
printf 'fleet_in_motion: %s edges x %s nodes, one packet per %s each, %s s: edges received %s packets (%.0f/s), the ingest tier stored %s (%s behind)\n' \
  "$K" "$M" "$EDGE_INTERVAL" "$SECS" "$edges_packets" "$(echo "$edges_packets / $SECS" | bc -l)" "$ingest_packets" "$((edges_packets - ingest_packets))"
for i in "${!ingest_pids[@]}"; do
  printf '  ingest %s: rss %s kB, cpu %.1f s\n' "$((i + 1))" "$(rss_kb "${ingest_pids[$i]}")" "$(echo "$(cpu_ticks "${ingest_pids[$i]}") / $TICK" | bc -l)"
done
edges_final=$(status_sum packets "${edge_ports[@]}")
kill -INT "${edge_pids[@]}"; wait "${edge_pids[@]}" 2>/dev/null || true
sleep 3
echo "edges stopped at about $edges_final packets; 3 s later the ingest tier had stored $(status_sum packets "${ingest_ports[@]}")"
kill -INT "${ingest_pids[@]}"; wait "${ingest_pids[@]}" 2>/dev/null || true
machine
