/* finetune.c: see finetune.h. One step: the rank's slice of the global batch runs through the model as one
 * batch; the reference computes its loss on the whole gathered batch (DataParallel), so each rank's mean
 * loss and gradients are weighted by its share of the batch and summed over ranks, and every rank takes
 * the same Adam step. The model has no randomness of its own (no masking, no dropout); the loader's draws
 * are keyed by (seed, epoch, position), so a run resumed from a checkpoint repeats the uninterrupted run. */
#include "finetune.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "cli.h"
#include "json.h"
#include "metrics.h"
#include "pretrain.h"
#include "trainio.h"

void cav_finetune_opts_default(cav_finetune_opts *o) {
    memset(o, 0, sizeof *o);
    o->cfg = cav_config_default(CAV_TASK_FINETUNE);
    o->batch = 36;
    o->epochs = 15;
    o->sched = (cav_schedule){5e-5, 5, 1, 0.5, 0};
    o->head_lr = 100;
    o->weight_decay = 5e-7;
    o->beta1 = 0.95;
    o->beta2 = 0.999;
    o->adam_eps = 1e-8;
    o->label_smooth = 0.1;
    o->seed = 1;
    cav_loader_opts_default(&o->data, 1);
    o->data.freqm = 48;
    o->data.timem = 192;
    o->log_every = 100;
    o->keep = 2;
}

void cav_smooth_labels(const float *labels, float *out, int64_t n, int k, double eps) {
    /* the reference starts from eps/K and assigns 1 - eps to the positives (not +=; SPEC 1.7) */
    float lo = (float)(eps / k), hi = (float)(1.0 - eps);
    for (int64_t i = 0; i < n * k; i++) out[i] = labels[i] > 0.5f ? hi : lo;
}

typedef struct {
    int epoch;       /* epoch to run next (1-indexed) */
    int64_t batch;   /* batch within it */
    int64_t step;    /* global steps done */
    double loss;     /* the epoch's summed step losses so far */
    int64_t n;       /* and their count */
    double best;     /* best evaluation metric so far (mAP or acc) */
    int best_epoch;
} position;

static int save_checkpoint(const cav_finetune_opts *o, cav_model *m, const position *pos, const char *cfgjson,
                           cav_err *err) {
    char state[1024];
    snprintf(state, sizeof state,
             "{\"epoch\":%d,\"batch\":%lld,\"step\":%lld,\"adam_t\":%d,\"seed\":%llu,\"train_loss\":%.17g,"
             "\"train_n\":%lld,\"best\":%.17g,\"best_epoch\":%d}\n",
             pos->epoch, (long long)pos->batch, (long long)pos->step, m->adam_t, (unsigned long long)o->seed,
             pos->loss, (long long)pos->n, pos->best, pos->best_epoch);
    return cav_train_save_checkpoint(m, o->out_dir, pos->epoch, pos->step, cfgjson, state, o->keep, err);
}

static int load_checkpoint(const cav_finetune_opts *o, cav_model *m, const char *dir, position *pos, cav_err *err) {
    cav_json *j = cav_train_load_checkpoint(m, dir, err);
    if (!j) return -1;
    pos->epoch = (int)cav_json_get_number(j, "epoch", 1);
    pos->batch = (int64_t)cav_json_get_number(j, "batch", 0);
    pos->step = (int64_t)cav_json_get_number(j, "step", 0);
    m->adam_t = (int)cav_json_get_number(j, "adam_t", 0);
    pos->loss = cav_json_get_number(j, "train_loss", 0);
    pos->n = (int64_t)cav_json_get_number(j, "train_n", 0);
    pos->best = cav_json_get_number(j, "best", -1);
    pos->best_epoch = (int)cav_json_get_number(j, "best_epoch", 0);
    uint64_t seed = (uint64_t)cav_json_get_number(j, "seed", 0);
    cav_json_free(j);
    if (seed != o->seed)
        return cav_fail(err, 1, "%s: the run used --seed %llu; resume with the same seed", dir, (unsigned long long)seed);
    return 0;
}

