/* common.h: status codes, the error record every library call fills, and small
 * helpers shared by all modules (atomic file writes, whole-file reads, timing).
 * The library never prints and never exits: it returns an ngq_status and, on
 * failure, leaves a human-readable message in an ngq_error. Tools print it. */
#ifndef NANOGPTQ_COMMON_H
#define NANOGPTQ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define NGQ_VERSION_STRING "0.1.0"

typedef enum {
    NGQ_OK = 0,
    NGQ_ERR_USAGE,    /* bad command-line arguments                      */
    NGQ_ERR_CONFIG,   /* bad configuration file or --set override        */
    NGQ_ERR_IO,       /* a file could not be opened, read or written     */
    NGQ_ERR_FORMAT,   /* a file exists but its contents are invalid      */
    NGQ_ERR_NOMEM,    /* an allocation failed                            */
    NGQ_ERR_NUMERIC,  /* NaN/Inf or a failed factorisation               */
    NGQ_ERR_INTERRUPTED, /* stopped on request (SIGINT/SIGTERM)          */
    NGQ_ERR_INTERNAL  /* a broken invariant: a bug                       */
} ngq_status;

#define NGQ_ERROR_MESSAGE_MAX 1024

typedef struct {
    ngq_status status;
    char message[NGQ_ERROR_MESSAGE_MAX];
} ngq_error;

/* Records status and a printf-style message in err (err may be NULL) and
 * returns status, so callers can write `return ngq_fail(err, ...)`. */
ngq_status ngq_fail(ngq_error *err, ngq_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the message already in err with more context ("loading x: ...")
 * and returns err's status (NGQ_ERR_INTERNAL when err is NULL). */
ngq_status ngq_error_prefix(ngq_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void ngq_error_clear(ngq_error *err);

/* Process exit code for a status: 0 ok, 2 usage/config, 1 everything else. */
int ngq_exit_code(ngq_status status);

const char *ngq_status_name(ngq_status status);

/* ---- files ---------------------------------------------------------- */

/* Reads a whole file into a malloc'd buffer (NUL-terminated for convenience;
 * *size excludes the terminator). */
ngq_status ngq_read_file(const char *path, char **data, size_t *size, ngq_error *err);

/* A file written atomically: data goes to "<path>.tmp.<pid>", and commit
 * flushes, fsyncs, renames it over path and fsyncs the directory. abort (or a
 * failed commit) removes the temporary file; the old path is never touched. */
typedef struct {
    FILE *fp;
    char *path;
    char *tmp_path;
} ngq_atomic_file;

ngq_status ngq_atomic_open(ngq_atomic_file *af, const char *path, ngq_error *err);
ngq_status ngq_atomic_write(ngq_atomic_file *af, const void *data, size_t size, ngq_error *err);
ngq_status ngq_atomic_commit(ngq_atomic_file *af, ngq_error *err);
void ngq_atomic_abort(ngq_atomic_file *af);

/* Convenience: one buffer written atomically. */
ngq_status ngq_write_file_atomic(const char *path, const void *data, size_t size, ngq_error *err);

/* mkdir -p; existing directories are fine. */
ngq_status ngq_make_dirs(const char *path, ngq_error *err);

int ngq_file_exists(const char *path);

/* ---- strings --------------------------------------------------------- */

/* snprintf into a malloc'd string. Returns NULL on allocation failure. */
char *ngq_strdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Joins dir and name with one '/'. malloc'd. */
char *ngq_path_join(const char *dir, const char *name);

/* ---- time and progress ------------------------------------------------ */

double ngq_now_seconds(void); /* monotonic clock */

/* Formats a duration such as "12m05s" or "1h02m" into buf. */
void ngq_format_duration(double seconds, char *buf, size_t size);

/* Little-endian helpers for file formats (the toolkit only runs on
 * little-endian hosts; ngq_host_is_little_endian() is checked at start). */
int ngq_host_is_little_endian(void);

/* FNV-1a 64-bit hash, used as a data checksum in file headers. */
uint64_t ngq_fnv1a64(const void *data, size_t size, uint64_t seed);
#define NGQ_FNV1A64_INIT 0xcbf29ce484222325ULL

#endif
