/* plot.c: the study's figures: data files and gnuplot scripts written from the
 * toolkit's CSVs, gnuplot run on them (PNG written atomically), and the
 * figures.csv manifest. It reads CSVs and writes files in figures_dir only;
 * gnuplot's own output is captured, never printed. */
#include "nanogptq/plot.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nanogptq/eval.h"
#include "nanogptq/table.h"

/* ---- helpers --------------------------------------------------------------------- */

void ngq_plot_set_free(ngq_plot_set *set)
{
    if (!set) return;
    for (int i = 0; set->figures && i < set->count; i++) {
        free(set->figures[i].source);
        free(set->figures[i].script);
        free(set->figures[i].png);
    }
    free(set->figures);
    free(set->dir);
    memset(set, 0, sizeof *set);
}

static ngq_plot_figure *add_figure(ngq_plot_set *set, const char *name, const char *title, const char *source,
                                   ngq_error *err)
{
    ngq_plot_figure *f = realloc(set->figures, (size_t)(set->count + 1) * sizeof *f);
    if (!f) {
        ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
        return NULL;
    }
    set->figures = f;
    f = &set->figures[set->count++];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    snprintf(f->title, sizeof f->title, "%s", title);
    f->source = ngq_strdup_printf("%s", source);
    f->script = ngq_strdup_printf("%s/%s.gp", set->dir, name);
    f->png = ngq_strdup_printf("%s/%s.png", set->dir, name);
    if (!f->source || !f->script || !f->png) {
        ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
        return NULL;
    }
    snprintf(f->status, sizeof f->status, "not drawn");
    return f;
}

/* A string in a gnuplot double-quoted literal. */
static void gp_string(FILE *fp, const char *s)
{
    fputc('"', fp);
    for (const char *c = s; *c; c++) {
        if (*c == '"' || *c == '\\') fputc('\\', fp);
        fputc(*c, fp);
    }
    fputc('"', fp);
}

/* A label inside a data file: quoted, without double quotes. */
static void dat_string(FILE *fp, const char *s)
{
    fputc('"', fp);
    for (const char *c = s; *c; c++) fputc(*c == '"' ? '\'' : *c, fp);
    fputc('"', fp);
}

static void gp_header(FILE *fp, const ngq_plot_figure *f, int width, int height)
{
    fprintf(fp, "# %s.gp: %s\n", f->name, f->title);
    fprintf(fp, "# Drawn from %s by nanogptq's figures tool (data in %s.dat).\n", f->source, f->name);
    fprintf(fp, "# Redraw by hand: cd into this folder, then: gnuplot %s.gp\n", f->name);
    fprintf(fp, "if (!exists(\"outfile\")) outfile = \"%s.png\"\n", f->name);
    fprintf(fp, "set terminal pngcairo size %d,%d font \"sans,11\" noenhanced\n", width, height);
    fprintf(fp, "set output outfile\n");
    fprintf(fp, "set datafile missing \"NaN\"\n");
    fprintf(fp, "set grid lc rgb \"#d8d8d8\"\n");
    fprintf(fp, "set title ");
    gp_string(fp, f->title);
    fprintf(fp, "\n");
}

/* Writes what a memstream collected to path atomically. */
static ngq_status save_stream(const char *path, char *buf, size_t size, ngq_error *err)
{
    ngq_status st = ngq_write_file_atomic(path, buf, size, err);
    free(buf);
    return st;
}

static ngq_status save_pair(ngq_plot_set *set, ngq_plot_figure *f, char *dat, size_t dat_size, char *gp,
                            size_t gp_size, ngq_error *err)
{
    char *dat_path = ngq_strdup_printf("%s/%s.dat", set->dir, f->name);
    if (!dat_path) {
        free(dat);
        free(gp);
        return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    }
    ngq_status st = save_stream(dat_path, dat, dat_size, err);
    free(dat_path);
    if (st) {
        free(gp);
        return st;
    }
    if ((st = save_stream(f->script, gp, gp_size, err))) return st;
    f->prepared = 1;
    snprintf(f->status, sizeof f->status, "prepared");
    return NGQ_OK;
}

