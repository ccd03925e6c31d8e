/* fteval.c: see fteval.h. One loader per frame, iterated in lockstep (the evaluation order is the shards'
 * own, so batch i of every loader holds the same clips); the first delivers the audio and the labels, the
 * others only their frame. Per batch the model runs fully on the first frame and, for the other nine, reuses
 * the audio branch's output (cav_model_forward_keep_audio): in multimodal mode the joint layers see both
 * modalities, so only the audio-specific layers are frame independent; a model that sees no video runs once
 * and that pass stands for every frame. Every rank evaluates its slice of each batch; the logits are
 * gathered by summing (the other ranks' rows are zero) and rank 0 writes the files. */
#include "fteval.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomicfile.h"
#include "checkpoint.h"
#include "cli.h"
#include "json.h"
#include "kernels.h"
#include "loader.h"
#include "metrics.h"
#include "trainio.h"
#include "weights.h"

int cav_ft_eval_check(const cav_ft_eval_opts *ev, int epochs, cav_err *err) {
    if (!ev->wa_start && !ev->wa_end) return 0;
    if (ev->eval_only)
        return cav_fail(err, 1,
                        "--wa-start/--wa-end average a run's models after training, not with --eval-only");
    if (ev->wa_start < 1 || ev->wa_end < ev->wa_start || ev->wa_end > epochs)
        return cav_fail(err, 1,
                        "--wa-start %d --wa-end %d: want 1 <= start <= end <= --epochs (%d), or both 0",
                        ev->wa_start, ev->wa_end, epochs);
    return 0;
}

/* video: the model reads video (a model without it runs once for every frame) */
static int agg_on(const cav_ft_eval_setup *s, int video) {
    return s->ev->frame_agg >= 0 ? s->ev->frame_agg : video; /* the reference's skip_frame_agg */
}

/* The frames evaluated: 0..9, or the one of --frame (5 by default, as the reference's skip_frame_agg). */
static int frames_of(const cav_ft_eval_setup *s, int video, int *frames) {
    if (!agg_on(s, video)) return frames[0] = s->run->data.frame >= 0 ? s->run->data.frame : 5, 1;
    for (int f = 0; f < CAV_FT_FRAMES; f++) frames[f] = f;
    return CAV_FT_FRAMES;
}

/* The output files' names: [0] final_eval.json, [1] mul_frame_res.csv (aggregated only), then the
 * predictions. Returns the count. */
static int output_names(const cav_ft_eval_setup *s, int video, char names[][64]) {
    int frames[CAV_FT_FRAMES], nf = frames_of(s, video, frames), n = 0;
    snprintf(names[n++], 64, "final_eval.json");
    if (agg_on(s, video)) snprintf(names[n++], 64, "mul_frame_res.csv");
    for (int f = 0; s->ev->predictions && f < nf; f++)
        snprintf(names[n++], 64, "predictions_frame%d.csv", frames[f]);
    if (s->ev->predictions && agg_on(s, video)) snprintf(names[n++], 64, "predictions_agg.csv");
    return n;
}

static int refuse_existing(const cav_ft_eval_setup *s, int video, cav_err *err) {
    char names[CAV_FT_FRAMES + 3][64], p[4200];
    struct stat st;
    int n = output_names(s, video, names);
    for (int i = 0; i < n; i++) {
        snprintf(p, sizeof p, "%s/%s", s->run->out_dir, names[i]);
        if (stat(p, &st) == 0) return cav_fail(err, 1, "%s exists (--force replaces it)", p);
    }
    return 0;
}

/* logits [n,K] -> sigmoid (mAP tasks) or row softmax (accuracy tasks), in place, as the reference maps the
 * final evaluation's outputs */
