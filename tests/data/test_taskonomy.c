/* Taskonomy loader: every domain's value map and invalid mask on fixtures written with the codecs
 * (both directory layouts, irregular and regular file names), synthetic scenes read back to
 * within quantisation, the split CSV with CR / LF / CRLF, missing files (error and skip), the
 * index cache (reused, invalidated, rebuilt), every kind of bad file, the horizontal flip of
 * normals, and the resampling against Pillow / scipy outputs. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../data/augment.h"
#include "../../data/dataset.h"
#include "../../data/npy.h"
#include "../../data/synth.h"
#include "../../data/taskonomy.h"
#include "../../model/batch.h"

/* ---- fixtures -------------------------------------------------------------------------------- */

static char g_root[64];

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f) {
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static void setup(void) {
    strcpy(g_root, "/tmp/ms_tx_XXXXXX");
    cr_assert(mkdtemp(g_root));
}

static void teardown(void) { nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

TestSuite(taskonomy, .init = setup, .fini = teardown);

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

#define S0 16 /* native side of the fixtures */
#define ALL_TASKS                                                                                  \
    "[depth_euclidean, depth_zbuffer, normal, principal_curvature, reshading, edge_texture, "     \
    "edge_occlusion, keypoints2d, keypoints3d, segment_unsup2d, segment_unsup25d, "              \
    "segment_semantic, class_object, class_scene]"

static uint32_t mix3(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t h =
        a * 0x9E3779B1u ^ (b + 0x7F4A7C15u) * 0x85EBCA77u ^ (c + 0x165667B1u) * 0xC2B2AE3Du;
    h ^= h >> 15, h *= 0x2C1B3C6Du, h ^= h >> 12, h *= 0x297A2D39u, h ^= h >> 15;
    return h;
}

/* The raw file samples of domain `dom` for sample seed q: HWC, C channels of depth bits.
 * Special pixels on row 0 exercise the invalid rules. */
static void raw_of(const char *dom, int q, int W, int H, uint16_t *out, int *C, int *depth) {
    int c3 = !strcmp(dom, "rgb") || !strcmp(dom, "normal") || !strcmp(dom, "principal_curvature") ||
             !strcmp(dom, "reshading");
    *C = c3 ? 3 : 1;
    *depth =
        (!strncmp(dom, "depth", 5) || !strncmp(dom, "edge", 4) || !strncmp(dom, "keypoints", 9))
            ? 16
            : 8;
    uint32_t salt = mix3((uint32_t)strlen(dom), (uint32_t)dom[0], (uint32_t)dom[2]);
    for (int p = 0; p < W * H; p++)
        for (int c = 0; c < *C; c++) {
            uint32_t h = mix3((uint32_t)q, (uint32_t)p * 3 + c, salt);
            uint16_t v = *depth == 16 ? (uint16_t)(h % 60000) : (uint16_t)(h % 256);
            if (!strcmp(dom, "edge_texture")) v = (uint16_t)(h % 8000);
            if (!strcmp(dom, "keypoints2d")) v = (uint16_t)(h % 600);
            if (!strcmp(dom, "edge_occlusion")) v = 300;
            if (!strcmp(dom, "segment_semantic")) v = (uint16_t)(h % 21);
            if (!strcmp(dom, "principal_curvature") && c == 2) v = 0;
            if (!strcmp(dom, "reshading"))
                v = (uint16_t)(mix3((uint32_t)q, (uint32_t)p, salt) % 256);
            out[p * *C + c] = v;
        }
    if (!strncmp(dom, "depth", 5)) {
        out[1] = 65535, out[2] = 64500, out[3] = 64499;
        if (!strcmp(dom, "depth_zbuffer")) out[4] = 65000;
    }
    if (!strcmp(dom, "normal")) {
        for (int c = 0; c < 3; c++) out[5 * 3 + c] = 128;
        out[6 * 3] = 128, out[6 * 3 + 1] = 128, out[6 * 3 + 2] = 127;
    }
    if (!strcmp(dom, "principal_curvature")) {
        out[7 * 3] = 0, out[7 * 3 + 1] = 0;
        out[8 * 3] = 0, out[8 * 3 + 1] = 5;
    }
}

static float logit_of(int q, int k) { return (float)(3.0 * sin(q * 7.0 + k * 0.37)); }

static const char *DOMAINS[] = {"rgb", "depth_euclidean", "depth_zbuffer", "normal",
                                "principal_curvature", "reshading", "edge_texture",
                                "edge_occlusion", "keypoints2d", "keypoints3d", "segment_unsup2d",
                                "segment_unsup25d", "segment_semantic", "class_object",
                                "class_scene"};
#define N_DOMAINS (int)(sizeof DOMAINS / sizeof DOMAINS[0])

static void domain_path(char *buf, size_t cap, const char *building, int layout, const char *dom,
                        int p, int v, int regular) {
    const char *name = dom, *ext = "png";
    if (!strcmp(dom, "class_scene")) name = regular ? "class_scene" : "class_places", ext = "npy";
    if (!strcmp(dom, "class_object")) ext = "npy";
    if (!strcmp(dom, "segment_semantic") && !regular) name = "segmentsemantic";
    char dir[512];
    if (layout == 1) snprintf(dir, sizeof dir, "%s/%s/taskonomy/%s", g_root, dom, building);
    else snprintf(dir, sizeof dir, "%s/%s/%s", g_root, dom, building);
    mkdirs(dir);
    snprintf(buf, cap, "%s/point_%d_view_%d_domain_%s.%s", dir, p, v, name, ext);
}

static void write_png_raw(const char *path, const uint16_t *raw, int W, int H, int C, int depth) {
    ms_image im;
    ms_image_init(&im);
    im.width = W, im.height = H, im.channels = C, im.depth = depth;
    size_t n = (size_t)W * H * C;
    void *buf = malloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        if (depth == 16) ((uint16_t *)buf)[i] = raw[i];
        else ((uint8_t *)buf)[i] = (uint8_t)raw[i];
    }
    im.data = buf;
    ms_io_err err;
    cr_assert_eq(ms_png_write(path, &im, NULL, 0, MS_IO_NOSYNC, &err), 0, "%s", err.msg);
    free(buf);
}

static int seed_of(const char *building, int p, int v) {
    return (int)(mix3((uint32_t)building[0], (uint32_t)p, (uint32_t)v) % 100000);
}

/* Writes every domain of sample (building, p, v). */
static void write_sample(const char *building, int layout, int p, int v, int regular) {
    int q = seed_of(building, p, v);
    uint16_t raw[S0 * S0 * 3];
    char path[1024];
    for (int k = 0; k < N_DOMAINS; k++) {
        domain_path(path, sizeof path, building, layout, DOMAINS[k], p, v, regular);
        if (!strncmp(DOMAINS[k], "class_", 6)) {
            int n = !strcmp(DOMAINS[k], "class_object") ? 1000 : 365;
            float x[1000];
            for (int i = 0; i < n; i++) x[i] = logit_of(q, i);
            int64_t shape[1] = {n};
            ms_io_err err;
            cr_assert_eq(ms_npy_write(path, x, 1, shape, MS_IO_NOSYNC, &err), 0, "%s", err.msg);
            continue;
        }
        int C, depth;
        raw_of(DOMAINS[k], q, S0, S0, raw, &C, &depth);
        write_png_raw(path, raw, S0, S0, C, depth);
    }
}

/* Buildings alpha (omnidata layout, irregular names) and beta (flat layout, regular names) in
 * train, gamma in val; two points x two views each. */
static void write_dataset(const char *csv) {
    for (int p = 0; p < 2; p++)
        for (int v = 0; v < 2; v++) {
            write_sample("alpha", 1, p, v, 0);
            write_sample("beta", 2, p + 10, v, 1);
            write_sample("gamma", 1, p, v, 0);
        }
    char path[512];
    snprintf(path, sizeof path, "%s/splits.csv", g_root);
    write_text(path, csv ? csv : "id,train,val,test\ralpha,1,0,0\rbeta,1,0,0\rgamma,0,1,0\r");
}

static ms_config *load_cfg_root(const char *root, const char *tasks, int size, int resize,
                                const char *extra) {
    static ms_config cfg;
    char text[2048];
    snprintf(text, sizeof text,
             "run:\n  dir: %s/runs\n  name: t\n  seed: 5\n"
             "data:\n  dataset: taskonomy\n  root: %s\n  tasks: %s\n  image_size: %d\n"
             "  resize: %d\n  workers: 0\n%s"
             "model:\n  patch: 8\n",
             g_root, root, tasks, size, resize, extra ? extra : "");
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    int n = ms_config_load_text(&cfg, "test.yaml", text, strlen(text), 0, NULL, &errs);
    if (n) ms_config_errors_print(&errs, stderr);
    cr_assert_eq(n, 0, "config errors");
    ms_config_errors_free(&errs);
    return &cfg;
}

static ms_config *load_cfg(const char *tasks, int size, int resize, const char *extra) {
    return load_cfg_root(g_root, tasks, size, resize, extra);
}

static ms_data *open_split(const ms_config *cfg, const char *split) {
    ms_data *d;
    ms_io_err err;
    int rc = ms_data_open(&d, cfg, split, NULL, &err);
    cr_assert_eq(rc, 0, "open: %s", err.msg);
    return d;
}

static int64_t find_sample(const ms_data *d, const char *name) {
    char buf[256];
    for (int64_t i = 0; i < d->n; i++) {
        d->ops->sample_name(d, i, buf, sizeof buf);
        if (!strcmp(buf, name)) return i;
    }
    cr_assert_fail("no sample %s", name);
    return -1;
}

static int task_of(const ms_config *cfg, const char *name) {
    int t = ms_config_task_index(cfg, name);
    cr_assert(t >= 0, "task %s", name);
    return t;
}

/* ---- decoded values -------------------------------------------------------------------------- */

static void expect_sample(const ms_config *cfg, const ms_batch *b, const char *building, int p,
                          int v) {
    int q = seed_of(building, p, v), C, depth;
    const int P = S0 * S0;
    uint16_t rgb[P * 3], eu[P], zb[P], raw[P * 3];
    raw_of("rgb", q, S0, S0, rgb, &C, &depth);
    raw_of("depth_euclidean", q, S0, S0, eu, &C, &depth);
    raw_of("depth_zbuffer", q, S0, S0, zb, &C, &depth);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < P; i++)
            cr_assert_float_eq(b->images[c * P + i], rgb[i * 3 + c] / 255.0f * 2 - 1, 1e-6,
                               "rgb %d", i);
    /* the mask comes from depth_euclidean, the first configured depth task */
    for (int i = 0; i < P; i++) {
        int masked = eu[i] >= 64500;
        const ms_target *g = &b->target[task_of(cfg, "depth_euclidean")];
        cr_assert_float_eq(g->dense[i], log1p((double)eu[i]) / log(65536.0), 1e-6);
        cr_assert_eq(g->valid[i], !masked, "depth_euclidean valid at %d", i);
        g = &b->target[task_of(cfg, "depth_zbuffer")];
        cr_assert_eq(g->valid[i], !masked && zb[i] < 64500, "depth_zbuffer valid at %d", i);

        raw_of("normal", q, S0, S0, raw, &C, &depth);
        g = &b->target[task_of(cfg, "normal")];
        int grey = raw[i * 3] == 128 && raw[i * 3 + 1] == 128 && raw[i * 3 + 2] == 128;
        for (int c = 0; c < 3; c++)
            cr_assert_float_eq(g->dense[c * P + i], raw[i * 3 + c] / 255.0f * 2 - 1, 1e-6);
        cr_assert_eq(g->valid[i], !masked && !grey, "normal valid at %d", i);

        raw_of("principal_curvature", q, S0, S0, raw, &C, &depth);
        g = &b->target[task_of(cfg, "principal_curvature")];
        cr_assert_float_eq(g->dense[i], (raw[i * 3] - 123.572) / 31.922, 1e-5);
        cr_assert_float_eq(g->dense[P + i], (raw[i * 3 + 1] - 120.1) / 21.658, 1e-5);
        cr_assert_eq(g->valid[i], !masked && !(raw[i * 3] == 0 && raw[i * 3 + 1] == 0));

        raw_of("reshading", q, S0, S0, raw, &C, &depth);
        g = &b->target[task_of(cfg, "reshading")];
        for (int c = 0; c < 3; c++)
            cr_assert_float_eq(g->dense[c * P + i], raw[i * 3 + c] / 255.0, 1e-6);
        cr_assert_eq(g->valid[i], !masked);

        raw_of("edge_texture", q, S0, S0, raw, &C, &depth);
        g = &b->target[task_of(cfg, "edge_texture")];
        double top = 0.08 * 65536;
        cr_assert_float_eq(g->dense[i], fmin(raw[i], top) / top * 2 - 1, 1e-6);
        cr_assert_eq(g->valid[i], 1);

        /* a constant map stays constant through the blur (reflecting borders) */
        g = &b->target[task_of(cfg, "edge_occlusion")];
        cr_assert_float_eq(g->dense[i], 300 / (0.00625 * 65536) * 2 - 1, 1e-5);
        cr_assert_eq(g->valid[i], !masked);

        raw_of("keypoints2d", q, S0, S0, raw, &C, &depth);
        g = &b->target[task_of(cfg, "keypoints2d")];
        top = 0.005 * 65536;
        cr_assert_float_eq(g->dense[i], fmin(raw[i], top) / top * 2 - 1, 1e-6);
        cr_assert_eq(g->valid[i], 1);

        raw_of("keypoints3d", q, S0, S0, raw, &C, &depth);
        g = &b->target[task_of(cfg, "keypoints3d")];
        cr_assert_float_eq(g->dense[i], raw[i] / 65536.0 * 2 - 1, 1e-6);
        cr_assert_eq(g->valid[i], !masked);

        raw_of("segment_unsup25d", q, S0, S0, raw, &C, &depth);
        g = &b->target[task_of(cfg, "segment_unsup25d")];
        cr_assert_float_eq(g->dense[i], raw[i] / 255.0 * 2 - 1, 1e-6);

        raw_of("segment_semantic", q, S0, S0, raw, &C, &depth);
        g = &b->target[task_of(cfg, "segment_semantic")];
        cr_assert_eq(g->labels[i], raw[i] < 18 ? raw[i] : 0, "segment_semantic at %d", i);
    }
    const char *cls[2] = {"class_object", "class_scene"};
    for (int k = 0; k < 2; k++) {
        int n = k ? 365 : 1000;
        double mx = -1e9, sum = 0;
        for (int j = 0; j < n; j++) mx = fmax(mx, logit_of(q, j));
        for (int j = 0; j < n; j++) sum += exp(logit_of(q, j) - mx);
        const float *vec = b->target[task_of(cfg, cls[k])].vector;
        for (int j = 0; j < n; j++)
            cr_assert_float_eq(vec[j], exp(logit_of(q, j) - mx) / sum, 1e-7, "%s[%d]", cls[k], j);
    }
}

