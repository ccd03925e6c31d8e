/* distdev.c: the arithmetic of dist.h that needs no MPI or CUDA call, so that it is the same in every build
 * and testable anywhere: which device a rank uses, from the launcher's variables alone, and how the flat
 * parameter buffer splits into the ranks' parts, and the bf16 gradient exchange's sum. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/bf16.h" /* the one float <-> bf16 rounding */
#include "dist.h"

/* a variable's value as a number >= 0; -1 when unset; -2 when set to something else */
static long env_index(const char *name) {
    const char *s = getenv(name);
    if (!s) return -1;
    char *end;
    long v = strtol(s, &end, 10);
    return end == s || *end || v < 0 || v > 1 << 20 ? -2 : v;
}

int cav_dist_local_rank(void) {
    static const char *const vars[] = {"CAV_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        long v = env_index(vars[i]);
        if (v != -1) return v < 0 ? -1 : (int)v;
    }
    return -1;
}

void cav_dist_device(const char *device, int world, int local_rank, char *out, size_t n) {
    if (strcmp(device, "cuda") || world <= 1) {
        snprintf(out, n, "%s", device);
        return;
    }
    /* CUDA_VISIBLE_DEVICES lists the devices this process may see, comma-separated; the CUDA runtime numbers
     * them from 0 */
    const char *vis = getenv("CUDA_VISIBLE_DEVICES");
    int ndev = 0;
    if (vis && *vis) {
        ndev = 1;
        for (const char *c = vis; *c; c++) ndev += *c == ',';
    }
    int dev = local_rank < 0 ? 0 : local_rank;
    if (ndev > 0) dev %= ndev;
    snprintf(out, n, "cuda:%d", dev);
}

/* 64-element blocks (256 bytes): each part starts aligned for the device's collectives */
void cav_dist_parts(const cav_dist *d, size_t n, size_t *part) {
    size_t blocks = (n + 63) / 64;
    for (int r = 0; r <= d->world; r++) {
        size_t b = blocks * (size_t)r / (size_t)d->world * 64;
        part[r] = b < n ? b : n;
    }
}

void cav_dist_sum_bf16(uint16_t *out, const uint16_t *in, int world, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float s = 0.0f; /* from 0, as one process's accumulator of its groups' gradients */
        for (int r = 0; r < world; r++) s += cav_bf16_to_f32(in[(size_t)r * n + i]);
        out[i] = cav_bf16_from_f32(s);
    }
}
