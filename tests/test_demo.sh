# test_demo.sh: the README's `make demo` path (tools/demo) end to end: the committed student set
# (models/fmnist_students_k4) behind serve.pipe, the demo's ten prompts with 2 images each. It
# checks what the README promises: every prompt answered in order by the student that owns
# the class the prompt describes, a PNG per image and a grid per prompt in the output folder,
# the "demo: done" line, and clear refusals (no student set, a bad N). Needs the sentence
# encoder's model (make deps); without it the test is skipped as missing data.
. "$(dirname "$0")/lib.sh"
top=${MSD_TOP:-$(cd "$(dirname "$0")/.." && pwd)}
BIN=$(cd "$BIN" && pwd)
export BIN
cd "$T_TMP"
mdir=${MSD_MINILM_DIR:-${MSD_CACHE:-$HOME/.cache/msdpipe}/all-minilm-l6-v2}
if [ ! -e "$mdir/model.safetensors" ]; then
    t_skip_missing_data "tools/demo" "no sentence-encoder model at $mdir (make deps, or set MSD_MINILM_DIR)"
    t_end; exit
fi
set_dir=$top/models/fmnist_students_k4
t_check "the committed student set is there, with its manifest" test -f "$set_dir/manifest.json" -a -f "$set_dir/partition.txt"
out=$T_TMP/demo
t0=$(date +%s%N)
N=2 OUT="$out" timeout 120 "$top/tools/demo" >demo.out 2>&1; rc=$?
el=$(( ($(date +%s%N) - t0) / 1000000 ))
if [ $rc -eq 0 ] && grep -q "^demo: done" demo.out; then t_ok "tools/demo N=2 ran to the end ($el ms)"
else t_fail "tools/demo N=2 ran to the end" "rc=$rc: $(tail -n 20 demo.out)"; fi
t_check "it names the set: K = 4 students and the scores of its manifest" \
    grep -qE "K = 4 one-step students \([0-9,]+ parameters each\), .*judged at N = [0-9,]+: FID [0-9.]+, accuracy [0-9.]+%" demo.out

# the answers: line i answers prompt i, with the class the prompt describes and its owner
t_check "the answers, in the order of the prompts, by the owning students" python3 - "$out/answers.txt" "$set_dir/partition.txt" "$out" <<'EOF'
import os, re, sys
answers = [l.split() for l in open(sys.argv[1])]
want = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
owner = {}
for l in open(sys.argv[2]):
    m = re.match(r"\s*(\d+):\s*(.*)", l)
    if m:
        for c in m.group(2).split():
            owner[c] = int(m.group(1))
assert len(answers) == len(want), "%d answers, want %d" % (len(answers), len(want))
for i, (a, cls) in enumerate(zip(answers, want)):
    assert a[0] == cls, "answer %d is %r, want class %s" % (i + 1, " ".join(a), cls)
    assert a[1] == "student.%d" % owner[cls], "answer %d from %s, want student.%d" % (i + 1, a[1], owner[cls])
    pngs = [p for p in a[3:] if p.endswith(".png")]
    names = ["%06d-%s-%d.png" % (i + 1, cls, k) for k in (0, 1)] + ["%06d-%s-grid.png" % (i + 1, cls)]
    assert [os.path.basename(p) for p in pngs] == names, "answer %d names %s, want %s" % (i + 1, pngs, names)
    for p in pngs:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", "%s is not a PNG" % p
EOF
t_check "the output folder holds the 10 x (2 images + 1 grid) PNG files" test "$(ls "$out" | grep -c '\.png$')" -eq 30

# refusals
STUDENTS="$T_TMP/none" OUT="$out" "$top/tools/demo" >none.out 2>&1; rc=$?
t_check "no student set: exit 1, naming the folder" \
    bash -c "[ $rc -eq 1 ] && grep -q 'demo: no student set in $T_TMP/none (manifest.json missing' none.out"
N=0 OUT="$out" "$top/tools/demo" >n0.out 2>&1; rc=$?
t_check "N=0: exit 2, saying what N must be" bash -c "[ $rc -eq 2 ] && grep -q 'N=0: images per prompt must be 1..99' n0.out"
printf 'a pair of sneakers 1\nsomething about tax law\n' >bad.prompts
PROMPTS=bad.prompts OUT="$out" "$top/tools/demo" >bad.out 2>&1; rc=$?
t_check "a prompt far from every class: the answer says so, the demo exits 1 pointing at the log" \
    bash -c "[ $rc -eq 1 ] && grep -q 'answer: error: .*no class: the best match is' bad.out && grep -q 'serving exited with status 1' bad.out"
t_end
