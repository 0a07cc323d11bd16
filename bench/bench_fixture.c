/* bench_fixture.c: see bench_fixture.h. */
#include "bench_fixture.h"

#include <math.h>

#include "nanogptq/checkpoint.h"
#include "nanogptq/model.h"
#include "nanogptq/rng.h"
#include "nanogptq/vocab.h"

ngq_status bench_make_fixture(const char *path, ngq_error *err)
{
    ngq_model_config mc;
    ngq_model_config_reference(&mc);
    uint32_t cps[87];
    cps[0] = '\n';
    for (int i = 1; i < 87; i++) cps[i] = 0x1f + (uint32_t)i;
    ngq_vocab vocab;
    ngq_status st = ngq_vocab_from_codepoints(&vocab, cps, 87, err);
    if (st) return st;
    mc.vocab_size = vocab.size;
    ngq_model model;
    if ((st = ngq_model_init(&model, &mc, err))) {
        ngq_vocab_free(&vocab);
        return st;
    }
    ngq_rng rng;
    ngq_rng_seed(&rng, 1, 1);
    ngq_model_init_weights(&model, &rng);
    ngq_checkpoint_meta meta = {.val_loss = NAN};
    st = ngq_checkpoint_save(path, &model, &vocab, &meta, NULL, err);
    ngq_model_free(&model);
    ngq_vocab_free(&vocab);
    return st;
}
