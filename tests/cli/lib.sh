# lib.sh -- helpers sourced by the CLI tests (tests/cli/test_*.sh).
#
# Sourced, it sets ROOT (the repository), MOE (the program, absolute), TMP
# (a scratch directory removed on exit, also the working directory) and
# defines pass/fail helpers. Run directly it does nothing.
#
# Expected outputs live in tests/cli/expected/. They are compared token by
# token: words must match exactly, numbers to a relative 1e-6 (BLAS kernels
# differ in the last bits between CPUs). MOE_UPDATE_EXPECTED=1 rewrites them.

ROOT=$(pwd)
BUILD=${BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
MOE="$BUILD/moe"
EXPECTED="$ROOT/tests/cli/expected"
DATA="$ROOT/data"
TDATA="$ROOT/tests/data"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/moe-cli.XXXXXX")
# Sanitizer builds (make sanitize): reports go to files, and any report
# fails the script, even from a command whose exit status is not checked.
SANLOG="$TMP/sanitizer-report"
export ASAN_OPTIONS="log_path=$SANLOG${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="log_path=$SANLOG${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
finish() {
    if ls "$SANLOG".* > /dev/null 2>&1; then
        echo "FAIL sanitizer_report"
        head -40 "$SANLOG".*
    fi
    cd / && rm -rf "$TMP"
}
trap finish EXIT
trap 'exit 130' INT TERM
cd "$TMP" || exit 2

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1${2:+: $2}"; }

# check NAME COMMAND...: PASS when the command succeeds.
check() {
    _name=$1
    shift
    if "$@"; then pass "$_name"; else fail "$_name"; fi
}

# numdiff A B [TOL]: same words, numbers equal to a relative TOL [1e-6].
numdiff() {
    awk -v tol="${3:-1e-6}" -v fa="$1" -v fb="$2" '
    function isnum(s) { return s ~ /^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/ }
    function abs(x) { return x < 0 ? -x : x }
    BEGIN {
        na = 0; nb = 0
        while ((getline line < fa) > 0) { n = split(line, t, /[][ \t,:{}"=]+/); for (i = 1; i <= n; i++) if (t[i] != "") A[++na] = t[i] }
        while ((getline line < fb) > 0) { n = split(line, t, /[][ \t,:{}"=]+/); for (i = 1; i <= n; i++) if (t[i] != "") B[++nb] = t[i] }
        if (na != nb) { printf "numdiff: %d tokens vs %d\n", na, nb > "/dev/stderr"; exit 1 }
        for (i = 1; i <= na; i++) {
            if (A[i] == B[i]) continue
            if (isnum(A[i]) && isnum(B[i])) {
                a = A[i] + 0; b = B[i] + 0; m = abs(b) > 1 ? abs(b) : 1
                if (abs(a - b) <= tol * m) continue
            }
            printf "numdiff: token %d: %s vs %s\n", i, A[i], B[i] > "/dev/stderr"; exit 1
        }
    }'
}

# expect NAME FILE: compare FILE with tests/cli/expected/NAME.
expect() {
    if [ "${MOE_UPDATE_EXPECTED:-0}" = 1 ]; then
        cp "$2" "$EXPECTED/$1"
        pass "$1 (expected file updated)"
    elif [ ! -f "$EXPECTED/$1" ]; then
        fail "$1" "no expected file tests/cli/expected/$1"
    elif numdiff "$2" "$EXPECTED/$1"; then
        pass "$1"
    else
        fail "$1" "differs from tests/cli/expected/$1"
    fi
}

# json_num FILE KEY: the number after "KEY": in a JSON file (first match).
json_num() {
    sed -n "s/^ *\"$2\": *\([-+0-9.eE]*\).*/\1/p" "$1" | head -1
}

# Fixtures made on the fly, deterministic (Park-Miller generator in awk).
# make_cat FILE N: id,color,size,weight,label -- a string class that depends
# on color and size, with a categorical input and case weights.
make_cat() {
    awk -v n="$2" 'function u() { s = (s * 16807) % 2147483647; return s / 2147483647 }
    BEGIN {
        s = 42; print "id,color,size,weight,label"
        split("red green blue", col, " ")
        for (i = 1; i <= n; i++) {
            c = col[1 + int(3 * u())]; x = 4 * u() - 2
            z = x + (c == "red" ? 1.5 : c == "blue" ? -1.5 : 0) + 3 * (u() - 0.5)
            lab = z > 0.7 ? "big cat" : z < -0.7 ? "dog" : "bird"
            printf "r%d,%s,%.4f,%.2f,%s\n", i, c, x, 0.5 + u(), lab
        }
    }' > "$1"
}

# make_multi FILE N: x1,x2,y1,y2 -- two outputs, two regimes mixed by a
# soft gate in x1 (so the fitted gate is finite and well determined).
make_multi() {
    awk -v n="$2" 'function u() { s = (s * 16807) % 2147483647; return s / 2147483647 }
    BEGIN {
        s = 7; print "x1,x2,y1,y2"
        for (i = 1; i <= n; i++) {
            a = 2 * u() - 1; b = 2 * u() - 1; e1 = u() - 0.5; e2 = u() - 0.5
            if (u() < 1 / (1 + exp(-3 * a))) { y1 = 1 + 2 * a + 0.2 * e1; y2 = -1 + b + 0.2 * e2 }
            else       { y1 = -1 - a + 0.2 * e1;   y2 = 2 - 2 * b + 0.2 * e2 }
            printf "%.5f,%.5f,%.5f,%.5f\n", a, b, y1, y2
        }
    }' > "$1"
}
