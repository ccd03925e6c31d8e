/* pretrain.c: see pretrain.h. One step: the rank's slice of the global batch is split into its contrast
 * groups, run by the driver's group loop (their gradients summed as DataParallel's loss.sum(), or
 * averaged). With fewer groups than ranks, a group is spread over consecutive ranks (the model's split
 * mode). All randomness is keyed by (seed, epoch, step, group) and a row's place in its group, so a run
 * resumed from a checkpoint repeats the uninterrupted run exactly, and a row draws the same masks whichever
 * rank holds it. */
#include "pretrain.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "debugstate.h"
#include "rng.h"
#include "weights.h"

static const cav_opt_choice reduces[] = {{"sum", 0}, {"mean", 1}, {NULL, 0}};

CAV_KNOB_NUMBER(knob_cw, "contrast_loss_weight", 0, 1e6)
CAV_KNOB_NUMBER(knob_mw, "mae_loss_weight", 0, 1e6)
CAV_KNOB_NUMBER(knob_mra, "mask_ratio_a", 0, 0.99)
CAV_KNOB_NUMBER(knob_mrv, "mask_ratio_v", 0, 0.99)
CAV_KNOB_FIXED(knob_np, "norm_pix_loss", "true")
CAV_KNOB_FIXED(knob_nnp, "norm_pix_loss", "false")
CAV_KNOB_FIXED(knob_bidi, "bidirect_contrast", "true")
static int knob_mm(const char *s, void *f, char *why, size_t n) {
    if (cav_mask_mode_parse(s) < 0)
        return snprintf(why, n, "unstructured, time, freq or tf, not '%s'", s), -1;
    return cav_knob_add(f, "mask_mode", s, why, n);
}

#define PRE(f) offsetof(cav_pretrain_opts, f)
static const cav_opt pretrain_table[] = {
    {.name = "init-from-mae",
     .type = CAV_OPTT_STRING,
     .offset = PRE(init_mae),
     .arg = "FILE",
     .help = "start from an ImageNet MAE ViT-B .pth, mapped as the paper",
     .key = "init_from_mae"},
    {.name = "contrast-groups",
     .type = CAV_OPTT_INT,
     .offset = PRE(groups),
     .def = "4",
     .min = 1,
     .max = 1 << 20,
     .arg = "G",
     .help = "contrastive groups per batch (the reference's 4 GPUs); a multiple\nor a divisor of the "
             "MPI processes (fewer: each group spans several)",
     .key = "contrast_groups"},
    {.name = "group-reduce",
     .type = CAV_OPTT_CHOICE,
     .offset = PRE(group_mean),
     .def = "sum",
     .arg = "sum|mean",
     .choices = reduces,
     .help = "how group losses combine",
     .key = "group_reduce"},
    {.name = "check-debug-state",
     .type = CAV_OPTT_CUSTOM,
     .offset = PRE(checks),
     .arg = "FILE",
     .parse = cav_train_paths_parse,
     .format = cav_train_paths_format,
     .help = "compare the C model with a PyTorch debug state (repeatable); exit 0\nwithin tolerance (losses "
             "1e-5, "
             "gradients 1e-4 relative), 2 otherwise"},
    {0},
};
#undef PRE

