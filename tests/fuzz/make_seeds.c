/* Writes the seed corpora of the fuzz harnesses (`make fuzz-seeds`; the output is committed in
 * tests/fuzz/corpus/NAME/). Seeds are small valid files, one per layout the readers handle
 * differently, so the fuzzer starts from inputs that reach deep into each parser rather than
 * stopping at a signature check. Files written through the project's own writers are read by
 * the real code path; the layouts those writers never produce (low-bit and interlaced PNGs,
 * progressive JPEGs, big-endian or integer .npy, foreign safetensors headers) are built here
 * directly with libpng, libjpeg or by hand. Regression inputs (regress-*) that fuzzing found are
 * committed beside the seeds and are not touched here.
 *
 *   make_seeds OUT_DIR CONFIG_DIR   (OUT_DIR/NAME/ must exist; CONFIG_DIR holds demo.yaml) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h> /* after stdio.h: it uses FILE and size_t without including them */
#include <png.h>

#include "../../data/image.h"
#include "../../data/matfile.h"
#include "../../data/npy.h"
#include "../../model/safetensors.h"
#include "seed_table.h"

static const char *g_out;

static void die(const char *what, const char *detail) {
    fprintf(stderr, "make_seeds: %s: %s\n", what, detail);
    exit(1);
}

static const char *out_path(const char *dir, const char *name) {
    static char p[4096];
    snprintf(p, sizeof p, "%s/%s/%s", g_out, dir, name);
    return p;
}

static void write_bytes(const char *dir, const char *name, const void *data, size_t n) {
    const char *p = out_path(dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) die(p, "cannot write");
}

static void check(int status, const ms_io_err *err) {
    if (status != MS_IO_OK) die("writer failed", err->msg);
}

/* ---- config: YAML text, then NUL-separated --set overrides (fuzz_config.c) ------------------ */

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path, "cannot open");
    static char buf[1 << 16];
    *n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return buf;
}

static void config_seeds(const char *config_dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/demo.yaml", config_dir);
    size_t n;
    const char *demo = read_file(path, &n);
    write_bytes("config", "demo.yaml", demo, n);

    /* demo.yaml with overrides of every value kind: scalar, flow list, flow map, map entry. */
    static const char sets[] = "model.dim=128\0data.tasks=[normal, depth_zbuffer]\0"
                               "model.task_weights={normal: 2, depth_zbuffer: 0.5}\0"
                               "model.task_weights.normal=3\0run.name=\0model.moe_mlp_blocks=[1, 3]";
    char *both = malloc(n + 1 + sizeof sets);
    memcpy(both, demo, n);
    both[n] = '\0';
    memcpy(both + n + 1, sets, sizeof sets - 1);
    write_bytes("config", "demo-with-sets.bin", both, n + sizeof sets);
    free(both);

    /* PASCAL-Context, a baseline arch, block lists and a map in block style. */
    static const char pascal[] =
        "run:\n  name: \"pascal m3vit\"\n  seed: 7\n  device: cuda:1\n  comm: none\n"
        "data:\n  dataset: pascal_context\n  root: data/PASCAL_MT\n"
        "  tasks: [semseg, human_parts, edge]\n  image_size: 512\n  on_missing: skip\n"
        "model:\n  arch: m3vit\n  dim: 192\n  depth: 6\n  heads: 3\n  mlp_experts: 16\n"
        "  mlp_topk: 4\n  moe_mlp_blocks: odd\n  noisy_gating: yes\n  qkv_bias: false\n"
        "  task_weights:\n    semseg: 1\n    edge: 50.0\n"
        "train:\n  epochs: 3\n  warmup_epochs: 0.5\n  batch_size: 4\n  accum_steps: 2\n"
        "  blr: 1.5e-4\n  clip_grad: 1.0\n  precision: bf16\n  keep_checkpoints: 2\n"
        "eval:\n  split: val\n  usage_threshold: 2.5\n";
    write_bytes("config", "pascal-m3vit.yaml", pascal, sizeof pascal - 1);
}

/* ---- PNG ------------------------------------------------------------------------------------ */

/* A PNG of any colour type, depth and interlace, written with libpng directly; pixel values
 * are a fixed pattern masked to the depth. */
