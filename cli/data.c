/* modsquad data check CONFIG [--set k=v] [--reindex] | modsquad data bench CONFIG [--set k=v]
 *
 * check: indexes the configured train and val splits, decodes every file and prints, per task,
 * the files found, missing and unreadable, the value range in physical units and the share of
 * pixels without supervision; names every unreadable file; exits 1 when a file is unreadable
 * (or missing while data.on_missing is error), so a user can run it before a multi-day job.
 * bench: images per second decoded and augmented by the loader, as training runs it. */
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../data/dataset.h"
#include "../data/loader.h"
#include "../kernels/util.h"
#include "../model/config.h"
#include "commands.h"

#define MAX_LISTED 10 /* missing files listed per task */

static void data_usage(FILE *f) {
    fputs("Usage: modsquad data <subcommand> CONFIG [options]\n"
          "\n"
          "Subcommands:\n"
          "  check CONFIG  decode every file of the train and val splits; report per task the\n"
          "                files found, missing and unreadable, value ranges and masked pixels\n"
          "  bench CONFIG  images per second decoded and augmented by the data loader\n"
          "\n"
          "Options:\n"
          "  -s, --set KEY=VALUE  override a configuration key (repeatable)\n"
          "      --reindex        check: list the directories again (ignore the index cache)\n"
          "  -n, --batches N      bench: batches to time (default 20)\n"
          "  -h, --help           show this help\n"
          "\n"
          "docs/datasets.md explains how to obtain the datasets and point a config at them.\n",
          f);
}

typedef struct {
    const char **sets;
    int n_sets, reindex, batches;
    const char *config;
} data_args;

/* Parses the options after the subcommand; returns -1 to continue or an exit status. */
static int parse(int argc, char **argv, const char *cmd, data_args *a) {
    static const struct option opts[] = {{"help", no_argument, 0, 'h'},
                                         {"set", required_argument, 0, 's'},
                                         {"reindex", no_argument, 0, 'r'},
                                         {"batches", required_argument, 0, 'n'},
                                         {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->sets = calloc((size_t)argc + 1, sizeof *a->sets);
    a->batches = 20;
    if (!a->sets) return 1;
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":hs:n:", opts, NULL)) != -1) {
        switch (c) {
        case 'h': data_usage(stdout); return 0;
        case 's': a->sets[a->n_sets++] = optarg; break;
        case 'r': a->reindex = 1; break;
        case 'n':
            a->batches = atoi(optarg);
            if (a->batches < 1) return ms_usage_error(cmd, "--batches needs a positive number");
            break;
        case ':': return ms_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        default: return ms_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return ms_usage_error(cmd, argc == optind ? "missing the config FILE"
                                                  : "expected one config FILE");
    a->config = argv[optind];
    return -1;
}

static ms_config *load_config(const data_args *a, const char *cmd) {
    ms_config *cfg = ms_calloc(1, sizeof *cfg);
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    int n = ms_config_load(cfg, a->config, a->n_sets, a->sets, &errs);
    if (n) {
        ms_config_errors_print(&errs, stderr);
        fprintf(stderr, "modsquad %s: %d error%s in the configuration\n", cmd, n,
                n == 1 ? "" : "s");
        free(cfg);
        cfg = NULL;
    }
    ms_config_errors_free(&errs);
    return cfg;
}

/* ---- check ----------------------------------------------------------------------------------- */

typedef struct {
    int64_t sample;
    char *msg;
} bad_file;

typedef struct {
    bad_file *v;
    int64_t n, cap;
    int64_t sample; /* the sample being checked by this thread */
} bad_list;

static void on_bad(void *ctx, const char *msg) {
    bad_list *l = ctx;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = realloc(l->v, (size_t)l->cap * sizeof *l->v);
        MS_ASSERT(l->v);
    }
    l->v[l->n].sample = l->sample;
    l->v[l->n++].msg = strdup(msg);
}

static int cmp_bad(const void *a, const void *b) {
    const bad_file *x = a, *y = b;
    if (x->sample != y->sample) return x->sample < y->sample ? -1 : 1;
    return strcmp(x->msg, y->msg);
}

