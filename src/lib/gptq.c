/* gptq.c: the streamed Hessian, the GPTQ algorithm (blocked lazy updates,
 * act-order, static and dynamic groups, dead inputs, damping escalation with
 * RTN fallback) and the Hessian-weighted relative output error. See gptq.h
 * for the conventions. It does not know the model or read files. */
#include "nanogptq/gptq.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* ---- Hessian ------------------------------------------------------------- */

ngq_status ngq_hessian_init(ngq_hessian *h, int64_t cols, ngq_error *err)
{
    memset(h, 0, sizeof *h);
    if (cols <= 0 || cols > 65536)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "Hessian of %lld columns is out of range", (long long)cols);
    h->cols = cols;
    h->h = calloc((size_t)(cols * cols), sizeof *h->h);
    h->chunk = malloc((size_t)(cols * cols) * sizeof *h->chunk);
    h->pending = malloc((size_t)(NGQ_HESSIAN_CHUNK_ROWS * cols) * sizeof *h->pending);
    if (!h->h || !h->chunk || !h->pending) {
        ngq_hessian_free(h);
        return ngq_fail(err, NGQ_ERR_NOMEM, "cannot allocate a %lld x %lld Hessian", (long long)cols,
                        (long long)cols);
    }
    return NGQ_OK;
}

void ngq_hessian_free(ngq_hessian *h)
{
    if (!h) return;
    free(h->h);
    free(h->chunk);
    free(h->pending);
    memset(h, 0, sizeof *h);
}

/* acc (upper triangle, cols x cols, double) += x^T x for x (m, cols), the
 * product taken in float32 into chunk. The columns are split in halves A | B:
 * slice 0 computes the off-diagonal block A^T B (sgemm), slice 1 the two
 * diagonal blocks (ssyrk), the same number of flops; each slice then adds its
 * own blocks into acc. */
static void accumulate_chunk(const float *x, int64_t m, int64_t cols, float *chunk, double *acc)
{
    const int64_t a = cols / 2, b = cols - a;
    #pragma omp parallel for schedule(static) if (m * cols * cols > 200000)
    for (int s = 0; s < 2; s++) {
        if (s == 0) {
            if (a == 0) continue;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)a, (int)b, (int)m, 1.0f, x, (int)cols, x + a,
                        (int)cols, 0.0f, chunk + a, (int)cols);
            for (int64_t i = 0; i < a; i++)
                for (int64_t j = a; j < cols; j++) acc[i * cols + j] += (double)chunk[i * cols + j];
        } else {
            if (a > 0)
                cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)a, (int)m, 1.0f, x, (int)cols, 0.0f, chunk,
                            (int)cols);
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)b, (int)m, 1.0f, x + a, (int)cols, 0.0f,
                        chunk + a * cols + a, (int)cols);
            for (int64_t i = 0; i < cols; i++)
                for (int64_t j = i; j < (i < a ? a : cols); j++) acc[i * cols + j] += (double)chunk[i * cols + j];
        }
    }
}

ngq_status ngq_hessian_add(ngq_hessian *h, const float *x, int64_t n, ngq_error *err)
{
    if (!h->h) return ngq_fail(err, NGQ_ERR_INTERNAL, "Hessian add before init");
    if (h->finalized) return ngq_fail(err, NGQ_ERR_INTERNAL, "Hessian add after finalize");
    if (n < 0) return ngq_fail(err, NGQ_ERR_INTERNAL, "Hessian add of %lld rows", (long long)n);
    const int64_t cols = h->cols;
    for (int64_t i = 0; i < n * cols; i++)
        if (!isfinite(x[i]))
            return ngq_fail(err, NGQ_ERR_NUMERIC, "Hessian input row %lld column %lld is %g",
                            (long long)(h->nsamples + i / cols), (long long)(i % cols), (double)x[i]);
    h->nsamples += n;
    while (n > 0) {
        if (h->npending == 0 && n >= NGQ_HESSIAN_CHUNK_ROWS) { /* a whole chunk in place */
            accumulate_chunk(x, NGQ_HESSIAN_CHUNK_ROWS, cols, h->chunk, h->h);
            x += NGQ_HESSIAN_CHUNK_ROWS * cols;
            n -= NGQ_HESSIAN_CHUNK_ROWS;
            continue;
        }
        int64_t take = NGQ_HESSIAN_CHUNK_ROWS - h->npending;
        if (take > n) take = n;
        memcpy(h->pending + h->npending * cols, x, (size_t)(take * cols) * sizeof *x);
        h->npending += take;
        x += take * cols;
        n -= take;
        if (h->npending == NGQ_HESSIAN_CHUNK_ROWS) {
            accumulate_chunk(h->pending, h->npending, cols, h->chunk, h->h);
            h->npending = 0;
        }
    }
    return NGQ_OK;
}

