/* fbank_speed.c: the C side of bench_fbank.py. Reads 16-bit WAV clips, then times on one thread
 * (a) cav_fbank_compute per clip (the fbank tool's work, without record I/O), (b) the FFT floor: the same
 * transforms fbank runs (lib/media/rfft.c, pocketfft's arithmetic, eight frames per call) over the same
 * frames with only the frame copy and transposition, and (c) for comparison, the FFTW floor: an FFTW_ESTIMATE
 * 512-point r2c plan (what fbank used before it had to match torch's FFT to the bit) run frame by frame
 * over the same frames with only the frame copy. Prints "fbank", "fft" and "fftw" SECONDS for REPS passes
 * over all clips (thread CPU time, best of 7 alternating passes each). Usage: fbank_speed REPS FILE.wav... */
#include "fbank.h"
#include "wav.h"

#include <fftw3.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>

/* CPU time of this thread: less disturbed than wall time on a shared machine. */
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 3) return 1;
    int reps = atoi(argv[1]), nclips = argc - 2;
    float **x = calloc(nclips, sizeof *x);
    int64_t *n = calloc(nclips, sizeof *n);
    cav_err err;
    for (int i = 0; i < nclips; i++) {
        cav_wav w;
        if (cav_wav_read(argv[i + 2], &w, &err) || w.dtype != CAV_I16 || w.rate != 16000) {
            fprintf(stderr, "fbank_speed: %s: need 16 kHz 16-bit WAV\n", argv[i + 2]);
            return 1;
        }
        n[i] = w.frames;
        x[i] = malloc(sizeof(float) * w.frames);
        for (int64_t j = 0; j < w.frames; j++) x[i][j] = ((int16_t *)w.data)[j] / 32768.0f;
        cav_wav_free(&w);
    }
    cav_fbank_opts o;
    cav_fbank_opts_default(&o);
    cav_fbank *fb = cav_fbank_new(&o, &err);
    float *out = malloc(sizeof(float) * 1024 * 128);
    const int nfft = cav_fbank_fft_size(fb), win = cav_fbank_window_size(fb),
              shift = cav_fbank_window_shift(fb);
    float *in = fftwf_malloc(sizeof(float) * nfft), *re = fftwf_malloc(sizeof(float) * (nfft / 2 + 1)),
          *im = fftwf_malloc(sizeof(float) * (nfft / 2 + 1));
    fftw_iodim dim = {.n = nfft, .is = 1, .os = 1};
    fftwf_plan plan = fftwf_plan_guru_split_dft_r2c(1, &dim, 0, NULL, in, re, im, FFTW_ESTIMATE);
    memset(in, 0, sizeof(float) * nfft);
    double best_fb = 1e30, best_fft = 1e30, best_fftw = 1e30, check = 0;
    for (int pass = 0; pass < 7; pass++) {
        double t0 = cpu_now();
        for (int r = 0; r < reps; r++)
            for (int i = 0; i < nclips; i++) {
                if (cav_fbank_compute(fb, x[i], 1, n[i], out, NULL, &err)) return 1;
                check += out[5];
            }
        double t1 = cpu_now();
        for (int r = 0; r < reps; r++)
            for (int i = 0; i < nclips; i++) check += cav_fbank_fft_only(fb, x[i], n[i]);
        double t2 = cpu_now();
        for (int r = 0; r < reps; r++)
            for (int i = 0; i < nclips; i++)
                for (int64_t t = 0; t < cav_fbank_num_frames(fb, n[i]); t++) {
                    memcpy(in, x[i] + t * shift, sizeof(float) * win);
                    fftwf_execute(plan);
                    check += re[1];
                }
        double t3 = cpu_now();
        if (t1 - t0 < best_fb) best_fb = t1 - t0;
        if (t2 - t1 < best_fft) best_fft = t2 - t1;
        if (t3 - t2 < best_fftw) best_fftw = t3 - t2;
    }
    printf("fbank %.6f\nfft %.6f\nfftw %.6f\nclips %d\ncheck %g\n", best_fb, best_fft, best_fftw,
           reps * nclips, check);
    fftwf_destroy_plan(plan);
    fftwf_free(in), fftwf_free(re), fftwf_free(im);
    cav_fbank_free(fb);
    free(out);
    for (int i = 0; i < nclips; i++) free(x[i]);
    free(x);
    free(n);
    return 0;
}
