# test_reference.sh -- acceptance 7: on the reference data sets,
# `moe train` + `moe inspect --json` reach the flexmix/mixtools
# log-likelihoods of tests/data/loglik.csv (30 restarts, the feature sets of
# tests/test_reference.c), and the log-likelihood recomputed independently
# here, in awk, from `moe predict --output gates,experts` (sum over rows of
# log sum_k g_k N(y; m_k, s_k)) agrees with the one training reported.
. tests/cli/lib.sh

# case | data | expert features | gate features | experts
cases="npreg-k2-constgate npreg.csv x,x2 none 2
mcycle-linear-K2 mcycle.csv times times 2
mcycle-linear-K3 mcycle.csv times times 3
mcycle-linear-K4 mcycle.csv times times 4
tonedata-k2-constgate tonedata.csv stretchratio none 2
tonedata-k2-gate tonedata.csv stretchratio stretchratio 2"

echo "$cases" | while read -r name file efeat gfeat k; do
    ref=$(awk -F, -v c="$name" '$1 == c { print $3 }' "$TDATA/loglik.csv")
    refdf=$(awk -F, -v c="$name" '$1 == c { print $4 }' "$TDATA/loglik.csv")
    "$MOE" train -q -E "$efeat" -G "$gfeat" -k "$k" -r 30 -n 5000 -e 1e-11 -s 42 -j 2 \
        "$TDATA/$file" -o "$name.moe"
    "$MOE" inspect --json "$name.moe" > "$name.json"
    ll=$(json_num "$name.json" loglik)
    df=$(json_num "$name.json" df)
    echo "  $name: loglik $ll, reference $ref, df $df/$refdf"
    check "reference_$name" awk -v ll="$ll" -v ref="$ref" -v df="$df" -v refdf="$refdf" \
        'BEGIN { exit !(ll != "" && ll + 0 >= ref - 0.01 && df == refdf) }'

    # Independent recomputation: y is the data's last column; predictions
    # give g1..gK, m1..mK, s1..sK.
    "$MOE" predict -O gates,experts "$name.moe" "$TDATA/$file" > "$name.pred.csv"
    awk -F, 'NR > 1 { print $NF }' "$TDATA/$file" > "$name.y"
    sed 1d "$name.pred.csv" | paste -d, "$name.y" - > "$name.joined"
    re=$(awk -F, -v k="$k" '
        BEGIN { pi = atan2(0, -1) }
        {
            y = $1; mx = -1e308
            for (j = 1; j <= k; j++) {
                g = $(1 + j); m = $(1 + k + j); s = $(1 + 2 * k + j)
                if (g <= 0) { t[j] = -1e308; continue }
                z = (y - m) / s
                t[j] = log(g) - 0.5 * z * z - log(s) - 0.5 * log(2 * pi)
                if (t[j] > mx) mx = t[j]
            }
            acc = 0
            for (j = 1; j <= k; j++) if (t[j] > -1e300) acc += exp(t[j] - mx)
            total += mx + log(acc)
        }
        END { printf "%.12f", total }' "$name.joined")
    echo "  $name: recomputed from predict $re"
    check "recompute_$name" awk -v a="$re" -v b="$ll" \
        'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-7 * (b < 0 ? -b : b)) }'
done