ngq_status ngq_hessian_finalize(ngq_hessian *h, ngq_error *err)
{
    if (!h->h) return ngq_fail(err, NGQ_ERR_INTERNAL, "Hessian finalize before init");
    if (h->finalized) return ngq_fail(err, NGQ_ERR_INTERNAL, "Hessian finalized twice");
    if (h->nsamples == 0) return ngq_fail(err, NGQ_ERR_NUMERIC, "Hessian has no calibration rows");
    if (h->npending > 0) {
        accumulate_chunk(h->pending, h->npending, h->cols, h->chunk, h->h);
        h->npending = 0;
    }
    const int64_t cols = h->cols;
    const double scale = 2.0 / (double)h->nsamples;
    for (int64_t i = 0; i < cols; i++)
        for (int64_t j = i; j < cols; j++) {
            double v = h->h[i * cols + j] * scale;
            h->h[i * cols + j] = v;
            h->h[j * cols + i] = v;
        }
    h->finalized = 1;
    return NGQ_OK;
}

/* ---- GPTQ ------------------------------------------------------------------ */

void ngq_gptq_options_default(ngq_gptq_options *opts)
{
    opts->block_size = NGQ_GPTQ_DEFAULT_BLOCK_SIZE;
    opts->percdamp = NGQ_GPTQ_DEFAULT_PERCDAMP;
    opts->act_order = 0;
    opts->static_groups = 0;
    opts->max_escalations = 4;
    opts->escalation_factor = 10.0;
}

/* U = chol_upper((H + lambda I)^-1), row-major, zero below the diagonal.
 * Returns 0 when a factorisation fails. */
static int inverse_cholesky_upper(const double *hm, int64_t cols, double lambda, double *u)
{
    const lapack_int n = (lapack_int)cols;
    memcpy(u, hm, (size_t)(cols * cols) * sizeof *u);
    for (int64_t i = 0; i < cols; i++) u[i * cols + i] += lambda;
    if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', n, u, n) != 0) return 0;
    if (LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'U', n, u, n) != 0) return 0;
    for (int64_t i = 0; i < cols; i++) /* potri fills the upper triangle only */
        for (int64_t j = 0; j < i; j++) u[i * cols + j] = u[j * cols + i];
    if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', n, u, n) != 0) return 0;
    for (int64_t i = 0; i < cols; i++) {
        for (int64_t j = 0; j < i; j++) u[i * cols + j] = 0.0;
        if (!(u[i * cols + i] > 0.0) || !isfinite(u[i * cols + i])) return 0;
    }
    return 1;
}

typedef struct {
    const ngq_qgrid *grid;
    int64_t rows, cols, block;
    int dynamic_groups;       /* per-group grid without static groups        */
    const int64_t *perm;      /* processing position -> original column        */
    const double *u;          /* cols x cols, upper                            */
    double *wp;               /* rows x cols, permuted columns, updated lazily */
    uint8_t *codes;           /* rows x cols, original column order            */
    ngq_qtensor *out;         /* parameters (set here for dynamic groups)      */
    double *row_loss;         /* rows                                          */
} gptq_job;

/* Runs the blocked algorithm on rows [r0, r1). Scratch: w1, err1 of
 * (r1 - r0) x block doubles and one group of floats. */
