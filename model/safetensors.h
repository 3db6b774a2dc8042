/* safetensors files (https://github.com/huggingface/safetensors format): an 8-byte little-endian
 * header length, a JSON header {"__metadata__": {str: str}, name: {"dtype", "shape",
 * "data_offsets"}}, then the raw little-endian tensor bytes. modsquad writes fp32 tensors named
 * as in the official PyTorch state_dict, in parameter-table order, and a CRC-32 of the data in
 * the metadata so a truncated or corrupted file is detected at load. */
#ifndef MS_SAFETENSORS_H
#define MS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "params.h"

typedef struct {
    const char *key, *value;
} ms_kv;

/* Writes the tensors of `pt` from the host buffer `data` (pt->total floats, laid out by the
 * table) and the metadata pairs to `path` atomically: a temporary file in the same directory,
 * fsync, rename, fsync of the directory. On failure the previous file at `path` is untouched,
 * err (cap bytes) names the path and the cause, and -1 is returned. */
int ms_safetensors_write(const char *path, const ms_param_table *pt, const float *data,
                         const ms_kv *meta, int n_meta, char *err, size_t cap);

/* The same with each tensor's data at its own host address (views[i] holds pt->t[i].numel
 * floats), for tensors that do not live in one buffer (optimizer moments, extra state). */
int ms_safetensors_write_views(const char *path, const ms_param_table *pt,
                               const float *const *views, const ms_kv *meta, int n_meta,
                               char *err, size_t cap);

/* One tensor of a file that was read. */
typedef struct {
    char name[MS_TENSOR_NAME_MAX];
    char dtype[8];
    int ndim;
    int64_t shape[MS_MAX_DIMS];
    size_t begin, end;        /* byte offsets into data */
} ms_st_tensor;

typedef struct {
    ms_st_tensor *t;
    int n;
    ms_kv *meta;              /* strings owned by the file object */
    int n_meta;
    uint8_t *data;            /* all tensor bytes */
    size_t data_bytes;
} ms_st_file;

/* Reads and validates a whole file: header syntax, dtypes, offsets inside the data, no overlap,
 * and the CRC-32 when the metadata carries one ("modsquad.crc32"). Returns 0, or -1 with err
 * naming the path and what is wrong. */
int ms_safetensors_read(const char *path, ms_st_file *f, char *err, size_t cap);
void ms_safetensors_free(ms_st_file *f);
/* The metadata value for key, or NULL. */
const char *ms_st_meta(const ms_st_file *f, const char *key);

/* Copies every tensor of the table from the file into data (pt->total floats). Every table
 * tensor must be present as F32 with the same shape; a missing tensor, a shape mismatch or an
 * extra tensor the table does not know is reported naming the tensor and both shapes. */
int ms_safetensors_load_params(const ms_st_file *f, const char *path, const ms_param_table *pt,
                               float *data, char *err, size_t cap);

#endif
