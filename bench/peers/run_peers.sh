#!/bin/bash
# Peer benchmark: fit the same synthetic ME data (N rows, D = 10, K experts)
# with moe, R's flexmix and a PyTorch dense ME (Adam), print a table.
# Not part of CI.  See bench/peers/README.md.
#
#   bench/peers/run_peers.sh            # from the repository root, after `make`
#
# Environment: N (100000), K (8), TOL (1e-6), SEED (1), DIR (scratch directory
# for data and outputs, default ${TMPDIR:-/tmp}/moe-peers), MOE (build/moe),
# SKIP_FLEXMIX=1 (skip the ~5-minute flexmix fit), TORCH_MAX_EPOCHS (20000).
set -euo pipefail

N=${N:-100000} K=${K:-8} TOL=${TOL:-1e-6} SEED=${SEED:-1}
DIR=${DIR:-${TMPDIR:-/tmp}/moe-peers} MOE=${MOE:-build/moe}
TORCH_MAX_EPOCHS=${TORCH_MAX_EPOCHS:-20000}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
die() { echo "run_peers.sh: $*" >&2; exit 3; }

# Dependencies.
[ -x "$MOE" ] || die "$MOE not found: build it first (make), or set MOE=path/to/moe"
$PY -c 'import numpy' 2>/dev/null || die "numpy missing for $PY (apt-get install python3-numpy)"
$PY -c 'import torch' 2>/dev/null || die "torch missing for $PY (apt-get install python3-torch)"
if [ "${SKIP_FLEXMIX:-0}" != 1 ]; then
    command -v Rscript >/dev/null || die "Rscript missing (apt-get install r-base-core r-cran-flexmix)"
    Rscript -e 'quit(status = !requireNamespace("flexmix", quietly = TRUE))' 2>/dev/null \
        || die "R package flexmix missing (apt-get install r-cran-flexmix)"
fi

# Data (deterministic; generated once).
mkdir -p "$DIR"
DATA=$DIR/synth_n${N}_train.csv
[ -s "$DATA" ] || $PY "$HERE/../gen_synth.py" --n "$N" --out "$DIR" >/dev/null
if [ "$N" = 100000 ] && [ "$(md5sum < "$DATA" | cut -d' ' -f1)" != 9348fcfcdf7907db57e740c552d886a7 ]; then
    echo "run_peers.sh: warning: $DATA differs from the reference md5" >&2
fi

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')" >&2

# moe: wall time of the whole process, and the fit time = the time on its last
# progress line (measured from the start of moe_train, after reading the CSV).
echo "== moe" >&2
t0=$(date +%s.%N)
"$MOE" train "$DATA" --experts "$K" --restarts 1 --tol "$TOL" --seed "$SEED" \
    -o "$DIR/moe.moe" 2> "$DIR/moe.log"
t1=$(date +%s.%N)
grep '^moe train: .*loglik' "$DIR/moe.log" >&2
MOE_FIT=$(grep ' iteration .* time ' "$DIR/moe.log" | tail -n 1 | sed 's/.* time \([0-9.]*\)s$/\1/')
if [ -z "$MOE_FIT" ]; then
    echo "run_peers.sh: warning: no progress times in $DIR/moe.log; moe's fit time = wall time" >&2
    MOE_FIT=$(awk "BEGIN { print $t1 - $t0 }")
fi
"$MOE" inspect --json "$DIR/moe.moe" > "$DIR/moe.json"
MOE_LL=$($PY -c 'import json,sys; print(repr(json.load(open(sys.argv[1]))["loglik"]))' "$DIR/moe.json")
$PY - "$DIR/moe.json" "$t0" "$t1" "$MOE_FIT" > "$DIR/moe.out" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
print(json.dumps({"system": "moe", "seconds": float(sys.argv[4]),
                  "wall": float(sys.argv[3]) - float(sys.argv[2]), "iterations": m["iterations"],
                  "loglik": m["loglik"], "df": m["df"], "converged": m["converged"]}))
EOF
cat "$DIR/moe.out" >&2

if [ "${SKIP_FLEXMIX:-0}" != 1 ]; then
    echo "== flexmix (takes minutes)" >&2
    Rscript "$HERE/flexmix.R" file="$DATA" k="$K" tol="$TOL" seed="$SEED" minprior=0 > "$DIR/flexmix.out"
    cat "$DIR/flexmix.out" >&2
else
    rm -f "$DIR/flexmix.out"
fi

echo "== torch (to its own convergence)" >&2
$PY "$HERE/torch_me.py" "$DATA" --k "$K" --tol "$TOL" --seed "$SEED" \
    --max-epochs "$TORCH_MAX_EPOCHS" > "$DIR/torch.out"
cat "$DIR/torch.out" >&2
echo "== torch (until it reaches moe's loglik $MOE_LL)" >&2
$PY "$HERE/torch_me.py" "$DATA" --k "$K" --tol 0 --seed "$SEED" \
    --max-epochs "$TORCH_MAX_EPOCHS" --target-loglik "$MOE_LL" > "$DIR/torch_target.out"
cat "$DIR/torch_target.out" >&2

# Table: ratios are peer seconds / moe fit seconds (and / moe wall seconds).
$PY - "$DIR" "$N" "$K" "$TOL" <<'EOF'
import json, os, sys
d, n, k, tol = sys.argv[1:]
rows = [json.load(open(os.path.join(d, f + ".out")))
        for f in ("moe", "flexmix", "torch", "torch_target") if os.path.exists(os.path.join(d, f + ".out"))]
moe = rows[0]
print(f"N = {n}, K = {k}, tol = {tol}; x moe = peer seconds / moe seconds")
print(f"{'system':<36} {'seconds':>9} {'iters':>6} {'loglik':>15} {'x moe fit':>10} {'x moe wall':>11}")
for r in rows:
    name = r["system"]
    if name == "moe":
        name = f"moe (fit; wall {r['wall']:.2f} s)"
    elif r.get("target_loglik") is not None:
        name = "torch to moe's loglik" + ("" if r["reached"] else " (NOT reached)")
    elif name == "torch":
        name = f"torch Adam ({r['stop']}, {r['threads']} thr)"
    elif name == "flexmix":
        name = f"flexmix (k final {r['k']})"
    it = r.get("iterations", r.get("epochs"))
    print(f"{name:<36} {r['seconds']:>9.2f} {it:>6} {r['loglik']:>15.3f} "
          f"{r['seconds'] / moe['seconds']:>10.1f} {r['seconds'] / moe['wall']:>11.1f}")
EOF
