#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../kernels/util.h"

#define PREFIX "ckpt-"
#define WEIGHTS_SUFFIX ".safetensors"
#define STATE_SUFFIX ".state.safetensors"

static void pair_paths(const char *dir, long step, char *w, char *s, size_t cap) {
    snprintf(w, cap, "%s/" PREFIX "%08ld" WEIGHTS_SUFFIX, dir, step);
    snprintf(s, cap, "%s/" PREFIX "%08ld" STATE_SUFFIX, dir, step);
}

void ms_ckpt_state_path(const char *weights_path, char *out, size_t cap) {
    size_t n = strlen(weights_path), sl = strlen(WEIGHTS_SUFFIX);
    if (n >= sl && strcmp(weights_path + n - sl, WEIGHTS_SUFFIX) == 0) n -= sl;
    snprintf(out, cap, "%.*s" STATE_SUFFIX, (int)n, weights_path);
}

/* Steps of the weights files in dir, newest first. */
static int list_steps(const char *dir, long **steps) {
    *steps = NULL;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *nm = e->d_name;
        size_t len = strlen(nm), wl = strlen(WEIGHTS_SUFFIX), sl = strlen(STATE_SUFFIX);
        if (strncmp(nm, PREFIX, strlen(PREFIX)) != 0 || len <= wl) continue;
        if (strcmp(nm + len - wl, WEIGHTS_SUFFIX) != 0) continue;
        if (len > sl && strcmp(nm + len - sl, STATE_SUFFIX) == 0) continue;
        char *end;
        long step = strtol(nm + strlen(PREFIX), &end, 10);
        if (end != nm + len - wl || step < 0) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            long *p = realloc(*steps, (size_t)cap * sizeof *p);
            if (!p) break;
            *steps = p;
        }
        (*steps)[n++] = step;
    }
    closedir(d);
    for (int i = 1; i < n; i++) /* insertion sort, newest first */
        for (int j = i; j > 0 && (*steps)[j] > (*steps)[j - 1]; j--) {
            long t = (*steps)[j];
            (*steps)[j] = (*steps)[j - 1], (*steps)[j - 1] = t;
        }
    return n;
}

/* A process killed in the middle of a write leaves NAME.tmp.PID behind; once that PID is gone
 * the file can never be completed, so it goes (one checkpoint-sized file per preemption
 * otherwise accumulates). */
static void remove_dead_temporaries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *tmp = strstr(e->d_name, ".safetensors.tmp.");
        if (!tmp || strncmp(e->d_name, PREFIX, strlen(PREFIX)) != 0) continue;
        char *end;
        long pid = strtol(tmp + strlen(".safetensors.tmp."), &end, 10);
        if (*end || pid <= 0 || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

int ms_ckpt_save(const char *dir, long step, const ms_param_table *pt, const float *params,
                 const ms_kv *meta, int n_meta, const ms_ckpt_array *state, int n_state,
                 const ms_kv *state_meta, int n_state_meta, int keep, char *err, size_t cap) {
    char wpath[4096], spath[4096];
    pair_paths(dir, step, wpath, spath, sizeof wpath);

    /* The state file: one 1-D tensor per array. */
    ms_param_table st = {0};
    const float **views = ms_calloc((size_t)(n_state ? n_state : 1), sizeof *views);
    for (int i = 0; i < n_state; i++) {
        ms_params_add(&st, state[i].name, 1, (int64_t[]){(int64_t)(state[i].n ? state[i].n : 1)}, 0);
        views[i] = state[i].data;
    }
    int rc = ms_safetensors_write_views(spath, &st, views, state_meta, n_state_meta, err, cap);
    free(views);
    ms_params_free(&st);
    if (rc) return rc;
    if (ms_safetensors_write(wpath, pt, params, meta, n_meta, err, cap)) return -1;

    /* last.safetensors: a hard link made under a temporary name, then renamed over. */
    char last[4096], tmp[4200];
    snprintf(last, sizeof last, "%s/last.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", last, (long)getpid());
    unlink(tmp);
    if (link(wpath, tmp) != 0 || rename(tmp, last) != 0) {
        ms_warn("cannot point %s at %s: %s (the checkpoint itself is complete)", last, wpath,
                strerror(errno));
        unlink(tmp);
    }

    remove_dead_temporaries(dir);
    if (keep > 0) {
        long *steps;
        int n = list_steps(dir, &steps);
        for (int i = keep; i < n; i++) {
            if (steps[i] >= step) continue;
            char w[4096], s[4096];
            pair_paths(dir, steps[i], w, s, sizeof w);
            unlink(w); /* weights first: a pair without weights is incomplete, never half-used */
            unlink(s);
        }
        free(steps);
    }
    return 0;
}

long ms_ckpt_latest(const char *dir, char *weights_path, size_t cap) {
    long *steps;
    int n = list_steps(dir, &steps);
    long found = -1;
    for (int i = 0; i < n && found < 0; i++) {
        char w[4096], s[4096], err[1024];
        pair_paths(dir, steps[i], w, s, sizeof w);
        ms_st_file f;
        if (ms_safetensors_read(w, &f, err, sizeof err)) {
            ms_warn("skipping checkpoint step %ld: %s", steps[i], err);
            continue;
        }
        ms_safetensors_free(&f);
        if (ms_safetensors_read(s, &f, err, sizeof err)) {
            ms_warn("skipping checkpoint step %ld: %s", steps[i], err);
            continue;
        }
        ms_safetensors_free(&f);
        snprintf(weights_path, cap, "%s", w);
        found = steps[i];
    }
    free(steps);
    return found;
}

int ms_st_get_array(const ms_st_file *f, const char *path, const char *name, float *out, size_t n,
                    char *err, size_t cap) {
    for (int i = 0; i < f->n; i++) {
        const ms_st_tensor *t = &f->t[i];
        if (strcmp(t->name, name) != 0) continue;
        size_t have = (t->end - t->begin) / sizeof(float);
        if (strcmp(t->dtype, "F32") != 0 || have != (n ? n : 1)) {
            snprintf(err, cap, "%s: tensor '%s' holds %zu %s values, expected %zu F32 (state from another config?)",
                     path, name, have, t->dtype, n);
            return -1;
        }
        memcpy(out, f->data + t->begin, n * sizeof(float));
        return 0;
    }
    snprintf(err, cap, "%s: no tensor '%s'", path, name);
    return -1;
}
