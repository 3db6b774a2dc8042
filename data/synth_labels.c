/* The labels of a synthetic scene that need more than one pixel or the whole image: texture
 * and occlusion edges, corner scores, unsupervised segments, semantic maps, saliency and the
 * image-level logits. Everything is computed from the primary buffers syn_cast() filled, so
 * the labels agree with the image pixel for pixel. */
#include <math.h>
#include <string.h>

#include "synth_internal.h"

/* Harris: R = det(M) - HARRIS_K tr(M)^2 of the blurred structure tensor M, mapped to a score
 * R / (R + R0) in [0, 1). R0 puts the corners of a full-contrast pattern near 0.5-0.9 and keeps
 * straight edges (R < 0) at 0. */
#define HARRIS_K 0.05f
#define KP2D_R0 1e-4f
#define KP3D_R0 5e-3f

/* edge_occlusion: a relative depth jump beyond OCC_JUMP starts an occlusion edge on the near
 * side (full strength OCC_RAMP later); where depth is continuous, a crease between two faces
 * reaches full strength at CREASE_ANGLE. */
#define OCC_JUMP 0.02f
#define OCC_RAMP 0.05f
#define CREASE_COS 0.8660254f /* cos 30 degrees */

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ---- texture edges --------------------------------------------------------------------------- */

/* |Sobel| / 4 of the albedo luminance, where a neighbour on another surface counts as the centre
 * value: only changes of the texture inside one surface make texture edges; the outlines of
 * objects are occlusion edges, not texture edges. */
static void edge_texture(const ms_synth_scene *s, const syn_scratch *sc, float *lum) {
    int H = s->height, W = s->width;
    for (int i = 0; i < H * W; i++) {
        const float *a = s->albedo + 3 * (size_t)i;
        lum[i] = 0.299f * a[0] + 0.587f * a[1] + 0.114f * a[2];
    }
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            size_t i = (size_t)y * W + x;
            float v[3][3];
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    size_t j = (size_t)clampi(y + dy, 0, H - 1) * W + clampi(x + dx, 0, W - 1);
                    v[dy + 1][dx + 1] = sc->surf[j] == sc->surf[i] ? lum[j] : lum[i];
                }
            /* differences first: a uniform patch gives exactly 0 */
            float gx = ((v[0][2] - v[0][0]) + 2 * (v[1][2] - v[1][0]) + (v[2][2] - v[2][0])) * 0.25f;
            float gy = ((v[2][0] - v[0][0]) + 2 * (v[2][1] - v[0][1]) + (v[2][2] - v[0][2])) * 0.25f;
            s->edge_texture[i] = sqrtf(gx * gx + gy * gy);
        }
}

/* ---- occlusion edges ------------------------------------------------------------------------- */

static void edge_occlusion(const ms_synth_scene *s, const syn_scratch *sc) {
    int H = s->height, W = s->width;
    static const int nb[4][2] = {{1, 0}, {-1, 0}, {0, 1}, {0, -1}};
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            size_t i = (size_t)y * W + x;
            float e = 0;
            if (s->valid[i]) {
                float dp = s->depth_euclidean[i];
                const float *np = s->normal + 3 * i;
                for (int k = 0; k < 4; k++) {
                    int qx = x + nb[k][0], qy = y + nb[k][1];
                    if (qx < 0 || qy < 0 || qx >= W || qy >= H) continue;
                    size_t j = (size_t)qy * W + qx;
                    if (!s->valid[j]) { /* the depth jumps to the sky */
                        e = 1;
                        break;
                    }
                    if (sc->surf[j] == sc->surf[i] && sc->face[j] == sc->face[i]) continue;
                    float jump = (s->depth_euclidean[j] - dp) / dp;
                    float v = 0;
                    if (jump > OCC_JUMP) {
                        v = (jump - OCC_JUMP) / OCC_RAMP;
                    } else if (jump >= -OCC_JUMP) {
                        const float *nq = s->normal + 3 * j;
                        float cosang = np[0] * nq[0] + np[1] * nq[1] + np[2] * nq[2];
                        v = (1 - cosang) / (1 - CREASE_COS);
                    }
                    e = fmaxf(e, fminf(1.0f, v));
                }
            }
            s->edge_occlusion[i] = e;
        }
}

