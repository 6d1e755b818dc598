/*
 * train_predict.c -- train a mixture of experts and predict with it,
 * through the public API only.
 *
 *   cc train_predict.c $(pkg-config --cflags --libs moe) -o train_predict
 *   ./train_predict                 # synthetic data: two regimes
 *   ./train_predict data.csv        # a CSV file, target = last column
 *
 * It also checks the model file round trip: the model serialised and read
 * back predicts exactly the same numbers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moe.h>

#define N 200

int main(int argc, char **argv) {
    moe_error err;
    moe_table *table = NULL;
    moe_encoder *enc = NULL;
    moe_encoded *encoded = NULL;
    moe_dataset data;
    static double x[N], y[N];

    if (argc > 1) { /* a CSV file through the data layer */
        if (moe_table_read_csv(argv[1], NULL, &table, &err) != MOE_STATUS_OK ||
            moe_encoder_fit(table, NULL, &enc, &err) != MOE_STATUS_OK ||
            moe_encoder_apply(enc, table, NULL, &encoded, &err) != MOE_STATUS_OK) {
            fprintf(stderr, "%s\n", err.message);
            return 1;
        }
        data = moe_encoded_dataset(encoded);
    } else { /* y = 2x + 1 for x < 0.5, y = 4 - 3x above, small noise */
        for (int i = 0; i < N; i++) {
            x[i] = (double)i / N;
            double noise = 0.05 * ((i * 7919 % 101) / 50.0 - 1); /* deterministic jitter */
            y[i] = (x[i] < 0.5 ? 2 * x[i] + 1 : 4 - 3 * x[i]) + noise;
        }
        data = (moe_dataset){N, 1, x, 1, 1, y, 1, 0, NULL, NULL};
    }

    moe_train_params params = moe_train_params_default();
    params.task = data.labels ? MOE_TASK_CLASSIFICATION : MOE_TASK_REGRESSION;
    params.n_restarts = 3;
    moe_model *model = NULL;
    if (moe_train(&data, &params, &model, &err) != MOE_STATUS_OK) {
        fprintf(stderr, "train: %s\n", err.message);
        return 2;
    }
    moe_fit_report rep = moe_model_report(model);
    printf("libmoe %s: %zu experts, loglik %.6f, BIC %.6f, %d iterations\n", moe_version(),
           moe_model_n_experts(model), rep.loglik, rep.bic, rep.iterations);

    /* Predict the first rows, then again from a saved and reloaded copy. */
    size_t n = data.n_rows < 5 ? data.n_rows : 5;
    size_t width = params.task == MOE_TASK_REGRESSION ? moe_model_n_outputs(model)
                                                      : moe_model_n_classes(model);
    double *a = malloc(n * width * sizeof *a), *b = malloc(n * width * sizeof *b);
    void *bytes = NULL;
    size_t size = 0;
    moe_model *copy = NULL;
    int ok = a && b && moe_model_save_buffer(model, &bytes, &size, &err) == MOE_STATUS_OK &&
             moe_model_load_buffer(bytes, size, "copy", &copy, &err) == MOE_STATUS_OK;
    if (ok && params.task == MOE_TASK_REGRESSION)
        ok = moe_model_predict_mean(model, n, data.x, data.ld_x, a, NULL, &err) == 0 &&
             moe_model_predict_mean(copy, n, data.x, data.ld_x, b, NULL, &err) == 0;
    else if (ok)
        ok = moe_model_predict_proba(model, n, data.x, data.ld_x, a, &err) == 0 &&
             moe_model_predict_proba(copy, n, data.x, data.ld_x, b, &err) == 0;
    if (!ok) {
        fprintf(stderr, "predict: %s\n", err.message);
        return 2;
    }
    for (size_t i = 0; i < n; i++) {
        printf("row %zu:", i + 1);
        for (size_t j = 0; j < width; j++) printf(" %.6f", a[i * width + j]);
        printf("\n");
    }
    int same = memcmp(a, b, n * width * sizeof *a) == 0;
    printf("round trip (%zu bytes): %s\n", size, same ? "identical" : "DIFFERENT");

    free(a);
    free(b);
    free(bytes);
    moe_model_free(copy);
    moe_model_free(model);
    moe_encoded_free(encoded);
    moe_encoder_free(enc);
    moe_table_free(table);
    return same ? 0 : 2;
}