static void png_raw(const char *name, int w, int h, int color_type, int depth, int interlace,
                    int with_trns) {
    const char *p = out_path("png", name);
    FILE *f = fopen(p, "wb");
    if (!f) die(p, "cannot create");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) die(p, "libpng failed");
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color_type, interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (color_type == PNG_COLOR_TYPE_PALETTE) {
        png_color plte[16];
        for (int i = 0; i < 16; i++) plte[i] = (png_color){(png_byte)(i * 16), 0, (png_byte)(255 - i)};
        png_set_PLTE(png, info, plte, 1 << (depth < 4 ? depth : 4));
        if (with_trns) {
            png_byte alpha[2] = {0, 128};
            png_set_tRNS(png, info, alpha, 2, NULL);
        }
    } else if (with_trns) {
        png_color_16 key = {.gray = 1, .red = 1, .green = 2, .blue = 3};
        png_set_tRNS(png, info, NULL, 0, &key);
    }
    png_write_info(png, info);
    int channels = png_get_channels(png, info);
    size_t row_bytes = png_get_rowbytes(png, info);
    png_bytep rows[64];
    uint8_t pixels[64][512]; /* H x row_bytes, at most 64 x 512 */
    if (h > 64 || row_bytes > sizeof pixels[0]) die(p, "seed too large");
    for (int y = 0; y < h; y++) {
        for (size_t b = 0; b < row_bytes; b++) pixels[y][b] = (uint8_t)(y * 37 + b * 11 + channels);
        if (color_type == PNG_COLOR_TYPE_PALETTE && depth == 8)
            for (size_t b = 0; b < row_bytes; b++) pixels[y][b] &= 15; /* inside the palette */
        rows[y] = pixels[y];
    }
    png_write_image(png, rows);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    if (fclose(f) != 0) die(p, "cannot write");
}

static void png_seeds(void) {
    ms_io_err err;
    uint8_t px[6 * 5 * 4]; /* H x W x C, at most 6 x 5 x 4 bytes */
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 7);
    ms_image im;
    ms_image_init(&im);
    ms_image_borrow(&im, px, sizeof px);
    im.width = 5, im.height = 6, im.depth = 8;
    for (int c = 1; c <= 4; c++) {
        char name[32];
        snprintf(name, sizeof name, "ms-8bit-%dch.png", c);
        im.channels = c;
        check(ms_png_write(out_path("png", name), &im, NULL, 0, MS_IO_NOSYNC, &err), &err);
    }
    im.channels = 1, im.width = 3; /* 16-bit grey: 6 x 3 x 2 bytes */
    im.depth = 16;
    check(ms_png_write(out_path("png", "ms-16bit-grey.png"), &im, NULL, 0, MS_IO_NOSYNC, &err),
          &err);
    im.depth = 8, im.width = 5;
    for (size_t i = 0; i < 30; i++) px[i] %= 21; /* VOC-style index label */
    uint8_t palette[21 * 3];
    for (int i = 0; i < 21 * 3; i++) palette[i] = (uint8_t)(i * 12);
    check(ms_png_write(out_path("png", "ms-palette.png"), &im, palette, 21, MS_IO_NOSYNC, &err),
          &err);

    png_raw("grey-1bit.png", 9, 3, PNG_COLOR_TYPE_GRAY, 1, PNG_INTERLACE_NONE, 0);
    png_raw("grey-2bit-trns.png", 5, 4, PNG_COLOR_TYPE_GRAY, 2, PNG_INTERLACE_NONE, 1);
    png_raw("grey-4bit-adam7.png", 7, 9, PNG_COLOR_TYPE_GRAY, 4, PNG_INTERLACE_ADAM7, 0);
    png_raw("palette-4bit-trns.png", 6, 5, PNG_COLOR_TYPE_PALETTE, 4, PNG_INTERLACE_NONE, 1);
    png_raw("grey-alpha-16bit.png", 4, 3, PNG_COLOR_TYPE_GRAY_ALPHA, 16, PNG_INTERLACE_NONE, 0);
    png_raw("rgb-16bit-adam7.png", 9, 9, PNG_COLOR_TYPE_RGB, 16, PNG_INTERLACE_ADAM7, 1);
    png_raw("rgba-8bit-adam7.png", 5, 6, PNG_COLOR_TYPE_RGB_ALPHA, 8, PNG_INTERLACE_ADAM7, 0);
}