static int col_or_fail(const ngq_table *t, const char *name, const char *path, ngq_error *err)
{
    int c = ngq_table_column(t, name);
    if (c < 0) ngq_fail(err, NGQ_ERR_FORMAT, "%s: no column '%s'", path, name);
    return c;
}

static double cell(const ngq_table *t, size_t row, int col)
{
    double v;
    return ngq_table_get_double(t, row, col, &v) ? v : NAN;
}

/* ---- loss vs step ------------------------------------------------------------------- */

static ngq_status prepare_loss(ngq_plot_set *set, const ngq_config *cfg, ngq_error *err)
{
    char *path = ngq_path_join(cfg->paths.run_dir, "train_log.csv");
    if (!path) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    char title[256];
    snprintf(title, sizeof title, "Training loss vs step (%.200s)", cfg->paths.run_dir);
    ngq_plot_figure *f = add_figure(set, "loss", title, path, err);
    ngq_status st = f ? NGQ_OK : err->status;
    ngq_table t = {0};
    if (st == NGQ_OK && !ngq_file_exists(path)) {
        snprintf(f->status, sizeof f->status, "skipped: %.200s not found (run train)", path);
        free(path);
        return NGQ_OK;
    }
    if (st == NGQ_OK) st = ngq_table_load_csv(&t, path, err);
    int c_step = -1, c_train = -1, c_val = -1;
    if (st == NGQ_OK && ((c_step = col_or_fail(&t, "step", path, err)) < 0 ||
                         (c_train = col_or_fail(&t, "train_loss", path, err)) < 0 ||
                         (c_val = col_or_fail(&t, "val_loss", path, err)) < 0))
        st = NGQ_ERR_FORMAT;
    if (st == NGQ_OK && t.n_rows == 0) {
        snprintf(f->status, sizeof f->status, "skipped: %.200s has no rows", path);
        ngq_table_free(&t);
        free(path);
        return NGQ_OK;
    }
    if (st == NGQ_OK) {
        char *dat = NULL, *gp = NULL;
        size_t dat_size = 0, gp_size = 0;
        FILE *d = open_memstream(&dat, &dat_size), *g = open_memstream(&gp, &gp_size);
        fprintf(d, "# from %s\n# index 0: step train_loss\n", path);
        size_t n_val = 0;
        for (size_t r = 0; r < t.n_rows; r++) fprintf(d, "%.0f %.6g\n", cell(&t, r, c_step), cell(&t, r, c_train));
        fprintf(d, "\n\n# index 1: step val_loss\n");
        for (size_t r = 0; r < t.n_rows; r++) {
            double v = cell(&t, r, c_val);
            if (isnan(v)) continue;
            fprintf(d, "%.0f %.6g\n", cell(&t, r, c_step), v);
            n_val++;
        }
        if (n_val == 0) fprintf(d, "NaN NaN\n");
        gp_header(g, f, 960, 600);
        fprintf(g, "set xlabel \"optimizer step\"\n");
        fprintf(g, "set ylabel \"cross-entropy loss (nats per character)\"\n");
        fprintf(g, "set key top right box opaque\n");
        fprintf(g, "plot \"%s.dat\" index 0 using 1:2 with lines lw 1 lc rgb \"#7fa7d8\" title \"train loss (each step's "
                   "batch)\", \\\n", f->name);
        fprintf(g, "     \"%s.dat\" index 1 using 1:2 with linespoints lw 2 pt 7 ps 1.2 lc rgb \"#d62728\" title "
                   "\"validation loss (fixed windows)\"\n", f->name);
        fclose(d);
        fclose(g);
        st = save_pair(set, f, dat, dat_size, gp, gp_size, err);
    }
    ngq_table_free(&t);
    free(path);
    return st;
}

/* ---- perplexity vs bits and vs size -------------------------------------------------- */

