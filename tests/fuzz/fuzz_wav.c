/* fuzz_wav.c: libFuzzer target for the WAV reader (cav_wav_parse), then the samples as fbank takes them
 * (cav_fbank_wave_samples): a failure must always say why. */
#include "fbank.h"
#include "fuzz_file.h"
#include "wav.h"

CAV_FUZZ_ENTRY(wav) {
    cav_err err = {0};
    cav_wav w;
    if (cav_wav_parse(data, size, "fuzz.wav", &w, &err)) {
        CAV_FUZZ_REQUIRE(err.msg[0] && err.code >= 2);
        return 0;
    }
    int64_t shape[2] = {w.channels, w.frames};
    cav_tensor t = {0};
    t.dtype = w.dtype;
    t.ndim = w.channels > 1 ? 2 : 1;
    t.shape[0] = t.ndim == 2 ? shape[0] : shape[1];
    t.shape[1] = shape[1];
    t.data = w.data;
    t.nbytes = (size_t)(w.channels * w.frames) * cav_dtype_size(w.dtype);
    float *buf = NULL;
    int64_t cap = 0, n;
    int ch;
    cav_err e2 = {0};
    if (!cav_fbank_wave_samples(&t, &buf, &cap, &ch, &n, &e2)) CAV_FUZZ_REQUIRE(e2.msg[0]);
    free(buf);
    cav_wav_free(&w);
    return 0;
}
