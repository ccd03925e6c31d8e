/* patchify.c: patch tokens in the reference's element orders, and their inverse (see
 * patchify.h). */
#include "patchify.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

cav_plane cav_plane_fbank(int frames, int bins) {
    /* image[f][t] = fbank[t][f]: rows step one bin, columns one frame. */
    return (cav_plane){.h = bins, .w = frames, .c = 1, .sh = 1, .sw = bins, .sc = 0};
}

cav_plane cav_plane_hwc(int h, int w, int c) {
    return (cav_plane){.h = h, .w = w, .c = c, .sh = (int64_t)w * c, .sw = c, .sc = 1};
}

cav_plane cav_plane_chw(int c, int h, int w) {
    return (cav_plane){.h = h, .w = w, .c = c, .sh = w, .sw = 1, .sc = (int64_t)h * w};
}

int cav_patch_grid(int size, int patch, int stride) {
    if (patch < 1 || stride < 1 || size < patch) return 0;
    return (size - patch) / stride + 1;
}

int cav_patch_shape(const cav_plane *pl, int patch, int stride, int *ntok, int *dim) {
    int gh = cav_patch_grid(pl->h, patch, stride), gw = cav_patch_grid(pl->w, patch, stride);
    if (!gh || !gw || pl->c < 1 || (int64_t)gh * gw > INT32_MAX || (int64_t)patch * patch * pl->c > INT32_MAX)
        return 0;
    *ntok = gh * gw;
    *dim = patch * patch * pl->c;
    return 1;
}

#define PATCH_LOOP(BODY)                                                                                     \
    int gh = cav_patch_grid(pl->h, patch, stride), gw = cav_patch_grid(pl->w, patch, stride);                \
    const int C = pl->c;                                                                                     \
    for (int i = 0; i < gh; i++)                                                                             \
        for (int j = 0; j < gw; j++) {                                                                       \
            float *o = tok + ((int64_t)i * gw + j) * patch * patch * C;                                      \
            for (int p = 0; p < patch; p++)                                                                  \
                for (int q = 0; q < patch; q++)                                                              \
                    for (int c = 0; c < C; c++) {                                                            \
                        int64_t at = (int64_t)(i * stride + p) * pl->sh +                                    \
                                     (int64_t)(j * stride + q) * pl->sw + c * pl->sc;                        \
                        BODY;                                                                                \
                    }                                                                                        \
        }

void cav_patchify_f32(const cav_plane *pl, const float *src, int patch, int stride, float *tok) {
    PATCH_LOOP(o[(p * patch + q) * C + c] = src[at])
}

void cav_patchify_u8(const cav_plane *pl, const uint8_t *src, int patch, int stride,
                     float *tok){PATCH_LOOP(o[(p * patch + q) * C + c] = (float)src[at])}

int64_t cav_unpatchify_f32(const cav_plane *pl, const float *tok, int patch, int stride, float *dst) {
    /* Accumulate sums and counts in plane order, then divide: with S = P each pixel has one patch and the
     * result is the token value itself, bit for bit. */
    int64_t npix = (int64_t)pl->h * pl->w;
    float *sum = calloc((size_t)(npix * pl->c) + 1, sizeof(float));
    int *cnt = calloc((size_t)npix + 1, sizeof(int));
    if (!sum || !cnt) {
        free(sum);
        free(cnt);
        return -1;
    }
    {
        int gh = cav_patch_grid(pl->h, patch, stride), gw = cav_patch_grid(pl->w, patch, stride);
        const int C = pl->c;
        for (int i = 0; i < gh; i++)
            for (int j = 0; j < gw; j++) {
                const float *t = tok + ((int64_t)i * gw + j) * patch * patch * C;
                for (int p = 0; p < patch; p++)
                    for (int q = 0; q < patch; q++) {
                        int64_t px = (int64_t)(i * stride + p) * pl->w + (j * stride + q);
                        cnt[px]++;
                        for (int c = 0; c < C; c++) sum[px * C + c] += t[(p * patch + q) * C + c];
                    }
            }
    }
    int64_t uncovered = 0;
    for (int y = 0; y < pl->h; y++)
        for (int x = 0; x < pl->w; x++) {
            int64_t px = (int64_t)y * pl->w + x;
            uncovered += cnt[px] == 0;
            for (int c = 0; c < pl->c; c++) {
                float v = cnt[px]
                              ? (cnt[px] == 1 ? sum[px * pl->c + c] : sum[px * pl->c + c] / (float)cnt[px])
                              : 0.0f;
                dst[(int64_t)y * pl->sh + (int64_t)x * pl->sw + c * pl->sc] = v;
            }
        }
    free(sum);
    free(cnt);
    return uncovered;
}
