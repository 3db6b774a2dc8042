/* PASCAL-Context loader: decoded values of every task on fixtures written with the codecs (JPEG,
 * palette PNG, v5 .mat), the reference's label rules (6 human parts, no-person images ignored,
 * the 170 normals classes, thinned Laplacian edges against scikit-image / OpenCV outputs),
 * resampling against OpenCV, synthetic scenes read back, split lists with any line ending,
 * missing files (error and skip) and every kind of bad file. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../data/augment.h"
#include "../../data/dataset.h"
#include "../../data/matfile.h"
#include "../../data/pascal_context.h"
#include "../../data/synth.h"
#include "../../model/batch.h"

static char g_root[64];

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f) {
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static void setup(void) {
    strcpy(g_root, "/tmp/ms_pc_XXXXXX");
    cr_assert(mkdtemp(g_root));
}

static void teardown(void) { nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

TestSuite(pascal, .init = setup, .fini = teardown);

static void mkdirs(const char *path) {
    char p[1024];
    snprintf(p, sizeof p, "%s", path);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(p, 0775);
            *s = '/';
        }
    mkdir(p, 0775);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    cr_assert(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static void path_of(char *buf, size_t cap, const char *dir, const char *id, const char *ext) {
    char d[512];
    snprintf(d, sizeof d, "%s/%s", g_root, dir);
    mkdirs(d);
    snprintf(buf, cap, "%s/%s.%s", d, id, ext);
}

static uint32_t mix(uint32_t a, uint32_t b) {
    uint32_t h = a * 0x9E3779B1u ^ (b + 0x7F4A7C15u) * 0x85EBCA77u;
    h ^= h >> 15, h *= 0x2C1B3C6Du, h ^= h >> 13;
    return h;
}

#define W0 16
#define H0 16
#define N0 (W0 * H0)

static void write_image(const char *path, int w, int h, int c, uint8_t *px, int jpeg) {
    ms_image im;
    ms_image_init(&im);
    im.width = w, im.height = h, im.channels = c, im.depth = 8, im.data = px;
    ms_io_err err;
    static uint8_t palette[256 * 3];
    int rc = jpeg > 0 ? ms_jpeg_write(path, &im, 95, MS_IO_NOSYNC, &err)
                      : ms_png_write(path, &im, c == 1 && jpeg < 0 ? palette : NULL, 256,
                                     MS_IO_NOSYNC, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
}

/* LabelMap of image q: bands of context classes including valid (284 person, 427 tvmonitor,
 * 3 air conditioner) and invalid (2 aeroplane, 431 unknown, 0) ones. */
static int32_t context_at(int q, int x, int y) {
    static const int32_t cls[6] = {284, 2, 427, 431, 3, 0};
    return cls[((x + q) / 3 + (y / 5) * 2) % 6];
}

/* Parts: a person (15) with head (rows 0-3), llarm (rows 4-7, left half) and ruleg (rows 8-11,
 * right half); a cat (8) whose 'head' part must be ignored; a person without parts. */
static void write_parts(const char *path, int with_person) {
    static uint8_t m[5][N0];
    memset(m, 0, sizeof m);
    for (int y = 0; y < H0; y++)
        for (int x = 0; x < W0; x++) {
            m[0][y * W0 + x] = y < 12;                /* person instance */
            m[1][y * W0 + x] = y < 4;                 /* head */
            m[2][y * W0 + x] = y >= 4 && y < 8 && x < 8; /* llarm */
            m[3][y * W0 + x] = y >= 8 && y < 12 && x >= 8; /* ruleg */
            m[4][y * W0 + x] = y >= 12;               /* the cat, and its head */
        }
    ms_anno_part pp[3] = {{"head", m[1]}, {"llarm", m[2]}, {"ruleg", m[3]}};
    ms_anno_part cat_head[1] = {{"head", m[4]}};
    ms_anno_object objs[3] = {{15, m[0], 3, pp}, {8, m[4], 1, cat_head}, {15, m[0], 0, NULL}};
    ms_anno a = {H0, W0, 0, objs};
    a.n_objects = 3;
    if (!with_person) a.objects = objs + 1, a.n_objects = 1;
    ms_io_err err;
    cr_assert_eq(ms_mat_write_anno(path, &a, "x", MS_MAT_V5, MS_IO_NOSYNC, &err), 0, "%s", err.msg);
}

