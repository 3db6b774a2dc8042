/* Synthetic scenes: the same seed writes the same bytes (any thread count, any subset); the
 * labels of a scene agree with each other and with the geometry (unit normals facing the
 * camera, z-buffer depth = euclidean depth x cos, reshading = the light model, analytic
 * curvature per shape, the sky exactly where depth is missing); every file of both layouts
 * decodes through data/ codecs to the rendered values within quantisation; the split files have
 * the official shapes; and `modsquad synth` writes a dataset and rejects bad arguments. */
#define _GNU_SOURCE /* nftw */
#include <criterion/criterion.h>
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../data/image.h"
#include "../../data/matfile.h"
#include "../../data/npy.h"
#include "../../data/synth.h"

static char g_dir[64];

static void make_dir(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/ms_test_synth_XXXXXX");
    cr_assert(mkdtemp(g_dir) != NULL, "mkdtemp failed");
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void remove_dir(void) { nftw(g_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

TestSuite(synth, .init = make_dir, .fini = remove_dir, .timeout = 60);

static ms_synth_opts opts(ms_synth_layout layout, const char *sub, int count, int size,
                          uint64_t seed) {
    static char out[8][256];
    static int next;
    char *o = out[next++ % 8];
    snprintf(o, 256, "%s/%s", g_dir, sub);
    ms_synth_opts op;
    ms_synth_defaults(&op, layout);
    op.out = o;
    op.count = count;
    op.size = size;
    op.seed = seed;
    return op;
}

static void write_ok(const ms_synth_opts *o) {
    char err[1024];
    cr_assert_eq(ms_synth_write(o, err, sizeof err), 0, "ms_synth_write(%s): %s", o->out, err);
}

/* ---- whole files ----------------------------------------------------------------------------- */

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

/* Relative paths of every file under root (sorted), newline-separated. */
typedef struct {
    char *names;
    size_t len, cap;
    int n;
} file_list;

static void list_files(const char *root, const char *rel, file_list *fl) {
    char path[1024];
    snprintf(path, sizeof path, "%s%s%s", root, *rel ? "/" : "", rel);
    DIR *d = opendir(path);
    cr_assert_not_null(d, "cannot open %s", path);
    struct dirent *e;
    char *names[4096];
    int n = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            cr_assert_lt(n, 4096);
            names[n++] = strdup(e->d_name);
        }
    closedir(d);
    for (int i = 1; i < n; i++) /* insertion sort: small directories */
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1], names[j - 1] = t;
        }
    for (int i = 0; i < n; i++) {
        char sub[1024], full[2048];
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", names[i]);
        snprintf(full, sizeof full, "%s/%s", root, sub);
        struct stat st;
        cr_assert_eq(stat(full, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            list_files(root, sub, fl);
        } else {
            size_t l = strlen(sub);
            if (fl->len + l + 2 > fl->cap) {
                fl->cap = 2 * (fl->len + l + 2);
                fl->names = realloc(fl->names, fl->cap);
            }
            memcpy(fl->names + fl->len, sub, l);
            fl->len += l;
            fl->names[fl->len++] = '\n';
            fl->names[fl->len] = 0;
            fl->n++;
        }
        free(names[i]);
    }
}

/* Same file names and same bytes in both trees; returns the number of files. */
static int expect_same_tree(const char *a, const char *b) {
    file_list la = {0}, lb = {0};
    list_files(a, "", &la);
    list_files(b, "", &lb);
    cr_assert_eq(la.n, lb.n, "%s has %d files, %s has %d", a, la.n, b, lb.n);
    cr_assert_str_eq(la.names, lb.names);
    for (char *p = la.names; *p;) {
        char *nl = strchr(p, '\n');
        *nl = 0;
        char pa[1024], pb[1024];
        snprintf(pa, sizeof pa, "%s/%s", a, p);
        snprintf(pb, sizeof pb, "%s/%s", b, p);
        size_t na, nb;
        char *da = slurp(pa, &na), *db = slurp(pb, &nb);
        cr_assert(na == nb && memcmp(da, db, na) == 0, "%s and %s differ", pa, pb);
        free(da);
        free(db);
        p = nl + 1;
    }
    int n = la.n;
    free(la.names);
    free(lb.names);
    return n;
}

/* ---- determinism ----------------------------------------------------------------------------- */

Test(synth, same_seed_same_bytes_any_threads) {
    ms_synth_opts a = opts(MS_SYNTH_TASKONOMY, "a", 7, 40, 11), b = opts(MS_SYNTH_TASKONOMY, "b", 7, 40, 11);
    a.buildings = b.buildings = 3;
    a.threads = 1, b.threads = 2;
    write_ok(&a);
    write_ok(&b);
    int n = expect_same_tree(a.out, b.out);
    cr_assert_eq(n, 7 * ms_synth_domain_count() + 1, "expected 15 files per scene + splits.csv, got %d", n);

    ms_synth_opts p = opts(MS_SYNTH_PASCAL, "p", 5, 40, 11), q = opts(MS_SYNTH_PASCAL, "q", 5, 40, 11);
    p.threads = 2, q.threads = 1;
    write_ok(&p);
    write_ok(&q);
    n = expect_same_tree(p.out, q.out);
    cr_assert_eq(n, 5 * 6 + 2, "expected 6 files per PASCAL scene + 2 lists, got %d", n);
}

Test(synth, different_seed_different_scenes) {
    ms_synth_opts a = opts(MS_SYNTH_TASKONOMY, "a", 1, 32, 1);
    ms_synth_scene *s = ms_synth_scene_new(32), *t = ms_synth_scene_new(32);
    int differ = 0;
    for (int i = 0; i < 4; i++) {
        a.seed = 1;
        ms_synth_render(&a, i, s);
        a.seed = 2;
        ms_synth_render(&a, i, t);
        differ += memcmp(s->rgb, t->rgb, 32 * 32 * 3 * sizeof(float)) != 0;
    }
    cr_assert_eq(differ, 4, "only %d of 4 scenes changed with the seed", differ);
    /* neighbouring indices are different scenes too */
    a.seed = 1;
    ms_synth_render(&a, 0, s);
    ms_synth_render(&a, 1, t);
    cr_assert(memcmp(s->rgb, t->rgb, 32 * 32 * 3 * sizeof(float)) != 0);
    ms_synth_scene_free(s);
    ms_synth_scene_free(t);
}

/* A scene depends on (seed, index) only: not on the count, nor on what was rendered before. */
Test(synth, scene_depends_on_index_only) {
    ms_synth_opts small = opts(MS_SYNTH_PASCAL, "x", 3, 48, 5), big = small;
    big.count = 1000;
    ms_synth_scene *s = ms_synth_scene_new(48), *t = ms_synth_scene_new(48);
    ms_synth_render(&small, 2, s);
    for (int i = 0; i < 5; i++) ms_synth_render(&big, 7 * i, t);
    ms_synth_render(&big, 2, t);
    size_t P = (size_t)s->height * s->width;
    cr_assert(s->height == t->height && s->width == t->width);
    cr_assert(memcmp(s->rgb, t->rgb, 3 * P * sizeof(float)) == 0);
    cr_assert(memcmp(s->keypoints3d, t->keypoints3d, P * sizeof(float)) == 0);
    cr_assert(memcmp(s->segment_unsup2d, t->segment_unsup2d, P) == 0);
    cr_assert(memcmp(s->class_object, t->class_object, sizeof s->class_object) == 0);
    ms_synth_scene_free(s);
    ms_synth_scene_free(t);
}

/* ---- label consistency ----------------------------------------------------------------------- */

static int shape_of(const ms_synth_scene *s, int i) {
    int obj = s->instance[i] - 1;
    if (obj < 0) return -1;
    int cat = s->objects[obj].category;
    return cat == MS_SYNTH_PERSON ? -2 : cat / MS_SYNTH_N_COLOURS;
}

static void check_scene(const ms_synth_scene *s, int *sky_scenes, int *object_pixels) {
    int H = s->height, W = s->width, sky = 0, objects = 0;
    float radius_of[MS_SYNTH_MAX_OBJECTS] = {0}; /* 1/k of each object's curved pixels */
    int person_visible = 0;
    for (int k = 0; k < s->n_objects; k++)
        person_visible |= s->objects[k].category == MS_SYNTH_PERSON && s->objects[k].pixels > 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            size_t i = (size_t)y * W + x;
            const float *n = s->normal + 3 * i, *k = s->curvature + 2 * i;
            float a = (x + 0.5f - s->cx) / s->fx, b = (y + 0.5f - s->cy) / s->fy;
            float len = sqrtf(a * a + b * b + 1);
            cr_assert_leq(s->semseg[i] == 255 ? 0 : s->semseg[i], 20);
            cr_assert(s->context[i] >= 1 && s->context[i] <= 459, "context %d", s->context[i]);
            cr_assert(s->saliency[i] <= 1);
            cr_assert(s->human_parts[i] == 255 ? !person_visible : s->human_parts[i] <= 6);
            if (!s->valid[i]) { /* the sky: every geometric label says "missing" */
                sky++;
                cr_assert(s->depth_euclidean[i] == 0 && s->depth_zbuffer[i] == 0);
                cr_assert(n[0] == 0 && n[1] == 0 && n[2] == 0);
                cr_assert(k[0] == 0 && k[1] == 0 && s->reshading[i] == 0);
                cr_assert_eq(s->segment_semantic[i], 0);
                cr_assert_eq(s->instance[i], 0);
                cr_assert_eq(s->context[i], 360, "sky pixel with context class %d", s->context[i]);
                cr_assert_eq(s->keypoints3d[i], 0);
                cr_assert_eq(s->edge_occlusion[i], 0);
                continue;
            }
            float de = s->depth_euclidean[i], dz = s->depth_zbuffer[i];
            cr_assert(de > 0.05f && de < 20, "depth %g at (%d,%d)", de, x, y);
            cr_assert_leq(dz, de * (1 + 1e-6f));
            cr_assert_float_eq(dz, de / len, 1e-4f * de, "z-buffer %g, euclidean %g, ray length %g", dz, de, len);
            float nn = sqrtf(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);
            cr_assert_float_eq(nn, 1.0f, 1e-4f, "|normal| = %g at (%d,%d)", nn, x, y);
            float facing = (n[0] * a + n[1] * b - n[2]) / len;
            cr_assert_leq(facing, 1e-4f, "normal %g,%g,%g faces away at (%d,%d)", n[0], n[1], n[2], x, y);
            /* reshading is the light model of the normal and the light, with albedo 1 */
            float p[3] = {de * a / len, de * b / len, -de / len};
            float l[3] = {s->light[0] - p[0], s->light[1] - p[1], s->light[2] - p[2]};
            float ll = sqrtf(l[0] * l[0] + l[1] * l[1] + l[2] * l[2]);
            float ndl = fmaxf(0, (n[0] * l[0] + n[1] * l[1] + n[2] * l[2]) / ll);
            cr_assert_float_eq(s->reshading[i], s->ambient + (1 - s->ambient) * ndl, 2e-3f,
                               "reshading %g at (%d,%d)", s->reshading[i], x, y);
            cr_assert_geq(k[0], k[1]);
            int shape = shape_of(s, i);
            if (shape == -1 || shape == MS_SYNTH_BOX) { /* planes */
                cr_assert(k[0] == 0 && k[1] == 0, "curvature %g,%g on a plane at (%d,%d)", k[0], k[1], x, y);
            } else if (shape >= 0) {
                int obj = s->instance[i] - 1;
                if (shape == MS_SYNTH_SPHERE) cr_assert(k[0] > 0 && k[0] == k[1]);
                if (shape == MS_SYNTH_CYLINDER) cr_assert(k[1] == 0);
                if (shape == MS_SYNTH_CAPSULE) cr_assert(k[0] > 0 && (k[1] == 0 || k[1] == k[0]));
                if (k[0] > 0) { /* one radius per object */
                    if (radius_of[obj] == 0) radius_of[obj] = 1 / k[0];
                    cr_assert_float_eq(1 / k[0], radius_of[obj], 1e-5f);
                }
            }
            if (s->instance[i] == 0) {
                cr_assert_eq(s->segment_semantic[i], 1, "room pixel of class %d", s->segment_semantic[i]);
                cr_assert_eq(s->semseg[i], 0);
                cr_assert_eq(s->saliency[i], 0);
            } else {
                objects++;
                int cat = s->objects[s->instance[i] - 1].category;
                int expect = cat == MS_SYNTH_PERSON || cat % MS_SYNTH_N_COLOURS == 4
                                 ? 0 : 2 + (cat / MS_SYNTH_N_COLOURS) * 4 + cat % MS_SYNTH_N_COLOURS;
                cr_assert_eq(s->segment_semantic[i], expect);
                cr_assert(s->segment_semantic[i] <= 17);
                cr_assert(s->semseg[i] == 255 || s->semseg[i] == s->objects[s->instance[i] - 1].voc);
                if (cat == MS_SYNTH_PERSON) cr_assert(s->part[i] >= 1 && s->human_parts[i] >= 1);
            }
            /* the occlusion edge is on wherever a neighbour is sky */
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int qx = x + dx, qy = y + dy;
                    if ((dx && dy) || qx < 0 || qy < 0 || qx >= W || qy >= H) continue;
                    if (!s->valid[(size_t)qy * W + qx]) cr_assert_eq(s->edge_occlusion[i], 1.0f);
                }
        }
    *sky_scenes += sky > 0;
    *object_pixels += objects;
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

