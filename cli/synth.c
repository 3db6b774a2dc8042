/* modsquad synth: writes a synthetic multi-task dataset (data/synth.h, docs/synthetic.md). */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../data/synth.h"
#include "commands.h"

static void synth_usage(FILE *f) {
    fputs("Usage: modsquad synth --out DIR [options]\n"
          "\n"
          "Renders procedural rooms (boxes, spheres, cylinders, capsules and, for PASCAL, person\n"
          "figures; textured, lit, with windows and doors to the sky) by ray casting, and writes\n"
          "every label of each scene from the same rays in the real dataset layout, so the real\n"
          "loaders read it. Scene i depends only on the seed, i, the layout, the size and the\n"
          "building count. docs/synthetic.md describes the scenes and labels.\n"
          "\n"
          "Options:\n"
          "  -o, --out DIR          output directory (created)\n"
          "  -l, --layout NAME      taskonomy (default): {DIR}/{domain}/taskonomy/{building}/...\n"
          "                         and DIR/splits.csv; or pascal: the PASCAL_MT folders\n"
          "  -n, --count N          number of scenes (default 100)\n"
          "  -s, --size S           image side in pixels; PASCAL: the longer side (default 128)\n"
          "      --seed X           random seed, 0..2^64-1 (default 0)\n"
          "      --splits A,B,C     train,val,test shares: fractions summing to at most 1\n"
          "                         (default 0.7,0.15,0.15; PASCAL 0.5,0.5,0) or whole counts of\n"
          "                         buildings (Taskonomy) or images (PASCAL), e.g. 25,5,5\n"
          "      --buildings B      Taskonomy: scene i is in building i % B (default 35)\n"
          "  -j, --threads T        threads (default: all cores)\n"
          "      --jpeg-quality Q   PASCAL JPEG quality 1..100 (default 90)\n"
          "      --sync             fsync every file (default: atomic renames only)\n"
          "  -q, --quiet            print nothing on success\n"
          "  -h, --help             show this help\n",
          f);
}

/* A whole number in [lo, hi] from the complete string s. */
static int parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* "A,B,C": fractions when every share is <= 1 and they sum to at most 1, whole counts
 * otherwise. */
static int parse_splits(const char *s, ms_synth_opts *o) {
    double v[3];
    const char *p = s;
    for (int k = 0; k < 3; k++) {
        char *end;
        errno = 0;
        v[k] = strtod(p, &end);
        if (errno || end == p || !(v[k] >= 0)) return -1;
        if (k < 2 ? *end != ',' : *end != '\0') return -1;
        p = end + 1;
    }
    double sum = v[0] + v[1] + v[2];
    int fractions = sum <= 1 + 1e-9;
    for (int k = 0; k < 3; k++) {
        if (!fractions && v[k] != (double)(long)v[k]) return -1;
        o->split[k] = v[k];
    }
    o->split_counts = !fractions;
    return 0;
}

