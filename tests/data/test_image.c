/* PNG and JPEG codecs: every PNG colour type / bit depth / interlace / tRNS variant, written
 * here with libpng from one known 16-bit RGBA pixel array, must decode to the values the
 * canonical layout of data/image.h defines; writers round-trip; every bad file fails with a
 * message naming its path. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <png.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../data/image.h"
#include "../testutil.h"

/* ---- a temporary directory per test ---------------------------------------------------------- */

static char g_dir[64];

static void make_dir(void) { tu_tmpdir_make(g_dir, sizeof g_dir, "test_image"); }

static void remove_dir(void) { tu_tmpdir_remove(g_dir); }

TestSuite(image, .init = make_dir, .fini = remove_dir);

static const char *path_of(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_dir, name);
    return buf;
}

/* ---- the known pixel array ------------------------------------------------------------------- */

/* 16-bit RGBA value of channel c at (x, y): a hash, so every bit of every sample varies and
 * high and low bytes differ (catches byte-order mistakes). */
static uint16_t P(int x, int y, int c) {
    uint32_t h = (uint32_t)x * 0x9E3779B1u ^ (uint32_t)y * 0x85EBCA77u ^ (uint32_t)c * 0xC2B2AE3Du;
    h ^= h >> 15;
    h *= 0x2C1B3C6Du;
    h ^= h >> 13;
    return (uint16_t)(h >> 8);
}

/* Palette colour of index i (distinct for all 256). */
static void pal_rgb(int i, uint8_t rgb[3]) {
    rgb[0] = (uint8_t)(i * 7 + 3);
    rgb[1] = (uint8_t)(255 - i);
    rgb[2] = (uint8_t)(i * 13 + 101);
}

typedef struct {
    int color_type, bit_depth, interlace, trns;
} variant;

static int type_channels(int t) {
    return t == PNG_COLOR_TYPE_GRAY || t == PNG_COLOR_TYPE_PALETTE ? 1
           : t == PNG_COLOR_TYPE_GRAY_ALPHA                        ? 2
           : t == PNG_COLOR_TYPE_RGB                               ? 3
                                                                   : 4;
}

/* The sample stored in the file for channel c of a variant: P reduced to the bit depth. For
 * grey+alpha the second stored channel is alpha (P's channel 3). */
static unsigned file_sample(const variant *v, int x, int y, int c) {
    int src = (v->color_type == PNG_COLOR_TYPE_GRAY_ALPHA && c == 1) ? 3 : c;
    return P(x, y, src) >> (16 - v->bit_depth);
}

static void write_variant(const char *path, const variant *v, int w, int h) {
    FILE *fp = fopen(path, "wb");
    cr_assert(fp, "cannot create %s", path);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    int nc = type_channels(v->color_type);
    size_t row_bytes = ((size_t)w * (size_t)nc * (size_t)v->bit_depth + 7) / 8;
    png_bytep buf = calloc((size_t)h, row_bytes);
    png_bytep *rows = calloc((size_t)h, sizeof *rows);
    if (setjmp(png_jmpbuf(png))) cr_assert_fail("libpng failed writing %s", path);
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, v->bit_depth, v->color_type,
                 v->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (v->color_type == PNG_COLOR_TYPE_PALETTE) {
        png_color plte[256];
        int n = 1 << v->bit_depth;
        for (int i = 0; i < n; i++) {
            uint8_t rgb[3];
            pal_rgb(i, rgb);
            plte[i].red = rgb[0];
            plte[i].green = rgb[1];
            plte[i].blue = rgb[2];
        }
        png_set_PLTE(png, info, plte, n);
        if (v->trns) {
            png_byte alpha[256];
            for (int i = 0; i < n; i++) alpha[i] = (png_byte)(i * 37);
            png_set_tRNS(png, info, alpha, n, NULL);
        }
    } else if (v->trns) {
        png_color_16 tc = {0, 1, 1, 1, 1}; /* grey value 1 / colour (1,1,1) is "transparent" */
        png_set_tRNS(png, info, NULL, 0, &tc);
    }
    png_write_info(png, info);
    for (int y = 0; y < h; y++) {
        png_bytep row = buf + (size_t)y * row_bytes;
        rows[y] = row;
        for (int x = 0; x < w; x++)
            for (int c = 0; c < nc; c++) {
                unsigned s = file_sample(v, x, y, c);
                size_t i = (size_t)x * (size_t)nc + (size_t)c; /* sample index in the row */
                if (v->bit_depth == 16) {
                    row[2 * i] = (png_byte)(s >> 8); /* PNG is big-endian */
                    row[2 * i + 1] = (png_byte)(s & 0xFF);
                } else if (v->bit_depth == 8) {
                    row[i] = (png_byte)s;
                } else {
                    size_t bit = i * (size_t)v->bit_depth;
                    row[bit / 8] |= (png_byte)(s << (8 - v->bit_depth - bit % 8));
                }
            }
    }
    if (v->interlace) png_set_interlace_handling(png);
    png_write_image(png, rows);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    fclose(fp);
    free(rows);
    free(buf);
}

