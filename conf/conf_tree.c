/* conf_tree: YAML text → a small node tree with 1-based positions (libyaml events), plus the
 * error formatting and ${VAR} expansion every conf/ file uses. */
#include "conf/conf_internal.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "common/buf.h"

#define TREE_MAX_DEPTH 32       /* the schema nests 4 deep; more is a mistake or an attack */

struct tree {
    struct conf_ctx *x;
    yaml_parser_t parser;
    const char *input;
    size_t len;
};

static int tree_next(struct tree *t, yaml_event_t *ev);
static int tree_node(struct tree *t, yaml_event_t *ev, int depth, struct ynode **out);
static int tree_push(struct ynode *parent, struct ynode *kid);

int ytree_parse(struct conf_ctx *x, const char *yaml, size_t len, struct ynode **root)
{
    struct tree t = {.x = x, .input = yaml, .len = len};
    yaml_event_t ev;
    int rc = -1, docs = 0;

    *root = NULL;
    if (!yaml_parser_initialize(&t.parser))
        return conf_fail(x, NULL, NULL, "out of memory");
    yaml_parser_set_input_string(&t.parser, (const unsigned char *)yaml, len);
    for (;;) {
        if (tree_next(&t, &ev) < 0)
            goto out;
        yaml_event_type_t type = ev.type;
        int line = (int)ev.start_mark.line + 1, col = (int)ev.start_mark.column + 1;
        if (type == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
            yaml_event_delete(&ev);
            struct ynode at = {.line = line, .col = col};
            conf_fail(x, &at, NULL, "expected one YAML document, found a second one");
            goto out;
        }
        if (type == YAML_SCALAR_EVENT || type == YAML_SEQUENCE_START_EVENT ||
            type == YAML_MAPPING_START_EVENT || type == YAML_ALIAS_EVENT) {
            int r = tree_node(&t, &ev, 0, root);
            yaml_event_delete(&ev);
            if (r < 0)
                goto out;
            continue;
        }
        yaml_event_delete(&ev);
        if (type == YAML_STREAM_END_EVENT)
            break;
    }
    rc = 0;
out:
    if (rc < 0) {
        ytree_free(*root);
        *root = NULL;
    }
    yaml_parser_delete(&t.parser);
    return rc;
}

void ytree_free(struct ynode *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->nkids; i++)
        ytree_free(n->kids[i]);
    free(n->kids);
    free(n->val);
    free(n);
}

/* The line before the one starting at bol, skipping blank and comment lines: true when it
 * holds no ':' at all, with where moved to its first character. */
static bool prev_line_lacks_colon(const struct tree *t, size_t bol, struct ynode *where)
{
    int line = where->line;
    while (bol > 0) {
        size_t end = bol - 1, start = end;      /* input[end] is the '\n' ending that line */
        while (start > 0 && t->input[start - 1] != '\n')
            start--;
        line--;
        size_t first = start;
        while (first < end && t->input[first] == ' ')
            first++;
        bol = start;
        if (first == end || t->input[first] == '#')
            continue;
        if (memchr(t->input + first, ':', end - first))
            return false;
        where->line = line;
        where->col = (int)(first - start) + 1;
        return true;
    }
    return false;
}

/* libyaml's wording for the mistakes people make most, said in their terms (NULL: keep
 * libyaml's); where may move to the line at fault. */
static const char *yaml_explain(const struct tree *t, const char *problem, struct ynode *where)
{
    const yaml_parser_t *p = &t->parser;
    size_t at = p->problem_mark.index;
    if (!strcmp(problem, "could not find expected ':'") && p->context &&
        !strcmp(p->context, "while scanning a simple key")) {
        where->line = (int)p->context_mark.line + 1;    /* the key, not the line after it */
        where->col = (int)p->context_mark.column + 1;
        return "missing ':' after the key on this line (or the next line is indented wrongly)";
    }
    if (at < t->len && t->input[at] == '\t')
        return "a tab is not allowed for indentation (use spaces)";
    if (!strcmp(problem, "mapping values are not allowed in this context")) {
        /* Another ": " earlier on the same line: a value that itself holds ": ". */
        size_t bol = at;
        while (bol > 0 && t->input[bol - 1] != '\n')
            bol--;
        for (size_t i = bol; i + 1 < at && i + 1 < t->len; i++)
            if (t->input[i] == ':' && t->input[i + 1] == ' ')
                return "a value containing \": \" must be quoted";
        /* libyaml read this line as the continuation of the line above: either that line is
         * a key without its ':' (then it is the one to blame), or this one is misindented. */
        if (prev_line_lacks_colon(t, bol, where))
            return "missing ':' after the key on this line";
        return "unexpected key: check the indentation of this line (it does not line up with "
               "the keys above it)";
    }
    if (!strcmp(problem, "did not find expected key"))
        return "unexpected indentation: the keys of one mapping must line up (check this "
               "line and the one above)";
    return NULL;
}

