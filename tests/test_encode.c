/*
 * test_encode.c -- the encoder (src/encode.c): column roles and types, the
 * auto task rule, one-hot encoding and class names, missing values, applying
 * to a reordered predict file, unseen categories, every data error with its
 * exact line and column, and the text form (round trip and corruption).
 */
#include "moe.h"
#include "check.h"

#include <stdint.h>

static moe_table *table_str(const char *text, const char *name) {
    moe_table *t = NULL;
    moe_error err;
    if (moe_table_read_csv_buffer(text, strlen(text), name, NULL, &t, &err) != MOE_STATUS_OK)
        fprintf(stderr, "  fixture does not parse: %s\n", err.message);
    return t;
}

static moe_table *table_file(const char *name) {
    char path[512];
    moe_table *t = NULL;
    moe_error err;
    snprintf(path, sizeof path, "%s/csv/%s", check_data_dir(), name);
    if (moe_table_read_csv(path, NULL, &t, &err) != MOE_STATUS_OK)
        fprintf(stderr, "  fixture does not parse: %s\n", err.message);
    return t;
}

static int names_are(const moe_encoder *enc, const char *const *want, size_t n) {
    size_t j;
    if (moe_encoder_n_features(enc) != n) return 0;
    for (j = 0; j < n; j++)
        if (strcmp(moe_encoder_feature_name(enc, j), want[j]) != 0) return 0;
    return 1;
}

/* Fit with params on text; expect failure with this message, line, column. */
static void expect_fit_error(const char *text, const moe_encoder_params *p, moe_status status,
                             const char *msg, size_t line, size_t col) {
    moe_table *t = table_str(text, "data.csv");
    moe_encoder *enc = NULL;
    moe_error err;
    memset(&err, 0, sizeof err);
    CHECK(t != NULL, "fixture");
    if (!t) return;
    CHECK(moe_encoder_fit(t, p, &enc, &err) == status, "status %d: %s", (int)err.status,
          err.message);
    CHECK(enc == NULL, "no encoder on failure");
    CHECK(strcmp(err.message, msg) == 0, "message '%s', want '%s'", err.message, msg);
    CHECK(err.line == line && err.column == col, "at %zu:%zu, want %zu:%zu", err.line, err.column,
          line, col);
    moe_encoder_free(enc);
    moe_table_free(t);
}

