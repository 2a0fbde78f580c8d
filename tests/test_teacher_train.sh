#!/usr/bin/env bash
# test_teacher_train.sh: stage 0 end to end through pipelines/train_teacher.pipe with a small
# UNet on Fashion-MNIST: the loss falls, metrics are JSON lines, checkpoints and PNG grids
# appear; a teacher killed with SIGKILL after a checkpoint stops the pipeline, and the restart
# resumes there and logs exactly (bitwise) the losses of an uninterrupted run; msd-sample
# turns the checkpoint into images (safetensors and PNG folder) that msd-eval fid reads; msd-nn
# export keeps the EMA weights, which sample the same images and start a new run (--init); bad
# msd-sample arguments are errors. (Bad BATCH/SAMPLE requests: test_teacher_peers.c.)
. "$(dirname "$0")/lib.sh"
cd "$T_TMP"
t_need_fmnist train
export OPENBLAS_NUM_THREADS=1
# a small UNet and light settings: the suite also runs under ASan on 2 busy cores
net=in=1,res=28,ch=4,mult=1-1,blocks=1,attn=none,classes=10
small=(--set net=$net --set batch=8 --set lr=2e-3 --set warmup=5 --set log_every=1 --set grid_steps=2
       --set grid_per_class=2 --set threads=1 --set seed=7 --set data=fmnist:test)
CLS="$MSD_TOP/models/fmnist_classifier.safetensors"

# A: 40 uninterrupted steps
t_check "40 training steps through train_teacher.pipe" \
    "$BIN/msdpipe" up train_teacher "${small[@]}" --set run="$T_TMP/a" --set steps=40 --set ckpt_every=10 \
    --set grid_every=20 2>a.log
