/* test_preprocess.c: UTF-8 handling, story splitting, vocabulary, token files
 * and the preprocess step on small corpora the test writes itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nanogptq/config.h"
#include "nanogptq/preprocess.h"
#include "nanogptq/tokens.h"
#include "nanogptq/vocab.h"

#include "test_util.h"

static char tmpdir[256];

static char *tmp_path(const char *name)
{
    return ngq_path_join(tmpdir, name);
}

static int setup(void **state)
{
    (void)state;
    return test_make_tmpdir(tmpdir, sizeof tmpdir, "ngq_test_pre");
}

static int teardown(void **state)
{
    (void)state;
    return test_remove_tree(tmpdir);
}

/* Twenty stories; story i is "Story i: ...\n<|endoftext|>\n". Story 19 holds
 * a character ("é") that appears nowhere else. */
static char *make_corpus(size_t *len)
{
    size_t cap = 8192, n = 0;
    char *buf = malloc(cap);
    for (int i = 0; i < 20; i++) {
        n += (size_t)snprintf(buf + n, cap - n, "Story %d: the cat sat%s.\nThe end.\n<|endoftext|>\n", i,
                              i == 19 ? " on the case\xC3\xA9" : "");
    }
    *len = n;
    return buf;
}

static void test_utf8_decode_strict(void **state)
{
    (void)state;
    uint32_t cp;
    assert_int_equal(ngq_utf8_decode((const unsigned char *)"A", 1, &cp), 1);
    assert_int_equal(cp, 'A');
    assert_int_equal(ngq_utf8_decode((const unsigned char *)"\xE2\x80\x9C", 3, &cp), 3);
    assert_int_equal(cp, 0x201C);
    assert_int_equal(ngq_utf8_decode((const unsigned char *)"\xF0\x9F\x8E\x93", 4, &cp), 4);
    assert_int_equal(cp, 0x1F393);
    assert_int_equal(ngq_utf8_decode((const unsigned char *)"\xC0\xAF", 2, &cp), 0);        /* overlong */
    assert_int_equal(ngq_utf8_decode((const unsigned char *)"\xED\xA0\x80", 3, &cp), 0);    /* surrogate */
    assert_int_equal(ngq_utf8_decode((const unsigned char *)"\xF4\x90\x80\x80", 4, &cp), 0); /* > U+10FFFF */
    assert_int_equal(ngq_utf8_decode((const unsigned char *)"\xE2\x80", 2, &cp), 0);        /* truncated */
    assert_int_equal(ngq_utf8_decode((const unsigned char *)"\x80", 1, &cp), 0);            /* continuation */
    char out[4];
    for (uint32_t c = 1; c < 0x110000; c += 97) {
        if (c >= 0xD800 && c <= 0xDFFF) continue;
        size_t n = ngq_utf8_encode(c, out);
        assert_int_equal(ngq_utf8_decode((const unsigned char *)out, n, &cp), n);
        assert_int_equal(cp, c);
    }
}

static void test_find_stories(void **state)
{
    (void)state;
    ngq_error err = {0};
    const char *text = "a\n<|endoftext|>\nb b\n<|endoftext|>\r\n\nc tail";
    ngq_story *stories;
    size_t n;
    assert_int_equal(ngq_find_stories(text, strlen(text), "<|endoftext|>", 0, &stories, &n, &err), NGQ_OK);
    assert_int_equal(n, 3);
    assert_int_equal(stories[0].begin, 0);
    assert_int_equal(stories[0].end, 16);
    assert_int_equal(stories[1].begin, 16);
    assert_int_equal(stories[2].end, strlen(text));
    assert_memory_equal(text + stories[2].begin, "\nc tail", 7);
    free(stories);
    /* the delimiter must be the whole line */
    const char *inline_text = "a <|endoftext|> b\n";
    assert_int_equal(ngq_find_stories(inline_text, strlen(inline_text), "<|endoftext|>", 0, &stories, &n, &err), NGQ_OK);
    assert_int_equal(n, 1);
    free(stories);
}

