/* run_probe.c: the helper of test_crash.sh and test_limits.sh. Four commands:
 *
 *   run_probe inspect RUN_DIR
 *     Loads what a (possibly killed) training run left in RUN_DIR/checkpoints
 *     through the library and prints one line per file:
 *       last <step>|none, pending <step>|none, best <step>|none,
 *       state <step> <matches: last|pending|nothing>|none, tmp <count>.
 *     Exits 1 (message on stderr) when a file that exists does not load.
 *
 *   run_probe reference OUT_DIR --config FILE [--set K=V ...]
 *     Trains as `train` would (same library call, same runtime set-up) and,
 *     after every step, copies last, last.state and best into OUT_DIR/<step>/:
 *     the files an uninterrupted `train --stop-at-step <step>` leaves. Needs
 *     [train] checkpoint_interval = 1.
 *
 *   run_probe kill [--after-us N] [--when-file GLOB --in DIR] [--then-us N] -- PROGRAM ARG...
 *     Runs PROGRAM and sends it SIGKILL N microseconds after the start, or,
 *     with --when-file, as soon as (after N us) a file whose name matches
 *     the shell pattern GLOB appears in DIR, and --then-us microseconds later. Prints
 *     "killed <ms> ms, pid <pid>" or "exited <code>"; exits 0 unless PROGRAM ended another
 *     way (a failure exit or a signal of its own) or ran for 300 s, which exits 1.
 *
 *   run_probe checkpoint OUT_PATH --config FILE [--set K=V ...]
 *     Writes a randomly initialised fp32 checkpoint of the config's [model]
 *     with the vocabulary in run_dir/data/vocab.txt: a model of any valid
 *     shape without training it. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nanogptq/checkpoint.h"
#include "nanogptq/cli.h"
#include "nanogptq/config.h"
#include "nanogptq/train.h"

/* ---- inspect ----------------------------------------------------------------------------- */

/* Loads an fp32 checkpoint if it exists: 1 loaded, 0 absent, -1 failed. */
static int load_checkpoint(const char *path, ngq_checkpoint_meta *meta, size_t *param_count)
{
    if (!ngq_file_exists(path)) return 0;
    ngq_model model;
    ngq_vocab vocab;
    ngq_error err = {0};
    if (ngq_checkpoint_load(path, &model, &vocab, meta, &err)) {
        fprintf(stderr, "run_probe: %s does not load: %s\n", path, err.message);
        return -1;
    }
    if (param_count) *param_count = model.param_count;
    ngq_model_free(&model);
    ngq_vocab_free(&vocab);
    return 1;
}

static int count_temporary_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

static int inspect(const char *run_dir)
{
    char *dir = ngq_path_join(run_dir, "checkpoints");
    char *last_path = ngq_path_join(dir, "last.safetensors");
    char *pending_path = ngq_path_join(dir, "last.pending.safetensors");
    char *best_path = ngq_path_join(dir, "best.safetensors");
    char *state_path = ngq_path_join(dir, "last.state.safetensors");
    if (!dir || !last_path || !pending_path || !best_path || !state_path) {
        fprintf(stderr, "run_probe: out of memory\n");
        return 1;
    }
    int bad = 0;
    ngq_checkpoint_meta last = {0}, pending = {0}, best = {0};
    size_t params_last = 0, params_pending = 0;
    int has_last = load_checkpoint(last_path, &last, &params_last);
    int has_pending = load_checkpoint(pending_path, &pending, &params_pending);
    int has_best = load_checkpoint(best_path, &best, NULL);
    bad |= has_last < 0 || has_pending < 0 || has_best < 0;
    if (has_last > 0) printf("last %" PRId64 "\n", last.step);
    else printf("last none\n");
    if (has_pending > 0) printf("pending %" PRId64 "\n", pending.step);
    else printf("pending none\n");
    if (has_best > 0) printf("best %" PRId64 "\n", best.step);
    else printf("best none\n");

    size_t params = has_last > 0 ? params_last : has_pending > 0 ? params_pending : 0;
    if (ngq_file_exists(state_path) && params == 0) {
        fprintf(stderr, "run_probe: %s exists without a checkpoint to size it by\n", state_path);
        bad = 1;
    } else if (ngq_file_exists(state_path)) {
        ngq_adamw opt;
        ngq_train_state state;
        ngq_error err = {0};
        if (ngq_adamw_init(&opt, params, 0.9, 0.99, 1e-8, 0.0, NULL, 0, &err) ||
            ngq_train_state_load(state_path, &opt, &state, &err)) {
            fprintf(stderr, "run_probe: %s does not load: %s\n", state_path, err.message);
            bad = 1;
        } else {
            const char *matches = "nothing";
            if (has_last > 0 && strcmp(state.checkpoint_checksum, last.checksum) == 0) matches = "last";
            else if (has_pending > 0 && strcmp(state.checkpoint_checksum, pending.checksum) == 0) matches = "pending";
            printf("state %" PRId64 " %s\n", state.step, matches);
        }
        ngq_adamw_free(&opt);
    } else {
        printf("state none\n");
    }
    printf("tmp %d\n", count_temporary_files(dir));
    free(dir);
    free(last_path);
    free(pending_path);
    free(best_path);
    free(state_path);
    return bad;
}