/* ---- corner scores (Harris) ------------------------------------------------------------------ */

/* 5-tap binomial blur [1 4 6 4 1] / 16 along rows then columns, clamped at the borders. */
static void blur5(float *a, float *tmp, int H, int W) {
    static const float k[5] = {1.0f / 16, 4.0f / 16, 6.0f / 16, 4.0f / 16, 1.0f / 16};
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float acc = 0;
            for (int t = -2; t <= 2; t++) acc += k[t + 2] * a[(size_t)y * W + clampi(x + t, 0, W - 1)];
            tmp[(size_t)y * W + x] = acc;
        }
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float acc = 0;
            for (int t = -2; t <= 2; t++) acc += k[t + 2] * tmp[(size_t)clampi(y + t, 0, H - 1) * W + x];
            a[(size_t)y * W + x] = acc;
        }
}

/* Corner score of a C-channel image img[P, C] (channel stride C). Where valid is given, an
 * invalid neighbour counts as the centre value and invalid pixels score 0. f holds four [P]
 * scratch buffers. */
static void harris(const float *img, int C, const uint8_t *valid, int H, int W, float r0,
                   float *const *f, float *out) {
    float *Ixx = f[0], *Iyy = f[1], *Ixy = f[2], *tmp = f[3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            size_t i = (size_t)y * W + x;
            float xx = 0, yy = 0, xy = 0;
            for (int c = 0; c < C; c++) {
                float v[3][3];
                for (int dy = -1; dy <= 1; dy++)
                    for (int dx = -1; dx <= 1; dx++) {
                        size_t j = (size_t)clampi(y + dy, 0, H - 1) * W + clampi(x + dx, 0, W - 1);
                        v[dy + 1][dx + 1] = (!valid || valid[j]) ? img[j * C + c] : img[i * C + c];
                    }
                float gx = ((v[0][2] - v[0][0]) + 2 * (v[1][2] - v[1][0]) + (v[2][2] - v[2][0])) * 0.125f;
                float gy = ((v[2][0] - v[0][0]) + 2 * (v[2][1] - v[0][1]) + (v[2][2] - v[0][2])) * 0.125f;
                xx += gx * gx, yy += gy * gy, xy += gx * gy;
            }
            Ixx[i] = xx, Iyy[i] = yy, Ixy[i] = xy;
        }
    blur5(Ixx, tmp, H, W);
    blur5(Iyy, tmp, H, W);
    blur5(Ixy, tmp, H, W);
    for (size_t i = 0; i < (size_t)H * W; i++) {
        float tr = Ixx[i] + Iyy[i];
        float R = Ixx[i] * Iyy[i] - Ixy[i] * Ixy[i] - HARRIS_K * tr * tr;
        out[i] = (valid && !valid[i]) || R <= 0 ? 0.0f : R / (R + r0);
    }
}

/* ---- segments -------------------------------------------------------------------------------- */

static int surf_key(uint16_t surf) { return surf == SYN_SURF_SKY ? SYN_SURF_KEYS - 1 : surf; }

/* Ids in order of first appearance in raster order, written as id x 5 (saturating at 255) so
 * that ~50 segments spread over the 8-bit range like Taskonomy's. */
static void number_segments(const int *key, int n_keys, int16_t *table, size_t P, uint8_t *out) {
    for (int k = 0; k < n_keys; k++) table[k] = -1;
    int next = 0;
    for (size_t i = 0; i < P; i++) {
        int k = key[i];
        if (table[k] < 0) table[k] = (int16_t)next++;
        int v = table[k] * 5;
        out[i] = (uint8_t)(v > 255 ? 255 : v);
    }
}

