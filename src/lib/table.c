/* table.c: text tables, their CSV and Markdown forms, and a CSV reader.
 * It does not format numbers (callers choose the precision) and does not
 * print anywhere but the FILE* it is given. */
#include "nanogptq/table.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static char *dup_string(const char *s)
{
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

void ngq_table_free(ngq_table *t)
{
    if (!t) return;
    if (t->columns)
        for (int c = 0; c < t->n_cols; c++) free(t->columns[c]);
    if (t->cells)
        for (size_t i = 0; i < t->n_rows * (size_t)t->n_cols; i++) free(t->cells[i]);
    free(t->columns);
    free(t->align_right);
    free(t->cells);
    memset(t, 0, sizeof *t);
}

ngq_status ngq_table_init(ngq_table *t, const char *const *columns, int n_cols, ngq_error *err)
{
    memset(t, 0, sizeof *t);
    if (n_cols < 1) return ngq_fail(err, NGQ_ERR_INTERNAL, "a table needs at least one column");
    t->columns = calloc((size_t)n_cols, sizeof *t->columns);
    t->align_right = calloc((size_t)n_cols, sizeof *t->align_right);
    if (!t->columns || !t->align_right) {
        ngq_table_free(t);
        return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory for a table header");
    }
    t->n_cols = n_cols;
    for (int c = 0; c < n_cols; c++) {
        t->columns[c] = dup_string(columns[c] ? columns[c] : "");
        if (!t->columns[c]) {
            ngq_table_free(t);
            return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory for a table header");
        }
    }
    return NGQ_OK;
}

void ngq_table_align_right(ngq_table *t, int col, int right)
{
    if (col >= 0 && col < t->n_cols) t->align_right[col] = right;
}

ngq_status ngq_table_add_row(ngq_table *t, size_t *row, ngq_error *err)
{
    if (t->n_rows == t->cap_rows) {
        size_t cap = t->cap_rows ? 2 * t->cap_rows : 16;
        char **cells = realloc(t->cells, cap * (size_t)t->n_cols * sizeof *cells);
        if (!cells) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory for table rows");
        t->cells = cells;
        t->cap_rows = cap;
    }
    char **r = t->cells + t->n_rows * (size_t)t->n_cols;
    for (int c = 0; c < t->n_cols; c++) {
        r[c] = dup_string("");
        if (!r[c]) {
            for (int k = 0; k < c; k++) free(r[k]);
            return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory for table cells");
        }
    }
    if (row) *row = t->n_rows;
    t->n_rows++;
    return NGQ_OK;
}

ngq_status ngq_table_set(ngq_table *t, size_t row, int col, const char *text, ngq_error *err)
{
    if (row >= t->n_rows || col < 0 || col >= t->n_cols)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "table cell (%zu, %d) outside %zu x %d", row, col, t->n_rows,
                        t->n_cols);
    char *copy = dup_string(text ? text : "");
    if (!copy) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory for a table cell");
    char **cell = &t->cells[row * (size_t)t->n_cols + (size_t)col];
    free(*cell);
    *cell = copy;
    return NGQ_OK;
}

ngq_status ngq_table_setf(ngq_table *t, size_t row, int col, ngq_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return ngq_fail(err, NGQ_ERR_INTERNAL, "bad format for a table cell");
    char *buf = malloc((size_t)n + 1);
    if (!buf) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory for a table cell");
    va_start(ap, fmt);
    vsnprintf(buf, (size_t)n + 1, fmt, ap);
    va_end(ap);
    ngq_status st = ngq_table_set(t, row, col, buf, err);
    free(buf);
    return st;
}

const char *ngq_table_get(const ngq_table *t, size_t row, int col)
{
    if (row >= t->n_rows || col < 0 || col >= t->n_cols) return NULL;
    return t->cells[row * (size_t)t->n_cols + (size_t)col];
}

int ngq_table_column(const ngq_table *t, const char *name)
{
    for (int c = 0; c < t->n_cols; c++)
        if (strcmp(t->columns[c], name) == 0) return c;
    return -1;
}

int ngq_table_get_double(const ngq_table *t, size_t row, int col, double *out)
{
    const char *s = ngq_table_get(t, row, col);
    if (!s || !*s) return 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s) return 0;
    while (*end == ' ') end++;
    if (*end) return 0;
    *out = v;
    return 1;
}

/* ---- CSV ------------------------------------------------------------------ */

static int csv_needs_quotes(const char *s)
{
    if (!*s) return 0;
    if (s[0] == ' ' || s[strlen(s) - 1] == ' ') return 1;
    return strpbrk(s, ",\"\r\n") != NULL;
}

static void csv_field(FILE *fp, const char *s)
{
    if (!csv_needs_quotes(s)) {
        fputs(s, fp);
        return;
    }
    fputc('"', fp);
    for (const char *c = s; *c; c++) {
        if (*c == '"') fputc('"', fp);
        fputc(*c, fp);
    }
    fputc('"', fp);
}

