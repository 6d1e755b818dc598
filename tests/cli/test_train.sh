# test_train.sh -- moe train / predict / eval / inspect on real files, every
# option, outputs against tests/cli/expected/.
. tests/cli/lib.sh

TRAIN="$DATA/mcycle_train.csv"
TEST="$DATA/mcycle_test.csv"
rows() { awk 'END { print NR }' "$1"; }

# ---- a hierarchical mixture on mcycle --------------------------------------
"$MOE" train -q -t 2x2 -s 3 -r 3 -j 1 "$TRAIN" -o hme.moe
check train_hme [ -s hme.moe ]
"$MOE" inspect hme.moe > inspect_hme.txt
expect inspect_hme.txt inspect_hme.txt
"$MOE" inspect --json hme.moe > inspect_hme.json
expect inspect_hme.json inspect_hme.json
check inspect_json_keys sh -c 'for k in loglik df aic bic icl n_rows n_experts converged iterations; do grep -q "^  \"$k\": " inspect_hme.json || exit 1; done'
check inspect_tree sh -c 'grep -q "\"tree\": \"2x2\"" inspect_hme.json && grep -q "\"n_experts\": 4" inspect_hme.json && grep -q "\"n_gates\": 3" inspect_hme.json'

"$MOE" predict -O mean,sd,interval=0.8,logdensity,expert,gates,experts hme.moe "$TEST" > pred_hme.csv
check predict_rows [ "$(rows pred_hme.csv)" -eq "$(rows "$TEST")" ]
check predict_header [ "$(head -1 pred_hme.csv)" = "mean,sd,lower,upper,logdensity,expert,g1,g2,g3,g4,m1,m2,m3,m4,s1,s2,s3,s4" ]
expect predict_hme.csv pred_hme.csv
"$MOE" predict hme.moe "$TEST" > pred_default.csv
check predict_default_output [ "$(head -1 pred_default.csv)" = mean ]
# Rows keep their order and gates sum to 1.
check predict_gates_sum awk -F, 'NR > 1 { s = $7 + $8 + $9 + $10; if (s < 1 - 1e-12 || s > 1 + 1e-12) exit 1 }' pred_hme.csv
# The interval holds the mean; sd > 0.
check predict_interval awk -F, 'NR > 1 { if (!($3 <= $1 && $1 <= $4 && $2 > 0)) exit 1 }' pred_hme.csv
# -o writes the same bytes as stdout; a second item `interval` alone is 0.9.
"$MOE" predict -O mean,sd,interval=0.8,logdensity,expert,gates,experts -o pred_file.csv hme.moe "$TEST"
check predict_out_file cmp -s pred_hme.csv pred_file.csv
"$MOE" predict hme.moe "$TEST" pred_pos.csv
check predict_out_positional cmp -s pred_default.csv pred_pos.csv
"$MOE" predict -O interval hme.moe "$TEST" > i90.csv
"$MOE" predict -O interval=0.9 hme.moe "$TEST" > i90b.csv
check predict_interval_default cmp -s i90.csv i90b.csv

"$MOE" eval hme.moe "$TEST" > eval_hme.txt
expect eval_hme.txt eval_hme.txt
"$MOE" eval --json --level 0.5 hme.moe "$TEST" > eval_hme.json
expect eval_hme.json eval_hme.json
# eval's nll is minus the mean of predict's logdensity column.
nll=$(json_num eval_hme.json nll)
check eval_nll_matches_predict awk -F, -v nll="$nll" 'NR > 1 { s += $5; n++ } END { d = -s / n - nll; exit !(d < 1e-9 && d > -1e-9) }' pred_hme.csv

