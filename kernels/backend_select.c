/* Backend selection (backend_select.h). CUDA references are compiled only with MS_HAVE_CUDA
 * (set by the Makefile when nvcc builds kernels/cuda), so a CPU-only build links without the
 * CUDA libraries and answers a request for cuda with an explanation instead of a crash. */
#include "backend_select.h"

#include <stdio.h>
#include <string.h>

#ifdef MS_HAVE_CUDA
#include "cuda/backend_cuda.h"
#endif

int ms_backend_has_cuda(void) {
#ifdef MS_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

/* run.device grammar: auto | cpu | cuda | cuda:N (N up to 4 digits). Returns 'a', 'c' or 'g'
 * (GPU, *index = N), or 0 when s is none of these. */
static int parse_device(const char *s, int *index) {
    *index = 0;
    if (!strcmp(s, "auto")) return 'a';
    if (!strcmp(s, "cpu")) return 'c';
    if (strncmp(s, "cuda", 4) != 0) return 0;
    if (!s[4]) return 'g';
    if (s[4] != ':' || !s[5] || strlen(s + 5) > 4) return 0;
    int n = 0;
    for (const char *p = s + 5; *p; p++) {
        if (*p < '0' || *p > '9') return 0;
        n = 10 * n + (*p - '0');
    }
    *index = n;
    return 'g';
}

static ms_backend *cpu_backend(int threads, int bf16, const char *why, char *err, size_t cap) {
    if (bf16) {
        snprintf(err, cap,
                 "bf16 precision needs a CUDA GPU, and %s; the CPU backend computes in fp32 "
                 "(set train.precision: fp32)",
                 why);
        return NULL;
    }
    return ms_backend_cpu_create(threads);
}

ms_backend *ms_backend_create(const char *device, int threads, unsigned precision, char *err,
                              size_t cap) {
    int bf16 = (precision & MS_BACKEND_BF16) != 0;
    int index = 0;
    int kind = parse_device(device ? device : "auto", &index);
    if (!kind) {
        snprintf(err, cap, "run.device is '%s'; expected auto, cpu, cuda or cuda:N (N = GPU index)",
                 device);
        return NULL;
    }
    if (kind == 'c') return cpu_backend(threads, bf16, "run.device is cpu", err, cap);
#ifdef MS_HAVE_CUDA
    char why[256] = "";
    int gpus = ms_cuda_device_count(why, sizeof why);
    if (kind == 'a' && gpus == 0) {
        char reason[300];
        snprintf(reason, sizeof reason, "none was found (%s)", why);
        return cpu_backend(threads, bf16, reason, err, cap);
    }
    if (gpus == 0) {
        snprintf(err, cap,
                 "run.device is '%s', but no CUDA GPU is available (%s); use run.device: "
                 "cpu or auto",
                 device, why);
        return NULL;
    }
    if (index >= gpus) {
        snprintf(err, cap,
                 "run.device is '%s', but this machine has %d CUDA GPU%s (cuda:0 .. cuda:%d)",
                 device, gpus, gpus == 1 ? "" : "s", gpus - 1);
        return NULL;
    }
    return ms_backend_cuda_create(index, bf16 ? MS_BF16 : MS_F32,
                                  (precision & MS_BACKEND_TF32) != 0, err, cap);
#else
    if (kind == 'a')
        return cpu_backend(threads, bf16, "this modsquad was built without CUDA", err, cap);
    snprintf(err, cap,
             "run.device is '%s', but this modsquad was built without the CUDA backend (no nvcc "
             "at build time, or CUDA=0); rebuild with the CUDA toolkit or use run.device: cpu",
             device);
    return NULL;
#endif
}

int ms_backend_missing_ops(const ms_backend *be) {
    /* The op pointers from `add` to `sumsq` are consecutive members of one type size, scanned
     * as an array (a new op added to backend.h between them is counted automatically). */
    const char *first = (const char *)&be->add, *last = (const char *)&be->sumsq;
    int n = 0;
    for (const char *p = first; p <= last; p += sizeof(void (*)(void))) {
        void (*fn)(void);
        memcpy(&fn, p, sizeof fn);
        n += fn == NULL;
    }
    return n;
}