typedef struct {
    size_t row;
    char method[32];
    char gran[32];
    int bits;
    double ppl, ppl_lo, ppl_hi, kib;
    char label[96];
} eval_point;

static int method_rank(const char *m)
{
    if (strcmp(m, "naive") == 0) return 0;
    if (strcmp(m, "gptq") == 0) return 1;
    return 2;
}

static int gran_rank(const char *g)
{
    if (strcmp(g, "channel") == 0) return 0;
    if (g[0] == 'g') return 1 + atoi(g + 1); /* smaller groups first */
    if (strcmp(g, "tensor") == 0) return 1000000;
    return 2000000;
}

static int compare_points(const void *a, const void *b)
{
    const eval_point *x = a, *y = b;
    int d = method_rank(x->method) - method_rank(y->method);
    if (!d) d = gran_rank(x->gran) - gran_rank(y->gran);
    if (!d) d = strcmp(x->method, y->method);
    if (!d) d = strcmp(x->gran, y->gran);
    if (!d) d = x->bits - y->bits;
    return d;
}

static void series_title(const eval_point *p, char *buf, size_t size)
{
    const char *m = strcmp(p->method, "naive") == 0 ? "naive (RTN)" : strcmp(p->method, "gptq") == 0 ? "GPTQ" : p->method;
    if (strcmp(p->gran, "channel") == 0) snprintf(buf, size, "%s, per channel", m);
    else if (strcmp(p->gran, "tensor") == 0) snprintf(buf, size, "%s, per tensor", m);
    else if (p->gran[0] == 'g') snprintf(buf, size, "%s, groups of %s", m, p->gran + 1);
    else snprintf(buf, size, "%s", m);
}

static const char *series_color(const eval_point *p)
{
    int naive = strcmp(p->method, "naive") == 0, gptq = strcmp(p->method, "gptq") == 0;
    int grouped = p->gran[0] == 'g', tensor = strcmp(p->gran, "tensor") == 0;
    if (naive) return grouped ? "#ff7f0e" : tensor ? "#8c564b" : "#d62728";
    if (gptq) return grouped ? "#17becf" : tensor ? "#9467bd" : "#1f77b4";
    return "#555555";
}

