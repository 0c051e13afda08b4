#!/usr/bin/env bash
# A wiped node rebuilt: three Aerie nodes (RF 3, fsync always) loaded with
# RECORDS records of 100 bytes; then node 3 is SIGKILLed, its data dir
# deleted, and it is started again with the seeds. Prints the time from
# that start to every shard's replica on it being up to date (a voter of
# every shard under its new id, no learner left, and its applied index at
# least node 1's commit index read just before), the bytes it received, the transfer
# rate against this disk's sequential write bandwidth measured in the same
# run (dd, O_DIRECT). Node 3 is wiped twice: first with no client load (the
# rebuild alone), then with YCSB B through node 1 (which proxies to the
# leaders: `aerie bench --hosts` needs every node up) running for BENCH_SECS
# during the rebuild, beside the same workload for BENCH_SECS before it.
#
#   bash benches/rebuild.sh [records]          (default 1000000)
#   PERF_OUT=/tmp/rebuild.perf bash benches/rebuild.sh   (perf record -a -g
#   of the idle rebuild for PERF_SECS, default 4)
set -euo pipefail
RECORDS=${1:-1000000}
BENCH_SECS=${BENCH_SECS:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d); echo "work dir: $WORK (kept when KEEP=1)"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin aerie >/dev/null
AERIE="$ROOT/target/release/aerie"
HOSTS=127.0.0.1:3290,127.0.0.1:3292,127.0.0.1:3294

echo "== disk: sequential write bandwidth (dd, 512 MiB, O_DIRECT)"
DD=$(dd if=/dev/zero of="$WORK/dd" bs=8M count=64 oflag=direct conv=fdatasync 2>&1 | tail -1)
rm -f "$WORK/dd"; echo "$DD"
DD_BYTES_PER_SEC=$(python3 -c "import re,sys; m=re.search(r'([0-9.]+) s, ', sys.argv[1]); print(int(512*2**20/float(m.group(1))))" "$DD")

start_node() { # index, seeds
  AERIE_DATA_DIR="$WORK/a$1" AERIE_PORT=329$(($1 * 2 - 2)) AERIE_FABRIC_PORT=329$(($1 * 2 - 1)) \
    AERIE_METRICS_PORT=0 AERIE_SEEDS=$2 "$AERIE" node 2>>"$WORK/a$1.log" &
  PIDS+=($!)
}
complete() {
  "$AERIE" cluster status --host 127.0.0.1:3290 2>/dev/null | grep -q "every shard has its replication factor (3)"
}
start_node 1 ""; sleep 1.5; start_node 2 127.0.0.1:3291; start_node 3 127.0.0.1:3291
for _ in $(seq 300); do complete && break; sleep 0.2; done
complete || { echo "the cluster did not form; logs in $WORK"; exit 1; }
sleep 3  # placement settles leaders on their preferred voters

echo "== loading $RECORDS records of 100 B"
"$AERIE" bench --hosts $HOSTS --workload insert --keys "$RECORDS" --connections 64 --duration-secs 900 | tail -3
echo "== YCSB B before the wipe, ${BENCH_SECS} s"
"$AERIE" bench --host 127.0.0.1:3290 --workload b --keys "$RECORDS" --connections 32 --duration-secs "$BENCH_SECS" | tail -4

wipe_and_start() { # a label for the output
  OLD=$("$AERIE" info --host 127.0.0.1:3294 node | tail -1)
  kill -9 "${PIDS[2]}"; wait "${PIDS[2]}" 2>/dev/null || true
  unset 'PIDS[2]'; PIDS=("${PIDS[@]}")
  rm -rf "$WORK/a3"
  T0=$(date +%s.%N)
  start_node 3 127.0.0.1:3291
  echo "== node 3 ($OLD) wiped and started again: $1"
}
wait_rebuilt() {
python3 - "$AERIE" "$T0" "$WORK/a3" "$DD_BYTES_PER_SEC" <<'EOF'
import socket, struct, sys, time, os
aerie, t0, data, dd = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
conns = {}
def recv_exact(sock, n):
    out = b""
    while len(out) < n:
        more = sock.recv(n - len(out))
        if not more:
            raise OSError("the node closed the connection")
        out += more
    return out
def info(port, name):
    """One info request over a kept connection (the wire's type-1 frame:
    version 2, type 1, 48-bit length): polling through `aerie info`
    processes took a tenth of the two cores from the rebuild."""
    try:
        if port not in conns:
            conns[port] = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock, body = conns[port], (name + "\n").encode()
        sock.sendall(struct.pack(">Q", (2 << 56) | (1 << 48) | len(body)) + body)
        length = struct.unpack(">Q", recv_exact(sock, 8))[0] & ((1 << 48) - 1)
        line = recv_exact(sock, length).decode().strip().split("\n")[-1]
        return line.split("\t", 1)[1] if "\t" in line else ""
    except OSError:
        conns.pop(port, None)
        return ""
def shards(answer):
    """shard -> {field: value} of a cluster-status answer."""
    out = {}
    for part in answer.split(";"):
        if part.startswith("shard="):
            fields = dict(kv.split("=", 1) for kv in part.split(":") if "=" in kv)
            out[fields["shard"]] = fields
    return out
deadline = time.time() + 600
while time.time() < deadline:
    try:
        new = info(3294, "node")
        # Node 1's view first (the voters; its commit index), then node 3's
        # applied index, read after: node 3 is up to date once it applied
        # every shard at least that far, as a voter, with no learner left.
        seen = shards(info(3290, "cluster-status"))
        mine = shards(info(3294, "cluster-status"))
        up = new and seen and all(
            new in s["voters"].split(",") and s["learners"] == "-"
            and int(mine.get(k, {}).get("applied", 0)) >= int(s["commit"])
            for k, s in seen.items())
        if up:
            took = time.time() - t0
            size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(os.path.join(data, "engine")) for f in fs)
            print(f"rebuilt as {new}: a voter of every shard, applied to its commit index, {took:.2f} s after the start")
            print(f"engine bytes on the new node: {size / 2**20:.1f} MiB; {size / took / 2**20:.1f} MiB/s over the whole rebuild "
                  f"= {100 * size / took / dd:.1f} % of the disk's sequential write bandwidth ({dd / 2**20:.0f} MiB/s)")
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.05)
print("not rebuilt within 600 s"); sys.exit(1)
EOF
}

wipe_and_start "no client load"
if [ -n "${PERF_OUT:-}" ]; then  # a system-wide profile of the idle rebuild
  perf record -a -g -F 999 -o "$PERF_OUT" -- sleep "${PERF_SECS:-4}" 2>/dev/null &
  PERF_PID=$!
fi
wait_rebuilt
[ -z "${PERF_PID:-}" ] || wait "$PERF_PID"
sleep 3  # placement settles leaders on their preferred voters
wipe_and_start "YCSB B through node 1 during the rebuild, ${BENCH_SECS} s"
"$AERIE" bench --host 127.0.0.1:3290 --workload b --keys "$RECORDS" --connections 32 --duration-secs "$BENCH_SECS" >"$WORK/during.txt" 2>&1 &
BENCH=$!
wait_rebuilt
wait $BENCH || true
tail -4 "$WORK/during.txt"
