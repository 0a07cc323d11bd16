/* figures: draws the study's figures with gnuplot from the toolkit's CSVs
 * (train log, evaluation table, per-layer quantization errors) into
 * [paths] figures_dir, with the data and gnuplot script of each beside it. */
#include <stdio.h>
#include <stdlib.h>

#include "nanogptq/plot.h"
#include "tool.h"

static const ngq_cli_option OPTIONS[] = {
    {"--gnuplot", "PATH", "the gnuplot executable (default: gnuplot on $PATH)"},
    {"--optional", NULL, "when gnuplot is missing, write the data and scripts, say so and exit 0"},
};

static const ngq_cli_spec SPEC = {
    .program = "figures",
    .summary = "Draw the study's figures as PNG with gnuplot into [paths] figures_dir: loss vs step,\n"
               "perplexity vs bits, perplexity vs size on disk, and per-layer RTN vs GPTQ error for each\n"
               "GPTQ variant. Each NAME.png comes with NAME.dat and NAME.gp; figures.csv lists them.",
    .positional = NULL,
    .options = OPTIONS,
    .option_count = sizeof OPTIONS / sizeof OPTIONS[0],
    .epilog = "examples:\n  figures --config configs/tinystories.ini\n"
              "  figures --config configs/ci.ini --optional",
};

int main(int argc, char **argv)
{
    ngq_cli cli;
    int rc = ngq_tool_start(argc, argv, &SPEC, &cli);
    if (rc >= 0) return rc;
    ngq_error err = {0};
    const char *gnuplot_opt = ngq_cli_get(&cli, &SPEC, "--gnuplot");
    int optional = ngq_cli_get(&cli, &SPEC, "--optional") != NULL;
    char gnuplot[4096];
    int have_gnuplot = ngq_plot_find_program(gnuplot_opt ? gnuplot_opt : "gnuplot", gnuplot, sizeof gnuplot);

    ngq_plot_set set;
    ngq_status st = ngq_plot_prepare(&set, &cli.cfg, &err);
    if (st == NGQ_OK && have_gnuplot) st = ngq_plot_render(&set, gnuplot, &err);
    if (st == NGQ_OK && !have_gnuplot) ngq_plot_mark_unrendered(&set, "gnuplot not found");
    ngq_status manifest = ngq_plot_write_manifest(&set, st ? NULL : &err);
    if (st == NGQ_OK) st = manifest;
    for (int i = 0; i < set.count; i++) {
        const ngq_plot_figure *f = &set.figures[i];
        printf("%-28s %s%s%s\n", f->name, f->status, f->rendered ? ": " : "", f->rendered ? f->png : "");
    }
    int prepared = 0;
    for (int i = 0; i < set.count; i++) prepared += set.figures[i].prepared;
    if (st) {
        rc = ngq_tool_fail(&SPEC, st, &err);
    } else if (prepared == 0) {
        fprintf(stderr, "figures: nothing to draw yet: none of the CSVs above exists (run train, quantize and "
                        "evaluate first)\n");
        rc = optional ? 0 : 1;
    } else if (!have_gnuplot) {
        fprintf(stderr,
                "figures: %s not found, so no PNG was drawn; the data and gnuplot scripts are in %s "
                "(install gnuplot, e.g. apt-get install gnuplot-nox, or run scripts/install_deps)\n",
                gnuplot_opt ? gnuplot_opt : "gnuplot", set.dir);
        rc = optional ? 0 : 1;
    } else {
        printf("wrote %s/figures.csv\n", set.dir);
        rc = 0;
    }
    ngq_plot_set_free(&set);
    return rc;
}
