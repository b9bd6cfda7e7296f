# Shared helpers of the bench/ scripts (sourced, not run). Every script starts its own
# servers on free loopback ports in a temp dir ($dir) and stops them on exit.
#   GATEWAY_BIN   gateway binary   (default target/release/iiot-gateway, built when missing)
#   BENCHTOOL     load tool        (default target/release/examples/benchtool, built when missing)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
GATEWAY_BIN=${GATEWAY_BIN:-target/release/iiot-gateway}
BENCHTOOL=${BENCHTOOL:-target/release/examples/benchtool}
[ -x "$GATEWAY_BIN" ] || cargo build --release --bin iiot-gateway
[ -x "$BENCHTOOL" ] || cargo build --release --example benchtool
dir=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
machine() {
  echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo); $(uptime | sed 's/.*load/load/')"
}

start_mosquitto() {  # sets MQ
  MQ=$(port)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\npersistence false\n' "$MQ" > "$dir/mosquitto.conf"
  [ "$(id -u)" -eq 0 ] && echo 'user root' >> "$dir/mosquitto.conf"
  /usr/sbin/mosquitto -c "$dir/mosquitto.conf" > "$dir/mosquitto.log" 2>&1 &
  MQ_PID=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$MQ") 2>/dev/null && break; sleep 0.05; done
}

start_vm() {  # sets VM (port), VM_PID; reuses the port and data on a second call
  VM=${VM:-$(port)}
  victoria-metrics -storageDataPath "$dir/vm" -httpListenAddr "127.0.0.1:$VM" -retentionPeriod 100y \
    -loggerLevel ERROR >> "$dir/vm.log" 2>&1 &
  VM_PID=$!
  for _ in $(seq 200); do curl -sf "127.0.0.1:$VM/health" >/dev/null && break; sleep 0.05; done
}

# gateway_config FILE SOURCE_TOML [influx=1]: a config with stdin/simulator source, MQTT to $MQ,
# VictoriaMetrics on $VM (v2 API), storage in $dir/data-<name>. The built-in dashboard is off
# unless DASHBOARD=1 (then on a free port: it keeps the newest value of every series).
gateway_config() {
  local file=$1 source=$2 influx=${3:-1}
  cat > "$file" <<CFG
$source
[storage]
dir = "$file.data"
[http]
$(if [ "${DASHBOARD:-0}" = 1 ]; then printf 'listen = "127.0.0.1:%s"' "$(port)"; else echo 'enabled = false'; fi)
[mqtt]
broker_url = "mqtt://127.0.0.1:$MQ"
client_id = "bench-gateway"
CFG
  if [ "$influx" = 1 ]; then
    printf '[influxdb]\nurl = "http://127.0.0.1:%s"\napi = "v2"\nbucket = "bench"\n' "$VM" >> "$file"
  fi
}

# rss_kb PID / cpu_ticks PID (utime+stime, in clock ticks)
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# rss_split PID: "anon=KB file=KB" (heap and stacks vs the binary's and libraries' pages,
# which are clean and shared: the kernel can drop them and read them back)
rss_split() { awk '/RssAnon/ {a=$2} /RssFile/ {f=$2} END {printf "anon=%s file=%s", a, f}' "/proc/$1/status" 2>/dev/null || echo "anon=? file=?"; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
TICK=$(getconf CLK_TCK)

# median of the numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.6g\n", (a[NR/2]+a[NR/2+1])/2}'; }
