#include "harness.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The simt binary is built with AddressSanitizer for its memory checks; the test scaffolding
 * (tu_ buffers) is freed at process exit by design, so leak detection is off unless the
 * environment asks for it (SANITIZE=1 runs set ASAN_OPTIONS themselves). */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }

ms_backend *sim_cuda(ms_dtype act) {
    static ms_backend *be[2];
    if (!be[act]) {
        char err[256];
        be[act] = ms_backend_cuda_create(0, act, 0, err, sizeof err);
        cr_assert_not_null(be[act], "emulated CUDA backend: %s", err);
    }
    return be[act];
}

double sim_tol(const ms_backend *be) {
    return be->act_dtype == MS_BF16 ? SIM_TOL_BF16 : SIM_TOL_F32;
}

/* Every buffer handed out, to free them all at the end of a test. */
#define SIM_MAX_BUFFERS 512
static struct {
    ms_backend *be;
    void *p;
} g_buffers[SIM_MAX_BUFFERS];
static int g_nbuffers;

static void *dev_alloc(ms_backend *be, size_t bytes) {
    cr_assert(g_nbuffers < SIM_MAX_BUFFERS, "sim: more than %d buffers in one test",
              SIM_MAX_BUFFERS);
    void *p = be->alloc(be, bytes ? bytes : 1);
    cr_assert_not_null(p, "sim: %s alloc of %zu bytes failed", be->name, bytes);
    g_buffers[g_nbuffers].be = be;
    g_buffers[g_nbuffers++].p = p;
    return p;
}

void sim_free_all(void) {
    for (int i = 0; i < g_nbuffers; i++) g_buffers[i].be->free(g_buffers[i].be, g_buffers[i].p);
    g_nbuffers = 0;
}

void *sim_act(ms_backend *be, const float *host, size_t n) {
    void *d = dev_alloc(be, n * be->act_size);
    be->upload_act(be, d, host, n);
    return d;
}

float *sim_f32(ms_backend *be, const float *host, size_t n) {
    float *d = dev_alloc(be, n * sizeof(float));
    be->upload(be, d, host, n * sizeof(float));
    return d;
}

int32_t *sim_i32(ms_backend *be, const int32_t *host, size_t n) {
    int32_t *d = dev_alloc(be, n * sizeof(int32_t));
    be->upload(be, d, host, n * sizeof(int32_t));
    return d;
}

void *sim_garbage(ms_backend *be, size_t bytes) {
    void *d = dev_alloc(be, bytes);
    unsigned char *h = tu_bytes(bytes);
    memset(h, 0xff, bytes);
    be->upload(be, d, h, bytes);
    return d;
}

float *sim_get_act(ms_backend *be, const void *dev, size_t n) {
    float *h = tu_floats(n);
    be->download_act(be, h, dev, n);
    return h;
}

float *sim_get_f32(ms_backend *be, const float *dev, size_t n) {
    float *h = tu_floats(n);
    be->download(be, h, dev, n * sizeof(float));
    return h;
}

int32_t *sim_get_i32(ms_backend *be, const int32_t *dev, size_t n) {
    int32_t *h = tu_ints(n);
    be->download(be, h, dev, n * sizeof(int32_t));
    return h;
}

float sim_bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return x;
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

void sim_round_like(const ms_backend *be, float *x, size_t n) {
    if (be->act_dtype != MS_BF16) return;
    for (size_t i = 0; i < n; i++) x[i] = sim_bf16_round(x[i]);
}

void sim_expect_close(const char *what, const float *got, const float *ref, size_t n, double tol) {
    double *r = tu_doubles(n);
    tu_to_double(r, ref, n);
    tu_expect_close(what, got, r, n, tol);
}

void sim_expect_ints(const char *what, const int32_t *got, const int32_t *ref, size_t n) {
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(got[i], ref[i], "%s: differs at [%zu]: %d vs %d (CPU)", what, i, got[i],
                     ref[i]);
}

void sim_silence_stderr(void) { cr_assert_not_null(freopen("/dev/null", "w", stderr)); }

char *sim_run_fault(const char *fault, int *status) {
    char exe[PATH_MAX], helper[PATH_MAX + 32];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    cr_assert(len > 0, "sim: readlink /proc/self/exe: %s", strerror(errno));
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    cr_assert_not_null(slash);
    *slash = '\0';
    snprintf(helper, sizeof helper, "%s/simt_faults", exe);
    int fds[2];
    cr_assert(pipe(fds) == 0, "sim: pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "sim: fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        /* Reports on stderr (not a SANITIZE=1 log file), no leak pass, plain exit status. */
        setenv("ASAN_OPTIONS", "detect_leaks=0:log_path=stderr:handle_abort=0", 1);
        execl(helper, helper, fault, (char *)NULL);
        fprintf(stderr, "sim: cannot run %s: %s\n", helper, strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    size_t cap = 1 << 16, n = 0;
    char *out = (char *)tu_bytes(cap + 1);
    for (;;) {
        ssize_t got = read(fds[0], out + n, cap - n);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        n += (size_t)got;
        if (n == cap) { /* keep the beginning, drain the rest */
            char sink[4096];
            while (read(fds[0], sink, sizeof sink) > 0) {}
            break;
        }
    }
    out[n] = '\0';
    close(fds[0]);
    cr_assert(waitpid(pid, status, 0) == pid, "sim: waitpid: %s", strerror(errno));
    return out;
}
