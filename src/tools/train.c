/* train: trains the [model] on the token files preprocess wrote. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nanogptq/train.h"
#include "tool.h"

static const ngq_cli_option OPTIONS[] = {
    {"--resume", NULL, "continue from run_dir/checkpoints/last.safetensors and its .state file, bit-exactly"},
    {"--stop-at-step", "N", "stop after step N as if interrupted (writes last; continue later with --resume)"},
};

static const ngq_cli_spec SPEC = {
    .program = "train",
    .summary = "Train the GPT of [model] with AdamW as [train] says, on run_dir/data/{train,val}.tok.\n"
               "Writes run_dir/checkpoints/{last,best}.safetensors and run_dir/train_log.csv.\n"
               "SIGINT/SIGTERM finish the current step, write 'last' and exit 0.",
    .positional = NULL,
    .options = OPTIONS,
    .option_count = sizeof OPTIONS / sizeof OPTIONS[0],
    .epilog = "examples:\n  train --config configs/quick.ini\n"
              "  train --config configs/tinystories.ini --resume\n"
              "  train --config configs/tinystories.ini --set train.max_steps=100",
};

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void on_progress(ngq_train_event event, const ngq_train_progress *p, const char *message, void *user)
{
    (void)user;
    if (event != NGQ_TRAIN_EVENT_STEP) {
        printf("%s\n", message);
        fflush(stdout);
        return;
    }
    char eta[32], elapsed[32];
    ngq_format_duration(p->eta_seconds, eta, sizeof eta);
    ngq_format_duration(p->elapsed_seconds, elapsed, sizeof elapsed);
    printf("step %d/%d | loss %.4f", p->step, p->max_steps, p->train_loss);
    if (!isnan(p->val_loss)) printf(" | val %.4f (ppl %.3f)", p->val_loss, exp(p->val_loss));
    printf(" | lr %.2e | norm %.3f | %.0f tok/s | %s elapsed | eta %s%s%s\n", p->lr, p->grad_norm,
           p->tokens_per_second, elapsed, eta, p->wrote_best ? " | best saved" : "",
           p->wrote_last ? " | last saved" : "");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    ngq_cli cli;
    int rc = ngq_tool_start(argc, argv, &SPEC, &cli);
    if (rc >= 0) return rc;
    ngq_error err = {0};
    ngq_train_options options = {.resume = ngq_cli_get(&cli, &SPEC, "--resume") != NULL,
                                 .stop_requested = &stop_requested,
                                 .callback = on_progress};
    const char *stop_at = ngq_cli_get(&cli, &SPEC, "--stop-at-step");
    if (stop_at) {
        long long v;
        ngq_status st = ngq_cli_parse_int("--stop-at-step", stop_at, 1, cli.cfg.train.max_steps, &v, &err);
        if (st) return ngq_tool_fail(&SPEC, st, &err);
        options.stop_at_step = (int)v;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    ngq_train_result result;
    ngq_status st = ngq_train_run(&cli.cfg, &options, &result, &err);
    if (st) return ngq_tool_fail(&SPEC, st, &err);
    char took[32];
    ngq_format_duration(result.seconds, took, sizeof took);
    printf("%s after %d steps, %lld tokens, %s | final train loss %.4f", result.stopped_early ? "stopped" : "done",
           result.steps_done, (long long)result.tokens_seen, took, result.final_train_loss);
    if (!isnan(result.final_val_loss))
        printf(" | val loss %.4f (ppl %.3f)", result.final_val_loss, exp(result.final_val_loss));
    if (isfinite(result.best_val_loss)) printf(" | best val %.4f", result.best_val_loss);
    printf("\n");
    return 0;
}
