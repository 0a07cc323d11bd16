/* tool.c: shared start-up and error exit for the executables. */
#include "tool.h"

#include <stdio.h>

int ngq_tool_start(int argc, char **argv, const ngq_cli_spec *spec, ngq_cli *cli)
{
    ngq_error err = {0};
    if (!ngq_host_is_little_endian()) {
        fprintf(stderr, "%s: nanogptq's file formats are little-endian and this host is not\n", spec->program);
        return 1;
    }
    ngq_status st = ngq_cli_parse(argc, argv, spec, cli, &err);
    if (st) return ngq_tool_fail(spec, st, &err);
    if (cli->help) {
        ngq_cli_print_help(spec, stdout);
        return 0;
    }
    if (cli->help_config) {
        ngq_config_write_reference(stdout);
        return 0;
    }
    if (cli->version) {
        printf("%s (nanogptq) %s\n", spec->program, NGQ_VERSION_STRING);
        return 0;
    }
    if (cli->print_config) {
        if ((st = ngq_config_write(&cli->cfg, stdout, &err))) return ngq_tool_fail(spec, st, &err);
        return 0;
    }
    ngq_runtime_setup(&cli->cfg);
    ngq_cli_print_banner(spec, &cli->cfg, stdout);
    return -1;
}

int ngq_tool_fail(const ngq_cli_spec *spec, ngq_status st, const ngq_error *err)
{
    fprintf(stderr, "%s: %s: %s\n", spec->program, ngq_status_name(st), err->message);
    return ngq_exit_code(st);
}
