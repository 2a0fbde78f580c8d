# test_run_lock.sh: one run folder, one run (docs/PIPELINES.md, "Run folders and resuming").
# A: a stage-2 run (K=2, tiny) is live on a folder; a second run with the same settings on the
#    same folder refuses at start, naming the folder and a pid of A, and exits non-zero; A
#    trains on until stopped; its checkpoints hold A's settings, and A resumed from them
#    finishes fine.
# B: a resume with another seed is refused, naming the setting with both values; with
#    --set allow_changed_settings=1 it proceeds (with a warning).
# A SIGKILLed writer leaves no lock that blocks (flock dies with the process): B resumes right
# after run A's students were killed with SIGKILL.
# C: the same for the teacher (train_teacher, a tiny UNet; skipped without Fashion-MNIST): a
#    second run on a live folder refuses; a resume with another seed and batch names both and
#    is refused; the override resumes.
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
# all four: the toy's students checkpoint every ckpt_every steps only (not on a stop), and
# under a loaded machine student.0 may reach its first checkpoint well after student.1
t_wait_for 120 bash -c "test -f $run/ckpt/student.0.safetensors -a -f $run/ckpt/student.1.safetensors -a -f $run/ckpt/critic.0.safetensors -a -f $run/ckpt/critic.1.safetensors || ! kill -0 $apid"
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
t_wait_for 60 bash -c "! kill -0 $apid 2>/dev/null" || kill -9 "$apid"
wait "$apid"; rc=$?
t_check "run A stops on SIGTERM (143) without an error"     bash -c "[ $rc -eq 143 ] && grep -q 'pipeline mog_stage2 stopped' a.log && ! grep -q ERROR a.log"
t_check "A's checkpoints record A's settings" \
    grep -qa '"run.seed":"1"' "$run/ckpt/student.0.safetensors" "$run/ckpt/critic.0.safetensors"
step=$(grep -oaE '"msd.step":"[0-9]+"' "$run/ckpt/student.0.safetensors" | grep -oE '[0-9]+')
t_check "A's student checkpoint is at a step of A (a multiple of 10)" test "${step:-0}" -gt 0 -a $(( ${step:-1} % 10 )) -eq 0
# the students checkpoint on their own: student.1 may be a checkpoint ahead of student.0
step1=$(grep -oaE '"msd.step":"[0-9]+"' "$run/ckpt/student.1.safetensors" | grep -oE '[0-9]+')
last=$(( ${step1:-0} > ${step:-0} ? ${step1:-0} : ${step:-0} ))
t_check "run A resumed with its settings finishes fine" \
    "$BIN/msdpipe" up mog_stage2 "${small[@]}" --set steps=$((last + 10)) --set ckpt_every=10 2>a-end.log
t_check "... from its checkpoint" grep -qE "student.0\] INFO resuming at step $step of $((last + 10))" a-end.log
step=$((last + 10))

# B: another seed is refused, naming seed with both values, for the students and the critics.
# The first process that refuses stops the pipeline, and that may stop the others before they
# have looked at their checkpoints; so each role is also checked alone: the other role's
# checkpoints are made to agree with the new seed (rewritten in place, same length) and put
# back afterwards.
reseed() { # FROM TO FILE...: the seed recorded in FILE's header
    local from=$1 to=$2 f; shift 2
    for f; do LC_ALL=C sed -i "s/\"run\.seed\":\"$from\"/\"run.seed\":\"$to\"/" "$f"; done
}
"$BIN/msdpipe" up mog_stage2 "${small[@]}" --set steps=$((step + 10)) --set seed=5 2>seed.log; rc=$?
t_check "a resume with another seed exits non-zero" test "$rc" -ne 0
t_check "... a process names the setting with both values" \
    grep -qE "\[(student|critic)\.[01]\] ERROR resuming: $run/ckpt/(student|critic)\.[01]\.safetensors was written with other settings: seed 1 in the checkpoint, 5 now" seed.log
t_check "... and it says how to resume anyway" grep -qF -- "--set allow_changed_settings=1" seed.log
reseed 1 5 "$run"/ckpt/critic.[01].safetensors
"$BIN/msdpipe" up mog_stage2 "${small[@]}" --set steps=$((step + 10)) --set seed=5 2>seed-s.log; rc=$?
reseed 5 1 "$run"/ckpt/critic.[01].safetensors
# (either student may refuse first and so stop the other before it has read its checkpoint)
t_check "... students alone: exits non-zero, a student names the setting with both values" \
    bash -c "[ $rc -ne 0 ] && grep -qE '\[student\.([01])\] ERROR resuming: $run/ckpt/student\.\1\.safetensors was written with other settings: seed 1 in the checkpoint, 5 now' seed-s.log"
