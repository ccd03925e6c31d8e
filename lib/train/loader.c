/* loader.c: see loader.h. Worker threads take sample jobs in order from a shared counter and write into
 * one of `prefetch` batch slots; the caller consumes slots in order. A job may only start when its batch's
 * slot has been released by the caller, so memory stays at prefetch batches. Shards without fbank but
 * with the waveform have their fbank computed per sample on the worker threads (one filterbank each). */
#include "loader.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "augment.h"
#include "cli.h"
#include "clip.h"
#include "fbank.h"
#include "jpeg.h"
#include "rng.h"
#include "shard.h"

#define REF_TRAIN_FRAMES 10 /* the reference draws randint(0, 9) whatever the clip holds */
#define REF_EVAL_FRAME 5
#define WAVE_RATE 16000 /* the reference's fbank rate; other rates are refused, not resampled */

void cav_loader_opts_default(cav_loader_opts *o, int train) {
    memset(o, 0, sizeof *o);
    o->train = train;
    o->batch = 48;
    o->drop_last = 1;
    cav_fbank_opts fo; /* the filterbank's own defaults (fbank(1)'s option table) */
    cav_fbank_opts_default(&fo);
    o->target_length = fo.target_length;
    o->mel_bins = fo.num_mel_bins;
    o->norm_mean = CAV_FBANK_MEAN;
    o->norm_std = CAV_FBANK_STD;
    o->noise = train;
    o->roll = train;
    o->frame = -1;
    o->img_size = 224;
    memcpy(o->img_mean, cav_imagenet_mean, sizeof o->img_mean);
    memcpy(o->img_std, cav_imagenet_std, sizeof o->img_std);
    o->need_audio = o->need_video = 1;
    o->threads = 2;
    o->prefetch = 2;
    o->world = 1;
}

typedef struct {
    int64_t batch; /* which batch the slot holds, -1 none */
    int done, n;
    int failed;
    cav_err err;
    float *audio, *video, *labels;
    int64_t *rows;
} slot;

struct cav_loader {
    cav_loader_opts o;
    int nshards;
    cav_shard **shards;
    int64_t *first_row; /* [nshards + 1] prefix sums */
    int64_t rows, batches;
    int64_t *order; /* [rows] epoch order of global rows */
    int epoch;
    int64_t lo, hi; /* this rank's slice [lo, hi) of a global batch */
    /* worker state */
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    pthread_t *tid;
    int nthreads, stop;
    int64_t next_job, end_job; /* jobs are (batch, i) flattened as batch * per + i */
    int64_t consumed;          /* batches released by the caller */
    int64_t cur;               /* batch the caller will get next */
    int held;                  /* the caller holds slot of batch cur-1 */
    slot *slots;
    uint8_t *from_wave; /* [nshards] audio computed from `wave` (the shard has no fbank) */
    uint8_t *has_wave;  /* [nshards] `wave` in every row (a mixup mixes waveforms when both shards have it) */
    uint8_t *jpeg;      /* [nshards] frames stored as frames_jpeg */
    double *cum_weight; /* [rows] running sum of the rows' `weight` (bal), else NULL */
};

static int64_t per_rank(const cav_loader *ld) {
    return ld->hi - ld->lo;
}