Test(taskonomy, decoded_values_both_layouts_and_names) {
    write_dataset(NULL);
    ms_config *cfg = load_cfg(ALL_TASKS, S0, S0, NULL);
    ms_data *d = open_split(cfg, "train");
    cr_assert_eq(d->n, 8, "alpha and beta have 4 samples each, got %lld", (long long)d->n);
    ms_batch b;
    ms_batch_alloc(&b, cfg, 1, S0, S0);
    void *s = d->ops->scratch_new(d);
    const char *names[2] = {"alpha", "beta"};
    for (int k = 0; k < 2; k++)
        for (int p = 0; p < 2; p++)
            for (int v = 0; v < 2; v++) {
                char name[64];
                int pp = k ? p + 10 : p;
                snprintf(name, sizeof name, "%s/point_%d_view_%d", names[k], pp, v);
                ms_io_err err;
                cr_assert_eq(d->ops->read(d, find_sample(d, name), 0, 1, 0, s, &b, 0, &err), 0,
                             "%s", err.msg);
                expect_sample(cfg, &b, names[k], pp, v);
            }
    /* the val split is gamma alone */
    ms_data *val = open_split(cfg, "val");
    cr_assert_eq(val->n, 4);
    d->ops->scratch_free(s);
    ms_batch_free(&b);
    ms_data_close(val);
    ms_data_close(d);
}

