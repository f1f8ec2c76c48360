/* settings: what the daemon tells an operator about a configuration beyond its validity — the
 * settings a reload cannot apply, and the warnings `llmuxd -t` prints. */
#ifndef LLMUX_SETTINGS_H
#define LLMUX_SETTINGS_H

#include <stdbool.h>
#include <stdio.h>

#include "conf/conf.h"

/* Logs a warning naming each setting of next that differs from boot (the configuration the
 * process started with) and that only a restart applies. running: the worker threads there
 * are; next_workers: how many next asks for ("auto" resolved). inherited: the listening
 * sockets came from systemd, so listen: is not applied either. Returns how many were logged. */
unsigned settings_reload_report(const struct conf *boot, const struct conf *next,
                                unsigned running, unsigned next_workers, bool inherited);
/* Warnings for `llmuxd -t` (one line each, to f). Returns how many. */
unsigned settings_check_report(const struct conf *c, FILE *f);

#endif