static void test_assign_splits(void **state)
{
    (void)state;
    unsigned char a[100], b[100], c[100];
    ngq_assign_splits(100, "contiguous", 0.1, 0.05, 1, a);
    int counts[3] = {0};
    for (int i = 0; i < 100; i++) counts[a[i]]++;
    assert_int_equal(counts[NGQ_SPLIT_TRAIN], 85);
    assert_int_equal(counts[NGQ_SPLIT_VAL], 10);
    assert_int_equal(counts[NGQ_SPLIT_TEST], 5);
    assert_int_equal(a[84], NGQ_SPLIT_TRAIN);
    assert_int_equal(a[85], NGQ_SPLIT_VAL);
    assert_int_equal(a[95], NGQ_SPLIT_TEST);
    ngq_assign_splits(100, "shuffled", 0.1, 0.05, 7, b);
    ngq_assign_splits(100, "shuffled", 0.1, 0.05, 7, c);
    assert_memory_equal(b, c, 100); /* deterministic for a seed */
    memset(counts, 0, sizeof counts);
    for (int i = 0; i < 100; i++) counts[b[i]]++;
    assert_int_equal(counts[NGQ_SPLIT_VAL], 10);
    assert_int_equal(counts[NGQ_SPLIT_TEST], 5);
    ngq_assign_splits(100, "shuffled", 0.1, 0.05, 8, c);
    assert_true(memcmp(b, c, 100) != 0); /* and depends on it */
}

static void configure(ngq_config *cfg, const char *inputs, double val, double test)
{
    ngq_config_defaults(cfg);
    snprintf(cfg->data.inputs, sizeof cfg->data.inputs, "%s", inputs);
    snprintf(cfg->paths.run_dir, sizeof cfg->paths.run_dir, "%s/run", tmpdir);
    cfg->data.val_fraction = val;
    cfg->data.test_fraction = test;
}

static void test_preprocess_splits_vocab_unknowns(void **state)
{
    (void)state;
    size_t len;
    char *corpus = make_corpus(&len);
    char *path = tmp_path("corpus.txt");
    test_write_file(path, corpus, len);
    ngq_config cfg;
    configure(&cfg, path, 0.1, 0.1);
    ngq_preprocess_stats stats;
    ngq_error err = {0};
    assert_int_equal(ngq_preprocess_run(&cfg, &stats, &err), NGQ_OK);
    assert_int_equal(stats.split[NGQ_SPLIT_TRAIN].stories, 16);
    assert_int_equal(stats.split[NGQ_SPLIT_VAL].stories, 2);
    assert_int_equal(stats.split[NGQ_SPLIT_TEST].stories, 2);
    /* 'é' appears only in story 19 (test): one unknown there, none elsewhere */
    assert_int_equal(stats.split[NGQ_SPLIT_TEST].unknown, 1);
    assert_int_equal(stats.split[NGQ_SPLIT_TEST].unknown_examples[0], 0xE9);
    assert_int_equal(stats.split[NGQ_SPLIT_VAL].unknown, 0);
    assert_int_equal(stats.split[NGQ_SPLIT_TRAIN].unknown, 0);
    size_t total = 0;
    for (int s = 0; s < 3; s++) {
        assert_int_equal(stats.split[s].tokens, stats.split[s].chars);
        total += stats.split[s].bytes;
    }
    assert_int_equal(total, len);

    ngq_vocab vocab;
    char *vpath = ngq_config_data_path(&cfg, "vocab.txt");
    assert_int_equal(ngq_vocab_read(&vocab, vpath, &err), NGQ_OK);
    assert_int_equal(vocab.size, stats.vocab_size);
    assert_int_equal(vocab.unknown_id, vocab.size - 1);
    assert_int_equal(ngq_vocab_id(&vocab, 0xE9), vocab.unknown_id);
    assert_int_equal(vocab.codepoints[0], '\n'); /* sorted by code point */

    /* the three token files decode back to the corpus in order (contiguous split) */
    size_t pos = 0;
    for (int s = 0; s < 3; s++) {
        char *tpath = ngq_strdup_printf("%s/data/%s.tok", cfg.paths.run_dir, ngq_split_name(s));
        ngq_tokens toks;
        assert_int_equal(ngq_tokens_read(&toks, tpath, &err), NGQ_OK);
        assert_int_equal(toks.vocab_size, vocab.size);
        assert_true(toks.vocab_hash == vocab.hash);
        char *text = ngq_vocab_decode(&vocab, toks.tokens, toks.count);
        if (s == NGQ_SPLIT_TEST) {
            /* the unknown 'é' decodes to U+FFFD */
            assert_non_null(strstr(text, "case\xEF\xBF\xBD"));
        } else {
            assert_memory_equal(text, corpus + pos, strlen(text));
        }
        pos += strlen(text) - (s == NGQ_SPLIT_TEST ? 1 : 0);
        free(text);
        ngq_tokens_free(&toks);
        free(tpath);
    }
    ngq_vocab_free(&vocab);
    free(vpath);
    free(path);
    free(corpus);
}

