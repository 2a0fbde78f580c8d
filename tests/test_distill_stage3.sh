#!/usr/bin/env bash
# test_distill_stage3.sh: stage 3 (ADM: DM plus the GAN term) on images end to end through
# pipelines/train_stage3.pipe, after 2 steps of stage 2, with the tiny UNets and K = 2 of
# test_distill_stage2.sh. Checks: a stage-3 run resumes from the stage-2 checkpoints (the
# generator's raw weights; the critic with a fresh GAN head), its critics' checkpoints carry the
# head and its AdamW moments, its metrics carry finite GAN losses and logits; a student killed
# with SIGKILL after a checkpoint resumes to exactly (bytewise) the checkpoints of the
# uninterrupted run; a missing stage-2 checkpoint stops the stage naming it; the GAN term reaches
# the generator (generator GAN weight 0 gives another generator than weight 0.5).
. "$(dirname "$0")/lib.sh"
cd "$T_TMP"
t_need_fmnist
export OPENBLAS_NUM_THREADS=1
net=in=1,res=28,ch=4,mult=1-1,blocks=1,attn=none,classes=10
t_check "a tiny teacher (3 steps of train_teacher.pipe)" t_tiny_teacher t10 "$net"
T10=$T_TMP/t10/teacher.safetensors
mkdir -p s2 nos2
printf 'partition 2\n0: tshirt trouser pullover dress coat\n1: 5 6 7 8 9\n' | tee s2/partition.txt >nos2/partition.txt
# as stage 2's test: teacher_max_batch = batch (one request per teacher call) for exact resumes
common=(--set K=2 --set teacher="$T10" --set data=fmnist:test --set batch=4 --set ttur=2 --set lr=1e-3
        --set critic_lr=1e-3 --set log_every=1 --set grid_per_class=2 --set teacher_threads=1
        --set teacher_max_batch=4 --set seed=5)
t_check "stage 2: 2 steps" "$BIN/msdpipe" up train_stage2 "${common[@]}" --set steps=2 --set warmup=2 \
    --set ckpt_every=2 --set grid_every=2 --set run="$T_TMP/s2" 2>s2.log
small=("${common[@]}" --set stage2="$T_TMP/s2" --set steps=4 --set ckpt_every=2 --set grid_every=2
       --set gan_gen=0.5 --set gan_critic=0.5)

# a missing stage-2 checkpoint: a message naming it, status 2, nothing trained
"$BIN/msdpipe" up train_stage3 "${small[@]}" --set stage2="$T_TMP/nos2" --set run="$T_TMP/x" 2>nos2.log
t_check "without the stage-2 checkpoints a process stops, naming its file" \
    grep -qE "(student|critic)\.[01]\] ERROR --init $T_TMP/nos2/ckpt/(student|critic)\.[01]\.safetensors: (No such file|cannot open)" nos2.log
t_check "... with status 2" grep -qE "process (student|critic)\.[01] \(pid [0-9]*\) exited with status 2" nos2.log
t_check "... no checkpoint was written" test ! -e "$T_TMP/x/ckpt/student.0.safetensors"
cp -r s2 s2c && rm s2c/ckpt/critic.1.safetensors
"$BIN/msdpipe" up train_stage3 "${small[@]}" --set stage2="$T_TMP/s2c" --set run="$T_TMP/x2" 2>nos2c.log
t_check "without critic.1's stage-2 checkpoint critic.1 stops, naming it" \
    grep -q "critic\.1\] ERROR --init $T_TMP/s2c/ckpt/critic\.1\.safetensors: cannot open" nos2c.log

# gan_critic=0 gives critics without a head: the students' FAKE_TRAIN with real images is refused
# (a run folder of its own: one that the runs above used could hold what their processes left)
"$BIN/msdpipe" up train_stage3 "${small[@]}" --set gan_critic=0 --set run="$T_TMP/x3" 2>nohead.log
if grep -qE "student\.[01]\] ERROR .*critic.*FAKE_TRAIN with \"real\": this critic has no GAN head \(--gan-weight 0\)" nohead.log; then
    t_ok "a critic without a GAN head refuses the ADM student's real images, saying why"
