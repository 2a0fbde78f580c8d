#!/usr/bin/env bash
# test_distill_stage2.sh: stage 2 (DM) on images end to end through pipelines/train_stage2.pipe
# with tiny UNets on Fashion-MNIST: K = 2 students, each with its critic, against one served
# teacher (a 5k-parameter UNet trained for 3 steps here: the test checks the machinery, not the
# images). A run writes checkpoints, metrics lines and a PNG grid per student; a student killed
# with SIGKILL after a checkpoint stops the pipeline, and the restart resumes there and ends
# with exactly (bytewise) the checkpoints of the uninterrupted run; a stage started without its
# partition file or its init checkpoint, or with a network that does not fit, stops with a
# message naming what is wrong.
. "$(dirname "$0")/lib.sh"
cd "$T_TMP"
t_need_fmnist
export OPENBLAS_NUM_THREADS=1
net=in=1,res=28,ch=4,mult=1-1,blocks=1,attn=none,classes=10
t_check "a tiny teacher (3 steps of train_teacher.pipe)" t_tiny_teacher t10 "$net"
t_check "a tiny 5-class teacher" t_tiny_teacher t5 "${net/classes=10/classes=5}" 0-4
T10=$T_TMP/t10/teacher.safetensors
mkdir -p a b bad
printf 'partition 2\n# a hand-written split of the 10 classes\n0: tshirt trouser pullover dress coat\n1: 5 6 7 8 9\n' |
    tee a/partition.txt b/partition.txt >bad/partition.txt
# teacher_max_batch = batch: one student's request per teacher call, so the exact-resume check
# below does not rest on the teacher's answers being independent of how the two students'
# requests happen to be batched together (on the CPU they appear to be: the check also passed
# with batching on, but nothing promises it)
small=(--set K=2 --set teacher="$T10" --set data=fmnist:test --set steps=4 --set batch=4 --set ttur=2
       --set warmup=2 --set lr=1e-3 --set critic_lr=1e-3 --set ckpt_every=2 --set log_every=1 --set grid_every=2
       --set grid_per_class=2 --set teacher_threads=1 --set teacher_max_batch=4 --set seed=5)

# inputs missing or wrong: a message naming the file, status 2 (not a signal), nothing trained
"$BIN/msdpipe" up train_stage2 "${small[@]}" --set run="$T_TMP/nopart" 2>nopart.log; rc=$?
t_check "without a partition file the stage fails" test "$rc" -ne 0
# (the data process and the students both check; whichever stops first stops the pipeline)
t_check "... a process names the missing partition file" \
    grep -qE "(student\.[01]|data)\] ERROR --partition:? $T_TMP/nopart/partition.txt: (No such file|cannot open)" nopart.log
t_check "... and exits with status 2, not a signal" grep -qE "process (student\.[01]|data) \(pid [0-9]*\) exited with status 2" nopart.log
t_check "... no checkpoint was written" test ! -e "$T_TMP/nopart/ckpt/student.0.safetensors"
# a student alone (its peers' endpoints need not exist: it stops before it talks to them)
peers=(--connect data=ipc://$T_TMP/d --connect teacher=ipc://$T_TMP/t --connect critic=ipc://$T_TMP/c --index 0)
"$BIN/msd-student" --mode image-train --init "$T10" --partition "$T_TMP/nopart.txt" --ckpt-dir "$T_TMP/nopart" "${peers[@]}" \
    2>nopart-s.log; rc=$?
t_check "a student without its partition file exits with status 2, naming the file" \
    test "$rc" -eq 2 -a -n "$(grep "student\] ERROR --partition $T_TMP/nopart.txt: No such file" nopart-s.log)"
"$BIN/msdpipe" up train_stage2 "${small[@]}" --set run="$T_TMP/bad" --set student_init="$T_TMP/nope.safetensors" 2>noinit.log
t_check "without its init checkpoint a student stops, naming it" \
    grep -q "student.[01]\] ERROR --init $T_TMP/nope.safetensors: No such file" noinit.log
