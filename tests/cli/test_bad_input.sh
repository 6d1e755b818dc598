# test_bad_input.sh -- the bad-input table: each case must exit 1 with a
# one-line message naming the place (file, line, column where they apply),
# and leave no output file behind (nor a temporary one).
. tests/cli/lib.sh

TRAIN="$DATA/mcycle_train.csv"
TEST="$DATA/mcycle_test.csv"

# bad NAME REGEX OUTPUT COMMAND...: run COMMAND (stdout to out.txt, stderr
# to err.txt); expect exit status 1, exactly one line on stderr matching the
# extended regular expression REGEX, and no file OUTPUT ("-" = none).
bad() {
    _name=$1 _re=$2 _out=$3
    shift 3
    rm -f out.txt err.txt
    "$@" > out.txt 2> err.txt
    _rc=$?
    _why=""
    [ $_rc -eq 1 ] || _why="exit status $_rc, expected 1"
    [ -z "$_why" ] && [ "$(awk 'END { print NR }' err.txt)" -ne 1 ] && _why="$(awk 'END { print NR }' err.txt) lines on stderr"
    [ -z "$_why" ] && ! grep -Eq -- "$_re" err.txt && _why="message '$(cat err.txt)' does not match '$_re'"
    [ -z "$_why" ] && [ "$_out" != - ] && [ -e "$_out" ] && _why="output file $_out left behind"
    [ -z "$_why" ] && ls -a | grep -q '\.tmp-' && _why="temporary file left behind"
    if [ -z "$_why" ]; then pass "bad_$_name"; else fail "bad_$_name" "$_why"; fi
}

# ---- fixtures -------------------------------------------------------------------
: > empty.csv
printf 'x,y\n' > header_only.csv
printf 'x,y\n1,2\n3\n4,5\n' > ragged.csv
printf 'x,y\n1,2\n2,3\nabc,4\n5,6\n' > nonnumeric.csv
printf 'x,y\n1,2\n2,NaN\n3,4\n' > nan.csv
printf 'x,y\n1,2\n2,3\n-inf,4\n' > inf.csv
printf 'x,y\n1,2\n2,3\n3,4\n4,5\n' > few.csv
printf 'x,x,y\n1,2,3\n' > dup.csv
printf 'x,y\n1,"abc\n2,3\n' > unterminated.csv
printf 'x,y\n1,a\n2,a\n3,a\n4,a\n' > one_class.csv
printf 'x,y\n1,big\n2,small\n3,big\n4,small\n' > text_target.csv
awk -F, 'NR == 1 { print "x,w,y"; next } { print $1 "," (NR == 4 ? -1 : 1) "," $2 }' "$TRAIN" > neg_weight.csv
cut -d, -f1 "$TEST" > no_target.csv
printf 'y,other\n1,2\n' > no_input.csv
"$MOE" train -q -k 2 -j 1 "$TRAIN" -o good.moe || echo "FAIL fixture good.moe"
head -c 1000 good.moe > truncated.moe
cp good.moe flipped.moe
printf '\125' | dd of=flipped.moe bs=1 seek=700 conv=notrunc 2>/dev/null
cp "$TRAIN" foreign.moe
: > empty.moe
cp good.moe newer.moe
printf '\004' | dd of=newer.moe bs=1 seek=8 conv=notrunc 2>/dev/null
touch a_file
mkdir -p a_dir

# ---- data files (train) ----------------------------------------------------------------
bad empty_file 'empty\.csv: empty file' m.moe "$MOE" train -q empty.csv -o m.moe
bad header_only 'header_only\.csv:2: no data rows' m.moe "$MOE" train -q header_only.csv -o m.moe
bad ragged_rows 'ragged\.csv:3: 1 field, expected 2' m.moe "$MOE" train -q ragged.csv -o m.moe
bad non_numeric "nonnumeric\.csv:4:1 \(column 'x'\): 'abc' is not a number" m.moe "$MOE" train -q nonnumeric.csv -o m.moe
bad nan "nan\.csv:3:2 \(column 'y'\): 'NaN' is not a finite number" m.moe "$MOE" train -q nan.csv -o m.moe
bad inf "inf\.csv:4:1 \(column 'x'\): '-inf' is not a finite number" m.moe "$MOE" train -q inf.csv -o m.moe
bad duplicate_column "dup\.csv:1:2: duplicate column name 'x'" m.moe "$MOE" train -q dup.csv -o m.moe
bad unterminated_quote "unterminated\.csv:2:2 \(column 'y'\): unterminated quoted field" m.moe "$MOE" train -q unterminated.csv -o m.moe
bad missing_file 'nosuch\.csv: cannot open' m.moe "$MOE" train -q nosuch.csv -o m.moe
bad fewer_rows_than_parameters 'few\.csv: 4 rows .* 14 free parameters' m.moe "$MOE" train -q few.csv -o m.moe
bad negative_weight "neg_weight\.csv:4:2 \(column 'w'\): '-1' is a negative weight" m.moe "$MOE" train -q -w w neg_weight.csv -o m.moe