static ngq_status gptq_slice(const gptq_job *job, int64_t r0, int64_t r1, ngq_error *err)
{
    const int64_t cols = job->cols, nr = r1 - r0, bs = job->block;
    const int maxq = ngq_qgrid_maxq(job->grid);
    const int64_t gsize = job->grid->granularity == NGQ_GRAN_GROUP ? job->grid->group_size : cols;
    double *w1 = malloc((size_t)(nr * bs) * sizeof *w1);
    double *err1 = malloc((size_t)(nr * bs) * sizeof *err1);
    float *gbuf = malloc((size_t)gsize * sizeof *gbuf);
    ngq_qparams *cur = malloc((size_t)nr * sizeof *cur);
    ngq_status st = NGQ_OK;
    if (!w1 || !err1 || !gbuf || !cur) {
        st = ngq_fail(err, NGQ_ERR_NOMEM, "GPTQ: cannot allocate the block buffers for %lld rows", (long long)nr);
        goto done;
    }
    for (int64_t r = r0; r < r1; r++) job->row_loss[r] = 0.0;
    if (!job->dynamic_groups && job->grid->granularity != NGQ_GRAN_GROUP)
        for (int64_t r = r0; r < r1; r++) cur[r - r0] = ngq_qtensor_get_params(job->out, r, 0);

    for (int64_t i1 = 0; i1 < cols; i1 += bs) {
        const int64_t i2 = i1 + bs < cols ? i1 + bs : cols, count = i2 - i1;
        for (int64_t r = 0; r < nr; r++)
            memcpy(w1 + r * count, job->wp + (r0 + r) * cols + i1, (size_t)count * sizeof *w1);
        for (int64_t r = 0; r < nr; r++) {
            const int64_t row = r0 + r;
            double *wr = w1 + r * count, *er = err1 + r * count;
            double loss = 0.0;
            for (int64_t i = 0; i < count; i++) {
                const int64_t col = i1 + i, orig = job->perm[col];
                if (job->dynamic_groups && col % gsize == 0) {
                    /* the reference's find_params(W[:, col:col+G]): lazily updated W */
                    const double *src = job->wp + row * cols + col;
                    for (int64_t k = 0; k < gsize; k++) gbuf[k] = (float)src[k];
                    st = ngq_quant_find_params(job->grid, gbuf, gsize, &cur[r], err);
                    if (!st) st = ngq_qtensor_set_params(job->out, row, col / gsize, cur[r], err);
                    if (st) {
                        ngq_error_prefix(err, "GPTQ row %lld group %lld", (long long)row, (long long)(col / gsize));
                        goto done;
                    }
                } else if (!job->dynamic_groups && job->grid->granularity == NGQ_GRAN_GROUP &&
                           (i == 0 || orig / gsize != job->perm[col - 1] / gsize)) {
                    cur[r] = ngq_qtensor_get_params(job->out, row, orig / gsize);
                }
                const double w = wr[i];
                const uint8_t code = ngq_quant_code((float)w, cur[r], maxq);
                const double q = (double)ngq_quant_value(code, cur[r]);
                const double d = job->u[col * cols + col];
                const double e = (w - q) / d;
                job->codes[row * cols + orig] = code;
                loss += (w - q) * (w - q) / (d * d) / 2.0;
                const double *urow = job->u + col * cols + i1;
                for (int64_t j = i + 1; j < count; j++) wr[j] -= e * urow[j];
                er[i] = e;
            }
            job->row_loss[row] += loss;
        }
        if (i2 < cols) /* W[:, i2:] -= Err1 U[i1:i2, i2:] */
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)(cols - i2), (int)count, -1.0, err1,
                        (int)count, job->u + i1 * cols + i2, (int)cols, 1.0, job->wp + r0 * cols + i2, (int)cols);
    }
done:
    free(w1);
    free(err1);
    free(gbuf);
    free(cur);
    return st;
}

typedef struct {
    int64_t col;
    double diag;
} diag_entry;

static int diag_descending(const void *pa, const void *pb)
{
    const diag_entry *a = pa, *b = pb;
    if (a->diag > b->diag) return -1;
    if (a->diag < b->diag) return 1;
    return a->col < b->col ? -1 : a->col > b->col;
}

static ngq_status fallback_rtn(const float *w, int64_t rows, int64_t cols, const ngq_qgrid *grid, ngq_qtensor *out,
                               ngq_gptq_report *rep, ngq_error *err)
{
    rep->fell_back_to_rtn = 1;
    ngq_status st = ngq_quant_rtn(w, rows, cols, grid, out, err);
    if (st) ngq_error_prefix(err, "GPTQ fallback to RTN");
    return st;
}