static int part_at(int x, int y) {
    if (y < 4) return 1;
    if (y < 8) return x < 8 ? 4 : 0;
    if (y < 12) return x >= 8 ? 5 : 0;
    return 0;
}

static void write_id(const char *id, int q, int with_person) {
    char p[1024];
    uint8_t rgb[N0 * 3], grey[N0];
    for (int i = 0; i < N0 * 3; i++) rgb[i] = (uint8_t)(mix(q, i) % 256);
    path_of(p, sizeof p, "JPEGImages", id, "jpg");
    write_image(p, W0, H0, 3, rgb, 1);
    for (int i = 0; i < N0; i++) grey[i] = (uint8_t)(i % 37 == 0 ? 255 : mix(q + 1, i) % 31);
    path_of(p, sizeof p, "semseg/pascal-context", id, "png");
    write_image(p, W0, H0, 1, grey, -1);
    for (int i = 0; i < N0; i++) grey[i] = (uint8_t)(mix(q + 2, i) % 256);
    grey[0] = 127, grey[1] = 128;
    path_of(p, sizeof p, "sal_distill", id, "png");
    write_image(p, W0, H0, 1, grey, 0);
    for (int i = 0; i < N0 * 3; i++) rgb[i] = (uint8_t)(mix(q + 3, i) % 256);
    path_of(p, sizeof p, "normals_distill", id, "png");
    write_image(p, W0, H0, 3, rgb, 0);
    int32_t lm[N0];
    for (int y = 0; y < H0; y++)
        for (int x = 0; x < W0; x++) lm[y * W0 + x] = context_at(q, x, y);
    path_of(p, sizeof p, "pascal-context/trainval", id, "mat");
    ms_io_err err;
    cr_assert_eq(ms_mat_write_labelmap(p, lm, H0, W0, MS_MAT_V5, MS_IO_NOSYNC, &err), 0, "%s",
                 err.msg);
    path_of(p, sizeof p, "human_parts", id, "mat");
    write_parts(p, with_person);
}

static void write_split(const char *split, const char *text) {
    char p[1024];
    path_of(p, sizeof p, "ImageSets/Context", split, "txt");
    write_text(p, text);
}

static ms_config *load_cfg(const char *root, const char *tasks, int size, const char *extra) {
    static ms_config cfg;
    char text[2048];
    snprintf(text, sizeof text,
             "run:\n  seed: 3\ndata:\n  dataset: pascal_context\n  root: %s\n  tasks: %s\n"
             "  image_size: %d\n  workers: 0\n%smodel:\n  patch: 8\n",
             root, tasks, size, extra ? extra : "");
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    int n = ms_config_load_text(&cfg, "test.yaml", text, strlen(text), 0, NULL, &errs);
    if (n) ms_config_errors_print(&errs, stderr);
    cr_assert_eq(n, 0, "config errors");
    ms_config_errors_free(&errs);
    return &cfg;
}

#define ALL "[semseg, human_parts, sal, normals, edge]"

static ms_data *open_split(const ms_config *cfg, const char *split) {
    ms_data *d;
    ms_io_err err;
    cr_assert_eq(ms_data_open(&d, cfg, split, NULL, &err), 0, "open: %s", err.msg);
    return d;
}

/* ---- decoded values -------------------------------------------------------------------------- */