"$BIN/msdpipe" up train_stage2 "${small[@]}" --set run="$T_TMP/bad" --set critic_init="$T_TMP/nope.safetensors" 2>noinit-c.log
t_check "without its init checkpoint a critic stops, naming it" \
    grep -q "critic.[01]\] ERROR --init $T_TMP/nope.safetensors: cannot open" noinit-c.log
"$BIN/msdpipe" up train_stage2 "${small[@]}" --set run="$T_TMP/bad" --set student_init="$T_TMP/t5/teacher.safetensors" 2>cls.log
t_check "a 5-class generator is refused for a 10-class partition, saying so" \
    grep -q "student.[01]\] ERROR --partition: .*partition.txt:3: .*(the generator .*classes=5.* has 5 classes)" cls.log
"$BIN/msdpipe" up train_stage2 "${small[@]}" --set run="$T_TMP/bad" --set student_net="${net/ch=4/ch=8}" 2>spec.log
t_check "a checkpoint of another network is refused, naming both" \
    grep -q "student.[01]\] ERROR --init: $T10 holds the network '.*ch=4,.*', not '.*ch=8,.*' (--net)" spec.log

mkdir -p unk && printf 'partition 2\n0: tshirt trouser pullover dress coat\n1: sandal shirt sneaker bag unicorn\n' >unk/partition.txt
"$BIN/msdpipe" up train_stage2 "${small[@]}" --set run="$T_TMP/unk" 2>unk.log; rc=$?
t_check "a partition naming an unknown class stops the stage ($rc), naming the file, line and class" \
    bash -c "[ $rc -ne 0 ] && grep -qE '(student.[01]|data)\] ERROR .*unk/partition.txt:3: .*unicorn' unk.log && [ ! -e unk/ckpt/student.0.safetensors ]"

# A: uninterrupted
t_check "A: K=2 students, 4 steps" "$BIN/msdpipe" up train_stage2 "${small[@]}" --set run="$T_TMP/a" 2>a.log
t_check "A: both students finished" test "$(grep -c 'student\.[01]\] INFO finished 4 steps' a.log)" -eq 2
t_check "A: checkpoints of both students and both critics" \
    test -s a/ckpt/student.0.safetensors -a -s a/ckpt/student.1.safetensors -a -s a/ckpt/critic.0.safetensors -a -s a/ckpt/critic.1.safetensors
