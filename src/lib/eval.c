/* eval.c: the sliding-window evaluation protocol of eval.h: the window
 * planner, the one-pass scoring of a baseline and its variants (loss, KL,
 * top-1 agreement), the standard errors, the result tables and files.
 * It does not read checkpoints or token files and does not print. */
#include "nanogptq/eval.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nanogptq/quant.h"
#include "nanogptq/quantize.h"

/* ---- planner --------------------------------------------------------------- */

void ngq_eval_plan_free(ngq_eval_plan *plan)
{
    if (!plan) return;
    free(plan->windows);
    memset(plan, 0, sizeof *plan);
}

ngq_status ngq_eval_plan_init(ngq_eval_plan *plan, size_t n_tokens, int block_size, int stride, long long max_windows,
                              ngq_error *err)
{
    memset(plan, 0, sizeof *plan);
    if (n_tokens < 2)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%zu tokens: at least 2 are needed to score one prediction", n_tokens);
    if (block_size < 1) return ngq_fail(err, NGQ_ERR_INTERNAL, "block size %d", block_size);
    if (stride < 0 || stride > block_size)
        return ngq_fail(err, NGQ_ERR_CONFIG, "[eval] stride = %d must be in 0 .. block_size = %d", stride, block_size);
    if (max_windows < 0) return ngq_fail(err, NGQ_ERR_CONFIG, "[eval] max_windows = %lld is negative", max_windows);
    size_t targets = n_tokens - 1;
    int T = targets < (size_t)block_size ? (int)targets : block_size;
    int S = stride == 0 ? T / 2 : stride;
    if (S < 1) S = 1;
    /* With T = N - 1 < block_size one window covers everything and S plays no
     * part; keep it within the window so the numbers printed make sense. */
    if (S > T) S = T;
    size_t regular = (targets - (size_t)T) / (size_t)S + 1;
    size_t last_scored = (regular - 1) * (size_t)S + (size_t)T; /* index of the last scored token */
    int tail = last_scored < targets;
    size_t full = regular + (size_t)tail;
    size_t keep = (max_windows > 0 && (unsigned long long)max_windows < full) ? (size_t)max_windows : full;
    plan->windows = malloc(keep * sizeof *plan->windows);
    if (!plan->windows) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory for %zu evaluation windows", keep);
    size_t scored = 0;
    for (size_t w = 0; w < keep; w++) {
        ngq_eval_window *win = &plan->windows[w];
        if (w < regular) {
            win->start = w * (size_t)S;
            win->score_begin = w == 0 ? 0 : T - S;
        } else {
            win->start = targets - (size_t)T;
            win->score_begin = (int)(last_scored - win->start);
        }
        win->scored_before = scored;
        scored += (size_t)(T - win->score_begin);
    }
    plan->T = T;
    plan->stride = S;
    plan->n_tokens = n_tokens;
    plan->count = keep;
    plan->full_count = full;
    plan->scored = scored;
    return NGQ_OK;
}

/* ---- statistics ------------------------------------------------------------ */

double ngq_eval_cluster_se(const double *values, const double *weights, size_t n, double mean)
{
    if (n < 2) return NAN;
    double sum_w = 0.0, sum_sq = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = weights[i] * (values[i] - mean);
        sum_w += weights[i];
        sum_sq += d * d;
    }
    return sqrt((double)n / (double)(n - 1) * sum_sq) / sum_w;
}

static int compare_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

double ngq_eval_percentile(float *values, size_t n, double p)
{
    if (n == 0) return NAN;
    qsort(values, n, sizeof *values, compare_float);
    size_t rank = (size_t)ceil(p / 100.0 * (double)n); /* nearest rank, 1-based */
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return values[rank - 1];
}

void ngq_eval_granularity_name(const char *grid, char *buf, size_t size)
{
    ngq_qgrid g;
    if (!grid || !grid[0] || ngq_qgrid_parse(grid, &g, NULL) != NGQ_OK) {
        snprintf(buf, size, "%s", "");
        return;
    }
    switch (g.granularity) {
    case NGQ_GRAN_TENSOR: snprintf(buf, size, "tensor"); break;
    case NGQ_GRAN_CHANNEL: snprintf(buf, size, "channel"); break;
    case NGQ_GRAN_GROUP: snprintf(buf, size, "g%lld", (long long)g.group_size); break;
    }
}

