# test_mog_serve_burst.sh: serving the toy under a burst (issue 15 item 4). The router used to
# forward every line at once, start each --timeout-ms at forwarding and never cancel one that
# timed out (still computed, so the ones behind it timed out too): 198 of 300 '3 4096' lines
# failed. Now it queues lines per student, forwards at most --inflight at a time, counts the
# timeout from forwarding and cancels (docs/PROTOCOL.md section 3, "Serving under load").
#   1. a burst of 300 lines for one student, --timeout-ms 1000 (a 2048-sample line takes
#      about 20 ms here, so the whole burst is several timeouts' worth of work but each line is
#      50x inside it): every line answered exactly once, in input order, all of them served;
#      with reply_timeout 3 s, shorter than the queue left at the end of input here (about 256
#      lines x 20 ms), which is waited for as long as replies keep coming;
#   2. a student really too slow (a 512-wide net; the timeout a quarter of the measured time of
#      a 4096-sample line): each heavy line gets its timeout error line, the light lines after
#      them are served, and the stream ends;
#   3. --inflight 2: a heavy request that waited behind another past its deadline_ms is skipped
#      by the student, not computed (2 of 4 heavy lines; 3 when the first was taken late too).
. "$(dirname "$0")/lib.sh"
cd "$T_TMP"
run=$T_TMP/run
t_check "partition K=2" "$BIN/msdpipe" up mog_partition --set K=2 --set run="$run" 2>partition.log
t_check "two students (2 steps, the default 128-wide net)" "$BIN/msdpipe" up mog_stage2 --set K=2 \
    --set run="$run" --set steps=2 --set batch=16 --set warmup=1 --set ttur=1 2>train.log
# two classes of student 0 (partition line "0: NAME NAME ...")
set -- $(sed -n 's/^0: //p' "$run/partition.txt")
c1=$1 c2=$2
serve() { timeout 300 "$BIN/msdpipe" up mog_serve --set K=2 "$@"; }

# The answer of each line as "CLASS COUNT" (consecutive CSV lines of one class; lines
# alternate classes), a failed line as "-" (the launcher prints it as "error: REASON").
runs() { awk -F, 'function out() { if (n) print cls, n; n = 0 }
    /^error: / { out(); print "-"; next } $1 != cls { out(); cls = $1 } { n++ } END { out() }' "$1"; }
# first_diff EXPECTED GOT: the first line that differs, for the failure message
first_diff() { diff "$1" "$2" | sed -n '1,3p' | tr '\n' ' '; }

# ---- 1. the burst -----------------------------------------------------------------------------
for i in $(seq 1 300); do
    if [ $((i % 2)) -eq 1 ]; then echo "$c1 $((2048 - i % 3))"; else echo "$c2 $((2048 - i % 3))"; fi
done >burst.in
serve --set run="$run" --set timeout_ms=1000 --set reply_timeout=3 <burst.in >burst.out 2>burst.log; rc=$?
t_check "burst: exit 0 ($rc)" test "$rc" -eq 0
runs burst.out >burst.got
failed=$(grep -c '^-$' burst.got)
if cmp -s burst.in burst.got; then t_ok "burst: all 300 lines answered exactly once, in order, every one served"
else t_fail "burst" "$failed of 300 lines failed; first difference: $(first_diff burst.in burst.got)"; fi
t_check "... no timeout in the router's log" sh -c '! grep -q "did not answer" burst.log'

# ---- 2. a student too slow for its timeout ----------------------------------------------------
wide=$T_TMP/wide
net=mlp,width=512,depth=4
mkdir -p "$wide" && cp "$run/partition.txt" "$wide/"
t_check "two 512-wide students (1 step)" "$BIN/msdpipe" up mog_stage2 --set K=2 --set run="$wide" \
    --set net=$net --set steps=1 --set batch=16 --set warmup=1 --set ttur=1 2>wtrain.log
# the compute time of a 4096-sample line, from the student's own account of two of them
printf '%s 4096\n%s 4096\n' "$c1" "$c1" | serve --set run="$wide" --set net=$net >measure.out 2>measure.log
ms=$(sed -n 's/^\[student\.0\] INFO student: compute \([0-9.]*\) s .*/\1/p' measure.log | awk '{ printf "%d", $1 * 1000 / 2 / 4 }')
if [ -n "$ms" ] && [ "$ms" -ge 1 ]; then t_ok "a 4096-sample line of the wide net: timeout set to a quarter of it, $ms ms"
else t_fail "measure" "no compute time in the student's log: $(tail -n 5 measure.log)"; ms=50; fi

printf '%s 4096\n%s 4096\n%s 4096\n%s 1\n%s 2\n%s 3\n' "$c1" "$c1" "$c1" "$c1" "$c2" "$c1" >slow.in
serve --set run="$wide" --set net=$net --set timeout_ms=$ms <slow.in >slow.out 2>slow.log; rc=$?
printf -- '-\n-\n-\n%s 1\n%s 2\n%s 3\n' "$c1" "$c2" "$c1" >slow.want
runs slow.out >slow.got
t_check "too slow: the stream ends, exit 1 (lines failed) ($rc)" test "$rc" -eq 1
if cmp -s slow.want slow.got; then t_ok "too slow: 3 heavy lines fail, the 3 light lines after them are served"
else t_fail "too slow" "expected $(tr '\n' ' ' <slow.want), got $(tr '\n' ' ' <slow.got)"; fi
n=$(grep -c "WARN line [123]: answered with status internal: student.0 did not answer within $ms ms (--timeout-ms); request cancelled" slow.log)
t_check "... each heavy line with its timeout error ($n of 3)" test "$n" -eq 3
t_check "... late replies dropped quietly" sh -c '! grep -q "unknown request" slow.log'

# ---- 3. --inflight 2: a cancelled request that has not started is not computed ----------------
printf '%s 4096\n%s 4096\n%s 4096\n%s 4096\n%s 5\n' "$c1" "$c1" "$c1" "$c1" "$c1" >skip.in
serve --set run="$wide" --set net=$net --set timeout_ms=$ms --set inflight=2 <skip.in >skip.out 2>skip.log
printf -- '-\n-\n-\n-\n%s 5\n' "$c1" >skip.want
runs skip.out >skip.got
if cmp -s skip.want skip.got; then t_ok "inflight 2: 4 heavy lines fail, the light one is served"
else t_fail "inflight 2" "expected $(tr '\n' ' ' <skip.want), got $(tr '\n' ' ' <skip.got)"; fi
# 2 in the model above (lines 2 and 4 wait behind lines 1 and 3); 3 where the student took line 1
# itself past its 1/4-compute deadline too (its first request after start-up: 3 of 6 quiet runs
# of an Intel Xeon, 'taken 20 ms after its deadline_ms'); 0 or 1 if waiting lines were computed
skipped=$(sed -n 's/^\[student\.0\] INFO skipped \([0-9]*\) requests past their deadline_ms$/\1/p' skip.log)
t_check "... the student skipped the ones that waited behind another past their deadline (${skipped:-none} of 4; 2 or 3)" \
    test "${skipped:-0}" -ge 2 -a "${skipped:-0}" -le 3
t_end