Test(synth, labels_are_consistent) {
    ms_synth_scene *s = ms_synth_scene_new(64);
    for (int layout = 0; layout < 2; layout++) {
        ms_synth_opts o = opts((ms_synth_layout)layout, "x", 24, 64, 3);
        int sky_scenes = 0, object_pixels = 0, persons = 0;
        for (int i = 0; i < o.count; i++) {
            cr_assert_eq(ms_synth_render(&o, i, s), 0);
            check_scene(s, &sky_scenes, &object_pixels);
            /* image-level logits: the room type, and the class with the most visible area */
            cr_assert_eq(argmax(s->class_scene, MS_SYNTH_N_CLASS_SCENE), ms_synth_room_places(s->room_type));
            double area[MS_SYNTH_N_CLASS_OBJECT] = {0};
            int best = -1;
            for (int k = 0; k < s->n_objects; k++) {
                int c = ms_synth_imagenet_class(s->objects[k].category);
                if (c < 0) continue;
                area[c] += s->objects[k].pixels;
                if (area[c] > 0 && (best < 0 || area[c] > area[best])) best = c;
            }
            if (best >= 0) cr_assert_eq(argmax(s->class_object, MS_SYNTH_N_CLASS_OBJECT), best);
            for (int k = 0; k < s->n_objects; k++)
                persons += s->objects[k].category == MS_SYNTH_PERSON && s->objects[k].pixels > 0;
        }
        /* the checks above are only meaningful when scenes have sky, objects and persons */
        cr_assert_geq(sky_scenes, 4, "only %d of 24 scenes show the sky", sky_scenes);
        cr_assert_gt(object_pixels, 24 * 64 * 64 / 20, "objects cover too little: %d pixels", object_pixels);
        if (layout == MS_SYNTH_PASCAL) cr_assert_geq(persons, 4, "persons visible in %d scenes", persons);
    }
    ms_synth_scene_free(s);
}

