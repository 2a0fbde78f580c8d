#!/usr/bin/env bash
# test_image_run_lock.sh: one run folder, one run, for the image stages (docs/DISTILL.md,
# docs/PIPELINES.md "Run folders and resuming"), on train_stage2.pipe with tiny UNets (K = 2,
# batch 4, a teacher of 3 steps of train_teacher.pipe on the Fashion-MNIST test images, as
# tests/test_distill_stage2.sh sets them up).
# A: a stage-2 run is live on a folder; a second run on the same folder refuses at start (the
#    students and critics hold FILE.lock), naming the folder and a pid of A, and reads and
#    writes nothing; A trains on until stopped (SIGTERM: it checkpoints on the stop), and A
#    resumed with its settings finishes.
# B: a resume with another lr (students), critic lr (critics), seed and batch (both) is refused,
#    naming each setting with both values, the checkpoints untouched; with
#    allow_changed_settings=1 it resumes with a warning and the checkpoints record the new
#    settings. A checkpoint without recorded settings (an older one) resumes, saying so.
. "$(dirname "$0")/lib.sh"
cd "$T_TMP"
t_need_fmnist
export OPENBLAS_NUM_THREADS=1
net=in=1,res=28,ch=4,mult=1-1,blocks=1,attn=none,classes=10
t_check "a tiny teacher (3 steps of train_teacher.pipe)" t_tiny_teacher t10 "$net"
T10=$T_TMP/t10/teacher.safetensors
run=$T_TMP/a
mkdir -p "$run"
printf 'partition 2\n0: tshirt trouser pullover dress coat\n1: 5 6 7 8 9\n' >"$run/partition.txt"
small=(--set K=2 --set teacher="$T10" --set data=fmnist:test --set batch=4 --set ttur=2 --set warmup=2
       --set lr=1e-3 --set critic_lr=1e-3 --set ckpt_every=2 --set log_every=1 --set grid_every=0
       --set grid_per_class=1 --set teacher_threads=1 --set teacher_max_batch=4 --set seed=5 --set run="$run")
ck="$run/ckpt"
step_of() { grep -oaE '"msd.step":"[0-9]+"' "$1" | grep -oE '[0-9]+'; }

# A: live (many steps) until both students and both critics have checkpointed
"$BIN/msdpipe" up train_stage2 "${small[@]}" --set steps=100000 2>a.log &
apid=$!
t_wait_for 300 bash -c "test -f $ck/student.0.safetensors -a -f $ck/student.1.safetensors -a -f $ck/critic.0.safetensors -a -f $ck/critic.1.safetensors || ! kill -0 $apid"
t_check "A is live and has checkpointed" kill -0 "$apid"
# the second run: A's settings (only the step target differs), so only the locks can stop it
"$BIN/msdpipe" up train_stage2 "${small[@]}" --set steps=4 2>second.log; rc=$?
t_check "a second run on a live folder exits non-zero ($rc)" test "$rc" -ne 0
t_check "... a student or critic names the folder and the holder's pid" \
    grep -qE "\[(student|critic)\.[01]\] ERROR run folder $ck is in use by another run: process [0-9]+ holds $ck/(student|critic)\.[01]\.safetensors\.lock" second.log
holder=$(grep -oE "in use by another run: process [0-9]+" second.log | head -n 1 | grep -oE '[0-9]+$')
t_check "... and that pid is a process of run A" \
    bash -c "tr '\\0' ' ' </proc/${holder:-0}/cmdline | grep -q 'train_stage2-$apid/'"
t_check "... which read and wrote no checkpoint" \
    bash -c "! grep -qE '(resumed|initialised) from|INFO checkpoint ' second.log"
t_check "... and A is still running" kill -0 "$apid"
kill -TERM "$apid"
t_wait_for 120 bash -c "! kill -0 $apid 2>/dev/null" || kill -9 "$apid"
wait "$apid"; rc=$?
t_check "A stops on SIGTERM (143) without an error" \
    bash -c "[ $rc -eq 143 ] && grep -q 'pipeline train_stage2 stopped' a.log && ! grep -q ERROR a.log"
t_check "A's checkpoints record A's settings" \
    bash -c "for f in $ck/{student,critic}.[01].safetensors; do grep -qa '\"run.seed\":\"5\"' \$f || exit 1; done"
s0=$(step_of "$ck/student.0.safetensors"); s1=$(step_of "$ck/student.1.safetensors")
last=$(( ${s0:-0} > ${s1:-0} ? ${s0:-0} : ${s1:-0} ))
t_check "A's students checkpointed (steps ${s0:-none} and ${s1:-none})" test "${s0:-0}" -gt 0 -a "${s1:-0}" -gt 0
end=$((last + 1))
t_check "A resumed with its settings finishes (step $end)" \
    "$BIN/msdpipe" up train_stage2 "${small[@]}" --set steps=$end 2>a-end.log