/* What the canonical layout says channel c of pixel (x, y) decodes to. */
static unsigned expected(const variant *v, const ms_img_want *want, int x, int y, int c) {
    int bd = v->bit_depth, t = v->color_type;
    if (want->mode == MS_IMG_LABEL) {
        unsigned s = file_sample(v, x, y, c);
        if (t == PNG_COLOR_TYPE_GRAY && bd == 2) return s * 0x55; /* Pillow "L;2" */
        if (t == PNG_COLOR_TYPE_GRAY && bd == 4) return s * 0x11; /* Pillow "L;4" */
        return s; /* 1-bit grey: PIL mode '1' -> bool 0/1; palette: indices */
    }
    if (t == PNG_COLOR_TYPE_PALETTE) {
        uint8_t rgb[3];
        pal_rgb((int)file_sample(v, x, y, 0), rgb);
        return rgb[c];
    }
    int src = (t & PNG_COLOR_MASK_COLOR) ? c : 0; /* grey replicates */
    unsigned s = file_sample(v, x, y, src);
    if (bd == 16) return s >> 8;
    if (bd == 1) return s * 255;
    if (bd == 2) return s * 0x55;
    if (bd == 4) return s * 0x11;
    return s;
}

static void check_decode(const char *path, const variant *v, const ms_img_want *want, ms_image *im,
                         int w, int h, int want_c, int want_depth) {
    ms_io_err err = {0};
    int rc = ms_png_read(path, want, im, &err);
    cr_assert_eq(rc, MS_IO_OK, "type %d depth %d interlace %d trns %d: %s", v->color_type,
                 v->bit_depth, v->interlace, v->trns, err.msg);
    cr_assert(
        im->width == w && im->height == h && im->channels == want_c && im->depth == want_depth,
        "type %d depth %d: got %dx%dx%d %d-bit, expected %dx%dx%d %d-bit", v->color_type,
        v->bit_depth, im->width, im->height, im->channels, im->depth, w, h, want_c, want_depth);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < want_c; c++) {
                size_t i = ((size_t)y * (size_t)w + (size_t)x) * (size_t)want_c + (size_t)c;
                unsigned got = want_depth == 16 ? ms_image_u16(im)[i] : ms_image_u8(im)[i];
                unsigned exp = expected(v, want, x, y, c);
                cr_assert_eq(got, exp,
                             "type %d depth %d interlace %d trns %d mode %d: (%d,%d,%d) = %u, "
                             "expected %u",
                             v->color_type, v->bit_depth, v->interlace, v->trns, want->mode, x, y,
                             c, got, exp);
            }
}