/* ---- scoring ----------------------------------------------------------------- */

void ngq_eval_result_free(ngq_eval_result *r)
{
    if (!r) return;
    if (r->models)
        for (int i = 0; i < r->n_models; i++) free(r->models[i].window_loss);
    free(r->models);
    memset(r, 0, sizeof *r);
}

ngq_status ngq_eval_check_models(const ngq_infer *const *models, const char *const *names, int n_models,
                                 ngq_error *err)
{
    if (n_models < 1) return ngq_fail(err, NGQ_ERR_USAGE, "no checkpoint to evaluate");
    const ngq_vocab *base = ngq_infer_vocab(models[0]);
    for (int i = 1; i < n_models; i++) {
        const ngq_vocab *v = ngq_infer_vocab(models[i]);
        if (v->size != base->size || v->hash != base->hash)
            return ngq_fail(err, NGQ_ERR_FORMAT,
                            "%s has another vocabulary than the baseline %s (%d ids, hash %016llx vs %d ids, hash "
                            "%016llx): they cannot be compared on the same tokens",
                            names[i], names[0], v->size, (unsigned long long)v->hash, base->size,
                            (unsigned long long)base->hash);
    }
    return NGQ_OK;
}

/* log-softmax of one row of logits into out (double), returns the argmax. */
static int log_softmax_row(const float *logits, int V, double *out)
{
    int arg = 0;
    float mx = logits[0];
    for (int v = 1; v < V; v++)
        if (logits[v] > mx) {
            mx = logits[v];
            arg = v;
        }
    double sum = 0.0;
    for (int v = 0; v < V; v++) sum += exp((double)logits[v] - (double)mx);
    double lse = (double)mx + log(sum);
    for (int v = 0; v < V; v++) out[v] = (double)logits[v] - lse;
    return arg;
}

typedef struct {
    int n_models, V, T, B;
    ngq_infer_workspace **ws;
    uint16_t *inputs;      /* (B,T) */
    double *base_logp;     /* (B,T,V) */
    int *base_arg;         /* (B,T) */
    double *row_logp;      /* (B*T, V): variant scratch, one row per position */
    double *pos_loss;      /* (B,T) */
    double *pos_kl;        /* (B,T) */
    int *pos_agree;        /* (B,T) */
    float **kl;            /* per variant: [plan->scored] */
} eval_state;

static void state_free(eval_state *s)
{
    if (s->ws)
        for (int i = 0; i < s->n_models; i++) ngq_infer_workspace_free(s->ws[i]);
    free(s->ws);
    free(s->inputs);
    free(s->base_logp);
    free(s->base_arg);
    free(s->row_logp);
    free(s->pos_loss);
    free(s->pos_kl);
    free(s->pos_agree);
    if (s->kl)
        for (int i = 0; i < s->n_models; i++) free(s->kl[i]);
    free(s->kl);
}

/* Scores model i on the batch whose logits are given: fills the per-position
 * loss (and, for variants, KL and agreement) of every scored position. */
static void score_batch(eval_state *s, int is_baseline, const float *logits, const uint16_t *tokens,
                        const ngq_eval_window *wins, int nb)
{
    const int T = s->T, V = s->V;
    const long rows = (long)nb * T;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        int b = (int)(r / T), p = (int)(r % T);
        if (p < wins[b].score_begin) continue;
        int target = tokens[wins[b].start + (size_t)p + 1];
        const float *l = logits + (size_t)r * (size_t)V;
        double *base = s->base_logp + (size_t)r * (size_t)V;
        if (is_baseline) {
            s->base_arg[r] = log_softmax_row(l, V, base);
            s->pos_loss[r] = -base[target];
            continue;
        }
        double *lp = s->row_logp + (size_t)r * (size_t)V;
        int arg = log_softmax_row(l, V, lp);
        double kl = 0.0;
        for (int v = 0; v < V; v++) kl += exp(base[v]) * (base[v] - lp[v]);
        s->pos_loss[r] = -lp[target];
        s->pos_kl[r] = kl > 0.0 ? kl : 0.0; /* rounding can leave -1e-17 where KL is 0 */
        s->pos_agree[r] = arg == s->base_arg[r];
    }
}