reseed 1 5 "$run"/ckpt/student.[01].safetensors
"$BIN/msdpipe" up mog_stage2 "${small[@]}" --set steps=$((step + 10)) --set seed=5 2>seed-c.log; rc=$?
reseed 5 1 "$run"/ckpt/student.[01].safetensors
t_check "... critics alone: exits non-zero, a critic names it too" \
    bash -c "[ $rc -ne 0 ] && grep -qE '\[critic\.([01])\] ERROR resuming: $run/ckpt/critic\.\1\.safetensors was written with other settings: seed 1 in the checkpoint, 5 now' seed-c.log"
t_check "... the checkpoints are untouched" \
    bash -c "grep -qa '\"run.seed\":\"1\"' '$run'/ckpt/{student,critic}.[01].safetensors && ! grep -qa '\"run.seed\":\"5\"' '$run'/ckpt/{student,critic}.[01].safetensors"

# A's settings with a killed run in between: SIGKILL both students of a live run (the launcher
# reports it and stops), then the override resumes at once: no lock outlives its process
# (the pids come from the launcher's own record, MSDPIPE_VERBOSE's "started NAME: pid N"; the
# students are killed once both train, so they hold their locks; a run that does not get there,
# or does not stop, is a named failure and is killed: never an unbounded wait)
MSDPIPE_VERBOSE=1 "$BIN/msdpipe" up mog_stage2 "${small[@]}" --set steps=100000 --set ckpt_every=10 2>killed.log &
kpid=$!
killed=0
if t_wait_for 300 bash -c "grep -q 'student.0\] INFO step' killed.log && grep -q 'student.1\] INFO step' killed.log"; then
    for s in 0 1; do
        spid=$(grep -oE "started student\.$s: pid [0-9]+" killed.log | tail -n 1 | grep -oE '[0-9]+$')
        [ -n "$spid" ] && kill -9 "$spid" && killed=$((killed + 1))
    done
fi
t_check "killed run: both students trained and were SIGKILLed" test "$killed" -eq 2
if ! t_wait_for 60 bash -c "! kill -0 $kpid 2>/dev/null"; then
    t_fail "killed run stops" "the launcher did not exit within 60 s of its students' SIGKILL; its log begins: $(grep -v 'INFO step' killed.log | head -n 30)"
    kill -9 "$kpid"
fi
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

# C: the teacher
fm="${MSD_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}/train-labels-idx1-ubyte"
if [ ! -e "$fm.gz" ] && [ ! -e "$fm" ]; then
    t_skip_missing_data "teacher: lock and settings" "Fashion-MNIST not installed (Debian package dataset-fashion-mnist)"
    t_end; exit
fi
export OPENBLAS_NUM_THREADS=1
trun=$T_TMP/teacher
tsmall=(--set net=in=1,res=28,ch=4,mult=1-1,blocks=1,attn=none,classes=10 --set batch=8 --set warmup=5
        --set log_every=1 --set grid_every=0 --set grid_steps=1 --set grid_per_class=1 --set threads=1 --set seed=7
        --set data=fmnist:test --set run="$trun" --run-dir "$rd")
"$BIN/msdpipe" up train_teacher "${tsmall[@]}" --set steps=100000 --set ckpt_every=0 2>t-a.log &
tpid=$!
t_wait_for 120 grep -qs '"step": 1,' "$trun/metrics.jsonl"
"$BIN/msdpipe" up train_teacher "${tsmall[@]}" --set steps=2 2>t-second.log; rc=$?
t_check "teacher: a second run on a live folder exits non-zero" test "$rc" -ne 0
t_check "... naming the folder and the holder's pid" \
    grep -qE "\[teacher\] ERROR run folder $trun is in use by another run: process [0-9]+ holds $trun/teacher.safetensors.lock" t-second.log
t_check "... while the first run goes on" kill -0 "$tpid"
kill -TERM "$tpid"    # the teacher checkpoints on the stop
t_wait_for 60 bash -c "! kill -0 $tpid 2>/dev/null" || kill -9 "$tpid"
wait "$tpid"
tstep=$(grep -oaE '"msd.step":"[0-9]+"' "$trun/teacher.safetensors" | grep -oE '[0-9]+')
t_check "teacher: run A checkpointed on the stop" test "${tstep:-0}" -ge 1
"$BIN/msdpipe" up train_teacher "${tsmall[@]}" --set steps=$((tstep + 1)) --set seed=8 --set batch=4 2>t-seed.log; rc=$?
t_check "teacher: a resume with another seed and batch exits non-zero" test "$rc" -ne 0
t_check "... naming both with their values" grep -qF "[teacher] ERROR resuming from --ckpt: $trun/teacher.safetensors was written with other settings: seed 7 in the checkpoint, 8 now; batch 8 in the checkpoint, 4 now" t-seed.log
t_check "teacher: with allow_changed_settings=1 it resumes" "$BIN/msdpipe" up train_teacher "${tsmall[@]}" \
    --set steps=$((tstep + 1)) --set seed=8 --set allow_changed_settings=1 2>t-allow.log
t_check "... from the checkpoint" grep -q "teacher\] INFO resuming at step $tstep of $((tstep + 1))" t-allow.log
t_end
