/* modsquad bench on a tiny model: exits 0, prints one JSON object whose numbers are positive and
 * finite, whose fractions lie in [0, 1], and whose time shares show the timed backend saw the
 * step's GEMMs; the measured steps allocate nothing on the backend; the inference line's
 * models have the sizes, FLOPs and predictions they must have; bad options are usage errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../testutil.h"

static char dir[64], data[128];
static char json[32768];

static const char *bin(void) {
    const char *b = getenv("MODSQUAD_BIN");
    return b ? b : "./modsquad";
}

#define TINY                                                                                    \
    "--set data.image_size=32 --set data.resize=36 --set model.patch=8 --set model.dim=32 "      \
    "--set model.depth=2 --set model.heads=2 --set model.attn_experts=4 --set model.attn_topk=2 " \
    "--set model.mlp_experts=4 --set model.mlp_topk=2 --set train.batch_size=4 "

static void setup(void) {
    snprintf(dir, sizeof dir, "/tmp/ms_bench_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(data, sizeof data, "%s/data", dir);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s synth --out %s --layout taskonomy --count 24 --size 36 --seed 5 -q >/dev/null 2>&1",
             bin(), data);
    cr_assert_eq(system(cmd), 0, "synth failed: %s", cmd);
}

static void teardown(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)system(cmd);
}

static int run(const char *extra, const char *out) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s bench configs/demo.yaml " TINY "--set data.root=%s %s >%s/%s 2>%s/%s.err",
             bin(), data, extra, dir, out, dir, out);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void slurp(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    size_t n = fread(json, 1, sizeof json - 1, f);
    json[n] = 0;
    fclose(f);
}

/* The number after "key": in the JSON text (NAN when the key is missing). */
static double number(const char *key) {
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(json, pat);
    if (!p) return NAN;
    char *end;
    double v = strtod(p + strlen(pat), &end);
    return end == p + strlen(pat) ? NAN : v;
}

/* The trainable parameters `modsquad info` prints for the tiny model ("134,061"), -1 if none. */
static double info_params(void) {
    char cmd[1024], line[512];
    snprintf(cmd, sizeof cmd, "%s info configs/demo.yaml " TINY "2>/dev/null", bin());
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "%s", cmd);
    double n = -1;
    while (fgets(line, sizeof line, p)) {
        if (strncmp(line, "parameters (trainable)", 22) != 0) continue;
        const char *last = strrchr(line, ' '); /* the exact count with thousands separators */
        n = 0;
        for (const char *c = last + 1; *c && *c != '\n'; c++)
            if (*c >= '0' && *c <= '9') n = 10 * n + (*c - '0');
    }
    pclose(p);
    return n;
}

