/* imresize.h: the image geometry of the reference's frame pipeline — torchvision Resize(224) on a PIL image
 * (PIL's antialiased bilinear resample, reproduced from Pillow's ImagingResample: separable, horizontal pass
 * then vertical, filter support scaled by the downscale factor, 22-bit fixed-point coefficients, 8-bit
 * rounding between the passes) followed by CenterCrop. Only the pixels inside the crop are computed; each is
 * computed exactly as PIL computes it in the full image. */
#ifndef CAV_IMRESIZE_H
#define CAV_IMRESIZE_H

#include <stdint.h>

/* torchvision's output size for Resize(short) of a w x h image: the short side becomes `short_side`, the
 * long side int(short_side*long/short). */
void cav_resize_short_size(int w, int h, int short_side, int *ow, int *oh);

/* Resizes src (w x h, RGB u8, row stride in bytes) to rw x rh with PIL's bilinear filter and writes the
 * window [cx, cx+cw) x [cy, cy+ch) of the result to dst (cw*3 bytes per row). Equal sizes copy.
 * 0 ok, -1 out of memory or bad geometry. */
int cav_resize_bilinear_window(const uint8_t *src, int w, int h, int stride, int rw, int rh, int cx, int cy,
                               int cw, int ch, uint8_t *dst);

/* Resize(size) + CenterCrop(size) as torchvision does on a PIL image (crop offsets round((h-size)/2)); dst
 * is size x size x 3. 0 ok, -1 on failure (including an image smaller than the crop after resizing). */
int cav_resize_center_crop(const uint8_t *src, int w, int h, int stride, int size, uint8_t *dst);

#endif
