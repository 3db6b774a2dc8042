/* Writing a synthetic dataset in the Taskonomy or PASCAL_MT layout (DATASETS.md): every scene
 * rendered by one OpenMP thread into its own reusable buffers and written through the atomic
 * writers of data/, then the split files. */
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "matfile.h"
#include "npy.h"
#include "synth_internal.h"

/* ---- directories ----------------------------------------------------------------------------- */

/* mkdir -p; 0 or -1 with a message naming the path. */
static int make_dirs(const char *path, char *err, size_t cap) {
    char buf[4096];
    int n = snprintf(buf, sizeof buf, "%s", path);
    if (n < 0 || (size_t)n >= sizeof buf) {
        snprintf(err, cap, "%s: path too long", path);
        return -1;
    }
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char keep = *p;
        *p = '\0';
        struct stat st;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
            snprintf(err, cap, "%s: cannot create the directory (%s)", buf, strerror(errno));
            return -1;
        }
        if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) {
            snprintf(err, cap, "%s: exists and is not a directory", buf);
            return -1;
        }
        *p = keep;
        if (!keep) break;
    }
    return 0;
}

static int make_subdir(const char *out, const char *sub, char *err, size_t cap) {
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s", out, sub);
    if (n < 0 || (size_t)n >= sizeof path) {
        snprintf(err, cap, "%s/%s: path too long", out, sub);
        return -1;
    }
    return make_dirs(path, err, cap);
}

static int units_of(const ms_synth_opts *o) {
    if (o->layout == MS_SYNTH_PASCAL) return o->count;
    return o->count < o->buildings ? o->count : o->buildings;
}

static const char *const k_pascal_dirs[] = {"JPEGImages", "ImageSets/Context",
                                            "semseg/pascal-context", "human_parts",
                                            "normals_distill", "sal_distill",
                                            "pascal-context/trainval"};

static int make_layout_dirs(const ms_synth_opts *o, char *err, size_t cap) {
    if (make_dirs(o->out, err, cap)) return -1;
    if (o->layout == MS_SYNTH_PASCAL) {
        for (size_t i = 0; i < sizeof k_pascal_dirs / sizeof k_pascal_dirs[0]; i++)
            if (make_subdir(o->out, k_pascal_dirs[i], err, cap)) return -1;
        return 0;
    }
    for (int d = 0; d < ms_synth_domain_count(); d++)
        for (int b = 0; b < units_of(o); b++) {
            char sub[256], name[16];
            ms_synth_building_name(b, name);
            snprintf(sub, sizeof sub, "%s/taskonomy/%s", ms_synth_domain_at(d)->domain, name);
            if (make_subdir(o->out, sub, err, cap)) return -1;
        }
    return 0;
}

/* ---- splits ---------------------------------------------------------------------------------- */

/* How many of `units` (buildings or images) go to train, val and test. Fractions round to the
 * nearest unit, every non-zero fraction gets at least one unit when there are enough, and
 * fractions summing to 1 use every unit. */
static void split_sizes(const ms_synth_opts *o, int units, int n[3]) {
    if (o->split_counts) {
        for (int k = 0; k < 3; k++) n[k] = (int)o->split[k];
        return;
    }
    double sum = o->split[0] + o->split[1] + o->split[2];
    for (int k = 0; k < 3; k++) n[k] = (int)(o->split[k] * units + 0.5);
    if (sum >= 1 - 1e-9) n[0] = units - n[1] - n[2];
    for (int k = 0; k < 3; k++) {
        if (o->split[k] <= 0 || n[k] > 0) continue;
        int big = n[0] >= n[1] && n[0] >= n[2] ? 0 : n[1] >= n[2] ? 1 : 2;
        if (n[big] > 1) n[big]--, n[k]++;
    }
    for (int k = 0; k < 3; k++)
        if (n[k] < 0) n[k] = 0;
    while (n[0] + n[1] + n[2] > units) { /* rounding up three ways can overshoot by one */
        int big = n[0] >= n[1] && n[0] >= n[2] ? 0 : n[1] >= n[2] ? 1 : 2;
        n[big]--;
    }
}

/* Which split unit u is in: 0 train, 1 val, 2 test, -1 none. Units are assigned in order. */
static int split_of(const int n[3], int u) {
    if (u < n[0]) return 0;
    if (u < n[0] + n[1]) return 1;
    if (u < n[0] + n[1] + n[2]) return 2;
    return -1;
}

