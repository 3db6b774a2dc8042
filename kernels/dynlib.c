/* Run-time loading of the GPU libraries (kernels/dynlib.h). */
#include "dynlib.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

int ms_dynlib_load(const ms_dynlib *lib, const ms_dynsym *syms, size_t n, char *err,
                   size_t cap) {
    void *handle = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        snprintf(err, cap, "cannot load %s (%s): %s; %s", lib->what, lib->soname, dlerror(),
                 lib->install);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        dlerror(); /* clear a stale message: the one after a failed dlsym must be its own */
        void *f = dlsym(handle, syms[i].name);
        if (!f) {
            const char *why = dlerror();
            /* "libcublas.so.13" names its library "libcublas" */
            int stem = (int)strcspn(lib->soname, ".");
            snprintf(err, cap, "%.*s has no %s (%s)%s%s", stem, lib->soname, syms[i].name,
                     why ? why : "a null address", lib->needed ? "; " : "",
                     lib->needed ? lib->needed : "");
            dlclose(handle);
            return 0;
        }
        /* POSIX lets a function pointer hold dlsym's object pointer. */
        memcpy(syms[i].slot, &f, sizeof f);
    }
    return 1;
}
