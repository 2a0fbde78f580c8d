# test_run_lock.sh: one run folder, one run (docs/PIPELINES.md, "Run folders and resuming").
# A: a stage-2 run (K=2, tiny) is live on a folder; a second run with the same settings on the
#    same folder refuses at start, naming the folder and a pid of A, and exits non-zero; A
#    trains on until stopped; its checkpoints hold A's settings, and A resumed from them
#    finishes fine.
# B: a resume with another seed is refused, naming the setting with both values; with
#    --set allow_changed_settings=1 it proceeds (with a warning).
# A SIGKILLed writer leaves no lock that blocks (flock dies with the process): B resumes right
# after run A's students were killed with SIGKILL.
. "$(dirname "$0")/lib.sh"
cd "$T_TMP"
run=$T_TMP/run
rd=$T_TMP/rd
mkdir -m 700 "$rd"
small=(--set K=2 --set run="$run" --set net=mlp,width=32,depth=2 --set batch=64 --set warmup=5 --set ttur=2
       --set log_every=10 --run-dir "$rd")

t_check "partition K=2" "$BIN/msdpipe" up mog_partition --set K=2 --set run="$run" --run-dir "$rd" 2>partition.log

# A: long enough to still be running when the second run starts (it is stopped below)
"$BIN/msdpipe" up mog_stage2 "${small[@]}" --set steps=100000 --set ckpt_every=10 2>a.log &
apid=$!
t_wait_for 60 test -f "$run/ckpt/student.1.safetensors" -a -f "$run/ckpt/critic.1.safetensors"
t_check "run A is live and has checkpointed" kill -0 "$apid"

# the second run: same settings (only the step target differs), so only the lock can stop it
"$BIN/msdpipe" up mog_stage2 "${small[@]}" --set steps=30 --set ckpt_every=10 2>second.log; rc=$?
t_check "a second run on a live folder exits non-zero" test "$rc" -ne 0
t_check "... with a message naming the folder and the holder's pid" \
    grep -qE "ERROR run folder $run/ckpt is in use by another run: process [0-9]+ holds $run/ckpt/(student|critic)\.[01]\.safetensors\.lock" second.log
holder=$(grep -oE "in use by another run: process [0-9]+" second.log | head -n 1 | grep -oE '[0-9]+$')
t_check "... and that pid is a process of run A" \
    bash -c "tr '\\0' ' ' </proc/${holder:-0}/cmdline | grep -q 'mog_stage2-$apid/'"
t_check "... which is still running" kill -0 "$apid"

# stop A (SIGTERM: the launcher stops the pipeline and exits 143, as for any signal); its
# checkpoints are A's (seed 1, its step) and A, resumed with its settings, finishes fine
kill -TERM "$apid"
t_wait_for 30 bash -c "! kill -0 $apid 2>/dev/null"
wait "$apid"; rc=$?
t_check "run A stops on SIGTERM (143) without an error"     bash -c "[ $rc -eq 143 ] && grep -q 'pipeline mog_stage2 stopped' a.log && ! grep -q ERROR a.log"
t_check "A's checkpoints record A's settings" \
    grep -qa '"run.seed":"1"' "$run/ckpt/student.0.safetensors" "$run/ckpt/critic.0.safetensors"
step=$(grep -oaE '"msd.step":"[0-9]+"' "$run/ckpt/student.0.safetensors" | grep -oE '[0-9]+')
t_check "A's student checkpoint is at a step of A (a multiple of 10)" test "${step:-0}" -gt 0 -a $(( ${step:-1} % 10 )) -eq 0
t_check "run A resumed with its settings finishes fine" \
    "$BIN/msdpipe" up mog_stage2 "${small[@]}" --set steps=$((step + 10)) --set ckpt_every=10 2>a-end.log
t_check "... from its checkpoint" grep -qE "student.0\] INFO resuming at step $step of $((step + 10))" a-end.log
step=$((step + 10))

# B: another seed is refused, naming seed with both values, for the students and the critics
"$BIN/msdpipe" up mog_stage2 "${small[@]}" --set steps=$((step + 10)) --set seed=5 2>seed.log; rc=$?
t_check "a resume with another seed exits non-zero" test "$rc" -ne 0
t_check "... student.0 names the setting with both values" \
    grep -qF "[student.0] ERROR resuming: $run/ckpt/student.0.safetensors was written with other settings: seed 1 in the checkpoint, 5 now" seed.log
t_check "... critic.0 too" \
    grep -qF "[critic.0] ERROR resuming: $run/ckpt/critic.0.safetensors was written with other settings: seed 1 in the checkpoint, 5 now" seed.log
t_check "... and it says how to resume anyway" grep -qF -- "--set allow_changed_settings=1" seed.log
t_check "... the checkpoints are untouched" grep -qa '"run.seed":"1"' "$run/ckpt/student.0.safetensors"

# A's settings with a killed run in between: SIGKILL both students of a live run (the launcher
# reports it and stops), then the override resumes at once: no lock outlives its process
"$BIN/msdpipe" up mog_stage2 "${small[@]}" --set steps=100000 --set ckpt_every=10 2>killed.log &
kpid=$!
t_wait_for 60 bash -c "pgrep -f -- '--name student.1 --control ipc://.*/mog_stage2-$kpid/' >/dev/null"
for s in 0 1; do
    spid=$(pgrep -f -- "--name student.$s --control ipc://.*/mog_stage2-$kpid/" | head -n 1)
    [ -n "$spid" ] && kill -9 "$spid"
done
t_wait_for 30 bash -c "! kill -0 $kpid 2>/dev/null"
wait "$kpid"
t_check "the launcher reports the SIGKILLed students" \
    test "$(grep -cE 'student\.[01] \(pid [0-9]+\).*(signal 9|SIGKILL|killed)' killed.log)" -ge 1
t_check "the killed run's lock files are still there" test -f "$run/ckpt/student.0.safetensors.lock"
step=$(grep -oaE '"msd.step":"[0-9]+"' "$run/ckpt/student.0.safetensors" | grep -oE '[0-9]+')
"$BIN/msdpipe" up mog_stage2 "${small[@]}" --set steps=$((step + 20)) --set seed=5 --set allow_changed_settings=1 \
    2>allow.log; rc=$?
t_check "with allow_changed_settings=1 the resume proceeds (after a SIGKILLed run)" test "$rc" -eq 0
t_check "... warning about the changed seed" \
    grep -qF "[student.0] WARN $run/ckpt/student.0.safetensors: resuming with changed settings (--allow-changed-settings): seed 1 in the checkpoint, 5 now" allow.log
t_check "... and resuming from the checkpoint" grep -qE 'student.0\] INFO resuming at step [1-9][0-9]* of' allow.log
t_check "... its checkpoints now record seed 5" grep -qa '"run.seed":"5"' "$run/ckpt/student.0.safetensors"
t_end
