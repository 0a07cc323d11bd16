/* cli.c: shared argument parsing, runtime set-up and the start-up banner. */
#include "nanogptq/cli.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static const ngq_cli_option STANDARD[] = {
    {"--config", "FILE", "the INI configuration to read (required)"},
    {"--set", "SECTION.KEY=VALUE", "override one config value; repeatable, applied in order after FILE"},
    {"--print-config", NULL, "print the effective configuration (file + overrides) as INI and exit"},
    {"--help", NULL, "print this help and exit"},
    {"--help-config", NULL, "print every configuration key with its type, default, range and meaning"},
    {"--version", NULL, "print the version and exit"},
};

void ngq_cli_print_help(const ngq_cli_spec *spec, FILE *fp)
{
    fprintf(fp, "usage: %s --config FILE [--set SECTION.KEY=VALUE ...] [options]%s%s\n\n%s\n\noptions:\n",
            spec->program, spec->positional ? " " : "", spec->positional ? spec->positional : "", spec->summary);
    for (int pass = 0; pass < 2; pass++) {
        const ngq_cli_option *opts = pass ? STANDARD : spec->options;
        int n = pass ? (int)(sizeof STANDARD / sizeof STANDARD[0]) : spec->option_count;
        for (int i = 0; i < n; i++) {
            char left[64];
            snprintf(left, sizeof left, "%s%s%s", opts[i].name, opts[i].metavar ? " " : "",
                     opts[i].metavar ? opts[i].metavar : "");
            fprintf(fp, "  %-28s %s\n", left, opts[i].help);
        }
    }
    fprintf(fp, "\nexit status: 0 success, 1 runtime failure, 2 usage or configuration error\n");
    if (spec->epilog) fprintf(fp, "\n%s\n", spec->epilog);
}

static int find_option(const ngq_cli_spec *spec, const char *name, size_t len)
{
    for (int i = 0; i < spec->option_count; i++)
        if (strlen(spec->options[i].name) == len && strncmp(spec->options[i].name, name, len) == 0) return i;
    return -1;
}

ngq_status ngq_cli_parse(int argc, char **argv, const ngq_cli_spec *spec, ngq_cli *cli, ngq_error *err)
{
    memset(cli, 0, sizeof *cli);
    if (spec->option_count > NGQ_CLI_MAX_OPTIONS)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "%s declares too many options", spec->program);
    const char *config_path = NULL;
    const char *sets[256];
    int set_count = 0;
    int options_done = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (options_done || arg[0] != '-' || strcmp(arg, "-") == 0) {
            if (!spec->positional)
                return ngq_fail(err, NGQ_ERR_USAGE, "unexpected argument '%s' (see %s --help)", arg, spec->program);
            if (cli->positional_count == NGQ_CLI_MAX_POSITIONAL)
                return ngq_fail(err, NGQ_ERR_USAGE, "more than %d arguments", NGQ_CLI_MAX_POSITIONAL);
            cli->positional[cli->positional_count++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            options_done = 1;
            continue;
        }
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            cli->help = 1;
            return NGQ_OK;
        }
        if (strcmp(arg, "--help-config") == 0) {
            cli->help_config = 1;
            return NGQ_OK;
        }
        if (strcmp(arg, "--version") == 0) {
            cli->version = 1;
            return NGQ_OK;
        }
        if (strcmp(arg, "--print-config") == 0) {
            cli->print_config = 1;
            continue;
        }
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        const char *inline_value = eq ? eq + 1 : NULL;
        int is_config = name_len == 8 && strncmp(arg, "--config", 8) == 0;
        int is_set = name_len == 5 && strncmp(arg, "--set", 5) == 0;
        int index = is_config || is_set ? -1 : find_option(spec, arg, name_len);
        if (!is_config && !is_set && index < 0)
            return ngq_fail(err, NGQ_ERR_USAGE, "unknown option '%.*s' (see %s --help)", (int)name_len, arg,
                            spec->program);
        int takes_value = is_config || is_set || spec->options[index].metavar;
        const char *value = "1";
        if (takes_value) {
            if (inline_value) value = inline_value;
            else if (i + 1 < argc) value = argv[++i];
            else return ngq_fail(err, NGQ_ERR_USAGE, "option '%s' needs a value", arg);
        } else if (inline_value) {
            return ngq_fail(err, NGQ_ERR_USAGE, "option '%.*s' takes no value", (int)name_len, arg);
        }
        if (is_config) {
            if (config_path) return ngq_fail(err, NGQ_ERR_USAGE, "--config given twice");
            config_path = value;
        } else if (is_set) {
            if (set_count == (int)(sizeof sets / sizeof sets[0]))
                return ngq_fail(err, NGQ_ERR_USAGE, "too many --set options");
            sets[set_count++] = value;
        } else {
            cli->values[index] = value;
        }
    }
    if (!config_path)
        return ngq_fail(err, NGQ_ERR_USAGE, "no configuration given: use --config FILE (e.g. --config configs/quick.ini)");
    ngq_config_defaults(&cli->cfg);
    ngq_status st = ngq_config_load_file(&cli->cfg, config_path, err);
    if (st) {
        if (err) err->status = NGQ_ERR_CONFIG; /* an unreadable config is a configuration error (exit 2) */
        return NGQ_ERR_CONFIG;
    }
    for (int i = 0; i < set_count; i++)
        if ((st = ngq_config_apply_override(&cli->cfg, sets[i], err))) return st;
    return ngq_config_validate(&cli->cfg, err);
}

