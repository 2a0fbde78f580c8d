# test_fmnist_partition.sh: partitioning the 10 Fashion-MNIST classes among K students
# (fmnist_partition.pipe: msd-router --mode partition --embed-from the committed teacher).
# For K = 1, 2, 4, 5, 10 and every strategy: each class in exactly one group, K groups, sizes
# balanced (differ by at most one, larger first; plain k-means only covers every class), the
# same file for the same seed; K = 10 puts class i alone with student i. K = 11 is refused.
# A hand-written partition (names in any case, or ids) is read back; one naming an unknown
# class, a class twice, missing a class or with another K than the pipeline's is refused with
# FILE:LINE. The data process (msd-data --mode fmnist) reads the router's file, and refuses
# one whose K is not its --k.
. "$(dirname "$0")/lib.sh"
cd "$T_TMP"
teacher="$MSD_TOP/models/fmnist_teacher.safetensors"
names="tshirt trouser pullover dress coat sandal shirt sneaker bag boot"

part() { # OUT K STRATEGY [SEED [more --set]]: run the pipeline, the partition into OUT
    local out=$1 K=$2 s=$3 seed=${4:-1}; shift 4 2>/dev/null || shift $#
    "$BIN/msdpipe" up fmnist_partition --set K="$K" --set strategy="$s" --set seed="$seed" --set out="$out" \
        --set run="$T_TMP/run" "$@" 2>"$out.log"
}
# FILE K BALANCED: prints nothing when FILE is a valid partition of the 10 names into K groups
# (with BALANCED=1: sizes differing by at most one, in non-increasing order), else what is wrong
check_part() {
    awk -v K="$2" -v bal="$3" -v names="$names" '
        BEGIN { g = 0; n = split(names, nm, " "); for (i = 1; i <= n; i++) want[nm[i]] = 1 }
        /^#/ || NF == 0 { next }
        $1 == "partition" { if ($2 != K) print "header K " $2; hdr = 1; next }
        { s = $1; sub(":", "", s); if (s != g) print "student " s " out of order"; size[g] = NF - 1; g++
          for (i = 2; i <= NF; i++) { if (!($i in want)) print "unknown " $i; if (seen[$i]++) print "twice " $i } }
        END { if (!hdr) print "no header"; if (g != K) print g " groups"
              for (i = 1; i <= n; i++) if (!seen[nm[i]]) print "missing " nm[i]
              if (bal) for (k = 0; k < g; k++) { if (size[k] < int(n / K) || size[k] > int((n + K - 1) / K)) print "size " size[k]
                                                  if (k && size[k] > size[k - 1]) print "sizes not in order" } }' "$1"
}
sizes() { awk '/^[0-9]+:/ { printf "%s%d", sep, NF - 1; sep = " " } END { print "" }' "$1"; }

for K in 1 2 4 5 10; do
    for s in balanced kmeans random contiguous; do
        bal=1; [ "$s" = kmeans ] && bal=0
        if ! part "p$K$s.txt" "$K" "$s" 7; then t_fail "K=$K $s" "$(tail -n 3 "p$K$s.txt.log")"; continue; fi
        bad=$(check_part "p$K$s.txt" "$K" "$bal")
        if [ -z "$bad" ]; then t_ok "K=$K $s: every class once, $K groups of sizes $(sizes "p$K$s.txt")"
        else t_fail "K=$K $s" "$(echo "$bad" | head -n 3 | tr '\n' ';') in $(tr '\n' '|' <"p$K$s.txt")"; fi
        part "again.txt" "$K" "$s" 7 && t_check "K=$K $s: the same partition again for seed 7" cmp -s "p$K$s.txt" again.txt
    done
done
t_check "K=4 balanced: sizes 3 3 2 2" test "$(sizes p4balanced.txt)" = "3 3 2 2"
t_check "K=10: student i owns class i" \
    test "$(awk '/^[0-9]+:/ { printf "%s%s", sep, $2; sep = " " }' p10balanced.txt)" = "$names"
t_check "the log names each group's classes and their mean cosine" \
    grep -qE "student 0 owns 3 classes: [a-z]+ [a-z]+ [a-z]+ \(within: cosine -?[0-9.]+, distance [0-9.]+\)" p4balanced.txt.log
# the embeddings are unit vectors: a group's mean distance is sqrt(2 - 2 cos) of its mean cosine
# (tolerance 0.02: the mean of a square root is not the root of the mean; here they differ < 0.005)
worst=$(sed -nE 's/.*\(within: cosine (-?[0-9.]+), distance ([0-9.]+)\)$/\1 \2/p' p4balanced.txt.log p5balanced.txt.log |
    awk '{ e = $2 - sqrt(2 - 2 * $1); e = e < 0 ? -e : e; if (e > w) w = e; n++ } END { printf "%d %.4f\n", n, w }')
t_check "the embeddings are scaled to unit length (groups, worst |distance - sqrt(2 - 2 cos)|: $worst)" \
    awk -v n="${worst% *}" -v w="${worst#* }" 'BEGIN { exit !(n == 9 && w < 0.02) }'
# different seeds can give different random splits (seed 7 vs 8 differ for K=5 random)
part r8.txt 5 random 8 && t_check "random K=5: seeds 7 and 8 give different splits" bash -c '! cmp -s p5random.txt r8.txt'

