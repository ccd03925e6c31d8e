/* rfft.h: a real forward FFT whose float32 arithmetic is pocketfft's (the FFTPACK-derived C++ library that
 * torch.fft.rfft runs on a CPU build of PyTorch without MKL, Debian's included): the same factorisation of
 * the length, the same radix-4 and radix-2 passes in the same order, the same twiddle factors (computed in
 * double and rounded to float), every operation a separately rounded float32 add or multiply (no fused
 * multiply-add). So the result is bit for bit what torch.fft.rfft returns for the same float32 input; that is
 * what makes fbank agree with torchaudio in the cells where any other FFT's rounding shows (fbank(1)).
 *
 * Lengths: powers of two from 2 up (the lengths fbank pads frames to). Transforms run eight at a time, the
 * eight signals interleaved lane by lane ([n][8]: element j of signal f at x[j*8 + f]), as SIMD across
 * signals; each lane's arithmetic is exactly the single-signal arithmetic. */
#ifndef CAV_RFFT_H
#define CAV_RFFT_H

typedef struct cav_rfft cav_rfft;

/* NULL if n is not a power of two >= 2 (or on allocation failure). A plan is read-only once built: several
 * threads may use one plan, each with its own buffers. */
cav_rfft *cav_rfft_new(int n);
void cav_rfft_free(cav_rfft *p);
int cav_rfft_size(const cav_rfft *p);

/* Eight forward transforms. x [n][8] holds the signals and is overwritten; work [n][8] is scratch. Returns
 * x or work, whichever holds the result [n][8] in FFTPACK's half-complex order: r0, r1, i1, r2, i2, ...,
 * r(n/2), where bin k of signal f is (r_k, i_k) = sum_j x_j exp(-2 pi i jk/n) (r0 and r(n/2) real). Both
 * buffers must be 32-byte aligned. */
float *cav_rfft_forward8(const cav_rfft *p, float *x, float *work);

/* One transform, for tests and callers with a single signal: in [n] -> out [n/2+1][2] interleaved complex
 * (as FFTW's r2c and torch.fft.rfft). Allocates its scratch; returns 0, or -1 out of memory. */
int cav_rfft_forward(const cav_rfft *p, const float *in, float *out);

#endif
