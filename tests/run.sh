#!/bin/sh
# Run every test program under $BUILD/tests (and the CLI tests, if any), then
# print "N passed, N failed" counting individual tests (PASS/FAIL lines).
# A program that crashes or exits non-zero without a FAIL line counts as one
# failed test.
BUILD=${BUILD:-build}
pass=0; fail=0
out=$(mktemp); trap 'rm -f "$out"' EXIT
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    echo "== $name"
    "$t" >"$out" 2>&1; rc=$?
    cat "$out"
    p=$(grep -c '^PASS ' "$out"); f=$(grep -c '^FAIL ' "$out")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "FAIL $name (exit status $rc)"; fi
    pass=$((pass + p)); fail=$((fail + f))
done
for t in tests/cli/*.sh; do
    [ -f "$t" ] || continue
    echo "== $t"
    BUILD="$BUILD" sh "$t" >"$out" 2>&1; rc=$?
    cat "$out"
    p=$(grep -c '^PASS ' "$out"); f=$(grep -c '^FAIL ' "$out")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "FAIL $t (exit status $rc)"; fi
    pass=$((pass + p)); fail=$((fail + f))
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