static int write_text(const char *path, const char *text, size_t len, int flags, char *err,
                      size_t cap) {
    ms_atomic a;
    FILE *fp;
    ms_io_err e;
    if (ms_atomic_begin(&a, path, &fp, &e)) {
        snprintf(err, cap, "%s", e.msg);
        return -1;
    }
    if (fwrite(text, 1, len, fp) != len) {
        ms_atomic_abort(&a, fp);
        snprintf(err, cap, "%s: write failed", path);
        return -1;
    }
    if (ms_atomic_commit(&a, fp, flags, &e)) {
        snprintf(err, cap, "%s", e.msg);
        return -1;
    }
    return 0;
}

/* Taskonomy: {out}/splits.csv, "id,train,val,test" and one row per building, with the CR-only
 * line endings of the official split files. */
static int write_taskonomy_splits(const ms_synth_opts *o, char *err, size_t cap) {
    int units = units_of(o), n[3];
    split_sizes(o, units, n);
    size_t len = 0, size = 32 + (size_t)units * 32;
    char *text = malloc(size);
    if (!text) {
        snprintf(err, cap, "%s/splits.csv: out of memory", o->out);
        return -1;
    }
    len += (size_t)snprintf(text, size, "id,train,val,test\r");
    for (int b = 0; b < units; b++) {
        char name[16];
        ms_synth_building_name(b, name);
        int k = split_of(n, b);
        len += (size_t)snprintf(text + len, size - len, "%s,%d,%d,%d\r", name, k == 0, k == 1, k == 2);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/splits.csv", o->out);
    int rc = write_text(path, text, len, o->flags, err, cap);
    free(text);
    return rc;
}

/* PASCAL: ImageSets/Context/{train,val}.txt (and test.txt when a test share is asked for). */
static int write_pascal_splits(const ms_synth_opts *o, char *err, size_t cap) {
    int n[3];
    split_sizes(o, o->count, n);
    static const char *const names[3] = {"train", "val", "test"};
    char *text = malloc((size_t)o->count * 32 + 1);
    if (!text) {
        snprintf(err, cap, "%s: out of memory for the image lists", o->out);
        return -1;
    }
    int rc = 0;
    for (int k = 0; k < 3 && !rc; k++) {
        if (k == 2 && n[2] == 0) break;
        size_t len = 0;
        for (int i = 0; i < o->count; i++) {
            if (split_of(n, i) != k) continue;
            char id[32];
            ms_synth_pascal_id(i, id);
            len += (size_t)sprintf(text + len, "%s\n", id);
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/ImageSets/Context/%s.txt", o->out, names[k]);
        rc = write_text(path, text, len, o->flags, err, cap);
    }
    free(text);
    return rc;
}

/* ---- one scene ------------------------------------------------------------------------------- */

typedef struct {
    ms_synth_scene *scene;
    ms_image im;            /* encoded label, reused */
    uint8_t *masks;         /* [n_masks, P] instance and part masks of the 'anno' struct */
    size_t masks_capacity;  /* bytes */
    ms_anno_part parts[MS_SYNTH_MAX_OBJECTS * MS_SYNTH_N_PERSON_PARTS];
    ms_anno_object objects[MS_SYNTH_MAX_OBJECTS];
    const uint8_t *palette; /* [256, 3] VOC colours of the semseg index PNGs */
} worker;

static int io_error(const ms_io_err *e, char *err, size_t cap) {
    snprintf(err, cap, "%s", e->msg);
    return -1;
}

static int write_taskonomy_scene(const ms_synth_opts *o, int index, worker *wk, char *err,
                                 size_t cap) {
    const ms_synth_scene *s = wk->scene;
    ms_io_err e;
    for (int d = 0; d < ms_synth_domain_count(); d++) {
        const ms_synth_domain *dom = ms_synth_domain_at(d);
        char path[4096];
        if (ms_synth_taskonomy_path(o, index, dom->domain, path, sizeof path)) {
            snprintf(err, cap, "%s: the path of scene %d is too long", o->out, index);
            return -1;
        }
        if (dom->map >= 0) {
            if (ms_synth_encode(s, (ms_synth_map)dom->map, &wk->im, &e) ||
                ms_png_write(path, &wk->im, NULL, 0, o->flags, &e))
                return io_error(&e, err, cap);
            continue;
        }
        int scene_class = !strcmp(dom->domain, "class_scene");
        int64_t shape[1] = {scene_class ? MS_SYNTH_N_CLASS_SCENE : MS_SYNTH_N_CLASS_OBJECT};
        if (ms_npy_write(path, scene_class ? s->class_scene : s->class_object, 1, shape, o->flags, &e))
            return io_error(&e, err, cap);
    }
    return 0;
}

/* The VOC colour map (bit-interleaved class index), as in the PASCAL devkit's labelcolormap. */
static void voc_palette(uint8_t pal[256 * 3]) {
    for (int i = 0; i < 256; i++) {
        int r = 0, g = 0, b = 0, c = i;
        for (int j = 0; j < 8; j++) {
            r |= ((c >> 0) & 1) << (7 - j);
            g |= ((c >> 1) & 1) << (7 - j);
            b |= ((c >> 2) & 1) << (7 - j);
            c >>= 3;
        }
        pal[3 * i] = (uint8_t)r, pal[3 * i + 1] = (uint8_t)g, pal[3 * i + 2] = (uint8_t)b;
    }
}

/* The PASCAL-Part 'anno' of a scene: every visible object with its mask; persons also with the
 * masks of their visible parts. */
static int build_anno(worker *wk, ms_anno *anno, char *err, size_t cap) {
    const ms_synth_scene *s = wk->scene;
    size_t P = (size_t)s->height * s->width;
    int part_pixels[MS_SYNTH_MAX_OBJECTS][MS_SYNTH_N_PERSON_PARTS + 1];
    memset(part_pixels, 0, sizeof part_pixels);
    for (size_t i = 0; i < P; i++)
        if (s->instance[i]) part_pixels[s->instance[i] - 1][s->part[i]]++;
    size_t n_masks = 0;
    for (int k = 0; k < s->n_objects; k++) {
        if (!s->objects[k].pixels) continue;
        n_masks++;
        for (int p = 1; p <= MS_SYNTH_N_PERSON_PARTS; p++) n_masks += part_pixels[k][p] > 0;
    }
    if (n_masks * P > wk->masks_capacity) {
        uint8_t *m = realloc(wk->masks, n_masks * P);
        if (!m) {
            snprintf(err, cap, "out of memory for %zu masks", n_masks);
            return -1;
        }
        wk->masks = m, wk->masks_capacity = n_masks * P;
    }
    if (n_masks) memset(wk->masks, 0, n_masks * P); /* masks is NULL until a scene has one */
    uint8_t *next = wk->masks;
    int n_obj = 0, n_parts = 0;
    for (int k = 0; k < s->n_objects; k++) {
        if (!s->objects[k].pixels) continue;
        ms_anno_object *ob = &wk->objects[n_obj++];
        ob->class_id = s->objects[k].voc;
        ob->mask = next, next += P;
        ob->n_parts = 0;
        ob->parts = &wk->parts[n_parts];
        uint8_t *part_mask[MS_SYNTH_N_PERSON_PARTS + 1] = {0};
        for (int p = 1; p <= MS_SYNTH_N_PERSON_PARTS; p++) {
            if (!part_pixels[k][p]) continue;
            ms_anno_part *pt = &wk->parts[n_parts++];
            snprintf(pt->name, sizeof pt->name, "%s", ms_synth_part_name(p));
            pt->mask = part_mask[p] = next, next += P;
            ob->n_parts++;
        }
        for (size_t i = 0; i < P; i++) {
            if (s->instance[i] != k + 1) continue;
            ob->mask[i] = 1;
            if (s->part[i]) part_mask[s->part[i]][i] = 1;
        }
    }
    anno->height = s->height, anno->width = s->width;
    anno->n_objects = n_obj;
    anno->objects = wk->objects;
    return 0;
}

static int write_pascal_scene(const ms_synth_opts *o, int index, worker *wk, char *err,
                              size_t cap) {
    const ms_synth_scene *s = wk->scene;
    char id[32], path[4096];
    ms_synth_pascal_id(index, id);
    ms_io_err e;
#define PATH(fmt) (snprintf(path, sizeof path, fmt, o->out, id) >= (int)sizeof path)
    if (PATH("%s/JPEGImages/%s.jpg") || ms_synth_encode(s, MS_SYNTH_MAP_RGB, &wk->im, &e) ||
        ms_jpeg_write(path, &wk->im, o->jpeg_quality, o->flags, &e))
        return io_error(&e, err, cap);
    if (PATH("%s/semseg/pascal-context/%s.png") || ms_synth_encode(s, MS_SYNTH_MAP_SEMSEG, &wk->im, &e) ||
        ms_png_write(path, &wk->im, wk->palette, 256, o->flags, &e))
        return io_error(&e, err, cap);
    if (PATH("%s/normals_distill/%s.png") || ms_synth_encode(s, MS_SYNTH_MAP_NORMAL, &wk->im, &e) ||
        ms_png_write(path, &wk->im, NULL, 0, o->flags, &e))
        return io_error(&e, err, cap);
    if (PATH("%s/sal_distill/%s.png") || ms_synth_encode(s, MS_SYNTH_MAP_SALIENCY, &wk->im, &e) ||
        ms_png_write(path, &wk->im, NULL, 0, o->flags, &e))
        return io_error(&e, err, cap);
    if (PATH("%s/pascal-context/trainval/%s.mat") ||
        ms_mat_write_labelmap(path, s->context, s->height, s->width, MS_MAT_V5, o->flags, &e))
        return io_error(&e, err, cap);
    ms_anno anno;
    if (build_anno(wk, &anno, err, cap)) return -1;
    if (PATH("%s/human_parts/%s.mat") || ms_mat_write_anno(path, &anno, id, MS_MAT_V5, o->flags, &e))
        return io_error(&e, err, cap);
#undef PATH
    return 0;
}

/* ---- the dataset ----------------------------------------------------------------------------- */

int ms_synth_write(const ms_synth_opts *o, char *err, size_t cap) {
    if (ms_synth_check(o, err, cap)) return -1;
    if (!o->out || !*o->out) {
        snprintf(err, cap, "no output directory given");
        return -1;
    }
    if (make_layout_dirs(o, err, cap)) return -1;
    uint8_t palette[256 * 3];
    voc_palette(palette);
    int failed = 0;
    char first_err[1024] = "";
    int threads = o->threads > 0 ? o->threads : omp_get_max_threads();
#pragma omp parallel num_threads(threads)
    {
        worker wk;
        memset(&wk, 0, sizeof wk);
        ms_image_init(&wk.im);
        wk.palette = palette;
        wk.scene = ms_synth_scene_new(o->size);
        char msg[1024] = "";
        int ok = wk.scene != NULL;
        if (!ok) snprintf(msg, sizeof msg, "out of memory for a %dx%d scene", o->size, o->size);
#pragma omp for schedule(dynamic, 4)
        for (int i = 0; i < o->count; i++) {
            int stop;
#pragma omp atomic read
            stop = failed;
            if (stop || !ok) continue;
            if (ms_synth_render(o, i, wk.scene)) {
                snprintf(msg, sizeof msg, "scene %d does not fit its buffers", i);
                ok = 0;
            } else if (o->layout == MS_SYNTH_TASKONOMY ? write_taskonomy_scene(o, i, &wk, msg, sizeof msg)
                                                       : write_pascal_scene(o, i, &wk, msg, sizeof msg)) {
                ok = 0;
            }
            if (!ok) {
                /* the first failure is reported; the other threads stop at their next scene */
#pragma omp critical(synth_error)
                if (!first_err[0]) snprintf(first_err, sizeof first_err, "%s", msg);
#pragma omp atomic write
                failed = 1;
            }
        }
        if (!wk.scene) {
#pragma omp critical(synth_error)
            if (!first_err[0]) snprintf(first_err, sizeof first_err, "%s", msg);
#pragma omp atomic write
            failed = 1;
        }
        ms_image_free(&wk.im);
        free(wk.masks);
        ms_synth_scene_free(wk.scene);
    }
    if (failed) {
        snprintf(err, cap, "%s", first_err);
        return -1;
    }
    return o->layout == MS_SYNTH_TASKONOMY ? write_taskonomy_splits(o, err, cap)
                                           : write_pascal_splits(o, err, cap);
}
