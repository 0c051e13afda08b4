#!/usr/bin/env bash
# Three Aerie nodes (RF 3, fsync always) against a three-member etcd 3.4
# (Debian's etcd-server; etcd fsyncs every commit), same machine, same run,
# same load shape: 64 connections, one request in flight each, 100-byte
# durable puts for DURATION seconds.
#
#   bash benches/etcd_compare.sh [duration_secs]        (default 10)
#
# Installs etcd-server from the OS packages if missing (needs root). All
# six processes share this machine's one disk and two cores. The etcd load
# is `examples/etcd_load.rs` (keep-alive HTTP/1.1 to the JSON gateway,
# connections spread over the three members); Aerie's is `aerie bench
# --hosts` over the three nodes, each put sent to its partition's leader as
# a smart client does (`--host` of one node instead measures the proxy hop).
set -euo pipefail
DURATION=${1:-10}
CONNS=64
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d); echo "work dir: $WORK (kept when KEEP=1)"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT

command -v etcd >/dev/null || apt-get install -y etcd-server >/dev/null
cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin aerie --example etcd_load >/dev/null
AERIE="$ROOT/target/release/aerie"
LOAD="$ROOT/target/release/examples/etcd_load"

echo "== etcd $(etcd --version | awk '/etcd Version/ {print $3}'), 3 members, $CONNS connections, 100 B puts, ${DURATION} s"
CLUSTER=e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803
for i in 1 2 3; do
  etcd --name e$i --data-dir "$WORK/e$i" \
    --listen-client-urls http://127.0.0.1:2379$i --advertise-client-urls http://127.0.0.1:2379$i \
    --listen-peer-urls http://127.0.0.1:2380$i --initial-advertise-peer-urls http://127.0.0.1:2380$i \
    --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token bench \
    >"$WORK/e$i.log" 2>&1 &
  PIDS+=($!)
done
for _ in $(seq 100); do
  ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:23791 endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
"$LOAD" --endpoints 127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793 --connections $CONNS \
  --duration-secs "$DURATION" --value-bytes 100
kill "${PIDS[@]}"; wait "${PIDS[@]}" 2>/dev/null || true; PIDS=()

echo "== Aerie, 3 nodes, replication factor 3, fsync always, $CONNS connections, 100 B puts, ${DURATION} s"
for i in 1 2 3; do
  SEEDS=""; [ $i -gt 1 ] && SEEDS=127.0.0.1:3191
  AERIE_DATA_DIR="$WORK/a$i" AERIE_PORT=319$((i * 2 - 2)) AERIE_FABRIC_PORT=319$((i * 2 - 1)) \
    AERIE_METRICS_PORT=0 AERIE_SEEDS=$SEEDS "$AERIE" node 2>"$WORK/a$i.log" &
  PIDS+=($!)
  [ $i -eq 1 ] && sleep 1.5
done
ready() {
  for port in 3190 3192 3194; do "$AERIE" info --host 127.0.0.1:$port node >/dev/null 2>&1 || return 1; done
  "$AERIE" cluster status --host 127.0.0.1:3190 2>/dev/null | grep -q "every shard has its replication factor (3)"
}
for _ in $(seq 150); do ready && break; sleep 0.2; done
ready || { echo "the Aerie cluster did not form; logs in $WORK (KEEP=1 keeps them)"; exit 1; }
"$AERIE" bench --hosts 127.0.0.1:3190,127.0.0.1:3192,127.0.0.1:3194 --workload insert --keys 100000000 --connections $CONNS \
  --value-bytes 100 --duration-secs "$DURATION"
echo "== Aerie again, all $CONNS connections to one node (it proxies the puts of shards it does not lead)"
"$AERIE" bench --host 127.0.0.1:3190 --workload insert --keys 100000000 --connections $CONNS \
  --value-bytes 100 --duration-secs "$DURATION"
