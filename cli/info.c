/* modsquad info CONFIG [--set key=value ...] [--batch N]: what the model of a config costs,
 * without building it on a device. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/config.h"
#include "../model/info.h"
#include "../model/model.h"
#include "commands.h"

static void info_usage(FILE *f) {
    fputs("Usage: modsquad info CONFIG [--set KEY=VALUE ...] [--batch N]\n"
          "\n"
          "Prints the model of CONFIG: its MoE layers, parameters in total and active per token\n"
          "per task, forward FLOPs per image per task (GEMM multiply-adds x 2, attention and the\n"
          "task's head included) and the memory plan of a training step: parameters, gradients,\n"
          "AdamW state and activations. Nothing is allocated on a device.\n"
          "\n"
          "Options:\n"
          "  -s, --set KEY=VALUE  override a key (as in 'modsquad config show'); repeatable\n"
          "  -b, --batch N        images per step for the memory plan (default train.batch_size)\n"
          "  -h, --help           show this help\n",
          f);
}

int cmd_info(int argc, char **argv) {
    static const struct option opts[] = {{"help", no_argument, 0, 'h'},
                                         {"set", required_argument, 0, 's'},
                                         {"batch", required_argument, 0, 'b'},
                                         {0, 0, 0, 0}};
    const char **sets = calloc((size_t)argc + 1, sizeof *sets); /* at most one per argument */
    if (!sets) return 1;
    int n_sets = 0, batch = 0, c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hs:b:", opts, NULL)) != -1) {
        if (c == 'h') {
            info_usage(stdout);
            free(sets);
            return fflush(stdout) == 0 ? 0 : 1;
        }
        if (c == 's') {
            sets[n_sets++] = optarg;
            continue;
        }
        if (c == 'b') {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 1 << 20) {
                free(sets);
                return ms_usage_error("info", "--batch wants a whole number from 1 to %d, got '%s'",
                                      1 << 20, optarg);
            }
            batch = (int)v;
            continue;
        }
        free(sets);
        if (c == ':') return ms_usage_error("info", "option '%s' needs a value", argv[optind - 1]);
        return ms_usage_error("info", "unknown option '%s'", argv[optind - 1]);
    }
    if (argc - optind != 1) {
        free(sets);
        if (argc == optind) return ms_usage_error("info", "missing the config FILE");
        return ms_usage_error("info", "expected one config FILE, got %d arguments", argc - optind);
    }
    ms_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) {
        free(sets);
        return 1;
    }
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    int n = ms_config_load(cfg, argv[optind], n_sets, sets, &errs);
    int status = 0;
    if (n) {
        ms_config_errors_print(&errs, stderr);
        fprintf(stderr, "modsquad info: %d error%s in the configuration\n", n, n == 1 ? "" : "s");
        status = 1;
    } else {
        if (!batch) batch = cfg->train.batch_size;
        /* The plan needs only the activation element size of the precision trained in. */
        ms_backend *cpu = ms_backend_cpu_create(1);
        ms_backend plan_be = *cpu;
        int bf16 = cfg->train.precision == MS_PRECISION_BF16;
        plan_be.act_dtype = bf16 ? MS_BF16 : MS_F32;
        plan_be.act_size = bf16 ? 2 : 4;
        ms_model *m = ms_model_create(cfg, &plan_be, &(ms_model_opts){.batch = batch, .plan_only = 1});
        printf("%s\n", argv[optind]);
        ms_model_print_info(m, cfg, batch, bf16 ? "bf16" : "fp32", stdout);
        ms_model_destroy(m);
        cpu->destroy(cpu);
        if (fflush(stdout) != 0 || ferror(stdout)) {
            fprintf(stderr, "modsquad info: error: writing to standard output failed\n");
            status = 1;
        }
    }
    ms_config_errors_free(&errs);
    free(cfg);
    free(sets);
    return status;
}
