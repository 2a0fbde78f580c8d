# test_msd_nn.sh: bin/msd-nn on the tiny UNet fixture (forward, input and parameter gradients
# against tests/fixtures/unet_tiny_expect.safetensors, written by tests/torch_unet.py), init,
# and clear failures on bad arguments and files.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
NN="$(cd "$BIN" && pwd)/msd-nn"
F="$here/fixtures"
T=$T_TMP

# forward + backward vs the PyTorch twin (tolerance: |d| <= 1e-4 max|want| + 1e-3 |want|)
if "$NN" forward --config tiny --weights "$F/unet_tiny_weights.safetensors" --inputs "$F/unet_tiny_inputs.safetensors" \
       --grad-out "$F/unet_tiny_dout.safetensors" --out "$T/out.safetensors" >"$T/log" 2>&1 \
   && "$NN" compare "$T/out.safetensors" "$F/unet_tiny_expect.safetensors" >"$T/cmp" 2>&1; then
    t_ok forward_matches_torch; cat "$T/cmp" | tail -n 1
else t_fail forward_matches_torch "$(cat "$T/log" "$T/cmp" 2>/dev/null | tail -n 5)"; fi

# init makes a loadable checkpoint; forward without gradients on it
printf '' >"$T/empty"
if "$NN" init --config tiny --seed 3 --out "$T/w.safetensors" >"$T/log" 2>&1 \
   && "$NN" forward --config tiny --weights "$T/w.safetensors" --inputs "$F/unet_tiny_inputs.safetensors" \
        --out "$T/o2.safetensors" >>"$T/log" 2>&1; then
    t_ok init_then_forward
else t_fail init_then_forward "$(tail -n 3 "$T/log")"; fi

# a failure must exit non-zero with a message containing the given text
expect_fail() { # NAME TEXT ARGS...
    local name=$1 text=$2; shift 2
    local out; out=$("$NN" "$@" 2>&1); local rc=$?
    if [ $rc -ne 0 ] && echo "$out" | grep -q -- "$text"; then t_ok "$name"
    else t_fail "$name" "rc=$rc, output: $out"; fi
}
expect_fail no_args "usage"
expect_fail unknown_command "unknown command" frob --config tiny
expect_fail bad_config "unknown key" info --config "tiny,wings=2"
expect_fail missing_weights "missing --weights" forward --config tiny --inputs x --out y
expect_fail weights_not_found "nothere" forward --config tiny --weights "$T/nothere.safetensors" \
    --inputs "$F/unet_tiny_inputs.safetensors" --out "$T/o.safetensors"
expect_fail wrong_config_for_weights "shape (32, 8) in file" forward --config "tiny,ch=16" \
    --weights "$F/unet_tiny_weights.safetensors" --inputs "$F/unet_tiny_inputs.safetensors" --out "$T/o.safetensors"
expect_fail inputs_not_inputs "unexpected tensor" forward --config tiny --weights "$F/unet_tiny_weights.safetensors" \
    --inputs "$F/unet_tiny_dout.safetensors" --out "$T/o.safetensors"
expect_fail empty_inputs "$T/empty" forward --config tiny --weights "$F/unet_tiny_weights.safetensors" \
    --inputs "$T/empty" --out "$T/o.safetensors"
expect_fail grads_wrong_file "unexpected tensor" forward --config tiny --weights "$F/unet_tiny_weights.safetensors" \
    --inputs "$F/unet_tiny_inputs.safetensors" --grad-out "$F/unet_tiny_inputs.safetensors" --out "$T/o.safetensors"
expect_fail bad_seed "seed" init --config tiny --seed -4 --out "$T/w2.safetensors"
# compare notices a difference
if ! "$NN" compare "$T/o2.safetensors" "$F/unet_tiny_expect.safetensors" >/dev/null 2>&1; then t_ok compare_detects
else t_fail compare_detects "two different checkpoints compared equal"; fi

