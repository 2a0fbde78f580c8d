#!/usr/bin/env bash
# test_slurm.sh: `msdpipe up --slurm` (docs/SCALE.md) against a real Slurm: the private
# two-node cluster of tests/slurm-testbed (nodes n1 and n2 on this machine). Where the cluster
# cannot start (not root, slurm-wlm/munge missing, a daemon that does not come up) every check
# is counted as skipped with the testbed's reason, never passed.
#  - srun -N2 places a task on each node (n1 and n2): the testbed is a two-node cluster;
#  - the toy's stage 2 with K=2 under `salloc -N2 ... --slurm`: student.0 and critic.0 on n1,
#    student.1 and critic.1 on n2 (steps named msdpipe-PID.NAME, started with --nodelist); links
#    across nodes are tcp with --curve-keys, student.1's link to its critic on n2 stays ipc;
#    the four final checkpoints are byte for byte those of a one-host run with the same seed
#    (the toy is exact: tests/test_restart.sh);
#  - mog_serve under `salloc -N2 ... --slurm` (router and student.0 on n1, student.1 on n2,
#    the router's link to student.1 tcp+Curve): 30 stdin lines of both students' classes,
#    interleaved, are answered in input order, byte for byte as by a one-host run;
#  - a peer at student.1's tcp endpoint while it serves (tests/curve_peer.py): the run's client
#    key is admitted, a fresh client key is refused (ZAP 400) and student.1 logs it, a peer
#    without CurveZMQ is refused in the handshake; the run still answers and ends with status 0;
#  - scancel of student.1's step mid-run: the launcher names the process and its node, exits
#    non-zero, and inside the allocation no step of it (squeue -s) and no process of the run
#    (pgrep on the run folder) is left 30 s after it exits (polled: Slurm may list a cancelled
#    step for a moment while it finishes it).
#  - kill -9 of the launcher mid-run (inside the allocation): its 6 steps gone from squeue -s and
#    no process of the run left within 60 s (measured: ~0.2 s; the number is printed).
# The testbed is stopped at the end whatever happens (trap). Every wait is bounded.
. "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
M="$(cd "$BIN" && pwd)/msdpipe"
t_slurm_testbed 0 "slurm testbed" "stage 2 across two nodes" "a cancelled step stops the run"
nodes=$(timeout 60 srun -N2 sh -c 'echo $SLURMD_NODENAME' 2>"$T_TMP/srun.err" | sort | tr '\n' ' ')
if [ "$nodes" = "n1 n2 " ]; then t_ok "srun -N2 runs a task on n1 and on n2"
else t_fail "srun -N2" "nodes '$nodes': $(tail -n 3 "$T_TMP/srun.err")"; fi

run=$T_TMP/mog
RD=$T_TMP/rd
mkdir -p "$RD" && chmod 700 "$RD"
S=(--set K=2 --set steps=60 --set batch=64 --set warmup=5 --set ttur=2 --set ckpt_every=30 --set log_every=10
   --set net=mlp,width=64,depth=3 --set ready_timeout=60 --set run="$run" --run-dir "$RD")
same_ckpts() { # DIR: the four final checkpoints equal the reference run's
    local f
    for f in student.0 student.1 critic.0 critic.1; do
        cmp -s "$1/$f.safetensors" "$T_TMP/ref/$f.safetensors" || { echo "$f differs"; return 1; }
    done
}

t_check "partition K=2" "$M" up mog_partition --set K=2 --set run="$run" --run-dir "$RD" 2>"$T_TMP/part.log"
# one CPU thread per process in both runs (the one-host run shares one core: taskset; the steps
# get MSD_THREADS=1 through srun's environment): a sum split over more threads rounds otherwise
if timeout 300 taskset -c 0 "$M" up mog_stage2 "${S[@]}" 2>"$T_TMP/ref.log" </dev/null; then
    cp -r "$run/ckpt" "$T_TMP/ref"
    t_ok "the one-host reference run"
else t_fail reference "$(tail -n 20 "$T_TMP/ref.log")"; t_end; exit; fi

