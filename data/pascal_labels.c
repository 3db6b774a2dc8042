/* PASCAL-Context label rules: human part classes, the normals' valid context classes and edges
 * from LabelMap (see pascal_context.h for the sources). */
#include <string.h>

#include "pascal_context.h"

int ms_pascal_part_class(const char *name) {
    /* Multi-Task-Learning-PyTorch data/pascal_context.py, HUMAN_PART[6] */
    static const struct {
        const char *name;
        int part;
    } parts[] = {
        {"hair", 1},  {"head", 1},   {"lear", 1},   {"lebrow", 1}, {"leye", 1},  {"lfoot", 6},
        {"lhand", 4}, {"llarm", 4},  {"llleg", 6},  {"luarm", 3},  {"luleg", 5}, {"mouth", 1},
        {"neck", 2},  {"nose", 1},   {"rear", 1},   {"rebrow", 1}, {"reye", 1},  {"rfoot", 6},
        {"rhand", 4}, {"rlarm", 4},  {"rlleg", 6},  {"ruarm", 3},  {"ruleg", 5}, {"torso", 2},
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (strcmp(parts[i].name, name) == 0) return parts[i].part;
    return 0;
}

/* The context ids of the NYU-compatible classes: every name of nyu_classes.json that is also
 * in context_classes.json (except 'unknown'), mapped through context_classes.json, plus
 * tvmonitor (427), as the reference builds normals_valid_classes. Computed once from the two
 * published JSON files; sorted. */
static const int16_t normals_valid[] = {
    3,   4,   6,   9,   10,  11,  13,  15,  17,  18,  22,  23,  29,  30,  33,  34,  36,  37,
    38,  39,  41,  43,  46,  49,  50,  51,  53,  55,  56,  59,  61,  62,  65,  66,  68,  69,
    72,  73,  78,  83,  84,  85,  87,  88,  95,  96,  101, 104, 105, 107, 111, 113, 115, 122,
    124, 135, 141, 142, 143, 146, 150, 154, 157, 158, 159, 165, 172, 174, 181, 183, 184, 191,
    193, 195, 197, 199, 202, 213, 215, 216, 219, 220, 223, 225, 228, 230, 232, 233, 238, 239,
    242, 243, 246, 250, 251, 252, 255, 260, 261, 263, 269, 272, 273, 275, 281, 283, 284, 285,
    286, 287, 288, 290, 291, 292, 293, 295, 304, 307, 309, 310, 314, 315, 319, 323, 329, 330,
    331, 336, 342, 345, 349, 350, 351, 352, 355, 357, 368, 370, 371, 374, 379, 380, 383, 384,
    397, 401, 403, 405, 407, 408, 411, 412, 413, 414, 417, 419, 421, 423, 427, 429, 430, 432,
    440, 441, 442, 443, 444, 446, 454, 457,
};

int ms_pascal_normals_valid_count(void) {
    return (int)(sizeof normals_valid / sizeof normals_valid[0]);
}

int ms_pascal_normals_valid(int32_t c) {
    int lo = 0, hi = ms_pascal_normals_valid_count() - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (normals_valid[mid] == c) return 1;
        if (normals_valid[mid] < c) lo = mid + 1;
        else hi = mid - 1;
    }
    return 0;
}

/* ---- thin (scikit-image morphology.thin: Guo and Hall 1989) ---------------------------------- */

/* Neighbour bit k of a pixel: 0 east, 1 north-east, 2 north, 3 north-west, 4 west, 5 south-west,
 * 6 south, 7 south-east (scikit-image's correlation mask [[8,4,2],[16,0,1],[32,64,128]]). */
static const int NB_DY[8] = {0, -1, -1, -1, 0, 1, 1, 1};
static const int NB_DX[8] = {1, 1, 0, -1, -1, -1, 0, 1};

/* Deletion tables of the two sub-iterations, from the conditions G1, G2 and G3 / G3' of the
 * paper as scikit-image writes them (_generate_thin_luts). */
static void thin_luts(uint8_t g123[256], uint8_t g123p[256]) {
    for (int n = 0; n < 256; n++) {
        int b[8];
        for (int i = 0; i < 8; i++) b[i] = n >> i & 1;
        int s = 0;
        for (int i = 0; i < 8; i += 2) s += !b[i] && (b[i + 1] || b[(i + 2) % 8]);
        int n1 = 0, n2 = 0;
        for (int k = 1; k < 8; k += 2) {
            n1 += b[k] || b[k - 1];
            n2 += b[k] || b[(k + 1) % 8];
        }
        int m = n1 < n2 ? n1 : n2;
        int g12 = s == 1 && (m == 2 || m == 3);
        int g3 = !((b[1] || b[2] || !b[7]) && b[0]);
        int g3p = !((b[5] || b[6] || !b[3]) && b[4]);
        g123[n] = (uint8_t)(g12 && g3);
        g123p[n] = (uint8_t)(g12 && g3p);
    }
}

void ms_thin(uint8_t *img, int H, int W, uint8_t *code) {
    uint8_t lut[2][256];
    thin_luts(lut[0], lut[1]);
    long count = 0;
    for (long p = 0; p < (long)H * W; p++) count += img[p] != 0, img[p] = img[p] != 0;
    for (;;) {
        for (int sub = 0; sub < 2; sub++) {
            /* every decision of a sub-iteration reads the image before its deletions */
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    int n = 0;
                    for (int k = 0; k < 8; k++) {
                        int yy = y + NB_DY[k], xx = x + NB_DX[k];
                        if (yy >= 0 && yy < H && xx >= 0 && xx < W && img[(long)yy * W + xx])
                            n |= 1 << k;
                    }
                    code[(long)y * W + x] = (uint8_t)n;
                }
            for (long p = 0; p < (long)H * W; p++)
                if (img[p] && lut[sub][code[p]]) img[p] = 0;
        }
        long now = 0;
        for (long p = 0; p < (long)H * W; p++) now += img[p];
        if (now == count) break;
        count = now;
    }
}

/* OpenCV's BORDER_REFLECT_101: -1 -> 1, n -> n - 2. */
static int reflect101(int i, int n) {
    if (n == 1) return 0;
    if (i < 0) return -i;
    if (i >= n) return 2 * n - 2 - i;
    return i;
}

void ms_pascal_edges(const int32_t *labels, int H, int W, uint8_t *edges, uint8_t *scratch) {
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const int32_t *row = labels + (long)y * W;
            int64_t lap = (int64_t)labels[(long)reflect101(y - 1, H) * W + x] +
                          labels[(long)reflect101(y + 1, H) * W + x] + row[reflect101(x - 1, W)] +
                          row[reflect101(x + 1, W)] - 4 * (int64_t)row[x];
            edges[(long)y * W + x] = lap != 0;
        }
    ms_thin(edges, H, W, scratch);
}