/* ---- reference ----------------------------------------------------------------------------- */

typedef struct {
    const ngq_config *cfg;
    const char *out_dir;
    int failed;
} reference_run;

static int copy_file(const char *from, const char *to)
{
    char *data;
    size_t size;
    ngq_error err = {0};
    if (ngq_read_file(from, &data, &size, &err)) return -1;
    ngq_status st = ngq_write_file_atomic(to, data, size, &err);
    free(data);
    return st == NGQ_OK ? 0 : -1;
}

static void on_step(ngq_train_event event, const ngq_train_progress *p, const char *message, void *user)
{
    (void)message;
    reference_run *r = user;
    if (event != NGQ_TRAIN_EVENT_STEP || r->failed) return;
    if (!p->wrote_last) {
        fprintf(stderr, "run_probe: step %d wrote no checkpoint: set train.checkpoint_interval=1\n", p->step);
        r->failed = 1;
        return;
    }
    char *step_dir = ngq_strdup_printf("%s/%d", r->out_dir, p->step);
    ngq_error err = {0};
    if (!step_dir || ngq_make_dirs(step_dir, &err)) {
        r->failed = 1;
        free(step_dir);
        return;
    }
    const char *names[] = {"last.safetensors", "last.state.safetensors", "best.safetensors"};
    for (int i = 0; i < 3; i++) {
        char *from = ngq_config_checkpoint_path(r->cfg, names[i]);
        char *to = ngq_path_join(step_dir, names[i]);
        if (!from || !to || (ngq_file_exists(from) && copy_file(from, to))) {
            fprintf(stderr, "run_probe: cannot copy %s to %s\n", from ? from : names[i], step_dir);
            r->failed = 1;
        }
        free(from);
        free(to);
    }
    free(step_dir);
}

static const ngq_cli_spec REFERENCE_SPEC = {
    .program = "run_probe reference",
    .summary = "trains like train and keeps each step's checkpoints",
    .positional = "OUT_DIR",
};

static int reference(int argc, char **argv)
{
    ngq_cli cli;
    ngq_error err = {0};
    if (ngq_cli_parse(argc, argv, &REFERENCE_SPEC, &cli, &err) || cli.positional_count != 1) {
        fprintf(stderr, "run_probe reference: %s\n", err.message[0] ? err.message : "need OUT_DIR");
        return 1;
    }
    ngq_runtime_setup(&cli.cfg);
    cli.cfg.train.log_interval = 1; /* a callback after every step; changes no file */
    reference_run r = {.cfg = &cli.cfg, .out_dir = cli.positional[0]};
    ngq_train_options options = {.callback = on_step, .user = &r};
    ngq_train_result result;
    ngq_status st = ngq_train_run(&cli.cfg, &options, &result, &err);
    if (st) {
        fprintf(stderr, "run_probe reference: %s\n", err.message);
        return 1;
    }
    printf("reference: %d steps in %.3f s\n", result.steps_done, result.seconds);
    return r.failed;
}

/* ---- checkpoint ---------------------------------------------------------------------------- */

static const ngq_cli_spec CHECKPOINT_SPEC = {
    .program = "run_probe checkpoint",
    .summary = "writes an untrained checkpoint of [model]",
    .positional = "OUT_PATH",
};

static int write_checkpoint(int argc, char **argv)
{
    ngq_cli cli;
    ngq_error err = {0};
    if (ngq_cli_parse(argc, argv, &CHECKPOINT_SPEC, &cli, &err) || cli.positional_count != 1) {
        fprintf(stderr, "run_probe checkpoint: %s\n", err.message[0] ? err.message : "need OUT_PATH");
        return 1;
    }
    const ngq_config *cfg = &cli.cfg;
    char *vocab_path = ngq_config_data_path(cfg, "vocab.txt");
    ngq_vocab vocab = {0};
    ngq_model model = {0};
    ngq_status st = vocab_path ? ngq_vocab_read(&vocab, vocab_path, &err) : NGQ_ERR_NOMEM;
    ngq_model_config mc = {
        .vocab_size = vocab.size,
        .block_size = cfg->model.block_size,
        .n_layer = cfg->model.n_layer,
        .n_head = cfg->model.n_head,
        .n_embd = cfg->model.n_embd,
        .bias = cfg->model.bias,
        .tie_embeddings = cfg->model.tie_embeddings,
        .dropout = (float)cfg->model.dropout,
        .init_std = (float)cfg->model.init_std,
    };
    if (st == NGQ_OK) st = ngq_model_init(&model, &mc, &err);
    if (st == NGQ_OK) {
        ngq_rng rng;
        ngq_rng_seed(&rng, (uint64_t)cfg->run.seed, 1);
        ngq_model_init_weights(&model, &rng);
        ngq_checkpoint_meta meta = {.seed = (uint64_t)cfg->run.seed, .val_loss = NAN};
        st = ngq_checkpoint_save(cli.positional[0], &model, &vocab, &meta, NULL, &err);
    }
    if (st) fprintf(stderr, "run_probe checkpoint: %s\n", err.message);
    ngq_model_free(&model);
    ngq_vocab_free(&vocab);
    free(vocab_path);
    return st ? 1 : 0;
}