ngq_status ngq_eval_run(const ngq_infer *const *models, int n_models, const uint16_t *tokens, size_t n_tokens,
                        const ngq_eval_plan *plan, int batch_size, ngq_eval_callback callback, void *user,
                        ngq_eval_result *result, ngq_error *err)
{
    memset(result, 0, sizeof *result);
    if (n_models < 1) return ngq_fail(err, NGQ_ERR_USAGE, "no checkpoint to evaluate");
    if (batch_size < 1) return ngq_fail(err, NGQ_ERR_CONFIG, "[eval] batch_size = %d must be at least 1", batch_size);
    if (plan->n_tokens != n_tokens || plan->count == 0)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "the window plan is for %zu tokens with %zu windows, not %zu tokens",
                        plan->n_tokens, plan->count, n_tokens);
    const ngq_vocab *vocab = ngq_infer_vocab(models[0]);
    const int V = ngq_infer_config(models[0])->vocab_size, T = plan->T;
    for (int i = 0; i < n_models; i++) {
        const ngq_model_config *c = ngq_infer_config(models[i]);
        if (c->vocab_size != V)
            return ngq_fail(err, NGQ_ERR_FORMAT, "model %d has %d vocabulary entries, the baseline %d", i,
                            c->vocab_size, V);
        if (c->block_size < T)
            return ngq_fail(err, NGQ_ERR_FORMAT, "model %d has block_size %d, shorter than the windows (%d)", i,
                            c->block_size, T);
    }
    for (size_t i = 0; i < n_tokens; i++)
        if (tokens[i] >= V)
            return ngq_fail(err, NGQ_ERR_FORMAT, "token %u at offset %zu is outside the vocabulary (%d ids)",
                            tokens[i], i, V);

    const int B = (size_t)batch_size < plan->count ? batch_size : (int)plan->count;
    /* refuse up front what cannot fit: a workspace per model, per-position KL values, two logit batches */
    double need = 2.0 * (double)B * T * V * sizeof(float) + (double)(n_models - 1) * plan->scored * sizeof(float);
    for (int i = 0; i < n_models; i++) {
        const ngq_model_config *c = ngq_infer_config(models[i]);
        need += ((double)B * T * (12.0 * c->n_embd + V) + (double)B * c->n_head * T * T) * sizeof(float);
    }
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && page_size > 0 && need > (double)pages * (double)page_size)
        return ngq_fail(err, NGQ_ERR_NOMEM,
                        "evaluating %d checkpoints in batches of %d windows of %d tokens needs %.2f GiB, more than the "
                        "%.2f GiB of memory here: lower [eval] batch_size",
                        n_models, B, T, need / (1 << 30), (double)pages * (double)page_size / (1 << 30));
    eval_state s = {.n_models = n_models, .V = V, .T = T, .B = B};
    ngq_status st = NGQ_OK;
    double *kl_sum = calloc((size_t)n_models, sizeof *kl_sum); /* per model, over every scored position */
    size_t *agree = calloc((size_t)n_models, sizeof *agree);
    const size_t BT = (size_t)B * (size_t)T;
    s.ws = calloc((size_t)n_models, sizeof *s.ws);
    s.kl = calloc((size_t)n_models, sizeof *s.kl);
    s.inputs = malloc(BT * sizeof *s.inputs);
    s.base_logp = malloc(BT * (size_t)V * sizeof *s.base_logp);
    s.base_arg = calloc(BT, sizeof *s.base_arg);
    s.row_logp = malloc(BT * (size_t)V * sizeof *s.row_logp);
    s.pos_loss = calloc(BT, sizeof *s.pos_loss);
    s.pos_kl = calloc(BT, sizeof *s.pos_kl);
    s.pos_agree = calloc(BT, sizeof *s.pos_agree);
    result->models = calloc((size_t)n_models, sizeof *result->models);
    if (!s.ws || !s.kl || !s.inputs || !s.base_logp || !s.base_arg || !s.row_logp || !s.pos_loss || !s.pos_kl ||
        !s.pos_agree || !result->models || !kl_sum || !agree) {
        st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory for evaluation buffers (%d windows of %d tokens)", B, T);
        goto done;
    }
    result->n_models = n_models;
    for (int i = 0; i < n_models; i++) {
        ngq_eval_model_result *mr = &result->models[i];
        mr->info = *ngq_infer_get_info(models[i]);
        snprintf(mr->label, sizeof mr->label, "%s", mr->info.label);
        for (int k = 1, j = 0; j < i; j++) /* unique labels: the tables are keyed by them */
            if (strcmp(result->models[j].label, mr->label) == 0) {
                snprintf(mr->label, sizeof mr->label, "%.40s#%d", mr->info.label, ++k);
                j = -1;
            }
        ngq_eval_granularity_name(mr->info.grid, mr->granularity, sizeof mr->granularity);
        mr->window_loss = calloc(plan->count, sizeof *mr->window_loss);
        if (!mr->window_loss) {
            st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
            break;
        }
        if (i > 0 && !(s.kl[i] = malloc(plan->scored * sizeof *s.kl[i]))) {
            st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory for %zu KL values", plan->scored);
            break;
        }
        if ((st = ngq_infer_workspace_init(&s.ws[i], models[i], B, T, err))) {
            ngq_error_prefix(err, "model %d (%s)", i, mr->label);
            break;
        }
    }

    const double t0 = ngq_now_seconds();
    for (size_t w0 = 0; st == NGQ_OK && w0 < plan->count; w0 += (size_t)B) {
        const ngq_eval_window *wins = plan->windows + w0;
        int nb = plan->count - w0 < (size_t)B ? (int)(plan->count - w0) : B;
        for (int b = 0; b < nb; b++) {
            memcpy(s.inputs + (size_t)b * (size_t)T, tokens + wins[b].start, (size_t)T * sizeof *s.inputs);
            for (int p = wins[b].score_begin; p < T; p++)
                if (tokens[wins[b].start + (size_t)p + 1] == vocab->unknown_id) result->unknown_targets++;
        }
        for (int i = 0; i < n_models; i++) {
            const float *logits;
            if ((st = ngq_infer_forward(models[i], s.ws[i], s.inputs, nb, T, &logits, err))) {
                ngq_error_prefix(err, "model %d (%s), windows %zu..%zu", i, result->models[i].label, w0,
                                 w0 + (size_t)nb - 1);
                break;
            }
            score_batch(&s, i == 0, logits, tokens, wins, nb);
            /* reduce in window and position order: the same sums for any thread count */
            for (int b = 0; b < nb; b++) {
                double loss = 0.0, kl = 0.0;
                size_t k = wins[b].scored_before;
                for (int p = wins[b].score_begin; p < T; p++, k++) {
                    size_t r = (size_t)b * (size_t)T + (size_t)p;
                    loss += s.pos_loss[r];
                    if (i > 0) {
                        kl += s.pos_kl[r];
                        s.kl[i][k] = (float)s.pos_kl[r];
                        agree[i] += (size_t)s.pos_agree[r];
                    }
                }
                result->models[i].window_loss[w0 + (size_t)b] = loss / (double)(T - wins[b].score_begin);
                kl_sum[i] += kl;
            }
        }
        if (st == NGQ_OK && callback) {
            ngq_eval_progress pr = {.windows_done = w0 + (size_t)nb, .windows_total = plan->count,
                                    .n_models = n_models};
            pr.tokens_done = pr.windows_done < plan->count ? plan->windows[pr.windows_done].scored_before
                                                           : plan->scored;
            pr.elapsed_seconds = ngq_now_seconds() - t0;
            pr.eta_seconds = pr.elapsed_seconds / (double)pr.windows_done *
                             (double)(plan->count - pr.windows_done);
            callback(&pr, user);
        }
    }

    if (st == NGQ_OK) {
        size_t n = plan->count;
        double *weights = malloc(n * sizeof *weights), *diff = malloc(n * sizeof *diff);
        if (!weights || !diff) st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
        for (size_t w = 0; st == NGQ_OK && w < n; w++) weights[w] = (double)(T - plan->windows[w].score_begin);
        const ngq_eval_model_result *base = &result->models[0];
        for (int i = 0; st == NGQ_OK && i < n_models; i++) {
            ngq_eval_model_result *mr = &result->models[i];
            double total = 0.0;
            for (size_t w = 0; w < n; w++) total += mr->window_loss[w] * weights[w];
            mr->scored = plan->scored;
            mr->mean_loss = total / (double)plan->scored;
            mr->loss_se = ngq_eval_cluster_se(mr->window_loss, weights, n, mr->mean_loss);
            mr->perplexity = exp(mr->mean_loss);
            mr->bits_per_char = mr->mean_loss / log(2.0);
            mr->delta_loss = mr->mean_loss - base->mean_loss;
            mr->delta_ppl_pct = 100.0 * expm1(mr->delta_loss);
            if (i == 0) {
                mr->delta_loss_se = NAN;
                mr->kl_mean = 0.0;
                mr->kl_p95 = 0.0;
                mr->top1_agreement_pct = 100.0;
                continue;
            }
            for (size_t w = 0; w < n; w++) diff[w] = mr->window_loss[w] - base->window_loss[w];
            mr->delta_loss_se = ngq_eval_cluster_se(diff, weights, n, mr->delta_loss);
            mr->kl_mean = kl_sum[i] / (double)plan->scored;
            mr->kl_p95 = ngq_eval_percentile(s.kl[i], plan->scored, 95.0);
            mr->top1_agreement_pct = 100.0 * (double)agree[i] / (double)plan->scored;
        }
        free(weights);
        free(diff);
        result->windows = plan->count;
        result->scored = plan->scored;
        result->T = T;
        result->stride = plan->stride;
        result->batch_size = B;
        result->seconds = ngq_now_seconds() - t0;
    }