static void test_encode_decode_round_trip(void **state)
{
    (void)state;
    const uint32_t cps[] = {'\n', ' ', '.', 'a', 'b', 'c', 0x201C, 0x201D, 0x1F393};
    ngq_vocab vocab;
    ngq_error err = {0};
    assert_int_equal(ngq_vocab_from_codepoints(&vocab, cps, 9, &err), NGQ_OK);
    const char *text = "abc. \xE2\x80\x9C" "cab\xE2\x80\x9D\n\xF0\x9F\x8E\x93";
    uint16_t tokens[64];
    size_t n, unknown;
    assert_int_equal(ngq_vocab_encode(&vocab, text, strlen(text), tokens, &n, &unknown, "t", &err), NGQ_OK);
    assert_int_equal(unknown, 0);
    assert_int_equal(n, 12);
    char *back = ngq_vocab_decode(&vocab, tokens, n);
    assert_string_equal(back, text);
    free(back);
    /* a file round trip keeps ids and the hash */
    char *vpath = tmp_path("v.txt");
    assert_int_equal(ngq_vocab_write(&vocab, vpath, &err), NGQ_OK);
    ngq_vocab again;
    assert_int_equal(ngq_vocab_read(&again, vpath, &err), NGQ_OK);
    assert_int_equal(again.size, vocab.size);
    assert_true(again.hash == vocab.hash);
    assert_memory_equal(again.codepoints, vocab.codepoints, 9 * sizeof(uint32_t));
    ngq_vocab_free(&again);
    /* a corrupted vocabulary file is rejected */
    FILE *fp = fopen(vpath, "r+b");
    fseek(fp, -3, SEEK_END);
    fputc('9', fp);
    fclose(fp);
    ngq_status st = ngq_vocab_read(&again, vpath, &err);
    assert_int_not_equal(st, NGQ_OK);
    free(vpath);
    ngq_vocab_free(&vocab);
}

static void test_invalid_utf8_names_file_and_offset(void **state)
{
    (void)state;
    char *path = tmp_path("bad.txt");
    const char text[] = "Once upon a time\n<|endoftext|>\nab\xFF" "cd\n";
    test_write_file(path, text, sizeof text - 1);
    ngq_config cfg;
    configure(&cfg, path, 0.0, 0.0);
    ngq_preprocess_stats stats;
    ngq_error err = {0};
    assert_int_equal(ngq_preprocess_run(&cfg, &stats, &err), NGQ_ERR_FORMAT);
    assert_contains(err.message, path);
    assert_contains(err.message, "byte offset 33");
    free(path);
}

