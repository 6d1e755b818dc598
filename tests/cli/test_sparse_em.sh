#!/bin/sh
# test_sparse_em.sh -- sparse EM through the CLI: --sparse-em with and
# without partial iterations (--sparse-full) trains (two-output regression), the
# summary's log-likelihood is the model's own (eval), the thread count does
# not change the model, and misuse of the options fails with a message.
. "$(dirname "$0")/lib.sh"

make_multi multi.csv 2000
V=multi.csv
# --- partial iterations (the default, a full one in 10) and all-full -------
check sparse_partial "$MOE" train -q -k 6 -r 2 -s 3 --sparse-em 2 --target y1,y2 "$V" -o p.moe
check sparse_all_full "$MOE" train -q -k 6 -r 2 -s 3 --sparse-em 2 --sparse-full 1 --target y1,y2 \
    "$V" -o f.moe
"$MOE" train -q -k 6 -r 2 -s 3 --sparse-em 2 --target y1,y2 -j 1 "$V" -o p1.moe
check sparse_partial_threads cmp -s p.moe p1.moe
# The report's log-likelihood (inspect) is the model's log-likelihood on the
# training rows (eval), although most iterations saw only the kept experts.
"$MOE" inspect --json p.moe > i.json 2>/dev/null
"$MOE" eval --json p.moe "$V" > e.json 2>/dev/null
li=$(json_num i.json loglik)
nll=$(json_num e.json nll)
check sparse_report_is_loglik awk -v a="$li" -v b="$nll" \
    'BEGIN { b = -2000 * b; d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= 1e-6 * (b < 0 ? -b : b)) }'

# --- misuse ------------------------------------------------------------------
"$MOE" train -q -k 6 --sparse-full 5 --target y1,y2 "$V" -o x.moe 2> err.txt
check sparse_full_needs_sparse_em grep -q -- "--sparse-full needs --sparse-em" err.txt
"$MOE" train -q -k 6 --sparse-em 2 --sparse-full 0 --target y1,y2 "$V" -o x.moe 2> err.txt
check sparse_full_range grep -q -- "sparse-full" err.txt
check sparse_bad_no_model test ! -e x.moe
finish
