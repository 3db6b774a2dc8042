/* safetensors checkpoints: round trip, hand-written headers, and every kind of bad file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../model/safetensors.h"
#include "../testutil.h"

static char dir[64];

static void make_dir(void) {
    snprintf(dir, sizeof dir, "/tmp/ms_st_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void table(ms_param_table *pt, int64_t d) {
    memset(pt, 0, sizeof *pt);
    ms_params_add(pt, "patch_embed.proj.weight", 4, (int64_t[]){d, 3, 2, 2}, 1);
    ms_params_add(pt, "patch_embed.proj.bias", 1, (int64_t[]){d}, 0);
    ms_params_add(pt, "blocks.0.mlp.experts.w", 3, (int64_t[]){4, d, 5}, 1);
}

static float *random_params(const ms_param_table *pt, uint64_t seed) {
    float *x = tu_floats(pt->total);
    tu_rng r = tu_seed(seed);
    tu_fill(&r, x, pt->total, -1, 1);
    return x;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(p, 1, n, f), n);
    fclose(f);
}

static size_t read_bytes(const char *path, char **out) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    *out = malloc(n);
    cr_assert_eq(fread(*out, 1, n, f), n);
    fclose(f);
    return n;
}

Test(safetensors, round_trip_is_bit_exact) {
    make_dir();
    ms_param_table pt;
    table(&pt, 6);
    float *w = random_params(&pt, 1);
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    ms_kv meta[] = {{"config", "model:\n  dim: 6 # \"quoted\"\ttab\\"}, {"step", "42"}};
    cr_assert_eq(ms_safetensors_write(path, &pt, w, meta, 2, err, sizeof err), 0, "%s", err);

    ms_st_file f;
    cr_assert_eq(ms_safetensors_read(path, &f, err, sizeof err), 0, "%s", err);
    cr_assert_eq(f.n, 3);
    cr_assert_str_eq(ms_st_meta(&f, "config"), meta[0].value);
    cr_assert_str_eq(ms_st_meta(&f, "step"), "42");
    cr_assert_not_null(ms_st_meta(&f, "modsquad.crc32"));
    cr_assert_str_eq(f.t[2].name, "blocks.0.mlp.experts.w");
    cr_assert_eq(f.t[2].ndim, 3);
    cr_assert_eq(f.t[2].shape[1], 6);
    float *back = tu_floats(pt.total);
    cr_assert_eq(ms_safetensors_load_params(&f, path, &pt, back, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < pt.n; i++)
        tu_expect_equal(pt.t[i].name, back + pt.t[i].offset, w + pt.t[i].offset, pt.t[i].numel);
    ms_safetensors_free(&f);
    /* No temporary file is left behind. */
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s/a.safetensors.tmp.%ld", dir, (long)getpid());
    cr_assert_neq(access(tmp, F_OK), 0, "temporary file %s left behind", tmp);
}

/* A header as other writers produce it: spaces, escapes, unknown fields, data in another order. */
Test(safetensors, reads_foreign_header) {
    make_dir();
    const char *hdr = "{ \"b\\u0061r\" : {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16], \"extra\": [1, {\"x\": null}]},\n"
                      "  \"__metadata__\": {\"format\": \"pt\"}, \"foo\": {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]} }";
    size_t hl = strlen(hdr);
    unsigned char buf[512] = {0};
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    float vals[4] = {1, 2, 3, 4};
    memcpy(buf + 8 + hl, vals, sizeof vals);
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/foreign.safetensors", dir);
    write_bytes(path, buf, 8 + hl + sizeof vals);
    ms_st_file f;
    cr_assert_eq(ms_safetensors_read(path, &f, err, sizeof err), 0, "%s", err);
    cr_assert_eq(f.n, 2);
    cr_assert_str_eq(f.t[0].name, "bar");
    cr_assert_str_eq(ms_st_meta(&f, "format"), "pt");
    ms_param_table pt = {0};
    ms_params_add(&pt, "foo", 1, (int64_t[]){2}, 0);
    ms_params_add(&pt, "bar", 1, (int64_t[]){2}, 0);
    float *out = tu_floats(pt.total);
    cr_assert_eq(ms_safetensors_load_params(&f, path, &pt, out, err, sizeof err), 0, "%s", err);
    cr_assert_eq(out[pt.t[0].offset], 1.0f);
    cr_assert_eq(out[pt.t[1].offset + 1], 4.0f);
    ms_safetensors_free(&f);
}

static void expect_read_error(const char *path, const char *needle) {
    ms_st_file f;
    char err[512] = "";
    cr_assert_eq(ms_safetensors_read(path, &f, err, sizeof err), -1, "reading %s should fail", path);
    cr_assert(strstr(err, path), "message does not name the file: %s", err);
    cr_assert(strstr(err, needle), "message '%s' lacks '%s'", err, needle);
}

