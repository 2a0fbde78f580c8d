# test_launcher.sh: bin/msdpipe, the launcher: `check` on good and bad pipeline files, --set,
# `up` of the walking skeleton, failure propagation, signals, kill -9 of the launcher (no
# orphans), stdin ordering, `ps`/`down`, and the ssh + tcp + CURVE path through a fake ssh.
# Every wait is bounded (t_wait_for); run directories live under this test's temp folder.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
root=$(cd "$here/.." && pwd)
M="$(cd "$BIN" && pwd)/msdpipe"
RUNS="$T_TMP/runs"
mkdir -p "$RUNS"
export MSDPIPE_PATH="$root/pipelines"
P="$root/pipelines"
TP="$here/pipelines"

# processes of this test still alive: every one has our private run folder in its command line
left_procs() { pgrep -f -- "$RUNS/" >/dev/null; }
no_procs_left() { ! left_procs; }
launcher_gone() { ! kill -0 "$1" 2>/dev/null; }

# ---- help, usage ------------------------------------------------------------------------
if "$M" --help | grep -q "msdpipe up FILE.pipe"; then t_ok help; else t_fail help "no usage text"; fi
"$M" frobnicate >/dev/null 2>&1; rc=$?
if [ $rc -eq 2 ]; then t_ok unknown_command; else t_fail unknown_command "exit $rc, want 2"; fi