static ngq_status prepare_eval_figures(ngq_plot_set *set, const ngq_config *cfg, ngq_error *err)
{
    char *path = ngq_config_results_path(cfg, "eval.csv");
    if (!path) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    char title_bits[256], title_size[256];
    snprintf(title_bits, sizeof title_bits, "Test perplexity vs bits per weight code (%.180s)", cfg->paths.run_dir);
    snprintf(title_size, sizeof title_size, "Test perplexity vs checkpoint size on disk (%.180s)", cfg->paths.run_dir);
    ngq_plot_figure *fb = add_figure(set, "ppl_bits", title_bits, path, err);
    ngq_plot_figure *fs = fb ? add_figure(set, "size_ppl", title_size, path, err) : NULL;
    if (!fs) {
        free(path);
        return err->status;
    }
    fb = &set->figures[set->count - 2]; /* add_figure may have moved the array */
    if (!ngq_file_exists(path)) {
        snprintf(fb->status, sizeof fb->status, "skipped: %.200s not found (run evaluate)", path);
        snprintf(fs->status, sizeof fs->status, "skipped: %.200s not found (run evaluate)", path);
        free(path);
        return NGQ_OK;
    }
    ngq_table t;
    ngq_status st = ngq_table_load_csv(&t, path, err);
    if (st) {
        free(path);
        return st;
    }
    const char *need[] = {"label", "method", "bits", "granularity", "file_bytes", "delta_loss_se", "perplexity"};
    int c[7];
    for (int k = 0; k < 7 && st == NGQ_OK; k++)
        if ((c[k] = col_or_fail(&t, need[k], path, err)) < 0) st = NGQ_ERR_FORMAT;
    eval_point *pts = st == NGQ_OK ? calloc(t.n_rows + 1, sizeof *pts) : NULL;
    if (st == NGQ_OK && !pts) st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    if (st == NGQ_OK && t.n_rows == 0) {
        snprintf(fb->status, sizeof fb->status, "skipped: %.200s has no rows", path);
        snprintf(fs->status, sizeof fs->status, "skipped: %.200s has no rows", path);
        goto done;
    }
    for (size_t r = 0; st == NGQ_OK && r < t.n_rows; r++) {
        eval_point *p = &pts[r];
        p->row = r;
        snprintf(p->label, sizeof p->label, "%s", ngq_table_get(&t, r, c[0]));
        snprintf(p->method, sizeof p->method, "%s", ngq_table_get(&t, r, c[1]));
        snprintf(p->gran, sizeof p->gran, "%s", ngq_table_get(&t, r, c[3]));
        p->bits = (int)cell(&t, r, c[2]);
        /* error bars: the paired standard error of the difference from the
         * baseline (the baseline's own SE is shared by every model scored on
         * the same tokens, so it says nothing about their differences) */
        double se = cell(&t, r, c[5]);
        p->ppl = cell(&t, r, c[6]);
        if (isnan(se)) se = 0.0;
        p->ppl_lo = p->ppl * exp(-se);
        p->ppl_hi = p->ppl * exp(se);
        p->kib = cell(&t, r, c[4]) / 1024.0;
        if (!isfinite(p->ppl) || !isfinite(p->kib))
            st = ngq_fail(err, NGQ_ERR_FORMAT, "%s: row %zu (%s) has no perplexity or file size", path, r + 2,
                          p->label);
    }
    if (st) goto done;
    const eval_point *base = &pts[0];
    size_t nq = t.n_rows - 1;
    eval_point *q = pts + 1;
    qsort(q, nq, sizeof *q, compare_points);
    double lo = base->ppl, hi = base->ppl;
    for (size_t i = 0; i < nq; i++) {
        if (q[i].ppl_lo < lo) lo = q[i].ppl_lo;
        if (q[i].ppl_hi > hi) hi = q[i].ppl_hi;
    }
    int log_y = hi / lo > 4.0;

    /* perplexity vs bits */
    if (nq == 0) {
        snprintf(fb->status, sizeof fb->status, "skipped: no quantized variant in %.200s", path);
    } else {
        char *dat = NULL, *gp = NULL;
        size_t dat_size = 0, gp_size = 0;
        FILE *d = open_memstream(&dat, &dat_size), *g = open_memstream(&gp, &gp_size);
        fprintf(d, "# from %s\n# one block per series: bits perplexity, and perplexity at loss -/+ the paired SE "
                   "of its difference from the baseline, label\n",
                path);
        gp_header(g, fb, 1000, 640);
        int min_bits = 99, max_bits = 0;
        for (size_t i = 0; i < nq; i++) {
            if (q[i].bits < min_bits) min_bits = q[i].bits;
            if (q[i].bits > max_bits) max_bits = q[i].bits;
        }
        fprintf(g, "set xlabel \"bits per weight code (scales and zeros not counted; see size_ppl.png)\"\n");
        fprintf(g, "set label 1 \"error bars: +/- 1 paired standard error of the difference from the baseline\" "
                   "at graph 0.01, graph -0.13 font \",9\"\n");
        fprintf(g, "set bmargin 5\n");
        fprintf(g, "set ylabel \"test perplexity (per character%s)\"\n", log_y ? ", log scale" : "");
        if (log_y) fprintf(g, "set logscale y\n");
        fprintf(g, "set xrange [%g:%g]\n", min_bits - 0.6, max_bits + 0.6);
        fprintf(g, "set xtics 1\n");
        fprintf(g, "set key top right box opaque\n");
        fprintf(g, "set bars 2\n");
        fprintf(g, "base_ppl = %.10g\n", base->ppl);
        fprintf(g, "plot base_ppl with lines dt 2 lw 2 lc rgb \"#000000\" title sprintf(\"%s baseline: %%.3f\", base_ppl)",
                base->label);
        int block = 0;
        for (size_t i = 0; i < nq;) {
            size_t j = i;
            char st_title[96];
            series_title(&q[i], st_title, sizeof st_title);
            fprintf(d, "%s# %s\n", block ? "\n\n" : "", st_title);
            while (j < nq && strcmp(q[j].method, q[i].method) == 0 && strcmp(q[j].gran, q[i].gran) == 0) {
                fprintf(d, "%d %.10g %.10g %.10g ", q[j].bits, q[j].ppl, q[j].ppl_lo, q[j].ppl_hi);
                dat_string(d, q[j].label);
                fputc('\n', d);
                j++;
            }
            int grouped = q[i].gran[0] == 'g';
            fprintf(g, ", \\\n     \"%s.dat\" index %d using 1:2:3:4 with yerrorlines lw 2 pt %d ps 1.4 dt %d "
                       "lc rgb \"%s\" title ",
                    fb->name, block, strcmp(q[i].method, "gptq") == 0 ? 7 : 5, grouped ? 2 : 1, series_color(&q[i]));
            gp_string(g, st_title);
            block++;
            i = j;
        }
        fprintf(g, "\n");
        fclose(d);
        fclose(g);
        if ((st = save_pair(set, fb, dat, dat_size, gp, gp_size, err))) goto done;
    }

    /* perplexity vs size */
    {
        char *dat = NULL, *gp = NULL;
        size_t dat_size = 0, gp_size = 0;
        FILE *d = open_memstream(&dat, &dat_size), *g = open_memstream(&gp, &gp_size);
        fprintf(d, "# from %s\n# one block per method: size_KiB perplexity label\n# %s\n%.6g %.10g ", path,
                base->label, base->kib, base->ppl);
        dat_string(d, base->label);
        fputc('\n', d);
        gp_header(g, fs, 1000, 640);
        fprintf(g, "set xlabel \"checkpoint size on disk (KiB)\"\n");
        fprintf(g, "set ylabel \"test perplexity (per character%s)\"\n", log_y ? ", log scale" : "");
        if (log_y) fprintf(g, "set logscale y\n");
        fprintf(g, "set key top right box opaque\n");
        fprintf(g, "set offsets graph 0.1, graph 0.12, graph 0.06, graph 0.06\n");
        fprintf(g, "base_ppl = %.10g\n", base->ppl);
        fprintf(g, "plot \"%s.dat\" index 0 using 1:2 with points pt 9 ps 2 lc rgb \"#000000\" title ", fs->name);
        gp_string(g, base->label);
        int block = 1;
        char labels[1024] = "";
        size_t used = 0;
        used += (size_t)snprintf(labels + used, sizeof labels - used,
                                 ", \\\n     \"%s.dat\" index 0 using 1:2:3 with labels left offset char 0.8,0.6 "
                                 "font \",9\" notitle",
                                 fs->name);
        for (int m = 0; m < 3; m++) {
            int any = 0;
            for (size_t i = 0; i < nq; i++) {
                if (method_rank(q[i].method) != m) continue;
                if (!any) fprintf(d, "\n\n# %s\n", q[i].method);
                any = 1;
                fprintf(d, "%.6g %.10g ", q[i].kib, q[i].ppl);
                dat_string(d, q[i].label);
                fputc('\n', d);
            }
            if (!any) continue;
            eval_point probe = {0};
            snprintf(probe.method, sizeof probe.method, "%s", m == 0 ? "naive" : m == 1 ? "gptq" : "other");
            fprintf(g, ", \\\n     \"%s.dat\" index %d using 1:2 with points pt %d ps 1.6 lc rgb \"%s\" title \"%s\"",
                    fs->name, block, m == 1 ? 7 : 5, series_color(&probe),
                    m == 0 ? "naive (RTN)" : m == 1 ? "GPTQ" : "other");
            /* naive labels to the left of their points, the others to the
             * right: a naive and a GPTQ checkpoint on the same grid have
             * almost the same size */
            if (used < sizeof labels)
                used += (size_t)snprintf(labels + used, sizeof labels - used,
                                         ", \\\n     \"%s.dat\" index %d using 1:2:3 with labels %s offset char "
                                         "%s,0.6 font \",9\" notitle",
                                         fs->name, block, m == 0 ? "right" : "left", m == 0 ? "-0.8" : "0.8");
            block++;
        }
        fprintf(g, ", \\\n     base_ppl with lines dt 2 lw 1 lc rgb \"#000000\" notitle%s\n", labels);
        fclose(d);
        fclose(g);
        st = save_pair(set, fs, dat, dat_size, gp, gp_size, err);
    }
done:
    free(pts);
    ngq_table_free(&t);
    free(path);
    return st;
}

