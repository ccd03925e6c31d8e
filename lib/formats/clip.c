/* clip.c: the clip record schema's accessors and writers (see clip.h). Each accessor checks the field
 * against cav-stream(5)'s standard type and rank before handing out a pointer into the record. */
#include "clip.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *dtype_or_what(cav_dtype t) {
    const char *s = cav_dtype_name(t);
    return s ? s : "?";
}

int cav_clip_parse_rate(const char *s, double *rate) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v > 0) || v > 1e7) return -1;
    *rate = v;
    return 0;
}

int cav_clip_rate(const cav_record *r, double dflt, double *rate, cav_err *err) {
    const char *s = cav_attrs_get(&r->attrs, CAV_ATTR_SAMPLE_RATE);
    *rate = dflt;
    if (s && cav_clip_parse_rate(s, rate))
        return cav_fail(err, CAV_EXIT_INPUT, CAV_ATTR_SAMPLE_RATE ": '%s' is not a rate", s);
    return 0;
}

int cav_clip_get_wave(const cav_record *r, cav_clip_wave *w, cav_err *err) {
    const cav_tensor *t = cav_record_find(r, CAV_FIELD_WAVE);
    memset(w, 0, sizeof *w);
    if (!t) return 0;
    if ((t->dtype != CAV_I16 && t->dtype != CAV_F32) || t->ndim < 1 || t->ndim > 2)
        return cav_fail(err, CAV_EXIT_INPUT,
                        "field " CAV_FIELD_WAVE
                        ": %s with %d dimensions; need i16 or f32 [n] or [channels,n]",
                        dtype_or_what(t->dtype), t->ndim);
    w->channels = t->ndim == 2 ? (int)t->shape[0] : 1;
    w->n = t->shape[t->ndim - 1];
    if (w->n <= 0 || w->channels <= 0)
        return cav_fail(err, CAV_EXIT_INPUT, "field " CAV_FIELD_WAVE ": no audio samples");
    if (t->dtype == CAV_I16)
        w->i16 = t->data;
    else
        w->f32 = t->data;
    return 1;
}

int cav_clip_put_wave(cav_record *r, cav_dtype dtype, int channels, int64_t n, const void *data) {
    int64_t shape[2] = {channels, n};
    return cav_record_put(r, CAV_FIELD_WAVE, dtype, channels > 1 ? 2 : 1, channels > 1 ? shape : shape + 1,
                          data)
               ? 0
               : -1;
}

int cav_clip_get_fbank(const cav_record *r, int bins, cav_clip_fbank *f, cav_err *err) {
    const cav_tensor *t = cav_record_find(r, CAV_FIELD_FBANK);
    memset(f, 0, sizeof *f);
    if (!t) return 0;
    if (t->dtype != CAV_F32 && t->dtype != CAV_F16)
        return cav_fail(err, CAV_EXIT_INPUT, "field " CAV_FIELD_FBANK ": type %s, need f32 or f16",
                        dtype_or_what(t->dtype));
    if (t->ndim != 2 || t->shape[0] < 1 || t->shape[1] < 1 || t->shape[1] > INT32_MAX ||
        (bins > 0 && t->shape[1] != bins)) {
        if (bins > 0)
            return cav_fail(err, CAV_EXIT_INPUT, "field " CAV_FIELD_FBANK ": shape is not [T, %d]", bins);
        return cav_fail(err, CAV_EXIT_INPUT, "field " CAV_FIELD_FBANK ": need [frames,bins]");
    }
    f->frames = t->shape[0], f->bins = (int)t->shape[1];
    if (t->dtype == CAV_F32)
        f->f32 = t->data;
    else
        f->f16 = t->data;
    return 1;
}

void cav_clip_fbank_rows(const cav_clip_fbank *f, int64_t rows, float *out) {
    int64_t n = rows * f->bins;
    if (f->f32)
        memcpy(out, f->f32, sizeof(float) * (size_t)n);
    else
        for (int64_t i = 0; i < n; i++) out[i] = cav_f16_to_f32(f->f16[i]);
}

int cav_clip_put_fbank(cav_record *r, int half, int64_t frames, int bins, const float *x) {
    int64_t shape[2] = {frames, bins}, n = frames * bins;
    cav_tensor *t = cav_record_add(r, CAV_FIELD_FBANK, half ? CAV_F16 : CAV_F32, 2, shape);
    if (!t) return -1;
    if (half) {
        uint16_t *h = t->data;
        for (int64_t i = 0; i < n; i++) h[i] = cav_f32_to_f16(x[i]);
    } else {
        memcpy(t->data, x, sizeof(float) * (size_t)n);
    }
    return 0;
}

