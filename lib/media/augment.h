/* augment.h: the reference's per-sample input transforms (cav-numerics(7) 1.3 step 6, 1.4, 1.5): fbank
 * cut/pad to the target length, SpecAugment, normalisation, noise and circular time roll for audio; /255 and
 * ImageNet normalisation for frames. Each random transform is split into a draw (from a cav_rng) and an apply
 * with explicit parameters, so the apply step can be checked exactly against PyTorch. */
#ifndef CAV_AUGMENT_H
#define CAV_AUGMENT_H

#include <stdint.h>

#include "rng.h"

#define CAV_FBANK_MEAN (-5.081f)
#define CAV_FBANK_STD 4.4849f
extern const float cav_imagenet_mean[3], cav_imagenet_std[3];

/* in [m, F] raw log-mel -> out [T, F]: the first T rows, zero rows appended when m < T. */
void cav_fbank_fit(const float *in, int m, int F, int T, float *out);

/* SpecAugment as torchaudio's FrequencyMasking(freqm) then TimeMasking(timem) on the [F, T] view:
 * width = floor(U*param), start = floor(U'*(size - U*param)), cells [start, start+width) set to 0. */
typedef struct {
    int f0, fw, t0, tw;
} cav_specaug;
cav_specaug cav_specaug_draw(cav_rng *r, int T, int F, int freqm, int timem);
void cav_specaug_apply(float *fb /* [T, F] */, int T, int F, cav_specaug m);

/* (x - mean) / std in float32, in place. */
void cav_fbank_normalize(float *x, int64_t n, float mean, float std);

/* Training noise: x += U[0,1) * scale per cell, scale = U[0,1)/10 per sample; then a circular time shift
 * out[t] = in[(t - shift) mod T], shift uniform in [-T, T-1] (torch.roll semantics). */
float cav_noise_scale_draw(cav_rng *r);
void cav_noise_apply(float *fb /* [T, F] */, int T, int F, float scale, cav_rng *r);
int cav_roll_draw(cav_rng *r, int T);
void cav_roll_time(const float *in /* [T, F] */, float *out /* [T, F] */, int T, int F, int shift);

/* HWC u8 RGB -> CHW float: (x/255 - mean[c]) / std[c] as torchvision ToTensor + Normalize. */
void cav_image_normalize(const uint8_t *hwc, int H, int W, const float mean[3], const float std[3],
                         float *chw);

#endif
