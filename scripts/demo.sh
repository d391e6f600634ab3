#!/usr/bin/env bash
# The main job on embedded defaults: the aggregator (embedded MQTT broker + SQLite + dashboard),
# a simulator feeding it a few racks, and this machine's own agent. Ctrl-C stops everything.
#
# Env: YJ_DATA (./yunjian-data), YJ_HTTP (127.0.0.1:8080), YJ_MQTT (127.0.0.1:1883),
#      YJ_SCENARIO (simulator/scenarios/demo.toml)
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${YJ_DATA:-./yunjian-data}
HTTP=${YJ_HTTP:-127.0.0.1:8080}
MQTT=${YJ_MQTT:-127.0.0.1:1883}
SCENARIO=${YJ_SCENARIO:-simulator/scenarios/demo.toml}
TARGET=${CARGO_TARGET_DIR:-target}

port_busy() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

if port_busy "$MQTT"; then
  host=${MQTT%:*}; port=${MQTT##*:}
  echo "note: $MQTT is already taken (another MQTT broker, e.g. Mosquitto, runs there)."
  echo "      The demo runs its embedded broker on the next free port instead. To use the running"
  echo "      broker, start the aggregator with: yunjian-aggregator --broker mqtt://$MQTT"
  while port_busy "$host:$port"; do port=$((port + 1)); done
  MQTT="$host:$port"
fi
if port_busy "$HTTP"; then
  echo "error: $HTTP (dashboard) is taken; set YJ_HTTP=127.0.0.1:PORT" >&2
  exit 1
fi

echo "building (release)..."
cargo build --release -q -p yunjian-aggregator -p yunjian-agent -p yunjian-simulator
BIN="$TARGET/release"
mkdir -p "$DATA"

pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

# The simulated units' allocation register (附件3 forms, one per unit), imported once, so every
# simulated VM is matched to its approved allocation (and one per unit runs bigger than approved).
if [ ! -e "$DATA/register-imported" ]; then
  "$BIN/yunjian-simulator" --scenario "$SCENARIO" --register-forms "$DATA/forms" |
    while IFS=$'\t' read -r unit form; do
      "$BIN/yunjian-aggregator" --data-dir "$DATA" import --unit "$unit" --by demo "$form"
    done
  touch "$DATA/register-imported"
fi

# Cases are opened from the usage findings every 20 s rather than every minute, so the idle VMs
# of the simulator's history show soon after it is in. (A config from an older demo listed
# reclaim tokens, which are now users: it is rewritten.)
CONFIG="$DATA/aggregator.toml"
if [ ! -e "$CONFIG" ] || grep -q '^tokens = \[' "$CONFIG"; then
  {
    echo "# written by scripts/demo.sh"
    echo "[reclaim]"
    echo "detect_every = \"20s\""
  } > "$CONFIG"
fi

# One user per role and one per simulated unit, made once for this data dir with generated
# passwords: shown now and kept (mode 0600) in $DATA/demo-users.txt for the demo only.
USERS="$DATA/demo-users.txt"
if [ ! -e "$USERS" ]; then
  add_user() { # name role [unit]
    local pw
    pw=$("$BIN/yunjian-aggregator" --data-dir "$DATA" user add --name "$1" --role "$2" \
      ${3:+--unit "$3"} --display-name "演示-$1" 2>&1 | sed -n 's/^初始密码[^：]*：//p')
    [ -n "$pw" ] || { echo "error: could not create demo user $1" >&2; exit 1; }
    printf '%s\t%s\t%s\t%s\n' "$2" "$1" "$pw" "${3:-}"
  }
  {
    add_user demo-admin admin
    add_user demo-ops ops
    add_user demo-authority authority
    add_user demo-auditor auditor
    i=0
    for form in "$DATA"/forms/*.csv; do
      [ -e "$form" ] || continue
      i=$((i + 1))
      add_user "demo-unit$i" unit "$(basename "$form" .csv)"
    done
  } > "$USERS.tmp"
  chmod 600 "$USERS.tmp"
  mv "$USERS.tmp" "$USERS"
fi

# A few applications of the demo's units walked through their steps by the demo's users, once:
# a new system in its test period, one overdue for acceptance, a change and a termination
# waiting, a test resource about to end (see /applications).
if [ ! -e "$DATA/applications-seeded" ]; then
  "$BIN/yunjian-aggregator" --config "$CONFIG" --data-dir "$DATA" demo-applications
  touch "$DATA/applications-seeded"
fi

"$BIN/yunjian-aggregator" --config "$CONFIG" --data-dir "$DATA" --http-listen "$HTTP" --mqtt-listen "$MQTT" &
pids+=($!)
for _ in $(seq 1 100); do
  port_busy "$HTTP" && break
  sleep 0.1
done
port_busy "$HTTP" || { echo "error: the aggregator did not start" >&2; exit 1; }

# this machine's own agent: enrolled with the aggregator's master key
node=$(hostname | tr -c 'A-Za-z0-9._\n-' '-' | cut -c1-64)
"$BIN/yunjian-aggregator" --data-dir "$DATA" enroll "$node" --role host --out "$DATA/agent.key"
cat > "$DATA/agent.toml" <<TOML
node_id = "$node"
role = "host"
interval = "10s"
key_file = "$DATA/agent.key"
rack = "本机"

[mqtt]
host = "${MQTT%:*}"
port = ${MQTT##*:}

[buffer]
dir = "$DATA/agent-buffer"
TOML
"$BIN/yunjian-agent" --config "$DATA/agent.toml" &
pids+=($!)

"$BIN/yunjian-simulator" --scenario "$SCENARIO" --broker "$MQTT" --master-key-file "$DATA/master.key" &
pids+=($!)

echo
echo "  云鉴 dashboard:  http://$HTTP/"
echo "  JSON API:        http://$HTTP/api/nodes     metrics: http://$HTTP/metrics"
echo "  MQTT broker:     $MQTT (embedded)"
echo "  sign in as (role, login name, password, unit; kept in $USERS):"
sed 's/^/    /' "$USERS"
echo "  The simulator first sends the scenario's history (demo.toml: 36 days; its log says"
echo "  \"backfill: N of M reports\"); the idle VMs' cases appear on /reclaim soon after it."
echo "  Applications (申请 → 终止) of the demo's units wait on /applications for each role."
echo "  Ctrl-C stops the aggregator, the simulator and the agent."
echo
wait -n "${pids[@]}"
