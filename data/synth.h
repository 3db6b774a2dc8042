/* Synthetic multi-task scenes (DATASETS.md, "Synthetic scenes"): a procedural renderer that
 * ray-casts one ray per pixel through a room (floor, walls, ceiling, window and door openings to
 * the sky) holding boxes, spheres, cylinders, capsules and, in PASCAL scenes, articulated person
 * figures; textured procedurally and lit by a point light. Every label of a scene comes from
 * the same ray cast, so the tasks agree pixel for pixel, and they are written in the real
 * Taskonomy and PASCAL_MT layouts and encodings so that the real loaders read them.
 * docs/synthetic.md describes the scenes and every label.
 *
 * Determinism: scene i depends only on (seed, i, layout, size, buildings); never on the
 * count, the thread count or the order of rendering. Any subset of indices is reproducible.
 *
 * Use: ms_synth_write() writes a whole dataset (OpenMP over scenes). ms_synth_render() renders
 * one scene into an ms_synth_scene (allocated once with ms_synth_scene_new and reused without
 * allocating), so tests can compare what was rendered with what a loader reads back;
 * ms_synth_encode() gives the exact samples a label file holds. */
#ifndef MS_DATA_SYNTH_H
#define MS_DATA_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"

typedef enum { MS_SYNTH_TASKONOMY = 0, MS_SYNTH_PASCAL = 1 } ms_synth_layout;

typedef struct {
    const char *out;        /* output directory (created with its parents) */
    ms_synth_layout layout;
    int count;              /* scenes 0 .. count-1 */
    int size;               /* Taskonomy: S x S images; PASCAL: the longer side */
    uint64_t seed;
    int buildings;          /* Taskonomy: scene i belongs to building i % buildings */
    double split[3];        /* train, val, test shares: fractions summing to <= 1 ... */
    int split_counts;       /* ... or, when set, counts (of buildings / of PASCAL images) */
    int jpeg_quality;       /* PASCAL JPEGImages, 1..100 */
    int threads;            /* OpenMP threads; 0 = the OpenMP default */
    int flags;              /* MS_IO_NOSYNC: skip fsync (the files stay atomic) */
} ms_synth_opts;

/* Defaults: 128 px, 35 buildings (the size of Taskonomy "tiny"), splits 0.7/0.15/0.15
 * (Taskonomy) or 0.5/0.5/0 (PASCAL: train and val lists), JPEG quality 90, MS_IO_NOSYNC. */
void ms_synth_defaults(ms_synth_opts *o, ms_synth_layout layout);
/* Checks the options (count >= 1, 16 <= size <= 4096, 1 <= buildings <= MS_SYNTH_MAX_BUILDINGS,
 * split shares); 0 or -1 with a message for a person in err. */
int ms_synth_check(const ms_synth_opts *o, char *err, size_t cap);
/* Renders and writes every scene, then the split files. 0 on success, -1 with a message naming
 * the path in err. */
int ms_synth_write(const ms_synth_opts *o, char *err, size_t cap);

/* ---- one scene in memory ------------------------------------------------------------------- */

#define MS_SYNTH_MAX_OBJECTS 16 /* objects and persons of one scene */
#define MS_SYNTH_MAX_BUILDINGS 8000
#define MS_SYNTH_N_CLASS_OBJECT 1000 /* ImageNet logits */
#define MS_SYNTH_N_CLASS_SCENE 365   /* Places365 logits */
#define MS_SYNTH_N_ROOM_TYPES 8
#define MS_SYNTH_N_PERSON_PARTS 14   /* PASCAL-Part person parts the figures are built of */

/* Object shapes and colour families: category = shape * MS_SYNTH_N_COLOURS + colour. */
typedef enum { MS_SYNTH_BOX, MS_SYNTH_SPHERE, MS_SYNTH_CYLINDER, MS_SYNTH_CAPSULE } ms_synth_shape;
#define MS_SYNTH_N_SHAPES 4
#define MS_SYNTH_N_COLOURS 5 /* red, green, blue, yellow, white (white: PASCAL only) */
#define MS_SYNTH_PERSON 20   /* category of a person figure */

