/* fuzz_conf: libFuzzer target for the YAML config loader. Any input either loads (and frees
 * cleanly) or fails with a message that names a position and never an unterminated string. */
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char err[512];
    memset(err, 'x', sizeof err);
    struct conf *c = conf_load_string((const char *)data, size, "fuzz.yaml", err, sizeof err);
    if (c) {
        conf_unref(c);
        return 0;
    }
    if (!memchr(err, '\0', sizeof err) || strncmp(err, "fuzz.yaml", 9) != 0)
        abort();    /* every error is terminated and starts with the file name */
    return 0;
}
