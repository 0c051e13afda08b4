#!/usr/bin/env bash
# Aerie against Redis with `appendfsync always`, same machine, same run, same
# load shape: 50 connections, 100-byte values, durable writes then reads.
#
#   bash benches/redis_compare.sh [keys]        (default 200000)
#
# Installs redis-server from the OS packages if missing (needs root), starts
# both servers on loopback with throwaway data directories, and stops them.
set -euo pipefail
KEYS=${1:-200000}
CONNS=50
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'kill ${REDIS_PID:-} ${AERIE_PID:-} 2>/dev/null || true; rm -rf "$WORK"' EXIT

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  apt-get install -y redis-server redis-tools >/dev/null
fi
cargo build --release --manifest-path "$ROOT/Cargo.toml" >/dev/null
AERIE="$ROOT/target/release/aerie"

echo "== Redis $(redis-server --version | awk '{print $3}') appendfsync always, $CONNS connections, 100 B values"
redis-server --port 6399 --bind 127.0.0.1 --dir "$WORK" --appendonly yes --appendfsync always \
  --save "" --daemonize no >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
sleep 1
redis-benchmark -p 6399 -c $CONNS -n "$KEYS" -r "$KEYS" -d 100 -t set,get --csv
kill $REDIS_PID; wait $REDIS_PID 2>/dev/null || true; REDIS_PID=

echo "== Aerie (fsync always), $CONNS connections, 100 B values"
AERIE_DATA_DIR="$WORK/aerie" AERIE_PORT=3099 AERIE_FABRIC_PORT=0 AERIE_METRICS_PORT=0 "$AERIE" node 2>"$WORK/aerie.log" &
AERIE_PID=$!
sleep 2
"$AERIE" bench --host 127.0.0.1:3099 --workload insert --keys "$KEYS" --connections $CONNS --value-bytes 100 --duration-secs 600
"$AERIE" bench --host 127.0.0.1:3099 --workload c --keys "$KEYS" --connections $CONNS --value-bytes 100 --duration-secs 10
"$AERIE" bench --host 127.0.0.1:3099 --workload a --keys "$KEYS" --connections $CONNS --value-bytes 100 --duration-secs 10
kill -TERM $AERIE_PID; wait $AERIE_PID || true; AERIE_PID=
