/* finetune.c: see finetune.h. One step: the rank's slice of the global batch runs through the model as one
 * batch; the reference computes its loss on the whole gathered batch (DataParallel), so each rank's mean
 * loss and gradients are weighted by its share of the batch (the gradients in the backward, through the
 * model's dloss; the driver sums them over ranks). The model has no randomness of its own (no masking, no
 * dropout); the loader's draws are keyed by (seed, epoch, position), so a run resumed from a checkpoint
 * repeats the uninterrupted run. */
#include "finetune.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "json.h"
#include "metrics.h"
#include "recipes.h"
#include "weights.h"

CAV_KNOB_NUMBER(knob_labels, "label_dim", 1, 1 << 20)
static int knob_mode(const char *s, void *f, char *why, size_t n) {
    if (cav_ft_mode_parse(s) < 0)
        return snprintf(
                   why, n,
                   "multimodal, audioonly, videoonly, missingaudioonly, missingvideoonly, singlemodal or "
                   "multimodal+singlemodal, not '%s'",
                   s),
               -1;
    return cav_knob_add(f, "mode", s, why, n);
}
CAV_KNOB_FIXED(knob_freeze, "freeze_base", "true")
static int knob_loss(const char *s, void *f, char *why, size_t n) {
    if (strcmp(s, "bce") && strcmp(s, "ce")) return snprintf(why, n, "bce or ce, not '%s'", s), -1;
    return cav_knob_add(f, "loss", s, why, n);
}
/* map, acc, or auto: acc with --loss ce, else map (decided when the run starts) */
static const cav_opt_choice metrics[] = {{"auto", -1}, {"map", 0}, {"acc", 1}, {NULL, 0}};
/* --frame-agg and --no-frame-agg set one field: 1, 0, or -1 (the default "auto") when neither is given */
static int parse_agg_on(const char *s, void *field, char *why, size_t whylen) {
    (void)why, (void)whylen;
    return *(int *)field = s && strcmp(s, "auto") == 0 ? -1 : 1, 0;
}
/* --no-frame-agg, --no-bal: the int to 0 (no echo of their own: the positive option's key holds it) */
static int parse_off(const char *s, void *field, char *why, size_t whylen) {
    (void)s, (void)why, (void)whylen;
    return *(int *)field = 0, 0;
}
static void format_agg(const void *field, char *buf, size_t len) {
    int v = *(const int *)field;
    snprintf(buf, len, "%s", v < 0 ? "auto" : v ? "on" : "off");
}

