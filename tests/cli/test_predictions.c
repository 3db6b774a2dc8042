/* Saved predictions (cli/predictions.c): for every task of both datasets, the file written for
 * a known prediction, read back by the dataset's own loader, equals the prediction within the
 * file's quantisation; `modsquad eval --save-predictions` writes one file of the evaluated size
 * per task and sample, whose labels, class vectors and depths give the eval's metrics again;
 * the writers of several ranks share one directory; a directory that cannot be written is an
 * error naming it. */
#define _GNU_SOURCE /* nftw */
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../cli/predictions.h"
#include "../../cli/run.h"
#include "../../data/augment.h"
#include "../../data/npy.h"
#include "../../data/taskonomy.h"
#include "../../data/matfile.h"
#include "../../data/pascal_context.h"
#include "../testutil.h"

static char g_dir[64];

static void setup(void) { tu_tmpdir_make(g_dir, sizeof g_dir, "pred"); }
static void teardown(void) { tu_tmpdir_remove(g_dir); }

TestSuite(predictions, .init = setup, .fini = teardown);

static const char *bin(void) {
    const char *b = getenv("MODSQUAD_BIN");
    return b ? b : "./modsquad";
}

static ms_config *load_cfg(const char *dataset, const char *root, const char *tasks, int size,
                           int resize) {
    static ms_config cfg;
    char text[2048];
    snprintf(text, sizeof text,
             "run:\n  dir: %s/runs\n  name: t\n"
             "data:\n  dataset: %s\n  root: %s\n  tasks: %s\n  image_size: %d\n  resize: %d\n"
             "  workers: 0\n  index_cache: false\nmodel:\n  patch: 8\n",
             g_dir, dataset, root, tasks, size, resize);
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    int n = ms_config_load_text(&cfg, "test.yaml", text, strlen(text), 0, NULL, &errs);
    if (n) ms_config_errors_print(&errs, stderr);
    cr_assert_eq(n, 0, "config errors");
    ms_config_errors_free(&errs);
    return &cfg;
}