ngq_status ngq_table_write_csv(const ngq_table *t, FILE *fp, ngq_error *err)
{
    for (int c = 0; c < t->n_cols; c++) {
        if (c) fputc(',', fp);
        csv_field(fp, t->columns[c]);
    }
    fputc('\n', fp);
    for (size_t r = 0; r < t->n_rows; r++) {
        for (int c = 0; c < t->n_cols; c++) {
            if (c) fputc(',', fp);
            csv_field(fp, ngq_table_get(t, r, c));
        }
        fputc('\n', fp);
    }
    if (ferror(fp)) return ngq_fail(err, NGQ_ERR_IO, "writing a CSV table failed");
    return NGQ_OK;
}

/* ---- Markdown ------------------------------------------------------------- */

/* Display width: code points (continuation bytes do not count). */
static size_t text_width(const char *s, size_t bytes)
{
    size_t w = 0;
    for (size_t i = 0; i < bytes; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) w++;
    return w;
}

/* Writes the escaped cell to fp (when fp is not NULL); returns its width. */
static size_t markdown_cell(FILE *fp, const char *s)
{
    size_t w = 0;
    for (const char *c = s; *c; c++) {
        const char *out;
        char one[2] = {*c, '\0'};
        if (*c == '|') out = "\\|";
        else if (*c == '\\') out = "\\\\";
        else if (*c == '\n') out = "<br>";
        else if (*c == '\r') out = "";
        else out = one;
        if (fp) fputs(out, fp);
        w += text_width(out, strlen(out));
    }
    return w;
}

static void pad(FILE *fp, size_t n)
{
    while (n--) fputc(' ', fp);
}

static void markdown_aligned(FILE *fp, const char *s, size_t width, int right)
{
    size_t w = markdown_cell(NULL, s);
    if (right) pad(fp, width - w);
    markdown_cell(fp, s);
    if (!right) pad(fp, width - w);
}

ngq_status ngq_table_write_markdown(const ngq_table *t, FILE *fp, ngq_error *err)
{
    size_t *width = calloc((size_t)t->n_cols, sizeof *width);
    if (!width) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    for (int c = 0; c < t->n_cols; c++) {
        width[c] = markdown_cell(NULL, t->columns[c]);
        if (width[c] < 3) width[c] = 3; /* "---" */
        for (size_t r = 0; r < t->n_rows; r++) {
            size_t w = markdown_cell(NULL, ngq_table_get(t, r, c));
            if (w > width[c]) width[c] = w;
        }
    }
    fputc('|', fp);
    for (int c = 0; c < t->n_cols; c++) {
        fputc(' ', fp);
        markdown_aligned(fp, t->columns[c], width[c], t->align_right[c]);
        fputs(" |", fp);
    }
    fputs("\n|", fp);
    for (int c = 0; c < t->n_cols; c++) {
        fputc(' ', fp);
        for (size_t k = 0; k + 1 < width[c]; k++) fputc('-', fp);
        fputc(t->align_right[c] ? ':' : '-', fp);
        fputs(" |", fp);
    }
    fputc('\n', fp);
    for (size_t r = 0; r < t->n_rows; r++) {
        fputc('|', fp);
        for (int c = 0; c < t->n_cols; c++) {
            fputc(' ', fp);
            markdown_aligned(fp, ngq_table_get(t, r, c), width[c], t->align_right[c]);
            fputs(" |", fp);
        }
        fputc('\n', fp);
    }
    free(width);
    if (ferror(fp)) return ngq_fail(err, NGQ_ERR_IO, "writing a Markdown table failed");
    return NGQ_OK;
}

typedef ngq_status (*table_writer)(const ngq_table *, FILE *, ngq_error *);

static ngq_status save_with(const ngq_table *t, const char *path, table_writer write, ngq_error *err)
{
    ngq_atomic_file af;
    ngq_status st = ngq_atomic_open(&af, path, err);
    if (st) return st;
    if ((st = write(t, af.fp, err))) {
        ngq_atomic_abort(&af);
        return ngq_error_prefix(err, "%s", path);
    }
    return ngq_atomic_commit(&af, err);
}

ngq_status ngq_table_save_csv(const ngq_table *t, const char *path, ngq_error *err)
{
    return save_with(t, path, ngq_table_write_csv, err);
}

ngq_status ngq_table_save_markdown(const ngq_table *t, const char *path, ngq_error *err)
{
    return save_with(t, path, ngq_table_write_markdown, err);
}

/* ---- CSV reader ------------------------------------------------------------ */

typedef struct {
    char **fields;
    int count, cap;
    char *buf;
    size_t len, buf_cap;
} csv_record;

static void record_clear(csv_record *r)
{
    for (int i = 0; i < r->count; i++) free(r->fields[i]);
    r->count = 0;
    r->len = 0;
}

static void record_free(csv_record *r)
{
    record_clear(r);
    free(r->fields);
    free(r->buf);
}

