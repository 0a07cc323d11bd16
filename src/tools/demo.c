/* demo: serves the side-by-side web demo (demo.h) until SIGINT or SIGTERM,
 * then stops the server, frees every model and exits 0. */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "nanogptq/demo.h"
#include "tool.h"

static const ngq_cli_option OPTIONS[] = {
    {"--port", "N", "TCP port to listen on (default [demo] port; 0 = any free port)"},
};

static const ngq_cli_spec SPEC = {
    .program = "demo",
    .summary = "A local web page that continues one prompt with the baseline and its quantized variants side by\n"
               "side, with perplexity (run_dir/results/eval.csv), size, bits/weight and speed.\n"
               "Checkpoints: [demo] variants (name=path, ...), or the baseline and every [quantize] variant that\n"
               "exists. Binds to [demo] host. SIGINT/SIGTERM stop it cleanly.",
    .positional = NULL,
    .options = OPTIONS,
    .option_count = sizeof OPTIONS / sizeof OPTIONS[0],
    .epilog = "examples:\n  demo --config configs/tinystories.ini\n"
              "  demo --config configs/quick.ini --port 0\n"
              "  demo --config configs/quick.ini --set 'demo.variants=fp32=runs/quick/checkpoints/best.safetensors, "
              "q4=runs/quick/checkpoints/gptq-4b-g64.safetensors'",
};

int main(int argc, char **argv)
{
    ngq_cli cli;
    int rc = ngq_tool_start(argc, argv, &SPEC, &cli);
    if (rc >= 0) return rc;
    ngq_error err = {0};
    const ngq_config *cfg = &cli.cfg;
    long long port = cfg->demo.port;
    const char *value = ngq_cli_get(&cli, &SPEC, "--port");
    ngq_status st;
    if (value && (st = ngq_cli_parse_int("--port", value, 0, 65535, &port, &err))) return ngq_tool_fail(&SPEC, st, &err);

    /* Every thread the server starts inherits this mask: the signals are
     * taken here, by sigwait, and never interrupt a request. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    ngq_demo_variant_list list;
    if ((st = ngq_demo_list_variants(cfg, &list, &err))) return ngq_tool_fail(&SPEC, st, &err);
    for (int i = 0; i < list.missing_count; i++)
        printf("not shown (no checkpoint; run quantize): %s\n", list.missing[i]);
    ngq_demo *demo = NULL;
    st = ngq_demo_init(&demo, cfg, list.items, list.count, &err);
    ngq_demo_variant_list_free(&list);
    if (st) return ngq_tool_fail(&SPEC, st, &err);
    for (int i = 0; i < ngq_demo_variant_count(demo); i++) {
        const ngq_demo_variant *v = ngq_demo_get_variant(demo, i);
        char ppl[32] = "n/a";
        if (!isnan(v->perplexity)) snprintf(ppl, sizeof ppl, "%.3f", v->perplexity);
        printf("variant %-20s %-22s %6.2f bits/weight | %9lld bytes | ppl %s | %s\n", v->name, v->info->label,
               v->info->bits_per_weight, (long long)v->info->file_bytes, ppl, v->path);
    }
    printf("%s\n", ngq_demo_perplexity_source(demo));
    if ((st = ngq_demo_start(demo, cfg->demo.host, (int)port, &err))) {
        ngq_demo_free(demo);
        return ngq_tool_fail(&SPEC, st, &err);
    }
    int v6 = strchr(cfg->demo.host, ':') != NULL;
    printf("serving http://%s%s%s:%d/ (Ctrl-C to stop)\n", v6 ? "[" : "", cfg->demo.host, v6 ? "]" : "",
           ngq_demo_port(demo));
    fflush(stdout);

    int sig = 0;
    sigwait(&stop_signals, &sig);
    printf("%s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    fflush(stdout);
    ngq_demo_free(demo);
    printf("stopped\n");
    return 0;
}