static const variant k_variants[] = {
    {PNG_COLOR_TYPE_GRAY, 1, 0, 0},        {PNG_COLOR_TYPE_GRAY, 2, 0, 0},
    {PNG_COLOR_TYPE_GRAY, 4, 0, 0},        {PNG_COLOR_TYPE_GRAY, 8, 0, 0},
    {PNG_COLOR_TYPE_GRAY, 16, 0, 0},       {PNG_COLOR_TYPE_GRAY, 8, 0, 1},
    {PNG_COLOR_TYPE_GRAY, 16, 0, 1},       {PNG_COLOR_TYPE_GRAY_ALPHA, 8, 0, 0},
    {PNG_COLOR_TYPE_GRAY_ALPHA, 16, 0, 0}, {PNG_COLOR_TYPE_RGB, 8, 0, 0},
    {PNG_COLOR_TYPE_RGB, 16, 0, 0},        {PNG_COLOR_TYPE_RGB, 8, 0, 1},
    {PNG_COLOR_TYPE_RGB_ALPHA, 8, 0, 0},   {PNG_COLOR_TYPE_RGB_ALPHA, 16, 0, 0},
    {PNG_COLOR_TYPE_PALETTE, 1, 0, 0},     {PNG_COLOR_TYPE_PALETTE, 2, 0, 0},
    {PNG_COLOR_TYPE_PALETTE, 4, 0, 0},     {PNG_COLOR_TYPE_PALETTE, 8, 0, 0},
    {PNG_COLOR_TYPE_PALETTE, 1, 0, 1},     {PNG_COLOR_TYPE_PALETTE, 2, 0, 1},
    {PNG_COLOR_TYPE_PALETTE, 4, 0, 1},     {PNG_COLOR_TYPE_PALETTE, 8, 0, 1},
};
#define N_VARIANTS (sizeof k_variants / sizeof k_variants[0])

/* Sizes: odd widths exercise partial bytes of packed rows; tiny sizes leave Adam7 passes empty. */
static const int k_sizes[][2] = {{13, 7}, {1, 1}, {5, 3}, {33, 17}};

static void for_every_variant(void (*fn)(const char *path, const variant *v, int w, int h)) {
    char path[256];
    for (size_t s = 0; s < sizeof k_sizes / sizeof k_sizes[0]; s++)
        for (size_t i = 0; i < N_VARIANTS; i++)
            for (int il = 0; il < 2; il++) {
                variant v = k_variants[i];
                v.interlace = il;
                char name[64];
                snprintf(name, sizeof name, "v_%d_%d_%d_%d_%dx%d.png", v.color_type, v.bit_depth,
                         il, v.trns, k_sizes[s][0], k_sizes[s][1]);
                path_of(path, sizeof path, name);
                write_variant(path, &v, k_sizes[s][0], k_sizes[s][1]);
                fn(path, &v, k_sizes[s][0], k_sizes[s][1]);
            }
}

static void label_case(const char *path, const variant *v, int w, int h) {
    ms_image im;
    ms_image_init(&im);
    int nc = type_channels(v->color_type);
    int alpha = (v->color_type & PNG_COLOR_MASK_ALPHA) != 0;
    int depth = v->bit_depth == 16 ? 16 : 8;
    ms_img_want want = {.mode = MS_IMG_LABEL};
    check_decode(path, v, &want, &im, w, h, alpha ? nc - 1 : nc, depth); /* alpha dropped */
    want.keep_alpha = 1;
    check_decode(path, v, &want, &im, w, h, nc, depth);
    ms_img_want exact = {.mode = MS_IMG_LABEL,
                         .channels = alpha ? nc - 1 : nc,
                         .depth = depth,
                         .width = w,
                         .height = h};
    check_decode(path, v, &exact, &im, w, h, exact.channels, depth);
    ms_image_free(&im);
}

Test(image, png_label_every_variant) { for_every_variant(label_case); }

