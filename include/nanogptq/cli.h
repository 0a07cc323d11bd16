/* cli.h: the command line every executable shares. Standard options:
 *   --help, --version, --config FILE, --set section.key=value (repeatable)
 * plus the tool's own options from its ngq_cli_spec. Parsing loads the
 * config (defaults, then FILE, then each --set in order) and validates it.
 * This module also sets up the runtime (thread counts) and formats the
 * one-line start-up banner. It prints only to the FILE* it is given. */
#ifndef NANOGPTQ_CLI_H
#define NANOGPTQ_CLI_H

#include <stdio.h>

#include "nanogptq/common.h"
#include "nanogptq/config.h"

#define NGQ_CLI_MAX_OPTIONS 24
#define NGQ_CLI_MAX_POSITIONAL 64

typedef struct {
    const char *name;    /* "--method" */
    const char *metavar; /* "NAME" for an option with a value, NULL for a flag */
    const char *help;
} ngq_cli_option;

typedef struct {
    const char *program;          /* "quantize" */
    const char *summary;          /* one line: what the tool does */
    const char *positional;       /* e.g. "[CHECKPOINT ...]", NULL if none accepted */
    const ngq_cli_option *options;
    int option_count;
    const char *epilog;           /* examples, notes; may be NULL */
} ngq_cli_spec;

typedef struct {
    ngq_config cfg;
    int help;    /* --help was given: print help, exit 0 */
    int version; /* --version was given */
    int help_config; /* --help-config: print the configuration reference, exit 0 */
    int print_config; /* --print-config: print the effective config, exit 0 */
    const char *values[NGQ_CLI_MAX_OPTIONS]; /* per spec option: its value, "1" for a flag, NULL if absent */
    const char *positional[NGQ_CLI_MAX_POSITIONAL];
    int positional_count;
} ngq_cli;

/* Parses argv; on --help or --version returns NGQ_OK with the flag set and
 * does not load any config. Errors are NGQ_ERR_USAGE or NGQ_ERR_CONFIG. */
ngq_status ngq_cli_parse(int argc, char **argv, const ngq_cli_spec *spec, ngq_cli *cli, ngq_error *err);

/* The value given for a tool option (by its name, e.g. "--method"), or NULL. */
const char *ngq_cli_get(const ngq_cli *cli, const ngq_cli_spec *spec, const char *name);

void ngq_cli_print_help(const ngq_cli_spec *spec, FILE *fp);

/* Sets OpenMP to cfg->run.threads and OpenBLAS to one thread. */
void ngq_runtime_setup(const ngq_config *cfg);

/* "nanogptq 0.1.0 | train | config configs/x.ini | seed 1337 | OpenBLAS ... | threads 2" */
void ngq_cli_print_banner(const ngq_cli_spec *spec, const ngq_config *cfg, FILE *fp);

/* Parses a whole non-negative integer option value; errors name the option. */
ngq_status ngq_cli_parse_int(const char *option, const char *value, long long min, long long max, long long *out,
                             ngq_error *err);
ngq_status ngq_cli_parse_double(const char *option, const char *value, double min, double max, double *out,
                                ngq_error *err);

#endif
