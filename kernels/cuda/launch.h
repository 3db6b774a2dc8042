/* The one way our CUDA sources launch kernels and declare shared memory, so the same .cu file
 * compiles under nvcc (for the GPU) and under the host C++ compiler with -DMS_SIMT against the
 * emulator of tests/simt (see tests/simt/simt.h).
 *
 *   MS_LAUNCH(kernel, grid, block, dynamic_smem_bytes, stream, args...);
 *     nvcc: kernel<<<grid, block, smem, stream>>>(args...); simt: every thread of every block
 *     runs kernel(args...) as a fiber. Either way the launch error (bad configuration) is then
 *     checked and reported with the kernel's name and the caller's file:line. A template kernel
 *     must have one template argument (kernel<T>): a comma would split the macro arguments.
 *   MS_SHARED(type, name, [dims]);     a static shared array: type name[dims]
 *   MS_DYNAMIC_SMEM(type, name);       type *name = the launch's dynamic shared memory */
#ifndef MS_CUDA_LAUNCH_H
#define MS_CUDA_LAUNCH_H

/* Reports a failed launch (cudaGetLastError) naming the kernel; kernels/cuda/backend_cuda.cu. */
void ms_cuda_check_launch(const char *kernel, const char *file, int line);

#ifdef MS_SIMT

#include "simt.h" /* tests/simt: on the include path of the emulated build only */

#define MS_LAUNCH(kernel, grid, block, smem, stream, ...)                                          \
    do {                                                                                           \
        ::simt::launch(#kernel, SIMT_SITE, dim3(grid), dim3(block), (smem), (stream),              \
                       [=]() { kernel(__VA_ARGS__); });                                            \
        ms_cuda_check_launch(#kernel, __FILE__, __LINE__);                                         \
    } while (0)

#define MS_SHARED(type, name, dims)                                                                \
    static char name##_simt_key;                                                                   \
    type(&name) dims = ::simt::shared_ref<type dims>(&name##_simt_key, SIMT_SITE)

#define MS_DYNAMIC_SMEM(type, name) type *name = static_cast<type *>(::simt::dynamic_smem())

#else

#define MS_LAUNCH(kernel, grid, block, smem, stream, ...)                                          \
    do {                                                                                           \
        kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__);                                \
        ms_cuda_check_launch(#kernel, __FILE__, __LINE__);                                         \
    } while (0)

#define MS_SHARED(type, name, dims) __shared__ type name dims

/* One byte array for every kernel: extern __shared__ declarations of different types in one
 * translation unit would conflict. 16-byte alignment suits any element type we use. */
#define MS_DYNAMIC_SMEM(type, name)                                                                \
    extern __shared__ __align__(16) unsigned char ms_dynamic_smem_[];                              \
    type *name = reinterpret_cast<type *>(ms_dynamic_smem_)

#endif

#endif