# the same run, every process a job step of a two-node allocation
rm -rf "$run/ckpt" "$run/metrics.jsonl"
MSDPIPE_VERBOSE=1 MSD_THREADS=1 timeout 300 salloc -N2 "$M" up mog_stage2 "${S[@]}" --slurm >"$T_TMP/slurm.out" 2>"$T_TMP/slurm.log" </dev/null
rc=$?
if [ "$rc" -eq 0 ]; then t_ok "stage 2 under salloc -N2 --slurm finished"
else t_fail "stage 2 under salloc -N2 --slurm" "status $rc: $(grep -v DEBUG "$T_TMP/slurm.log" | tail -n 15)"; fi
placed=$(grep -o 'slurm: [a-z]*\.[01] on node n[12]' "$T_TMP/slurm.log" | sort | tr '\n' ';')
want='slurm: critic.0 on node n1;slurm: critic.1 on node n2;slurm: student.0 on node n1;slurm: student.1 on node n2;'
if [ "$placed" = "$want" ]; then t_ok "replica k on node k mod 2"
else t_fail "placement" "got '$placed'"; fi
cmd1=$(grep '^\[msdpipe\] DEBUG student.1: ' "$T_TMP/slurm.log" | head -n 1)
if echo "$cmd1" | grep -q -- "srun .*--nodelist=n2 --job-name=msdpipe-[0-9]*.student.1 -- sh -c " &&
   echo "$cmd1" | grep -q -- "'--curve-keys'" &&
   echo "$cmd1" | grep -q -- "'data=tcp://127.0.0.1:[0-9]*'" &&
   echo "$cmd1" | grep -q -- "'critic=ipc://"; then
    t_ok "student.1 is a step on n2: tcp+Curve to data on n1, ipc to its critic on n2"
else t_fail "student.1's step command line" "$cmd1"; fi
if d=$(same_ckpts "$run/ckpt"); then t_ok "checkpoints byte for byte those of the one-host run"
else t_fail "checkpoints across nodes" "$d"; fi

# serving across the nodes: the router on n1, student.0 on n1, student.1 on n2 (tcp+Curve from
# the router); stdin lines of both students' classes interleaved are answered in input order,
# byte for byte as on one host (the samples are seeded per request)
for i in 1 2 3 4 5; do printf 'north 2\neast\nsouthwest 3\nsouth\nwest 2\nnortheast\n'; done >"$T_TMP/serve.in"
V=(--set K=2 --set run="$run" --set net=mlp,width=64,depth=3 --set ready_timeout=60 --run-dir "$RD")
timeout 120 "$M" up mog_serve "${V[@]}" <"$T_TMP/serve.in" >"$T_TMP/serve.ref" 2>"$T_TMP/serve.ref.log"
MSDPIPE_VERBOSE=1 timeout 120 salloc -N2 "$M" up mog_serve "${V[@]}" --slurm <"$T_TMP/serve.in" >"$T_TMP/serve.out" 2>"$T_TMP/serve.log"
rc=$?
lines=$(wc -l <"$T_TMP/serve.out")
if [ "$rc" -eq 0 ] && [ "$lines" -eq 50 ] && cmp -s "$T_TMP/serve.out" "$T_TMP/serve.ref"; then
    t_ok "mog_serve under salloc -N2 --slurm: 30 lines answered (50 samples) in order, as on one host"
else t_fail "mog_serve across nodes" "status $rc, $lines of 50 lines, $(diff "$T_TMP/serve.ref" "$T_TMP/serve.out" | head -n 4 | tr '\n' ' ') $(grep -v DEBUG "$T_TMP/serve.log" | tail -n 8)"; fi
placed=$(grep -o 'slurm: [a-z]*[.0-9]* on node n[12]' "$T_TMP/serve.log" | sort | tr '\n' ';')
cmdr=$(grep '^\[msdpipe\] DEBUG router: ' "$T_TMP/serve.log" | head -n 1)
if [ "$placed" = "slurm: router on node n1;slurm: student.0 on node n1;slurm: student.1 on node n2;" ] &&
   echo "$cmdr" | grep -q -- "--nodelist=n1 " && echo "$cmdr" | grep -q -- "'--curve-keys'" &&
   echo "$cmdr" | grep -q -- "'student.0=ipc://" && echo "$cmdr" | grep -q -- "'student.1=tcp://127.0.0.1:[0-9]*'"; then
    t_ok "serving: router and student.0 on n1, student.1 on n2, the router reaches student.1 over tcp+Curve, student.0 over ipc"
else t_fail "serving placement" "placed '$placed'; router: $cmdr"; fi

