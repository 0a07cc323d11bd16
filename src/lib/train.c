/* train.c: the training loop (see train.h). */
#include "nanogptq/train.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nanogptq/checkpoint.h"
#include "nanogptq/model.h"
#include "nanogptq/optim.h"
#include "nanogptq/rng.h"
#include "nanogptq/tokens.h"
#include "nanogptq/vocab.h"

#define LOG_HEADER "step,lr,train_loss,val_loss,grad_norm,tokens_per_s,elapsed_s\n"

void ngq_train_val_offsets(size_t n_tokens, int T, int count, size_t *offsets)
{
    size_t span = n_tokens > (size_t)T + 1 ? n_tokens - (size_t)T - 1 : 0;
    for (int i = 0; i < count; i++)
        offsets[i] = count > 1 ? (size_t)((double)span * (double)i / (double)(count - 1)) : 0;
}

typedef struct {
    const ngq_config *cfg;
    ngq_model_config mc;
    ngq_vocab vocab;
    ngq_tokens train, val;
    ngq_model model;
    ngq_activations acts;
    ngq_adamw opt;
    uint16_t *inputs, *targets; /* (B,T) batch buffers */
    size_t *val_offsets;
    char *ckpt_dir, *last_path, *last_pending_path, *last_state_path, *best_path, *log_path;
    FILE *log;
} trainer;

static void trainer_free(trainer *t)
{
    if (t->log) fclose(t->log);
    free(t->ckpt_dir);
    free(t->last_path);
    free(t->last_pending_path);
    free(t->last_state_path);
    free(t->best_path);
    free(t->log_path);
    free(t->inputs);
    free(t->targets);
    free(t->val_offsets);
    ngq_adamw_free(&t->opt);
    ngq_activations_free(&t->acts);
    ngq_model_free(&t->model);
    ngq_tokens_free(&t->train);
    ngq_tokens_free(&t->val);
    ngq_vocab_free(&t->vocab);
}

static void notify(const ngq_train_options *o, ngq_train_event ev, const ngq_train_progress *p, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void notify(const ngq_train_options *o, ngq_train_event ev, const ngq_train_progress *p, const char *fmt, ...)
{
    if (!o || !o->callback) return;
    char msg[512] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    o->callback(ev, p, msg, o->user);
}

static ngq_status load_data(trainer *t, ngq_error *err)
{
    const ngq_config *cfg = t->cfg;
    char *vocab_path = ngq_config_data_path(cfg, "vocab.txt");
    char *train_path = ngq_config_data_path(cfg, "train.tok");
    char *val_path = ngq_config_data_path(cfg, "val.tok");
    ngq_status st = ngq_vocab_read(&t->vocab, vocab_path, err);
    if (st == NGQ_ERR_IO) ngq_error_prefix(err, "run preprocess first");
    if (st == NGQ_OK) st = ngq_tokens_read(&t->train, train_path, err);
    if (st == NGQ_OK) st = ngq_tokens_read(&t->val, val_path, err);
    if (st == NGQ_OK && (t->train.vocab_hash != t->vocab.hash || t->val.vocab_hash != t->vocab.hash))
        st = ngq_fail(err, NGQ_ERR_FORMAT, "%s or %s was made with another vocabulary than %s: run preprocess again",
                      train_path, val_path, vocab_path);
    int T = cfg->model.block_size;
    if (st == NGQ_OK && t->train.count < (size_t)T + 2)
        st = ngq_fail(err, NGQ_ERR_FORMAT, "%s holds %zu tokens, fewer than [model] block_size + 2 = %d", train_path,
                      t->train.count, T + 2);
    if (st == NGQ_OK && t->val.count < (size_t)T + 1)
        st = ngq_fail(err, NGQ_ERR_FORMAT,
                      "%s holds %zu tokens, fewer than [model] block_size + 1 = %d: raise [data] val_fraction", val_path,
                      t->val.count, T + 1);
    free(vocab_path);
    free(train_path);
    free(val_path);
    return st;
}

static ngq_status check_memory(const ngq_model_config *mc, int B, int T, ngq_error *err)
{
    size_t need = ngq_model_memory_bytes(mc, B, T);
    size_t params = ngq_model_param_count(mc);
    if (need == SIZE_MAX || params > SIZE_MAX / 16)
        return ngq_fail(err, NGQ_ERR_CONFIG, "the [model] and [train] sizes overflow the address space");
    need += 2 * params * sizeof(float);
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && page_size > 0) {
        double have = (double)pages * (double)page_size;
        if ((double)need > have)
            return ngq_fail(err, NGQ_ERR_NOMEM,
                            "training this model at batch_size %d x block_size %d needs %.2f GiB, more than the %.2f GiB of "
                            "memory here: lower [train] batch_size or the [model] sizes",
                            B, T, (double)need / (1 << 30), have / (1 << 30));
    }
    return NGQ_OK;
}

