/* bench_fixture.h: the fixture the benchmarks share: the reference model with
 * random weights, saved as an fp32 checkpoint. Speed does not depend on the
 * weights' values. */
#ifndef NANOGPTQ_BENCH_FIXTURE_H
#define NANOGPTQ_BENCH_FIXTURE_H

#include "nanogptq/common.h"

/* The reference model (6 layers, C 192, T 256) with a vocabulary of 87
 * characters ("\n" and U+0020..U+0075) plus the unknown id, written to path. */
ngq_status bench_make_fixture(const char *path, ngq_error *err);

#endif
