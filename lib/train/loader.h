/* loader.h: the training/evaluation data loader shared by cav-pretrain and cav-finetune. It reads rows from
 * one or many shards, shuffles with a seed per epoch, and assembles batches on background threads with
 * exactly the reference's per-sample transforms (cav-numerics(7) 1.4-1.6): frame choice (random 0-9 in
 * training, frame 5 in evaluation), cut/pad to the target length, SpecAugment, normalisation, noise and
 * circular time roll for audio; /255 and ImageNet normalisation for the frame. Audio is the stored `fbank`,
 * or, for shards without it, the fbank of the stored 16 kHz `wave` computed on the worker threads exactly as
 * the fbank tool computes it by default (cav_fbank with the reference's options).
 *
 * In training it also builds the targets (cav-numerics(7) 1.7): label smoothing, and mixup with a partner
 * row drawn uniformly (waveforms mixed before the fbank when both shards hold `wave`, else the fbanks after
 * cut/pad; frames mixed after normalisation; the smoothed labels mixed as the reference's mixup path does);
 * evaluation loaders give the stored hard labels. The epoch's order is a shuffle, or with bal draws with
 * replacement weighted by the shards' `weight` (the reference's WeightedRandomSampler, num_samples = rows).
 *
 * Every random draw of a sample is keyed by (seed, epoch, position in the epoch), so batches do not depend
 * on thread timing and a run resumed at batch k of an epoch sees exactly the batches it would have seen.
 * Data parallelism: with world > 1, each rank assembles its own contiguous slice of every global batch. */
#ifndef CAV_LOADER_H
#define CAV_LOADER_H

#include <stdint.h>

#include "record.h"

typedef struct {
    int train;         /* 1: shuffle, random frame, noise/roll/SpecAugment as configured */
    int batch;         /* global batch size (all ranks together) */
    int drop_last;     /* drop the last partial batch (the reference does, in training and validation) */
    int target_length; /* fbank frames, 1024 */
    int mel_bins;      /* 128 */
    float norm_mean, norm_std; /* -5.081, 4.4849; norm_std 0 disables normalisation */
    int freqm, timem;          /* SpecAugment widths; 0 disables (pretraining: 0/0) */
    int noise;                 /* add U*U/10 noise (training only) */
    int roll;                  /* circular time roll (training only) */
    int frame;                 /* -1: random in training, 5 in evaluation; else this frame */
    int img_size;              /* 224 */
    float img_mean[3], img_std[3];
    int label_dim; /* 0: no labels needed; else `labels` [label_dim] must be present */
    /* Training only (train = 1; evaluation gives the stored hard labels, in shard order): */
    double label_smooth; /* targets eps/K, positives 1 - eps (with mixup: += lambda(1 - eps), ...) */
    double mixup;        /* probability that a sample is mixed with a partner row */
    int bal;             /* rows drawn with replacement, weighted by the field `weight` (else a shuffle) */
    int need_audio, need_video;
    uint64_t seed;
    int threads;     /* decoding threads (>= 1) */
    int prefetch;    /* batches prepared ahead (>= 1) */
    int rank, world; /* data parallelism: this process's slice of each global batch */
} cav_loader_opts;

void cav_loader_opts_default(cav_loader_opts *o, int train);

typedef struct {
    int n;         /* samples in this rank's slice */
    float *audio;  /* [n, target_length, mel_bins] */
    float *video;  /* [n, 3, img_size, img_size] */
    float *labels; /* [n, label_dim] or NULL */
    int64_t *rows; /* [n] global row index of each sample (shard order) */
    double wait_s; /* time the caller waited for this batch */
} cav_batch;

typedef struct cav_loader cav_loader;

/* Opens and validates every shard (schema, row counts, required fields and their shapes). */
cav_loader *cav_loader_open(char *const *paths, int npaths, const cav_loader_opts *o, cav_err *err);
void cav_loader_close(cav_loader *ld);
int64_t cav_loader_rows(const cav_loader *ld);
int64_t cav_loader_batches(const cav_loader *ld); /* per epoch */
/* The record id of a global row (cav_batch.rows), or NULL when out of range. */
const char *cav_loader_id(const cav_loader *ld, int64_t row);

/* Starts epoch (1-indexed) at batch start_batch (0 for a fresh epoch; > 0 when resuming). */
int cav_loader_begin(cav_loader *ld, int epoch, int64_t start_batch, cav_err *err);
/* 1: *b holds the next batch (valid until the next call); 0: epoch finished; -1: a sample failed (err names
 * the shard, the row and the field). */
int cav_loader_next(cav_loader *ld, cav_batch *b, cav_err *err);

/* One sample, synchronously (no threads): the transform pipeline for a record already read; exposed for
 * tests and tools. key_epoch/key_pos select the random draws. */
int cav_loader_sample(const cav_loader_opts *o, const cav_record *rec, int epoch, int64_t pos, float *audio,
                      float *video, float *labels, cav_err *err);

/* A sample's mixup: the first clip's share lambda (~ Beta(10, 10)) and the partner's frame (0-9, the
 * reference's randint; a missing frame falls back to the last one present, as for the first clip). */
typedef struct {
    double lambda;
    int partner_frame;
} cav_loader_mix;
/* The mixup draws of the sample at (epoch, pos) of a loader over `rows` rows: 1 with *partner (a row,
 * uniform over all rows, possibly itself) and *mix set when it is mixed; 0 when not (evaluation, mixup 0,
 * or the draw said no). The loader's own batches use exactly these. */
int cav_loader_mix_draw(const cav_loader_opts *o, int64_t rows, int epoch, int64_t pos, int64_t *partner,
                        cav_loader_mix *mix);
/* cav_loader_sample mixed with partner (a record with the same fields) as mix says; partner NULL: not
 * mixed. The waveforms are mixed when both records hold `wave`, else the fbanks (each the stored one, or
 * computed from `wave`). */
int cav_loader_sample_mix(const cav_loader_opts *o, const cav_record *rec, const cav_record *partner,
                          const cav_loader_mix *mix, int epoch, int64_t pos, float *audio, float *video,
                          float *labels, cav_err *err);

#endif