done:
    free(kl_sum);
    free(agree);
    state_free(&s);
    if (st) ngq_eval_result_free(result);
    return st;
}

/* ---- tables ----------------------------------------------------------------- */

static void fmt_num(char *buf, size_t size, const char *fmt, double v)
{
    if (isnan(v)) snprintf(buf, size, "%s", "");
    else snprintf(buf, size, fmt, v);
}

ngq_status ngq_eval_table_csv(const ngq_eval_result *r, const char *const *paths, ngq_table *out, ngq_error *err)
{
    static const char *const COLS[] = {"label", "method", "bits", "granularity", "file_bytes", "bits_per_weight",
                                       "model_bits_per_weight", "scored_tokens", "mean_loss", "loss_se",
                                       "perplexity", "bits_per_char", "delta_loss", "delta_loss_se",
                                       "delta_ppl_pct", "kl_mean", "kl_p95", "top1_agreement_pct", "checkpoint"};
    const int n_cols = (int)(sizeof COLS / sizeof COLS[0]);
    ngq_status st = ngq_table_init(out, COLS, n_cols, err);
    if (st) return st;
    for (int c = 2; c < n_cols - 1; c++) ngq_table_align_right(out, c, 1);
    for (int i = 0; i < r->n_models && st == NGQ_OK; i++) {
        const ngq_eval_model_result *m = &r->models[i];
        const double nums[] = {m->info.bits_per_weight, m->info.model_bits_per_weight, (double)m->scored,
                               m->mean_loss, m->loss_se, m->perplexity, m->bits_per_char, m->delta_loss,
                               m->delta_loss_se, m->delta_ppl_pct, m->kl_mean, m->kl_p95, m->top1_agreement_pct};
        size_t row;
        if ((st = ngq_table_add_row(out, &row, err))) break;
        char buf[64];
        st = ngq_table_set(out, row, 0, m->label, err);
        if (!st) st = ngq_table_set(out, row, 1, m->info.method, err);
        if (!st) st = ngq_table_setf(out, row, 2, err, "%d", m->info.bits);
        if (!st) st = ngq_table_set(out, row, 3, m->granularity, err);
        if (!st) st = ngq_table_setf(out, row, 4, err, "%lld", (long long)m->info.file_bytes);
        for (int k = 0; !st && k < (int)(sizeof nums / sizeof nums[0]); k++) {
            fmt_num(buf, sizeof buf, k == 2 ? "%.0f" : "%.10g", nums[k]);
            st = ngq_table_set(out, row, 5 + k, buf, err);
        }
        if (!st) st = ngq_table_set(out, row, n_cols - 1, paths ? paths[i] : "", err);
    }
    if (st) ngq_table_free(out);
    return st;
}

