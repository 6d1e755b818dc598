# test_help.sh -- moe --version, moe help, every command's --help (with the
# live defaults), usage errors.
. tests/cli/lib.sh

out=$("$MOE" --version); rc=$?
case "$out" in "moe 0."*"(libmoe 0."*")") [ $rc -eq 0 ] && pass version || fail version ;; *) fail version "$out" ;; esac
check version_short sh -c '"$1" -V | grep -q "^moe "' sh "$MOE"

"$MOE" --help > help.txt; rc=$?
check help_main sh -c '[ $0 -eq 0 ] && grep -q "train" help.txt && grep -q "predict" help.txt && grep -q "eval" help.txt && grep -q "inspect" help.txt' $rc

for c in train predict eval inspect; do
    "$MOE" help $c > h1.txt; r1=$?
    "$MOE" $c --help > h2.txt; r2=$?
    "$MOE" $c -h > h3.txt; r3=$?
    check "help_$c" sh -c '[ $0 -eq 0 ] && [ $1 -eq 0 ] && [ $2 -eq 0 ] && cmp -s h1.txt h2.txt && cmp -s h1.txt h3.txt && grep -q "^Usage: moe '$c'" h1.txt' $r1 $r2 $r3
    expect "help_$c.txt" h1.txt
done

# Live defaults: the library's defaults appear in train --help.
"$MOE" train --help > th.txt
check help_defaults sh -c 'grep -q -- "--max-iter N .*\[500\]" th.txt && grep -q -- "--tol TOL .*\[1e-08\]" th.txt && grep -q -- "--seed S .*\[1\]" th.txt && grep -q -- "--restarts R .*\[5\]" th.txt && grep -q "covariance.*\[diag\]" th.txt'
# Every option has a short and a long form.
check help_short_long sh -c '! grep -E "^      --" th.txt'
# --help shows the defaults, not values given before it.
"$MOE" train --restarts 9 --help > th2.txt
check help_untouched cmp -s th.txt th2.txt

"$MOE" help nosuch 2> err.txt; rc=$?
check help_unknown sh -c '[ $0 -eq 1 ] && grep -q "unknown command" err.txt' $rc
"$MOE" frobnicate 2> err.txt; rc=$?
check unknown_command sh -c '[ $0 -eq 1 ] && grep -q "unknown command .frobnicate." err.txt' $rc
"$MOE" 2> err.txt; rc=$?
check no_command sh -c '[ $0 -eq 1 ] && grep -q "^Usage" err.txt' $rc
"$MOE" train --frob x.csv 2> err.txt; rc=$?
check unknown_option sh -c '[ $0 -eq 1 ] && grep -q "unknown option .--frob." err.txt' $rc
"$MOE" train x.csv --seed 2> err.txt; rc=$?
check missing_argument sh -c '[ $0 -eq 1 ] && grep -q "needs an argument" err.txt' $rc
"$MOE" train 2> err.txt; rc=$?
check no_data_file sh -c '[ $0 -eq 1 ] && grep -q "no data file" err.txt' $rc
"$MOE" predict only.moe 2> err.txt; rc=$?
check predict_usage sh -c '[ $0 -eq 1 ] && grep -q "give a model and a data file" err.txt' $rc
