/* fbank.c: the Kaldi/torchaudio log-mel filterbank (see fbank.h). Every step up to the power spectrum
 * is torchaudio.compliance.kaldi.fbank's float32 arithmetic operation for operation, so those values are
 * the bits torch computes (on its AVX2 kernels): the clip mean and each frame's mean are sums in the order
 * of PyTorch's vectorised cascade sum, divided (not multiplied by a reciprocal) by the count; the
 * subtractions, pre-emphasis and window multiply are the same roundings; the FFT is pocketfft's (rfft.c).
 * What is not torch's to the bit: the window's cos (torch: SLEEF's vectorised cosf; here glibc's), the
 * magnitude (torch squares a hypot; here re*re + im*im), the mel sums (torch: an OpenBLAS sgemm) and the
 * log; each is a relative rounding of order 1e-7, which moves the log-mel by about that much, where a
 * different FFT or frame rounding moves it by up to 2e-3 in cells far below the frame's energy
 * (measured by tests/unit/test_fbank_ref.c). */
#include "fbank.h"

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "rfft.h"
#include "rng.h"
#include "torchmath.h"

/* Frames go BLK at a time: their means are summed frame by frame (SIMD along the frame, in torch's order),
 * then the frames are transposed to [sample][frame] as they are read, and the centring, pre-emphasis and
 * window, the FFT (rfft.c), the power spectrum, the mel sums and the log all run as SIMD across the frames
 * of the block. BLK is rfft.c's lane count. */
#define BLK 8

/* The hot loops are compiled twice, for the baseline and for AVX2+FMA, picked at load time (GNU ifunc).
 * The results are the same bits: -std=c11 keeps floating-point contraction off, so FMA is never fused
 * into the source's separate multiplies and adds. */
/* An 8x8 transpose in registers (GCC vector extensions, lowered to the shuffles of the target): moves
 * spectra between frame-major and bin-major order without scalar strided stores. */
typedef float v8f __attribute__((vector_size(32), aligned(4)));
typedef int v8i __attribute__((vector_size(32)));

#if defined(__clang__)
#define SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUF(a, b, ...) __builtin_shuffle(a, b, (v8i){__VA_ARGS__})
#endif

#define LOAD8(v, p)                                                                                          \
    v8f v;                                                                                                   \
    memcpy(&v, (p), 32)

/* The 8x8 block at s (rows ss floats apart) transposed: c[j] holds column j (element f from row f). Written
 * out in full so the 24 vectors stay in registers (GCC -O2 does not unroll array loops). */
