"""Failover time of an Aerie cluster: three `aerie node` processes on
127.0.0.1 (as the README's cluster section starts them), a writer on one key
of shard 0, and ROUNDS times: SIGKILL the node leading shard 0, time from the
kill to the first acknowledged write of that key, restart the node, wait for
the shard to have three voters again. Prints p50 / p99 / max.

    cargo build --release
    pip install aerospike
    python3 benches/failover.py [--rounds 20] [--aerie target/release/aerie]
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import aerospike
from aerospike import exception as ex

PARTITIONS = 4096


def info(aerie, port, name):
    out = subprocess.run([aerie, "info", "--host", f"127.0.0.1:{port}", name],
                         capture_output=True, text=True, timeout=10)
    return out.stdout.strip().split("\t", 1)[-1]


def shard0(aerie, port):
    """(leader name, voter count) of shard 0 as `port` sees it."""
    for part in info(aerie, port, "cluster-status").split(";"):
        if part.startswith("shard=0:"):
            fields = dict(kv.split("=", 1) for kv in part.split(":"))
            voters = [] if fields["voters"] == "-" else fields["voters"].split(",")
            return fields["leader"], len(voters)
    return "-", 0


def start(aerie, root, i, seed_fabric):
    port, fabric = 3100 + 10 * i, 3101 + 10 * i
    env = dict(os.environ, AERIE_DATA_DIR=f"{root}/d{i}", AERIE_PORT=str(port),
               AERIE_FABRIC_PORT=str(fabric), AERIE_METRICS_PORT="0", RUST_LOG="warn")
    if i > 0:
        env["AERIE_SEEDS"] = f"127.0.0.1:{seed_fabric}"
    log = open(f"{root}/n{i}.log", "a")
    proc = subprocess.Popen([aerie, "node"], env=env, stdout=log, stderr=log)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if info(aerie, port, "node"):
                return proc, port
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.05)
    sys.exit(f"node {i} did not start")


def wait_full(aerie, ports):
    deadline = time.time() + 60
    while time.time() < deadline:
        leader, voters = shard0(aerie, ports[0])
        if leader != "-" and voters == 3:
            return leader
        time.sleep(0.05)
    sys.exit("shard 0 did not get three voters back")


def key_in_shard0(shards):
    per = PARTITIONS // shards
    for i in range(100000):
        d = aerospike.calc_digest("test", "fo", f"k{i}")
        if ((d[0] | d[1] << 8) & 0xFFF) < per:
            return ("test", "fo", f"k{i}")
    sys.exit("no key in shard 0")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--aerie", default="target/release/aerie")
    parser.add_argument("--retries", type=int, default=0, help="the write policy's max_retries")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="aerie-failover-")
    procs, ports = [], []
    for i in range(3):
        proc, port = start(args.aerie, root, i, 3101)
        procs.append(proc)
        ports.append(port)
    names = [info(args.aerie, p, "node") for p in ports]
    wait_full(args.aerie, ports)
    client = aerospike.client({"hosts": [("127.0.0.1", p) for p in ports],
                               "policies": {"write": {"total_timeout": 200, "max_retries": args.retries}}}).connect()
    key = key_in_shard0(8)
    client.put(key, {"n": 0})
    times = []
    for _ in range(args.rounds):
        leader = wait_full(args.aerie, ports)
        victim = names.index(leader)
        time.sleep(1.0)  # let leases and maps settle
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait()
        killed = time.monotonic()
        while True:
            try:
                client.put(key, {"n": 1})
                break
            except ex.AerospikeError:
                time.sleep(0.005)
        times.append(time.monotonic() - killed)
        procs[victim], _ = start(args.aerie, root, victim, 3101)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=30)
    shutil.rmtree(root, ignore_errors=True)
    times.sort()
    pct = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    print(f"failover over {len(times)} kills: p50 {pct(0.5) * 1000:.0f} ms, "
          f"p99 {pct(0.99) * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
