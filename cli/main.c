/* modsquad: dispatches `modsquad <command> [options]` to cli/<command>.c. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"train", cmd_train, "train a model from a config (train CONFIG [--set k=v] [--resume auto|PATH])"},
    {"eval", cmd_eval, "evaluate a checkpoint: metrics, Delta_m, expert usage (eval --checkpoint P)"},
    {"extract", cmd_extract, "take one task's model out of a checkpoint (extract --task NAME --checkpoint P --out Q)"},
    {"config", cmd_config, "show the resolved configuration (config show FILE) or every key (config keys)"},
    {"info", cmd_info, "parameters, FLOPs per image and the memory plan of a config's model"},
    {"data", cmd_data, "check a dataset before training (data check FILE) or time the loader (data bench FILE)"},
    {"synth", cmd_synth, "write a synthetic multi-task dataset (Taskonomy or PASCAL_MT layout)"},
    {"bench", cmd_bench, "time training steps against this machine's GEMM peak (bench [CONFIG] [--steps N] [--json])"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void print_help(FILE *f) {
    fprintf(f,
            "modsquad %s: trains multi-task mixture-of-experts vision transformers (Mod-Squad and\n"
            "its baselines) on the CPU or on CUDA GPUs.\n\n"
            "Usage: modsquad <command> [options]\n\nCommands:\n",
            MS_VERSION);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f,
            "\nOptions:\n"
            "  -h, --help     show this help\n"
            "  -V, --version  show the version\n\n"
            "Run 'modsquad <command> --help' for a command's options.\n");
}

/* The OpenMP runtime reads OMP_WAIT_POLICY when it loads, before main. Its default lets idle
 * threads spin, which starves the data-loading threads on a small machine (on 2 cores a demo
 * step took 7x longer). Unless the user chose a policy, run again with the passive one. */
static void ensure_passive_wait(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("MODSQUAD_NO_REEXEC")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    setenv("MODSQUAD_NO_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    /* Not fatal: without /proc the run is only slower. */
}

int main(int argc, char **argv) {
    ensure_passive_wait(argv);
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"version", no_argument, 0, 'V'}, {0, 0, 0, 0}};
    /* '+' stops at the first non-option: the command's own options are parsed by it. */
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "+hV", opts, NULL)) != -1) {
        switch (c) {
        case 'h': print_help(stdout); return 0;
        case 'V': printf("modsquad %s\n", MS_VERSION); return 0;
        default:
            return ms_usage_error(NULL, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) {
        print_help(stderr);
        return MS_EXIT_USAGE;
    }
    int first = optind;
    const char *name = argv[first];
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(commands[i].name, name) == 0) {
            /* glibc: optind = 0 fully re-initialises getopt for the command's own parsing. */
            optind = 0;
            opterr = 1;
            return commands[i].run(argc - first, argv + first);
        }
    }
    return ms_usage_error(NULL, "unknown command '%s'", name);
}
