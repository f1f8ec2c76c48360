/* gather_input: one /v1/gather request item per input line (see gather.h). Strict on purpose:
 * a mistyped JSON line is an error rather than a prompt nobody meant to pay for. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/gather.h"

static json_t *item_from_text(const char *line, size_t len, const char *model,
                              const char *system)
{
    json_t *messages = json_array();
    if (!messages)
        return NULL;
    if (system && json_array_append_new(messages, json_pack("{s:s, s:s}", "role", "system",
                                                            "content", system)) < 0)
        goto fail;
    /* json_pack refuses text that is not UTF-8, which the gateway would refuse too */
    if (json_array_append_new(messages, json_pack("{s:s, s:s%}", "role", "user", "content",
                                                  line, len)) < 0)
        goto fail;
    return json_pack("{s:s, s:o}", "model", model, "messages", messages);
fail:
    json_decref(messages);
    return NULL;
}

/* Returns the item, or NULL after a diagnostic. */
static json_t *item_from_line(const struct cli *c, const char *line, size_t len,
                              const char *where, const char *model, const char *system)
{
    const char *p = line;
    while (p < line + len && (*p == ' ' || *p == '\t'))
        p++;
    if (*p != '{') {
        if (!model) {
            cli_usage_error(c, "%s: a prompt needs a model: pass -m MODEL or set LLMUX_MODEL "
                               "('llmux models' lists them)", where);
            return NULL;
        }
        json_t *item = item_from_text(line, len, model, system);
        if (!item)
            cli_err("%s: the line is not valid UTF-8", where);
        return item;
    }
    json_error_t jerr;
    json_t *item = json_loadb(line, len, 0, &jerr);
    if (!json_is_object(item)) {
        cli_err("%s: a line starting with '{' must be one JSON object (a chat body): %s",
                where, item ? "this is not an object" : jerr.text);
        json_decref(item);
        return NULL;
    }
    if (json_object_get(item, "model"))
        return item;
    if (!model) {
        cli_usage_error(c, "%s: the body has no \"model\": add one, pass -m MODEL or set "
                           "LLMUX_MODEL", where);
        json_decref(item);
        return NULL;
    }
    if (json_object_set_new(item, "model", json_string(model)) < 0) {
        cli_err("out of memory");
        json_decref(item);
        return NULL;
    }
    return item;
}

int gather_input_read(const struct cli *c, FILE *f, const char *name, const char *model,
                      const char *system, json_t *items)
{
    char *line = NULL, where[320];
    size_t cap = 0, lineno = 0;
    ssize_t n;
    int rc = -1;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (strspn(line, " \t") == (size_t)n)
            continue;
        snprintf(where, sizeof where, "%s:%zu", name, lineno);
        json_t *item = item_from_line(c, line, (size_t)n, where, model, system);
        if (!item)
            goto out;
        if (json_array_append_new(items, item) < 0) {
            cli_err("out of memory");
            goto out;
        }
    }
    if (ferror(f)) {
        cli_err("reading %s: %s", name, errno == EINTR ? "interrupted" : strerror(errno));
        goto out;
    }
    rc = 0;
out:
    free(line);
    return rc;
}