/* Texture edges come from the texture only: an object pixel whose neighbours on the same object
 * all have its albedo has no texture edge, however strong the change to the next object; and
 * the two edge maps genuinely differ. */
Test(synth, texture_edges_are_not_occlusion_edges) {
    ms_synth_scene *s = ms_synth_scene_new(64);
    ms_synth_opts o = opts(MS_SYNTH_TASKONOMY, "x", 16, 64, 9);
    int outline = 0, texture_only = 0, occlusion_only = 0;
    for (int n = 0; n < o.count; n++) {
        ms_synth_render(&o, n, s);
        int H = s->height, W = s->width;
        for (int y = 1; y < H - 1; y++)
            for (int x = 1; x < W - 1; x++) {
                size_t i = (size_t)y * W + x;
                texture_only += s->edge_texture[i] > 0.2f && s->edge_occlusion[i] == 0;
                occlusion_only += s->edge_occlusion[i] > 0.5f && s->edge_texture[i] == 0;
                if (!s->instance[i]) continue;
                int uniform = 1, other = 0;
                for (int dy = -1; dy <= 1; dy++)
                    for (int dx = -1; dx <= 1; dx++) {
                        size_t j = (size_t)(y + dy) * W + x + dx;
                        if (s->instance[j] != s->instance[i]) {
                            other = 1;
                            continue;
                        }
                        uniform &= memcmp(s->albedo + 3 * j, s->albedo + 3 * i, 3 * sizeof(float)) == 0;
                    }
                if (!uniform) continue;
                cr_assert_eq(s->edge_texture[i], 0.0f, "texture edge %g on a uniform patch at (%d,%d)",
                             s->edge_texture[i], x, y);
                outline += other;
            }
    }
    cr_assert_gt(outline, 100, "only %d uniform outline pixels checked", outline);
    cr_assert_gt(texture_only, 100);
    cr_assert_gt(occlusion_only, 100);
    ms_synth_scene_free(s);
}

