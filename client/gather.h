/* gather: shared between the `llmux gather` command (cmd_gather.c) and its input reader
 * (gather_input.c), which turns input lines into /v1/gather request items. */
#ifndef LLMUX_CLIENT_GATHER_H
#define LLMUX_CLIENT_GATHER_H

#include <stdio.h>

#include <jansson.h>

#include "client/cli.h"

/* Reads f to its end and appends one chat body per non-blank line to items (a JSON array):
 * a line starting with '{' must be a JSON object and is used as the body, "model" filled in
 * from model when absent; any other line is the user message of a new body, after a system
 * message when system is set. name labels diagnostics ("prompts.txt:3: ..."). Returns 0, or
 * -1 after a diagnostic on stderr (CLI_EXIT_USAGE territory). */
int gather_input_read(const struct cli *c, FILE *f, const char *name, const char *model,
                      const char *system, json_t *items);

#endif
