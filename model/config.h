/* The configuration of a modsquad run: five typed sections (run, data, model, train, eval) loaded
 * from YAML through libyaml, overridden by `--set key=value`, then resolved (automatic values
 * filled in) and validated.
 *
 * One table (model/config_schema.c) describes every key: name, type, default, allowed values, a
 * one-line doc and where its field lives in ms_config. Parsing, defaults, overrides, validation,
 * `modsquad config show`, `modsquad config keys` and docs/config.md all come from that table.
 *
 * After a successful ms_config_load every "auto" value is resolved: model.head is linear or
 * conv, model.head_dim etc. are concrete, data.tasks is never empty and model.task_weights has
 * exactly one entry per task, in the order of data.tasks. The values that depend on the data
 * (train.steps = 0: from epochs; train.warmup_steps = 0: from warmup_epochs) or on the machine
 * (run.threads = 0, run.device = auto, run.comm = auto) keep their documented sentinels. */
#ifndef MS_CONFIG_H
#define MS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MS_MAX_TASKS 16        /* tasks in one config */
#define MS_MAX_DEPTH 64        /* transformer blocks (block sets are 64-bit masks) */
#define MS_NAME_MAX 32         /* task and split names, device strings, with the NUL */
#define MS_PATH_MAX 1024       /* paths, with the NUL */
#define MS_RUN_NAME_MAX 128    /* run.name, with the NUL */
#define MS_CONFIG_MAX_KEYS 128 /* capacity of the per-key origin table */
#define MS_FINGERPRINT_LEN 16  /* hex digits of ms_config_fingerprint */
#define MS_MAX_MOE_LAYERS (2 * MS_MAX_DEPTH) /* a MoE attention and a MoE MLP in every block */
#define MS_MAX_KEPT 4096       /* expert indices in model.kept_experts, over all layers */

/* Enumerations: the value is the index of its name in the matching ms_*_names array. */
typedef enum { MS_DATASET_TASKONOMY, MS_DATASET_PASCAL_CONTEXT } ms_dataset;
typedef enum {
    MS_ARCH_MODSQUAD,
    MS_ARCH_TASK_MOE,
    MS_ARCH_M3VIT,
    MS_ARCH_HARD_SHARING,
    MS_ARCH_SEPARATE_BOTTOM,
    MS_ARCH_SINGLE_TASK
} ms_arch;
typedef enum { MS_ROUTER_PER_TASK, MS_ROUTER_SHARED_TASK_CONDITIONED } ms_router;
typedef enum { MS_HEAD_AUTO, MS_HEAD_LINEAR, MS_HEAD_CONV } ms_head_kind;
typedef enum { MS_WEIGHTING_AUTO, MS_WEIGHTING_UNCERTAINTY, MS_WEIGHTING_FIXED } ms_weighting;
typedef enum { MS_PRECISION_FP32, MS_PRECISION_BF16 } ms_precision;
typedef enum { MS_PROGRESS_AUTO, MS_PROGRESS_ON, MS_PROGRESS_OFF } ms_progress;
typedef enum { MS_COMM_AUTO, MS_COMM_NONE, MS_COMM_MPI, MS_COMM_NCCL } ms_comm;
typedef enum { MS_ON_MISSING_ERROR, MS_ON_MISSING_SKIP } ms_on_missing;
typedef enum {
    MS_BLOCKS_EVEN,
    MS_BLOCKS_ODD,
    MS_BLOCKS_ALL,
    MS_BLOCKS_NONE,
    MS_BLOCKS_LIST
} ms_blocks_mode;

extern const char *const ms_dataset_names[]; /* "taskonomy", "pascal_context", NULL */
extern const char *const ms_arch_names[];    /* "modsquad", "task_moe", ..., NULL */
extern const char *const ms_router_names[];
extern const char *const ms_head_names[];
extern const char *const ms_weighting_names[];
extern const char *const ms_precision_names[];
extern const char *const ms_progress_names[];
extern const char *const ms_comm_names[];
extern const char *const ms_on_missing_names[];
extern const char *const ms_blocks_mode_names[]; /* "even", "odd", "all", "none", NULL */

/* A list of names (data.tasks). */
typedef struct {
    int n;
    char name[MS_MAX_TASKS][MS_NAME_MAX];
} ms_name_list;

