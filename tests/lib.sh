# lib.sh: the shell side of the test framework (sourced by tests/test_*.sh).
# t_ok NAME / t_fail NAME MSG record a result; t_end prints "# FILE: P passed, F failed" (with
# ", S skipped" added when something skipped) and exits with the verdict. BIN is the folder
# with the binaries under test (tests/run sets it). Every wait in a shell test goes through
# t_wait_for, which is bounded.
# t_skip_missing_data NAME WHY: NAME cannot run because data from outside the repository (the
# Fashion-MNIST files) is not installed: a skip, never a pass, and a failure under
# MSD_REQUIRE_DATA=1 (make test, whose set-up installs the data). Only for *missing* data: data
# that is there but unreadable is a failure.
# t_skip NAME WHY: any other reason a test cannot run here (tests/test_slurm.sh: no test cluster).
# t_stop NAME PID LOG / t_exited NAME STATUS LOG: see below (processes a test started).
T_PASSED=0
T_FAILED=0
T_SKIPPED=0
: "${BIN:=bin}"
T_TMP=$(mktemp -d "${TMPDIR:-/tmp}/msdtest.XXXXXX")
trap 'rm -rf "$T_TMP"' EXIT

t_ok() { T_PASSED=$((T_PASSED + 1)); echo "ok   $1"; }
t_fail() { T_FAILED=$((T_FAILED + 1)); echo "FAIL $1: $2"; }
t_skip_missing_data() {
    if [ "${MSD_REQUIRE_DATA:-0}" = 1 ]; then t_fail "$1" "data missing under MSD_REQUIRE_DATA=1: $2"
    else T_SKIPPED=$((T_SKIPPED + 1)); echo "skip $1: $2"; fi
}
t_need_fmnist() { # [SPLIT]: the whole test is skipped (missing data) without Fashion-MNIST's SPLIT
    # (t10k, the default, or train) from the Debian package dataset-fashion-mnist
    local fm="${MSD_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}/${1:-t10k}-labels-idx1-ubyte"
    if [ ! -e "$fm.gz" ] && [ ! -e "$fm" ]; then
        t_skip_missing_data "$(basename "$0")" "Fashion-MNIST not installed (Debian package dataset-fashion-mnist)"
        t_end; exit
    fi
}
t_tiny_teacher() { # RUN NET [CLASSES]: 3 steps of train_teacher.pipe on the test images into
    # $T_TMP/RUN (its teacher.safetensors; log RUN.log), the image stages' teacher in the tests
    "$BIN/msdpipe" up train_teacher --set net="$2" --set classes="${3:-0-9}" --set batch=8 --set steps=3 \
        --set warmup=0 --set grid_steps=1 --set grid_per_class=1 --set threads=1 --set data=fmnist:test \
        --set run="$T_TMP/$1" 2>"$T_TMP/$1.log"
}
t_skip() { # NAME WHY: NAME cannot run on this machine (e.g. no root for a test cluster): counted, said
    T_SKIPPED=$((T_SKIPPED + 1)); echo "skip $1: $2"
}
t_check() { # NAME COMMAND...: passes when COMMAND exits 0
    local name=$1; shift
    if "$@"; then t_ok "$name"; else t_fail "$name" "command failed: $*"; fi
}
t_wait_for() { # SECONDS COMMAND...: poll COMMAND every 0.05 s until it succeeds or time runs out
    local limit=$1; shift
    local end=$(( $(date +%s%N) + limit * 1000000000 ))
    while [ "$(date +%s%N)" -lt "$end" ]; do
        if "$@"; then return 0; fi
        sleep 0.05
    done
    return 1
}
# The sanitizer reports a process can print (ASan, LSan, UBSan); t_log_clean LOG fails on any.
T_SAN_PATTERN='ERROR: AddressSanitizer|runtime error:|LeakSanitizer|ERROR: ThreadSanitizer'
t_log_clean() { # LOG: true when LOG holds no sanitizer report (prints the report lines otherwise)
    if grep -qE "$T_SAN_PATTERN" "$1" 2>/dev/null; then grep -E "$T_SAN_PATTERN" "$1" | head -n 5; return 1; fi
    return 0
}
t_exited() { # NAME STATUS LOG: a process the test started exited by itself: status 0 and a clean LOG
    if [ "$2" -ne 0 ]; then t_fail "$1" "exit status $2: $(tail -n 5 "$3" 2>/dev/null)"
    elif ! t_log_clean "$3" >/dev/null; then t_fail "$1" "sanitizer report in $3: $(t_log_clean "$3")"
    else t_ok "$1"; fi
}
t_stop() { # NAME PID LOG: SIGTERM a background child of this shell, wait (bounded: 10 s, then
           # SIGKILL), and pass when it exits with status 0 and LOG (its stderr) is clean
    local name=$1 pid=$2 log=$3
    kill -TERM "$pid" 2>/dev/null
    if ! t_wait_for 10 bash -c "! kill -0 $pid 2>/dev/null"; then
        kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
        t_fail "$name" "still running 10 s after SIGTERM (killed)"; return
    fi
    wait "$pid"; t_exited "$name" $? "$log"
}
# A run's secret keys (Z85, 40 characters) in its key files: the launcher's RUNDIR/curve.keys
# and the copy each process on another host got on its stdin ("server-secret KEY",
# "client-secret KEY"), one per line.
t_key_secrets() { sed -n 's/^\(server\|client\)-secret \(.\{40\}\)$/\2/p' "$@" 2>/dev/null; }
t_no_secret_on_cmdlines() { # NAME RUNDIR MINPROCS KEYFILE...: while the run is up, neither of
    # the run's two secret keys (read from the KEYFILEs) is on the command line of any process
    # on the machine; the scan counts only when it saw at least MINPROCS processes of RUNDIR (the
    # keys and the folder name are in files, so that grep does not find its own command line)
    local name=$1 rundir=$2 minprocs=$3 nsec nrun leaks f; shift 3
    t_key_secrets "$@" | sort -u >"$T_TMP/secrets"
    nsec=$(wc -l <"$T_TMP/secrets")
    echo "$rundir/" >"$T_TMP/rundir"
    nrun=$(grep -alF -f "$T_TMP/rundir" /proc/[0-9]*/cmdline 2>/dev/null | wc -l)
    leaks=$(grep -alF -f "$T_TMP/secrets" /proc/[0-9]*/cmdline 2>/dev/null)
    if [ -n "$leaks" ]; then
        t_fail "$name" "a secret key of the run in the command line of: $(for f in $leaks; do
            echo; echo "${f%/cmdline}: $(tr '\0' ' ' <"$f" 2>/dev/null | cut -c1-300)"; done)"
    elif [ "$nsec" -ne 2 ] || [ "$nrun" -lt "$minprocs" ]; then
        t_fail "$name" "scan not meaningful: $nsec distinct secret keys (2 expected) in $# key files, $nrun processes of the run seen ($minprocs at least)"
    else t_ok "$name (both secret keys from $# key files; $nrun processes of the run among those scanned)"; fi
}
t_kill_held_student0() { # PIPE STEP RUNDIR PEERS ARGS...: the image stages' kill test
    # Runs pipelines/PIPE.pipe ARGS --set run=RUNDIR and SIGKILLs student.0 once it logged its
    # checkpoint at STEP. The kill must land before the run ends, so student.0 is held rather
    # than raced: the run's msdpipe is a copy in a folder whose msd-student is a wrapper (PEERS:
    # the other msd-* it links, e.g. "data teacher critic") that makes student.0's temporary
    # file of the step-STEP grid (grid-NNNNNNN.png.tmp.PID, PID its own, which exec keeps) a
    # FIFO: its open blocks (heartbeats go on under proc_keepalive) until the kill. Checks that
    # the launcher exits non-zero naming the student and that student.0 did not finish (the wait
    # for the checkpoint ends when the launcher does, else after 600 s: an ASan run on a loaded
    # machine took 2.6 s a step); leaves the launcher's log in b-kill.log and removes the FIFO.
    local pipe=$1 step=$2 run=$3 peers=$4; shift 4
    local hold=$T_TMP/hold grid p
    grid=$(printf 'grid-%07d.png.tmp' "$step")
    mkdir -p "$hold" "$run/grids/student.0"
    cp "$BIN/msdpipe" "$hold/"
    for p in $peers; do ln -sf "$BIN/msd-$p" "$hold/msd-$p"; done
    printf '#!/bin/sh\ncase " $* " in *" --name student.0 "*) mkfifo "%s/grids/student.0/%s.$$";; esac\nexec "%s/msd-student" "$@"\n' \
        "$run" "$grid" "$BIN" >"$hold/msd-student"
    chmod +x "$hold/msd-student"
    "$hold/msdpipe" up "$MSD_TOP/pipelines/$pipe.pipe" "$@" --set run="$run" 2>b-kill.log &
    local lpid=$! spid rc
    trap "kill $lpid 2>/dev/null; rm -rf '$T_TMP'" EXIT
    trap 'exit 143' TERM
    t_wait_for 600 bash -c "grep -q 'student.0\] INFO checkpoint .* at step $step' b-kill.log || ! kill -0 $lpid 2>/dev/null"
    spid=$(pgrep -f -- "--name student.0 --control ipc://.*/$pipe-$lpid/" | head -n 1)
    if [ -n "$spid" ]; then kill -9 "$spid"; fi
    t_wait_for 20 bash -c "! kill -0 $lpid 2>/dev/null" || kill "$lpid"
    wait "$lpid"; rc=$?
    t_check "B: the launcher exits non-zero after student.0 is killed" test "$rc" -ne 0
    t_check "B: the launcher names the killed student" grep -qE "student.0 \(pid $spid\).*(signal 9|SIGKILL|killed)" b-kill.log
    t_check "B: student.0 did not finish" bash -c "! grep -q 'student.0\] INFO finished' b-kill.log"
    rm -f "$run/grids/student.0/$grid".*
}

