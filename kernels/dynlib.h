/* Libraries modsquad loads at run time instead of linking them (cuBLAS, cuDNN, NCCL): a machine
 * without them, or a process that never uses them, does not pay for them, and a missing one is
 * a message saying what to install instead of a program that does not start. */
#ifndef MS_DYNLIB_H
#define MS_DYNLIB_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A version macro as a string literal: "libcublas.so." MS_DYNLIB_STR(CUBLAS_VER_MAJOR). */
#define MS_DYNLIB_STR2(x) #x
#define MS_DYNLIB_STR(x) MS_DYNLIB_STR2(x)

typedef struct {
    const char *soname;  /* the file dlopen looks for: "libcublas.so.13" */
    const char *what;    /* the library in messages: "cuBLAS" */
    const char *install; /* what to do when it does not load */
    const char *needed;  /* the version whose symbols we resolve ("NCCL 2.14 or newer is
                          * needed"), said when a symbol is missing; NULL to say nothing */
} ms_dynlib;

/* One entry point: its exported name and where its address goes (the address of a function
 * pointer of the caller's table). */
typedef struct {
    const char *name;
    void *slot;
} ms_dynsym;

/* Opens lib (RTLD_NOW | RTLD_LOCAL; it then stays loaded for the life of the process) and
 * stores the address of every syms[i].name in *syms[i].slot. 1 when all are found; else 0
 * with the reason in err[cap], the library closed and the slots not to be used:
 *   cannot load cuBLAS (libcublas.so.13): <the loader's words>; <install>
 *   libcublas has no cublasGemmEx (<the loader's words>); <needed> */
int ms_dynlib_load(const ms_dynlib *lib, const ms_dynsym *syms, size_t n, char *err, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