static void test_one_hot_and_classes(void) {
    static const char *const drop[] = {"id"};
    static const char *const want[] = {"color=green", "color=red", "size"};
    static const char *const want_all[] = {"color=blue", "color=green", "color=red", "size"};
    moe_table *t = table_file("train_cat.csv");
    moe_encoder_params p = moe_encoder_params_default();
    moe_encoder *enc = NULL;
    moe_encoded *e = NULL;
    moe_error err;
    moe_status st;
    size_t first = 9, count = 9;
    REQUIRE(t, "fixture");
    p.drop = drop;
    p.n_drop = 1;
    st = moe_encoder_fit(t, &p, &enc, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    CHECK(moe_encoder_task(enc) == MOE_TASK_CLASSIFICATION, "text labels: classification");
    CHECK(names_are(enc, want, 3), "feature names (first: %s)", moe_encoder_feature_name(enc, 0));
    CHECK(moe_encoder_n_classes(enc) == 3, "classes %zu", moe_encoder_n_classes(enc));
    CHECK(strcmp(moe_encoder_class_name(enc, 0), "bird") == 0 &&
              strcmp(moe_encoder_class_name(enc, 1), "cat") == 0 &&
              strcmp(moe_encoder_class_name(enc, 2), "dog") == 0,
          "sorted class names");
    CHECK(moe_encoder_class_name(enc, 3) == NULL, "class out of range");
    CHECK(moe_encoder_n_inputs(enc) == 2 && moe_encoder_input_is_categorical(enc, 0) &&
              !moe_encoder_input_is_categorical(enc, 1),
          "inputs");
    CHECK(moe_encoder_input_span(enc, 0, &first, &count) == MOE_STATUS_OK && first == 0 &&
              count == 2,
          "color span %zu+%zu", first, count);
    CHECK(moe_encoder_input_span(enc, 1, &first, &count) == MOE_STATUS_OK && first == 2 &&
              count == 1,
          "size span");
    CHECK(moe_encoder_input_span(enc, 2, &first, &count) == MOE_STATUS_INVALID_ARGUMENT, "range");
    CHECK(moe_encoder_input_n_levels(enc, 0) == 3 &&
              strcmp(moe_encoder_input_level(enc, 0, 0), "blue") == 0,
          "reference level blue");
    CHECK(moe_encoder_feature_input(enc, 2) == 1 && moe_encoder_feature_input(enc, 3) ==
                                                        MOE_TABLE_NO_COL,
          "feature input");
    CHECK(strcmp(moe_encoder_target_name(enc, 0), "label") == 0 && moe_encoder_n_targets(enc) == 1,
          "target");
    CHECK(moe_encoder_weights_name(enc) == NULL, "no weights");

    st = moe_encoder_apply(enc, t, NULL, &e, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    {
        /* rows: red 1.5 cat / blue 2 dog / green 3.25 cat / red -1 bird / blue 0 dog */
        static const double x[5][3] = {{0, 1, 1.5}, {0, 0, 2}, {1, 0, 3.25}, {0, 1, -1}, {0, 0, 0}};
        static const int32_t lab[5] = {1, 2, 1, 0, 2};
        size_t i, j;
        moe_dataset d = moe_encoded_dataset(e);
        REQUIRE(e->n_rows == 5 && e->n_cols == 3 && e->has_target, "shape %zu x %zu", e->n_rows,
                e->n_cols);
        for (i = 0; i < 5; i++) {
            for (j = 0; j < 3; j++)
                CHECK(e->x[i * 3 + j] == x[i][j], "x[%zu][%zu] = %g", i, j, e->x[i * 3 + j]);
            CHECK(e->labels[i] == lab[i], "label %zu = %d", i, (int)e->labels[i]);
            CHECK(e->line[i] == i + 2 && e->row[i] == i, "line/row %zu", i);
        }
        CHECK(e->y == NULL && e->weights == NULL && e->n_classes == 3 && e->n_dropped == 0,
              "no y/weights");
        CHECK(d.n_rows == 5 && d.n_cols == 3 && d.ld_x == 3 && d.x == e->x && d.labels == e->labels &&
                  d.n_classes == 3 && d.n_outputs == 0 && d.y == NULL,
              "dataset view");
    }
    moe_encoded_free(e);
    moe_encoder_free(enc);

    /* all levels kept */
    p.drop_first_level = 0;
    st = moe_encoder_fit(t, &p, &enc, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    CHECK(names_are(enc, want_all, 4), "all levels");
    moe_encoder_free(enc);
    moe_table_free(t);
}

static void test_auto_task(void) {
    moe_table *t;
    moe_encoder *enc = NULL;
    moe_error err;
    moe_encoder_params p = moe_encoder_params_default();
    char buf[4096];
    size_t i, n;
    moe_status st;

    /* integer labels, numeric order: 10 after 9 */
    t = table_str("x,y\n1,10\n2,9\n3,2\n4,10\n", "d.csv");
    REQUIRE(t, "fixture");
    st = moe_encoder_fit(t, NULL, &enc, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    CHECK(moe_encoder_task(enc) == MOE_TASK_CLASSIFICATION, "3 integers: classification");
    CHECK(moe_encoder_n_classes(enc) == 3 && strcmp(moe_encoder_class_name(enc, 0), "2") == 0 &&
              strcmp(moe_encoder_class_name(enc, 1), "9") == 0 &&
              strcmp(moe_encoder_class_name(enc, 2), "10") == 0,
          "numeric order");
    moe_encoder_free(enc);
    /* forced regression */
    p.task = MOE_ENCODE_TASK_REGRESSION;
    st = moe_encoder_fit(t, &p, &enc, &err);
    CHECK(st == MOE_STATUS_OK && moe_encoder_task(enc) == MOE_TASK_REGRESSION, "forced");
    CHECK(moe_encoder_n_classes(enc) == 0, "no classes");
    moe_encoder_free(enc);
    moe_table_free(t);

    /* a real-valued target: regression */
    t = table_str("x,y\n1,0.5\n2,1\n3,2\n", "d.csv");
    st = moe_encoder_fit(t, NULL, &enc, &err);
    CHECK(st == MOE_STATUS_OK && moe_encoder_task(enc) == MOE_TASK_REGRESSION, "real: regression");
    moe_encoder_free(enc);
    moe_table_free(t);

    /* MOE_ENCODE_AUTO_MAX_CLASSES distinct integers: classification; one more: regression */
    for (n = MOE_ENCODE_AUTO_MAX_CLASSES; n <= MOE_ENCODE_AUTO_MAX_CLASSES + 1; n++) {
        size_t len = (size_t)snprintf(buf, sizeof buf, "x,y\n");
        for (i = 0; i < n; i++) len += (size_t)snprintf(buf + len, sizeof buf - len, "%zu,%zu\n", i, i);
        t = table_str(buf, "d.csv");
        st = moe_encoder_fit(t, NULL, &enc, &err);
        CHECK(st == MOE_STATUS_OK, "%s", err.message);
        CHECK(moe_encoder_task(enc) ==
                  (n <= MOE_ENCODE_AUTO_MAX_CLASSES ? MOE_TASK_CLASSIFICATION : MOE_TASK_REGRESSION),
              "%zu distinct integers", n);
        moe_encoder_free(enc);
        moe_table_free(t);
    }

    /* a constant integer target is not a class label */
    t = table_str("x,y\n1,1\n2,1\n", "d.csv");
    st = moe_encoder_fit(t, NULL, &enc, &err);
    CHECK(st == MOE_STATUS_OK && moe_encoder_task(enc) == MOE_TASK_REGRESSION, "constant");
    moe_encoder_free(enc);
    /* forced classification with one class is an error */
    p.task = MOE_ENCODE_TASK_CLASSIFICATION;
    st = moe_encoder_fit(t, &p, &enc, &err);
    CHECK(st == MOE_STATUS_DATA && enc == NULL, "one class");
    CHECK(strcmp(err.message,
                 "d.csv: classification needs 2 or more classes; column 'y' holds only '1'") == 0,
          "%s", err.message);
    moe_table_free(t);

    /* several targets: multi-output regression; forced classification refused */
    {
        static const char *const tg[] = {"y1", "y2"};
        moe_encoded *e = NULL;
        t = table_str("a,y1,y2,b\n1,2,3,4\n5,6,7,8\n", "d.csv");
        p = moe_encoder_params_default();
        p.targets = tg;
        p.n_targets = 2;
        st = moe_encoder_fit(t, &p, &enc, &err);
        REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
        CHECK(moe_encoder_task(enc) == MOE_TASK_REGRESSION && moe_encoder_n_targets(enc) == 2,
              "multi-output");
        CHECK(moe_encoder_n_features(enc) == 2 && strcmp(moe_encoder_feature_name(enc, 1), "b") == 0,
              "inputs a, b");
        st = moe_encoder_apply(enc, t, NULL, &e, &err);
        REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
        CHECK(e->n_outputs == 2 && e->y[0] == 2 && e->y[1] == 3 && e->y[2] == 6 && e->y[3] == 7,
              "y");
        CHECK(e->x[0] == 1 && e->x[1] == 4 && e->x[2] == 5 && e->x[3] == 8, "x");
        {
            moe_dataset d = moe_encoded_dataset(e);
            CHECK(d.n_outputs == 2 && d.ld_y == 2 && d.y == e->y && d.labels == NULL, "view");
        }
        moe_encoded_free(e);
        moe_encoder_free(enc);
        p.task = MOE_ENCODE_TASK_CLASSIFICATION;
        st = moe_encoder_fit(t, &p, &enc, &err);
        CHECK(st == MOE_STATUS_INVALID_ARGUMENT && enc == NULL, "%s", err.message);
        moe_table_free(t);
    }
}

static void test_roles(void) {
    static const char *const inputs[] = {"c", "a"};
    static const char *const cat[] = {"a"};
    static const char *const unknown[] = {"zz"};
    static const char *const twice[] = {"a", "a"};
    moe_table *t = table_str("a,w,c,y,id\n1,0.5,10,1.5,x\n2,2,20,2.5,y\n1,1,30,3.5,z\n", "d.csv");
    moe_encoder_params p = moe_encoder_params_default();
    moe_encoder *enc = NULL;
    moe_encoded *e = NULL;
    moe_error err;
    moe_status st;
    REQUIRE(t, "fixture");
    p.targets = (const char *const[]){"y"};
    p.n_targets = 1;
    p.inputs = inputs;
    p.n_inputs = 2;
    p.categorical = cat;
    p.n_categorical = 1;
    p.weights = "w";
    st = moe_encoder_fit(t, &p, &enc, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    CHECK(moe_encoder_n_features(enc) == 2 && strcmp(moe_encoder_feature_name(enc, 0), "c") == 0 &&
              strcmp(moe_encoder_feature_name(enc, 1), "a=2") == 0,
          "order of inputs, forced categorical: %s %s", moe_encoder_feature_name(enc, 0),
          moe_encoder_feature_name(enc, 1));
    CHECK(strcmp(moe_encoder_weights_name(enc), "w") == 0, "weights");
    st = moe_encoder_apply(enc, t, NULL, &e, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    CHECK(e->weights && e->weights[0] == 0.5 && e->weights[1] == 2 && e->weights[2] == 1, "w");
    CHECK(e->x[0] == 10 && e->x[1] == 0 && e->x[3] == 1 && e->x[5] == 0, "x");
    CHECK(e->y && e->y[2] == 3.5, "y");
    moe_encoded_free(e);

    /* find_features: inputs by name, encoded names, no repeats */
    {
        size_t idx[4], n = 9;
        const char *names[] = {"a", "c", "a=2"};
        st = moe_encoder_find_features(enc, names, 3, idx, 4, &n, &err);
        CHECK(st == MOE_STATUS_OK && n == 2 && idx[0] == 1 && idx[1] == 0, "find %zu", n);
        names[0] = "nope";
        st = moe_encoder_find_features(enc, names, 1, idx, 4, &n, &err);
        CHECK(st == MOE_STATUS_INVALID_ARGUMENT && n == 0 &&
                  strcmp(err.message, "no input column named 'nope'") == 0,
              "%s", err.message);
        names[0] = "y";
        st = moe_encoder_find_features(enc, names, 1, idx, 4, &n, &err);
        CHECK(st == MOE_STATUS_INVALID_ARGUMENT, "the target is not an input");
    }
    moe_encoder_free(enc);

    /* default target: the last column; default inputs: all but target and weights */
    p = moe_encoder_params_default();
    p.weights = "w";
    st = moe_encoder_fit(t, &p, &enc, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    CHECK(moe_encoder_n_inputs(enc) == 3 && strcmp(moe_encoder_input_name(enc, 2), "y") == 0 &&
              strcmp(moe_encoder_target_name(enc, 0), "id") == 0,
          "the last column is the default target");
    CHECK(moe_encoder_task(enc) == MOE_TASK_CLASSIFICATION && moe_encoder_n_classes(enc) == 3,
          "text target");
    moe_encoder_free(enc);
    /* dropping the default target is a conflict */
    p.drop = (const char *const[]){"id"};
    p.n_drop = 1;
    st = moe_encoder_fit(t, &p, &enc, &err);
    CHECK(st == MOE_STATUS_INVALID_ARGUMENT &&
              strcmp(err.message, "d.csv: column 'id' cannot be both a target and dropped") == 0,
          "%s", err.message);

    /* bad names */
    p = moe_encoder_params_default();
    p.targets = unknown;
    p.n_targets = 1;
    st = moe_encoder_fit(t, &p, &enc, &err);
    CHECK(st == MOE_STATUS_INVALID_ARGUMENT && strcmp(err.message, "d.csv: no column named 'zz' (target)") == 0,
          "%s", err.message);
    p = moe_encoder_params_default();
    p.inputs = twice;
    p.n_inputs = 2;
    st = moe_encoder_fit(t, &p, &enc, &err);
    CHECK(st == MOE_STATUS_INVALID_ARGUMENT &&
              strcmp(err.message, "d.csv: column 'a' named twice (inputs)") == 0,
          "%s", err.message);
    p = moe_encoder_params_default();
    p.weights = "id";
    st = moe_encoder_fit(t, &p, &enc, &err);
    CHECK(st == MOE_STATUS_INVALID_ARGUMENT &&
              strcmp(err.message, "d.csv: column 'id' cannot be both a target and the weights") == 0,
          "%s", err.message);
    p = moe_encoder_params_default();
    p.categorical = (const char *const[]){"id"};
    p.n_categorical = 1;
    st = moe_encoder_fit(t, &p, &enc, &err);
    CHECK(st == MOE_STATUS_INVALID_ARGUMENT &&
              strcmp(err.message, "d.csv: categorical column 'id' is not an input") == 0,
          "%s", err.message);
    moe_table_free(t);
}

static void test_data_errors(void) {
    moe_encoder_params p = moe_encoder_params_default();
    char path[512];
    moe_table *t;
    moe_encoder *enc = NULL;
    moe_error err;

    expect_fit_error("id,name,age,y\n1,a,30,1.5\n2,b,40,2\n3,c,abc,2.5\n4,d,50,3\n", NULL,
                     MOE_STATUS_DATA, "data.csv:4:3 (column 'age'): 'abc' is not a number", 4, 3);
    expect_fit_error("age,y\n30,1\n40,2\n50,3\nNaN,4\n", NULL, MOE_STATUS_DATA,
                     "data.csv:5:1 (column 'age'): 'NaN' is not a finite number", 5, 1);
    expect_fit_error("age,y\n30,1\n-inf,2\n50,3\n", NULL, MOE_STATUS_DATA,
                     "data.csv:3:1 (column 'age'): '-inf' is not a finite number", 3, 1);
    expect_fit_error("age,y\n30,1\n1e999,2\n50,3\n", NULL, MOE_STATUS_DATA,
                     "data.csv:3:1 (column 'age'): '1e999' is not a finite number", 3, 1);
    expect_fit_error("a,b,y\n1,2,0.5\n3,,1.5\n", NULL, MOE_STATUS_DATA,
                     "data.csv:3:2 (column 'b'): missing value", 3, 2);
    expect_fit_error("a,b,y\n1,2,0.5\nNA,3,1.5\n", NULL, MOE_STATUS_DATA,
                     "data.csv:3:1 (column 'a'): missing value", 3, 1);
    /* a regression target that is mostly numbers */
    expect_fit_error("x,y\n1,0.5\n2,1.5\n3,oops\n", NULL, MOE_STATUS_DATA,
                     "data.csv:4:2 (column 'y'): 'oops' is not a number", 4, 2);
    /* the first bad cell in file order, whatever its kind */
    expect_fit_error("a,b,y\n1,2,0.5\n2,x,1.5\n,3,2.5\n4,5,3.5\n", NULL, MOE_STATUS_DATA,
                     "data.csv:3:2 (column 'b'): 'x' is not a number", 3, 2);
    expect_fit_error("a,b,y\n1,2,0.5\n2,,1.5\n3,x,2.5\n4,5,3.5\n6,7,8.5\n", NULL, MOE_STATUS_DATA,
                     "data.csv:3:2 (column 'b'): missing value", 3, 2);
    p.weights = "w";
    expect_fit_error("x,w,y\n1,1,2.5\n2,-1,3.5\n", &p, MOE_STATUS_DATA,
                     "data.csv:3:2 (column 'w'): '-1' is a negative weight", 3, 2);
    expect_fit_error("x,w,y\n1,1,2.5\n2,heavy,3.5\n3,2,1.5\n", &p, MOE_STATUS_DATA,
                     "data.csv:3:2 (column 'w'): 'heavy' is not a number", 3, 2);

    /* the fixture on disk */
    snprintf(path, sizeof path, "%s/csv/nonnumeric.csv", check_data_dir());
    p = moe_encoder_params_default();
    t = NULL;
    CHECK(moe_table_read_csv(path, NULL, &t, &err) == MOE_STATUS_OK, "%s", err.message);
    if (t) {
        CHECK(moe_encoder_fit(t, &p, &enc, &err) == MOE_STATUS_DATA && err.line == 3 &&
                  err.column == 3,
              "%s", err.message);
        CHECK(strstr(err.message, "nonnumeric.csv:3:3 (column 'age2'): 'abc' is not a number"),
              "%s", err.message);
        moe_encoder_free(enc);
        moe_table_free(t);
    }
}

static void test_missing_drop(void) {
    moe_table *t = table_file("missing.csv");
    moe_encoder_params p = moe_encoder_params_default();
    moe_encoder_apply_params ap = moe_encoder_apply_params_default();
    moe_encoder *enc = NULL;
    moe_encoded *e = NULL;
    moe_error err;
    moe_status st;
    REQUIRE(t, "fixture");
    p.weights = "w";
    p.task = MOE_ENCODE_TASK_REGRESSION; /* y = 2, 5 after dropping: auto would classify */
    st = moe_encoder_fit(t, &p, &enc, &err);
    CHECK(st == MOE_STATUS_DATA && strstr(err.message, "missing.csv:3:2 (column 'w'): missing value"),
          "%s", err.message);
    p.missing = MOE_MISSING_DROP;
    st = moe_encoder_fit(t, &p, &enc, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    st = moe_encoder_apply(enc, t, NULL, &e, &err);
    CHECK(st == MOE_STATUS_DATA && e == NULL && err.line == 3 && err.column == 2,
          "apply without drop: %s", err.message);
    ap.missing = MOE_MISSING_DROP;
    st = moe_encoder_apply(enc, t, &ap, &e, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    CHECK(e->n_rows == 2 && e->n_dropped == 2, "kept %zu dropped %zu", e->n_rows, e->n_dropped);
    CHECK(e->row[0] == 0 && e->row[1] == 3 && e->line[0] == 2 && e->line[1] == 5, "rows kept");
    CHECK(e->x[0] == 1 && e->x[1] == 4 && e->y[1] == 5 && e->weights[1] == 2, "values");
    moe_encoded_free(e);
    /* ignoring the target keeps the row whose only gap is the target */
    ap.target = MOE_TARGET_USE_IGNORED;
    st = moe_encoder_apply(enc, t, &ap, &e, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    CHECK(e->n_rows == 3 && e->n_dropped == 1 && !e->has_target && e->y == NULL, "kept %zu",
          e->n_rows);
    moe_encoded_free(e);
    moe_encoder_free(enc);
    moe_table_free(t);

    /* every row dropped */
    p = moe_encoder_params_default();
    p.missing = MOE_MISSING_DROP;
    t = table_str("x,y\nNA,1\n2,NA\n", "d.csv");
    st = moe_encoder_fit(t, &p, &enc, &err);
    CHECK(st == MOE_STATUS_DATA && enc == NULL &&
              strcmp(err.message, "d.csv: no rows left after dropping 2 rows with missing values") == 0,
          "%s", err.message);
    moe_table_free(t);
}

static void test_apply_reordered(void) {
    static const char *const drop[] = {"id"};
    moe_table *train = table_file("train_cat.csv"), *pred = table_file("predict_reordered.csv");
    moe_table *nolabel = table_str("size,color\n1,red\n", "p.csv");
    moe_table *nosize = table_str("color,label\nred,cat\n", "q.csv");
    moe_encoder_params p = moe_encoder_params_default();
    moe_encoder_apply_params ap = moe_encoder_apply_params_default();
    moe_encoder *enc = NULL;
    moe_encoded *e = NULL;
    moe_error err;
    moe_status st;
    REQUIRE(train && pred && nolabel && nosize, "fixtures");
    p.drop = drop;
    p.n_drop = 1;
    st = moe_encoder_fit(train, &p, &enc, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    st = moe_encoder_apply(enc, pred, NULL, &e, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    {
        /* green 10 dog / blue 20 cat / red 30 bird */
        static const double x[9] = {1, 0, 10, 0, 0, 20, 0, 1, 30};
        size_t i;
        CHECK(e->n_rows == 3 && e->n_cols == 3 && e->has_target, "shape");
        for (i = 0; i < 9; i++) CHECK(e->x[i] == x[i], "x[%zu] = %g", i, e->x[i]);
        CHECK(e->labels[0] == 2 && e->labels[1] == 1 && e->labels[2] == 0, "labels");
    }
    moe_encoded_free(e);

    /* target optional, required, ignored */
    st = moe_encoder_apply(enc, nolabel, NULL, &e, &err);
    CHECK(st == MOE_STATUS_OK && !e->has_target && e->labels == NULL && e->n_classes == 0,
          "no target: %s", err.message);
    moe_encoded_free(e);
    ap.target = MOE_TARGET_USE_REQUIRED;
    st = moe_encoder_apply(enc, nolabel, &ap, &e, &err);
    CHECK(st == MOE_STATUS_DATA && e == NULL &&
              strcmp(err.message, "p.csv: missing target column 'label'") == 0,
          "%s", err.message);
    ap.target = MOE_TARGET_USE_IGNORED;
    st = moe_encoder_apply(enc, pred, &ap, &e, &err);
    CHECK(st == MOE_STATUS_OK && !e->has_target && e->labels == NULL, "ignored");
    moe_encoded_free(e);

    /* a missing input column */
    st = moe_encoder_apply(enc, nosize, NULL, &e, &err);
    CHECK(st == MOE_STATUS_DATA && e == NULL &&
              strcmp(err.message, "q.csv: missing input column 'size'") == 0,
          "%s", err.message);

    /* an unseen class */
    {
        moe_table *t = table_str("color,size,label\nred,1,cat\nblue,2,cow\n", "r.csv");
        st = moe_encoder_apply(enc, t, NULL, &e, &err);
        CHECK(st == MOE_STATUS_DATA && strcmp(err.message, "r.csv:3:3 (column 'label'): 'cow' is an unseen class") == 0,
              "%s", err.message);
        moe_table_free(t);
    }
    moe_encoder_free(enc);
    moe_table_free(train);
    moe_table_free(pred);
    moe_table_free(nolabel);
    moe_table_free(nosize);
}

static void test_unseen_category(void) {
    static const char *const drop[] = {"id"};
    moe_table *train = table_file("train_cat.csv"), *t = table_file("unseen.csv");
    moe_encoder_params p = moe_encoder_params_default();
    moe_encoder_apply_params ap = moe_encoder_apply_params_default();
    moe_encoder *enc = NULL;
    moe_encoded *e = NULL;
    moe_error err;
    moe_status st;
    REQUIRE(train && t, "fixtures");
    p.drop = drop;
    p.n_drop = 1;
    st = moe_encoder_fit(train, &p, &enc, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    st = moe_encoder_apply(enc, t, NULL, &e, &err);
    CHECK(st == MOE_STATUS_DATA && e == NULL && err.line == 3 && err.column == 2, "%s",
          err.message);
    CHECK(strstr(err.message, "unseen.csv:3:2 (column 'color'): 'mauve' is an unseen category"),
          "%s", err.message);
    ap.unseen_zero = 1;
    st = moe_encoder_apply(enc, t, &ap, &e, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    CHECK(e->n_rows == 2 && e->x[0] == 0 && e->x[1] == 1 && e->x[2] == 1, "red");
    CHECK(e->x[3] == 0 && e->x[4] == 0 && e->x[5] == 2, "mauve: all zero");
    moe_encoded_free(e);
    moe_encoder_free(enc);
    moe_table_free(train);
    moe_table_free(t);
}

static void test_text_round_trip(void) {
    /* names needing escapes: space, percent, newline, '=' */
    static const char csv[] =
        "\"my col\",\"50%\",\"two\nlines\",k=v,y\n"
        "1,a b,x,1,p\n2,c%d,y,2,q\n3,a b,\"z\n\",3,p\n";
    moe_table *t = table_str(csv, "d.csv");
    moe_encoder_params p = moe_encoder_params_default();
    moe_encoder *enc = NULL, *back = NULL;
    moe_encoded *e1 = NULL, *e2 = NULL;
    moe_error err;
    moe_status st;
    char *s1 = NULL, *s2 = NULL;
    REQUIRE(t, "fixture");
    p.weights = "k=v";
    st = moe_encoder_fit(t, &p, &enc, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    st = moe_encoder_to_string(enc, &s1, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    CHECK(strncmp(s1, "moe-encoder 1\ntask classification\n", 34) == 0, "%s", s1);
    CHECK(strstr(s1, "input my%20col numeric\n") && strstr(s1, "input 50%25 categorical 2\n") &&
              strstr(s1, "level c%25d\n") && strstr(s1, "input two%0Alines categorical 3\n") &&
              strstr(s1, "level z%0A\n") && strstr(s1, "weights k=v\n"),
          "escapes:\n%s", s1);
    st = moe_encoder_from_string(s1, &back, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    st = moe_encoder_to_string(back, &s2, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    CHECK(strcmp(s1, s2) == 0, "same text:\n%s\n---\n%s", s1, s2);
    CHECK(strcmp(moe_encoder_feature_name(back, 1), "50%=c%d") == 0, "%s",
          moe_encoder_feature_name(back, 1));
    st = moe_encoder_apply(enc, t, NULL, &e1, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    st = moe_encoder_apply(back, t, NULL, &e2, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    CHECK(e1->n_rows == e2->n_rows && e1->n_cols == e2->n_cols &&
              memcmp(e1->x, e2->x, e1->n_rows * e1->n_cols * sizeof(double)) == 0 &&
              memcmp(e1->labels, e2->labels, e1->n_rows * sizeof(int32_t)) == 0 &&
              memcmp(e1->weights, e2->weights, e1->n_rows * sizeof(double)) == 0,
          "same encoding");

    /* corruption: every truncation and every single-byte change must either
     * parse or fail cleanly (under the sanitizers: no crash, no leak) */
    {
        size_t n = strlen(s1), i, ok = 0;
        char *c = malloc(n + 1);
        REQUIRE(c, "alloc");
        for (i = 0; i < n; i++) {
            moe_encoder *x = NULL;
            memcpy(c, s1, i);
            c[i] = '\0';
            if (moe_encoder_from_string(c, &x, &err) == MOE_STATUS_OK) ok++;
            else CHECK(x == NULL && err.message[0] && !strchr(err.message, '\n'), "clean error");
            moe_encoder_free(x);
        }
        CHECK(ok == 0, "%zu truncations parsed", ok);
        for (i = 0; i < n; i++) {
            static const char subst[] = {' ', '\n', '%', '0', '9', 'x', '\x80'};
            size_t k;
            for (k = 0; k < sizeof subst; k++) {
                moe_encoder *x = NULL;
                memcpy(c, s1, n + 1);
                c[i] = subst[k];
                if (moe_encoder_from_string(c, &x, &err) != MOE_STATUS_OK)
                    CHECK(x == NULL && !strchr(err.message, '\n'), "clean error");
                moe_encoder_free(x);
            }
        }
        free(c);
    }
    free(s1);
    free(s2);
    moe_encoded_free(e1);
    moe_encoded_free(e2);
    moe_encoder_free(enc);
    moe_encoder_free(back);
    moe_table_free(t);
}

static void test_text_errors(void) {
    static const struct {
        const char *text;
        moe_status status;
        const char *msg;
    } cases[] = {
        {"", MOE_STATUS_FORMAT, "encoder text line 0: not an encoder (expected 'moe-encoder 1')"},
        {"hello\n", MOE_STATUS_FORMAT,
         "encoder text line 1: not an encoder (expected 'moe-encoder 1')"},
        {"moe-encoder 2\n", MOE_STATUS_VERSION,
         "encoder text version 2 is newer than this library reads (1)"},
        {"moe-encoder 1\ntask magic\n", MOE_STATUS_FORMAT, "encoder text line 2: unknown task"},
        {"moe-encoder 1\ntask regression\ndrop-first-level 1\ntargets 99999999999\n",
         MOE_STATUS_FORMAT, "encoder text line 4: expected 'targets N' (N >= 1, one line each)"},
        {"moe-encoder 1\ntask regression\ndrop-first-level 1\ntargets 1\ntarget y\ninputs 1\n"
         "input c categorical 2\nlevel b\nlevel a\nclasses 0\nend\n",
         MOE_STATUS_FORMAT, "encoder text line 9: not in sorted order or repeated"},
        {"moe-encoder 1\ntask regression\ndrop-first-level 1\ntargets 1\ntarget y\ninputs 1\n"
         "input c categorical 2\nlevel 10\nlevel 9\nclasses 0\nend\n",
         MOE_STATUS_FORMAT, "encoder text line 9: not in sorted order or repeated"},
        {"moe-encoder 1\ntask regression\ndrop-first-level 1\ntargets 1\ntarget y\ninputs 1\n"
         "input y numeric\nclasses 0\nend\n",
         MOE_STATUS_FORMAT, "encoder text: a column name is repeated"},
        {"moe-encoder 1\ntask classification\ndrop-first-level 1\ntargets 1\ntarget y\ninputs 0\n"
         "classes 1\nclass a\nend\n",
         MOE_STATUS_FORMAT, "encoder text line 7: wrong number of classes for the task"},
        {"moe-encoder 1\ntask regression\ndrop-first-level 1\ntargets 1\ntarget y\ninputs 0\n"
         "classes 0\nend\nmore\n",
         MOE_STATUS_FORMAT, "encoder text line 8: text after 'end'"},
        {"moe-encoder 1\ntask regression\ndrop-first-level 1\ntargets 1\ntarget y%0\ninputs 0\n"
         "classes 0\nend\n",
         MOE_STATUS_FORMAT, "encoder text line 5: expected 'target NAME'"},
        {"moe-encoder 1\ntask regression\ndrop-first-level 1\ntargets 1\ntarget y\ninputs 0\n"
         "classes 0\nend",
         MOE_STATUS_FORMAT, "encoder text line 7: expected 'end'"},
    };
    size_t i;
    moe_encoder *enc = NULL;
    moe_error err;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        moe_status st = moe_encoder_from_string(cases[i].text, &enc, &err);
        CHECK(st == cases[i].status && enc == NULL, "case %zu: status %d (%s)", i, (int)st,
              err.message);
        CHECK(strcmp(err.message, cases[i].msg) == 0, "case %zu: '%s', want '%s'", i, err.message,
              cases[i].msg);
        moe_encoder_free(enc);
        enc = NULL;
    }
    /* the smallest valid text */
    {
        moe_status st = moe_encoder_from_string(
            "moe-encoder 1\ntask regression\ndrop-first-level 0\ntargets 1\ntarget y\ninputs 0\n"
            "classes 0\nend\n",
            &enc, &err);
        CHECK(st == MOE_STATUS_OK && moe_encoder_n_features(enc) == 0, "%s", err.message);
        moe_encoder_free(enc);
    }
}

static void test_shared_data(void) {
    static const struct {
        const char *name;
        moe_task task;
        size_t features, classes;
    } sets[] = {
        {"boston", MOE_TASK_REGRESSION, 13, 0},  {"mcycle", MOE_TASK_REGRESSION, 1, 0},
        {"npreg", MOE_TASK_REGRESSION, 1, 0},    {"tonedata", MOE_TASK_REGRESSION, 1, 0},
        {"vowel", MOE_TASK_CLASSIFICATION, 9, 11},
    };
    const char *dir = getenv("MOE_SHARED_DATA");
    size_t i, found = 0;
    if (!dir || !*dir) dir = "../shared/data";
    for (i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        char path[1024];
        moe_table *tr = NULL, *te = NULL;
        moe_encoder *enc = NULL;
        moe_encoded *e = NULL;
        moe_error err;
        FILE *f;
        snprintf(path, sizeof path, "%s/%s_train.csv", dir, sets[i].name);
        if (!(f = fopen(path, "r"))) continue;
        fclose(f);
        found++;
        if (moe_table_read_csv(path, NULL, &tr, &err) != MOE_STATUS_OK) {
            CHECK(0, "%s", err.message);
            continue;
        }
        if (moe_encoder_fit(tr, NULL, &enc, &err) != MOE_STATUS_OK) {
            CHECK(0, "%s", err.message);
            moe_table_free(tr);
            continue;
        }
        CHECK(moe_encoder_task(enc) == sets[i].task && moe_encoder_n_features(enc) ==
                                                           sets[i].features &&
                  moe_encoder_n_classes(enc) == sets[i].classes,
              "%s: task %d, %zu features, %zu classes", sets[i].name, (int)moe_encoder_task(enc),
              moe_encoder_n_features(enc), moe_encoder_n_classes(enc));
        snprintf(path, sizeof path, "%s/%s_test.csv", dir, sets[i].name);
        if (moe_table_read_csv(path, NULL, &te, &err) == MOE_STATUS_OK) {
            CHECK(moe_encoder_apply(enc, te, NULL, &e, &err) == MOE_STATUS_OK && e->has_target,
                  "%s: %s", sets[i].name, err.message);
            if (e && sets[i].task == MOE_TASK_CLASSIFICATION) {
                /* vowel's labels are 0..10: class c is label c */
                size_t r;
                for (r = 0; r < e->n_rows; r++) {
                    double v = -1;
                    moe_parse_double(moe_table_cell(te, e->row[r], moe_table_n_cols(te) - 1), &v);
                    if ((double)e->labels[r] != v) break;
                }
                CHECK(r == e->n_rows, "%s: label of row %zu", sets[i].name, r);
            }
        }
        moe_encoded_free(e);
        moe_encoder_free(enc);
        moe_table_free(te);
        moe_table_free(tr);
    }
    if (!found) printf("  (skipped: no data sets in %s)\n", dir);
}

int main(void) {
    RUN(test_one_hot_and_classes);
    RUN(test_auto_task);
    RUN(test_roles);
    RUN(test_data_errors);
    RUN(test_missing_drop);
    RUN(test_apply_reordered);
    RUN(test_unseen_category);
    RUN(test_text_round_trip);
    RUN(test_text_errors);
    RUN(test_shared_data);
    return check_finish();
}