t_slurm_testbed() { # GPUS CHECK...: the private two-node Slurm of tests/slurm-testbed for this test
    # Starts it (GPUS > 0: that many fake GPUs a node, MSD_TESTBED_GPUS), stops it at exit
    # whatever happens, points Slurm's commands at it (SLURM_CONF, /usr/sbin on PATH) and leaves
    # its folder in T_SLURM_DIR. Where it cannot start (exit 77: not root, a package missing)
    # every CHECK is counted as skipped with its reason and the test ends; any other failure
    # ends the test failed.
    local gpus=$1 rc why c; shift
    T_SLURM_TB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/slurm-testbed"
    T_SLURM_DIR=
    trap '[ -n "$T_SLURM_DIR" ] && "$T_SLURM_TB" stop "$T_SLURM_DIR" >/dev/null 2>&1; rm -rf "$T_TMP"' EXIT
    if [ "$gpus" -gt 0 ]; then T_SLURM_DIR=$(MSD_TESTBED_GPUS=$gpus timeout 120 "$T_SLURM_TB" start 2>"$T_TMP/testbed.err")
    else T_SLURM_DIR=$(timeout 120 "$T_SLURM_TB" start 2>"$T_TMP/testbed.err"); fi
    rc=$?
    if [ "$rc" -eq 77 ]; then
        why=$(tail -n 1 "$T_TMP/testbed.err")
        for c in "$@"; do t_skip "$c" "$why"; done
        t_end; exit
    elif [ "$rc" -ne 0 ] || [ -z "$T_SLURM_DIR" ]; then
        t_fail "slurm testbed" "start failed (status $rc): $(tail -n 5 "$T_TMP/testbed.err")"
        t_end; exit
    fi
    eval "$("$T_SLURM_TB" env "$T_SLURM_DIR")"
    export PATH=$PATH:/usr/sbin
}

t_end() {
    if [ "$T_SKIPPED" -gt 0 ]; then
        echo "# $(basename "$0"): $T_PASSED passed, $T_FAILED failed, $T_SKIPPED skipped"
    else
        echo "# $(basename "$0"): $T_PASSED passed, $T_FAILED failed"
    fi
    [ "$T_FAILED" -eq 0 ]
}