Test(pascal, decoded_values_of_every_task) {
    write_id("2008_000001", 1, 1);
    write_id("2008_000002", 2, 0);
    write_split("val", "2008_000001\r\n2008_000002\r\n");
    ms_config *cfg = load_cfg(g_root, ALL, W0, NULL);
    ms_data *d = open_split(cfg, "val");
    cr_assert_eq(d->n, 2);
    ms_batch b;
    ms_batch_alloc(&b, cfg, 2, W0, W0);
    void *s = d->ops->scratch_new(d);
    ms_io_err err;
    for (int i = 0; i < 2; i++)
        cr_assert_eq(d->ops->read(d, i, 0, 3, 0, s, &b, i, &err), 0, "%s", err.msg);
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    for (int i = 0; i < 2; i++) {
        int q = i + 1;
        char p[1024];
        char id[16];
        snprintf(id, sizeof id, "2008_00000%d", q);
        /* the image: what the JPEG decodes to (identity resize), ImageNet-normalised */
        path_of(p, sizeof p, "JPEGImages", id, "jpg");
        ms_image im;
        ms_image_init(&im);
        ms_img_want want = {.mode = MS_IMG_COLOR, .channels = 3};
        cr_assert_eq(ms_jpeg_read(p, &want, &im, &err), 0);
        for (int c = 0; c < 3; c++)
            for (int k = 0; k < N0; k++)
                cr_assert_float_eq(b.images[(i * 3 + c) * N0 + k],
                                   (ms_image_u8(&im)[k * 3 + c] / 255.0f - mean[c]) / std[c], 1e-5);
        ms_image_free(&im);
        for (int y = 0; y < H0; y++)
            for (int x = 0; x < W0; x++) {
                int k = y * W0 + x;
                int sem = k % 37 == 0 ? 255 : (int)(mix(q + 1, k) % 31);
                cr_assert_eq(b.target[0].labels[i * N0 + k], sem <= 20 ? sem : 255, "semseg %d", k);
                int part = q == 1 ? part_at(x, y) : 255;
                cr_assert_eq(b.target[1].labels[i * N0 + k], part, "parts (%d,%d) of %d", x, y, q);
                int sal = k == 0 ? 127 : k == 1 ? 128 : (int)(mix(q + 2, k) % 256);
                cr_assert_eq(b.target[2].binary[i * N0 + k], sal > 127, "sal %d", k);
                int valid = ms_pascal_normals_valid(context_at(q, x, y));
                cr_assert_eq(b.target[3].valid[i * N0 + k], valid, "normals valid (%d,%d)", x, y);
                if (valid) {
                    double n[3], len = 0;
                    for (int c = 0; c < 3; c++)
                        n[c] = 2.0 * (mix(q + 3, k * 3 + c) % 256) / 255.0 - 1, len += n[c] * n[c];
                    for (int c = 0; c < 3; c++)
                        cr_assert_float_eq(b.target[3].dense[(i * 3 + c) * N0 + k],
                                           n[c] / sqrt(len), 1e-5, "normal (%d,%d)", x, y);
                }
            }
        int32_t lm[N0];
        uint8_t edge[N0], tmp[N0];
        for (int y = 0; y < H0; y++)
            for (int x = 0; x < W0; x++) lm[y * W0 + x] = context_at(q, x, y);
        ms_pascal_edges(lm, H0, W0, edge, tmp);
        for (int k = 0; k < N0; k++) cr_assert_eq(b.target[4].binary[i * N0 + k], edge[k]);
    }
    d->ops->scratch_free(s);
    ms_batch_free(&b);
    ms_data_close(d);
}

Test(pascal, voc12_semseg_is_preferred) {
    write_id("a", 1, 1);
    char p[1024];
    uint8_t grey[N0];
    memset(grey, 9, sizeof grey);
    path_of(p, sizeof p, "semseg/VOC12", "a", "png");
    write_image(p, W0, H0, 1, grey, -1);
    write_split("train", "a\n");
    ms_config *cfg = load_cfg(g_root, "[semseg]", W0, NULL);
    ms_data *d = open_split(cfg, "train");
    ms_batch b;
    ms_batch_alloc(&b, cfg, 1, W0, W0);
    void *s = d->ops->scratch_new(d);
    ms_io_err err;
    cr_assert_eq(d->ops->read(d, 0, 0, 3, 0, s, &b, 0, &err), 0, "%s", err.msg);
    for (int k = 0; k < N0; k++) cr_assert_eq(b.target[0].labels[k], 9);
    d->ops->scratch_free(s);
    ms_batch_free(&b);
    ms_data_close(d);
}

/* ---- label rules ----------------------------------------------------------------------------- */

Test(pascal, part_names_map_to_six_parts) {
    const char *head[] = {"hair",   "head", "lear", "rear", "lebrow",
                          "rebrow", "leye", "reye", "nose", "mouth"};
    for (size_t i = 0; i < sizeof head / sizeof *head; i++)
        cr_assert_eq(ms_pascal_part_class(head[i]), 1, "%s", head[i]);
    cr_assert_eq(ms_pascal_part_class("torso"), 2);
    cr_assert_eq(ms_pascal_part_class("neck"), 2);
    cr_assert_eq(ms_pascal_part_class("luarm"), 3);
    cr_assert_eq(ms_pascal_part_class("ruarm"), 3);
    const char *low[] = {"llarm", "rlarm", "lhand", "rhand"};
    for (int i = 0; i < 4; i++) cr_assert_eq(ms_pascal_part_class(low[i]), 4, "%s", low[i]);
    cr_assert_eq(ms_pascal_part_class("luleg"), 5);
    cr_assert_eq(ms_pascal_part_class("ruleg"), 5);
    const char *legs[] = {"llleg", "rlleg", "lfoot", "rfoot"};
    for (int i = 0; i < 4; i++) cr_assert_eq(ms_pascal_part_class(legs[i]), 6, "%s", legs[i]);
    cr_assert_eq(ms_pascal_part_class("lwing"), 0);
    cr_assert_eq(ms_pascal_part_class(""), 0);
}

