/* Synthetic scenes: options, scene buffers, rendering one scene, the file encodings and the
 * naming of files and classes (synth.h). Sampling and ray casting live in synth_scene.c, the
 * derived labels in synth_labels.c, the two dataset layouts in synth_write.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "synth_internal.h"

/* ---- options --------------------------------------------------------------------------------- */

void ms_synth_defaults(ms_synth_opts *o, ms_synth_layout layout) {
    memset(o, 0, sizeof *o);
    o->layout = layout;
    o->count = 100;
    o->size = 128;
    o->buildings = 35;
    if (layout == MS_SYNTH_TASKONOMY) {
        o->split[0] = 0.7, o->split[1] = 0.15, o->split[2] = 0.15;
    } else {
        o->split[0] = 0.5, o->split[1] = 0.5, o->split[2] = 0;
    }
    o->jpeg_quality = 90;
    o->flags = MS_IO_NOSYNC;
}

int ms_synth_check(const ms_synth_opts *o, char *err, size_t cap) {
    if (o->layout != MS_SYNTH_TASKONOMY && o->layout != MS_SYNTH_PASCAL) {
        snprintf(err, cap, "layout %d: expected taskonomy or pascal", (int)o->layout);
        return -1;
    }
    if (o->count < 1) {
        snprintf(err, cap, "count %d: expected at least 1 scene", o->count);
        return -1;
    }
    if (o->size < 16 || o->size > 4096) {
        snprintf(err, cap, "size %d: expected 16..4096 pixels", o->size);
        return -1;
    }
    if (o->buildings < 1 || o->buildings > MS_SYNTH_MAX_BUILDINGS) {
        snprintf(err, cap, "buildings %d: expected 1..%d", o->buildings, MS_SYNTH_MAX_BUILDINGS);
        return -1;
    }
    if (o->jpeg_quality < 1 || o->jpeg_quality > 100) {
        snprintf(err, cap, "JPEG quality %d: expected 1..100", o->jpeg_quality);
        return -1;
    }
    double sum = 0;
    for (int k = 0; k < 3; k++) {
        if (!(o->split[k] >= 0) || (o->split_counts && o->split[k] != floor(o->split[k]))) {
            snprintf(err, cap, "split share %g: expected a %s", o->split[k],
                     o->split_counts ? "whole count >= 0" : "fraction >= 0");
            return -1;
        }
        sum += o->split[k];
    }
    if (!o->split_counts && sum > 1 + 1e-9) {
        snprintf(err, cap, "split fractions %g,%g,%g sum to %g: expected at most 1", o->split[0],
                 o->split[1], o->split[2], sum);
        return -1;
    }
    if (o->split_counts) {
        int units = o->layout == MS_SYNTH_TASKONOMY
                        ? (o->count < o->buildings ? o->count : o->buildings)
                        : o->count;
        if (sum > units) {
            snprintf(err, cap, "split counts %g,%g,%g need %g %s, but there are %d", o->split[0],
                     o->split[1], o->split[2], sum,
                     o->layout == MS_SYNTH_TASKONOMY ? "buildings" : "images", units);
            return -1;
        }
    }
    if (o->layout == MS_SYNTH_PASCAL && o->split[0] + o->split[1] + o->split[2] <= 0) {
        snprintf(err, cap, "splits put no image in train, val or test");
        return -1;
    }
    return 0;
}

/* ---- scene buffers --------------------------------------------------------------------------- */

ms_synth_scene *ms_synth_scene_new(int max_size) {
    if (max_size < 1 || max_size > 4096) return NULL;
    ms_synth_scene *s = calloc(1, sizeof *s);
    syn_scratch *sc = calloc(1, sizeof *sc);
    if (!s || !sc) {
        free(s);
        free(sc);
        return NULL;
    }
    size_t P = (size_t)max_size * max_size;
    s->capacity = (int)P;
    s->scratch = sc;
    int ok = 1;
#define ALLOC(ptr, n) ok &= ((ptr) = calloc((n), sizeof *(ptr))) != NULL
    ALLOC(s->valid, P);
    ALLOC(s->rgb, 3 * P);
    ALLOC(s->albedo, 3 * P);
    ALLOC(s->depth_euclidean, P);
    ALLOC(s->depth_zbuffer, P);
    ALLOC(s->normal, 3 * P);
    ALLOC(s->curvature, 2 * P);
    ALLOC(s->reshading, P);
    ALLOC(s->edge_texture, P);
    ALLOC(s->edge_occlusion, P);
    ALLOC(s->keypoints2d, P);
    ALLOC(s->keypoints3d, P);
    ALLOC(s->segment_unsup2d, P);
    ALLOC(s->segment_unsup25d, P);
    ALLOC(s->segment_semantic, P);
    ALLOC(s->semseg, P);
    ALLOC(s->human_parts, P);
    ALLOC(s->saliency, P);
    ALLOC(s->context, P);
    ALLOC(s->instance, P);
    ALLOC(s->part, P);
    ALLOC(sc->surf, P);
    ALLOC(sc->face, P);
    ALLOC(sc->phase, P);
    for (int k = 0; k < 5; k++) ALLOC(sc->f[k], P);
    ALLOC(sc->key, P);
#undef ALLOC
    if (!ok) {
        ms_synth_scene_free(s);
        return NULL;
    }
    return s;
}