/* A map name -> number (model.task_weights); after loading, entry t belongs to data.tasks[t]. */
typedef struct {
    int n;
    char name[MS_MAX_TASKS][MS_NAME_MAX];
    double value[MS_MAX_TASKS];
} ms_weight_map;

/* Which transformer blocks carry a MoE sub-layer: a keyword or an explicit list of indices.
 * `mask` (bit i = block i) is resolved from mode, index and model.depth when loading; it is the
 * field the model reads. */
typedef struct {
    ms_blocks_mode mode;
    int n;                   /* entries of index (mode == MS_BLOCKS_LIST) */
    int index[MS_MAX_DEPTH]; /* [n] block indices, as written */
    uint64_t mask;
} ms_block_set;

/* model.kept_experts: the experts a single-task model extracted by `modsquad extract` keeps,
 * one list per MoE layer (the model's MoE layers in block order, attention before MLP), each
 * list the full model's expert indices in increasing order. layers 0: a normal model. */
typedef struct {
    int layers;                      /* 0, or the number of MoE layers */
    int count[MS_MAX_MOE_LAYERS];    /* [layers] experts kept in each layer */
    int16_t expert[MS_MAX_KEPT];     /* the lists one after the other, sum of count entries */
} ms_expert_sets;

/* The kept experts of layer l: *n of them (full-model indices, increasing). */
const int16_t *ms_expert_sets_layer(const ms_expert_sets *s, int l, int *n);

/* The sections. Each field is the key of the same name (run.name is ms_config.run.name);
 * docs/config.md and `modsquad config keys` document every one. */
typedef struct {
    char name[MS_RUN_NAME_MAX];
    char dir[MS_PATH_MAX];
    int seed;
    char device[MS_NAME_MAX]; /* auto | cpu | cuda | cuda:N; see ms_config_parse_device */
    int threads;              /* 0 = all cores */
    ms_comm comm;
    int log_every;
    ms_progress progress;
} ms_run_config;

typedef struct {
    ms_dataset dataset;
    char root[MS_PATH_MAX];
    char split_file[MS_PATH_MAX];
    char train_split[MS_NAME_MAX];
    char val_split[MS_NAME_MAX];
    ms_name_list tasks;
    int image_size;
    int resize;
    int workers;
    int prefetch;
    ms_on_missing on_missing;
    bool index_cache;
    bool augment;
    int max_images; /* 0 = all */
} ms_data_config;

typedef struct {
    ms_arch arch;
    int patch;
    int dim; /* D */
    int depth;
    int heads;
    int head_dim; /* width of one dense attention head */
    double mlp_ratio;
    int attn_experts;    /* E of the MoE attention layers */
    int attn_topk;       /* K of the MoE attention layers */
    int attn_expert_dim; /* width of one MoE attention expert (query head) */
    int mlp_experts;     /* E of the MoE MLP layers */
    int mlp_topk;        /* K of the MoE MLP layers */
    int expert_hidden;   /* hidden width of one MoE MLP expert */
    ms_block_set moe_attn_blocks;
    ms_block_set moe_mlp_blocks;
    ms_router router;
    bool noisy_gating;
    double router_eps;
    double w_mi;
    double w_balance;
    int separate_layers;
    double drop_path;
    bool qkv_bias;
    ms_head_kind head;
    int head_channels;
    ms_weighting task_weighting;
    ms_weight_map task_weights;
    double edge_pos_weight;
    ms_expert_sets kept_experts; /* an extracted single-task model (empty: a normal model) */
} ms_model_config;

typedef struct {
    int steps; /* 0 = epochs x steps per epoch */
    int epochs;
    int batch_size; /* global batch per micro-step, split evenly over ranks */
    int accum_steps;
    double blr;
    double lr;
    double min_lr;
    double warmup_epochs;
    int warmup_steps; /* 0 = warmup_epochs x steps per epoch */
    double weight_decay;
    double beta1;
    double beta2;
    double eps;
    double clip_grad; /* 0 = off */
    ms_precision precision;
    bool tf32;
    int checkpoint_every; /* steps; 0 = only at the end */
    int keep_checkpoints;
    int max_bad_steps;
    int eval_every; /* steps; 0 = only at the end */
} ms_train_config;

typedef struct {
    char split[MS_NAME_MAX];
    int batch_size;
    int max_images;         /* 0 = all */
    double usage_threshold; /* percent */
    int calibration_images; /* 0 = all images of eval.split */
} ms_eval_config;