Test(safetensors, truncated_files_are_detected) {
    make_dir();
    ms_param_table pt;
    table(&pt, 5);
    float *w = random_params(&pt, 2);
    char path[128], cut[128], err[512];
    snprintf(path, sizeof path, "%s/full.safetensors", dir);
    snprintf(cut, sizeof cut, "%s/cut.safetensors", dir);
    cr_assert_eq(ms_safetensors_write(path, &pt, w, NULL, 0, err, sizeof err), 0, "%s", err);
    char *bytes;
    size_t n = read_bytes(path, &bytes);
    size_t cuts[] = {0, 4, 8, 20, n / 2, n - 1};
    const char *needles[] = {"too short", "too short", "does not fit", "does not fit", "truncated", "truncated"};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_bytes(cut, bytes, cuts[i]);
        expect_read_error(cut, needles[i]);
    }
    free(bytes);
}

Test(safetensors, corrupt_data_fails_checksum) {
    make_dir();
    ms_param_table pt;
    table(&pt, 5);
    float *w = random_params(&pt, 3);
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/c.safetensors", dir);
    cr_assert_eq(ms_safetensors_write(path, &pt, w, NULL, 0, err, sizeof err), 0, "%s", err);
    char *bytes;
    size_t n = read_bytes(path, &bytes);
    bytes[n - 7] ^= 0x10;
    write_bytes(path, bytes, n);
    expect_read_error(path, "checksum mismatch");
    free(bytes);
}

Test(safetensors, malformed_headers) {
    make_dir();
    const char *bad[] = {"{", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 8]}}",
                         "{\"a\": {\"dtype\": \"Q7\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
                         "{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", "[1, 2]",
                         "{\"a\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1], \"data_offsets\": [0, 4]}}",
                         "{\"a\\q\": 1}",
                         "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
                         "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}"};
    const char *needles[] = {"malformed", "data_offsets", "unknown dtype", "lacks dtype", "malformed",
                             "array too long", "bad escape", "appears twice", "overlap"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t hl = strlen(bad[i]);
        unsigned char buf[512] = {0};
        for (int k = 0; k < 8; k++) buf[k] = (unsigned char)((uint64_t)hl >> (8 * k));
        memcpy(buf + 8, bad[i], hl);
        char path[128];
        snprintf(path, sizeof path, "%s/bad%zu.safetensors", dir, i);
        write_bytes(path, buf, 8 + hl + 4);
        expect_read_error(path, needles[i]);
    }
}

Test(safetensors, other_config_is_named) {
    make_dir();
    ms_param_table pt, other;
    table(&pt, 6);
    table(&other, 7);
    float *w = random_params(&pt, 4);
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    cr_assert_eq(ms_safetensors_write(path, &pt, w, NULL, 0, err, sizeof err), 0, "%s", err);
    ms_st_file f;
    cr_assert_eq(ms_safetensors_read(path, &f, err, sizeof err), 0, "%s", err);
    float *out = tu_floats(other.total);
    cr_assert_eq(ms_safetensors_load_params(&f, path, &other, out, err, sizeof err), -1);
    cr_assert(strstr(err, "'patch_embed.proj.weight' has shape (6, 3, 2, 2) in the file but (7, 3, 2, 2)"), "%s", err);
    ms_param_table fewer = {0};
    ms_params_add(&fewer, "patch_embed.proj.bias", 1, (int64_t[]){6}, 0);
    cr_assert_eq(ms_safetensors_load_params(&f, path, &fewer, out, err, sizeof err), -1);
    cr_assert(strstr(err, "'patch_embed.proj.weight' is not a parameter of this model"), "%s", err);
    ms_param_table more;
    table(&more, 6);
    ms_params_add(&more, "norm.weight", 1, (int64_t[]){6}, 0);
    float *out2 = tu_floats(more.total);
    cr_assert_eq(ms_safetensors_load_params(&f, path, &more, out2, err, sizeof err), -1);
    cr_assert(strstr(err, "missing tensor 'norm.weight' (6)"), "%s", err);
    ms_safetensors_free(&f);
}

Test(safetensors, failed_write_keeps_previous_file) {
    make_dir();
    ms_param_table pt;
    table(&pt, 4);
    float *w = random_params(&pt, 5);
    char err[512];
    char path[160];
    snprintf(path, sizeof path, "%s/no/such/dir/x.safetensors", dir);
    cr_assert_eq(ms_safetensors_write(path, &pt, w, NULL, 0, err, sizeof err), -1);
    cr_assert(strstr(err, "cannot create"), "%s", err);
    /* A directory in the way of the rename: the write fails and nothing is replaced. */
    snprintf(path, sizeof path, "%s/isdir", dir);
    cr_assert_eq(mkdir(path, 0755), 0);
    cr_assert_eq(ms_safetensors_write(path, &pt, w, NULL, 0, err, sizeof err), -1);
    cr_assert(strstr(err, "cannot rename"), "%s", err);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
}