Test(pascal, normals_valid_classes) {
    cr_assert_eq(ms_pascal_normals_valid_count(), 170);
    int n = 0;
    for (int c = -5; c < 600; c++) n += ms_pascal_normals_valid(c);
    cr_assert_eq(n, 170);
    /* in NYU and in context: person 284, table 397, wall 440, window 454, bed 18; the
       'custom addition' tvmonitor 427; not: aeroplane 2, unknown 431, sky 360, 0 */
    const int yes[] = {284, 397, 440, 454, 18, 427, 3, 457};
    const int no[] = {2, 431, 360, 0, 1, 459, 25};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        cr_assert(ms_pascal_normals_valid(yes[i]), "%d", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        cr_assert(!ms_pascal_normals_valid(no[i]), "%d", no[i]);
}

Test(pascal, edges_match_opencv_and_scikit_image) {
    /* skimage.morphology.thin(abs(cv2.Laplacian(lab, cv2.CV_64F)) > 0) of a 12x10 LabelMap */
    static const int32_t lab[120] = {
        0,   0,   0,   0,   0,   0,   0,   0,   0, 427, 427, 427, 0,   0,   0,   0,   0,   284,
        0,   0,   0,   427, 427, 427, 0,   0,   0, 284, 284, 284, 284, 284, 0,   427, 427, 427,
        0,   0,   0,   284, 284, 284, 284, 284, 0, 427, 427, 427, 0,   0,   284, 284, 284, 284,
        284, 284, 284, 427, 427, 427, 0,   0,   0, 284, 284, 284, 284, 284, 0,   427, 427, 427,
        0,   0,   0,   284, 284, 284, 284, 284, 0, 427, 427, 427, 2,   2,   2,   2,   0,   284,
        0,   0,   0,   427, 427, 427, 2,   2,   2, 2,   0,   0,   0,   0,   0,   427, 427, 427,
        2,   2,   2,   2,   0,   0,   0,   0,   0, 427, 427, 427};
    static const uint8_t want[120] = {
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0,
        1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0,
        0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 1, 1, 1,
        1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0};
    uint8_t e[120], tmp[120];
    ms_pascal_edges(lab, 10, 12, e, tmp);
    for (int i = 0; i < 120; i++) cr_assert_eq(e[i], want[i], "edge (%d,%d)", i % 12, i / 12);
    /* thin keeps a one-pixel line and reduces a filled square to its core */
    uint8_t line[25] = {0}, sq[49] = {0};
    for (int i = 0; i < 5; i++) line[2 * 5 + i] = 1;
    ms_thin(line, 5, 5, tmp);
    for (int i = 0; i < 25; i++) cr_assert_eq(line[i], i / 5 == 2);
    for (int y = 1; y < 6; y++)
        for (int x = 1; x < 6; x++) sq[y * 7 + x] = 1;
    ms_thin(sq, 7, 7, tmp);
    int left = 0;
    for (int i = 0; i < 49; i++) left += sq[i];
    cr_assert(left >= 1 && left <= 3, "a 5x5 square thins to %d pixels", left);
}

Test(pascal, resampling_matches_opencv) {
    /* cv2.resize(src, (W, H), interpolation=cv2.INTER_CUBIC) of a 7x5 float image */
    float src[35];
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 7; x++)
            src[y * 7 + x] = (float)((x * 37 + y * 91 + (x * y) % 13 * 11) % 256);
    static const float c64[24] = {10.9459f, 58.4992f, 106.4032f, 129.2953f, 159.4071f, 210.1107f,
                                  148.4725f, 187.9599f, 165.039f, 119.3512f, 105.0231f, 78.4242f,
                                  76.9522f, 139.1211f, 154.6914f, 121.4903f, 232.1244f, 25.7716f,
                                  102.8906f, 149.1571f, 52.898f, 60.2813f, 96.1346f, 175.5944f};
    static const float c98[9] = {-10.8169f, 12.2066f, 44.015f, 72.5478f, 99.4885f,
                                 144.7996f, 180.6837f, 210.5361f, 233.5596f};
    ms_aug id = {0};
    id.scale = 1;
    ms_warp w;
    float out[72];
    ms_warp_plan(&w, &id, 7, 5, 6, 4);
    ms_warp_cubic(&w, src, 1, 0, out);
    for (int i = 0; i < 24; i++) cr_assert_float_eq(out[i], c64[i], 2e-3, "6x4 [%d]", i);
    ms_warp_plan(&w, &id, 7, 5, 9, 8);
    ms_warp_cubic(&w, src, 1, 0, out);
    for (int i = 0; i < 9; i++) cr_assert_float_eq(out[i], c98[i], 2e-3, "9x8 [%d]", i);
    /* labels: cv2.flip, warpAffine(getRotationMatrix2D((3.5, 2.5), 13, 1.1), INTER_NEAREST,
       border -1), resize INTER_NEAREST to 6x4, of the label map 0..34 */
    static const int32_t warped[24] = {5, 4, 3, 2, 2, 8, 5, 11, 11, 10, 9, 8,
                                       12, 19, 18, 17, 16, 15, 20, 19, 25, 24, 23, 22};
    ms_aug a = {.flip = 1, .scale = 1.1, .angle = 13.0};
    int32_t idx[24];
    ms_warp_plan(&w, &a, 7, 5, 6, 4);
    ms_warp_nearest(&w, idx);
    for (int i = 0; i < 24; i++) cr_assert_eq(idx[i], warped[i], "warp nearest [%d]", i);
}

