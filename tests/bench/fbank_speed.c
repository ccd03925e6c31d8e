/* fbank_speed.c: the C side of bench_fbank.sh. Reads 16-bit WAV clips, then times on one thread
 * (a) cav_fbank_compute per clip (the fbank tool's work, without record I/O) and (b) the FFT floor: the
 * same FFTW plan run over the same frames with nothing else. Prints "fbank SECONDS" and "fft SECONDS" for
 * REPS passes over all clips (thread CPU time, best of 5 alternating passes each). Usage: fbank_speed REPS
 * FILE.wav... */
#include "fbank.h"
#include "wav.h"

#include <stdio.h>
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
    double best_fb = 1e30, best_fft = 1e30, check = 0;
    for (int pass = 0; pass < 5; pass++) {
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
        if (t1 - t0 < best_fb) best_fb = t1 - t0;
        if (t2 - t1 < best_fft) best_fft = t2 - t1;
    }
    printf("fbank %.6f\nfft %.6f\nclips %d\ncheck %g\n", best_fb, best_fft, reps * nclips, check);
    cav_fbank_free(fb);
    free(out);
    for (int i = 0; i < nclips; i++) free(x[i]);
    free(x);
    free(n);
    return 0;
}
