/* fdlimit: the descriptor limit against a configuration's connection limits. */
#ifndef LLMUX_FDLIMIT_H
#define LLMUX_FDLIMIT_H

#include <stdbool.h>

#include "conf/conf.h"

/* Raises RLIMIT_NOFILE towards max_connections + max_inflight + listeners + a reserve. When
 * the hard limit is lower: limits the file set explicitly keep their values and get an error
 * line; default ones are sized to fit (said once at info when at_start). Before c is shared. */
void fdlimit_fit(struct conf *c, bool at_start);

#endif
