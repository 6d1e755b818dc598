/*
 * source.c -- a row source over an in-memory data set: reads are views
 * into the caller's arrays, nothing is copied.
 */
#include "moe_impl.h"

#include <string.h>

static moe_status dataset_read(void *ctx, size_t row0, size_t n, const moe_row_buffers *buf,
                               moe_rows *view, moe_error *err) {
    const moe_dataset *d = ctx;
    (void)buf;
    if (row0 > d->n_rows || n > d->n_rows - row0)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "rows %zu..%zu outside the data's %zu",
                       row0 + 1, row0 + n, d->n_rows);
    view->x = d->x ? d->x + row0 * d->ld_x : NULL;
    view->ld_x = d->ld_x;
    view->y = d->y ? d->y + row0 * d->ld_y : NULL;
    view->ld_y = d->ld_y;
    view->labels = d->labels ? d->labels + row0 : NULL;
    view->weights = d->weights ? d->weights + row0 : NULL;
    return MOE_STATUS_OK;
}

moe_source moe_source_from_dataset(const moe_dataset *data) {
    moe_source s;
    memset(&s, 0, sizeof s);
    s.n_rows = data->n_rows;
    s.n_cols = data->n_cols;
    s.n_outputs = data->n_outputs;
    s.n_classes = data->n_classes;
    s.has_weights = data->weights != NULL;
    s.read = dataset_read;
    s.ctx = (void *)(uintptr_t)data;
    return s;
}
