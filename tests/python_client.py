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

# The reliability issue's observations, checked with this client.
from aerospike import exception as ex
from aerospike_helpers import expressions as exp

try:
    client.put(("test", "demo", "python-big"), {"b": bytearray(20 << 20)})
    raise AssertionError("a 20 MiB record was accepted")
except ex.RecordTooBig:
    pass
client.put(("test", "demo", "python-small"), {"a": 1})
assert client.get(("test", "demo", "python-small"))[2] == {"a": 1}

send_key = {"key": aerospike.POLICY_KEY_SEND}
for i in range(5):
    client.put(("test", "python-keys", "user-%d" % i), {"i": i}, policy=send_key)
want = ["user-%d" % i for i in range(5)]
assert sorted(r[0][2] for r in client.scan("test", "python-keys").results()) == want
assert sorted(r[0][2] for r in client.query("test", "python-keys").results()) == want
row = client.batch_read([("test", "python-keys", "user-1")]).batch_records[0]
assert row.key[2] == "user-1", row.key

x = ("test", "demo", "python-x")
client.put(x, {"x": 1})
only_if_big = {"expressions": exp.GT(exp.IntBin("x"), 5).compile()}
for attempt in (lambda: client.put(x, {"x": 100}, policy=only_if_big),
                lambda: client.get(x, policy=only_if_big)):
    try:
        attempt()
        raise AssertionError("a filter expression was ignored")
    except ex.AerospikeError as e:
        assert e.code == 16, e
assert client.get(x)[2] == {"x": 1}
client.close()
print("python client: ok")
