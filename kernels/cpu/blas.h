/* blas.h: making OpenBLAS run the kernels the CPU can run (see blas.c). */
#ifndef CAV_BLAS_H
#define CAV_BLAS_H

/* Call first in main(), before any thread starts: when OPENBLAS_CORETYPE is unset and OpenBLAS chose
 * kernels older than the CPU's vector instructions (AVX2+FMA, AVX-512), sets OPENBLAS_CORETYPE and
 * re-executes the program with the same arguments; returns only when nothing needs to change or the
 * re-execution failed. In the re-executed program it prints one note on stderr, prefixed with tool. */
void cav_blas_fit_cpu(const char *tool, char **argv);

#endif