# ---- determinism -------------------------------------------------------------
"$MOE" train -q -t 2x2 -s 3 -r 3 -j 1 "$TRAIN" -o again.moe
check same_seed_same_bytes cmp -s hme.moe again.moe
"$MOE" train -q -t 2x2 -s 3 -r 3 -j 2 "$TRAIN" -o threads2.moe
check threads_same_bytes cmp -s hme.moe threads2.moe
"$MOE" train -q -t 2x2 -s 3 -r 3 -j 1 "$TRAIN" -o - > stdout.moe
check model_to_stdout cmp -s hme.moe stdout.moe
"$MOE" train -q -t 2x2 -s 3 -r 3 -j 1 - -o stdin.moe < "$TRAIN"
"$MOE" inspect --json stdin.moe > stdin.json
check data_from_stdin sh -c '[ -n "$0" ] && [ "$0" = "$1" ] && grep -q "\"data\": \"<stdin>\"" stdin.json' "$(json_num stdin.json loglik)" "$(json_num inspect_hme.json loglik)"
"$MOE" train -q -t 2x2 -s 3 -r 3 -j 1 "$TRAIN" positional.moe
check model_positional cmp -s hme.moe positional.moe
"$MOE" train -q -t 2x2 -s 4 -r 3 -j 1 "$TRAIN" -o seed4.moe
check seed_recorded sh -c '"$0" inspect seed4.moe | grep -q "^  seed  *4$"' "$MOE"
# Default model path: DATA's base name + .moe, in the current directory.
"$MOE" train -q -j 1 "$TRAIN"
check default_model_path [ -s mcycle_train.moe ]

# ---- round trip: the saved model reproduces the in-memory fit ---------------
# inspect's loglik was computed by training on the in-memory model; the
# loaded model's log-densities on the training rows must sum to it.
"$MOE" predict -O logdensity hme.moe "$TRAIN" > ld_train.csv
ll=$(json_num inspect_hme.json loglik)
check roundtrip_loglik awk -F, -v ll="$ll" 'NR > 1 { s += $1 } END { d = (s - ll) / ll; exit !(d < 1e-9 && d > -1e-9) }' ld_train.csv
# A model read from stdin predicts the same bytes.
"$MOE" predict -O mean,sd,interval=0.8,logdensity,expert,gates,experts - "$TEST" < hme.moe > pred_stdin.csv
check model_from_stdin cmp -s pred_hme.csv pred_stdin.csv
"$MOE" predict -O mean,sd,interval=0.8,logdensity,expert,gates,experts hme.moe - < "$TEST" > pred_stdin2.csv
check predict_data_from_stdin cmp -s pred_hme.csv pred_stdin2.csv
"$MOE" inspect - < hme.moe | sed 1d > insp_stdin.txt
sed 1d inspect_hme.txt > insp_file.txt
check inspect_stdin cmp -s insp_stdin.txt insp_file.txt

# ---- fitting options ---------------------------------------------------------
"$MOE" train -q -k 3 --tol 0 --max-iter 7 -r 2 -j 1 "$TRAIN" -o tol0.moe
"$MOE" inspect --json tol0.moe > tol0.json
check tol0_exact_iterations sh -c '[ "$0" = 7 ] && grep -q "\"converged\": false" tol0.json && grep -q "\"n_experts\": 3" tol0.json' "$(json_num tol0.json iterations)"
"$MOE" train -q --experts 1 -j 1 "$TRAIN" -o one.moe
"$MOE" inspect --json one.moe > one.json
check experts_1 sh -c 'grep -q "\"n_experts\": 1" one.json && grep -q "\"n_gates\": 0" one.json && [ "$0" = 3 ]' "$(json_num one.json df)"
"$MOE" predict -O gates,experts,expert one.moe "$TEST" > one.csv
check experts_1_predict sh -c '[ "$(head -1 one.csv)" = "g1,m1,s1,expert" ] && awk -F, "NR > 1 && (\$1 != 1 || \$4 != 1) { exit 1 }" one.csv'
"$MOE" train -q --init random --restarts 2 --seed 9 -j 1 "$TRAIN" -o random.moe
check init_random sh -c '"$0" inspect random.moe | grep -q "^  init  *random$"' "$MOE"
"$MOE" train -q --short-iter 5 --var-floor 1e-4 --ridge 1e-8 --min-support 5 -j 1 "$TRAIN" -o adv.moe
"$MOE" inspect adv.moe > adv.txt
check advanced_settings sh -c 'grep -q "^  short_iter  *5$" adv.txt && grep -q "^  var_floor  *0.0001" adv.txt && grep -q "^  ridge  *1e-08$" adv.txt && grep -q "^  min_support  *5$" adv.txt'