static void to_probabilities(float *x, int64_t n, int K, int softmax) {
    for (int64_t i = 0; i < n; i++) {
        float *r = x + i * K, mx = r[0];
        if (!softmax) {
            for (int k = 0; k < K; k++) r[k] = 1.0f / (1.0f + expf(-r[k]));
            continue;
        }
        double sum = 0;
        for (int k = 1; k < K; k++) mx = r[k] > mx ? r[k] : mx;
        for (int k = 0; k < K; k++) sum += r[k] = expf(r[k] - mx);
        for (int k = 0; k < K; k++) r[k] = (float)(r[k] / sum);
    }
}

/* id, then one probability per class; a header line "id,0,1,...,K-1" */
static int write_predictions(const char *path, const cav_loader *ld, const float *p, int64_t n, int K,
                             cav_err *err) {
    cav_afile *a = cav_afile_open(path, 0, err);
    if (!a) return -1;
    FILE *f = cav_afile_stream(a);
    fputs("id", f);
    for (int k = 0; k < K; k++) fprintf(f, ",%d", k);
    fputc('\n', f);
    for (int64_t i = 0; i < n; i++) {
        const char *id = cav_loader_id(ld, i);
        cav_csv_field(f, id ? id : "");
        for (int k = 0; k < K; k++) fprintf(f, ",%.9g", p[i * K + k]);
        fputc('\n', f);
    }
    return cav_afile_commit(a, err);
}

static int append_num(char **s, size_t *len, size_t *cap, const char *pre, double x) {
    char num[40];
    return cav_json_append_raw(s, len, cap, pre) |
           cav_json_append_raw(s, len, cap, cav_json_num(num, sizeof num, x, 17));
}

/* final_eval.json: the model, the metric, per-frame scores, the final statistics and per-class AP */
static int write_summary(const cav_ft_eval_setup *s, const char *model, int agg, const int *frames, int nf,
                         const double *frame_res, const cav_cls_stats *st, const double *ap, int64_t n,
                         double seconds, cav_err *err) {
    char *j = NULL, path[4200], num[256];
    size_t len = 0, cap = 0;
    int K = s->cfg->label_dim, bad = cav_json_append_raw(&j, &len, &cap, "{\"model\":");
    bad |= cav_json_append_string(&j, &len, &cap, model);
    snprintf(num, sizeof num, ",\"metric\":\"%s\",\"aggregated\":%s,\"rows\":%lld,\"frames\":[",
             s->by_acc ? "acc" : "mAP", agg ? "true" : "false", (long long)n);
    bad |= cav_json_append_raw(&j, &len, &cap, num);
    for (int f = 0; f < nf; f++) {
        snprintf(num, sizeof num, "%s%d", f ? "," : "", frames[f]);
        bad |= cav_json_append_raw(&j, &len, &cap, num);
    }
    bad |= cav_json_append_raw(&j, &len, &cap, "],\"frame_res\":[");
    for (int f = 0; f < nf; f++) bad |= append_num(&j, &len, &cap, f ? "," : "", frame_res[f]);
    bad |= append_num(&j, &len, &cap, "],\"acc\":", st->acc);
    bad |= append_num(&j, &len, &cap, ",\"mAP\":", st->mAP);
    bad |= append_num(&j, &len, &cap, ",\"mAUC\":", st->mAUC);
    bad |= append_num(&j, &len, &cap, ",\"dprime\":", st->dprime);
    bad |= append_num(&j, &len, &cap, ",\"seconds\":", seconds);
    bad |= cav_json_append_raw(&j, &len, &cap, ",\"class_ap\":[");
    for (int k = 0; k < K; k++) bad |= append_num(&j, &len, &cap, k ? "," : "", ap[k]);
    bad |= cav_json_append_raw(&j, &len, &cap, "]}\n");
    int rc = bad ? cav_fail(err, 3, "out of memory") : 0;
    snprintf(path, sizeof path, "%s/final_eval.json", s->run->out_dir);
    if (!rc) rc = cav_train_write_file(path, j, err);
    free(j);
    return rc;
}