/* The pretrained start point (SPEC 2.12, 3.3): every encoder parameter by name, as load_state_dict with
 * strict=False loads a CAVMAE checkpoint into CAVMAEFT; the decoder's names are ignored, the head keeps its
 * fresh initialisation unless the file has one of the same shape (a fine-tuned checkpoint). Unlike
 * strict=False, an encoder parameter missing from the file is refused: it would silently stay random. */
static int load_init(cav_model *m, const char *path, cav_err *err) {
    int nl = 0, nhead = 0, nhead_file = 0;
    for (int i = 0; i < m->ntable; i++) nhead += m->table[i].head;
    /* mark the head so that we can tell whether the file supplied it */
    float *mark = malloc(m->nparams * sizeof *mark), *now = malloc(m->nparams * sizeof *now);
    if (!mark || !now) return free(mark), free(now), cav_fail(err, 3, "out of memory");
    cav_model_read_buffer(m, CAV_BUF_PARAMS, mark);
    if (cav_load_params(m, path, 1, 1, &nl, err)) return free(mark), free(now), -1;
    cav_model_read_buffer(m, CAV_BUF_PARAMS, now);
    for (int i = 0; i < m->ntable; i++)
        if (m->table[i].head &&
            memcmp(mark + m->table[i].offset, now + m->table[i].offset, m->table[i].numel * sizeof(float)))
            nhead_file++;
    free(mark), free(now);
    if (nl - nhead_file < m->ntable - nhead)
        return cav_fail(err, 2, "%s: %d of the model's %d encoder parameters found; not a CAV-MAE checkpoint of this size",
                        path, nl - nhead_file, m->ntable - nhead);
    cav_msg("%s: %d encoder parameters loaded; head %s", path, nl - nhead_file, nhead_file ? "loaded" : "new");
    return 0;
}

/* Per-epoch evaluation (SPEC 3.4): frame 5, hard targets, drop_last, statistics on the raw logits of
 * every rank's rows, gathered in batch order. res: acc, mAP, mAUC, d', loss. */
static int evaluate(const cav_finetune_opts *o, const cav_dist *d, cav_model *m, cav_loader *ev, int epoch,
                    double res[5], cav_err *err) {
    int K = m->cfg.label_dim;
    int64_t nb = cav_loader_batches(ev), N = nb * o->batch;
    size_t A = cav_model_input_size(m, CAV_IN_AUDIO), V = cav_model_input_size(m, CAV_IN_VIDEO);
    float *logits = calloc((size_t)N * K, sizeof *logits), *tgt = calloc((size_t)N * K, sizeof *tgt);
    float *out = malloc((size_t)m->B * K * sizeof *out); /* the model's logits [B,K] */
    double loss = 0;
    int rc = -1;
    if (!logits || !tgt || !out) {
        cav_fail(err, 3, "out of memory for the evaluation logits");
        goto out;
    }
    if (cav_loader_begin(ev, epoch, 0, err)) goto out;
    cav_batch b;
    int got;
    int64_t bi = 0;
    while ((got = cav_loader_next(ev, &b, err)) == 1) {
        if (A) cav_model_set_input(m, CAV_IN_AUDIO, b.audio, b.n);
        if (V) cav_model_set_input(m, CAV_IN_VIDEO, b.video, b.n);
        cav_model_set_input(m, CAV_IN_LABELS, b.labels, b.n);
        cav_model_forward(m);
        loss += m->out.loss * b.n / o->batch;
        /* this rank's rows sit at its slice of the global batch */
        size_t at = ((size_t)bi * o->batch + (size_t)d->rank * m->B) * K;
        cav_model_read_output(m, "logits", out);
        memcpy(logits + at, out, (size_t)b.n * K * sizeof(float));
        memcpy(tgt + at, b.labels, (size_t)b.n * K * sizeof(float));
        bi++;
    }
    if (got < 0) goto out;
    /* the other ranks' rows are zero here: summing is the gather */
    cav_dist_sum_f32(d, logits, (size_t)N * K);
    cav_dist_sum_f32(d, tgt, (size_t)N * K);
    cav_dist_sum_f64(d, &loss, 1);
    cav_cls_stats st = cav_classification_stats(logits, tgt, N, K);
    res[0] = st.acc, res[1] = st.mAP, res[2] = st.mAUC, res[3] = st.dprime, res[4] = nb ? loss / nb : 0;
    rc = 0;
out:
    free(logits), free(tgt), free(out);
    return rc;
}

