/* Taskonomy on disk (DATASETS.md "Taskonomy"): the split CSV, the directory index and its cache.
 * Reading samples is ms_taskonomy_open (data/dataset.h); this header is the index it sits on.
 *
 * Layout: {root}/{domain}/taskonomy/{building}/point_{p}_view_{v}_domain_{name}.{png|npy}
 * (omnidata's download tool) or the older {root}/{domain}/{building}/... ; each (domain,
 * building) may use either. A sample is a (building, point, view) whose rgb file exists.
 * File names are as published, including the irregular ones: class_scene files are
 * ..._domain_class_places.npy and segment_semantic files ..._domain_segmentsemantic.png (the
 * regular spelling is accepted too).
 *
 * The index is built with one directory listing per (domain, building) and cached in a file
 * (data.index_cache): under {root}/.modsquad_index/ when the dataset is writable, otherwise
 * under the run directory (run.dir/run.name). The cache records the split file's mtime and size
 * and the mtime of every listed directory (and which directories were absent), so adding or
 * removing a file, or editing the split, rebuilds it; deleting the file or
 * `modsquad data check --reindex` forces a rebuild. */
#ifndef MS_DATA_TASKONOMY_H
#define MS_DATA_TASKONOMY_H

#include <stdint.h>

#include "../model/config.h"
#include "image.h" /* ms_io_err */

/* rgb, up to MS_MAX_TASKS tasks, and the two depth domains a mask may come from */
#define MS_TX_MAX_DOMAINS (MS_MAX_TASKS + 3)

/* Decoding constants of the published label files (DATASETS.md), shared by the loader and the
 * prediction writer (cli/predictions.c), which must invert exactly what the loader reads. */
#define MS_TX_DEPTH_INVALID 64500      /* depth samples at or above are not geometry */
#define MS_TX_LN_2_16 11.090354888959125 /* ln(2^16): depth target = ln(1 + d) / ln(2^16) */
static const double ms_tx_curv_mean[2] = {123.572, 120.1}; /* principal curvature k1, k2 */
static const double ms_tx_curv_std[2] = {31.922, 21.658};

typedef struct {
    const char *name; /* directory (and task) name */
    const char *file; /* the name after _domain_ in file names */
    const char *alt;  /* a second accepted spelling, or NULL */
    const char *ext;  /* "png" or "npy" */
} ms_tx_domain;

/* Where a (domain, building) directory was found. */
enum { MS_TX_ABSENT = 0, MS_TX_OMNIDATA = 1, MS_TX_FLAT = 2 };

typedef struct {
    int32_t building, point, view;
    uint32_t have; /* bit k: the file of domain k exists */
    uint32_t alt;  /* bit k: it is spelled with the domain's alternative name */
} ms_tx_sample;

typedef struct {
    char root[MS_PATH_MAX];
    int n_domains;
    const ms_tx_domain *domain[MS_TX_MAX_DOMAINS]; /* [0] rgb, [1..T] data.tasks, then the
                                                      depth domains kept for the mask */
    int mask_domain[2]; /* domains (indices above) whose depth gives the invalid mask, in
                           order of preference; -1 when unused */
    int n_buildings;
    char **building;    /* [n_buildings] in split-file order */
    uint8_t *layout;    /* [n_buildings, n_domains] MS_TX_* */
    int64_t n;
    ms_tx_sample *sample; /* [n] by building (split order), then point, then view */
    int from_cache;       /* 1: read from cache_path; 0: listed (and cached when possible) */
    char cache_path[MS_PATH_MAX];
    char cache_note[MS_PATH_MAX + 64]; /* why the cache was not used or not written */
} ms_tx_index;

/* The domain table entry of a Taskonomy domain name, or NULL. */
const ms_tx_domain *ms_tx_domain_find(const char *name);

/* Reads the rows of `split` (a column of the CSV) from the split file: header "id,..." naming
 * the columns, then one row per building with 0/1 flags; CR, LF or CRLF line endings.
 * *names gets n heap strings (free each, then the array). */
int ms_tx_read_split(const char *path, const char *split, char ***names, int *n, ms_io_err *err);

/* Builds (or loads from the cache) the index of `split` for cfg's tasks. rebuild: ignore an
 * existing cache. Fails when the split is empty or no rgb file is found. */
int ms_tx_index_build(ms_tx_index *ix, const ms_config *cfg, const char *split, int rebuild,
                      ms_io_err *err);
void ms_tx_index_free(ms_tx_index *ix);

/* Path of domain k's file of sample i (whether or not it exists). */
void ms_tx_path(const ms_tx_index *ix, int64_t i, int k, char *buf, size_t cap);

#endif