/* ---- files ----------------------------------------------------------------------------------- */

/* Every sample of a file equals the encoding of the scene; the encoding decodes (DATASETS.md)
 * to the rendered value within half a quantisation step. */
static void expect_file_equals(const char *path, const ms_synth_scene *s, ms_synth_map map,
                               ms_image *got, ms_image *want) {
    ms_io_err e;
    ms_img_want w = {.mode = MS_IMG_LABEL};
    cr_assert_eq(ms_png_read(path, &w, got, &e), 0, "%s", e.msg);
    cr_assert_eq(ms_synth_encode(s, map, want, &e), 0, "%s", e.msg);
    cr_assert(got->width == want->width && got->height == want->height &&
                  got->channels == want->channels && got->depth == want->depth,
              "%s: %dx%dx%d %d-bit, expected %dx%dx%d %d-bit", path, got->width, got->height,
              got->channels, got->depth, want->width, want->height, want->channels, want->depth);
    cr_assert(memcmp(got->data, want->data, ms_image_bytes(want)) == 0, "%s differs from the scene", path);
}

static void expect_decodes(const ms_synth_scene *s, ms_synth_map map, const ms_image *im) {
    size_t P = (size_t)s->height * s->width;
    const uint8_t *u8 = im->data;
    const uint16_t *u16 = im->data;
    for (size_t i = 0; i < P; i++) {
        int valid = s->valid[i];
        switch (map) {
        case MS_SYNTH_MAP_RGB:
            for (int c = 0; c < 3; c++) cr_assert_float_eq(u8[3 * i + c] / 255.0f, s->rgb[3 * i + c], 0.5f / 255 + 1e-6f);
            break;
        case MS_SYNTH_MAP_DEPTH_EUCLIDEAN:
        case MS_SYNTH_MAP_DEPTH_ZBUFFER: {
            float d = map == MS_SYNTH_MAP_DEPTH_ZBUFFER ? s->depth_zbuffer[i] : s->depth_euclidean[i];
            if (!valid) cr_assert_eq(u16[i], 65535);
            else cr_assert(u16[i] < 64500 && fabsf(u16[i] / 512.0f - d) <= 0.5f / 512 + 1e-5f);
            break;
        }
        case MS_SYNTH_MAP_NORMAL:
            for (int c = 0; c < 3; c++) {
                if (!valid) cr_assert_eq(u8[3 * i + c], 128);
                else cr_assert_float_eq(u8[3 * i + c] / 255.0f * 2 - 1, s->normal[3 * i + c], 1.0f / 255 + 1e-5f);
            }
            if (valid) cr_assert(u8[3 * i] != 128 || u8[3 * i + 1] != 128 || u8[3 * i + 2] != 128);
            break;
        case MS_SYNTH_MAP_CURVATURE:
            cr_assert_eq(u8[3 * i + 2], 0);
            for (int c = 0; c < 2; c++) {
                if (!valid) cr_assert_eq(u8[3 * i + c], 0);
                else if (u8[3 * i + c] > 1 && u8[3 * i + c] < 255)
                    cr_assert_float_eq((u8[3 * i + c] - 127) / 4.0f, s->curvature[2 * i + c], 0.125f + 1e-5f);
            }
            break;
        case MS_SYNTH_MAP_RESHADING:
            cr_assert(u8[3 * i] == u8[3 * i + 1] && u8[3 * i] == u8[3 * i + 2]);
            cr_assert_float_eq(u8[3 * i] / 255.0f, s->reshading[i], 0.5f / 255 + 1e-6f);
            break;
        case MS_SYNTH_MAP_EDGE_TEXTURE:
            cr_assert_float_eq(u16[i] / (0.08f * 65536), s->edge_texture[i], 0.5f / (0.08f * 65536) + 1e-6f);
            break;
        case MS_SYNTH_MAP_EDGE_OCCLUSION:
            cr_assert_float_eq(u16[i] / (0.00625f * 65536), s->edge_occlusion[i], 0.5f / (0.00625f * 65536) + 1e-6f);
            break;
        case MS_SYNTH_MAP_KEYPOINTS2D:
            cr_assert_float_eq(u16[i] / (0.005f * 65536), s->keypoints2d[i], 0.5f / (0.005f * 65536) + 1e-6f);
            break;
        case MS_SYNTH_MAP_KEYPOINTS3D:
            cr_assert_float_eq(u16[i] / 65535.0f, s->keypoints3d[i], 0.5f / 65535 + 1e-6f);
            if (!valid) cr_assert_eq(u16[i], 0);
            break;
        case MS_SYNTH_MAP_SEGMENT_UNSUP2D: cr_assert_eq(u8[i], s->segment_unsup2d[i]); break;
        case MS_SYNTH_MAP_SEGMENT_UNSUP25D: cr_assert_eq(u8[i], s->segment_unsup25d[i]); break;
        case MS_SYNTH_MAP_SEGMENT_SEMANTIC: cr_assert_eq(u8[i], s->segment_semantic[i]); break;
        case MS_SYNTH_MAP_SEMSEG: cr_assert_eq(u8[i], s->semseg[i]); break;
        case MS_SYNTH_MAP_SALIENCY: cr_assert_eq(u8[i], s->saliency[i] ? 255 : 0); break;
        default: break;
        }
    }
}

