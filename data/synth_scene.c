/* Scene sampling and ray casting for the synthetic scenes (synth.h). A scene is a room
 * [0,W] x [0,D] x [0,H] (z up) with openings to the sky, objects standing on the floor and, in
 * PASCAL scenes, person figures built of 14 parts; one pinhole camera and one point light.
 * syn_cast() shoots one ray per pixel and records everything the labels need. */
#include <math.h>
#include <string.h>

#include "../model/rng.h"
#include "synth_internal.h"

#define PI_F 3.14159265f
#define DEG (PI_F / 180.0f)
#define HIT_EPS 1e-4f

/* ---- random numbers: one sequential stream per scene part, keyed by (seed, what, key) ------- */

typedef struct {
    uint64_t s;
} syn_rng;

static syn_rng rng_for(uint64_t seed, const char *what, uint64_t key) {
    return (syn_rng){ms_rng_bits(seed, ms_rng_stream(what), key)};
}

static uint64_t rng_next(syn_rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float uni(syn_rng *r, float lo, float hi) {
    return lo + (hi - lo) * (float)((double)(rng_next(r) >> 11) * 0x1.0p-53);
}

static int randint(syn_rng *r, int lo, int hi) { /* inclusive */
    return lo + (int)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

/* ---- small vector helpers -------------------------------------------------------------------- */

static float dot3(const float *a, const float *b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

static void cross3(const float *a, const float *b, float *c) {
    c[0] = a[1] * b[2] - a[2] * b[1];
    c[1] = a[2] * b[0] - a[0] * b[2];
    c[2] = a[0] * b[1] - a[1] * b[0];
}

static void normalize3(float *v) {
    float n = sqrtf(dot3(v, v));
    if (n > 0) v[0] /= n, v[1] /= n, v[2] /= n;
}

static void set3(float *v, float x, float y, float z) { v[0] = x, v[1] = y, v[2] = z; }

/* Rows of R: an orthonormal frame whose third axis is `axis` (unit). */
static void frame_from_axis(const float *axis, float *R) {
    float h[3] = {0, 0, 1};
    if (fabsf(axis[2]) > 0.9f) set3(h, 1, 0, 0);
    float u[3], v[3];
    cross3(h, axis, u);
    normalize3(u);
    cross3(axis, u, v);
    memcpy(R, u, sizeof u);
    memcpy(R + 3, v, sizeof v);
    memcpy(R + 6, axis, 3 * sizeof(float));
}

static void frame_yaw(float yaw, float *R) {
    float c = cosf(yaw), s = sinf(yaw);
    const float F[9] = {c, s, 0, -s, c, 0, 0, 0, 1};
    memcpy(R, F, sizeof F);
}

static void random_unit(syn_rng *r, float *v) {
    float z = uni(r, -1, 1), a = uni(r, 0, 2 * PI_F), s = sqrtf(fmaxf(0.0f, 1 - z * z));
    set3(v, s * cosf(a), s * sinf(a), z);
}

/* ---- colours and textures -------------------------------------------------------------------- */

static const float k_family[MS_SYNTH_N_COLOURS][3] = {
    {0.80f, 0.16f, 0.12f}, /* red */
    {0.16f, 0.62f, 0.22f}, /* green */
    {0.14f, 0.26f, 0.78f}, /* blue */
    {0.88f, 0.76f, 0.14f}, /* yellow */
    {0.90f, 0.90f, 0.86f}, /* white */
};

static void jitter(syn_rng *r, const float *in, float amount, float *out) {
    for (int c = 0; c < 3; c++) out[c] = fminf(1.0f, fmaxf(0.02f, in[c] + uni(r, -amount, amount)));
}

/* Room styles: the room type (class_scene) decides the wall and floor patterns, so the scene
 * class is predictable from appearance. */
typedef struct {
    syn_tex_kind wall, floor;
    float wall_a[3], wall_b[3], floor_a[3], floor_b[3];
    float wall_period, floor_period;
} room_style;

static const room_style k_rooms[MS_SYNTH_N_ROOM_TYPES] = {
    /* bathroom */
    {TEX_TILES, TEX_CHECKER, {.92f, .93f, .95f}, {.55f, .60f, .65f}, {.85f, .87f, .90f},
     {.35f, .45f, .60f}, 0.15f, 0.2f},
    /* bedroom */
    {TEX_STRIPES, TEX_PLANKS, {.85f, .78f, .85f}, {.72f, .64f, .78f}, {.55f, .38f, .22f},
     {.30f, .20f, .12f}, 0.12f, 0.14f},
    /* classroom */
    {TEX_NOISE, TEX_TILES, {.75f, .85f, .72f}, {.60f, .74f, .58f}, {.70f, .70f, .68f},
     {.40f, .40f, .40f}, 0.5f, 0.5f},
    /* corridor */
    {TEX_SOLID, TEX_CHECKER, {.86f, .82f, .70f}, {.86f, .82f, .70f}, {.80f, .78f, .70f},
     {.45f, .30f, .25f}, 1.0f, 0.45f},
    /* dining room */
    {TEX_STRIPES, TEX_PLANKS, {.80f, .35f, .30f}, {.92f, .86f, .74f}, {.62f, .45f, .30f},
     {.35f, .22f, .14f}, 0.25f, 0.18f},
    /* kitchen */
    {TEX_TILES, TEX_CHECKER, {.95f, .95f, .92f}, {.60f, .62f, .60f}, {.92f, .92f, .90f},
     {.12f, .12f, .14f}, 0.12f, 0.3f},
    /* living room */
    {TEX_NOISE, TEX_PLANKS, {.90f, .84f, .70f}, {.76f, .68f, .54f}, {.70f, .55f, .38f},
     {.42f, .30f, .20f}, 0.35f, 0.16f},
    /* office */
    {TEX_SOLID, TEX_NOISE, {.70f, .76f, .84f}, {.70f, .76f, .84f}, {.45f, .47f, .50f},
     {.30f, .32f, .36f}, 1.0f, 0.08f},
};

void syn_room_kinds(int room_type, int *wall_kind, int *floor_kind) {
    *wall_kind = (int)k_rooms[room_type].wall;
    *floor_kind = (int)k_rooms[room_type].floor;
}

static int add_texture(syn_world *w, syn_rng *r, syn_tex_kind kind, const float *a, const float *b,
                       float period) {
    syn_texture *t = &w->tex[w->n_tex];
    t->kind = kind;
    memcpy(t->a, a, sizeof t->a);
    memcpy(t->b, b, sizeof t->b);
    t->period = period;
    random_unit(r, t->axis);
    for (int c = 0; c < 3; c++) t->offset[c] = uni(r, 0, 4 * period);
    t->seed = (uint32_t)rng_next(r);
    return w->n_tex++;
}

/* An object texture around a base colour: a pattern of the colour and a darker or paler
 * variant, so the colour family stays recognisable. */
static int object_texture(syn_world *w, syn_rng *r, const float *base) {
    float a[3], b[3];
    jitter(r, base, 0.06f, a);
    int pale = randint(r, 0, 1);
    for (int c = 0; c < 3; c++) b[c] = pale ? a[c] + 0.55f * (1 - a[c]) : 0.45f * a[c];
    static const syn_tex_kind kinds[] = {TEX_SOLID, TEX_STRIPES, TEX_STRIPES, TEX_CHECKER,
                                         TEX_CHECKER, TEX_NOISE};
    syn_tex_kind kind = kinds[randint(r, 0, 5)];
    return add_texture(w, r, kind, a, b, uni(r, 0.06f, 0.2f));
}

/* ---- objects --------------------------------------------------------------------------------- */

typedef struct {
    float x, y, radius; /* floor footprint */
} footprint;

/* A floor position for a footprint of `radius` away from the walls, the camera and the
 * footprints placed so far; 0 when none is found. */
static int place(syn_rng *r, const syn_world *w, const footprint *fp, int n_fp, float radius,
                 float *x, float *y) {
    float W = w->room[0], D = w->room[1];
    if (2 * radius + 0.1f >= W || 2 * radius + 0.1f >= D) return 0;
    for (int tries = 0; tries < 30; tries++) {
        float px = uni(r, radius + 0.05f, W - radius - 0.05f);
        float py = uni(r, radius + 0.05f, D - radius - 0.05f);
        float ex = px - w->eye[0], ey = py - w->eye[1];
        if (ex * ex + ey * ey < (radius + 0.45f) * (radius + 0.45f)) continue;
        int ok = 1;
        for (int i = 0; i < n_fp && ok; i++) {
            float dx = px - fp[i].x, dy = py - fp[i].y, m = radius + fp[i].radius + 0.05f;
            ok = dx * dx + dy * dy >= m * m;
        }
        if (ok) {
            *x = px, *y = py;
            return 1;
        }
    }
    return 0;
}

static float prim_bound(const syn_prim *p) {
    switch (p->kind) {
    case MS_SYNTH_BOX: return sqrtf(p->h[0] * p->h[0] + p->h[1] * p->h[1] + p->h[2] * p->h[2]);
    case MS_SYNTH_SPHERE: return p->h[0];
    case MS_SYNTH_CYLINDER: return sqrtf(p->h[0] * p->h[0] + p->h[2] * p->h[2]);
    default: return p->h[2] + p->h[0];
    }
}

static syn_prim *new_prim(syn_world *w, ms_synth_shape kind, int object, int part, int tex) {
    syn_prim *p = &w->prims[w->n_prims++];
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->object = object;
    p->part = part;
    p->tex = tex;
    return p;
}

/* A capsule from a to b of radius rad (a person's limb). */
static void capsule_between(syn_prim *p, const float *a, const float *b, float rad) {
    float axis[3] = {b[0] - a[0], b[1] - a[1], b[2] - a[2]};
    float len = sqrtf(dot3(axis, axis));
    normalize3(axis);
    for (int c = 0; c < 3; c++) p->c[c] = 0.5f * (a[c] + b[c]);
    frame_from_axis(axis, p->R);
    p->h[0] = rad;
    p->h[2] = 0.5f * len;
}

/* One plain object of `category` at a free floor position; 0 when there is no room for it. */
static int add_object(syn_world *w, syn_rng *r, int category, footprint *fp, int *n_fp) {
    ms_synth_shape shape = (ms_synth_shape)(category / MS_SYNTH_N_COLOURS);
    int colour = category % MS_SYNTH_N_COLOURS;
    float h0 = 0, h1 = 0, h2 = 0, radius;
    int lying = 0;
    switch (shape) {
    case MS_SYNTH_BOX:
        h0 = uni(r, 0.12f, 0.5f), h1 = uni(r, 0.12f, 0.5f), h2 = uni(r, 0.1f, 0.5f);
        radius = sqrtf(h0 * h0 + h1 * h1);
        break;
    case MS_SYNTH_SPHERE: h0 = uni(r, 0.12f, 0.45f), radius = h0; break;
    case MS_SYNTH_CYLINDER:
        h0 = uni(r, 0.1f, 0.35f), h2 = uni(r, 0.12f, 0.55f), lying = uni(r, 0, 1) < 0.3f;
        radius = lying ? sqrtf(h0 * h0 + h2 * h2) : h0;
        break;
    default:
        h0 = uni(r, 0.08f, 0.25f), h2 = uni(r, 0.1f, 0.45f), lying = uni(r, 0, 1) < 0.4f;
        radius = lying ? h2 + h0 : h0;
        break;
    }
    float x, y;
    if (!place(r, w, fp, *n_fp, radius, &x, &y)) return 0;
    fp[(*n_fp)++] = (footprint){x, y, radius};
    int object = w->n_objects;
    int tex = object_texture(w, r, k_family[colour]);
    syn_prim *p = new_prim(w, shape, object, 0, tex);
    set3(p->h, h0, h1, h2);
    float yaw = uni(r, 0, 2 * PI_F);
    switch (shape) {
    case MS_SYNTH_BOX: frame_yaw(yaw, p->R), set3(p->c, x, y, h2); break;
    case MS_SYNTH_SPHERE: {
        float axis[3];
        random_unit(r, axis); /* orients the texture */
        frame_from_axis(axis, p->R);
        set3(p->c, x, y, h0);
        break;
    }
    default:
        if (lying) {
            float axis[3] = {cosf(yaw), sinf(yaw), 0};
            frame_from_axis(axis, p->R);
            set3(p->c, x, y, h0);
        } else {
            frame_yaw(yaw, p->R);
            set3(p->c, x, y, shape == MS_SYNTH_CAPSULE ? h2 + h0 : h2);
        }
    }
    w->category[object] = category;
    w->n_objects++;
    return 1;
}

/* Rotates v about the person's local x axis by angle a: positive swings a downward limb
 * forward (towards local +y). */
static void swing(float *v, float a) {
    float c = cosf(a), s = sinf(a), y = v[1], z = v[2];
    v[1] = y * c - z * s;
    v[2] = y * s + z * c;
}

/* A person's frame: local x right, y forward, z up, standing at `base` (floor point + lift). */
typedef struct {
    float right[3], forward[3], base[3];
} person_frame;

static void to_world(const person_frame *pf, const float *local, float *world) {
    for (int c = 0; c < 3; c++)
        world[c] = pf->base[c] + local[0] * pf->right[c] + local[1] * pf->forward[c] +
                   (c == 2 ? local[2] : 0.0f);
}

/* A standing person figure with random arm and leg poses (PASCAL scenes). Parts follow the
 * PASCAL-Part person names (ms_synth_part_name). */
static int add_person(syn_world *w, syn_rng *r, footprint *fp, int *n_fp) {
    float s = uni(r, 1.55f, 1.9f) / 1.75f, x, y;
    if (!place(r, w, fp, *n_fp, 0.38f * s, &x, &y)) return 0;
    fp[(*n_fp)++] = (footprint){x, y, 0.38f * s};
    int object = w->n_objects;
    static const float skins[4][3] = {
        {.95f, .80f, .68f}, {.85f, .64f, .48f}, {.62f, .43f, .30f}, {.40f, .27f, .19f}};
    float skin[3], shirt_a[3], shirt_b[3], pants[3], shoes[3];
    jitter(r, skins[randint(r, 0, 3)], 0.03f, skin);
    for (int c = 0; c < 3; c++) shirt_a[c] = uni(r, 0.1f, 0.95f);
    for (int c = 0; c < 3; c++) shirt_b[c] = 0.5f * shirt_a[c];
    float grey = uni(r, 0.08f, 0.35f);
    set3(pants, grey * uni(r, 0.8f, 1.0f), grey * uni(r, 0.8f, 1.0f), grey * uni(r, 1.0f, 1.6f));
    set3(shoes, 0.08f, 0.07f, 0.06f);
    int t_skin = add_texture(w, r, TEX_SOLID, skin, skin, 1.0f);
    int t_shirt = add_texture(w, r, uni(r, 0, 1) < 0.4f ? TEX_STRIPES : TEX_SOLID, shirt_a,
                              shirt_b, uni(r, 0.04f, 0.1f));
    float pants_b[3] = {0.8f * pants[0], 0.8f * pants[1], 0.8f * pants[2]};
    int t_pants = add_texture(w, r, TEX_NOISE, pants, pants_b, 0.05f);
    int t_shoes = add_texture(w, r, TEX_SOLID, shoes, shoes, 1.0f);
    int long_sleeves = randint(r, 0, 1);

    /* Joints in the person's frame (x right, y forward, z up), metres. */
    float sh[2][3] = {{-0.2f * s, 0, 1.42f * s}, {0.2f * s, 0, 1.42f * s}};
    float hip[2][3] = {{-0.09f * s, 0, 0.92f * s}, {0.09f * s, 0, 0.92f * s}};
    float elbow[2][3], wrist[2][3], hand[2][3], knee[2][3], ankle[2][3];
    for (int side = 0; side < 2; side++) {
        float out = side ? 1.0f : -1.0f, ab = uni(r, 5, 70) * DEG;
        float du[3] = {out * sinf(ab), 0, -cosf(ab)};
        swing(du, uni(r, -35, 60) * DEG);
        float dl[3] = {du[0], du[1], du[2]};
        swing(dl, uni(r, 0, 100) * DEG);
        float dt[3] = {out * uni(r, 0, 0.08f), 0, -1};
        normalize3(dt);
        swing(dt, uni(r, -25, 30) * DEG);
        float ds[3] = {dt[0], dt[1], dt[2]};
        swing(ds, -uni(r, 0, 45) * DEG);
        for (int c = 0; c < 3; c++) {
            elbow[side][c] = sh[side][c] + 0.29f * s * du[c];
            wrist[side][c] = elbow[side][c] + 0.26f * s * dl[c];
            hand[side][c] = wrist[side][c] + 0.05f * s * dl[c];
            knee[side][c] = hip[side][c] + 0.43f * s * dt[c];
            ankle[side][c] = knee[side][c] + 0.42f * s * ds[c];
        }
    }
    /* Stand on the floor: the lower ankle sits just above it. */
    float lift = 0.075f * s - fminf(ankle[0][2], ankle[1][2]);

    float yaw = uni(r, 0, 2 * PI_F);
    person_frame pf = {{sinf(yaw), -cosf(yaw), 0}, {cosf(yaw), sinf(yaw), 0}, {x, y, lift}};
    const float *ax = pf.right, *ay = pf.forward;
    float a[3], b[3];
    syn_prim *p;
    /* 1 head */
    p = new_prim(w, MS_SYNTH_SPHERE, object, 1, t_skin);
    float head[3] = {0, 0.01f * s, 1.59f * s};
    to_world(&pf, head, p->c);
    p->h[0] = 0.11f * s;
    frame_yaw(yaw, p->R);
    /* 2 torso */
    p = new_prim(w, MS_SYNTH_BOX, object, 2, t_shirt);
    float torso[3] = {0, 0, 1.19f * s};
    to_world(&pf, torso, p->c);
    set3(p->h, 0.17f * s, 0.1f * s, 0.27f * s);
    const float R_torso[9] = {ax[0], ax[1], 0, ay[0], ay[1], 0, 0, 0, 1};
    memcpy(p->R, R_torso, sizeof R_torso);
    for (int side = 0; side < 2; side++) {
        int base = side ? 6 : 3; /* luarm llarm lhand / ruarm rlarm rhand */
        p = new_prim(w, MS_SYNTH_CAPSULE, object, base, t_shirt);
        to_world(&pf, sh[side], a);
        to_world(&pf, elbow[side], b);
        capsule_between(p, a, b, 0.05f * s);
        p = new_prim(w, MS_SYNTH_CAPSULE, object, base + 1, long_sleeves ? t_shirt : t_skin);
        to_world(&pf, elbow[side], a);
        to_world(&pf, wrist[side], b);
        capsule_between(p, a, b, 0.042f * s);
        p = new_prim(w, MS_SYNTH_SPHERE, object, base + 2, t_skin);
        to_world(&pf, hand[side], p->c);
        p->h[0] = 0.05f * s;
        frame_yaw(yaw, p->R);
    }
    for (int side = 0; side < 2; side++) {
        int base = side ? 12 : 9; /* luleg llleg lfoot / ruleg rlleg rfoot */
        p = new_prim(w, MS_SYNTH_CAPSULE, object, base, t_pants);
        to_world(&pf, hip[side], a);
        to_world(&pf, knee[side], b);
        capsule_between(p, a, b, 0.07f * s);
        p = new_prim(w, MS_SYNTH_CAPSULE, object, base + 1, t_pants);
        to_world(&pf, knee[side], a);
        to_world(&pf, ankle[side], b);
        capsule_between(p, a, b, 0.055f * s);
        p = new_prim(w, MS_SYNTH_BOX, object, base + 2, t_shoes);
        float foot[3] = {ankle[side][0], ankle[side][1] + 0.05f * s, ankle[side][2] - 0.035f * s};
        to_world(&pf, foot, p->c);
        set3(p->h, 0.045f * s, 0.11f * s, 0.035f * s);
        memcpy(p->R, R_torso, sizeof R_torso);
    }
    w->category[object] = MS_SYNTH_PERSON;
    w->n_objects++;
    return 1;
}

/* ---- room, camera, light --------------------------------------------------------------------- */

static void sample_room(syn_world *w, syn_rng *r) {
    w->room_type = randint(r, 0, MS_SYNTH_N_ROOM_TYPES - 1);
    const room_style *st = &k_rooms[w->room_type];
    if (w->room_type == 3) /* corridor: long and narrow */
        set3(w->room, uni(r, 2.2f, 3.0f), uni(r, 6, 10), uni(r, 2.5f, 3.0f));
    else
        set3(w->room, uni(r, 3.2f, 6.5f), uni(r, 3.2f, 6.5f), uni(r, 2.5f, 3.2f));
    if (randint(r, 0, 1)) { /* either orientation of a long room */
        float t = w->room[0];
        w->room[0] = w->room[1], w->room[1] = t;
    }
    float wa[3], wb[3], fa[3], fb[3], ceiling[3];
    float dw = uni(r, -0.05f, 0.05f), df = uni(r, -0.05f, 0.05f);
    for (int c = 0; c < 3; c++) {
        wa[c] = fminf(1, fmaxf(0, st->wall_a[c] + dw)), wb[c] = fminf(1, fmaxf(0, st->wall_b[c] + dw));
        fa[c] = fminf(1, fmaxf(0, st->floor_a[c] + df)), fb[c] = fminf(1, fmaxf(0, st->floor_b[c] + df));
    }
    w->wall_tex = add_texture(w, r, st->wall, wa, wb, st->wall_period * uni(r, 0.85f, 1.15f));
    /* Wall stripes run vertically: across the along-wall coordinate u. */
    set3(w->tex[w->wall_tex].axis, 1, 0, 0);
    w->floor_tex = add_texture(w, r, st->floor, fa, fb, st->floor_period * uni(r, 0.85f, 1.15f));
    set3(w->tex[w->floor_tex].axis, 0, 1, 0);
    jitter(r, (const float[3]){0.93f, 0.93f, 0.9f}, 0.03f, ceiling);
    w->ceiling_tex = add_texture(w, r, TEX_SOLID, ceiling, ceiling, 1.0f);

    /* Openings to the sky on distinct walls: windows and doorways. */
    w->n_openings = randint(r, 1, 3);
    int used = 0;
    for (int i = 0; i < w->n_openings; i++) {
        int wall;
        do wall = randint(r, 0, 3);
        while (used & (1 << wall));
        used |= 1 << wall;
        float len = wall < 2 ? w->room[1] : w->room[0];
        syn_opening *o = &w->openings[i];
        o->wall = wall;
        int door = uni(r, 0, 1) < 0.35f;
        float width = door ? uni(r, 0.8f, 1.2f) : uni(r, 0.8f, 1.8f);
        width = fminf(width, len - 0.6f);
        o->u0 = uni(r, 0.3f, len - width - 0.3f);
        o->u1 = o->u0 + width;
        o->z0 = door ? 0.0f : uni(r, 0.7f, 1.0f);
        o->z1 = door ? uni(r, 2.0f, 2.2f) : fminf(uni(r, 1.9f, 2.4f), w->room[2] - 0.2f);
    }
    jitter(r, (const float[3]){0.35f, 0.55f, 0.9f}, 0.05f, w->sky_zenith);
    jitter(r, (const float[3]){0.78f, 0.86f, 0.95f}, 0.04f, w->sky_horizon);
    jitter(r, (const float[3]){0.45f, 0.5f, 0.4f}, 0.05f, w->sky_ground);
    set3(w->eye, uni(r, 0.5f, w->room[0] - 0.5f), uni(r, 0.5f, w->room[1] - 0.5f),
         w->layout == MS_SYNTH_PASCAL ? uni(r, 0.9f, 1.8f) : uni(r, 1.0f, 1.7f));
}

static void sample_contents(syn_world *w, syn_rng *r) {
    footprint fp[MS_SYNTH_MAX_OBJECTS];
    int n_fp = 0;
    if (w->layout == MS_SYNTH_PASCAL) {
        float u = uni(r, 0, 1);
        int persons = u < 0.25f ? 0 : u < 0.65f ? 1 : u < 0.9f ? 2 : 3;
        for (int i = 0; i < persons; i++) add_person(w, r, fp, &n_fp);
        int n = randint(r, 2, 6);
        /* 19 categories: the 20th (white capsule) has no VOC class left (person is the 20th). */
        for (int i = 0; i < n; i++) add_object(w, r, randint(r, 0, 18), fp, &n_fp);
    } else {
        int n = randint(r, 4, 9);
        for (int i = 0; i < n; i++) {
            int shape = randint(r, 0, MS_SYNTH_N_SHAPES - 1), colour = randint(r, 0, 3);
            add_object(w, r, shape * MS_SYNTH_N_COLOURS + colour, fp, &n_fp);
        }
    }
}

static void sample_light(syn_world *w, syn_rng *r) {
    set3(w->light, uni(r, 0.5f, w->room[0] - 0.5f), uni(r, 0.5f, w->room[1] - 0.5f),
         w->room[2] - uni(r, 0.15f, 0.5f));
    w->ambient = uni(r, 0.18f, 0.35f);
    if (randint(r, 0, 1))
        set3(w->light_tint, 1.0f, uni(r, 0.9f, 1.0f), uni(r, 0.78f, 0.95f)); /* warm */
    else
        set3(w->light_tint, uni(r, 0.85f, 0.95f), uni(r, 0.92f, 1.0f), 1.0f); /* cool */
}

/* Looks at one of the objects (or anywhere), with a little pitch and roll; the field of view
 * spans the longer image side. */
static void sample_view(syn_world *w, syn_rng *r, float aim_share) {
    float yaw = uni(r, 0, 2 * PI_F), pitch = uni(r, -30, 0) * DEG;
    if (w->n_objects > 0 && uni(r, 0, 1) < aim_share) {
        /* photographs of people: a person, when there is one, is the usual subject */
        int target = randint(r, 0, w->n_objects - 1);
        if (w->category[0] == MS_SYNTH_PERSON && uni(r, 0, 1) < 0.7f) {
            int persons = 0;
            while (persons < w->n_objects && w->category[persons] == MS_SYNTH_PERSON) persons++;
            target = randint(r, 0, persons - 1);
        }
        const syn_group *g = &w->groups[target];
        float d[3] = {g->centre[0] - w->eye[0], g->centre[1] - w->eye[1], g->centre[2] - w->eye[2]};
        yaw = atan2f(d[1], d[0]) + uni(r, -12, 12) * DEG;
        pitch = atan2f(d[2], sqrtf(d[0] * d[0] + d[1] * d[1])) + uni(r, -6, 6) * DEG;
    }
    float roll = uni(r, -3, 3) * DEG;
    set3(w->fwd, cosf(pitch) * cosf(yaw), cosf(pitch) * sinf(yaw), sinf(pitch));
    float r0[3] = {sinf(yaw), -cosf(yaw), 0}, up0[3], d0[3];
    cross3(r0, w->fwd, up0);
    set3(d0, -up0[0], -up0[1], -up0[2]);
    for (int c = 0; c < 3; c++) {
        w->right[c] = cosf(roll) * r0[c] + sinf(roll) * d0[c];
        w->down[c] = -sinf(roll) * r0[c] + cosf(roll) * d0[c];
    }
    int longer = w->width > w->height ? w->width : w->height;
    float hfov = uni(r, 50, 75) * DEG;
    w->fx = w->fy = 0.5f * (float)longer / tanf(0.5f * hfov);
    w->cx = 0.5f * (float)w->width;
    w->cy = 0.5f * (float)w->height;
}

static void bound_groups(syn_world *w) {
    w->n_groups = w->n_objects;
    for (int g = 0; g < w->n_groups; g++) {
        syn_group *G = &w->groups[g];
        G->first_prim = -1, G->n_prims = 0;
        float lo[3] = {1e30f, 1e30f, 1e30f}, hi[3] = {-1e30f, -1e30f, -1e30f};
        for (int i = 0; i < w->n_prims; i++) {
            syn_prim *p = &w->prims[i];
            if (p->object != g) continue;
            if (G->first_prim < 0) G->first_prim = i;
            G->n_prims++;
            p->bound = prim_bound(p);
            for (int c = 0; c < 3; c++) {
                lo[c] = fminf(lo[c], p->c[c] - p->bound);
                hi[c] = fmaxf(hi[c], p->c[c] + p->bound);
            }
        }
        for (int c = 0; c < 3; c++) G->centre[c] = 0.5f * (lo[c] + hi[c]);
        G->radius = 0;
        for (int i = G->first_prim; i < G->first_prim + G->n_prims; i++) {
            const syn_prim *p = &w->prims[i];
            float d[3] = {p->c[0] - G->centre[0], p->c[1] - G->centre[1], p->c[2] - G->centre[2]};
            G->radius = fmaxf(G->radius, sqrtf(dot3(d, d)) + p->bound);
        }
    }
}

/* The screen rectangle that certainly holds each group's projection: the projected corners of
 * the cube around its bounding sphere (exact hull when the cube is in front of the camera),
 * or the whole image when the cube reaches behind it. */
static void screen_rects(syn_world *w) {
    for (int g = 0; g < w->n_groups; g++) {
        syn_group *G = &w->groups[g];
        float umin = 1e30f, umax = -1e30f, vmin = 1e30f, vmax = -1e30f;
        int behind = 0;
        for (int k = 0; k < 8 && !behind; k++) {
            float q[3];
            for (int c = 0; c < 3; c++)
                q[c] = G->centre[c] + ((k >> c) & 1 ? G->radius : -G->radius) - w->eye[c];
            float z = dot3(q, w->fwd);
            if (z < 0.05f) {
                behind = 1;
                break;
            }
            float u = w->cx + w->fx * dot3(q, w->right) / z - 0.5f;
            float v = w->cy + w->fy * dot3(q, w->down) / z - 0.5f;
            umin = fminf(umin, u), umax = fmaxf(umax, u), vmin = fminf(vmin, v), vmax = fmaxf(vmax, v);
        }
        if (behind) {
            G->x0 = 0, G->y0 = 0, G->x1 = w->width - 1, G->y1 = w->height - 1;
            continue;
        }
        float lim = 4.0f * (float)(w->width + w->height);
        umin = fmaxf(umin, -lim), vmin = fmaxf(vmin, -lim), umax = fminf(umax, lim), vmax = fminf(vmax, lim);
        G->x0 = (int)floorf(umin) - 1, G->x1 = (int)ceilf(umax) + 1;
        G->y0 = (int)floorf(vmin) - 1, G->y1 = (int)ceilf(vmax) + 1;
        if (G->x0 < 0) G->x0 = 0;
        if (G->y0 < 0) G->y0 = 0;
        if (G->x1 > w->width - 1) G->x1 = w->width - 1;
        if (G->y1 > w->height - 1) G->y1 = w->height - 1;
    }
}

static void image_size(const ms_synth_opts *o, syn_rng *r, int *height, int *width) {
    int S = o->size;
    if (o->layout == MS_SYNTH_TASKONOMY) {
        *height = *width = S;
        return;
    }
    /* PASCAL photographs: mostly 4:3 landscape, some portrait, 3:2 and square. */
    float u = uni(r, 0, 1);
    int short_side = u < 0.45f ? (S * 3 + 2) / 4 : u < 0.6f ? (S * 2 + 1) / 3 : u < 0.7f ? S : (S * 3 + 2) / 4;
    if (u >= 0.7f) *height = S, *width = short_side; /* portrait */
    else *height = short_side, *width = S;
}

void syn_sample_world(const ms_synth_opts *o, int index, syn_world *w) {
    memset(w, 0, sizeof *w);
    w->layout = o->layout;
    syn_rng room, view;
    if (o->layout == MS_SYNTH_TASKONOMY) {
        int b, p, v;
        ms_synth_location(o, index, &b, &p, &v);
        uint64_t point = ((uint64_t)b << 32) | (uint64_t)p;
        room = rng_for(o->seed, "synth.taskonomy.point", point);
        view = rng_for(o->seed, "synth.taskonomy.view", point * 4 + (uint64_t)v);
    } else {
        room = rng_for(o->seed, "synth.pascal.scene", (uint64_t)index);
        view = rng_for(o->seed, "synth.pascal.view", (uint64_t)index);
    }
    image_size(o, &view, &w->height, &w->width);
    sample_room(w, &room);
    sample_contents(w, &room);
    sample_light(w, &room);
    bound_groups(w);
    sample_view(w, &view, o->layout == MS_SYNTH_PASCAL ? 0.85f : 0.75f);
    screen_rects(w);
}

/* ---- ray casting ----------------------------------------------------------------------------- */

/* Entry distance of a ray (origin oc relative to the centre, unit d) into a sphere of radius
 * rad, or INFINITY. */
static float sphere_hit(const float *oc, const float *d, float rad) {
    float b = dot3(oc, d), c = dot3(oc, oc) - rad * rad;
    if (c > 0 && b > 0) return INFINITY;
    float disc = b * b - c;
    if (disc < 0) return INFINITY;
    float t = -b - sqrtf(disc);
    return t > HIT_EPS ? t : INFINITY;
}

/* Nearest entry of the ray into prim p before tmax, or INFINITY; *face says which face. */
static float prim_hit(const syn_prim *p, const float *o, const float *d, float tmax, int *face) {
    float oc[3] = {o[0] - p->c[0], o[1] - p->c[1], o[2] - p->c[2]};
    if (p->kind == MS_SYNTH_SPHERE) {
        *face = 0;
        float t = sphere_hit(oc, d, p->h[0]);
        return t < tmax ? t : INFINITY;
    }
    const float *R = p->R;
    float ol[3] = {dot3(R, oc), dot3(R + 3, oc), dot3(R + 6, oc)};
    float dl[3] = {dot3(R, d), dot3(R + 3, d), dot3(R + 6, d)};
    if (p->kind == MS_SYNTH_BOX) {
        float tn = -INFINITY, tf = INFINITY;
        int ax = 0;
        for (int a = 0; a < 3; a++) {
            if (fabsf(dl[a]) < 1e-12f) {
                if (fabsf(ol[a]) > p->h[a]) return INFINITY;
                continue;
            }
            float inv = 1.0f / dl[a], t1 = (-p->h[a] - ol[a]) * inv, t2 = (p->h[a] - ol[a]) * inv;
            if (t1 > t2) {
                float t = t1;
                t1 = t2, t2 = t;
            }
            if (t1 > tn) tn = t1, ax = a;
            if (t2 < tf) tf = t2;
            if (tn > tf) return INFINITY;
        }
        if (tn < HIT_EPS || tn >= tmax) return INFINITY;
        *face = 2 * ax + (dl[ax] < 0); /* odd: the +h side */
        return tn;
    }
    /* cylinder or capsule about local z */
    float rad = p->h[0], hz = p->h[2], best = tmax;
    int bf = -1;
    float a = dl[0] * dl[0] + dl[1] * dl[1];
    if (a > 1e-12f) {
        float b = ol[0] * dl[0] + ol[1] * dl[1], c = ol[0] * ol[0] + ol[1] * ol[1] - rad * rad;
        float disc = b * b - a * c;
        if (disc >= 0) {
            float t = (-b - sqrtf(disc)) / a;
            if (t > HIT_EPS && t < best && fabsf(ol[2] + t * dl[2]) <= hz) best = t, bf = 0;
        }
    }
    if (p->kind == MS_SYNTH_CYLINDER) {
        if (fabsf(dl[2]) > 1e-12f) {
            float zc = dl[2] < 0 ? hz : -hz, t = (zc - ol[2]) / dl[2];
            if (t > HIT_EPS && t < best) {
                float x = ol[0] + t * dl[0], y = ol[1] + t * dl[1];
                if (x * x + y * y <= rad * rad) best = t, bf = dl[2] < 0 ? 1 : 2;
            }
        }
    } else {
        for (int cap = 1; cap <= 2; cap++) {
            float zc = cap == 1 ? hz : -hz, q[3] = {ol[0], ol[1], ol[2] - zc};
            float t = sphere_hit(q, dl, rad);
            if (t < best) {
                float z = ol[2] + t * dl[2];
                if (cap == 1 ? z >= hz : z <= -hz) best = t, bf = cap;
            }
        }
    }
    if (bf < 0) return INFINITY;
    *face = bf;
    return best;
}

/* Normal (world), principal curvatures and texture point of prim p at world point x. */
static void prim_surface(const syn_prim *p, int face, const float *x, float *n, float *k1, float *k2,
                         float *tp) {
    const float *R = p->R;
    float q[3] = {x[0] - p->c[0], x[1] - p->c[1], x[2] - p->c[2]};
    float l[3] = {dot3(R, q), dot3(R + 3, q), dot3(R + 6, q)}, nl[3] = {0, 0, 0};
    memcpy(tp, l, sizeof l);
    float inv_r = 1.0f / p->h[0];
    *k1 = *k2 = 0;
    switch (p->kind) {
    case MS_SYNTH_BOX: nl[face / 2] = (face & 1) ? 1.0f : -1.0f; break;
    case MS_SYNTH_SPHERE:
        set3(nl, l[0] * inv_r, l[1] * inv_r, l[2] * inv_r);
        *k1 = *k2 = inv_r;
        break;
    case MS_SYNTH_CYLINDER:
        if (face == 0) set3(nl, l[0] * inv_r, l[1] * inv_r, 0), *k1 = inv_r;
        else nl[2] = face == 1 ? 1.0f : -1.0f;
        break;
    default:
        if (face == 0) set3(nl, l[0] * inv_r, l[1] * inv_r, 0), *k1 = inv_r;
        else {
            float zc = face == 1 ? p->h[2] : -p->h[2];
            set3(nl, l[0] * inv_r, l[1] * inv_r, (l[2] - zc) * inv_r);
            *k1 = *k2 = inv_r;
        }
    }
    for (int c = 0; c < 3; c++) n[c] = R[c] * nl[0] + R[3 + c] * nl[1] + R[6 + c] * nl[2];
    normalize3(n);
}

/* Where a ray from inside leaves the room: distance, surface 0..5, or SYN_SURF_SKY when it
 * leaves through an opening. */
static float room_exit(const syn_world *w, const float *o, const float *d, int *surf) {
    float t = INFINITY;
    int s = 0;
    for (int a = 0; a < 3; a++) {
        if (d[a] == 0) continue;
        float ta = d[a] > 0 ? (w->room[a] - o[a]) / d[a] : -o[a] / d[a];
        if (ta < t) t = ta, s = a == 2 ? (d[a] > 0 ? 5 : 4) : 2 * a + (d[a] > 0);
    }
    if (s < 4) {
        float u = s < 2 ? o[1] + t * d[1] : o[0] + t * d[0], z = o[2] + t * d[2];
        for (int i = 0; i < w->n_openings; i++) {
            const syn_opening *op = &w->openings[i];
            if (op->wall == s && u >= op->u0 && u <= op->u1 && z >= op->z0 && z <= op->z1) {
                s = SYN_SURF_SKY;
                break;
            }
        }
    }
    *surf = s;
    return t;
}

/* ---- textures -------------------------------------------------------------------------------- */

static float hash01(int32_t x, int32_t y, int32_t z, uint32_t seed) {
    uint32_t h = seed ^ ((uint32_t)x * 0x8DA6B343u) ^ ((uint32_t)y * 0xD8163841u) ^ ((uint32_t)z * 0xCB1AB31Fu);
    h ^= h >> 16;
    h *= 0x7FEB352Du;
    h ^= h >> 15;
    h *= 0x846CA68Bu;
    h ^= h >> 16;
    return (float)(h >> 8) * (1.0f / 16777216.0f);
}

static float smooth(float t) { return t * t * (3 - 2 * t); }

/* Trilinear value noise in [0, 1). */
static float value_noise(const float *p, uint32_t seed) {
    float fx = floorf(p[0]), fy = floorf(p[1]), fz = floorf(p[2]);
    int32_t ix = (int32_t)fx, iy = (int32_t)fy, iz = (int32_t)fz;
    float tx = smooth(p[0] - fx), ty = smooth(p[1] - fy), tz = smooth(p[2] - fz), acc = 0;
    for (int k = 0; k < 8; k++) {
        int dx = k & 1, dy = (k >> 1) & 1, dz = k >> 2;
        float wgt = (dx ? tx : 1 - tx) * (dy ? ty : 1 - ty) * (dz ? tz : 1 - tz);
        acc += wgt * hash01(ix + dx, iy + dy, iz + dz, seed);
    }
    return acc;
}

static float frac(float x) { return x - floorf(x); }

/* Albedo at texture point p; returns which of the two colours dominates (0 / 1). */
static int texture_at(const syn_texture *t, const float *p, float *albedo) {
    float q[3] = {(p[0] + t->offset[0]) / t->period, (p[1] + t->offset[1]) / t->period,
                  (p[2] + t->offset[2]) / t->period};
    int phase = 0;
    float mix = 0;
    switch (t->kind) {
    case TEX_SOLID: break;
    case TEX_STRIPES: phase = (int)floorf(dot3(q, t->axis)) & 1, mix = (float)phase; break;
    case TEX_CHECKER:
        phase = ((int)floorf(q[0]) + (int)floorf(q[1]) + (int)floorf(q[2])) & 1;
        mix = (float)phase;
        break;
    case TEX_NOISE: {
        float q2[3] = {2.03f * q[0], 2.03f * q[1], 2.03f * q[2]};
        mix = 0.65f * value_noise(q, t->seed) + 0.35f * value_noise(q2, t->seed ^ 0x5bd1e995u);
        mix = fminf(1, fmaxf(0, 2.2f * (mix - 0.5f) + 0.5f));
        phase = mix > 0.5f;
        break;
    }
    case TEX_TILES: /* room surfaces only: (u, v) in p[0], p[1]; grout lines in colour b */
        phase = frac(q[0]) < 0.07f || frac(q[1]) < 0.07f;
        mix = (float)phase;
        break;
    case TEX_PLANKS: { /* boards along u, one period wide, 8 periods long, staggered joints */
        int board = (int)floorf(q[1]);
        float along = q[0] / 8.0f + hash01(board, 0, 0, t->seed);
        int piece = (int)floorf(along);
        int seam = frac(q[1]) < 0.06f || frac(along) < 0.008f;
        float shade = 0.8f + 0.35f * hash01(board, piece, 1, t->seed);
        for (int c = 0; c < 3; c++) albedo[c] = seam ? t->b[c] : fminf(1, t->a[c] * shade);
        return seam;
    }
    }
    for (int c = 0; c < 3; c++) albedo[c] = t->a[c] + mix * (t->b[c] - t->a[c]);
    return phase;
}

/* ---- the cast -------------------------------------------------------------------------------- */

static const float k_room_normal[SYN_ROOM_SURFACES][3] = {{1, 0, 0}, {-1, 0, 0}, {0, 1, 0},
                                                         {0, -1, 0}, {0, 0, 1}, {0, 0, -1}};

/* Whether anything lies between x and the light (the room itself never does: the light is
 * inside it). */
static int shadowed(const syn_world *w, const float *x, const float *l, float dist) {
    for (int g = 0; g < w->n_groups; g++) {
        const syn_group *G = &w->groups[g];
        float oc[3] = {x[0] - G->centre[0], x[1] - G->centre[1], x[2] - G->centre[2]};
        float b = dot3(oc, l), c = dot3(oc, oc) - G->radius * G->radius;
        if (c > 0 && (b > 0 || b * b < c)) continue; /* ahead of the sphere or missing it */
        if (-b - G->radius > dist) continue;
        for (int i = G->first_prim; i < G->first_prim + G->n_prims; i++) {
            int face;
            if (prim_hit(&w->prims[i], x, l, dist, &face) < dist) return 1;
        }
    }
    return 0;
}

void syn_cast(const syn_world *w, ms_synth_scene *s, syn_scratch *sc) {
    int H = w->height, W = w->width;
    s->height = H, s->width = W;
    for (int y = 0; y < H; y++) {
        for (int x = 0; x < W; x++) {
            size_t i = (size_t)y * W + x;
            float a = ((float)x + 0.5f - w->cx) / w->fx, b = ((float)y + 0.5f - w->cy) / w->fy;
            float d[3];
            for (int c = 0; c < 3; c++) d[c] = w->fwd[c] + a * w->right[c] + b * w->down[c];
            normalize3(d);
            int surf, face = 0;
            float t = room_exit(w, w->eye, d, &surf);
            int prim = -1;
            for (int g = 0; g < w->n_groups; g++) {
                const syn_group *G = &w->groups[g];
                if (x < G->x0 || x > G->x1 || y < G->y0 || y > G->y1) continue;
                float oc[3] = {w->eye[0] - G->centre[0], w->eye[1] - G->centre[1],
                               w->eye[2] - G->centre[2]};
                float bb = dot3(oc, d), cc = dot3(oc, oc) - G->radius * G->radius;
                if (bb * bb < cc || (cc > 0 && bb > 0) || -bb - G->radius > t) continue;
                for (int k = G->first_prim; k < G->first_prim + G->n_prims; k++) {
                    int f;
                    float tk = prim_hit(&w->prims[k], w->eye, d, t, &f);
                    if (tk < t) t = tk, prim = k, face = f;
                }
            }
            float *rgb = s->rgb + 3 * i, *alb = s->albedo + 3 * i, *nrm = s->normal + 3 * i;
            if (prim < 0 && surf == (int)SYN_SURF_SKY) {
                /* the sky: a vertical gradient, below the horizon a hazy ground */
                float e = d[2];
                for (int c = 0; c < 3; c++) {
                    float v = e >= 0 ? w->sky_horizon[c] + fminf(1, 2.5f * e) * (w->sky_zenith[c] - w->sky_horizon[c])
                                     : w->sky_ground[c] + expf(8 * e) * (w->sky_horizon[c] - w->sky_ground[c]);
                    alb[c] = rgb[c] = v;
                    nrm[c] = 0;
                }
                s->valid[i] = 0;
                s->depth_euclidean[i] = s->depth_zbuffer[i] = 0;
                s->curvature[2 * i] = s->curvature[2 * i + 1] = 0;
                s->reshading[i] = 0;
                s->instance[i] = 0, s->part[i] = 0;
                sc->surf[i] = SYN_SURF_SKY, sc->face[i] = 0, sc->phase[i] = 0;
                continue;
            }
            float p[3] = {w->eye[0] + t * d[0], w->eye[1] + t * d[1], w->eye[2] + t * d[2]};
            float n[3], k1 = 0, k2 = 0, tp[3];
            const syn_texture *tex;
            if (prim >= 0) {
                const syn_prim *P = &w->prims[prim];
                prim_surface(P, face, p, n, &k1, &k2, tp);
                tex = &w->tex[P->tex];
                s->instance[i] = (uint16_t)(P->object + 1);
                s->part[i] = (uint8_t)P->part;
                sc->surf[i] = (uint16_t)(SYN_ROOM_SURFACES + prim);
            } else {
                memcpy(n, k_room_normal[surf], sizeof n);
                if (surf < 2) set3(tp, p[1], p[2], 0);
                else if (surf < 4) set3(tp, p[0], p[2], 0);
                else set3(tp, p[0], p[1], 0);
                tex = &w->tex[surf == 4 ? w->floor_tex : surf == 5 ? w->ceiling_tex : w->wall_tex];
                s->instance[i] = 0, s->part[i] = 0;
                sc->surf[i] = (uint16_t)surf;
            }
            sc->face[i] = (uint8_t)face;
            sc->phase[i] = (uint8_t)texture_at(tex, tp, alb);

            float L[3] = {w->light[0] - p[0], w->light[1] - p[1], w->light[2] - p[2]};
            float dist = sqrtf(dot3(L, L));
            for (int c = 0; c < 3; c++) L[c] /= dist;
            float ndl = fmaxf(0.0f, dot3(n, L));
            float lit = ndl;
            if (ndl > 0) {
                float q[3] = {p[0] + 1e-3f * n[0], p[1] + 1e-3f * n[1], p[2] + 1e-3f * n[2]};
                if (shadowed(w, q, L, dist)) lit = 0;
            }
            float shade = w->ambient + (1 - w->ambient) * lit;
            for (int c = 0; c < 3; c++) rgb[c] = sqrtf(fminf(1.0f, alb[c] * shade * w->light_tint[c]));
            s->reshading[i] = w->ambient + (1 - w->ambient) * ndl;
            s->valid[i] = 1;
            s->depth_euclidean[i] = t;
            s->depth_zbuffer[i] = t * dot3(d, w->fwd);
            nrm[0] = dot3(n, w->right), nrm[1] = dot3(n, w->down), nrm[2] = -dot3(n, w->fwd);
            normalize3(nrm);
            s->curvature[2 * i] = k1, s->curvature[2 * i + 1] = k2;
        }
    }
}
