/* imresize.c: PIL-exact bilinear resample + centre crop (see imresize.h). The coefficient computation
 * mirrors Pillow's precompute_coeffs/normalize_coeffs_8bpc so that every output pixel is bit-identical to
 * Image.resize(..., BILINEAR); the crop only limits which outputs are computed. */
#include "imresize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)

static double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Coefficients for output positions [o0, o0+n) of a resize from in_size to out_size; bounds[2*i] is the
 * first input index, bounds[2*i+1] the count; kk holds ksize fixed-point weights per output. */
static int precompute(int in_size, int out_size, int o0, int n, int **boundsp, int32_t **kkp) {
    double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *pre = malloc(sizeof(double) * (size_t)ksize);
    int *bounds = malloc(sizeof(int) * 2 * (size_t)n);
    int32_t *kk = malloc(sizeof(int32_t) * (size_t)ksize * (size_t)n);
    if (!pre || !bounds || !kk) {
        free(pre), free(bounds), free(kk);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        int xx = o0 + i;
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        int x = 0;
        for (; x < xmax; x++) {
            double w = bilinear_filter((x + xmin - center + 0.5) * ss);
            pre[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) pre[x] /= ww;
        for (; x < ksize; x++) pre[x] = 0;
        int32_t *k = kk + (size_t)i * ksize;
        for (x = 0; x < ksize; x++)
            k[x] = pre[x] < 0 ? (int32_t)(-0.5 + pre[x] * (1 << PRECISION_BITS))
                              : (int32_t)(0.5 + pre[x] * (1 << PRECISION_BITS));
        bounds[2 * i] = xmin;
        bounds[2 * i + 1] = xmax;
    }
    free(pre);
    *boundsp = bounds;
    *kkp = kk;
    return ksize;
}

static inline uint8_t clip8(int32_t in) {
    if (in >= (1 << PRECISION_BITS << 8)) return 255;
    if (in <= 0) return 0;
    return (uint8_t)(in >> PRECISION_BITS);
}

void cav_resize_short_size(int w, int h, int short_side, int *ow, int *oh) {
    if (w <= h) {
        *ow = short_side;
        *oh = (int)((double)short_side * h / w);
    } else {
        *oh = short_side;
        *ow = (int)((double)short_side * w / h);
    }
}

int cav_resize_bilinear_window(const uint8_t *src, int w, int h, int stride, int rw, int rh, int cx, int cy,
                               int cw, int ch, uint8_t *dst) {
    if (w <= 0 || h <= 0 || rw <= 0 || rh <= 0 || cx < 0 || cy < 0 || cw <= 0 || ch <= 0 || cx + cw > rw ||
        cy + ch > rh)
        return -1;
    int need_h = rw != w, need_v = rh != h;
    int *bh = NULL, *bv = NULL;
    int32_t *kh = NULL, *kv = NULL;
    uint8_t *tmp = NULL;
    int ret = -1;
    /* Rows of the (horizontally resized) intermediate the window needs. */
    int y0 = cy, y1 = cy + ch, ksv = 0, ksh = 0;
    if (need_v) {
        if ((ksv = precompute(h, rh, cy, ch, &bv, &kv)) < 0) goto out;
        y0 = bv[0];
        y1 = bv[2 * (ch - 1)] + bv[2 * (ch - 1) + 1];
        for (int i = 1; i < ch; i++) /* bounds are monotone; guard anyway */
            if (bv[2 * i] < y0) y0 = bv[2 * i];
    }
    int tw = cw, th = y1 - y0;
    tmp = malloc((size_t)tw * th * 3);
    if (!tmp) goto out;
    if (need_h) {
        if ((ksh = precompute(w, rw, cx, cw, &bh, &kh)) < 0) goto out;
        for (int y = 0; y < th; y++) {
            const uint8_t *row = src + (size_t)(y0 + y) * stride;
            uint8_t *o = tmp + (size_t)y * tw * 3;
            for (int i = 0; i < cw; i++) {
                int xmin = bh[2 * i], xmax = bh[2 * i + 1];
                const int32_t *k = kh + (size_t)i * ksh;
                int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
                const uint8_t *p = row + (size_t)xmin * 3;
                for (int x = 0; x < xmax; x++, p += 3) {
                    s0 += p[0] * k[x];
                    s1 += p[1] * k[x];
                    s2 += p[2] * k[x];
                }
                o[3 * i] = clip8(s0), o[3 * i + 1] = clip8(s1), o[3 * i + 2] = clip8(s2);
            }
        }
    } else {
        for (int y = 0; y < th; y++)
            memcpy(tmp + (size_t)y * tw * 3, src + (size_t)(y0 + y) * stride + (size_t)cx * 3,
                   (size_t)tw * 3);
    }
    if (need_v) {
        for (int j = 0; j < ch; j++) {
            int ymin = bv[2 * j] - y0, ymax = bv[2 * j + 1];
            const int32_t *k = kv + (size_t)j * ksv;
            uint8_t *o = dst + (size_t)j * cw * 3;
            for (int i = 0; i < cw * 3; i++) {
                int32_t s = 1 << (PRECISION_BITS - 1);
                const uint8_t *p = tmp + (size_t)ymin * tw * 3 + i;
                for (int y = 0; y < ymax; y++, p += (size_t)tw * 3) s += *p * k[y];
                o[i] = clip8(s);
            }
        }
    } else {
        memcpy(dst, tmp, (size_t)cw * ch * 3);
    }
    ret = 0;
out:
    free(bh), free(bv), free(kh), free(kv), free(tmp);
    return ret;
}

int cav_resize_center_crop(const uint8_t *src, int w, int h, int stride, int size, uint8_t *dst) {
    int rw, rh;
    cav_resize_short_size(w, h, size, &rw, &rh);
    if (rw < size || rh < size) return -1;
    /* Python's round() on (h-size)/2.0: halves go to even. */
    int cy = (int)nearbyint((rh - size) / 2.0), cx = (int)nearbyint((rw - size) / 2.0);
    return cav_resize_bilinear_window(src, w, h, stride, rw, rh, cx, cy, size, size, dst);
}