Test(synth, taskonomy_files_decode_to_the_scene) {
    ms_synth_opts o = opts(MS_SYNTH_TASKONOMY, "t", 6, 48, 21);
    o.buildings = 3;
    write_ok(&o);
    ms_synth_scene *s = ms_synth_scene_new(48);
    ms_image got, want;
    ms_image_init(&got);
    ms_image_init(&want);
    ms_npy arr;
    ms_npy_init(&arr);
    ms_io_err e;
    for (int i = 0; i < o.count; i++) {
        ms_synth_render(&o, i, s);
        for (int d = 0; d < ms_synth_domain_count(); d++) {
            const ms_synth_domain *dom = ms_synth_domain_at(d);
            char path[1024];
            cr_assert_eq(ms_synth_taskonomy_path(&o, i, dom->domain, path, sizeof path), 0);
            if (dom->map >= 0) {
                expect_file_equals(path, s, (ms_synth_map)dom->map, &got, &want);
                expect_decodes(s, (ms_synth_map)dom->map, &got);
                continue;
            }
            int scene = !strcmp(dom->domain, "class_scene");
            size_t n = scene ? MS_SYNTH_N_CLASS_SCENE : MS_SYNTH_N_CLASS_OBJECT;
            cr_assert_eq(ms_npy_read(path, n, &arr, &e), 0, "%s", e.msg);
            cr_assert(memcmp(arr.data, scene ? s->class_scene : s->class_object, n * sizeof(float)) == 0,
                      "%s differs from the scene", path);
        }
    }
    /* the irregular names of DATASETS.md */
    char path[1024];
    ms_synth_taskonomy_path(&o, 4, "class_scene", path, sizeof path);
    cr_assert(strstr(path, "/class_scene/taskonomy/") && strstr(path, "point_0_view_1_domain_class_places.npy"), "%s", path);
    ms_synth_taskonomy_path(&o, 4, "segment_semantic", path, sizeof path);
    cr_assert(strstr(path, "_domain_segmentsemantic.png"), "%s", path);
    ms_synth_taskonomy_path(&o, 4, "class_object", path, sizeof path);
    cr_assert(strstr(path, "_domain_class_object.npy"), "%s", path);
    ms_image_free(&got);
    ms_image_free(&want);
    ms_npy_free(&arr);
    ms_synth_scene_free(s);
}

