#!/usr/bin/env bash
# test_serve.sh: serving images through pipelines/serve.pipe (issue 14): prompts on stdin, PNG
# files out, through msd-router --mode serve and K = 2 image students (msd-student --mode
# image-serve). The students are tiny UNets fresh from `msd-nn init` (two seeds, so the two
# differ), their "config" metadata renamed to the "unet.spec" a checkpoint carries: the test
# checks the serving machinery, not the images.
#   1. a few prompts: one answer line per input line, in order, naming the class, the student
#      that owns it, the latency and the PNG files; the files decode as 28x28 grey images; a
#      class named by id, by name in any case, by official name, with an article; the same
#      class and seed give the same PNG bytes (in another line, in another run), another seed
#      other bytes; --format json and --grid 1;
#   2. bad lines (empty, 1 MiB long, a NUL byte, invalid UTF-8, N = 0, N huge, an unknown class
#      id or name): each is answered in place by an error line saying why and a warning naming the line,
#      and the line after it is served;
#   3. 1000 prompts at once: every line answered exactly once, in order (the answer of line i
#      names line i's class and files NNNNNN = i); prints p50/p99 latency and images/s;
#   4. a student killed with SIGKILL mid-stream: the launcher names it, exits non-zero, and the
#      lines answered before the kill stay answered on stdout.
# Tolerances: none (counts and bytes); the only waits are bounded (t_wait_for, timeout).
. "$(dirname "$0")/lib.sh"
cd "$T_TMP"
export OPENBLAS_NUM_THREADS=1 MSD_THREADS=1
st=$T_TMP/st
mkdir -p "$st"
net=in=1,res=28,ch=4,mult=1-1,blocks=1,attn=none,classes=10
for k in 0 1; do "$BIN/msd-nn" init --config $net --seed $((k + 1)) --out "$st/student.$k.safetensors" >/dev/null; done
python3 - "$st"/student.*.safetensors <<'EOF'
import json, struct, sys
for path in sys.argv[1:]:
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n])
    h['__metadata__'] = {'unet.spec': h['__metadata__']['config']}
    hb = json.dumps(h).encode()
    hb += b' ' * (-len(hb) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(hb)) + hb + b[8 + n:])