Test(taskonomy, resize_and_crop_use_nearest_labels) {
    write_dataset(NULL);
    /* 16 -> 32, centre crop 16 at (8, 8): label (x, y) = raw[floor((x + 8.5) / 2)] */
    ms_config *cfg = load_cfg("[segment_semantic, normal]", 16, 32, NULL);
    ms_data *d = open_split(cfg, "train");
    ms_batch b;
    ms_batch_alloc(&b, cfg, 1, 16, 16);
    void *s = d->ops->scratch_new(d);
    ms_io_err err;
    int64_t i = find_sample(d, "beta/point_11_view_1");
    cr_assert_eq(d->ops->read(d, i, 0, 1, 0, s, &b, 0, &err), 0, "%s", err.msg);
    uint16_t raw[S0 * S0 * 3];
    int C, depth;
    raw_of("segment_semantic", seed_of("beta", 11, 1), S0, S0, raw, &C, &depth);
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++) {
            int sx = (int)floor((x + 8 + 0.5) * 0.5), sy = (int)floor((y + 8 + 0.5) * 0.5);
            int want = raw[sy * S0 + sx] < 18 ? raw[sy * S0 + sx] : 0;
            cr_assert_eq(b.target[0].labels[y * 16 + x], want, "(%d,%d)", x, y);
        }
    /* training crops stay inside the resized image and differ between epochs */
    int differ = 0;
    for (int e = 0; e < 8; e++) {
        ms_aug a0, a1;
        ms_aug_taskonomy(&a0, 9, e, i, 32, 16, 1);
        ms_aug_taskonomy(&a1, 9, e + 1, i, 32, 16, 1);
        cr_assert(a0.crop_x >= 0 && a0.crop_x <= 16 && a0.crop_y >= 0 && a0.crop_y <= 16);
        differ |= a0.crop_x != a1.crop_x || a0.crop_y != a1.crop_y;
    }
    cr_assert(differ, "crops do not depend on the epoch");
    d->ops->scratch_free(s);
    ms_batch_free(&b);
    ms_data_close(d);
}

