#!/usr/bin/env bash
# test_after.sh: after steps (docs/PIPELINES.md "After steps"): commands the launcher runs one by
# one once the job has finished with status 0, e.g. the image stages' final all-class grid.
# The pipelines here run the walking skeleton (msd-data/teacher/critic/student of BIN) from a
# copy of msdpipe in a private folder whose msd-step is a shell script: "ok FILE" writes FILE
# (with its MSD_THREADS and the time), "fail" exits 3, "hang FILE" waits for a signal and
# records it. Checks: `check` shows the steps; they run in order after the job (never while a
# process of it is alive), get the machine's cores, and the pipeline's status is theirs; the
# first failure names the step and its line and stops the rest; a failed job runs none; SIGINT
# during a step stops it (status 130) and leaves no process; bad after lines are refused with
# FILE:LINE.
. "$(dirname "$0")/lib.sh"
cd "$T_TMP"
D=$T_TMP/bin
mkdir -p "$D" runs
cp "$BIN/msdpipe" "$D/"
for p in data teacher critic student; do ln -s "$(cd "$BIN" && pwd)/msd-$p" "$D/msd-$p"; done
cat >"$D/msd-step" <<'EOF'
#!/bin/sh
# the first word says what to do; no process of the job may be alive while a step runs
if pgrep -f -- "--control ipc://$RUNS_DIR/" >/dev/null; then echo "alive" >"$2.alive"; fi
case "$1" in
ok) echo "threads=${MSD_THREADS:-unset} args=$*" >"$2" ;;
fail) echo "[step] ERROR failing on purpose" >&2; exit 3 ;;
hang) trap 'echo TERM >"$2"; exit 0' TERM; echo started >"$2.started"; while :; do sleep 0.05; done ;;
esac
EOF
chmod +x "$D/msd-step"
export RUNS_DIR=$T_TMP/runs
M=$D/msdpipe
skel='proc data bind=serve
proc teacher bind=serve
proc critic bind=serve
proc student[k in 0..1] connect=data,teacher,critic -- --steps 3'

# ---- check ----------------------------------------------------------------------------------
printf 'pipeline a1\n%s\nafter first role=step -- ok %s/one.txt\nafter second role=step threads=1 -- ok %s/two.txt\n' \
    "$skel" "$T_TMP" "$T_TMP" >a1.pipe
"$M" check a1.pipe >check.out 2>&1; rc=$?
t_check "check: a pipeline with two after steps is valid" test $rc -eq 0
t_check "check: it lists the steps in order, with their command lines and threads" python3 - check.out "$T_TMP" <<'EOF'
import sys
out, tmp = open(sys.argv[1]).read(), sys.argv[2]
i, j = out.find("after first (step 1 of 2"), out.find("after second (step 2 of 2")
ok = 0 <= i < j and ("args     ok %s/one.txt" % tmp) in out and "threads  1 (threads=)" in out
ok = ok and "every core of this machine" in out[i:j]
if not ok: print(out)
sys.exit(not ok)
EOF

# ---- up: the steps run after the job, in order ----------------------------------------------
"$M" up a1.pipe --run-dir runs >a1.log 2>&1; rc=$?
cores=$(nproc)
t_check "up: the job and both steps succeed (status 0)" test $rc -eq 0
t_check "up: step 1 ran with every core ($cores) as MSD_THREADS" grep -qx "threads=$cores args=ok $T_TMP/one.txt" one.txt
t_check "up: step 2 ran with its threads=1" grep -qx "threads=1 args=ok $T_TMP/two.txt" two.txt
t_check "up: no process of the job was alive while a step ran" test ! -e one.txt.alive -a ! -e two.txt.alive
t_check "up: the log says the job finished, then each step, in order" python3 - a1.log <<'EOF'
import sys
log = open(sys.argv[1]).read()
keys = ["job finished", "after step first (1 of 2)", "after step first done", "after step second (2 of 2)",
        "after step second done", "pipeline a1 finished"]
pos = [log.find(k) for k in keys]
ok = all(p >= 0 for p in pos) and pos == sorted(pos)
if not ok: print(log)
sys.exit(not ok)
EOF