#define FT(f) offsetof(cav_finetune_opts, f)
static const cav_opt finetune_table[] = {
    {.name = "head-lr",
     .type = CAV_OPTT_DOUBLE,
     .offset = FT(head_lr),
     .def = "100",
     .min = 0,
     .max = 1e6,
     .arg = "X",
     .help = "the head's lr multiplier",
     .key = "head_lr"},
    {.name = "label-smooth",
     .type = CAV_OPTT_DOUBLE,
     .offset = FT(label_smooth),
     .def = "0.1",
     .min = 0,
     .max = 1,
     .arg = "E",
     .help = "training label smoothing",
     .key = "label_smooth"},
    {.name = "mixup",
     .type = CAV_OPTT_DOUBLE,
     .offset = FT(mixup),
     .def = "0",
     .min = 0,
     .max = 1,
     .arg = "P",
     .help = "probability that a training sample is mixed with a random partner",
     .key = "mixup"},
    {.name = "bal",
     .type = CAV_OPTT_FLAG,
     .offset = FT(bal),
     .help = "draw training rows with replacement by the shards' field `weight` (balanced sampling)",
     .key = "bal"},
    {.name = "no-bal",
     .type = CAV_OPTT_CUSTOM,
     .offset = FT(bal),
     .parse = parse_off,
     .help = "draw training rows uniformly (undoes --bal and a recipe's balanced sampling)"},
    {.name = "metric",
     .type = CAV_OPTT_CHOICE,
     .offset = FT(metric),
     .arg = "map|acc|auto",
     .def = "auto",
     .choices = metrics,
     .help = "which metric picks best_audio_model (auto: acc with --loss ce, else map)",
     .key = "metric"},
    {.name = "recipe",
     .type = CAV_OPTT_CUSTOM,
     .offset = FT(recipe),
     .arg = "NAME",
     .parse = cav_ft_recipe_parse,
     .format = cav_ft_recipe_format,
     .help = "the paper's recipe as defaults: as20k, as2m or vggsound\n(options given override it)",
     .key = "recipe"},
    {.name = "wa-start",
     .type = CAV_OPTT_INT,
     .offset = FT(final.wa_start),
     .def = "0",
     .min = 0,
     .max = 100000,
     .arg = "E",
     .help = "first epoch of the weight average (0: none)",
     .key = "wa_start"},
    {.name = "wa-end",
     .type = CAV_OPTT_INT,
     .offset = FT(final.wa_end),
     .def = "0",
     .min = 0,
     .max = 100000,
     .arg = "E",
     .help = "last epoch of the weight average; the average is evaluated at the end\n(0: the best model is)",
     .key = "wa_end"},
    {.name = "frame-agg",
     .type = CAV_OPTT_CUSTOM,
     .offset = FT(final.frame_agg),
     .def = "auto",
     .parse = parse_agg_on,
     .format = format_agg,
     .help = "final evaluation on the ten frames and their mean (default, unless\nno video is seen)",
     .key = "frame_agg",
     .flags = CAV_OPTF_NODEFAULT},
    {.name = "no-frame-agg",
     .type = CAV_OPTT_CUSTOM,
     .offset = FT(final.frame_agg),
     .parse = parse_off,
     .help = "final evaluation on one frame (--frame, or 5)"},
    {.name = "eval-only",
     .type = CAV_OPTT_FLAG,
     .offset = FT(final.eval_only),
     .help = "evaluate the model --init on --eval into --out, no training"},
    {.name = "predictions",
     .type = CAV_OPTT_FLAG,
     .offset = FT(final.predictions),
     .help = "write the final evaluation's predictions (predictions_*.csv)",
     .key = "predictions"},
    {0},
};
#undef FT

static const cav_opt knob_table[] = {
    {.name = "label-dim", .type = CAV_OPTT_CUSTOM, .arg = "K", .parse = knob_labels, .help = "classes (527)"},
    {.name = "mode",
     .type = CAV_OPTT_CUSTOM,
     .arg = "MODE",
     .parse = knob_mode,
     .help = "multimodal (default), audioonly, videoonly, missingaudioonly,\nmissingvideoonly, singlemodal, "
             "multimodal+singlemodal"},
    {.name = "freeze-base",
     .type = CAV_OPTT_CUSTOM,
     .parse = knob_freeze,
     .help = "linear probing: train mlp_head only"},
    {.name = "loss",
     .type = CAV_OPTT_CUSTOM,
     .arg = "bce|ce",
     .parse = knob_loss,
     .help = "BCEWithLogits (default) or cross-entropy on soft targets"},
    {0},
};

static const cav_preset_entry *recipe_of(const void *o) {
    return cav_ft_recipe(((const cav_finetune_opts *)o)->recipe);
}

const cav_train_options_of cav_finetune_options_of =
    CAV_TRAIN_OPTIONS_OF_PRESET(cav_finetune_opts, finetune_table, knob_table, CAV_TASK_FINETUNE, recipe_of);

typedef struct {
    const cav_finetune_opts *o;
    int by_acc;    /* the best model by accuracy (else mAP) */
    float *logits; /* [B,K] */
} finetuner;

static int prepare(cav_trainer *t, cav_err *err) {
    finetuner *f = t->task->ctx;
    size_t bk = (size_t)t->m->B * t->cfg->label_dim;
    f->logits = malloc(bk * sizeof *f->logits);
    if (!f->logits) return cav_fail(err, 3, "out of memory");
    /* this rank's share of the batch (1 with one process): exact for a power-of-two number of ranks, so the
     * gradients are those of the whole batch's backward scaled after it, byte for byte */
    t->m->dloss = (float)((double)t->m->B / t->o->batch);
    return 0;
}