/* ---- JPEG ----------------------------------------------------------------------------------- */

/* A progressive (or restart-marked baseline) JPEG through libjpeg directly: the project's
 * writer only makes baseline files, but the reader meets both. */
static void jpeg_raw(const char *name, int w, int h, int components, int progressive,
                     int restart_rows) {
    const char *p = out_path("jpeg", name);
    FILE *f = fopen(p, "wb");
    if (!f) die(p, "cannot create");
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = components;
    c.in_color_space = components == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 75, TRUE);
    if (progressive) jpeg_simple_progression(&c);
    c.restart_in_rows = restart_rows;
    jpeg_start_compress(&c, TRUE);
    uint8_t row[64 * 3]; /* one row of W x C samples, W at most 64 */
    while (c.next_scanline < c.image_height) {
        for (int i = 0; i < w * components; i++) row[i] = (uint8_t)(i * 5 + c.next_scanline * 9);
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    if (fclose(f) != 0) die(p, "cannot write");
}

static void jpeg_seeds(void) {
    ms_io_err err;
    uint8_t px[12 * 10 * 3]; /* H x W x C */
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 3 + (i / 30) * 17);
    ms_image im;
    ms_image_init(&im);
    ms_image_borrow(&im, px, sizeof px);
    im.width = 10, im.height = 12, im.depth = 8, im.channels = 3;
    check(ms_jpeg_write(out_path("jpeg", "ms-rgb.jpg"), &im, 90, MS_IO_NOSYNC, &err), &err);
    im.channels = 1;
    check(ms_jpeg_write(out_path("jpeg", "ms-grey.jpg"), &im, 50, MS_IO_NOSYNC, &err), &err);
    jpeg_raw("progressive-rgb.jpg", 17, 9, 3, 1, 0);
    jpeg_raw("restart-grey.jpg", 16, 24, 1, 0, 1);
}

/* ---- .npy ----------------------------------------------------------------------------------- */

/* A .npy file with a hand-written header: version, header dict and raw data as given. */
static void npy_raw(const char *name, int major, const char *dict, const void *data, size_t n) {
    uint8_t buf[1024];
    size_t len_bytes = major == 1 ? 2 : 4;
    size_t pre = 8 + len_bytes, hlen = strlen(dict);
    size_t padded = (pre + hlen + 1 + 63) / 64 * 64; /* data on a 64-byte boundary */
    if (padded + n > sizeof buf) die(name, "seed too large");
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (uint8_t)major, buf[7] = 0;
    size_t h = padded - pre;
    for (size_t i = 0; i < len_bytes; i++) buf[8 + i] = (uint8_t)(h >> (8 * i));
    memset(buf + pre, ' ', h);
    memcpy(buf + pre, dict, hlen);
    buf[padded - 1] = '\n';
    memcpy(buf + padded, data, n);
    write_bytes("npy", name, buf, padded + n);
}

static void npy_seeds(void) {
    ms_io_err err;
    float v[12]; /* 3 x 4 */
    for (int i = 0; i < 12; i++) v[i] = (float)i * 0.25f - 1.0f;
    check(ms_npy_write(out_path("npy", "ms-f4-3x4.npy"), v, 2, (const int64_t[]){3, 4},
                       MS_IO_NOSYNC, &err),
          &err);
    check(ms_npy_write(out_path("npy", "ms-f4-scalar.npy"), v, 0, NULL, MS_IO_NOSYNC, &err), &err);

    const uint8_t be_f8[16] = {0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0xc0, 0x08, 0, 0, 0, 0, 0, 0};
    npy_raw("v2-big-endian-f8.npy", 2,
            "{\"descr\": \">f8\", \"fortran_order\": False, \"shape\": (2,), }", be_f8, 16);
    const int16_t i2[6] = {-3, 0, 7, 300, -32768, 32767};
    npy_raw("v3-i2-2x3.npy", 3, "{'descr': '<i2', 'fortran_order': False, 'shape': (2, 3), }",
            i2, sizeof i2);
    const uint8_t b1[4] = {0, 1, 1, 0};
    npy_raw("v1-bool-py2-long.npy", 1,
            "{'descr': '|b1', 'fortran_order': False, 'shape': (2L, 2L), }", b1, 4);
    const uint64_t u8[2] = {1, 1ull << 40};
    npy_raw("v1-u8-fortran.npy", 1, "{'descr': '<u8', 'fortran_order': True, 'shape': (2,), }",
            u8, sizeof u8);
}

