#!/usr/bin/env bash
# Soak of the probe-rs source: the gateway runs a fake `probe-rs` that prints one real-format
# defmt line (tests/fixtures/probe-rs-session.log) every INTERVAL seconds and never exits, with
# a real Mosquitto and VictoriaMetrics as sinks, for DURATION seconds. A healthy child must
# never be signalled or restarted: the script prints how often the fake was started and what
# the log and /metrics say about restarts.
#   bench/probe-rs-soak.sh [duration_s=600] [interval_s=30]
source "$(dirname "$0")/lib.sh"
DURATION=${1:-600}
INTERVAL=${2:-30}
start_mosquitto
start_vm
fixture=$PWD/tests/fixtures/probe-rs-session.log
grep 'JSON sent via VCP' "$fixture" > "$dir/lines"
cat > "$dir/probe-rs" <<FAKE
#!/bin/sh
# Fake probe-rs: records each start and any SIGTERM, prints one line every $INTERVAL s (the
# sleep runs in the background so a signal is handled at once, as probe-rs does).
echo "\$\$" >> "$dir/starts"
trap 'echo "\$\$ SIGTERM" >> "$dir/signals"; exit 143' TERM
echo '      Erasing ✔ 100% [####################]  128.00 KiB @ 63.43 KiB/s' >&2
while :; do
  while IFS= read -r line; do
    printf '%s\n' "\$line"
    sleep $INTERVAL & wait \$!
  done < "$dir/lines"
done
FAKE
chmod +x "$dir/probe-rs"
HTTP=$(port)
cat > "$dir/config.toml" <<CFG
[source]
probe_rs = "$dir/probe-rs"
[gateway]
probe_id = "0483:374b:soak"
chip = "STM32F446RETx"
firmware_path = "fw.elf"
[storage]
dir = "$dir/data"
[http]
listen = "127.0.0.1:$HTTP"
[mqtt]
broker_url = "mqtt://127.0.0.1:$MQ"
client_id = "soak"
[influxdb]
url = "http://127.0.0.1:$VM"
api = "v2"
bucket = "soak"
CFG
machine
echo "# $GATEWAY_BIN, fake probe-rs: one line every ${INTERVAL}s, ${DURATION}s"
"$GATEWAY_BIN" --config "$dir/config.toml" 2> "$dir/gateway.log" &
GW=$!
sleep "$DURATION"
metrics=$(curl -s "127.0.0.1:$HTTP/metrics")
packets=$(echo "$metrics" | awk '/^iiot_packets_decoded_total / {print $2}')
kill -TERM "$GW"; wait "$GW" || true
starts=$(wc -l < "$dir/starts")
signals=$(cat "$dir/signals" 2>/dev/null | grep -vc "^$(tail -1 "$dir/starts") " || true)
echo "starts=$starts sigterm_while_running=$signals packets=$packets" \
  "restart_log_lines=$(grep -c 'restarting' "$dir/gateway.log" || true)"
echo "$metrics" | grep '^iiot_source_restarts_total'
