#!/usr/bin/env bash
# test_eval.sh: msd-eval end to end on the committed classifier: accuracy on 2000 test images,
# the FID of real training images read back from a PNG folder and from a safetensors file (both
# must equal `msd-eval floor` for the same subset, and the conditional accuracy must be high),
# and clear errors for bad inputs. Skips (with a message) when Fashion-MNIST is not installed
# (a failure under MSD_REQUIRE_DATA=1); the classifier is committed, so a missing one fails.
. "$(dirname "$0")/lib.sh"
E="$BIN/msd-eval"
CLS="$MSD_TOP/models/fmnist_classifier.safetensors"
json() { # FIELD: the numeric value of "FIELD" in the JSON line on stdin
    sed -nE "s/.*\"$1\": ([-0-9.e+]+).*/\1/p"
}

if [ ! -x "$E" ]; then t_fail msd-eval "$E not built"; t_end; exit; fi
if [ ! -f "$CLS" ]; then t_fail classifier "$CLS missing (it is committed: msd-eval train-classifier --out it)"; t_end; exit; fi
t_need_fmnist
export OPENBLAS_NUM_THREADS=1
T="--classifier $CLS --threads 2"
R="--ref-n 2000"   # a 2000-image reference keeps the suite fast (the real runs use all 10000)

acc=$("$E" accuracy --n 2000 $T | json accuracy)
echo "accuracy on 2000 test images: $acc"
if awk -v a="$acc" 'BEGIN { exit !(a >= 0.90) }'; then t_ok accuracy_2000; else t_fail accuracy_2000 "accuracy '$acc' < 0.90"; fi

floor=$("$E" floor --n 500 --seed 3 $T $R | json fid)
"$E" export --n 500 --seed 3 --out "$T_TMP/real" >/dev/null && t_ok export_png || t_fail export_png "export failed"
"$E" export --n 500 --seed 3 --out "$T_TMP/real.safetensors" >/dev/null && t_ok export_st || t_fail export_st "export failed"
out_png=$("$E" fid --images "$T_TMP/real" $T $R)
out_st=$("$E" fid --images "$T_TMP/real.safetensors" $T $R)
echo "floor (500, seed 3): $floor"; echo "png: $out_png"; echo "safetensors: $out_st"
for o in "$out_png" "$out_st"; do
    f=$(echo "$o" | json fid); ca=$(echo "$o" | json cond_acc)
    if awk -v a="$f" -v b="$floor" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 1e-3 && a > 0) }'; then
        t_ok fid_equals_floor; else t_fail fid_equals_floor "fid '$f' vs floor '$floor'"; fi
    if awk -v a="$ca" 'BEGIN { exit !(a >= 0.85) }'; then t_ok cond_acc; else t_fail cond_acc "cond_acc '$ca'"; fi
done
# --n limits the sample count; --labels overrides the labels (all 0 -> about a tenth correct)
for i in $(seq 500); do echo 0; done > "$T_TMP/zeros.txt"
o=$("$E" fid --images "$T_TMP/real.safetensors" --labels "$T_TMP/zeros.txt" --n 200 $T $R)
[ "$(echo "$o" | sed -nE 's/.*"n": ([0-9]+),.*/\1/p')" = 200 ] && t_ok fid_n || t_fail fid_n "$o"
ca=$(echo "$o" | json cond_acc)
if awk -v a="$ca" 'BEGIN { exit !(a < 0.3) }'; then t_ok labels_override; else t_fail labels_override "cond_acc '$ca'"; fi

# bad inputs: a clear message and status 1, never a crash
bad() { # NAME WANT COMMAND...
    local name=$1 want=$2; shift 2
    local err; err=$("$@" 2>&1 >/dev/null); local rc=$?
    if [ "$rc" = 1 ] && echo "$err" | grep -q -- "$want"; then t_ok "$name"; else t_fail "$name" "rc $rc, message '$err'"; fi
}
bad missing_images "No such file" "$E" fid --images "$T_TMP/nope.safetensors" $T
printf 'garbage' > "$T_TMP/garbage.safetensors"
bad garbage_st "garbage.safetensors" "$E" fid --images "$T_TMP/garbage.safetensors" $T
head -n 499 "$T_TMP/zeros.txt" > "$T_TMP/short.txt"
bad short_labels "expected 500" "$E" fid --images "$T_TMP/real.safetensors" --labels "$T_TMP/short.txt" $T
echo 12 > "$T_TMP/big.txt"
bad label_range "outside" "$E" fid --images "$T_TMP/real.safetensors" --labels "$T_TMP/big.txt" $T
mkdir -p "$T_TMP/empty"
bad empty_folder "no .png images" "$E" fid --images "$T_TMP/empty" $T
bad missing_classifier "missing\|cannot\|No such" "$E" accuracy --classifier "$T_TMP/none.safetensors"
"$E" fid 2>/dev/null; [ $? = 2 ] && t_ok usage_error || t_fail usage_error "fid without --images did not exit 2"
# the thread count: MSD_THREADS as every tool reads it (a bad value is an error, not a default)
err=$(MSD_THREADS=abc "$E" accuracy --n 10 2>&1 >/dev/null); rc=$?
t_check "MSD_THREADS=abc: exit 2, naming it" bash -c "[ $rc -eq 2 ] && echo '$err' | grep -q 'MSD_THREADS=abc: expected a thread count 1..64'"
t_check "MSD_THREADS=1: the same accuracy as the default" \
    test "$(MSD_THREADS=1 "$E" accuracy --n 200 | json accuracy)" = "$("$E" accuracy --n 200 | json accuracy)"
t_end
