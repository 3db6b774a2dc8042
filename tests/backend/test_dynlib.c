/* Run-time loading of the GPU libraries (kernels/dynlib.c), exercised with the C maths library,
 * which every machine has: the entry points land in their slots, and a missing library or
 * symbol is a message naming it and what to do. cuBLAS, cuDNN and NCCL go through the same
 * function on GPU machines. */
#include "../testutil.h"

#include <string.h>

#include "../../kernels/dynlib.h"

static const ms_dynlib libm = {"libm.so.6", "the C maths library", "reinstall libc6",
                               "glibc 2.17 or newer is needed"};

Test(dynlib, resolves_every_symbol_into_its_slot) {
    double (*cos_fn)(double) = NULL, (*sqrt_fn)(double) = NULL;
    const ms_dynsym syms[] = {{"cos", &cos_fn}, {"sqrt", &sqrt_fn}};
    char err[256] = "";
    cr_assert_eq(ms_dynlib_load(&libm, syms, 2, err, sizeof err), 1, "%s", err);
    cr_assert(cos_fn && sqrt_fn);
    cr_assert_eq(cos_fn(0.0), 1.0);
    cr_assert_eq(sqrt_fn(2.25), 1.5);
}

Test(dynlib, a_missing_symbol_names_it_and_the_version) {
    double (*cos_fn)(double) = NULL, (*missing)(double) = NULL;
    const ms_dynsym syms[] = {{"cos", &cos_fn}, {"ms_no_such_function", &missing}};
    char err[256] = "";
    cr_assert_eq(ms_dynlib_load(&libm, syms, 2, err, sizeof err), 0);
    cr_assert(strncmp(err, "libm has no ms_no_such_function (", 33) == 0, "message: %s", err);
    cr_assert(strstr(err, "); glibc 2.17 or newer is needed"), "message: %s", err);
}

Test(dynlib, a_missing_library_says_what_to_install) {
    const ms_dynlib none = {"libms_no_such_library.so.7", "NoSuchLib",
                            "install NoSuchLib 7 or add its directory to LD_LIBRARY_PATH", NULL};
    double (*fn)(double) = NULL;
    const ms_dynsym syms[] = {{"cos", &fn}};
    char err[512] = "";
    cr_assert_eq(ms_dynlib_load(&none, syms, 1, err, sizeof err), 0);
    cr_assert(strncmp(err, "cannot load NoSuchLib (libms_no_such_library.so.7): ", 52) == 0,
              "message: %s", err);
    cr_assert(strstr(err, "; install NoSuchLib 7 or add its directory to LD_LIBRARY_PATH"),
              "message: %s", err);
    cr_assert_null(fn, "a slot was written although the library did not load");
}