/* Where a key's value came from. Not part of the configuration: ms_config_equal and the
 * fingerprint ignore it. */
typedef enum { MS_ORIGIN_DEFAULT, MS_ORIGIN_FILE, MS_ORIGIN_SET } ms_origin_kind;
typedef struct {
    uint8_t kind;      /* ms_origin_kind */
    uint8_t automatic; /* the value was resolved from "auto" / 0 when loading */
    uint8_t bad;       /* the value given was rejected (the previous value stayed) */
    int line, col;     /* 1-based position in the file (MS_ORIGIN_FILE); line = index of the
                        * --set argument (MS_ORIGIN_SET) */
} ms_key_origin;

typedef struct {
    ms_run_config run;
    ms_data_config data;
    ms_model_config model;
    ms_train_config train;
    ms_eval_config eval;

    char source[MS_PATH_MAX];                 /* file (or name) the config was loaded from */
    ms_key_origin origin[MS_CONFIG_MAX_KEYS]; /* indexed like the key table */
} ms_config;

/* Every message of a failed load, each complete ("FILE:LINE:COL: ..."), without newline. */
typedef struct {
    int n;
    int cap;
    char **msg; /* [n] heap strings */
} ms_config_errors;

void ms_config_errors_init(ms_config_errors *errs);
void ms_config_errors_free(ms_config_errors *errs);
/* One message per line. */
void ms_config_errors_print(const ms_config_errors *errs, FILE *f);

/* All defaults, unresolved (as written in the key table). */
void ms_config_defaults(ms_config *cfg);

/* Loads the YAML file PATH over the defaults, applies the n_sets overrides "key=value" (values
 * are YAML scalars or flow lists/maps: `data.tasks=[normal, depth_zbuffer]`), resolves automatic
 * values and validates. Returns 0 when cfg is valid; otherwise appends every error found to errs
 * (which must be initialised) and returns how many there were. Never exits. */
int ms_config_load(ms_config *cfg, const char *path, int n_sets, const char *const *sets,
                   ms_config_errors *errs);
/* The same from YAML text in memory (e.g. a config stored in a checkpoint); `name` stands for
 * the file in messages. */
int ms_config_load_text(ms_config *cfg, const char *name, const char *text, size_t len, int n_sets,
                        const char *const *sets, ms_config_errors *errs);

/* Checks what depends on the number of ranks (global batch sizes divisible by world_size).
 * Returns the number of errors appended. */
int ms_config_check_world(const ms_config *cfg, int world_size, ms_config_errors *errs);

/* Writes the resolved config as YAML that ms_config_load reads back to an equal config: every
 * key, in table order, with a header naming the source and the model fingerprint. */
void ms_config_print(const ms_config *cfg, FILE *f);
/* The same as a heap string (free it), e.g. for checkpoint metadata. */
char *ms_config_to_yaml(const ms_config *cfg);

/* Writes the markdown reference of every key (the table in docs/config.md). */
void ms_config_print_keys(FILE *f);

/* True when every key of a and b has the same value. When they differ and first_diff is not
 * NULL, *first_diff is the name of the first key that differs. */
bool ms_config_equal(const ms_config *a, const ms_config *b, const char **first_diff);

/* 16 hex digits identifying what the weights of a model mean: the keys that change parameter
 * shapes or what the network computes from its weights (dataset, tasks, image size, every
 * model.* key except the training-only loss weights and drop path). Checkpoints store it and
 * compare it at load. */
void ms_config_fingerprint(const ms_config *cfg, char out[MS_FINGERPRINT_LEN + 1]);

/* Position of `name` in data.tasks, or -1. */
int ms_config_task_index(const ms_config *cfg, const char *name);
/* For a name that is not in data.tasks: " (did you mean 'x'?)" naming the closest task (a typo,
 * or the tasks the name starts or is part of), or "" when none is close. */
void ms_config_task_hint(const ms_config *cfg, const char *name, char *buf, size_t cap);

/* run.device: MS_DEVICE_CPU / MS_DEVICE_CUDA with *index = N (0 for "cuda"), or MS_DEVICE_AUTO.
 * Returns -1 for a string that is none of these (ms_config_load never leaves one). */
typedef enum { MS_DEVICE_AUTO, MS_DEVICE_CPU, MS_DEVICE_CUDA } ms_device_kind;
int ms_config_parse_device(const char *s, int *index);

#endif
