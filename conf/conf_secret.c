/* conf_secret: secrets read from files at load (`api_key_file:`, `key_file:`), for systemd's
 * LoadCredential= (relative names resolve in $CREDENTIALS_DIRECTORY) or any root-only file, so
 * keys need not sit in the process environment. No message here ever shows a secret. */
#include "conf/conf_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"

#define SECRET_FILE_MAX 4096    /* an API key is ~100 bytes; a larger file is the wrong file */

/* The file's path: absolute as written, else inside $CREDENTIALS_DIRECTORY. */
static int secret_path(const char *name, char *out, size_t cap, char *why, size_t whylen)
{
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    if (name[0] == '/')
        dir = NULL;
    else if (!dir || !*dir) {
        snprintf(why, whylen, "relative path needs $CREDENTIALS_DIRECTORY (set by systemd's "
                 "LoadCredential=); give an absolute path otherwise");
        return -1;
    }
    if ((size_t)snprintf(out, cap, "%s%s%s", dir ? dir : "", dir ? "/" : "", name) >= cap) {
        snprintf(why, whylen, "path too long");
        return -1;
    }
    return 0;
}

/* The file's content without its trailing newlines, malloc'd; NULL with the reason in why. */
static char *secret_read(const char *path, char *why, size_t whylen)
{
    char data[SECRET_FILE_MAX + 1];
    size_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(why, whylen, "cannot open \"%.200s\": %s", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        ssize_t r = read(fd, data + n, sizeof data - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            snprintf(why, whylen, "cannot read \"%.200s\": %s", path, strerror(errno));
        if (r <= 0)
            break;
        n += (size_t)r;
        if (n == sizeof data)
            break;
    }
    close(fd);
    char *out = NULL;
    if (n > SECRET_FILE_MAX)
        snprintf(why, whylen, "\"%.200s\" is larger than %d bytes: not a key file", path,
                 SECRET_FILE_MAX);
    else if (!why[0]) {
        while (n && (data[n - 1] == '\n' || data[n - 1] == '\r'))
            n--;
        if (!n)
            snprintf(why, whylen, "\"%.200s\" is empty", path);
        else if (memchr(data, '\0', n))
            snprintf(why, whylen, "\"%.200s\" holds a NUL byte: not a key file", path);
        else if (!(out = strndup(data, n)))
            snprintf(why, whylen, "out of memory");
    }
    explicit_bzero(data, sizeof data);
    return out;
}

int conf_field_secret_file(struct conf_ctx *x, const struct ynode *v, const char *path,
                           const struct field *f, void *base)
{
    char *name, file[4096], why[320] = "", **dst = FIELD_AT(base, f->off);
    if (conf_text(x, v, path, "a file name", &name) < 0)
        return -1;
    if (*dst) {
        free(name);
        return conf_fail(x, v, path, "give the secret or a file holding it, not both");
    }
    char *s = secret_path(name, file, sizeof file, why, sizeof why) == 0
                  ? secret_read(file, why, sizeof why) : NULL;
    free(name);
    if (!s)
        return conf_fail(x, v, path, "%s", why);
    for (const char *p = s; *p; p++) {
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            explicit_bzero(s, strlen(s));
            free(s);
            return conf_fail(x, v, path, "the file's secret must not contain spaces or control "
                             "characters (value not shown)");
        }
    }
    *dst = s;
    return 0;
}