/* Rank 0: the scores of the gathered logits [nf][cap,K] (turned into probabilities here) and the files. */
static int score_and_write(const cav_ft_eval_setup *s, int video, const char *model, const cav_loader *ld,
                           float *logits, const float *tgt, int64_t cap, int64_t n, double seconds,
                           cav_err *err) {
    int K = s->cfg->label_dim, frames[CAV_FT_FRAMES], nf = frames_of(s, video, frames),
        agg = agg_on(s, video);
    size_t nk = (size_t)n * K;
    double res[CAV_FT_FRAMES + 1];
    float *mean = agg ? calloc(nk, sizeof *mean) : NULL;
    double *ap = malloc((size_t)K * sizeof *ap);
    char path[4200], line[64];
    int rc = -1;
    if ((agg && !mean) || !ap) {
        cav_fail(err, 3, "out of memory");
        goto out;
    }
    for (int f = 0; f < nf; f++) {
        float *x = logits + (size_t)f * cap * K;
        cav_cls_stats st = cav_classification_stats(x, tgt, n, K); /* on the raw logits, as validate() */
        res[f] = s->by_acc ? st.acc : st.mAP;
        cav_msg("%s of frame %d is %.4f", s->by_acc ? "acc" : "mAP", frames[f], res[f]);
        to_probabilities(x, n, K, s->by_acc);
        for (size_t i = 0; agg && i < nk; i++) mean[i] += x[i];
    }
    for (size_t i = 0; agg && i < nk; i++) mean[i] /= (float)nf;
    const float *fin = agg ? mean : logits;
    cav_cls_stats st = cav_classification_stats(fin, tgt, n, K);
    res[nf] = s->by_acc ? st.acc : st.mAP;
    for (int k = 0; k < K; k++) ap[k] = cav_average_precision(fin + k, tgt + k, n, K);
    cav_msg("%s%s is %.4f (acc %.4f, mAUC %.4f, d' %.4f)", agg ? "multi-frame " : "",
            s->by_acc ? "acc" : "mAP", res[nf], st.acc, st.mAUC, st.dprime);
    if (write_summary(s, model, agg, frames, nf, res, &st, ap, n, seconds, err)) goto out;
    if (agg) { /* np.savetxt(res): the ten frames' values, then the aggregated one */
        size_t len = 0, cap2 = 0;
        char *t = NULL;
        int bad = 0;
        for (int f = 0; f <= nf; f++) {
            snprintf(line, sizeof line, "%.18e\n", res[f]);
            bad |= cav_json_append_raw(&t, &len, &cap2, line);
        }
        snprintf(path, sizeof path, "%s/mul_frame_res.csv", s->run->out_dir);
        int r = bad ? cav_fail(err, 3, "out of memory") : cav_train_write_file(path, t, err);
        free(t);
        if (r) goto out;
    }
    for (int f = 0; s->ev->predictions && f < nf; f++) {
        snprintf(path, sizeof path, "%s/predictions_frame%d.csv", s->run->out_dir, frames[f]);
        if (write_predictions(path, ld, logits + (size_t)f * cap * K, n, K, err)) goto out;
    }
    snprintf(path, sizeof path, "%s/predictions_agg.csv", s->run->out_dir);
    if (s->ev->predictions && agg && write_predictions(path, ld, mean, n, K, err)) goto out;
    rc = 0;
out:
    free(mean), free(ap);
    return rc;
}