/* ---- per-layer error ----------------------------------------------------------------- */

/* "transformer.h.3.attn.c_attn.weight" -> "3 attn.qkv" and so on. */
static void short_tensor_name(const char *tensor, char *buf, size_t size)
{
    int layer;
    char rest[128];
    if (sscanf(tensor, "transformer.h.%d.%127s", &layer, rest) == 2) {
        const char *what = rest;
        if (strncmp(rest, "attn.c_attn", 11) == 0) what = "attn.qkv";
        else if (strncmp(rest, "attn.c_proj", 11) == 0) what = "attn.proj";
        else if (strncmp(rest, "mlp.c_fc", 8) == 0) what = "mlp.fc";
        else if (strncmp(rest, "mlp.c_proj", 10) == 0) what = "mlp.proj";
        snprintf(buf, size, "%d %s", layer, what);
    } else if (strcmp(tensor, "transformer.wte.weight") == 0) {
        snprintf(buf, size, "wte / head");
    } else if (strcmp(tensor, "transformer.wpe.weight") == 0) {
        snprintf(buf, size, "wpe");
    } else {
        snprintf(buf, size, "%s", tensor);
    }
}

static ngq_status prepare_layer_figure(ngq_plot_set *set, const ngq_eval_study_entry *e, ngq_error *err)
{
    char name[96], title[256];
    snprintf(name, sizeof name, "layers-%.80s", e->label);
    snprintf(title, sizeof title, "Per-layer relative output error, RTN vs GPTQ on the same grid (%.60s)", e->label);
    ngq_plot_figure *f = add_figure(set, name, title, e->layers_csv, err);
    if (!f) return err->status;
    if (!ngq_file_exists(e->layers_csv)) {
        snprintf(f->status, sizeof f->status, "skipped: %.200s not found (run quantize --variant %.30s)",
                 e->layers_csv, e->variant);
        return NGQ_OK;
    }
    ngq_table t;
    ngq_status st = ngq_table_load_csv(&t, e->layers_csv, err);
    if (st) return st;
    int c_tensor = -1, c_rtn = -1, c_gptq = -1;
    if ((c_tensor = col_or_fail(&t, "tensor", e->layers_csv, err)) < 0 ||
        (c_rtn = col_or_fail(&t, "rtn_rel_error", e->layers_csv, err)) < 0 ||
        (c_gptq = col_or_fail(&t, "gptq_rel_error", e->layers_csv, err)) < 0) {
        ngq_table_free(&t);
        return NGQ_ERR_FORMAT;
    }
    size_t positive = 0;
    char *dat = NULL, *gp = NULL;
    size_t dat_size = 0, gp_size = 0;
    FILE *d = open_memstream(&dat, &dat_size), *g = open_memstream(&gp, &gp_size);
    fprintf(d, "# from %s\n# index rtn_rel_error gptq_rel_error tensor (NaN: not measured)\n", e->layers_csv);
    for (size_t r = 0; r < t.n_rows; r++) {
        double rtn = cell(&t, r, c_rtn), gq = cell(&t, r, c_gptq);
        if (!(rtn > 0)) rtn = NAN; /* a log axis shows only positive errors */
        if (!(gq > 0)) gq = NAN;
        positive += !isnan(rtn) || !isnan(gq);
        char tick[160];
        short_tensor_name(ngq_table_get(&t, r, c_tensor), tick, sizeof tick);
        fprintf(d, "%zu %.6g %.6g ", r, rtn, gq);
        dat_string(d, tick);
        fputc('\n', d);
    }
    int width = 700 + 28 * (int)t.n_rows;
    if (width > 2400) width = 2400;
    gp_header(g, f, width, 640);
    fprintf(g, "set xlabel \"quantized linear layer (block index, layer)\"\n");
    fprintf(g, "set ylabel \"relative output error on calibration inputs (dimensionless, log scale)\"\n");
    fprintf(g, "set logscale y\n");
    fprintf(g, "set format y \"%%.0e\"\n");
    fprintf(g, "set xtics rotate by 45 right font \",9\"\n");
    fprintf(g, "set xrange [-0.7:%zu.7]\n", t.n_rows ? t.n_rows - 1 : 0);
    fprintf(g, "set bmargin 7\n");
    fprintf(g, "set key top left box opaque\n");
    fprintf(g, "plot \"%s.dat\" using 1:2:xtic(4) with linespoints lw 2 pt 5 ps 1.2 lc rgb \"#d62728\" title "
               "\"naive (RTN)\", \\\n",
            f->name);
    fprintf(g, "     \"%s.dat\" using 1:3 with linespoints lw 2 pt 7 ps 1.2 lc rgb \"#1f77b4\" title \"GPTQ\"\n",
            f->name);
    fclose(d);
    fclose(g);
    ngq_table_free(&t);
    if (positive == 0) {
        free(dat);
        free(gp);
        snprintf(f->status, sizeof f->status, "skipped: %.200s has no measured errors", e->layers_csv);
        return NGQ_OK;
    }
    return save_pair(set, f, dat, dat_size, gp, gp_size, err);
}