static void merge_stats(ms_task_stats *into, const ms_task_stats *from) {
    into->unreadable += from->unreadable;
    into->pixels += from->pixels;
    into->masked += from->masked;
    if (from->lo <= from->hi) {
        if (into->lo > into->hi) into->lo = from->lo, into->hi = from->hi;
        if (from->lo < into->lo) into->lo = from->lo;
        if (from->hi > into->hi) into->hi = from->hi;
    }
    if (from->units) into->units = from->units;
}

/* Checks one split; returns 1 when it has unreadable files (or missing ones that training
 * would stop at), 0 when it is clean, 2 when it cannot be indexed. */
static int check_split(const ms_config *cfg, const char *split, int reindex) {
    ms_data *d;
    ms_io_err err;
    ms_data_open_opts oo = {.report_only = 1, .rebuild = reindex};
    if (ms_data_open(&d, cfg, split, &oo, &err)) {
        fprintf(stderr, "modsquad data check: split '%s': %s\n", split, err.msg);
        return 2;
    }
    printf("split '%s': %lld samples (%s)\n", split, (long long)d->n, d->index_note);
    if (d->no_mask)
        printf("  %lld samples have no depth file for the invalid-pixel mask of the geometric "
               "tasks\n", (long long)d->no_mask);
    ms_task_stats total[MS_MAX_TASKS];
    memset(total, 0, sizeof total);
    for (int t = 0; t < d->T; t++) total[t].lo = 1, total[t].hi = 0;
    bad_list all = {0};
    int64_t done = 0;
    double t0 = ms_now(), last = t0;
#pragma omp parallel
    {
        void *scratch = d->ops->scratch_new(d);
        ms_task_stats mine[MS_MAX_TASKS];
        memset(mine, 0, sizeof mine);
        for (int t = 0; t < d->T; t++) mine[t].lo = 1, mine[t].hi = 0;
        bad_list bad = {0};
#pragma omp for schedule(dynamic, 8)
        for (int64_t i = 0; i < d->n; i++) {
            bad.sample = i;
            d->ops->check(d, i, scratch, mine, on_bad, &bad);
#pragma omp atomic
            done++;
            if (omp_get_thread_num() == 0 && ms_now() - last > 10.0) {
                last = ms_now();
                fprintf(stderr, "  ... %lld of %lld samples checked\n", (long long)done,
                        (long long)d->n);
            }
        }
#pragma omp critical
        {
            for (int t = 0; t < d->T; t++) merge_stats(&total[t], &mine[t]);
            for (int64_t k = 0; k < bad.n; k++) {
                all.sample = bad.v[k].sample;
                on_bad(&all, bad.v[k].msg);
                free(bad.v[k].msg);
            }
        }
        free(bad.v);
        d->ops->scratch_free(scratch);
    }
    qsort(all.v, (size_t)all.n, sizeof *all.v, cmp_bad);

    printf("  %-20s %9s %9s %10s  %-32s %8s\n", "task", "found", "missing", "unreadable",
           "value range", "masked");
    int64_t missing = 0;
    for (int t = 0; t < d->T; t++) {
        const ms_task_stats *s = &total[t];
        char range[64] = "-";
        if (s->lo <= s->hi)
            ms_strf(range, sizeof range, "%.4g .. %.4g %s", s->lo, s->hi, s->units ? s->units : "");
        char masked[16] = "-";
        if (s->pixels) ms_strf(masked, sizeof masked, "%.2f%%", 100.0 * s->masked / s->pixels);
        printf("  %-20s %9lld %9lld %10lld  %-32s %8s\n", d->task[t]->name,
               (long long)d->found[t], (long long)d->missing[t], (long long)s->unreadable, range,
               masked);
        missing += d->missing[t];
    }
    for (int t = 0; t < d->T; t++) {
        if (!d->missing[t]) continue;
        printf("  missing %s files:\n", d->task[t]->name);
        int64_t listed = 0;
        char path[MS_PATH_MAX];
        for (int64_t i = 0; i < d->n && listed < MAX_LISTED; i++)
            if (d->ops->missing(d, i, t, path, sizeof path)) printf("    %s\n", path), listed++;
        if (d->missing[t] > listed)
            printf("    ... and %lld more\n", (long long)(d->missing[t] - listed));
    }
    for (int64_t k = 0; k < all.n; k++) {
        fprintf(stderr, "modsquad data check: unreadable: %s\n", all.v[k].msg);
        free(all.v[k].msg);
    }
    printf("  checked in %.1f s\n", ms_now() - t0);
    int status = all.n > 0 || (missing && cfg->data.on_missing == MS_ON_MISSING_ERROR);
    if (all.n)
        printf("  %lld unreadable file%s (listed on stderr)\n", (long long)all.n,
               all.n == 1 ? "" : "s");
    if (missing && cfg->data.on_missing == MS_ON_MISSING_ERROR)
        printf("  %lld missing file%s: training stops at the first (data.on_missing: error); "
               "set data.on_missing: skip to drop those samples\n",
               (long long)missing, missing == 1 ? "" : "s");
    free(all.v);
    ms_data_close(d);
    return status;
}

