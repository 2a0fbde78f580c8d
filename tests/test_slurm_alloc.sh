#!/usr/bin/env bash
# test_slurm_alloc.sh: `msdpipe up --slurm` outside an allocation (msdpipe requests it with
# salloc and runs itself inside it) and gpu= on Slurm nodes (a step with one GPU of its own,
# --gpu 0), docs/SCALE.md, against the private two-node cluster of tests/slurm-testbed started
# with MSD_TESTBED_GPUS=2 (two fake GPUs per node: GRES gpu on mknod'ed copies of /dev/null;
# this machine needs no GPU). Where the cluster cannot start every check is counted as skipped
# with the testbed's reason, never passed.
#  - the toy's stage 2 with K=2 and --slurm, no SLURM_JOB_ID: msdpipe says it requests 2 nodes
#    (one per student replica), finishes with status 0, student.0 on n1, student.1 on n2;
#  - the same stage 2 with gpu=1 on the students and critics (a copy of mog_stage2.pipe) and
#    `host n1/n2 bindir=WRAP`, WRAP/msd-ROLE recording SLURMD_NODENAME, CUDA_VISIBLE_DEVICES and
#    the argv, then running the real binary without --gpu: the allocation asks for gpu:2 per
#    node, every gpu= process got `--gpu 0` and a GPU of its own from Slurm (on each node the two
#    gpu= processes have two different one-GPU CUDA_VISIBLE_DEVICES);
#  - mog_serve through the self-allocation: 12 interleaved stdin lines answered in input order,
#    byte for byte as by a one-host run;
#  - SIGTERM, and SIGINT, to the outer msdpipe mid-run: it exits 128+N, and no job, no step
#    (squeue) and no process of the run (pgrep on the run folder) is left (bound 30 s, polled);
#  - an impossible request (--slurm-nodes 5 on two nodes, salloc bounded by MSDPIPE_SALLOC=
#    --immediate=5): status 1 and the error names the missing allocation, within 60 s;
#  - `msdpipe check --slurm`: without an allocation it prints the request (nodes, GPUs per node)
#    and each process's node slot; inside `salloc -N2` the plan places replica k on n(k+1).
# The testbed is stopped at the end whatever happens (trap). Every wait is bounded.
. "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
BINABS=$(cd "$BIN" && pwd)
M="$BINABS/msdpipe"
t_slurm_testbed 2 "self-allocated stage 2" "gpu= steps get their own GPU" "serving through the self-allocation" \
    "SIGTERM/SIGINT to the outer msdpipe" "an impossible request" "check --slurm"
unset SLURM_JOB_ID SLURM_JOBID SLURM_JOB_NODELIST SLURM_NODELIST

run=$T_TMP/mog
RD=$T_TMP/rd
mkdir -p "$RD" && chmod 700 "$RD"
S=(--set K=2 --set steps=20 --set batch=32 --set warmup=2 --set ttur=1 --set ckpt_every=10 --set log_every=10
   --set net=mlp,width=16,depth=2 --set ready_timeout=60 --set run="$run" --run-dir "$RD")
t_check "partition K=2" "$M" up mog_partition --set K=2 --set run="$run" --run-dir "$RD" 2>"$T_TMP/part.log"

# 1. stage 2 with --slurm and no allocation
MSDPIPE_VERBOSE=1 MSD_THREADS=1 timeout 120 "$M" up mog_stage2 "${S[@]}" --slurm >"$T_TMP/s2.out" 2>"$T_TMP/s2.log" </dev/null
rc=$?
placed=$(grep -o 'slurm: student\.[01] on node n[12]' "$T_TMP/s2.log" | sort | tr '\n' ';')
if [ "$rc" -eq 0 ] && grep -q '^\[msdpipe\] INFO no Slurm allocation .*requesting 2 nodes.*: salloc --nodes=2 ' "$T_TMP/s2.log" &&
   [ "$placed" = "slurm: student.0 on node n1;slurm: student.1 on node n2;" ] && [ -s "$run/ckpt/student.1.safetensors" ]; then
    t_ok "stage 2 K=2 with --slurm and no allocation: salloc --nodes=2, student.0 on n1, student.1 on n2, status 0"
else t_fail "self-allocated stage 2" "status $rc, placed '$placed': $(grep -E 'ERROR|WARN' "$T_TMP/s2.log" | head -n 6) ... $(grep -v DEBUG "$T_TMP/s2.log" | tail -n 4)"; fi

# 2. gpu= processes: steps with a GPU of their own; WRAP/msd-ROLE records what each got
W=$T_TMP/wrap
mkdir -p "$W"
for r in teacher data critic student; do
    cat >"$W/msd-$r" <<EOF