Test(taskonomy, flip_negates_normal_x) {
    write_dataset(NULL);
    ms_config *cfg = load_cfg("[normal, segment_semantic]", S0, S0, NULL);
    ms_data *d = open_split(cfg, "train");
    /* a sample whose training draw flips (the crop is the whole image) */
    int64_t i = 0;
    ms_aug a;
    for (;; i++) {
        cr_assert(i < d->n, "no sample flips");
        ms_aug_taskonomy(&a, 5, 0, i, S0, S0, 1);
        if (a.flip) break;
    }
    ms_batch tr, ev;
    ms_batch_alloc(&tr, cfg, 1, S0, S0);
    ms_batch_alloc(&ev, cfg, 1, S0, S0);
    void *s = d->ops->scratch_new(d);
    ms_io_err err;
    cr_assert_eq(d->ops->read(d, i, 1, 5, 0, s, &tr, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(d->ops->read(d, i, 0, 5, 0, s, &ev, 0, &err), 0, "%s", err.msg);
    const int P = S0 * S0;
    for (int y = 0; y < S0; y++)
        for (int x = 0; x < S0; x++) {
            int p = y * S0 + x, m = y * S0 + (S0 - 1 - x);
            for (int c = 0; c < 3; c++)
                cr_assert_eq(tr.images[c * P + p], ev.images[c * P + m], "rgb mirrored");
            cr_assert_eq(tr.target[0].dense[p], -ev.target[0].dense[m], "normal x negated");
            cr_assert_eq(tr.target[0].dense[P + p], ev.target[0].dense[P + m], "normal y kept");
            cr_assert_eq(tr.target[0].dense[2 * P + p], ev.target[0].dense[2 * P + m]);
            cr_assert_eq(tr.target[0].valid[p], ev.target[0].valid[m]);
            cr_assert_eq(tr.target[1].labels[p], ev.target[1].labels[m]);
        }
    d->ops->scratch_free(s);
    ms_batch_free(&tr);
    ms_batch_free(&ev);
    ms_data_close(d);
}

/* ---- split CSV ------------------------------------------------------------------------------- */

static void expect_split(const char *csv, const char *split, int n, const char *const *want) {
    char path[256];
    snprintf(path, sizeof path, "%s/s.csv", g_root);
    write_text(path, csv);
    char **names;
    int got;
    ms_io_err err;
    cr_assert_eq(ms_tx_read_split(path, split, &names, &got, &err), 0, "%s", err.msg);
    cr_assert_eq(got, n, "%d buildings, expected %d", got, n);
    for (int i = 0; i < n; i++) {
        cr_assert_str_eq(names[i], want[i]);
        free(names[i]);
    }
    free(names);
}

Test(taskonomy, split_csv_any_line_ending) {
    const char *train[] = {"allensville", "beechwood", "coffeen"}, *val[] = {"darden"};
    const char *bodies[] = {
        "id,train,val,test\rallensville,1,0,0\rbeechwood,1,0,0\rcoffeen,1,0,0\rdarden,0,1,0\r",
        "id,train,val,test\nallensville,1,0,0\nbeechwood,1,0,0\ncoffeen,1,0,0\ndarden,0,1,0",
        "id,train,val,test\r\nallensville,1,0,0\r\nbeechwood,1,0,0\r\n\r\ncoffeen,1,0,0\r\n"
        "darden,0,1,0\r\n",
        "id, train, val, test\n allensville , "
        "1,0,0\nbeechwood,1,0,0\r\ncoffeen,1,0,0\rdarden,0,1,0\n"
        "coffeen,1,0,0\n",
    };
    for (int k = 0; k < 4; k++) {
        expect_split(bodies[k], "train", 3, train);
        expect_split(bodies[k], "val", 1, val);
        expect_split(bodies[k], "test", 0, NULL);
    }
}

Test(taskonomy, split_csv_errors_name_the_file) {
    char path[256];
    snprintf(path, sizeof path, "%s/s.csv", g_root);
    char **names;
    int n;
    ms_io_err err;
    write_text(path, "id,train,val,test\rallensville,1,0,0\r");
    cr_assert_neq(ms_tx_read_split(path, "trian", &names, &n, &err), 0);
    cr_assert(strstr(err.msg, path) && strstr(err.msg, "trian") &&
                  strstr(err.msg, "train, val, test"),
              "%s", err.msg);
    write_text(path, "id,train,val,test\rallensville,1,0,0\rbeechwood,yes,0,0\r");
    cr_assert_neq(ms_tx_read_split(path, "train", &names, &n, &err), 0);
    cr_assert(strstr(err.msg, path) && strstr(err.msg, ":3:") && strstr(err.msg, "yes"), "%s",
              err.msg);
    write_text(path, "id,train,val,test\rallensville,1\r");
    cr_assert_neq(ms_tx_read_split(path, "val", &names, &n, &err), 0);
    cr_assert(strstr(err.msg, ":2:"), "%s", err.msg);
    snprintf(path, sizeof path, "%s/none.csv", g_root);
    cr_assert_neq(ms_tx_read_split(path, "train", &names, &n, &err), 0);
    cr_assert(strstr(err.msg, path), "%s", err.msg);
    /* through the dataset: no rgb anywhere is an error naming where it looked */
    write_dataset("id,train,val,test\nnowhere,1,0,0\n");
    ms_config *cfg = load_cfg("[normal]", S0, S0, NULL);
    ms_data *d;
    cr_assert_neq(ms_data_open(&d, cfg, "train", NULL, &err), 0);
    cr_assert(strstr(err.msg, "nowhere") && strstr(err.msg, "no rgb"), "%s", err.msg);
}

/* ---- missing files --------------------------------------------------------------------------- */

Test(taskonomy, missing_file_is_an_error_or_skipped) {
    write_dataset(NULL);
    char gone[1024];
    domain_path(gone, sizeof gone, "beta", 2, "normal", 10, 1, 1);
    cr_assert_eq(unlink(gone), 0);
    ms_config *cfg = load_cfg("[depth_euclidean, normal]", S0, S0, NULL);
    ms_data *d;
    ms_io_err err;
    cr_assert_neq(ms_data_open(&d, cfg, "train", NULL, &err), 0, "a missing file must fail");
    cr_assert(strstr(err.msg, gone) && strstr(err.msg, "missing"), "%s", err.msg);

    cfg = load_cfg("[depth_euclidean, normal]", S0, S0, "  on_missing: skip\n");
    d = open_split(cfg, "train");
    cr_assert_eq(d->n, 7);
    cr_assert_eq(d->n_skipped, 1);
    cr_assert_eq(d->missing[1], 1);
    cr_assert_eq(d->found[1], 7);
    ms_data_close(d);

    ms_data_open_opts report = {.report_only = 1};
    cr_assert_eq(ms_data_open(&d, cfg, "train", &report, &err), 0, "%s", err.msg);
    cr_assert_eq(d->n, 8);
    int listed = 0;
    char path[1024];
    for (int64_t i = 0; i < d->n; i++)
        if (d->ops->missing(d, i, 1, path, sizeof path)) {
            cr_assert_str_eq(path, gone);
            listed++;
        }
    cr_assert_eq(listed, 1);
    ms_data_close(d);
}

/* ---- index cache ----------------------------------------------------------------------------- */

static void expect_index_at(int line, const ms_config *cfg, const char *note, int64_t n,
                            int rebuild) {
    ms_data *d;
    ms_io_err err;
    ms_data_open_opts o = {.rebuild = rebuild};
    cr_assert_eq(ms_data_open(&d, cfg, "train", &o, &err), 0, "line %d: %s", line, err.msg);
    cr_assert(strstr(d->index_note, note), "line %d: index note '%s', expected '%s'", line,
              d->index_note, note);
    cr_assert_eq(d->n, n, "line %d: %lld samples, expected %lld", line, (long long)d->n,
                 (long long)n);
    ms_data_close(d);
}
#define expect_index(...) expect_index_at(__LINE__, __VA_ARGS__)

/* Directory timestamps come from a clock that ticks every few milliseconds. */
static void tick(void) { usleep(30000); }

Test(taskonomy, index_cache_reused_and_invalidated) {
    write_dataset(NULL);
    ms_config *cfg = load_cfg("[normal, class_scene]", S0, S0, NULL);
    expect_index(cfg, "listed and cached", 8, 0);
    expect_index(cfg, "read from", 8, 0);
    /* a new image in a building's directory */
    tick();
    write_sample("alpha", 1, 7, 0, 0);
    expect_index(cfg, "listed and cached", 9, 0);
    expect_index(cfg, "read from", 9, 0);
    /* a removed label file: the index must not keep it */
    tick();
    char path[1024];
    domain_path(path, sizeof path, "alpha", 1, "class_scene", 7, 0, 0);
    cr_assert_eq(unlink(path), 0);
    ms_config *skip = load_cfg("[normal, class_scene]", S0, S0, "  on_missing: skip\n");
    expect_index(skip, "listed and cached", 8, 0);
    /* an edited split file */
    tick();
    snprintf(path, sizeof path, "%s/splits.csv", g_root);
    write_text(path, "id,train,val,test\nalpha,1,0,0\nbeta,0,0,1\ngamma,0,1,0\n");
    expect_index(skip, "listed and cached", 4, 0);
    expect_index(skip, "read from", 4, 0);
    /* a directory that disappears (the depth read for the normals' mask), then appears in
       the other layout */
    tick();
    snprintf(path, sizeof path, "%s/depth_zbuffer/taskonomy/alpha", g_root);
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    expect_index(skip, "listed and cached", 4, 0);
    expect_index(skip, "read from", 4, 0);
    tick();
    write_sample("alpha", 2, 0, 0, 0);
    expect_index(skip, "listed and cached", 4, 0);
    /* rebuild on request, and a damaged cache is rebuilt */
    expect_index(skip, "listed and cached", 4, 1);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/.modsquad_index", g_root);
    DIR *dd = opendir(dir);
    cr_assert(dd);
    struct dirent *e;
    int damaged = 0;
    while ((e = readdir(dd)))
        if (strstr(e->d_name, ".idx")) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            FILE *f = fopen(path, "r+b");
            fseek(f, 40, SEEK_SET);
            fputc('#', f);
            fclose(f);
            damaged++;
        }
    closedir(dd);
    cr_assert(damaged > 0);
    expect_index(skip, "listed and cached", 4, 0);
    expect_index(skip, "read from", 4, 0);
    /* data.index_cache: false writes nothing (without class_scene, point 7 is a sample) */
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    ms_config *off = load_cfg("[normal]", S0, S0, "  index_cache: false\n");
    expect_index(off, "index_cache is off", 5, 0);
    struct stat st;
    cr_assert_neq(stat(dir, &st), 0, "%s was written", dir);
}

/* ---- bad files ------------------------------------------------------------------------------- */

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

Test(taskonomy, every_bad_file_names_its_path) {
    write_dataset(NULL);
    char bad[8][1024];
    /* alpha (0,0): truncated rgb; (0,1): garbage normal; (1,0): 8-bit depth; (1,1): 8x8 normal;
       beta (10,0): truncated npy; (10,1): npy of 999 values; (11,0): JPEG bytes in the
       segment_semantic PNG; (11,1): empty rgb */
    domain_path(bad[0], 1024, "alpha", 1, "rgb", 0, 0, 0);
    truncate_file(bad[0], 60);
    domain_path(bad[1], 1024, "alpha", 1, "normal", 0, 1, 0);
    write_text(bad[1], "this is not a PNG file at all, just text of some length........");
    domain_path(bad[2], 1024, "alpha", 1, "depth_euclidean", 1, 0, 0);
    uint16_t raw[S0 * S0 * 3];
    for (int i = 0; i < S0 * S0 * 3; i++) raw[i] = (uint16_t)(i % 200);
    write_png_raw(bad[2], raw, S0, S0, 1, 8);
    domain_path(bad[3], 1024, "alpha", 1, "normal", 1, 1, 0);
    write_png_raw(bad[3], raw, 8, 8, 3, 8);
    domain_path(bad[4], 1024, "beta", 2, "class_object", 10, 0, 1);
    truncate_file(bad[4], 100);
    domain_path(bad[5], 1024, "beta", 2, "class_object", 10, 1, 1);
    float x[999] = {0};
    int64_t shape[1] = {999};
    ms_io_err err;
    cr_assert_eq(ms_npy_write(bad[5], x, 1, shape, MS_IO_NOSYNC, &err), 0);
    domain_path(bad[6], 1024, "beta", 2, "segment_semantic", 11, 0, 1);
    ms_image im;
    ms_image_init(&im);
    uint8_t px[S0 * S0];
    memset(px, 7, sizeof px);
    im.width = S0, im.height = S0, im.channels = 1, im.depth = 8, im.data = px;
    cr_assert_eq(ms_jpeg_write(bad[6], &im, 90, MS_IO_NOSYNC, &err), 0);
    domain_path(bad[7], 1024, "beta", 2, "rgb", 11, 1, 1);
    truncate_file(bad[7], 0);

    ms_config *cfg =
        load_cfg("[depth_euclidean, normal, segment_semantic, class_object]", S0, S0, NULL);
    ms_data *d = open_split(cfg, "train");
    const char *names[8] = {"alpha/point_0_view_0", "alpha/point_0_view_1", "alpha/point_1_view_0",
                            "alpha/point_1_view_1", "beta/point_10_view_0", "beta/point_10_view_1",
                            "beta/point_11_view_0", "beta/point_11_view_1"};
    ms_batch b;
    ms_batch_alloc(&b, cfg, 1, S0, S0);
    void *s = d->ops->scratch_new(d);
    for (int k = 0; k < 8; k++) {
        int rc = d->ops->read(d, find_sample(d, names[k]), k % 2, 1, 0, s, &b, 0, &err);
        cr_assert_lt(rc, 0, "%s: reading %s must fail", names[k], bad[k]);
        cr_assert(strstr(err.msg, bad[k]), "%s: message '%s' does not name %s", names[k], err.msg,
                  bad[k]);
    }
    /* data check's decoder reports the same files, one each */
    ms_task_stats st[MS_MAX_TASKS];
    memset(st, 0, sizeof st);
    for (int k = 0; k < 8; k++) {
        bad_seen got = {0, ""};
        int n = d->ops->check(d, find_sample(d, names[k]), s, st, on_bad, &got);
        cr_assert_eq(n, 1, "%s: %d bad files", names[k], n);
        cr_assert(strstr(got.msg, bad[k]), "check: '%s' does not name %s", got.msg, bad[k]);
    }
    d->ops->scratch_free(s);
    ms_batch_free(&b);
    ms_data_close(d);
}

/* ---- resampling against the reference libraries ---------------------------------------------- */

Test(taskonomy, pil_bilinear_and_nearest_match_pillow) {
    /* Pillow 11: Image.fromarray(src).resize((R, R), Image.BILINEAR) of a 7x5 grey image */
    static const uint8_t src[35] = {0,   37,  74,  111, 148, 185, 222, 91,  139, 187, 235, 27,
                                    75,  123, 182, 241, 44,  103, 162, 221, 24,  17,  87,  157,
                                    227, 41,  224, 38,  108, 189, 14,  95,  33,  114, 195};
    static const uint8_t r4[16] = {43,  106, 133, 177, 151, 153, 121, 105,
                                   115, 137, 141, 117, 117, 95,  83,  144};
    static const uint8_t r9[81] = {
        0,   25,  53,  82,  111, 140, 169, 197, 222, 30,  58,  89,  121, 152, 118, 131, 162,
        189, 81,  112, 148, 185, 221, 80,  67,  103, 134, 131, 167, 157, 135, 176, 107, 117,
        119, 79,  182, 221, 153, 57,  103, 149, 195, 155, 24,  90,  134, 134, 121, 172, 112,
        166, 159, 32,  27,  75,  117, 157, 212, 78,  136, 160, 55,  78,  129, 113, 79,  139,
        59,  100, 148, 143, 108, 162, 111, 32,  95,  47,  78,  141, 195};
    uint8_t out[81];
    ms_buf ws = {0};
    ms_resize_bilinear_crop_u8(src, 7, 5, 1, 4, 0, 0, 4, 0, out, &ws);
    for (int i = 0; i < 16; i++)
        cr_assert_eq(out[i], r4[i], "R=4 [%d]: %d vs %d", i, out[i], r4[i]);
    ms_resize_bilinear_crop_u8(src, 7, 5, 1, 9, 0, 0, 9, 0, out, &ws);
    for (int i = 0; i < 81; i++) cr_assert_eq(out[i], r9[i], "R=9 [%d]", i);
    /* a window and a flip are the same pixels */
    uint8_t win[16];
    ms_resize_bilinear_crop_u8(src, 7, 5, 1, 9, 3, 2, 4, 1, win, &ws);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++)
            cr_assert_eq(win[y * 4 + x], r9[(y + 2) * 9 + 3 + (3 - x)]);
    ms_buf_free(&ws);
    /* Pillow's NEAREST steps by repeated addition: 64 -> 72 puts output 49 on source 43 */
    static const int32_t near[72] = {0,  1,  2,  3,  4,  4,  5,  6,  7,  8,  9,  10, 11, 12, 12,
                                     13, 14, 15, 16, 17, 18, 19, 20, 20, 21, 22, 23, 24, 25, 26,
                                     27, 28, 28, 29, 30, 31, 32, 33, 34, 35, 36, 36, 37, 38, 39,
                                     40, 41, 42, 43, 43, 44, 45, 46, 47, 48, 49, 50, 51, 51, 52,
                                     53, 54, 55, 56, 57, 58, 59, 59, 60, 61, 62, 63};
    int32_t idx[72];
    ms_nearest_axis(64, 72, 0, 72, 0, idx);
    for (int i = 0; i < 72; i++) cr_assert_eq(idx[i], near[i], "nearest [%d]", i);
}

