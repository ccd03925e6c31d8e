/* jpeg.h: RGB u8 <-> JPEG with libjpeg-turbo. The encoder writes what PIL's Image.save(f, "JPEG") writes at
 * its defaults (the reference stores frames that way): quality 75 with the standard tables, 4:2:0, JFIF
 * header, baseline, no optimisation, integer DCT. The decoder is strict (any libjpeg warning, e.g. a
 * truncated or corrupt entropy segment, is an error rather than grey pixels), reentrant and thread-safe:
 * all state lives on the caller's stack or in its buffers. It takes and gives bytes: a record's JPEG frames
 * are found with clip.h's cav_clip_jpeg_frame. */
#ifndef CAV_JPEG_H
#define CAV_JPEG_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Encodes a w x h RGB image (rows of w*3 bytes) into a malloc'd buffer (*out, *outlen). 0 ok, -1 error. */
int cav_jpeg_encode(const uint8_t *rgb, int w, int h, int quality, uint8_t **out, size_t *outlen,
                    cav_err *err);

/* Reads the size of a JPEG without decoding it. 0 ok, -1 not a readable JPEG. */
int cav_jpeg_size(const uint8_t *data, size_t len, int *w, int *h, cav_err *err);

/* Decodes into rgb (capacity cap bytes, must hold w*h*3) as RGB u8; *w, *h receive the size. 0 ok, -1 error
 * (corrupt, truncated, not 8-bit, or too small a buffer). Any component layout libjpeg can convert to RGB
 * (greyscale, YCbCr, CMYK refused) is accepted. */
int cav_jpeg_decode(const uint8_t *data, size_t len, uint8_t *rgb, size_t cap, int *w, int *h, cav_err *err);

#endif
