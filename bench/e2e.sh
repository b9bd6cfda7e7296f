#!/usr/bin/env bash
# End-to-end throughput against the broker ceiling, measured in the same run (BENCHMARKS.md §3).
#   bench/e2e.sh [packets=20000] [runs=3]
# Per run, on one Mosquitto (QoS 1) and one VictoriaMetrics (v2 write API) on loopback:
#  gateway leg: `iiot-gateway --config C < lines` (stdin source, fresh outbox); the gateway
#    exits only after the last PUBACK and the last HTTP 2xx; the leg ends when, in addition,
#    a mosquitto_sub subscriber has received every message. Wall time includes gateway start.
#  broker-alone leg: `benchtool publish`: one rumqttc QoS 1 client, the same topics and
#    payloads (decoded from the same lines), at most 100 awaiting PUBACK (the gateway's
#    default `inflight`). Timed like the gateway leg: from the start of the process until the
#    same kind of subscriber has received every message (benchtool's own figure, first
#    publish to last PUBACK, is printed as `acked`: it stops before the subscriber has all).
# Prints each run and the medians; ratio = gateway msgs/s ÷ broker-alone msgs/s. The legs
# alternate which goes first.
# E2E_MQTT_ONLY=1 adds a gateway leg without the InfluxDB sink.
source "$(dirname "$0")/lib.sh"
N=${1:-20000}; RUNS=${2:-3}
machine
start_mosquitto; start_vm
"$BENCHTOOL" lines --count "$N" > "$dir/lines"
MSGS=$((N * 9))

# wait_sub FILE: until FILE holds $MSGS numeric payloads (60 s at most)
wait_sub() {
  for _ in $(seq 3000); do
    [ "$(grep -c '^-\?[0-9]' "$1" || true)" -ge "$MSGS" ] && return 0; sleep 0.02
  done
  echo "subscriber got $(grep -c '^-\?[0-9]' "$1" || true)/$MSGS" >&2
}

gateway_leg() {  # gateway_leg NAME INFLUX -> prints seconds
  local name=$1 influx=$2
  mosquitto_sub -p "$MQ" -q 1 -t 'iiot/#' > "$dir/sub-$name" & local sub=$!
  sleep 0.3
  gateway_config "$dir/$name.toml" $'[source]\nkind = "stdin"\ndrain_timeout = "300s"' "$influx"
  local t0 t1; t0=$(now)
  "$GATEWAY_BIN" --config "$dir/$name.toml" < "$dir/lines" 2> "$dir/$name.log"
  wait_sub "$dir/sub-$name"
  t1=$(now); kill $sub; wait $sub 2>/dev/null || true
  echo "$t1 - $t0" | bc -l
}

printf '%-4s %-10s %12s %12s %12s %8s\n' run leg seconds msgs/s packets/s ratio
broker_leg() {  # broker_leg RUN -> prints "seconds acked_seconds"
  mosquitto_sub -p "$MQ" -q 1 -t 'iiot/#' > "$dir/sub-b$1" & local sub=$!
  sleep 0.3
  local t0 t1 b; t0=$(now)
  b=$("$BENCHTOOL" publish --port "$MQ" --lines "$dir/lines" --inflight 100)
  wait_sub "$dir/sub-b$1"; t1=$(now); kill $sub; wait $sub 2>/dev/null || true
  echo "$(echo "$t1 - $t0" | bc -l) $(sed 's/.*seconds=\([0-9.]*\).*/\1/' <<<"$b")"
}

# The legs alternate which goes first (the database's background work after the gateway
# leg's ingest, or a warm broker, favours neither).
for r in $(seq "$RUNS"); do
  if [ $((r % 2)) = 1 ]; then
    gw=$(gateway_leg "gw$r" 1); read -r bs acked < <(broker_leg "$r")
  else
    read -r bs acked < <(broker_leg "$r"); gw=$(gateway_leg "gw$r" 1)
  fi
  gw_rate=$(echo "$MSGS / $gw" | bc -l); b_rate=$(echo "$MSGS / $bs" | bc -l)
  ratio=$(echo "$gw_rate / $b_rate" | bc -l)
  printf '%-4s %-10s %12.2f %12.0f %12.0f %8s\n' "$r" gateway "$gw" "$gw_rate" "$(echo "$N / $gw" | bc -l)" ""
  printf '%-4s %-10s %12.2f %12.0f %12s %8.2f\n' "$r" broker "$bs" "$b_rate" "" "$ratio"
  printf '%-4s %-10s %12.2f %12.0f\n' "$r" acked "$acked" "$(echo "$MSGS / $acked" | bc -l)"
  echo "$gw_rate $b_rate $ratio" >> "$dir/results"
  if [ "${E2E_MQTT_ONLY:-0}" = 1 ]; then
    m=$(gateway_leg "mq$r" 0)
    printf '%-4s %-10s %12.2f %12.0f %12.0f %8s\n' "$r" gw-mqtt "$m" "$(echo "$MSGS / $m" | bc -l)" "$(echo "$N / $m" | bc -l)" ""
  fi
done
# Every reading arrived in the database too (all runs)? Readings are `<measurement>_value`;
# the gateway's own events (started, stopped: `events_text`) are not counted.
curl -s "127.0.0.1:$VM/internal/force_flush" >/dev/null
in_db=$(curl -sG "127.0.0.1:$VM/api/v1/export" --data-urlencode 'match[]={__name__=~".+_value"}' \
  --data-urlencode start=0 --data-urlencode "end=$(( $(date +%s) + 86400 ))" \
  | grep -o '"timestamps":\[[^]]*\]' | tr ',' '\n' | grep -c '[0-9]' || true)
echo "readings in database after $RUNS gateway runs: $in_db (expected $((MSGS * RUNS)))"
printf 'MEDIAN packets=%s messages=%s gateway_msgs/s=%.0f broker_alone_msgs/s=%.0f ratio=%.2f\n' "$N" "$MSGS" \
  "$(cut -d' ' -f1 "$dir/results" | median)" "$(cut -d' ' -f2 "$dir/results" | median)" "$(cut -d' ' -f3 "$dir/results" | median)"
machine
