/* The key table: every configuration key with its type, default, allowed values and doc line.
 * Parsing, defaults, --set, validation, `config show`, `config keys` and docs/config.md all read
 * it, so a key added here is complete everywhere. Defaults follow spec/METHOD.md (paper ViT-small
 * Mod-Squad on Taskonomy) and the official training command (README of
 * UMass-Foundation-Model/Mod-Squad: blr 4e-4, 100 epochs, 10 warm-up epochs, drop path 0.1). */
#include <limits.h>
#include <string.h>

#include "config_internal.h"

/* Enum value names, indexed by the C enum values of config.h. */
const char *const ms_dataset_names[] = {"taskonomy", "pascal_context", NULL};
const char *const ms_arch_names[] = {"modsquad",        "task_moe",    "m3vit", "hard_sharing",
                                     "separate_bottom", "single_task", NULL};
const char *const ms_router_names[] = {"per_task", "shared_task_conditioned", NULL};
const char *const ms_head_names[] = {"auto", "linear", "conv", NULL};
const char *const ms_weighting_names[] = {"auto", "uncertainty", "fixed", NULL};
const char *const ms_precision_names[] = {"fp32", "bf16", NULL};
const char *const ms_progress_names[] = {"auto", "on", "off", NULL};
const char *const ms_comm_names[] = {"auto", "none", "mpi", "nccl", NULL};
const char *const ms_on_missing_names[] = {"error", "skip", NULL};
const char *const ms_blocks_mode_names[] = {"even", "odd", "all", "none", NULL};

/* The table stores enums through int pointers. */
_Static_assert(sizeof(ms_dataset) == sizeof(int) && sizeof(ms_arch) == sizeof(int) &&
                   sizeof(ms_router) == sizeof(int) && sizeof(ms_head_kind) == sizeof(int) &&
                   sizeof(ms_weighting) == sizeof(int) && sizeof(ms_precision) == sizeof(int) &&
                   sizeof(ms_progress) == sizeof(int) && sizeof(ms_comm) == sizeof(int) &&
                   sizeof(ms_on_missing) == sizeof(int),
               "enums must be int-sized");

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- string checks ------------------------------------------------------------------------- */

/* Each check returns NULL when s is acceptable and otherwise (or for s == NULL, which the docs
 * use) what is allowed. */
static const char *check_device(const char *s) {
    if (s && ms_config_parse_device(s, NULL) >= 0) return NULL;
    return "auto, cpu, cuda or cuda:N (N = GPU index)";
}

/* A run name becomes a directory name. Empty means "the config file's name". */
static const char *check_run_name(const char *s) {
    if (!s || strchr(s, '/') || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return "a directory name without '/' (not . or ..)";
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20) return "a name without control characters";
    return NULL;
}

static const char *check_nonempty(const char *s) { return s && s[0] ? NULL : "a non-empty path"; }

static const char *check_split(const char *s) {
    if (!s || !s[0]) return "a split name of letters, digits, _ . -";
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.' || *p == '-'))
            return "a split name of letters, digits, _ . -";
    return NULL;
}

/* ---- the table ----------------------------------------------------------------------------- */

const char *const ms_config_sections[] = {"run", "data", "model", "train", "eval", NULL};

/* One line per key. Arguments: name, field, default (YAML text), then by type: range (lo, hi),
 * open-bound flags, allowed values or string check; in the fingerprint?; doc line. */
#define FIELD(f) .offset = offsetof(ms_config, f), .size = sizeof(((ms_config *)0)->f)
#define KEY_INT(n, f, d, lo, hi, fp, doc_)                                                         \
    {                                                                                              \
        .name = n, .type = MS_KT_INT, FIELD(f), .def = d, .min = lo, .max = hi, .fingerprint = fp, \
        .doc = doc_                                                                                \
    }