/* Next event, or a syntax error with its position. */
static int tree_next(struct tree *t, yaml_event_t *ev)
{
    if (yaml_parser_parse(&t->parser, ev))
        return 0;
    yaml_parser_t *p = &t->parser;
    struct ynode at = {.line = (int)p->problem_mark.line + 1,
                       .col = (int)p->problem_mark.column + 1};
    if (p->error == YAML_READER_ERROR) {
        /* Reader errors (bad UTF-8, control bytes) carry only a byte offset. */
        at.line = 1;
        at.col = 1;
        for (size_t i = 0; i < p->problem_offset && i < t->len; i++) {
            at.col++;
            if (t->input[i] == '\n') {
                at.line++;
                at.col = 1;
            }
        }
    }
    const char *problem = p->problem ? p->problem : "malformed YAML";
    const char *plain = yaml_explain(t, problem, &at);
    if (plain)
        return conf_fail(t->x, &at, NULL, "YAML syntax error: %s", plain);
    if (p->context)
        return conf_fail(t->x, &at, NULL, "YAML syntax error: %s (%s at line %d)", problem,
                         p->context, (int)p->context_mark.line + 1);
    return conf_fail(t->x, &at, NULL, "YAML syntax error: %s", problem);
}

/* Builds the node that starts with ev (which the caller deletes), reading its children. */
static int tree_node(struct tree *t, yaml_event_t *ev, int depth, struct ynode **out)
{
    struct ynode *n = calloc(1, sizeof(*n));
    yaml_event_t kid_ev;
    int rc = -1;

    *out = NULL;
    if (!n)
        return conf_fail(t->x, NULL, NULL, "out of memory");
    n->line = (int)ev->start_mark.line + 1;
    n->col = (int)ev->start_mark.column + 1;
    if (ev->type == YAML_ALIAS_EVENT) {
        conf_fail(t->x, n, NULL, "YAML aliases (*%s) are not supported; repeat the value",
                  (const char *)ev->data.alias.anchor);
        goto out;
    }
    if (depth > TREE_MAX_DEPTH) {
        conf_fail(t->x, n, NULL, "nested deeper than %d levels", TREE_MAX_DEPTH);
        goto out;
    }
    if (ev->type == YAML_SCALAR_EVENT) {
        n->kind = YNODE_SCALAR;
        n->len = ev->data.scalar.length;
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !ev->data.scalar.tag;
        if (!(n->val = malloc(n->len + 1))) {
            conf_fail(t->x, NULL, NULL, "out of memory");
            goto out;
        }
        memcpy(n->val, ev->data.scalar.value, n->len);
        n->val[n->len] = '\0';
        rc = 0;
        goto out;
    }
    n->kind = ev->type == YAML_MAPPING_START_EVENT ? YNODE_MAP : YNODE_SEQ;
    yaml_event_type_t end = n->kind == YNODE_MAP ? YAML_MAPPING_END_EVENT
                                                 : YAML_SEQUENCE_END_EVENT;
    for (;;) {
        if (tree_next(t, &kid_ev) < 0)
            goto out;
        if (kid_ev.type == end) {
            yaml_event_delete(&kid_ev);
            break;
        }
        struct ynode *kid;
        int r = tree_node(t, &kid_ev, depth + 1, &kid);
        yaml_event_delete(&kid_ev);
        if (r < 0)
            goto out;
        if (tree_push(n, kid) < 0) {
            ytree_free(kid);
            conf_fail(t->x, NULL, NULL, "out of memory");
            goto out;
        }
    }
    rc = 0;
out:
    if (rc < 0)
        ytree_free(n);
    else
        *out = n;
    return rc;
}

static int tree_push(struct ynode *parent, struct ynode *kid)
{
    if (parent->nkids == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 8;
        struct ynode **k = realloc(parent->kids, cap * sizeof(*k));
        if (!k)
            return -1;
        parent->kids = k;
        parent->cap = cap;
    }
    parent->kids[parent->nkids++] = kid;
    return 0;
}

bool ynode_is_null(const struct ynode *n)
{
    if (!n || n->kind != YNODE_SCALAR || !n->plain)
        return false;
    return n->len == 0 || !strcmp(n->val, "~") || !strcmp(n->val, "null") ||
           !strcmp(n->val, "Null") || !strcmp(n->val, "NULL");
}

const char *ynode_kind_name(const struct ynode *n)
{
    if (ynode_is_null(n))
        return "nothing";
    switch (n->kind) {
    case YNODE_MAP: return "a mapping";
    case YNODE_SEQ: return "a list";
    default: return "a scalar";
    }
}

const struct ynode *ynode_get(const struct ynode *m, const char *key)
{
    if (!m || m->kind != YNODE_MAP)
        return NULL;
    for (size_t i = 0; i + 1 < m->nkids; i += 2)
        if (m->kids[i]->kind == YNODE_SCALAR && !strcmp(m->kids[i]->val, key))
            return m->kids[i + 1];
    return NULL;
}