typedef struct {
    int category; /* 0..19, or MS_SYNTH_PERSON */
    int voc;      /* PASCAL VOC class 1..20 (15 = person) */
    int pixels;   /* visible pixels */
} ms_synth_object;

/* Every per-pixel buffer is row-major over P = height * width pixels. "Invalid" pixels are those
 * whose ray leaves the room through an opening (the sky): valid = 0 there. The float fields hold
 * the values before quantisation; ms_synth_encode() gives the file samples, with the encodings
 * noted on each field (DATASETS.md gives the loaders' decoding). */
typedef struct {
    int height, width; /* H, W of this scene (PASCAL scenes vary in aspect) */
    int capacity;      /* pixels every buffer holds */
    ms_synth_layout layout;

    /* Camera frame of every vector below (Taskonomy's): x right, y down, z towards the viewer.
     * Pixel (x, y) looks along ((x + 0.5 - cx) / fx, (y + 0.5 - cy) / fy, -1). */
    float fx, fy, cx, cy;
    float light[3];  /* point light position, camera frame, metres */
    float ambient;   /* reshading = ambient + (1 - ambient) * max(0, n . l) */
    int room_type;   /* 0..MS_SYNTH_N_ROOM_TYPES-1 (ms_synth_room_name) */

    int n_objects;   /* objects and persons, index = instance id - 1 */
    ms_synth_object objects[MS_SYNTH_MAX_OBJECTS];

    uint8_t *valid;          /* [P] 1 = a surface, 0 = sky (missing depth) */
    float *rgb;              /* [P,3] 0..1 (sRGB-like gamma 2): PNG / JPEG round(255 x) */
    float *albedo;           /* [P,3] 0..1, the texture colour without light */
    float *depth_euclidean;  /* [P] metres along the ray; 0 where invalid: round(512 d), 65535 */
    float *depth_zbuffer;    /* [P] metres along the optical axis; likewise */
    float *normal;           /* [P,3] unit, outward; 0 where invalid: round(127.5 (n + 1)),
                                invalid (128,128,128) */
    float *curvature;        /* [P,2] principal curvatures k1 >= k2 in 1/m, convex > 0:
                                clamp(round(127 + 4 k), 1, 255); channel 2 = 0; invalid (0,0,0) */
    float *reshading;        /* [P] 0..1, albedo 1, no shadows; 0 where invalid: round(255 s) x3 */
    float *edge_texture;     /* [P] >= 0: |Sobel| of albedo luminance inside one surface, a step
                                of contrast c gives c: min(65535, round(0.08 * 65536 g)) */
    float *edge_occlusion;   /* [P] 0..1 depth jump (near side) or crease: round(409.6 e) */
    float *keypoints2d;      /* [P] 0..1 Harris corner score of the rgb: round(327.68 k) */
    float *keypoints3d;      /* [P] 0..1 Harris corner score of the normals: round(65535 k) */
    uint8_t *segment_unsup2d;  /* [P] file value (id x 5): one id per surface and texture phase */
    uint8_t *segment_unsup25d; /* [P] file value (id x 5): one id per geometric face */
    uint8_t *segment_semantic; /* [P] 0 sky, 1 room, 2 + shape * 4 + colour (Taskonomy) */
    float class_object[MS_SYNTH_N_CLASS_OBJECT]; /* logits: log(area share + 1e-4) */
    float class_scene[MS_SYNTH_N_CLASS_SCENE];   /* logits of the room type */

    /* PASCAL_MT labels (filled for both layouts) */
    uint8_t *semseg;      /* [P] VOC class 0..20, 255 on object outlines */
    uint8_t *human_parts; /* [P] 0 background, 1..6 parts; all 255 when no person is visible */
    uint8_t *saliency;    /* [P] 1 = salient: persons and the foremost objects */
    int32_t *context;     /* [P] PASCAL-Context class 1..459 (LabelMap) */
    uint16_t *instance;   /* [P] object index + 1; 0 = room or sky */
    uint8_t *part;        /* [P] person part 1..MS_SYNTH_N_PERSON_PARTS (ms_synth_part_name) */

    void *scratch; /* renderer working memory (surface ids, Harris terms) */
} ms_synth_scene;