#define KEY_FLOAT(n, f, d, lo, hi, open, fp, doc_)                                                 \
    {                                                                                              \
        .name = n, .type = MS_KT_FLOAT, FIELD(f), .def = d, .min = lo, .max = hi,                  \
        .range_flags = open, .fingerprint = fp, .doc = doc_                                        \
    }
#define KEY_BOOL(n, f, d, fp, doc_)                                                                \
    { .name = n, .type = MS_KT_BOOL, FIELD(f), .def = d, .fingerprint = fp, .doc = doc_ }
#define KEY_STRING(n, f, d, chk, doc_)                                                             \
    { .name = n, .type = MS_KT_STRING, FIELD(f), .def = d, .check = chk, .doc = doc_ }
#define KEY_ENUM(n, f, d, names, fp, doc_)                                                         \
    {                                                                                              \
        .name = n, .type = MS_KT_ENUM, FIELD(f), .def = d, .values = names, .fingerprint = fp,     \
        .doc = doc_                                                                                \
    }
#define KEY_LIST(n, f, d, fp, doc_)                                                                \
    { .name = n, .type = MS_KT_LIST, FIELD(f), .def = d, .fingerprint = fp, .doc = doc_ }
#define KEY_MAP(n, f, d, lo, hi, fp, doc_)                                                         \
    {                                                                                              \
        .name = n, .type = MS_KT_MAP, FIELD(f), .def = d, .min = lo, .max = hi, .fingerprint = fp, \
        .doc = doc_                                                                                \
    }
#define KEY_BLOCKS(n, f, d, fp, doc_)                                                              \
    { .name = n, .type = MS_KT_BLOCKS, FIELD(f), .def = d, .fingerprint = fp, .doc = doc_ }
#define KEY_EXPERTS(n, f, d, fp, doc_)                                                             \
    { .name = n, .type = MS_KT_EXPERTS, FIELD(f), .def = d, .fingerprint = fp, .doc = doc_ }
#define INT_MAXD ((double)INT_MAX)
#define OPEN_MIN MS_KEY_MIN_OPEN
#define OPEN_MAX MS_KEY_MAX_OPEN

