/* safetensors.h: reading and writing tensors in the safetensors format
 * (8-byte little-endian header length N, N bytes of JSON header, raw data).
 *
 * The writer collects tensors (by pointer, without copying their data) and
 * metadata strings, then streams them into a file written atomically, adding
 * the metadata key "nanogptq.checksum" = "fnv1a64:<16 hex digits>" over the
 * whole data section. Tensors are laid out in insertion order, contiguously,
 * and the header is padded with spaces so the data section starts at a
 * multiple of 8 bytes.
 *
 * The reader loads a whole file (or a caller's buffer) and validates it
 * strictly before handing out anything: every entry, every offset, no holes
 * or overlaps, string-only metadata, and the checksum when present. Every data
 * pointer it returns is aligned for its dtype (misaligned tensors of external
 * files are copied). It does not convert between dtypes, does not memory-map,
 * and does not handle big-endian hosts. */
#ifndef NANOGPTQ_SAFETENSORS_H
#define NANOGPTQ_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "nanogptq/common.h"

/* The most dimensions a tensor may have, in both reader and writer. */
#define NGQ_ST_MAX_DIMS 8
/* The largest header either side accepts (same limit as the reference reader). */
#define NGQ_ST_MAX_HEADER_BYTES 100000000u
/* The metadata key the writer adds and the reader verifies. */
#define NGQ_ST_CHECKSUM_KEY "nanogptq.checksum"

typedef enum {
    NGQ_ST_BOOL,
    NGQ_ST_U8,
    NGQ_ST_I8,
    NGQ_ST_U16,
    NGQ_ST_I16,
    NGQ_ST_F16,
    NGQ_ST_BF16,
    NGQ_ST_U32,
    NGQ_ST_I32,
    NGQ_ST_F32,
    NGQ_ST_U64,
    NGQ_ST_I64,
    NGQ_ST_F64,
    NGQ_ST_DTYPE_COUNT
} ngq_st_dtype;

/* "F32", "BF16", ...; "?" for a value outside the enum. */
const char *ngq_st_dtype_name(ngq_st_dtype dtype);
/* Bytes per element (1, 2, 4 or 8); 0 for a value outside the enum. */
size_t ngq_st_dtype_size(ngq_st_dtype dtype);
/* Looks up a dtype by its exact safetensors name; returns 1 if known, else 0. */
int ngq_st_dtype_parse(const char *name, ngq_st_dtype *dtype);

/* One tensor of an open file. Every pointer stays valid until ngq_st_close. */
typedef struct {
    const char *name;
    ngq_st_dtype dtype;
    int ndim;                        /* 0 for a scalar */
    int64_t shape[NGQ_ST_MAX_DIMS];  /* shape[0..ndim-1]; the rest are 0 */
    size_t nbytes;                   /* element count x dtype size */
    const void *data;                /* aligned for dtype; NULL when nbytes is 0 */
} ngq_st_tensor;

/* ---- writer ------------------------------------------------------------ */

typedef struct {
    char *name;
    ngq_st_dtype dtype;
    int ndim;
    int64_t shape[NGQ_ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
} ngq_st_writer_entry;

/* Fields are private; use the functions below. */
typedef struct {
    ngq_st_writer_entry *tensors;
    size_t n_tensors, cap_tensors;
    char **metadata_keys;
    char **metadata_values;
    size_t n_metadata, cap_metadata;
} ngq_st_writer;

void ngq_st_writer_init(ngq_st_writer *w);
void ngq_st_writer_free(ngq_st_writer *w);

/* Adds a tensor. The data is not copied: it must stay alive and unchanged
 * until the file is written. Fails (NGQ_ERR_INTERNAL, message naming the
 * tensor) on a duplicate name, the name "__metadata__", a name that is not
 * UTF-8, an unknown dtype, ndim outside [0, NGQ_ST_MAX_DIMS], a negative
 * dimension, or nbytes different from the element count x dtype size. */
ngq_status ngq_st_writer_add_tensor(ngq_st_writer *w, const char *name, ngq_st_dtype dtype, int ndim,
                                    const int64_t *shape, const void *data, size_t nbytes,
                                    ngq_error *err);

/* Adds a metadata string (both copied). Fails on a duplicate key, the
 * reserved key NGQ_ST_CHECKSUM_KEY, or text that is not UTF-8. */
ngq_status ngq_st_writer_add_metadata(ngq_st_writer *w, const char *key, const char *value,
                                      ngq_error *err);

/* Writes the file atomically: on any failure an existing file at path is
 * left untouched and no temporary file remains. */
ngq_status ngq_st_writer_write(const ngq_st_writer *w, const char *path, ngq_error *err);

/* Writes the complete safetensors stream into an atomic file the caller has
 * opened and will commit or abort (e.g. to commit several files together). */
ngq_status ngq_st_writer_write_to(const ngq_st_writer *w, ngq_atomic_file *af, ngq_error *err);

/* ---- reader ------------------------------------------------------------ */

typedef struct ngq_st_file ngq_st_file;

/* Reads and validates a whole file. Failures are NGQ_ERR_IO (cannot read),
 * NGQ_ERR_FORMAT (invalid contents) or NGQ_ERR_NOMEM, with a message that
 * starts with the path. On failure *out is NULL. */
ngq_status ngq_st_open(ngq_st_file **out, const char *path, ngq_error *err);

/* The same from a buffer (copied, so the caller may free it at once);
 * display_name stands in for the path in messages. */
ngq_status ngq_st_open_memory(ngq_st_file **out, const void *data, size_t size,
                              const char *display_name, ngq_error *err);

void ngq_st_close(ngq_st_file *f); /* NULL is fine */

size_t ngq_st_tensor_count(const ngq_st_file *f);
/* Tensors in file order: ascending data offset (the writer's insertion
 * order). index must be < ngq_st_tensor_count. */
const ngq_st_tensor *ngq_st_tensor_at(const ngq_st_file *f, size_t index);
/* NULL when there is no tensor of that name. */
const ngq_st_tensor *ngq_st_find_tensor(const ngq_st_file *f, const char *name);

/* Finds a tensor and checks it has exactly the given dtype and shape; on a
 * mismatch the NGQ_ERR_FORMAT message names the file, the tensor, and the
 * expected and actual dtype and shape. */
ngq_status ngq_st_require_tensor(const ngq_st_file *f, const char *name, ngq_st_dtype dtype, int ndim,
                                 const int64_t *shape, const ngq_st_tensor **out, ngq_error *err);

/* Metadata from "__metadata__" (including the checksum entry), in header order. */
size_t ngq_st_metadata_count(const ngq_st_file *f);
/* index must be < ngq_st_metadata_count. */
void ngq_st_metadata_at(const ngq_st_file *f, size_t index, const char **key, const char **value);
/* NULL when the key is absent. */
const char *ngq_st_metadata_value(const ngq_st_file *f, const char *key);

#endif
