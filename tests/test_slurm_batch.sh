#!/usr/bin/env bash
# test_slurm_batch.sh: the batch script tools/slurm/mog_stage2.sbatch and the supervision of
# `msdpipe up --slurm` (docs/SCALE.md) against the private two-node cluster of
# tests/slurm-testbed (nodes n1 and n2 on this machine). Where the cluster cannot start (not
# root, slurm-wlm/munge missing, a daemon that does not come up) every check is counted as
# skipped with the testbed's reason, never passed. Settings: the toy's stage 2, K=2, 300 steps,
# checkpoints every 100, one CPU thread per process (the one-host reference on one core).
#  - sbatch of the batch script (K=2 on 2 nodes), waited for by polling squeue -j (bounded; the
#    testbed has no accounting): its output file says stage 2 finished, student.0 ran on n1 and
#    student.1 on n2 (steps with --nodelist), the job's ExitCode is 0:0, and the four final
#    checkpoints are byte for byte those of the one-host run;
#  - inside one allocation (salloc -N2), four runs of stage 2 with steps=100000, each hit once
#    student.1 logged step 20:
#    kill9: kill -9 of student.1's msd-student (on n2): the launcher names student.1 and node
#      n2 and exits 1;
#    int:   SIGINT to the launcher: it says it stops, exits 130;
#    term:  SIGSTOP of student.1's msd-student, then SIGTERM to the launcher (stop_timeout=2):
#      the stopped process does not answer STOP, so the launcher kills its srun and must cancel
#      the step (a killed srun leaves its step running); it says so and exits 143;
#    down:  `msdpipe down --run-dir` exits 0 and the launcher exits 143;
#    after each: no step of that launcher (squeue -s) and no process of the run (pgrep on the run
#    folder) within 30 s (polled: Slurm may list a finished step for a moment);
#  - restart=1 under --slurm: kill -9 of student.1's msd-student after its step 150 (checkpoint
#    at 100): the launcher restarts it as a new step (a second srun with the same step name),
#    student.1 resumes at step 100, the run finishes and the four final checkpoints are byte for
#    byte those of the one-host run (the toy is exact: tests/test_restart.sh).
# The testbed is stopped at the end whatever happens (trap). Every wait is bounded.
. "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
B="$(cd "$BIN" && pwd)"
M="$B/msdpipe"
SB="$here/../tools/slurm/mog_stage2.sbatch"
t_slurm_testbed 0 "sbatch of tools/slurm/mog_stage2.sbatch" "kill -9 of a process in a step" "SIGINT to the launcher" \
    "SIGTERM to the launcher with a stopped step" "msdpipe down" "restart=1 under --slurm"

run=$T_TMP/mog
RD=$T_TMP/rd
mkdir -p "$RD" && chmod 700 "$RD"
P=(--set batch=64 --set warmup=5 --set ttur=2 --set ckpt_every=100 --set log_every=10 --set net=mlp,width=64,depth=3)
S=(--set K=2 --set steps=300 "${P[@]}" --set ready_timeout=60 --set run="$run" --run-dir "$RD")
same_ckpts() { # DIR: the four final checkpoints equal the reference run's
    local f
    for f in student.0 student.1 critic.0 critic.1; do
        cmp -s "$1/$f.safetensors" "$T_TMP/ref/$f.safetensors" || { echo "$f differs"; return 1; }
    done
}
# student.1's msd-student (the process inside its step, not the srun or sh that started it)
student1() { pgrep -f -- "^$B/msd-student --name student\.1 .*$RD/" | head -n 1; }

t_check "partition K=2" "$M" up mog_partition --set K=2 --set run="$run" --run-dir "$RD" 2>"$T_TMP/part.log"
# one CPU thread per process in both runs (the one-host run shares one core: taskset; the steps
# get MSD_THREADS=1 through sbatch's and srun's environment): a sum split over more threads
# rounds otherwise
if timeout 300 taskset -c 0 "$M" up mog_stage2 "${S[@]}" 2>"$T_TMP/ref.log" </dev/null; then
    cp -r "$run/ckpt" "$T_TMP/ref"
    t_ok "the one-host reference run"