void ms_synth_scene_free(ms_synth_scene *s) {
    if (!s) return;
    syn_scratch *sc = s->scratch;
    void *bufs[] = {s->valid, s->rgb, s->albedo, s->depth_euclidean, s->depth_zbuffer, s->normal,
                    s->curvature, s->reshading, s->edge_texture, s->edge_occlusion,
                    s->keypoints2d, s->keypoints3d, s->segment_unsup2d, s->segment_unsup25d,
                    s->segment_semantic, s->semseg, s->human_parts, s->saliency, s->context,
                    s->instance, s->part};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    if (sc) {
        free(sc->surf);
        free(sc->face);
        free(sc->phase);
        for (int k = 0; k < 5; k++) free(sc->f[k]);
        free(sc->key);
        free(sc);
    }
    free(s);
}

int ms_synth_render(const ms_synth_opts *o, int index, ms_synth_scene *s) {
    syn_scratch *sc = s->scratch;
    syn_world *w = &sc->world;
    syn_sample_world(o, index, w);
    if ((size_t)w->height * (size_t)w->width > (size_t)s->capacity) return -1;
    s->layout = o->layout;
    syn_cast(w, s, sc);
    s->fx = w->fx, s->fy = w->fy, s->cx = w->cx, s->cy = w->cy;
    float L[3] = {w->light[0] - w->eye[0], w->light[1] - w->eye[1], w->light[2] - w->eye[2]};
    s->light[0] = L[0] * w->right[0] + L[1] * w->right[1] + L[2] * w->right[2];
    s->light[1] = L[0] * w->down[0] + L[1] * w->down[1] + L[2] * w->down[2];
    s->light[2] = -(L[0] * w->fwd[0] + L[1] * w->fwd[1] + L[2] * w->fwd[2]);
    s->ambient = w->ambient;
    s->room_type = w->room_type;
    syn_labels(w, s, sc);
    return 0;
}

/* ---- encodings ------------------------------------------------------------------------------- */

static inline int round_clamp(float v, int lo, int hi) {
    float r = floorf(v + 0.5f);
    return r < (float)lo ? lo : r > (float)hi ? hi : (int)r;
}

