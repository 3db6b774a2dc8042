/* libFuzzer harness: MATLAB .mat reading (data/matfile.c through libmatio). The input is the
 * file. It is read as a PASCAL-Context label map (twice into one ms_labelmap, the second time
 * with a size requirement that cannot hold) and as a human_parts 'anno' struct; every label
 * and mask that a successful read reports must lie in its buffer. */
#include "fuzz_file.h" /* first: it defines _GNU_SOURCE */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../data/matfile.h"
#include "fuzz_check.h"

static void check_anno(const ms_anno *a) {
    if (a->n_objects < 0 || a->height < 0 || a->width < 0) abort();
    size_t hw = (size_t)a->height * (size_t)a->width;
    for (int j = 0; j < a->n_objects; j++) {
        const ms_anno_object *o = &a->objects[j];
        if (!o->mask || o->n_parts < 0 || (o->n_parts && !o->parts)) abort();
        fuzz_expect_addressable(o->mask, hw, "object mask");
        for (int k = 0; k < o->n_parts; k++) {
            if (!o->parts[k].mask || strlen(o->parts[k].name) >= MS_PART_NAME_MAX) abort();
            fuzz_expect_addressable(o->parts[k].mask, hw, "part mask");
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size);
    ms_io_err err;
    memset(&err, 0, sizeof err);

    ms_labelmap lm;
    ms_labelmap_init(&lm);
    int rc = ms_mat_read_labelmap(path, NULL, 0, 0, &lm, &err);
    if (rc == MS_IO_OK) {
        if (lm.height < 0 || lm.width < 0 || (size_t)lm.height * (size_t)lm.width > lm.capacity)
            abort();
        fuzz_expect_addressable(lm.labels, (size_t)lm.height * (size_t)lm.width * sizeof *lm.labels,
                                "labels");
        int h = lm.height;
        if (ms_mat_read_labelmap(path, NULL, h + 1, 0, &lm, &err) != MS_IO_MISMATCH) abort();
    } else if (rc != err.status || !err.msg[0]) {
        abort(); /* every failure must say what went wrong */
    }
    ms_labelmap_free(&lm);

    ms_anno anno;
    memset(&err, 0, sizeof err);
    rc = ms_mat_read_anno(path, &anno, &err);
    if (rc == MS_IO_OK)
        check_anno(&anno);
    else if (rc != err.status || !err.msg[0] || anno.n_objects || anno.objects)
        abort(); /* a failure says why and leaves anno empty */
    ms_anno_free(&anno);
    return 0;
}