static int record_putc(csv_record *r, char c)
{
    if (r->len + 1 >= r->buf_cap) {
        size_t cap = r->buf_cap ? 2 * r->buf_cap : 64;
        char *b = realloc(r->buf, cap);
        if (!b) return 0;
        r->buf = b;
        r->buf_cap = cap;
    }
    r->buf[r->len++] = c;
    return 1;
}

static int record_end_field(csv_record *r)
{
    if (r->count == r->cap) {
        int cap = r->cap ? 2 * r->cap : 16;
        char **f = realloc(r->fields, (size_t)cap * sizeof *f);
        if (!f) return 0;
        r->fields = f;
        r->cap = cap;
    }
    if (!record_putc(r, '\0')) return 0;
    r->fields[r->count] = dup_string(r->buf);
    if (!r->fields[r->count]) return 0;
    r->count++;
    r->len = 0;
    return 1;
}

/* Reads one record starting at *pos; returns 1 when a record was read, 0 at
 * the end of the text, -1 on error (message in err). */
static int read_record(const char *text, size_t size, size_t *pos, size_t *line, csv_record *r, const char *name,
                       ngq_error *err)
{
    record_clear(r);
    size_t i = *pos;
    if (i >= size) return 0;
    size_t start_line = *line;
    for (;;) {
        /* one field */
        if (i < size && text[i] == '"') {
            i++;
            for (;;) {
                if (i >= size) {
                    ngq_fail(err, NGQ_ERR_FORMAT, "%s:%zu: a quoted field is not closed", name, start_line);
                    return -1;
                }
                char c = text[i++];
                if (c == '"') {
                    if (i < size && text[i] == '"') {
                        i++;
                        if (!record_putc(r, '"')) goto nomem;
                        continue;
                    }
                    break;
                }
                if (c == '\n') (*line)++;
                if (!record_putc(r, c)) goto nomem;
            }
            if (i < size && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
                ngq_fail(err, NGQ_ERR_FORMAT, "%s:%zu: text after a closing quote", name, *line);
                return -1;
            }
        } else {
            while (i < size && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
                if (text[i] == '"') {
                    ngq_fail(err, NGQ_ERR_FORMAT, "%s:%zu: a double quote inside an unquoted field", name, *line);
                    return -1;
                }
                if (!record_putc(r, text[i++])) goto nomem;
            }
        }
        if (!record_end_field(r)) goto nomem;
        if (i < size && text[i] == ',') {
            i++;
            continue;
        }
        if (i < size && text[i] == '\r') i++;
        if (i < size && text[i] == '\n') i++;
        (*line)++;
        break;
    }
    *pos = i;
    return 1;
nomem:
    ngq_fail(err, NGQ_ERR_NOMEM, "out of memory reading %s", name);
    return -1;
}

ngq_status ngq_table_parse_csv(ngq_table *t, const char *text, size_t size, const char *name, ngq_error *err)
{
    memset(t, 0, sizeof *t);
    csv_record rec = {0};
    size_t pos = 0, line = 1;
    ngq_status st = NGQ_OK;
    int got = read_record(text, size, &pos, &line, &rec, name, err);
    if (got < 0) {
        st = err ? err->status : NGQ_ERR_FORMAT;
        goto done;
    }
    if (got == 0 || (rec.count == 1 && rec.fields[0][0] == '\0')) {
        st = ngq_fail(err, NGQ_ERR_FORMAT, "%s: empty file: expected a header line", name);
        goto done;
    }
    if ((st = ngq_table_init(t, (const char *const *)rec.fields, rec.count, err))) goto done;
    for (;;) {
        size_t record_line = line;
        got = read_record(text, size, &pos, &line, &rec, name, err);
        if (got < 0) {
            st = err ? err->status : NGQ_ERR_FORMAT;
            goto done;
        }
        if (got == 0) break;
        if (rec.count == 1 && rec.fields[0][0] == '\0') continue; /* blank line */
        if (rec.count != t->n_cols) {
            st = ngq_fail(err, NGQ_ERR_FORMAT, "%s:%zu: %d fields where the header has %d", name, record_line,
                          rec.count, t->n_cols);
            goto done;
        }
        size_t row;
        if ((st = ngq_table_add_row(t, &row, err))) goto done;
        for (int c = 0; c < rec.count; c++) {
            char **cell = &t->cells[row * (size_t)t->n_cols + (size_t)c];
            free(*cell);
            *cell = rec.fields[c];
            rec.fields[c] = NULL;
        }
        rec.count = 0;
    }
done:
    record_free(&rec);
    if (st) ngq_table_free(t);
    return st;
}

ngq_status ngq_table_load_csv(ngq_table *t, const char *path, ngq_error *err)
{
    char *text;
    size_t size;
    memset(t, 0, sizeof *t);
    ngq_status st = ngq_read_file(path, &text, &size, err);
    if (st) return st;
    st = ngq_table_parse_csv(t, text, size, path, err);
    free(text);
    return st;
}
