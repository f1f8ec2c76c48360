/* provider_error: an upstream's error answer reduced to the four fields the gateway re-encodes
 * in its own error shape; nothing else of the upstream's body is ever relayed. */
#ifndef LLMUX_PROVIDER_ERROR_H
#define LLMUX_PROVIDER_ERROR_H

#include <jansson.h>

#define PROVIDER_ERROR_CHARS 1000       /* message cut to this many code points */
#define PROVIDER_ERROR_BODY_MAX 65536   /* bytes of an error body kept; the rest is dropped */

struct provider_error {
    char message[PROVIDER_ERROR_CHARS * 4 + 8];
    char type[64], code[64], param[64];     /* "" = absent (null) */
};

/* Fills e from an OpenAI-shaped {"error":{message,type,code,param}} document (what every
 * codec's decode_error returns): strings only, a numeric code written in decimal, the message
 * cut on a UTF-8 boundary and marked with "…". Missing type: "upstream_error". */
void provider_error_take(const json_t *doc, struct provider_error *e);
/* Copies a message into out (cap bytes), cut to PROVIDER_ERROR_CHARS code points. */
void provider_error_cut(const char *msg, char *out, size_t cap);

#endif