EOF
t_check "two tiny students (msd-nn init)" test -s "$st/student.0.safetensors" -a -s "$st/student.1.safetensors"
printf 'partition 2\n0: tshirt trouser pullover dress coat\n1: 5 6 7 8 9\n' >"$st/partition.txt"
serve() { # OUT [--set ...]: serve.pipe on stdin
    local out=$1; shift
    timeout 300 "$BIN/msdpipe" up "$MSD_TOP/pipelines/serve.pipe" --set K=2 --set students="$st" --set out="$out" "$@"
}
# pngcheck FILE W H: a PNG of W x H 8-bit grey pixels that decodes (zlib, filter bytes)
pngcheck() {
    python3 - "$@" <<'EOF'
import struct, sys, zlib
path, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
b = open(path, 'rb').read()
assert b[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
i, idat, ihdr = 8, b'', None
while i < len(b):
    n, = struct.unpack('>I', b[i:i + 4]); t = b[i + 4:i + 8]; d = b[i + 8:i + 8 + n]
    assert zlib.crc32(t + d) == struct.unpack('>I', b[i + 8 + n:i + 12 + n])[0], 'bad CRC'
    if t == b'IHDR': ihdr = struct.unpack('>IIBBBBB', d)
    if t == b'IDAT': idat += d
    i += 12 + n
assert ihdr and ihdr[:4] == (w, h, 8, 0), 'IHDR %r, want %dx%d 8-bit grey' % (ihdr, w, h)
raw = zlib.decompress(idat)
assert len(raw) == h * (w + 1) and all(raw[r * (w + 1)] <= 4 for r in range(h)), 'pixel data of %d bytes' % len(raw)
EOF
}

# ---- 1. a few prompts ------------------------------------------------------------------------
printf 'a sneaker\nankle boot 3\n7 seed=42\nSneaker seed=42\nT-shirt/top 2\n0\nsneaker seed=43\n' >few.in
serve "$T_TMP/o1" <few.in >few.out 2>few.log; rc=$?
t_check "a few prompts: exit 0 ($rc)" test "$rc" -eq 0
t_check "... one answer line per input line (7)" test "$(wc -l <few.out)" -eq 7
# CLASS STUDENT MSms PATH...
want='sneaker student.1 1
boot student.1 3
sneaker student.1 1
sneaker student.1 1
tshirt student.0 2
tshirt student.0 1
sneaker student.1 1'
got=$(awk '{ n = 0; for (i = 4; i <= NF; i++) if ($i ~ /\.png$/) n++; print $1, $2, n }' few.out)
if [ "$got" = "$want" ]; then t_ok "... in order, class and owning student per line (by name, official name, id, article)"
else t_fail "answers" "got: $(echo "$got" | tr '\n' '|') want: $(echo "$want" | tr '\n' '|')"; fi
t_check "... each with a latency" test "$(grep -cE '^[a-z]+ student\.[01] [0-9]+\.[0-9]ms ' few.out)" -eq 7
t_check "... files named OUT/NNNNNN-CLASS-i.png" test "$(sed -n 2p few.out | cut -d' ' -f6)" = "$T_TMP/o1/000002-boot-2.png"
bad=0
for f in $(awk '{ for (i = 4; i <= NF; i++) print $i }' few.out); do pngcheck "$f" 28 28 || bad=$((bad + 1)); done
t_check "... every PNG named decodes as 28x28 8-bit grey ($bad bad)" test "$bad" -eq 0 -a "$(ls o1 | wc -l)" -eq 10
t_check "same class and seed in two lines (by id, by name): the same PNG bytes" cmp o1/000003-sneaker-0.png o1/000004-sneaker-0.png
t_check "another seed: other bytes" bash -c '! cmp -s o1/000003-sneaker-0.png o1/000007-sneaker-0.png'
printf 'a sneaker\nsneaker 5\nsneaker seed=42\n' | serve "$T_TMP/o1b" >again.out 2>again.log
t_check "the same seed in another run, batched with other requests: the same bytes" cmp o1/000003-sneaker-0.png o1b/000003-sneaker-0.png
t_check "the default seed (from the line number) is reproducible across runs" cmp o1/000001-sneaker-0.png o1b/000001-sneaker-0.png
printf 'a pair of running shoes\na warm winter coat\na leather handbag 2\nthe stock market today\n' |
    serve "$T_TMP/o1c" >free.out 2>free.log
got=$(awk '{ print $1, $2 }' free.out | tr '\n' '|')
t_check "free-text prompts go to the nearest class prototype (sentence encoder), off-topic to none ($got)" \
    test "$got" = "sneaker student.1|coat student.0|bag student.1|error: 'the|"
t_check "... its error line names the best match and its score" \
    grep -qE "^error: 'the stock market today': no class: the best match is '[a-z]+' \([0-9]\) at cosine [0-9.]+, below the threshold" free.out
t_check "... and so does the warning" \
    grep -qE "line 4: .*'the stock market today': no class: the best match is '[a-z]+' \([0-9]\) at cosine [0-9.]+, below the threshold" free.log
t_check "... the router logs the encoder's time per prompt" grep -qE "the prompt encoder ran for [0-9]+ prompts: [0-9.]+ ms each" free.log
# lines waiting in the router go through the encoder together (images_prepare): 40 free-text
# prompts piped at once take far fewer encoder calls than prompts
grep -v '^#\|^threshold\|^$' "$MSD_TOP/pipelines/fmnist.prompts" | sed 's/^[^:=]*[:=] *//' | grep ' ' | head -n 40 >burst.prompts
serve "$T_TMP/o1d" <burst.prompts >burst.out 2>burst.log
enc=$(grep -oE 'the prompt encoder ran for [0-9]+ prompts: [0-9.]+ ms each on average \([0-9]+ batches\)' burst.log)
np=$(echo "$enc" | grep -oE 'for [0-9]+' | grep -oE '[0-9]+'); nb=$(echo "$enc" | grep -oE '[0-9]+ batches' | grep -oE '[0-9]+')
t_check "a burst of 40 prompts: all answered; ${np:-?} through the encoder in ${nb:-?} batches (at most half)" \
    bash -c "[ \$(wc -l <burst.out) -eq 40 ] && [ '${np:-0}' -ge 30 ] && [ \$(( 2 * ${nb:-99} )) -le '${np:-0}' ]"
printf 'bag 4\nfoo\ncoat\n' | serve "$T_TMP/o2" --set format=json --set grid=1 >json.out 2>json.log
t_check "--format json --grid 1: JSON lines with the fields, a grid of 2x2 cells" python3 - json.out <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().split('\n')[:-1]
assert len(lines) == 3, lines
a, b, c = [json.loads(l) for l in lines]
assert set(b) == {'line', 'error'} and b['line'] == 2 and "'foo'" in b['error'], b
assert (a['line'], a['class'], a['class_id'], a['student'], len(a['paths'])) == (1, 'bag', 8, 'student.1', 4), a
assert a['ms'] > 0 and a['seed'] == 1000 and a['grid'].endswith('000001-bag-grid.png'), a
assert (c['line'], c['class'], c['student'], len(c['paths'])) == (3, 'coat', 'student.0', 1) and 'grid' not in c, c
EOF
t_check "... the grid decodes (2 x 28 + 3 = 59 pixels a side)" pngcheck o2/000001-bag-grid.png 59 59
odd=$T_TMP/'q"uo\te'
printf 'bag\n' | serve "$odd" --set format=json >odd.out 2>odd.log
t_check "... an --out folder with a quote and a backslash: valid JSON naming the file written" python3 - odd.out "$odd" <<'EOF'
import json, os, sys
a = json.loads(open(sys.argv[1]).read())
assert a['paths'] == [sys.argv[2] + '/000001-bag-0.png'] and os.path.exists(a['paths'][0]), a
EOF

# ---- 2. bad lines ----------------------------------------------------------------------------
{
    printf '\n'; printf 'coat\n'
    head -c 1048576 /dev/zero | tr '\0' 'x'; printf '\n'; printf 'bag\n'
    printf 'sneak\0er\n'; printf 'sandal\n'
    printf 'dre\xffss\n'; printf 'dress\n'
    printf 'shirt 0\n'; printf 'shirt\n'
    printf 'shirt 99999999999999999999\n'; printf 'pullover 2\n'
    printf '10\n'; printf '1\n'
    printf 'a unicorn\n'; printf 'trouser\n'
    printf 'bag seed=\033[2J\n'; printf 'boot\n'
} >bad.in
serve "$T_TMP/o3" <bad.in >bad.out 2>bad.log; rc=$?
t_check "bad lines: the stream ends, exit 1 (lines failed) ($rc)" test "$rc" -eq 1
t_check "... one answer line per input line (18)" test "$(wc -l <bad.out)" -eq 18
got=$(awk '{ print ($1 == "error:" ? "-" : $1) }' bad.out | tr '\n' ' ')
want='- coat - bag - sandal - dress - shirt - pullover - trouser - trouser - boot '
if [ "$got" = "$want" ]; then t_ok "... each bad line answered in place by an error line, the next one served"
else t_fail "bad lines" "got: $got; want: $want"; fi
error_line_is() { sed -n "$1p" bad.out | grep -qE "^error: $2"; } # N ERE: output line N is that error
for w in "line 1: .*empty prompt" "line 3: line too long" "line 5: line has a NUL byte" "line 7: .*not valid UTF-8 \(byte 4 of 6\)" \
    "line 9: .*image count 0 must be an integer in 1..64" "line 11: .*image count 99999999999999999999 must be" \
    "line 13: .*class id 10 is not a class \(0..9\)" "line 15: .*'a unicorn': no class: the best match is '[a-z]+' \([0-9]\) at cosine"; do
    t_check "... warning: $w" grep -qE "WARN $w" bad.log
    n=${w#line }; n=${n%%:*}; w=${w#line *: }
    t_check "... output line $n: error: $w" error_line_is "$n" "$w"
done
t_check "... no process failed" bash -c '! grep -qE "process .* (exited with status|killed)" bad.log'
# a terminal escape in a line reaches neither the terminal's stdout nor the warnings raw: \xNN
t_check "... line 17's escape byte shown as \\x1b in its error line and warning" \
    bash -c 'sed -n 17p bad.out | grep -qF "seed=\x1b[2J" && grep -qF "WARN line 17: answered with status bad-request: '"'"'seed=\x1b[2J" bad.log'
t_check "... no raw ESC byte in the answers or the log" bash -c '! grep -q "$(printf "\033")" bad.out bad.log'

# ---- 3. 1000 prompts at once -----------------------------------------------------------------
python3 - >load.in <<'EOF'
names = ['tshirt', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'boot']
for i in range(1000):
    c = (i * 7) % 10
    print(names[c] if i % 3 else '%d %d' % (c, 1 + i % 4))
EOF
t0=$(date +%s%N)
serve "$T_TMP/o4" --set inflight=8 <load.in >load.out 2>load.log; rc=$?
t1=$(date +%s%N)
t_check "1000 prompts: exit 0 ($rc)" test "$rc" -eq 0
python3 - load.in load.out $(( (t1 - t0) / 1000000 )) <<'EOF' >load.res
import sys
names = ['tshirt', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'boot']
inp, out = open(sys.argv[1]).read().split('\n')[:-1], open(sys.argv[2]).read().split('\n')[:-1]
wall = int(sys.argv[3]) / 1000.0
bad, lat, images = [], [], 0
for i, line in enumerate(inp):
    t = line.split()
    c, n = (int(t[0]), int(t[1])) if len(t) == 2 else (names.index(t[0]), 1)
    f = out[i].split() if i < len(out) else []
    paths = [p for p in f[3:] if p.endswith('.png')]
    want = ['%06d-%s-%d.png' % (i + 1, names[c], j) for j in range(n)]
    if not f or f[0] != names[c] or [p.rsplit('/', 1)[1] for p in paths] != want: bad.append(i + 1)
    else: lat.append(float(f[2][:-2])); images += n
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float('nan')
print(len(out), len(bad), ','.join(map(str, bad[:5])) or 'none', '%.1f %.1f %.0f %d %.2f' % (q(0.5), q(0.99), images / wall, images, wall))
EOF
read nout nbad first p50 p99 ips nimg wall <load.res
t_check "... 1000 answer lines ($nout)" test "$nout" -eq 1000
t_check "... every line answered exactly once, in order, with its class and files ($nbad wrong, first: $first)" test "$nbad" -eq 0
echo "1000 prompts, K=2 tiny students, inflight 8: p50 $p50 ms, p99 $p99 ms, $ips images/s ($nimg images in $wall s)"
calls=$(sed -n 's/^\[student\.[01]\] INFO served \([0-9]*\) requests, [0-9]* images in \([0-9]*\) network calls.*/\1 \2/p' load.log | tr '\n' ' ')
t_check "... each student batched concurrent requests: fewer network calls than requests (requests calls: $calls)" \
    awk -v c="$calls" 'BEGIN { n = split(c, a, " "); exit !(n == 4 && a[2] < a[1] && a[4] < a[3]) }'

# ---- 4. a student killed mid-stream ----------------------------------------------------------
mkfifo in.fifo
"$BIN/msdpipe" up "$MSD_TOP/pipelines/serve.pipe" --set K=2 --set students="$st" --set out="$T_TMP/o5" <in.fifo >kill.out 2>kill.log &
lpid=$!
exec 3>in.fifo
trap 'kill $lpid 2>/dev/null; rm -rf "$T_TMP"' EXIT
printf 'sneaker\ncoat\nbag 2\ndress\n' >&3
t_wait_for 60 bash -c 'test "$(wc -l <kill.out)" -ge 4'
cp kill.out kill.before
spid=$(pgrep -f -- "--name student.1 --control ipc://.*/serve-$lpid/" | head -n 1)
t_check "student.1 found ($spid)" test -n "$spid"
[ -n "$spid" ] && kill -9 "$spid"
printf 'sandal\ncoat\n' >&3 2>/dev/null
exec 3>&-
t_wait_for 60 bash -c "! kill -0 $lpid 2>/dev/null" || kill "$lpid"
wait "$lpid"; rc=$?
t_check "killed: the launcher exits non-zero ($rc)" test "$rc" -ne 0
t_check "... and names the killed student" grep -qE "student.1 \(pid $spid\).*(signal 9|SIGKILL|killed)" kill.log
t_check "... the 4 lines answered before the kill stay answered" \
    bash -c "test \"\$(head -n 4 kill.out)\" = \"\$(cat kill.before)\" && test \"\$(grep -c png kill.before)\" -eq 4"
t_check "no sanitizer report in any log" bash -c "$(declare -f t_log_clean); T_SAN_PATTERN='$T_SAN_PATTERN'; for f in *.log; do t_log_clean \$f || exit 1; done"
t_end