/* The pretrained start point (cav-numerics(7) 2.12, 3.3): every encoder parameter by name, as load_state_dict
 * with strict=False loads a CAVMAE checkpoint into CAVMAEFT; the decoder's names are ignored, the head keeps
 * its fresh initialisation unless the file has one of the same shape (a fine-tuned checkpoint). Unlike
 * strict=False, an encoder parameter missing from the file is refused: it would silently stay random. */
static int init(cav_trainer *t, cav_err *err) {
    cav_model *m = t->m;
    const char *path = t->o->init;
    if (!path) return 0;
    char *seen = calloc((size_t)m->ntable, 1);
    if (!seen) return cav_fail(err, 3, "out of memory");
    cav_weights w;
    cav_weights_load_opts lo = {.allow_extra = 1, .allow_missing = 1, .seen = seen};
    int rc = cav_weights_open(&w, path, err);
    if (!rc) {
        rc = cav_weights_load(m, &w, &lo, err);
        cav_weights_close(&w);
    }
    int nhead = 0, nhead_file = 0;
    for (int i = 0; i < m->ntable; i++) nhead += m->table[i].head, nhead_file += m->table[i].head && seen[i];
    free(seen);
    if (rc) return -1;
    if (lo.loaded - nhead_file < m->ntable - nhead)
        return cav_fail(
            err, 2,
            "%s: %d of the model's %d encoder parameters found; not a CAV-MAE checkpoint of this size", path,
            lo.loaded - nhead_file, m->ntable - nhead);
    if (t->d->rank == 0)
        cav_msg("%s: %d encoder parameters loaded; head %s", path, lo.loaded - nhead_file,
                nhead_file ? "loaded" : "new");
    return 0;
}

/* stats: the loss */
static void step(cav_trainer *t, const cav_batch *b, int epoch, int64_t stepi, double *stats) {
    cav_model *m = t->m;
    double share = (double)m->B / t->o->batch; /* 1 with one process */
    (void)epoch, (void)stepi;
    cav_train_set_inputs(m, b, 0, b->n);
    /* the loader's targets: smoothed, and mixed for mixed samples (cav-numerics(7) 1.7) */
    cav_model_set_input(m, CAV_IN_LABELS, b->labels, b->n);
    cav_model_forward(m);
    cav_model_backward(m);
    stats[0] = m->out.loss * share; /* the gradients are scaled by it in the backward (m->dloss) */
}

/* Per-epoch evaluation (cav-numerics(7) 3.4): frame 5, hard targets, drop_last, statistics on the raw logits
 * of every rank's rows, gathered in batch order. res: acc, mAP, mAUC, d', loss. */
static int evaluate(cav_trainer *t, cav_loader *ev, int epoch, double *res, cav_err *err) {
    finetuner *f = t->task->ctx;
    cav_model *m = t->m;
    int K = t->cfg->label_dim, batch = t->o->batch;
    int64_t nb = cav_loader_batches(ev), N = nb * batch;
    float *logits = calloc((size_t)N * K, sizeof *logits), *tgt = calloc((size_t)N * K, sizeof *tgt);
    double loss = 0;
    int rc = -1;
    if (!logits || !tgt) {
        cav_fail(err, 3, "out of memory for the evaluation logits");
        goto out;
    }
    if (cav_loader_begin(ev, epoch, 0, err)) goto out;
    cav_batch b;
    int got;
    int64_t bi = 0;
    while ((got = cav_loader_next(ev, &b, err)) == 1) {
        cav_train_set_inputs(m, &b, 0, b.n);
        cav_model_set_input(m, CAV_IN_LABELS, b.labels, b.n);
        cav_model_forward(m);
        loss += m->out.loss * b.n / batch;
        /* this rank's rows sit at its slice of the global batch */
        size_t at = ((size_t)bi * batch + (size_t)t->d->rank * m->B) * K;
        cav_model_read_output(m, "logits", f->logits);
        memcpy(logits + at, f->logits, (size_t)b.n * K * sizeof(float));
        memcpy(tgt + at, b.labels, (size_t)b.n * K * sizeof(float));
        bi++;
    }
    if (got < 0) goto out;
    /* the other ranks' rows are zero here: summing is the gather */
    cav_dist_sum_f32(t->d, logits, (size_t)N * K);
    cav_dist_sum_f32(t->d, tgt, (size_t)N * K);
    cav_dist_sum_f64(t->d, &loss, 1);
    cav_cls_stats st = cav_classification_stats(logits, tgt, N, K);
    res[0] = st.acc, res[1] = st.mAP, res[2] = st.mAUC, res[3] = st.dprime, res[4] = nb ? loss / nb : 0;
    rc = 0;
out:
    free(logits), free(tgt);
    return rc;
}