ngq_status ngq_eval_table_markdown(const ngq_eval_result *r, ngq_table *out, ngq_error *err)
{
    static const char *const COLS[] = {"model", "size (KiB)", "bits/weight", "loss (nats/char)", "± SE",
                                       "perplexity", "bits/char", "Δ ppl %", "± SE (Δ loss)", "KL mean",
                                       "KL p95", "top-1 agree %"};
    const int n_cols = (int)(sizeof COLS / sizeof COLS[0]);
    ngq_status st = ngq_table_init(out, COLS, n_cols, err);
    if (st) return st;
    for (int c = 1; c < n_cols; c++) ngq_table_align_right(out, c, 1);
    for (int i = 0; i < r->n_models && st == NGQ_OK; i++) {
        const ngq_eval_model_result *m = &r->models[i];
        size_t row;
        if ((st = ngq_table_add_row(out, &row, err))) break;
        char cells[12][64];
        snprintf(cells[0], 64, "%s", m->label);
        snprintf(cells[1], 64, "%.1f", (double)m->info.file_bytes / 1024.0);
        snprintf(cells[2], 64, "%.3f", m->info.bits_per_weight);
        snprintf(cells[3], 64, "%.4f", m->mean_loss);
        fmt_num(cells[4], 64, "%.4f", m->loss_se);
        snprintf(cells[5], 64, "%.4f", m->perplexity);
        snprintf(cells[6], 64, "%.4f", m->bits_per_char);
        snprintf(cells[7], 64, "%+.3f", m->delta_ppl_pct);
        if (i == 0) snprintf(cells[8], 64, "%s", "(baseline)");
        else fmt_num(cells[8], 64, "%.2e", m->delta_loss_se);
        snprintf(cells[9], 64, "%.3e", m->kl_mean);
        snprintf(cells[10], 64, "%.3e", m->kl_p95);
        snprintf(cells[11], 64, "%.2f", m->top1_agreement_pct);
        for (int c = 0; c < n_cols && st == NGQ_OK; c++) st = ngq_table_set(out, row, c, cells[c], err);
    }
    if (st) ngq_table_free(out);
    return st;
}

