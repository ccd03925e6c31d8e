/* picture.h: pictures for people (cav-recall --html, cav-embed --reconstruct): 8-bit RGB images written as
 * PNG with libpng, and the two kinds of picture the tools draw: a video frame and a spectrogram. */
#ifndef CAV_PICTURE_H
#define CAV_PICTURE_H

#include <stddef.h>
#include <stdint.h>

#include "record.h"

/* Writes rgb [h, w, 3] to path as PNG, through a temporary file in the same directory renamed into place,
 * so an existing picture is replaced only by a complete one. 0 ok, -1 error (err: code CAV_EXIT_INTERNAL). */
int cav_png_write(const char *path, const uint8_t *rgb, int w, int h, cav_err *err);

/* Writes text (len bytes) to path the same way (a temporary file renamed into place). 0 ok, -1 error. */
int cav_file_replace(const char *path, const char *text, size_t len, cav_err *err);

/* A spectrogram x [T, F] (time, mel bins; as fbank(1) writes it) as a picture rgb [F, T, 3] (malloc'd):
 * time left to right, low frequencies at the bottom, values mapped linearly from [lo, hi] onto a
 * dark-to-bright colour ramp (lo >= hi: the picture's own minimum and maximum). NaN pixels are grey. */
uint8_t *cav_picture_spectrogram(const float *x, int T, int F, float lo, float hi);

/* Frame k (k < 0: the middle one, F / 2) of a record's `frames` (u8 [F, H, W, 3]) or `frames_jpeg`, decoded
 * into a malloc'd rgb [H, W, 3]. 0 ok, -1 when the record has no frames or they are malformed (err names the
 * field; CAV_EXIT_INPUT). */
int cav_picture_frame(const cav_record *rec, int k, uint8_t **rgb, int *w, int *h, cav_err *err);

#endif