else t_fail reference "$(tail -n 20 "$T_TMP/ref.log")"; t_end; exit; fi

# ---- the batch script under sbatch ----------------------------------------------------
brun=$T_TMP/batchrun
job=$(cd "$T_TMP" && MSDPIPE="$M" MSD_RUN="$brun" MSD_RUN_DIR="$RD" MSD_THREADS=1 MSDPIPE_VERBOSE=1 \
      timeout 60 sbatch --parsable --output="$T_TMP/job-%j.out" "$SB" 2 "${P[@]}" --set steps=300 2>"$T_TMP/sbatch.err")
job=${job%%;*}
out=$T_TMP/job-$job.out
queued() { squeue -h -j "$1" -o %T 2>/dev/null | grep -q .; }
if [ -z "$job" ]; then t_fail "sbatch of the batch script" "no job id: $(cat "$T_TMP/sbatch.err")"
elif ! t_wait_for 240 bash -c "$(declare -f queued); ! queued $job"; then
    t_fail "sbatch of the batch script" "job $job still queued or running after 240 s: $(squeue -h -j "$job" 2>&1) $(tail -n 5 "$out" 2>&1)"
else
    ec=$(scontrol show job "$job" -o 2>&1 | grep -o 'ExitCode=[0-9:]*')
    if [ "$ec" = "ExitCode=0:0" ] && grep -q '^\[msdpipe\] INFO pipeline mog_stage2 finished' "$out" &&
       grep -q "^mog_stage2.sbatch: stage 2 finished: checkpoints in $brun/ckpt" "$out"; then
        t_ok "sbatch job $job: the batch script ran stage 2 to the end ($ec)"
    else t_fail "the batch job" "$ec; $(grep -v 'DEBUG\| INFO step ' "$out" 2>&1 | tail -n 12)"; fi
    placed=$(grep -o 'slurm: student\.[01] on node n[12]' "$out" | sort | tr '\n' ';')
    if [ "$placed" = "slurm: student.0 on node n1;slurm: student.1 on node n2;" ] &&
       grep -q "^\[msdpipe\] DEBUG student.0: srun .*--nodelist=n1 " "$out" &&
       grep -q "^\[msdpipe\] DEBUG student.1: srun .*--nodelist=n2 " "$out"; then
        t_ok "the batch job's students ran as steps on both nodes: student.0 on n1, student.1 on n2"
    else t_fail "the batch job's placement" "'$placed'"; fi
    if d=$(same_ckpts "$brun/ckpt"); then t_ok "the batch job's checkpoints are byte for byte those of the one-host run"
    else t_fail "the batch job's checkpoints" "$d"; fi
fi