# ---- check: good files --------------------------------------------------------------------
out=$("$M" check "$P/echo.pipe" 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q "5 processes" && echo "$out" | grep -q "connect  critic=ipc://" \
   && echo "$out" | grep -q "student.1" && echo "$out" | grep -q "args     --steps 5"; then
    t_ok check_echo
else t_fail check_echo "rc=$rc: $out"; fi

out=$("$M" check echo_serve.pipe --set K=4 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q "5 processes" && echo "$out" | grep -q "connect  student.3=ipc://" \
   && echo "$out" | grep -q "stdin: router"; then
    t_ok check_set_override
else t_fail check_set_override "rc=$rc: $out"; fi

# a bare name is found next to the binaries (or through MSDPIPE_PATH), '.pipe' optional
out=$(cd "$T_TMP" && "$M" check echo 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q "pipeline echo"; then t_ok check_bare_name; else t_fail check_bare_name "rc=$rc: $out"; fi

err=$("$M" check echo.pipe --set nosuch=3 2>&1); rc=$?
if [ $rc -eq 2 ] && echo "$err" | grep -q -- "--set nosuch: .*has no variable of that name"; then t_ok check_unknown_set
else t_fail check_unknown_set "rc=$rc: $err"; fi

err=$("$M" check echo.pipe --set K=0 2>&1); rc=$?
if [ $rc -eq 2 ] && echo "$err" | grep -q "echo.pipe:[0-9]*: empty range 0..-1"; then t_ok check_set_bad_range
else t_fail check_set_bad_range "rc=$rc: $err"; fi

# ---- check: a table of bad files -----------------------------------------------------------
# bad NAME LINE MESSAGE-REGEX CONTENT: check must exit 2 and print FILE:LINE: MESSAGE then the line
bad() {
    local name=$1 line=$2 msg=$3 f="$T_TMP/$1.pipe"
    printf '%b' "$4" >"$f"
    local err rc
    err=$("$M" check "$f" 2>&1); rc=$?
    if [ $rc -ne 2 ]; then t_fail "bad_$name" "exit $rc, want 2: $err"; return; fi
    local where="$f:$line: "
    [ "$line" = 0 ] && where="$f: "   # about the file as a whole
    if ! echo "$err" | grep -qE "^$where.*$msg"; then t_fail "bad_$name" "want '$where...$msg', got: $err"; return; fi
    if [ "$line" != 0 ] && ! echo "$err" | grep -A1 -E "^$f:$line: " | tail -n 1 | grep -q '^    '; then
        t_fail "bad_$name" "offending line not shown: $err"; return
    fi
    t_ok "bad_$name"
}
bad undefined_var 2 "undefined variable 'KK'" 'var K = 2\nproc s[k in 0..$KK-1] bind=serve\n'
bad unknown_key 1 "unknown proc key 'colour'" 'proc data bind=serve colour=red\n'
bad unknown_statement 2 "unknown statement 'procs'" '# ok\nprocs data\n'
bad duplicate_proc 3 "duplicate process name 'data' \\(first declared at line 1\\)" 'proc data bind=serve\n\nproc data bind=serve\n'
bad duplicate_var 2 "variable 'K' defined twice" 'var K = 1\nvar K = 2\nproc data bind=serve\n'
bad unknown_peer 2 "connect: no process named 'techer'" 'proc teacher bind=serve\nproc student connect=techer\n'
bad peer_no_bind 2 "'a' binds no endpoint" 'proc a\nproc b connect=a\n'
bad self_connect 1 "connects to itself" 'proc a bind=serve connect=a\n'
bad range_empty 1 "empty range 3..1" 'proc s[k in 3..1] bind=serve\n'
bad range_syntax 1 "bad replica range" 'proc s[0..3] bind=serve\n'
bad range_text 1 "bad range end 'x'" 'proc s[k in 0..x] bind=serve\n'
bad range_huge 1 "too large" 'proc s[k in 0..100000] bind=serve\n'
bad range_open 1 "unterminated '\\['" 'proc s[k in 0..3 bind=serve\n'
bad gpu_negative 1 "bad gpu -1" 'proc data bind=serve gpu=-1\n'
bad gpu_text 1 "bad gpu 'abc'" 'proc data bind=serve gpu=abc\n'
bad gpu_large 1 "bad gpu 99" 'proc data bind=serve gpu=99\n'
bad quote 1 "unterminated double quote" 'proc data bind=serve -- --x "abc\n'
bad dollar 1 "stray '\\$'" 'proc data bind=serve -- --price 5$\n'
bad unknown_host 1 "unknown host 'gpu9'" 'proc data bind=serve host=gpu9\n'
bad host_key 1 "unknown host key 'adress'" 'host far adress=1.2.3.4\nproc data bind=serve host=far\n'
bad ports 1 "bad ports" 'host far ports=9-2\nproc data bind=serve host=far\n'
bad stdin_unknown 2 "stdin: no process named 'router'" 'proc data bind=serve\nstdin router\n'
bad no_binary 1 "no binary for role 'nosuchrole'" 'proc x role=nosuchrole bind=serve\n'
bad timeout_value 1 "ready_timeout must be a number of seconds" 'var ready_timeout = soon\nproc data bind=serve\n'
bad empty 0 "no processes" '# nothing here\n'
bad binary_junk 2 "binary data \\(byte 0x00 at column 3\\)" 'proc data bind=serve\nEL\x00\x01\x02F\xff\xfe\x7f\n'
long=$(head -c 5000 /dev/zero | tr '\0' 'a')
bad long_line 2 "line too long \\(5000 bytes" "proc data bind=serve\n$long\n"
# several errors are all reported
printf 'proc a gpu=x\nproc b colour=1\n' >"$T_TMP/multi.pipe"
err=$("$M" check "$T_TMP/multi.pipe" 2>&1)
if echo "$err" | grep -q "multi.pipe:1: " && echo "$err" | grep -q "multi.pipe:2: "; then t_ok bad_several_errors
else t_fail bad_several_errors "$err"; fi
"$M" check "$T_TMP/does-not-exist.pipe" >/dev/null 2>&1; rc=$?
if [ $rc -eq 2 ]; then t_ok check_missing_file; else t_fail check_missing_file "exit $rc"; fi

# ---- up: the walking skeleton -------------------------------------------------------------
"$M" up echo.pipe --set K=3 --set steps=3 --run-dir "$RUNS" >"$T_TMP/up.out" 2>"$T_TMP/up.err"; rc=$?
if [ $rc -eq 0 ] && grep -q "pipeline up: 6 processes" "$T_TMP/up.err" && grep -q "job finished" "$T_TMP/up.err" \
   && grep -q "\[student.2\] .*finished 3 steps" "$T_TMP/up.err"; then
    t_ok up_echo
else t_fail up_echo "rc=$rc: $(tail -n 20 "$T_TMP/up.err")"; fi
if [ -z "$(ls -A "$RUNS")" ] && no_procs_left; then t_ok up_echo_cleans_up; else t_fail up_echo_cleans_up "left: $(ls "$RUNS")"; fi

# ---- failure propagation: a process exits non-zero --------------------------------------
"$M" up "$TP/fail.pipe" --run-dir "$RUNS" >/dev/null 2>"$T_TMP/fail.err"; rc=$?
if [ $rc -eq 1 ] && grep -qE "process student \(pid [0-9]+\) exited with status [1-9][0-9]*" "$T_TMP/fail.err"; then t_ok fail_reported
else t_fail fail_reported "rc=$rc: $(cat "$T_TMP/fail.err")"; fi
if t_wait_for 5 no_procs_left; then t_ok fail_no_process_left; else t_fail fail_no_process_left "$(pgrep -af -- "$RUNS/")"; fi

# ---- a process that does not get ready in time ---------------------------------------------
# bounded: a launcher that hung while stopping would otherwise take the whole file's time limit
timeout -k 5 60 "$M" up "$TP/idle.pipe" --set ready_timeout=0.001 --run-dir "$RUNS" >/dev/null 2>"$T_TMP/ready.err"; rc=$?
if [ $rc -eq 1 ] && grep -q "not ready after 0.001 s" "$T_TMP/ready.err" && t_wait_for 5 no_procs_left; then t_ok ready_timeout
else t_fail ready_timeout "rc=$rc: $(cat "$T_TMP/ready.err")"; fi

# start idle.pipe in the background; sets LPID, waits for "pipeline up"
start_idle() {
    "$M" up "$TP/idle.pipe" --run-dir "$RUNS" >"$T_TMP/idle.out" 2>"$T_TMP/idle.err" </dev/null &
    LPID=$!
    t_wait_for 20 grep -q "pipeline up" "$T_TMP/idle.err"
}
state_pid() { # NAME: pid of a process from the running pipeline's state file
    awk -v n="$1" '$1 == "proc" && $2 == n { print $3 }' "$RUNS"/idle-*/state 2>/dev/null | head -n 1
}

# ---- kill -9 of one process ----------------------------------------------------------------
if start_idle; then
    victim=$(state_pid student.1)
    kill -9 "$victim"
    t_wait_for 20 launcher_gone "$LPID"
    wait "$LPID"; rc=$?
    if [ $rc -eq 1 ] && grep -q "process student.1 (pid $victim) was killed by signal 9" "$T_TMP/idle.err"; then t_ok child_killed_reported
    else t_fail child_killed_reported "rc=$rc: $(cat "$T_TMP/idle.err")"; fi
    if t_wait_for 5 no_procs_left; then t_ok child_killed_no_process_left; else t_fail child_killed_no_process_left "$(pgrep -af -- "$RUNS/")"; fi
else t_fail child_killed_reported "pipeline did not come up: $(cat "$T_TMP/idle.err")"; kill -9 "$LPID" 2>/dev/null; fi

# ---- SIGTERM to the launcher: graceful stop, exit 128+15 ---------------------------------
if start_idle; then
    kill -TERM "$LPID"
    t_wait_for 20 launcher_gone "$LPID"
    wait "$LPID"; rc=$?
    if [ $rc -eq 143 ] && grep -q "stop requested by the launcher" "$T_TMP/idle.err" && t_wait_for 5 no_procs_left \
       && [ -z "$(ls -A "$RUNS")" ]; then t_ok sigterm_stops_all
    else t_fail sigterm_stops_all "rc=$rc: $(cat "$T_TMP/idle.err")"; fi
else t_fail sigterm_stops_all "pipeline did not come up"; kill -9 "$LPID" 2>/dev/null; fi

# ---- ps and down -----------------------------------------------------------------------------
if start_idle; then
    out=$("$M" ps --run-dir "$RUNS" 2>&1)
    if echo "$out" | grep -q "pipeline idle  launcher $LPID  up  3 processes" && echo "$out" | grep -qE "student.0 +pid [0-9]+ +ready"; then
        t_ok ps_lists
    else t_fail ps_lists "$out"; fi
    "$M" down idle --run-dir "$RUNS" >/dev/null 2>"$T_TMP/down.err"; drc=$?
    wait "$LPID"; rc=$?
    if [ $drc -eq 0 ] && [ $rc -eq 143 ] && t_wait_for 5 no_procs_left; then t_ok down_stops
    else t_fail down_stops "down rc=$drc launcher rc=$rc: $(cat "$T_TMP/down.err")"; fi
    out=$("$M" ps --run-dir "$RUNS" 2>&1)
    if echo "$out" | grep -q "no running pipelines"; then t_ok ps_after_down; else t_fail ps_after_down "$out"; fi
    "$M" down --run-dir "$RUNS" >/dev/null 2>&1; rc=$?
    if [ $rc -eq 1 ]; then t_ok down_nothing; else t_fail down_nothing "exit $rc, want 1"; fi
else t_fail ps_lists "pipeline did not come up"; kill -9 "$LPID" 2>/dev/null; fi

# ---- kill -9 of the launcher: no orphans -------------------------------------------------
if start_idle; then
    kids=$(awk '$1 == "proc" { print $3 }' "$RUNS"/idle-*/state)
    kill -9 "$LPID"
    wait "$LPID" 2>/dev/null
    # a killed child is gone once only its zombie is left (pid 1 reaps it in its own time)
    all_gone() {
        for p in $kids; do s=$(ps -o stat= -p "$p" 2>/dev/null); [ -n "$s" ] && [ "${s#Z}" = "$s" ] && return 1; done
        return 0
    }
    if [ -n "$kids" ] && t_wait_for 10 all_gone; then t_ok launcher_kill9_no_orphans
    else t_fail launcher_kill9_no_orphans "children '$kids'; still alive: $(pgrep -af -- "$RUNS/"); launcher log: $(tail -5 "$T_TMP/idle.err")"; fi
    out=$("$M" ps --run-dir "$RUNS" 2>&1)
    if echo "$out" | grep -q "launcher $LPID is gone" && [ -z "$(ls -A "$RUNS")" ]; then t_ok ps_removes_stale
    else t_fail ps_removes_stale "$out; launcher log: $(tail -5 "$T_TMP/idle.err")"; fi
else t_fail launcher_kill9_no_orphans "pipeline did not come up"; kill -9 "$LPID" 2>/dev/null; fi

# ---- a peer flooding the launcher's control socket with malformed messages (issue 15 #11): the
# launcher logs the first few, counts the rest and sums them up in one line, and stays up
if start_idle; then
    ctl="ipc://$(ls -d "$RUNS"/idle-*)/control"
    if python3 "$here/flood_peer.py" "$ctl" 500 2>"$T_TMP/flood.err"; then
        t_wait_for 10 grep -q "on the control socket" "$T_TMP/idle.err"; sleep 1
        alive=$(kill -0 "$LPID" 2>/dev/null && echo yes || echo no)
        kill -TERM "$LPID"; t_wait_for 20 launcher_gone "$LPID"; wait "$LPID"; rc=$?
        n=$(grep -c "on the control socket" "$T_TMP/idle.err")
        if [ "$alive" = yes ] && [ $rc -eq 143 ] && [ "$n" -ge 1 ] && [ "$n" -le 6 ] \
           && grep -qE "[0-9]+ more malformed messages suppressed" "$T_TMP/idle.err"; then t_ok control_flood_log_limited
        else t_fail control_flood_log_limited "alive=$alive rc=$rc, $n lines logged: $(grep -v 'malformed message on' "$T_TMP/idle.err" | tail -5)"; fi
    else t_fail control_flood_log_limited "flood_peer: $(cat "$T_TMP/flood.err")"; kill -9 "$LPID" 2>/dev/null; fi
else t_fail control_flood_log_limited "pipeline did not come up"; kill -9 "$LPID" 2>/dev/null; fi

# ---- a pipeline file at the longest folder path (1023 bytes) with a long name and one process:
# the state file holds the whole path and the process line (a fixed-size buffer cut it there,
# which lost the process that ps and down read)
deep="$T_TMP"; while [ ${#deep} -lt 960 ]; do deep="$deep/$(printf 'd%.0s' $(seq 1 60))"; done
deep="$deep/$(printf 'e%.0s' $(seq 1 $((1023 - ${#deep} - 1))))"
lname=$(printf 'p%.0s' $(seq 1 47))
mkdir -p "$deep" && printf 'pipeline %s\nproc data bind=serve\n' "$lname" >"$deep/p.pipe"
"$M" up "$deep/p.pipe" --run-dir "$RUNS" >/dev/null 2>"$T_TMP/deep.err" </dev/null &
LPID=$!
if t_wait_for 20 grep -q "pipeline up" "$T_TMP/deep.err"; then
    out=$("$M" ps --run-dir "$RUNS" 2>&1)
    if grep -qF "file $deep/p.pipe" "$RUNS/$lname"-*/state && echo "$out" | grep -qE "data +pid [0-9]+ +ready"; then
        t_ok state_long_pipeline_path
    else t_fail state_long_pipeline_path "$out"; fi
    kill -TERM "$LPID"; t_wait_for 20 launcher_gone "$LPID"; wait "$LPID"
else t_fail state_long_pipeline_path "pipeline did not come up: $(cat "$T_TMP/deep.err")"; kill -9 "$LPID" 2>/dev/null; fi

# ---- a stale state file whose launcher pid now belongs to another process: down must not
# signal it (the pid alone is not trusted), and the stale folder is removed
sleep 120 & SPID=$!
mkdir -p "$RUNS/reused-$SPID" && chmod 700 "$RUNS/reused-$SPID"
printf 'msdpipe-state 1\npipeline reused\nfile x.pipe\nlauncher %d\nlauncher_start 1\nstarted 0\nstop_timeout 1\nstate up\n' \
    "$SPID" >"$RUNS/reused-$SPID/state"
out=$("$M" down reused --run-dir "$RUNS" 2>&1)
if kill -0 "$SPID" 2>/dev/null && [ ! -e "$RUNS/reused-$SPID" ] && echo "$out" | grep -q "belongs to another process"; then
    t_ok down_ignores_reused_pid
else t_fail down_ignores_reused_pid "sleep alive: $(kill -0 "$SPID" 2>/dev/null && echo yes || echo no); $out"; fi
kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null

# ---- stdin: replies in input order --------------------------------------------------------
seq 1 40 | sed 's/^/line /' >"$T_TMP/in.txt"
"$M" up echo_serve.pipe --set K=3 --run-dir "$RUNS" <"$T_TMP/in.txt" >"$T_TMP/serve.out" 2>"$T_TMP/serve.err"; rc=$?
if [ $rc -eq 0 ] && sed -E 's/^student\.[0-9]+: //' "$T_TMP/serve.out" | cmp -s - "$T_TMP/in.txt" \
   && grep -q "^student.2: " "$T_TMP/serve.out"; then t_ok stdin_in_order
else t_fail stdin_in_order "rc=$rc: $(head -n 5 "$T_TMP/serve.out") / $(tail -n 5 "$T_TMP/serve.err")"; fi
# stdout carries only replies (no log lines), and an empty input ends cleanly
out=$("$M" up echo_serve.pipe --run-dir "$RUNS" </dev/null 2>/dev/null); rc=$?
if [ $rc -eq 0 ] && [ -z "$out" ]; then t_ok stdin_empty; else t_fail stdin_empty "rc=$rc: $out"; fi
# a line with a NUL byte is answered by an error line, not by its front part; the stream goes on
printf 'a\nb\0c\nd\n' | "$M" up echo_serve.pipe --run-dir "$RUNS" >"$T_TMP/nul.out" 2>"$T_TMP/nul.err"
if [ "$(sed -E 's/^student\.[0-9]+: //' "$T_TMP/nul.out" | tr '\n' '|')" = "a|error: line has a NUL byte (column 2); not sent|d|" ] \
   && grep -q "line 2: line has a NUL byte (column 2); not sent" "$T_TMP/nul.err"; then t_ok stdin_nul_refused
else t_fail stdin_nul_refused "$(cat "$T_TMP/nul.out") / $(tail -n 5 "$T_TMP/nul.err")"; fi

# ---- another host: ssh (fake) + tcp + CURVE ----------------------------------------------
printf 'a\nb\nc\n' | MSDPIPE_SSH="$here/fake_ssh" MSDPIPE_VERBOSE=1 "$M" up "$TP/remote_serve.pipe" --run-dir "$RUNS" \
    >"$T_TMP/remote.out" 2>"$T_TMP/remote.err"; rc=$?
if [ $rc -eq 0 ] && [ "$(sed -E 's/^student\.[0-9]+: //' "$T_TMP/remote.out" | tr '\n' ' ')" = "a b c " ]; then t_ok remote_serves
else t_fail remote_serves "rc=$rc: $(cat "$T_TMP/remote.out") / $(tail -n 20 "$T_TMP/remote.err")"; fi
if grep -q "fake_ssh -- far umask 077 .*--control' 'tcp://127.0.0.1:[0-9]*' '--curve-keys'" "$T_TMP/remote.err" \
   && grep -qE "router: .* --curve-keys .* --connect student.0=tcp://127.0.0.1:[0-9]+" "$T_TMP/remote.err"; then
    t_ok remote_uses_tcp_curve
else t_fail remote_uses_tcp_curve "$(grep DEBUG "$T_TMP/remote.err")"; fi
# the launcher's probed ports lie outside the kernel's ephemeral range, so that no connect() or
# bind to port 0 (an srun's I/O socket) takes one between the probe and the process's bind (the
# launcher's own control endpoint it binds itself: any port)
read -r elo ehi </proc/sys/net/ipv4/ip_local_port_range
ctl=$(grep -oE "'--control' 'tcp://127\.0\.0\.1:[0-9]+" "$T_TMP/remote.err" | sed 's/.*://' | sort -u)
ports=$(grep -oE 'tcp://127\.0\.0\.1:[0-9]+' "$T_TMP/remote.err" | sed 's/.*://' | sort -un | grep -vx "${ctl:-none}" | tr '\n' ' ')
inside=""
for p in $ports; do [ "$p" -ge "$elo" ] && [ "$p" -le "$ehi" ] && inside="$inside $p"; done
if [ -n "$ports" ] && [ -z "$inside" ]; then t_ok "probed ports outside the ephemeral range $elo-$ehi ($ports)"
else t_fail probed_ports_outside_ephemeral "ports '$ports', inside $elo-$ehi: '$inside'"; fi
if t_wait_for 5 no_procs_left && [ -z "$(ls -A "$RUNS")" ]; then t_ok remote_cleans_up; else t_fail remote_cleans_up "$(ls -R "$RUNS")"; fi

# the run folder on the other host is planted (a link to someone else's folder): the keys are not
# written there, the process says why, the launcher stops and leaves no process behind
mkdir -p "$T_TMP/far" "$T_TMP/planted"
printf 'a\n' | PLANT_FROM="$RUNS" PLANT_TO="$T_TMP/far" PLANT_AT="$T_TMP/planted" MSDPIPE_SSH="$here/planting_ssh" \
    timeout 60 "$M" up "$TP/remote_serve.pipe" --run-dir "$RUNS" >"$T_TMP/planted.out" 2>"$T_TMP/planted.err"; rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ -z "$(ls -A "$T_TMP/planted")" ] && [ -n "$(ls -A "$T_TMP/far")" ] \
   && grep -q "is a link or a folder of another user: the CurveZMQ keys are not written there" "$T_TMP/planted.err"; then
    t_ok remote_planted_folder_refused
else t_fail remote_planted_folder_refused "rc=$rc planted: $(ls -A "$T_TMP/planted") far: $(ls -A "$T_TMP/far") / $(tail -n 8 "$T_TMP/planted.err")"; fi
if t_wait_for 5 no_procs_left; then t_ok remote_planted_cleans_up; else t_fail remote_planted_cleans_up "processes left"; fi

t_end
