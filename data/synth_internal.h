/* Shared by the synthetic-scene renderer's files (synth.c, synth_scene.c, synth_labels.c,
 * synth_write.c); not part of the public API in synth.h. */
#ifndef MS_DATA_SYNTH_INTERNAL_H
#define MS_DATA_SYNTH_INTERNAL_H

#include <stdint.h>

#include "synth.h"

#define SYN_MAX_PRIMS 64    /* 6 plain objects + 3 persons x 14 parts fit easily */
#define SYN_MAX_TEXTURES 64
#define SYN_MAX_OPENINGS 4
#define SYN_SURF_SKY 0xFFFFu
#define SYN_ROOM_SURFACES 6 /* walls x = 0, x = W, y = 0, y = D; floor; ceiling */

typedef enum { TEX_SOLID, TEX_STRIPES, TEX_CHECKER, TEX_NOISE, TEX_TILES, TEX_PLANKS } syn_tex_kind;

/* A procedural texture evaluated at a 3-D point of the surface (object frame, or (u, v, 0) for
 * room surfaces), so that patterns are seamless across box edges and around curved shapes. */
typedef struct {
    syn_tex_kind kind;
    float a[3], b[3]; /* the two albedos */
    float period;     /* metres */
    float axis[3];    /* stripes: unit direction across the stripes */
    float offset[3];  /* shifts the pattern */
    uint32_t seed;    /* noise lattice, plank shades */
} syn_texture;

typedef struct {
    ms_synth_shape kind;
    float c[3];  /* centre, world */
    float R[9];  /* rows: the local x, y, z axes in world coordinates (world -> local) */
    float h[3];  /* box: half extents; sphere: h[0] radius; cylinder / capsule: h[0] radius,
                    h[2] half length of the axis (local z) between the cap centres */
    float bound; /* bounding-sphere radius around c */
    int object;  /* owner: index into syn_world.objects */
    int part;    /* person part 1..14, 0 for plain objects */
    int tex;     /* index into syn_world.tex */
} syn_prim;

/* A plain object (one prim) or a person (14 prims), culled as a whole. */
typedef struct {
    int first_prim, n_prims;
    float centre[3], radius; /* bounding sphere of its prims */
    int x0, y0, x1, y1;      /* conservative screen rectangle, inclusive (empty: x0 > x1) */
} syn_group;

typedef struct {
    int wall;           /* 0..3, as the room surfaces */
    float u0, u1;       /* along the wall (metres) */
    float z0, z1;       /* height range */
} syn_opening;

typedef struct {
    ms_synth_layout layout;
    int height, width;
    float room[3]; /* W, D, H: the room spans [0,W] x [0,D] x [0,H], z up */
    int room_type;
    int n_openings;
    syn_opening openings[SYN_MAX_OPENINGS];
    int wall_tex, floor_tex, ceiling_tex;
    float sky_zenith[3], sky_horizon[3], sky_ground[3];

    int n_tex;
    syn_texture tex[SYN_MAX_TEXTURES];
    int n_prims;
    syn_prim prims[SYN_MAX_PRIMS];
    int n_groups; /* = n_objects: group k belongs to object k */
    syn_group groups[MS_SYNTH_MAX_OBJECTS];
    int n_objects;
    int category[MS_SYNTH_MAX_OBJECTS]; /* 0..19 or MS_SYNTH_PERSON */

    float eye[3];                  /* camera centre, world */
    float right[3], down[3], fwd[3];
    float fx, fy, cx, cy;
    float light[3], light_tint[3], ambient;
} syn_world;

/* Segment keys: every room surface and prim, plus the sky. */
#define SYN_SURF_KEYS (SYN_ROOM_SURFACES + SYN_MAX_PRIMS + 1)

/* Per-pixel working memory of one scene (lives in ms_synth_scene.scratch). */
typedef struct {
    uint16_t *surf; /* [P] room surface 0..5, SYN_ROOM_SURFACES + prim, or SYN_SURF_SKY */
    uint8_t *face;  /* [P] face of that surface (box side, cylinder cap, ...) */
    uint8_t *phase; /* [P] which of the texture's two colours */
    float *f[5];    /* [P] each: Harris terms, blur temporary, luminance */
    int *key;       /* [P] segment keys */
    int16_t seg_id[SYN_SURF_KEYS * 8]; /* segment key -> id */
    syn_world world;
} syn_scratch;

/* synth_scene.c: samples scene `index` into w (layout, size, seed, buildings from o). */
void syn_sample_world(const ms_synth_opts *o, int index, syn_world *w);
/* synth_scene.c: casts one ray per pixel and fills the per-pixel primary buffers of s (valid,
 * rgb, albedo, depths, normal, curvature, reshading, instance, part) and scratch surf / face /
 * phase. */
void syn_cast(const syn_world *w, ms_synth_scene *s, syn_scratch *sc);
/* synth_labels.c: derives every other label from the primary buffers. */
void syn_labels(const syn_world *w, ms_synth_scene *s, syn_scratch *sc);

/* synth_scene.c: the wall and floor texture kinds (syn_tex_kind) of a room type. */
void syn_room_kinds(int room_type, int *wall_kind, int *floor_kind);

/* synth.c: VOC class and PASCAL-Context class of an object category. */
int syn_voc_class(int category);
int syn_context_class(int category);

/* PASCAL-Context classes of the room (context_classes.json of the reference loader). */
#define SYN_CTX_WALL 440
#define SYN_CTX_FLOOR 158
#define SYN_CTX_CEILING 68
#define SYN_CTX_SKY 360

#endif
