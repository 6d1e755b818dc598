# test_atomic.sh -- acceptance 4: killing `moe train` at any moment never
# leaves a half-written or corrupted model at the destination.
#
# Uses the test hook MOE_TEST_SLOW_SAVE=SECONDS (tools/util.c): the program
# sleeps between writing+fsyncing the temporary file and renaming it over
# the destination, so the kill lands exactly inside the save. Then kills at
# random moments without the hook, and interrupts training with SIGTERM.
. tests/cli/lib.sh

TRAIN="$DATA/mcycle_train.csv"
"$MOE" train -q -k 2 -s 1 -j 1 "$TRAIN" -o old.moe || echo "FAIL fixture old.moe"

# wait_for PATTERN: until a file matching the glob exists (at most ~10 s).
wait_for() {
    _i=0
    while [ $_i -lt 200 ]; do
        for _f in $1; do [ -e "$_f" ] && return 0; done
        sleep 0.05
        _i=$((_i + 1))
    done
    return 1
}

# ---- kill -9 during the save ---------------------------------------------------------
cp old.moe dest.moe
MOE_TEST_SLOW_SAVE=30 "$MOE" train -q -k 3 -s 2 -j 1 "$TRAIN" -o dest.moe &
pid=$!
if wait_for '.dest.moe.tmp-*'; then
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    check kill_during_save_old_model_intact cmp -s old.moe dest.moe
    check kill_during_save_old_model_loads sh -c '"$0" inspect dest.moe > /dev/null' "$MOE"
    # The temporary file was complete: it is a valid model too (never renamed).
    tmpf=$(ls -a | grep '^\.dest\.moe\.tmp-' | head -1)
    check kill_during_save_temp_is_whole sh -c '"$0" inspect "$1" > /dev/null' "$MOE" "$tmpf"
    rm -f .dest.moe.tmp-*
else
    kill -9 $pid 2>/dev/null
    fail kill_during_save "the temporary file never appeared"
fi

# The hook with a short pause and no kill: the new model replaces the old.
MOE_TEST_SLOW_SAVE=0.2 "$MOE" train -q -k 3 -s 2 -j 1 "$TRAIN" -o dest.moe
"$MOE" train -q -k 3 -s 2 -j 1 "$TRAIN" -o direct.moe
check slow_save_completes sh -c 'cmp -s dest.moe direct.moe && [ -z "$(ls -a | grep "\.tmp-")" ]'

# ---- kill -9 at random moments ---------------------------------------------------------
# A data set big enough that training takes a while.
awk 'function u() { s = (s * 16807) % 2147483647; return s / 2147483647 }
    BEGIN { s = 3; print "x,z,y"
        for (i = 0; i < 40000; i++) { x = 60 * u(); z = u()
            y = (x < 15 ? 0 : x < 30 ? -100 * sin((x - 15) / 5) : 20 * sin(x / 4)) + 10 * (u() - 0.5)
            printf "%.4f,%.4f,%.4f\n", x, z, y } }' > big.csv
cp old.moe big.moe
ok=1
for i in 1 2 3 4 5 6 7 8; do
    delay=$(awk -v i=$i 'BEGIN { srand(); printf "%.3f", 0.1 * i - 0.08 + 0.08 * rand() }')
    "$MOE" train -q -k 3 -r 2 -j 1 --tol 0 --max-iter 40 big.csv -o big.moe &
    pid=$!
    sleep "$delay"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    if ! "$MOE" inspect big.moe > /dev/null 2>&1; then ok=0; echo "  kill after ${delay}s: big.moe does not load"; fi
    rm -f .big.moe.tmp-*
done
[ $ok = 1 ] && pass kill_at_random_moments || fail kill_at_random_moments

# ---- SIGTERM during training: clean cancellation, exit 2, old model kept -------------------
cp old.moe term.moe
"$MOE" train -k 4 -r 50 -j 1 --tol 0 --max-iter 100000 big.csv -o term.moe 2> term_err.txt &
pid=$!
sleep 0.5
kill -TERM $pid
wait $pid
rc=$?
check sigterm_exit_2 [ $rc -eq 2 ]
check sigterm_message grep -q 'interrupted: no model written' term_err.txt
check sigterm_old_model_intact cmp -s old.moe term.moe
check sigterm_no_temp sh -c '[ -z "$(ls -a | grep "\.tmp-")" ]'