const char *ngq_cli_get(const ngq_cli *cli, const ngq_cli_spec *spec, const char *name)
{
    int index = find_option(spec, name, strlen(name));
    return index < 0 ? NULL : cli->values[index];
}

void ngq_runtime_setup(const ngq_config *cfg)
{
    openblas_set_num_threads(1);
    omp_set_dynamic(0);
    omp_set_num_threads(cfg->run.threads);
}

void ngq_cli_print_banner(const ngq_cli_spec *spec, const ngq_config *cfg, FILE *fp)
{
    /* openblas_get_config() is "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ...": keep name and version */
    const char *config = openblas_get_config();
    char blas[64] = "OpenBLAS";
    if (config) {
        const char *second_space = strchr(config, ' ');
        second_space = second_space ? strchr(second_space + 1, ' ') : NULL;
        size_t n = second_space ? (size_t)(second_space - config) : strlen(config);
        snprintf(blas, sizeof blas, "%.*s", (int)n, config);
    }
    fprintf(fp, "nanogptq %s | %s | config %s | seed %lld | BLAS %s %s, 1 thread per call | threads %d\n",
            NGQ_VERSION_STRING, spec->program, cfg->source_path[0] ? cfg->source_path : "(defaults)",
            (long long)cfg->run.seed, blas, openblas_get_corename(), cfg->run.threads);
    fflush(fp);
}

ngq_status ngq_cli_parse_int(const char *option, const char *value, long long min, long long max, long long *out,
                             ngq_error *err)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (!*value || *end || errno == ERANGE)
        return ngq_fail(err, NGQ_ERR_USAGE, "%s '%s': expected a whole number", option, value);
    if (v < min || v > max)
        return ngq_fail(err, NGQ_ERR_USAGE, "%s %lld is out of range: allowed [%lld, %lld]", option, v, min, max);
    *out = v;
    return NGQ_OK;
}

ngq_status ngq_cli_parse_double(const char *option, const char *value, double min, double max, double *out,
                                ngq_error *err)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(value, &end);
    if (!*value || *end || errno == ERANGE || !isfinite(v))
        return ngq_fail(err, NGQ_ERR_USAGE, "%s '%s': expected a number", option, value);
    if (v < min || v > max)
        return ngq_fail(err, NGQ_ERR_USAGE, "%s %g is out of range: allowed [%g, %g]", option, v, min, max);
    *out = v;
    return NGQ_OK;
}