# --select with each criterion: the kept model has the smallest score.
for crit in bic aic icl; do
    "$MOE" train -q -S 1,2,3 -c $crit -r 2 -j 1 "$TRAIN" -o sel_$crit.moe
    "$MOE" inspect --json sel_$crit.moe > sel_$crit.json
    scores=$(sed -n 's/^ *"select_scores": "\(.*\)",*$/\1/p' sel_$crit.json)
    best=$(json_num sel_$crit.json $crit)
    check "select_$crit" sh -c 'echo "$0" | awk -F, -v best="$1" "{ m = 1e300; for (i = 1; i <= NF; i++) { split(\$i, a, \"=\"); if (a[2] + 0 < m) m = a[2] + 0 } } END { exit !(NF == 3 && m == best + 0) }"' "$scores" "$best"
done
"$MOE" train -q -S 2,2x2 -r 2 -j 1 "$TRAIN" -o sel_tree.moe 2> sel_err.txt
check select_tree_shapes sh -c '"$0" inspect sel_tree.moe | grep -q "^  select_scores  *2=.*,2x2="' "$MOE"

# --expert-features / --gate-features with original column names; columns
# neither uses are not needed at prediction.
"$MOE" train -q -E times -G none -k 2 -r 3 -j 1 "$TDATA/mcycle.csv" -o constgate.moe
"$MOE" inspect --json constgate.moe > constgate.json
check gate_features_none sh -c 'grep -q "\"gate_features\": \[\]" constgate.json && grep -q "\"expert_features\": \[\"times\"\]" constgate.json && grep -q "\"features\": \[\"times\"\]" constgate.json'
"$MOE" predict -O gates constgate.moe "$TEST" > cg.csv
check gate_none_constant awk -F, 'NR == 2 { a = $1 } NR > 2 && $1 != a { exit 1 }' cg.csv
"$MOE" train -q -E none -G times2 -j 1 "$TDATA/mcycle.csv" -o expnone.moe
"$MOE" inspect --json expnone.moe > expnone.json
check expert_features_none sh -c 'grep -q "\"expert_features\": \[\]" expnone.json && grep -q "\"gate_features\": \[\"times2\"\]" expnone.json'
"$MOE" train -q --features times --drop times2 -j 1 "$TDATA/mcycle.csv" -o feat.moe 2>/dev/null ||
"$MOE" train -q --features times -j 1 "$TDATA/mcycle.csv" -o feat.moe
"$MOE" train -q --drop times2 -j 1 "$TDATA/mcycle.csv" -o drop.moe
"$MOE" inspect --json feat.moe > feat.json
"$MOE" inspect --json drop.moe > drop.json
check features_and_drop sh -c 'grep -q "\"features\": \[\"times\"\]" feat.json && grep -q "\"features\": \[\"times\"\]" drop.json'
"$MOE" train -q -E "times, times2" -G times -j 1 "$TDATA/mcycle.csv" -o both.moe
check expert_features_list sh -c '"$0" inspect --json both.moe | grep -q "\"expert_features\": \[\"times\", \"times2\"\]"' "$MOE"

# ---- multi-output regression, variance kinds --------------------------------
make_multi multi.csv 160
for v in iso diag full; do
    "$MOE" train -q -y y1,y2 -v $v -k 2 -r 3 -j 1 multi.csv -o multi_$v.moe
    check "variance_$v" sh -c '"$0" inspect multi_'$v'.moe | grep -q "^variance  *'$v'$"' "$MOE"
done
"$MOE" inspect multi_full.moe > inspect_multi.txt
expect inspect_multi_full.txt inspect_multi.txt
"$MOE" predict -O mean,sd,interval=0.9,experts multi_full.moe multi.csv > pred_multi.csv
check multi_output_columns [ "$(head -1 pred_multi.csv)" = "mean_y1,mean_y2,sd_y1,sd_y2,lower_y1,lower_y2,upper_y1,upper_y2,m1_y1,m1_y2,m2_y1,m2_y2,s1_y1,s1_y2,s2_y1,s2_y2" ]
head -20 pred_multi.csv > pred_multi20.csv
expect predict_multi.csv pred_multi20.csv
"$MOE" eval multi_full.moe multi.csv > eval_multi.txt
check eval_multi sh -c 'grep -q "^output y1: rmse" eval_multi.txt && grep -q "^output y2: rmse" eval_multi.txt'

