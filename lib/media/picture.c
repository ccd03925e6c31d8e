/* picture.c: see picture.h. The colour ramp is a few control points of matplotlib's "magma" (black, purple,
 * orange, pale yellow) interpolated linearly: dark for quiet, bright for loud, readable in print. */
#include "picture.h"

#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomicfile.h"
#include "clip.h"
#include "jpeg.h"

/* Both writers go through atomicfile: a temporary file renamed into place, never onto an input. */
int cav_file_replace(const char *path, const char *text, size_t len, cav_err *err) {
    cav_afile *a = cav_afile_open(path, 0, err);
    if (!a) return -1;
    FILE *f = cav_afile_stream(a);
    if (!f || fwrite(text, 1, len, f) != len) {
        cav_afile_abort(a);
        return cav_fail(err, 3, "%s: write error", path);
    }
    return cav_afile_commit(a, err);
}

int cav_png_write(const char *path, const uint8_t *rgb, int w, int h, cav_err *err) {
    cav_afile *a = cav_afile_open(path, 0, err);
    if (!a) return -1;
    FILE *f = cav_afile_stream(a);
    png_structp p = f ? png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL) : NULL;
    png_infop info = p ? png_create_info_struct(p) : NULL;
    int bad = !info;
    if (!bad && setjmp(png_jmpbuf(p)))
        bad = 1;
    else if (!bad) {
        png_init_io(p, f);
        png_set_IHDR(p, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_write_info(p, info);
        for (int y = 0; y < h; y++) png_write_row(p, (png_const_bytep)(rgb + (size_t)y * w * 3));
        png_write_end(p, NULL);
    }
    png_destroy_write_struct(p ? &p : NULL, info ? &info : NULL);
    if (bad) {
        cav_afile_abort(a);
        return cav_fail(err, 3, "%s: cannot write the PNG", path);
    }
    return cav_afile_commit(a, err);
}

uint8_t *cav_picture_spectrogram(const float *x, int T, int F, float lo, float hi) {
    static const float ramp[][3] = {{0, 0, 4},      {59, 15, 112},   {140, 41, 129},
                                    {222, 73, 104}, {254, 159, 109}, {252, 253, 191}};
    const int nr = sizeof ramp / sizeof ramp[0];
    uint8_t *rgb = malloc((size_t)T * F * 3 + 1);
    if (!rgb) return NULL;
    if (!(lo < hi)) {
        lo = INFINITY, hi = -INFINITY;
        for (size_t i = 0; i < (size_t)T * F; i++)
            if (isfinite(x[i])) lo = x[i] < lo ? x[i] : lo, hi = x[i] > hi ? x[i] : hi;
        if (!(lo < hi)) hi = lo + 1;
    }
    for (int f = 0; f < F; f++)
        for (int t = 0; t < T; t++) {
            uint8_t *o = rgb + ((size_t)(F - 1 - f) * T + t) * 3;
            float v = x[(size_t)t * F + f];
            if (!isfinite(v)) {
                o[0] = o[1] = o[2] = 128;
                continue;
            }
            float s = (v - lo) / (hi - lo) * (nr - 1);
            s = s < 0 ? 0 : s > nr - 1 ? nr - 1 : s;
            int k = (int)s < nr - 1 ? (int)s : nr - 2;
            float a = s - k;
            for (int c = 0; c < 3; c++) o[c] = (uint8_t)lrintf(ramp[k][c] * (1 - a) + ramp[k + 1][c] * a);
        }
    return rgb;
}

int cav_picture_frame(const cav_record *rec, int k, uint8_t **rgb, int *w, int *h, cav_err *err) {
    *rgb = NULL;
    const cav_tensor *t = cav_record_find(rec, CAV_FIELD_FRAMES);
    if (t) {
        if (t->dtype != CAV_U8 || t->ndim != 4 || t->shape[3] != 3 || t->shape[0] < 1)
            return cav_fail(err, 2, "record %s: field frames: expected u8 [F, H, W, 3]", rec->id);
        int nf = (int)t->shape[0];
        k = k < 0 ? nf / 2 : k;
        if (k >= nf) return cav_fail(err, 2, "record %s: field frames: no frame %d", rec->id, k);
        *h = (int)t->shape[1], *w = (int)t->shape[2];
        size_t sz = (size_t)*h * *w * 3;
        if (!(*rgb = malloc(sz))) return cav_fail(err, 3, "out of memory");
        memcpy(*rgb, (const uint8_t *)t->data + (size_t)k * sz, sz);
        return 0;
    }
    const uint8_t *jpg;
    size_t len;
    int nf = cav_clip_jpeg_frame(rec, 0, &jpg, &len, err);
    if (nf == 0) return cav_fail(err, 2, "record %s: no field frames or frames_jpeg", rec->id);
    if (nf < 0) return -1;
    k = k < 0 ? nf / 2 : k;
    if (k >= nf) return cav_fail(err, 2, "record %s: field frames_jpeg: no frame %d", rec->id, k);
    if (cav_clip_jpeg_frame(rec, k, &jpg, &len, err) < 0 || cav_jpeg_size(jpg, len, w, h, err)) return -1;
    size_t cap = (size_t)*w * *h * 3;
    if (!(*rgb = malloc(cap))) return cav_fail(err, 3, "out of memory");
    if (cav_jpeg_decode(jpg, len, *rgb, cap, w, h, err)) {
        free(*rgb), *rgb = NULL;
        return -1;
    }
    return 0;
}
