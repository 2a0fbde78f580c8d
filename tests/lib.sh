# lib.sh: the shell side of the test framework (sourced by tests/test_*.sh).
# t_ok NAME / t_fail NAME MSG record a result; t_end prints "# FILE: P passed, F failed" and
# exits with the verdict. BIN is the folder with the binaries under test (tests/run sets it).
# Every wait in a shell test goes through t_wait_for, which is bounded.
T_PASSED=0
T_FAILED=0
: "${BIN:=bin}"
T_TMP=$(mktemp -d "${TMPDIR:-/tmp}/msdtest.XXXXXX")
trap 'rm -rf "$T_TMP"' EXIT

t_ok() { T_PASSED=$((T_PASSED + 1)); echo "ok   $1"; }
t_fail() { T_FAILED=$((T_FAILED + 1)); echo "FAIL $1: $2"; }
t_check() { # NAME COMMAND...: passes when COMMAND exits 0
    local name=$1; shift
    if "$@"; then t_ok "$name"; else t_fail "$name" "command failed: $*"; fi
}
t_wait_for() { # SECONDS COMMAND...: poll COMMAND every 0.05 s until it succeeds or time runs out
    local limit=$1; shift
    local end=$(( $(date +%s%N) + limit * 1000000000 ))
    while [ "$(date +%s%N)" -lt "$end" ]; do
        if "$@"; then return 0; fi
        sleep 0.05
    done
    return 1
}
t_end() {
    echo "# $(basename "$0"): $T_PASSED passed, $T_FAILED failed"
    [ "$T_FAILED" -eq 0 ]
}
