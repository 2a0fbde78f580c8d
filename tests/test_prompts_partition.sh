# test_prompts_partition.sh: msd-router --mode partition --embed-prompts pipelines/fmnist.prompts
# (the class prototypes of the prompts file, embedded with all-MiniLM-L6-v2) split the 10
# Fashion-MNIST classes into K groups with the balanced k-means. For K = 1, 2, 4, 5, 10: each
# class in exactly one group, K groups, sizes differing by at most one (larger first), the same
# file again for the same seed; K = 10 puts class i alone with student i; the log names the
# prompts file and each group. A malformed prompts file is refused with FILE:LINE (status 2, no
# file); --embed-prompts with --embed-from is refused. Without the model (make deps): skip.
. "$(dirname "$0")/lib.sh"
cd "$T_TMP"
prompts="$MSD_TOP/pipelines/fmnist.prompts"
names="tshirt trouser pullover dress coat sandal shirt sneaker bag boot"
mdir=${MSD_MINILM_DIR:-${MSD_CACHE:-$HOME/.cache/msdpipe}/all-minilm-l6-v2}
if [ ! -e "$mdir/model.safetensors" ]; then
    t_skip_missing_data "partition on prompt prototypes" "no model at $mdir (make deps, or set MSD_MINILM_DIR)"
    t_end
    exit
fi
part() { # OUT K [more args]: the router's partition of the prompt prototypes into OUT
    local out=$1 K=$2; shift 2
    timeout 300 "$BIN/msd-router" --mode partition --embed-prompts "$prompts" --k "$K" --out "$out" "$@" 2>"$out.log"
}
check_part() { # FILE K: prints nothing when FILE is a balanced partition of the 10 names into K groups
    awk -v K="$2" -v names="$names" '
        BEGIN { g = 0; n = split(names, nm, " "); for (i = 1; i <= n; i++) want[nm[i]] = 1 }
        /^#/ || NF == 0 { next }
        $1 == "partition" { if ($2 != K) print "header K " $2; hdr = 1; next }
        { s = $1; sub(":", "", s); if (s != g) print "student " s " out of order"; size[g] = NF - 1; g++
          for (i = 2; i <= NF; i++) { if (!($i in want)) print "unknown " $i; if (seen[$i]++) print "twice " $i } }
        END { if (!hdr) print "no header"; if (g != K) print g " groups"
              for (i = 1; i <= n; i++) if (!seen[nm[i]]) print "missing " nm[i]
              for (k = 0; k < g; k++) { if (size[k] < int(n / K) || size[k] > int((n + K - 1) / K)) print "size " size[k]
                                        if (k && size[k] > size[k - 1]) print "sizes not in order" } }' "$1"
}
for K in 1 2 4 5 10; do
    if ! part "p$K.txt" "$K"; then t_fail "K=$K" "$(tail -n 3 "p$K.txt.log")"; continue; fi
    bad=$(check_part "p$K.txt" "$K")
    if [ -z "$bad" ]; then t_ok "K=$K: every class once, $K balanced groups: $(grep -E '^[0-9]+:' "p$K.txt" | cut -d' ' -f2- | tr '\n' '/')"
    else t_fail "K=$K" "$(echo "$bad" | head -n 3 | tr '\n' ';') in $(tr '\n' '|' <"p$K.txt")"; fi
    if [ "$K" = 4 ] || [ "$K" = 5 ]; then
        part "again$K.txt" "$K" && t_check "K=$K: the same file again for the same seed" cmp -s "p$K.txt" "again$K.txt"
    fi
done
t_check "K=10: student i owns class i" \
    test "$(awk '/^[0-9]+:/ { printf "%s%s", sep, $2; sep = " " }' p10.txt)" = "$names"
t_check "the log names the prompts file and its 100 phrasings" \
    grep -q "class prototypes of 10 classes from 100 phrasings in $prompts" p4.txt.log
t_check "the log names each group's classes and their mean cosine" \
    grep -qE "student 0 owns 3 classes: [a-z]+ [a-z]+ [a-z]+ \(within: cosine -?[0-9.]+, distance [0-9.]+\)" p4.txt.log
# the prompt prototypes are visual-semantic: footwear goes together (sneaker, boot; with sandal at K = 4)
t_check "K=4 and K=5 put sneaker and boot together" \
    bash -c "grep -qE '^[0-9]: .*sneaker boot' p4.txt && grep -qxE '[0-9]: sneaker boot' p5.txt"

printf 'tshirt: a tee\nshoe: a shoe\n' >bad.prompts
if part bad.txt 2 --embed-prompts "$T_TMP/bad.prompts"; then t_fail "a malformed prompts file is refused" "accepted"
else t_check "a malformed prompts file is refused naming FILE:LINE" \
    grep -q "router\] ERROR --embed-prompts $T_TMP/bad.prompts:2: unknown class 'shoe'" bad.txt.log; fi
t_check "... and writes no partition file" test ! -e bad.txt
if part both.txt 2 --embed-from "$MSD_TOP/models/fmnist_teacher.safetensors"; then t_fail "two embeddings refused" "accepted"
else t_check "--embed-prompts with --embed-from is refused" grep -q "give one of --mix FILE" both.txt.log; fi
mkdir -m 700 rd
timeout 300 "$BIN/msdpipe" up "$MSD_TOP/pipelines/fmnist_prompt_partition.pipe" --set K=4 --set run="$T_TMP/pipe" \
    --run-dir "$T_TMP/rd" >pipe.log 2>&1
t_check "fmnist_prompt_partition.pipe writes the K=4 file of the router's --embed-prompts" \
    cmp -s <(grep -v '^#' p4.txt) <(grep -v '^#' "$T_TMP/pipe/partition.txt")
cat ./*.log >all.log
t_check "no sanitizer report in any process's log" t_log_clean all.log
t_end