static const cav_opt knob_table[] = {
    {.name = "variant",
     .type = CAV_OPTT_STRING,
     .offset = offsetof(cav_model_opts, variant),
     .arg = "NAME",
     .help = "cav-mae (default), av-mae, vanilla-av-mae, cav, audio-mae, visual-mae",
     .key = "variant"},
    {.name = "contrast-weight",
     .type = CAV_OPTT_CUSTOM,
     .arg = "W",
     .parse = knob_cw,
     .help = "lambda_c (0.01)"},
    {.name = "mae-weight",
     .type = CAV_OPTT_CUSTOM,
     .arg = "W",
     .parse = knob_mw,
     .help = "weight of the reconstruction loss (1)"},
    {.name = "mask-ratio-a",
     .type = CAV_OPTT_CUSTOM,
     .arg = "R",
     .parse = knob_mra,
     .help = "audio mask ratio (0.75; 0 only with --mae-weight 0)"},
    {.name = "mask-ratio-v",
     .type = CAV_OPTT_CUSTOM,
     .arg = "R",
     .parse = knob_mrv,
     .help = "visual mask ratio (0.75; 0 only with --mae-weight 0)"},
    {.name = "mask-mode",
     .type = CAV_OPTT_CUSTOM,
     .arg = "MODE",
     .parse = knob_mm,
     .help = "audio masking: unstructured (default), time, freq, tf"},
    {.name = "norm-pix-loss",
     .type = CAV_OPTT_CUSTOM,
     .parse = knob_np,
     .help = "per-patch normalised targets (default)"},
    {.name = "no-norm-pix-loss",
     .type = CAV_OPTT_CUSTOM,
     .parse = knob_nnp,
     .help = "raw reconstruction targets"},
    {.name = "bidirect-contrast",
     .type = CAV_OPTT_CUSTOM,
     .parse = knob_bidi,
     .help = "symmetric contrastive loss"},
    {0},
};

const cav_train_options_of cav_pretrain_options_of =
    CAV_TRAIN_OPTIONS_OF(cav_pretrain_opts, pretrain_table, knob_table, CAV_TASK_PRETRAIN);

typedef struct {
    const cav_pretrain_opts *o;
    const cav_dist *d;
    cav_groups g;
    cav_dist_block blk; /* the ranks sharing this rank's group (size 1 when groups are whole) */
    int gsize;          /* rows of a contrast group */
    int mrows;          /* rows of the model: gsize, or a rank's part of a group spread over ranks */
    /* the batch the group loop is running */
    const cav_batch *b;
    int train;
    uint64_t key_epoch, key_step;
} pretrainer;

/* A group's rows and masks: the global group index keys the masks; a rank holding part of a group draws
 * the masks of its rows from the group's stream, as one process over the whole group would. */
static void fill(void *ctx, cav_model *m, int g) {
    pretrainer *p = ctx;
    cav_train_set_inputs(m, p->b, g * p->mrows, p->mrows);
    int gid = p->blk.size > 1 ? p->d->rank / p->blk.size : p->d->rank * p->g.ngroups + g;
    cav_rng r;
    cav_rng_seed(&r, p->o->run.seed, CAV_RNG_MASK + (p->train ? 0 : 100), p->key_epoch,
                 p->key_step * 4096 + (uint64_t)gid);
    uint64_t state = cav_rng_u64(&r);
    cav_model_skip_masks(m, &state, p->blk.rank * p->mrows);
    cav_model_random_masks(m, &state);
}

static void run(pretrainer *p, cav_model *m, const cav_batch *b, int train, uint64_t epoch, uint64_t step,
                double out[6]) {
    p->b = b, p->train = train, p->key_epoch = epoch, p->key_step = step;
    cav_groups_run(&p->g, m, train, fill, NULL, p, out);
}

static int prepare(cav_trainer *t, cav_err *err) {
    pretrainer *p = t->task->ctx;
    if (p->blk.size > 1 && cav_model_split(t->m, p->gsize, p->blk.rank * p->mrows))
        return cav_fail(err, 3, "out of memory for the gathered contrastive embeddings");
    if (cav_groups_alloc(&p->g, t->m, p->gsize))
        return cav_fail(err, 3, "out of memory for the contrast groups");
    return 0;
}

static int init(cav_trainer *t, cav_err *err) {
    pretrainer *p = t->task->ctx;
    const char *from = p->o->run.init;
    int nl = 0;
    if (p->o->init_mae && cav_weights_from_mae(t->m, p->o->init_mae, err)) return -1;
    if (from && cav_weights_load_path(t->m, from, 1, 1, &nl, err)) return -1;
    if (from && nl == 0) return cav_fail(err, 2, "%s: no parameter of this model in the file", from);
    return 0;
}

/* stats: total, mae_a, mae_v, c (weighted), c_acc (mean) */
static void step(cav_trainer *t, const cav_batch *b, int epoch, int64_t stepi, double *stats) {
    double out[6];
    run(t->task->ctx, t->m, b, 1, (uint64_t)epoch, (uint64_t)stepi, out);
    memcpy(stats, out, 5 * sizeof *stats);
}

