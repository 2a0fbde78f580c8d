# test_supervise.sh: the launcher's supervision promises of docs/PIPELINES.md ("Running") and
# docs/PROTOCOL.md (sections 5 and 7) that test_launcher.sh does not reach: a process that
# stops answering heartbeats (SIGSTOP) is declared silent and the run fails; a second SIGINT
# during the stop kills at once instead of waiting stop_timeout; SIGHUP and SIGINT stop the
# pipeline gracefully with 128+N; the reply timeout ends a run whose stdin line is never
# answered although every process is alive; a CURVE key file that group or others can read
# is refused (exit 2). Every wait is bounded (t_wait_for) and event-driven.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M="$(cd "$BIN" && pwd)/msdpipe"
RUNS="$T_TMP/runs"
mkdir -p "$RUNS"
TP="$here/pipelines"

# processes of this test still alive: every one has our private run folder in its command line
left_procs() { pgrep -f -- "$RUNS/" >/dev/null; }
no_procs_left() { ! left_procs; }
launcher_gone() { ! kill -0 "$1" 2>/dev/null; }
now() { date +%s%N; }
secs_since() { echo $(( ($(now) - $1) / 1000000 )) | awk '{printf "%.2f", $1 / 1000}'; }
# a stuck test must not leave a stopped process or a launcher behind
cleanup() {
    local p
    for p in $(pgrep -f -- "$RUNS/"); do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
    rm -rf "$T_TMP"
}
trap cleanup EXIT