static double score(const cav_trainer *t, const double *res) {
    return ((const finetuner *)t->task->ctx)->by_acc ? res[0] : res[1];
}

static void epoch_report(const cav_trainer *t, const double *tr, const double *ev, double lr, char *row,
                         size_t nrow, char *msg, size_t nmsg) {
    static const double none[5] = {0};
    const double *e = ev ? ev : none;
    (void)t;
    /* The reference's columns (cav-numerics(7) 3.6); the lr is the base group's, the one used in this
     * epoch. */
    snprintf(row, nrow, "%.8g,%.8g,%.8g,%.8g", e[0], e[1], e[2], lr);
    if (ev)
        snprintf(msg, nmsg, "train loss %.4f; acc %.4f mAP %.4f mAUC %.4f d' %.4f eval loss %.4f", tr[0],
                 e[0], e[1], e[2], e[3], e[4]);
    else
        snprintf(msg, nmsg, "train loss %.4f (no eval set)", tr[0]);
}

static void epoch_metrics(const cav_trainer *t, const double *tr, const double *ev, double lr, char *out,
                          size_t n) {
    static const char *const keys[] = {"eval_acc", "eval_mAP", "eval_mAUC", "eval_dprime", "eval_loss"};
    char num[40];
    size_t k = 0;
    (void)t;
    k += snprintf(out, n, ",\"train_loss\":%s", cav_json_num(num, sizeof num, tr[0], 9));
    for (int i = 0; ev && i < 5 && k < n; i++)
        k += snprintf(out + k, n - k, ",\"%s\":%s", keys[i], cav_json_num(num, sizeof num, ev[i], 9));
    if (k < n) snprintf(out + k, n - k, ",\"lr\":%s", cav_json_num(num, sizeof num, lr, 9));
}

static void describe(const cav_trainer *t, char *out, size_t n) {
    const finetuner *f = t->task->ctx;
    snprintf(out, n, "; head lr x %g, label smoothing %g, mixup %g%s%s", f->o->head_lr, f->o->label_smooth,
             f->o->mixup, f->o->bal ? ", balanced sampling" : "",
             t->cfg->freeze_base ? "; linear probing (base frozen)" : "");
}

/* The metric that picks the best model and scores the final evaluation: 1 accuracy, 0 mAP (--metric, or
 * auto: accuracy with --loss ce). */
static int metric_is_acc(const cav_finetune_opts *o) {
    return o->metric >= 0 ? o->metric : o->cfg.loss_ce;
}