Test(synth, pascal_files_decode_to_the_scene) {
    ms_synth_opts o = opts(MS_SYNTH_PASCAL, "p", 8, 64, 4);
    write_ok(&o);
    ms_synth_scene *s = ms_synth_scene_new(64);
    ms_image got, want;
    ms_image_init(&got);
    ms_image_init(&want);
    ms_labelmap lm;
    ms_labelmap_init(&lm);
    ms_io_err e;
    int shapes[2] = {0, 0}, with_parts = 0;
    for (int i = 0; i < o.count; i++) {
        ms_synth_render(&o, i, s);
        int H = s->height, W = s->width;
        size_t P = (size_t)H * W;
        shapes[W > H]++;
        char id[32], path[1024];
        ms_synth_pascal_id(i, id);
        /* JPEG: lossy, so close on average */
        snprintf(path, sizeof path, "%s/JPEGImages/%s.jpg", o.out, id);
        ms_img_want colour = {.mode = MS_IMG_COLOR, .channels = 3};
        cr_assert_eq(ms_jpeg_read(path, &colour, &got, &e), 0, "%s", e.msg);
        cr_assert(got.width == W && got.height == H, "%s is %dx%d, expected %dx%d", path, got.width, got.height, W, H);
        double err = 0;
        for (size_t k = 0; k < 3 * P; k++) err += fabs(((uint8_t *)got.data)[k] - 255.0 * s->rgb[k]);
        /* (a different image would be off by ~50; JPEG at quality 90 on 64-pixel images with
         * sharp texture costs ~5) */
        cr_assert_lt(err / (3 * P), 8.0, "%s: mean error %g of 255", path, err / (3 * P));
        /* index PNGs decode to their indices; 255 marks some outlines */
        snprintf(path, sizeof path, "%s/semseg/pascal-context/%s.png", o.out, id);
        expect_file_equals(path, s, MS_SYNTH_MAP_SEMSEG, &got, &want);
        snprintf(path, sizeof path, "%s/normals_distill/%s.png", o.out, id);
        expect_file_equals(path, s, MS_SYNTH_MAP_NORMAL, &got, &want);
        expect_decodes(s, MS_SYNTH_MAP_NORMAL, &got);
        snprintf(path, sizeof path, "%s/sal_distill/%s.png", o.out, id);
        expect_file_equals(path, s, MS_SYNTH_MAP_SALIENCY, &got, &want);
        snprintf(path, sizeof path, "%s/pascal-context/trainval/%s.mat", o.out, id);
        cr_assert_eq(ms_mat_read_labelmap(path, NULL, H, W, &lm, &e), 0, "%s", e.msg);
        cr_assert(memcmp(lm.labels, s->context, P * sizeof(int32_t)) == 0, "%s differs", path);
        /* human parts: rebuild the 6-part map from the 'anno' struct as the reference does */
        snprintf(path, sizeof path, "%s/human_parts/%s.mat", o.out, id);
        ms_anno anno;
        cr_assert_eq(ms_mat_read_anno(path, &anno, &e), 0, "%s", e.msg);
        uint8_t *parts = malloc(P);
        int any = 0;
        memset(parts, 0, P);
        for (int k = 0; k < anno.n_objects; k++) {
            const ms_anno_object *ob = &anno.objects[k];
            cr_assert(ob->class_id >= 1 && ob->class_id <= 20);
            int visible = 0;
            for (size_t j = 0; j < P; j++) visible += ob->mask[j];
            cr_assert_gt(visible, 0, "%s: object %d has an empty mask", path, k);
            if (ob->class_id != 15) {
                cr_assert_eq(ob->n_parts, 0);
                continue;
            }
            cr_assert_gt(ob->n_parts, 0);
            any = 1;
            for (int q = 0; q < ob->n_parts; q++) {
                int cls = 0;
                for (int pn = 1; pn <= MS_SYNTH_N_PERSON_PARTS; pn++)
                    if (!strcmp(ob->parts[q].name, ms_synth_part_name(pn))) cls = ms_synth_part_class(pn);
                cr_assert_gt(cls, 0, "unknown part name '%s'", ob->parts[q].name);
                for (size_t j = 0; j < P; j++)
                    if (ob->parts[q].mask[j]) parts[j] = (uint8_t)cls;
            }
        }
        with_parts += any;
        for (size_t j = 0; j < P; j++)
            cr_assert_eq(any ? parts[j] : 255, s->human_parts[j], "%s: pixel %zu", path, j);
        free(parts);
        ms_anno_free(&anno);
    }
    cr_assert_gt(with_parts, 0, "no scene with a person to check");
    cr_assert(shapes[0] > 0 && shapes[1] > 0, "expected portrait and landscape images");
    /* the image lists: 4 and 4 */
    char path[1024];
    size_t len;
    snprintf(path, sizeof path, "%s/ImageSets/Context/train.txt", o.out);
    char *train = slurp(path, &len);
    cr_assert_str_eq(train, "synth_000000\nsynth_000001\nsynth_000002\nsynth_000003\n");
    free(train);
    snprintf(path, sizeof path, "%s/ImageSets/Context/val.txt", o.out);
    char *val = slurp(path, &len);
    cr_assert_str_eq(val, "synth_000004\nsynth_000005\nsynth_000006\nsynth_000007\n");
    free(val);
    ms_image_free(&got);
    ms_image_free(&want);
    ms_labelmap_free(&lm);
    ms_synth_scene_free(s);
}