static int data_check(int argc, char **argv) {
    data_args a;
    int rc = parse(argc, argv, "data check", &a);
    if (rc >= 0) {
        free(a.sets);
        return rc;
    }
    ms_config *cfg = load_config(&a, "data check");
    if (!cfg) {
        free(a.sets);
        return 1;
    }
    printf("dataset %s at %s, tasks:", ms_dataset_names[cfg->data.dataset], cfg->data.root);
    for (int t = 0; t < cfg->data.tasks.n; t++) printf(" %s", cfg->data.tasks.name[t]);
    printf("\n");
    int status = check_split(cfg, cfg->data.train_split, a.reindex);
    if (strcmp(cfg->data.val_split, cfg->data.train_split) != 0)
        status |= check_split(cfg, cfg->data.val_split, a.reindex);
    printf(status ? "data check: problems found\n" : "data check: every file is readable\n");
    free(cfg);
    free(a.sets);
    return status ? 1 : 0;
}

/* ---- bench ----------------------------------------------------------------------------------- */

static int data_bench(int argc, char **argv) {
    data_args a;
    int rc = parse(argc, argv, "data bench", &a);
    if (rc >= 0) {
        free(a.sets);
        return rc;
    }
    ms_config *cfg = load_config(&a, "data bench");
    free(a.sets);
    if (!cfg) return 1;
    ms_data *d = NULL;
    ms_loader *L = NULL;
    ms_io_err err;
    int status = 1;
    if (ms_data_open(&d, cfg, cfg->data.train_split, NULL, &err)) {
        fprintf(stderr, "modsquad data bench: %s\n", err.msg);
        goto done;
    }
    ms_loader_opts o;
    ms_loader_opts_from_config(&o, cfg, 1, 0, 1);
    if (ms_loader_open(&L, d, cfg, &o, &err)) {
        fprintf(stderr, "modsquad data bench: %s\n", err.msg);
        goto done;
    }
    ms_batch *b;
    /* the first batch includes starting the workers and warming the caches */
    if ((rc = ms_loader_next(L, &b, &err)) != 1) {
        fprintf(stderr, "modsquad data bench: %s\n", rc ? err.msg : "no batch");
        goto done;
    }
    double t0 = ms_now();
    int64_t images = 0;
    for (int k = 0; k < a.batches; k++) {
        if ((rc = ms_loader_next(L, &b, &err)) != 1) {
            fprintf(stderr, "modsquad data bench: %s\n", rc ? err.msg : "no batch");
            goto done;
        }
        images += b->B;
    }
    double dt = ms_now() - t0;
    printf("data bench: %s split '%s', %d task%s, %dx%d images, batch %d, %d worker%s: "
           "%.1f images/s decoded and augmented (%lld images in %.2f s)\n",
           ms_dataset_names[cfg->data.dataset], d->split, d->T, d->T == 1 ? "" : "s", d->size,
           d->size, o.batch_size, o.workers, o.workers == 1 ? "" : "s", images / dt,
           (long long)images, dt);
    status = 0;
done:
    ms_loader_close(L);
    ms_data_close(d);
    free(cfg);
    return status;
}

int cmd_data(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        data_usage(stdout);
        return 0;
    }
    if (argc < 2) {
        data_usage(stderr);
        return MS_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "check")) return data_check(argc - 1, argv + 1);
    if (!strcmp(argv[1], "bench")) return data_bench(argc - 1, argv + 1);
    return ms_usage_error("data", "unknown subcommand '%s' (check or bench)", argv[1]);
}
