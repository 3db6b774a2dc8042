/* libFuzzer harness: JPEG decoding (data/image.c through libjpeg-turbo). The input is the file.
 * Each input is decoded as the loaders ask for it (the file's own channels, one grey channel,
 * RGB and grey pictures) into one reused ms_image, then through the signature-dispatching
 * ms_image_read into a small borrowed buffer, which must be refused rather than overrun. */
#include "fuzz_file.h" /* first: it defines _GNU_SOURCE */

#include <stdint.h>
#include <string.h>

#include "fuzz_image_check.h"

static const ms_img_want k_wants[] = {
    {.mode = MS_IMG_LABEL},
    {.mode = MS_IMG_LABEL, .channels = 1, .depth = 8},
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
        int rc = ms_jpeg_read(path, &k_wants[i], &im, &err);
        if (rc == MS_IO_OK) {
            fuzz_check_image(&im, &k_wants[i]);
            if (im.depth != 8 || (im.channels != 1 && im.channels != 3)) abort();
        } else if (rc != err.status || !err.msg[0]) {
            abort(); /* every failure must say what went wrong */
        }
    }
    ms_image_free(&im);

    uint8_t small[4096]; /* H x W x C bytes of a borrowed buffer: at most 4096 */
    ms_image_init(&im);
    ms_image_borrow(&im, small, sizeof small);
    memset(&err, 0, sizeof err);
    ms_img_want color = {.mode = MS_IMG_COLOR};
    if (ms_image_read(path, &color, &im, &err) == MS_IO_OK) {
        if (im.data != small) abort();
        fuzz_check_image(&im, &color);
    }
    ms_image_free(&im);
    return 0;
}
