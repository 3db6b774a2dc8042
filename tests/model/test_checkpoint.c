/* Checkpoint pairs in a run directory: keep-N, last.safetensors, newest complete pair, and
 * skipping of partial or corrupt pairs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../model/checkpoint.h"
#include "../testutil.h"

static char dir[64];
static ms_param_table pt;
static float *params, *moment;

static void setup(void) {
    snprintf(dir, sizeof dir, "/tmp/ms_ckpt_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    memset(&pt, 0, sizeof pt);
    ms_params_add(&pt, "w", 2, (int64_t[]){3, 4}, 1);
    ms_params_add(&pt, "b", 1, (int64_t[]){4}, 0);
    params = tu_floats(pt.total);
    moment = tu_floats(pt.total);
}

static void save(long step, int keep) {
    tu_rng r = tu_seed((uint64_t)step);
    tu_fill(&r, params, pt.total, -1, 1);
    tu_fill(&r, moment, pt.total, 0, 1);
    char stepstr[32], err[512];
    snprintf(stepstr, sizeof stepstr, "%ld", step);
    ms_kv meta[] = {{"modsquad.step", stepstr}};
    ms_ckpt_array st[] = {{"optimizer.exp_avg", moment, pt.total}};
    cr_assert_eq(ms_ckpt_save(dir, step, &pt, params, meta, 1, st, 1, meta, 1, keep, err, sizeof err), 0, "%s", err);
}

static int exists(const char *name) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

Test(checkpoint, keeps_newest_and_links_last, .init = setup) {
    save(10, 2);
    save(20, 2);
    save(30, 2);
    cr_assert(!exists("ckpt-00000010.safetensors") && !exists("ckpt-00000010.state.safetensors"));
    cr_assert(exists("ckpt-00000020.safetensors") && exists("ckpt-00000030.state.safetensors"));
    char a[256], b[256];
    struct stat sa, sb;
    snprintf(a, sizeof a, "%s/last.safetensors", dir);
    snprintf(b, sizeof b, "%s/ckpt-00000030.safetensors", dir);
    cr_assert_eq(stat(a, &sa), 0);
    cr_assert_eq(stat(b, &sb), 0);
    cr_assert_eq(sa.st_ino, sb.st_ino, "last.safetensors is not the newest checkpoint");

    char w[512];
    cr_assert_eq(ms_ckpt_latest(dir, w, sizeof w), 30);
    cr_assert_str_eq(w, b);
    char s[512], err[512];
    ms_ckpt_state_path(w, s, sizeof s);
    ms_st_file f;
    cr_assert_eq(ms_safetensors_read(s, &f, err, sizeof err), 0, "%s", err);
    float *back = tu_floats(pt.total);
    cr_assert_eq(ms_st_get_array(&f, s, "optimizer.exp_avg", back, pt.total, err, sizeof err), 0, "%s", err);
    tu_expect_equal("optimizer moment", back, moment, pt.total);
    cr_assert_eq(ms_st_get_array(&f, s, "optimizer.exp_avg", back, pt.total + 1, err, sizeof err), -1);
    cr_assert(strstr(err, "expected"), "%s", err);
    cr_assert_eq(ms_st_get_array(&f, s, "nope", back, 1, err, sizeof err), -1);
    cr_assert(strstr(err, "no tensor 'nope'"), "%s", err);
    ms_safetensors_free(&f);
}

static void truncate_file(const char *name, long keep_bytes) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    cr_assert_eq(truncate(p, keep_bytes), 0);
}

Test(checkpoint, skips_partial_and_corrupt_pairs, .init = setup) {
    save(1, 0);
    save(2, 0);
    save(3, 0);
    save(4, 0);
    truncate_file("ckpt-00000004.safetensors", 100);      /* weights cut short */
    truncate_file("ckpt-00000003.state.safetensors", 50); /* state cut short */
    char p[256];
    snprintf(p, sizeof p, "%s/ckpt-00000002.safetensors", dir);
    FILE *f = fopen(p, "r+b");
    cr_assert_not_null(f);
    fseek(f, -3, SEEK_END);
    fputc('x', f); /* one corrupt byte in the data */
    fclose(f);
    char w[512];
    cr_assert_eq(ms_ckpt_latest(dir, w, sizeof w), 1, "should fall back to the last good pair");
    /* A state file without its weights (a crash between the two writes) is not a checkpoint. */
    snprintf(p, sizeof p, "%s/ckpt-00000009.state.safetensors", dir);
    FILE *g = fopen(p, "wb");
    cr_assert_not_null(g);
    fclose(g);
    cr_assert_eq(ms_ckpt_latest(dir, w, sizeof w), 1);
}

Test(checkpoint, empty_or_missing_directory, .init = setup) {
    char w[512];
    cr_assert_eq(ms_ckpt_latest(dir, w, sizeof w), -1);
    cr_assert_eq(ms_ckpt_latest("/tmp/ms_no_such_dir_for_ckpt", w, sizeof w), -1);
}

/* A temporary left by a killed writer goes at the next save; a live writer's stays. */
Test(checkpoint, removes_temporaries_of_dead_writers, .init = setup) {
    char dead[256], live[256];
    /* Fork a child that exits at once: its pid is certainly dead afterwards. */
    pid_t child = fork();
    cr_assert_neq(child, -1);
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0);
    snprintf(dead, sizeof dead, "%s/ckpt-00000005.safetensors.tmp.%ld", dir, (long)child);
    snprintf(live, sizeof live, "%s/ckpt-00000006.safetensors.tmp.%ld", dir, (long)getppid());
    FILE *f = fopen(dead, "w");
    cr_assert_not_null(f);
    fclose(f);
    f = fopen(live, "w");
    cr_assert_not_null(f);
    fclose(f);
    save(7, 0);
    cr_assert_neq(access(dead, F_OK), 0, "the dead writer's temporary %s is still there", dead);
    cr_assert_eq(access(live, F_OK), 0, "a live process's temporary was removed");
}