/* ---- .mat ----------------------------------------------------------------------------------- */

static void mat_seeds(void) {
    ms_io_err err;
    int32_t labels[4 * 3]; /* H x W = 4 x 3 */
    for (int i = 0; i < 12; i++) labels[i] = i * 40;
    check(ms_mat_write_labelmap(out_path("mat", "labelmap-u16.mat"), labels, 4, 3, MS_MAT_V5,
                                MS_IO_NOSYNC, &err),
          &err);
    labels[5] = 70000; /* written as int32 */
    labels[6] = -1;
    check(ms_mat_write_labelmap(out_path("mat", "labelmap-i32.mat"), labels, 3, 4, MS_MAT_V5,
                                MS_IO_NOSYNC, &err),
          &err);

    uint8_t m0[3 * 4], m1[3 * 4], m2[3 * 4]; /* H x W = 3 x 4 masks */
    for (int i = 0; i < 12; i++) m0[i] = i % 3 == 0, m1[i] = i % 2, m2[i] = i > 6;
    ms_anno_part parts[2] = {{.name = "head", .mask = m1}, {.name = "llarm", .mask = m2}};
    ms_anno_object objs[2] = {{.class_id = 15, .mask = m0, .n_parts = 2, .parts = parts},
                              {.class_id = 12, .mask = m2, .n_parts = 0, .parts = NULL}};
    ms_anno anno = {.height = 3, .width = 4, .n_objects = 2, .objects = objs};
    check(ms_mat_write_anno(out_path("mat", "anno-person-dog.mat"), &anno, "2008_000001",
                            MS_MAT_V5, MS_IO_NOSYNC, &err),
          &err);
    ms_anno empty = {0};
    check(ms_mat_write_anno(out_path("mat", "anno-empty.mat"), &empty, "2008_000002", MS_MAT_V5,
                            MS_IO_NOSYNC, &err),
          &err);
}

/* ---- safetensors ---------------------------------------------------------------------------- */

static void safetensors_seeds(void) {
    ms_param_table pt;
    fuzz_seed_table(&pt);
    float *data = calloc(pt.total, sizeof *data); /* [pt.total] */
    for (size_t i = 0; i < pt.total; i++) data[i] = (float)i / 8.0f;
    ms_kv meta[2] = {{"modsquad.config", "model:\n  dim: 4\n"}, {"step", "12"}};
    char err[512];
    if (ms_safetensors_write(out_path("safetensors", "checkpoint.safetensors"), &pt, data, meta, 2,
                             err, sizeof err) != 0)
        die("safetensors", err);
    free(data);
    ms_params_free(&pt);

    /* A foreign header: no checksum, other dtypes, escapes, an empty tensor, unknown fields. */
    static const char hdr[] =
        "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"caf\\u00e9 \\\"q\\\"\\n\"},"
        "\"a.weight\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]},"
        "\"b\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[8,16],\"x\":[1,{\"y\":null}]},"
        "\"empty\":{\"dtype\":\"BF16\",\"shape\":[0,3],\"data_offsets\":[16,16]}}";
    size_t hlen = sizeof hdr - 1;
    uint8_t buf[8 + sizeof hdr + 16];
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, hdr, hlen);
    for (int i = 0; i < 16; i++) buf[8 + hlen + (size_t)i] = (uint8_t)(i * 29);
    write_bytes("safetensors", "foreign.safetensors", buf, 8 + hlen + 16);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s OUT_DIR CONFIG_DIR\n", argv[0]);
        return 2;
    }
    g_out = argv[1];
    config_seeds(argv[2]);
    png_seeds();
    jpeg_seeds();
    npy_seeds();
    mat_seeds();
    safetensors_seeds();
    return 0;
}
