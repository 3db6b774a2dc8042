/* Augmentation for the data loaders: the random draws (deterministic per seed, epoch and sample)
 * and the resampling they need, each matching the library the reference pipelines use:
 *
 *  Taskonomy (Mod-Squad util/dataset_taskonomy.py, DATASETS.md): resize to data.resize with
 *  PIL's BILINEAR (a triangle filter that widens when shrinking, i.e. antialiased) for rgb and
 *  PIL's NEAREST for every target, then a data.image_size crop (random in training, centred in
 *  evaluation) and a horizontal flip with p = 0.5 in training.
 *
 *  PASCAL-Context (Multi-Task-Learning-PyTorch data/custom_transforms.py): in training
 *  RandomHorizontalFlip, ScaleNRotate (rotation uniform in [-20, 20) degrees, scale uniform in
 *  [0.75, 1.25), cv2.warpAffine about the image centre, same output size) and FixedResize to
 *  data.image_size; in evaluation FixedResize only. Pictures and normals are cubic (OpenCV's
 *  a = -0.75 kernel), labels nearest. Here the warp and the resize are composed into one
 *  resampling of the source (one interpolation instead of two); labels follow OpenCV's two
 *  nearest steps exactly (round through the warp, floor through the resize).
 *
 * Every function writes caller buffers and allocates nothing except through an ms_buf the
 * caller owns (a worker keeps its ms_bufs, so steady-state decoding does not allocate). */
#ifndef MS_DATA_AUGMENT_H
#define MS_DATA_AUGMENT_H

#include <stddef.h>
#include <stdint.h>

/* A growable scratch buffer owned by one worker. */
typedef struct {
    void *p;
    size_t cap; /* bytes */
} ms_buf;
/* At least `bytes` bytes (contents not kept when it grows); exits with a message on OOM. */
void *ms_buf_get(ms_buf *b, size_t bytes);
void ms_buf_free(ms_buf *b);

/* The augmentation of one sample. */
typedef struct {
    int flip;           /* mirror left-right */
    int crop_x, crop_y; /* Taskonomy: top-left of the crop in the resized image */
    double scale;       /* PASCAL: zoom about the centre (1 = none) */
    double angle;       /* PASCAL: degrees, counter-clockwise (cv2.getRotationMatrix2D) */
} ms_aug;

/* Taskonomy: train != 0 draws a crop offset in [0, resize - size] per axis and a flip from
 * (seed, epoch, sample); train == 0 gives the centre crop ((resize - size + 1) / 2, as
 * torchvision's CenterCrop rounds) and no flip. */
void ms_aug_taskonomy(ms_aug *a, uint64_t seed, int64_t epoch, int64_t sample, int resize,
                      int size, int train);
/* PASCAL-Context: train != 0 draws flip, scale and angle; train == 0 is the identity. */
void ms_aug_pascal(ms_aug *a, uint64_t seed, int64_t epoch, int64_t sample, int train);

/* ---- Taskonomy geometry: resize to R x R, keep the S x S window at (x0, y0), maybe flip ---- */

/* Nearest source index (PIL NEAREST: floor((o + 0.5) * n_in / R)) of each of the S output
 * positions of one axis, window starting at o0, reversed when flip. idx: [S]. */
void ms_nearest_axis(int n_in, int R, int o0, int S, int flip, int32_t *idx);
/* dst[y, x, :] = src[yi[y], xi[x], :] for an H0 x W0 x C image of `bytes` per sample (1 or
 * 2). dst: [S, S, C]. */
void ms_gather(const void *src, int W0, int C, int bytes, const int32_t *xi, const int32_t *yi,
               int S, void *dst);
/* PIL's Image.resize((R, R), BILINEAR) of an 8-bit H0 x W0 x C image followed by the crop and
 * flip above, computed only for the window. Like Pillow it resamples horizontally first and
 * rounds to 8 bits after each pass. dst: [S, S, C]. */
void ms_resize_bilinear_crop_u8(const uint8_t *src, int W0, int H0, int C, int R, int x0, int y0,
                                int S, int flip, uint8_t *dst, ms_buf *ws);

/* scipy.ndimage.gaussian_filter(x, sigma) of an H x W float image (mode 'reflect', truncate 4),
 * in place. Accumulates in double. */
void ms_gaussian_blur(float *x, int W, int H, double sigma, ms_buf *ws);

/* ---- PASCAL geometry: source W0 x H0 -> output OW x OH through flip, warp and resize ---- */

typedef struct {
    int W0, H0, OW, OH;
    double a[6]; /* source (x, y) of output pixel (u, v) for the cubic path:
                    x = a0 u + a1 v + a2, y = a3 u + a4 v + a5 (pixel centres at integers) */
    int identity_warp; /* no flip, scale 1, angle 0: the plain FixedResize of evaluation */
    double m_inv[6];   /* the warp's inverse (output of warp -> flipped source), for labels */
    int flip;
} ms_warp;

void ms_warp_plan(ms_warp *w, const ms_aug *a, int W0, int H0, int OW, int OH);
/* Cubic resampling of a float H0 x W0 x C image (C <= 4); output points whose source point
 * lies outside the image get `fill` (what warpAffine's constant border gives), taps reaching
 * past the edge repeat the edge pixel (cv2.resize's border). dst: [OH, OW, C]. */
void ms_warp_cubic(const ms_warp *w, const float *src, int C, float fill, float *dst);
/* Source pixel index (y * W0 + x) of each output pixel for labels, -1 where the warp leaves
 * the image. idx: [OH * OW]. */
void ms_warp_nearest(const ms_warp *w, int32_t *idx);

#endif