/* ---- training augmentation ------------------------------------------------------------------- */

Test(pascal, training_samples_are_consistent_and_deterministic) {
    write_id("a", 1, 1);
    write_id("b", 2, 1);
    write_split("train", "a\rb\r");
    ms_config *cfg = load_cfg(g_root, ALL, 24, NULL);
    ms_data *d = open_split(cfg, "train");
    ms_batch b1, b2;
    ms_batch_alloc(&b1, cfg, 1, 24, 24);
    ms_batch_alloc(&b2, cfg, 1, 24, 24);
    void *s = d->ops->scratch_new(d);
    ms_io_err err;
    const int P = 24 * 24;
    int flips = 0;
    for (int e = 0; e < 6; e++)
        for (int i = 0; i < 2; i++) {
            cr_assert_eq(d->ops->read(d, i, 1, 3, e, s, &b1, 0, &err), 0, "%s", err.msg);
            cr_assert_eq(d->ops->read(d, i, 1, 3, e, s, &b2, 0, &err), 0, "%s", err.msg);
            cr_assert_eq(memcmp(b1.images, b2.images, 3 * P * sizeof(float)), 0,
                         "not deterministic");
            ms_aug a;
            ms_aug_pascal(&a, 3, e, i, 1);
            flips += a.flip;
            cr_assert(a.angle >= -20 && a.angle <= 20 && a.scale >= 0.75 && a.scale <= 1.25);
            int parts = 0;
            for (int k = 0; k < P; k++) {
                int sem = b1.target[0].labels[k], hp = b1.target[1].labels[k];
                cr_assert(sem == 255 || (sem >= 0 && sem <= 20), "semseg %d", sem);
                cr_assert(hp == 255 || (hp >= 0 && hp <= 6), "parts %d", hp);
                parts |= hp >= 1 && hp <= 6;
                cr_assert(b1.target[2].binary[k] <= 1 || b1.target[2].binary[k] == 255);
                cr_assert(b1.target[4].binary[k] <= 1 || b1.target[4].binary[k] == 255);
                if (b1.target[3].valid[k]) {
                    double len = 0;
                    for (int c = 0; c < 3; c++) len += pow(b1.target[3].dense[c * P + k], 2);
                    cr_assert_float_eq(len, 1.0, 1e-3, "normals are unit vectors (%g)", len);
                }
            }
            cr_assert(parts, "the person's parts survive scale and rotation");
        }
    cr_assert(flips > 0 && flips < 12, "flip draws %d of 12", flips);
    d->ops->scratch_free(s);
    ms_batch_free(&b1);
    ms_batch_free(&b2);
    ms_data_close(d);
}

/* ---- splits, missing and bad files ----------------------------------------------------------- */