int ms_synth_encode(const ms_synth_scene *s, ms_synth_map map, ms_image *im, ms_io_err *err) {
    static const uint8_t channels[MS_SYNTH_N_MAPS] = {3, 1, 1, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    static const uint8_t depth[MS_SYNTH_N_MAPS] = {8, 16, 16, 8, 8, 8, 16, 16, 16, 16, 8, 8, 8, 8, 8};
    if ((int)map < 0 || map >= MS_SYNTH_N_MAPS)
        return ms_io_fail(err, MS_IO_ARG, "synthetic label map %d does not exist", (int)map);
    size_t P = (size_t)s->height * s->width, bytes = P * channels[map] * depth[map] / 8;
    if (bytes > im->capacity) {
        if (im->borrowed)
            return ms_io_fail(err, MS_IO_MISMATCH, "synthetic label map: %zu bytes do not fit the "
                              "caller's %zu-byte buffer", bytes, im->capacity);
        void *p = realloc(im->data, bytes);
        if (!p) return ms_io_fail(err, MS_IO_NOMEM, "synthetic label map: out of memory");
        im->data = p;
        im->capacity = bytes;
    }
    im->height = s->height, im->width = s->width;
    im->channels = channels[map], im->depth = depth[map];
    uint8_t *u8 = im->data;
    uint16_t *u16 = im->data;
    for (size_t i = 0; i < P; i++) {
        int valid = s->valid[i];
        switch (map) {
        case MS_SYNTH_MAP_RGB:
            for (int c = 0; c < 3; c++) u8[3 * i + c] = (uint8_t)round_clamp(255 * s->rgb[3 * i + c], 0, 255);
            break;
        case MS_SYNTH_MAP_DEPTH_EUCLIDEAN:
            u16[i] = valid ? (uint16_t)round_clamp(512 * s->depth_euclidean[i], 0, 64499) : 65535;
            break;
        case MS_SYNTH_MAP_DEPTH_ZBUFFER:
            u16[i] = valid ? (uint16_t)round_clamp(512 * s->depth_zbuffer[i], 0, 64499) : 65535;
            break;
        case MS_SYNTH_MAP_NORMAL:
            for (int c = 0; c < 3; c++)
                u8[3 * i + c] = valid ? (uint8_t)round_clamp(127.5f * (s->normal[3 * i + c] + 1), 0, 255) : 128;
            break;
        case MS_SYNTH_MAP_CURVATURE:
            for (int c = 0; c < 2; c++)
                u8[3 * i + c] = valid ? (uint8_t)round_clamp(127 + 4 * s->curvature[2 * i + c], 1, 255) : 0;
            u8[3 * i + 2] = 0;
            break;
        case MS_SYNTH_MAP_RESHADING:
            u8[3 * i] = u8[3 * i + 1] = u8[3 * i + 2] = (uint8_t)round_clamp(255 * s->reshading[i], 0, 255);
            break;
        case MS_SYNTH_MAP_EDGE_TEXTURE:
            u16[i] = (uint16_t)round_clamp(0.08f * 65536 * s->edge_texture[i], 0, 65535);
            break;
        case MS_SYNTH_MAP_EDGE_OCCLUSION:
            u16[i] = (uint16_t)round_clamp(0.00625f * 65536 * s->edge_occlusion[i], 0, 65535);
            break;
        case MS_SYNTH_MAP_KEYPOINTS2D:
            u16[i] = (uint16_t)round_clamp(0.005f * 65536 * s->keypoints2d[i], 0, 65535);
            break;
        case MS_SYNTH_MAP_KEYPOINTS3D:
            u16[i] = (uint16_t)round_clamp(65535 * s->keypoints3d[i], 0, 65535);
            break;
        case MS_SYNTH_MAP_SEGMENT_UNSUP2D: u8[i] = s->segment_unsup2d[i]; break;
        case MS_SYNTH_MAP_SEGMENT_UNSUP25D: u8[i] = s->segment_unsup25d[i]; break;
        case MS_SYNTH_MAP_SEGMENT_SEMANTIC: u8[i] = s->segment_semantic[i]; break;
        case MS_SYNTH_MAP_SEMSEG: u8[i] = s->semseg[i]; break;
        case MS_SYNTH_MAP_SALIENCY: u8[i] = s->saliency[i] ? 255 : 0; break;
        default: break;
        }
    }
    return MS_IO_OK;
}

/* ---- files and names ------------------------------------------------------------------------- */

static const ms_synth_domain k_domains[] = {
    {"rgb", "rgb.png", MS_SYNTH_MAP_RGB},
    {"depth_euclidean", "depth_euclidean.png", MS_SYNTH_MAP_DEPTH_EUCLIDEAN},
    {"depth_zbuffer", "depth_zbuffer.png", MS_SYNTH_MAP_DEPTH_ZBUFFER},
    {"normal", "normal.png", MS_SYNTH_MAP_NORMAL},
    {"principal_curvature", "principal_curvature.png", MS_SYNTH_MAP_CURVATURE},
    {"reshading", "reshading.png", MS_SYNTH_MAP_RESHADING},
    {"edge_texture", "edge_texture.png", MS_SYNTH_MAP_EDGE_TEXTURE},
    {"edge_occlusion", "edge_occlusion.png", MS_SYNTH_MAP_EDGE_OCCLUSION},
    {"keypoints2d", "keypoints2d.png", MS_SYNTH_MAP_KEYPOINTS2D},
    {"keypoints3d", "keypoints3d.png", MS_SYNTH_MAP_KEYPOINTS3D},
    {"segment_unsup2d", "segment_unsup2d.png", MS_SYNTH_MAP_SEGMENT_UNSUP2D},
    {"segment_unsup25d", "segment_unsup25d.png", MS_SYNTH_MAP_SEGMENT_UNSUP25D},
    {"segment_semantic", "segmentsemantic.png", MS_SYNTH_MAP_SEGMENT_SEMANTIC},
    {"class_object", "class_object.npy", -1},
    {"class_scene", "class_places.npy", -1},
};
#define N_DOMAINS ((int)(sizeof k_domains / sizeof k_domains[0]))

int ms_synth_domain_count(void) { return N_DOMAINS; }

const ms_synth_domain *ms_synth_domain_at(int i) {
    return i >= 0 && i < N_DOMAINS ? &k_domains[i] : NULL;
}

const ms_synth_domain *ms_synth_domain_find(const char *domain) {
    for (int i = 0; i < N_DOMAINS; i++)
        if (!strcmp(k_domains[i].domain, domain)) return &k_domains[i];
    return NULL;
}

void ms_synth_location(const ms_synth_opts *o, int index, int *building, int *point, int *view) {
    int B = o->buildings > 0 ? o->buildings : 1, j = index / B;
    *building = index % B;
    *point = j / 2;
    *view = j % 2;
}

void ms_synth_building_name(int b, char name[16]) {
    static const char *syl[20] = {"ba", "ke", "li", "mo", "nu", "ra", "se", "ti", "vo", "za",
                                  "da", "fe", "gi", "ho", "ju", "la", "me", "ni", "po", "ru"};
    /* 3037 is coprime to 8000, so b -> code is a bijection of 0..7999: unique names that do
     * not look like a counter. */
    int code = (int)(((long)b * 3037 + 1234) % 8000);
    snprintf(name, 16, "%s%s%s", syl[code / 400], syl[(code / 20) % 20], syl[code % 20]);
}

int ms_synth_taskonomy_path(const ms_synth_opts *o, int index, const char *domain, char *buf,
                            size_t cap) {
    const ms_synth_domain *d = ms_synth_domain_find(domain);
    if (!d) return -1;
    int b, p, v;
    ms_synth_location(o, index, &b, &p, &v);
    char name[16];
    ms_synth_building_name(b, name);
    int n = snprintf(buf, cap, "%s/%s/taskonomy/%s/point_%d_view_%d_domain_%s", o->out, domain,
                     name, p, v, d->suffix);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

void ms_synth_pascal_id(int index, char id[32]) { snprintf(id, 32, "synth_%06d", index); }

static const char *const k_room_names[MS_SYNTH_N_ROOM_TYPES] = {
    "bathroom", "bedroom", "classroom", "corridor", "dining_room", "kitchen", "living_room", "office"};
/* Places365 indices (categories_places365.txt) of the room types. */
static const int k_room_places[MS_SYNTH_N_ROOM_TYPES] = {45, 52, 92, 106, 121, 203, 215, 244};

const char *ms_synth_room_name(int room_type) {
    return room_type >= 0 && room_type < MS_SYNTH_N_ROOM_TYPES ? k_room_names[room_type] : "?";
}

int ms_synth_room_places(int room_type) {
    return room_type >= 0 && room_type < MS_SYNTH_N_ROOM_TYPES ? k_room_places[room_type] : -1;
}

static const char *const k_parts[MS_SYNTH_N_PERSON_PARTS + 1] = {
    "", "head", "torso", "luarm", "llarm", "lhand", "ruarm", "rlarm", "rhand",
    "luleg", "llleg", "lfoot", "ruleg", "rlleg", "rfoot"};
/* The 6-part grouping of PASCAL_MT (HUMAN_PART[6] of the reference loader): head 1, torso 2,
 * upper arms 3, lower arms and hands 4, upper legs 5, lower legs and feet 6. */
static const uint8_t k_part_class[MS_SYNTH_N_PERSON_PARTS + 1] = {0, 1, 2, 3, 4, 4, 3, 4, 4,
                                                                  5, 6, 6, 5, 6, 6};

const char *ms_synth_part_name(int part) {
    return part >= 1 && part <= MS_SYNTH_N_PERSON_PARTS ? k_parts[part] : "";
}

int ms_synth_part_class(int part) {
    return part >= 1 && part <= MS_SYNTH_N_PERSON_PARTS ? k_part_class[part] : 0;
}

/* ImageNet classes of the 16 Taskonomy categories (shape-major, colours red green blue yellow):
 * containers for boxes, balls for spheres, barrels and tubs for cylinders, bottles for
 * capsules. A convention of these scenes; only its consistency matters. */
static const short k_imagenet[MS_SYNTH_N_SHAPES][4] = {
    {478, 519, 492, 692}, /* carton, crate, chest, packet */
    {430, 852, 805, 890}, /* basketball, tennis ball, soccer ball, volleyball */
    {427, 756, 463, 876}, /* barrel, rain barrel, bucket, tub */
    {720, 737, 898, 907}, /* pill bottle, pop bottle, water bottle, wine bottle */
};

int ms_synth_imagenet_class(int category) {
    if (category < 0 || category >= MS_SYNTH_PERSON) return -1;
    int colour = category % MS_SYNTH_N_COLOURS;
    return colour < 4 ? k_imagenet[category / MS_SYNTH_N_COLOURS][colour] : -1;
}

int syn_voc_class(int category) {
    if (category == MS_SYNTH_PERSON) return 15;
    if (category < 0 || category >= MS_SYNTH_PERSON - 1) return 0;
    return category < 14 ? category + 1 : category + 2; /* the 19 VOC classes other than person */
}

int syn_context_class(int category) {
    /* PASCAL-Context ids of the 20 VOC classes (CONTEXT_CATEGORY_LABELS of the reference) */
    static const short ctx[21] = {0,   2,   23,  25,  31,  34,  45,  59,  65,  72, 98,
                                  397, 113, 207, 258, 284, 308, 347, 368, 416, 427};
    int voc = syn_voc_class(category);
    return voc > 0 ? ctx[voc] : SYN_CTX_WALL;
}