ngq_status ngq_eval_table_windows(const ngq_eval_result *r, const ngq_eval_plan *plan, ngq_table *out,
                                  ngq_error *err)
{
    if (r->windows != plan->count)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "the result has %zu windows, the plan %zu", r->windows, plan->count);
    int n_cols = 3 + r->n_models;
    const char **cols = malloc((size_t)n_cols * sizeof *cols);
    if (!cols) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    cols[0] = "window";
    cols[1] = "start";
    cols[2] = "scored";
    for (int i = 0; i < r->n_models; i++) cols[3 + i] = r->models[i].label;
    ngq_status st = ngq_table_init(out, cols, n_cols, err);
    free(cols);
    if (st) return st;
    for (size_t w = 0; w < plan->count && st == NGQ_OK; w++) {
        size_t row;
        if ((st = ngq_table_add_row(out, &row, err))) break;
        st = ngq_table_setf(out, row, 0, err, "%zu", w);
        if (!st) st = ngq_table_setf(out, row, 1, err, "%zu", plan->windows[w].start);
        if (!st) st = ngq_table_setf(out, row, 2, err, "%d", plan->T - plan->windows[w].score_begin);
        for (int i = 0; i < r->n_models && st == NGQ_OK; i++)
            st = ngq_table_setf(out, row, 3 + i, err, "%.10g", r->models[i].window_loss[w]);
    }
    if (st) ngq_table_free(out);
    return st;
}