static ms_data *open_split(const ms_config *cfg, int report_only) {
    ms_data *d;
    ms_io_err err;
    ms_data_open_opts o = {.report_only = report_only};
    cr_assert_eq(ms_data_open(&d, cfg, "val", &o, &err), 0, "open: %s", err.msg);
    return d;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    cr_assert(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static void write_rgb(const char *path, int S, int jpeg) {
    uint8_t *px = tu_bytes((size_t)S * S * 3);
    for (int p = 0; p < S * S * 3; p++) px[p] = (uint8_t)(p * 7);
    ms_image im = {.width = S, .height = S, .channels = 3, .depth = 8, .data = px};
    ms_io_err err;
    int rc = jpeg ? ms_jpeg_write(path, &im, 90, MS_IO_NOSYNC, &err)
                  : ms_png_write(path, &im, NULL, 0, MS_IO_NOSYNC, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
}

/* Hands preds[t] ([B, C, S, S] or [B, C]) of every task to a writer into dir, as eval does. */
static void save(const char *dir, const ms_config *cfg, const ms_data *d, float *const *preds,
                 int B, int S) {
    ms_pred_writer *w = ms_pred_writer_open(dir, cfg, d, 1);
    cr_assert_not_null(w);
    ms_batch b;
    ms_batch_alloc(&b, cfg, B, S, S);
    for (int i = 0; i < B; i++) b.sample[i] = i;
    ms_pred_sink sink = ms_pred_writer_sink(w);
    for (int t = 0; t < cfg->data.tasks.n; t++)
        cr_assert_eq(sink.fn(sink.ctx, t, preds[t], &b, B), 0, "task %d", t);
    cr_assert_eq(ms_pred_writer_files(w), (int64_t)B * cfg->data.tasks.n);
    ms_pred_writer_close(w);
    ms_batch_free(&b);
}

/* Reads samples 0..B-1 of d with the evaluation geometry. */
static void read_back(ms_data *d, const ms_config *cfg, int B, int S, ms_batch *b) {
    ms_batch_alloc(b, cfg, B, S, S);
    void *scratch = d->ops->scratch_new(d);
    ms_io_err err;
    for (int i = 0; i < B; i++)
        cr_assert_eq(d->ops->read(d, i, 0, 1, 0, scratch, b, i, &err), 0, "read back: %s", err.msg);
    d->ops->scratch_free(scratch);
}

static double clampd(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

static int first_argmax(const float *x, int C, size_t stride) {
    int best = 0;
    for (int c = 1; c < C; c++)
        if (x[c * stride] > x[best * stride]) best = c;
    return best;
}

/* The Euclidean projection of x [C] onto the probability simplex, by bisection on the shift
 * (an algorithm independent of the writer's sort). */
static void simplex_projection(const float *x, int C, double *q) {
    double lo = -1e9, hi = 1e9;
    for (int it = 0; it < 200; it++) {
        double tau = 0.5 * (lo + hi), sum = 0.0;
        for (int c = 0; c < C; c++) sum += fmax(x[c] - tau, 0.0);
        if (sum > 1.0) lo = tau;
        else hi = tau;
    }
    for (int c = 0; c < C; c++) q[c] = fmax(x[c] - 0.5 * (lo + hi), 0.0);
}

/* ---- round trips through the loaders ------------------------------------------------------- */

#define TX_ALL                                                                                     \
    "[depth_euclidean, depth_zbuffer, normal, principal_curvature, reshading, edge_texture, "     \
    "edge_occlusion, keypoints2d, keypoints3d, segment_unsup2d, segment_unsup25d, "              \
    "segment_semantic, class_object, class_scene]"

/* Checks |got[k] - want[k]| <= tol for every k < n, naming the task and the value. */
static void expect_near(const char *task, const float *got, const double *want, size_t n,
                        double tol) {
    for (size_t k = 0; k < n; k++)
        cr_assert(fabs(got[k] - want[k]) <= tol, "%s: value %zu reads back as %.7g, expected %.7g (+- %.3g)",
                  task, k, got[k], want[k], tol);
}

Test(predictions, taskonomy_files_read_back_as_the_predictions, .timeout = 60) {
    enum { S = 16, B = 2 };
    const size_t P = S * S;
    char root[256], p[512];
    snprintf(root, sizeof root, "%s/tx", g_dir);
    snprintf(p, sizeof p, "%s/rgb/allensville", root);
    cr_assert_eq(ms_cli_make_dirs(p), 0);
    for (int v = 0; v < B; v++) {
        snprintf(p, sizeof p, "%s/rgb/allensville/point_0_view_%d_domain_rgb.png", root, v);
        write_rgb(p, S, 0);
    }
    snprintf(p, sizeof p, "%s/splits.csv", root);
    write_text(p, "id,train,val,test\nallensville,0,1,0\n");
    ms_config *cfg = load_cfg("taskonomy", root, TX_ALL, S, S);
    const int T = cfg->data.tasks.n;

    /* Predictions beyond the files' ranges too, so that clamping is exercised. */
    tu_rng r = tu_seed(11);
    float *pred[MS_MAX_TASKS];
    const ms_task_def *def[MS_MAX_TASKS];
    for (int t = 0; t < T; t++) {
        def[t] = ms_task_find(MS_DATASET_TASKONOMY, cfg->data.tasks.name[t]);
        size_t n = def[t]->classification ? (size_t)B * def[t]->channels
                                          : (size_t)B * def[t]->channels * P;
        pred[t] = tu_floats(n);
        const char *name = def[t]->name;
        if (!strncmp(name, "depth_", 6)) tu_fill(&r, pred[t], n, -0.05, 1.05);
        else if (!strcmp(name, "principal_curvature")) tu_fill(&r, pred[t], n, -4.5, 4.5);
        else if (!strcmp(name, "reshading")) tu_fill(&r, pred[t], n, -0.1, 1.1);
        else if (!strcmp(name, "edge_occlusion")) tu_fill(&r, pred[t], n, -1.1, 3.0);
        else tu_fill(&r, pred[t], n, -1.2, 1.2);
    }
    /* Pixels whose plain rounding would be the files' invalid markers: normal (128,128,128) at
       pixel 5, principal curvature (0, 0) at pixel 7 of image 0. */
    int t_normal = 2, t_curv = 3, t_obj = 12;
    for (int c = 0; c < 3; c++) pred[t_normal][c * P + 5] = 128.0f / 127.5f - 1.0f;
    pred[t_curv][7] = (float)(-ms_tx_curv_mean[0] / ms_tx_curv_std[0]);
    pred[t_curv][P + 7] = (float)(-ms_tx_curv_mean[1] / ms_tx_curv_std[1]);
    /* class_object: image 0 a probability vector (softmax), image 1 arbitrary outputs */
    {
        float *x = pred[t_obj];
        double sum = 0.0;
        for (int c = 0; c < 1000; c++) sum += exp(x[c] * 3.0);
        for (int c = 0; c < 1000; c++) x[c] = (float)(exp(x[c] * 3.0) / sum);
    }

    ms_data *d = open_split(cfg, 1);
    cr_assert_eq(d->n, B);
    save(root, cfg, d, pred, B, S);
    ms_data_close(d);

    d = open_split(cfg, 0); /* every task file is there now */
    ms_batch b;
    read_back(d, cfg, B, S, &b);
    double *want = tu_doubles(1000 + 3 * P); /* [3, P] maps or [C] class vectors */
    ms_buf blur = {0};
    for (int t = 0; t < T; t++) {
        const char *name = def[t]->name;
        const ms_target *g = &b.target[t];
        const int C = def[t]->channels;
        for (int i = 0; i < B; i++) {
            const float *x = pred[t] + (size_t)i * C * (def[t]->classification ? 1 : P);
            const float *got = g->dense ? g->dense + (size_t)i * C * P : NULL;
            if (g->valid && def[t]->target == MS_TARGET_DENSE)
                for (size_t q = 0; q < P; q++)
                    cr_assert(g->valid[i * P + q], "%s: pixel %zu of image %d reads back invalid", name, q, i);
            if (!strncmp(name, "depth_", 6)) {
                /* compared in file units (1/512 m): the rounding moves d by at most 1/2 */
                for (size_t q = 0; q < P; q++) {
                    double dx = clampd(expm1(x[q] * MS_TX_LN_2_16), 0, (MS_TX_DEPTH_INVALID - 1));
                    double dr = expm1((double)got[q] * MS_TX_LN_2_16);
                    cr_assert(fabs(dr - dx) <= 0.5 + 1e-6 * dx, "%s: pixel %zu: %.3f for %.3f", name, q, dr, dx);
                }
            } else if (!strcmp(name, "normal") || !strncmp(name, "segment_unsup", 13)) {
                for (size_t k = 0; k < (size_t)C * P; k++) want[k] = clampd(x[k], -1, 1);
                if (C == 3 && i == 0) { /* the moved marker pixel: one step, and valid */
                    for (int c = 0; c < 3; c++)
                        cr_assert(fabs(got[c * P + 5] - want[c * P + 5]) <= 2.0 / 255 + 1e-6);
                    for (int c = 0; c < 3; c++) want[c * P + 5] = got[c * P + 5];
                }
                expect_near(name, got, want, (size_t)C * P, 1.0 / 255 + 1e-6);
            } else if (!strcmp(name, "principal_curvature")) {
                for (int c = 0; c < 2; c++)
                    for (size_t q = 0; q < P; q++)
                        want[c * P + q] = clampd(x[c * P + q], -ms_tx_curv_mean[c] / ms_tx_curv_std[c],
                                                 (255 - ms_tx_curv_mean[c]) / ms_tx_curv_std[c]);
                if (i == 0) { /* (0, 0) became (0, 1) */
                    cr_assert(fabs(got[P + 7] - want[P + 7] - 1 / ms_tx_curv_std[1]) < 1e-5);
                    want[P + 7] = got[P + 7];
                }
                for (int c = 0; c < 2; c++)
                    expect_near(name, got + c * P, want + c * P, P, 0.5 / ms_tx_curv_std[c] + 1e-6);
            } else if (!strcmp(name, "reshading")) {
                for (size_t k = 0; k < 3 * P; k++) want[k] = clampd(x[k], 0, 1);
                expect_near(name, got, want, 3 * P, 0.5 / 255 + 1e-6);
            } else if (!strcmp(name, "edge_texture") || !strcmp(name, "keypoints2d")) {
                double top = !strcmp(name, "edge_texture") ? 0.08 * 65536 : 0.005 * 65536;
                for (size_t q = 0; q < P; q++) want[q] = clampd(x[q], -1, 1);
                expect_near(name, got, want, P, 1.0 / top + 1e-6);
            } else if (!strcmp(name, "keypoints3d")) {
                for (size_t q = 0; q < P; q++) want[q] = clampd(x[q], -1, 65535.0 / 65536 * 2 - 1);
                expect_near(name, got, want, P, 1.0 / 65536 + 1e-6);
            } else if (!strcmp(name, "edge_occlusion")) {
                /* the loader blurs what it reads: compare with the blurred prediction */
                const double top = 0.00625 * 65536;
                float *blurred = tu_floats(P);
                for (size_t q = 0; q < P; q++) blurred[q] = (float)clampd(x[q], -1, 65535 / top * 2 - 1);
                ms_gaussian_blur(blurred, S, S, 4.0, &blur);
                for (size_t q = 0; q < P; q++) want[q] = blurred[q];
                expect_near(name, got, want, P, 1.0 / top + 1e-5);
            } else if (!strcmp(name, "segment_semantic")) {
                for (size_t q = 0; q < P; q++)
                    cr_assert_eq(g->labels[i * P + q], first_argmax(x + q, C, P), "%s pixel %zu", name, q);
            } else {
                MS_ASSERT(def[t]->classification);
                const float *v = g->vector + (size_t)i * C;
                simplex_projection(x, C, want);
                if (t == t_obj && i == 0) /* a probability vector is its own projection */
                    for (int c = 0; c < C; c++) cr_assert(fabs(want[c] - x[c]) < 1e-6);
                double sum = 0.0;
                for (int c = 0; c < C; c++) sum += v[c];
                cr_assert(fabs(sum - 1.0) < 1e-5, "%s: the soft target sums to %g", name, sum);
                cr_assert_eq(first_argmax(v, C, 1), first_argmax(x, C, 1), "%s: argmax changed", name);
                expect_near(name, v, want, (size_t)C, 2e-6);
            }
        }
    }
    ms_buf_free(&blur);
    ms_batch_free(&b);
    ms_data_close(d);
}

Test(predictions, pascal_files_read_back_as_the_predictions, .timeout = 60) {
    enum { S = 16, B = 2 };
    const size_t P = S * S;
    static const char *ids[B] = {"2008_000001", "2008_000002"};
    char root[128], saved[128], p[512];
    snprintf(root, sizeof root, "%s/pascal", g_dir);
    snprintf(saved, sizeof saved, "%s/saved", g_dir);
    const char *dirs[] = {"JPEGImages", "ImageSets/Context", "pascal-context/trainval"};
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/%s", root, dirs[k]);
        cr_assert_eq(ms_cli_make_dirs(p), 0);
    }
    /* every pixel in a class whose normals are supervised */
    int32_t cls = 1;
    while (!ms_pascal_normals_valid(cls)) cls++;
    int32_t *labelmap = tu_ints(P);
    for (size_t q = 0; q < P; q++) labelmap[q] = cls;
    ms_io_err err;
    for (int i = 0; i < B; i++) {
        snprintf(p, sizeof p, "%s/JPEGImages/%s.jpg", root, ids[i]);
        write_rgb(p, S, 1);
        snprintf(p, sizeof p, "%s/pascal-context/trainval/%s.mat", root, ids[i]);
        cr_assert_eq(ms_mat_write_labelmap(p, labelmap, S, S, MS_MAT_V5, MS_IO_NOSYNC, &err), 0, "%s", err.msg);
    }
    snprintf(p, sizeof p, "%s/ImageSets/Context/val.txt", root);
    write_text(p, "2008_000001\n2008_000002\n");

    ms_config *cfg = load_cfg("pascal_context", root, "[semseg, human_parts, sal, normals, edge]", S, S);
    tu_rng r = tu_seed(12);
    float *pred[5];
    for (int t = 0; t < 5; t++) {
        const ms_task_def *def = ms_task_find(MS_DATASET_PASCAL_CONTEXT, cfg->data.tasks.name[t]);
        pred[t] = tu_floats((size_t)B * def->channels * P);
        tu_fill_normal(&r, pred[t], (size_t)B * def->channels * P, 2.0);
    }
    ms_data *d = open_split(cfg, 1);
    cr_assert_eq(d->n, B);
    save(saved, cfg, d, pred, B, S);
    ms_data_close(d);

    /* The saved folders where the dataset keeps those maps. */
    const char *links[][2] = {{"semseg/pascal-context", "semseg"}, {"sal_distill", "sal"}, {"normals_distill", "normals"}};
    snprintf(p, sizeof p, "%s/semseg", root);
    cr_assert_eq(mkdir(p, 0775), 0);
    for (int k = 0; k < 3; k++) {
        char target[512];
        snprintf(p, sizeof p, "%s/%s", root, links[k][0]);
        snprintf(target, sizeof target, "%s/%s", saved, links[k][1]);
        cr_assert_eq(symlink(target, p), 0, "symlink %s", p);
    }
    ms_config *back = load_cfg("pascal_context", root, "[semseg, sal, normals]", S, S);
    d = open_split(back, 0);
    ms_batch b;
    read_back(d, back, B, S, &b);
    for (int i = 0; i < B; i++) {
        for (size_t q = 0; q < P; q++) {
            cr_assert_eq(b.target[0].labels[i * P + q], first_argmax(pred[0] + i * 21 * P + q, 21, P));
            float s = pred[2][i * P + q];
            if (fabsf(s) > 1e-3f) cr_assert_eq(b.target[1].binary[i * P + q], s > 0, "sal pixel %zu", q);
            const float *x = pred[3] + i * 3 * P + q, *n = b.target[2].dense + i * 3 * P + q;
            double dot = 0, len = 0;
            for (int c = 0; c < 3; c++) dot += x[c * P] * n[c * P], len += x[c * P] * x[c * P];
            double angle = acos(clampd(dot / sqrt(len), -1, 1)) * 180 / M_PI;
            cr_assert(angle < 1.0, "normals pixel %zu: %.2f degrees off", q, angle);
            cr_assert(b.target[2].valid[i * P + q]);
        }
    }
    ms_batch_free(&b);
    ms_data_close(d);

    /* human_parts and edge have no label file of this kind in the dataset: read the PNGs */
    ms_image im;
    ms_image_init(&im);
    ms_img_want want = {.mode = MS_IMG_LABEL, .channels = 1, .depth = 8, .width = S, .height = S};
    for (int i = 0; i < B; i++) {
        snprintf(p, sizeof p, "%s/human_parts/%s.png", saved, ids[i]);
        cr_assert_eq(ms_png_read(p, &want, &im, &err), 0, "%s", err.msg);
        for (size_t q = 0; q < P; q++)
            cr_assert_eq(ms_image_u8(&im)[q], first_argmax(pred[1] + i * 7 * P + q, 7, P));
        snprintf(p, sizeof p, "%s/edge/%s.png", saved, ids[i]);
        cr_assert_eq(ms_png_read(p, &want, &im, &err), 0, "%s", err.msg);
        for (size_t q = 0; q < P; q++) {
            double prob = 1 / (1 + exp(-(double)pred[4][i * P + q]));
            cr_assert(fabs(ms_image_u8(&im)[q] / 255.0 - prob) <= 0.5 / 255 + 1e-9, "edge pixel %zu", q);
        }
    }
    ms_image_free(&im);
}

/* ---- modsquad eval --save-predictions -------------------------------------------------------- */

#define TINY                                                                                    \
    "--set model.patch=8 --set model.dim=32 --set model.depth=2 --set model.heads=2 "             \
    "--set model.attn_experts=4 --set model.attn_topk=2 --set model.mlp_experts=4 "               \
    "--set model.mlp_topk=2 --set eval.batch_size=4 --set eval.max_images=0 "                    \
    "--set run.progress=off --set data.image_size=32 "

/* The writers of several ranks (modsquad eval under mpirun) share one directory: each writes
 * its own samples, README.txt comes from one of them, and together they write exactly the files
 * one writer of every sample writes. */
Test(predictions, writers_of_several_ranks_share_a_directory, .timeout = 60) {
    enum { S = 16, N = 4 };
    const size_t P = S * S;
    char root[256], p[512], cmd[1024];
    snprintf(root, sizeof root, "%s/tx", g_dir);
    snprintf(p, sizeof p, "%s/rgb/allensville", root);
    cr_assert_eq(ms_cli_make_dirs(p), 0);
    for (int v = 0; v < N; v++) {
        snprintf(p, sizeof p, "%s/rgb/allensville/point_0_view_%d_domain_rgb.png", root, v);
        write_rgb(p, S, 0);
    }
    snprintf(p, sizeof p, "%s/splits.csv", root);
    write_text(p, "id,train,val,test\nallensville,0,1,0\n");
    ms_config *cfg = load_cfg("taskonomy", root, "[depth_euclidean, segment_semantic, class_object]", S, S);
    const int T = cfg->data.tasks.n;
    tu_rng r = tu_seed(5);
    float *pred[MS_MAX_TASKS]; /* [N, C, P] or [N, C] */
    size_t per[MS_MAX_TASKS];  /* floats per image */
    for (int t = 0; t < T; t++) {
        const ms_task_def *def = ms_task_find(MS_DATASET_TASKONOMY, cfg->data.tasks.name[t]);
        per[t] = def->classification ? (size_t)def->channels : (size_t)def->channels * P;
        pred[t] = tu_floats(N * per[t]);
        tu_fill(&r, pred[t], N * per[t], -1.0, 1.0);
    }
    ms_data *d = open_split(cfg, 1);
    cr_assert_eq(d->n, N);
    char one[256], shared[256];
    snprintf(one, sizeof one, "%s/one", g_dir);
    snprintf(shared, sizeof shared, "%s/shared", g_dir);
    save(one, cfg, d, pred, N, S);
    /* Two "ranks" of two samples each, their calls interleaved; the second writes no README. */
    ms_pred_writer *w[2] = {ms_pred_writer_open(shared, cfg, d, 1), ms_pred_writer_open(shared, cfg, d, 0)};
    cr_assert(w[0] && w[1]);
    ms_batch b;
    ms_batch_alloc(&b, cfg, 2, S, S);
    for (int t = 0; t < T; t++)
        for (int k = 0; k < 2; k++) {
            b.sample[0] = 2 * k, b.sample[1] = 2 * k + 1;
            ms_pred_sink sink = ms_pred_writer_sink(w[k]);
            cr_assert_eq(sink.fn(sink.ctx, t, pred[t] + 2 * k * per[t], &b, 2), 0);
        }
    cr_assert_eq(ms_pred_writer_files(w[0]) + ms_pred_writer_files(w[1]), (int64_t)N * T);
    ms_pred_writer_close(w[0]);
    ms_pred_writer_close(w[1]);
    snprintf(cmd, sizeof cmd, "diff -r %s %s >%s/diff.out 2>&1", one, shared, g_dir);
    cr_assert_eq(system(cmd), 0, "the two writers wrote other files than one: see %s/diff.out", g_dir);
    /* A writer without the README leaves none. */
    char bare[256];
    snprintf(bare, sizeof bare, "%s/bare", g_dir);
    ms_pred_writer *wb = ms_pred_writer_open(bare, cfg, d, 0);
    cr_assert_not_null(wb);
    ms_pred_writer_close(wb);
    snprintf(p, sizeof p, "%s/README.txt", bare);
    cr_assert_neq(access(p, F_OK), 0, "%s was written", p);
    ms_batch_free(&b);
    ms_data_close(d);
}

static int g_counted;
static int count_file(const char *path, const struct stat *st, int flag, struct FTW *f) {
    (void)path, (void)st, (void)f;
    g_counted += flag == FTW_F;
    return 0;
}

static int files_under(const char *dir) {
    g_counted = 0;
    cr_assert_eq(nftw(dir, count_file, 16, FTW_PHYS), 0, "cannot walk %s", dir);
    return g_counted;
}

static double metric_of(const ms_metrics_file *f, const char *task, const char *name) {
    const ms_metric_result *res = ms_metrics_file_task(f, task);
    cr_assert_not_null(res, "no %s in the metrics", task);
    const double *v = ms_metric_find(res, name);
    cr_assert_not_null(v, "no %s.%s in the metrics", task, name);
    return *v;
}

/* Runs eval of the initial model of `sets` on data with --save-predictions DIR/pred. */
static void eval_saving(const char *data, const char *sets, const char *tasks) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s eval --config configs/demo.yaml " TINY "%s --set data.root=%s --set run.dir=%s "
             "--set 'data.tasks=%s' --save-predictions %s/pred --out %s/m.json >%s/eval.out 2>&1",
             bin(), sets, data, g_dir, tasks, g_dir, g_dir, g_dir);
    cr_assert_eq(system(cmd), 0, "eval failed: see %s/eval.out", g_dir);
}

Test(predictions, eval_saves_every_sample_and_its_metrics_hold, .timeout = 120) {
    enum { S = 32 };
    const size_t P = S * S;
    char data[256], cmd[1024], p[1024], name[256];
    snprintf(data, sizeof data, "%s/data", g_dir);
    snprintf(cmd, sizeof cmd,
             "%s synth --out %s --layout taskonomy --count 12 --size 36 --buildings 4 "
             "--splits 2,2,0 --seed 3 -q >/dev/null 2>&1",
             bin(), data);
    cr_assert_eq(system(cmd), 0, "synth failed: %s", cmd);
    const char *tasks = "[depth_euclidean, normal, segment_semantic, class_object]";
    eval_saving(data, "--set data.resize=36", tasks);

    ms_metrics_file mf;
    char err[512];
    snprintf(p, sizeof p, "%s/m.json", g_dir);
    cr_assert_eq(ms_metrics_json_read(p, &mf, err, sizeof err), 0, "%s", err);

    /* The targets as eval saw them (resize 36, centre crop 32), from the loader itself. */
    char brackets[128];
    snprintf(brackets, sizeof brackets, "%s", tasks);
    ms_config *cfg = load_cfg("taskonomy", data, brackets, S, 36);
    ms_data *d = open_split(cfg, 0);
    const int n = (int)d->n;
    cr_assert_eq(n, 6);
    ms_batch b;
    read_back(d, cfg, n, S, &b);
    for (int t = 0; t < 4; t++) {
        snprintf(p, sizeof p, "%s/pred/%s", g_dir, cfg->data.tasks.name[t]);
        cr_assert_eq(files_under(p), n, "%s: one file per evaluated sample", p);
    }
    /* README.txt names the encoding of every task */
    snprintf(p, sizeof p, "%s/pred/README.txt", g_dir);
    FILE *f = fopen(p, "r");
    cr_assert_not_null(f, "no %s", p);
    char readme[8192] = {0};
    readme[fread(readme, 1, sizeof readme - 1, f)] = 0;
    fclose(f);
    for (int t = 0; t < 4; t++)
        cr_assert(strstr(readme, cfg->data.tasks.name[t]), "README.txt does not describe %s",
                  cfg->data.tasks.name[t]);

    /* pred[t]: the saved files as predictions: depth target values, one-hot labels, logits */
    float *depth = tu_floats(n * P), *onehot = tu_floats((size_t)n * 18 * P), *cls = tu_floats(n * 1000);
    ms_image im;
    ms_image_init(&im);
    ms_npy npy;
    ms_npy_init(&npy);
    ms_io_err ierr;
    for (int i = 0; i < n; i++) {
        d->ops->sample_name(d, i, name, sizeof name);
        snprintf(p, sizeof p, "%s/pred/depth_euclidean/%s_domain_depth_euclidean.png", g_dir, name);
        ms_img_want w16 = {.mode = MS_IMG_LABEL, .channels = 1, .depth = 16, .width = S, .height = S};
        cr_assert_eq(ms_png_read(p, &w16, &im, &ierr), 0, "%s", ierr.msg);
        for (size_t q = 0; q < P; q++) depth[i * P + q] = (float)(log1p(ms_image_u16(&im)[q]) / MS_TX_LN_2_16);
        snprintf(p, sizeof p, "%s/pred/normal/%s_domain_normal.png", g_dir, name);
        ms_img_want w3 = {.mode = MS_IMG_LABEL, .channels = 3, .depth = 8, .width = S, .height = S};
        cr_assert_eq(ms_png_read(p, &w3, &im, &ierr), 0, "%s", ierr.msg);
        snprintf(p, sizeof p, "%s/pred/segment_semantic/%s_domain_segmentsemantic.png", g_dir, name);
        ms_img_want w8 = {.mode = MS_IMG_LABEL, .channels = 1, .depth = 8, .width = S, .height = S};
        cr_assert_eq(ms_png_read(p, &w8, &im, &ierr), 0, "%s", ierr.msg);
        for (size_t q = 0; q < P; q++) {
            int v = ms_image_u8(&im)[q];
            cr_assert(v < 18, "label %d", v);
            onehot[(i * 18 + v) * P + q] = 1.0f;
        }
        snprintf(p, sizeof p, "%s/pred/class_object/%s_domain_class_object.npy", g_dir, name);
        cr_assert_eq(ms_npy_read(p, 1000, &npy, &ierr), 0, "%s", ierr.msg);
        memcpy(cls + i * 1000, npy.data, 1000 * sizeof(float));
    }
    ms_image_free(&im);
    ms_npy_free(&npy);

    /* Labels and class vectors give eval's mIoU and accuracy exactly; depth its RMSE within
       the files' 1/1024 m rounding. */
    const float *as_pred[3] = {depth, onehot, cls};
    const int task_of[3] = {0, 2, 3};
    const char *metric[3] = {"rmse", "miou", "accuracy"};
    const double tol[3] = {1.0 / 1024, 1e-12, 1e-12};
    for (int k = 0; k < 3; k++) {
        const ms_task_def *def = ms_task_find(MS_DATASET_TASKONOMY, cfg->data.tasks.name[task_of[k]]);
        ms_metric_acc *acc = ms_metric_acc_new(def, NULL);
        ms_metric_update(acc, as_pred[k], &b.target[task_of[k]], n, S, S);
        ms_metric_result res;
        ms_metric_result_get(acc, &res);
        double got = *ms_metric_find(&res, metric[k]);
        double want = metric_of(&mf, def->name, metric[k]);
        cr_assert(fabs(got - want) <= tol[k], "%s %s from the saved files %.17g, eval said %.17g",
                  def->name, metric[k], got, want);
        ms_metric_acc_free(acc);
    }
    ms_batch_free(&b);
    ms_data_close(d);
}

Test(predictions, eval_saves_pascal_label_maps, .timeout = 120) {
    enum { S = 32 };
    const size_t P = S * S;
    char data[256], cmd[1024], p[1024], name[256];
    snprintf(data, sizeof data, "%s/data", g_dir);
    snprintf(cmd, sizeof cmd,
             "%s synth --out %s --layout pascal --count 8 --size 40 --splits 4,4,0 --seed 3 -q "
             ">/dev/null 2>&1",
             bin(), data);
    cr_assert_eq(system(cmd), 0, "synth failed: %s", cmd);
    const char *tasks = "[semseg, human_parts, sal, normals, edge]";
    eval_saving(data, "--set data.dataset=pascal_context", tasks);
    ms_metrics_file mf;
    char err[512];
    snprintf(p, sizeof p, "%s/m.json", g_dir);
    cr_assert_eq(ms_metrics_json_read(p, &mf, err, sizeof err), 0, "%s", err);

    char brackets[128];
    snprintf(brackets, sizeof brackets, "%s", tasks);
    ms_config *cfg = load_cfg("pascal_context", data, brackets, S, S);
    ms_data *d = open_split(cfg, 0);
    const int n = (int)d->n;
    cr_assert_eq(n, 4);
    ms_batch b;
    read_back(d, cfg, n, S, &b);
    float *onehot = tu_floats((size_t)n * 21 * P);
    ms_image im;
    ms_image_init(&im);
    ms_io_err ierr;
    for (int t = 0; t < 5; t++) {
        snprintf(p, sizeof p, "%s/pred/%s", g_dir, cfg->data.tasks.name[t]);
        cr_assert_eq(files_under(p), n, "%s: one file per evaluated sample", p);
        for (int i = 0; i < n; i++) {
            d->ops->sample_name(d, i, name, sizeof name);
            snprintf(p, sizeof p, "%s/pred/%s/%s.png", g_dir, cfg->data.tasks.name[t], name);
            ms_img_want w = {.mode = MS_IMG_LABEL, .channels = t == 3 ? 3 : 1, .depth = 8,
                             .width = S, .height = S};
            cr_assert_eq(ms_png_read(p, &w, &im, &ierr), 0, "%s", ierr.msg);
            for (size_t q = 0; t == 0 && q < P; q++) {
                int v = ms_image_u8(&im)[q];
                cr_assert(v < 21, "label %d", v);
                onehot[(i * 21 + v) * P + q] = 1.0f;
            }
        }
    }
    ms_image_free(&im);
    const ms_task_def *def = ms_task_find(MS_DATASET_PASCAL_CONTEXT, "semseg");
    ms_metric_acc *acc = ms_metric_acc_new(def, NULL);
    ms_metric_update(acc, onehot, &b.target[0], n, S, S);
    ms_metric_result res;
    ms_metric_result_get(acc, &res);
    double got = *ms_metric_find(&res, "miou"), want = metric_of(&mf, "semseg", "miou");
    cr_assert(fabs(got - want) <= 1e-12, "semseg mIoU from the saved files %.17g, eval said %.17g", got, want);
    ms_metric_acc_free(acc);
    ms_batch_free(&b);
    ms_data_close(d);
}

/* Runs eval saving into `dir`; returns the exit status and leaves stderr in g_dir/err.out. */
static int eval_into(const char *data, const char *dir) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s eval --config configs/demo.yaml " TINY "--set data.resize=36 --set data.root=%s "
             "--set 'data.tasks=[depth_euclidean, segment_semantic]' --save-predictions %s "
             "--out %s/m.json >/dev/null 2>%s/err.out",
             bin(), data, dir, g_dir, g_dir);
    int st = system(cmd);
    cr_assert(WIFEXITED(st), "eval died of a signal");
    return WEXITSTATUS(st);
}

