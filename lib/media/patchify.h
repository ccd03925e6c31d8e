/* patchify.h: cutting model inputs into patch tokens in exactly the reference's orders (cav-numerics(7) 2.3,
 * 2.9), the inverse for reconstruction outputs.
 *
 * A plane is an H x W grid of C-channel pixels addressed through strides, so one routine serves both
 * modalities:
 *   audio: fbank [T, F] (time, mel) is seen as the image [1, F, T] of the model (a.transpose): H = F
 *          (frequency rows, row 0 = lowest mel), W = T, C = 1; tokens k = f*nw + t (frequency-major) with
 *          element p*P + q (p frequency offset, q time offset): [512, 256] for [1024, 128];
 *   video: a frame [H, W, 3] (u8 RGB, or float after normalisation); tokens k = row*nw + col with element
 *          (p*P + q)*3 + c (einsum nchpwq->nhwpqc): [196, 768] for 224 x 224.
 * Patch size P and stride S: the grid has (H-P)/S+1 rows (S = P for the reference's non-overlapping patches;
 * S < P overlaps, and the inverse then averages every pixel over the patches that cover it). */
#ifndef CAV_PATCHIFY_H
#define CAV_PATCHIFY_H

#include <stdint.h>

typedef struct {
    int h, w, c;        /* plane size */
    int64_t sh, sw, sc; /* element strides of row, column and channel */
} cav_plane;

/* The audio view of fbank [frames, bins], the HWC view of a stored frame, and the CHW view of a
 * normalised image (cav_image_normalize of augment.h: ToTensor + Normalize, as the model sees frames). */
cav_plane cav_plane_fbank(int frames, int bins);
cav_plane cav_plane_hwc(int h, int w, int c);
cav_plane cav_plane_chw(int c, int h, int w);

/* Grid size along one side; 0 when the patch does not fit or the arguments are invalid. */
int cav_patch_grid(int size, int patch, int stride);
/* Tokens and elements per token of a plane: ntok = gh*gw, dim = P*P*C. 0 on invalid arguments. */
int cav_patch_shape(const cav_plane *pl, int patch, int stride, int *ntok, int *dim);

/* src through pl -> tok [ntok, dim]. */
void cav_patchify_f32(const cav_plane *pl, const float *src, int patch, int stride, float *tok);
void cav_patchify_u8(const cav_plane *pl, const uint8_t *src, int patch, int stride, float *tok);
/* tok [ntok, dim] -> dst through pl; with overlaps each pixel is the mean over its covering patches; pixels
 * no patch covers (a border the grid leaves out) are set to 0. Returns how many such pixels there were. */
int64_t cav_unpatchify_f32(const cav_plane *pl, const float *tok, int patch, int stride, float *dst);

/* norm_pix_loss targets: the model's own kernel, cav_normpix (kernels/cpu/cpu.h), on tok [ntok, dim]. */

#endif
