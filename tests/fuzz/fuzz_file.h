/* Shared by the libFuzzer harnesses whose codec reads a file by path (PNG, JPEG, .npy, .mat,
 * safetensors): none of them has an in-memory entry point, and adding one only for the fuzzer
 * would fuzz code the program never runs. Each input is written to one memfd, which the codec
 * then opens through /proc/self/fd/N like any other file: no disk traffic, nothing left behind,
 * and fstat/fseek/libmatio/HDF5 all see an ordinary regular file. */
#ifndef MS_FUZZ_FILE_H
#define MS_FUZZ_FILE_H

/* Include this header before any system header: memfd_create needs _GNU_SOURCE. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* The input as a file: returns its path (valid until the next call). Aborts only when the
 * harness itself cannot work (no memfd), which libFuzzer then reports at once. */
static inline const char *fuzz_file(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("modsquad-fuzz", 0);
        if (fd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0) abort();
    size_t done = 0;
    while (done < size) {
        ssize_t w = pwrite(fd, data + done, size - done, (off_t)done);
        if (w <= 0) abort();
        done += (size_t)w;
    }
    return path;
}

#endif