/* Evaluation with masking, as the reference validates (cav-numerics(7) 3.1): eval loader, same groups. res as
 * stats. */
static int evaluate(cav_trainer *t, cav_loader *ev, int epoch, double *res, cav_err *err) {
    if (cav_loader_begin(ev, epoch, 0, err)) return -1;
    cav_batch b;
    int rc;
    int64_t nb = 0;
    double sums[5] = {0};
    while ((rc = cav_loader_next(ev, &b, err)) == 1) {
        double out[6];
        run(t->task->ctx, t->m, &b, 0, (uint64_t)epoch, (uint64_t)nb, out);
        for (int k = 0; k < 5; k++) sums[k] += out[k];
        nb++;
    }
    if (rc < 0) return -1;
    cav_dist_sum_f64(t->d, sums, 5); /* rank parts of each batch: losses add, accuracy means add */
    for (int k = 0; k < 5; k++) res[k] = nb ? sums[k] / (double)nb : 0.0;
    return 0;
}

static double score(const cav_trainer *t, const double *res) {
    return (void)t, res[0];
}

static void epoch_report(const cav_trainer *t, const double *tr, const double *ev, double lr, char *row,
                         size_t nrow, char *msg, size_t nmsg) {
    static const double none[5] = {0};
    const double *e = ev ? ev : none;
    (void)t;
    /* The reference's columns (cav-numerics(7) 3.6); the lr printed is the one used in this epoch. */
    snprintf(row, nrow, "%.8g,%.8g,%.8g,%.8g,%.8g,%.8g,%.8g,%.8g,%.8g,%.8g", tr[1], tr[2], tr[3], tr[0], e[1],
             e[2], e[3], e[0], e[4], lr);
    int k = snprintf(msg, nmsg, "train loss %.4f (a %.4f v %.4f c %.4f) c_acc %.4f", tr[0], tr[1], tr[2],
                     tr[3], tr[4]);
    if (k < 0 || (size_t)k >= nmsg) return;
    if (ev)
        snprintf(msg + k, nmsg - k, "; eval loss %.4f (a %.4f v %.4f c %.4f) c_acc %.4f", e[0], e[1], e[2],
                 e[3], e[4]);
    else
        snprintf(msg + k, nmsg - k, " (no eval set)");
}

static void describe(const cav_trainer *t, char *out, size_t n) {
    const pretrainer *p = t->task->ctx;
    snprintf(out, n, "; %d contrast groups of %d (%s)%s", p->o->groups, p->gsize,
             p->o->group_mean ? "mean" : "sum",
             p->blk.size > 1 ? ", each group over several processes (embeddings gathered)" : "");
}

/* A ratio of 0 masks nothing: the reconstruction loss, a mean over the masked patches (cav-numerics(7) 2.9),
 * is 0/0 in the reference and would stop the run at its first step. */
static int check_mask_ratios(const cav_config *c, cav_err *err) {
    if (c->mae_loss_weight == 0) return 0;
    if (c->use_audio && c->mask_ratio_a == 0)
        return cav_fail(err, 1,
                        "--mask-ratio-a 0 masks no audio patch, and the reconstruction loss is a mean "
                        "over masked patches (0/0): use a ratio above 0, or --mae-weight 0");
    if (c->use_video && c->mask_ratio_v == 0)
        return cav_fail(err, 1,
                        "--mask-ratio-v 0 masks no visual patch, and the reconstruction loss is a mean "
                        "over masked patches (0/0): use a ratio above 0, or --mae-weight 0");
    return 0;
}

