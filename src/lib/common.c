/* common.c: error records, atomic file writes, whole-file reads, paths, time. */
#define _POSIX_C_SOURCE 200809L
#include "nanogptq/common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

ngq_status ngq_fail(ngq_error *err, ngq_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

ngq_status ngq_error_prefix(ngq_error *err, const char *fmt, ...)
{
    if (!err) return NGQ_ERR_INTERNAL; /* the status went with the record the caller did not pass */
    char prefix[NGQ_ERROR_MESSAGE_MAX];
    char old[NGQ_ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->message, sizeof old);
    /* prefix + ": " + old, truncated to the message size */
    size_t cap = sizeof err->message - 1, n = 0;
    for (const char *parts[3] = {prefix, ": ", old}, **p = parts; p < parts + 3; p++)
        for (const char *c = *p; *c && n < cap; c++) err->message[n++] = *c;
    err->message[n] = '\0';
    return err->status;
}

void ngq_error_clear(ngq_error *err)
{
    if (err) {
        err->status = NGQ_OK;
        err->message[0] = '\0';
    }
}

int ngq_exit_code(ngq_status status)
{
    switch (status) {
    case NGQ_OK: return 0;
    case NGQ_ERR_USAGE:
    case NGQ_ERR_CONFIG: return 2;
    default: return 1;
    }
}

const char *ngq_status_name(ngq_status status)
{
    switch (status) {
    case NGQ_OK: return "ok";
    case NGQ_ERR_USAGE: return "usage error";
    case NGQ_ERR_CONFIG: return "config error";
    case NGQ_ERR_IO: return "I/O error";
    case NGQ_ERR_FORMAT: return "format error";
    case NGQ_ERR_NOMEM: return "out of memory";
    case NGQ_ERR_NUMERIC: return "numeric error";
    case NGQ_ERR_INTERRUPTED: return "interrupted";
    case NGQ_ERR_INTERNAL: return "internal error";
    }
    return "unknown error";
}

ngq_status ngq_read_file(const char *path, char **data, size_t *size, ngq_error *err)
{
    *data = NULL;
    *size = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return ngq_fail(err, NGQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return ngq_fail(err, NGQ_ERR_IO, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(fp);
        return ngq_fail(err, NGQ_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, n + 1);
    }
    if (n && fread(buf, 1, n, fp) != n) {
        int e = errno;
        free(buf);
        fclose(fp);
        return ngq_fail(err, NGQ_ERR_IO, "%s: read failed: %s", path, e ? strerror(e) : "short read");
    }
    fclose(fp);
    buf[n] = '\0';
    *data = buf;
    *size = n;
    return NGQ_OK;
}

char *ngq_strdup_printf(const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        va_end(ap2);
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (s) vsnprintf(s, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return s;
}

char *ngq_path_join(const char *dir, const char *name)
{
    if (!dir || !*dir) return ngq_strdup_printf("%s", name);
    size_t len = strlen(dir);
    return ngq_strdup_printf("%s%s%s", dir, dir[len - 1] == '/' ? "" : "/", name);
}

int ngq_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

ngq_status ngq_make_dirs(const char *path, ngq_error *err)
{
    char *buf = ngq_strdup_printf("%s", path);
    if (!buf) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    size_t len = strlen(buf);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char saved = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
                ngq_status st = ngq_fail(err, NGQ_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
                free(buf);
                return st;
            }
            buf[i] = saved;
        }
    }
    free(buf);
    return NGQ_OK;
}

ngq_status ngq_atomic_open(ngq_atomic_file *af, const char *path, ngq_error *err)
{
    memset(af, 0, sizeof *af);
    af->path = ngq_strdup_printf("%s", path);
    af->tmp_path = ngq_strdup_printf("%s.tmp.%ld", path, (long)getpid());
    if (!af->path || !af->tmp_path) {
        ngq_atomic_abort(af);
        return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    }
    af->fp = fopen(af->tmp_path, "wb");
    if (!af->fp) {
        ngq_status st = ngq_fail(err, NGQ_ERR_IO, "%s: cannot create: %s", af->tmp_path, strerror(errno));
        ngq_atomic_abort(af);
        return st;
    }
    return NGQ_OK;
}

ngq_status ngq_atomic_write(ngq_atomic_file *af, const void *data, size_t size, ngq_error *err)
{
    if (!af->fp) return ngq_fail(err, NGQ_ERR_INTERNAL, "write to a closed atomic file");
    if (size && fwrite(data, 1, size, af->fp) != size)
        return ngq_fail(err, NGQ_ERR_IO, "%s: write failed: %s (the previous %s is untouched)", af->tmp_path,
                        strerror(errno), af->path);
    return NGQ_OK;
}

static void fsync_parent_dir(const char *path)
{
    char *copy = ngq_strdup_printf("%s", path);
    if (!copy) return;
    int fd = open(dirname(copy), O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

ngq_status ngq_atomic_commit(ngq_atomic_file *af, ngq_error *err)
{
    if (!af->fp) return ngq_fail(err, NGQ_ERR_INTERNAL, "commit of a closed atomic file");
    int failed = fflush(af->fp) != 0 || fsync(fileno(af->fp)) != 0;
    int e = errno;
    if (fclose(af->fp) != 0 && !failed) {
        failed = 1;
        e = errno;
    }
    af->fp = NULL;
    if (failed) {
        ngq_status st = ngq_fail(err, NGQ_ERR_IO, "%s: write failed: %s (the previous %s is untouched)",
                                 af->tmp_path, strerror(e), af->path);
        ngq_atomic_abort(af);
        return st;
    }
    if (rename(af->tmp_path, af->path) != 0) {
        ngq_status st = ngq_fail(err, NGQ_ERR_IO, "%s: cannot rename into place: %s", af->path, strerror(errno));
        ngq_atomic_abort(af);
        return st;
    }
    fsync_parent_dir(af->path);
    free(af->path);
    free(af->tmp_path);
    af->path = af->tmp_path = NULL;
    return NGQ_OK;
}

void ngq_atomic_abort(ngq_atomic_file *af)
{
    if (af->fp) fclose(af->fp);
    if (af->tmp_path) unlink(af->tmp_path);
    free(af->path);
    free(af->tmp_path);
    memset(af, 0, sizeof *af);
}

ngq_status ngq_write_file_atomic(const char *path, const void *data, size_t size, ngq_error *err)
{
    ngq_atomic_file af;
    ngq_status st = ngq_atomic_open(&af, path, err);
    if (st) return st;
    st = ngq_atomic_write(&af, data, size, err);
    if (st) {
        ngq_atomic_abort(&af);
        return st;
    }
    return ngq_atomic_commit(&af, err);
}

double ngq_now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void ngq_format_duration(double seconds, char *buf, size_t size)
{
    if (!(seconds >= 0)) seconds = 0;
    long s = (long)(seconds + 0.5);
    if (s < 60) snprintf(buf, size, "%lds", s);
    else if (s < 3600) snprintf(buf, size, "%ldm%02lds", s / 60, s % 60);
    else snprintf(buf, size, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
}

int ngq_host_is_little_endian(void)
{
    const uint16_t probe = 1;
    return *(const uint8_t *)&probe == 1;
}

uint64_t ngq_fnv1a64(const void *data, size_t size, uint64_t hash)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < size; i++) {
        hash ^= p[i];
        hash *= 0x100000001b3ULL;
    }
    return hash;
}