#!/bin/sh
# records the node, CUDA_VISIBLE_DEVICES and argv, then runs the real binary without --gpu N
echo "\$(basename "\$0") node=\$SLURMD_NODENAME cvd=\${CUDA_VISIBLE_DEVICES-unset} argv=\$*" >>"$T_TMP/wrap.log"
n=\$#; skip=0
for a in "\$@"; do
    if [ \$skip = 1 ]; then skip=0
    elif [ "\$a" = --gpu ]; then skip=1
    else set -- "\$@" "\$a"; fi
done
shift \$n
exec "$BINABS/\$(basename "\$0")" "\$@"
EOF
    chmod +x "$W/msd-$r"
done
sed -e 's/^proc critic\[k in 0\.\.\$K-1\] /&gpu=1 /' -e 's/^proc student\[k in 0\.\.\$K-1\] /&gpu=1 /' \
    "$repo/pipelines/mog_stage2.pipe" >"$T_TMP/gpu.pipe"
printf 'host n1 bindir=%s\nhost n2 bindir=%s\n' "$W" "$W" >>"$T_TMP/gpu.pipe"
rm -rf "$run/ckpt" "$run/metrics.jsonl"
MSDPIPE_VERBOSE=1 MSD_THREADS=1 timeout 120 "$M" up "$T_TMP/gpu.pipe" "${S[@]}" --set mix="$repo/pipelines/mog8.mix" --slurm \
    >"$T_TMP/gpu.out" 2>"$T_TMP/gpu.log" </dev/null
rc=$?
bad=""
[ "$(grep -c -- '--gpu' "$T_TMP/wrap.log" 2>/dev/null)" -eq 4 ] || bad="$bad; not 4 processes with --gpu"
grep -q -- '--gpu [1-9]' "$T_TMP/wrap.log" && bad="$bad; a --gpu other than 0"
for node in n1 n2; do
    g=$(grep -E "^msd-(student|critic) node=$node " "$T_TMP/wrap.log" | grep -o 'cvd=[^ ]*' | sort -u)
    [ "$(echo "$g" | grep -c '^cvd=[0-9]$')" -eq 2 ] || bad="$bad; $node: the gpu= processes' CUDA_VISIBLE_DEVICES '$(echo $g)' (want two different single GPUs)"
done
grep -q 'salloc --nodes=2 .*--gres=gpu:2 ' "$T_TMP/gpu.log" || bad="$bad; the allocation does not ask for gpu:2 per node"
grep -q '^\[msdpipe\] DEBUG student.1: srun .*--gres=gpu:1 .*--nodelist=n2 ' "$T_TMP/gpu.log" || bad="$bad; student.1's srun has no --gres=gpu:1"
if [ "$rc" -eq 0 ] && [ -z "$bad" ]; then
    t_ok "gpu= processes: srun --gres=gpu:1, --gpu 0, a different GPU each on a node ($(grep -E '^msd-(student|critic)' "$T_TMP/wrap.log" | awk '{ print $2, $3 }' | sort | tr '\n' ' '))"
else t_fail "gpu= steps" "status $rc$bad: $(cut -c1-60 "$T_TMP/wrap.log" 2>&1 | tr '\n' ' ') $(grep -v DEBUG "$T_TMP/gpu.log" | tail -n 6)"; fi

# 3. serving through the self-allocation (the stage-2 checkpoints of step 1's net, retrained above)
for i in 1 2; do printf 'north 2\neast\nsouthwest 3\nsouth\nwest 2\nnortheast\n'; done >"$T_TMP/serve.in"
V=(--set K=2 --set run="$run" --set net=mlp,width=16,depth=2 --set ready_timeout=60 --run-dir "$RD")
timeout 120 "$M" up mog_serve "${V[@]}" <"$T_TMP/serve.in" >"$T_TMP/serve.ref" 2>"$T_TMP/serve.ref.log"
timeout 120 "$M" up mog_serve "${V[@]}" --slurm <"$T_TMP/serve.in" >"$T_TMP/serve.out" 2>"$T_TMP/serve.log"
rc=$?
lines=$(wc -l <"$T_TMP/serve.out")
if [ "$rc" -eq 0 ] && [ "$lines" -eq 20 ] && cmp -s "$T_TMP/serve.out" "$T_TMP/serve.ref" && grep -q 'INFO no Slurm allocation' "$T_TMP/serve.log"; then
    t_ok "mog_serve through the self-allocation: 12 lines answered (20 samples) in order, as on one host"
else t_fail "serving through the self-allocation" "status $rc, $lines of 20 lines, $(diff "$T_TMP/serve.ref" "$T_TMP/serve.out" | head -n 4 | tr '\n' ' ') $(tail -n 6 "$T_TMP/serve.log")"; fi

