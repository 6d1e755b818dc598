#!/bin/sh
# test_convert.sh -- `moe convert` and .moed files through the CLI: train,
# predict and eval on a .moed give byte-identical output to the CSV path;
# bad inputs fail with exit 1 and a message naming the file; converting a
# large generated CSV keeps peak memory far below the file's size.
. "$(dirname "$0")/lib.sh"

# --- classification with a categorical input and weights -----------------
make_cat cat.csv 400
check convert_cat "$MOE" convert -q --drop id --weights weight cat.csv
check convert_default_name test -s cat.moed
"$MOE" train -q -k 2 -r 2 --drop id --weights weight cat.csv -o csv.moe
"$MOE" train -q -k 2 -r 2 cat.moed -o moed.moe
check train_from_moed test -s moed.moe
"$MOE" inspect csv.moe | grep -v 'cat\.csv\|^model' > i1.txt
"$MOE" inspect moed.moe | grep -v 'cat\.moed\|^model' > i2.txt
check train_moed_same_model cmp -s i1.txt i2.txt
for out in class proba,logdensity,gates,expert; do
    "$MOE" predict --output "$out" csv.moe cat.csv > p1.csv
    "$MOE" predict --output "$out" csv.moe cat.moed > p2.csv
    "$MOE" predict --output "$out" moed.moe cat.csv > p3.csv
    check "predict_moed_$out" cmp -s p1.csv p2.csv
    check "predict_moed_model_$out" cmp -s p1.csv p3.csv
done
"$MOE" eval csv.moe cat.csv > e1.txt
"$MOE" eval csv.moe cat.moed > e2.txt
check eval_moed cmp -s e1.txt e2.txt
"$MOE" eval --json csv.moe cat.csv > e1.json 2>/dev/null && "$MOE" eval --json csv.moe cat.moed > e2.json 2>/dev/null &&
    check eval_moed_json cmp -s e1.json e2.json

# --- multi-output regression; a model on fewer inputs than the file ---------
make_multi multi.csv 300
check convert_multi "$MOE" convert -q --target y1,y2 multi.csv multi.moed
"$MOE" train -q -k 2 --target y1,y2 multi.csv -o m1.moe
"$MOE" train -q -k 2 multi.moed -o m2.moe
"$MOE" predict --output mean,sd,interval m1.moe multi.csv > q1.csv
"$MOE" predict --output mean,sd,interval m1.moe multi.moed > q2.csv
"$MOE" predict --output mean,sd,interval m2.moe multi.csv > q3.csv
check predict_multi_moed cmp -s q1.csv q2.csv
check predict_multi_moed_model cmp -s q1.csv q3.csv
"$MOE" train -q -k 2 --target y1,y2 --expert-features x1 --gate-features x1 multi.csv -o m3.moe
"$MOE" predict m3.moe multi.csv > q4.csv
"$MOE" predict m3.moe multi.moed > q5.csv
check predict_moed_subset_columns cmp -s q4.csv q5.csv

# --- errors ------------------------------------------------------------------
# expect_error NAME PATTERN COMMAND...: exit status 1 and PATTERN on stderr
expect_error() {
    _n=$1 _p=$2
    shift 2
    "$@" > /dev/null 2> err.txt
    _rc=$?
    if [ "$_rc" -eq 1 ] && grep -q -- "$_p" err.txt; then pass "$_n"; else
        fail "$_n" "exit $_rc: $(head -1 err.txt)"; fi
}
expect_error convert_stdin "not '-'" "$MOE" convert - x.moed
expect_error convert_missing "nope.csv: cannot open" "$MOE" convert nope.csv
printf 'a,b,c\n1,2,3\n4,5\n' > ragged.csv
expect_error convert_ragged "ragged.csv:3: 2 fields, expected 3" "$MOE" convert ragged.csv
check convert_ragged_no_output test ! -e ragged.moed
check convert_no_temp_left sh -c '! ls ragged.moed.tmp* > /dev/null 2>&1'
printf 'x,y\n1,a\n2,b\n3,2.5\n4,a\n' > frac.csv
expect_error convert_fraction_label "frac.csv:4:2 (column 'y'): '2.5' cannot be a class label" \
    "$MOE" convert --task classification frac.csv
printf 'x,y\n1,2\n2,abc\n' > text.csv
expect_error convert_not_number "text.csv:3:2 (column 'y'): 'abc' is not a number" \
    "$MOE" convert --task regression text.csv
expect_error convert_overwrite "overwrite the data file" "$MOE" convert cat.csv cat.csv
expect_error train_moed_data_option "already encoded" "$MOE" train --target label cat.moed
expect_error predict_moed_id "needs a CSV file" "$MOE" predict --id id csv.moe cat.moed
head -c 3000 cat.moed > trunc.moed
expect_error train_truncated "trunc.moed: truncated" "$MOE" train -q trunc.moed -o t.moe
expect_error predict_truncated "trunc.moed: truncated" "$MOE" predict csv.moe trunc.moed
cp cat.csv foreign.moed
expect_error predict_foreign "foreign.moed: not a .moed data file" "$MOE" predict csv.moe foreign.moed
expect_error predict_wrong_model "multi.moed: missing input column 'color'" \
    "$MOE" predict csv.moe multi.moed
check help_convert sh -c '"$0" convert --help | grep -q "DATA.csv \[OUT.moed\]"' "$MOE"
check help_lists_convert sh -c '"$0" --help | grep -q "^  convert"' "$MOE"

# --- memory: converting a ~200 MB CSV stays far below the file's size ---------
case "$BUILD" in *san*) MOE_SKIP_BIG=1 ;; esac # sanitizers: shadow memory, slow
if [ -x /usr/bin/time ] && [ "${MOE_SKIP_BIG:-0}" != 1 ]; then
    awk 'BEGIN { srand(3); print "x1,x2,x3,x4,x5,x6,x7,x8,x9,x10,c,y"
        for (i = 0; i < 1500000; i++) { s = 0
            for (j = 1; j <= 10; j++) { v = rand() * 2 - 1; s += v * j; printf "%.6f,", v }
            printf "%s,%.6f\n", (i % 3 ? "p" : "q"), s + rand() } }' > big.csv
    size_kb=$(( $(wc -c < big.csv) / 1024 ))
    /usr/bin/time -v "$MOE" convert -q big.csv big.moed 2> time.txt
    rss_kb=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' time.txt)
    echo "  convert: CSV $size_kb KiB, peak RSS $rss_kb KiB"
    if [ -n "$rss_kb" ] && [ "$rss_kb" -lt $((size_kb / 4)) ] && [ -s big.moed ]; then
        pass convert_bounded_memory
    else
        fail convert_bounded_memory "peak RSS $rss_kb KiB for a $size_kb KiB file"
    fi
    /usr/bin/time -v "$MOE" train -q -k 2 -r 1 -n 2 -j 2 big.moed -o big.moe 2> time.txt
    rss_kb=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' time.txt)
    moed_kb=$(( $(wc -c < big.moed) / 1024 ))
    echo "  train from .moed: file $moed_kb KiB, peak RSS $rss_kb KiB"
    if [ -n "$rss_kb" ] && [ "$rss_kb" -lt $((moed_kb / 4)) ] && [ -s big.moe ]; then
        pass train_moed_bounded_memory
    else
        fail train_moed_bounded_memory "peak RSS $rss_kb KiB for a $moed_kb KiB file"
    fi
    rm -f big.csv big.moed big.moe
fi
