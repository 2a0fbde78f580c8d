#!/usr/bin/env bash
# test_ssh.sh: the launcher's host= placement through a real ssh: a private sshd (Debian's
# openssh-server) on a free loopback port with its own host key and a throw-away client key,
# all in this test's temp folder (no system config is read or touched), reached through an
# MSDPIPE_SSH wrapper that passes -p PORT -i KEY and a private known_hosts. Where sshd cannot
# start (binaries missing, not root and it does not come up) every check is counted as skipped
# with the reason, never passed. sshd is stopped at the end whatever happens (trap).
#  - the toy's stage 2 with K=2, students and critics on host 127.0.0.1 over ssh
#    (tests/pipelines/mog_stage2_ssh.pipe: tcp + CurveZMQ to data, teacher and the launcher),
#    finishes with the four final checkpoints byte for byte those of a one-host run of
#    mog_stage2.pipe with the same settings (one thread per process in both: the toy is exact);
#  - no command line of any process on the machine holds a secret key of the run while it is
#    up (the keys reach the other host on ssh's stdin): the secret keys are read from the run's
#    curve.keys and the remote copies, /proc/*/cmdline of every process is searched for them;
#  - kill -9 of the remote student.1 (the msd-student under sshd) mid-run: the launcher names
#    student.1, exits non-zero, and no process of the run is left (polled, 30 s).
#  - no sanitizer report in the runs' logs (the ASan+UBSan suite; remote stderr comes back over ssh).
. "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
M="$(cd "$BIN" && pwd)/msdpipe"
export MSDPIPE_PATH="$root/pipelines"
S_DIR=$T_TMP/sshd
SSHD_PID=
cleanup() {
    [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null
    rm -rf "$T_TMP"
}
trap cleanup EXIT

skip_all() {
    t_skip "sshd" "$1"
    t_skip "stage 2 over ssh" "no sshd"
    t_skip "no secret on a command line" "no sshd"
    t_skip "kill -9 of the remote student" "no sshd"
    t_skip "no sanitizer report" "no sshd"
    t_end; exit
}
[ -x /usr/sbin/sshd ] || skip_all "/usr/sbin/sshd missing (tools/install-deps installs openssh-server)"
command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || skip_all "ssh or ssh-keygen missing (openssh-client)"

# ---- a private sshd ----------------------------------------------------------------------
mkdir -p "$S_DIR" && chmod 700 "$S_DIR"
ssh-keygen -q -t ed25519 -N '' -f "$S_DIR/host_key" >/dev/null
ssh-keygen -q -t ed25519 -N '' -f "$S_DIR/id" >/dev/null
cp "$S_DIR/id.pub" "$S_DIR/authorized_keys"
port=$("$here/free_port")
cat >"$S_DIR/config" <<CFG
ListenAddress 127.0.0.1
HostKey $S_DIR/host_key
AuthorizedKeysFile $S_DIR/authorized_keys
PidFile none
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowUsers $(id -un)
X11Forwarding no
AllowTcpForwarding no
LogLevel ERROR
CFG
# sshd running as root wants its privilege-separation folder
[ "$(id -u)" -eq 0 ] && [ ! -d /run/sshd ] && mkdir -p /run/sshd && chmod 755 /run/sshd
/usr/sbin/sshd -D -e -f "$S_DIR/config" -p "$port" 2>"$S_DIR/sshd.log" &
SSHD_PID=$!
cat >"$S_DIR/ssh" <<W
#!/bin/sh
exec ssh -F none -p $port -i $S_DIR/id -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=$S_DIR/known_hosts -o StrictHostKeyChecking=accept-new -o LogLevel=ERROR "\$@"
W
chmod +x "$S_DIR/ssh"
ssh_up() { timeout 10 "$S_DIR/ssh" -- 127.0.0.1 true </dev/null 2>>"$S_DIR/client.log"; }
if ! t_wait_for 20 ssh_up; then
    why="sshd on 127.0.0.1:$port did not accept the test key: $(tail -n 2 "$S_DIR/sshd.log" "$S_DIR/client.log" | tr '\n' ' ')"
    if [ "$(id -u)" -ne 0 ]; then skip_all "not root; $why"; fi
    t_fail sshd "$why"; t_end; exit
fi
t_ok "a private sshd on 127.0.0.1:$port takes the throw-away key"
export MSDPIPE_SSH="$S_DIR/ssh"

run=$T_TMP/mog
RD=$T_TMP/rd
mkdir -p "$RD" && chmod 700 "$RD"
S=(--set steps=60 --set batch=64 --set warmup=5 --set ttur=2 --set ckpt_every=30 --set log_every=10
   --set net=mlp,width=64,depth=3 --set mix="$root/pipelines/mog8.mix" --set run="$run" --run-dir "$RD")
same_ckpts() { # DIR: the four final checkpoints equal the reference run's
    local f
    for f in student.0 student.1 critic.0 critic.1; do
        cmp -s "$1/$f.safetensors" "$T_TMP/ref/$f.safetensors" || { echo "$f differs"; return 1; }
    done
}
t_check "partition K=2" "$M" up mog_partition --set K=2 --set run="$run" --run-dir "$RD" 2>"$T_TMP/part.log"
# one thread per process: the one-host run shares one core (taskset), the remote processes get
# threads=1 from the pipeline file; a sum split over more threads rounds otherwise
if timeout 300 taskset -c 0 "$M" up mog_stage2 --set K=2 "${S[@]}" --set ready_timeout=60 2>"$T_TMP/ref.log" </dev/null; then
    cp -r "$run/ckpt" "$T_TMP/ref"
    t_ok "the one-host reference run"
else t_fail reference "$(tail -n 20 "$T_TMP/ref.log")"; t_end; exit; fi

# The run's secret keys (t_key_secrets, tests/lib.sh), read while it is up: in the launcher's
# RUNDIR/curve.keys and in the copy each remote process got on ssh's stdin (RUNDIR/127.0.0.1/NAME.keys).
NREMOTE=4 # critic.0, critic.1, student.0, student.1 run over ssh; each has a tcp link
keys_ready() { # RUNDIR: the launcher's key file and every remote copy hold both secret keys
    local f n=0
    [ "$(t_key_secrets "$1/curve.keys" | wc -l)" -eq 2 ] || return 1
    for f in "$1"/127.0.0.1/*.keys; do
        [ "$(t_key_secrets "$f" | wc -l)" -eq 2 ] && n=$((n + 1))
    done
    [ "$n" -eq "$NREMOTE" ]
}
launcher_gone() { ! kill -0 "$1" 2>/dev/null; }
finish() { # PID SECONDS: the launcher's status once it exits (bounded; SIGTERM, then SIGKILL, past it)
    if ! t_wait_for "$2" launcher_gone "$1"; then
        kill -TERM "$1"; t_wait_for 20 launcher_gone "$1" || kill -KILL "$1"
    fi
    wait "$1"
}
rm -rf "$run/ckpt" "$run/metrics.jsonl"
MSDPIPE_VERBOSE=1 "$M" up "$here/pipelines/mog_stage2_ssh.pipe" "${S[@]}" --set ready_timeout=60 \
    >"$T_TMP/ssh.out" 2>"$T_TMP/ssh.log" </dev/null &
LPID=$!
finish "$LPID" 300; rc=$?
if [ "$rc" -eq 0 ]; then t_ok "stage 2 with students and critics over ssh finished"
else t_fail "stage 2 over ssh" "status $rc: $(grep -v DEBUG "$T_TMP/ssh.log" | tail -n 15)"; fi
cmd1=$(grep '^\[msdpipe\] DEBUG student.1: ' "$T_TMP/ssh.log" | head -n 1)
if echo "$cmd1" | grep -q -- "$S_DIR/ssh -- 127.0.0.1 umask 077 .*'--curve-keys'" &&
   echo "$cmd1" | grep -q -- "'data=tcp://127.0.0.1:[0-9]*'" && echo "$cmd1" | grep -q -- "'critic=ipc://"; then
    t_ok "student.1 over ssh: tcp+Curve to data, ipc to its critic"
else t_fail "student.1's command line" "$cmd1"; fi
if d=$(same_ckpts "$run/ckpt"); then t_ok "checkpoints byte for byte those of the one-host run"
else t_fail "checkpoints over ssh" "$d"; fi

# ---- kill -9 of the remote student -----------------------------------------------------------
rm -rf "$run/ckpt" "$run/metrics.jsonl"
"$M" up "$here/pipelines/mog_stage2_ssh.pipe" "${S[@]}" --set steps=100000 --set ready_timeout=60 \
    >/dev/null 2>"$T_TMP/kill.log" </dev/null &
LPID=$!
# ---- no secret on a command line, while this long run is up (the 60-step run above can end
# before a check sees it). The launcher's run folder is RUNDIR_BASE/PIPELINE-LAUNCHERPID.
rundir=$RD/mog_stage2_ssh-$LPID
if ! t_wait_for 120 grep -qs 'pipeline up' "$T_TMP/kill.log"; then
    t_fail "no secret on a command line" "the run did not come up: $(grep -v DEBUG "$T_TMP/kill.log" | tail -n 10)"
elif ! t_wait_for 30 keys_ready "$rundir"; then
    t_fail "no secret on a command line" "no complete key file and $NREMOTE remote copies in $rundir: $(ls -lR "$rundir" 2>&1 | tr '\n' ' ')"
else
    t_no_secret_on_cmdlines "neither of the run's secret keys (key file + $NREMOTE copies) on the command line of any process" \
        "$rundir" 6 "$rundir/curve.keys" "$rundir"/127.0.0.1/*.keys
fi
victim=
if t_wait_for 120 grep -qs '^\[student.1\] INFO step 10/' "$T_TMP/kill.log"; then
    # the msd-student of student.1 runs under sshd, not under the launcher
    victim=$(pgrep -f -- "^[^ ]*/msd-student --name student\.1 .*--curve-keys $RD/" | head -n 1)
    [ -n "$victim" ] && kill -9 "$victim"
fi
finish "$LPID" 120; krc=$?
if [ -z "$victim" ]; then t_fail "kill -9 of the remote student" "no msd-student for student.1: $(pgrep -af msd-student)"
elif [ "$krc" -ne 0 ] && grep -q 'ERROR process student.1 (pid [0-9]*' "$T_TMP/kill.log"; then
    t_ok "kill -9 of the remote student.1 (pid $victim): the launcher names it, exits $krc"
else t_fail "kill -9 of the remote student" "status $krc: $(grep -v DEBUG "$T_TMP/kill.log" | tail -n 10)"; fi
# the ASan+UBSan suite (MSD_TEST_VARIANT=san): a report of any process, remote ones included
# (their stderr comes back through ssh), is in these logs
if r=$(t_log_clean "$T_TMP/ref.log" && t_log_clean "$T_TMP/ssh.log" && t_log_clean "$T_TMP/kill.log"); then
    t_ok "no sanitizer report in the three runs' logs"
else t_fail "sanitizer report" "$r"; fi
none_left() { ! pgrep -f -- "$RD/" >/dev/null; } # every process of the run has $RD in its command line
if t_wait_for 30 none_left; then t_ok "no process of the run left"
else t_fail "left behind" "$(pgrep -af -- "$RD/")"; fi
t_end