t_check "A: metrics: steps 1..4 of each student with loss_dm, loss_fake, s_per_step, eta_s" python3 - a/metrics.jsonl <<'EOF'
import json, math, sys
r = [json.loads(l) for l in open(sys.argv[1])]
ok = all(sorted(x["step"] for x in r if x["student"] == k) == list(range(1, 5)) for k in (0, 1)) and len(r) == 8
ok = ok and all(math.isfinite(x["loss_dm"]) and x["loss_fake"] > 0 and x["s_per_step"] > 0 and "eta_s" in x for x in r)
if not ok: print(r[:3])
sys.exit(not ok)
EOF
t_check "A: progress lines with s/step and time left" test "$(grep -cE 'student\.[01]\] INFO step [0-9]+/4 .* s/step .* left' a.log)" -eq 8
png() { [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]; }
t_check "A: a PNG grid per student at step 2" bash -c "$(declare -f png); png a/grids/student.0/grid-0000002.png && png a/grids/student.1/grid-0000002.png"
t_check "A: the final grids" bash -c "$(declare -f png); png a/grids/student.0/grid-0000004.png && png a/grids/student.1/grid-0000004.png"
# the after step "grid": one grid of all 10 classes through the partition, from the final students
t_check "A: the all-class grid (after step grid) is a square PNG of 10 rows of 10" python3 - a/grid.png <<'EOF2'
import struct, sys
b = open(sys.argv[1], "rb").read()
w, h = struct.unpack(">II", b[16:24])
sys.exit(not (b[:8] == b"\x89PNG\r\n\x1a\n" and w == h and w >= 280))
EOF2
t_check "A: the launcher ran it after the job" grep -q "after step grid done" a.log
"$BIN/msd-eval" students --partition a/partition.txt --students a/ckpt --n 100 --no-judge --grid a-grid.png --threads 1 2>a-grid.log
t_check "A: it is msd-eval students --no-judge's grid of the final checkpoints, byte for byte" cmp a/grid.png a-grid.png
s_step=$(python3 -c "
import json
r = [json.loads(l) for l in open('a/metrics.jsonl')]
print('%.3f' % max(x['s_per_step'] for x in r if x['step'] == 4))")
echo "tiny students: $s_step s per generator step (TTUR 2, batch 4, K=2 on this machine)"

# the generator starts as the teacher's EMA weights (a run of 0 steps checkpoints the untrained
# one) and training moves it (A's): both against msd-nn export of the teacher, tolerance 0
"$BIN/msd-nn" export --weights "$T10" --out t10-ema.safetensors >/dev/null
mkdir -p z && cp a/partition.txt z/
t_check "a run of 0 steps" "$BIN/msdpipe" up train_stage2 "${small[@]}" --set run="$T_TMP/z" --set steps=0 2>z.log
"$BIN/msd-nn" compare z/ckpt/student.0.safetensors t10-ema.safetensors --atol-frac 0 --rtol 0 >z-cmp.log 2>&1; rc=$?
t_check "the untrained generator is exactly the teacher's EMA weights ($(tail -n 1 z-cmp.log))" test "$rc" -eq 0
"$BIN/msd-nn" compare a/ckpt/student.0.safetensors t10-ema.safetensors --atol-frac 0 --rtol 0 >a-cmp.log 2>&1
t_check "A's trained generator differs from them in most tensors ($(tail -n 1 a-cmp.log))" python3 - a-cmp.log <<'EOF2'
import re, sys
t = open(sys.argv[1]).read()
m = re.search(r"compare: (\d+) tensors, (\d+) failed", t)
sys.exit(not (m and "missing" not in t and int(m.group(2)) > int(m.group(1)) // 2))
EOF2

# B: student.0 killed with SIGKILL at step 2 after its checkpoint (held there: t_kill_held_student0
# in tests/lib.sh), then resumed to step 4
t_kill_held_student0 train_stage2 2 "$T_TMP/b" "data teacher critic eval" "${small[@]}"
# the critic saves just before its student does: a kill between the two saves leaves critic.0 a
# checkpoint ahead of student.0. Made so here: A's step-4 critic.0 (the same trajectory) becomes
# B's critic.0, its step-2 one the .prev SAVE keeps; the restart must roll the critic back to it
mv b/ckpt/critic.0.safetensors b/ckpt/critic.0.safetensors.prev
cp a/ckpt/critic.0.safetensors b/ckpt/critic.0.safetensors
t_check "B: a restart runs to step 4" "$BIN/msdpipe" up train_stage2 "${small[@]}" --set run="$T_TMP/b" 2>b-resume.log
t_check "B: student.0 resumed at its step-2 checkpoint" grep -q "student.0\] INFO resuming at step 2 of 4" b-resume.log
t_check "B: ... and its critic, a checkpoint ahead, rolled back to the one before (update 2 + 2 x 2)" \
    grep -q "critic.0\] INFO resumed at update 6 from .*critic.0.safetensors.prev (RESUME " b-resume.log
for f in student.0 critic.0 student.1 critic.1; do
    t_check "B ends with A's $f checkpoint, bytewise" cmp a/ckpt/$f.safetensors b/ckpt/$f.safetensors
done
# C: a critic checkpoint without its student's (a kill between the two first saves): the
# student starts at step 0 and the critic goes back to --init's weights
mkdir -p c/ckpt && cp a/partition.txt c/ && cp a/ckpt/critic.1.safetensors c/ckpt/
t_check "C: a run whose critic.1 has a checkpoint and student.1 none" \
    "$BIN/msdpipe" up train_stage2 "${small[@]}" --set run="$T_TMP/c" 2>c.log
t_check "C: critic.1 went back to its initial weights" grep -q "critic.1\] INFO resumed at update 0 from $T10 (RESUME " c.log
t_check "C ends with A's student.1 and critic.1 checkpoints, bytewise" \
    bash -c "cmp a/ckpt/student.1.safetensors c/ckpt/student.1.safetensors && cmp a/ckpt/critic.1.safetensors c/ckpt/critic.1.safetensors"
# R: restarts within a run (restart=1): student.0 killed with SIGKILL after its step-4
# checkpoint, then critic.1 (after student.1's step-4 checkpoint, at whatever step it is by then); the launcher restarts each, the restarted critic serves nothing until its
# student's RESUME (student.1's next request is answered busy or times out, so it rolls back to
# its last checkpoint and resumes the critic there), the restarted student.0 resumes from its
# checkpoint; the run ends with the checkpoints of the same run without kills (R0), bytewise
mkdir -p r0 r && cp a/partition.txt r0/ && cp a/partition.txt r/
rs=(--set steps=24 --set ckpt_every=4 --set grid_every=0 --set timeout_ms=5000 --set peer_wait_ms=120000)
t_check "R0: 24 steps without kills" "$BIN/msdpipe" up train_stage2 "${small[@]}" "${rs[@]}" --set run="$T_TMP/r0" 2>r0.log
"$BIN/msdpipe" up train_stage2 "${small[@]}" "${rs[@]}" --set restart=1 --set run="$T_TMP/r" 2>r.log &
rpid=$!
killed=
for who in student.0 student.1; do
    if t_wait_for 300 grep -q "$who\] INFO checkpoint .* at step 4" r.log; then
        victim=${who/student.1/critic.1}
        vpid=$(pgrep -f -- "--name $victim --control ipc://.*/train_stage2-$rpid/" | head -n 1)
        [ -n "$vpid" ] && kill -9 "$vpid" && killed="$killed $victim"
    fi
done
t_wait_for 300 bash -c "! kill -0 $rpid 2>/dev/null" || kill "$rpid"
wait "$rpid"; rc=$?
t_check "R: restart=1, student.0 and critic.1 killed after step 4 ($killed): the run finishes ($rc)" \
    test "$rc" -eq 0 -a "$killed" = " student.0 critic.1"
t_check "R: the launcher restarted both" \
    test "$(grep -cE 'restarted (student.0|critic.1): pid [0-9]+ \(restart 1 of 1\)' r.log)" -eq 2
back=$(grep -o 'student.1\] WARN rolled back to step [0-9]*' r.log | head -n 1 | grep -o '[0-9]*$')
t_check "R: student.1 rolled back to its last checkpoint (step ${back:-none}) and resumed its critic there (update 2 + 2 x step)" \
    bash -c "[ -n '$back' ] && [ \$(( ${back:-1} % 4 )) -eq 0 ] && grep -qE 'critic.1\] INFO resumed at update $(( 2 + 2 * ${back:-0} )) from (its current state|.*critic.1.safetensors(.prev)?) \(RESUME ' r.log"
# its last checkpoint before the kill: step 4, or a later one where a loaded machine let it run
# on before the kill landed
last=$(sed -n '/process student.0 (pid [0-9]*) was killed/q; s/.*student.0\] INFO checkpoint .* at step \([0-9]*\)$/\1/p' r.log | tail -n 1)
if [ -n "$last" ] && [ "$last" -ge 4 ] && grep -q "student.0\] INFO resuming at step $last of 24" r.log; then
    t_ok "R: the restarted student.0 resumed at its last checkpoint before the kill (step $last)"
else t_fail "R: the restarted student.0 resumed at its last checkpoint before the kill (step '$last')" "$(grep -E 'student.0\] (INFO (resum|checkpoint)|WARN|ERROR)|restarted|killed' r.log | head -n 12)"; fi
for f in student.0 critic.0 student.1 critic.1; do
    t_check "R ends with R0's $f checkpoint, bytewise" cmp r0/ckpt/$f.safetensors r/ckpt/$f.safetensors
done
# S: stopped twice with SIGINT between checkpoints (ckpt_every 4): the launcher stops the
# students first, each checkpoints at its last finished step with its critic (which may be
# part-way through the next step's updates: the resume then sends only the rest), and the run
# resumed to the end has R0's checkpoints, bytewise
mkdir -p s && cp a/partition.txt s/
stops=0 ats="5 13"
[ "${MSD_TEST_VARIANT:-}" = san ] && ats=5   # ASan: one stop (the suite's time)
for at in $ats; do
    "$BIN/msdpipe" up train_stage2 "${small[@]}" "${rs[@]}" --set run="$T_TMP/s" 2>>s.log &
    spid=$!
    t_wait_for 300 grep -q "student.0\] INFO step $at/24" s.log && kill -INT "$spid"
    t_wait_for 60 bash -c "! kill -0 $spid 2>/dev/null" || kill -9 "$spid"
    wait "$spid" && continue
    stops=$((stops + 1))
done
t_check "S: $(echo $ats | wc -w) run(s) stopped with SIGINT ($stops)" test "$stops" -eq "$(echo $ats | wc -w)"
saved=$(grep -oE 'student.[01]\] INFO checkpointed on stop at step [0-9]+' s.log | grep -oE '[0-9]+$' | tr '\n' ' ')
t_check "S: the students checkpointed on the stops, between periodic checkpoints (steps $saved)" \
    bash -c "for n in $saved; do [ \$((n % 4)) -ne 0 ] && exit 0; done; exit 1"
t_check "S: no process was killed while stopping" bash -c "! grep -E 'did not stop within|killed by signal' s.log"
t_check "S: resumed to step 24" "$BIN/msdpipe" up train_stage2 "${small[@]}" "${rs[@]}" --set run="$T_TMP/s" 2>s-end.log
echo "S: critics resumed part-way through a step: $(grep -c 'INFO the critic is at update' s.log s-end.log | tr '\n' ' ')"
for f in student.0 critic.0 student.1 critic.1; do
    t_check "S ends with R0's $f checkpoint, bytewise" cmp r0/ckpt/$f.safetensors s/ckpt/$f.safetensors
done
# K: a peer that dies mid-run without restarts (restart=0): critic.1, then (runs of their own)
# the teacher and the data process, SIGKILLed after student.1's step-4 checkpoint; the launcher
# names it, stops the rest and exits non-zero, every checkpoint left reads back, and a rerun
# resumes from them to R0's checkpoints, bytewise
kvictims="critic.1 teacher data"
[ "${MSD_TEST_VARIANT:-}" = san ] && kvictims="critic.1 teacher"   # ASan: the suite's time
for victim in $kvictims; do
    kd=k-$victim
    mkdir -p $kd && cp a/partition.txt $kd/
    "$BIN/msdpipe" up train_stage2 "${small[@]}" "${rs[@]}" --set run="$T_TMP/$kd" 2>$kd.log &
    kpid=$!
    kvictim=
    if t_wait_for 300 grep -q "student.1\] INFO checkpoint .* at step 4" $kd.log; then
        kvictim=$(pgrep -f -- "--name $victim --control ipc://.*/train_stage2-$kpid/" | head -n 1)
        [ -n "$kvictim" ] && kill -9 "$kvictim"
    fi
    t_wait_for 300 bash -c "! kill -0 $kpid 2>/dev/null" || kill "$kpid"
    wait "$kpid"; rc=$?
    t_check "K: $victim killed mid-run with restart=0 (pid ${kvictim:-none}): the launcher exits non-zero ($rc)" \
        test -n "$kvictim" -a "$rc" -ne 0
    t_check "K: the launcher names the killed $victim" grep -qE "process $victim \(pid $kvictim\) was killed by signal 9" $kd.log
    t_check "K: no student finished after $victim's kill" bash -c "! grep -q 'student.[01]\] INFO finished' $kd.log"
    # student.1's step-4 checkpoint is there; student.0 may have been stopped before it finished
    # a step it could save (its first periodic checkpoint is at step 4): a file not written is
    # not a file lost, and the rerun below must still end with R0's checkpoints
    t_check "K: every checkpoint left by $victim's kill reads back ($(cd $kd/ckpt && ls *.safetensors | tr '\n' ' '))" bash -c \
        "[ -f $kd/ckpt/student.1.safetensors ] || exit 1
         for f in $kd/ckpt/*.safetensors; do '$BIN/msd-nn' compare \$f \$f >/dev/null || exit 1; done"
    t_check "K: after $victim's kill a rerun resumes to step 24" "$BIN/msdpipe" up train_stage2 "${small[@]}" "${rs[@]}" --set run="$T_TMP/$kd" 2>$kd-end.log
    for f in student.0 critic.0 student.1 critic.1; do
        t_check "K ($victim killed) ends with R0's $f checkpoint, bytewise" cmp r0/ckpt/$f.safetensors $kd/ckpt/$f.safetensors
    done
done
# D: a corrupt checkpoint in the run folder (student.1's cut short, then critic.0's header
# overwritten): the run stops with status 2 naming the file, and leaves it as it was (nothing
# saved is overwritten: the user can look at it or put a good copy back)
mkdir -p d && cp -r r0/ckpt d/ && cp a/partition.txt d/
head -c 5000 r0/ckpt/student.1.safetensors >d/ckpt/student.1.safetensors
cp d/ckpt/student.1.safetensors d-student.1.bad
"$BIN/msdpipe" up train_stage2 "${small[@]}" "${rs[@]}" --set run="$T_TMP/d" 2>d.log; rc=$?
t_check "D: a truncated student checkpoint stops the run ($rc), naming the file" \
    bash -c "[ $rc -ne 0 ] && grep -qE 'student.1\] ERROR .*d/ckpt/student.1.safetensors' d.log && grep -qE 'process student.1 \(pid [0-9]+\) exited with status 2' d.log"
t_check "D: ... and leaves it as it was" cmp d-student.1.bad d/ckpt/student.1.safetensors
t_check "D: ... and critic.1's checkpoint untouched" cmp r0/ckpt/critic.1.safetensors d/ckpt/critic.1.safetensors
cp r0/ckpt/student.1.safetensors d/ckpt/
printf '\377\377\377\377\377\377\377\177{"garbage"' | dd of=d/ckpt/critic.0.safetensors conv=notrunc status=none
cp d/ckpt/critic.0.safetensors d-critic.0.bad
"$BIN/msdpipe" up train_stage2 "${small[@]}" "${rs[@]}" --set run="$T_TMP/d" 2>d2.log; rc=$?
t_check "D: a critic checkpoint with a bad header stops the run ($rc), naming the file" \
    bash -c "[ $rc -ne 0 ] && grep -qE 'critic.0\] ERROR .*d/ckpt/critic.0.safetensors' d2.log"
t_check "D: ... and leaves it as it was" cmp d-critic.0.bad d/ckpt/critic.0.safetensors
t_check "B: the final grid of student.0 equals A's" cmp a/grids/student.0/grid-0000004.png b/grids/student.0/grid-0000004.png
t_check "no sanitizer report in any log" bash -c "$(declare -f t_log_clean); T_SAN_PATTERN='$T_SAN_PATTERN'; for f in *.log; do t_log_clean \$f || exit 1; done"
t_end
