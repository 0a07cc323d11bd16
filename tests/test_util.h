/* test_util.h: the few helpers the cmocka suites share: message checks,
 * temporary directories and small file operations. Include after cmocka.h. */
#ifndef NANOGPTQ_TEST_UTIL_H
#define NANOGPTQ_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nanogptq/common.h"

/* Fails the test unless message contains needle. */
static inline void assert_contains(const char *message, const char *needle)
{
    if (!strstr(message, needle)) fail_msg("expected \"%s\" in message \"%s\"", needle, message);
}

/* Creates /tmp/<prefix>_XXXXXX into dir (size >= 64); returns 0 on success. */
static inline int test_make_tmpdir(char *dir, size_t size, const char *prefix)
{
    snprintf(dir, size, "/tmp/%s_XXXXXX", prefix);
    return mkdtemp(dir) ? 0 : -1;
}

/* Removes a temporary directory tree; returns 0 on success. */
static inline int test_remove_tree(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes len bytes of text to path, failing the test on error. */
static inline void test_write_file(const char *path, const char *text, size_t len)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) fail_msg("cannot create %s", path);
    if (fwrite(text, 1, len, fp) != len) fail_msg("cannot write %s", path);
    fclose(fp);
}

/* 1 when both files exist and hold the same bytes. */
static inline int test_files_equal(const char *a, const char *b)
{
    char *da = NULL, *db = NULL;
    size_t na = 0, nb = 0;
    ngq_error err = {0};
    int same = ngq_read_file(a, &da, &na, &err) == NGQ_OK && ngq_read_file(b, &db, &nb, &err) == NGQ_OK && na == nb &&
               memcmp(da, db, na) == 0;
    free(da);
    free(db);
    return same;
}

#endif
