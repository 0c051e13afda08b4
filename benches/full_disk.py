"""A node on a full disk, by hand with the official Python client: writes
20 KB records until the node refuses one (out of space), reads every
acknowledged record back, deletes them all, and times how long until writes
are accepted again.

    mkdir -p /tmp/full && mount -t tmpfs -o size=200m tmpfs /tmp/full
    AERIE_DATA_DIR=/tmp/full/d AERIE_PORT=3301 AERIE_FABRIC_PORT=0 AERIE_METRICS_PORT=0 \\
        target/release/aerie node &
    python3 benches/full_disk.py 3301
"""
import sys
import time

import aerospike
from aerospike import exception as ex

RECORD = 20_000


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    c = aerospike.client({"hosts": [("127.0.0.1", port)]}).connect()
    acked = []
    started = time.time()
    for i in range(20000):
        try:
            c.put(("test", "full", i), {"b": bytearray([i % 251]) * RECORD})
            acked.append(i)
        except ex.AerospikeError as e:
            print(f"write {i} -> {type(e).__name__} ({e.code}) after {len(acked)} "
                  f"acknowledged in {time.time() - started:.1f} s")
            break
    bad = sum(1 for i in acked
              if c.get(("test", "full", i))[2]["b"] != bytearray([i % 251]) * RECORD)
    print(f"read back {len(acked)}, {bad} wrong")
    for i in acked:
        c.remove(("test", "full", i))
    deleted = time.time()
    while True:
        try:
            c.put(("test", "full", "after"), {"b": 1})
            break
        except ex.AerospikeError:
            if time.time() - deleted > 300:
                sys.exit("writes still refused 300 s after deleting everything")
            time.sleep(0.5)
    print(f"writes accepted again {time.time() - deleted:.1f} s after deleting every record")


if __name__ == "__main__":
    main()
