/* libFuzzer harness: the config loader (model/config_*.c through libyaml) on arbitrary bytes.
 *
 * Input layout: the YAML text runs up to the first NUL byte; every NUL-separated string after
 * it is one `--set key=value` argument (at most MAX_SETS), so one input exercises the file, the
 * overrides and their interplay. Seeds are real configs, optionally followed by overrides.
 *
 * Beyond "no crash, leak or hang", a config that loads cleanly must keep the promise of
 * config.h: the YAML it prints loads back, without errors, to an equal config. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../model/config.h"

#define MAX_SETS 8

static FILE *g_null; /* error listings and printed configs go nowhere, but are produced */

static void check_round_trip(const ms_config *cfg) {
    char *yaml = ms_config_to_yaml(cfg);
    if (!yaml) abort();
    ms_config *back = malloc(sizeof *back); /* ms_config is ~25 KB: keep it off the stack */
    if (!back) abort();
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    int n = ms_config_load_text(back, "printed.yaml", yaml, strlen(yaml), 0, NULL, &errs);
    const char *diff = NULL;
    if (n != 0 || !ms_config_equal(cfg, back, &diff)) {
        fprintf(stderr, "printed config does not load back equal (%d errors, first key that "
                        "differs: %s):\n%s\n",
                n, diff ? diff : "-", yaml);
        ms_config_errors_print(&errs, stderr);
        abort();
    }
    ms_config_errors_free(&errs);
    free(back);
    free(yaml);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_null && !(g_null = fopen("/dev/null", "w"))) abort();
    /* A private copy: the overrides must be NUL-terminated strings. */
    char *buf = malloc(size + 1);
    if (!buf) abort();
    memcpy(buf, data, size);
    buf[size] = '\0';
    size_t text_len = strlen(buf);
    const char *sets[MAX_SETS];
    int n_sets = 0;
    for (size_t at = text_len + 1; at < size && n_sets < MAX_SETS; at += strlen(buf + at) + 1)
        sets[n_sets++] = buf + at;

    ms_config *cfg = malloc(sizeof *cfg);
    if (!cfg) abort();
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    int n = ms_config_load_text(cfg, "fuzz.yaml", buf, text_len, n_sets, sets, &errs);
    if (n != errs.n) abort();
    for (int i = 0; i < errs.n; i++)
        if (!errs.msg[i] || !errs.msg[i][0]) abort(); /* every error says something */
    ms_config_errors_print(&errs, g_null);
    if (n == 0) {
        check_round_trip(cfg);
        char fp[MS_FINGERPRINT_LEN + 1];
        ms_config_fingerprint(cfg, fp);
        if (strlen(fp) != MS_FINGERPRINT_LEN) abort();
        for (int world = 1; world <= 3; world++) {
            ms_config_errors werrs;
            ms_config_errors_init(&werrs);
            ms_config_check_world(cfg, world, &werrs);
            ms_config_errors_free(&werrs);
        }
        ms_config_print(cfg, g_null);
    }
    ms_config_errors_free(&errs);
    free(cfg);
    free(buf);
    return 0;
}
