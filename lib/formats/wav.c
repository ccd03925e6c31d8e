/* wav.c: RIFF WAVE parsing for 16-bit PCM and 32-bit float (see wav.h). Every size read from the file is
 * checked against the bytes actually present before it is used. */
#include "wav.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static uint32_t rd32(const uint8_t *p) {
    return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint16_t rd16(const uint8_t *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}

int cav_wav_parse(const uint8_t *buf, size_t len, const char *name, cav_wav *w, cav_err *err) {
    memset(w, 0, sizeof *w);
    if (len < 12 || memcmp(buf, "RIFF", 4) || memcmp(buf + 8, "WAVE", 4))
        return cav_fail(err, CAV_EXIT_INPUT, "%s: not a RIFF WAVE file", name);
    size_t pos = 12;
    int have_fmt = 0, format = 0, bits = 0;
    while (pos + 8 <= len) {
        const uint8_t *ck = buf + pos;
        uint32_t size = rd32(ck + 4);
        size_t body = pos + 8, avail = len - body;
        if (!memcmp(ck, "fmt ", 4)) {
            if (size < 16 || size > avail)
                return cav_fail(err, CAV_EXIT_INPUT, "%s: truncated fmt chunk (%u bytes)", name, size);
            const uint8_t *f = buf + body;
            format = rd16(f);
            w->channels = rd16(f + 2);
            w->rate = (int)rd32(f + 4);
            bits = rd16(f + 14);
            if (format == 0xFFFE) { /* WAVE_FORMAT_EXTENSIBLE: the real tag opens the sub-format GUID */
                if (size < 40)
                    return cav_fail(err, CAV_EXIT_INPUT, "%s: truncated extensible fmt chunk", name);
                format = rd16(f + 24);
            }
            have_fmt = 1;
        } else if (!memcmp(ck, "data", 4)) {
            if (!have_fmt) return cav_fail(err, CAV_EXIT_INPUT, "%s: data chunk before fmt chunk", name);
            if (!((format == 1 && bits == 16) || (format == 3 && bits == 32)))
                return cav_fail(
                    err, CAV_EXIT_INPUT,
                    "%s: format tag %d with %d-bit samples is not supported (16-bit PCM or 32-bit "
                    "float only; decode other formats with av-extract)",
                    name, format, bits);
            if (w->channels < 1 || w->rate < 1)
                return cav_fail(err, CAV_EXIT_INPUT, "%s: %d channels at %d Hz", name, w->channels, w->rate);
            size_t bytes = size > avail ? avail : size;
            size_t es = bits / 8, frame = es * (size_t)w->channels;
            w->frames = (int64_t)(bytes / frame);
            w->dtype = format == 1 ? CAV_I16 : CAV_F32;
            w->data = malloc(frame * (size_t)(w->frames ? w->frames : 1));
            if (!w->data) return cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", name);
            const uint8_t *d = buf + body;
            for (int64_t i = 0; i < w->frames; i++)
                for (int c = 0; c < w->channels; c++) {
                    const uint8_t *s = d + (size_t)i * frame + (size_t)c * es;
                    size_t o = (size_t)c * w->frames + i;
                    if (format == 1) {
                        ((int16_t *)w->data)[o] = (int16_t)rd16(s);
                    } else {
                        uint32_t u = rd32(s);
                        memcpy((float *)w->data + o, &u, 4);
                    }
                }
            return 0;
        }
        if (size > avail) break;
        pos = body + size + (size & 1);
    }
    return cav_fail(err, CAV_EXIT_INPUT, "%s: no %s chunk", name, have_fmt ? "data" : "fmt");
}

int cav_wav_read(const char *path, cav_wav *w, cav_err *err) {
    memset(w, 0, sizeof *w);
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) return cav_fail(err, CAV_EXIT_INPUT, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            if (f != stdin) fclose(f);
            return cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", path);
        }
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap) break;
        uint8_t *nb = realloc(buf, cap * 2);
        if (!nb) free(buf);
        buf = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    if (f != stdin) fclose(f);
    int rc =
        bad ? cav_fail(err, CAV_EXIT_INPUT, "%s: read error", path) : cav_wav_parse(buf, len, path, w, err);
    free(buf);
    return rc;
}

void cav_wav_free(cav_wav *w) {
    free(w->data);
    memset(w, 0, sizeof *w);
}