Test(taskonomy, gaussian_blur_matches_scipy) {
    /* scipy.ndimage.gaussian_filter(g, sigma) of a 9x7 float32 image */
    float g[63];
    for (int y = 0; y < 7; y++)
        for (int x = 0; x < 9; x++) g[y * 9 + x] = (float)((x * 13 + y * 7) % 10);
    static const double s15[63] = {
        3.21822, 3.63634, 4.31764, 4.90644, 5.14713, 5.09386, 4.85039, 4.47624, 4.17175, 3.47471,
        3.71362, 4.16875, 4.66642, 4.99244, 5.08033, 4.95737, 4.69681, 4.47638, 3.78228, 3.82898,
        4.00044, 4.31967, 4.68891, 4.96069, 5.04086, 4.95831, 4.8523,  4.06579, 3.99946, 3.95629,
        4.05103, 4.32319, 4.67938, 4.96129, 5.08824, 5.10959, 4.32874, 4.2239,  4.06392, 3.96372,
        4.0403,  4.31369, 4.69272, 5.03707, 5.23333, 4.46218, 4.39861, 4.22595, 4.01604, 3.91438,
        4.0091,  4.34185, 4.83963, 5.22749, 4.45247, 4.46241, 4.33157, 4.08772, 3.89365, 3.85191,
        4.09096, 4.64039, 5.14477};
    static const double s40[9] = {4.22565, 4.25347, 4.30491, 4.37251, 4.44697,
                                  4.51887, 4.57998, 4.62405, 4.64706};
    float a[63], b[63];
    memcpy(a, g, sizeof g);
    memcpy(b, g, sizeof g);
    ms_buf ws = {0};
    ms_gaussian_blur(a, 9, 7, 1.5, &ws);
    ms_gaussian_blur(b, 9, 7, 4.0, &ws);
    ms_buf_free(&ws);
    for (int i = 0; i < 63; i++) cr_assert_float_eq(a[i], s15[i], 2e-5, "sigma 1.5 [%d]", i);
    for (int i = 0; i < 9; i++) cr_assert_float_eq(b[i], s40[i], 2e-5, "sigma 4 [%d]", i);
}