static void color_case(const char *path, const variant *v, int w, int h) {
    ms_image im;
    ms_image_init(&im);
    ms_img_want want = {.mode = MS_IMG_COLOR};
    check_decode(path, v, &want, &im, w, h, 3, 8);
    if (!(v->color_type & PNG_COLOR_MASK_COLOR)) {
        want.channels = 1;
        check_decode(path, v, &want, &im, w, h, 1, 8);
    } else {
        ms_io_err err = {0};
        want.channels = 1;
        cr_assert_eq(ms_png_read(path, &want, &im, &err), MS_IO_MISMATCH);
        cr_assert(strstr(err.msg, path), "message lacks the path: %s", err.msg);
    }
    ms_image_free(&im);
}

Test(image, png_color_every_variant) { for_every_variant(color_case); }

/* The same logical picture through different encodings gives identical arrays. */
Test(image, png_variants_agree) {
    char a[256], b[256], c[256];
    variant g8 = {PNG_COLOR_TYPE_GRAY, 8, 0, 0}, g8i = {PNG_COLOR_TYPE_GRAY, 8, 1, 0};
    variant p8 = {PNG_COLOR_TYPE_PALETTE, 8, 1, 1};
    write_variant(path_of(a, sizeof a, "g8.png"), &g8, 21, 11);
    write_variant(path_of(b, sizeof b, "g8i.png"), &g8i, 21, 11);
    write_variant(path_of(c, sizeof c, "p8.png"), &p8, 21, 11);
    ms_image x, y, z;
    ms_image_init(&x);
    ms_image_init(&y);
    ms_image_init(&z);
    cr_assert_eq(ms_png_read(a, NULL, &x, NULL), 0);
    cr_assert_eq(ms_png_read(b, NULL, &y, NULL), 0);
    cr_assert_eq(ms_png_read(c, NULL, &z, NULL), 0);
    cr_assert(memcmp(x.data, y.data, 21 * 11) == 0, "interlaced grey differs from plain grey");
    cr_assert(memcmp(x.data, z.data, 21 * 11) == 0, "palette indices differ from grey values");
    ms_image_free(&x);
    ms_image_free(&y);
    ms_image_free(&z);
}

Test(image, png_16bit_values_above_255) {
    char p[256];
    variant v = {PNG_COLOR_TYPE_GRAY, 16, 0, 0};
    path_of(p, sizeof p, "g16.png");
    write_variant(p, &v, 40, 9);
    ms_image im;
    ms_image_init(&im);
    cr_assert_eq(ms_png_read(p, &(ms_img_want){.depth = 16, .channels = 1}, &im, NULL), 0);
    int big = 0, asym = 0;
    for (int i = 0; i < 40 * 9; i++) {
        uint16_t s = ms_image_u16(&im)[i];
        cr_assert_eq(s, P(i % 40, i / 40, 0));
        big += s > 255;
        asym += (s >> 8) != (s & 0xFF);
    }
    cr_assert(big > 300 && asym > 300, "test data too weak: %d values > 255", big);
    ms_image_free(&im);
}

/* ---- writers --------------------------------------------------------------------------------- */

static void fill_image(ms_image *im, int w, int h, int c, int depth) {
    ms_image_init(im);
    im->width = w;
    im->height = h;
    im->channels = c;
    im->depth = depth;
    im->data = malloc(ms_image_bytes(im));
    im->capacity = ms_image_bytes(im);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++) {
                size_t i = ((size_t)y * (size_t)w + (size_t)x) * (size_t)c + (size_t)k;
                if (depth == 16)
                    ms_image_u16(im)[i] = P(x, y, k);
                else
                    ms_image_u8(im)[i] = (uint8_t)(P(x, y, k) >> 8);
            }
}

static int count_temporaries(void) {
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += strstr(e->d_name, ".tmp-") != NULL;
    closedir(d);
    return n;
}

