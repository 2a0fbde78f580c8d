# test_mog_eval.sh: bin/msd-mog-eval on the perfect generator, a broken one, and bad input.
. "$(dirname "$0")/lib.sh"
mix="$MSD_TOP/pipelines/mog8.mix"
ev="$BIN/msd-mog-eval"

"$ev" --mix "$mix" --draw 4000 --seed 3 >"$T_TMP/true.csv"
"$ev" --mix "$mix" --samples "$T_TMP/true.csv" >"$T_TMP/true.json"
t_check "perfect generator covers every mode" grep -q '"mode_coverage": 1.0000' "$T_TMP/true.json"
energy=$(sed -E 's/^\{"n": [0-9]+, "energy": ([0-9.]+).*/\1/' "$T_TMP/true.json")
t_check "perfect generator energy distance < 0.05 ($energy)" awk -v e="$energy" 'BEGIN{exit !(e < 0.05)}'

# every sample pulled to its class centre: one blob per class, no mode covered
awk -F, 'NR>1{print $1 "," $2 * 0.8 "," $3 * 0.8}' "$T_TMP/true.csv" | "$ev" --mix "$mix" >"$T_TMP/bad.json"
t_check "a shrunken generator covers no mode" grep -q '"mode_coverage": 0.0000' "$T_TMP/bad.json"
bad_energy=$(sed -E 's/^\{"n": [0-9]+, "energy": ([0-9.]+).*/\1/' "$T_TMP/bad.json")
t_check "its energy distance is larger ($bad_energy)" awk -v e="$bad_energy" -v f="$energy" 'BEGIN{exit !(e > 0.3 && e > 5 * f)}'

printf 'class,x,y\nnorth,0,6\nnowhere,1,2\n' >"$T_TMP/x.csv"
out=$("$ev" --mix "$mix" --samples "$T_TMP/x.csv" 2>&1); rc=$?
t_check "unknown class names its line" test "$rc" -eq 1 -a -n "$(echo "$out" | grep -F "x.csv:3: unknown class 'nowhere'")"
printf 'north,0,abc\n' | "$ev" --mix "$mix" >/dev/null 2>"$T_TMP/err"; rc=$?
t_check "bad number is an error" test "$rc" -eq 1 -a -n "$(grep -F '<stdin>:1: coordinates' "$T_TMP/err")"
"$ev" --mix "$mix" --bogus 1 >/dev/null 2>&1; rc=$?
t_check "unknown option exits 2" test "$rc" -eq 2
t_end