/* splits.csv: "id,train,val,test", one row per building, CR-only line endings. */
static void expect_csv(const ms_synth_opts *o, int rows, const int want[3]) {
    char path[1024];
    size_t len;
    snprintf(path, sizeof path, "%s/splits.csv", o->out);
    char *csv = slurp(path, &len);
    cr_assert_null(strchr(csv, '\n'), "splits.csv has a newline");
    cr_assert(len > 0 && csv[len - 1] == '\r', "splits.csv does not end with CR");
    cr_assert(strncmp(csv, "id,train,val,test\r", 18) == 0, "header: %.20s", csv);
    int n = 0, count[3] = {0, 0, 0};
    char seen[64][16];
    for (char *line = csv + 18; *line;) {
        char *cr = strchr(line, '\r');
        *cr = 0;
        char name[16];
        int t, v, s;
        cr_assert_eq(sscanf(line, "%15[a-z],%d,%d,%d", name, &t, &v, &s), 4, "row '%s'", line);
        cr_assert_eq(t + v + s, 1, "row '%s'", line);
        count[0] += t, count[1] += v, count[2] += s;
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/rgb/taskonomy/%s", o->out, name);
        struct stat st;
        cr_assert(stat(dir, &st) == 0 && S_ISDIR(st.st_mode), "no folder %s", dir);
        for (int k = 0; k < n; k++) cr_assert_str_neq(seen[k], name, "building %s twice", name);
        snprintf(seen[n++], 16, "%s", name);
        line = cr + 1;
    }
    cr_assert_eq(n, rows);
    for (int k = 0; k < 3; k++) cr_assert_eq(count[k], want[k], "split %d has %d buildings, expected %d", k, count[k], want[k]);
    free(csv);
}