/* ---- kill ------------------------------------------------------------------------------------ */

static double now_us(void)
{
    return ngq_now_seconds() * 1e6;
}

static void sleep_us(double us)
{
    if (us <= 0) return;
    struct timespec ts = {(time_t)(us / 1e6), (long)((us - (double)(time_t)(us / 1e6) * 1e6) * 1e3)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int dir_has_file(const char *dir, const char *pattern)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d))) found = fnmatch(pattern, e->d_name, 0) == 0;
    closedir(d);
    return found;
}

/* 1 when the child has ended (status filled), else 0. */
static int child_ended(pid_t pid, int *status)
{
    return waitpid(pid, status, WNOHANG) == pid;
}

static int report_exit(int status)
{
    if (WIFEXITED(status)) {
        printf("exited %d\n", WEXITSTATUS(status));
        return WEXITSTATUS(status) == 0 ? 0 : 1;
    }
    printf("signalled %d\n", WIFSIGNALED(status) ? WTERMSIG(status) : -1);
    return 1;
}

static int kill_run(int argc, char **argv)
{
    double after_us = 0, then_us = 0;
    const char *when_file = NULL, *in_dir = NULL;
    int i = 0;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (i + 1 >= argc) break;
        if (strcmp(argv[i], "--after-us") == 0) after_us = atof(argv[++i]);
        else if (strcmp(argv[i], "--then-us") == 0) then_us = atof(argv[++i]);
        else if (strcmp(argv[i], "--when-file") == 0) when_file = argv[++i];
        else if (strcmp(argv[i], "--in") == 0) in_dir = argv[++i];
        else break;
    }
    if (i >= argc || strcmp(argv[i], "--") != 0 || i + 1 >= argc || (when_file && !in_dir)) {
        fprintf(stderr, "usage: run_probe kill [--after-us N] [--when-file GLOB --in DIR] [--then-us N] -- "
                        "PROGRAM ARG...\n");
        return 2;
    }
    char **child_argv = argv + i + 1;
    fflush(stdout);
    double t0 = now_us();
    pid_t pid = fork();
    if (pid < 0) {
        perror("run_probe: fork");
        return 2;
    }
    if (pid == 0) {
        execv(child_argv[0], child_argv);
        perror("run_probe: exec");
        _exit(127);
    }
    int status;
    const double limit_us = 300e6; /* a hung child is a failure, not a wait forever */
    /* wait out the delay, watching for an early exit */
    while (now_us() - t0 < after_us) {
        if (child_ended(pid, &status)) return report_exit(status);
        double left = after_us - (now_us() - t0);
        sleep_us(left < 500 ? left : 500);
    }
    if (when_file) {
        while (!dir_has_file(in_dir, when_file)) {
            if (child_ended(pid, &status)) return report_exit(status);
            if (now_us() - t0 > limit_us) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                printf("timed out after %.0f s\n", limit_us / 1e6);
                return 1;
            }
            sleep_us(100);
        }
        sleep_us(then_us);
    }
    if (child_ended(pid, &status)) return report_exit(status);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
        printf("killed %.1f ms, pid %ld\n", (now_us() - t0) / 1e3, (long)pid);
        return 0;
    }
    return report_exit(status); /* it ended by itself just before the signal */
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "inspect") == 0) return inspect(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "reference") == 0) return reference(argc - 1, argv + 1);
    if (argc >= 3 && strcmp(argv[1], "kill") == 0) return kill_run(argc - 2, argv + 2);
    if (argc >= 3 && strcmp(argv[1], "checkpoint") == 0) return write_checkpoint(argc - 1, argv + 1);
    fprintf(stderr, "usage: run_probe inspect RUN_DIR | reference OUT_DIR --config FILE [--set K=V ...] | "
                    "kill [...] -- PROGRAM ARG... | checkpoint OUT_PATH --config FILE [--set K=V ...]\n");
    return 2;
}
