#!/usr/bin/env bash
# test_cuda_lib.sh: the CUDA backend as a shared library (docs/CUDA.md "Building and running"):
# in a build with CUDA the binaries link no CUDA library; the first request for a GPU opens
# libmsd-cuda.so beside the binary (or $MSD_CUDA_LIB), whose references into the engine resolve
# against the binary (dlopen with RTLD_NOW: a missing symbol would fail here, GPU or not).
# Checks: no binary needs libcudart/libcublas/libcudnn; every binary with the backend exports the
# five symbols the library takes from it; --gpu 0 reaches the library (its own message: no
# usable device here, or a run where there is a GPU); a missing, corrupt or misnamed library is
# refused with a message naming the path. Skips for a build without CUDA (CUDA=0, or the
# sanitizer variant).
. "$(dirname "$0")/lib.sh"
cd "$T_TMP"
B=$(cd "$BIN" && pwd)
T="$MSD_TOP/models/fmnist_teacher.safetensors"
if [ ! -e "$B/libmsd-cuda.so" ]; then
    out=$("$B/msd-sample" --ckpt "$T" --n 2 --steps 1 --gpu 0 --out x.safetensors 2>&1)
    if echo "$out" | grep -q "this build has no CUDA"; then
        t_skip "CUDA library" "this build has no CUDA backend ($out)"
    else t_fail "CUDA library" "no $B/libmsd-cuda.so, yet the build has CUDA: $out"; fi
    t_end; exit
fi
linked=
for f in "$B"/msd-* "$B"/msdpipe; do
    ldd "$f" | grep -qE 'lib(cudart|cublas|cublasLt|cudnn)\.so' && linked="$linked $(basename "$f")"
done
t_check "no binary links a CUDA library (${linked:-none does})" test -z "$linked"
t_check "libmsd-cuda.so links cuDNN, cuBLAS and the CUDA runtime itself" \
    bash -c "ldd '$B/libmsd-cuda.so' | grep -q libcudnn && ldd '$B/libmsd-cuda.so' | grep -q libcublas && ldd '$B/libmsd-cuda.so' | grep -q libcudart"
missing=
for f in "$B"/msd-*; do
    nm -D --defined-only "$f" 2>/dev/null | grep -qw backend_get || continue
    for s in msd_errf msd_die msd_calloc msd_check_fail backend_ctx_scratch; do
        nm -D --defined-only "$f" | grep -qw "$s" || missing="$missing $(basename "$f"):$s"
    done
done
t_check "every binary with the backend exports what the library uses (${missing:-nothing missing})" test -z "$missing"
need=$(nm -D --undefined-only "$B/libmsd-cuda.so" | awk '{print $2}' | grep -E '^(msd_|backend_)' | sort | tr '\n' ' ')
t_check "... and that is all the library takes from the engine: $need" \
    test "$need" = "backend_ctx_scratch msd_calloc msd_check_fail msd_die msd_errf "
for tool in msd-sample msd-eval; do
    if [ $tool = msd-sample ]; then args=(--ckpt "$T" --n 2 --steps 1 --gpu 0 --out x.safetensors)
    else args=(students --one-step "$T" --n 20 --no-judge --grid x.png --gpu 0); fi
    out=$("$B/$tool" "${args[@]}" 2>&1); rc=$?
    if [ $rc -eq 0 ] || echo "$out" | grep -qE "no usable CUDA device|CUDA device\(s\)"; then
        t_ok "$tool --gpu 0 reaches the CUDA library (rc $rc: $(echo "$out" | tail -n 1 | cut -c1-100))"
    else t_fail "$tool --gpu 0 reaches the CUDA library" "rc $rc: $out"; fi
done
refused() { [ "$1" -eq 1 ] && grep -qF -- "$3" <<<"$2"; } # RC OUTPUT TEXT: status 1 and TEXT said
mkdir lone && cp "$B/msd-sample" lone/
out=$(lone/msd-sample --ckpt "$T" --n 2 --steps 1 --gpu 0 --out x.safetensors 2>&1); rc=$?
t_check "a binary without its library: status 1, the two places looked in named" \
    refused "$rc" "$out" "libmsd-cuda.so is in neither $T_TMP/lone/libmsd-cuda.so nor $T_TMP/lone/../lib/libmsd-cuda.so"
out=$(lone/msd-sample --ckpt "$T" --n 2 --steps 1 --out x.safetensors 2>&1); rc=$?
t_check "... it still runs on the CPU" bash -c "[ $rc -eq 0 ] && [ -s x.safetensors ]"
echo "not a library" >lone/libmsd-cuda.so
out=$(lone/msd-sample --ckpt "$T" --n 2 --steps 1 --gpu 0 --out x.safetensors 2>&1); rc=$?
t_check "a corrupt library: status 1, 'cannot be loaded' naming it" \
    refused "$rc" "$out" "the CUDA backend $T_TMP/lone/libmsd-cuda.so cannot be loaded"
out=$(MSD_CUDA_LIB=$T_TMP/nope.so "$B/msd-sample" --ckpt "$T" --n 2 --steps 1 --gpu 0 --out x.safetensors 2>&1); rc=$?
t_check "MSD_CUDA_LIB naming no file: status 1, named" refused "$rc" "$out" "MSD_CUDA_LIB=$T_TMP/nope.so: no such file"
zlib=$(ldconfig -p | awk '/libz\.so\.1 /{print $NF; exit}')
out=$(MSD_CUDA_LIB=$zlib "$B/msd-sample" --ckpt "$T" --n 2 --steps 1 --gpu 0 --out x.safetensors 2>&1); rc=$?
t_check "MSD_CUDA_LIB naming another library ($zlib): status 1, 'not this build's CUDA backend'" \
    refused "$rc" "$out" "is not this build"
t_end