int conf_fail(struct conf_ctx *x, const struct ynode *n, const char *path, const char *fmt, ...)
{
    if (x->failed || !x->err || !x->errlen) {
        x->failed = true;
        return -1;
    }
    x->failed = true;
    int used;
    if (n && path && *path)
        used = snprintf(x->err, x->errlen, "%s:%d:%d: %s: ", x->file, n->line, n->col, path);
    else if (n)
        used = snprintf(x->err, x->errlen, "%s:%d:%d: ", x->file, n->line, n->col);
    else if (path && *path)
        used = snprintf(x->err, x->errlen, "%s: %s: ", x->file, path);
    else
        used = snprintf(x->err, x->errlen, "%s: ", x->file);
    if (used < 0 || (size_t)used >= x->errlen)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->err + used, x->errlen - (size_t)used, fmt, ap);
    va_end(ap);
    return -1;
}

int conf_text(struct conf_ctx *x, const struct ynode *n, const char *path, const char *what,
              char **out)
{
    char why[160];
    bool secret = !strcmp(what, CONF_WHAT_SECRET);

    *out = NULL;
    if (n->kind != YNODE_SCALAR)
        return conf_fail(x, n, path, "expected %s, got %s", what, ynode_kind_name(n));
    if (strlen(n->val) != n->len)
        return conf_fail(x, n, path, "expected %s, got a value containing a NUL byte", what);
    if (!(*out = conf_expand_env(n->val, secret, why, sizeof(why)))) {
        const char *key = strrchr(path, '.');
        if (secret && strstr(why, " is not set"))
            return conf_fail(x, n, path, "%s (set it in the service's EnvironmentFile=, or "
                             "name a file holding the secret with %s_file:)", why,
                             key ? key + 1 : path);
        return conf_fail(x, n, path, "%s", why);
    }
    return 0;
}

static int env_name_ok(const char *s, size_t n)
{
    if (!n || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return 0;
    return 1;
}

/* One pass, no recursion: a variable's value is inserted as is, and a default is literal text.
 * Error texts never quote the scalar, which may be a secret; a variable name is not one. */
char *conf_expand_env(const char *s, bool secret, char *why, size_t whylen)
{
    struct buf b = BUF_INIT;

    if (buf_puts(&b, "") < 0)
        goto oom;
    while (*s) {
        const char *dollar = strchr(s, '$');
        if (!dollar)
            dollar = s + strlen(s);
        if (buf_append(&b, s, (size_t)(dollar - s)) < 0)
            goto oom;
        s = dollar;
        if (!*s)
            break;
        if (s[1] != '{') {
            /* "$$" is one '$'; a '$' not followed by '{' is kept literally. */
            if (buf_append(&b, "$", 1) < 0)
                goto oom;
            s += s[1] == '$' ? 2 : 1;
            continue;
        }
        const char *close = strchr(s + 2, '}');
        if (!close) {
            snprintf(why, whylen, "unterminated \"${\": expected \"}\" (write $$ for a literal $)");
            goto fail;
        }
        const char *name = s + 2, *dflt = strstr(name, ":-");
        size_t nlen = (size_t)((dflt && dflt < close ? dflt : close) - name);
        if (!env_name_ok(name, nlen)) {
            snprintf(why, whylen, "expected a variable name (letters, digits, _) after \"${\"");
            goto fail;
        }
        char var[128];
        if (nlen >= sizeof(var)) {
            snprintf(why, whylen, "environment variable name longer than %zu bytes",
                     sizeof(var) - 1);
            goto fail;
        }
        memcpy(var, name, nlen);
        var[nlen] = '\0';
        const char *val = getenv(var);
        bool has_default = dflt && dflt < close;
        if (has_default && (!val || !*val)) {
            /* As in the shell, ":-" also replaces a variable that is set but empty. */
            if (buf_append(&b, dflt + 2, (size_t)(close - (dflt + 2))) < 0)
                goto oom;
        } else if (!val) {
            if (secret)     /* no default offered: it would be a shared, guessable secret */
                snprintf(why, whylen, "environment variable %s is not set", var);
            else
                snprintf(why, whylen, "environment variable %s is not set (use ${%s:-default} "
                         "to give a default)", var, var);
            goto fail;
        } else if (buf_puts(&b, val) < 0) {
            goto oom;
        }
        s = close + 1;
    }
    return buf_steal(&b);
oom:
    snprintf(why, whylen, "out of memory");
fail:
    buf_free(&b);
    return NULL;
}

const char *conf_quote(const char *s, char *out, size_t outlen)
{
    enum { QUOTE_MAX = 60 };
    size_t o = 0, i;

    for (i = 0; s[i] && i < QUOTE_MAX && o + 5 < outlen; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    if (s[i] && o + 4 < outlen) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o < outlen ? o : outlen - 1] = '\0';
    return out;
}

void conf_path_key(char *out, const char *parent, const char *key)
{
    char q[CONF_PATH_MAX / 2];
    conf_quote(key, q, sizeof(q));
    snprintf(out, CONF_PATH_MAX, "%s%s%s", parent, *parent ? "." : "", q);
}

void conf_path_index(char *out, const char *parent, size_t i)
{
    snprintf(out, CONF_PATH_MAX, "%s[%zu]", parent, i);
}
