#!/usr/bin/env bash
# Connection storm: 10,000 simulated agents connecting at once, embedded broker vs Mosquitto,
# 3 alternating runs each. Build first: cargo build --release -p yunjian-aggregator -p yunjian-simulator
# Needs mosquitto on PATH and a hard open-file limit of at least 20000.
set -u
cd "$(dirname "$0")/.."
B=$(cd "${B:-${CARGO_TARGET_DIR:-target}/release}" && pwd)
W=$(mktemp -d)
cd "$W"
printf "listener 18831 127.0.0.1\nallow_anonymous true\npersistence false\n" > mosq.conf
ulimit -n 20000
for run in 1 2 3; do
  rm -rf data; mkdir -p data
  $B/yunjian-aggregator --data-dir data --http-listen 127.0.0.1:18080 --mqtt-listen 127.0.0.1:18830 > agg.log 2>&1 &
  AGG=$!; sleep 2
  timeout 60 $B/yunjian-simulator --hosts 10000 --broker 127.0.0.1:18830 --master-key-file data/master.key --duration 15s 2>&1 \
    | sed 's/\x1b\[[0-9;]*m//g' | grep -o 'all nodes connected.*' | sed "s/^/embedded run $run: /"
  kill $AGG; wait $AGG 2>/dev/null
  mosquitto -c mosq.conf > mosq.log 2>&1 &
  MQ=$!; sleep 1
  timeout 60 $B/yunjian-simulator --hosts 10000 --broker 127.0.0.1:18831 --master-key-file data/master.key --duration 15s 2>&1 \
    | sed 's/\x1b\[[0-9;]*m//g' | grep -o 'all nodes connected.*' | sed "s/^/mosquitto run $run: /"
  kill $MQ; wait $MQ 2>/dev/null
done
