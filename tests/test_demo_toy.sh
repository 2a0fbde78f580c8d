# test_demo_toy.sh: the `make demo-toy` path (tools/demo-toy) end to end, reduced through the
# demo's knobs (20 steps at batch 64, 10 critic warm-up updates, 50 judged samples per class)
# so it runs in seconds: K = 4 students, and checks what the README promises the demo leaves
# in its run folder: the partition file with 4 groups covering the 8 classes once each, the 4
# student checkpoints (at the trained step), the served requests of step 3, samples.png (a PNG
# of the documented 512x512, common/mog.h), samples.csv and eval.json (msd-mog-eval's verdict,
# parsed, and the summary line the demo prints from it). The quality of the students is not
# judged here (20 steps): test_mog_headline.sh does that.
. "$(dirname "$0")/lib.sh"
top=${MSD_TOP:-$(cd "$(dirname "$0")/.." && pwd)}
BIN=$(cd "$BIN" && pwd)
export BIN
run="$T_TMP/demo"
K=4 STEPS=20 SAMPLES=50
t0=$(date +%s%N)
RUN="$run" K=$K STEPS=$STEPS BATCH=64 WARMUP=10 SAMPLES=$SAMPLES timeout 300 "$top/tools/demo-toy" >"$T_TMP/demo.out" 2>&1; rc=$?
el=$(( ($(date +%s%N) - t0) / 1000000 ))
if [ $rc -eq 0 ] && grep -q "^demo: done" "$T_TMP/demo.out"; then t_ok "tools/demo-toy K=$K STEPS=$STEPS ran to the end ($el ms)"
else t_fail demo_runs "rc=$rc: $(tail -n 20 "$T_TMP/demo.out")"; fi

check_py() { # NAME SCRIPT ARGS...: a python check; it prints why it fails
    local name=$1; shift
    local out
    if out=$(python3 - "$@" 2>&1); then t_ok "$name"; else t_fail "$name" "$(echo "$out" | tail -n 1)"; fi
}

check_py "partition.txt: 4 groups, every class of mog8.mix in exactly one" \
    "$run/partition.txt" "$top/pipelines/mog8.mix" $K <<'EOF'
import sys
part, mix, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
classes = [l.split()[1] for l in open(mix) if l.startswith("class ")]
lines = [l.strip() for l in open(part) if l.strip() and not l.startswith("#")]
assert lines[0] == "partition %d" % k, "first line %r, want 'partition %d'" % (lines[0], k)
groups = {}
for l in lines[1:]:
    idx, names = l.split(":", 1)
    groups[int(idx)] = names.split()
assert sorted(groups) == list(range(k)), "groups %s, want 0..%d" % (sorted(groups), k - 1)
assert all(groups[g] for g in groups), "an empty group: %s" % groups
owned = sorted(c for g in groups.values() for c in g)
assert owned == sorted(classes), "classes owned %s, want each of %s once" % (owned, classes)
EOF

check_py "ckpt/: the 4 student checkpoints, each a safetensors file at step $STEPS" "$run/ckpt" $K $STEPS <<'EOF'
import json, os, struct, sys
d, k, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for i in range(k):
    path = os.path.join(d, "student.%d.safetensors" % i)
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        meta = json.loads(f.read(n)).get("__metadata__", {})
    assert meta.get("toynet.role") == "student", "%s: role %r" % (path, meta.get("toynet.role"))
    assert meta.get("msd.step") == steps, "%s: step %r, want %s" % (path, meta.get("msd.step"), steps)
# besides the checkpoints only their writers' lock files (docs/PIPELINES.md, "Run folders")
want = ["student.%d.safetensors%s" % (i, s) for i in range(k) for s in ("", ".lock")]
extra = [f for f in os.listdir(d) if f.startswith("student.") and f not in want]
assert not extra, "unexpected student files: %s" % extra
EOF

# step 3 serves 'north 3', 'east 2', 'southwest' through the router
got=$(sed -nE 's/^ +stdout: ([a-z]+),.*/\1/p' "$T_TMP/demo.out" | tr '\n' ' ')
if [ "$got" = "north north north east east southwest " ]; then t_ok "step 3 served 3 north, 2 east, 1 southwest samples in order"
else t_fail demo_serve "served classes: '$got'"; fi

check_py "samples.png is a PNG of 512x512" "$run/samples.png" <<'EOF'
import struct, sys, zlib
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"\x89PNG\r\n\x1a\n", "no PNG signature"
n, typ = struct.unpack(">I4s", b[8:16])
assert typ == b"IHDR" and n == 13, "first chunk %r" % typ
w, h = struct.unpack(">II", b[16:24])
assert (w, h) == (512, 512), "size %dx%d, want 512x512" % (w, h)
assert zlib.crc32(b[12:29]) == struct.unpack(">I", b[29:33])[0], "IHDR CRC"
assert b[-12:-4] == b"\x00\x00\x00\x00IEND", "the file does not end with an IEND chunk"
EOF

n=$((8 * SAMPLES))
check_py "samples.csv holds $n samples and eval.json judges all $n (8 classes, 48 modes)" \
    "$run/samples.csv" "$run/eval.json" $SAMPLES "$T_TMP/demo.out" <<'EOF'
import json, math, re, sys
csv, ev, per, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rows = [l.split(",") for l in open(csv) if l.strip()]
assert len(rows) == 8 * per, "%d CSV rows, want %d" % (len(rows), 8 * per)
d = json.load(open(ev))
assert d["n"] == 8 * per and d["classes"] == 8 and d["modes"] == 48, "n %s classes %s modes %s" % (d["n"], d["classes"], d["modes"])
assert [c["n"] for c in d["per_class"]] == [per] * 8, "per-class counts %s" % [c["n"] for c in d["per_class"]]
for key in ("energy", "sliced_w2", "mode_coverage", "on_support"):
    assert math.isfinite(d[key]) and d[key] >= 0, "%s = %r" % (key, d[key])
m = re.search(r"energy distance ([0-9.]+), sliced W2 ([0-9.]+), modes covered (\d+) of (\d+)", open(out).read())
assert m, "the demo printed no verdict line"
assert (m.group(1), m.group(2)) == ("%.4f" % d["energy"], "%.4f" % d["sliced_w2"]), "printed %s, eval.json %s" % (m.groups(), d)
assert int(m.group(3)) == d["modes_covered"] and int(m.group(4)) == 48
EOF
t_end
