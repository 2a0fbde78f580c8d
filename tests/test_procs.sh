# test_procs.sh: the walking-skeleton processes started standalone (no launcher) over ipc://
# in a private temporary folder: a student runs N steps against data, teacher and critic;
# SIGTERM stops a server promptly with status 0; bad arguments and silent peers fail clearly.
# Every process started here is judged by how it ended: the servers are stopped with SIGTERM
# and must exit 0, and no process's stderr may hold a sanitizer (ASan/LSan/UBSan) report.
# Talking to a process with hand-made (malformed) messages is in tests/test_peers.c.
. "$(dirname "$0")/lib.sh"
D=$T_TMP
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$T_TMP"; }
trap cleanup EXIT

"$BIN/msd-data" --bind serve=ipc://$D/data 2>"$D/data.log" & pids+=($!); data=$!
"$BIN/msd-teacher" --bind serve=ipc://$D/teacher 2>"$D/teacher.log" & pids+=($!); teacher=$!
"$BIN/msd-critic" --bind serve=ipc://$D/critic 2>"$D/critic.log" & pids+=($!); critic=$!

# 1. the student finishes its steps and exits 0
if timeout 20 "$BIN/msd-student" --steps 12 --timeout-ms 5000 --connect data=ipc://$D/data \
        --connect teacher=ipc://$D/teacher --connect critic=ipc://$D/critic 2>"$D/student.log" &&
        grep -q "finished 12 steps" "$D/student.log" && grep -q "step 12/12" "$D/student.log"; then
    t_ok "student runs 12 steps against data, teacher and critic"
else
    t_fail "student runs 12 steps" "$(cat "$D/student.log")"
fi

# 2. a second student at the same time (two clients of each server, interleaved)
timeout 20 "$BIN/msd-student" --name student.a --steps 30 --connect data=ipc://$D/data \
    --connect teacher=ipc://$D/teacher --connect critic=ipc://$D/critic 2>"$D/sa.log" & sa=$!
timeout 20 "$BIN/msd-student" --name student.b --steps 30 --connect data=ipc://$D/data \
    --connect teacher=ipc://$D/teacher --connect critic=ipc://$D/critic 2>"$D/sb.log" & sb=$!
if wait $sa && wait $sb; then t_ok "two students share the servers"; else t_fail "two students" "$(cat "$D/sa.log" "$D/sb.log")"; fi

# 3. a silent peer: the student gives up after its timeout with a message, non-zero
start=$(date +%s%N)
timeout 20 "$BIN/msd-student" --steps 2 --timeout-ms 300 --connect data=ipc://$D/nobody \
    --connect teacher=ipc://$D/teacher --connect critic=ipc://$D/critic 2>"$D/silent.log"; rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
if [ $rc -eq 1 ] && grep -q "data" "$D/silent.log" && [ $ms -lt 5000 ]; then
    t_ok "student exits 1 when data is silent (${ms} ms)"
else
    t_fail "silent peer" "rc=$rc after ${ms} ms: $(cat "$D/silent.log")"
fi

# 4. SIGTERM: the teacher exits 0 promptly
start=$(date +%s%N)
kill -TERM $teacher
if t_wait_for 3 bash -c "! kill -0 $teacher 2>/dev/null"; then
    wait $teacher; rc=$?
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    t_exited "SIGTERM: teacher exits 0 in ${ms} ms, stderr clean" "$rc" "$D/teacher.log"
else
    t_fail "SIGTERM" "teacher still running after 3 s"
fi

# 5. command line: --help exits 0, bad arguments exit 2 with a message naming the option
t_check "--help exits 0 and lists the skeleton options" bash -c "'$BIN/msd-teacher' --help | grep -q -- '--curve-keys'"
"$BIN/msd-teacher" --bind serve 2>"$D/bad.log"; rc=$?
if [ $rc -eq 2 ] && grep -q -- "--bind serve" "$D/bad.log"; then t_ok "bad --bind exits 2"; else t_fail "bad --bind" "rc=$rc $(cat "$D/bad.log")"; fi
"$BIN/msd-teacher" --bind serve=tcp://127.0.0.1:0 2>"$D/tcp.log"; rc=$?
if [ $rc -eq 2 ] && grep -q -- "--curve-keys" "$D/tcp.log"; then t_ok "tcp:// without keys exits 2"; else t_fail "tcp without keys" "rc=$rc $(cat "$D/tcp.log")"; fi
"$BIN/msd-teacher" --gpu 0 --bind serve=ipc://$D/g 2>"$D/gpu.log"; rc=$?
if [ $rc -ne 0 ] && grep -q -- "--gpu 0" "$D/gpu.log"; then t_ok "--gpu without a usable GPU fails naming the option"; else t_fail "--gpu" "rc=$rc $(cat "$D/gpu.log")"; fi
"$BIN/msd-data" --shape 4,x --bind serve=ipc://$D/s 2>"$D/shape.log"; rc=$?
if [ $rc -eq 2 ] && grep -q -- "--shape" "$D/shape.log"; then t_ok "bad --shape exits 2"; else t_fail "bad --shape" "rc=$rc"; fi
# the option tables (common/net/args.h): --help lists every mode with its options; a required
# option is named when missing; another mode's option is refused
t_check "--help lists every mode and its options" bash -c "'$BIN/msd-student' --help | grep -q -- '--mode skeleton-train' \
    && '$BIN/msd-student' --help | grep -q -- '--critic-warmup' && '$BIN/msd-teacher' --help | grep -q -- '--ema-rampup' \
    && '$BIN/msd-router' --help | grep -q -- '--max-samples' && '$BIN/msd-data' --help | grep -q -- '--mode fmnist'"
"$BIN/msd-critic" --mode mog 2>"$D/req.log"; rc=$?
if [ $rc -eq 2 ] && grep -q -- "--mode mog needs --mix FILE" "$D/req.log"; then t_ok "a missing required option is named"
else t_fail "required option" "rc=$rc $(cat "$D/req.log")"; fi
"$BIN/msd-teacher" --mode gauss --ckpt x 2>"$D/other.log"; rc=$?
if [ $rc -eq 2 ] && grep -q -- "unknown option --ckpt" "$D/other.log"; then t_ok "another mode's option is refused"
else t_fail "another mode's option" "rc=$rc $(cat "$D/other.log")"; fi

# 6. the other servers stop on SIGTERM with status 0; no process printed a sanitizer report
t_stop "SIGTERM: data exits 0, stderr clean" "$data" "$D/data.log"
t_stop "SIGTERM: critic exits 0, stderr clean" "$critic" "$D/critic.log"
dirty=
for l in "$D"/*.log; do t_log_clean "$l" >/dev/null || dirty="$dirty $(basename "$l")"; done
if [ -z "$dirty" ]; then t_ok "no sanitizer report in any process's stderr"
else t_fail "sanitizer reports" "in$dirty: $(for l in $dirty; do t_log_clean "$D/$l"; done)"; fi
t_end
