/* preprocess.h: corpus -> vocabulary + train/val/test token files.
 * Stories are separated by lines equal to [data] delimiter; the delimiter
 * line stays in the text of the story it ends, so concatenating the splits of
 * a contiguous split gives the corpus back byte for byte. */
#ifndef NANOGPTQ_PREPROCESS_H
#define NANOGPTQ_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#include "nanogptq/common.h"
#include "nanogptq/config.h"
#include "nanogptq/vocab.h"

enum { NGQ_SPLIT_TRAIN = 0, NGQ_SPLIT_VAL = 1, NGQ_SPLIT_TEST = 2, NGQ_SPLIT_COUNT = 3 };

typedef struct {
    size_t stories;
    size_t chars;   /* code points */
    size_t bytes;
    size_t tokens;
    size_t unknown; /* code points mapped to the unknown id */
    uint32_t unknown_examples[8];
    int unknown_example_count;
} ngq_split_stats;

typedef struct {
    ngq_split_stats split[NGQ_SPLIT_COUNT];
    int vocab_size;
    size_t input_bytes;
    double seconds;
} ngq_preprocess_stats;

const char *ngq_split_name(int split); /* "train", "val", "test" */

/* A story: a byte range of one of the input buffers. */
typedef struct {
    int input;
    size_t begin, end;
} ngq_story;

/* Finds the stories of one buffer: each ends after a line equal to delimiter
 * (the line included); trailing text without a delimiter is a last story. */
ngq_status ngq_find_stories(const char *text, size_t size, const char *delimiter, int input, ngq_story **stories,
                            size_t *count, ngq_error *err);

/* Assigns each story a split (out[i] = NGQ_SPLIT_*), by [data] split,
 * val_fraction, test_fraction and the seed. */
void ngq_assign_splits(size_t story_count, const char *mode, double val_fraction, double test_fraction,
                       uint64_t seed, unsigned char *out);

/* The whole step: reads [data] inputs, writes vocab.txt and
 * {train,val,test}.tok under run_dir/data/. */
ngq_status ngq_preprocess_run(const ngq_config *cfg, ngq_preprocess_stats *stats, ngq_error *err);

/* Encodes any UTF-8 text file with an existing vocabulary into a token file. */
ngq_status ngq_preprocess_encode(const char *vocab_path, const char *text_path, const char *out_path,
                                 ngq_split_stats *stats, ngq_error *err);

#endif