Test(pascal, missing_files_error_or_skip) {
    write_id("a", 1, 1);
    write_id("b", 2, 1);
    write_id("c", 3, 1);
    write_split("train", " a \n\nb\r\nc");
    char gone[1024];
    path_of(gone, sizeof gone, "sal_distill", "b", "png");
    cr_assert_eq(unlink(gone), 0);
    ms_config *cfg = load_cfg(g_root, "[semseg, sal]", W0, NULL);
    ms_data *d;
    ms_io_err err;
    cr_assert_neq(ms_data_open(&d, cfg, "train", NULL, &err), 0);
    cr_assert(strstr(err.msg, gone) && strstr(err.msg, "missing"), "%s", err.msg);
    cfg = load_cfg(g_root, "[semseg, sal]", W0, "  on_missing: skip\n");
    d = open_split(cfg, "train");
    cr_assert_eq(d->n, 2);
    cr_assert_eq(d->n_skipped, 1);
    cr_assert_eq(d->missing[1], 1);
    char name[64];
    d->ops->sample_name(d, 1, name, sizeof name);
    cr_assert_str_eq(name, "c");
    ms_data_close(d);
    /* no split list at all */
    cr_assert_neq(ms_data_open(&d, cfg, "val", NULL, &err), 0);
    cr_assert(strstr(err.msg, "ImageSets/Context/val.txt"), "%s", err.msg);
}

typedef struct {
    int n;
    char msg[1024];
} bad_seen;

static void on_bad(void *ctx, const char *m) {
    bad_seen *g = ctx;
    g->n++;
    snprintf(g->msg, sizeof g->msg, "%s", m);
}

static void truncate_file(const char *path, long keep) {
    FILE *f = fopen(path, "r+b");
    cr_assert(f);
    cr_assert_eq(ftruncate(fileno(f), keep), 0);
    fclose(f);
}

Test(pascal, every_bad_file_names_its_path) {
    const char *ids[7] = {"i0", "i1", "i2", "i3", "i4", "i5", "i6"};
    for (int i = 0; i < 7; i++) write_id(ids[i], i + 1, 1);
    write_split("train", "i0\ni1\ni2\ni3\ni4\ni5\ni6\n");
    char bad[7][1024];
    /* truncated JPEG, garbage JPEG, truncated parts .mat, garbage LabelMap .mat, semseg of the
       wrong size, 16-bit saliency, a person part name that PASCAL-Part does not have */
    path_of(bad[0], 1024, "JPEGImages", "i0", "jpg");
    truncate_file(bad[0], 200);
    path_of(bad[1], 1024, "JPEGImages", "i1", "jpg");
    write_text(bad[1], "\xff\xd8\xff garbage, not really a JPEG stream at all .................");
    path_of(bad[2], 1024, "human_parts", "i2", "mat");
    truncate_file(bad[2], 150);
    path_of(bad[3], 1024, "pascal-context/trainval", "i3", "mat");
    write_text(bad[3], "MATLAB 5.0 MAT-file, but nothing after the header text");
    path_of(bad[4], 1024, "semseg/pascal-context", "i4", "png");
    uint8_t px[8 * 8 * 2] = {0};
    write_image(bad[4], 8, 8, 1, px, 0);
    path_of(bad[5], 1024, "sal_distill", "i5", "png");
    {
        ms_image im;
        ms_image_init(&im);
        uint16_t v[N0] = {0};
        im.width = W0, im.height = H0, im.channels = 1, im.depth = 16, im.data = v;
        ms_io_err err;
        cr_assert_eq(ms_png_write(bad[5], &im, NULL, 0, MS_IO_NOSYNC, &err), 0);
    }
    path_of(bad[6], 1024, "human_parts", "i6", "mat");
    {
        static uint8_t m[N0];
        memset(m, 1, sizeof m);
        ms_anno_part pp[1] = {{"tail", m}};
        ms_anno_object ob = {15, m, 1, pp};
        ms_anno a = {H0, W0, 1, &ob};
        ms_io_err err;
        cr_assert_eq(ms_mat_write_anno(bad[6], &a, "x", MS_MAT_V5, MS_IO_NOSYNC, &err), 0);
    }
    ms_config *cfg = load_cfg(g_root, ALL, W0, NULL);
    ms_data *d = open_split(cfg, "train");
    ms_batch b;
    ms_batch_alloc(&b, cfg, 1, W0, W0);
    void *s = d->ops->scratch_new(d);
    ms_task_stats st[MS_MAX_TASKS];
    memset(st, 0, sizeof st);
    for (int i = 0; i < 7; i++) {
        ms_io_err err;
        int rc = d->ops->read(d, i, i % 2, 3, 0, s, &b, 0, &err);
        cr_assert_lt(rc, 0, "%s: reading must fail", bad[i]);
        cr_assert(strstr(err.msg, bad[i]), "message '%s' does not name %s", err.msg, bad[i]);
        bad_seen seen = {0, ""};
        int n = d->ops->check(d, i, s, st, on_bad, &seen);
        cr_assert_eq(n, 1, "%s: check found %d bad files", bad[i], n);
        cr_assert(strstr(seen.msg, bad[i]), "check: '%s' does not name %s", seen.msg, bad[i]);
    }
    ms_io_err err;
    cr_assert_lt(d->ops->read(d, 6, 0, 3, 0, s, &b, 0, &err), 0);
    cr_assert(strstr(err.msg, "'tail'"), "the unknown part is named: %s", err.msg);
    d->ops->scratch_free(s);
    ms_batch_free(&b);
    ms_data_close(d);
}

