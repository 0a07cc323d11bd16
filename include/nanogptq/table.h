/* table.h: small tables of text cells and their two file forms, CSV and
 * Markdown, written atomically; and a CSV reader, so the tools that draw
 * figures and write the report work from the same CSV files a user reads.
 *
 * CSV follows RFC 4180 except that lines end with "\n": a field holding a
 * comma, a double quote, a CR or LF, or leading/trailing spaces is quoted,
 * and a double quote inside it is doubled. The reader accepts exactly that
 * (and "\r\n" line ends); every row must have the header's number of fields.
 * Markdown tables escape '\' and '|' inside cells and turn line breaks into
 * "<br>"; columns are padded to equal width so the raw text reads as a table
 * too, and numeric columns are right-aligned.
 * This module knows nothing about what the cells mean. */
#ifndef NANOGPTQ_TABLE_H
#define NANOGPTQ_TABLE_H

#include <stddef.h>
#include <stdio.h>

#include "nanogptq/common.h"

typedef struct {
    int n_cols;
    char **columns;   /* header names */
    int *align_right; /* per column, for Markdown (ngq_table_align_right) */
    size_t n_rows;
    size_t cap_rows;
    char **cells;     /* n_rows x n_cols, row-major; never NULL once the row exists */
} ngq_table;

ngq_status ngq_table_init(ngq_table *t, const char *const *columns, int n_cols, ngq_error *err);
void ngq_table_free(ngq_table *t);

/* Right-aligns a column in Markdown (for numbers). */
void ngq_table_align_right(ngq_table *t, int col, int right);

/* Appends a row of empty cells; *row (may be NULL) receives its index. */
ngq_status ngq_table_add_row(ngq_table *t, size_t *row, ngq_error *err);
ngq_status ngq_table_set(ngq_table *t, size_t row, int col, const char *text, ngq_error *err);
ngq_status ngq_table_setf(ngq_table *t, size_t row, int col, ngq_error *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* The cell's text ("" for an empty cell); NULL when row or col is out of range. */
const char *ngq_table_get(const ngq_table *t, size_t row, int col);
/* The column's index by header name, or -1. */
int ngq_table_column(const ngq_table *t, const char *name);
/* The cell as a number: 1 with *out set when the whole cell is a finite or
 * infinite number ("nan" gives NaN), 0 for an empty or non-numeric cell. */
int ngq_table_get_double(const ngq_table *t, size_t row, int col, double *out);

ngq_status ngq_table_write_csv(const ngq_table *t, FILE *fp, ngq_error *err);
ngq_status ngq_table_write_markdown(const ngq_table *t, FILE *fp, ngq_error *err);
/* The same, to a file written atomically (the old file stays on failure). */
ngq_status ngq_table_save_csv(const ngq_table *t, const char *path, ngq_error *err);
ngq_status ngq_table_save_markdown(const ngq_table *t, const char *path, ngq_error *err);

/* Parses CSV text (name is used in messages: "name:line: ..."). */
ngq_status ngq_table_parse_csv(ngq_table *t, const char *text, size_t size, const char *name, ngq_error *err);
ngq_status ngq_table_load_csv(ngq_table *t, const char *path, ngq_error *err);

#endif