/* A scene whose buffers hold max_size x max_size pixels (the size option), or NULL. */
ms_synth_scene *ms_synth_scene_new(int max_size);
void ms_synth_scene_free(ms_synth_scene *s);
/* Renders scene `index` of the dataset o describes (o->out is not used). 0, or -1 when the
 * scene does not fit s. */
int ms_synth_render(const ms_synth_opts *o, int index, ms_synth_scene *s);

/* ---- files ----------------------------------------------------------------------------------- */

/* The image label maps, with the sample layout their files have. */
typedef enum {
    MS_SYNTH_MAP_RGB,                 /* 8-bit RGB (PASCAL writes it as JPEG) */
    MS_SYNTH_MAP_DEPTH_EUCLIDEAN,     /* 16-bit grey */
    MS_SYNTH_MAP_DEPTH_ZBUFFER,       /* 16-bit grey */
    MS_SYNTH_MAP_NORMAL,              /* 8-bit RGB (also PASCAL normals_distill) */
    MS_SYNTH_MAP_CURVATURE,           /* 8-bit RGB */
    MS_SYNTH_MAP_RESHADING,           /* 8-bit RGB, channels equal */
    MS_SYNTH_MAP_EDGE_TEXTURE,        /* 16-bit grey */
    MS_SYNTH_MAP_EDGE_OCCLUSION,      /* 16-bit grey */
    MS_SYNTH_MAP_KEYPOINTS2D,         /* 16-bit grey */
    MS_SYNTH_MAP_KEYPOINTS3D,         /* 16-bit grey */
    MS_SYNTH_MAP_SEGMENT_UNSUP2D,     /* 8-bit grey */
    MS_SYNTH_MAP_SEGMENT_UNSUP25D,    /* 8-bit grey */
    MS_SYNTH_MAP_SEGMENT_SEMANTIC,    /* 8-bit grey */
    MS_SYNTH_MAP_SEMSEG,              /* 8-bit indices (written as a palette PNG) */
    MS_SYNTH_MAP_SALIENCY,            /* 8-bit grey 0 / 255 */
    MS_SYNTH_N_MAPS
} ms_synth_map;

/* Fills im (its own or a borrowed buffer) with exactly the samples of that label file. */
int ms_synth_encode(const ms_synth_scene *s, ms_synth_map map, ms_image *im, ms_io_err *err);

/* One Taskonomy domain: its directory name and the file name ending after
 * "point_P_view_V_domain_" (class_scene: "class_places.npy", segment_semantic:
 * "segmentsemantic.png"). map is -1 for the two .npy domains. */
typedef struct {
    const char *domain;
    const char *suffix;
    int map;
} ms_synth_domain;
int ms_synth_domain_count(void); /* 15 */
const ms_synth_domain *ms_synth_domain_at(int i);
const ms_synth_domain *ms_synth_domain_find(const char *domain);

/* Where Taskonomy scene i lives: building index, point and view (two views per point). */
void ms_synth_location(const ms_synth_opts *o, int index, int *building, int *point, int *view);
/* Building b's name: a pronounceable lower-case word unique for b < MS_SYNTH_MAX_BUILDINGS. */
void ms_synth_building_name(int b, char name[16]);
/* {out}/{domain}/taskonomy/{building}/point_{p}_view_{v}_domain_{suffix}; -1 if it does not fit. */
int ms_synth_taskonomy_path(const ms_synth_opts *o, int index, const char *domain, char *buf,
                            size_t cap);
/* The PASCAL image id of scene i ("synth_000042"). */
void ms_synth_pascal_id(int index, char id[32]);

/* Names for tables and .mat files. */
const char *ms_synth_room_name(int room_type);  /* "bathroom", ... (Places365 names) */
int ms_synth_room_places(int room_type);        /* Places365 index */
const char *ms_synth_part_name(int part);       /* 1..14: "head", "torso", "luarm", ... */
int ms_synth_part_class(int part);              /* the 6-part class 1..6 of PASCAL_MT */
int ms_synth_imagenet_class(int category);      /* ImageNet index of a Taskonomy category */

#endif