# a peer without the run's keys, at student.1's tcp endpoint on n2 while the run serves (stdin
# held open through a fifo): tests/curve_peer.py (libzmq through ctypes) with the run's own
# client keys is admitted (the control: the endpoint is live and the peer works), with a fresh
# client key is refused in the handshake (ZAP status 400) and student.1 logs the refusal, and
# without CurveZMQ is refused (mechanism mismatch); the run then still answers and ends cleanly
mkfifo "$T_TMP/serve.fifo"
MSDPIPE_VERBOSE=1 timeout 120 salloc -N2 "$M" up mog_serve "${V[@]}" --slurm <"$T_TMP/serve.fifo" >"$T_TMP/peer.out" 2>"$T_TMP/peer.log" &
PPID_=$!
exec 7>"$T_TMP/serve.fifo"
peer=()
if t_wait_for 60 grep -q 'INFO pipeline up' "$T_TMP/peer.log"; then
    ep=$(grep -o "'student.1=tcp://[0-9.]*:[0-9]*'" "$T_TMP/peer.log" | head -n 1 | tr -d "'" | cut -d= -f2)
    keys=$(grep -o 'pipeline up: .*run directory [^)]*' "$T_TMP/peer.log" | sed 's/.*run directory //')/curve.keys
    for how in "run $keys" "stranger $keys" plain; do
        peer+=("$(timeout 30 python3 "$here/curve_peer.py" "$ep" $how 2>&1)")
    done
    # while it serves: no secret key of the run on the command line of any process on the
    # machine (the steps get their key copies on srun's stdin), and the copies' folders and
    # files closed to others (the keys and folder names are in files: grep does not find itself)
    rdir=$(dirname "$keys")
    ncopies=$(ls "$rdir"/*/*.keys 2>/dev/null | wc -l)
    if [ "$ncopies" -lt 3 ]; then t_fail "no secret on a command line under --slurm" "$ncopies step key copies in $rdir (3 expected)"
    else t_no_secret_on_cmdlines "under --slurm no secret key of the run on a command line ($ncopies step copies)" \
        "$rdir" 3 "$keys" "$rdir"/*/*.keys; fi
    bad=$(find "$rdir" -mindepth 1 \( -type d ! -perm 0700 \) -o \( -name '*.keys' ! -perm 0600 \) -o \( -name curve.keys ! -perm 0600 \) 2>/dev/null)
    if [ -z "$bad" ] && [ "$(stat -c %a "$rdir")" = 700 ]; then t_ok "the run folder, its node folders (0700) and every key file (0600) closed to others"
    else t_fail "modes under --slurm" "$(stat -c '%a %n' "$rdir" $bad)"; fi
fi
( echo north >&7 ) 2>/dev/null; exec 7>&- # a subshell: a run that died must not SIGPIPE the test
t_wait_for 60 bash -c "! kill -0 $PPID_ 2>/dev/null"
kill -9 "$PPID_" 2>/dev/null; wait "$PPID_"; rc=$?
if [ "${peer[0]}" = admitted ] && [ "${peer[1]}" = "refused auth (400)" ] &&
   grep -q '^\[student.1\] WARN CurveZMQ: refused a client' "$T_TMP/peer.log"; then
    t_ok "$ep on n2: the run's client key admitted, a stranger's refused (ZAP 400) and logged by student.1"
else t_fail "a stranger's key at $ep" "peers: '${peer[0]}' '${peer[1]}'; $(grep -v DEBUG "$T_TMP/peer.log" | tail -n 6)"; fi
case "${peer[2]}" in
"refused "*) t_ok "$ep: a peer without CurveZMQ is refused in the handshake (${peer[2]})" ;;
*) t_fail "a peer without CurveZMQ at $ep" "'${peer[2]}'" ;;
esac
if [ "$rc" -eq 0 ] && [ "$(cut -d, -f1 "$T_TMP/peer.out")" = north ]; then
    t_ok "after the refused peers the run answers its line and ends with status 0"
else t_fail "the run after the refused peers" "status $rc, output '$(cat "$T_TMP/peer.out")'"; fi

# a step cancelled mid-run: inside the allocation, the launcher's status, then what is left
cat >"$T_TMP/inalloc.sh" <<EOF
#!/bin/sh
echo \$SLURM_JOB_ID > "$T_TMP/jobid"
"$M" up mog_stage2 ${S[*]} --set steps=100000 --slurm 2>"$T_TMP/kill.log" </dev/null
echo \$? > "$T_TMP/kill.rc"
# a cancelled step may show in squeue while Slurm finishes it: allow 30 s (polled) for that
i=0
while [ \$i -lt 300 ]; do
    squeue -h -s -j \$SLURM_JOB_ID -o '%i %j' | grep msdpipe > "$T_TMP/steps.left"
    pgrep -af -- "$RD/" > "$T_TMP/procs.left"
    [ -s "$T_TMP/steps.left" ] || [ -s "$T_TMP/procs.left" ] || break
    sleep 0.1; i=\$((i + 1))