Test(image, png_write_round_trip) {
    static const int shapes[][2] = {{1, 8}, {1, 16}, {3, 8}, {3, 16}, {2, 8}, {4, 16}};
    umask(022);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        char p[256], name[32];
        snprintf(name, sizeof name, "w_%d_%d.png", shapes[s][0], shapes[s][1]);
        path_of(p, sizeof p, name);
        ms_image src, back;
        fill_image(&src, 19, 6, shapes[s][0], shapes[s][1]);
        ms_image_init(&back);
        ms_io_err err = {0};
        cr_assert_eq(ms_png_write(p, &src, NULL, 0, 0, &err), 0, "%s", err.msg);
        cr_assert_eq(ms_png_read(p, &(ms_img_want){.keep_alpha = 1}, &back, &err), 0, "%s",
                     err.msg);
        cr_assert(back.width == 19 && back.height == 6 && back.channels == shapes[s][0] &&
                  back.depth == shapes[s][1]);
        cr_assert(memcmp(src.data, back.data, ms_image_bytes(&src)) == 0,
                  "%d channels %d-bit: pixels changed", shapes[s][0], shapes[s][1]);
        struct stat st;
        cr_assert_eq(stat(p, &st), 0);
        cr_assert_eq(st.st_mode & 0777, 0644, "mode %o, expected 0644 under umask 022",
                     st.st_mode & 0777);
        /* Overwriting an existing file replaces it whole. */
        cr_assert_eq(ms_png_write(p, &src, NULL, 0, MS_IO_NOSYNC, &err), 0, "%s", err.msg);
        ms_image_free(&src);
        ms_image_free(&back);
    }
    cr_assert_eq(count_temporaries(), 0, "temporary files left behind");
}