/* The inference line of a run with --extract normal --threshold 100 (keep exactly top-k). */
static void check_inference(void) {
    const char *models[] = {"full", "one_pass", "extracted"};
    char key[64];
    for (int k = 0; k < 3; k++) {
        const char *fields[] = {"infer_ms_per_image_", "infer_best_ms_per_image_", "infer_images_per_s_",
                                "infer_params_", "infer_weight_mb_", "infer_flops_per_image_"};
        for (int f = 0; f < 6; f++) {
            snprintf(key, sizeof key, "%s%s", fields[f], models[k]);
            double v = number(key);
            cr_assert(isfinite(v) && v > 0, "%s = %g, expected positive:\n%s", key, v, json);
        }
        /* images/s and ms/image describe the same median forward */
        snprintf(key, sizeof key, "infer_images_per_s_%s", models[k]);
        double ips = number(key);
        snprintf(key, sizeof key, "infer_ms_per_image_%s", models[k]);
        cr_assert(fabs(ips * number(key) - 1000) < 1, "%s: %g images/s at %g ms/image", models[k],
                  ips, number(key));
    }
    cr_assert(strstr(json, "\"infer_task\": \"normal\""), "the task of --extract is not reported:\n%s", json);
    cr_assert(number("infer_batch") == 4 && number("infer_passes_full") == 5,
              "batch %g, passes %g: expected the bench's 4 images and 5 task passes", number("infer_batch"),
              number("infer_passes_full"));
    /* The full model is the bench's model: the parameters `modsquad info` counts. */
    double info = info_params();
    cr_assert(info > 0 && number("infer_params_full") == info, "full model %g parameters, info says %g",
              number("infer_params_full"), info);
    /* Threshold 100 keeps exactly top-k: 2 of the 4 experts of each of the 2 MoE layers. The
     * extracted model drops 2 attention experts (q_proj experts.w [D, hd] and output_experts.w
     * [hd, D], no biases: 2 x 32 x 32 each) and 2 MLP experts (experts.w [D, H], .b [H],
     * output_experts.w [H, D], .b [D] with H 64: 2 x 32 x 64 + 64 + 32 each): 12480 parameters. */
    cr_assert(number("infer_experts_kept") == 4 && number("infer_experts_total") == 8,
              "kept %g of %g experts, expected 4 of 8", number("infer_experts_kept"), number("infer_experts_total"));
    cr_assert(number("infer_params_one_pass") - number("infer_params_extracted") == 12480,
              "the extracted model has %g parameters, the one-pass model %g: expected 12480 fewer",
              number("infer_params_extracted"), number("infer_params_one_pass"));
    cr_assert(number("infer_params_one_pass") < number("infer_params_full") &&
                  number("infer_weight_mb_extracted") < number("infer_weight_mb_one_pass") &&
                  number("infer_weight_mb_one_pass") < number("infer_weight_mb_full"),
              "parameters / weights do not shrink full > one pass > extracted:\n%s", json);
    /* FLOPs: the full forward is the training step's forward (flops_per_step = 3 x forward x
     * images); a task's pass is less than the 5 passes; top-k keeps the static FLOPs of the
     * extracted model those of the pass, and the dropped pairs only lower them. */
    double full = number("infer_flops_per_image_full"), one = number("infer_flops_per_image_one_pass");
    double expect = number("flops_per_step") / (3.0 * number("images_per_step"));
    cr_assert(fabs(full - expect) <= 1e-5 * expect, "full forward %g FLOPs/image, the step says %g", full, expect);
    cr_assert(one < full, "one pass %g FLOPs/image, not below the 5 passes' %g", one, full);
    cr_assert(number("infer_flops_per_image_extracted") == one, "extracted static FLOPs %g != one pass %g",
              number("infer_flops_per_image_extracted"), one);
    double routed = number("infer_flops_per_image_extracted_routed"), share = number("infer_dropped_share");
    cr_assert(share >= 0 && share <= 1 && routed <= one && routed > 0.5 * one,
              "dropped share %g, routed FLOPs %g of %g", share, routed, one);
    /* The one-pass model computes the full model's pass of the task bit for bit. */
    cr_assert(number("infer_max_diff_one_pass") == 0, "the one-pass model's predictions differ by %g",
              number("infer_max_diff_one_pass"));
    cr_assert(isfinite(number("infer_max_diff_extracted")), "extracted predictions not finite:\n%s", json);
    /* The speedups are the ratios of the reported times. */
    double sp = number("infer_ms_per_image_full") / number("infer_ms_per_image_extracted");
    cr_assert(fabs(number("infer_speedup") - sp) < 1e-3 * sp, "speedup %g, times give %g", number("infer_speedup"), sp);
    cr_assert(number("infer_speedup_one_pass") > 1, "one pass instead of 5 is not faster: %g",
              number("infer_speedup_one_pass"));
}