done
exit 0
EOF
chmod +x "$T_TMP/inalloc.sh"
rm -rf "$run/ckpt" "$run/metrics.jsonl"
timeout 300 salloc -N2 "$T_TMP/inalloc.sh" >"$T_TMP/salloc2.out" 2>&1 </dev/null &
SPID=$!
step=
if t_wait_for 120 grep -qs '^\[student.1\] INFO step 20/' "$T_TMP/kill.log"; then
    job=$(cat "$T_TMP/jobid")
    step=$(squeue -h -s -j "$job" -o '%i %j' | awk '$2 ~ /^msdpipe-[0-9]+\.student\.1$/ { print $1 }')
    [ -n "$step" ] && scancel "$step"
fi
t_wait_for 200 bash -c "! kill -0 $SPID 2>/dev/null"
kill -9 "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null
if [ -z "$step" ]; then t_fail "scancel of student.1's step" "no step found: $(tail -n 10 "$T_TMP/kill.log")"
else
    krc=$(cat "$T_TMP/kill.rc" 2>/dev/null)
    if [ -n "$krc" ] && [ "$krc" -ne 0 ] && grep -q 'ERROR process student.1 (pid [0-9]*, node n2) ' "$T_TMP/kill.log"; then
        t_ok "scancel of step $step: the launcher names student.1 and node n2, exits $krc"
    else t_fail "scancel of student.1's step" "status '$krc': $(grep -v DEBUG "$T_TMP/kill.log" | tail -n 10)"; fi
    if [ -f "$T_TMP/steps.left" ] && [ ! -s "$T_TMP/steps.left" ] && [ -f "$T_TMP/procs.left" ] && [ ! -s "$T_TMP/procs.left" ]; then
        t_ok "no step (squeue -s) and no process of the run left in the allocation"
    else t_fail "left behind" "steps: $(cat "$T_TMP/steps.left" 2>&1); processes: $(cat "$T_TMP/procs.left" 2>&1)"; fi
fi

# kill -9 of the launcher mid-run, inside the allocation: every srun gets SIGTERM (the launcher's
# PR_SET_PDEATHSIG) and the processes stop when its heartbeats stop (PROC_LIVENESS_MS, 3 s);
# measured: the time from the kill until squeue -s lists none of its steps and no process of the
# run is left (bound: 60 s, generous on a loaded machine; docs/SCALE.md has the number)
cat >"$T_TMP/kill9.sh" <<EOF
#!/bin/bash
"$M" up mog_stage2 ${S[*]} --set steps=100000 --slurm 2>"$T_TMP/kill9.log" </dev/null &
L=\$!
i=0
while [ \$i -lt 1200 ] && ! grep -qs '^\\[student.1\\] INFO step 20/' "$T_TMP/kill9.log"; do sleep 0.1; i=\$((i + 1)); done
squeue -h -s -j \$SLURM_JOB_ID -o '%j' | grep -c "^msdpipe-\$L\\." > "$T_TMP/kill9.before"
kill -9 \$L
t0=\$(date +%s%N)
i=0
while [ \$i -lt 600 ]; do
    squeue -h -s -j \$SLURM_JOB_ID -o '%i %j' | grep "msdpipe-\$L\\." > "$T_TMP/kill9.steps"
    pgrep -af -- "$RD/" > "$T_TMP/kill9.procs"
    [ -s "$T_TMP/kill9.steps" ] || [ -s "$T_TMP/kill9.procs" ] || break
    sleep 0.1; i=\$((i + 1))
done
echo \$(( (\$(date +%s%N) - t0) / 1000000 )) > "$T_TMP/kill9.ms"
EOF
chmod +x "$T_TMP/kill9.sh"
rm -rf "$run/ckpt" "$run/metrics.jsonl"
timeout 200 salloc -N2 "$T_TMP/kill9.sh" >"$T_TMP/salloc3.out" 2>&1 </dev/null
before=$(cat "$T_TMP/kill9.before" 2>/dev/null); ms=$(cat "$T_TMP/kill9.ms" 2>/dev/null)
if [ "${before:-0}" -eq 6 ] && [ -n "$ms" ] && [ "$ms" -le 60000 ] && [ ! -s "$T_TMP/kill9.steps" ] && [ ! -s "$T_TMP/kill9.procs" ]; then
    t_ok "kill -9 of the launcher: its 6 steps and every process of the run gone ${ms} ms after (bound 60 s)"
else t_fail "kill -9 of the launcher" "steps before: '$before', after ${ms:-?} ms: steps '$(cat "$T_TMP/kill9.steps" 2>&1)' processes '$(cat "$T_TMP/kill9.procs" 2>&1)'; $(tail -n 5 "$T_TMP/salloc3.out")"; fi
t_end