/* ---- files ------------------------------------------------------------------ */

static cJSON *json_number_or_null(double v)
{
    return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

static ngq_status save_meta(const ngq_eval_result *r, const ngq_eval_plan *plan, const ngq_eval_source *src,
                            const char *path, ngq_error *err)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    cJSON_AddStringToObject(root, "format", "nanogptq-eval");
    cJSON_AddNumberToObject(root, "format_version", 1);
    cJSON_AddStringToObject(root, "source", src->source ? src->source : "");
    if (src->split) cJSON_AddStringToObject(root, "split", src->split);
    else cJSON_AddNullToObject(root, "split");
    cJSON_AddStringToObject(root, "path", src->path ? src->path : "");
    cJSON_AddStringToObject(root, "config", src->config_path ? src->config_path : "");
    cJSON_AddNumberToObject(root, "tokens", (double)plan->n_tokens);
    cJSON_AddNumberToObject(root, "scored_tokens", (double)r->scored);
    cJSON_AddNumberToObject(root, "unknown_targets", (double)r->unknown_targets);
    cJSON_AddNumberToObject(root, "windows", (double)r->windows);
    cJSON_AddNumberToObject(root, "windows_total", (double)plan->full_count);
    cJSON_AddNumberToObject(root, "max_windows", (double)src->max_windows);
    cJSON_AddNumberToObject(root, "window_tokens", plan->T);
    cJSON_AddNumberToObject(root, "stride", plan->stride);
    cJSON_AddNumberToObject(root, "batch_size", r->batch_size);
    cJSON_AddNumberToObject(root, "seconds", r->seconds);
    cJSON_AddStringToObject(root, "protocol",
                            "sliding windows of window_tokens tokens every stride tokens; the first window scores all "
                            "its positions, later ones their last stride positions; a last window aligned to the end "
                            "scores the remaining targets; every target after the first token is scored once");
    cJSON_AddStringToObject(root, "standard_error",
                            "windows as sampling units: sqrt(n/(n-1) * sum c_w^2 (m_w - m)^2) / sum c_w over the "
                            "per-window mean losses m_w with c_w scored targets; paired on per-window differences "
                            "for delta_loss_se");
    cJSON_AddStringToObject(root, "kl", "KL(baseline || model) of the next-character distributions in nats, mean "
                                        "over scored positions and nearest-rank 95th percentile");
    cJSON *models = cJSON_AddArrayToObject(root, "models");
    for (int i = 0; models && i < r->n_models; i++) {
        const ngq_eval_model_result *m = &r->models[i];
        cJSON *o = cJSON_CreateObject();
        if (!o) break;
        cJSON_AddStringToObject(o, "label", m->label);
        cJSON_AddStringToObject(o, "checkpoint", src->checkpoints ? src->checkpoints[i] : "");
        cJSON_AddStringToObject(o, "method", m->info.method);
        cJSON_AddNumberToObject(o, "bits", m->info.bits);
        cJSON_AddStringToObject(o, "grid", m->info.grid);
        cJSON_AddItemToObject(o, "mean_loss", json_number_or_null(m->mean_loss));
        cJSON_AddItemToObject(o, "loss_se", json_number_or_null(m->loss_se));
        cJSON_AddItemToArray(models, o);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory formatting %s", path);
    ngq_atomic_file af;
    ngq_status st = ngq_atomic_open(&af, path, err);
    if (st == NGQ_OK) {
        st = ngq_atomic_write(&af, text, strlen(text), err);
        if (st == NGQ_OK) st = ngq_atomic_write(&af, "\n", 1, err);
        if (st) ngq_atomic_abort(&af);
        else st = ngq_atomic_commit(&af, err);
    }
    free(text);
    return st;
}

ngq_status ngq_eval_save(const ngq_eval_result *r, const ngq_eval_plan *plan, const ngq_eval_source *src,
                         const char *prefix, ngq_error *err)
{
    ngq_table csv, md, windows;
    ngq_status st = ngq_eval_table_csv(r, src->checkpoints, &csv, err);
    if (st) return st;
    if ((st = ngq_eval_table_markdown(r, &md, err))) {
        ngq_table_free(&csv);
        return st;
    }
    if ((st = ngq_eval_table_windows(r, plan, &windows, err))) {
        ngq_table_free(&csv);
        ngq_table_free(&md);
        return st;
    }
    char *p_csv = ngq_strdup_printf("%s.csv", prefix), *p_md = ngq_strdup_printf("%s.md", prefix);
    char *p_win = ngq_strdup_printf("%s_windows.csv", prefix), *p_meta = ngq_strdup_printf("%s_meta.json", prefix);
    if (!p_csv || !p_md || !p_win || !p_meta) st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    if (!st) st = ngq_table_save_csv(&csv, p_csv, err);
    if (!st) st = ngq_table_save_markdown(&md, p_md, err);
    if (!st) st = ngq_table_save_csv(&windows, p_win, err);
    if (!st) st = save_meta(r, plan, src, p_meta, err);
    free(p_csv);
    free(p_md);
    free(p_win);
    free(p_meta);
    ngq_table_free(&csv);
    ngq_table_free(&md);
    ngq_table_free(&windows);
    return st;
}

/* ---- the study's checkpoints --------------------------------------------------- */

void ngq_eval_study_free(ngq_eval_study *study)
{
    if (!study) return;
    for (int i = 0; study->entries && i < study->count; i++) {
        free(study->entries[i].path);
        free(study->entries[i].layers_csv);
    }
    free(study->entries);
    memset(study, 0, sizeof *study);
}

ngq_status ngq_eval_study_init(ngq_eval_study *study, const ngq_config *cfg, ngq_error *err)
{
    memset(study, 0, sizeof *study);
    char **items = NULL;
    int n = 0;
    ngq_status st = ngq_config_split_list(cfg->quantize.variants, &items, &n, err);
    if (st) return ngq_error_prefix(err, "[quantize] variants");
    ngq_quantize_options base;
    if ((st = ngq_quantize_options_from_config(cfg, &base, err))) goto done;
    study->entries = calloc((size_t)n + 1, sizeof *study->entries);
    if (!study->entries) {
        st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    study->count = n + 1;
    ngq_eval_study_entry *e = &study->entries[0];
    snprintf(e->label, sizeof e->label, "baseline");
    e->path = cfg->quantize.checkpoint[0] ? ngq_strdup_printf("%s", cfg->quantize.checkpoint)
                                          : ngq_config_checkpoint_path(cfg, "best.safetensors");
    if (!e->path) st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    for (int i = 0; st == NGQ_OK && i < n; i++) {
        e = &study->entries[i + 1];
        ngq_quantize_options o = base;
        if ((st = ngq_quantize_apply_variant(&o, items[i], err))) {
            ngq_error_prefix(err, "[quantize] variants");
            break;
        }
        snprintf(e->variant, sizeof e->variant, "%s", items[i]);
        ngq_quantize_options_label(&o, e->label, sizeof e->label);
        for (int j = 1; j <= i; j++)
            if (strcmp(study->entries[j].label, e->label) == 0) {
                st = ngq_fail(err, NGQ_ERR_CONFIG, "[quantize] variants: '%s' and '%s' are the same variant (%s)",
                              study->entries[j].variant, items[i], e->label);
                break;
            }
        if (st) break;
        char name[128];
        snprintf(name, sizeof name, "%s.safetensors", e->label);
        e->path = ngq_config_checkpoint_path(cfg, name);
        snprintf(name, sizeof name, "layers-%s.csv", e->label);
        e->layers_csv = ngq_config_results_path(cfg, name);
        if (!e->path || !e->layers_csv) st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    }
done:
    ngq_config_list_free(items, n);
    if (st) ngq_eval_study_free(study);
    return st;
}