Test(bench, json_numbers, .init = setup, .fini = teardown, .timeout = 120) {
    cr_assert_eq(run("--steps 3 --warmup 1 --json --extract normal --threshold 100", "bench.json"), 0,
                 "bench failed (see %s/bench.json.err)", dir);
    slurp("bench.json");
    /* One object: starts with {, ends with }, braces balanced. */
    size_t n = strlen(json);
    while (n && (json[n - 1] == '\n' || json[n - 1] == ' ')) n--;
    cr_assert(n > 2 && json[0] == '{' && json[n - 1] == '}', "not one JSON object:\n%s", json);
    int depth = 0;
    for (size_t i = 0; i < n; i++) {
        depth += json[i] == '{' ? 1 : json[i] == '}' ? -1 : 0;
        cr_assert(depth > 0 || i == n - 1, "JSON object closes early at %zu:\n%s", i, json);
    }
    const char *positive[] = {"gemm_peak_gflops", "flops_per_step", "step_ms_memory",
                              "images_per_s_memory", "gflops_memory", "step_ms_loader",
                              "images_per_s_loader", "gflops_loader", "loader_vs_memory",
                              "peak_rss_mb", "plan_mb", "rss_vs_plan", "rss_before_model_mb",
                              "rss_model_vs_plan"};
    for (size_t i = 0; i < sizeof positive / sizeof *positive; i++) {
        double v = number(positive[i]);
        cr_assert(isfinite(v) && v > 0, "%s = %g, expected positive and finite:\n%s", positive[i], v, json);
    }
    const char *fractions[] = {"peak_fraction_memory", "peak_fraction_loader",
                               "best_peak_fraction_memory", "best_peak_fraction_loader"};
    for (int i = 0; i < 4; i++) {
        double v = number(fractions[i]);
        cr_assert(isfinite(v) && v > 0 && v <= 1, "%s = %g, expected in (0, 1]", fractions[i], v);
    }
    const char *shares[] = {"gemm", "attention", "moe_routing", "norms_activations", "elementwise",
                            "losses", "optimizer", "memory", "data", "untimed"};
    double sum = 0;
    for (size_t i = 0; i < sizeof shares / sizeof *shares; i++) {
        double v = number(shares[i]);
        cr_assert(isfinite(v) && v >= 0 && v <= 1, "share %s = %g, expected in [0, 1]", shares[i], v);
        sum += v;
    }
    cr_assert(sum > 0.99 && sum < 1.01, "the shares sum to %g, not 1:\n%s", sum, json);
    /* The timed backend saw the work: GEMMs, attention, routing and the optimizer all took time. */
    cr_assert(number("gemm") > 0.05, "gemm share %g: the linear ops were not timed", number("gemm"));
    cr_assert(number("attention") > 0 && number("moe_routing") > 0 && number("optimizer") > 0,
              "a category the model uses got no time:\n%s", json);
    /* The best step is no slower than the median one. */
    cr_assert(number("best_step_ms_memory") <= number("step_ms_memory") &&
                  number("best_step_ms_loader") <= number("step_ms_loader"),
              "best step slower than the median:\n%s", json);
    /* The RSS split: what existed before the model plus what came after is the peak. */
    cr_assert(number("rss_before_model_mb") < number("peak_rss_mb"), "RSS before the model %g MB "
              "is not below the peak %g MB", number("rss_before_model_mb"), number("peak_rss_mb"));
    /* DESIGN.md principle 4: the step loop allocates nothing (the timed backend counts every
     * be->alloc and be->free), and the heap does not grow over the in-memory steps. */
    cr_assert(number("step_allocs_memory") == 0 && number("step_allocs_loader") == 0,
              "the measured steps allocated on the backend:\n%s", json);
    double heap = number("heap_growth_bytes_memory"), rss = number("rss_growth_mb_memory");
    cr_assert(isfinite(heap) && isfinite(rss) && isfinite(number("heap_growth_bytes_loader")) &&
                  isfinite(number("rss_growth_mb_loader")),
              "allocation figures missing:\n%s", json);
    cr_assert(heap == 0, "the host heap grew by %g bytes over the in-memory steps", heap);
    /* FLOPs per step against images/s and GFLOP/s agree (GFLOP/s = FLOPs / median step). */
    double expect = number("flops_per_step") / (number("step_ms_memory") * 1e-3) / 1e9;
    cr_assert(fabs(number("gflops_memory") - expect) < 1e-3 * expect + 1e-3, "gflops_memory %g, expected %g",
              number("gflops_memory"), expect);
    check_inference();
}

Test(bench, usage_errors, .init = setup, .fini = teardown, .timeout = 60) {
    cr_assert_eq(run("--steps 0", "zero"), 2);
    cr_assert_eq(run("--bogus", "bogus"), 2);
    cr_assert_eq(run("--threshold 101", "threshold"), 2);
    cr_assert_eq(run("--extract nosuchtask", "task"), 1, "an unknown --extract task should exit 1");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s bench %s/missing.yaml >/dev/null 2>&1", bin(), dir);
    int st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "a missing config should exit 1");
}