else t_fail "a critic without a GAN head refuses the ADM student's real images, saying why" \
    "no student error naming the refusal; the run's errors and warnings: $(grep -E 'ERROR|WARN' nohead.log | head -n 12)"; fi

# A: uninterrupted, 4 steps
t_check "A: K=2 students, 4 steps of stage 3" "$BIN/msdpipe" up train_stage3 "${small[@]}" --set run="$T_TMP/a" 2>a.log
t_check "A: both students finished" test "$(grep -c 'student\.[01]\] INFO finished 4 steps' a.log)" -eq 2
t_check "A: the after step wrote the all-class grid of the stage-3 students" \
    bash -c "grep -q 'after step grid done' a.log && [ \"\$(head -c 4 a/grid.png | od -An -tx1 | tr -d ' \n')\" = 89504e47 ]"
t_check "A: the generators start from stage 2's raw weights" \
    test "$(grep -c "student\.[01]\] INFO generator initialised from $T_TMP/s2/ckpt/student\.[01]\.safetensors (raw weights)" a.log)" -eq 2
t_check "A: the critics start from stage 2's critics, with a GAN head" \
    test "$(grep -c "critic\.[01]\] INFO GAN head on the .* bottleneck" a.log)" -eq 2
# the checkpoints: tensor names and bytes straight from the safetensors files (no numpy here)
cat >st.py <<'EOF2'
import json, struct, sys
def read(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items()}
EOF2
t_check "A: the critics' checkpoints hold the GAN head, its AdamW moments and the UNet" python3 - a/ckpt <<'EOF2'
import sys; sys.path.insert(0, "."); import st
for k in (0, 1):
    t = st.read("%s/critic.%d.safetensors" % (sys.argv[1], k))
    head = [p + n for p in ("gan.", "gan.opt.m.", "gan.opt.v.") for n in ("norm0.weight", "norm0.bias", "conv.weight",
            "conv.bias", "norm1.weight", "norm1.bias", "out.weight", "out.bias")]
    missing = [n for n in head if n not in t]
    unet = [n for n in t if not n.startswith("gan.") and not n.startswith("opt.")]
    if missing or len(unet) < 10 or not any(v.strip(b"\0") for n, v in t.items() if n.startswith("gan.opt.v.")):
        print("critic.%d: missing %s, %d UNet tensors" % (k, missing[:3], len(unet))); sys.exit(1)
EOF2
t_check "A: metrics: steps 1..4 of each student with finite loss_gan_g, loss_gan_d > 0, logit_real, logit_fake" \
    python3 - a/metrics.jsonl <<'EOF2'
import json, math, sys
r = [json.loads(l) for l in open(sys.argv[1])]
ok = all(sorted(x["step"] for x in r if x["student"] == k) == list(range(1, 5)) for k in (0, 1)) and len(r) == 8
ok = ok and all(all(math.isfinite(x.get(f, math.nan)) for f in ("loss_dm", "loss_gan_g", "logit_real", "logit_fake"))
                and x.get("loss_gan_d", 0) > 0 and x["loss_fake"] > 0 for x in r)
if not ok: print(r[:2])
sys.exit(not ok)
EOF2
t_check "A: progress lines with the GAN losses" \
    test "$(grep -cE 'student\.[01]\] INFO step [0-9]+/4 .* loss_gan_g [0-9.]+  loss_gan_d [0-9.]+ .* s/step' a.log)" -eq 8
t_check "A: the stage-2 checkpoints are left as they were" cmp s2/ckpt/student.0.safetensors s2c/ckpt/student.0.safetensors

