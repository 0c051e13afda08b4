#!/usr/bin/env bash
# A fault campaign: aerie-faults once per seed, every nemesis and every
# workload, then one summary summed from the runs' report.json.
#
#   bash benches/faults_campaign.sh FIRST_SEED LAST_SEED [NODES] [SECS]
#
# Seeds alternate between NODES (default 3) and 5 nodes when NODES is "mix".
# MULTI=1 passes --multi (kills, pauses and partitions of several nodes).
# Needs libfaketime (apt-get install libfaketime). Work dirs stay under
# $OUT (default /tmp/aerie-campaign); exit 1 if any run failed.
set -euo pipefail
cd "$(dirname "$0")/.."
first=${1:?first seed}; last=${2:?last seed}; nodes=${3:-mix}; secs=${4:-60}
out=${OUT:-/tmp/aerie-campaign}
nemeses=kill,pause,partition,delay,wipe,throttle,oneway,clock,disk
cargo build --release -q -p aerie --features fault-injection -p aerie-faults
mkdir -p "$out"
failed=0
for seed in $(seq "$first" "$last"); do
    n=$nodes
    if [ "$nodes" = mix ]; then n=$(( seed % 3 == 0 ? 5 : 3 )); fi
    dir="$out/seed-$seed"; rm -rf "$dir"
    if target/release/aerie-faults --nodes "$n" --duration-secs "$secs" --nemesis "$nemeses" \
        --workload register,counter,set --clients 4 --seed "$seed" --work-dir "$dir" ${MULTI:+--multi} \
        > "$out/seed-$seed.txt" 2>&1; then
        echo "seed $seed ($n nodes): PASSED"
    else
        echo "seed $seed ($n nodes): FAILED, see $out/seed-$seed.txt"; failed=1
    fi
done
python3 - "$out" "$first" "$last" <<'PY'
import json, sys, collections
out, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs, faults, kinds, ops = 0, 0, collections.Counter(), collections.Counter()
skipped = 0
dips = collections.defaultdict(list)
for seed in range(first, last + 1):
    try:
        r = json.load(open(f"{out}/seed-{seed}/report.json"))
    except OSError:
        continue
    runs += 1
    faults += len(r["schedule"])
    kinds.update(f["kind"] for f in r["schedule"])
    skipped += sum("skipped" in e["what"] for e in r["events"])
    per_s = r["ok_per_second"]
    median = sorted(per_s)[len(per_s) // 2] if per_s else 0
    for f in r["schedule"]:
        lo, hi = f["at_ms"] // 1000, (f["at_ms"] + f["hold_ms"]) // 1000 + 2
        dips[f["kind"]].append(sum(1 for v in per_s[lo:hi + 1] if v < median / 2))
    for call, c in r["counts"].items():
        for k, v in c.items():
            ops[f"{call} {k}"] += v
    for w in ("counter", "set"):
        if r.get(w):
            for k in ("acknowledged", "failed", "indeterminate"):
                ops[f"{w} {k}"] += r[w][k]
print(f"{runs} runs, {faults} faults scheduled ({skipped} skipped: no leader known): {dict(kinds)}")
print("seconds below half the run's median register ops/s, per fault, from its start to 2 s past its heal:")
for kind in sorted(dips):
    d = sorted(dips[kind])
    print(f"  {kind}: {len(d)} faults, median {d[len(d) // 2]} s, max {d[-1]} s")
for k in sorted(ops):
    print(f"  {k}: {ops[k]}")
PY
exit $failed
