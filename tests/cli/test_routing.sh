# test_routing.sh -- routing diagnostics in `moe train`'s log and in
# `moe inspect --data`: a gate trained into collapse is flagged, healthy
# models are not.
. tests/cli/lib.sh

# one.csv: a single linear regime y = 1 + 2x + noise (400 rows).
awk 'function u() { s = (s * 16807) % 2147483647; return s / 2147483647 }
BEGIN { s = 11; print "x,y"
    for (i = 1; i <= 400; i++) { x = 4 * u() - 2; e = u() + u() + u() - 1.5
        printf "%.5f,%.5f\n", x, 1 + 2 * x + 0.3 * e } }' > one.csv
# four.csv: four regimes, one on each quarter of the x range (800 rows).
awk 'function u() { s = (s * 16807) % 2147483647; return s / 2147483647 }
BEGIN { s = 5; print "x,y"; split("3 -2 4 -1", a, " "); split("-4 5 -3 2", b, " ")
    for (i = 1; i <= 800; i++) { x = 4 * u() - 2; k = x < -1 ? 1 : x < 0 ? 2 : x < 1 ? 3 : 4
        printf "%.5f,%.5f\n", x, a[k] + b[k] * x + 0.1 * (u() - 0.5) } }' > four.csv

# ---- trained into collapse ---------------------------------------------------
# Four experts on one regime, and --min-support a quarter of the rows: the
# experts that start below it are frozen while the gate goes on learning,
# and the gate routes every row around them.
"$MOE" train -k 4 -s 1 -r 1 -j 1 --min-support 100 one.csv -o collapsed.moe 2> train_collapsed.log
check train_collapsed_ok [ -s collapsed.moe ]
check train_log_routing grep -q '^moe train: routing on 400 rows: gate entropy' train_collapsed.log
check train_log_rows grep -q '^moe train:   rows per expert: 1: ' train_collapsed.log
check train_log_collapsed grep -Eq '^moe train: warning: collapsed gate: expert [1-4] takes (9[0-9]|100)% of rows$' train_collapsed.log
check train_log_dead grep -Eq '^moe train: warning: dead experts: [1-4](, [1-4])*$' train_collapsed.log
# -q: no routing lines
"$MOE" train -q -k 4 -s 1 -r 1 -j 1 --min-support 100 one.csv -o collapsed_q.moe 2> train_q.log
check train_quiet_silent [ ! -s train_q.log ]
check train_quiet_same_model cmp -s collapsed.moe collapsed_q.moe

"$MOE" inspect --data one.csv collapsed.moe > insp_collapsed.txt
check inspect_routing_section grep -q '^routing          one.csv, 400 rows$' insp_collapsed.txt
check inspect_collapsed grep -Eq '^  collapsed gate: expert [1-4] takes (9[0-9]|100)% of rows$' insp_collapsed.txt
check inspect_dead grep -Eq '^  dead experts: [1-4]' insp_collapsed.txt
check inspect_dead_rows awk '$NF == "dead" { n++; if ($2 != 0) exit 1 } END { exit !(n >= 1) }' insp_collapsed.txt
# The same flags as the training log (same rows, same model).
sed -n 's/^moe train: warning: //p' train_collapsed.log > flags_train.txt
grep -E '^  (collapsed|dead|idle)' insp_collapsed.txt | sed 's/^  //' > flags_inspect.txt
check flags_agree cmp -s flags_train.txt flags_inspect.txt
# The section sits between the fit report and the settings; the rest is unchanged.
"$MOE" inspect collapsed.moe > insp_plain.txt
sed '/^routing /,/^$/d' insp_collapsed.txt > insp_stripped.txt
check inspect_rest_unchanged cmp -s insp_plain.txt insp_stripped.txt

"$MOE" inspect --json -d one.csv collapsed.moe > insp_collapsed.json
check json_collapsed grep -q '^    "collapsed": true,$' insp_collapsed.json
check json_dead_nonempty grep -Eq '^    "dead": \[[1-4]' insp_collapsed.json
check json_flags grep -q '"flags": \["collapsed gate: expert' insp_collapsed.json
if [ -x /usr/bin/python3 ]; then
    check json_valid /usr/bin/python3 -c 'import json,sys; r = json.load(open(sys.argv[1]))["routing"]; assert r["n_rows"] == 400 and len(r["experts"]) == 4 and r["collapsed"]' insp_collapsed.json
fi
# Rows per expert add up to the rows.
check rows_add_up awk '/^ *expert  *rows/ { t = 1; next } t && NF >= 4 && $1 ~ /^[0-9]+$/ { s += $2 } END { exit !(s == 400) }' insp_collapsed.txt

# ---- healthy models: nothing flagged ------------------------------------------
"$MOE" train -k 4 -s 1 -r 5 -j 1 four.csv -o four.moe 2> train_four.log
check healthy_train_no_warning sh -c '! grep -q "warning" train_four.log'
check healthy_train_routing grep -q '^moe train: routing on 800 rows' train_four.log
"$MOE" inspect -d four.csv four.moe > insp_four.txt
check healthy_inspect_clean grep -q '^  no problems found$' insp_four.txt
"$MOE" inspect --json -d four.csv four.moe > insp_four.json
check healthy_json sh -c 'grep -q "^    \"collapsed\": false,$" "$0" && grep -q "^    \"dead\": \[\],$" "$0" && grep -q "\"flags\": \[\]" "$0"' insp_four.json

# A hierarchy on mcycle: per-gate lines, healthy.
"$MOE" train -q -t 2x2 -s 3 -r 3 -j 1 "$DATA/mcycle_train.csv" -o hme.moe
"$MOE" inspect -d "$DATA/mcycle_test.csv" hme.moe > insp_hme.txt
check hme_gates sh -c 'for g in 0 1 2; do grep -q "^  gate $g: reach" "$0" || exit 1; done' insp_hme.txt
check hme_children grep -q '^    children gate 1 (load' insp_hme.txt
check hme_clean grep -q '^  no problems found$' insp_hme.txt
"$MOE" inspect --json -d "$DATA/mcycle_test.csv" hme.moe > insp_hme.json
check hme_json_gates grep -q '"gates": \[' insp_hme.json
# Thread count never changes the numbers.
OMP_NUM_THREADS=1 "$MOE" inspect --json -d four.csv four.moe > t1.json
OMP_NUM_THREADS=2 "$MOE" inspect --json -d four.csv four.moe > t2.json
check threads_same cmp -s t1.json t2.json

# ---- errors --------------------------------------------------------------------
"$MOE" inspect -d nosuch.csv four.moe > /dev/null 2> err1.txt
check missing_data_file grep -q "^moe inspect: .*nosuch.csv" err1.txt
"$MOE" inspect -d nosuch.csv four.moe > /dev/null 2>&1
check missing_data_exit [ $? -eq 1 ]
printf 'z,y\n1,2\n' > wrongcols.csv
"$MOE" inspect -d wrongcols.csv four.moe > /dev/null 2> err2.txt
rc=$?
check wrong_columns_exit [ "$rc" -eq 1 ]
check wrong_columns_message grep -q "missing input column 'x'" err2.txt
# The target is not needed.
printf 'x\n0.5\n-1.5\n' > xonly.csv
check no_target_needed sh -c '"$0" inspect -d xonly.csv four.moe | grep -q "^routing          xonly.csv, 2 rows$"' "$MOE"