ngq_status ngq_plot_prepare(ngq_plot_set *set, const ngq_config *cfg, ngq_error *err)
{
    memset(set, 0, sizeof *set);
    set->dir = ngq_strdup_printf("%s", cfg->paths.figures_dir);
    if (!set->dir) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    ngq_status st = ngq_make_dirs(set->dir, err);
    if (!st) st = prepare_loss(set, cfg, err);
    if (!st) st = prepare_eval_figures(set, cfg, err);
    ngq_eval_study study = {0};
    if (!st) st = ngq_eval_study_init(&study, cfg, err);
    for (int i = 1; !st && i < study.count; i++) {
        if (strncmp(study.entries[i].variant, "gptq:", 5) != 0) continue;
        st = prepare_layer_figure(set, &study.entries[i], err);
    }
    ngq_eval_study_free(&study);
    return st;
}

/* ---- running gnuplot -------------------------------------------------------------------- */

int ngq_plot_find_program(const char *name, char *buf, size_t size)
{
    if (strchr(name, '/')) {
        size_t n = strlen(name);
        if (n >= size) return 0;
        memcpy(buf, name, n + 1);
        return access(name, X_OK) == 0;
    }
    const char *path = getenv("PATH");
    if (!path) path = "/usr/bin:/bin";
    for (const char *p = path; *p;) {
        const char *colon = strchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        if (n > 0 && (size_t)snprintf(buf, size, "%.*s/%s", (int)n, p, name) < size) {
            struct stat sb;
            if (stat(buf, &sb) == 0 && S_ISREG(sb.st_mode) && access(buf, X_OK) == 0) return 1;
        }
        p += n;
        if (*p == ':') p++;
    }
    buf[0] = '\0';
    return 0;
}

