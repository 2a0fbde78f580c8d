# test_bench_student.sh: the student serving benchmark's parts work (functional checks, no
# timings: benchmarks are not tests), and the PyTorch twin builds the same student networks.
#  - parity of the student sizes fmnist-s (the served one), fmnist-m and fmnist-xs between
#    tests/torch_unet.py and ours:
#    every parameter's name and shape (torch_unet.py --names against `msd-nn info`, exact), and
#    the forward FLOPs per image (torch_unet_bench.py counts them with hooks on its modules,
#    bench_unet --flops analytically, docs/UNET.md section 8): relative difference at most
#    1e-4 (both sides print 6 significant digits);
#  - bench/torch_unet_bench.py --config SPEC --only fwd_b1:R,fwd_bN:R prints those metrics with
#    "config":"SPEC", and --batch N gives fwd_bN, as bench_unet's options do; bad --batch,
#    --config and --only values exit non-zero with a message naming them;
#  - tools/bench-student (tiny: one pair, batches 2 and 3, fmnist-xs) prints, for both sides,
#    latency_b1, throughput_best and best_batch (one of the swept batches), and the two ratio
#    lines with min <= value <= max, each (one pair) ours / torch of the side lines, within
#    1% relative (the printed sides are rounded).
# Needs /usr/bin/python3 with torch (Debian python3-torch): a skip without it.
. "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
TOP=${MSD_TOP:-$(cd "$(dirname "$0")/.." && pwd)}
variant=release; [ "${MSD_TEST_VARIANT:-}" = san ] && variant=san
BENCH=${MSD_BENCH_UNET:-$TOP/build/$variant/bench/bench_unet}
if ! [ -x "$PY" ] || ! "$PY" -c 'import torch' 2>/dev/null; then
    t_skip bench_student "$PY has no torch (Debian python3-torch)"
    t_end; exit
fi
if ! [ -x "$BENCH" ]; then
    t_fail bench_student "$BENCH is missing (make all builds it)"
    t_end; exit
fi
T=$T_TMP

