# test_restart.sh: restart=N (docs/PIPELINES.md "Restarts") on the toy's stage 2 (K=2, 120
# steps, checkpoints every 30): kill -9 of a student, kill -9 of a critic, SIGSTOP of a student
# in mid-run with restart=2: the launcher logs the restart, the run finishes every step, and
# the final checkpoints (students and critics) are byte for byte those of an uninterrupted run
# with the same seed (the pair rolls back to a common checkpoint; every draw is keyed by the
# step). restart=0 stops the job naming the killed process, as before; restart=1 with two
# kills stops it once the one restart is used. Every wait is bounded and event-driven: the
# kills wait for a progress line of the student, the checks for the launcher to exit.
# Prints the steps lost and the time to recover of each kill.
. "$(dirname "$0")/lib.sh"
M="$(cd "$BIN" && pwd)/msdpipe"
run=$T_TMP/mog
RD=$T_TMP/rd
mkdir -p "$RD"
chmod 700 "$RD"
S=(--set K=2 --set steps=120 --set batch=64 --set warmup=5 --set ttur=2 --set ckpt_every=30 --set log_every=10
   --set net=mlp,width=64,depth=3 --set timeout_ms=2000 --set run="$run" --run-dir "$RD")
cleanup() {
    local p
    for p in $(pgrep -f -- "$RD/"); do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
    rm -rf "$T_TMP"
}
trap cleanup EXIT
now() { date +%s%N; }
launcher_gone() { ! kill -0 "$1" 2>/dev/null; }
state_pid() { # LAUNCHER NAME: pid of a process, from the run's state file
    awk -v n="$2" '$1 == "proc" && $2 == n { print $3 }' "$RD"/mog_stage2-"$1"/state 2>/dev/null | head -n 1
}
same_ckpts() { # DIR: the four final checkpoints equal the reference run's
    local f
    for f in student.0 student.1 critic.0 critic.1; do cmp -s "$1/$f.safetensors" "$T_TMP/ref/$f.safetensors" || return 1; done
}

t_check "partition K=2" "$M" up mog_partition --set K=2 --set run="$run" --run-dir "$RD" 2>"$T_TMP/part.log"
if timeout 300 "$M" up mog_stage2 "${S[@]}" 2>"$T_TMP/ref.log"; then
    cp -r "$run/ckpt" "$T_TMP/ref"
    t_ok "the uninterrupted reference run"
else t_fail reference "$(tail -n 20 "$T_TMP/ref.log")"; t_end; fi

# start stage 2 with extra --set args in the background: LPID, LOG
start() { # NAME ARGS...
    rm -rf "$run/ckpt" "$run/metrics.jsonl"
    LOG="$T_TMP/$1.log"; shift
    "$M" up mog_stage2 "${S[@]}" "$@" 2>"$LOG" </dev/null &
    LPID=$!
}
# wait for student.0's progress line at step $1, then send signal $2 to process $3: VICTIM, T0
hit() {
    VICTIM=
    if t_wait_for 120 grep -qs "^\[student.0\] INFO step $1/120" "$LOG"; then
        VICTIM=$(state_pid "$LPID" "$3")
        T0=$(now)
        [ -n "$VICTIM" ] && kill -"$2" "$VICTIM"
    fi
    [ -n "$VICTIM" ]
}
finish() { # wait for the launcher: RC
    if t_wait_for 240 launcher_gone "$LPID"; then wait "$LPID"; RC=$?
    else kill -9 "$LPID"; wait "$LPID"; RC=timeout; fi
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }
# the time student.0 is back at a step it had reached before the kill: first line "step $1/120" after the resume
back_at() { # STEP: nanoseconds when LOG shows student.0 at STEP for the second time (or the launcher ended)
    t_wait_for 240 bash -c "[ \$(grep -c '^\[student.0\] INFO step $1/120' '$LOG') -ge 2 ] || ! kill -0 $LPID 2>/dev/null" && now
}

# ---- kill -9 of a student --------------------------------------------------------------
start student --set restart=2
if hit 50 9 student.0; then
    T1=$(back_at 50)
    finish
    lost=$(sed -nE 's/^\[student.0\] INFO resuming at step ([0-9]+) of 120/\1/p' "$LOG" | head -n 1)
    if [ "$RC" = 0 ] && grep -q "process student.0 (pid $VICTIM) was killed by signal 9 (Killed); restarting it in 0.5 s (restart 1 of 2)" "$LOG" \
       && grep -q "restarted student.0: pid [0-9]* (restart 1 of 2)" "$LOG" && [ -n "$lost" ] \
       && [ "$(grep -c 'finished 120 steps' "$LOG")" -eq 2 ]; then
        t_ok "kill -9 of student.0 at step 50: restarted, resumed at step $lost, every step done"
        echo "  figures: student killed after step 50 (or later), resumed at $lost: at least $((50 - lost)) steps redone;" \
             "back at step 50 $(secs "$T0" "$T1") s after the kill"
    else t_fail student_restart "rc=$RC lost=$lost: $(grep -v ' INFO step ' "$LOG" | tail -n 30)"; fi
    if same_ckpts "$run/ckpt"; then t_ok "... the final checkpoints equal the uninterrupted run's"
    else t_fail student_numbers "checkpoints differ from the reference: $(cmp "$run/ckpt/student.0.safetensors" "$T_TMP/ref/student.0.safetensors")"; fi
else t_fail student_restart "no step 50 or no student.0: $(tail -n 20 "$LOG")"; finish; fi