ngq_status ngq_gptq_quantize(const float *w, int64_t rows, int64_t cols, const double *hessian,
                             const ngq_qgrid *grid, const ngq_gptq_options *opts, ngq_qtensor *out,
                             ngq_gptq_report *report, ngq_error *err)
{
    const double t0 = ngq_now_seconds();
    ngq_gptq_report local;
    ngq_gptq_report *rep = report ? report : &local;
    memset(rep, 0, sizeof *rep);
    memset(out, 0, sizeof *out);
    ngq_status st = ngq_qgrid_validate(grid, cols, err);
    if (st) return st;
    if (rows <= 0 || cols <= 0)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "GPTQ: shape [%lld, %lld]", (long long)rows, (long long)cols);
    if (opts->block_size < 1)
        return ngq_fail(err, NGQ_ERR_CONFIG, "GPTQ: block_size = %lld, expected >= 1", (long long)opts->block_size);
    if (!(opts->percdamp >= 0.0) || !isfinite(opts->percdamp))
        return ngq_fail(err, NGQ_ERR_CONFIG, "GPTQ: percdamp = %g, expected a finite value >= 0", opts->percdamp);
    if (opts->max_escalations < 0 || !(opts->escalation_factor > 1.0) || !isfinite(opts->escalation_factor))
        return ngq_fail(err, NGQ_ERR_CONFIG, "GPTQ: max_escalations = %d (expected >= 0), escalation_factor = %g "
                        "(expected > 1)", opts->max_escalations, opts->escalation_factor);
    for (int64_t i = 0; i < rows * cols; i++)
        if (!isfinite(w[i]))
            return ngq_fail(err, NGQ_ERR_NUMERIC, "GPTQ: weight [%lld, %lld] is %g", (long long)(i / cols),
                            (long long)(i % cols), (double)w[i]);
    for (int64_t i = 0; i < cols * cols; i++)
        if (!isfinite(hessian[i]))
            return ngq_fail(err, NGQ_ERR_NUMERIC, "GPTQ: Hessian [%lld, %lld] is %g", (long long)(i / cols),
                            (long long)(i % cols), hessian[i]);
    rep->percdamp_requested = opts->percdamp;

    const int group_grid = grid->granularity == NGQ_GRAN_GROUP;
    const int static_groups = group_grid && opts->static_groups;
    const int dynamic_groups = group_grid && !opts->static_groups;
    const int64_t gsize = group_grid ? grid->group_size : cols;

    double *hm = malloc((size_t)(cols * cols) * sizeof *hm);
    double *u = malloc((size_t)(cols * cols) * sizeof *u);
    double *wd = malloc((size_t)(rows * cols) * sizeof *wd);
    double *wp = malloc((size_t)(rows * cols) * sizeof *wp);
    uint8_t *codes = malloc((size_t)(rows * cols));
    double *row_loss = calloc((size_t)rows, sizeof *row_loss);
    int64_t *perm = malloc((size_t)cols * sizeof *perm);
    diag_entry *order = malloc((size_t)cols * sizeof *order);
    float *fbuf = malloc((size_t)cols * sizeof *fbuf);
    if (!hm || !u || !wd || !wp || !codes || !row_loss || !perm || !order || !fbuf) {
        st = ngq_fail(err, NGQ_ERR_NOMEM, "GPTQ: cannot allocate buffers for a [%lld, %lld] layer", (long long)rows,
                      (long long)cols);
        goto done;
    }
    memcpy(hm, hessian, (size_t)(cols * cols) * sizeof *hm);
    for (int64_t i = 0; i < rows * cols; i++) wd[i] = (double)w[i];

    /* 1. Damping and U first: a hopeless Hessian falls back to RTN before any
     *    other work. Dead inputs are fixed before the mean is taken. */
    for (int64_t i = 0; i < cols; i++)
        if (hm[i * cols + i] == 0.0) {
            hm[i * cols + i] = 1.0;
            rep->dead_columns++;
            for (int64_t r = 0; r < rows; r++) wd[r * cols + i] = 0.0;
        }
    for (int64_t i = 0; i < cols; i++) {
        order[i].col = i;
        order[i].diag = hm[i * cols + i];
        perm[i] = i;
    }
    if (opts->act_order) {
        qsort(order, (size_t)cols, sizeof *order, diag_descending);
        for (int64_t i = 0; i < cols; i++) perm[i] = order[i].col;
    }
    /* permuted H: Hp[a][b] = H[perm[a]][perm[b]] (stored in u as a staging area) */
    for (int64_t a = 0; a < cols; a++)
        for (int64_t b = 0; b < cols; b++) u[a * cols + b] = hm[perm[a] * cols + perm[b]];
    memcpy(hm, u, (size_t)(cols * cols) * sizeof *hm);
    double mean_diag = 0.0;
    for (int64_t i = 0; i < cols; i++) mean_diag += hm[i * cols + i];
    mean_diag /= (double)cols;

    int factored = 0;
    double p = opts->percdamp;
    if (mean_diag > 0.0) {
        for (int attempt = 0; attempt <= opts->max_escalations; attempt++) {
            if (attempt > 0) {
                p = p > 0.0 ? p * opts->escalation_factor : NGQ_GPTQ_DEFAULT_PERCDAMP;
                rep->escalations = attempt;
            }
            if (inverse_cholesky_upper(hm, cols, p * mean_diag, u)) {
                factored = 1;
                break;
            }
        }
    }
    rep->percdamp_used = p;
    rep->damp = p * mean_diag;
    if (!factored) {
        if (mean_diag > 0.0)
            snprintf(rep->note, sizeof rep->note,
                     "Cholesky failed with percdamp %g and %d escalations up to %g: fell back to RTN",
                     opts->percdamp, opts->max_escalations, p);
        else
            snprintf(rep->note, sizeof rep->note,
                     "mean of diag(H) is %g (not a positive semi-definite Hessian): fell back to RTN", mean_diag);
        st = fallback_rtn(w, rows, cols, grid, out, rep, err);
        goto done;
    }
    if (rep->escalations > 0)
        snprintf(rep->note, sizeof rep->note, "Cholesky failed with percdamp %g; succeeded with %g after %d escalations",
                 opts->percdamp, p, rep->escalations);

    /* 2. The qtensor and the parameters that do not depend on the updates. */
    st = ngq_qtensor_init(out, rows, cols, grid, dynamic_groups && opts->act_order, err);
    if (st) goto done;
    if (out->g_idx)
        for (int64_t j = 0; j < cols; j++) out->g_idx[perm[j]] = (int32_t)(j / gsize);
    if (grid->granularity == NGQ_GRAN_TENSOR) {
        ngq_qparams prm;
        st = ngq_quant_find_params(grid, w, rows * cols, &prm, err);
        if (!st) st = ngq_qtensor_set_params(out, 0, 0, prm, err);
    } else if (grid->granularity == NGQ_GRAN_CHANNEL) {
        for (int64_t r = 0; r < rows && !st; r++) {
            ngq_qparams prm;
            st = ngq_quant_find_params(grid, w + r * cols, cols, &prm, err);
            if (st) ngq_error_prefix(err, "GPTQ row %lld", (long long)r);
            else st = ngq_qtensor_set_params(out, r, 0, prm, err);
        }
    } else if (static_groups) {
        for (int64_t r = 0; r < rows && !st; r++)
            for (int64_t g = 0; g < cols / gsize && !st; g++) {
                ngq_qparams prm;
                for (int64_t k = 0; k < gsize; k++) fbuf[k] = (float)wd[r * cols + g * gsize + k];
                st = ngq_quant_find_params(grid, fbuf, gsize, &prm, err);
                if (st) ngq_error_prefix(err, "GPTQ row %lld group %lld", (long long)r, (long long)g);
                else st = ngq_qtensor_set_params(out, r, g, prm, err);
            }
    }
    if (st) goto done;

    /* 3. The blocked algorithm over static row slices. */
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) wp[r * cols + j] = wd[r * cols + perm[j]];
    gptq_job job = {grid, rows, cols, opts->block_size < cols ? opts->block_size : cols, dynamic_groups, perm, u,
                    wp, codes, out, row_loss};
    int64_t nslices = omp_get_max_threads();
    if (nslices > rows) nslices = rows;
    if (nslices < 1) nslices = 1;
    ngq_error *slice_err = calloc((size_t)nslices, sizeof *slice_err);
    ngq_status *slice_st = calloc((size_t)nslices, sizeof *slice_st);
    if (!slice_err || !slice_st) {
        free(slice_err);
        free(slice_st);
        st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    #pragma omp parallel for schedule(static)
    for (int64_t s = 0; s < nslices; s++)
        slice_st[s] = gptq_slice(&job, rows * s / nslices, rows * (s + 1) / nslices, &slice_err[s]);
    for (int64_t s = 0; s < nslices && !st; s++)
        if (slice_st[s]) {
            st = slice_st[s];
            if (err) *err = slice_err[s];
        }
    free(slice_err);
    free(slice_st);
    for (int64_t r = 0; r < rows && !st; r++) st = ngq_qtensor_set_row_codes(out, r, codes + r * cols, err);
    if (st) goto done;
    for (int64_t r = 0; r < rows; r++) rep->loss += row_loss[r];

done:
    if (st) ngq_qtensor_free(out);
    free(hm);
    free(u);
    free(wd);
    free(wp);
    free(codes);
    free(row_loss);
    free(perm);
    free(order);
    free(fbuf);
    rep->seconds = ngq_now_seconds() - t0;
    return st;
}

