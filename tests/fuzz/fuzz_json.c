/* fuzz_json: libFuzzer target for the strict validator and the in-place scanners that trust
 * it. Whatever json_valid refuses, jansson must refuse too (the validator is never the looser
 * of the two); on text it accepts, the member and element walkers must stay in bounds, and
 * json_scan_may_have never rules out a member the walk finds. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_scan.h"
#include "common/json_valid.h"

static void walk(const char *t, size_t n)
{
    struct json_pick pk[] = {{"model", 0, 0, false}, {"stream", 0, 0, false},
                             {"requests", 0, 0, false}};
    if (json_scan_pick(t, n, pk, 3) != 0)
        return;
    for (size_t i = 0; i < 3; i++) {
        if (!pk[i].found)
            continue;
        if (!json_scan_may_have(t, n, pk[i].name))
            abort();        /* the quick test said a found member could not be there */
        if (pk[i].start > pk[i].end || pk[i].end > n)
            abort();
        size_t pos = pk[i].start, s, e;
        if (t[pos] == '[')
            while (json_scan_next(t, pk[i].end, &pos, &s, &e) > 0)
                if (s >= e || e > pk[i].end)
                    abort();
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    const char *t = (const char *)data;
    struct json_valid_stats st;
    int ok = json_valid(t, size, 1000, &st, NULL);
    json_t *j = json_loadb(t, size, JSON_DECODE_ANY, NULL);
    if (ok < 0 && j && !memchr(t, 0, size))     /* jansson reads past a raw NUL */
        abort();
    json_decref(j);
    if (ok == 0) {
        walk(t, size);
        int over;
        json_decref(json_valid_load(t, size, JSON_DECODE_ANY, &over));
    }
    return 0;
}