# metric value from JSON lines on stdin: jv METRIC [BENCH]
jv() { "$PY" -c '
import json, sys
for line in sys.stdin:
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("metric") == sys.argv[1] and (len(sys.argv) < 3 or r.get("bench") == sys.argv[2]):
        print(r["value"], r.get("config", "-")); break' "$@"; }

for cfg in fmnist-s fmnist-m fmnist-xs; do
    "$BIN/msd-nn" info --config "$cfg" | grep -v '^#' | sort >"$T/ours.names" 2>&1
    timeout 120 "$PY" "$TOP/tests/torch_unet.py" --names "$cfg" | sort >"$T/torch.names" 2>&1
    n=$(wc -l <"$T/ours.names")
    if [ "$n" -gt 100 ] && cmp -s "$T/ours.names" "$T/torch.names"; then t_ok "$cfg: $n parameter names and shapes, ours = PyTorch twin"
    else t_fail "$cfg names" "ours ($n lines) and tests/torch_unet.py --names differ: $(diff "$T/ours.names" "$T/torch.names" | head -n 4 | tr '\n' ' ')"; fi

    "$BENCH" --flops --config "$cfg" >"$T/flops" 2>&1
    timeout 120 "$PY" "$TOP/bench/torch_unet_bench.py" --config "$cfg" --only fwd_b1:1,fwd_b3:1 >"$T/torch" 2>&1
    ours=$(jv fwd_gflop_per_image <"$T/flops" | cut -d' ' -f1)
    g3=$(jv fwd_gflops_b3 torch_unet <"$T/torch"); i3=$(jv fwd_images_per_s_b3 torch_unet <"$T/torch")
    if "$PY" -c 'import sys; o, g, i = map(float, sys.argv[1:4]); sys.exit(0 if abs(g / i - o) <= 1e-4 * o else 1)' \
        "${ours:-0}" "${g3%% *}" "${i3%% *}" 2>/dev/null; then
        t_ok "$cfg: forward FLOPs per image, ours $ours GFLOP = PyTorch twin's hook count"
    else t_fail "$cfg flops" "ours '$ours' GFLOP per image, PyTorch '${g3%% *}' GFLOP/s / '${i3%% *}' images/s (tolerance 1e-4 relative)"; fi
    for m in fwd_b1 fwd_b3; do
        got=$(jv "$m" torch_unet <"$T/torch")
        if [ -n "$got" ] && [ "${got#* }" = "$cfg" ]; then t_ok "torch_unet_bench --config $cfg: $m with config $cfg"
        else t_fail "torch $m $cfg" "no $m line carrying config $cfg: $(head -c 300 "$T/torch")"; fi
    done
done
got=$("$BENCH" --config fmnist-xs --only fwd_b256 --batch 3 --reps 1 | jv fwd_b3 unet)
if [ -n "$got" ] && [ "${got#* }" = fmnist-xs ]; then t_ok "bench_unet --config fmnist-xs --batch 3: fwd_b3 with config"
else t_fail "ours fwd_b3" "bench_unet printed no fwd_b3 line with config fmnist-xs ('$got')"; fi
got=$(timeout 120 "$PY" "$TOP/bench/torch_unet_bench.py" --config fmnist-xs --only fwd_b1 --batch 2 --reps 1 | jv fwd_b2 torch_unet)
if [ -n "$got" ] && [ "${got#* }" = fmnist-xs ]; then t_ok "torch_unet_bench --config fmnist-xs --only fwd_b1 --batch 2: fwd_b2 with config"
else t_fail "torch fwd_b2" "torch_unet_bench printed no fwd_b2 line with config fmnist-xs ('$got')"; fi

for bad in "--batch 0" "--batch x" "--config fmnist-nope" "--config in=3,res=8" "--only fwd_b0" "--only fwd_b1:0"; do
    # shellcheck disable=SC2086
    timeout 60 "$PY" "$TOP/bench/torch_unet_bench.py" $bad >"$T/bad" 2>&1
    rc=$?
    if [ "$rc" -eq 0 ] || [ "$rc" -ge 124 ]; then
        t_fail "torch_unet_bench $bad" "exit status $rc (0: accepted; 124: ran on, timed out)"
    elif grep -qF -- "torch_unet_bench: $bad" "$T/bad" && ! grep -q Traceback "$T/bad"; then
        t_ok "torch_unet_bench $bad: refused, named"
    else t_fail "torch_unet_bench $bad" "no message 'torch_unet_bench: $bad...' (or a traceback): $(tail -n 2 "$T/bad")"; fi
done

timeout 200 "$TOP/tools/bench-student" --pairs 1 --batches 2,3 --configs fmnist-xs --bench "$BENCH" >"$T/student" 2>&1
rc=$?
"$PY" - "$T/student" <<'EOF' >"$T/check" 2>&1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def one(bench, metric):
    m = [r for r in rows if r.get("bench") == bench and r.get("metric") == metric and r.get("config") == "fmnist-xs"]
    assert len(m) == 1, "%s %s: %d lines" % (bench, metric, len(m))
    return m[0]
for b in ("student_serve", "student_serve_torch"):
    assert one(b, "latency_b1")["value"] > 0 and one(b, "latency_b1")["unit"] == "ms", b
    assert one(b, "throughput_best")["value"] > 0, b
    assert one(b, "best_batch")["value"] in (2, 3), "%s best_batch %s" % (b, one(b, "best_batch")["value"])
for m in ("latency_b1", "throughput_best"):
    r = one("ratio", m + "_ours_over_torch")
    assert 0 < r["min"] <= r["value"] <= r["max"] and r["pairs"] == 1, r
    q = one("student_serve", m)["value"] / one("student_serve_torch", m)["value"]  # one pair: the ratio of the sides
    assert abs(r["value"] - q) <= 1e-2 * q + 1e-4, "%s: ratio %s, ours/torch %s" % (m, r["value"], q)
pair = [r for r in rows if r.get("bench") == "student_serve_pair"]
assert len(pair) == 1 and pair[0]["ours_best_batch"] in (2, 3), pair
EOF
if [ "$rc" -eq 0 ] && [ ! -s "$T/check" ]; then t_ok "tools/bench-student (1 pair, batches 2,3): sides, best batch and ratio lines"
else t_fail bench_student "exit $rc; $(tail -n 3 "$T/check") $(tail -n 3 "$T/student")"; fi
t_end
