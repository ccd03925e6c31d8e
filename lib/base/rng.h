/* rng.h: the project's random numbers. Counter-keyed: a generator is seeded from (seed, stream, a, b), e.g.
 * (run seed, "noise", epoch, sample index), so every sample's draws are fixed by its position alone. That
 * makes multi-threaded loading deterministic and resuming mid-epoch exact, with no generator state to save
 * beyond the position. PyTorch's streams cannot be matched bit for bit (cav-numerics(7) 5: verification
 * injects masks). */
#ifndef CAV_RNG_H
#define CAV_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} cav_rng;

/* Named streams keep independent uses apart. */
enum {
    CAV_RNG_SHUFFLE = 1,
    CAV_RNG_FRAME,
    CAV_RNG_NOISE,
    CAV_RNG_SPECAUG,
    CAV_RNG_MIXUP,
    CAV_RNG_MASK,
    CAV_RNG_INIT,
    CAV_RNG_DITHER,
};

/* splitmix64 (Steele et al.): advances *state by the golden gamma and returns its mixed value; the seeder
 * below, the model's initialisation stream and fbank's dither draw from it. */
uint64_t cav_splitmix64(uint64_t *state);

void cav_rng_seed(cav_rng *r, uint64_t seed, uint64_t stream, uint64_t a, uint64_t b);
uint64_t cav_rng_u64(cav_rng *r);
float cav_rng_float(cav_rng *r);   /* uniform [0,1), 24 random bits, as torch.rand's float32 */
double cav_rng_double(cav_rng *r); /* uniform [0,1), 53 bits */
int64_t cav_rng_int(cav_rng *r, int64_t lo, int64_t hi); /* uniform in [lo, hi], unbiased */
double cav_rng_normal(cav_rng *r);                       /* standard normal */
double cav_rng_gamma(cav_rng *r, double shape);
double cav_rng_beta(cav_rng *r, double a, double b);
void cav_rng_permutation(cav_rng *r, int64_t *out, int64_t n); /* uniform permutation of 0..n-1 */

#endif
