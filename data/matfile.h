/* MATLAB .mat files of PASCAL-Context multi-task (PASCAL_MT), through libmatio:
 *  - pascal-context/trainval/{id}.mat: variable 'LabelMap', a 2-D numeric array of context class
 *    ids (any integer or floating class), read as int32 H x W in row-major order (MATLAB stores
 *    column-major; the transpose happens here).
 *  - human_parts/{id}.mat: variable 'anno', the PASCAL-Part annotation struct. scipy's loadmat
 *    view, which the reference loader (Multi-Task-Learning-PyTorch data/pascal_context.py)
 *    indexes positionally, is anno[0][0][1][0] = the objects (struct 1 x N with fields class,
 *    class_ind, mask, parts); object[1][0][0] = class_ind (15 = person); object[2] = instance
 *    mask; object[3] = parts, an empty array or a struct 1 x P with fields part_name (char) and
 *    mask. Every [0] / [0][0] there only unwraps scipy's 1x1 arrays; libmatio has no such
 *    wrapping, so the same fields are read here by the same positions: anno field 1, object
 *    fields 1, 2, 3, part fields 0, 1. Masks become uint8 0/1 (non-zero is 1, as the
 *    reference's astype(bool)).
 * Both are read from v5 files (the published format) and from v7.3 (HDF5) files, which this
 * libmatio supports. The writers produce the same layouts, so fixtures and synthetic scenes are
 * read by the real code path. Errors follow the convention of image.h. libmatio is not used
 * concurrently on v7.3 files (HDF5 is not thread-safe); those calls take a global lock. */
#ifndef MS_DATA_MATFILE_H
#define MS_DATA_MATFILE_H

#include <stddef.h>
#include <stdint.h>

#include "image.h" /* ms_io_err, MS_IO_* */

typedef enum { MS_MAT_V5 = 5, MS_MAT_V73 = 73 } ms_mat_version;

typedef struct {
    int height, width; /* H, W */
    int32_t *labels;   /* H x W, row-major */
    size_t capacity;   /* int32 values allocated at labels */
} ms_labelmap;

#define MS_PART_NAME_MAX 32

typedef struct {
    char name[MS_PART_NAME_MAX]; /* PASCAL-Part name, e.g. "llarm" */
    uint8_t *mask;               /* H x W, 0/1 */
} ms_anno_part;

typedef struct {
    int class_id;  /* VOC class index 1..20 (15 = person) */
    uint8_t *mask; /* H x W, 0/1: the instance */
    int n_parts;
    ms_anno_part *parts; /* n_parts */
} ms_anno_object;

typedef struct {
    int height, width; /* H, W of every mask (0 x 0 when there are no objects) */
    int n_objects;
    ms_anno_object *objects; /* n_objects */
} ms_anno;

void ms_labelmap_init(ms_labelmap *lm);
void ms_labelmap_free(ms_labelmap *lm);
/* Reads variable `var` (NULL means "LabelMap") into lm, reusing its buffer. want_h/want_w > 0
 * require that size. Non-integer values are an error naming the pixel. */
int ms_mat_read_labelmap(const char *path, const char *var, int want_h, int want_w, ms_labelmap *lm,
                         ms_io_err *err);
/* Writes labels (H x W row-major) as variable 'LabelMap': class uint16 when every value fits,
 * int32 otherwise. flags: MS_IO_NOSYNC. */
int ms_mat_write_labelmap(const char *path, const int32_t *labels, int height, int width,
                          ms_mat_version version, int flags, ms_io_err *err);

/* Reads the 'anno' variable of a human_parts file. On failure anno is left empty. */
int ms_mat_read_anno(const char *path, ms_anno *anno, ms_io_err *err);
void ms_anno_free(ms_anno *anno);
/* Writes anno as variable 'anno' with the PASCAL-Part layout (fields imname, objects; object
 * fields class, class_ind, mask, parts; part fields part_name, mask). class_id must be 1..20
 * (its VOC name is written to 'class'); an object without parts gets parts = [] (0 x 0). */
int ms_mat_write_anno(const char *path, const ms_anno *anno, const char *imname,
                      ms_mat_version version, int flags, ms_io_err *err);

#endif