static void fill_batch(trainer *t, ngq_rng *rng, int B, int T)
{
    uint32_t span = (uint32_t)(t->train.count - (size_t)T - 1);
    for (int b = 0; b < B; b++) {
        size_t off = ngq_rng_below(rng, span + 1);
        memcpy(t->inputs + (size_t)b * T, t->train.tokens + off, (size_t)T * sizeof(uint16_t));
        memcpy(t->targets + (size_t)b * T, t->train.tokens + off + 1, (size_t)T * sizeof(uint16_t));
    }
}

static ngq_status eval_val(trainer *t, double *loss, ngq_error *err)
{
    int B = t->cfg->train.batch_size, T = t->cfg->model.block_size, W = t->cfg->train.eval_windows;
    double sum = 0;
    for (int w0 = 0; w0 < W; w0 += B) {
        int nb = W - w0 < B ? W - w0 : B;
        for (int b = 0; b < nb; b++) {
            size_t off = t->val_offsets[w0 + b];
            memcpy(t->inputs + (size_t)b * T, t->val.tokens + off, (size_t)T * sizeof(uint16_t));
            memcpy(t->targets + (size_t)b * T, t->val.tokens + off + 1, (size_t)T * sizeof(uint16_t));
        }
        float mean;
        ngq_status st = ngq_model_forward(&t->model, &t->acts, t->inputs, t->targets, nb, T, NULL, &mean, err);
        if (st) return st;
        sum += (double)mean * nb;
    }
    *loss = sum / W;
    return NGQ_OK;
}

/* Deletes "<name>.tmp.<pid>" files that a killed run left in dir: those
 * whose process is gone. A live process's temporaries are left alone. */
static void remove_stale_temporaries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *mark = strstr(e->d_name, ".tmp.");
        if (!mark) continue;
        char *end;
        long pid = strtol(mark + 5, &end, 10);
        if (*end || pid <= 0) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* running (or not ours to judge) */
        char *path = ngq_path_join(dir, e->d_name);
        if (path) unlink(path);
        free(path);
    }
    closedir(d);
}