# ---- classification: string classes, categorical input, weights, ids --------
make_cat cat.csv 150
"$MOE" train -q -D id -w weight -k 2 -r 2 --tol 0 --max-iter 60 -j 1 cat.csv -o cat.moe
"$MOE" inspect cat.moe > inspect_cat.txt
expect inspect_cat.txt inspect_cat.txt
"$MOE" inspect --json cat.moe > cat.json
sumw=$(awk -F, 'NR > 1 { s += $4 } END { printf "%.6f", s }' cat.csv)
check weights_used sh -c '[ "$(printf "%.6f" "$1")" = "$0" ] && grep -q "\"weights\": \"weight\"" cat.json' "$sumw" "$(json_num cat.json sum_weights)"
check classes_named grep -q '"classes": \["big cat", "bird", "dog"\]' cat.json
check categorical_levels grep -q '"levels": \["blue", "green", "red"\]' cat.json
# A predict file with its columns in another order, another delimiter and
# extra columns; the target column is not needed.
awk -F, 'BEGIN { OFS = ";" } { print "extra" NR, $4, $3, $2, $1 }' cat.csv | head -31 > cat_pred.csv
"$MOE" predict --id id -O class,proba,expert,gates,experts cat.moe cat_pred.csv > pred_cat.csv
check predict_reordered [ "$(rows pred_cat.csv)" -eq 31 ]
check predict_class_header [ "$(head -1 pred_cat.csv)" = "id,class,p_big cat,p_bird,p_dog,expert,g1,g2,p1_big cat,p1_bird,p1_dog,p2_big cat,p2_bird,p2_dog" ]
check predict_id_copied sh -c 'cut -d, -f1 pred_cat.csv | sed 1d > a.txt; cut -d, -f1 cat.csv | sed -n 2,31p > b.txt; cmp -s a.txt b.txt'
expect predict_cat.csv pred_cat.csv
"$MOE" predict cat.moe cat_pred.csv > pred_cat_default.csv
check predict_default_class [ "$(head -1 pred_cat_default.csv)" = class ]
"$MOE" predict --sep ';' -O logdensity cat.moe cat.csv > /dev/null 2> sep_err.txt
check sep_forced sh -c 'grep -q "missing input column" sep_err.txt'
"$MOE" predict -O class,logdensity cat.moe cat.csv > pred_cat_ld.csv
check predict_logdensity_class awk -F, 'NR > 1 { if ($2 > 0) exit 1 }' pred_cat_ld.csv
"$MOE" eval cat.moe cat.csv > eval_cat.txt
expect eval_cat.txt eval_cat.txt
"$MOE" eval --json cat.moe cat.csv > eval_cat.json
check eval_class_json sh -c 'grep -q "\"accuracy\": " eval_cat.json && grep -q "\"log_loss\": " eval_cat.json && grep -q "\"confusion\": " eval_cat.json'

# Unseen categories: an error naming the place, or zeros with --unseen zero.
sed 's/^r3,green/r3,mauve/' cat.csv > unseen.csv
"$MOE" predict cat.moe unseen.csv > unseen_out.csv 2> unseen_err.txt; rc=$?
check unseen_error sh -c '[ $0 -eq 1 ] && grep -q "unseen.csv:4:2 (column .color.)" unseen_err.txt' $rc
"$MOE" predict --unseen zero -O class cat.moe unseen.csv > unseen_zero.csv; rc=$?
check unseen_zero sh -c '[ $0 -eq 0 ] && [ "$(awk "END { print NR }" unseen_zero.csv)" -eq 151 ]' $rc

# --categorical, --task
awk -F, 'NR == 1 { print "x,y"; next } { print $3 "," int(($3 + 2) * 2) }' cat.csv > ints.csv
"$MOE" train -q -y x -C y -k 1 -j 1 ints.csv -o catsize.moe
check categorical_forced sh -c '"$0" inspect catsize.moe | grep -q "^  y (categorical; levels 0 1 2 3 4 5 6 7)$"' "$MOE"
"$MOE" train -q -k 1 -j 1 ints.csv -o ints_auto.moe
"$MOE" train -q -k 1 -T regression -j 1 ints.csv -o ints_reg.moe
check task_auto_classification sh -c '"$0" inspect ints_auto.moe | grep -q "^task  *classification$"' "$MOE"
check task_regression sh -c '"$0" inspect ints_reg.moe | grep -q "^task  *regression$"' "$MOE"
# 25 distinct integers: auto says regression, --task classification forces.
awk -F, 'NR == 1 { print "x,y"; next } { print $3 "," int(($3 + 2) * 6) }' cat.csv > ints25.csv
"$MOE" train -q -k 1 -j 1 ints25.csv -o i25_auto.moe
"$MOE" train -q -k 1 -T classification -j 1 ints25.csv -o i25_cls.moe
check task_auto_many_integers sh -c '"$0" inspect i25_auto.moe | grep -q "^task  *regression$"' "$MOE"
check task_classification_forced sh -c '"$0" inspect --json i25_cls.moe | grep -q "\"task\": \"classification\""' "$MOE"

