/* avextract.c: av-extract's inputs and records (see avextract.h). */
#include "avextract.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "clip.h"
#include "jpeg.h"
#include "json.h"

void cav_av_inputs_free(cav_av_inputs *in) {
    for (int i = 0; i < in->n; i++) free(in->v[i].id), free(in->v[i].path);
    free(in->v);
    memset(in, 0, sizeof *in);
}

int cav_av_inputs_add(cav_av_inputs *in, const char *path, const char *id, cav_err *err) {
    if (!path[0]) return cav_fail(err, CAV_EXIT_INPUT, "empty input path");
    if (in->n == in->cap) {
        int cap = in->cap ? in->cap * 2 : 64;
        cav_av_input *v = realloc(in->v, sizeof *v * (size_t)cap);
        if (!v) return cav_fail(err, CAV_EXIT_INTERNAL, "out of memory");
        in->v = v;
        in->cap = cap;
    }
    char *p = strdup(path), *d;
    if (id) {
        d = strdup(id);
    } else { /* the reference's video_id: the file name without its extension */
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        d = strdup(base);
        char *dot = d ? strrchr(d, '.') : NULL;
        if (dot && dot != d) *dot = 0;
    }
    if (!p || !d) {
        free(p), free(d);
        return cav_fail(err, CAV_EXIT_INTERNAL, "out of memory");
    }
    if (!d[0] || strlen(d) > CAV_MAX_NAME) {
        free(p), free(d);
        return cav_fail(err, CAV_EXIT_INPUT, "%s: cannot make a record id (1 to %d bytes) from it", path,
                        CAV_MAX_NAME);
    }
    in->v[in->n].path = p;
    in->v[in->n].id = d;
    in->n++;
    return 0;
}

int cav_av_inputs_load_list(cav_av_inputs *in, const char *listfile, cav_err *err) {
    int is_stdin = !strcmp(listfile, "-");
    FILE *f = is_stdin ? stdin : fopen(listfile, "r");
    if (!f) return cav_fail(err, CAV_EXIT_INPUT, "%s: %s", listfile, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int ret = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        char *s = line, *e = line + len;
        while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) *--e = 0;
        while (*s == ' ' || *s == '\t') s++;
        if (!*s || *s == '#') continue;
        if ((ret = cav_av_inputs_add(in, s, NULL, err))) break;
    }
    if (!ret && ferror(f)) ret = cav_fail(err, CAV_EXIT_INPUT, "%s: read error", listfile);
    free(line);
    if (!is_stdin) fclose(f);
    return ret;
}

int cav_av_inputs_load_json(cav_av_inputs *in, const char *jsonfile, const char *key, cav_err *err) {
    char eb[512];
    cav_json *j = cav_json_load(jsonfile, eb, sizeof eb);
    if (!j) return cav_fail(err, CAV_EXIT_INPUT, "%s", eb);
    const cav_json *data = cav_json_get(j, "data");
    int ret = 0;
    if (!data || data->type != CAV_JSON_ARRAY) {
        ret = cav_fail(err, CAV_EXIT_INPUT, "%s: no \"data\" array (the reference's dataset JSON)", jsonfile);
        goto out;
    }
    static const char *keys[] = {"video", "media", "path", CAV_REFJSON_WAV};
    for (int i = 0; i < data->n && !ret; i++) {
        const cav_json *it = data->items[i], *id = cav_json_get(it, CAV_REFJSON_ID), *p = NULL;
        if (key)
            p = cav_json_get(it, key);
        else
            for (size_t k = 0; k < sizeof keys / sizeof *keys && !p; k++) p = cav_json_get(it, keys[k]);
        if (!id || id->type != CAV_JSON_STRING)
            ret =
                cav_fail(err, CAV_EXIT_INPUT, "%s: data[%d]: no string \"" CAV_REFJSON_ID "\"", jsonfile, i);
        else if (!p || p->type != CAV_JSON_STRING)
            ret = cav_fail(err, CAV_EXIT_INPUT, "%s: data[%d] (%s): no string \"%s\" with the media path",
                           jsonfile, i, id->string,
                           key ? key : "video\", \"media\", \"path\" or \"" CAV_REFJSON_WAV);
        else
            ret = cav_av_inputs_add(in, p->string, id->string, err);
    }
out:
    cav_json_free(j);
    return ret;
}

static int put_attr(cav_record *rec, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int put_attr(cav_record *rec, const char *key, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return cav_attrs_set(&rec->attrs, key, buf);
}

int cav_av_clip_to_record(const cav_av_clip *c, const char *id, const char *source,
                          const cav_av_record_opts *o, cav_record *rec, cav_err *err) {
    cav_record_clear(rec);
    int bad = cav_record_set_id(rec, id);
    bad |= put_attr(rec, CAV_ATTR_SOURCE, "%s", source);
    if (c->duration > 0) bad |= put_attr(rec, CAV_ATTR_DURATION, "%.6f", c->duration);
    if (c->container[0]) bad |= put_attr(rec, CAV_ATTR_CONTAINER, "%s", c->container);
    if (c->wave) {
        bad |= cav_clip_put_wave(rec, CAV_I16, 1, c->nsamples, c->wave);
        bad |= put_attr(rec, CAV_ATTR_SAMPLE_RATE, "%d", CAV_AV_RATE);
        bad |= put_attr(rec, CAV_ATTR_SRC_SAMPLE_RATE, "%d", c->src_sample_rate);
        bad |= put_attr(rec, CAV_ATTR_SRC_CHANNELS, "%d", c->src_channels);
        bad |= put_attr(rec, CAV_ATTR_AUDIO_CODEC, "%s", c->audio_codec);
    }
    if (c->frames) {
        bad |= put_attr(rec, CAV_ATTR_FPS, "%.17g", c->fps);
        bad |= put_attr(rec, CAV_ATTR_FRAME_COUNT, "%lld", (long long)c->frame_count);
        char idx[256] = "";
        for (int k = 0; k < CAV_AV_NFRAMES; k++)
            snprintf(idx + strlen(idx), sizeof idx - strlen(idx), "%s%d", k ? "," : "", c->frame_index[k]);
        bad |= put_attr(rec, CAV_ATTR_FRAME_INDEX, "%s", idx);
        bad |= put_attr(rec, CAV_ATTR_VIDEO_CODEC, "%s", c->video_codec);
        const size_t fsz = (size_t)CAV_AV_SIZE * CAV_AV_SIZE * 3;
        if (o->jpeg_quality <= 0) {
            int64_t shape[4] = {CAV_AV_NFRAMES, CAV_AV_SIZE, CAV_AV_SIZE, 3};
            bad |= !cav_record_put(rec, CAV_FIELD_FRAMES, CAV_U8, 4, shape, c->frames);
        } else {
            uint8_t *jb[CAV_AV_NFRAMES] = {0};
            size_t jn[CAV_AV_NFRAMES];
            int ok = 1;
            for (int k = 0; k < CAV_AV_NFRAMES && ok; k++)
                if (cav_jpeg_encode(c->frames + k * fsz, CAV_AV_SIZE, CAV_AV_SIZE, o->jpeg_quality, &jb[k],
                                    &jn[k], err))
                    ok = 0;
            if (ok) bad |= cav_clip_put_jpeg_frames(rec, CAV_AV_NFRAMES, jb, jn);
            for (int k = 0; k < CAV_AV_NFRAMES; k++) free(jb[k]);
            if (!ok) {
                cav_record_clear(rec);
                return -1;
            }
        }
    }
    if (bad) {
        cav_record_clear(rec);
        return cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory building the record", id);
    }
    return 0;
}