# start idle.pipe in the background with extra --set args; sets LPID and LOG, waits for "pipeline up"
start_idle() {
    LOG="$T_TMP/idle-$1.err"; shift
    "$M" up "$TP/idle.pipe" --run-dir "$RUNS" "$@" >/dev/null 2>"$LOG" </dev/null &
    LPID=$!
    t_wait_for 30 grep -q "pipeline up" "$LOG"
}
state_pid() { # NAME: pid of a process of the running pipeline, from its state file
    awk -v n="$1" '$1 == "proc" && $2 == n { print $3 }' "$RUNS"/idle-"$LPID"/state 2>/dev/null | head -n 1
}
# end a launcher that a failed check left running, and its processes
abandon() {
    local p
    for p in $(pgrep -f -- "$RUNS/"); do kill -CONT "$p" 2>/dev/null; done
    kill -9 "$LPID" 2>/dev/null
    wait "$LPID" 2>/dev/null
    t_wait_for 10 no_procs_left || for p in $(pgrep -f -- "$RUNS/"); do kill -9 "$p" 2>/dev/null; done
    rm -rf "${RUNS:?}"/*
}

# ---- a process that stops answering heartbeats (SIGSTOP) is declared silent -------------
# PROC_LIVENESS_MS is 3 s; stop_timeout=1 bounds the stop, after which the stopped process is
# SIGKILLed. The launcher must exit 1 within a few seconds, naming the process.
if start_idle silent --set stop_timeout=1; then
    victim=$(state_pid student.1)
    t0=$(now)
    kill -STOP "$victim"
    if t_wait_for 20 launcher_gone "$LPID"; then
        wait "$LPID"; rc=$?
        el=$(secs_since "$t0")
        if [ $rc -eq 1 ] && grep -qE "process student.1 \(pid $victim\) went silent: nothing for [0-9.]+ s" "$LOG"; then
            t_ok "a SIGSTOPped process is declared silent (exit 1 after $el s; liveness 3 s)"
        else t_fail silent_detected "rc=$rc after $el s: $(cat "$LOG")"; fi
        if grep -q "student.1 (pid $victim) did not stop within 1 s; killing it" "$LOG" && t_wait_for 10 no_procs_left \
           && [ -z "$(ls -A "$RUNS")" ]; then
            t_ok "the stopped process is killed after stop_timeout, nothing is left"
        else t_fail silent_cleanup "$(pgrep -af -- "$RUNS/") / $(ls "$RUNS") / $(cat "$LOG")"; abandon; fi
    else
        t_fail silent_detected "the launcher still runs 20 s after SIGSTOP of student.1: $(cat "$LOG")"
        abandon
    fi
else t_fail silent_detected "pipeline did not come up: $(cat "$LOG")"; abandon; fi

# ---- SIGHUP and SIGINT: a graceful stop with status 128+N --------------------------------
for sig in HUP INT; do
    want=$((128 + $(kill -l "$sig")))
    if start_idle "$sig"; then
        kill -"$sig" "$LPID"
        if t_wait_for 20 launcher_gone "$LPID"; then
            wait "$LPID"; rc=$?
            n=$(grep -c "INFO stop requested by the launcher" "$LOG")
            if [ $rc -eq $want ] && grep -q "stopping the pipeline" "$LOG" && [ "$n" -eq 3 ] \
               && grep -q "pipeline idle stopped" "$LOG" && t_wait_for 5 no_procs_left && [ -z "$(ls -A "$RUNS")" ]; then
                t_ok "SIG$sig: every process gets STOP, exit $want, the run directory is removed"
            else t_fail "sig$sig" "rc=$rc (want $want), $n of 3 got STOP, left: $(ls "$RUNS"): $(cat "$LOG")"; abandon; fi
        else t_fail "sig$sig" "the launcher ignores SIG$sig: $(cat "$LOG")"; abandon; fi
    else t_fail "sig$sig" "pipeline did not come up: $(cat "$LOG")"; abandon; fi
done

# ---- a second SIGINT during the stop kills at once --------------------------------------
# student.1 is stopped (SIGSTOP), so it cannot obey STOP; stop_timeout is 60 s. The first
# SIGINT starts the stop (student.0 logs that it got STOP: the stop is under way); the second
# must kill the rest at once: exit 130 well before the 60 s.
if start_idle second --set stop_timeout=60; then
    victim=$(state_pid student.1)
    kill -STOP "$victim"
    kill -INT "$LPID"
    if t_wait_for 20 grep -q "\[student.0\] INFO stop requested by the launcher" "$LOG"; then
        t0=$(now)
        kill -INT "$LPID"
        if t_wait_for 15 launcher_gone "$LPID"; then
            wait "$LPID"; rc=$?
            el=$(secs_since "$t0")
            if [ $rc -eq 130 ] && grep -q "second signal: killing the processes now" "$LOG" && t_wait_for 5 no_procs_left \
               && [ -z "$(ls -A "$RUNS")" ]; then
                t_ok "a second SIGINT kills at once (exit 130 after $el s, stop_timeout 60 s), nothing is left"
            else t_fail second_sigint "rc=$rc after $el s: $(cat "$LOG")"; abandon; fi
        else t_fail second_sigint "the launcher still runs 15 s after the second SIGINT: $(cat "$LOG")"; abandon; fi
    else t_fail second_sigint "the first SIGINT did not start the stop: $(cat "$LOG")"; abandon; fi
else t_fail second_sigint "pipeline did not come up: $(cat "$LOG")"; abandon; fi

# ---- reply_timeout: a line that is never answered, every process alive --------------------
# tests/pipelines/deaf.pipe: the router's student never reads its serve socket and the router
# itself would wait 600 s, so only the launcher's reply_timeout (1 s here) can end the run.
t0=$(now)
printf 'hello\n' | "$M" up "$TP/deaf.pipe" --set reply_timeout=1 --run-dir "$RUNS" >"$T_TMP/deaf.out" 2>"$T_TMP/deaf.err" &
DPID=$!
if t_wait_for 30 launcher_gone "$DPID"; then
    wait "$DPID"; rc=$?
    el=$(secs_since "$t0")
    if [ $rc -eq 1 ] && grep -q "end of input: 1 line still unanswered after 1 s (reply_timeout)" "$T_TMP/deaf.err" \
       && [ ! -s "$T_TMP/deaf.out" ] && t_wait_for 5 no_procs_left && [ -z "$(ls -A "$RUNS")" ]; then
        t_ok "reply_timeout: an unanswered line ends the run with exit 1 after $el s"
    else t_fail reply_timeout "rc=$rc after $el s, stdout '$(cat "$T_TMP/deaf.out")': $(tail -n 20 "$T_TMP/deaf.err")"; fi
else
    t_fail reply_timeout "the launcher still runs 30 s after the end of input: $(tail -n 20 "$T_TMP/deaf.err")"
    LPID=$DPID; abandon
fi

# ---- a CURVE key file that group or others can read is refused ---------------------------
# The keys are ZeroMQ's published CurveZMQ test vectors (RFC 26), not secrets. With mode 0600
# the file passes and the process gets as far as its bind, which fails on purpose (192.0.2.1
# is TEST-NET, no address of this machine: exit 1); with 0640 or 0604 it must stop at the key
# file with exit 2.
K="$T_TMP/run.keys"
cat >"$K" <<'EOF'
# run keys
server-public rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7
server-secret JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6
client-public Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID
client-secret D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs
EOF
keyrun() { # MODE: run a serving student with a tcp bind and the key file at MODE; sets rc, err
    chmod "$1" "$K"
    err=$(timeout 20 "$BIN/msd-student" --name keyed --serve --bind 'serve=tcp://192.0.2.1:*' --curve-keys "$K" 2>&1); rc=$?
}
keyrun 600
if [ $rc -eq 1 ] && echo "$err" | grep -q -- "--bind serve=tcp://192.0.2.1:\*:" && ! echo "$err" | grep -q -- "--curve-keys"; then
    t_ok "a key file of mode 0600 is accepted (the process gets to its bind)"
else t_fail key_0600 "rc=$rc: $err"; fi
for mode in 640 604; do
    keyrun "$mode"
    if [ $rc -eq 2 ] && echo "$err" | grep -q -- "--curve-keys $K: readable by group or others; it must be mode 0600"; then
        t_ok "a key file of mode 0$mode is refused with exit 2"
    else t_fail "key_0$mode" "rc=$rc: $err"; fi
done

t_end