int cav_finetune_run(const cav_finetune_opts *o, const cav_dist *d, cav_err *err) {
    int rc = 3;
    cav_model *m = NULL;
    cav_loader *tl = NULL, *ev = NULL;
    FILE *metrics = NULL;
    float *acc = NULL, *labels = NULL; /* labels: the smoothed targets [B,K] */
    char cfgjson[2048];
    if (o->mixup != 0)
        return cav_fail(err, 1, "--mixup %g: mixup is not implemented yet (the reference mixes waveforms before the "
                                "fbank, SPEC 1.7); use --mixup 0", o->mixup), 1;
    if (o->batch % d->world)
        return cav_fail(err, 1, "--batch-size %d cannot be split over %d processes", o->batch, d->world), 1;
    if (o->cfg.task != CAV_TASK_FINETUNE) return cav_fail(err, 3, "not a fine-tuning config"), 3;
    if (cav_config_check(&o->cfg, err)) return 1;
    int K = o->cfg.label_dim, rows = o->batch / d->world;
    int need_a = o->cfg.mode != CAV_FT_VIDEOONLY && o->cfg.mode != CAV_FT_MISSINGVIDEOONLY;
    int need_v = o->cfg.mode != CAV_FT_AUDIOONLY && o->cfg.mode != CAV_FT_MISSINGAUDIOONLY;
    cav_loader_opts lo = o->data;
    lo.train = 1;
    lo.batch = o->batch;
    lo.drop_last = 1;
    lo.rank = d->rank;
    lo.world = d->world;
    lo.seed = o->seed;
    lo.target_length = o->cfg.audio_length;
    lo.mel_bins = o->cfg.mel_bins;
    lo.img_size = o->cfg.img_size;
    lo.need_audio = need_a;
    lo.need_video = need_v;
    lo.label_dim = K;
    if (!(tl = cav_loader_open(o->train, o->ntrain, &lo, err))) return err->code;
    if (o->neval) {
        cav_loader_opts le = lo;
        le.train = 0;
        le.noise = le.roll = 0;
        le.freqm = le.timem = 0;
        le.frame = o->data.frame; /* -1: frame 5, as the reference's per-epoch validation */
        if (!(ev = cav_loader_open(o->eval, o->neval, &le, err))) {
            rc = err->code;
            goto done;
        }
    }
    if (!(m = cav_model_create(&o->cfg, rows, err))) {
        rc = err->code ? err->code : 3;
        goto done;
    }
    if (cav_model_alloc_adam(m)) {
        cav_fail(err, 3, "out of memory for the optimiser state");
        goto done;
    }
    if (d->world > 1 && !(acc = malloc(m->nparams * sizeof *acc))) {
        cav_fail(err, 3, "out of memory for the gradient sum");
        goto done;
    }
    if (cav_config_json(&o->cfg, cfgjson, sizeof cfgjson) < 0) {
        cav_fail(err, 3, "config too long");
        goto done;
    }
    if (cav_mkdirs(o->out_dir, err)) goto done;
    char path[4200], ck[4096];
    position pos = {1, 0, 0, 0, 0, -1, 0};
    int have = o->resume ? cav_ckpt_latest(o->out_dir, ck, sizeof ck, err) : 0;
    if (have < 0) goto done;
    if (have) {
        if (load_checkpoint(o, m, ck, &pos, err)) {
            rc = err->code;
            goto done;
        }
        if (d->rank == 0) cav_msg("resuming from %s: epoch %d, batch %lld, step %lld", ck, pos.epoch, (long long)pos.batch, (long long)pos.step);
    } else {
        cav_model_init(m, o->seed);
        if (o->init && load_init(m, o->init, err)) {
            rc = err->code;
            goto done;
        }
        if (d->rank == 0 && o->args_json) {
            snprintf(path, sizeof path, "%s/args.json", o->out_dir);
            if (cav_train_write_file(path, o->args_json, err)) goto done;
        }
    }
    if (d->rank == 0) {
        cav_model_describe(m, stderr);
        cav_msg("config %s", cfgjson);
        cav_msg("%lld training rows, %lld steps per epoch, batch %d, %d process%s, head lr x %g, label smoothing %g",
                (long long)cav_loader_rows(tl), (long long)cav_loader_batches(tl), o->batch, d->world,
                d->world > 1 ? "es" : "", o->head_lr, o->label_smooth);
        snprintf(path, sizeof path, "%s/metrics.jsonl", o->out_dir);
        if (!(metrics = fopen(path, "a"))) {
            cav_fail(err, 3, "%s: %s", path, strerror(errno));
            goto done;
        }
    }
    size_t A = cav_model_input_size(m, CAV_IN_AUDIO), V = cav_model_input_size(m, CAV_IN_VIDEO);
    if (!(labels = malloc((size_t)m->B * K * sizeof *labels))) {
        cav_fail(err, 3, "out of memory");
        goto done;
    }
    /* each rank's mean loss weighted by its share of the global batch (1 with one process) */
    double share = (double)rows / o->batch;
    int64_t steps_done_here = 0;
    for (; pos.epoch <= o->epochs; pos.epoch++, pos.batch = 0) {
        double lr = cav_schedule_lr(&o->sched, pos.epoch, pos.step);
        if (cav_loader_begin(tl, pos.epoch, pos.batch, err)) goto fail_data;
        cav_progress *pr = d->rank == 0 ? cav_progress_start("steps", cav_loader_batches(tl) - pos.batch) : NULL;
        double win = 0, wait = 0, compute = 0, t_win = cav_now();
        int64_t win_n = 0;
        cav_batch b;
        int got;
        while ((got = cav_loader_next(tl, &b, err)) == 1) {
            double t0 = cav_now();
            lr = cav_schedule_lr(&o->sched, pos.epoch, pos.step);
            if (A) cav_model_set_input(m, CAV_IN_AUDIO, b.audio, b.n);
            if (V) cav_model_set_input(m, CAV_IN_VIDEO, b.video, b.n);
            cav_smooth_labels(b.labels, labels, b.n, K, o->label_smooth);
            cav_model_set_input(m, CAV_IN_LABELS, labels, b.n);
            cav_model_forward(m);
            cav_model_backward(m);
            double loss = m->out.loss;
            if (acc) {
                cav_model_read_buffer(m, CAV_BUF_GRADS, acc);
                for (size_t i = 0; i < m->nparams; i++) acc[i] = (float)share * acc[i];
                cav_dist_sum_f32(d, acc, m->nparams);
                cav_model_write_buffer(m, CAV_BUF_GRADS, acc);
                loss *= share;
                cav_dist_sum_f64(d, &loss, 1);
            }
            int bad = !isfinite(loss) || !cav_model_grads_finite(m);
            if (cav_dist_max_int(d, bad)) {
                char last[4096] = "none";
                cav_ckpt_latest(o->out_dir, last, sizeof last, NULL);
                cav_fail(err, 3, "epoch %d step %lld: non-finite %s; stopping (last good checkpoint: %s)", pos.epoch,
                         (long long)pos.step + 1, isfinite(loss) ? "gradient" : "loss", last);
                cav_progress_end(pr);
                goto done;
            }
            cav_model_adam_step(m, lr, o->head_lr, o->beta1, o->beta2, o->adam_eps, o->weight_decay);
            pos.step++, pos.batch++, steps_done_here++;
            pos.loss += loss, pos.n++;
            win += loss, win_n++;
            wait += b.wait_s;
            compute += cav_now() - t0;
            cav_progress_add(pr, 1);
            if (metrics && o->log_every > 0 && pos.step % o->log_every == 0) {
                double el = cav_now() - t_win;
                fprintf(metrics,
                        "{\"epoch\":%d,\"step\":%lld,\"loss\":%.9g,\"lr\":%.9g,\"head_lr\":%.9g,\"samples_per_s\":%.4g,"
                        "\"data_wait_s\":%.4g,\"compute_s\":%.4g}\n",
                        pos.epoch, (long long)pos.step, win / win_n, lr, lr * o->head_lr,
                        el > 0 ? (double)win_n * o->batch / el : 0, wait, compute);
                fflush(metrics);
                win = 0, win_n = 0, wait = compute = 0, t_win = cav_now();
            }
            int stop = o->max_steps > 0 && steps_done_here >= o->max_steps;
            int last_of_epoch = pos.batch == cav_loader_batches(tl);
            if (!last_of_epoch && ((o->save_every > 0 && pos.step % o->save_every == 0) || stop))
                if (d->rank == 0 && save_checkpoint(o, m, &pos, cfgjson, err)) goto done;
            if (stop && !last_of_epoch) {
                cav_progress_end(pr);
                if (d->rank == 0) cav_msg("stopped after %lld steps (--max-steps)", (long long)steps_done_here);
                rc = 0;
                goto done;
            }
        }
        cav_progress_end(pr);
        if (got < 0) goto fail_data;
        double evr[5] = {0};
        if (ev && evaluate(o, d, m, ev, pos.epoch, evr, err)) goto fail_data;
        if (d->rank == 0) {
            snprintf(path, sizeof path, "%s/result.csv", o->out_dir);
            FILE *f = fopen(path, "a");
            if (!f) {
                cav_fail(err, 3, "%s: %s", path, strerror(errno));
                goto done;
            }
            /* The reference's columns (SPEC 3.6); the lr is the base group's, the one used in this epoch. */
            fprintf(f, "%.8g,%.8g,%.8g,%.8g\n", evr[0], evr[1], evr[2], lr);
            if (fclose(f)) {
                cav_fail(err, 3, "%s: write failed", path);
                goto done;
            }
            double tl_loss = pos.n ? pos.loss / pos.n : 0;
            fprintf(metrics,
                    "{\"epoch\":%d,\"step\":%lld,\"train_loss\":%.9g,\"eval_acc\":%.9g,\"eval_mAP\":%.9g,"
                    "\"eval_mAUC\":%.9g,\"eval_dprime\":%.9g,\"eval_loss\":%.9g,\"lr\":%.9g}\n",
                    pos.epoch, (long long)pos.step, tl_loss, evr[0], evr[1], evr[2], evr[3], evr[4], lr);
            fflush(metrics);
            cav_msg("epoch %d: train loss %.4f%s acc %.4f mAP %.4f mAUC %.4f d' %.4f eval loss %.4f", pos.epoch,
                    tl_loss, ev ? "" : " (no eval set)", evr[0], evr[1], evr[2], evr[3], evr[4]);
            snprintf(path, sizeof path, "%s/models", o->out_dir);
            if (cav_mkdirs(path, err)) goto done;
            snprintf(path, sizeof path, "%s/models/audio_model.%d.safetensors", o->out_dir, pos.epoch);
            if (cav_train_save_model(m, path, cfgjson, err)) goto done;
            double score = o->metric_acc ? evr[0] : evr[1];
            if (ev && isfinite(score) && score > pos.best) {
                pos.best = score;
                pos.best_epoch = pos.epoch;
                snprintf(path, sizeof path, "%s/models/best_audio_model.safetensors", o->out_dir);
                if (cav_train_save_model(m, path, cfgjson, err)) goto done;
            }
        }
        position next = pos;
        next.epoch = pos.epoch + 1;
        next.batch = 0;
        next.loss = 0, next.n = 0;
        if (d->rank == 0 && save_checkpoint(o, m, &next, cfgjson, err)) goto done;
        pos.loss = 0, pos.n = 0;
        if (o->max_steps > 0 && steps_done_here >= o->max_steps && pos.epoch < o->epochs) {
            if (d->rank == 0) cav_msg("stopped after %lld steps (--max-steps)", (long long)steps_done_here);
            rc = 0;
            goto done;
        }
    }
    rc = 0;
    goto done;
fail_data:
    rc = err->code ? err->code : 2;
done:
    if (metrics) fclose(metrics);
    free(acc), free(labels);
    cav_model_free(m);
    cav_loader_close(tl);
    cav_loader_close(ev);
    if (rc && !err->msg[0]) cav_fail(err, rc, "failed");
    return rc;
}
