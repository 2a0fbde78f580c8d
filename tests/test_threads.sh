# test_threads.sh: the CPU threads the launcher gives each process (threads=, and its share
# of the cores otherwise: docs/PIPELINES.md "Threads") really reach the running processes:
# MSD_THREADS in its environment, and the width of its thread pool, counted as the pool's
# workers ("msd-pool" in /proc/PID/task/*/comm: width - 1 of them, started with the backend).
# Also `check` prints the counts, and a bad MSD_THREADS is refused at start. Every wait is
# bounded (t_wait_for); run directories live under this test's temp folder.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
M="$(cd "$BIN" && pwd)/msdpipe"
RUNS="$T_TMP/runs"
mkdir -p "$RUNS"
TP="$here/pipelines"
LPID=
cleanup() { [ -n "$LPID" ] && kill -9 "$LPID" 2>/dev/null; wait 2>/dev/null; rm -rf "$T_TMP"; }
trap cleanup EXIT
cores=$(nproc)   # the launcher's sched_getaffinity count: it runs from this shell
[ "$cores" -gt 64 ] && cores=64

# the pid of process NAME of the running threads pipeline (from its state file)
pid_of() { awk -v n="$1" '$1 == "proc" && $2 == n { print $3 }' "$RUNS"/threads-*/state 2>/dev/null | head -n 1; }
pool_workers() { local n=0 c; for c in /proc/"$1"/task/*/comm; do [ "$(cat "$c" 2>/dev/null)" = msd-pool ] && n=$((n + 1)); done; echo $n; }
env_threads() { tr '\0' '\n' <"/proc/$1/environ" | sed -n 's/^MSD_THREADS=//p'; }

# up NAME WANT-DATA WANT-CRITIC... --set ...: start threads.pipe, wait for "pipeline up", check
# every process's MSD_THREADS and pool width, stop it with `down`
up_check() {
    local name=$1 want_data=$2; shift 2
    local wants=() a
    while [ $# -gt 0 ] && [ "$1" != --set ]; do wants+=("$1"); shift; done
    "$M" up "$TP/threads.pipe" --run-dir "$RUNS" "$@" >"$T_TMP/$name.out" 2>"$T_TMP/$name.err" </dev/null &
    LPID=$!
    if ! t_wait_for 60 grep -qs "pipeline up" "$T_TMP/$name.err"; then
        t_fail "$name" "pipeline did not come up: $(tail -n 5 "$T_TMP/$name.err")"
        kill -9 "$LPID" 2>/dev/null; wait "$LPID" 2>/dev/null; LPID=; return
    fi
    local bad="" p e w k=0
    p=$(pid_of data); e=$(env_threads "$p"); w=$(pool_workers "$p")
    [ "$e" = "$want_data" ] && [ "$w" = 0 ] || bad="$bad data: MSD_THREADS=$e, $w pool workers (want $want_data, 0);"
    for a in "${wants[@]}"; do
        p=$(pid_of critic.$k); e=$(env_threads "$p"); w=$(pool_workers "$p")
        [ "$e" = "$a" ] && [ "$w" = $((a - 1)) ] || bad="$bad critic.$k: MSD_THREADS=$e, $w pool workers (want $a, $((a - 1)));"
        k=$((k + 1))
    done
    "$M" down threads --run-dir "$RUNS" >/dev/null 2>&1
    t_wait_for 20 bash -c "! kill -0 $LPID 2>/dev/null" || kill -9 "$LPID" 2>/dev/null
    wait "$LPID" 2>/dev/null; LPID=
    if [ -z "$bad" ]; then t_ok "$name (${wants[*]} on $cores cores)"; else t_fail "$name" "$bad"; fi
}

# the default rule: one computing process gets every core, data 1; K=2 share them (at least 1)
up_check default_one_critic 1 "$cores" --set K=1
half=$((cores / 2)); [ $half -lt 1 ] && half=1
rest=$((cores - half)); [ $rest -lt 1 ] && rest=1
up_check default_two_critics 1 "$rest" "$half" --set K=2
# threads= wins over the share, also beyond the cores
up_check explicit_threads 1 3 3 --set K=2 --set t=3

# check prints each process's count and why
out=$("$M" check "$TP/threads.pipe" --set K=2 --set t=5 2>&1)
if echo "$out" | grep -q "threads  5 (threads=)" && echo "$out" | grep -q "threads  1 (a role that does not compute)"; then
    t_ok check_prints_threads
else t_fail check_prints_threads "$out"; fi
out=$("$M" check "$TP/threads.pipe" --set K=3 2>&1)
if echo "$out" | grep -q "a share of $(nproc) cores* among 3 computing processes"; then t_ok check_prints_share
else t_fail check_prints_share "$out"; fi
err=$("$M" check "$TP/threads.pipe" --set t=65 2>&1); rc=$?
if [ $rc -eq 2 ] && echo "$err" | grep -q "threads.pipe:[0-9]*: bad threads 65"; then t_ok check_bad_threads
else t_fail check_bad_threads "rc=$rc: $err"; fi

# another host: threads= travels in the ssh command (env MSD_THREADS=N), no threads= sends none
sed 's/bind=serve host=far/bind=serve host=far threads=$k+2/' "$TP/remote_serve.pipe" >"$T_TMP/remote.pipe"
printf 'a\nb\n' | MSDPIPE_SSH="$here/fake_ssh" MSDPIPE_VERBOSE=1 timeout 60 "$M" up "$T_TMP/remote.pipe" --run-dir "$RUNS" \
    >"$T_TMP/remote.out" 2>"$T_TMP/remote.err"; rc=$?
if [ $rc -eq 0 ] && grep -q "student.1: .*fake_ssh -- far .*exec env MSD_THREADS=3 OPENBLAS_NUM_THREADS=1 '" "$T_TMP/remote.err" \
   && grep -q "student.0: .*exec env MSD_THREADS=2 " "$T_TMP/remote.err"; then t_ok remote_threads_in_command
else t_fail remote_threads_in_command "rc=$rc: $(grep -E 'DEBUG student|ERROR' "$T_TMP/remote.err" | head -n 4)"; fi
printf 'a\n' | MSDPIPE_SSH="$here/fake_ssh" MSDPIPE_VERBOSE=1 timeout 60 "$M" up "$TP/remote_serve.pipe" --run-dir "$RUNS" \
    >"$T_TMP/remote0.out" 2>"$T_TMP/remote0.err"; rc=$?
if [ $rc -eq 0 ] && grep -q "student.0: .*fake_ssh -- far .*exec '" "$T_TMP/remote0.err"; then t_ok remote_default_sends_none
else t_fail remote_default_sends_none "rc=$rc: $(grep -E 'DEBUG student|ERROR' "$T_TMP/remote0.err" | head -n 4)"; fi

# cpus=: a local process is pinned before it starts (Cpus_allowed_list) and, without threads=,
# gets as many threads as CPUs; the others stay on the launcher's CPUs. CPU numbers come from
# this shell's own set, so the test holds under taskset or a cgroup limit.
mine=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status)
cpu_list=$(python3 -c 'import os; print(" ".join(map(str, sorted(os.sched_getaffinity(0)))))')
first=${cpu_list%% *}
last=${cpu_list##* }
allowed() { sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' "/proc/$1/status"; }
"$M" up "$TP/threads.pipe" --run-dir "$RUNS" --set K=2 --set c="$first" >"$T_TMP/pin.out" 2>"$T_TMP/pin.err" </dev/null &
LPID=$!
if t_wait_for 60 grep -qs "pipeline up" "$T_TMP/pin.err"; then
    bad=""
    for n in critic.0 critic.1; do
        p=$(pid_of $n); a=$(allowed "$p"); e=$(env_threads "$p"); w=$(pool_workers "$p")
        [ "$a" = "$first" ] && [ "$e" = 1 ] && [ "$w" = 0 ] || bad="$bad $n: CPUs $a, MSD_THREADS=$e, $w pool workers (want $first, 1, 0);"
    done
    p=$(pid_of data); a=$(allowed "$p")
    [ "$a" = "$mine" ] || bad="$bad data: CPUs $a (want the launcher's, $mine);"
    if [ -z "$bad" ]; then t_ok "cpus=$first pins the critics, one thread each; data stays on $mine"
    else t_fail "cpus= pins the processes" "$bad"; fi
    "$M" down threads --run-dir "$RUNS" >/dev/null 2>&1
    t_wait_for 20 bash -c "! kill -0 $LPID 2>/dev/null" || kill -9 "$LPID" 2>/dev/null
else
    t_fail "cpus= pins the processes" "pipeline did not come up: $(tail -n 5 "$T_TMP/pin.err")"
    kill -9 "$LPID" 2>/dev/null
fi
wait "$LPID" 2>/dev/null; LPID=
out=$("$M" check "$TP/threads.pipe" --set K=2 --set c="$first-$last" 2>&1)
if echo "$out" | grep -q "cpus     $first-$last (pinned: cpus=)" && echo "$out" | grep -q "threads  $(( $(echo $cpu_list | wc -w) > 1 ? 2 : 1 )) (as many as its cpus=)" \
   || { [ "$first" = "$last" ] && echo "$out" | grep -q "cpus     $first (pinned: cpus=)"; }; then t_ok check_prints_cpus
else t_fail check_prints_cpus "$out"; fi
# a CPU the launcher may not use (here: run under taskset -c FIRST) is refused with the line
if [ "$first" != "$last" ]; then
    err=$(taskset -c "$first" "$M" check "$TP/threads.pipe" --set c="$last" 2>&1); rc=$?
    if [ $rc -eq 2 ] && echo "$err" | grep -q "threads.pipe:[0-9]*: process critic.0: cpus=$last names CPU $last, which this launcher may not use (it may use $first)"
    then t_ok check_cpus_outside_launcher
    else t_fail check_cpus_outside_launcher "rc=$rc: $err"; fi
else t_skip check_cpus_outside_launcher "one CPU: no CPU outside the launcher's set to name"; fi
for v in 3-1 x 0,,1 99999; do
    err=$("$M" check "$TP/threads.pipe" --set c="$v" 2>&1); rc=$?
    if [ $rc -eq 2 ] && echo "$err" | grep -q "threads.pipe:[0-9]*: bad cpus '$v'"; then t_ok "check_bad_cpus '$v'"
    else t_fail "check_bad_cpus '$v'" "rc=$rc: $err"; fi
done
err=$("$M" check "$TP/threads.pipe" --set c="$first" --slurm 2>&1); rc=$?
if [ $rc -eq 2 ] && echo "$err" | grep -q "process critic.0: cpus=$first is for runs without --slurm"; then t_ok check_cpus_slurm_refused
else t_fail check_cpus_slurm_refused "rc=$rc: $err"; fi
# another host: taskset -c LIST there (tests/fake_ssh runs it here); a CPU that host lacks stops
# the job at the start, naming the process, with taskset's own message
sed "s/bind=serve host=far/bind=serve host=far cpus=$first/" "$TP/remote_serve.pipe" >"$T_TMP/rpin.pipe"
printf 'a\nb\n' | MSDPIPE_SSH="$here/fake_ssh" MSDPIPE_VERBOSE=1 timeout 60 "$M" up "$T_TMP/rpin.pipe" --run-dir "$RUNS" \
    >"$T_TMP/rpin.out" 2>"$T_TMP/rpin.err"; rc=$?
if [ $rc -eq 0 ] && grep -q "student.1: .*fake_ssh -- far .*exec taskset -c $first env MSD_THREADS=1 OPENBLAS_NUM_THREADS=1 '" "$T_TMP/rpin.err"
then t_ok remote_cpus_taskset
else t_fail remote_cpus_taskset "rc=$rc: $(grep -E 'DEBUG student|ERROR' "$T_TMP/rpin.err" | head -n 4)"; fi
sed "s/bind=serve host=far/bind=serve host=far cpus=1023/" "$TP/remote_serve.pipe" >"$T_TMP/rbad.pipe"
printf 'a\n' | MSDPIPE_SSH="$here/fake_ssh" timeout 60 "$M" up "$T_TMP/rbad.pipe" --run-dir "$RUNS" \
    >"$T_TMP/rbad.out" 2>"$T_TMP/rbad.err"; rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "taskset" "$T_TMP/rbad.err" && grep -q "student\.[01]" "$T_TMP/rbad.err"
then t_ok "remote cpus= the host lacks: the job stops naming the process (rc $rc)"
else t_fail "remote cpus= the host lacks" "rc=$rc: $(tail -n 6 "$T_TMP/rbad.err")"; fi

# a process refuses a bad MSD_THREADS at start, naming it
for v in 0 abc 65 ""; do
    err=$(MSD_THREADS=$v timeout 20 "$BIN/msd-critic" --mode mog --mix "$TP/corners4.mix" --bind serve=ipc://"$T_TMP"/c 2>&1); rc=$?
    if [ $rc -eq 2 ] && echo "$err" | grep -q "MSD_THREADS=$v: expected a thread count 1..64"; then t_ok "bad_env_'$v'"
    else t_fail "bad_env_'$v'" "rc=$rc: $err"; fi
done

# the sizes the CPU kernels take from the machine's L2 (kernels/cpu/machine.c, MSD_CPU_L2 for
# comparisons) cut the Winograd work differently, never the numbers: the teacher's samples are
# the same bytes at the smallest and the largest L2 (work items of 32 and 448 tiles), 2 threads,
# with the own 3x3 kernels (MSD_CPU_CONV=own: builds without AVX-512 use im2col + OpenBLAS by
# default, where the L2 sizes play no part); a bad MSD_CPU_L2 or MSD_CPU_CONV is refused, naming it.
# One Heun step (NFE 1) and a 600 s guard: an ASan build beside other work took 118 s for NFE 3.
teach="$MSD_TOP/models/fmnist_teacher.safetensors"
for l2 in 65536 67108864; do
    MSD_CPU_CONV=own MSD_CPU_L2=$l2 timeout 600 "$BIN/msd-sample" --ckpt "$teach" --n 16 --steps 1 --batch 16 --threads 2 \
        --out "$T_TMP/l2-$l2.safetensors" >"$T_TMP/l2-$l2.log" 2>&1 || echo "rc $?" >>"$T_TMP/l2-$l2.log"
done
if cmp -s "$T_TMP/l2-65536.safetensors" "$T_TMP/l2-67108864.safetensors"; then t_ok "machine L2: same samples at 64 KiB and 64 MiB"
else t_fail "machine L2: same samples at 64 KiB and 64 MiB" "$(tail -n 2 "$T_TMP"/l2-*.log; ls -l "$T_TMP"/l2-*.safetensors 2>&1)"; fi
for v in 12 abc 1e9; do
    err=$(MSD_CPU_L2=$v timeout 60 "$BIN/msd-sample" --ckpt "$teach" --n 1 --steps 1 --out "$T_TMP/l2-bad.safetensors" 2>&1); rc=$?
    if [ $rc -ne 0 ] && echo "$err" | grep -q "MSD_CPU_L2=$v: expected the L2 cache size in bytes"; then t_ok "bad MSD_CPU_L2 '$v'"
    else t_fail "bad MSD_CPU_L2 '$v'" "rc=$rc: $err"; fi
done
for v in fast GEMM; do
    err=$(MSD_CPU_CONV=$v timeout 60 "$BIN/msd-sample" --ckpt "$teach" --n 1 --steps 1 --out "$T_TMP/conv-bad.safetensors" 2>&1); rc=$?
    if [ $rc -ne 0 ] && echo "$err" | grep -q "MSD_CPU_CONV=$v: expected own"; then t_ok "bad MSD_CPU_CONV '$v'"
    else t_fail "bad MSD_CPU_CONV '$v'" "rc=$rc: $err"; fi
done
# both 3x3 paths sample the teacher to within float rounding of each other (they round
# differently, so not the same bytes: relative 1e-3 of the largest value), and the own path is
# the same bytes when run again (the default path's repeatability: the resume tests)
for p in own gemm own2; do
    MSD_CPU_CONV=${p%2} timeout 120 "$BIN/msd-sample" --ckpt "$teach" --n 8 --steps 2 --batch 8 --threads 2 \
        --out "$T_TMP/conv-$p.safetensors" >"$T_TMP/conv-$p.log" 2>&1 || echo "rc $?" >>"$T_TMP/conv-$p.log"
done
if cmp -s "$T_TMP/conv-own.safetensors" "$T_TMP/conv-own2.safetensors"; then t_ok "own 3x3 kernels: the same bytes twice"
else t_fail "own 3x3 kernels: the same bytes twice" "$(tail -n 2 "$T_TMP"/conv-own*.log)"; fi
# (msd-nn compare: every |difference| <= 1e-3 of the largest value; 2 steps from sigma 80 leave
# values of a few hundred)
if d=$("$BIN/msd-nn" compare "$T_TMP/conv-gemm.safetensors" "$T_TMP/conv-own.safetensors" --atol-frac 1e-3 --rtol 0 2>&1)
then t_ok "own and im2col 3x3 paths agree (${d##*worst })"
else t_fail "own and im2col 3x3 paths agree" "$d $(tail -n 2 "$T_TMP"/conv-*.log)"; fi
t_end
