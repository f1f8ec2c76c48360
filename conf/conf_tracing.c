/* conf_tracing: the `tracing:` section — where spans go (OTLP/HTTP endpoint and its headers),
 * which traces are recorded, whether prompt text may be, and the exporter's batching. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf_internal.h"

/* A share from 0 to 1, as a decimal number. */
static int field_ratio(struct conf_ctx *x, const struct ynode *v, const char *path,
                       const struct field *f, void *base)
{
    return conf_field_decimal(x, v, path, 1.0, "a ratio from 0 to 1 (like 0.25)",
                              (double *)FIELD_AT(base, f->off));
}

/* The upstream header parser, into tracing.headers, with credentials allowed. */
static int field_headers(struct conf_ctx *x, const struct ynode *v, const char *path,
                         const struct field *f, void *base)
{
    struct conf *c = base;
    struct conf_upstream tmp = {0};
    int rc = conf_field_headers(x, v, path, f, &tmp);
    c->tracing.headers = tmp.headers;       /* freed with the snapshot, even half-built */
    c->tracing.nheaders = tmp.nheaders;
    return rc;
}

#define C(member) offsetof(struct conf, member)

static const struct field tracing_fields[] = {
    {"endpoint", conf_field_base_url, C(tracing.endpoint), 0, 0, false, NULL, 0},
    {"headers", field_headers, 0, 0, CONF_HEADERS_CREDENTIALS, false, NULL, 0},
    {"sample_ratio", field_ratio, C(tracing.sample_ratio), 0, 0, false, NULL, 0},
    {"service_name", conf_field_string, C(tracing.service_name), 0, 0, false, NULL, 0},
    {"capture_content", conf_field_bool, C(tracing.capture_content), 0, 0, false, NULL, 0},
    {"batch_size", conf_field_count, C(tracing.batch_size), 1, 100000, false, NULL, 0},
    {"batch_delay", conf_field_duration, C(tracing.batch_delay_ms), 1, 0, false, NULL, 0},
    {"queue_size", conf_field_count, C(tracing.queue_size), 1, 10000000, false, NULL, 0},
};

int conf_field_tracing(struct conf_ctx *x, const struct ynode *v, const char *path,
                       const struct field *f, void *base)
{
    const struct field section = {"tracing", NULL, 0, 0, 0, false, FIELDS(tracing_fields)};
    return conf_field_section(x, v, path, &section, base);
}