# Z: 0 steps: the untrained stage-3 networks are stage 2's raw generator and its critic, tolerance 0
t_check "Z: a stage-3 run of 0 steps" "$BIN/msdpipe" up train_stage3 "${small[@]}" --set steps=0 --set run="$T_TMP/z" 2>z.log
t_check "Z: the generators are stage 2's raw weights (not its EMA), the critics' UNets stage 2's critics" python3 - <<'EOF2'
import sys; sys.path.insert(0, "."); import st
for k in (0, 1):
    z, s = st.read("z/ckpt/student.%d.safetensors" % k), st.read("s2/ckpt/student.%d.safetensors" % k)
    w = [n for n in s if not n.startswith(("ema.", "opt."))]
    same, ema = sum(z[n] == s[n] for n in w), sum(z[n] == s["ema." + n] for n in w)
    zc, sc = st.read("z/ckpt/critic.%d.safetensors" % k), st.read("s2/ckpt/critic.%d.safetensors" % k)
    wc = [n for n in sc if not n.startswith(("ema.", "opt."))]
    samec = sum(zc[n] == sc[n] for n in wc)
    print("student.%d: %d of %d tensors equal to stage 2's weights, %d to its EMA; critic.%d: %d of %d" %
          (k, same, len(w), ema, k, samec, len(wc)))
    if same != len(w) or ema == len(w) or samec != len(wc): sys.exit(1)
EOF2

# W0: the same run with the generator's GAN weight 0: the GAN term must have changed the generator
t_check "W0: gan_gen=0" "$BIN/msdpipe" up train_stage3 "${small[@]}" --set gan_gen=0 --set run="$T_TMP/w0" 2>w0.log
t_check "W0: its generators differ from A's (gan_gen=0.5) in most weight tensors" python3 - <<'EOF2'
import sys; sys.path.insert(0, "."); import st
for k in (0, 1):
    a, w = st.read("a/ckpt/student.%d.safetensors" % k), st.read("w0/ckpt/student.%d.safetensors" % k)
    names = [n for n in a if not n.startswith(("ema.", "opt."))]
    diff = sum(a[n] != w[n] for n in names)
    print("student.%d: %d of %d weight tensors differ" % (k, diff, len(names)))
    if diff <= len(names) // 2: sys.exit(1)
EOF2

# WU: warmup= (for critics that start afresh, e.g. copies of the teacher): each critic takes W
# updates on the initial generator's samples before step 1, then TTUR's per step
t_check "WU: warmup=3, 1 step" "$BIN/msdpipe" up train_stage3 "${small[@]}" --set steps=1 --set warmup=3 \
    --set run="$T_TMP/wu" 2>wu.log
t_check "WU: each student warms its critic up with 3 updates" \
    test "$(grep -c 'student\.[01]\] INFO warming up the critic: 3 updates' wu.log)" -eq 2
t_check "WU: each critic's checkpoint is at update 5 (3 + TTUR 2)" \
    bash -c "grep -qa '\"msd.step\":\"5\"' wu/ckpt/critic.0.safetensors && grep -qa '\"msd.step\":\"5\"' wu/ckpt/critic.1.safetensors"

# B: student.0 killed with SIGKILL at step 2 after its checkpoint (held there: t_kill_held_student0
# in tests/lib.sh), then resumed to step 4
t_kill_held_student0 train_stage3 2 "$T_TMP/b" "data teacher critic eval" "${small[@]}"
# critic.0 a checkpoint ahead of its student (a kill between their saves; stage 2's test says
# more): A's step-4 critic.0, the step-2 one as .prev; the restart must roll back to it
mv b/ckpt/critic.0.safetensors b/ckpt/critic.0.safetensors.prev
cp a/ckpt/critic.0.safetensors b/ckpt/critic.0.safetensors
t_check "B: a restart runs to step 4" "$BIN/msdpipe" up train_stage3 "${small[@]}" --set run="$T_TMP/b" 2>b-resume.log
t_check "B: student.0 resumed at its step-2 checkpoint" grep -q "student.0\] INFO resuming at step 2 of 4" b-resume.log
t_check "B: ... and its critic, with its GAN head, from the checkpoint before" \
    grep -q "critic.0\] INFO resumed from .*b/ckpt/critic.0.safetensors.prev at update .* (with its GAN head)" b-resume.log
for f in student.0 critic.0 student.1 critic.1; do
    t_check "B ends with A's $f checkpoint, bytewise" cmp a/ckpt/$f.safetensors b/ckpt/$f.safetensors
done
t_check "no sanitizer report in any log" bash -c "$(declare -f t_log_clean); T_SAN_PATTERN='$T_SAN_PATTERN'; for f in *.log; do t_log_clean \$f || exit 1; done"
t_end
