/* tool.h: the few lines every executable's main() shares: parse the command
 * line, print help/version/errors, set up threads and print the banner. */
#ifndef NANOGPTQ_TOOL_H
#define NANOGPTQ_TOOL_H

#include "nanogptq/cli.h"

/* Returns -1 when main should go on, else the exit code to return now. */
int ngq_tool_start(int argc, char **argv, const ngq_cli_spec *spec, ngq_cli *cli);

/* Prints "program: message" to stderr and returns the exit code for st. */
int ngq_tool_fail(const ngq_cli_spec *spec, ngq_status st, const ngq_error *err);

#endif
