/* blas.c: OpenBLAS picks its kernels from the CPU model when the library loads. Virtual machines often
 * report a generic model ("Intel Xeon Processor"), and OpenBLAS then falls back to its oldest x86-64
 * kernels (Prescott, SSE3) even on AVX-512 hardware: measured on such a machine, 33 GFLOP/s per core
 * instead of 161 with the SkylakeX kernels, and a base training step 3.2x slower. The choice can only be
 * changed through OPENBLAS_CORETYPE before the library loads, so when the user has not set it and the CPU
 * (with the OS's consent, which __builtin_cpu_supports checks) runs wider instructions than the chosen
 * kernels use, the training tools re-execute themselves once with it set. A user's OPENBLAS_CORETYPE,
 * whatever its value, is never overridden. */
#include "blas.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* OpenBLAS core names (openblas_get_corename) older than AVX2: x86-64 fallbacks and pre-Haswell models. */
static int core_is_old(const char *core) {
    static const char *old[] = {"prescott", "core2",       "penryn",  "dunnington", "nehalem",
                                "atom",     "sandybridge", "katmai",  "coppermine", "northwood",
                                "banias",   "unknown",     "opteron", "barcelona",  "bobcat",
                                "athlon",   "opteron_sse3"};
    for (size_t i = 0; i < sizeof old / sizeof old[0]; i++)
        if (!strcasecmp(core, old[i])) return 1;
    return 0;
}

void cav_blas_fit_cpu(const char *tool, char **argv) {
    const char *from = getenv("CAV_BLAS_REEXEC");
    if (from) { /* this is the re-executed program; under mpirun only the first rank says so */
        const char *rank = getenv("OMPI_COMM_WORLD_RANK");
        if (!rank || !strcmp(rank, "0"))
            fprintf(stderr,
                    "%s: OpenBLAS chose its %s kernels on a CPU with wider vector instructions (a hidden CPU "
                    "model, "
                    "as on many virtual machines); using OPENBLAS_CORETYPE=%s (set it yourself to choose)\n",
                    tool, from, getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "?");
        unsetenv("CAV_BLAS_REEXEC");
        return;
    }
    if (getenv("OPENBLAS_CORETYPE")) return;
#if defined(__x86_64__) && defined(__GNUC__)
    const char *core = openblas_get_corename(), *want = NULL;
    if (!core || !core_is_old(core)) return;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        want = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        want = "Haswell";
    if (!want) return;
    char name[64];
    snprintf(name, sizeof name, "%s", core);
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("CAV_BLAS_REEXEC", name, 1);
    fflush(NULL);
    execv("/proc/self/exe", argv);
    /* could not re-execute (no /proc): carry on with the kernels we have */
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv("CAV_BLAS_REEXEC");
#else
    (void)tool, (void)argv;
#endif
}