# K = 11 > 10 classes: refused by the router, status 2, with the range
if part p11.txt 11 balanced 1; then t_fail "K=11 refused" "the pipeline succeeded"
else t_check "K=11 refused with the range of K" grep -q "router\] ERROR --k 11: must be in 1..10 (the number of classes)" p11.txt.log; fi
t_check "... and no partition file written" test ! -e p11.txt

# another embedding: a classifier head's rows (10, 128), whose classes are visually alike: for
# K = 4 the footwear is one group and pullover goes with coat (cosines 0.34-0.40 and 0.19)
part cls.txt 4 balanced 1 --set teacher="$MSD_TOP/models/fmnist_classifier.safetensors" --set embed=fc1.weight &&
    t_check "a classifier head (rows) works as the embedding" test -z "$(check_part cls.txt 4 1)"
t_check "... and groups footwear together, pullover with coat" \
    bash -c "grep -qxE '[0-9]: sandal sneaker boot' cls.txt && grep -qxE '[0-9]: pullover coat' cls.txt"
part nolabel.txt 2 balanced 1 --set embed=map_layer0.weight
t_check "a tensor without a dimension of 10 classes is refused, naming it" \
    grep -q "tensor 'map_layer0.weight' of shape (128, 32) has no dimension of 10 classes" nolabel.txt.log
part notensor.txt 2 balanced 1 --set embed=nope
t_check "a missing tensor is refused, naming the file" grep -q "fmnist_teacher.safetensors: no tensor 'nope'" notensor.txt.log

# manual: names in any case or ids, comments; read back and written with names
printf '# by hand\npartition 3\n0: TShirt 6 pullover coat  # tops\n1: sandal sneaker BOOT\n2: trouser dress bag\n' >hand.txt
part manual.txt 3 manual 1 --set from="$T_TMP/hand.txt"
t_check "a hand-written partition is read back (names, ids, any case)" test "$(grep -v '^#' manual.txt 2>/dev/null | tr '\n' '|')" = \
    "partition 3|0: tshirt pullover coat shirt|1: sandal sneaker boot|2: trouser dress bag|"
bad_manual() { # NAME TEXT WANT [K]: the pipeline refuses the partition TEXT with a message holding WANT
    printf "$2" >"bad.txt"
    if part badout.txt "${4:-3}" manual 1 --set from="$T_TMP/bad.txt"; then t_fail "$1" "accepted"; return; fi
    if grep -qF -- "$3" badout.txt.log; then t_ok "$1"; else t_fail "$1" "no '$3' in: $(grep ERROR badout.txt.log)"; fi
}
bad_manual "an unknown class is refused naming the line" \
    'partition 3\n0: tshirt shirt pullover coat\n1: sandal sneaker boot\n2: trouser dress purse\n' \
    "bad.txt:4: unknown class 'purse' (the classes: 'tshirt' (0), 'trouser' (1),"
bad_manual "a class twice is refused naming the line" \
    'partition 3\n0: tshirt shirt pullover coat\n1: sandal sneaker boot Shirt\n2: trouser dress bag\n' \
    "bad.txt:3: class 'Shirt' already belongs to student 0"
bad_manual "a missing class is refused naming it and the line" \
    'partition 3\n0: tshirt shirt pullover coat\n1: sandal sneaker\n2: trouser dress bag\n\n' \
    "bad.txt:5: at the end: 1 class belongs to no student (every class must be listed exactly once): 'boot' (9)"
bad_manual "a partition with another K than the pipeline's is refused naming the line" \
    '# two\npartition 2\n0: tshirt shirt pullover coat dress\n1: sandal sneaker boot trouser bag\n' \
    "bad.txt:2: the partition has K = 2 students but the pipeline runs 3 (its K)"
t_check "... and a refused partition writes no file" test ! -e badout.txt

# the data process reads the router's file, and checks its K against the pipeline's
probe=${MSD_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}/t10k-labels-idx1-ubyte
if [ ! -e "$probe" ] && [ ! -e "$probe.gz" ]; then
    t_skip_missing_data "msd-data reads the partition" "$probe(.gz) missing (Debian package dataset-fashion-mnist)"
else
    "$BIN/msd-data" --mode fmnist --data fmnist:test --partition p5balanced.txt --k 5 \
        --bind serve=ipc://$T_TMP/data 2>data.log & dpid=$!
    if t_wait_for 60 grep -q "per-student batches from the partition (K = 5)" data.log; then
        t_ok "msd-data --mode fmnist serves the router's K=5 partition"
    else t_fail "msd-data reads the partition" "$(tail -n 3 data.log)"; fi
    t_stop "... and stops cleanly" "$dpid" data.log
    timeout 60 "$BIN/msd-data" --mode fmnist --data fmnist:test --partition p5balanced.txt --k 4 \
        --bind serve=ipc://$T_TMP/data2 2>data2.log; rc=$?
    t_check "msd-data refuses a partition whose K is not its --k (status $rc), naming the line" \
        grep -q "ERROR --partition: p5balanced.txt:2: the partition has K = 5 students but the pipeline runs 4" data2.log
fi
cat ./*.log >all.log
t_check "no sanitizer report in any process's log" t_log_clean all.log
t_end