static inline __attribute__((always_inline)) void transpose8_load(const float *s, int64_t ss, v8f c[8]) {
    LOAD8(r0, s);
    LOAD8(r1, s + ss);
    LOAD8(r2, s + 2 * ss);
    LOAD8(r3, s + 3 * ss);
    LOAD8(r4, s + 4 * ss);
    LOAD8(r5, s + 5 * ss);
    LOAD8(r6, s + 6 * ss);
    LOAD8(r7, s + 7 * ss);
    /* interleave pairs of rows, then pairs of pairs, within each 128-bit half */
    v8f t0 = SHUF(r0, r1, 0, 8, 1, 9, 4, 12, 5, 13), t1 = SHUF(r0, r1, 2, 10, 3, 11, 6, 14, 7, 15);
    v8f t2 = SHUF(r2, r3, 0, 8, 1, 9, 4, 12, 5, 13), t3 = SHUF(r2, r3, 2, 10, 3, 11, 6, 14, 7, 15);
    v8f t4 = SHUF(r4, r5, 0, 8, 1, 9, 4, 12, 5, 13), t5 = SHUF(r4, r5, 2, 10, 3, 11, 6, 14, 7, 15);
    v8f t6 = SHUF(r6, r7, 0, 8, 1, 9, 4, 12, 5, 13), t7 = SHUF(r6, r7, 2, 10, 3, 11, 6, 14, 7, 15);
    v8f u0 = SHUF(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13), u1 = SHUF(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);
    v8f u2 = SHUF(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13), u3 = SHUF(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);
    v8f u4 = SHUF(t4, t6, 0, 1, 8, 9, 4, 5, 12, 13), u5 = SHUF(t4, t6, 2, 3, 10, 11, 6, 7, 14, 15);
    v8f u6 = SHUF(t5, t7, 0, 1, 8, 9, 4, 5, 12, 13), u7 = SHUF(t5, t7, 2, 3, 10, 11, 6, 7, 14, 15);
    /* u0..u3: columns 0,1,2,3 of rows 0-3 (low half) and 4,5,6,7 (high half); u4..u7 the same of rows 4-7 */
    v8f c0 = SHUF(u0, u4, 0, 1, 2, 3, 8, 9, 10, 11), c4 = SHUF(u0, u4, 4, 5, 6, 7, 12, 13, 14, 15);
    v8f c1 = SHUF(u1, u5, 0, 1, 2, 3, 8, 9, 10, 11), c5 = SHUF(u1, u5, 4, 5, 6, 7, 12, 13, 14, 15);
    v8f c2 = SHUF(u2, u6, 0, 1, 2, 3, 8, 9, 10, 11), c6 = SHUF(u2, u6, 4, 5, 6, 7, 12, 13, 14, 15);
    v8f c3 = SHUF(u3, u7, 0, 1, 2, 3, 8, 9, 10, 11), c7 = SHUF(u3, u7, 4, 5, 6, 7, 12, 13, 14, 15);
    c[0] = c0, c[1] = c1, c[2] = c2, c[3] = c3, c[4] = c4, c[5] = c5, c[6] = c6, c[7] = c7;
}

