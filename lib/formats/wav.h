/* wav.h: a small reader for RIFF WAVE files holding 16-bit PCM or 32-bit IEEE float samples (plain or
 * WAVE_FORMAT_EXTENSIBLE), the format the reference's extraction writes. Other codecs go through FFmpeg
 * (av-extract). Samples come back planar, [channels, frames]. */
#ifndef CAV_WAV_H
#define CAV_WAV_H

#include <stdint.h>

#include "record.h"

typedef struct {
    int rate, channels;
    int64_t frames;  /* samples per channel */
    cav_dtype dtype; /* CAV_I16 or CAV_F32 */
    void *data;      /* [channels, frames], planar */
} cav_wav;

/* 0, or -1 with err naming the file and what is wrong (code CAV_EXIT_INPUT; CAV_EXIT_INTERNAL for I/O and
 * memory). A data chunk that claims more bytes than the file holds (streamed writers) is read to the end
 * of the file. */
int cav_wav_read(const char *path, cav_wav *w, cav_err *err);
/* The same over bytes in memory; name is used in messages. */
int cav_wav_parse(const uint8_t *buf, size_t len, const char *name, cav_wav *w, cav_err *err);
void cav_wav_free(cav_wav *w);

#endif
