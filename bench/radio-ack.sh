#!/usr/bin/env bash
# Time from a radio packet's +RCV to its ACK's AT+SEND, now that the ACK waits for the commit
# (BENCHMARKS.md, "ACK after the commit"). benchtool is a RYLR998 modem on a pseudo-terminal;
# the gateway publishes to Mosquitto and writes to VictoriaMetrics as usual.
#   bench/radio-ack.sh [seconds=30] [rates...=10 100]
source "$(dirname "$0")/lib.sh"
SECONDS_RUN=${1:-30}; shift || true
RATES=${*:-10 100}
machine
start_mosquitto; start_vm
for rate in $RATES; do
  gateway_config "$dir/radio-$rate.toml" ""
  echo "== rate $rate/s"
  "$BENCHTOOL" radio-acks --gateway "$GATEWAY_BIN" --config "$dir/radio-$rate.toml" \
    --rate "$rate" --seconds "$SECONDS_RUN"
done
machine