int cav_ft_eval_model(const cav_ft_eval_setup *s, const char *model, int replace, const cav_dist *d,
                      cav_err *err) {
    const cav_train_opts *o = s->run;
    const cav_config *cfg = s->cfg;
    int K = cfg->label_dim, batch = o->batch, rows = batch / d->world, rc = 3, nl = 0;
    cav_loader *ld[CAV_FT_FRAMES] = {0};
    float *logits = NULL, *tgt = NULL, *out = NULL;
    if (!o->eval.n) return cav_fail(err, 1, "the final evaluation needs --eval shards"), 1;
    cav_err berr = {0, ""};
    cav_backend *be = cav_backend_open(o->device, &berr);
    if (!be) return cav_fail(err, berr.code ? berr.code : 1, "%s", berr.msg), err->code;
    cav_model *m = cav_model_create_on(be, cfg, rows, err);
    if (!m) return err->code ? err->code : 3;
    if (cav_model_set_precision(m, o->precision)) { /* the run's precision, as its per-epoch evaluation */
        cav_model_free(m);
        return cav_fail(err, 3, "out of memory for the bf16 weights and operands"), 3;
    }
    /* what this mode's model reads decides the passes */
    int audio = cav_model_input_size(m, CAV_IN_AUDIO) > 0, video = cav_model_input_size(m, CAV_IN_VIDEO) > 0;
    int frames[CAV_FT_FRAMES], nf = frames_of(s, video, frames);
    int refused = d->rank == 0 && !replace && refuse_existing(s, video, err);
    if (cav_dist_max_int(d, refused)) {
        if (!refused) cav_fail(err, 1, "%s: refused by rank 0", o->out_dir);
        rc = 1;
        goto done;
    }
    if (cav_weights_load_path(m, model, 0, 0, NULL, err)) goto fail;
    for (nl = 0; nl < (video ? nf : 1); nl++) {
        cav_loader_opts lo = o->data;
        lo.train = 0, lo.noise = lo.roll = 0, lo.freqm = lo.timem = 0;
        lo.batch = batch, lo.drop_last = 0, lo.rank = d->rank, lo.world = d->world, lo.seed = o->seed;
        lo.target_length = cfg->audio_length, lo.mel_bins = cfg->mel_bins, lo.img_size = cfg->img_size;
        lo.need_audio = audio && nl == 0, lo.need_video = video;
        lo.label_dim = nl == 0 ? K : 0;
        lo.frame = frames[nl];
        if (!(ld[nl] = cav_loader_open(o->eval.v, o->eval.n, &lo, err))) goto fail;
    }
    int64_t n = cav_loader_rows(ld[0]), nb = cav_loader_batches(ld[0]), cap = nb * batch;
    logits = calloc((size_t)nf * cap * K, sizeof *logits), tgt = calloc((size_t)cap * K, sizeof *tgt);
    out = malloc((size_t)rows * K * sizeof *out);
    if (!logits || !tgt || !out) {
        cav_fail(err, 3, "out of memory for the evaluation's logits (%d frames x %lld rows x %d classes)", nf,
                 (long long)n, K);
        goto done;
    }
    for (int l = 0; l < nl; l++)
        if (cav_loader_begin(ld[l], 1, 0, err)) goto fail;
    double t0 = cav_now();
    for (int64_t bi = 0; bi < nb; bi++) {
        cav_batch b[CAV_FT_FRAMES];
        for (int l = 0; l < nl; l++) {
            int got = cav_loader_next(ld[l], &b[l], err);
            if (got < 0) goto fail;
            if (got == 0) {
                cav_fail(err, 3, "evaluation loaders out of step at batch %lld", (long long)bi);
                goto done;
            }
        }
        int bn = b[0].n;
        size_t at = ((size_t)bi * batch + (size_t)d->rank * rows) * K; /* this rank's slice of the batch */
        if (bn <= 0) continue;
        memcpy(tgt + at, b[0].labels, (size_t)bn * K * sizeof(float));
        for (int l = 0; l < nl; l++) {
            if (l == 0) {
                cav_train_set_inputs(m, &b[0], 0, bn);
                cav_model_forward(m);
            } else {
                cav_model_set_input(m, CAV_IN_VIDEO, b[l].video, bn);
                cav_model_forward_keep_audio(m);
            }
            cav_model_read_output(m, "logits", out);
            memcpy(logits + (size_t)l * cap * K + at, out, (size_t)bn * K * sizeof(float));
        }
    }
    for (int f = nl; f < nf; f++) /* no video: the one pass is every frame's */
        memcpy(logits + (size_t)f * cap * K, logits, (size_t)cap * K * sizeof(float));
    double seconds = cav_now() - t0;
    int wrote = 0; /* rank 0's files */
    cav_dist_sum_f32(d, logits, (size_t)nf * cap * K);
    cav_dist_sum_f32(d, tgt, (size_t)cap * K);
    if (d->rank == 0) {
        cav_msg("final evaluation of %s: %lld rows x %d frame%s in %.2f s (%s)", model, (long long)n, nf,
                nf > 1 ? "s" : "", seconds,
                !video            ? "one pass: nothing depends on the frame"
                : audio && nl > 1 ? "audio branch once per clip"
                                  : "every frame in full");
        wrote = cav_mkdirs(o->out_dir, err) ||
                score_and_write(s, video, model, ld[0], logits, tgt, cap, n, seconds, err);
    }
    rc = cav_dist_rank0_wrote(d, wrote ? -1 : 0, "the final evaluation's files", err);
    goto done;
fail:
    rc = err->code ? err->code : 2;
done:
    free(logits), free(tgt), free(out);
    cav_model_free(m);
    for (int l = 0; l < nl; l++) cav_loader_close(ld[l]);
    if (rc && !err->msg[0]) cav_fail(err, rc, "failed");
    return rc;
}

