# test_gradient.sh -- moe train --trainer gradient: MLP experts and gates,
# top-k gating, determinism, fine-tuning an EM model, the architecture in
# moe inspect, input-dependent variances (--log-var), version-1 model files,
# and clear errors for bad values.
. tests/cli/lib.sh

TRAIN="$DATA/mcycle_train.csv"
TEST="$DATA/mcycle_test.csv"
[ -f "$TRAIN" ] || TRAIN=/work/shared/data/mcycle_train.csv
[ -f "$TEST" ] || TEST=/work/shared/data/mcycle_test.csv
VTRAIN=$(dirname "$TRAIN")/vowel_train.csv
VTEST=$(dirname "$TRAIN")/vowel_test.csv

G="--trainer gradient -r 1 --epochs 20"

# ---- MLP experts and gate -----------------------------------------------------
"$MOE" train -q $G -k 3 --expert mlp:8,4 --gate mlp:4 --activation relu -s 2 -j 1 "$TRAIN" -o mlp.moe
check train_mlp [ -s mlp.moe ]
"$MOE" inspect mlp.moe > inspect_mlp.txt
check inspect_expert_net grep -q '^expert network   mlp:8,4 relu$' inspect_mlp.txt
check inspect_gate_net grep -q '^gate network     mlp:4 relu$' inspect_mlp.txt
check inspect_trainer grep -q 'trainer  *gradient' inspect_mlp.txt
"$MOE" inspect --json mlp.moe > inspect_mlp.json
check inspect_json_net grep -q '"expert_net": "mlp:8,4 relu"' inspect_mlp.json
"$MOE" predict -O mean,sd,logdensity,gates mlp.moe "$TEST" > pred_mlp.csv
check predict_mlp [ "$(awk 'END { print NR }' pred_mlp.csv)" -eq "$(awk 'END { print NR }' "$TEST")" ]
check predict_mlp_finite awk -F, 'NR > 1 { for (i = 1; i <= NF; i++) if ($i !~ /^-?[0-9]/) exit 1 }' pred_mlp.csv

# ---- determinism: same seed, same bytes, whatever the threads ------------------
"$MOE" train -q $G -k 3 --expert mlp:8,4 --gate mlp:4 --activation relu -s 2 -j 2 "$TRAIN" -o mlp2.moe
check same_bytes_threads cmp -s mlp.moe mlp2.moe

# ---- top-k gating ----------------------------------------------------------------
"$MOE" train -q $G -k 4 --top-k 2 --balance 0.01 --balance-kind cv2 --z-loss 0.001 --expert mlp:4 -j 1 "$TRAIN" -o topk.moe
check inspect_topk sh -c '"$0" inspect topk.moe | grep -q "^top-k  *2$"' "$MOE"
"$MOE" predict -O gates topk.moe "$TEST" > gates_topk.csv
check topk_two_gates awk -F, 'NR > 1 { n = 0; for (i = 1; i <= NF; i++) n += ($i > 0); if (n > 2) exit 1 }' gates_topk.csv
"$MOE" train -q $G -k 4 --top-k 1 --no-noise --objective cooperative -j 1 "$TRAIN" -o coop.moe
check train_cooperative [ -s coop.moe ]

# ---- fine-tuning an EM model -----------------------------------------------------
"$MOE" train -q -k 2 -r 2 -j 1 "$TRAIN" -o em.moe
"$MOE" train -q --trainer gradient -r 1 --epochs 5 --lr 0.001 --valid 0 --init-model em.moe -j 1 "$TRAIN" -o ft.moe
em_ll=$("$MOE" inspect --json em.moe | sed -n 's/^ *"loglik": *\([-0-9.eE+]*\).*/\1/p' | head -1)
ft_ll=$("$MOE" inspect --json ft.moe | sed -n 's/^ *"loglik": *\([-0-9.eE+]*\).*/\1/p' | head -1)
check finetune_keeps_loglik awk -v a="$em_ll" -v b="$ft_ll" 'BEGIN { exit !(b > a - 0.01 * (a < 0 ? -a : a)) }'

