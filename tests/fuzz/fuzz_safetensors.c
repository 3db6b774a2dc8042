/* libFuzzer harness: safetensors checkpoints (model/safetensors.c: header JSON, offsets, CRC).
 * The input is the file. A file that parses must describe only bytes it holds; it is then
 * loaded into the seed's parameter table (seed_table.h), which either copies every tensor or
 * names what does not match. Every tensor's bytes must lie in the data that was read. */
#include "fuzz_file.h" /* first: it defines _GNU_SOURCE */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../model/safetensors.h"
#include "fuzz_check.h"
#include "seed_table.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size);
    ms_st_file f;
    char err[512] = "";
    if (ms_safetensors_read(path, &f, err, sizeof err) != 0) {
        if (!err[0] || f.t || f.meta || f.data) abort(); /* says why, holds nothing */
        return 0;
    }
    for (int i = 0; i < f.n; i++) {
        const ms_st_tensor *t = &f.t[i];
        if (t->begin > t->end || t->end > f.data_bytes || t->ndim < 0 || t->ndim > MS_MAX_DIMS)
            abort();
        fuzz_expect_addressable(f.data + t->begin, t->end - t->begin, t->name);
    }
    for (int i = 0; i < f.n_meta; i++)
        if (ms_st_meta(&f, f.meta[i].key) == NULL) abort();

    ms_param_table pt;
    fuzz_seed_table(&pt);
    float *params = calloc(pt.total, sizeof *params); /* [pt.total] the flat parameter buffer */
    if (!params) abort();
    err[0] = '\0';
    if (ms_safetensors_load_params(&f, path, &pt, params, err, sizeof err) != 0 && !err[0])
        abort();
    free(params);
    ms_params_free(&pt);
    ms_safetensors_free(&f);
    return 0;
}