Test(image, png_write_palette) {
    char p[256];
    path_of(p, sizeof p, "pal.png");
    uint8_t palette[21 * 3];
    for (int i = 0; i < 21; i++) pal_rgb(i, palette + 3 * i);
    ms_image src, back;
    fill_image(&src, 17, 5, 1, 8);
    for (size_t i = 0; i < ms_image_bytes(&src); i++) ms_image_u8(&src)[i] %= 21;
    ms_image_u8(&src)[0] = 20;
    ms_image_init(&back);
    ms_io_err err = {0};
    cr_assert_eq(ms_png_write(p, &src, palette, 21, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(ms_png_read(p, &(ms_img_want){.channels = 1, .depth = 8}, &back, &err), 0, "%s",
                 err.msg);
    cr_assert(memcmp(src.data, back.data, 17 * 5) == 0, "indices changed");
    /* Colour decoding sees the palette, which proves the file is indexed. */
    cr_assert_eq(ms_png_read(p, &(ms_img_want){.mode = MS_IMG_COLOR}, &back, &err), 0);
    for (int i = 0; i < 17 * 5; i++)
        for (int c = 0; c < 3; c++)
            cr_assert_eq(ms_image_u8(&back)[3 * i + c], palette[3 * ms_image_u8(&src)[i] + c]);
    /* An index outside the palette is refused. */
    ms_image_u8(&src)[3] = 21;
    cr_assert_eq(ms_png_write(p, &src, palette, 21, 0, &err), MS_IO_ARG);
    cr_assert(strstr(err.msg, p), "%s", err.msg);
    ms_image_free(&src);
    ms_image_free(&back);
    cr_assert_eq(count_temporaries(), 0);
}

Test(image, write_into_missing_directory_fails) {
    char p[256];
    path_of(p, sizeof p, "no/such/dir/x.png");
    ms_image src;
    fill_image(&src, 4, 4, 1, 8);
    ms_io_err err = {0};
    cr_assert_eq(ms_png_write(p, &src, NULL, 0, 0, &err), MS_IO_OPEN);
    cr_assert(strstr(err.msg, p), "%s", err.msg);
    cr_assert_eq(ms_jpeg_write(p, &src, 90, 0, &err), MS_IO_OPEN);
    cr_assert(strstr(err.msg, p), "%s", err.msg);
    ms_image_free(&src);
}

/* ---- buffers --------------------------------------------------------------------------------- */

Test(image, buffers_are_reused_and_borrowed) {
    char a[256], b[256];
    variant rgb = {PNG_COLOR_TYPE_RGB, 8, 0, 0};
    write_variant(path_of(a, sizeof a, "big.png"), &rgb, 30, 20);
    write_variant(path_of(b, sizeof b, "small.png"), &rgb, 10, 5);
    ms_image im;
    ms_image_init(&im);
    cr_assert_eq(ms_png_read(a, NULL, &im, NULL), 0);
    void *first = im.data;
    cr_assert_eq(ms_png_read(b, NULL, &im, NULL), 0);
    cr_assert_eq(im.data, first, "a smaller image reallocated the buffer");
    cr_assert_eq(im.width, 10);
    ms_image_free(&im);

    uint8_t buf[10 * 5 * 3];
    ms_image_init(&im);
    ms_image_borrow(&im, buf, sizeof buf);
    cr_assert_eq(ms_png_read(b, NULL, &im, NULL), 0);
    cr_assert_eq(im.data, (void *)buf);
    cr_assert_eq(buf[3 * 7 + 1], (uint8_t)(P(7, 0, 1) >> 8));
    ms_io_err err = {0};
    cr_assert_eq(ms_png_read(a, NULL, &im, &err), MS_IO_MISMATCH);
    cr_assert(strstr(err.msg, a), "%s", err.msg);
    ms_image_free(&im); /* must not free buf */
}

/* ---- bad files ------------------------------------------------------------------------------- */

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

static size_t read_bytes(const char *path, uint8_t **data) {
    FILE *f = fopen(path, "rb");
    cr_assert(f);
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc(n);
    cr_assert_eq(fread(*data, 1, n, f), n);
    fclose(f);
    return n;
}

static void expect_fail(int rc, int status, const ms_io_err *err, const char *path,
                        const char *what) {
    cr_assert_eq(rc, status, "%s: status %d, expected %d (%s)", what, rc, status, err->msg);
    cr_assert(strstr(err->msg, path), "%s: message does not name the path: %s", what, err->msg);
}

Test(image, png_bad_files) {
    char good[256], p[256];
    variant v = {PNG_COLOR_TYPE_RGB, 8, 0, 0};
    path_of(good, sizeof good, "good.png");
    write_variant(good, &v, 64, 32);
    uint8_t *bytes;
    size_t n = read_bytes(good, &bytes);
    ms_image im;
    ms_image_init(&im);
    ms_io_err err = {0};

    path_of(p, sizeof p, "missing.png");
    expect_fail(ms_png_read(p, NULL, &im, &err), MS_IO_OPEN, &err, p, "missing");

    path_of(p, sizeof p, "truncated.png");
    write_bytes(p, bytes, n / 2);
    expect_fail(ms_png_read(p, NULL, &im, &err), MS_IO_CORRUPT, &err, p, "truncated");
    write_bytes(p, bytes, 20);
    expect_fail(ms_png_read(p, NULL, &im, &err), MS_IO_CORRUPT, &err, p, "truncated header");
    write_bytes(p, bytes, 4);
    expect_fail(ms_png_read(p, NULL, &im, &err), MS_IO_CORRUPT, &err, p, "4 bytes");
    write_bytes(p, bytes, 0);
    expect_fail(ms_png_read(p, NULL, &im, &err), MS_IO_CORRUPT, &err, p, "empty");

    path_of(p, sizeof p, "corrupt.png");
    uint8_t *bad = malloc(n);
    memcpy(bad, bytes, n);
    for (size_t i = 60; i < 70 && i < n; i++) bad[i] ^= 0x5A; /* inside the IDAT: CRC breaks */
    write_bytes(p, bad, n);
    expect_fail(ms_png_read(p, NULL, &im, &err), MS_IO_CORRUPT, &err, p, "corrupt");

    path_of(p, sizeof p, "text.png");
    write_bytes(p, "hello, this is not a png", 24);
    expect_fail(ms_png_read(p, NULL, &im, &err), MS_IO_CORRUPT, &err, p, "not a PNG");
    expect_fail(ms_image_read(p, NULL, &im, &err), MS_IO_CORRUPT, &err, p, "not an image");

    expect_fail(ms_png_read(good, &(ms_img_want){.depth = 16}, &im, &err), MS_IO_MISMATCH, &err,
                good, "wrong depth");
    cr_assert(strstr(err.msg, "16"), "%s", err.msg);
    expect_fail(ms_png_read(good, &(ms_img_want){.channels = 1}, &im, &err), MS_IO_MISMATCH, &err,
                good, "wrong channels");
    expect_fail(ms_png_read(good, &(ms_img_want){.width = 64, .height = 64}, &im, &err),
                MS_IO_MISMATCH, &err, good, "wrong size");
    cr_assert(strstr(err.msg, "64x32") && strstr(err.msg, "64x64"), "%s", err.msg);
    expect_fail(ms_png_read(good, &(ms_img_want){.mode = MS_IMG_COLOR, .depth = 16}, &im, &err),
                MS_IO_ARG, &err, good, "16-bit colour request");

    /* A valid read after all those failures still works with the same image. */
    cr_assert_eq(ms_png_read(good, NULL, &im, &err), 0, "%s", err.msg);
    free(bad);
    free(bytes);
    ms_image_free(&im);
}

/* ---- JPEG ------------------------------------------------------------------------------------ */

/* A smooth picture JPEG keeps well. */
static void smooth_image(ms_image *im, int w, int h, int c) {
    ms_image_init(im);
    im->width = w;
    im->height = h;
    im->channels = c;
    im->depth = 8;
    im->capacity = ms_image_bytes(im);
    im->data = malloc(im->capacity);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                ms_image_u8(im)[((size_t)y * (size_t)w + (size_t)x) * (size_t)c + (size_t)k] =
                    (uint8_t)(128 + 100 * ((k + 1) * x + (2 - k) * y) / (3 * (w + h)) -
                              40 * (k == 1));
}

static void expect_close(const ms_image *a, const ms_image *b, int stride_b, int offset_b,
                         double mean_tol, int max_tol) {
    size_t n = (size_t)a->width * (size_t)a->height * (size_t)a->channels;
    double sum = 0;
    int worst = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)ms_image_u8(a)[i] -
                    (int)ms_image_u8(b)[i * (size_t)stride_b + (size_t)offset_b]);
        sum += d;
        if (d > worst) worst = d;
    }
    cr_assert(sum / (double)n <= mean_tol && worst <= max_tol,
              "JPEG error mean %.2f max %d, allowed %.2f / %d", sum / (double)n, worst, mean_tol,
              max_tol);
}