static void test_missing_input_named(void **state)
{
    (void)state;
    ngq_config cfg;
    configure(&cfg, "/nonexistent/corpus.txt", 0.0, 0.0);
    ngq_preprocess_stats stats;
    ngq_error err = {0};
    assert_int_equal(ngq_preprocess_run(&cfg, &stats, &err), NGQ_ERR_IO);
    assert_contains(err.message, "/nonexistent/corpus.txt");
}

static void test_encode_other_text(void **state)
{
    (void)state;
    size_t len;
    char *corpus = make_corpus(&len);
    char *path = tmp_path("corpus2.txt");
    test_write_file(path, corpus, len);
    ngq_config cfg;
    configure(&cfg, path, 0.1, 0.1);
    ngq_preprocess_stats stats;
    ngq_error err = {0};
    assert_int_equal(ngq_preprocess_run(&cfg, &stats, &err), NGQ_OK);
    char *mine = tmp_path("mine.txt");
    test_write_file(mine, "The cat sat. Zq!", 16);
    char *out = tmp_path("mine.tok");
    char *vpath = ngq_config_data_path(&cfg, "vocab.txt");
    ngq_split_stats es;
    assert_int_equal(ngq_preprocess_encode(vpath, mine, out, &es, &err), NGQ_OK);
    assert_int_equal(es.tokens, 16);
    assert_int_equal(es.unknown, 3); /* 'Z', 'q', '!' never appear in the corpus */
    ngq_tokens toks;
    assert_int_equal(ngq_tokens_read(&toks, out, &err), NGQ_OK);
    assert_int_equal(toks.count, 16);
    ngq_tokens_free(&toks);
    free(vpath);
    free(out);
    free(mine);
    free(path);
    free(corpus);
}

static void test_token_file_rejects_truncated_and_foreign(void **state)
{
    (void)state;
    uint16_t tokens[100];
    for (int i = 0; i < 100; i++) tokens[i] = (uint16_t)(i % 10);
    char *path = tmp_path("t.tok");
    ngq_error err = {0};
    assert_int_equal(ngq_tokens_write(path, tokens, 100, 10, 0x1234, &err), NGQ_OK);
    char *data;
    size_t size;
    assert_int_equal(ngq_read_file(path, &data, &size, &err), NGQ_OK);
    assert_int_equal(size, NGQ_TOKENS_HEADER_SIZE + 200);
    ngq_tokens t;
    assert_int_equal(ngq_tokens_parse(&t, (unsigned char *)data, size, "t.tok", &err), NGQ_OK);
    assert_memory_equal(t.tokens, tokens, sizeof tokens);
    ngq_tokens_free(&t);

    /* truncated anywhere: header or body */
    size_t cuts[] = {0, 7, 20, 47, 48, 49, 100, size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        assert_int_equal(ngq_tokens_parse(&t, (unsigned char *)data, cuts[i], "t.tok", &err), NGQ_ERR_FORMAT);
        if (cuts[i] > NGQ_TOKENS_HEADER_SIZE) assert_contains(err.message, "truncated");
    }
    /* foreign file */
    const char *foreign = "hello, this is just some text and not a token file at all....";
    assert_int_equal(ngq_tokens_parse(&t, (const unsigned char *)foreign, strlen(foreign), "x.txt", &err), NGQ_ERR_FORMAT);
    assert_contains(err.message, "not a nanogptq token file");
    /* wrong version */
    data[8] = 9;
    assert_int_equal(ngq_tokens_parse(&t, (unsigned char *)data, size, "t.tok", &err), NGQ_ERR_FORMAT);
    assert_contains(err.message, "version 9");
    data[8] = 1;
    /* corrupted body: checksum */
    data[NGQ_TOKENS_HEADER_SIZE + 10] ^= 1;
    assert_int_equal(ngq_tokens_parse(&t, (unsigned char *)data, size, "t.tok", &err), NGQ_ERR_FORMAT);
    assert_contains(err.message, "checksum");
    free(data);
    /* a token id outside the vocabulary */
    tokens[50] = 10;
    assert_int_equal(ngq_tokens_write(path, tokens, 100, 10, 0x1234, &err), NGQ_OK);
    assert_int_equal(ngq_tokens_read(&t, path, &err), NGQ_ERR_FORMAT);
    assert_contains(err.message, "token 50");
    free(path);
}

