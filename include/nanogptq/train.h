/* train.h: the training loop. Reads the token files and vocabulary that
 * preprocess wrote, trains the [model] with AdamW as [train] says, evaluates
 * a fixed set of validation windows every eval_interval steps, logs every
 * step to run_dir/train_log.csv, and writes checkpoints atomically to
 * run_dir/checkpoints/ (last.safetensors + last.state.safetensors every
 * checkpoint_interval steps and at the end; best.safetensors on a new best
 * validation loss). The pair last + last.state is replaced so that a matching
 * pair is on disk at every moment: a process killed at any point leaves the
 * old pair or the new one, the new checkpoint possibly still named
 * last.pending.safetensors, which --resume renames into place. Temporary
 * files ("<name>.tmp.<pid>") of a killed process are left behind.
 * It reports progress through a callback and never prints.
 * A stop request (e.g. from a signal handler) ends the loop after the current
 * step with `last` written; a NaN/Inf loss or gradient stops it with an error
 * naming the step and leaves the last good checkpoint in place. */
#ifndef NANOGPTQ_TRAIN_H
#define NANOGPTQ_TRAIN_H

#include <signal.h>
#include <stdint.h>

#include "nanogptq/common.h"
#include "nanogptq/config.h"

typedef struct {
    int step;            /* steps done (1-based after the first) */
    int max_steps;
    double lr;
    double train_loss;   /* mean over the step's micro-batches */
    double val_loss;     /* NaN when not evaluated at this step */
    double grad_norm;    /* before clipping */
    double tokens_per_second;
    double elapsed_seconds;
    double eta_seconds;
    int64_t tokens_seen;
    int wrote_last, wrote_best;
} ngq_train_progress;

typedef enum {
    NGQ_TRAIN_EVENT_START,   /* message describes the model and data */
    NGQ_TRAIN_EVENT_STEP,    /* a logged step (every log_interval, and evals) */
    NGQ_TRAIN_EVENT_NOTE     /* a one-line note (resume, checkpoint, stop) */
} ngq_train_event;

typedef void (*ngq_train_callback)(ngq_train_event event, const ngq_train_progress *progress, const char *message,
                                   void *user);

typedef struct {
    int resume;                            /* continue from run_dir/checkpoints/last.* */
    int stop_at_step;                      /* stop (as if asked) once this many steps are done; 0 = off */
    volatile sig_atomic_t *stop_requested; /* polled after every step; may be NULL */
    ngq_train_callback callback;           /* may be NULL */
    void *user;
} ngq_train_options;

typedef struct {
    int steps_done;
    int stopped_early;
    double final_train_loss, final_val_loss, best_val_loss;
    int64_t tokens_seen;
    double seconds;
    size_t param_count;
} ngq_train_result;

ngq_status ngq_train_run(const ngq_config *cfg, const ngq_train_options *options, ngq_train_result *result,
                         ngq_error *err);

/* The fixed validation windows: count offsets evenly spaced over
 * [0, n_tokens - T - 1], the same every evaluation. */
void ngq_train_val_offsets(size_t n_tokens, int T, int count, size_t *offsets);

#endif