/* Runs gnuplot on one script inside dir; its output goes to log_fd. */
static int run_gnuplot(const char *gnuplot, const char *dir, const char *script, const char *outfile, int log_fd)
{
    char assign[512];
    snprintf(assign, sizeof assign, "outfile='%s'", outfile);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (chdir(dir) != 0) _exit(126);
        dup2(log_fd, STDOUT_FILENO);
        dup2(log_fd, STDERR_FILENO);
        int null_fd = open("/dev/null", O_RDONLY);
        if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
        execl(gnuplot, "gnuplot", "-e", assign, script, (char *)NULL);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

ngq_status ngq_plot_render(ngq_plot_set *set, const char *gnuplot, ngq_error *err)
{
    char log_path[] = "/tmp/ngq_gnuplot_XXXXXX";
    int log_fd = mkstemp(log_path);
    if (log_fd < 0) return ngq_fail(err, NGQ_ERR_IO, "cannot create a temporary file for gnuplot's output: %s",
                                    strerror(errno));
    unlink(log_path);
    ngq_status st = NGQ_OK;
    for (int i = 0; i < set->count && st == NGQ_OK; i++) {
        ngq_plot_figure *f = &set->figures[i];
        if (!f->prepared) continue;
        if (ftruncate(log_fd, 0) != 0 || lseek(log_fd, 0, SEEK_SET) != 0) {
            st = ngq_fail(err, NGQ_ERR_IO, "cannot reset gnuplot's log: %s", strerror(errno));
            break;
        }
        char tmp_name[160];
        snprintf(tmp_name, sizeof tmp_name, "%s.png.tmp.%ld", f->name, (long)getpid());
        char *tmp_path = ngq_path_join(set->dir, tmp_name);
        int rc = run_gnuplot(gnuplot, set->dir, base_name(f->script), tmp_name, log_fd);
        struct stat sb;
        if (rc == 0 && stat(tmp_path, &sb) == 0 && sb.st_size > 0) {
            if (rename(tmp_path, f->png) != 0) {
                st = ngq_fail(err, NGQ_ERR_IO, "renaming %s to %s: %s", tmp_path, f->png, strerror(errno));
            } else {
                f->rendered = 1;
                snprintf(f->status, sizeof f->status, "rendered");
            }
        } else {
            char msg[600] = "";
            ssize_t n = pread(log_fd, msg, sizeof msg - 1, 0);
            msg[n > 0 ? n : 0] = '\0';
            for (char *c = msg; *c; c++)
                if (*c == '\n') *c = ' ';
            st = ngq_fail(err, NGQ_ERR_IO, "gnuplot %s failed (exit %d): %s", f->script, rc,
                          msg[0] ? msg : "no output (is it a working gnuplot with the pngcairo terminal?)");
            snprintf(f->status, sizeof f->status, "gnuplot failed");
        }
        unlink(tmp_path);
        free(tmp_path);
    }
    close(log_fd);
    return st;
}

void ngq_plot_mark_unrendered(ngq_plot_set *set, const char *reason)
{
    for (int i = 0; i < set->count; i++)
        if (set->figures[i].prepared && !set->figures[i].rendered)
            snprintf(set->figures[i].status, sizeof set->figures[i].status, "not rendered: %s", reason);
}

ngq_status ngq_plot_write_manifest(const ngq_plot_set *set, ngq_error *err)
{
    static const char *const COLS[] = {"name", "file", "title", "source", "status"};
    ngq_table t;
    ngq_status st = ngq_table_init(&t, COLS, 5, err);
    for (int i = 0; st == NGQ_OK && i < set->count; i++) {
        const ngq_plot_figure *f = &set->figures[i];
        size_t r;
        if ((st = ngq_table_add_row(&t, &r, err))) break;
        st = ngq_table_set(&t, r, 0, f->name, err);
        if (!st) st = ngq_table_set(&t, r, 1, base_name(f->png), err);
        if (!st) st = ngq_table_set(&t, r, 2, f->title, err);
        if (!st) st = ngq_table_set(&t, r, 3, f->source, err);
        if (!st) st = ngq_table_set(&t, r, 4, f->status, err);
    }
    char *path = st == NGQ_OK ? ngq_path_join(set->dir, "figures.csv") : NULL;
    if (st == NGQ_OK && !path) st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    if (st == NGQ_OK) st = ngq_table_save_csv(&t, path, err);
    free(path);
    ngq_table_free(&t);
    return st;
}
