"""The official Python client (aerospike 19.x, the C client) against a running
node. Not in CI (it needs `pip install aerospike`); run by hand:

    cargo run --release -- node &
    python3 tests/python_client.py 127.0.0.1:3000
"""
import sys

import aerospike

host, port = sys.argv[1].rsplit(":", 1) if len(sys.argv) > 1 else ("127.0.0.1", "3000")
client = aerospike.client({"hosts": [(host, int(port))]}).connect()
key = ("test", "demo", "python-k1")
client.put(key, {"a": 1, "s": "x"})
assert client.get(key)[2] == {"a": 1, "s": "x"}
client.increment(key, "a", 5)
assert client.get(key)[2]["a"] == 6
assert client.exists(key)[1]["gen"] == 2
records = client.batch_read([key, ("test", "demo", "python-missing")]).batch_records
assert [r.result for r in records] == [0, 2]
assert any(r[2] == {"a": 6, "s": "x"} for r in client.query("test", "demo").results())
client.remove(key)
try:
    client.get(key)
    raise AssertionError("record still there after remove")
except aerospike.exception.RecordNotFound:
    pass
client.close()
print("python client: ok")