int cmd_synth(int argc, char **argv) {
    enum { OPT_SEED = 256, OPT_SPLITS, OPT_BUILDINGS, OPT_JPEG, OPT_SYNC };
    static const struct option opts[] = {{"out", required_argument, 0, 'o'},
                                         {"layout", required_argument, 0, 'l'},
                                         {"count", required_argument, 0, 'n'},
                                         {"size", required_argument, 0, 's'},
                                         {"seed", required_argument, 0, OPT_SEED},
                                         {"splits", required_argument, 0, OPT_SPLITS},
                                         {"buildings", required_argument, 0, OPT_BUILDINGS},
                                         {"threads", required_argument, 0, 'j'},
                                         {"jpeg-quality", required_argument, 0, OPT_JPEG},
                                         {"sync", no_argument, 0, OPT_SYNC},
                                         {"quiet", no_argument, 0, 'q'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    /* The layout decides some defaults, so options are collected first and applied after. */
    const char *out = NULL, *layout = "taskonomy", *splits = NULL;
    long count = -1, size = -1, buildings = -1, threads = -1, jpeg = -1;
    unsigned long long seed = 0;
    int sync = 0, quiet = 0, c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:l:n:s:j:qh", opts, NULL)) != -1) {
        const char *opt = argv[optind - 1];
        switch (c) {
        case 'h': synth_usage(stdout); return fflush(stdout) == 0 ? 0 : 1;
        case 'o': out = optarg; break;
        case 'l': layout = optarg; break;
        case 'n':
            if (parse_int(optarg, 1, 100000000, &count))
                return ms_usage_error("synth", "--count '%s': expected a whole number >= 1", optarg);
            break;
        case 's':
            if (parse_int(optarg, 16, 4096, &size))
                return ms_usage_error("synth", "--size '%s': expected 16..4096 pixels", optarg);
            break;
        case OPT_SEED: {
            char *end;
            errno = 0;
            seed = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-')
                return ms_usage_error("synth", "--seed '%s': expected a whole number 0..2^64-1", optarg);
            break;
        }
        case OPT_SPLITS: splits = optarg; break;
        case OPT_BUILDINGS:
            if (parse_int(optarg, 1, MS_SYNTH_MAX_BUILDINGS, &buildings))
                return ms_usage_error("synth", "--buildings '%s': expected 1..%d", optarg,
                                      MS_SYNTH_MAX_BUILDINGS);
            break;
        case 'j':
            if (parse_int(optarg, 1, 1024, &threads))
                return ms_usage_error("synth", "--threads '%s': expected 1..1024", optarg);
            break;
        case OPT_JPEG:
            if (parse_int(optarg, 1, 100, &jpeg))
                return ms_usage_error("synth", "--jpeg-quality '%s': expected 1..100", optarg);
            break;
        case OPT_SYNC: sync = 1; break;
        case 'q': quiet = 1; break;
        case ':': return ms_usage_error("synth", "option '%s' needs a value", opt);
        default: return ms_usage_error("synth", "unknown option '%s'", opt);
        }
    }
    if (optind < argc) return ms_usage_error("synth", "unexpected argument '%s'", argv[optind]);
    if (!out || !*out) return ms_usage_error("synth", "missing --out DIR");
    ms_synth_opts o;
    if (!strcmp(layout, "taskonomy")) ms_synth_defaults(&o, MS_SYNTH_TASKONOMY);
    else if (!strcmp(layout, "pascal")) ms_synth_defaults(&o, MS_SYNTH_PASCAL);
    else return ms_usage_error("synth", "--layout '%s': expected taskonomy or pascal", layout);
    o.out = out;
    o.seed = seed;
    if (count > 0) o.count = (int)count;
    if (size > 0) o.size = (int)size;
    if (buildings > 0) o.buildings = (int)buildings;
    if (threads > 0) o.threads = (int)threads;
    if (jpeg > 0) o.jpeg_quality = (int)jpeg;
    if (sync) o.flags &= ~MS_IO_NOSYNC;
    if (splits && parse_splits(splits, &o))
        return ms_usage_error("synth", "--splits '%s': expected three shares A,B,C: fractions "
                              "summing to at most 1 or whole counts", splits);
    char err[1200];
    if (ms_synth_check(&o, err, sizeof err)) return ms_usage_error("synth", "%s", err);

    /* Every PNG, JPEG and .mat writer allocates and frees its codec state (hundreds of KB);
     * without this glibc hands that memory back to the kernel after each file, and the page
     * faults to get it again cost a third of the CPU time of a run. */
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    double t0 = omp_get_wtime();
    if (ms_synth_write(&o, err, sizeof err)) {
        fprintf(stderr, "modsquad synth: error: %s\n", err);
        return 1;
    }
    double secs = omp_get_wtime() - t0;
    if (!quiet) {
        printf("modsquad synth: wrote %d %s scene%s (%d px) to %s in %.1f s (%.0f scenes/s)\n",
               o.count, layout, o.count == 1 ? "" : "s", o.size, o.out, secs,
               secs > 0 ? o.count / secs : 0.0);
        if (o.layout == MS_SYNTH_TASKONOMY)
            printf("  splits: %s/splits.csv (%d building%s)\n", o.out,
                   o.count < o.buildings ? o.count : o.buildings,
                   (o.count < o.buildings ? o.count : o.buildings) == 1 ? "" : "s");
        else
            printf("  splits: %s/ImageSets/Context/{train,val}.txt\n", o.out);
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