int cav_pretrain_run(const cav_pretrain_opts *o, const cav_dist *d, cav_err *err) {
    pretrainer p = {o, d, {0}, {0, 1, NULL, NULL, NULL}, 0, 0, NULL, 0, 0, 0};
    const int batch = o->run.batch;
    if (o->groups < 1 || batch % o->groups)
        return cav_fail(err, 1, "--batch-size %d is not a multiple of --contrast-groups %d", batch,
                        o->groups),
               1;
    if (o->groups % d->world && d->world % o->groups)
        return cav_fail(err, 1,
                        "%d contrast groups cannot be spread over %d processes: use a multiple or a divisor "
                        "of the process count",
                        o->groups, d->world),
               1;
    if (batch % d->world)
        return cav_fail(err, 1, "--batch-size %d cannot be split over %d processes", batch, d->world), 1;
    if (check_mask_ratios(&o->cfg, err)) return 1;
    p.gsize = batch / o->groups;
    p.g.groups_total = o->groups;
    p.g.scale = o->group_mean ? 1.0 / o->groups : 1.0;
    /* one process emulates the bf16 exchange over its groups, each as one rank of one group would send it */
    p.g.bf16_groups = d->world == 1 && o->run.grad_dtype == CAV_DIST_BF16;
    if (o->groups >= d->world) { /* whole groups on every rank */
        p.g.ngroups = o->groups / d->world;
        p.mrows = p.gsize;
    } else { /* each group over world/groups ranks */
        p.g.ngroups = 1;
        p.mrows = batch / d->world;
        if (cav_dist_block_open(d, d->world / o->groups, &p.blk))
            return cav_fail(err, 3, "cannot make the communicators of the contrast groups"), 3;
        p.g.blk = &p.blk;
    }
    static const char *const stat_keys[] = {"loss", "loss_mae_a", "loss_mae_v", "loss_c", "c_acc"};
    static const char *const state_keys[] = {"train_total", "train_mae_a", "train_mae_v", "train_c",
                                             "train_acc"};
    cav_train_task task = {.need_audio = o->cfg.use_audio,
                           .need_video = o->cfg.use_video,
                           .nstats = 5,
                           .stat_keys = stat_keys,
                           .state_keys = state_keys,
                           .best_key = "best_eval",
                           .head_lr = 1.0,
                           .overlap =
                               p.g.ngroups == 1 && p.g.scale == 1.0, /* else summed on the host after */
                           .ctx = &p,
                           .prepare = prepare,
                           .init = init,
                           .step = step,
                           .evaluate = evaluate,
                           .score = score,
                           .epoch_report = epoch_report,
                           .describe = describe};
    int rc = cav_train_run(&o->run, &o->cfg, p.mrows, &task, d, err);
    cav_groups_free(&p.g);
    cav_dist_block_close(&p.blk);
    return rc;
}

/* ---- the tool ---------------------------------------------------------------------------------------- */

static int run_tool(const void *o, const cav_dist *d, cav_err *err) {
    return cav_pretrain_run(o, d, err);
}

/* --check-debug-state instead of training: the worst exit code over the files. */
static int check_states(void *opts, int *rc) {
    cav_pretrain_opts *o = opts;
    cav_err berr = {0, ""};
    cav_backend *be = o->checks.n ? cav_backend_open(o->run.device, &berr) : NULL;
    *rc = 0;
    if (o->checks.n && !be) { /* names --device */
        cav_msg("%s", berr.msg);
        *rc = berr.code ? berr.code : 1;
    }
    for (int i = 0; be && i < o->checks.n; i++) {
        cav_debug_report rep;
        cav_err err = {0, ""};
        int r = cav_debug_state_check(be, o->checks.v[i], stdout, &rep, &err);
        if (r) cav_msg("%s", err.msg);
        if (r > *rc) *rc = r;
    }
    free(o->checks.v);
    return o->checks.n > 0;
}

const cav_train_tool cav_pretrain_tool = {
    "cav-pretrain",
    "Usage: cav-pretrain [OPTION]... --out DIR TRAIN.h5...\n"
    "       cav-pretrain --check-debug-state FILE...\n"
    "Pretrain CAV-MAE (or one of the paper's baselines) on shards holding fbank (or the 16 kHz waveform\n"
    "`wave`, whose fbank the loader then computes as fbank(1) does) and frames. Defaults are the "
    "reference's.\n"
    "\n",
    "      --help, --version\n"
    "\n"
    "Exit status: 0 ok, 1 usage, 2 bad input or outside tolerance, 3 internal or resource failure\n"
    "(including a non-finite loss).\n",
    &cav_pretrain_options_of,
    run_tool,
    check_states};