static void expect_stderr_names(const char *path) {
    char p[512], text[4096] = {0};
    snprintf(p, sizeof p, "%s/err.out", g_dir);
    FILE *f = fopen(p, "r");
    cr_assert_not_null(f);
    size_t len = fread(text, 1, sizeof text - 1, f);
    text[len] = 0;
    fclose(f);
    cr_assert(strstr(text, path), "the error does not name %s:\n%s", path, text);
}

Test(predictions, unwritable_directory_is_an_error_naming_it, .timeout = 60) {
    char data[128], cmd[1024], file[128], dir[256];
    snprintf(data, sizeof data, "%s/data", g_dir);
    snprintf(cmd, sizeof cmd,
             "%s synth --out %s --layout taskonomy --count 8 --size 36 --buildings 4 "
             "--splits 2,2,0 --seed 3 -q >/dev/null 2>&1",
             bin(), data);
    cr_assert_eq(system(cmd), 0, "synth failed: %s", cmd);
    /* A regular file where a directory should be: fails for root too (no permission games). */
    snprintf(file, sizeof file, "%s/a_file", g_dir);
    write_text(file, "x");
    snprintf(dir, sizeof dir, "%s/sub", file);
    cr_assert_eq(eval_into(data, dir), 1);
    expect_stderr_names(dir);
    cr_assert_eq(eval_into(data, file), 1);
    expect_stderr_names(file);
    /* A task folder that is a file: the failure comes mid-evaluation and names the folder. */
    snprintf(dir, sizeof dir, "%s/pred", g_dir);
    cr_assert_eq(ms_cli_make_dirs(dir), 0);
    snprintf(file, sizeof file, "%s/pred/segment_semantic", g_dir);
    write_text(file, "x");
    cr_assert_eq(eval_into(data, dir), 1);
    expect_stderr_names(file);
}
