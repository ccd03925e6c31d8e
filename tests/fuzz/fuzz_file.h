/* fuzz_file.h: what the fuzz targets share. The parsers under test take file names (they map, seek or hand
 * the name to HDF5), so a target puts the input bytes in an anonymous memory file and passes its
 * /proc/self/fd name. CAV_FUZZ_ENTRY(name) defines cav_fuzz_<name>, and LLVMFuzzerTestOneInput calling it
 * unless CAV_FUZZ_NO_MAIN is set (tests/unit/test_fuzz_regress.c includes every target that way and replays
 * the corpora and regression inputs without libFuzzer). */
#ifndef CAV_FUZZ_FILE_H
#define CAV_FUZZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* The bytes as a file; returns its fd (close it after use) and its name in path, or -1. */
static inline int cav_fuzz_file(const uint8_t *data, size_t size, char *path, size_t n) {
    int fd = memfd_create("fuzz", MFD_CLOEXEC);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < size) {
        ssize_t k = write(fd, data + off, size - off);
        if (k <= 0) return close(fd), -1;
        off += (size_t)k;
    }
    snprintf(path, n, "/proc/self/fd/%d", fd);
    return fd;
}

#ifdef CAV_FUZZ_NO_MAIN
#define CAV_FUZZ_ENTRY(name) int cav_fuzz_##name(const uint8_t *data, size_t size)
#else
#define CAV_FUZZ_ENTRY(name)                                                                                 \
    int cav_fuzz_##name(const uint8_t *data, size_t size);                                                   \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {                                           \
        return cav_fuzz_##name(data, size);                                                                  \
    }                                                                                                        \
    int cav_fuzz_##name(const uint8_t *data, size_t size)
#endif

/* A failure must say why: an empty message is a bug (as fbank's once was). */
#define CAV_FUZZ_REQUIRE(cond)                                                                               \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz invariant broken: %s (%s:%d)\n", #cond, __FILE__, __LINE__);               \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

#endif