# ---- unknown columns -----------------------------------------------------------------------
bad unknown_target "few\.csv: no column named 'z'" m.moe "$MOE" train -q -y z few.csv -o m.moe
bad unknown_feature "few\.csv: no column named 'q'" m.moe "$MOE" train -q -x q few.csv -o m.moe
bad unknown_drop "few\.csv: no column named 'q'" m.moe "$MOE" train -q -D q few.csv -o m.moe
bad unknown_weights "few\.csv: no column named 'q'" m.moe "$MOE" train -q -w q few.csv -o m.moe
bad unknown_expert_feature "--expert-features: .*'q'" m.moe "$MOE" train -q -E q "$TRAIN" -o m.moe
bad unknown_gate_feature "--gate-features: .*'q'" m.moe "$MOE" train -q -G q "$TRAIN" -o m.moe
bad predict_missing_input "no_input\.csv: missing input column 'times'" p.csv "$MOE" predict good.moe no_input.csv -o p.csv
bad predict_unknown_id "--id: no column named 'q'" p.csv "$MOE" predict --id q good.moe "$TEST" -o p.csv
bad predict_logdensity_no_target "no_target\.csv: missing target column 'y'" p.csv "$MOE" predict -O logdensity good.moe no_target.csv -o p.csv
bad eval_no_target "no_target\.csv: missing target column 'y'" - "$MOE" eval good.moe no_target.csv

# ---- targets that cannot be class labels ----------------------------------------------------
bad class_fraction "mcycle_train\.csv:3:2 \(column 'y'\): '-2\.7' cannot be a class label" m.moe "$MOE" train -q -T classification "$TRAIN" -o m.moe
bad class_single "one_class\.csv: classification needs 2 or more classes; column 'y' holds only 'a'" m.moe "$MOE" train -q -T classification one_class.csv -o m.moe
bad regression_text_target "text_target\.csv:2:2 \(column 'y'\): 'big' is not a number" m.moe "$MOE" train -q -T regression text_target.csv -o m.moe

# ---- model files ------------------------------------------------------------------------------
for cmd in predict inspect; do
    if [ $cmd = predict ]; then set -- "$TEST" -o p.csv; else set --; fi
    bad ${cmd}_truncated_model 'truncated\.moe: truncated at byte 1000' p.csv "$MOE" $cmd truncated.moe "$@"
    bad ${cmd}_bitflip_model 'flipped\.moe: .*checksum' p.csv "$MOE" $cmd flipped.moe "$@"
    bad ${cmd}_foreign_model 'foreign\.moe: .*not a moe model file' p.csv "$MOE" $cmd foreign.moe "$@"
    bad ${cmd}_empty_model 'empty\.moe: .*empty' p.csv "$MOE" $cmd empty.moe "$@"
    bad ${cmd}_newer_model 'newer\.moe: format version 4 is newer' p.csv "$MOE" $cmd newer.moe "$@"
    bad ${cmd}_missing_model "nosuch\.moe" p.csv "$MOE" $cmd nosuch.moe "$@"
done
bad eval_bitflip_model 'flipped\.moe: .*checksum' - "$MOE" eval flipped.moe "$TEST"

# ---- unwritable outputs ---------------------------------------------------------------------------
bad unwritable_dir 'no/such/dir/m\.moe: cannot write: No such file or directory' no/such/dir/m.moe "$MOE" train -q "$TRAIN" -o no/such/dir/m.moe
bad unwritable_notdir 'a_file/m\.moe: cannot write: Not a directory' - "$MOE" train -q "$TRAIN" -o a_file/m.moe
bad output_is_dir 'a_dir: cannot write: Is a directory' - "$MOE" train -q "$TRAIN" -o a_dir
bad predict_unwritable 'no/dir/p\.csv: cannot write' no/dir/p.csv "$MOE" predict good.moe "$TEST" -o no/dir/p.csv
check unwritable_nothing_in_dir sh -c '[ -z "$(ls -A a_dir)" ]'

