/* augment.c: the reference's per-sample audio and image transforms (see augment.h). Float arithmetic is
 * ordered as PyTorch's so that the apply steps match it bit for bit. */
#include "augment.h"

#include <string.h>

const float cav_imagenet_mean[3] = {0.485f, 0.456f, 0.406f};
const float cav_imagenet_std[3] = {0.229f, 0.224f, 0.225f};

void cav_fbank_fit(const float *in, int m, int F, int T, float *out) {
    int keep = m < T ? m : T;
    memcpy(out, in, (size_t)keep * (size_t)F * sizeof *out);
    if (keep < T) memset(out + (size_t)keep * F, 0, (size_t)(T - keep) * (size_t)F * sizeof *out);
}

/* torchaudio.functional.mask_along_axis: value = U*param; start = long(U'*(size - value));
 * end = long(start_unfloored) + long(value). */
static void mask_draw(cav_rng *r, int param, int size, int *start, int *width) {
    float value = cav_rng_float(r) * (float)param;
    float min_value = cav_rng_float(r) * ((float)size - value);
    *start = (int)min_value;
    *width = (int)value;
}

cav_specaug cav_specaug_draw(cav_rng *r, int T, int F, int freqm, int timem) {
    cav_specaug m = {0, 0, 0, 0};
    if (freqm > 0) mask_draw(r, freqm, F, &m.f0, &m.fw);
    if (timem > 0) mask_draw(r, timem, T, &m.t0, &m.tw);
    return m;
}

void cav_specaug_apply(float *fb, int T, int F, cav_specaug m) {
    /* A mask wider than the axis (e.g. timem 192 on a short input) draws a negative start; torchaudio's
     * mask (arange >= start) & (arange < end) then covers 0..end-1, so the start is clipped at 0. */
    int f1 = m.f0 + m.fw > F ? F : m.f0 + m.fw, t1 = m.t0 + m.tw > T ? T : m.t0 + m.tw;
    int f0 = m.f0 < 0 ? 0 : m.f0, t0 = m.t0 < 0 ? 0 : m.t0;
    for (int t = 0; t < T; t++)
        for (int f = f0; f < f1; f++) fb[(size_t)t * F + f] = 0.0f;
    for (int t = t0; t < t1; t++) memset(fb + (size_t)t * F, 0, (size_t)F * sizeof *fb);
}

void cav_fbank_normalize(float *x, int64_t n, float mean, float std) {
    for (int64_t i = 0; i < n; i++) x[i] = (x[i] - mean) / std;
}

float cav_noise_scale_draw(cav_rng *r) {
    return (float)(cav_rng_double(r) / 10.0);
}

void cav_noise_apply(float *fb, int T, int F, float scale, cav_rng *r) {
    int64_t n = (int64_t)T * F;
    for (int64_t i = 0; i < n; i++) fb[i] = fb[i] + cav_rng_float(r) * scale;
}

int cav_roll_draw(cav_rng *r, int T) {
    return (int)cav_rng_int(r, -T, T - 1);
}

void cav_roll_time(const float *in, float *out, int T, int F, int shift) {
    int s = ((shift % T) + T) % T;
    /* out[t] = in[(t - s) mod T]: two contiguous block copies */
    memcpy(out + (size_t)s * F, in, (size_t)(T - s) * (size_t)F * sizeof *out);
    memcpy(out, in + (size_t)(T - s) * F, (size_t)s * (size_t)F * sizeof *out);
}

void cav_image_normalize(const uint8_t *hwc, int H, int W, const float mean[3], const float std[3],
                         float *chw) {
    size_t plane = (size_t)H * W;
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < plane; i++)
            chw[c * plane + i] = ((float)hwc[i * 3 + c] / 255.0f - mean[c]) / std[c];
}
