#!/usr/bin/env bash
# Rough end-to-end throughput: N simulated packets piped into the gateway's stdin, delivered
# to a real Mosquitto (QoS 1) and a real VictoriaMetrics (v2 write API) on loopback. The
# gateway exits only after both sinks confirmed everything, so the wall time of the gateway
# process is the time to the last PUBACK and the last HTTP 2xx.
#   bench/e2e-stdin.sh [packets]      (default 20000; needs a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
BIN=target/release/iiot-gateway
[ -x "$BIN" ] || cargo build --release
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MQ=$(port); VM=$(port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n' "$MQ" > "$dir/mosquitto.conf"
[ "$(id -u)" -eq 0 ] && echo 'user root' >> "$dir/mosquitto.conf"
/usr/sbin/mosquitto -c "$dir/mosquitto.conf" > "$dir/mosquitto.log" 2>&1 &
victoria-metrics -storageDataPath "$dir/vm" -httpListenAddr "127.0.0.1:$VM" -retentionPeriod 100y -loggerLevel ERROR > "$dir/vm.log" 2>&1 &
for _ in $(seq 100); do curl -sf "127.0.0.1:$VM/health" >/dev/null && break; sleep 0.1; done
mosquitto_sub -p "$MQ" -q 1 -t 'iiot/#' > "$dir/received" &
sleep 0.3
cat > "$dir/config.toml" <<CFG
[source]
kind = "stdin"
drain_timeout = "120s"
[storage]
dir = "$dir/data"
[http]
enabled = false
[mqtt]
broker_url = "mqtt://127.0.0.1:$MQ"
client_id = "bench"
[influxdb]
url = "http://127.0.0.1:$VM"
api = "v2"
bucket = "bench"
CFG
"$BIN" simulate --interval 0s --count "$N" --seed 1 > "$dir/lines"
readings=$(grep -o '"[a-z]*":-\?[0-9][0-9.]*' "$dir/lines" | grep -vc '"ts"')
start=$(date +%s.%N)
"$BIN" --config "$dir/config.toml" < "$dir/lines" 2> "$dir/gateway.log"
end=$(date +%s.%N)
sleep 1
curl -s "127.0.0.1:$VM/internal/force_flush" >/dev/null
in_db=$(curl -sG "127.0.0.1:$VM/api/v1/export" --data-urlencode 'match[]={__name__=~".+"}' \
  --data-urlencode start=0 --data-urlencode "end=$(( $(date +%s) + 86400 ))" \
  | grep -o '"timestamps":\[[^]]*\]' | tr ',' '\n' | grep -c '[0-9]' || true)
received=$(grep -cv '^o' "$dir/received" || true)
python3 - "$N" "$readings" "$start" "$end" "$in_db" "$received" <<'PY'
import sys
n, readings, start, end, db, mq = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
t = end - start
print(f"packets={n} readings={readings} seconds={t:.2f} packets/s={n/t:.0f} readings/s={readings/t:.0f} in_db={db} mqtt_received={mq}")
PY
