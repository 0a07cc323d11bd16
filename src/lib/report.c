/* report.c: REPORT.md from the study's files (see report.h for the inputs
 * and the rules behind every observation). It reads files and writes the
 * report atomically; it computes no model output and does not print. */
#include "nanogptq/report.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nanogptq/checkpoint.h"
#include "nanogptq/eval.h"
#include "nanogptq/model.h"
#include "nanogptq/safetensors.h"
#include "nanogptq/table.h"
#include "nanogptq/tokens.h"
#include "nanogptq/vocab.h"

/* ---- paths -------------------------------------------------------------------------- */

/* Absolute, normalised path components ("." and ".." resolved textually). */
static int split_abs(const char *path, char ***parts_out)
{
    char *full;
    if (path[0] == '/') {
        full = ngq_strdup_printf("%s", path);
    } else {
        char cwd[4096];
        if (!getcwd(cwd, sizeof cwd)) snprintf(cwd, sizeof cwd, ".");
        full = ngq_strdup_printf("%s/%s", cwd, path);
    }
    if (!full) return -1;
    size_t cap = strlen(full) / 2 + 2;
    char **parts = calloc(cap, sizeof *parts);
    int n = 0;
    if (!parts) {
        free(full);
        return -1;
    }
    for (char *save = NULL, *tok = strtok_r(full, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
        if (strcmp(tok, ".") == 0) continue;
        if (strcmp(tok, "..") == 0) {
            if (n > 0) free(parts[--n]);
            continue;
        }
        parts[n++] = ngq_strdup_printf("%s", tok);
    }
    free(full);
    *parts_out = parts;
    return n;
}

static void free_parts(char **parts, int n)
{
    for (int i = 0; i < n; i++) free(parts[i]);
    free(parts);
}

char *ngq_report_relative_path(const char *from_dir, const char *path)
{
    char **a = NULL, **b = NULL;
    int na = split_abs(from_dir, &a), nb = split_abs(path, &b);
    if (na < 0 || nb < 0) {
        if (na >= 0) free_parts(a, na);
        if (nb >= 0) free_parts(b, nb);
        return NULL;
    }
    int common = 0;
    while (common < na && common < nb && strcmp(a[common], b[common]) == 0) common++;
    size_t len = 1;
    for (int i = common; i < na; i++) len += 3;
    for (int i = common; i < nb; i++) len += strlen(b[i]) + 1;
    char *out = malloc(len + 2);
    if (out) {
        out[0] = '\0';
        for (int i = common; i < na; i++) strcat(out, "../");
        for (int i = common; i < nb; i++) {
            strcat(out, b[i]);
            if (i + 1 < nb) strcat(out, "/");
        }
        if (!out[0]) strcpy(out, ".");
    }
    free_parts(a, na);
    free_parts(b, nb);
    return out;
}

/* ---- small readers ---------------------------------------------------------------------- */

static double cell(const ngq_table *t, size_t row, const char *col)
{
    double v;
    int c = ngq_table_column(t, col);
    return c >= 0 && ngq_table_get_double(t, row, c, &v) ? v : NAN;
}

static const char *text_cell(const ngq_table *t, size_t row, const char *col)
{
    int c = ngq_table_column(t, col);
    const char *s = c >= 0 ? ngq_table_get(t, row, c) : NULL;
    return s ? s : "";
}

static int load_table(const char *path, ngq_table *t)
{
    if (!path || !ngq_file_exists(path)) return 0;
    ngq_error err = {0};
    return ngq_table_load_csv(t, path, &err) == NGQ_OK;
}

static long long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* Lines "key : value" of /proc files. */
static int proc_value(const char *path, const char *key, char *buf, size_t size)
{
    FILE *fp = fopen(path, "r");
    if (!fp) return 0;
    char line[512];
    int found = 0;
    size_t klen = strlen(key);
    while (!found && fgets(line, sizeof line, fp)) {
        if (strncmp(line, key, klen) != 0) continue;
        char *colon = strchr(line, ':');
        if (!colon) continue;
        colon++;
        while (*colon == ' ' || *colon == '\t') colon++;
        colon[strcspn(colon, "\n")] = '\0';
        snprintf(buf, size, "%s", colon);
        found = 1;
    }
    fclose(fp);
    return found;
}

/* A Markdown-safe inline code span for paths and names. */
static void md_code(FILE *fp, const char *s)
{
    fputc('`', fp);
    for (const char *c = s; *c; c++) fputc(*c == '`' ? '\'' : *c, fp);
    fputc('`', fp);
}

static void fmt_thousands(long long v, char *buf, size_t size)
{
    char raw[32];
    snprintf(raw, sizeof raw, "%lld", v < 0 ? -v : v);
    size_t n = strlen(raw), o = 0;
    if (v < 0 && o + 1 < size) buf[o++] = '-';
    for (size_t i = 0; i < n && o + 2 < size; i++) {
        if (i && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = raw[i];
    }
    buf[o] = '\0';
}

/* A signed loss difference, readable at any size. */
static void fmt_delta(double d, char *buf, size_t size)
{
    if (isnan(d)) snprintf(buf, size, "n/a");
    else if (d != 0 && fabs(d) < 1e-3) snprintf(buf, size, "%+.1e", d);
    else snprintf(buf, size, "%+.5f", d);
}

/* A standard error, readable at any size. */
static void fmt_se(double se, char *buf, size_t size)
{
    if (isnan(se)) snprintf(buf, size, "n/a");
    else if (se != 0 && fabs(se) < 1e-3) snprintf(buf, size, "%.1e", se);
    else snprintf(buf, size, "%.4f", se);
}

/* ---- data ----------------------------------------------------------------------------------- */

typedef struct {
    int have;
    size_t tokens;
    size_t stories;
} split_info;

/* Stories in a token sequence: lines equal to the delimiter, plus trailing
 * text after the last one. */
static size_t count_stories(const uint16_t *t, size_t n, const uint16_t *delim, size_t nd, uint16_t newline)
{
    size_t stories = 0, last_end = 0;
    for (size_t i = 0; i + nd <= n; i++) {
        if ((i > 0 && t[i - 1] != newline) || memcmp(t + i, delim, nd * sizeof *t) != 0) continue;
        if (i + nd < n && t[i + nd] != newline) continue;
        stories++;
        last_end = i + nd + (i + nd < n);
        i += nd - 1;
    }
    if (last_end < n) stories++;
    return stories;
}

static void read_splits(const ngq_config *cfg, split_info info[3], int *vocab_size)
{
    static const char *names[3] = {"train.tok", "val.tok", "test.tok"};
    ngq_vocab vocab = {0};
    ngq_error err = {0};
    char *vpath = ngq_config_data_path(cfg, "vocab.txt");
    int have_vocab = vpath && ngq_vocab_read(&vocab, vpath, &err) == NGQ_OK;
    free(vpath);
    *vocab_size = have_vocab ? vocab.size : 0;
    uint16_t delim[256];
    size_t nd = 0;
    uint16_t newline = 0;
    int can_count = 0;
    if (have_vocab) {
        size_t len = strlen(cfg->data.delimiter), unknown = 0;
        int nl = ngq_vocab_id(&vocab, '\n');
        if (len > 0 && len < 256 && nl != vocab.unknown_id &&
            ngq_vocab_encode(&vocab, cfg->data.delimiter, len, delim, &nd, &unknown, "delimiter", &err) == NGQ_OK &&
            unknown == 0 && nd > 0) {
            newline = (uint16_t)nl;
            can_count = 1;
        }
    }
    for (int s = 0; s < 3; s++) {
        memset(&info[s], 0, sizeof info[s]);
        char *path = ngq_config_data_path(cfg, names[s]);
        ngq_tokens t;
        if (path && ngq_tokens_read(&t, path, &err) == NGQ_OK) {
            info[s].have = 1;
            info[s].tokens = t.count;
            info[s].stories = can_count ? count_stories(t.tokens, t.count, delim, nd, newline) : 0;
            ngq_tokens_free(&t);
        }
        free(path);
    }
    if (have_vocab) ngq_vocab_free(&vocab);
}

static int read_checkpoint_meta(const char *path, ngq_checkpoint_meta *meta)
{
    ngq_st_file *f = NULL;
    ngq_error err = {0};
    ngq_vocab vocab = {0};
    int ok = ngq_st_open(&f, path, &err) == NGQ_OK &&
             ngq_checkpoint_read_metadata(f, path, meta, &vocab, &err) == NGQ_OK;
    if (ok) ngq_vocab_free(&vocab);
    ngq_st_close(f);
    return ok;
}

/* ---- sections ----------------------------------------------------------------------------------- */

static void section_setup(FILE *fp, const ngq_config *cfg)
{
    fprintf(fp, "## Setup\n\n");
    /* data */
    fprintf(fp, "**Data.** Inputs ([data] inputs): ");
    char **items = NULL;
    int n = 0;
    ngq_error err = {0};
    if (ngq_config_split_list(cfg->data.inputs, &items, &n, &err) == NGQ_OK) {
        for (int i = 0; i < n; i++) {
            char size[32];
            long long bytes = file_size(items[i]);
            fmt_thousands(bytes, size, sizeof size);
            fprintf(fp, "%s", i ? ", " : "");
            md_code(fp, items[i]);
            if (bytes >= 0) fprintf(fp, " (%s bytes)", size);
            else fprintf(fp, " (not found now)");
        }
        ngq_config_list_free(items, n);
    }
    fprintf(fp, ". Stories end at a line `%s`; they are split %s, %.4g of the stories to validation and %.4g to "
                "test ([data] split, val_fraction, test_fraction).\n\n",
            cfg->data.delimiter, cfg->data.split, cfg->data.val_fraction, cfg->data.test_fraction);
    split_info sp[3];
    int vocab_size = 0;
    read_splits(cfg, sp, &vocab_size);
    if (sp[0].have || sp[1].have || sp[2].have) {
        fprintf(fp, "| split | stories | characters (= tokens) |\n| --- | ---: | ---: |\n");
        static const char *names[3] = {"train", "val", "test"};
        for (int s = 0; s < 3; s++) {
            char a[32], b[32];
            fmt_thousands((long long)sp[s].stories, a, sizeof a);
            fmt_thousands((long long)sp[s].tokens, b, sizeof b);
            if (sp[s].have) fprintf(fp, "| %s | %s | %s |\n", names[s], sp[s].stories ? a : "?", b);
            else fprintf(fp, "| %s | (no token file) | |\n", names[s]);
        }
        fprintf(fp, "\n");
    } else {
        fprintf(fp, "No token files in `%s/data/` (run preprocess).\n\n", cfg->paths.run_dir);
    }
    if (vocab_size)
        fprintf(fp, "Vocabulary: %d ids (%d characters seen in the train split + 1 id for unseen characters).\n\n",
                vocab_size, vocab_size - 1);

    /* model and training */
    char *best = cfg->quantize.checkpoint[0] ? ngq_strdup_printf("%s", cfg->quantize.checkpoint)
                                             : ngq_config_checkpoint_path(cfg, "best.safetensors");
    char *last = ngq_config_checkpoint_path(cfg, "last.safetensors");
    ngq_checkpoint_meta bm, lm;
    int have_best = best && read_checkpoint_meta(best, &bm);
    int have_last = last && read_checkpoint_meta(last, &lm);
    if (have_best) {
        const ngq_model_config *m = &bm.model;
        char params[32];
        fmt_thousands((long long)ngq_model_param_count(m), params, sizeof params);
        long long linear = 0;
        for (int i = 0; i < ngq_model_tensor_count(m); i++) {
            ngq_tensor_info ti;
            if (ngq_model_tensor_info(m, i, &ti, NULL) == NGQ_OK && ti.is_block_linear) linear += (long long)ti.numel;
        }
        char lin[32];
        fmt_thousands(linear, lin, sizeof lin);
        fprintf(fp, "**Model.** GPT with %d layers, %d heads, embedding width %d, context %d characters, "
                    "%s biases, %s embeddings; %s parameters, of which %s are in the blocks' linear layers "
                    "(the weights the variants quantize unless [quantize] quantize_embedding / quantize_position say "
                    "otherwise).\n\n",
                m->n_layer, m->n_head, m->n_embd, m->block_size, m->bias ? "with" : "no",
                m->tie_embeddings ? "tied input/output" : "untied", params, lin);
        char tok[32];
        fmt_thousands((long long)bm.tokens_seen, tok, sizeof tok);
        fprintf(fp, "**Training.** Baseline checkpoint ");
        md_code(fp, best);
        fprintf(fp, ": step %lld, %s tokens trained", (long long)bm.step, tok);
        if (!isnan(bm.val_loss)) fprintf(fp, ", validation loss %.4f (perplexity %.3f)", bm.val_loss, exp(bm.val_loss));
        fprintf(fp, ".");
        if (have_last) {
            char ltok[32];
            fmt_thousands((long long)lm.tokens_seen, ltok, sizeof ltok);
            fprintf(fp, " The last checkpoint is at step %lld of [train] max_steps = %d (%s tokens).", (long long)lm.step,
                    cfg->train.max_steps, ltok);
        }
        fprintf(fp, " AdamW, peak learning rate %g (warmup %d steps, cosine to %g), batch %d x %d accumulation x %d "
                    "tokens = %d tokens per step, weight decay %g, gradient clip %g, seed %lld.",
                cfg->train.learning_rate, cfg->train.warmup_steps, cfg->train.min_lr, cfg->train.batch_size,
                cfg->train.grad_accum, cfg->model.block_size,
                cfg->train.batch_size * cfg->train.grad_accum * cfg->model.block_size, cfg->train.weight_decay,
                cfg->train.grad_clip, (long long)cfg->run.seed);
        char *log = ngq_path_join(cfg->paths.run_dir, "train_log.csv");
        ngq_table t;
        if (load_table(log, &t)) {
            if (t.n_rows) {
                double elapsed = cell(&t, t.n_rows - 1, "elapsed_s");
                double tps = cell(&t, t.n_rows - 1, "tokens_per_s");
                char took[32];
                ngq_format_duration(elapsed, took, sizeof took);
                if (!isnan(elapsed)) fprintf(fp, " Training took %s in the last run", took);
                if (!isnan(tps)) fprintf(fp, " (%.0f tokens/s at the end)", tps);
                if (!isnan(elapsed)) fprintf(fp, ".");
            }
            ngq_table_free(&t);
        }
        free(log);
        fprintf(fp, "\n\n");
    } else {
        fprintf(fp, "**Model and training.** No baseline checkpoint at ");
        md_code(fp, best ? best : "?");
        fprintf(fp, " (run train).\n\n");
    }
    free(best);
    free(last);

    /* machine */
    char cpu[256] = "unknown CPU", mem[64] = "";
    proc_value("/proc/cpuinfo", "model name", cpu, sizeof cpu);
    proc_value("/proc/meminfo", "MemTotal", mem, sizeof mem);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    fprintf(fp, "**Machine.** %s, %ld cores online", cpu, cores);
    if (mem[0]) {
        long long kib = atoll(mem);
        fprintf(fp, ", %.1f GiB memory", (double)kib / (1024.0 * 1024.0));
    }
    fprintf(fp, "; [run] threads = %d (OpenMP; OpenBLAS single-threaded inside).\n\n", cfg->run.threads);
    fprintf(fp, "**Config.** ");
    md_code(fp, cfg->source_path[0] ? cfg->source_path : "(defaults)");
    fprintf(fp, "; run directory ");
    md_code(fp, cfg->paths.run_dir);
    fprintf(fp, ".\n\n");
}

static void section_protocol(FILE *fp, const ngq_config *cfg, const cJSON *meta)
{
    fprintf(fp, "## Evaluation protocol\n\n");
    if (!meta) {
        fprintf(fp, "No `eval_meta.json` in `%s/results/` (run evaluate).\n\n", cfg->paths.run_dir);
        return;
    }
    const cJSON *split = cJSON_GetObjectItem(meta, "split"), *path = cJSON_GetObjectItem(meta, "path");
    double tokens = cJSON_GetNumberValue(cJSON_GetObjectItem(meta, "tokens"));
    double scored = cJSON_GetNumberValue(cJSON_GetObjectItem(meta, "scored_tokens"));
    double windows = cJSON_GetNumberValue(cJSON_GetObjectItem(meta, "windows"));
    double total = cJSON_GetNumberValue(cJSON_GetObjectItem(meta, "windows_total"));
    double T = cJSON_GetNumberValue(cJSON_GetObjectItem(meta, "window_tokens"));
    double S = cJSON_GetNumberValue(cJSON_GetObjectItem(meta, "stride"));
    double unknown = cJSON_GetNumberValue(cJSON_GetObjectItem(meta, "unknown_targets"));
    char a[32], b[32];
    fmt_thousands((long long)tokens, a, sizeof a);
    fmt_thousands((long long)scored, b, sizeof b);
    fprintf(fp, "Every checkpoint is scored on the same tokens: ");
    if (cJSON_IsString(split)) fprintf(fp, "the **%s** split", split->valuestring);
    else fprintf(fp, "a file");
    if (cJSON_IsString(path)) {
        fprintf(fp, " (");
        md_code(fp, path->valuestring);
        fprintf(fp, ")");
    }
    fprintf(fp, ", %s characters. Windows of T = %.0f characters start every S = %.0f characters; the first window "
                "scores all its positions and each later one only its last S, so every character after the first is "
                "predicted exactly once and, after the first window, with at least T - S = %.0f characters of "
                "context. A last window aligned to the end scores whatever the regular windows left. ",
            a, T, S, T - S);
    fprintf(fp, "%.0f windows", windows);
    if (total > windows) fprintf(fp, " (the first %.0f of %.0f, [eval] max_windows)", windows, total);
    fprintf(fp, " scored %s characters; %.0f of them are the unknown id (characters not seen in training; scored "
                "like any other).\n\n",
            b, unknown);
    fprintf(fp, "Loss is the mean cross-entropy in nats per character; perplexity = exp(loss); bits per character "
                "= loss / ln 2. Standard errors (SE) treat windows as the sampling units: SE = sqrt(n/(n-1) * "
                "sum_w c_w^2 (m_w - m)^2) / sum_w c_w over the windows' mean losses m_w (c_w scored characters "
                "each). Differences between two models use the same estimator on per-window differences (paired "
                "SE), which is much smaller than either model's own SE because both see the same text. Windows "
                "are neighbours in the same stories, so these SEs are, if anything, too small. KL is "
                "KL(baseline || model) of the next-character distributions in nats (mean over scored positions, "
                "and the nearest-rank 95th percentile); top-1 agreement is how often both models' most likely next "
                "character is the same.\n\n");
}

/* One row of eval.csv. */
typedef struct {
    char label[96], method[32], gran[32];
    int bits;
    double file_bytes, bpw, loss, se, ppl, dloss, dse, dppl, kl, kl95, top1;
} eval_row;

static int read_eval(const ngq_table *t, eval_row **rows_out)
{
    eval_row *rows = calloc(t->n_rows + 1, sizeof *rows);
    if (!rows) return 0;
    for (size_t r = 0; r < t->n_rows; r++) {
        eval_row *e = &rows[r];
        snprintf(e->label, sizeof e->label, "%s", text_cell(t, r, "label"));
        snprintf(e->method, sizeof e->method, "%s", text_cell(t, r, "method"));
        snprintf(e->gran, sizeof e->gran, "%s", text_cell(t, r, "granularity"));
        e->bits = (int)cell(t, r, "bits");
        e->file_bytes = cell(t, r, "file_bytes");
        e->bpw = cell(t, r, "bits_per_weight");
        e->loss = cell(t, r, "mean_loss");
        e->se = cell(t, r, "loss_se");
        e->ppl = cell(t, r, "perplexity");
        e->dloss = cell(t, r, "delta_loss");
        e->dse = cell(t, r, "delta_loss_se");
        e->dppl = cell(t, r, "delta_ppl_pct");
        e->kl = cell(t, r, "kl_mean");
        e->kl95 = cell(t, r, "kl_p95");
        e->top1 = cell(t, r, "top1_agreement_pct");
    }
    *rows_out = rows;
    return (int)t->n_rows;
}

/* Paired difference a - b (token-weighted mean) and its SE from eval_windows.csv. */
static int paired(const ngq_table *w, const char *a, const char *b, double *d, double *se)
{
    int ca = ngq_table_column(w, a), cb = ngq_table_column(w, b), cs = ngq_table_column(w, "scored");
    if (ca < 0 || cb < 0 || cs < 0 || w->n_rows == 0) return 0;
    double *diff = malloc(w->n_rows * sizeof *diff), *wt = malloc(w->n_rows * sizeof *wt);
    if (!diff || !wt) {
        free(diff);
        free(wt);
        return 0;
    }
    double sum = 0, sum_w = 0;
    int ok = 1;
    for (size_t r = 0; r < w->n_rows; r++) {
        double x, y, c;
        if (!ngq_table_get_double(w, r, ca, &x) || !ngq_table_get_double(w, r, cb, &y) ||
            !ngq_table_get_double(w, r, cs, &c) || c <= 0) {
            ok = 0;
            break;
        }
        diff[r] = x - y;
        wt[r] = c;
        sum += c * (x - y);
        sum_w += c;
    }
    if (ok) {
        *d = sum / sum_w;
        *se = ngq_eval_cluster_se(diff, wt, w->n_rows, *d);
    }
    free(diff);
    free(wt);
    return ok;
}

/* "not resolved" / "weak" / "" by the rule in report.h. */
static const char *strength(double d, double se)
{
    if (isnan(se) || se <= 0) return "";
    double z = fabs(d) / se;
    if (z < 1) return "not resolved";
    if (z < 2) return "weak";
    return "";
}

static void gran_words(const char *g, char *buf, size_t size)
{
    if (strcmp(g, "channel") == 0) snprintf(buf, size, "per channel");
    else if (strcmp(g, "tensor") == 0) snprintf(buf, size, "per tensor");
    else if (g[0] == 'g') snprintf(buf, size, "in groups of %s", g + 1);
    else snprintf(buf, size, "%s", g);
}

static void section_results(FILE *fp, const eval_row *rows, int n)
{
    fprintf(fp, "## Results\n\n");
    fprintf(fp, "From `results/eval.csv` (full precision there). Δ columns are against the first row, the "
                "baseline; ± SE (Δ loss) is the paired standard error of the loss difference.\n\n");
    static const char *const COLS[] = {"model", "size (KiB)", "bits/weight", "loss (nats/char)", "± SE",
                                       "perplexity", "bits/char", "Δ loss", "± SE (Δ loss)", "Δ ppl %", "KL mean",
                                       "KL p95", "top-1 agree %"};
    ngq_table t;
    ngq_error err = {0};
    if (ngq_table_init(&t, COLS, 13, &err)) return;
    for (int c = 1; c < 13; c++) ngq_table_align_right(&t, c, 1);
    for (int i = 0; i < n; i++) {
        const eval_row *e = &rows[i];
        size_t r;
        if (ngq_table_add_row(&t, &r, &err)) break;
        char se[32], dse[32];
        fmt_se(e->se, se, sizeof se);
        fmt_se(e->dse, dse, sizeof dse);
        ngq_table_set(&t, r, 0, e->label, &err);
        ngq_table_setf(&t, r, 1, &err, "%.1f", e->file_bytes / 1024.0);
        ngq_table_setf(&t, r, 2, &err, "%.3f", e->bpw);
        ngq_table_setf(&t, r, 3, &err, "%.4f", e->loss);
        ngq_table_set(&t, r, 4, se, &err);
        ngq_table_setf(&t, r, 5, &err, "%.3f", e->ppl);
        ngq_table_setf(&t, r, 6, &err, "%.4f", e->loss / log(2.0));
        char dl[32];
        fmt_delta(e->dloss, dl, sizeof dl);
        ngq_table_set(&t, r, 7, i ? dl : "0", &err);
        ngq_table_set(&t, r, 8, i ? dse : "(baseline)", &err);
        ngq_table_setf(&t, r, 9, &err, "%+.2f", e->dppl);
        ngq_table_setf(&t, r, 10, &err, "%.2e", e->kl);
        ngq_table_setf(&t, r, 11, &err, "%.2e", e->kl95);
        ngq_table_setf(&t, r, 12, &err, "%.2f", e->top1);
    }
    ngq_table_write_markdown(&t, fp, &err);
    ngq_table_free(&t);
    fprintf(fp, "\nbits/weight counts codes, scales and zeros of the quantized tensors (32 for fp32); the size on "
                "disk also holds the tensors kept in fp32 and the metadata.\n\n");
}

static int same_grid(const eval_row *a, const eval_row *b)
{
    return a->bits == b->bits && strcmp(a->gran, b->gran) == 0;
}

/* GPTQ vs naive table and observations; returns the observations written. */
static int compare_methods(FILE *fp, FILE *obs, const eval_row *rows, int n, const ngq_table *win, int have_win)
{
    int count = 0, any = 0;
    for (int i = 1; i < n; i++) {
        if (strcmp(rows[i].method, "gptq") != 0) continue;
        for (int j = 1; j < n; j++) {
            if (strcmp(rows[j].method, "naive") != 0 || !same_grid(&rows[i], &rows[j])) continue;
            const eval_row *g = &rows[i], *nv = &rows[j];
            if (!any) {
                fprintf(fp, "## GPTQ vs naive rounding on the same grid\n\n");
                fprintf(fp, "| bits | granularity | naive ppl | GPTQ ppl | Δ loss (GPTQ − naive) | ± paired SE | "
                            "in SEs | naive's Δ loss vs baseline | share won back by GPTQ |\n");
                fprintf(fp, "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
                any = 1;
            }
            double d = NAN, se = NAN;
            if (have_win) paired(win, g->label, nv->label, &d, &se);
            if (isnan(d)) d = g->loss - nv->loss;
            char s_se[32], s_nd[64], s_share[64];
            fmt_se(se, s_se, sizeof s_se);
            double inc = nv->dloss, inc_se = nv->dse;
            int share_ok = !isnan(inc_se) && inc > 0 && inc >= 2 * inc_se;
            fmt_delta(inc, s_nd, sizeof s_nd);
            if (share_ok) snprintf(s_share, sizeof s_share, "%.0f %%", 100.0 * (-d) / inc);
            else if (inc <= 0) snprintf(s_share, sizeof s_share, "n/a (naive no worse than baseline)");
            else snprintf(s_share, sizeof s_share, "n/a (naive's increase under 2 SEs)");
            char gw[64];
            gran_words(g->gran, gw, sizeof gw);
            char s_z[32], s_d[32], s_negd[32];
            fmt_delta(d, s_d, sizeof s_d);
            snprintf(s_negd, sizeof s_negd, "%s", s_d[0] == '-' ? s_d + 1 : s_d);
            if (isnan(se) || se <= 0) snprintf(s_z, sizeof s_z, "n/a");
            else snprintf(s_z, sizeof s_z, "%.1f", fabs(d) / se);
            fprintf(fp, "| %d | %s | %.3f | %.3f | %s | %s | %s | %s | %s |\n", g->bits, gw, nv->ppl, g->ppl, s_d,
                    s_se, s_z, s_nd, s_share);
            /* the observation */
            const char *s = strength(d, se);
            char s_zwords[64];
            if (isnan(se) || se <= 0) snprintf(s_zwords, sizeof s_zwords, "no paired SE available");
            else snprintf(s_zwords, sizeof s_zwords, "%.2f paired SEs", fabs(d) / se);
            fprintf(obs, "- At %d bits %s, ", g->bits, gw);
            if (strcmp(s, "not resolved") == 0) {
                fprintf(obs, "GPTQ and naive rounding differ by %s nats/char, less than one paired standard error "
                             "(%s): no difference is resolved (perplexity %.3f vs %.3f).\n",
                        s_d, s_se, g->ppl, nv->ppl);
            } else if (d < 0) {
                fprintf(obs, "GPTQ lowers the loss by %s nats/char against naive rounding (perplexity %.3f -> %.3f, "
                             "%s%s)",
                        s_negd, nv->ppl, g->ppl, s_zwords, strcmp(s, "weak") == 0 ? ": weak evidence" : "");
                if (share_ok)
                    fprintf(obs, "; it wins back %.0f %% of naive's loss increase over the baseline (%s nats/char).\n",
                            100.0 * (-d) / inc, s_nd);
                else {
                    char s_inc_se[32];
                    fmt_se(inc_se, s_inc_se, sizeof s_inc_se);
                    if (inc <= 0)
                        fprintf(obs, "; naive rounding itself is no worse than the baseline here (%s ± %s), so no "
                                     "share won back is given.\n",
                                s_nd, s_inc_se);
                    else
                        fprintf(obs, "; naive's own increase over the baseline (%s ± %s) is under 2 SEs, so no share "
                                     "won back is given.\n",
                                s_nd, s_inc_se);
                }
            } else {
                fprintf(obs, "GPTQ is *worse* than naive rounding by %s nats/char (perplexity %.3f vs %.3f, "
                             "%s%s).\n",
                        s_negd, g->ppl, nv->ppl, s_zwords, strcmp(s, "weak") == 0 ? ": weak evidence" : "");
            }
            count++;
        }
    }
    if (any) fprintf(fp, "\n");
    return count;
}

/* Groups vs per channel for the same method and bits. */
static int compare_granularity(FILE *obs, const eval_row *rows, int n, const ngq_table *win, int have_win)
{
    int count = 0;
    for (int i = 1; i < n; i++) {
        if (rows[i].gran[0] != 'g') continue;
        for (int j = 1; j < n; j++) {
            if (strcmp(rows[j].gran, "channel") != 0 || rows[j].bits != rows[i].bits ||
                strcmp(rows[j].method, rows[i].method) != 0)
                continue;
            const eval_row *g = &rows[i], *c = &rows[j];
            double d = NAN, se = NAN;
            if (have_win) paired(win, g->label, c->label, &d, &se);
            if (isnan(d)) d = g->loss - c->loss;
            char s_se[32], gw[64], s_d[32];
            fmt_se(se, s_se, sizeof s_se);
            fmt_delta(d, s_d, sizeof s_d);
            gran_words(g->gran, gw, sizeof gw);
            const char *s = strength(d, se);
            fprintf(obs, "- %s at %d bits: scales %s instead of per channel change the loss by %s nats/char "
                         "(± %s%s) for %+.3f bits per weight and %+.1f KiB on disk.\n",
                    strcmp(g->method, "gptq") == 0 ? "GPTQ" : "Naive rounding", g->bits, gw, s_d, s_se,
                    strcmp(s, "not resolved") == 0 ? ", not resolved"
                    : strcmp(s, "weak") == 0       ? ", weak evidence"
                                                   : "",
                    g->bpw - c->bpw, (g->file_bytes - c->file_bytes) / 1024.0);
            count++;
        }
    }
    return count;
}

static int compare_baseline(FILE *obs, const eval_row *rows, int n)
{
    if (n < 2) return 0;
    const eval_row *b = &rows[0];
    char se[32];
    fmt_se(b->se, se, sizeof se);
    int count = 0;
    fprintf(obs, "- Within the baseline's standard error (|Δ loss| <= %s nats/char): ", se);
    int k = 0;
    for (int i = 1; i < n; i++)
        if (!isnan(b->se) && fabs(rows[i].dloss) <= b->se) fprintf(obs, "%s%s", k++ ? ", " : "", rows[i].label);
    fprintf(obs, "%s. Outside it: ", k ? "" : "none");
    int k2 = 0;
    for (int i = 1; i < n; i++)
        if (isnan(b->se) || fabs(rows[i].dloss) > b->se)
            fprintf(obs, "%s%s (%+.2f %% perplexity)", k2++ ? ", " : "", rows[i].label, rows[i].dppl);
    fprintf(obs, "%s.\n", k2 ? "" : "none");
    count++;
    /* paired: which differences from the baseline are resolved */
    fprintf(obs, "- Against the baseline with the paired SE, the loss change is resolved (at least 2 SEs) for: ");
    k = 0;
    for (int i = 1; i < n; i++)
        if (!isnan(rows[i].dse) && rows[i].dse > 0 && fabs(rows[i].dloss) >= 2 * rows[i].dse)
        {
            char dl[32];
            fmt_delta(rows[i].dloss, dl, sizeof dl);
            fprintf(obs, "%s%s (%s)", k++ ? ", " : "", rows[i].label, dl);
        }
    fprintf(obs, "%s; not resolved (under 1 SE) for: ", k ? "" : "none");
    k = 0;
    for (int i = 1; i < n; i++)
        if (!isnan(rows[i].dse) && fabs(rows[i].dloss) < rows[i].dse)
            fprintf(obs, "%s%s", k++ ? ", " : "", rows[i].label);
    fprintf(obs, "%s.\n", k ? "" : "none");
    count++;
    /* smallest checkpoint within 1 % perplexity */
    int best = -1;
    for (int i = 1; i < n; i++)
        if (rows[i].dppl <= 1.0 && (best < 0 || rows[i].file_bytes < rows[best].file_bytes)) best = i;
    if (best >= 0)
        fprintf(obs, "- The smallest checkpoint within 1 %% of the baseline's perplexity is %s: %.1f KiB, %.2fx "
                     "smaller than the baseline (%.1f KiB), %+.2f %% perplexity.\n",
                rows[best].label, rows[best].file_bytes / 1024.0, b->file_bytes / rows[best].file_bytes,
                b->file_bytes / 1024.0, rows[best].dppl);
    else
        fprintf(obs, "- No variant is within 1 %% of the baseline's perplexity.\n");
    count++;
    /* agreement range */
    int lo = 1, hi = 1;
    for (int i = 1; i < n; i++) {
        if (rows[i].top1 < rows[lo].top1) lo = i;
        if (rows[i].top1 > rows[hi].top1) hi = i;
    }
    if (rows[lo].top1 == rows[hi].top1)
        fprintf(obs, "- Top-1 agreement with the baseline is %.2f %% for every variant (mean KL up to %.2e nats).\n",
                rows[lo].top1, rows[lo].kl > rows[hi].kl ? rows[lo].kl : rows[hi].kl);
    else
        fprintf(obs, "- Top-1 agreement with the baseline ranges from %.2f %% (%s, mean KL %.2e nats) to %.2f %% (%s, "
                     "mean KL %.2e nats).\n",
                rows[lo].top1, rows[lo].label, rows[lo].kl, rows[hi].top1, rows[hi].label, rows[hi].kl);
    count++;
    return count;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Per-layer table (from the layers CSVs) and observations. */
static int section_layers(FILE *fp, FILE *obs, const ngq_eval_study *study)
{
    int count = 0, any = 0;
    for (int i = 1; i < study->count; i++) {
        const ngq_eval_study_entry *e = &study->entries[i];
        ngq_table t;
        if (!load_table(e->layers_csv, &t)) continue;
        int is_gptq = strncmp(e->variant, "gptq:", 5) == 0;
        size_t n = t.n_rows, lower = 0, measured = 0, escalations = 0, fallbacks = 0;
        double *ratios = calloc(n + 1, sizeof *ratios), rtn_max = NAN, gptq_max = NAN, seconds = 0;
        for (size_t r = 0; ratios && r < n; r++) {
            double a = cell(&t, r, "rtn_rel_error"), g = cell(&t, r, "gptq_rel_error");
            double esc = cell(&t, r, "escalations"), fb = cell(&t, r, "fallback"), s = cell(&t, r, "seconds");
            if (!isnan(esc)) escalations += (size_t)esc;
            if (!isnan(fb)) fallbacks += fb != 0;
            if (!isnan(s)) seconds += s;
            if (!isnan(a) && !(a <= rtn_max)) rtn_max = a;
            if (!isnan(g) && !(g <= gptq_max)) gptq_max = g;
            if (!isnan(a) && !isnan(g) && g > 0) {
                ratios[measured++] = a / g;
                lower += g < a;
            }
        }
        if (isnan(rtn_max) && isnan(gptq_max)) { /* naive runs measure no calibration error */
            free(ratios);
            ngq_table_free(&t);
            continue;
        }
        if (!any) {
            fprintf(fp, "## Per-layer relative output error\n\n");
            fprintf(fp, "From `results/layers-LABEL.csv`: each quantized layer's relative output error on the "
                        "calibration inputs, for rounding to nearest (RTN) and for GPTQ on the same grid.\n\n");
            fprintf(fp, "| variant | layers | largest RTN error | largest GPTQ error | GPTQ below RTN | median RTN/GPTQ "
                        "| damping escalations | fallbacks to RTN | seconds |\n");
            fprintf(fp, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
            any = 1;
        }
        double median = NAN;
        if (measured) {
            qsort(ratios, measured, sizeof *ratios, compare_double);
            median = measured % 2 ? ratios[measured / 2] : 0.5 * (ratios[measured / 2 - 1] + ratios[measured / 2]);
        }
        if (is_gptq && measured)
            fprintf(fp, "| %s | %zu | %.2e | %.2e | %zu of %zu | %.2fx | %zu | %zu | %.1f |\n", e->label, n, rtn_max,
                    gptq_max, lower, measured, median, escalations, fallbacks, seconds);
        else
            fprintf(fp, "| %s | %zu | %.2e | | | | | | %.1f |\n", e->label, n, rtn_max, seconds);
        if (is_gptq && measured) {
            fprintf(obs, "- %s: GPTQ's output error is below RTN's in %zu of %zu layers (median ratio RTN/GPTQ %.2fx)",
                    e->label, lower, measured, median);
            if (escalations || fallbacks)
                fprintf(obs, "; the damping was raised %zu times and %zu layers fell back to RTN", escalations,
                        fallbacks);
            fprintf(obs, ".\n");
            count++;
        }
        free(ratios);
        ngq_table_free(&t);
    }
    if (any) fprintf(fp, "\n");
    return count;
}

static void section_figures(FILE *fp, const ngq_config *cfg, ngq_report_summary *sum)
{
    fprintf(fp, "## Figures\n\n");
    char *manifest = ngq_path_join(cfg->paths.figures_dir, "figures.csv");
    ngq_table t;
    if (!load_table(manifest, &t)) {
        fprintf(fp, "No figures: `%s` is missing (run figures; it needs gnuplot).\n\n", manifest ? manifest : "");
        free(manifest);
        sum->figures_missing++;
        return;
    }
    struct stat ms;
    int have_ms = stat(manifest, &ms) == 0;
    for (size_t r = 0; r < t.n_rows; r++) {
        const char *file = text_cell(&t, r, "file"), *title = text_cell(&t, r, "title");
        const char *status = text_cell(&t, r, "status"), *source = text_cell(&t, r, "source");
        char *png = ngq_path_join(cfg->paths.figures_dir, file);
        struct stat ps, ss;
        int have_png = png && stat(png, &ps) == 0;
        int stale = have_png && source[0] && stat(source, &ss) == 0 && ss.st_mtime > ps.st_mtime;
        if (have_png && strcmp(status, "rendered") == 0 && !stale && have_ms) {
            char *rel = ngq_report_relative_path(cfg->paths.report_dir, png);
            fprintf(fp, "**%s**\n\n![%s](%s)\n\n", title, title, rel ? rel : png);
            free(rel);
            sum->figures_linked++;
        } else {
            fprintf(fp, "- *%s*: missing (%s).\n", title,
                    stale ? "older than its data; run figures" : have_png ? status : status[0] ? status : "no PNG");
            sum->figures_missing++;
        }
        free(png);
    }
    fprintf(fp, "\nEach figure's data and gnuplot script are beside it in ");
    md_code(fp, cfg->paths.figures_dir);
    fprintf(fp, " (NAME.dat, NAME.gp).\n\n");
    ngq_table_free(&t);
    free(manifest);
}

ngq_status ngq_report_write(const ngq_config *cfg, ngq_report_summary *sum, ngq_error *err)
{
    memset(sum, 0, sizeof *sum);
    ngq_status st = ngq_make_dirs(cfg->paths.report_dir, err);
    if (st) return st;
    ngq_eval_study study;
    if ((st = ngq_eval_study_init(&study, cfg, err))) return st;
    char *path = ngq_path_join(cfg->paths.report_dir, "REPORT.md");
    char *eval_csv = ngq_config_results_path(cfg, "eval.csv");
    char *win_csv = ngq_config_results_path(cfg, "eval_windows.csv");
    char *meta_path = ngq_config_results_path(cfg, "eval_meta.json");
    char *text = NULL, *obs_text = NULL;
    size_t size = 0, obs_size = 0;
    FILE *fp = open_memstream(&text, &size), *obs = open_memstream(&obs_text, &obs_size);
    if (!path || !eval_csv || !win_csv || !meta_path || !fp || !obs) {
        st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    snprintf(sum->path, sizeof sum->path, "%s", path);

    cJSON *meta = NULL;
    {
        char *mt;
        size_t ms;
        ngq_error e2 = {0};
        if (ngq_file_exists(meta_path) && ngq_read_file(meta_path, &mt, &ms, &e2) == NGQ_OK) {
            meta = cJSON_Parse(mt);
            free(mt);
        }
    }
    ngq_table eval_t, win_t;
    int have_eval = load_table(eval_csv, &eval_t), have_win = load_table(win_csv, &win_t);
    eval_row *rows = NULL;
    int n = have_eval ? read_eval(&eval_t, &rows) : 0;
    sum->models = n;

    const char *name = cfg->source_path[0] ? cfg->source_path : "default configuration";
    fprintf(fp, "# nanogptq study report: ");
    md_code(fp, name);
    fprintf(fp, "\n\nHow much does a small character-level GPT lose when its weights are rounded to a few bits "
                "(naive round-to-nearest, RTN), and how much of that does GPTQ win back? This report is generated "
                "by the `report` tool from the files in ");
    md_code(fp, cfg->paths.run_dir);
    fprintf(fp, "; every number is read from them. Regenerate it with `scripts/study %s`.\n\n", name);

    section_setup(fp, cfg);
    section_protocol(fp, cfg, meta);
    if (n > 0) {
        section_results(fp, rows, n);
    } else {
        fprintf(fp, "## Results\n\nNo evaluation results: `%s` is missing or empty (run evaluate).\n\n", eval_csv);
    }
    int observations = 0;
    if (n > 0) {
        observations += compare_baseline(obs, rows, n);
        observations += compare_methods(fp, obs, rows, n, &win_t, have_win);
        observations += compare_granularity(obs, rows, n, &win_t, have_win);
    }
    observations += section_layers(fp, obs, &study);
    section_figures(fp, cfg, sum);
    fclose(obs);
    obs = NULL;
    fprintf(fp, "## Observations\n\n");
    if (observations) {
        fprintf(fp, "Generated by fixed rules from the numbers above: a difference below one standard error is "
                    "called not resolved, between one and two weak; no other claims are made.\n\n");
        fputs(obs_text, fp);
        fprintf(fp, "\nCaveats: one training run (one seed), one calibration draw per GPTQ variant, and standard "
                    "errors that treat neighbouring windows as independent.\n");
    } else {
        fprintf(fp, "None yet: there are no evaluation results to compare.\n");
    }
    sum->observations = observations;
    if (have_eval) ngq_table_free(&eval_t);
    if (have_win) ngq_table_free(&win_t);
    free(rows);
    cJSON_Delete(meta);
    if (fclose(fp) != 0) {
        fp = NULL;
        st = ngq_fail(err, NGQ_ERR_IO, "formatting the report failed");
        goto done;
    }
    fp = NULL;
    st = ngq_write_file_atomic(path, text, size, err);
done:
    if (fp) fclose(fp);
    if (obs) fclose(obs);
    free(text);
    free(obs_text);
    free(path);
    free(eval_csv);
    free(win_csv);
    free(meta_path);
    ngq_eval_study_free(&study);
    return st;
}