static void segments(const ms_synth_scene *s, syn_scratch *sc) {
    size_t P = (size_t)s->height * s->width;
    int *key = sc->key;
    /* 2.5D: one segment per geometric face (a box side, a cylinder cap, a wall) */
    for (size_t i = 0; i < P; i++) key[i] = surf_key(sc->surf[i]) * 8 + sc->face[i];
    number_segments(key, SYN_SURF_KEYS * 8, sc->seg_id, P, s->segment_unsup25d);
    /* 2D: one segment per surface and texture colour (appearance, blind to creases) */
    for (size_t i = 0; i < P; i++) key[i] = surf_key(sc->surf[i]) * 2 + sc->phase[i];
    number_segments(key, SYN_SURF_KEYS * 2, sc->seg_id, P, s->segment_unsup2d);
}

/* ---- semantics ------------------------------------------------------------------------------- */

static int taskonomy_class(int category) {
    int shape = category / MS_SYNTH_N_COLOURS, colour = category % MS_SYNTH_N_COLOURS;
    if (category == MS_SYNTH_PERSON || colour >= 4) return 0; /* not a Taskonomy class */
    return 2 + shape * 4 + colour;
}

static int room_context(uint16_t surf) {
    if (surf == SYN_SURF_SKY) return SYN_CTX_SKY;
    return surf == 4 ? SYN_CTX_FLOOR : surf == 5 ? SYN_CTX_CEILING : SYN_CTX_WALL;
}

static void semantics(const syn_world *w, ms_synth_scene *s, const syn_scratch *sc) {
    int H = s->height, W = s->width;
    size_t P = (size_t)H * W;
    int person_visible = 0;
    for (size_t i = 0; i < P; i++) {
        int obj = s->instance[i] - 1;
        if (obj < 0) {
            s->segment_semantic[i] = s->valid[i] ? 1 : 0;
            s->semseg[i] = 0;
            s->context[i] = room_context(sc->surf[i]);
            continue;
        }
        int cat = w->category[obj];
        s->segment_semantic[i] = (uint8_t)taskonomy_class(cat);
        s->semseg[i] = (uint8_t)syn_voc_class(cat);
        s->context[i] = syn_context_class(cat);
        if (cat == MS_SYNTH_PERSON) person_visible = 1;
    }
    /* VOC-style void outline: object pixels next to another class are ignored. */
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            size_t i = (size_t)y * W + x;
            int c = syn_voc_class(s->instance[i] ? w->category[s->instance[i] - 1] : -1);
            if (c == 0) continue;
            static const int nb[4][2] = {{1, 0}, {-1, 0}, {0, 1}, {0, -1}};
            for (int k = 0; k < 4; k++) {
                int qx = x + nb[k][0], qy = y + nb[k][1];
                if (qx < 0 || qy < 0 || qx >= W || qy >= H) continue;
                size_t j = (size_t)qy * W + qx;
                int cq = syn_voc_class(s->instance[j] ? w->category[s->instance[j] - 1] : -1);
                if (cq != c) {
                    s->semseg[i] = 255;
                    break;
                }
            }
        }
    for (size_t i = 0; i < P; i++) {
        int obj = s->instance[i] - 1;
        if (!person_visible) s->human_parts[i] = 255;
        else if (obj >= 0 && w->category[obj] == MS_SYNTH_PERSON)
            s->human_parts[i] = (uint8_t)ms_synth_part_class(s->part[i]);
        else s->human_parts[i] = 0;
    }
}

/* Salient: every person and every object about as near as the nearest one, among those covering
 * at least 1% of the image; the room is never salient. */