t_check "... from its checkpoints" \
    bash -c "grep -q 'student.0\] INFO resuming at step $s0 of $end' a-end.log && grep -q 'student.1\] INFO resuming at step $s1 of $end' a-end.log &&
             test \$(grep -c 'student\.[01]\] INFO finished $end steps' a-end.log) -eq 2"

# B: other settings. Sums of the checkpoints before, to see that the refused runs leave them be.
sums() { cat "$ck"/*.safetensors "$ck"/*.prev | md5sum; }   # not the *.lock files (each run's pid)
before=$(sums)
# the generator's lr: only the students differ (each refuses; the critics wait for them)
"$BIN/msdpipe" up train_stage2 "${small[@]}" --set steps=$((end + 1)) --set lr=2e-3 2>lr.log; rc=$?
t_check "a resume with another lr exits non-zero ($rc)" test "$rc" -ne 0
t_check "... a student names it with both values" \
    grep -qE "\[student\.[01]\] ERROR resuming: $ck/student\.[01]\.safetensors was written with other settings: lr 0\.001 in the checkpoint, 0\.002 now\. .*--set allow_changed_settings=1" lr.log
# the critics' lr: only the critics differ
"$BIN/msdpipe" up train_stage2 "${small[@]}" --set steps=$((end + 1)) --set critic_lr=2e-3 2>clr.log; rc=$?
t_check "a resume with another critic lr exits non-zero, a critic naming it ($rc)" \
    bash -c "[ $rc -ne 0 ] && grep -qE '\[critic\.[01]\] ERROR resuming: $ck/critic\.[01]\.safetensors was written with other settings: lr 0\.001 in the checkpoint, 0\.002 now' clr.log"
# seed and batch: both roles differ (the critic's cap is the batch); the first to refuse stops the rest
"$BIN/msdpipe" up train_stage2 "${small[@]}" --set steps=$((end + 1)) --set seed=6 --set batch=2 2>seed.log; rc=$?
t_check "a resume with another seed and batch exits non-zero ($rc)" test "$rc" -ne 0
t_check "... a process names both with their values" \
    grep -qE "\[(student|critic)\.[01]\] ERROR resuming: $ck/(student|critic)\.[01]\.safetensors was written with other settings: seed 5 in the checkpoint, 6 now; (batch|cap) 4 in the checkpoint, 2 now" seed.log
t_check "... the checkpoints are untouched" test "$(sums)" = "$before"

# the override: another seed and lr resume with a warning; the checkpoints then record them
t_check "with allow_changed_settings=1 a resume with another seed and lr finishes" \
    "$BIN/msdpipe" up train_stage2 "${small[@]}" --set steps=$((end + 1)) --set seed=6 --set lr=2e-3 \
    --set allow_changed_settings=1 2>allow.log
t_check "... the students warn, naming the changes" \
    test "$(grep -cF "WARN $ck/student.0.safetensors: resuming with changed settings (--allow-changed-settings): seed 5 in the checkpoint, 6 now; lr 0.001 in the checkpoint, 0.002 now" allow.log)" -eq 1
t_check "... and the critics" \
    grep -qF "[critic.1] WARN $ck/critic.1.safetensors: resuming with changed settings (--allow-changed-settings): seed 5 in the checkpoint, 6 now" allow.log
t_check "... resuming from the checkpoints" grep -q "student.1\] INFO resuming at step $end of $((end + 1))" allow.log
t_check "... which now record seed 6 and lr 0.002" bash -c "grep -qa '\"run.seed\":\"6\"' $ck/critic.0.safetensors &&
    grep -qa '\"run.seed\":\"6\"' $ck/student.0.safetensors && grep -qa '\"run.lr\":\"0.002\"' $ck/student.0.safetensors"

# an older checkpoint records no settings: "run." renamed in place (same length) in every file
for f in "$ck"/*.safetensors "$ck"/*.prev; do LC_ALL=C sed -i 's/"run\./"old./g' "$f"; done
t_check "checkpoints without settings (older ones) resume" \
    "$BIN/msdpipe" up train_stage2 "${small[@]}" --set steps=$((end + 2)) --set seed=6 --set lr=2e-3 2>old.log
t_check "... saying that the settings are not compared" \
    grep -qF "[student.0] INFO $ck/student.0.safetensors records no run settings (an older checkpoint): the settings are not compared" old.log
t_check "... and from then on they record them" grep -qa '"run.seed":"6"' "$ck/student.0.safetensors"
t_check "no sanitizer report in any log" bash -c "$(declare -f t_log_clean); T_SAN_PATTERN='$T_SAN_PATTERN'; for f in *.log; do t_log_clean \$f || exit 1; done"
t_end