# ---- options out of range --------------------------------------------------------------------------
bad experts_0 '--experts: 0 is out of range' m.moe "$MOE" train -q -k 0 "$TRAIN" -o m.moe
bad experts_text "--experts: 'two' is not an integer" m.moe "$MOE" train -q --experts two "$TRAIN" -o m.moe
bad restarts_0 '--restarts: 0 is out of range' m.moe "$MOE" train -q -r 0 "$TRAIN" -o m.moe
bad max_iter_0 '--max-iter: 0 is out of range' m.moe "$MOE" train -q -n 0 "$TRAIN" -o m.moe
bad tol_negative '--tol: -1 is out of range' m.moe "$MOE" train -q -e -1 "$TRAIN" -o m.moe
bad tol_nan "--tol: 'nan' is not a finite number" m.moe "$MOE" train -q --tol nan "$TRAIN" -o m.moe
bad threads_negative '--threads: -1 is out of range' m.moe "$MOE" train -q -j -1 "$TRAIN" -o m.moe
bad seed_negative "--seed: '-1' is not an integer" m.moe "$MOE" train -q -s -1 "$TRAIN" -o m.moe
bad variance_bogus "--variance: 'huge' is not one of: iso, diag, full" m.moe "$MOE" train -q -v huge "$TRAIN" -o m.moe
bad init_bogus "--init: 'best' is not one of" m.moe "$MOE" train -q --init best "$TRAIN" -o m.moe
bad tree_zero "--tree: tree '0x2'" m.moe "$MOE" train -q -t 0x2 "$TRAIN" -o m.moe
bad tree_one_inside "--tree: tree '4x1'" m.moe "$MOE" train -q -t 4x1 "$TRAIN" -o m.moe
bad tree_and_experts 'either --experts or --tree' m.moe "$MOE" train -q -t 2 -k 2 "$TRAIN" -o m.moe
bad select_and_tree '--select chooses the shape' m.moe "$MOE" train -q -S 2,3 -t 2 "$TRAIN" -o m.moe
bad select_empty_item '--select: ' m.moe "$MOE" train -q -S 2,,3 "$TRAIN" -o m.moe
bad criterion_alone '--criterion needs --select' m.moe "$MOE" train -q -c aic "$TRAIN" -o m.moe
bad criterion_bogus "--criterion: 'mdl' is not one of" m.moe "$MOE" train -q -S 2 -c mdl "$TRAIN" -o m.moe
bad var_floor_range '--var-floor: 2 is out of range' m.moe "$MOE" train -q --var-floor 2 "$TRAIN" -o m.moe
bad sep_bogus "--sep: 'ab' is not a delimiter" m.moe "$MOE" train -q -F ab "$TRAIN" -o m.moe
bad na_bogus "--na: 'keep' is not one of" m.moe "$MOE" train -q --na keep "$TRAIN" -o m.moe
bad task_bogus "--task: 'cluster' is not one of" m.moe "$MOE" train -q -T cluster "$TRAIN" -o m.moe
bad model_twice 'model file is given twice' m.moe "$MOE" train -q "$TRAIN" m.moe -o m.moe
bad stdin_needs_out 'give the model file with -o' - "$MOE" train -q -
bad interval_level "interval level '1.5' is not in \(0, 1\)" p.csv "$MOE" predict -O interval=1.5 good.moe "$TEST" -o p.csv
bad output_unknown "--output: unknown item 'median'" p.csv "$MOE" predict -O mean,median good.moe "$TEST" -o p.csv
bad output_twice "--output: 'mean' given twice" p.csv "$MOE" predict -O mean,mean good.moe "$TEST" -o p.csv
bad output_wrong_task '--output class: for classification models only' p.csv "$MOE" predict -O class good.moe "$TEST" -o p.csv
bad unseen_bogus "--unseen: 'skip' is not one of" p.csv "$MOE" predict -u skip good.moe "$TEST" -o p.csv
bad eval_level '--level: 1 is out of range' - "$MOE" eval -l 1 good.moe "$TEST"
bad both_stdin 'cannot both come from stdin' - "$MOE" predict - -
bad extra_argument "unexpected argument 'extra'" - "$MOE" inspect good.moe extra

# An existing output survives a failed run untouched.
cp good.moe keep.moe
"$MOE" train -q -k 0 "$TRAIN" -o keep.moe 2>/dev/null
"$MOE" train -q few.csv -o keep.moe 2>/dev/null
check failed_run_keeps_old_model cmp -s good.moe keep.moe

# An output never overwrites an input.
cp "$TRAIN" data_copy.csv
bad overwrite_data 'data_copy\.csv: the model would overwrite the data file' - "$MOE" train -q data_copy.csv -o ./data_copy.csv
bad overwrite_predict_input 'data_copy\.csv: the output would overwrite an input file' - "$MOE" predict good.moe data_copy.csv -o data_copy.csv
check overwrite_inputs_intact cmp -s "$TRAIN" data_copy.csv