static ngq_status promote_pending(const trainer *t, ngq_error *err)
{
    if (rename(t->last_pending_path, t->last_path) != 0)
        return ngq_fail(err, NGQ_ERR_IO, "%s: cannot rename %s into place: %s", t->last_path, t->last_pending_path,
                        strerror(errno));
    int fd = open(t->ckpt_dir, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    return NGQ_OK;
}

/* Replaces the pair last + last.state so that a matching pair is on disk at
 * every moment: the checkpoint goes to last.pending, then the state (which
 * names that checkpoint's checksum) replaces last.state, then last.pending is
 * renamed over last. resume() finishes a replacement stopped before the rename;
 * one stopped before the state was written leaves the old pair. */
static ngq_status save_last(trainer *t, const ngq_checkpoint_meta *meta, ngq_train_state *state, ngq_error *err)
{
    ngq_status st =
        ngq_checkpoint_save(t->last_pending_path, &t->model, &t->vocab, meta, state->checkpoint_checksum, err);
    if (st) {
        ngq_error_prefix(err, "writing %s", t->last_path);
        return st;
    }
    if ((st = ngq_train_state_save(t->last_state_path, &t->opt, state, err))) {
        unlink(t->last_pending_path);
        return st;
    }
    return promote_pending(t, err);
}

/* One metadata value of a safetensors file into buf; 0 when unreadable or absent. */
static int read_metadata_value(const char *path, const char *key, char *buf, size_t size)
{
    ngq_st_file *f = NULL;
    ngq_error ignored = {0};
    if (ngq_st_open(&f, path, &ignored)) return 0;
    const char *value = ngq_st_metadata_value(f, key);
    if (value) snprintf(buf, size, "%s", value);
    ngq_st_close(f);
    return value != NULL;
}

/* Finishes a save_last() that stopped between writing the state and the
 * rename: last.pending is the state's checkpoint. A last.pending the state
 * does not name was never paired with a state; it is removed. */
static ngq_status finish_interrupted_save(const trainer *t, ngq_error *err)
{
    if (!ngq_file_exists(t->last_pending_path)) return NGQ_OK;
    char pending_sum[64], state_sum[64];
    if (read_metadata_value(t->last_pending_path, NGQ_ST_CHECKSUM_KEY, pending_sum, sizeof pending_sum) &&
        read_metadata_value(t->last_state_path, "nanogptq.checkpoint_checksum", state_sum, sizeof state_sum) &&
        strcmp(pending_sum, state_sum) == 0)
        return promote_pending(t, err);
    unlink(t->last_pending_path);
    return NGQ_OK;
}

/* Keeps the log's rows up to `step` (a resumed run rewrites what follows) and
 * returns the elapsed seconds of the last kept row. */
static ngq_status truncate_log(const char *path, int step, double *elapsed, ngq_error *err)
{
    *elapsed = 0;
    char *text;
    size_t size;
    ngq_status st = ngq_read_file(path, &text, &size, err);
    if (st) return st;
    size_t keep = 0;
    char *line = text;
    while (*line) {
        char *nl = strchr(line, '\n');
        if (!nl) break;
        int row_step;
        if (line != text && sscanf(line, "%d,", &row_step) == 1) {
            if (row_step > step) break;
            const char *last_comma = NULL;
            for (const char *c = line; c < nl; c++)
                if (*c == ',') last_comma = c;
            if (last_comma) *elapsed = strtod(last_comma + 1, NULL);
        }
        keep = (size_t)(nl - text) + 1;
        line = nl + 1;
    }
    st = ngq_write_file_atomic(path, text, keep, err);
    free(text);
    return st;
}

static int same_model(const ngq_model_config *a, const ngq_model_config *b)
{
    return a->vocab_size == b->vocab_size && a->block_size == b->block_size && a->n_layer == b->n_layer &&
           a->n_head == b->n_head && a->n_embd == b->n_embd && a->bias == b->bias &&
           a->tie_embeddings == b->tie_embeddings;
}

static ngq_status resume(trainer *t, ngq_train_state *state, double *elapsed_before, ngq_error *err)
{
    ngq_model loaded;
    ngq_vocab vocab;
    ngq_checkpoint_meta meta;
    ngq_status st = finish_interrupted_save(t, err);
    if (st) return ngq_error_prefix(err, "--resume");
    if ((st = ngq_checkpoint_load(t->last_path, &loaded, &vocab, &meta, err))) return ngq_error_prefix(err, "--resume");
    int same = same_model(&meta.model, &t->mc) && vocab.hash == t->vocab.hash;
    if (same) memcpy(t->model.params, loaded.params, t->model.param_count * sizeof(float));
    ngq_model_free(&loaded);
    ngq_vocab_free(&vocab);
    if (!same)
        return ngq_fail(err, NGQ_ERR_CONFIG,
                        "--resume: %s was trained with another [model] configuration or vocabulary than the config asks",
                        t->last_path);
    if ((st = ngq_train_state_load(t->last_state_path, &t->opt, state, err))) return ngq_error_prefix(err, "--resume");
    if (strcmp(state->checkpoint_checksum, meta.checksum) != 0 || state->step != meta.step)
        return ngq_fail(err, NGQ_ERR_FORMAT,
                        "--resume: %s (step %" PRId64 ") does not belong to %s (step %" PRId64
                        "): the run was stopped while writing them",
                        t->last_state_path, state->step, t->last_path, meta.step);
    if (state->step > t->cfg->train.max_steps)
        return ngq_fail(err, NGQ_ERR_CONFIG, "--resume: the checkpoint is at step %" PRId64 ", past [train] max_steps = %d",
                        state->step, t->cfg->train.max_steps);
    return truncate_log(t->log_path, (int)state->step, elapsed_before, err);
}

ngq_status ngq_train_run(const ngq_config *cfg, const ngq_train_options *options, ngq_train_result *result,
                         ngq_error *err)
{
    double t_start = ngq_now_seconds();
    memset(result, 0, sizeof *result);
    trainer t;
    memset(&t, 0, sizeof t);
    t.cfg = cfg;
    const int B = cfg->train.batch_size, T = cfg->model.block_size, accum = cfg->train.grad_accum;
    ngq_status st = load_data(&t, err);
    if (st) goto done;

    t.mc = (ngq_model_config){
        .vocab_size = t.vocab.size,
        .block_size = T,
        .n_layer = cfg->model.n_layer,
        .n_head = cfg->model.n_head,
        .n_embd = cfg->model.n_embd,
        .bias = cfg->model.bias,
        .tie_embeddings = cfg->model.tie_embeddings,
        .dropout = (float)cfg->model.dropout,
        .init_std = (float)cfg->model.init_std,
    };
    if ((st = ngq_model_config_validate(&t.mc, err))) goto done;
    if ((st = check_memory(&t.mc, B, T, err))) goto done;
    if ((st = ngq_model_init(&t.model, &t.mc, err))) goto done;
    if ((st = ngq_model_init_grads(&t.model, err))) goto done;
    if ((st = ngq_activations_init(&t.acts, &t.mc, B, T, err))) goto done;

    int n_tensors = ngq_model_tensor_count(&t.mc);
    ngq_range *decay = calloc((size_t)n_tensors, sizeof *decay);
    int n_decay = 0;
    for (int i = 0; decay && i < n_tensors; i++) {
        ngq_tensor_info info;
        if ((st = ngq_model_tensor_info(&t.mc, i, &info, err))) break;
        if (info.is_matrix) decay[n_decay++] = (ngq_range){info.offset, info.offset + info.numel};
    }
    if (!decay) st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    if (st == NGQ_OK)
        st = ngq_adamw_init(&t.opt, t.model.param_count, cfg->train.beta1, cfg->train.beta2, cfg->train.eps,
                            cfg->train.weight_decay, decay, n_decay, err);
    free(decay);
    if (st) goto done;

    t.inputs = malloc((size_t)B * T * sizeof *t.inputs);
    t.targets = malloc((size_t)B * T * sizeof *t.targets);
    t.val_offsets = malloc((size_t)cfg->train.eval_windows * sizeof *t.val_offsets);
    t.ckpt_dir = ngq_strdup_printf("%s/checkpoints", cfg->paths.run_dir);
    t.last_path = ngq_config_checkpoint_path(cfg, "last.safetensors");
    t.last_pending_path = ngq_config_checkpoint_path(cfg, "last.pending.safetensors");
    t.last_state_path = ngq_config_checkpoint_path(cfg, "last.state.safetensors");
    t.best_path = ngq_config_checkpoint_path(cfg, "best.safetensors");
    t.log_path = ngq_strdup_printf("%s/train_log.csv", cfg->paths.run_dir);
    if (!t.inputs || !t.targets || !t.val_offsets || !t.ckpt_dir || !t.last_path || !t.last_pending_path ||
        !t.last_state_path || !t.best_path || !t.log_path) {
        st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    ngq_train_val_offsets(t.val.count, T, cfg->train.eval_windows, t.val_offsets);
    if ((st = ngq_make_dirs(t.ckpt_dir, err))) goto done;
    remove_stale_temporaries(t.ckpt_dir);

    ngq_train_state state = {.best_val_loss = INFINITY};
    ngq_rng_seed(&state.data_rng, (uint64_t)cfg->run.seed, 2);
    double elapsed_before = 0;
    if (options->resume) {
        if ((st = resume(&t, &state, &elapsed_before, err))) goto done;
        notify(options, NGQ_TRAIN_EVENT_NOTE, NULL, "resumed from %s at step %" PRId64 " (%" PRId64 " tokens seen)",
               t.last_path, state.step, state.tokens_seen);
    } else {
        ngq_rng init_rng;
        ngq_rng_seed(&init_rng, (uint64_t)cfg->run.seed, 1);
        ngq_model_init_weights(&t.model, &init_rng);
        if ((st = ngq_write_file_atomic(t.log_path, LOG_HEADER, strlen(LOG_HEADER), err))) goto done;
    }
    t.log = fopen(t.log_path, "a");
    if (!t.log) {
        st = ngq_fail(err, NGQ_ERR_IO, "%s: cannot append to the training log", t.log_path);
        goto done;
    }
    result->param_count = t.model.param_count;
    notify(options, NGQ_TRAIN_EVENT_START, NULL,
           "model %zu parameters (%d layers, %d heads, n_embd %d, block %d, vocab %d) | train %zu tokens, val %zu | "
           "%d x %d x %d = %d tokens a step | %d steps",
           t.model.param_count, t.mc.n_layer, t.mc.n_head, t.mc.n_embd, T, t.mc.vocab_size, t.train.count,
           t.val.count, B, accum, T, B * accum * T, cfg->train.max_steps);

    ngq_lr_schedule schedule = {cfg->train.learning_rate, cfg->train.min_lr, cfg->train.warmup_steps,
                                cfg->train.max_steps};
    ngq_checkpoint_meta meta = {.model = t.mc, .seed = (uint64_t)cfg->run.seed, .val_loss = NAN};
    const int start_step = (int)state.step;
    double t_loop = ngq_now_seconds(), t_window = t_loop;
    int64_t window_tokens = 0;
    ngq_train_progress p = {0};
    p.max_steps = cfg->train.max_steps;
    result->final_val_loss = NAN;
    for (int step = start_step; step < cfg->train.max_steps; step++) {
        ngq_model_zero_grad(&t.model);
        double loss_sum = 0;
        ngq_forward_mode mode = {.training = 1, .seed = (uint64_t)cfg->run.seed, .step = (uint64_t)step};
        for (int micro = 0; micro < accum; micro++) {
            fill_batch(&t, &state.data_rng, B, T);
            float loss;
            if ((st = ngq_model_forward(&t.model, &t.acts, t.inputs, t.targets, B, T, &mode, &loss, err)) ||
                (st = ngq_model_backward(&t.model, &t.acts, 1.0f / (float)accum, err))) {
                if (st == NGQ_ERR_NUMERIC)
                    ngq_error_prefix(err, "step %d: training stopped. The last good checkpoint (step %" PRId64 ") is %s",
                                     step + 1, state.step, t.last_path);
                goto done;
            }
            loss_sum += loss;
        }
        double train_loss = loss_sum / accum;
        double norm = ngq_grad_norm(t.model.grads, t.model.param_count);
        if (!isfinite(train_loss) || !isfinite(norm)) {
            st = ngq_fail(err, NGQ_ERR_NUMERIC,
                          "step %d: %s is %g; training stopped. The last good checkpoint (step %" PRId64 ") is %s",
                          step + 1, isfinite(train_loss) ? "the gradient norm" : "the loss",
                          isfinite(train_loss) ? norm : train_loss, state.step, t.last_path);
            goto done;
        }
        double lr = ngq_lr_at(&schedule, step);
        ngq_adamw_step(&t.opt, t.model.params, t.model.grads, ngq_clip_scale(norm, cfg->train.grad_clip), lr);
        state.step = step + 1;
        state.tokens_seen += (int64_t)B * T * accum;
        window_tokens += (int64_t)B * T * accum;

        int last_step = step + 1 == cfg->train.max_steps;
        int stop = (options->stop_requested && *options->stop_requested) ||
                   (options->stop_at_step > 0 && step + 1 >= options->stop_at_step);
        p.val_loss = NAN;
        p.wrote_best = p.wrote_last = 0;
        if ((step + 1) % cfg->train.eval_interval == 0 || last_step) {
            if ((st = eval_val(&t, &p.val_loss, err))) goto done;
            result->final_val_loss = p.val_loss;
            if (p.val_loss < state.best_val_loss) {
                state.best_val_loss = p.val_loss;
                meta.step = state.step;
                meta.tokens_seen = state.tokens_seen;
                meta.val_loss = p.val_loss;
                if ((st = ngq_checkpoint_save(t.best_path, &t.model, &t.vocab, &meta, NULL, err))) goto done;
                p.wrote_best = 1;
            }
        }
        double now = ngq_now_seconds();
        p.step = step + 1;
        p.lr = lr;
        p.train_loss = train_loss;
        p.grad_norm = norm;
        p.tokens_seen = state.tokens_seen;
        p.elapsed_seconds = elapsed_before + (now - t_loop);
        p.eta_seconds = (now - t_loop) / (step + 1 - start_step) * (cfg->train.max_steps - step - 1);
        p.tokens_per_second = (double)window_tokens / (now - t_window > 1e-9 ? now - t_window : 1e-9);
        char val_text[32] = "";
        if (!isnan(p.val_loss)) snprintf(val_text, sizeof val_text, "%.6f", p.val_loss);
        fprintf(t.log, "%d,%.6e,%.6f,%s,%.6f,%.1f,%.2f\n", p.step, lr, train_loss, val_text, norm,
                p.tokens_per_second, p.elapsed_seconds);
        if (fflush(t.log) != 0 || ferror(t.log)) {
            st = ngq_fail(err, NGQ_ERR_IO, "%s: write failed: %s", t.log_path, strerror(errno));
            goto done;
        }
        /* after the log row: a run stopped in between resumes from the previous
         * checkpoint, which drops the row, instead of from this one without it */
        if ((step + 1) % cfg->train.checkpoint_interval == 0 || last_step || stop) {
            meta.step = state.step;
            meta.tokens_seen = state.tokens_seen;
            meta.val_loss = p.val_loss;
            if ((st = save_last(&t, &meta, &state, err))) goto done;
            p.wrote_last = 1;
        }
        if ((step + 1) % cfg->train.log_interval == 0 || !isnan(p.val_loss) || last_step || stop ||
            step == start_step) {
            notify(options, NGQ_TRAIN_EVENT_STEP, &p, NULL);
            t_window = now;
            window_tokens = 0;
        }
        result->final_train_loss = train_loss;
        if (stop && !last_step) {
            result->stopped_early = 1;
            notify(options, NGQ_TRAIN_EVENT_NOTE, &p, "stopped at step %d; wrote %s (continue with --resume)", p.step,
                   t.last_path);
            break;
        }
    }
    result->steps_done = (int)state.step;
    result->best_val_loss = state.best_val_loss;
    result->tokens_seen = state.tokens_seen;
done:
    result->seconds = ngq_now_seconds() - t_start;
    trainer_free(&t);
    return st;
}