# ---- kill -9 of a critic -----------------------------------------------------------------
start critic --set restart=2
if hit 50 9 critic.0; then
    T1=$(back_at 50)
    finish
    back=$(sed -nE 's/^\[student.0\] WARN rolled back to step ([0-9]+)/\1/p' "$LOG" | head -n 1)
    if [ "$RC" = 0 ] && grep -q "process critic.0 (pid $VICTIM) was killed by signal 9 (Killed); restarting it in 0.5 s (restart 1 of 2)" "$LOG" \
       && grep -q "restarted critic.0: pid" "$LOG" && [ -n "$back" ] \
       && grep -qE "^\[critic.0\] INFO resumed at update $((5 + back * 2)) from .*critic.0.safetensors" "$LOG" \
       && [ "$(grep -c 'finished 120 steps' "$LOG")" -eq 2 ]; then
        t_ok "kill -9 of critic.0 at step 50: restarted, student.0 and critic.0 rolled back to step $back, every step done"
        echo "  figures: critic killed after step 50 (or later), pair rolled back to $back: at least $((50 - back)) steps redone;" \
             "back at step 50 $(secs "$T0" "$T1") s after the kill (timeout_ms 2 s)"
    else t_fail critic_restart "rc=$RC back=$back: $(grep -v ' INFO step ' "$LOG" | tail -n 30)"; fi
    if same_ckpts "$run/ckpt"; then t_ok "... the final checkpoints equal the uninterrupted run's"
    else t_fail critic_numbers "checkpoints differ from the reference"; fi
else t_fail critic_restart "no step 50 or no critic.0: $(tail -n 20 "$LOG")"; finish; fi

# ---- SIGSTOP of a student: silent, killed, restarted ------------------------------------
start stopped --set restart=2
if hit 50 STOP student.0; then
    finish
    quiet=$(sed -nE "s/.*process student.0 \(pid $VICTIM\) went silent: nothing for ([0-9.]+) s/\1/p" "$LOG" | head -n 1)
    if [ "$RC" = 0 ] && [ -n "$quiet" ] && awk -v q="$quiet" 'BEGIN { exit !(q < 10) }' \
       && grep -q "process student.0 (pid $VICTIM) was killed by signal 9 (Killed); restarting it" "$LOG" \
       && [ "$(grep -c 'finished 120 steps' "$LOG")" -eq 2 ] && same_ckpts "$run/ckpt"; then
        t_ok "SIGSTOP of student.0: silent after $quiet s (liveness 3 s, bound 10 s), killed, restarted, same final checkpoints"
    else t_fail stopped_restart "rc=$RC quiet=$quiet: $(grep -v ' INFO step ' "$LOG" | tail -n 30)"; fi
else t_fail stopped_restart "no step 50 or no student.0: $(tail -n 20 "$LOG")"; finish; fi

# ---- SIGSTOP of data (stateless): the students resend, nothing rolls back ------------------
# A student's BATCH to the stopped data process times out (2 s) until the launcher has found
# it silent (3 s), killed and restarted it; resending the same request then gets the answer,
# so no student rolls back (a rollback would show "rolling back" in its log).
start data --set restart=2
if hit 50 STOP data; then
    finish
    if [ "$RC" = 0 ] && grep -q "process data (pid $VICTIM) went silent" "$LOG" && grep -q "restarted data: pid" "$LOG" \
       && grep -qE "^\[student.[01]\] WARN data did not answer batch request [0-9]+ within 2000 ms; sending it again" "$LOG" \
       && ! grep -q "rolling back" "$LOG" && [ "$(grep -c 'finished 120 steps' "$LOG")" -eq 2 ] && same_ckpts "$run/ckpt"; then
        t_ok "SIGSTOP of data: restarted, the students resent their requests (no rollback), same final checkpoints"
    else t_fail data_restart "rc=$RC: $(grep -v ' INFO step ' "$LOG" | tail -n 30)"; fi
else t_fail data_restart "no step 50 or no data: $(tail -n 20 "$LOG")"; finish; fi

# ---- restart=0: a killed student stops the job, as before -----------------------------
start norestart
if hit 50 9 student.0; then
    finish
    if [ "$RC" = 1 ] && grep -q "ERROR process student.0 (pid $VICTIM) was killed by signal 9" "$LOG" && ! grep -q "restarting it" "$LOG"; then
        t_ok "restart=0: the killed student stops the job (exit 1, named)"
    else t_fail norestart "rc=$RC: $(grep -v ' INFO step ' "$LOG" | tail -n 20)"; fi
else t_fail norestart "no step 50: $(tail -n 20 "$LOG")"; finish; fi

# ---- restart=1, killed twice: the second failure stops the job -----------------------
start exhausted --set restart=1
if hit 50 9 student.0 && t_wait_for 60 grep -q "restarted student.0: pid" "$LOG" \
   && t_wait_for 60 grep -q "^\[student.0\] INFO resuming at step" "$LOG"; then
    second=$(state_pid "$LPID" student.0)
    kill -9 "$second"
    finish
    if [ "$RC" = 1 ] && grep -q "ERROR process student.0 (pid $second) was killed by signal 9" "$LOG" \
       && grep -q "process student.0 used all 1 restarts (restart=1)" "$LOG"; then
        t_ok "restart=1, two kills: the second stops the job (exit 1, named)"
    else t_fail exhausted "rc=$RC: $(grep -v ' INFO step ' "$LOG" | tail -n 20)"; fi
else t_fail exhausted "the first restart did not happen: $(tail -n 20 "$LOG")"; finish; fi
t_end
