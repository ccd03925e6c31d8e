/* fuzz_avdecode.c: libFuzzer target for the demux/decode path of av-extract: the input bytes are read as a
 * media file from memory through cav_av_decode_mem's custom AVIOContext, with the sides wanted, skipping
 * and downmix chosen from the input size, and the result is checked for consistency (a success has the
 * sides asked for, within the limits; a failure has a reason, a message and no data). Built with ASan and
 * UBSan (stopping at the first report); run with `make fuzz FUZZ_SECONDS=N`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "avdecode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cav_av_opts o;
    cav_av_opts_default(&o);
    o.max_seconds = 30; /* hostile headers may claim hours of audio */
    o.skip_unneeded = size & 1;
    o.downmix = (size >> 1) & 1;
    int sides = (int)((size >> 2) % 3); /* both, audio only, video only */
    o.audio = sides != 2;
    o.video = sides != 1;
    cav_av_clip c;
    cav_err err = {0};
    cav_av_reason r = cav_av_decode_mem(data, size, &o, &c, &err);
    if (r == CAV_AV_OK) {
        if (o.audio && (!c.wave || c.nsamples <= 0 || c.nsamples > 30 * CAV_AV_RATE)) abort();
        if (o.video != (c.frames != NULL) || (!o.audio && c.wave)) abort();
        unsigned s = 0; /* touch the data: ASan checks the sizes */
        for (int64_t i = 0; c.wave && i < c.nsamples; i++) s += (unsigned)c.wave[i];
        for (size_t i = 0; c.frames && i < (size_t)CAV_AV_NFRAMES * CAV_AV_SIZE * CAV_AV_SIZE * 3; i += 61)
            s += c.frames[i];
        if (s == 0xFFFFFFFFu) fprintf(stderr, "!"); /* keeps the loads */
    } else {
        if (r >= CAV_AV_NREASONS || !err.msg[0] || c.wave || c.frames) abort();
    }
    cav_av_clip_free(&c);
    return 0;
}