Test(synth, split_csv) {
    ms_synth_opts o = opts(MS_SYNTH_TASKONOMY, "c1", 30, 16, 0);
    o.buildings = 20; /* default fractions 0.7 / 0.15 / 0.15 */
    write_ok(&o);
    expect_csv(&o, 20, (const int[3]){14, 3, 3});
    ms_synth_opts c = opts(MS_SYNTH_TASKONOMY, "c2", 9, 16, 0);
    c.buildings = 5, c.split_counts = 1;
    c.split[0] = 3, c.split[1] = 1, c.split[2] = 1;
    write_ok(&c);
    expect_csv(&c, 5, (const int[3]){3, 1, 1});
    /* fewer scenes than buildings: only the buildings that have scenes */
    ms_synth_opts f = opts(MS_SYNTH_TASKONOMY, "c3", 4, 16, 0);
    write_ok(&f);
    expect_csv(&f, 4, (const int[3]){2, 1, 1});
}

Test(synth, bad_options_are_named) {
    char err[512];
    ms_synth_opts o = opts(MS_SYNTH_TASKONOMY, "bad", 1, 32, 0);
    o.size = 8;
    cr_assert_eq(ms_synth_check(&o, err, sizeof err), -1);
    cr_assert(strstr(err, "size 8"), "%s", err);
    o.size = 32, o.split[0] = 0.9;
    cr_assert_eq(ms_synth_check(&o, err, sizeof err), -1);
    cr_assert(strstr(err, "sum to"), "%s", err);
    o.split[0] = 5, o.split[1] = o.split[2] = 0, o.split_counts = 1;
    cr_assert_eq(ms_synth_check(&o, err, sizeof err), -1); /* 1 scene: 1 building */
    cr_assert(strstr(err, "buildings"), "%s", err);
    /* an output path that is a file */
    ms_synth_opts w = opts(MS_SYNTH_TASKONOMY, "file", 1, 32, 0);
    FILE *f = fopen(w.out, "w");
    fclose(f);
    cr_assert_eq(ms_synth_write(&w, err, sizeof err), -1);
    cr_assert(strstr(err, w.out) && strstr(err, "not a directory"), "%s", err);
}

/* ---- the command ----------------------------------------------------------------------------- */

static int run_cli(const char *args, char *out, size_t cap) {
    const char *bin = getenv("MODSQUAD_BIN");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", bin ? bin : "./modsquad", args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "cannot run %s", cmd);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    cr_assert(WIFEXITED(st), "'%s' did not exit normally", cmd);
    return WEXITSTATUS(st);
}

Test(synth, command_line) {
    char args[1024], out[8192];
    snprintf(args, sizeof args, "synth --out %s/cli --count 6 --size 32 --seed 7 --buildings 3 --splits 1,1,1", g_dir);
    cr_assert_eq(run_cli(args, out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "wrote 6 taskonomy scenes"), "%s", out);
    ms_synth_opts o = opts(MS_SYNTH_TASKONOMY, "cli", 6, 32, 7);
    o.buildings = 3;
    expect_csv(&o, 3, (const int[3]){1, 1, 1});
    char path[1024];
    cr_assert_eq(ms_synth_taskonomy_path(&o, 5, "depth_zbuffer", path, sizeof path), 0);
    cr_assert_eq(access(path, R_OK), 0, "%s is missing", path);

    snprintf(args, sizeof args, "synth --out %s/clip --layout pascal --count 3 --size 32 -q", g_dir);
    cr_assert_eq(run_cli(args, out, sizeof out), 0, "%s", out);
    snprintf(path, sizeof path, "%s/clip/human_parts/synth_000002.mat", g_dir);
    cr_assert_eq(access(path, R_OK), 0, "%s is missing", path);

    static const char *const bad[] = {
        "synth --count 3",                                /* no --out */
        "synth --out %s/b --layout nyud",                 /* unknown layout */
        "synth --out %s/b --size 4",                      /* too small */
        "synth --out %s/b --count zero",                  /* not a number */
        "synth --out %s/b --splits 0.5,0.6",              /* two shares */
        "synth --out %s/b --splits 0.5,0.6,0.1",          /* fractions over 1 */
        "synth --out %s/b --count 4 --splits 9,0,0",      /* more buildings than scenes */
        "synth --out %s/b --frobnicate",                  /* unknown option */
        "synth --out %s/b extra",                         /* stray argument */
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        snprintf(args, sizeof args, bad[k], g_dir);
        cr_assert_eq(run_cli(args, out, sizeof out), 2, "'%s' should be a usage error: %s", args, out);
        cr_assert(strstr(out, "modsquad synth:") && strstr(out, "Try 'modsquad synth --help'"), "%s", out);
    }
    cr_assert_eq(run_cli("synth --help", out, sizeof out), 0);
    cr_assert(strstr(out, "Usage: modsquad synth"), "%s", out);
}