void cav_ft_eval_clear(const char *dir) {
    char p[4200];
    static const char *const fixed[] = {"final_eval.json", "mul_frame_res.csv", "predictions_agg.csv"};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, fixed[i]);
        unlink(p);
    }
    for (int f = 0; f < CAV_FT_FRAMES; f++) {
        snprintf(p, sizeof p, "%s/predictions_frame%d.csv", dir, f);
        unlink(p);
    }
}

int cav_ft_final_eval(const cav_ft_eval_setup *s, const cav_dist *d, cav_err *err) {
    const cav_train_opts *o = s->run;
    const cav_ft_eval_opts *ev = s->ev;
    char model[4200], cfgjson[2048];
    if (!ev->wa_end) {
        snprintf(model, sizeof model, "%s/models/best_audio_model.safetensors", o->out_dir);
        return cav_ft_eval_model(s, model, 1, d, err);
    }
    snprintf(model, sizeof model, "%s/models/audio_model_wa.safetensors", o->out_dir);
    int failed = 0, n = ev->wa_end - ev->wa_start + 1;
    if (d->rank == 0) { /* rank 0 writes the average; the others wait for it below */
        char **paths = calloc((size_t)n, sizeof *paths);
        cav_model *m = NULL;
        cav_err berr = {0, ""};
        cav_backend *be = cav_backend_open("cpu", &berr);
        failed = !paths || !be || cav_config_json(s->cfg, cfgjson, sizeof cfgjson) < 0 ||
                 !(m = cav_model_create_on(be, s->cfg, 1, err));
        for (int i = 0; !failed && i < n; i++) {
            paths[i] = malloc(4200);
            if (!paths[i])
                failed = 1;
            else
                snprintf(paths[i], 4200, "%s/models/audio_model.%d.safetensors", o->out_dir,
                         ev->wa_start + i);
        }
        if (failed && !err->msg[0]) cav_fail(err, 3, "out of memory for the weight average");
        if (!failed) {
            failed = cav_train_average_models(m, paths, n, model, cfgjson, err) != 0;
            if (!failed)
                cav_msg("weight average of models %d..%d (%d models): %s", ev->wa_start, ev->wa_end, n,
                        model);
        }
        for (int i = 0; paths && i < n; i++) free(paths[i]);
        free(paths);
        cav_model_free(m);
    }
    int code = cav_dist_rank0_wrote(d, failed ? -1 : 0, "the weight average", err);
    if (code) return code;
    return cav_ft_eval_model(s, model, 1, d, err);
}