# ---- missing values -----------------------------------------------------------
awk -F, 'NR == 5 { $1 = "NA" } NR == 9 { $2 = "" } { print }' OFS=, "$TRAIN" > na.csv
"$MOE" train -q -j 1 na.csv -o na.moe 2> na_err.txt; rc=$?
check na_error sh -c '[ $0 -eq 1 ] && grep -q "na.csv:5:1 (column .times.): missing value" na_err.txt && [ ! -e na.moe ]' $rc
"$MOE" train -j 1 --na drop na.csv -o na.moe 2> na_note.txt; rc=$?
check na_drop sh -c '[ $0 -eq 0 ] && grep -q "dropped 2 of 100 rows" na_note.txt && "$1" inspect --json na.moe | grep -q "\"n_rows\": 98"' $rc "$MOE"
"$MOE" predict --na drop --id times -O mean na.moe na.csv > na_pred.csv 2>/dev/null
check predict_na_drop [ "$(rows na_pred.csv)" -eq 100 ]

# ---- delimiters and quoting ------------------------------------------------------
tr , ';' < "$TRAIN" > semi.csv
"$MOE" train -q -t 2x2 -s 3 -r 3 -j 1 semi.csv -o semi.moe
"$MOE" train -q -t 2x2 -s 3 -r 3 -j 1 --sep ';' semi.csv -o semi2.moe
check sep_auto_and_forced sh -c '"$0" inspect --json semi.moe | grep -q "\"loglik\": $1," && cmp -s semi.moe semi2.moe' "$MOE" "$(json_num inspect_hme.json loglik)"
tr , '\t' < "$TRAIN" > tabs.tsv
"$MOE" train -q -k 1 -j 1 --sep tab tabs.tsv -o tabs.moe
check sep_tab [ -s tabs.moe ]

# ---- progress on stderr ---------------------------------------------------------------
"$MOE" train -k 2 -r 2 -j 1 "$TRAIN" -o p.moe 2> progress.txt
check progress_plain_lines sh -c 'grep -q "^restart 1/2 iteration 1 loglik .* change .* time .*s$" progress.txt && grep -q "^restart 2/2 iteration" progress.txt && grep -q "^moe train: regression, tree 2 (2 experts), 100 rows: loglik" progress.txt'
"$MOE" train -q -k 2 -r 2 -j 1 "$TRAIN" -o p.moe 2> quiet.txt
check progress_quiet [ ! -s quiet.txt ]
if command -v script >/dev/null 2>&1; then
    script -qec "$MOE train -k 2 -r 2 -j 1 $TRAIN -o tty.moe" /dev/null > tty.txt 2>&1
    check progress_tty sh -c 'grep -q "$(printf "\r")" tty.txt && ! grep -q "^restart 1/2 iteration 1 loglik" tty.txt'
fi

# ---- eval's input options --------------------------------------------------------------
tr , ';' < "$TEST" > semi_test.csv
"$MOE" eval hme.moe "$TEST" > e1.txt
"$MOE" eval --sep ';' hme.moe semi_test.csv > e2.txt
check eval_sep cmp -s e1.txt e2.txt
"$MOE" eval --na drop na.moe na.csv > e3.txt 2> e3_err.txt
check eval_na_drop sh -c 'grep -q "^rows  *98$" e3.txt && grep -q "dropped 2 of 100 rows" e3_err.txt'
"$MOE" eval --unseen zero cat.moe unseen.csv > e4.txt; rc=$?
check eval_unseen_zero sh -c '[ $0 -eq 0 ] && grep -q "^rows  *150$" e4.txt' $rc
