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
t_end
