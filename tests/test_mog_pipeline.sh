# test_mog_pipeline.sh: the MSD toy end to end through the real processes: partition K=2,
# distill briefly (mog_stage2), serve through the router (mog_serve), judge with
# msd-mog-eval against the untrained generators and the samples' within-class spread against
# the truth's (what the critic's term buys); a student killed mid-run stops the pipeline with
# a report and a restart resumes from its checkpoint; bad serving input.
. "$(dirname "$0")/lib.sh"
cd "$T_TMP"
mix="$MSD_TOP/pipelines/mog8.mix"
run=$T_TMP/run
small=(--set K=2 --set run="$run" --set net=mlp,width=64,depth=3 --set batch=64 --set warmup=40 --set log_every=50)

serve_eval() { # NAME: serve 200 samples of every class, evaluate into NAME.json
    for c in north northeast east southeast south southwest west northwest; do echo "$c 200"; done |
        "$BIN/msdpipe" up mog_serve --set K=2 --set run="$run" --set net=mlp,width=64,depth=3 >"$1.csv" 2>"$1.log" &&
        "$BIN/msd-mog-eval" --mix "$mix" --samples "$1.csv" >"$1.json"
}
energy() { sed -E 's/^\{"n": [0-9]+, "energy": ([0-9.]+).*/\1/' "$1"; }
# GEN.csv TRUE.csv: the mean over classes of GEN's within-class spread sqrt(trace cov) over TRUE's
spread_ratio() {
    awk -F, 'FNR == 1 { f++ } /^#/ || $1 == "class" { next }
        { k = f SUBSEP $1; n[k]++; sx[k] += $2; sy[k] += $3; q[k] += $2 * $2 + $3 * $3; if (f == 1) cls[$1] = 1 }
        function spread(k) { return sqrt((q[k] - (sx[k] * sx[k] + sy[k] * sy[k]) / n[k]) / (n[k] - 1)) }
        END { for (c in cls) { s += spread(1 SUBSEP c) / spread(2 SUBSEP c); m++ } printf "%.4f\n", s / m }' "$1" "$2"
}

# without a partition file the data process refuses to start (a message, status 2, no crash)
"$BIN/msdpipe" up mog_stage2 "${small[@]}" --set steps=1 2>nopart.log
t_check "stage 2 without a partition fails with a message naming the file" \
    grep -q "data\] ERROR $run/partition.txt: cannot open" nopart.log
t_check "... and the data process exits with status 2, not a signal" grep -q "process data (pid [0-9]*) exited with status 2" nopart.log

t_check "partition K=2" "$BIN/msdpipe" up mog_partition --set K=2 --set run="$run" 2>partition.log
t_check "partition file has 2 students of 4 classes" \
    test "$(grep -cE '^[01]: [a-z]+ [a-z]+ [a-z]+ [a-z]+$' "$run/partition.txt")" -eq 2

# untrained generators (steps 0: the critic warm-up runs, the generators stay as initialised)
t_check "untrained run" "$BIN/msdpipe" up mog_stage2 "${small[@]}" --set steps=0 2>untrained.log
t_check "untrained samples served and judged" serve_eval untrained
rm -rf "$run/ckpt" "$run/metrics.jsonl"

t_check "K=2 distillation (150 steps)" "$BIN/msdpipe" up mog_stage2 "${small[@]}" --set steps=150 --set ckpt_every=50 2>train.log
t_check "both students finished" test "$(grep -c 'finished 150 steps' train.log)" -eq 2
t_check "metrics are JSON lines with step and loss" \
    python3 -c "import json,sys; r=[json.loads(l) for l in open('$run/metrics.jsonl')]; sys.exit(not (len(r)==6 and all('loss_dm' in x and 'eta_s' in x for x in r)))"
t_check "the processes report compute vs wait" test "$(grep -c 'compute .* wall' train.log)" -ge 6
t_check "trained samples served and judged" serve_eval trained
e0=$(energy untrained.json); e1=$(energy trained.json)
t_check "training improves the energy distance ($e0 -> $e1)" awk -v a="$e0" -v b="$e1" 'BEGIN{exit !(b < 0.8 * a)}'
# The critic's term is what keeps each class spread out: without it (g = (x - D_real) / w, pure
# regression onto the teacher's denoised samples) the students contract every class while the
# energy still falls almost as far (3.20 -> 1.99, the real students 1.92). Spread ratio after
# these 150 steps, seeds 1-4: real students 0.44-0.47, critic-free ones 0.13-0.14 (the energy
# distances overlap across seeds), untrained 0.25; the threshold sits in the middle of the gap.
"$BIN/msd-mog-eval" --mix "$mix" --draw 8000 --seed 1 >truth.csv
r1=$(spread_ratio trained.csv truth.csv)
t_check "the students keep the classes' spread ($r1 of the truth's, want >= 0.3)" awk -v r="$r1" 'BEGIN{exit !(r >= 0.3)}'
t_check "serving answers in input order, 200 lines per class" \
    test "$(head -n 200 trained.csv | grep -c '^north,')" -eq 200 -a "$(tail -n 200 trained.csv | grep -c '^northwest,')" -eq 200

# a bad line gets an error naming the classes; the others are still answered
printf 'north 2\nnowhere\neast\n' | "$BIN/msdpipe" up mog_serve --set K=2 --set run="$run" --set net=mlp,width=64,depth=3 >bad.out 2>bad.log
t_check "a bad class is an error on stderr, the good lines are answered" \
    test "$(grep -c '^north,' bad.out)" -eq 2 -a "$(grep -c '^east,' bad.out)" -eq 1 -a -n "$(grep "unknown class 'nowhere'" bad.log bad.out)"

# kill a student mid-run: the launcher reports it and stops; a restart resumes
rm -rf "$run/ckpt" "$run/metrics.jsonl"
"$BIN/msdpipe" up mog_stage2 "${small[@]}" --set steps=100000 --set ckpt_every=20 2>kill.log &
lpid=$!
t_wait_for 60 test -f "$run/ckpt/student.0.safetensors"
spid=$(pgrep -f -- "--name student.0 --control ipc://.*/mog_stage2-$lpid/" | head -n 1)
if [ -n "$spid" ]; then kill -9 "$spid"; fi
t_wait_for 20 bash -c "! kill -0 $lpid 2>/dev/null"
wait "$lpid"; rc=$?
t_check "launcher exits non-zero after a student is killed" test "$rc" -ne 0
t_check "launcher names the killed student" grep -qE "student.0 \(pid $spid\).*(signal 9|SIGKILL|killed)" kill.log
t_check "no process of the pipeline is left" bash -c "! pgrep -f -- '[m]og_stage2-$lpid/' >/dev/null"
"$BIN/msdpipe" up mog_stage2 "${small[@]}" --set steps=60 --set ckpt_every=20 2>resume.log
t_check "the restart resumes from the checkpoint" grep -qE 'student.0\] INFO resuming at step [1-9][0-9]*' resume.log
t_end
