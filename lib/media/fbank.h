/* fbank.h: Kaldi-compatible log-mel filterbank, computed as torchaudio.compliance.kaldi.fbank does with the
 * reference's arguments (cav-numerics(7) 1.3): clip mean subtraction, snip-edges framing, per-frame DC
 * removal, pre-emphasis, a window, a power-of-two real FFT (pocketfft's arithmetic, as torch.fft.rfft:
 * rfft.h), the power spectrum, HTK mel triangles with float32 weights, log with the float-epsilon floor; then
 * cut or zero-pad in time. Up to the power spectrum the float32 values are torch's own, bit for bit.
 *
 * A cav_fbank holds everything that depends only on the options (window, mel weights, FFT plan, scratch
 * buffers): build one per thread and per sample rate, then call cav_fbank_compute for each clip. Objects
 * share no state, so they may be built and used from several threads.
 * The loader's normalisation (x - mean) / std is cav_fbank_normalize in augment.h. */
#ifndef CAV_FBANK_H
#define CAV_FBANK_H

#include <stdint.h>

#include "err.h"
#include "opts.h"

typedef enum {
    CAV_WIN_HANNING = 0, /* symmetric Hann: torch.hann_window(N, periodic=False) (the reference) */
    CAV_WIN_HAMMING,     /* symmetric, 0.54 - 0.46 cos */
    CAV_WIN_POVEY,       /* Hann^0.85 (Kaldi's default) */
    CAV_WIN_RECTANGULAR,
    CAV_WIN_BLACKMAN, /* Kaldi's generalised Blackman with blackman_coeff */
} cav_window;

typedef struct {
    double sample_rate;     /* Hz; 16000 */
    int num_mel_bins;       /* 128 */
    double frame_length_ms; /* 25 */
    double frame_shift_ms;  /* 10 */
    cav_window window;      /* hanning */
    double blackman_coeff;  /* 0.42 */
    double low_freq;        /* Hz; 20 */
    double high_freq;       /* Hz; 0 = Nyquist, negative = Nyquist + value (Kaldi) */
    double preemph;         /* 0.97 */
    int remove_dc;          /* per-frame mean removal; 1 */
    int subtract_clip_mean; /* the reference subtracts the clip mean before fbank; 1 */
    double dither;          /* Gaussian dither scale (Kaldi: added per frame sample); 0 */
    uint64_t dither_seed;   /* seed of the dither stream (cannot match torch.randn) */
    int target_length;      /* frames after cut/zero-pad; 1024; 0 keeps the natural frame count */
} cav_fbank_opts;

/* The options as fbank(1) offers them (opts.h table over cav_fbank_opts): names, defaults, ranges, help,
 * and the keys of the settings echo. cav_fbank_opts_default takes its defaults from here, so the tool, the
 * training loader and every other caller share them. */
extern const cav_opt cav_fbank_options[];
void cav_fbank_opts_default(cav_fbank_opts *o);
/* "hanning" (also "hann"), "hamming", "povey", "rectangular", "blackman"; -1 if unknown. */
int cav_window_parse(const char *name);
const char *cav_window_name(cav_window w);

typedef struct cav_fbank cav_fbank;
/* NULL with err filled (code CAV_EXIT_INPUT) when the options cannot describe a filterbank at this rate
 * (window under 2 samples, mel range outside (0, Nyquist], fewer than 4 bins...). */
cav_fbank *cav_fbank_new(const cav_fbank_opts *o, cav_err *err);
void cav_fbank_free(cav_fbank *fb);

int cav_fbank_window_size(const cav_fbank *fb); /* samples per frame, e.g. 400 */
int cav_fbank_window_shift(const cav_fbank *fb);
int cav_fbank_fft_size(const cav_fbank *fb); /* e.g. 512 */
int cav_fbank_bins(const cav_fbank *fb);
/* Frames a clip of n samples gives with snip_edges (0 if shorter than one window). */
int64_t cav_fbank_num_frames(const cav_fbank *fb, int64_t n);
/* Rows cav_fbank_compute writes for n samples: target_length, or the frame count when it is 0. */
int64_t cav_fbank_out_frames(const cav_fbank *fb, int64_t n);
/* The mel weights [bins, fft_size/2 + 1] as dense float32 (as torchaudio's get_mel_banks, plus the zero
 * Nyquist column); out must hold bins*(fft_size/2+1) floats. */
void cav_fbank_mel_weights(const cav_fbank *fb, float *out);

/* wave [channels, n] float samples (int16 audio divided by 32768, as torchaudio.load); as the reference,
 * the clip mean is taken over all channels and channel 0 is analysed. out [out_frames, bins].
 * Returns 0, or -1 with err filled: non-finite samples, no samples, or fewer samples than one window
 * (torchaudio refuses these too). frames_out (may be NULL) receives the natural frame count. */
int cav_fbank_compute(cav_fbank *fb, const float *wave, int channels, int64_t n, float *out,
                      int64_t *frames_out, cav_err *err);
/* Samples as cav_fbank_compute takes them: f32 (if not NULL) as they are; else i16 divided by 32768 as
 * torchaudio.load, into *buf (grown to *cap floats as needed; the caller frees it). total = channels x n.
 * NULL with err filled when out of memory. The fbank tool and the training loader both read waves here
 * (clip.h's cav_clip_get_wave finds and checks a record's `wave`). */
const float *cav_fbank_wave_samples(const int16_t *i16, const float *f32, int64_t total, float **buf,
                                    int64_t *cap, cav_err *err);
/* Restarts the dither stream (the tool reseeds per record so results do not depend on record order). */
void cav_fbank_reseed(cav_fbank *fb, uint64_t seed);

/* The FFT floor for benchmarks: runs the same transform (rfft.c, eight frames per call) over the clip's
 * frames, with only the frame copy and the transposition the transform's layout needs, and returns a
 * checksum so the work cannot be optimised away. */
double cav_fbank_fft_only(cav_fbank *fb, const float *wave, int64_t n);

/* Fast natural log of x >= FLT_MIN for the feature path (branch-free, vectorisable; error below 2 ulp
 * of the result for the values fbank produces). Exposed for its unit test. */
void cav_logf_vec(const float *x, float *y, int n);

#endif
