/* modsquad config show FILE [--set key=value ...] | modsquad config keys */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/config.h"
#include "commands.h"

static void config_usage(FILE *f) {
    fputs("Usage: modsquad config <subcommand> [options]\n"
          "\n"
          "Subcommands:\n"
          "  show FILE [--set KEY=VALUE ...]  print the fully resolved configuration as YAML\n"
          "  keys                             print every key: type, default, allowed values\n"
          "\n"
          "Options:\n"
          "  -h, --help  show this help\n"
          "\n"
          "Every key is documented in docs/config.md.\n",
          f);
}

static void show_usage(FILE *f) {
    fputs("Usage: modsquad config show FILE [--set KEY=VALUE ...]\n"
          "\n"
          "Loads FILE, applies the overrides in order, fills in every default and automatic\n"
          "value, checks the result and prints it as YAML that loads back to the same config.\n"
          "Errors (all of them) go to stderr with FILE:LINE:COLUMN; the exit status is then 1.\n"
          "\n"
          "Options:\n"
          "  -s, --set KEY=VALUE  override a key; VALUE is YAML: 384, true, [normal, reshading],\n"
          "                       {semseg: 1, edge: 50}; repeatable, later ones win\n"
          "  -h, --help           show this help\n",
          f);
}

/* Flushes stdout and reports a failed write (a full disk, a closed pipe) as a failure. */
static int finish_stdout(const char *cmd) {
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "modsquad %s: error: writing to standard output failed\n", cmd);
        return 1;
    }
    return 0;
}

static int config_show(int argc, char **argv) {
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"set", required_argument, 0, 's'}, {0, 0, 0, 0}};
    const char **sets = calloc((size_t)argc + 1, sizeof *sets); /* [argc] at most one per arg */
    if (!sets) return 1;
    int n_sets = 0, c, status = 0;
    optind = 0; /* glibc: re-initialise getopt for this argv */
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hs:", opts, NULL)) != -1) {
        if (c == 'h') {
            show_usage(stdout);
            free(sets);
            return finish_stdout("config show");
        }
        if (c == 's') {
            sets[n_sets++] = optarg;
            continue;
        }
        free(sets);
        if (c == ':')
            return ms_usage_error("config show", "option '%s' needs KEY=VALUE", argv[optind - 1]);
        return ms_usage_error("config show", "unknown option '%s'", argv[optind - 1]);
    }
    if (argc - optind != 1) {
        free(sets);
        if (argc == optind) return ms_usage_error("config show", "missing the config FILE");
        return ms_usage_error("config show", "expected one config FILE, got %d arguments",
                              argc - optind);
    }
    ms_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) {
        free(sets);
        return 1;
    }
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    int n = ms_config_load(cfg, argv[optind], n_sets, sets, &errs);
    if (n) {
        ms_config_errors_print(&errs, stderr);
        fprintf(stderr, "modsquad config show: %d error%s in the configuration\n", n,
                n == 1 ? "" : "s");
        status = 1;
    } else {
        ms_config_print(cfg, stdout);
        status = finish_stdout("config show");
    }
    ms_config_errors_free(&errs);
    free(cfg);
    free(sets);
    return status;
}

static int config_keys(int argc, char **argv) {
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (c == 'h') {
            printf("Usage: modsquad config keys\n\nPrints every configuration key as a markdown "
                   "table (the reference of docs/config.md).\n");
            return finish_stdout("config keys");
        }
        return ms_usage_error("config keys", "unknown option '%s'", argv[optind - 1]);
    }
    if (optind < argc)
        return ms_usage_error("config keys", "unexpected argument '%s'", argv[optind]);
    ms_config_print_keys(stdout);
    return finish_stdout("config keys");
}

int cmd_config(int argc, char **argv) {
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 0;
    opterr = 0;
    /* '+': stop at the subcommand, whose options are its own. */
    while ((c = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
        if (c == 'h') {
            config_usage(stdout);
            return finish_stdout("config");
        }
        return ms_usage_error("config", "unknown option '%s'", argv[optind - 1]);
    }
    if (optind >= argc) return ms_usage_error("config", "missing the subcommand (show or keys)");
    const char *sub = argv[optind];
    if (!strcmp(sub, "show")) return config_show(argc - optind, argv + optind);
    if (!strcmp(sub, "keys")) return config_keys(argc - optind, argv + optind);
    return ms_usage_error("config", "unknown subcommand '%s' (expected show or keys)", sub);
}