/* A vocabulary whose hash line does not match its entries is refused with
 * both hashes named; the computed one is taken before the entries are freed. */
static void test_vocab_hash_mismatch_names_both_hashes(void **state)
{
    (void)state;
    const uint32_t cps[] = {0x61, 0x62};
    ngq_vocab ref;
    ngq_error err = {0};
    assert_int_equal(ngq_vocab_from_codepoints(&ref, cps, 2, &err), NGQ_OK);
    char actual[17];
    snprintf(actual, sizeof actual, "%016" PRIx64, ref.hash);
    ngq_vocab_free(&ref);

    const char *text = "nanogptq-vocab 1\nsize 3\nunknown_id 2\nhash 0000000000000001\nid codepoint count\n"
                       "0 U+0061 5\n1 U+0062 7\n";
    ngq_vocab v;
    assert_int_equal(ngq_vocab_parse(&v, text, strlen(text), "v.txt", &err), NGQ_ERR_FORMAT);
    assert_contains(err.message, "hash 0000000000000001 does not match");
    assert_contains(err.message, actual);
    assert_null(v.codepoints);
}

/* Numbers too large for their field are refused, not wrapped: 2^32 + 2 must
 * not read as 2, nor U+100000061 as U+0061. */
static void test_vocab_rejects_numbers_that_do_not_fit(void **state)
{
    (void)state;
    const uint32_t cps[] = {0x61, 0x62};
    ngq_vocab v;
    ngq_error err = {0};
    assert_int_equal(ngq_vocab_from_codepoints(&v, cps, 2, &err), NGQ_OK);
    uint64_t hash = v.hash;
    ngq_vocab_free(&v);

    const struct {
        const char *counts, *entries;
        ngq_status want;
    } cases[] = {
        {"size 3\nunknown_id 2", "0 U+0061 1\n1 U+0062 1\n", NGQ_OK},
        {"size 4294967299\nunknown_id 4294967298", "0 U+0061 1\n1 U+0062 1\n", NGQ_ERR_FORMAT},
        {"size 3\nunknown_id 4294967298", "0 U+0061 1\n1 U+0062 1\n", NGQ_ERR_FORMAT},
        {"size 3\nunknown_id 2", "4294967296 U+0061 1\n1 U+0062 1\n", NGQ_ERR_FORMAT},
        {"size 3\nunknown_id 2", "0 U+100000061 1\n1 U+0062 1\n", NGQ_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "nanogptq-vocab 1\n%s\nhash %016" PRIx64 "\nid codepoint count\n%s",
                 cases[i].counts, hash, cases[i].entries);
        assert_int_equal(ngq_vocab_parse(&v, text, strlen(text), "v.txt", &err), cases[i].want);
        if (cases[i].want == NGQ_OK) ngq_vocab_free(&v);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_decode_strict),
        cmocka_unit_test(test_find_stories),
        cmocka_unit_test(test_assign_splits),
        cmocka_unit_test(test_preprocess_splits_vocab_unknowns),
        cmocka_unit_test(test_encode_decode_round_trip),
        cmocka_unit_test(test_invalid_utf8_names_file_and_offset),
        cmocka_unit_test(test_missing_input_named),
        cmocka_unit_test(test_encode_other_text),
        cmocka_unit_test(test_token_file_rejects_truncated_and_foreign),
        cmocka_unit_test(test_vocab_hash_mismatch_names_both_hashes),
        cmocka_unit_test(test_vocab_rejects_numbers_that_do_not_fit),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
