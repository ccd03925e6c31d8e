/* fuzz_wav.c: libFuzzer target for the WAV reader (cav_wav_parse), then the samples as fbank takes them
 * (cav_fbank_wave_samples): a failure must always say why. */
#include "clip.h"
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
    /* through the record, as fbank(1) reads a stream's wave */
    cav_record rec;
    cav_record_init(&rec);
    cav_clip_wave wv;
    float *buf = NULL;
    int64_t cap = 0;
    cav_err e2 = {0};
    if (cav_clip_put_wave(&rec, w.dtype, w.channels, w.frames, w.data) == 0) {
        int got = cav_clip_get_wave(&rec, &wv, &e2);
        if (got < 0)
            CAV_FUZZ_REQUIRE(e2.msg[0]);
        else if (got > 0 && !cav_fbank_wave_samples(wv.i16, wv.f32, wv.n * wv.channels, &buf, &cap, &e2))
            CAV_FUZZ_REQUIRE(e2.msg[0]);
    }
    cav_record_clear(&rec);
    free(buf);
    cav_wav_free(&w);
    return 0;
}
