/* modsquad: dispatches `modsquad <command> [options]` to cli/<command>.c. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"config", cmd_config, "show the resolved configuration (config show FILE) or every key (config keys)"},
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

int ms_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "modsquad%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fprintf(stderr, "Try 'modsquad%s%s --help'.\n", cmd ? " " : "", cmd ? cmd : "");
    return MS_EXIT_USAGE;
}

int main(int argc, char **argv) {
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