Test(image, jpeg_rgb_round_trip) {
    char p[256];
    path_of(p, sizeof p, "rgb.jpg");
    ms_image src, back;
    smooth_image(&src, 45, 29, 3);
    ms_image_init(&back);
    ms_io_err err = {0};
    cr_assert_eq(ms_jpeg_write(p, &src, 95, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(ms_jpeg_read(p, &(ms_img_want){.mode = MS_IMG_COLOR, .width = 45, .height = 29},
                              &back, &err),
                 0, "%s", err.msg);
    cr_assert(back.width == 45 && back.height == 29 && back.channels == 3 && back.depth == 8);
    expect_close(&src, &back, 1, 0, 1.5, 12);
    /* ms_image_read picks the JPEG decoder from the signature. */
    cr_assert_eq(ms_image_read(p, &(ms_img_want){.mode = MS_IMG_COLOR}, &back, &err), 0, "%s",
                 err.msg);
    expect_close(&src, &back, 1, 0, 1.5, 12);
    expect_fail(ms_jpeg_read(p, &(ms_img_want){.channels = 1}, &back, &err), MS_IO_MISMATCH, &err,
                p, "colour JPEG as grey");
    expect_fail(ms_jpeg_read(p, &(ms_img_want){.width = 44}, &back, &err), MS_IO_MISMATCH, &err, p,
                "JPEG size");
    ms_image_free(&src);
    ms_image_free(&back);
    cr_assert_eq(count_temporaries(), 0);
}

Test(image, jpeg_grey_becomes_rgb) {
    char p[256];
    path_of(p, sizeof p, "grey.jpg");
    ms_image src, back;
    smooth_image(&src, 33, 18, 1);
    ms_image_init(&back);
    ms_io_err err = {0};
    cr_assert_eq(ms_jpeg_write(p, &src, 95, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(ms_jpeg_read(p, &(ms_img_want){.mode = MS_IMG_COLOR}, &back, &err), 0, "%s",
                 err.msg);
    cr_assert_eq(back.channels, 3);
    for (int i = 0; i < 33 * 18; i++) {
        const uint8_t *px = ms_image_u8(&back) + 3 * i;
        cr_assert(px[0] == px[1] && px[1] == px[2], "grey JPEG pixel %d is not grey", i);
    }
    expect_close(&src, &back, 3, 0, 1.5, 12);
    cr_assert_eq(ms_jpeg_read(p, NULL, &back, &err), 0, "%s", err.msg);
    cr_assert_eq(back.channels, 1, "LABEL mode keeps the file's single channel");
    expect_close(&src, &back, 1, 0, 1.5, 12);
    ms_image_free(&src);
    ms_image_free(&back);
}

Test(image, jpeg_bad_files) {
    char good[256], p[256];
    path_of(good, sizeof good, "good.jpg");
    ms_image src, im;
    smooth_image(&src, 64, 48, 3);
    ms_image_init(&im);
    ms_io_err err = {0};
    cr_assert_eq(ms_jpeg_write(good, &src, 90, 0, &err), 0, "%s", err.msg);
    uint8_t *bytes;
    size_t n = read_bytes(good, &bytes);

    path_of(p, sizeof p, "missing.jpg");
    expect_fail(ms_jpeg_read(p, NULL, &im, &err), MS_IO_OPEN, &err, p, "missing");

    path_of(p, sizeof p, "truncated.jpg");
    write_bytes(p, bytes, n / 2);
    expect_fail(ms_jpeg_read(p, NULL, &im, &err), MS_IO_CORRUPT, &err, p, "truncated");
    expect_fail(ms_image_read(p, NULL, &im, &err), MS_IO_CORRUPT, &err, p, "truncated (sniffed)");
    write_bytes(p, bytes, 10);
    expect_fail(ms_jpeg_read(p, NULL, &im, &err), MS_IO_CORRUPT, &err, p, "truncated header");

    path_of(p, sizeof p, "garbage.jpg");
    uint8_t junk[300];
    memcpy(junk, bytes, 3); /* a JPEG signature followed by noise */
    for (size_t i = 3; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 31 + 7);
    write_bytes(p, junk, sizeof junk);
    expect_fail(ms_jpeg_read(p, NULL, &im, &err), MS_IO_CORRUPT, &err, p, "garbage");

    path_of(p, sizeof p, "png_as_jpeg.jpg");
    variant v = {PNG_COLOR_TYPE_GRAY, 8, 0, 0};
    write_variant(p, &v, 4, 4);
    expect_fail(ms_jpeg_read(p, NULL, &im, &err), MS_IO_CORRUPT, &err, p, "PNG named .jpg");
    cr_assert_eq(ms_image_read(p, NULL, &im, &err), 0, "sniffing reads it as the PNG it is");

    ms_image bad = src;
    bad.depth = 16;
    expect_fail(ms_jpeg_write(good, &bad, 90, 0, &err), MS_IO_ARG, &err, good, "16-bit JPEG");
    free(bytes);
    ms_image_free(&src);
    ms_image_free(&im);
}