# ---- supervision: four runs inside one allocation --------------------------------------
# each case: start, wait for student.1's step 20, act, wait for the launcher (bounded), then
# poll (30 s) until no step of it and no process of the run is left; results in CASE.* files
cat >"$T_TMP/sup.sh" <<EOF
#!/bin/bash
T=$T_TMP; M=$M; RD=$RD
$(declare -f student1)
B=$B
one() { # CASE EXTRA-SET...
    local c=\$1 L i p w; shift
    rm -rf "$run/ckpt" "$run/metrics.jsonl" # from step 0: the reference's checkpoints are at step 300
    "\$M" up mog_stage2 ${S[*]} --set steps=100000 "\$@" --slurm 2>"\$T/\$c.log" </dev/null &
    L=\$!
    i=0
    while [ \$i -lt 1200 ] && ! grep -qs '^\\[student.1\\] INFO step 20/' "\$T/\$c.log"; do sleep 0.05; i=\$((i + 1)); done
    squeue -h -s -j \$SLURM_JOB_ID -o '%j' | grep -c "^msdpipe-\$L\\." > "\$T/\$c.before"
    case \$c in
    kill9) p=\$(student1); [ -n "\$p" ] && kill -9 "\$p" ;;
    int) kill -INT \$L ;;
    term) p=\$(student1); [ -n "\$p" ] && kill -STOP "\$p"; kill -TERM \$L ;;
    down) "\$M" down --run-dir "\$RD" >"\$T/downcmd.out" 2>&1 & p=\$! ;;
    esac
    ( sleep 60; kill -9 \$L ) 2>/dev/null & w=\$! # the bound: a launcher that does not stop is killed (status 137)
    wait \$L; echo \$? > "\$T/\$c.rc"
    kill \$w 2>/dev/null; wait \$w 2>/dev/null
    [ \$c = down ] && { wait \$p; echo \$? > "\$T/downcmd.rc"; }
    i=0
    while [ \$i -lt 600 ]; do
        squeue -h -s -j \$SLURM_JOB_ID -o '%i %j' | grep "msdpipe-\$L\\." > "\$T/\$c.steps"
        pgrep -af -- "\$RD/" > "\$T/\$c.procs"
        [ -s "\$T/\$c.steps" ] || [ -s "\$T/\$c.procs" ] || break
        sleep 0.05; i=\$((i + 1))
    done
    for p in \$(pgrep -f -- "\$RD/"); do kill -CONT "\$p"; kill -9 "\$p"; done 2>/dev/null
}
one kill9
one int
one term --set stop_timeout=2
one down
EOF
chmod +x "$T_TMP/sup.sh"
timeout 400 salloc -N2 "$T_TMP/sup.sh" >"$T_TMP/sup.out" 2>&1 </dev/null
left() { # CASE: "" when nothing of the run was left, else what was
    if [ -f "$T_TMP/$1.steps" ] && [ ! -s "$T_TMP/$1.steps" ] && [ -f "$T_TMP/$1.procs" ] && [ ! -s "$T_TMP/$1.procs" ]; then return 0; fi
    echo "steps: $(cat "$T_TMP/$1.steps" 2>&1 | tr '\n' ' '); processes: $(cat "$T_TMP/$1.procs" 2>&1 | head -n 3 | tr '\n' ' ')"
}
res() { # CASE: its launcher status, steps before, what was left
    RC=$(cat "$T_TMP/$1.rc" 2>/dev/null); BEFORE=$(cat "$T_TMP/$1.before" 2>/dev/null); LEFT=$(left "$1")
    LOG=$T_TMP/$1.log
}
tailof() { echo "status '$RC', $BEFORE steps before; $(grep -v 'DEBUG\| INFO step ' "$LOG" 2>&1 | tail -n 8 | tr '\n' ' ') $(tail -n 3 "$T_TMP/sup.out")"; }

res kill9
if [ "$RC" = 1 ] && [ "$BEFORE" = 6 ] && grep -q '^\[msdpipe\] ERROR process student.1 (pid [0-9]*, node n2) exited with status 137' "$LOG" &&
   grep -q '^\[msdpipe\] ERROR pipeline mog_stage2 failed' "$LOG" && [ -z "$LEFT" ]; then
    t_ok "kill -9 of student.1's process in its step: the launcher names student.1 and node n2, exits 1, no step or process left"
else t_fail "kill -9 of a process in a step" "$(tailof) $LEFT"; fi

res int
if [ "$RC" = 130 ] && [ "$BEFORE" = 6 ] && grep -q '^\[msdpipe\] INFO Interrupt: stopping the pipeline' "$LOG" &&
   grep -q '^\[msdpipe\] INFO pipeline mog_stage2 stopped' "$LOG" && [ -z "$LEFT" ]; then
    t_ok "SIGINT to the launcher: it says it stops, exits 130, no step or process left"
else t_fail "SIGINT to the launcher" "$(tailof) $LEFT"; fi

