/* What every successful decode must satisfy, whatever the input: the dimensions the codec
 * reports fit the buffer it filled, and the layout is what the caller asked for. */
#ifndef MS_FUZZ_IMAGE_CHECK_H
#define MS_FUZZ_IMAGE_CHECK_H

#include <stdlib.h>

#include "../../data/image.h"
#include "fuzz_check.h"

static inline void fuzz_check_image(const ms_image *im, const ms_img_want *want) {
    size_t bytes = ms_image_bytes(im);
    if (im->width <= 0 || im->height <= 0 || bytes > im->capacity) abort();
    if (im->channels < 1 || im->channels > 4 || (im->depth != 8 && im->depth != 16)) abort();
    if (want->channels && im->channels != want->channels) abort();
    if (want->depth && im->depth != want->depth) abort();
    if (want->mode == MS_IMG_COLOR && im->depth != 8) abort();
    fuzz_expect_addressable(im->data, bytes, "decoded image");
}

#endif