# ---- input-dependent variances: --log-var -----------------------------------------
"$MOE" train -q $G -k 2 --expert mlp:4 --log-var -s 3 -j 1 "$TRAIN" -o lv.moe
check train_log_var [ -s lv.moe ]
check log_var_version_3 [ "$(od -An -tu1 -j8 -N1 lv.moe | tr -d ' ')" = 3 ]
check plain_version_2 [ "$(od -An -tu1 -j8 -N1 mlp.moe | tr -d ' ')" = 2 ]
"$MOE" train -q $G -k 2 --expert mlp:4 --log-var -s 3 -j 2 "$TRAIN" -o lv2.moe
check log_var_same_bytes_threads cmp -s lv.moe lv2.moe
"$MOE" inspect lv.moe > inspect_lv.txt
check inspect_log_var grep -q '^variance  *diag, input-dependent' inspect_lv.txt
check inspect_log_var_no_cov sh -c '! grep -q "^  \(sd\|cov\)" inspect_lv.txt'
"$MOE" inspect --json lv.moe > inspect_lv.json
check inspect_json_log_var grep -q '"log_var": true' inspect_lv.json
"$MOE" predict -O mean,sd,interval=0.9,logdensity,experts lv.moe "$TEST" > pred_lv.csv
check predict_log_var_finite awk -F, 'NR > 1 { for (i = 1; i <= NF; i++) if ($i !~ /^-?[0-9]/) exit 1 }' pred_lv.csv
# an expert's sd follows the input: more than one value in column s1
check log_var_sd_varies awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "s1") c = i; next }
    { v[$c] = 1 } END { n = 0; for (k in v) n++; exit !(c && n > 1) }' pred_lv.csv
"$MOE" eval lv.moe "$TEST" > eval_lv.txt
check eval_log_var grep -q '^nll  *[0-9]' eval_lv.txt
"$MOE" train -q --trainer gradient -r 1 --epochs 3 -k 2 --expert mlp:4 --log-var --init-model lv.moe -j 1 "$TRAIN" -o lv_ft.moe
check finetune_log_var [ -s lv_ft.moe ]

# ---- classification --------------------------------------------------------------
if [ -f "$VTRAIN" ]; then
    "$MOE" train -q --trainer gradient -r 1 --epochs 5 -k 2 --expert mlp:8 -j 1 "$VTRAIN" -o vowel.moe
    "$MOE" eval vowel.moe "$VTEST" > eval_vowel.txt
    check vowel_eval grep -q '^accuracy' eval_vowel.txt
fi

# ---- version-1 model files still load, with the same predictions (to rounding:
# the gate softmax has since moved to vmath.c's exp) --------------------------------
"$MOE" predict -O mean,sd,logdensity "$TDATA/model_v1_mcycle.moe" "$TEST" > pred_v1.csv
check reads_version_1 numdiff pred_v1.csv "$TDATA/model_v1_mcycle_pred.csv" 1e-10

# ---- bad values: exit 1 and a message naming the option -------------------------
bad() { # NAME PATTERN ARGS...
    _n=$1; _p=$2; shift 2
    "$MOE" train -q "$@" "$TRAIN" -o out.moe > /dev/null 2> err.txt; _rc=$?
    if [ "$_rc" -eq 1 ] && grep -q -- "$_p" err.txt && [ ! -e out.moe ]; then pass "$_n"
    else fail "$_n" "exit $_rc: $(head -1 err.txt)"; fi
    rm -f out.moe
}
bad bad_expert_spec "--expert: 'mlp' is not 'linear' or 'mlp:SIZES'" --trainer gradient --expert mlp
bad bad_expert_zero "--expert: 'mlp:0': hidden sizes" --trainer gradient --expert mlp:0
bad bad_gate_word "--gate: 'deep' is not" --trainer gradient --gate deep
bad bad_trainer "--trainer: 'sgd' is not one of: em, gradient" --trainer sgd
bad bad_top_k "--top-k: -1 is out of range" --trainer gradient --top-k -1
bad bad_lr "--lr: 0 is out of range" --trainer gradient --lr 0
bad bad_valid "--valid: 1 is out of range" --trainer gradient --valid 1
bad bad_balance_kind "--balance-kind: 'gini' is not one of" --trainer gradient --balance-kind gini
bad bad_epochs_em "--epochs needs --trainer gradient" --epochs 3
bad bad_topk_em "--top-k needs --trainer gradient" --top-k 2
bad bad_tol_gradient "--tol is an EM option" --trainer gradient --tol 0.1
bad bad_full_variance "full" --trainer gradient -v full
bad bad_init_missing "--init-model: .*nosuch.moe" --trainer gradient --init-model nosuch.moe
bad bad_init_tree "init model: tree 2, but the parameters say 3" --trainer gradient -k 3 --init-model em.moe
bad bad_log_var_em "--log-var needs --trainer gradient" --log-var
bad bad_log_var_linear "log_var: log-variance outputs need MLP experts" --trainer gradient --log-var
bad bad_log_var_coop "cooperative objective does not fit variances" --trainer gradient --expert mlp:4 --log-var --objective cooperative
bad bad_init_log_var "init model: it has log-variance outputs" --trainer gradient -k 2 --expert mlp:4 --init-model lv.moe