int cav_finetune_run(const cav_finetune_opts *o, const cav_dist *d, cav_err *err) {
    if (o->run.batch % d->world)
        return cav_fail(err, 1, "--batch-size %d cannot be split over %d processes", o->run.batch, d->world),
               1;
    if (o->cfg.task != CAV_TASK_FINETUNE) return cav_fail(err, 3, "not a fine-tuning config"), 3;
    finetuner f = {o, metric_is_acc(o), NULL};
    cav_train_opts run = o->run; /* the training loader builds the targets and draws the rows */
    run.data.label_smooth = o->label_smooth;
    run.data.mixup = o->mixup;
    run.data.bal = o->bal;
    static const char *const stat_keys[] = {"loss"}, *const state_keys[] = {"train_loss"};
    cav_train_task task = {
        .need_audio = o->cfg.mode != CAV_FT_VIDEOONLY && o->cfg.mode != CAV_FT_MISSINGVIDEOONLY,
        .need_video = o->cfg.mode != CAV_FT_AUDIOONLY && o->cfg.mode != CAV_FT_MISSINGAUDIOONLY,
        .label_dim = o->cfg.label_dim,
        .nstats = 1,
        .stat_keys = stat_keys,
        .state_keys = state_keys,
        .best_key = "best",
        .best_higher = 1,
        .head_lr = o->head_lr,
        .overlap = 1, /* the share of the batch is in the backward's dloss */
        .ctx = &f,
        .prepare = prepare,
        .init = init,
        .step = step,
        .evaluate = evaluate,
        .score = score,
        .epoch_report = epoch_report,
        .epoch_metrics = epoch_metrics,
        .describe = describe};
    if (cav_ft_eval_check(&o->final, o->run.epochs, err)) return 1;
    if (o->run.force && !o->run.resume && !o->run.loader_only && d->rank == 0)
        cav_ft_eval_clear(o->run.out_dir);
    int rc = cav_train_run(&run, &o->cfg, o->run.batch / d->world, &task, d, err);
    free(f.logits);
    if (!rc && o->run.eval.n && !o->run.loader_only) { /* after the last epoch (not a --max-steps stop) */
        char last[4200];
        snprintf(last, sizeof last, "%s/models/audio_model.%d.safetensors", o->run.out_dir, o->run.epochs);
        cav_ft_eval_setup es = {&o->run, &o->cfg, &o->final, f.by_acc};
        if (cav_dist_max_int(d, d->rank == 0 && access(last, F_OK) == 0)) rc = cav_ft_final_eval(&es, d, err);
    }
    return rc;
}

/* ---- the tool ---------------------------------------------------------------------------------------- */

static int run_tool(const void *o, const cav_dist *d, cav_err *err) {
    return cav_finetune_run(o, d, err);
}

/* --eval-only: the final evaluation of --init alone (cav_ft_eval_model); 0 when training instead */
static int eval_only(void *opts, int *rc) {
    cav_finetune_opts *o = opts;
    cav_err err = {0, ""};
    if (!o->final.eval_only) return 0;
    cav_dist d1 = {0}, *d = &d1;
    d1.world = 1; /* one process evaluates */
    if (cav_model_opts_apply(&o->model, &o->cfg, &err)) cav_usage_error("%s", err.msg);
    if (!o->run.init || !o->run.eval.n || !o->run.out_dir)
        cav_usage_error("--eval-only needs --init MODEL, --eval FILE and --out DIR");
    if (o->run.train.n) cav_usage_error("--eval-only takes no training shards");
    if (o->run.resume) cav_usage_error("--eval-only does not resume");
    if (cav_ft_eval_check(&o->final, 0, &err) || cav_config_check(&o->cfg, &err))
        cav_usage_error("%s", err.msg);
    cav_ft_eval_setup es = {&o->run, &o->cfg, &o->final, metric_is_acc(o)};
    *rc = cav_ft_eval_model(&es, o->run.init, o->run.force, d, &err);
    if (*rc) cav_msg("%s", err.msg);
    free(o->run.train.v), free(o->run.eval.v);
    o->run.train.v = o->run.eval.v = NULL;
    return 1;
}

const cav_train_tool cav_finetune_tool = {
    "cav-finetune",
    "Usage: cav-finetune [OPTION]... --out DIR --init CKPT TRAIN.h5...\n"
    "       cav-finetune --eval-only [OPTION]... --init MODEL --eval FILE... --out DIR\n"
    "Fine-tune CAV-MAE for classification on shards holding fbank (or `wave`), frames and `labels`\n"
    "(f32 [K], shard-pack -j). Defaults are the reference's AS-20K recipe, without mixup. --init takes\n"
    "pretrained parameters (.safetensors from cav-pretrain or a reference .pth): every encoder parameter\n"
    "by name, the head new.\n"
    "\n",
    "      --help, --version\n"
    "\n"
    "Exit status: 0 ok, 1 usage, 2 bad input, 3 internal or resource failure (including a non-finite "
    "loss).\n",
    &cav_finetune_options_of,
    run_tool,
    eval_only};