/* ---- synthetic scenes read back -------------------------------------------------------------- */

Test(taskonomy, synthetic_scenes_read_back_within_quantisation) {
    ms_synth_opts o;
    ms_synth_defaults(&o, MS_SYNTH_TASKONOMY);
    char out[256];
    snprintf(out, sizeof out, "%s/synth", g_root);
    o.out = out, o.count = 10, o.size = 32, o.buildings = 2, o.seed = 11, o.threads = 1;
    o.split[0] = 1.0, o.split[1] = 0.0, o.split[2] = 0.0;
    char msg[1024];
    cr_assert_eq(ms_synth_write(&o, msg, sizeof msg), 0, "%s", msg);
    ms_config *cfg = load_cfg_root(out, "[depth_euclidean, normal, reshading, edge_texture, "
                                        "segment_semantic, class_object]",
                                   32, 32, NULL);
    ms_data *d = open_split(cfg, "train");
    cr_assert_eq(d->n, 10);
    ms_batch b;
    ms_batch_alloc(&b, cfg, 1, 32, 32);
    void *s = d->ops->scratch_new(d);
    ms_synth_scene *sc = ms_synth_scene_new(32);
    const int P = 32 * 32;
    for (int j = 0; j < o.count; j++) {
        int bi, p, v;
        char bname[16], name[64];
        ms_synth_location(&o, j, &bi, &p, &v);
        ms_synth_building_name(bi, bname);
        snprintf(name, sizeof name, "%s/point_%d_view_%d", bname, p, v);
        ms_io_err err;
        cr_assert_eq(d->ops->read(d, find_sample(d, name), 0, 1, 0, s, &b, 0, &err), 0, "%s",
                     err.msg);
        cr_assert_eq(ms_synth_render(&o, j, sc), 0);
        for (int i = 0; i < P; i++) {
            for (int c = 0; c < 3; c++)
                cr_assert(fabs(b.images[c * P + i] - (sc->rgb[i * 3 + c] * 2 - 1)) <=
                              1.0 / 255 + 1e-5,
                          "rgb");
            const ms_target *dep = &b.target[0], *nor = &b.target[1], *res = &b.target[2];
            cr_assert_eq(dep->valid[i], sc->valid[i], "depth valid at %d", i);
            cr_assert_eq(nor->valid[i], sc->valid[i], "normal valid at %d", i);
            cr_assert_eq(b.target[4].labels[i], sc->segment_semantic[i], "segment_semantic");
            double tex = fmin(sc->edge_texture[i], 1.0) * 0.08 * 65536;
            double got = (b.target[3].dense[i] + 1) / 2 * 0.08 * 65536;
            cr_assert(fabs(got - tex) <= 0.5 + 1e-2, "edge_texture %g vs %g", got, tex);
            if (!sc->valid[i]) continue;
            double metres = (exp(dep->dense[i] * log(65536.0)) - 1) / 512;
            cr_assert(fabs(metres - sc->depth_euclidean[i]) <= 0.5 / 512 + 1e-4,
                      "depth %g vs %g m", metres, sc->depth_euclidean[i]);
            for (int c = 0; c < 3; c++) {
                cr_assert(fabs(nor->dense[c * P + i] - sc->normal[i * 3 + c]) <= 1.0 / 255 + 1e-5,
                          "normal");
                cr_assert(fabs(res->dense[c * P + i] - sc->reshading[i]) <= 0.5 / 255 + 1e-5,
                          "reshading");
            }
        }
        double mx = -1e30, sum = 0;
        for (int k = 0; k < 1000; k++) mx = fmax(mx, sc->class_object[k]);
        for (int k = 0; k < 1000; k++) sum += exp(sc->class_object[k] - mx);
        for (int k = 0; k < 1000; k++)
            cr_assert_float_eq(b.target[5].vector[k], exp(sc->class_object[k] - mx) / sum, 1e-6);
    }
    ms_synth_scene_free(sc);
    d->ops->scratch_free(s);
    ms_batch_free(&b);
    ms_data_close(d);
}
