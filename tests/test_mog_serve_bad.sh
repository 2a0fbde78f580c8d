# test_mog_serve_bad.sh: serving the toy with hostile numbers and counts (issue 15 items 1 and
# 8): a student whose outputs are huge (output bias -1e37) is served in full, every line with
# all its samples (the router used to size its CSV buffer at 16 characters a value and write
# past it); outputs that overflow to infinity get an error line, not "-inf" samples; a count
# above the one serving limit (MOG_SERVE_MAX_SAMPLES, 4096) is refused by the router naming
# the limit, not passed on to fail inside the student.
. "$(dirname "$0")/lib.sh"
cd "$T_TMP"
run=$T_TMP/run
net=mlp,width=16,depth=2
t_check "partition K=2" "$BIN/msdpipe" up mog_partition --set K=2 --set run="$run" 2>partition.log
t_check "two tiny students (2 steps)" "$BIN/msdpipe" up mog_stage2 --set K=2 --set run="$run" --set net=$net \
    --set steps=2 --set batch=16 --set warmup=1 --set ttur=1 2>train.log
serve() { "$BIN/msdpipe" up mog_serve --set K=2 --set run="$run" --set net=$net 2>serve.log; }

printf 'north 4097\nnorth 2\n' | serve >limit.out
t_check "a count above 4096 is refused by the router, naming the limit" \
    grep -q 'line 1: .*sample count .4097. must be an integer in 1..4096' serve.log
t_check "... as an error line in its place, and the next line is served" \
    test "$(sed -n 1p limit.out)" = "error: sample count '4097' must be an integer in 1..4096" -a "$(sed -n '2,3p' limit.out | grep -c '^north,')" -eq 2

# the generators' output bias (weights and EMA weights) set to a value, in every student
set_bias() {
    for f in "$run"/ckpt/student.*.safetensors; do
        python3 - "$f" "$1" <<'PY' || return 1
import json, struct, sys
path, value = sys.argv[1], float(sys.argv[2])
b = bytearray(open(path, 'rb').read())
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
for k in ('out.bias', 'ema.out.bias'):
    lo, hi = h[k]['data_offsets']
    for o in range(8 + n + lo, 8 + n + hi, 4):
        b[o:o + 4] = struct.pack('<f', value)
open(path, 'wb').write(b)
PY
    done
}
t_check "output bias set to -1e37" set_bias -1e37
printf 'northwest 3000\nnorth 1\nsouth 7\n' | serve >huge.out; rc=$?
t_check "huge samples: exit 0 ($rc), no crash" test "$rc" -eq 0
t_check "... every sample of every line served (3000 + 1 + 7 lines of CSV)" \
    test "$(grep -cE '^(northwest|north|south),-?[0-9]+\.[0-9]{6},-?[0-9]+\.[0-9]{6}$' huge.out)" -eq 3008
t_check "... with their full magnitude (about 1e37, 38+ digits)" grep -qE '^north,-[0-9]{37,}\.' huge.out
t_check "output bias set to 3e38 (overflows to infinity)" set_bias 3e38
printf 'east 3\n' | serve >inf.out
t_check "non-finite samples get an error line, not numbers" \
    sh -c "grep -qx 'error: .*non-finite sample.*' inf.out && test \$(wc -l <inf.out) -eq 1 && grep -q 'non-finite sample' serve.log"
t_end