int cav_clip_get_frames(const cav_record *r, cav_clip_frames *f, cav_err *err) {
    const cav_tensor *t = cav_record_find(r, CAV_FIELD_FRAMES);
    memset(f, 0, sizeof *f);
    if (!t) return 0;
    if (t->dtype != CAV_U8 || (t->ndim != 4 && t->ndim != 3) || t->shape[t->ndim - 1] != 3 ||
        t->shape[t->ndim - 2] > INT32_MAX || t->shape[t->ndim - 3] > INT32_MAX ||
        (t->ndim == 4 && t->shape[0] > INT32_MAX))
        return cav_fail(err, CAV_EXIT_INPUT,
                        "field " CAV_FIELD_FRAMES ": %s; need u8 [N,H,W,3] or [H,W,3] RGB",
                        dtype_or_what(t->dtype));
    f->single = t->ndim == 3;
    f->n = f->single ? 1 : (int)t->shape[0];
    f->h = (int)t->shape[t->ndim - 3], f->w = (int)t->shape[t->ndim - 2];
    f->rgb = t->data;
    return 1;
}

int cav_clip_jpeg_frame(const cav_record *r, int k, const uint8_t **data, size_t *len, cav_err *err) {
    const cav_tensor *t = cav_record_find(r, CAV_FIELD_FRAMES_JPEG);
    const cav_tensor *off = cav_record_find(r, CAV_FIELD_FRAMES_JPEG_OFFSETS);
    if (!t) return 0;
    if (t->dtype != CAV_U8 || t->ndim != 1 || !off || off->dtype != CAV_I64 || off->ndim != 1 ||
        off->shape[0] < 2 || off->shape[0] - 1 > INT32_MAX)
        return cav_fail(err, CAV_EXIT_INPUT,
                        "field " CAV_FIELD_FRAMES_JPEG ": need u8 [bytes] and " CAV_FIELD_FRAMES_JPEG_OFFSETS
                        " i64 [N+1]");
    const int64_t *o = off->data;
    int n = (int)(off->shape[0] - 1);
    if (k < 0 || k >= n)
        return cav_fail(err, CAV_EXIT_INPUT, "field " CAV_FIELD_FRAMES_JPEG ": no frame %d of %d", k, n);
    if (o[k] < 0 || o[k + 1] < o[k] || o[k + 1] > t->shape[0])
        return cav_fail(err, CAV_EXIT_INPUT,
                        "field " CAV_FIELD_FRAMES_JPEG_OFFSETS
                        ": frame %d spans [%lld,%lld) outside %lld bytes",
                        k, (long long)o[k], (long long)o[k + 1], (long long)t->shape[0]);
    *data = (const uint8_t *)t->data + o[k];
    *len = (size_t)(o[k + 1] - o[k]);
    return n;
}

int cav_clip_put_jpeg_frames(cav_record *r, int n, uint8_t *const *bytes, const size_t *lens) {
    int64_t *off = calloc((size_t)n + 1, sizeof *off);
    if (!off) return -1;
    for (int k = 0; k < n; k++) off[k + 1] = off[k] + (int64_t)lens[k];
    int64_t total = off[n], n1 = n + 1;
    cav_tensor *t = cav_record_add(r, CAV_FIELD_FRAMES_JPEG, CAV_U8, 1, &total);
    if (t)
        for (int k = 0; k < n; k++) memcpy((uint8_t *)t->data + off[k], bytes[k], lens[k]);
    int bad = !t || !cav_record_put(r, CAV_FIELD_FRAMES_JPEG_OFFSETS, CAV_I64, 1, &n1, off);
    free(off);
    return bad ? -1 : 0;
}

void cav_clip_drop_frames(cav_record *r) {
    cav_record_remove(r, CAV_FIELD_FRAMES);
    cav_record_remove(r, CAV_FIELD_FRAMES_JPEG);
    cav_record_remove(r, CAV_FIELD_FRAMES_JPEG_OFFSETS);
}

int cav_clip_get_labels(const cav_record *r, int k, const float **labels, int *count, cav_err *err) {
    const cav_tensor *t = cav_record_find(r, CAV_FIELD_LABELS);
    if (!t) return 0;
    if (t->dtype != CAV_F32 || t->ndim != 1 || t->shape[0] > INT32_MAX || (k > 0 && t->shape[0] != k)) {
        if (k > 0) return cav_fail(err, CAV_EXIT_INPUT, "field " CAV_FIELD_LABELS ": expected f32 [%d]", k);
        return cav_fail(err, CAV_EXIT_INPUT, "field " CAV_FIELD_LABELS ": expected f32 [K]");
    }
    *labels = t->data;
    if (count) *count = (int)t->shape[0];
    return 1;
}

int cav_clip_put_labels(cav_record *r, const float *labels, int k, float weight) {
    int64_t n = k;
    if (!cav_record_put(r, CAV_FIELD_LABELS, CAV_F32, 1, &n, labels)) return -1;
    return cav_record_put(r, CAV_FIELD_WEIGHT, CAV_F32, 0, NULL, &weight) ? 0 : -1;
}