# ---- a failing step ---------------------------------------------------------------------------
printf 'pipeline a2\n%s\nafter bad role=step -- fail\nafter never role=step -- ok %s/never.txt\n' "$skel" "$T_TMP" >a2.pipe
"$M" up a2.pipe --run-dir runs >a2.log 2>&1; rc=$?
t_check "fail: a step that exits 3 makes the pipeline's status 1" test $rc -eq 1
t_check "fail: the launcher names the step, its status and its line" grep -q "after step bad exited with status 3 (a2.pipe:6)" a2.log
t_check "fail: the step's own message is in the log" grep -q "failing on purpose" a2.log
t_check "fail: the steps after it do not run" test ! -e never.txt

# ---- a failed job runs no step ------------------------------------------------------------
printf 'pipeline a3\nproc data bind=serve\nproc teacher bind=serve\nproc critic bind=serve\n%s\nafter x role=step -- ok %s/x.txt\n' \
    'proc student connect=data,teacher,critic -- --steps 1 --no-such-option' "$T_TMP" >a3.pipe
"$M" up a3.pipe --run-dir runs >a3.log 2>&1; rc=$?
t_check "failed job: status 1" test $rc -eq 1
t_check "failed job: the after step did not run" test ! -e x.txt
t_check "failed job: the log never starts it" bash -c "! grep -q 'after step x' a3.log"

# ---- SIGINT during a step ---------------------------------------------------------------------
printf 'pipeline a4\n%s\nafter wait role=step -- hang %s/hang.txt\nafter never role=step -- ok %s/never4.txt\n' \
    "$skel" "$T_TMP" "$T_TMP" >a4.pipe
"$M" up a4.pipe --run-dir runs >a4.log 2>&1 &
lpid=$!
t_wait_for 60 test -e hang.txt.started
kill -INT $lpid
t_wait_for 30 bash -c "! kill -0 $lpid 2>/dev/null"
wait $lpid; rc=$?
t_check "SIGINT: the pipeline ends with status 130" test $rc -eq 130
t_check "SIGINT: the step got SIGTERM" grep -qx TERM hang.txt
t_check "SIGINT: the next step did not run" test ! -e never4.txt
t_check "SIGINT: the log says which step it stopped" grep -q "stopping the after step wait" a4.log
# (a function, not bash -c: a shell's own command line would hold the pattern)
none_match() { ! pgrep -f -- "$1" >/dev/null; }
t_check "SIGINT: no process of the step is left" none_match "msd-step hang $T_TMP"

# ---- bad after lines ----------------------------------------------------------------------------
bad() { # NAME LINE EXPECTED: an after line refused by check (status 2) with EXPECTED at b.pipe:7
    printf 'pipeline b\n%s\n%s\n' "$skel" "$2" >b.pipe
    "$M" check b.pipe >b.out 2>&1; local rc=$?
    if [ $rc -eq 2 ] && grep -q "^b.pipe:6: " b.out && grep -qF "$3" b.out; then t_ok "refused: $1"
    else t_fail "refused: $1" "rc=$rc: $(cat b.out)"; fi
}
bad "a process key (bind=)" "after g role=step bind=serve -- ok x" \
    "after step 'g': key 'bind' is for processes (after keys: role, gpu, threads)"
bad "a process key (connect=)" "after g role=step connect=data -- ok x" "key 'connect' is for processes"
bad "a process key (host=)" "after g role=step host=h -- ok x" "key 'host' is for processes"
bad "a replicated step" "after g[k in 0..1] role=step -- ok x" "after steps are not replicated"
bad "the name of a process" "after data role=step -- ok x" "after step 'data' has the name of a process (line 2)"
bad "a bad threads value" "after g role=step threads=many -- ok x" "bad threads 'many'"
bad "no name" "after" "expected a step name after 'after'"
printf 'pipeline b\n%s\nafter g role=step -- ok x\nafter g role=step -- ok y\n' "$skel" >b.pipe
"$M" check b.pipe >b.out 2>&1; rc=$?
t_check "refused: a step name given twice, naming the first line" bash -c "[ $rc -eq 2 ] && grep -qF \"b.pipe:7: duplicate after step 'g' (first at line 6)\" b.out"
printf 'pipeline b\n%s\nafter g role=nothing -- ok x\n' "$skel" >b.pipe
"$M" check b.pipe >b.out 2>&1; rc=$?
t_check "refused: a step whose binary is missing, with its line and path" \
    bash -c "[ $rc -eq 2 ] && grep -qF \"b.pipe:6: no binary for the after step 'g' ($D/msd-nothing is missing\" b.out"
t_check "no process of this test is left" none_match "--control ipc://$RUNS_DIR/"
t_end
