/* libFuzzer harness: PNG decoding (data/image.c through libpng). The input is the file. Each
 * input is decoded with every kind of request the loaders make (raw labels, labels with alpha,
 * a required layout that may mismatch, colour pictures in 3 and 1 channels), all into one
 * ms_image so buffer reuse across different sizes and layouts is exercised too, and once more
 * into a small borrowed buffer, which must be refused rather than overrun. */
#include "fuzz_file.h" /* first: it defines _GNU_SOURCE */

#include <stdint.h>
#include <string.h>

#include "fuzz_image_check.h"

static const ms_img_want k_wants[] = {
    {.mode = MS_IMG_LABEL},
    {.mode = MS_IMG_LABEL, .keep_alpha = 1},
    {.mode = MS_IMG_LABEL, .channels = 1, .depth = 8},
    {.mode = MS_IMG_LABEL, .depth = 16},
    {.mode = MS_IMG_COLOR, .channels = 3},
    {.mode = MS_IMG_COLOR, .channels = 1},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size);
    ms_image im;
    ms_image_init(&im);
    ms_io_err err;
    for (size_t i = 0; i < sizeof k_wants / sizeof k_wants[0]; i++) {
        memset(&err, 0, sizeof err);
        int rc = ms_png_read(path, &k_wants[i], &im, &err);
        if (rc == MS_IO_OK)
            fuzz_check_image(&im, &k_wants[i]);
        else if (rc != err.status || !err.msg[0])
            abort(); /* every failure must say what went wrong */
    }
    ms_image_free(&im);

    uint8_t small[4096]; /* H x W x C bytes of a borrowed buffer: at most 4096 */
    ms_image_init(&im);
    ms_image_borrow(&im, small, sizeof small);
    memset(&err, 0, sizeof err);
    int rc = ms_image_read(path, NULL, &im, &err);
    if (rc == MS_IO_OK) {
        if (im.data != small) abort();
        fuzz_check_image(&im, &k_wants[0]);
    }
    ms_image_free(&im);
    return 0;
}
