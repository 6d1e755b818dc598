#!/bin/bash
# moe against scikit-learn on the shared splits: vowel (classification: test
# accuracy, test log-loss) and mcycle (regression: test RMSE, test negative
# log-likelihood per row). Not part of CI.  See bench/peers/README.md.
#
#   bench/peers/run_sklearn.sh          # from the repository root, after `make`
#
# moe: linear-expert mixtures fitted by EM through the CLI, K = 1..KMAX
# experts (K = 1 is plain multinomial logistic / linear regression), each
#   moe train -q -k K -s SEED -r RESTARTS TRAIN.csv ; moe eval --json MODEL TEST.csv
# with every other option at the CLI's default (every input to the experts
# and the gate, diagonal variance, 5 restarts, tol 1e-8). No tuning on the
# test split: every K is shown.
# scikit-learn: sklearn_peers.py (its docstring gives the protocol).
#
# Environment: DATA_DIR (../shared/data next to the repository), MOE
# (build/moe), KMAX (4), SEED (1), RESTARTS (5), DIR (scratch, default
# ${TMPDIR:-/tmp}/moe-sklearn), SKIP_SKLEARN=1 (moe rows only).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DATA_DIR=${DATA_DIR:-$ROOT/../shared/data}
MOE=${MOE:-build/moe} KMAX=${KMAX:-4} SEED=${SEED:-1} RESTARTS=${RESTARTS:-5}
DIR=${DIR:-${TMPDIR:-/tmp}/moe-sklearn}
PY=/usr/bin/python3
die() { echo "run_sklearn.sh: $*" >&2; exit 3; }

[ -x "$MOE" ] || die "$MOE not found: build it first (make), or set MOE=path/to/moe"
for f in vowel_train vowel_test mcycle_train mcycle_test; do
    [ -s "$DATA_DIR/$f.csv" ] || die "$DATA_DIR/$f.csv missing (set DATA_DIR)"
done
if [ "${SKIP_SKLEARN:-0}" != 1 ]; then
    $PY -c 'import sklearn' 2>/dev/null || die "scikit-learn missing for $PY (apt-get install python3-sklearn)"
fi
mkdir -p "$DIR"

# json_num FILE KEY: the number after "KEY": (first match).
json_num() { sed -n "s/^ *\"$2\": *\([-+0-9.eE]*\).*/\1/p" "$1" | head -1; }

echo "moe: $("$MOE" --version); $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
# moe_rows NAME KEY1 KEY2 FORMAT ONE_LABEL KIND: train and score K = 1..KMAX.
moe_rows() {
    local name=$1 k1=$2 k2=$3 fmt=$4 one=$5 kind=$6 k m label
    for k in $(seq 1 "$KMAX"); do
        m=$DIR/${name}_k$k.moe
        "$MOE" train -q -k "$k" -s "$SEED" -r "$RESTARTS" "$DATA_DIR/${name}_train.csv" -o "$m"
        "$MOE" eval --json "$m" "$DATA_DIR/${name}_test.csv" > "$DIR/${name}_k$k.json"
        label="moe EM, $k $kind experts"
        [ "$k" = 1 ] && label="moe K=1 ($one)"
        printf "%-44s $fmt $fmt\n" "$label" "$(json_num "$DIR/${name}_k$k.json" "$k1")" \
            "$(json_num "$DIR/${name}_k$k.json" "$k2")"
    done
}
printf '%-44s %9s %9s\n' "vowel (462 test rows)" accuracy log-loss
moe_rows vowel accuracy log_loss %9.4f "multinomial logistic regression" multinomial
printf '%-44s %9s %9s\n' "mcycle (33 test rows)" RMSE NLL
moe_rows mcycle rmse nll %9.4f "linear regression" linear

if [ "${SKIP_SKLEARN:-0}" != 1 ]; then
    echo
    $PY "$HERE/sklearn_peers.py" --data "$DATA_DIR" --json "$DIR/sklearn.json"
fi