t_check "the teacher finished" grep -q 'finished 40 steps' a.log
t_check "metrics: 40 JSON lines, steps 1..40, with loss, images/s and time left" python3 - "$T_TMP/a/metrics.jsonl" <<'EOF'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
sys.exit(not ([x["step"] for x in r] == list(range(1, 41)) and all("images_per_s" in x and "eta_s" in x for x in r)))
EOF
read -r l0 l1 < <(python3 -c "
import json, sys
r = [json.loads(l)['loss'] for l in open('$T_TMP/a/metrics.jsonl')]
print(sum(r[:5]) / 5, sum(r[-5:]) / 5)")
t_check "the loss falls (mean of the first 5 steps $l0, of the last 5 $l1)" awk -v a="$l0" -v b="$l1" 'BEGIN{exit !(b < 0.85 * a)}'
t_check "the checkpoint exists" test -s "$T_TMP/a/teacher.safetensors"
png() { [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]; }
t_check "PNG grids at steps 20 and 40" png "$T_TMP/a/grids/grid-0000020.png"
t_check "the grid of step 40" png "$T_TMP/a/grids/grid-0000040.png"

# B: killed with SIGKILL at step 20, after its checkpoint there, then resumed to step 40
# (steps only bounds the run: the learning rate does not depend on it). The kill must land
# before step 40 however loaded the machine is, so the teacher is held at step 20 rather than
# raced: B's msdpipe is a copy in a folder whose msd-teacher is a wrapper that makes the
# temporary file of the step-20 grid (grid-0000020.png.tmp.PID: PID is its own, which exec
# keeps) a FIFO, so the teacher's open of it blocks until the kill (its heartbeats go on
# meanwhile: the launcher does not take it for dead). The kill waits for the step-20
# checkpoint's log line.
hold=$T_TMP/hold
mkdir -p "$hold" "$T_TMP/b/grids"
cp "$BIN/msdpipe" "$hold/"   # msdpipe starts the msd-* programs beside its own binary
ln -s "$BIN/msd-data" "$hold/msd-data"
printf '#!/bin/sh\nmkfifo "%s/b/grids/grid-0000020.png.tmp.$$" && exec "%s/msd-teacher" "$@"\n' "$T_TMP" "$BIN" \
    >"$hold/msd-teacher"
chmod +x "$hold/msd-teacher"
"$hold/msdpipe" up "$MSD_TOP/pipelines/train_teacher.pipe" "${small[@]}" --set run="$T_TMP/b" --set steps=1000 \
    --set ckpt_every=10 --set grid_every=20 2>b-kill.log &
lpid=$!
trap 'kill $lpid 2>/dev/null; rm -rf "$T_TMP"' EXIT
trap 'exit 143' TERM
t_wait_for 120 grep -q "teacher\] INFO checkpoint .* at step 20 " b-kill.log
tpid=$(pgrep -f -- "--name teacher --control ipc://.*/train_teacher-$lpid/" | head -n 1)
if [ -n "$tpid" ]; then kill -9 "$tpid"; fi
t_wait_for 20 bash -c "! kill -0 $lpid 2>/dev/null" || kill "$lpid"
wait "$lpid"; rc=$?
t_check "the launcher exits non-zero after the teacher is killed" test "$rc" -ne 0
t_check "the launcher names the killed teacher" grep -qE "teacher \(pid $tpid\).*(signal 9|SIGKILL|killed)" b-kill.log
rm -f "$T_TMP"/b/grids/grid-0000020.png.tmp.*
t_check "a restart runs to step 40" \
    "$BIN/msdpipe" up train_teacher "${small[@]}" --set run="$T_TMP/b" --set steps=40 --set ckpt_every=10 \
    --set grid_every=0 2>b-resume.log
t_check "it resumed from the step-20 checkpoint" grep -qE 'teacher\] INFO resuming at step 20 of 40' b-resume.log
t_check "the resumed run's losses equal the uninterrupted run's, bitwise" python3 - "$T_TMP/a/metrics.jsonl" "$T_TMP/b/metrics.jsonl" <<'EOF'
import json, sys
def last(path):  # the last line of each step (a killed run's steps are redone)
    d = {}
    for l in open(path):
        r = json.loads(l)
        d[r["step"]] = (r["loss"], r["grad_norm"], r["nimg"])
    return d
a, b = last(sys.argv[1]), last(sys.argv[2])
bad = [s for s in range(1, 41) if a.get(s) != b.get(s)]
if bad:
    print("steps that differ:", bad[:5], [(a.get(s), b.get(s)) for s in bad[:3]])
sys.exit(1 if bad else 0)
EOF

# msd-sample on A's checkpoint, judged by msd-eval
ck="$T_TMP/a/teacher.safetensors"
t_check "msd-sample writes 10 images to safetensors and a grid" \
    bash -c "'$BIN/msd-sample' --ckpt '$ck' --n 10 --steps 2 --seed 5 --threads 1 --out gen.safetensors --grid gen.png >sample.json 2>sample.log"
t_check "msd-sample reports NFE 3" grep -q '"nfe": 3' sample.json
t_check "the sample grid is a PNG" png gen.png
t_check "msd-sample writes a PNG folder of 10 images" \
    bash -c "'$BIN/msd-sample' --ckpt '$ck' --n 10 --steps 2 --seed 5 --threads 1 --batch 3 --out genpng >/dev/null 2>>sample.log"
t_check "10 PNG files in class folders" test "$(find genpng -name '*.png' | wc -l)" -eq 10 -a -d genpng/9
# the images do not depend on --batch (tools/msd-sample: image i's noise is keyed by (seed, i)):
# --batch 1 and --batch 3 (batches of 3, 3, 3, 1) against all 10 in one batch, within
# |d| <= 1e-3 max|want| (batched matrix products may round differently; noise keyed by the
# batch instead would change the images entirely)
for b in 1 3; do
    "$BIN/msd-sample" --ckpt "$ck" --n 10 --steps 2 --seed 5 --threads 1 --batch $b --out gen-b$b.safetensors \
        >/dev/null 2>>sample.log
    "$BIN/msd-nn" compare gen-b$b.safetensors gen.safetensors --atol-frac 1e-3 --rtol 0 >cmp-b$b.log 2>&1; rc=$?
    echo "--batch $b vs one batch: $(tail -n 1 cmp-b$b.log)"
    t_check "--batch $b samples the same images as one batch of 10" test "$rc" -eq 0
done
if [ -f "$CLS" ]; then
    "$BIN/msd-eval" fid --images gen.safetensors --classifier "$CLS" --threads 1 >fid.json 2>fid.log
    t_check "msd-eval fid reads the samples (FID and conditional accuracy)" grep -qE '"fid": [0-9.]+.*"cond_acc": [0-9.]+.*"n_labelled": 10' fid.json
    echo "samples of a 40-step teacher: $(cat fid.json)"
else
    t_fail "msd-eval fid reads the samples" "$CLS missing (it is committed)"
fi
# msd-nn export: the EMA weights alone sample the same images; --init trains on from them
t_check "msd-nn export writes the EMA weights of A's checkpoint" "$BIN/msd-nn" export --weights "$ck" --out export.safetensors
t_check "the export is smaller than the checkpoint (no raw weights, no moments)" \
    test "$(stat -c %s export.safetensors)" -lt "$(($(stat -c %s "$ck") / 3))"
"$BIN/msd-sample" --ckpt export.safetensors --n 10 --steps 2 --seed 5 --threads 1 --out genx.safetensors >/dev/null 2>>sample.log
t_check "the export samples exactly the checkpoint's images" cmp gen.safetensors genx.safetensors
t_check "a new run with --init from the export" \
    "$BIN/msdpipe" up train_teacher "${small[@]}" --set run="$T_TMP/c" --set steps=3 --set grid_every=0 \
    --set init="$T_TMP/export.safetensors" 2>c.log
t_check "it says where it started" grep -q "initialised from $T_TMP/export.safetensors" c.log
read -r la lc < <(python3 -c "
import json
a = [json.loads(l)['loss'] for l in open('$T_TMP/a/metrics.jsonl')][:3]
c = [json.loads(l)['loss'] for l in open('$T_TMP/c/metrics.jsonl')][:3]
print(sum(a) / 3, sum(c) / 3)")
t_check "its first losses ($lc) are below a random start's on the same batches ($la)" awk -v a="$la" -v c="$lc" 'BEGIN{exit !(c < 0.9 * a)}'
"$BIN/msdpipe" up train_teacher "${small[@]}" --set run="$T_TMP/d" --set steps=3 --set init="$T_TMP/nope.safetensors" 2>d.log; rcd=$?
t_check "--init with a missing file fails, naming it" test "$rcd" -ne 0 -a -n "$(grep 'ERROR --init:.*nope.safetensors' d.log)"

"$BIN/msd-sample" --ckpt "$T_TMP/nothing.safetensors" --n 4 --out x.safetensors 2>err1.log; rc1=$?
t_check "a missing checkpoint is an error naming it" test "$rc1" -eq 1 -a -n "$(grep nothing.safetensors err1.log)"
"$BIN/msd-sample" --ckpt "$ck" --n 4 --classes 3,12 --out x.safetensors 2>err2.log; rc2=$?
t_check "a class the network lacks is a usage error" test "$rc2" -eq 2 -a -n "$(grep 'class 12' err2.log)"
"$BIN/msd-sample" --ckpt "$ck" --n 0 --out x.safetensors 2>err3.log; rc3=$?
t_check "--n 0 is a usage error" test "$rc3" -eq 2
t_end