static int shard_of(const cav_loader *ld, int64_t row) {
    int lo = 0, hi = ld->nshards - 1; /* last shard whose first row <= row */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (ld->first_row[mid] <= row)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

static int field_shape(cav_shard *s, const char *name, cav_shard_field *f) {
    for (int i = 0; i < cav_shard_nfields(s); i++)
        if (cav_shard_field_info(s, i, f) == 0 && strcmp(f->name, name) == 0) return 1;
    return 0;
}

/* A row's sample rate (attribute sample_rate; absent: 16 kHz, the fbank tool's default) must be 16 kHz. */
static int check_rate(const char *path, cav_shard *s, int64_t row, cav_err *err) {
    const char *ra = cav_shard_row_attr(s, row, CAV_ATTR_SAMPLE_RATE);
    if (!ra) return 0;
    double rate;
    if (cav_clip_parse_rate(ra, &rate) || rate != WAVE_RATE)
        return cav_fail(err, 2,
                        "%s: row %lld (id '%s'): field " CAV_FIELD_WAVE ": " CAV_ATTR_SAMPLE_RATE
                        " %s Hz; the loader computes fbank from %d Hz "
                        "waveforms only (resample with av-extract, or store fbank with fbank(1))",
                        path, (long long)row, cav_shard_id(s, row), ra, WAVE_RATE);
    return 0;
}

static int mixup_on(const cav_loader_opts *o) {
    return o->train && o->mixup > 0;
}

/* A `wave` field a shard that also stores fbank may hold: a mixup uses it when it is in every row, of a
 * type the loader reads, at 16 kHz. */
static int usable_wave(cav_shard *s, int64_t rows) {
    cav_shard_field f;
    if (!field_shape(s, CAV_FIELD_WAVE, &f) || f.present != rows ||
        (f.dtype != CAV_I16 && f.dtype != CAV_F32))
        return 0;
    for (int64_t r = 0; r < rows; r++) {
        const char *ra = cav_shard_row_attr(s, r, CAV_ATTR_SAMPLE_RATE);
        double rate;
        if (ra && (cav_clip_parse_rate(ra, &rate) || rate != WAVE_RATE)) return 0;
    }
    return 1;
}

/* --bal: every row's scalar `weight` (shard-pack -j imports the reference's weight CSV), finite and >= 0,
 * summed into cum_weight from row first. */
static int read_weights(cav_loader *ld, int si, int64_t first, cav_err *err) {
    cav_shard *s = ld->shards[si];
    const char *path = cav_shard_path(s);
    int64_t rows = cav_shard_rows(s);
    cav_shard_field f;
    int64_t present = field_shape(s, CAV_FIELD_WEIGHT, &f) ? f.present : 0;
    if (present != rows)
        return cav_fail(err, 2,
                        "%s: field " CAV_FIELD_WEIGHT ": present in %lld of %lld rows; --bal needs every "
                        "row's sample weight (shard-pack -j imports the reference's weight CSV)",
                        path, (long long)present, (long long)rows);
    double run = first ? ld->cum_weight[first - 1] : 0;
    cav_record rec;
    cav_record_init(&rec);
    const char *names[1] = {CAV_FIELD_WEIGHT};
    for (int64_t r = 0; r < rows; r++) {
        if (cav_shard_read_fields(s, r, names, 1, &rec, err)) {
            cav_record_clear(&rec);
            return -1;
        }
        cav_tensor *t = cav_record_find(&rec, CAV_FIELD_WEIGHT);
        double w = t && t->dtype == CAV_F32 && t->nbytes == sizeof(float) ? ((const float *)t->data)[0] : NAN;
        if (!isfinite(w) || w < 0) {
            cav_fail(err, 2, "%s: row %lld (id '%s'): field " CAV_FIELD_WEIGHT ": %s", path, (long long)r,
                     cav_shard_id(s, r), isnan(w) ? "not one f32 value" : "negative or infinite");
            cav_record_clear(&rec);
            return -1;
        }
        ld->cum_weight[first + r] = run += w;
    }
    cav_record_clear(&rec);
    return 0;
}

/* Start-up validation: each shard must hold the fields training needs, in every row. */
static int validate_shard(cav_loader *ld, int si, cav_err *err) {
    cav_shard *s = ld->shards[si];
    const char *path = cav_shard_path(s);
    int64_t rows = cav_shard_rows(s);
    cav_shard_field f;
    if (ld->o.need_audio) {
        if (field_shape(s, CAV_FIELD_FBANK, &f)) {
            ld->has_wave[si] = mixup_on(&ld->o) && usable_wave(s, rows);
            if (f.present != rows)
                return cav_fail(err, 2, "%s: field " CAV_FIELD_FBANK ": present in %lld of %lld rows", path,
                                (long long)f.present, (long long)rows);
            if (f.dtype != CAV_F32 && f.dtype != CAV_F16)
                return cav_fail(err, 2, "%s: field " CAV_FIELD_FBANK ": type %s, expected f32 or f16", path,
                                cav_dtype_name(f.dtype));
            if (!f.ragged && (f.ndim != 2 || f.shape[1] != ld->o.mel_bins))
                return cav_fail(err, 2, "%s: field " CAV_FIELD_FBANK ": rows are not [T, %d]", path,
                                ld->o.mel_bins);
        } else if (field_shape(s, CAV_FIELD_WAVE, &f)) {
            if (f.present != rows)
                return cav_fail(err, 2,
                                "%s: field " CAV_FIELD_WAVE
                                ": present in %lld of %lld rows (and no field " CAV_FIELD_FBANK ")",
                                path, (long long)f.present, (long long)rows);
            if (f.dtype != CAV_I16 && f.dtype != CAV_F32)
                return cav_fail(err, 2, "%s: field " CAV_FIELD_WAVE ": type %s, expected i16 or f32", path,
                                cav_dtype_name(f.dtype));
            if (!f.ragged && (f.ndim < 1 || f.ndim > 2))
                return cav_fail(err, 2, "%s: field " CAV_FIELD_WAVE ": rows are not [n] or [channels, n]",
                                path);
            for (int64_t r = 0; r < rows; r++)
                if (check_rate(path, s, r, err)) return -1;
            ld->from_wave[si] = ld->has_wave[si] = 1;
        } else {
            return cav_fail(err, 2,
                            "%s: no field " CAV_FIELD_FBANK " or " CAV_FIELD_WAVE
                            " (av-extract writes " CAV_FIELD_WAVE "; fbank(1) adds " CAV_FIELD_FBANK ")",
                            path);
        }
    }
    if (ld->o.need_video) {
        const char *name = CAV_FIELD_FRAMES;
        if (field_shape(s, CAV_FIELD_FRAMES, &f)) {
            if (f.dtype != CAV_U8)
                return cav_fail(err, 2, "%s: field " CAV_FIELD_FRAMES ": type %s, expected u8", path,
                                cav_dtype_name(f.dtype));
        } else if (field_shape(s, CAV_FIELD_FRAMES_JPEG, &f)) {
            cav_shard_field fo;
            if (!field_shape(s, CAV_FIELD_FRAMES_JPEG_OFFSETS, &fo))
                return cav_fail(err, 2,
                                "%s: field " CAV_FIELD_FRAMES_JPEG " without " CAV_FIELD_FRAMES_JPEG_OFFSETS,
                                path);
            name = CAV_FIELD_FRAMES_JPEG;
            ld->jpeg[si] = 1;
        } else {
            return cav_fail(err, 2, "%s: no field " CAV_FIELD_FRAMES " or " CAV_FIELD_FRAMES_JPEG, path);
        }
        if (f.present != rows)
            return cav_fail(err, 2, "%s: field %s: present in %lld of %lld rows", path, name,
                            (long long)f.present, (long long)rows);
    }
    if (ld->o.label_dim > 0) {
        if (!field_shape(s, CAV_FIELD_LABELS, &f))
            return cav_fail(err, 2, "%s: no field " CAV_FIELD_LABELS, path);
        if (f.present != rows || f.ragged || f.ndim != 1 || f.shape[0] != ld->o.label_dim ||
            f.dtype != CAV_F32)
            return cav_fail(err, 2, "%s: field " CAV_FIELD_LABELS ": expected f32 [%d] in every row", path,
                            ld->o.label_dim);
    }
    return 0;
}

cav_loader *cav_loader_open(char *const *paths, int npaths, const cav_loader_opts *o, cav_err *err) {
    if (npaths <= 0) return cav_fail(err, 1, "no input shards"), NULL;
    if (o->batch <= 0 || o->world <= 0 || o->rank < 0 || o->rank >= o->world || o->batch % o->world)
        return cav_fail(err, 1, "batch %d cannot be split over %d ranks", o->batch, o->world), NULL;
    cav_loader *ld = calloc(1, sizeof *ld);
    if (!ld) return cav_fail(err, 3, "out of memory"), NULL;
    ld->o = *o;
    if (ld->o.threads < 1) ld->o.threads = 1;
    if (ld->o.prefetch < 1) ld->o.prefetch = 1;
    ld->shards = calloc((size_t)npaths, sizeof *ld->shards);
    ld->first_row = calloc((size_t)npaths + 1, sizeof *ld->first_row);
    ld->from_wave = calloc((size_t)npaths, 1);
    ld->has_wave = calloc((size_t)npaths, 1);
    ld->jpeg = calloc((size_t)npaths, 1);
    if (!ld->shards || !ld->first_row || !ld->from_wave || !ld->has_wave || !ld->jpeg) goto oom;
    for (int i = 0; i < npaths; i++) {
        ld->shards[i] = cav_shard_open(paths[i], err);
        if (!ld->shards[i]) goto fail;
        ld->nshards++;
        if (validate_shard(ld, i, err)) goto fail;
        ld->first_row[i + 1] = ld->first_row[i] + cav_shard_rows(ld->shards[i]);
    }
    ld->rows = ld->first_row[npaths];
    if (o->train && o->bal) {
        if (!(ld->cum_weight = malloc((size_t)(ld->rows ? ld->rows : 1) * sizeof *ld->cum_weight))) goto oom;
        for (int i = 0; i < npaths; i++)
            if (read_weights(ld, i, ld->first_row[i], err)) goto fail;
        if (!(ld->rows && ld->cum_weight[ld->rows - 1] > 0)) {
            cav_fail(err, 2, "%s: field " CAV_FIELD_WEIGHT ": every weight is 0; --bal cannot draw",
                     paths[0]);
            goto fail;
        }
    }
    if (mixup_on(o) && o->need_audio && o->rank == 0)
        for (int i = 0; i < npaths; i++)
            if (!ld->has_wave[i]) { /* once per run: the loader is opened once */
                cav_msg("warning: %s holds no " CAV_FIELD_WAVE
                        ": mixup mixes its fbank after cut/pad, before "
                        "SpecAugment; the reference mixes waveforms (cav-numerics(7) 1.7)",
                        paths[i]);
                break;
            }
    ld->batches = o->drop_last ? ld->rows / o->batch : (ld->rows + o->batch - 1) / o->batch;
    if (ld->batches == 0) {
        cav_fail(err, 2, "%lld rows make no batch of %d", (long long)ld->rows, o->batch);
        goto fail;
    }
    int64_t local = o->batch / o->world;
    ld->lo = (int64_t)o->rank * local;
    ld->hi = ld->lo + local;
    ld->order = malloc((size_t)ld->rows * sizeof *ld->order);
    ld->slots = calloc((size_t)ld->o.prefetch, sizeof *ld->slots);
    if (!ld->order || !ld->slots) goto oom;
    size_t A = (size_t)o->target_length * o->mel_bins, V = (size_t)3 * o->img_size * o->img_size;
    for (int i = 0; i < ld->o.prefetch; i++) {
        slot *s = &ld->slots[i];
        s->batch = -1;
        s->audio = o->need_audio ? malloc(local * A * sizeof(float)) : NULL;
        s->video = o->need_video ? malloc(local * V * sizeof(float)) : NULL;
        s->labels = o->label_dim ? malloc((size_t)local * o->label_dim * sizeof(float)) : NULL;
        s->rows = malloc((size_t)local * sizeof(int64_t));
        if ((o->need_audio && !s->audio) || (o->need_video && !s->video) || (o->label_dim && !s->labels) ||
            !s->rows)
            goto oom;
    }
    pthread_mutex_init(&ld->mu, NULL);
    pthread_cond_init(&ld->cv_work, NULL);
    pthread_cond_init(&ld->cv_done, NULL);
    return ld;
oom:
    cav_fail(err, 3, "out of memory allocating the loader");
fail:
    if (ld->slots) {
        for (int i = 0; i < ld->o.prefetch; i++) {
            free(ld->slots[i].audio), free(ld->slots[i].video), free(ld->slots[i].labels),
                free(ld->slots[i].rows);
        }
    }
    for (int i = 0; i < ld->nshards; i++) cav_shard_close(ld->shards[i]);
    free(ld->shards), free(ld->first_row), free(ld->order), free(ld->slots), free(ld->from_wave),
        free(ld->has_wave), free(ld->jpeg), free(ld->cum_weight);
    free(ld);
    return NULL;
}

int64_t cav_loader_rows(const cav_loader *ld) {
    return ld->rows;
}
int64_t cav_loader_batches(const cav_loader *ld) {
    return ld->batches;
}
const char *cav_loader_id(const cav_loader *ld, int64_t row) {
    if (row < 0 || row >= ld->rows) return NULL;
    int i = shard_of(ld, row);
    return cav_shard_id(ld->shards[i], row - ld->first_row[i]);
}

/* want: a frame asked for (a mixup partner's draw), or -1 for the sample's own rule. */
static int pick_frame(const cav_loader_opts *o, int epoch, int64_t pos, int want, int available) {
    int idx;
    if (want >= 0)
        idx = want;
    else if (o->frame >= 0)
        idx = o->frame;
    else if (o->train) {
        cav_rng r;
        cav_rng_seed(&r, o->seed, CAV_RNG_FRAME, (uint64_t)epoch, (uint64_t)pos);
        idx = (int)cav_rng_int(&r, 0, REF_TRAIN_FRAMES - 1);
    } else
        idx = REF_EVAL_FRAME;
    /* The reference falls back to lower indices when a frame is missing. */
    return idx < available ? idx : available - 1;
}

/* A record's `wave` as float samples [channels, n] (int16 / 32768, as torchaudio.load), its rate checked;
 * *buf is the caller's to free. NULL with err filled. */
static const float *wave_samples(const cav_record *rec, cav_clip_wave *wv, float **buf, int64_t *cap,
                                 cav_err *err) {
    double rate;
    cav_err e = {0};
    int has = cav_clip_get_wave(rec, wv, &e);
    if (has <= 0)
        return cav_fail(err, 2, "record %s: %s", rec->id, has < 0 ? e.msg : "no field " CAV_FIELD_WAVE), NULL;
    if (cav_clip_rate(rec, WAVE_RATE, &rate, &e))
        return cav_fail(err, 2, "record %s: %s", rec->id, e.msg), NULL;
    if (rate != WAVE_RATE)
        return cav_fail(err, 2,
                        "record %s: field " CAV_FIELD_WAVE ": " CAV_ATTR_SAMPLE_RATE " %s Hz, expected %d",
                        rec->id, cav_attrs_get(&rec->attrs, CAV_ATTR_SAMPLE_RATE), WAVE_RATE),
               NULL;
    const float *x = cav_fbank_wave_samples(wv->i16, wv->f32, wv->n * wv->channels, buf, cap, &e);
    if (!x) cav_fail(err, 3, "record %s: field " CAV_FIELD_WAVE ": %s", rec->id, e.msg);
    return x;
}

/* The fbank of samples x [channels, n] [T, F] into out (cut or zero-padded to T frames), as fbank(1)
 * computes it by default (cav-numerics(7) 1.3) at 16 kHz, clip mean subtracted; *fb is the caller's
 * filterbank, built on first use. Returns the frames kept (the natural count, at most T), or -1. */
static int wave_fbank(const cav_loader_opts *o, const char *id, const float *x, int channels, int64_t n,
                      cav_fbank **fb, float *out, cav_err *err) {
    if (!*fb) {
        cav_fbank_opts fo;
        cav_fbank_opts_default(&fo);
        fo.sample_rate = WAVE_RATE;
        fo.num_mel_bins = o->mel_bins;
        fo.target_length = o->target_length;
        if (!(*fb = cav_fbank_new(&fo, err))) return -1;
    }
    int64_t frames;
    cav_err e = {0};
    if (cav_fbank_compute(*fb, x, channels, n, out, &frames, &e))
        return cav_fail(err, e.code ? e.code : 2, "record %s: field " CAV_FIELD_WAVE ": %s", id, e.msg);
    return frames < o->target_length ? (int)frames : o->target_length;
}

/* torch's float32 waveform.mean(): one scalar over every channel */
static float clip_mean(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    return (float)(s / (double)n);
}

/* The reference's _wav2fbank with a partner (cav-numerics(7) 1.7): both clips minus their means, the
 * partner cut or zero-padded to the first's length (its channel c when the channel counts agree, else its
 * channel 0), mix = lambda w1 + (1 - lambda) w2 with both factors rounded to float32 as torch multiplies a
 * float32 tensor by a Python float; fbank's own clip-mean subtraction is the reference's mix - mix.mean().
 * out [T, F]; returns the frames kept, or -1. */
static int wave_mix_fbank(const cav_loader_opts *o, const cav_record *rec, const cav_record *partner,
                          double lambda, cav_fbank **fb, float *out, cav_err *err) {
    cav_clip_wave w1, w2;
    float *b1 = NULL, *b2 = NULL, *mix = NULL;
    int64_t c1 = 0, c2 = 0;
    int rc = -1;
    const float *x1 = wave_samples(rec, &w1, &b1, &c1, err);
    const float *x2 = x1 ? wave_samples(partner, &w2, &b2, &c2, err) : NULL;
    if (!x2) goto out;
    int C = w1.channels;
    int64_t n = w1.n;
    if (!(mix = malloc((size_t)C * n * sizeof *mix))) {
        cav_fail(err, 3, "out of memory");
        goto out;
    }
    float m1 = clip_mean(x1, (int64_t)C * n), m2 = clip_mean(x2, (int64_t)w2.channels * w2.n);
    float a = (float)lambda, b = (float)(1.0 - lambda);
    for (int c = 0; c < C; c++) {
        const float *p1 = x1 + (size_t)c * n, *p2 = x2 + (size_t)(w2.channels == C ? c : 0) * w2.n;
        for (int64_t i = 0; i < n; i++) {
            float v1 = p1[i] - m1, v2 = i < w2.n ? p2[i] - m2 : 0.0f;
            mix[(size_t)c * n + i] = a * v1 + b * v2; /* two roundings: -std=c11 never contracts */
        }
    }
    rc = wave_fbank(o, rec->id, mix, C, n, fb, out, err);
out:
    free(b1), free(b2), free(mix);
    return rc;
}

/* A record's raw log-mel [T, F] into out, cut or zero-padded: the stored `fbank`, or the fbank of `wave`.
 * Returns the frames kept, or -1. */
static int raw_fbank(const cav_loader_opts *o, const cav_record *rec, cav_fbank **fb, float *out,
                     cav_err *err) {
    int F = o->mel_bins, T = o->target_length, keep;
    cav_clip_fbank fbk;
    cav_err e = {0};
    int has = cav_clip_get_fbank(rec, o->mel_bins, &fbk, &e);
    if (has < 0) return cav_fail(err, 2, "record %s: %s", rec->id, e.msg);
    if (has) {
        keep = fbk.frames < T ? (int)fbk.frames : T;
        /* Fit first (float16 rows widen on the way), so SpecAugment runs on [T, F] raw log-mel. */
        if (fbk.f32)
            cav_fbank_fit(fbk.f32, keep, F, T, out);
        else {
            cav_clip_fbank_rows(&fbk, keep, out);
            memset(out + (size_t)keep * F, 0, (size_t)(T - keep) * F * sizeof *out);
        }
    } else if (cav_record_find(rec, CAV_FIELD_WAVE)) {
        cav_clip_wave wv;
        float *buf = NULL;
        int64_t cap = 0;
        const float *x = wave_samples(rec, &wv, &buf, &cap, err);
        keep = x ? wave_fbank(o, rec->id, x, wv.channels, wv.n, fb, out, err) : -1;
        free(buf);
        if (keep < 0) return -1;
    } else {
        return cav_fail(err, 2, "record %s: no field " CAV_FIELD_FBANK " or " CAV_FIELD_WAVE,
                        rec->id ? rec->id : "?");
    }
    for (int64_t i = 0; i < (int64_t)keep * F; i++)
        if (!isfinite(out[i]))
            return cav_fail(err, 2, "record %s: field " CAV_FIELD_FBANK ": non-finite value at frame %lld",
                            rec->id, (long long)(i / F));
    return keep;
}

/* out = lambda out + (1 - lambda) other, elementwise in float32 as torch does (mixed images, mixed fbanks).
 */
static void mix_into(float *out, const float *other, size_t n, double lambda) {
    float a = (float)lambda, b = (float)(1.0 - lambda);
    for (size_t i = 0; i < n; i++) out[i] = a * out[i] + b * other[i];
}

/* The audio of a sample [T, F] (cav-numerics(7) 1.3, 1.4, 1.7). With a partner: the waveforms mixed
 * before the fbank when both records hold `wave`, else (shards of fbank only) the two raw log-mel arrays
 * mixed after cut/pad, before SpecAugment, so that padding and masks act as on a mixed waveform's fbank.
 * Then SpecAugment, normalisation, noise and roll on the mixed fbank, as the reference's __getitem__. */
static int sample_audio(const cav_loader_opts *o, const cav_record *rec, const cav_record *partner,
                        double lambda, int epoch, int64_t pos, float *out, cav_fbank **fb, cav_err *err) {
    int F = o->mel_bins, T = o->target_length;
    if (partner && cav_record_find(rec, CAV_FIELD_WAVE) && cav_record_find(partner, CAV_FIELD_WAVE)) {
        if (wave_mix_fbank(o, rec, partner, lambda, fb, out, err) < 0) return -1;
    } else {
        if (raw_fbank(o, rec, fb, out, err) < 0) return -1;
        if (partner) {
            float *tmp = malloc((size_t)T * F * sizeof *tmp);
            if (!tmp) return cav_fail(err, 3, "out of memory");
            int rc = raw_fbank(o, partner, fb, tmp, err);
            if (rc >= 0) mix_into(out, tmp, (size_t)T * F, lambda);
            free(tmp);
            if (rc < 0) return -1;
        }
    }
    if (o->train && (o->freqm > 0 || o->timem > 0)) {
        cav_rng r;
        cav_rng_seed(&r, o->seed, CAV_RNG_SPECAUG, (uint64_t)epoch, (uint64_t)pos);
        cav_specaug_apply(out, T, F, cav_specaug_draw(&r, T, F, o->freqm, o->timem));
    }
    if (o->norm_std != 0) cav_fbank_normalize(out, (int64_t)T * F, o->norm_mean, o->norm_std);
    if (o->train && (o->noise || o->roll)) {
        cav_rng r;
        cav_rng_seed(&r, o->seed, CAV_RNG_NOISE, (uint64_t)epoch, (uint64_t)pos);
        if (o->noise) cav_noise_apply(out, T, F, cav_noise_scale_draw(&r), &r);
        if (o->roll) {
            int shift = cav_roll_draw(&r, T);
            float *tmp = malloc((size_t)T * F * sizeof *tmp);
            if (!tmp) return cav_fail(err, 3, "out of memory");
            cav_roll_time(out, tmp, T, F, shift);
            memcpy(out, tmp, (size_t)T * F * sizeof *tmp);
            free(tmp);
        }
    }
    return 0;
}

/* A record's frame, normalised, into out [3, S, S]; want as pick_frame. */
static int record_image(const cav_loader_opts *o, const cav_record *rec, int epoch, int64_t pos, int want,
                        float *out, cav_err *err) {
    int S = o->img_size;
    cav_clip_frames fr;
    cav_err jerr;
    int has = cav_clip_get_frames(rec, &fr, &jerr);
    if (has) {
        if (has < 0 || fr.single || fr.n < 1 || fr.h != S || fr.w != S)
            return cav_fail(err, 2, "record %s: field " CAV_FIELD_FRAMES ": expected u8 [F, %d, %d, 3]",
                            rec->id, S, S);
        int idx = pick_frame(o, epoch, pos, want, fr.n);
        cav_image_normalize(fr.rgb + (size_t)idx * S * S * 3, S, S, o->img_mean, o->img_std, out);
        return 0;
    }
    const uint8_t *jpg;
    size_t len;
    int nframes = cav_clip_jpeg_frame(rec, 0, &jpg, &len, &jerr);
    if (nframes == 0)
        return cav_fail(err, 2, "record %s: no field " CAV_FIELD_FRAMES " or " CAV_FIELD_FRAMES_JPEG,
                        rec->id);
    int idx = nframes > 0 ? pick_frame(o, epoch, pos, want, nframes) : 0;
    if (nframes < 0 || cav_clip_jpeg_frame(rec, idx, &jpg, &len, &jerr) < 0)
        return cav_fail(err, 2, "record %s: %s", rec->id, jerr.msg);
    uint8_t *rgb = malloc((size_t)S * S * 3);
    if (!rgb) return cav_fail(err, 3, "out of memory");
    int w, h;
    if (cav_jpeg_decode(jpg, len, rgb, (size_t)S * S * 3, &w, &h, &jerr)) {
        free(rgb);
        return cav_fail(err, 2, "record %s: field " CAV_FIELD_FRAMES_JPEG ": frame %d: %s", rec->id, idx,
                        jerr.msg);
    }
    if (w != S || h != S) {
        free(rgb);
        return cav_fail(err, 2,
                        "record %s: field " CAV_FIELD_FRAMES_JPEG ": frame %d is %dx%d, expected %dx%d",
                        rec->id, idx, w, h, S, S);
    }
    cav_image_normalize(rgb, S, S, o->img_mean, o->img_std, out);
    free(rgb);
    return 0;
}

/* The frame of a sample [3, S, S]; with a partner, lambda img1 + (1 - lambda) img2 after normalisation,
 * each clip with its own frame (cav-numerics(7) 1.5-1.7). */
static int sample_video(const cav_loader_opts *o, const cav_record *rec, const cav_record *partner,
                        const cav_loader_mix *mix, int epoch, int64_t pos, float *out, cav_err *err) {
    if (record_image(o, rec, epoch, pos, -1, out, err)) return -1;
    if (!partner) return 0;
    size_t V = (size_t)3 * o->img_size * o->img_size;
    float *tmp = malloc(V * sizeof *tmp);
    if (!tmp) return cav_fail(err, 3, "out of memory");
    int rc = record_image(o, partner, epoch, pos, mix->partner_frame, tmp, err);
    if (!rc) mix_into(out, tmp, V, mix->lambda);
    free(tmp);
    return rc;
}

static int record_labels(const cav_loader_opts *o, const cav_record *rec, const float **lab, cav_err *err) {
    if (cav_clip_get_labels(rec, o->label_dim, lab, NULL, NULL) != 1)
        return cav_fail(err, 2, "record %s: field " CAV_FIELD_LABELS ": expected f32 [%d]", rec->id,
                        o->label_dim);
    return 0;
}

/* Training targets [K] as the reference's numpy vector, in float64 then float32 (cav-numerics(7) 1.7):
 * eps/K everywhere; without a partner the positives (stored value > 0.5) are set to 1 - eps; with one,
 * lambda(1 - eps) is added for the first clip's positives, then (1 - lambda)(1 - eps) for the partner's. */
static void smooth_targets(const float *l1, const float *l2, double lambda, int K, double eps, float *out) {
    for (int k = 0; k < K; k++) {
        double v = eps / K;
        if (!l2) {
            if (l1[k] > 0.5f) v = 1.0 - eps;
        } else {
            if (l1[k] > 0.5f) v += lambda * (1.0 - eps);
            if (l2[k] > 0.5f) v += (1.0 - lambda) * (1.0 - eps);
        }
        out[k] = (float)v;
    }
}

static int sample_one(const cav_loader_opts *o, const cav_record *rec, const cav_record *partner,
                      const cav_loader_mix *mix, int epoch, int64_t pos, float *audio, float *video,
                      float *labels, cav_fbank **fb, cav_err *err) {
    if (partner && !mix) partner = NULL;
    double lambda = partner ? mix->lambda : 1.0;
    if (o->need_audio && sample_audio(o, rec, partner, lambda, epoch, pos, audio, fb, err)) return -1;
    if (o->need_video && sample_video(o, rec, partner, mix, epoch, pos, video, err)) return -1;
    if (o->label_dim > 0) {
        const float *l1, *l2 = NULL;
        if (record_labels(o, rec, &l1, err) || (partner && record_labels(o, partner, &l2, err))) return -1;
        if (o->train)
            smooth_targets(l1, l2, lambda, o->label_dim, o->label_smooth, labels);
        else
            memcpy(labels, l1, (size_t)o->label_dim * sizeof(float)); /* evaluation: the hard labels */
    }
    return 0;
}

int cav_loader_mix_draw(const cav_loader_opts *o, int64_t rows, int epoch, int64_t pos, int64_t *partner,
                        cav_loader_mix *mix) {
    if (!o->train || o->mixup <= 0 || rows <= 0) return 0;
    cav_rng r;
    cav_rng_seed(&r, o->seed, CAV_RNG_MIXUP, (uint64_t)epoch, (uint64_t)pos);
    if (cav_rng_double(&r) >= o->mixup) return 0; /* the reference's random.random() < mixup */
    *partner = cav_rng_int(&r, 0, rows - 1);
    mix->lambda = cav_rng_beta(&r, 10, 10);
    mix->partner_frame = o->frame >= 0 ? o->frame : (int)cav_rng_int(&r, 0, REF_TRAIN_FRAMES - 1);
    return 1;
}

int cav_loader_sample_mix(const cav_loader_opts *o, const cav_record *rec, const cav_record *partner,
                          const cav_loader_mix *mix, int epoch, int64_t pos, float *audio, float *video,
                          float *labels, cav_err *err) {
    cav_fbank *fb = NULL;
    int rc = sample_one(o, rec, partner, mix, epoch, pos, audio, video, labels, &fb, err);
    cav_fbank_free(fb);
    return rc;
}

int cav_loader_sample(const cav_loader_opts *o, const cav_record *rec, int epoch, int64_t pos, float *audio,
                      float *video, float *labels, cav_err *err) {
    return cav_loader_sample_mix(o, rec, NULL, NULL, epoch, pos, audio, video, labels, err);
}

/* Row `row`'s fields the sample needs into rec: the audio as `wave` (wave = 1: a waveform mixup) or as the
 * shard stores it (fbank, else wave), the frames, the labels. On failure err names the field. */
static int read_row(cav_loader *ld, int64_t row, int wave, cav_record *rec, cav_err *e) {
    int si = shard_of(ld, row);
    int64_t srow = row - ld->first_row[si];
    const char *names[4];
    int nn = 0;
    if (ld->o.need_audio) names[nn++] = wave || ld->from_wave[si] ? CAV_FIELD_WAVE : CAV_FIELD_FBANK;
    if (ld->o.need_video) {
        names[nn++] = ld->jpeg[si] ? CAV_FIELD_FRAMES_JPEG : CAV_FIELD_FRAMES;
        if (ld->jpeg[si]) names[nn++] = CAV_FIELD_FRAMES_JPEG_OFFSETS;
    }
    if (ld->o.label_dim > 0) names[nn++] = CAV_FIELD_LABELS;
    return cav_shard_read_fields(ld->shards[si], srow, names, nn, rec, e) ? -1 : 0;
}

/* Reads and transforms one sample of job j (and its mixup partner's row) into its slot. */
static void run_job(cav_loader *ld, int64_t j, cav_fbank **fb) {
    int64_t per = per_rank(ld), b = j / per, i = j % per;
    slot *s = &ld->slots[b % ld->o.prefetch];
    int64_t pos = b * ld->o.batch + ld->lo + i; /* position in the epoch's global order */
    int64_t row = ld->order[pos], prow = -1;
    cav_loader_mix mix;
    int mixed = cav_loader_mix_draw(&ld->o, ld->rows, ld->epoch, pos, &prow, &mix);
    int si = shard_of(ld, row), sp = mixed ? shard_of(ld, prow) : si;
    int wave = mixed && ld->has_wave[si] && ld->has_wave[sp];
    cav_record rec, prec;
    cav_record_init(&rec);
    cav_record_init(&prec);
    cav_err e = {0, ""};
    int rc = read_row(ld, row, wave, &rec, &e);
    if (!rc && mixed) rc = read_row(ld, prow, wave, &prec, &e);
    size_t A = (size_t)ld->o.target_length * ld->o.mel_bins, V = (size_t)3 * ld->o.img_size * ld->o.img_size;
    if (rc == 0)
        rc = sample_one(&ld->o, &rec, mixed ? &prec : NULL, &mix, ld->epoch, pos,
                        s->audio ? s->audio + i * A : NULL, s->video ? s->video + i * V : NULL,
                        s->labels ? s->labels + i * ld->o.label_dim : NULL, fb, &e);
    cav_record_clear(&rec);
    cav_record_clear(&prec);
    s->rows[i] = row;
    pthread_mutex_lock(&ld->mu);
    if (rc && !s->failed) {
        s->failed = 1;
        const char *path = cav_shard_path(ld->shards[si]);
        long long srow = (long long)(row - ld->first_row[si]);
        if (mixed)
            cav_fail(&s->err, e.code ? e.code : 2, "%s row %lld (mixed with %s row %lld): %s", path, srow,
                     cav_shard_path(ld->shards[sp]), (long long)(prow - ld->first_row[sp]), e.msg);
        else
            cav_fail(&s->err, e.code ? e.code : 2, "%s row %lld: %s", path, srow, e.msg);
    }
    s->done++;
    if (s->done == s->n) pthread_cond_broadcast(&ld->cv_done);
    pthread_mutex_unlock(&ld->mu);
}

static void *worker(void *arg) {
    cav_loader *ld = arg;
    int64_t per = per_rank(ld);
    cav_fbank *fb = NULL; /* this thread's filterbank, for shards that store waveforms */
    pthread_mutex_lock(&ld->mu);
    for (;;) {
        while (!ld->stop && ld->next_job < ld->end_job && ld->next_job / per >= ld->consumed + ld->o.prefetch)
            pthread_cond_wait(&ld->cv_work, &ld->mu);
        if (ld->stop || ld->next_job >= ld->end_job) break;
        int64_t j = ld->next_job++;
        int64_t b = j / per;
        slot *s = &ld->slots[b % ld->o.prefetch];
        if (s->batch != b) { /* first job of this batch claims the slot */
            s->batch = b;
            s->done = s->failed = 0;
            int64_t start = b * ld->o.batch, avail = ld->rows - start - ld->lo;
            s->n = (int)(avail < per ? (avail > 0 ? avail : 0) : per);
            if (s->n == 0) pthread_cond_broadcast(&ld->cv_done); /* a rank's empty slice: complete at once */
        }
        if (j % per >= s->n) { /* beyond the partial last batch */
            continue;
        }
        pthread_mutex_unlock(&ld->mu);
        run_job(ld, j, &fb);
        pthread_mutex_lock(&ld->mu);
    }
    pthread_mutex_unlock(&ld->mu);
    cav_fbank_free(fb);
    return NULL;
}

static void stop_workers(cav_loader *ld) {
    if (!ld->tid) return;
    pthread_mutex_lock(&ld->mu);
    ld->stop = 1;
    pthread_cond_broadcast(&ld->cv_work);
    pthread_mutex_unlock(&ld->mu);
    for (int i = 0; i < ld->nthreads; i++) pthread_join(ld->tid[i], NULL);
    free(ld->tid);
    ld->tid = NULL;
    ld->nthreads = 0;
}

/* --bal (cav-numerics(7) 1.8): row i with probability weight_i / sum, as torch.multinomial with
 * replacement: the first row whose running sum exceeds u * sum, u uniform in [0, 1). A zero weight is never
 * drawn. */
static int64_t weighted_row(const cav_loader *ld, double u) {
    const double *c = ld->cum_weight;
    double x = u * c[ld->rows - 1];
    int64_t lo = 0, hi = ld->rows - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (c[mid] > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    while (lo > 0 && c[lo] == c[lo - 1]) lo--; /* x rounded up to the sum: the last row that has weight */
    return lo;
}

int cav_loader_begin(cav_loader *ld, int epoch, int64_t start_batch, cav_err *err) {
    stop_workers(ld);
    if (start_batch < 0 || start_batch > ld->batches)
        return cav_fail(err, 2, "resume position: batch %lld of an epoch of %lld", (long long)start_batch,
                        (long long)ld->batches);
    ld->epoch = epoch;
    if (ld->o.train && ld->cum_weight) {
        cav_rng r; /* the epoch's order stream, as the shuffle: the same on every rank */
        cav_rng_seed(&r, ld->o.seed, CAV_RNG_SHUFFLE, (uint64_t)epoch, 0);
        for (int64_t i = 0; i < ld->rows; i++) ld->order[i] = weighted_row(ld, cav_rng_double(&r));
    } else if (ld->o.train) {
        cav_rng r;
        cav_rng_seed(&r, ld->o.seed, CAV_RNG_SHUFFLE, (uint64_t)epoch, 0);
        cav_rng_permutation(&r, ld->order, ld->rows);
    } else {
        for (int64_t i = 0; i < ld->rows; i++) ld->order[i] = i;
    }
    int64_t per = per_rank(ld);
    ld->stop = 0;
    ld->next_job = start_batch * per;
    ld->end_job = ld->batches * per;
    ld->consumed = ld->cur = start_batch;
    ld->held = 0;
    for (int i = 0; i < ld->o.prefetch; i++) ld->slots[i].batch = -1;
    ld->tid = calloc((size_t)ld->o.threads, sizeof *ld->tid);
    if (!ld->tid) return cav_fail(err, 3, "out of memory");
    for (int i = 0; i < ld->o.threads; i++) {
        if (pthread_create(&ld->tid[i], NULL, worker, ld)) {
            ld->nthreads = i;
            stop_workers(ld);
            return cav_fail(err, 3, "cannot start loader threads");
        }
        ld->nthreads = i + 1;
    }
    return 0;
}

int cav_loader_next(cav_loader *ld, cav_batch *b, cav_err *err) {
    pthread_mutex_lock(&ld->mu);
    if (ld->held) { /* release the batch handed out last time */
        ld->consumed++;
        ld->held = 0;
        pthread_cond_broadcast(&ld->cv_work);
    }
    if (ld->cur >= ld->batches) {
        pthread_mutex_unlock(&ld->mu);
        return 0;
    }
    slot *s = &ld->slots[ld->cur % ld->o.prefetch];
    double t0 = cav_now();
    while (!(s->batch == ld->cur && s->done == s->n)) pthread_cond_wait(&ld->cv_done, &ld->mu);
    double waited = cav_now() - t0;
    if (s->failed) {
        *err = s->err;
        pthread_mutex_unlock(&ld->mu);
        return -1;
    }
    b->n = s->n;
    b->audio = s->audio;
    b->video = s->video;
    b->labels = s->labels;
    b->rows = s->rows;
    b->wait_s = waited;
    ld->cur++;
    ld->held = 1;
    pthread_mutex_unlock(&ld->mu);
    return 1;
}

void cav_loader_close(cav_loader *ld) {
    if (!ld) return;
    stop_workers(ld);
    for (int i = 0; i < ld->o.prefetch; i++) {
        free(ld->slots[i].audio), free(ld->slots[i].video), free(ld->slots[i].labels),
            free(ld->slots[i].rows);
    }
    for (int i = 0; i < ld->nshards; i++) cav_shard_close(ld->shards[i]);
    pthread_mutex_destroy(&ld->mu);
    pthread_cond_destroy(&ld->cv_work);
    pthread_cond_destroy(&ld->cv_done);
    free(ld->shards), free(ld->first_row), free(ld->order), free(ld->slots), free(ld->from_wave),
        free(ld->has_wave), free(ld->jpeg), free(ld->cum_weight);
    free(ld);
}
