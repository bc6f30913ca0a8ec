#!/usr/bin/env bash
# Same-hour A/B of two hub binaries: ab.sh OUTDIR ROUNDS "ADMINS..." NAME=BIN NAME=BIN
# Alternates the binaries each round; one fresh hub per run (fresh database, --agent-rate 0,
# as `bench/run.sh --compare`); `loadgen ack-fanout`, 1000 agents ack-paced, 5 s. Prints one
# line per run (deliveries/s, hub CPU µs per delivery and per change, the checks).
# Example: ab.sh /tmp/ab 3 "500 50 1" base=/tmp/hub-main new=target/release/presence-hub
set -uo pipefail
OUT="$1"; ROUNDS="$2"; ADMINS="$3"; shift 3
LG="${LOADGEN:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/loadgen}"
mkdir -p "$OUT"
ulimit -n 1048576 2>/dev/null || true
for r in $(seq 1 "$ROUNDS"); do
  for admins in $ADMINS; do
    for pair in "$@"; do
      name="${pair%%=*}"; bin="${pair#*=}"
      port="$($LG free-port)"
      db="$OUT/hub.db"; rm -f "$db" "$db-wal" "$db-shm"
      RUST_LOG=warn "$bin" --listen "127.0.0.1:$port" --database "$db" --agent-rate 0 >"$OUT/hub-$name.log" 2>&1 &
      pid=$!
      "$LG" --addr "127.0.0.1:$port" wait-ready --timeout 30 >/dev/null
      load="$(cut -d' ' -f1 /proc/loadavg)"
      "$LG" --addr "127.0.0.1:$port" --hub-pid "$pid" ack-fanout --agents 1000 --admins "$admins" --duration 5 --label "$name" >"$OUT/run.log" 2>&1
      line="$(grep '^RESULT ' "$OUT/run.log" | tail -1 | sed 's/^RESULT //')"
      kill -TERM "$pid"; wait "$pid" 2>/dev/null
      echo "$line" | python3 -c "
import json,sys
d=json.load(sys.stdin); f=d['figures']
print('$name', 'admins=$admins', 'r$r', 'load=$load', 'dps=%.0f'%f['deliveries_per_sec'], 'us/del=%s'%f['hub_us_per_delivery'], 'us/chg=%s'%f['hub_us_per_change'], 'acks/s=%.0f'%f['acks_per_sec'], 'missing=%s'%f['missing'], 'ooo=%s'%f['out_of_order'], 'gaps=%s'%f['seq_gaps'], 'slow=%s'%f['slow_dropped'], 'closed=%s'%f['admins_closed_otherwise'])
" | tee -a "$OUT/ab.txt"
    done
  done
done