static inline __attribute__((always_inline)) void transpose8(const float *s, int64_t ss, float *d,
                                                             int64_t ds) {
    v8f c[8];
    transpose8_load(s, ss, c);
    for (int k = 0; k < 8; k++) memcpy(d + k * ds, &c[k], 32);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define HOT __attribute__((target_clones("default", "arch=x86-64-v3")))
#else
#define HOT
#endif

struct cav_fbank {
    cav_fbank_opts o;
    int win, shift, nfft, nbins;
    float *window;        /* [win] */
    float *mel_dense;     /* [nbins, nfft/2+1], as torchaudio builds it */
    int *band_start;      /* [nbins] first FFT bin with non-zero weight */
    int *band_len;        /* [nbins] */
    int *band_off;        /* [nbins] offset into band_w */
    float *band_w;        /* the non-zero weights, band after band */
    float *rows;          /* [BLK, nfft] the block's windowed frames; the tails past win stay zero */
    float *fft_a, *fft_b; /* [nfft, BLK] each, 32-byte aligned: the transform's input and ping-pong buffers */
    float *power;         /* [nfft/2, BLK] */
    float *energy;        /* [nbins, BLK] */
    cav_rfft *fft;
    uint64_t rng;
};

static const char *const window_names[] = {"hanning", "hamming", "povey", "rectangular", "blackman"};

int cav_window_parse(const char *name) {
    if (!strcmp(name, "hann")) return CAV_WIN_HANNING;
    for (int i = 0; i < 5; i++)
        if (!strcmp(name, window_names[i])) return i;
    return -1;
}

const char *cav_window_name(cav_window w) {
    return (unsigned)w < 5 ? window_names[w] : "?";
}

static int parse_window(const char *s, void *field, char *why, size_t whylen) {
    int w = cav_window_parse(s);
    if (w < 0) return snprintf(why, whylen, "unknown window '%s'", s), -1;
    *(cav_window *)field = (cav_window)w;
    return 0;
}

static void format_window(const void *field, char *buf, size_t len) {
    snprintf(buf, len, "%s", cav_window_name(*(const cav_window *)field));
}

#define FO(field) offsetof(cav_fbank_opts, field)
/* The options fbank(1) offers, in its --help order; the echo keys are those of the tool's `fbank` dataset
 * attribute. remove_dc and subtract_clip_mean are not options (the reference always does both). */
const cav_opt cav_fbank_options[] = {
    {.name = "sample-rate",
     .short_name = 'r',
     .type = CAV_OPTT_DOUBLE,
     .offset = FO(sample_rate),
     .def = "16000",
     .min = 1,
     .max = 1e7,
     .arg = "HZ",
     .help = "rate of records without a sample_rate attribute"},
    {.name = "bins",
     .short_name = 'b',
     .type = CAV_OPTT_INT,
     .offset = FO(num_mel_bins),
     .def = "128",
     .min = 4,
     .max = 4096,
     .arg = "N",
     .help = "mel bins",
     .key = "bins"},
    {.name = "frame-length",
     .type = CAV_OPTT_DOUBLE,
     .offset = FO(frame_length_ms),
     .def = "25",
     .min = 0.01,
     .max = 10000,
     .arg = "MS",
     .help = "frame length",
     .key = "frame_length_ms"},
    {.name = "frame-shift",
     .type = CAV_OPTT_DOUBLE,
     .offset = FO(frame_shift_ms),
     .def = "10",
     .min = 0.01,
     .max = 10000,
     .arg = "MS",
     .help = "frame shift",
     .key = "frame_shift_ms"},
    {.name = "window",
     .type = CAV_OPTT_CUSTOM,
     .offset = FO(window),
     .def = "hanning",
     .arg = "TYPE",
     .help = "hanning (symmetric Hann), hamming, povey, rectangular, blackman",
     .key = "window",
     .parse = parse_window,
     .format = format_window},
    {.name = "blackman-coeff",
     .type = CAV_OPTT_DOUBLE,
     .offset = FO(blackman_coeff),
     .def = "0.42",
     .min = -10,
     .max = 10,
     .arg = "X",
     .help = "for --window=blackman"},
    {.name = "low-freq",
     .type = CAV_OPTT_DOUBLE,
     .offset = FO(low_freq),
     .def = "20",
     .min = 0,
     .max = 1e7,
     .arg = "HZ",
     .help = "lowest mel edge",
     .key = "low_freq"},
    {.name = "high-freq",
     .type = CAV_OPTT_DOUBLE,
     .offset = FO(high_freq),
     .def = "0",
     .min = -1e7,
     .max = 1e7,
     .arg = "HZ",
     .help = "highest mel edge; 0 = Nyquist, negative = Nyquist + HZ",
     .key = "high_freq"},
    {.name = "preemphasis",
     .type = CAV_OPTT_DOUBLE,
     .offset = FO(preemph),
     .def = "0.97",
     .min = 0,
     .max = 1,
     .arg = "X",
     .help = "pre-emphasis coefficient",
     .key = "preemphasis"},
    {.name = "dither",
     .type = CAV_OPTT_DOUBLE,
     .offset = FO(dither),
     .def = "0",
     .min = 0,
     .max = 1e3,
     .arg = "X",
     .help = "Gaussian dither scale (0 = none, as the reference)",
     .key = "dither"},
    {.name = "seed",
     .type = CAV_OPTT_U64,
     .offset = FO(dither_seed),
     .def = "0",
     .min = 0,
     .max = (double)INT64_MAX,
     .arg = "N",
     .help = "dither seed (each record's stream is keyed by the seed and its id)"},
    {.name = "target-length",
     .short_name = 't',
     .type = CAV_OPTT_INT,
     .offset = FO(target_length),
     .def = "1024",
     .min = 0,
     .max = 1 << 24,
     .arg = "N",
     .help = "cut or zero-pad to N frames (0 = keep every frame)",
     .key = "target_length"},
    {0},
};

void cav_fbank_opts_default(cav_fbank_opts *o) {
    memset(o, 0, sizeof *o);
    cav_opts_defaults(cav_fbank_options, o);
    o->remove_dc = 1;
    o->subtract_clip_mean = 1;
}

/* torch.hann_window / hamming_window (periodic=False) are arange(N) * (2π/(N-1)), cos, * -beta, + alpha,
 * each step in float32, the cos torch's (SLEEF's); the Blackman window of kaldi.py likewise. Povey's
 * power 0.85 is glibc's powf where torch uses SLEEF's (a last-bit difference in a few values). */
static void make_window(const cav_fbank_opts *o, int n, float *w) {
    float step = (float)(2.0 * M_PI / (double)(n - 1));
    for (int i = 0; i < n; i++) {
        float c = cav_torch_cosf((float)i * step);
        switch (o->window) {
        case CAV_WIN_HANNING:
            w[i] = c * -0.5f + 0.5f;
            break;
        case CAV_WIN_HAMMING:
            w[i] = c * -0.46f + 0.54f;
            break;
        case CAV_WIN_POVEY:
            w[i] = powf(c * -0.5f + 0.5f, 0.85f);
            break;
        case CAV_WIN_RECTANGULAR:
            w[i] = 1.0f;
            break;
        case CAV_WIN_BLACKMAN: {
            float c2 = cav_torch_cosf((float)i * (float)(2.0 * (2.0 * M_PI / (double)(n - 1))));
            float bc = (float)o->blackman_coeff;
            w[i] = (bc - 0.5f * c) + (float)(0.5 - o->blackman_coeff) * c2;
            break;
        }
        }
    }
    if (n == 1) w[0] = 1.0f;
}

static double mel_scale(double f) {
    return 1127.0 * log(1.0 + f / 700.0);
}

/* get_mel_banks of kaldi.py: the band edges are float32 (arange * delta + low), the FFT bin mels are
 * float32 (1127 * log(1 + f/700), torch's log), the slopes and min/max too. Dense [nbins, nfft/2+1]. */
static void make_mel(const cav_fbank_opts *o, int nfft, int nbins, double high, float *dense) {
    int nfreq = nfft / 2 + 1;
    double mel_low = mel_scale(o->low_freq), mel_high = mel_scale(high);
    float delta = (float)((mel_high - mel_low) / (nbins + 1));
    float low_f = (float)mel_low;
    float width = (float)(o->sample_rate / nfft);
    for (int b = 0; b < nbins; b++) {
        float left = (float)b * delta + low_f;
        float center = ((float)b + 1.0f) * delta + low_f;
        float right = ((float)b + 2.0f) * delta + low_f;
        for (int k = 0; k < nfreq; k++) {
            float w = 0.0f;
            if (k < nfft / 2) {
                float f = width * (float)k;
                float mel = 1127.0f * cav_torch_logf(1.0f + f / 700.0f);
                float up = (mel - left) / (center - left);
                float down = (right - mel) / (right - center);
                float m = up < down ? up : down;
                w = m > 0.0f ? m : 0.0f;
            }
            dense[(size_t)b * nfreq + k] = w;
        }
    }
}

cav_fbank *cav_fbank_new(const cav_fbank_opts *o, cav_err *err) {
    if (!(o->sample_rate > 0) || !isfinite(o->sample_rate)) {
        cav_fail(err, CAV_EXIT_INPUT, "sample rate %g is not positive", o->sample_rate);
        return NULL;
    }
    /* Same expressions as kaldi.py (int() truncation of a double product). */
    double shift_d = o->sample_rate * o->frame_shift_ms * 0.001;
    double win_d = o->sample_rate * o->frame_length_ms * 0.001;
    if (!(shift_d >= 1 && shift_d < 1e9) || !(win_d >= 2 && win_d < (1 << 24))) {
        cav_fail(err, CAV_EXIT_INPUT,
                 "at %g Hz a %g ms frame and %g ms shift give a window of %g and a shift of %g samples "
                 "(need a window of at least 2 and a shift of at least 1)",
                 o->sample_rate, o->frame_length_ms, o->frame_shift_ms, floor(win_d), floor(shift_d));
        return NULL;
    }
    int win = (int)win_d, shift = (int)shift_d;
    int nfft = 1;
    while (nfft < win) nfft *= 2;
    if (nfft < 2) nfft = 2;
    double nyquist = 0.5 * o->sample_rate;
    double high = o->high_freq <= 0.0 ? o->high_freq + nyquist : o->high_freq;
    if (o->num_mel_bins <= 3) {
        cav_fail(err, CAV_EXIT_INPUT, "%d mel bins: need at least 4", o->num_mel_bins);
        return NULL;
    }
    if (!(o->low_freq >= 0.0 && o->low_freq < nyquist && high > 0.0 && high <= nyquist &&
          o->low_freq < high)) {
        cav_fail(err, CAV_EXIT_INPUT, "mel range %g-%g Hz does not fit in 0-%g Hz (Nyquist at %g Hz)",
                 o->low_freq, high, nyquist, o->sample_rate);
        return NULL;
    }
    if (!(o->preemph >= 0.0 && o->preemph <= 1.0)) {
        cav_fail(err, CAV_EXIT_INPUT, "pre-emphasis %g is outside [0, 1]", o->preemph);
        return NULL;
    }
    if (o->target_length < 0) {
        cav_fail(err, CAV_EXIT_INPUT, "target length %d is negative", o->target_length);
        return NULL;
    }
    cav_fbank *fb = calloc(1, sizeof *fb);
    if (!fb) goto oom;
    fb->o = *o;
    fb->win = win;
    fb->shift = shift;
    fb->nfft = nfft;
    fb->nbins = o->num_mel_bins;
    int nfreq = nfft / 2 + 1;
    fb->window = malloc(sizeof(float) * win);
    fb->mel_dense = malloc(sizeof(float) * (size_t)fb->nbins * nfreq);
    fb->band_start = calloc(fb->nbins, sizeof(int));
    fb->band_len = calloc(fb->nbins, sizeof(int));
    fb->band_off = calloc(fb->nbins, sizeof(int));
    fb->rows = calloc((size_t)BLK * nfft, sizeof(float));
    fb->fft_a = aligned_alloc(32, sizeof(float) * BLK * nfft);
    fb->fft_b = aligned_alloc(32, sizeof(float) * BLK * nfft);
    fb->power = malloc(sizeof(float) * nfreq * BLK);
    fb->energy = malloc(sizeof(float) * fb->nbins * BLK);
    fb->fft = cav_rfft_new(nfft);
    if (!fb->window || !fb->mel_dense || !fb->band_start || !fb->band_len || !fb->band_off || !fb->rows ||
        !fb->fft_a || !fb->fft_b || !fb->power || !fb->energy || !fb->fft)
        goto oom;
    make_window(o, win, fb->window);
    make_mel(o, nfft, fb->nbins, high, fb->mel_dense);
    /* Sparse copy of the weights: each triangle covers a contiguous run of bins. */
    size_t total = 0;
    for (int b = 0; b < fb->nbins; b++) {
        const float *row = fb->mel_dense + (size_t)b * nfreq;
        int s = 0, e = -1;
        for (int k = 0; k < nfreq; k++)
            if (row[k] != 0.0f) {
                if (e < 0) s = k;
                e = k;
            }
        fb->band_start[b] = e < 0 ? 0 : s;
        fb->band_len[b] = e < 0 ? 0 : e - s + 1;
        fb->band_off[b] = (int)total;
        total += fb->band_len[b];
    }
    fb->band_w = malloc(sizeof(float) * (total + 1));
    if (!fb->band_w) goto oom;
    for (int b = 0; b < fb->nbins; b++)
        memcpy(fb->band_w + fb->band_off[b], fb->mel_dense + (size_t)b * nfreq + fb->band_start[b],
               sizeof(float) * fb->band_len[b]);
    fb->rng = o->dither_seed;
    return fb;
oom:
    cav_fbank_free(fb);
    cav_fail(err, CAV_EXIT_INTERNAL, "out of memory building a filterbank");
    return NULL;
}

void cav_fbank_free(cav_fbank *fb) {
    if (!fb) return;
    cav_rfft_free(fb->fft);
    free(fb->window);
    free(fb->mel_dense);
    free(fb->band_start);
    free(fb->band_len);
    free(fb->band_off);
    free(fb->band_w);
    free(fb->rows);
    free(fb->fft_a);
    free(fb->fft_b);
    free(fb->power);
    free(fb->energy);
    free(fb);
}

int cav_fbank_window_size(const cav_fbank *fb) {
    return fb->win;
}
int cav_fbank_window_shift(const cav_fbank *fb) {
    return fb->shift;
}
int cav_fbank_fft_size(const cav_fbank *fb) {
    return fb->nfft;
}
int cav_fbank_bins(const cav_fbank *fb) {
    return fb->nbins;
}

int64_t cav_fbank_num_frames(const cav_fbank *fb, int64_t n) {
    return n < fb->win ? 0 : 1 + (n - fb->win) / fb->shift;
}

int64_t cav_fbank_out_frames(const cav_fbank *fb, int64_t n) {
    return fb->o.target_length > 0 ? fb->o.target_length : cav_fbank_num_frames(fb, n);
}

void cav_fbank_mel_weights(const cav_fbank *fb, float *out) {
    memcpy(out, fb->mel_dense, sizeof(float) * (size_t)fb->nbins * (fb->nfft / 2 + 1));
}

void cav_fbank_reseed(cav_fbank *fb, uint64_t seed) {
    fb->rng = seed;
}

/* splitmix64, then Box-Muller: a reproducible Gaussian stream for dither. */
static double rng_uniform(uint64_t *s) {
    return ((cav_splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static float rng_gauss(uint64_t *s) {
    double u = rng_uniform(s), v = rng_uniform(s);
    return (float)(sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v));
}

/* log(x) = e*ln2 + log(m), m in [sqrt(1/2), sqrt(2)), with the Cephes single-precision polynomial for
 * log(1+r); ln2 split in two parts so e*ln2 stays exact. Written without branches so it vectorises. */
HOT void cav_logf_vec(const float *x, float *y, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) {
        int32_t u;
        memcpy(&u, &x[i], 4);
        /* x = m * 2^e with m in [sqrt(1/2), sqrt(2)): e from the bits of x less those of sqrt(1/2) */
        int32_t e = (u - 0x3F3504F3) >> 23;
        int32_t mu = u - (int32_t)((uint32_t)e << 23);
        float m;
        memcpy(&m, &mu, 4);
        float fe = (float)e;
        float r = m - 1.0f;
        float z = r * r;
        float p = 7.0376836292e-2f;
        p = p * r - 1.1514610310e-1f;
        p = p * r + 1.1676998740e-1f;
        p = p * r - 1.2420140846e-1f;
        p = p * r + 1.4249322787e-1f;
        p = p * r - 1.6668057665e-1f;
        p = p * r + 2.0000714765e-1f;
        p = p * r - 2.4999993993e-1f;
        p = p * r + 3.3333331174e-1f;
        float t = p * r * z + fe * -2.12194440e-4f - 0.5f * z;
        y[i] = (r + t) + fe * 0.693359375f;
    }
}

/* The clip: the sum and whether all samples are finite, in one pass (memory-bound). */
HOT static float clip_sum(const float *x, int64_t n, uint32_t *bad) {
    return cav_torch_sum(x, n, 0.0f, bad);
}

/* The block's BLK frames (frame f at src + f*ss, its samples less xm being torchaudio's strided input) in
 * the transform's layout fft_a [nfft][BLK], windowed: each frame's mean (torch.mean: the cascade sum
 * divided by win) subtracted, pre-emphasis against the previous sample (the first against itself), times
 * the window, each step the float32 rounding torch makes; the tail past win zero. The frames are
 * transposed 8x8 in registers as they are read, so the arithmetic runs across the frames (lane f = frame
 * f). */
static inline __attribute__((always_inline)) void frames_to_lanes(cav_fbank *fb, const float *src, int64_t ss,
                                                                  float xm) {
    const int win = fb->win, nfft = fb->nfft;
    const float *restrict w = fb->window;
    const v8f vxm = {xm, xm, xm, xm, xm, xm, xm, xm};
    const float pre = (float)fb->o.preemph;
    const v8f vpre = {pre, pre, pre, pre, pre, pre, pre, pre};
    v8f dc = {0}, y, yprev;
    if (fb->o.remove_dc)
        for (int f = 0; f < BLK; f++) dc[f] = cav_torch_sum(src + f * ss, win, xm, NULL) / (float)win;
    v8f *restrict out = (v8f *)fb->fft_a;
    for (int f = 0; f < BLK; f++) yprev[f] = src[f * ss];
    yprev = (yprev - vxm) - dc; /* sample 0's "previous" is itself */
    int j = 0;
    for (; j + 8 <= win; j += 8) {
        v8f c[8];
        transpose8_load(src + j, ss, c);
        for (int k = 0; k < 8; k++) {
            y = (c[k] - vxm) - dc;
            out[j + k] = (y - vpre * yprev) * w[j + k];
            yprev = y;
        }
    }
    for (; j < win; j++) {
        v8f xj;
        for (int f = 0; f < BLK; f++) xj[f] = src[f * ss + j];
        y = (xj - vxm) - dc;
        out[j] = (y - vpre * yprev) * w[j];
        yprev = y;
    }
    memset(out + win, 0, sizeof(v8f) * (size_t)(nfft - win));
}

/* Where a block's frames are read from: in place in the clip when all BLK frames exist and there is no
 * dither; otherwise copied to fb->rows (stride nfft; lanes past the last frame repeat it, and with dither
 * the rows hold the centred frames plus noise, so xm becomes 0). */
static inline __attribute__((always_inline)) const float *
block_source(cav_fbank *fb, const float *wave, int64_t t0, int nb, float *xm, int64_t *ss) {
    const int win = fb->win;
    if (nb == BLK && fb->o.dither == 0.0) {
        *ss = fb->shift;
        return wave + t0 * fb->shift;
    }
    for (int f = 0; f < BLK; f++) {
        float *row = fb->rows + (size_t)f * fb->nfft;
        const float *x = wave + (t0 + (f < nb ? f : nb - 1)) * fb->shift;
        if (fb->o.dither == 0.0)
            memcpy(row, x, sizeof(float) * win);
        else if (f < nb) /* torch adds the noise to the centred frame, before the DC removal */
            for (int j = 0; j < win; j++) row[j] = (x[j] - *xm) + rng_gauss(&fb->rng) * (float)fb->o.dither;
        else
            memcpy(row, row - fb->nfft, sizeof(float) * win);
    }
    if (fb->o.dither != 0.0) *xm = 0.0f;
    *ss = fb->nfft;
    return fb->rows;
}

HOT int cav_fbank_compute(cav_fbank *fb, const float *wave, int channels, int64_t n, float *out,
                          int64_t *frames_out, cav_err *err) {
    if (frames_out) *frames_out = 0;
    if (n <= 0 || channels <= 0) return cav_fail(err, CAV_EXIT_INPUT, "no audio samples");
    uint32_t bad;
    float sum = clip_sum(wave, n * channels, &bad);
    if (bad)
        for (int64_t i = 0; i < n * channels; i++)
            if (!isfinite(wave[i]))
                return cav_fail(err, CAV_EXIT_INPUT, "sample %lld of channel %d is not finite (%g)",
                                (long long)(i % n), (int)(i / n), wave[i]);
    if (n < fb->win)
        return cav_fail(err, CAV_EXIT_INPUT,
                        "%lld samples: shorter than one %d-sample frame (%g ms at %g Hz)", (long long)n,
                        fb->win, fb->o.frame_length_ms, fb->o.sample_rate);
    /* waveform - waveform.mean(): one float32 scalar (the sum over all channels divided by their count),
     * then a float32 subtraction per sample, done as each frame is read rather than over the clip. */
    const float mean = fb->o.subtract_clip_mean ? sum / (float)(n * channels) : 0.0f;

    const int nbins = fb->nbins, nfft = fb->nfft, half = nfft / 2;
    const v8f veps = {FLT_EPSILON, FLT_EPSILON, FLT_EPSILON, FLT_EPSILON,
                      FLT_EPSILON, FLT_EPSILON, FLT_EPSILON, FLT_EPSILON};
    int64_t m = cav_fbank_num_frames(fb, n);
    int64_t rows = cav_fbank_out_frames(fb, n);
    int64_t used = m < rows ? m : rows;
    float *restrict pw = fb->power, *restrict en = fb->energy;
    for (int64_t t0 = 0; t0 < used; t0 += BLK) {
        int nb = used - t0 < BLK ? (int)(used - t0) : BLK;
        /* Lanes past nb in a last partial block repeat its last frame: computed, never written out. */
        float xm = mean;
        int64_t ss;
        const float *src = block_source(fb, wave, t0, nb, &xm, &ss);
        frames_to_lanes(fb, src, ss, xm);
        const v8f *h = (const v8f *)cav_rfft_forward8(fb->fft, fb->fft_a, fb->fft_b);
        /* |X_k|^2 from the half-complex r0, r1, i1, ..., r(n/2); the Nyquist bin has no mel weight. */
        v8f *pv = (v8f *)pw;
        pv[0] = h[0] * h[0];
        for (int k = 1; k < half; k++) pv[k] = h[2 * k - 1] * h[2 * k - 1] + h[2 * k] * h[2 * k];
        /* The mel sums (in the order of the bins; torch's sgemm has its own) floored at FLT_EPSILON. */
        v8f *ev = (v8f *)en;
        for (int b = 0; b < nbins; b++) {
            const float *bw = fb->band_w + fb->band_off[b];
            const v8f *p = pv + fb->band_start[b];
            v8f acc = {0};
            for (int k = 0, len = fb->band_len[b]; k < len; k++) acc += bw[k] * p[k];
            v8i keep = acc > veps;
            ev[b] = (v8f)((keep & (v8i)acc) | (~keep & (v8i)veps));
        }
        cav_logf_vec(en, en, nbins * BLK);
        int b8 = nb == BLK ? nbins & ~7 : 0;
        for (int b = 0; b < b8; b += 8) transpose8(en + b * BLK, BLK, out + t0 * nbins + b, nbins);
        for (int f = 0; f < nb; f++) {
            float *o = out + (t0 + f) * nbins;
            for (int b = b8; b < nbins; b++) o[b] = en[b * BLK + f];
        }
    }
    if (rows > used) memset(out + used * nbins, 0, sizeof(float) * (size_t)(rows - used) * nbins);
    if (frames_out) *frames_out = m;
    return 0;
}

const float *cav_fbank_wave_samples(const int16_t *i16, const float *f32, int64_t total, float **buf,
                                    int64_t *cap, cav_err *err) {
    if (total <= 0) { /* an empty tensor has no data to return */
        cav_fail(err, CAV_EXIT_INPUT, "no audio samples");
        return NULL;
    }
    if (f32) return f32;
    if (total > *cap) {
        float *s = realloc(*buf, sizeof(float) * (size_t)(total ? total : 1));
        if (!s) return cav_fail(err, CAV_EXIT_INTERNAL, "out of memory"), NULL;
        *buf = s, *cap = total;
    }
    const int16_t *s = i16; /* as torchaudio.load: int16 / 32768 */
    for (int64_t i = 0; i < total; i++) (*buf)[i] = s[i] / 32768.0f;
    return *buf;
}

HOT double cav_fbank_fft_only(cav_fbank *fb, const float *wave, int64_t n) {
    int64_t m = cav_fbank_num_frames(fb, n);
    const int win = fb->win, nfft = fb->nfft;
    double check = 0.0;
    for (int64_t t0 = 0; t0 < m; t0 += BLK) {
        int nb = m - t0 < BLK ? (int)(m - t0) : BLK;
        float xm = 0.0f;
        int64_t ss;
        const float *src = block_source(fb, wave, t0, nb, &xm, &ss);
        /* the frames into the transform's layout, nothing else */
        int j = 0;
        for (; j + 8 <= win; j += 8) transpose8(src + j, ss, fb->fft_a + (size_t)j * BLK, BLK);
        for (; j < win; j++)
            for (int f = 0; f < BLK; f++) fb->fft_a[j * BLK + f] = src[f * ss + j];
        memset(fb->fft_a + (size_t)win * BLK, 0, sizeof(float) * BLK * (size_t)(nfft - win));
        check += cav_rfft_forward8(fb->fft, fb->fft_a, fb->fft_b)[BLK];
    }
    return check;
}