# 4. SIGTERM and SIGINT to the outer msdpipe mid-run: nothing left (polled, bound 30 s)
left() { # what is left of the runs: jobs, steps, processes
    squeue -h -o '%i %j' 2>&1
    squeue -h -s -o '%i %j' 2>&1
    pgrep -af -- "$RD/"
}
nothing_left() { [ -z "$(left)" ]; } # a function: a `bash -c '... pgrep -f RD'` would find itself
for sig in TERM INT; do
    rm -rf "$run/ckpt" "$run/metrics.jsonl"
    MSD_THREADS=1 timeout 120 "$M" up mog_stage2 "${S[@]}" --set steps=100000 --set log_every=200 --slurm \
        >/dev/null 2>"$T_TMP/sig.$sig.log" </dev/null &
    P=$!
    t_wait_for 60 grep -qs '^\[student.1\] INFO step 200/' "$T_TMP/sig.$sig.log"
    steps=$(squeue -h -s -o '%j' | grep -c '^msdpipe-')
    kill -"$sig" "$P"
    t_wait_for 30 bash -c "! kill -0 $P 2>/dev/null"
    kill -9 "$P" 2>/dev/null; wait "$P"; rc=$?
    t_wait_for 30 nothing_left
    want=$((128 + $(kill -l "$sig")))
    if [ "$steps" -eq 6 ] && [ "$rc" -eq "$want" ] && [ -z "$(left)" ]; then
        t_ok "SIG$sig to the outer msdpipe (6 steps running): status $rc, no job, step or process left"
    else t_fail "SIG$sig to the outer msdpipe" "steps before $steps, status $rc (want $want), left: '$(left | tr '\n' ' ')' $(grep -E 'ERROR|error' "$T_TMP/sig.$sig.log" | head -n 5) ... $(grep -v DEBUG "$T_TMP/sig.$sig.log" | tail -n 3)"; fi
done

# 5. an impossible request: a clear error in bounded time
t0=$(date +%s)
MSDPIPE_SALLOC=--immediate=5 timeout 60 "$M" up mog_stage2 "${S[@]}" --slurm --slurm-nodes 5 >/dev/null 2>"$T_TMP/imp.log" </dev/null
rc=$?
dt=$(( $(date +%s) - t0 ))
if [ "$rc" -eq 1 ] && grep -q '^\[msdpipe\] ERROR --slurm: no allocation: salloc ended with status [0-9]* before starting the pipeline (5 nodes' "$T_TMP/imp.log" &&
   [ -z "$(squeue -h -o %i)" ]; then
    t_ok "--slurm-nodes 5 on two nodes: status 1 after ${dt} s (bound 60 s), '$(grep ERROR "$T_TMP/imp.log" | head -n 1 | cut -c1-80)...'"
else t_fail "an impossible request" "status $rc after ${dt} s: $(tail -n 4 "$T_TMP/imp.log")"; fi

# 6. msdpipe check --slurm: outside an allocation what up would request and where each process
# would go; inside one (salloc -N2) the placement on its nodes; nothing is started either way
"$M" check "$T_TMP/gpu.pipe" --set K=2 --slurm >"$T_TMP/check.out" 2>&1; rc=$?
if [ "$rc" -eq 0 ] && grep -q "^slurm: no allocation .*would request 2 nodes with 2 GPUs per node (salloc --nodes=2 --gres=gpu:2 --mincpus=2" "$T_TMP/check.out" &&
   grep -q "^slurm: student.1 on node 2 of 2 (replica 1: node k mod N), a step with one GPU" "$T_TMP/check.out" &&
   grep -q "^slurm: teacher on node 1 of 2$" "$T_TMP/check.out" && [ -z "$(squeue -h -o %i)" ]; then
    t_ok "check --slurm without an allocation: the request (2 nodes, gpu:2 each) and each process's node, no job"
else t_fail "check --slurm without an allocation" "status $rc: $(grep slurm "$T_TMP/check.out" | head -n 4)"; fi
timeout 60 salloc -N2 "$M" check mog_stage2 --set K=2 --slurm >"$T_TMP/check2.out" 2>"$T_TMP/check2.log" </dev/null; rc=$?
hosts=$(awk '/^[a-z]+\.[0-9]+$|^(teacher|data)$/ { p = $1 } /^  host / { print p "=" $2 }' "$T_TMP/check2.out" | sort | tr '\n' ' ')
want='critic.0=n1 critic.1=n2 data=n1 student.0=n1 student.1=n2 teacher=n1 '
if [ "$rc" -eq 0 ] && [ "$hosts" = "$want" ]; then t_ok "check --slurm inside salloc -N2: replica k on node n(k+1), the rest on n1"
else t_fail "check --slurm inside an allocation" "status $rc, hosts '$hosts' (want '$want'): $(tail -n 3 "$T_TMP/check2.log")"; fi
t_end