res term
if [ "$RC" = 143 ] && [ "$BEFORE" = 6 ] && grep -q '^\[msdpipe\] INFO Terminated: stopping the pipeline' "$LOG" &&
   grep -q '^\[msdpipe\] WARN student.1 (pid [0-9]*, node n2) did not stop within 2 s; killing it' "$LOG" &&
   grep -q '^\[msdpipe\] INFO pipeline mog_stage2 stopped' "$LOG" && [ -z "$LEFT" ]; then
    t_ok "SIGTERM with student.1 stopped (SIGSTOP): the launcher kills its srun, cancels its step, exits 143, nothing left"
else t_fail "SIGTERM to the launcher with a stopped step" "$(tailof) $LEFT"; fi

res down
drc=$(cat "$T_TMP/downcmd.rc" 2>/dev/null)
if [ "$RC" = 143 ] && [ "$drc" = 0 ] && [ "$BEFORE" = 6 ] && grep -q '^\[msdpipe\] INFO Terminated: stopping the pipeline' "$LOG" &&
   grep -q '^\[msdpipe\] INFO pipeline mog_stage2 stopped' "$LOG" && [ -z "$LEFT" ]; then
    t_ok "msdpipe down --run-dir: exits 0, the launcher stops (143), no step or process left"
else t_fail "msdpipe down" "down status '$drc' ($(cat "$T_TMP/downcmd.out" 2>&1 | tr '\n' ' ')); $(tailof) $LEFT"; fi

# ---- restart=1 under --slurm ------------------------------------------------------------
rm -rf "$run/ckpt" "$run/metrics.jsonl"
MSD_THREADS=1 MSDPIPE_VERBOSE=1 timeout 300 salloc -N2 "$M" up mog_stage2 "${S[@]}" --set restart=1 --slurm \
    >"$T_TMP/rs.out" 2>"$T_TMP/rs.log" </dev/null &
SPID=$!
victim=
if t_wait_for 120 grep -qs '^\[student.1\] INFO step 150/' "$T_TMP/rs.log"; then
    victim=$(student1)
    [ -n "$victim" ] && kill -9 "$victim"
fi
t_wait_for 240 bash -c "! kill -0 $SPID 2>/dev/null" || kill -9 "$SPID" 2>/dev/null
wait "$SPID"; rc=$?
nsteps=$(grep -c '^\[msdpipe\] DEBUG student.1: srun .*--nodelist=n2 --job-name=msdpipe-[0-9]*\.student\.1 ' "$T_TMP/rs.log")
if [ -n "$victim" ] && [ "$rc" -eq 0 ] && [ "$nsteps" -eq 2 ] &&
   grep -q '^\[msdpipe\] WARN process student.1 (pid [0-9]*, node n2) exited with status 137; restarting it in 0.5 s (restart 1 of 1)' "$T_TMP/rs.log" &&
   grep -q '^\[msdpipe\] WARN restarted student.1: pid [0-9]* (restart 1 of 1)' "$T_TMP/rs.log" &&
   grep -q '^\[student.1\] INFO resuming at step 100 of 300' "$T_TMP/rs.log" &&
   [ "$(grep -c '^\[student.[01]\] INFO finished 300 steps' "$T_TMP/rs.log")" -eq 2 ]; then
    t_ok "restart=1: kill -9 of student.1 at step 150 on n2, restarted as a new step, resumed at step 100, the run finished"
else t_fail "restart=1 under --slurm" "victim '$victim', status $rc, $nsteps student.1 steps: $(grep -v 'DEBUG\| INFO step ' "$T_TMP/rs.log" | tail -n 15 | tr '\n' ' ')"; fi
if [ "$rc" -eq 0 ] && d=$(same_ckpts "$run/ckpt"); then t_ok "... the final checkpoints are byte for byte those of the one-host run"
else t_fail "the checkpoints after the restart" "status $rc: $d"; fi
t_end