# The FLOP count (docs/UNET.md section 8, unet_forward_flops, printed by `msd-nn info`) against an
# independent count from the parameter list `msd-nn info` prints: conv 2 O C K^2 Ho Wo with Ho
# read from the module's name (enc/dec.RxR_*; mid.* at the lowest R; out.* at the highest),
# linear 2 O I, attention 4 L^2 C per qkv (L = R^2, C its input channels). Exact (tolerance 0),
# on fmnist-s, the student sizes fmnist-m and fmnist-xs, tiny and a 3-channel net with attention
# at two resolutions; and fmnist-s's GFLOP equals what docs/UNET.md says.
flops_from_params() {
    awk '
    function dims(s, a) { gsub(/[(),]/, " ", s); return split(s, a, " ") }
    /^#/ { next }
    {
        name = $1; $1 = ""; n = dims($0, d)
        if (name !~ /weight$/) next
        r = 0
        if (match(name, /^(enc|dec)\.[0-9]+x/)) r = substr(name, 5, RLENGTH - 5) + 0
        else if (name ~ /^mid\./) r = -1
        else if (name ~ /^out\./) r = -2
        if (r > 0 && (rmin == 0 || r < rmin)) rmin = r
        if (r > rmax) rmax = r
        if (n == 2) lin += 2 * d[1] * d[2]
        else if (n == 4) {
            nc++; O[nc] = d[1]; C[nc] = d[2]; K[nc] = d[3] * d[4]; R[nc] = r
            if (name ~ /\.qkv\.weight$/) { nq++; QC[nq] = d[2]; QR[nq] = r }
        }
    }
    END {
        f = lin
        for (i = 1; i <= nc; i++) { r = R[i] == -1 ? rmin : R[i] == -2 ? rmax : R[i]; f += 2 * O[i] * C[i] * K[i] * r * r }
        for (i = 1; i <= nq; i++) { r = QR[i] == -1 ? rmin : QR[i]; f += 4 * (r * r) ^ 2 * QC[i] }
        printf "%.0f\n", f
    }'
}
for cfg in fmnist-s fmnist-m fmnist-xs tiny "in=3,res=32,ch=16,mult=1-2-2,blocks=1,attn=16-8,classes=0"; do
    "$NN" info --config "$cfg" >"$T/info" 2>&1
    printed=$(tail -n 1 "$T/info" | sed -nE 's/.*\(([0-9]+) FLOP\)$/\1/p')
    counted=$(flops_from_params <"$T/info")
    if [ -n "$printed" ] && [ "$printed" = "$counted" ]; then t_ok "flops $cfg ($printed)"
    else t_fail "flops $cfg" "msd-nn info says '$printed' FLOP, the parameter list gives $counted"; fi
done
doc=$(sed -nE 's/.*forward cost ([0-9.]+) GFLOP per image.*/\1/p' "$MSD_TOP/docs/UNET.md" | head -n 1)
got=$("$NN" info --config fmnist-s | tail -n 1 | sed -nE 's/.* ([0-9.]+) GFLOP per image forward.*/\1/p')
if [ -n "$doc" ] && [ "$doc" = "$got" ]; then t_ok "fmnist-s: $got GFLOP per image, as docs/UNET.md says"
else t_fail flops_doc "docs/UNET.md says '$doc' GFLOP per image, msd-nn info '$got'"; fi
# The student sizes' rows of docs/UNET.md section 12 ("| `NAME` | 597,633 | 34.3% | 0.1709 ...")
# against msd-nn info: the parameter count and the GFLOP per image.
for cfg in fmnist-m fmnist-xs; do
    row=$(grep -F "| \`$cfg\` | " "$MSD_TOP/docs/UNET.md" | head -n 1)
    doc=$(printf '%s\n' "$row" | awk -F'|' '{gsub(/[ ,]/, "", $3); split($5, g, " "); print $3 " " g[1]}')
    got=$("$NN" info --config "$cfg" | tail -n 1 |
          sed -nE 's/.* ([0-9]+) parameters, ([0-9.]+) GFLOP per image forward.*/\1 \2/p')
    if [ -n "$got" ] && [ "$doc" = "$got" ]; then t_ok "$cfg: $got (parameters, GFLOP per image), as docs/UNET.md says"
    else t_fail "size_doc $cfg" "docs/UNET.md section 12 says '$doc' (parameters, GFLOP), msd-nn info '$got'"; fi
done
t_end