/* ---- relative output error --------------------------------------------------- */

#define ERROR_ROW_BLOCK 64

ngq_status ngq_gptq_relative_error(const double *hessian, int64_t cols, const float *w, int64_t rows,
                                   const ngq_qtensor *q, double *rel, ngq_error *err)
{
    if (q->rows != rows || q->cols != cols)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "relative error: qtensor is [%lld, %lld], weight is [%lld, %lld]",
                        (long long)q->rows, (long long)q->cols, (long long)rows, (long long)cols);
    const int64_t nblocks = (rows + ERROR_ROW_BLOCK - 1) / ERROR_ROW_BLOCK;
    double *num = calloc((size_t)nblocks, sizeof *num);
    double *den = calloc((size_t)nblocks, sizeof *den);
    int nomem = !num || !den;
    if (!nomem) {
        #pragma omp parallel reduction(max : nomem)
        {
            double *d = malloc((size_t)(ERROR_ROW_BLOCK * cols) * sizeof *d);
            double *wb = malloc((size_t)(ERROR_ROW_BLOCK * cols) * sizeof *wb);
            double *t = malloc((size_t)(ERROR_ROW_BLOCK * cols) * sizeof *t);
            float *qrow = malloc((size_t)cols * sizeof *qrow);
            if (!d || !wb || !t || !qrow) nomem = 1;
            #pragma omp for schedule(static)
            for (int64_t b = 0; b < nblocks; b++) {
                if (!d || !wb || !t || !qrow) continue;
                const int64_t r0 = b * ERROR_ROW_BLOCK;
                const int64_t nr = rows - r0 < ERROR_ROW_BLOCK ? rows - r0 : ERROR_ROW_BLOCK;
                for (int64_t r = 0; r < nr; r++) {
                    ngq_qtensor_dequantize_row(q, r0 + r, qrow);
                    for (int64_t j = 0; j < cols; j++) {
                        wb[r * cols + j] = (double)w[(r0 + r) * cols + j];
                        d[r * cols + j] = wb[r * cols + j] - (double)qrow[j];
                    }
                }
                double sn = 0.0, sd = 0.0;
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)cols, (int)cols, 1.0, d, (int)cols,
                            hessian, (int)cols, 0.0, t, (int)cols);
                for (int64_t i = 0; i < nr * cols; i++) sn += t[i] * d[i];
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)cols, (int)cols, 1.0, wb,
                            (int)cols, hessian, (int)cols, 0.0, t, (int)cols);
                for (int64_t i = 0; i < nr * cols; i++) sd += t[i] * wb[i];
                num[b] = sn;
                den[b] = sd;
            }
            free(d);
            free(wb);
            free(t);
            free(qrow);
        }
    }
    ngq_status st = NGQ_OK;
    if (nomem) {
        st = ngq_fail(err, NGQ_ERR_NOMEM, "relative error: out of memory");
    } else {
        double sn = 0.0, sd = 0.0;
        for (int64_t b = 0; b < nblocks; b++) {
            sn += num[b];
            sd += den[b];
        }
        if (!(sd > 0.0) || !isfinite(sd) || !isfinite(sn))
            st = ngq_fail(err, NGQ_ERR_NUMERIC, "relative error: tr(W H W^T) = %g, tr(D H D^T) = %g", sd, sn);
        else *rel = sn / sd;
    }
    free(num);
    free(den);
    return st;
}