static void saliency(const syn_world *w, ms_synth_scene *s) {
    size_t P = (size_t)s->height * s->width;
    double depth_sum[MS_SYNTH_MAX_OBJECTS] = {0};
    for (size_t i = 0; i < P; i++)
        if (s->instance[i]) depth_sum[s->instance[i] - 1] += s->depth_euclidean[i];
    int min_pixels = (int)(P / 100) > 1 ? (int)(P / 100) : 1;
    double nearest = INFINITY, mean[MS_SYNTH_MAX_OBJECTS];
    for (int k = 0; k < s->n_objects; k++) {
        mean[k] = s->objects[k].pixels ? depth_sum[k] / s->objects[k].pixels : INFINITY;
        if (s->objects[k].pixels >= min_pixels && mean[k] < nearest) nearest = mean[k];
    }
    uint8_t salient[MS_SYNTH_MAX_OBJECTS];
    for (int k = 0; k < s->n_objects; k++)
        salient[k] = s->objects[k].pixels >= min_pixels &&
                     (w->category[k] == MS_SYNTH_PERSON || mean[k] <= 1.25 * nearest);
    for (size_t i = 0; i < P; i++) s->saliency[i] = s->instance[i] ? salient[s->instance[i] - 1] : 0;
}

/* ---- image-level logits ---------------------------------------------------------------------- */

/* class_object: log(share of the image + 1e-4) per ImageNet class, so the softmax target is the
 * visible area of each class (plus a little mass everywhere). */
static void class_object(const syn_world *w, ms_synth_scene *s) {
    size_t P = (size_t)s->height * s->width;
    double share[MS_SYNTH_N_CLASS_OBJECT] = {0};
    for (int k = 0; k < s->n_objects; k++) {
        int c = ms_synth_imagenet_class(w->category[k]);
        if (c >= 0) share[c] += (double)s->objects[k].pixels / (double)P;
    }
    for (int c = 0; c < MS_SYNTH_N_CLASS_OBJECT; c++) s->class_object[c] = (float)log(share[c] + 1e-4);
}

/* class_scene: the room type's Places365 class high, the room types that share its wall
 * pattern (+2) or floor pattern (+1.5) somewhat raised, everything else 0. */
static void class_scene(const syn_world *w, ms_synth_scene *s) {
    memset(s->class_scene, 0, sizeof s->class_scene);
    int wall, floor_kind;
    syn_room_kinds(w->room_type, &wall, &floor_kind);
    for (int r = 0; r < MS_SYNTH_N_ROOM_TYPES; r++) {
        int rw, rf;
        syn_room_kinds(r, &rw, &rf);
        float v = r == w->room_type ? 6.0f : (rw == wall ? 2.0f : 0.0f) + (rf == floor_kind ? 1.5f : 0.0f);
        s->class_scene[ms_synth_room_places(r)] = v;
    }
}

void syn_labels(const syn_world *w, ms_synth_scene *s, syn_scratch *sc) {
    int H = s->height, W = s->width;
    size_t P = (size_t)H * W;
    s->n_objects = w->n_objects;
    for (int k = 0; k < w->n_objects; k++) {
        s->objects[k].category = w->category[k];
        s->objects[k].voc = syn_voc_class(w->category[k]);
        s->objects[k].pixels = 0;
    }
    for (size_t i = 0; i < P; i++)
        if (s->instance[i]) s->objects[s->instance[i] - 1].pixels++;

    edge_texture(s, sc, sc->f[4]);
    edge_occlusion(s, sc);
    /* keypoints2d: corners of the rendered image's luminance */
    float *lum = sc->f[4];
    for (size_t i = 0; i < P; i++) {
        const float *c = s->rgb + 3 * i;
        lum[i] = 0.299f * c[0] + 0.587f * c[1] + 0.114f * c[2];
    }
    harris(lum, 1, NULL, H, W, KP2D_R0, sc->f, s->keypoints2d);
    /* keypoints3d: corners of the surface geometry (where the normal turns two ways) */
    harris(s->normal, 3, s->valid, H, W, KP3D_R0, sc->f, s->keypoints3d);
    segments(s, sc);
    semantics(w, s, sc);
    saliency(w, s);
    class_object(w, s);
    class_scene(w, s);
}