/* ---- synthetic scenes ------------------------------------------------------------------------ */

Test(pascal, synthetic_scenes_read_back) {
    ms_synth_opts o;
    ms_synth_defaults(&o, MS_SYNTH_PASCAL);
    char out[256];
    snprintf(out, sizeof out, "%s/synth", g_root);
    o.out = out, o.count = 6, o.size = 40, o.seed = 21, o.threads = 1;
    o.split[0] = 1.0, o.split[1] = 0.0, o.split[2] = 0.0;
    char msg[1024];
    cr_assert_eq(ms_synth_write(&o, msg, sizeof msg), 0, "%s", msg);
    const int S = 32;
    ms_config *cfg = load_cfg(out, ALL, S, NULL);
    ms_data *d = open_split(cfg, "train");
    cr_assert_eq(d->n, o.count);
    ms_batch b;
    ms_batch_alloc(&b, cfg, 1, S, S);
    void *s = d->ops->scratch_new(d);
    ms_synth_scene *sc = ms_synth_scene_new(o.size);
    for (int j = 0; j < o.count; j++) {
        char id[32], name[64];
        ms_synth_pascal_id(j, id);
        int64_t i = -1;
        for (int64_t k = 0; k < d->n; k++) {
            d->ops->sample_name(d, k, name, sizeof name);
            if (!strcmp(name, id)) i = k;
        }
        cr_assert(i >= 0, "no sample %s", id);
        ms_io_err err;
        cr_assert_eq(d->ops->read(d, i, 0, 3, 0, s, &b, 0, &err), 0, "%s", err.msg);
        cr_assert_eq(ms_synth_render(&o, j, sc), 0);
        int W = sc->width, H = sc->height, parts = 0;
        for (int v = 0; v < S; v++)
            for (int u = 0; u < S; u++) {
                /* OpenCV INTER_NEAREST: floor(u * W / S) */
                int x = (int)floor(u * (double)W / S), y = (int)floor(v * (double)H / S);
                int k = v * S + u, src = y * W + x;
                int sem = sc->semseg[src];
                cr_assert_eq(b.target[0].labels[k], sem, "semseg of %s at (%d,%d)", id, u, v);
                parts |= sc->human_parts[src] != 255;
                cr_assert_eq(b.target[2].binary[k], sc->saliency[src], "sal of %s", id);
                cr_assert_eq(b.target[3].valid[k], ms_pascal_normals_valid(sc->context[src]),
                             "normals valid of %s", id);
            }
        /* human parts: the rendered labels where the scene has a person, else all ignored */
        for (int v = 0; v < S; v++)
            for (int u = 0; u < S; u++) {
                int x = (int)floor(u * (double)W / S), y = (int)floor(v * (double)H / S);
                int want = parts ? sc->human_parts[y * W + x] : 255;
                int got = b.target[1].labels[v * S + u];
                if (parts && got == 255) continue; /* no part visible after resizing */
                cr_assert_eq(got, want, "parts of %s at (%d,%d)", id, u, v);
            }
    }
    ms_synth_scene_free(sc);
    d->ops->scratch_free(s);
    ms_batch_free(&b);
    ms_data_close(d);
}