const ms_config_key ms_config_keys[] = {
    /* run: where the run lives and what it runs on */
    KEY_STRING(
        "run.name", run.name, "\"\"", check_run_name,
        "run name; the run directory is run.dir/run.name (empty: the config file's base name)"),
    KEY_STRING("run.dir", run.dir, "runs", check_nonempty,
               "directory that holds the run directories"),
    KEY_INT("run.seed", run.seed, "0", 0, INT_MAXD, false,
            "seed of initialisation, data order, augmentation and drop path"),
    KEY_STRING("run.device", run.device, "auto", check_device,
               "auto (a GPU when one is present, else the CPU), cpu, cuda or cuda:N"),
    KEY_INT("run.threads", run.threads, "0", 0, 4096, false,
            "CPU threads for the ops (0 = all cores)"),
    KEY_ENUM("run.comm", run.comm, "auto", ms_comm_names, false,
             "collectives between ranks: auto (NCCL on CUDA, MPI on the CPU when launched by "
             "mpirun or srun, else none), none, mpi, nccl"),
    KEY_INT("run.log_every", run.log_every, "10", 1, INT_MAXD, false,
            "steps between printed log lines (the JSONL log has every step)"),
    KEY_ENUM("run.progress", run.progress, "auto", ms_progress_names, false,
             "progress bar: auto (only on a terminal), on, off"),
    /* data: what is read and how */
    KEY_ENUM("data.dataset", data.dataset, "taskonomy", ms_dataset_names, true,
             "dataset layout and task catalogue (taskonomy also reads the synthetic scenes)"),
    KEY_STRING(
        "data.root", data.root, "\"\"", NULL,
        "dataset directory (Taskonomy: holds {domain}/...; PASCAL-Context: the PASCAL_MT folder)"),
    KEY_STRING("data.split_file", data.split_file, "\"\"", NULL,
               "Taskonomy split CSV (id,train,val,test per building; empty: data.root/splits.csv); "
               "unused for pascal_context"),
    KEY_STRING("data.train_split", data.train_split, "train", check_split,
               "training split (Taskonomy: a column of the split CSV; PASCAL-Context: "
               "ImageSets/Context/NAME.txt)"),
    KEY_STRING("data.val_split", data.val_split, "val", check_split,
               "split evaluated during training"),
    KEY_LIST("data.tasks", data.tasks, "[]", true,
             "tasks to learn, in this order (empty: every task of the dataset)"),
    KEY_INT("data.image_size", data.image_size, "224", 8, 8192, true,
            "side of the square network input in pixels (PASCAL-Context: 512)"),
    KEY_INT("data.resize", data.resize, "256", 8, 16384, false,
            "Taskonomy: side the images are resized to before the data.image_size crop"),
    KEY_INT("data.workers", data.workers, "2", 0, 256, false,
            "loader threads that decode and augment (0 = in the training thread)"),
    KEY_INT("data.prefetch", data.prefetch, "2", 1, 64, false,
            "batches prepared ahead of the step"),
    KEY_ENUM("data.on_missing", data.on_missing, "error", ms_on_missing_names, false,
             "a missing label file: error (stop, naming it) or skip (drop the sample, count it)"),
    KEY_BOOL("data.index_cache", data.index_cache, "true", false,
             "cache the dataset index so a split's files are listed only once"),
    KEY_BOOL("data.augment", data.augment, "true", false,
             "training augmentation (Taskonomy: random crop and flip; PASCAL-Context: flip, scale, "
             "rotate)"),
    KEY_INT("data.max_images", data.max_images, "0", 0, INT_MAXD, false,
            "use only the first N training images (0 = all)"),
    /* model: the network (spec/METHOD.md sections 1 to 4) */
    KEY_ENUM("model.arch", model.arch, "modsquad", ms_arch_names, true,
             "modsquad, task_moe, m3vit, hard_sharing, separate_bottom or single_task "
             "(METHOD.md sections 1 and 7)"),
    KEY_INT("model.patch", model.patch, "16", 1, 256, true,
            "patch side in pixels; must divide data.image_size"),
    KEY_INT("model.dim", model.dim, "384", 1, 65536, true, "token width D"),
    KEY_INT("model.depth", model.depth, "12", 1, MS_MAX_DEPTH, true, "transformer blocks"),
    KEY_INT("model.heads", model.heads, "6", 1, 1024, true, "heads of the dense attention layers"),
    KEY_INT("model.head_dim", model.head_dim, "0", 0, 65536, true,
            "width of one dense attention head (0: 2*dim/heads for modsquad and task_moe, as the "
            "official code; dim/heads otherwise)"),
    KEY_FLOAT("model.mlp_ratio", model.mlp_ratio, "4", 0, 64, OPEN_MIN, true,
              "dense MLP hidden width = mlp_ratio * dim (a whole number)"),
    KEY_INT("model.attn_experts", model.attn_experts, "15", 1, 4096, true,
            "experts of each MoE attention layer"),
    KEY_INT("model.attn_topk", model.attn_topk, "6", 1, 4096, true,
            "attention experts (query heads) each token selects; at most model.attn_experts"),
    KEY_INT("model.attn_expert_dim", model.attn_expert_dim, "0", 0, 65536, true,
            "head width of one attention expert (0: model.head_dim)"),
    KEY_INT("model.mlp_experts", model.mlp_experts, "16", 1, 4096, true,
            "experts of each MoE MLP layer"),
    KEY_INT("model.mlp_topk", model.mlp_topk, "4", 1, 4096, true,
            "MLP experts each token selects; at most model.mlp_experts"),
    KEY_INT("model.expert_hidden", model.expert_hidden, "0", 0, 1 << 20, true,
            "hidden width of one MLP expert (0: mlp_ratio*dim/mlp_topk)"),
    KEY_BLOCKS("model.moe_attn_blocks", model.moe_attn_blocks, "even", true,
               "blocks with MoE attention: even, odd, all, none or a list of indices (dense archs: "
               "none; m3vit: none)"),
    KEY_BLOCKS(
        "model.moe_mlp_blocks", model.moe_mlp_blocks, "odd", true,
        "blocks with a MoE MLP: even, odd, all, none or a list of indices (dense archs: none)"),
    KEY_ENUM("model.router", model.router, "per_task", ms_router_names, true,
             "per_task (one router per task and layer) or shared_task_conditioned (task_moe only: "
             "one router fed [token; task embedding])"),
    KEY_BOOL("model.noisy_gating", model.noisy_gating, "false", true,
             "add learned Gaussian noise to the router logits in training (m3vit)"),
    KEY_FLOAT("model.router_eps", model.router_eps, "1e-4", 0, 1, OPEN_MAX, true,
              "added to the routing probabilities, as the official code"),
    KEY_FLOAT("model.w_mi", model.w_mi, "0.005", 0, 1e6, 0, false,
              "weight of the mutual-information loss (modsquad)"),
    KEY_FLOAT("model.w_balance", model.w_balance, "0.01", 0, 1e6, 0, false,
              "weight of the cv^2 expert-balance loss (m3vit)"),
    KEY_INT("model.separate_layers", model.separate_layers, "0", 0, MS_MAX_DEPTH, true,
            "separate_bottom: the first N blocks are per task (1 to depth)"),
    KEY_FLOAT("model.drop_path", model.drop_path, "0.1", 0, 1, OPEN_MAX, false,
              "stochastic depth rate of the last block, linear in depth (training only)"),
    KEY_BOOL("model.qkv_bias", model.qkv_bias, "true", true,
             "bias on the dense attention's q, k, v projections"),
    KEY_ENUM("model.head", model.head, "auto", ms_head_names, true,
             "dense-task heads: linear (per-token un-patchify), conv (M3ViT up-sampling); auto: "
             "linear for taskonomy, conv for pascal_context"),
    KEY_INT("model.head_channels", model.head_channels, "256", 1, 65536, true,
            "channels of the conv head's 3x3 layers"),
    KEY_ENUM("model.task_weighting", model.task_weighting, "auto", ms_weighting_names, true,
             "uncertainty (learned) or fixed (model.task_weights); auto: uncertainty for "
             "taskonomy, fixed for pascal_context"),
    KEY_MAP("model.task_weights", model.task_weights, "{}", 0, 1e6, false,
            "fixed loss weight per task (missing tasks: semseg 1, human_parts 2, sal 5, normals "
            "10, edge 50; Taskonomy 1)"),
    KEY_FLOAT("model.edge_pos_weight", model.edge_pos_weight, "0.95", 0, 1, OPEN_MIN | OPEN_MAX,
              false, "positive-class weight of the balanced BCE edge loss (PASCAL-Context)"),
    /* In the fingerprint: it sets the expert tensors' shapes. Left out of it while empty, so
     * the fingerprints of ordinary models did not change when the key was added. */
    KEY_EXPERTS("model.kept_experts", model.kept_experts, "[]", true,
                "written by `modsquad extract`: the experts a single-task model keeps, one list of "
                "full-model expert indices per MoE layer (empty: a normal model; such a model is "
                "for evaluation only)"),
    /* train: optimisation (METHOD.md section 6) */
    KEY_INT("train.steps", train.steps, "0", 0, INT_MAXD, false,
            "optimizer steps (0: train.epochs x steps per epoch)"),
    KEY_INT("train.epochs", train.epochs, "100", 1, 1000000, false,
            "epochs, used when train.steps is 0"),
    KEY_INT("train.batch_size", train.batch_size, "8", 1, 1 << 20, false,
            "images per micro-step over all ranks (divisible by the rank count)"),
    KEY_INT("train.accum_steps", train.accum_steps, "1", 1, 65536, false,
            "micro-steps accumulated per optimizer step"),
    KEY_FLOAT("train.blr", train.blr, "4e-4", 0, 10, OPEN_MIN, false,
              "base learning rate for a batch of 256 (official recipe: 4e-4)"),
    KEY_FLOAT("train.lr", train.lr, "0", 0, 10, 0, false,
              "peak learning rate (0: blr * batch_size * accum_steps / 256)"),
    KEY_FLOAT("train.min_lr", train.min_lr, "1e-6", 0, 10, 0, false,
              "learning rate at the end of the half-cosine decay"),
    KEY_FLOAT("train.warmup_epochs", train.warmup_epochs, "10", 0, 1000000, 0, false,
              "linear warm-up, in epochs (used when train.warmup_steps is 0)"),
    KEY_INT("train.warmup_steps", train.warmup_steps, "0", 0, INT_MAXD, false,
            "linear warm-up, in steps (0: from train.warmup_epochs)"),
    KEY_FLOAT("train.weight_decay", train.weight_decay, "0.05", 0, 10, 0, false,
              "AdamW decoupled weight decay, on tensors of 2 or more dimensions"),
    KEY_FLOAT("train.beta1", train.beta1, "0.9", 0, 1, OPEN_MAX, false, "AdamW first-moment decay"),
    KEY_FLOAT("train.beta2", train.beta2, "0.999", 0, 1, OPEN_MAX, false,
              "AdamW second-moment decay"),
    KEY_FLOAT("train.eps", train.eps, "1e-4", 0, 1, OPEN_MIN, false,
              "AdamW epsilon (METHOD.md section 6)"),
    KEY_FLOAT("train.clip_grad", train.clip_grad, "0", 0, 1e9, 0, false,
              "clip the global gradient norm to this value (0 = off)"),
    KEY_ENUM("train.precision", train.precision, "fp32", ms_precision_names, false,
             "fp32, or bf16 (CUDA: bf16 activations and GEMMs, fp32 master weights)"),
    KEY_BOOL("train.tf32", train.tf32, "false", false,
             "CUDA with precision fp32: GEMMs and convolutions may round their inputs to TF32 "
             "(10-bit mantissa) on tensor cores; the CPU backend ignores it"),
    KEY_INT("train.checkpoint_every", train.checkpoint_every, "1000", 0, INT_MAXD, false,
            "steps between checkpoints (0 = only at the end)"),
    KEY_INT("train.keep_checkpoints", train.keep_checkpoints, "3", 1, 100000, false,
            "newest checkpoints kept in the run directory"),
    KEY_INT("train.max_bad_steps", train.max_bad_steps, "5", 1, INT_MAXD, false,
            "stop after this many steps in a row with a NaN or Inf loss or gradient"),
    KEY_INT("train.eval_every", train.eval_every, "0", 0, INT_MAXD, false,
            "steps between evaluations on data.val_split (0 = only at the end)"),
    /* eval: `modsquad eval` and `modsquad extract` */
    KEY_STRING("eval.split", eval.split, "val", check_split, "split that `modsquad eval` reads"),
    KEY_INT("eval.batch_size", eval.batch_size, "8", 1, 1 << 20, false,
            "images per evaluation batch over all ranks"),
    KEY_INT("eval.max_images", eval.max_images, "0", 0, INT_MAXD, false,
            "evaluate only the first N images (0 = all)"),
    KEY_FLOAT("eval.usage_threshold", eval.usage_threshold, "3", 0, 100, 0, false,
              "extract: keep experts a task uses more than this percent of the time"),
    KEY_INT("eval.calibration_images", eval.calibration_images, "0", 0, INT_MAXD, false,
            "extract: images of eval.split that measure expert usage (0 = all)"),
};

const int ms_config_n_keys = COUNT(ms_config_keys);
_Static_assert(COUNT(ms_config_keys) <= MS_CONFIG_MAX_KEYS, "raise MS_CONFIG_MAX_KEYS");
