/* pretrain.c: see pretrain.h. One step: the rank's slice of the global batch is split into its contrast
 * groups; each group is a forward/backward of the model (the reference's per-GPU replica), whose gradients
 * are accumulated (summed as DataParallel's loss.sum(), or averaged); ranks then sum gradients, and every
 * rank takes the same Adam step. With fewer groups than ranks, a group is spread over consecutive ranks:
 * each runs the model on its rows, the group's contrastive embeddings and MAE sums are gathered so that
 * every rank of the group computes the group's losses, and each backpropagates them through its own rows
 * (the model's split mode); the gradient sum over ranks is then the group's gradient. All randomness is
 * keyed by (seed, epoch, step, group) and a row's place in its group, so a run resumed from a checkpoint
 * repeats the uninterrupted run exactly, and a row draws the same masks whichever rank holds it. */
#include "pretrain.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "augment.h"
#include "checkpoint.h"
#include "cli.h"
#include "json.h"
#include "pth.h"
#include "rng.h"
#include "safetensors.h"
#include "trainio.h"

void cav_pretrain_opts_default(cav_pretrain_opts *o) {
    memset(o, 0, sizeof *o);
    o->cfg = cav_config_default(CAV_TASK_PRETRAIN);
    o->cfg.norm_pix_loss = 1; /* every pretraining script sets it */
    o->batch = 48;
    o->epochs = 25;
    o->sched = (cav_schedule){5e-5, 10, 5, 0.5, 0};
    o->weight_decay = 5e-7;
    o->beta1 = 0.95;
    o->beta2 = 0.999;
    o->adam_eps = 1e-8;
    o->groups = 4; /* the reference trains on 4 GPUs, one contrastive batch each */
    o->seed = 1;
    cav_loader_opts_default(&o->data, 1);
    o->log_every = 100;
    o->keep = 2;
}

/* ---- parameters by name ---------------------------------------------------------------------------- */

static const char *strip_module(const char *name) { return strncmp(name, "module.", 7) == 0 ? name + 7 : name; }

int cav_load_params(cav_model *m, const char *path, int allow_extra, int allow_missing, int *loaded, cav_err *err) {
    int n = 0, rc = 0;
    char *seen = calloc((size_t)m->ntable, 1);
    if (!seen) return cav_fail(err, 3, "out of memory");
    size_t len = strlen(path);
    int is_st = len > 12 && strcmp(path + len - 12, ".safetensors") == 0;
    cav_safetensors st;
    cav_pth pth;
    int count;
    if (is_st) {
        if (cav_st_open(&st, path, err)) return free(seen), -1;
        count = st.n;
    } else {
        if (cav_pth_load(&pth, path, err)) return free(seen), -1;
        count = pth.n;
    }
    for (int i = 0; i < count && rc == 0; i++) {
        const char *name = strip_module(is_st ? st.t[i].name : pth.t[i].name);
        int ndim = is_st ? st.t[i].ndim : pth.t[i].ndim;
        const int64_t *shape = is_st ? st.t[i].shape : pth.t[i].shape;
        cav_param *p = cav_model_param(m, name);
        if (!p) {
            if (!allow_extra) rc = cav_fail(err, 2, "%s: %s: not a parameter of this model", path, name);
            continue;
        }
        int same = ndim == p->ndim;
        for (int d = 0; same && d < ndim; d++) same = shape[d] == p->shape[d];
        if (!same) {
            rc = cav_fail(err, 2, "%s: %s: shape differs from the model's", path, name);
            break;
        }
        if (is_st) {
            float *host = malloc(p->numel * sizeof *host);
            if (!host) rc = cav_fail(err, 3, "out of memory");
            else if (!(rc = cav_st_copy_f32(&st, &st.t[i], host, p->numel, err)))
                cav_model_write_param(m, CAV_BUF_PARAMS, p, host);
            free(host);
            if (rc) break;
        } else {
            cav_model_write_param(m, CAV_BUF_PARAMS, p, pth.t[i].data);
        }
        seen[p - m->table] = 1;
        n++;
    }
    for (int i = 0; i < m->ntable && rc == 0 && !allow_missing; i++)
        if (!seen[i]) rc = cav_fail(err, 2, "%s: parameter %s missing", path, m->table[i].name);
    if (is_st) cav_st_close(&st);
    else cav_pth_free(&pth);
    free(seen);
    if (loaded) *loaded = n;
    return rc;
}

static const cav_pth_tensor *pth_find(const cav_pth *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (strcmp(strip_module(p->t[i].name), name) == 0) return &p->t[i];
    return NULL;
}

/* dst <- src's values from skip_front on (the first rows of a larger matrix, or a table without its cls row). */
static int copy_rows(cav_model *m, const char *dst, const cav_pth *p, const char *src, size_t skip_front,
                     const char *path, cav_err *err) {
    cav_param *d = cav_model_param(m, dst);
    const cav_pth_tensor *s = pth_find(p, src);
    if (!d) return 0; /* the model has no such parameter (e.g. a single-modality variant) */
    if (!s) return cav_fail(err, 2, "%s: %s missing (needed for %s)", path, src, dst);
    if (s->numel < skip_front + d->numel)
        return cav_fail(err, 2, "%s: %s has %zu values, %s needs %zu", path, src, s->numel, dst, d->numel);
    cav_model_write_param(m, CAV_BUF_PARAMS, d, s->data + skip_front);
    return 0;
}

int cav_init_from_mae(cav_model *m, const char *path, cav_err *err) {
    cav_pth p;
    if (cav_pth_load(&p, path, err)) return -1;
    int rc = 0, msd = m->cfg.modality_specific_depth, depth = m->cfg.depth;
    const char *blk[] = {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                         "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                         "mlp.fc2.weight", "mlp.fc2.bias"};
    char src[128], dst[128];
    for (int j = 0; j < depth && !rc; j++)
        for (size_t k = 0; k < sizeof blk / sizeof *blk && !rc; k++) {
            snprintf(src, sizeof src, "blocks.%d.%s", j, blk[k]);
            if (j < msd) { /* MAE block j -> audio and visual block j */
                snprintf(dst, sizeof dst, "blocks_a.%d.%s", j, blk[k]);
                rc = copy_rows(m, dst, &p, src, 0, path, err);
                snprintf(dst, sizeof dst, "blocks_v.%d.%s", j, blk[k]);
                if (!rc) rc = copy_rows(m, dst, &p, src, 0, path, err);
            } else { /* the rest -> joint blocks, whose modality LayerNorms start as the shared ones */
                snprintf(dst, sizeof dst, "blocks_u.%d.%s", j - msd, blk[k]);
                rc = copy_rows(m, dst, &p, src, 0, path, err);
                if (!rc && strncmp(blk[k], "norm", 4) == 0)
                    for (int mod = 0; mod < 2 && !rc; mod++) {
                        snprintf(dst, sizeof dst, "blocks_u.%d.norm%c_%c.%s", j - msd, blk[k][4], mod ? 'v' : 'a', blk[k] + 6);
                        rc = copy_rows(m, dst, &p, src, 0, path, err);
                    }
            }
        }
    const char *same[] = {"decoder_embed.weight", "decoder_embed.bias", "mask_token", "decoder_norm.weight",
                          "decoder_norm.bias", "patch_embed_v.proj.weight", "patch_embed_v.proj.bias"};
    for (size_t k = 0; k < sizeof same / sizeof *same && !rc; k++) {
        char mae[64]; /* the same name in MAE, but patch_embed_v is MAE's patch_embed */
        if (strncmp(same[k], "patch_embed_v", 13) == 0) snprintf(mae, sizeof mae, "patch_embed%s", same[k] + 13);
        else snprintf(mae, sizeof mae, "%s", same[k]);
        rc = copy_rows(m, same[k], &p, mae, 0, path, err);
    }
    for (int i = 0; i < m->cfg.decoder_depth && !rc; i++)
        for (size_t k = 0; k < sizeof blk / sizeof *blk && !rc; k++) {
            snprintf(dst, sizeof dst, "decoder_blocks.%d.%s", i, blk[k]);
            rc = copy_rows(m, dst, &p, dst, 0, path, err);
        }
    for (int k = 0; k < 2 && !rc; k++) {
        const char *suf = k ? "bias" : "weight";
        const char *targets[] = {"norm", "norm_a", "norm_v"};
        for (int t = 0; t < 3 && !rc; t++) {
            snprintf(dst, sizeof dst, "%s.%s", targets[t], suf);
            snprintf(src, sizeof src, "norm.%s", suf);
            rc = copy_rows(m, dst, &p, src, 0, path, err);
        }
        snprintf(dst, sizeof dst, "decoder_pred_a.%s", suf); /* the first 256 rows */
        snprintf(src, sizeof src, "decoder_pred.%s", suf);
        if (!rc) rc = copy_rows(m, dst, &p, src, 0, path, err);
        snprintf(dst, sizeof dst, "decoder_pred_v.%s", suf);
        if (!rc) rc = copy_rows(m, dst, &p, src, 0, path, err);
    }
    /* Position tables without MAE's cls row. */
    if (!rc) rc = copy_rows(m, "pos_embed_v", &p, "pos_embed", (size_t)m->D, path, err);
    if (!rc) rc = copy_rows(m, "decoder_pos_embed_v", &p, "decoder_pos_embed", (size_t)m->Dd, path, err);
    /* The audio patch embedding: MAE's RGB kernels summed over the channel axis. */
    cav_param *pa = cav_model_param(m, "patch_embed_a.proj.weight");
    const cav_pth_tensor *pw = pth_find(&p, "patch_embed.proj.weight");
    if (!rc && pa) {
        if (!pw || pw->ndim != 4 || pw->shape[0] != pa->shape[0] || pw->shape[1] != 3 || pw->shape[2] * pw->shape[3] * 1 != pa->shape[2] * pa->shape[3])
            rc = cav_fail(err, 2, "%s: patch_embed.proj.weight: missing or not [%lld,3,16,16]", path, (long long)pa->shape[0]);
        else {
            size_t K = (size_t)(pw->shape[2] * pw->shape[3]);
            float *sum = malloc(pa->numel * sizeof *sum);
            if (!sum) rc = cav_fail(err, 3, "out of memory");
            for (int64_t o = 0; sum && o < pa->shape[0]; o++)
                for (size_t q = 0; q < K; q++) {
                    const float *w = pw->data + (size_t)o * 3 * K;
                    sum[o * K + q] = w[q] + w[K + q] + w[2 * K + q];
                }
            if (sum) cav_model_write_param(m, CAV_BUF_PARAMS, pa, sum);
            free(sum);
            if (!rc) rc = copy_rows(m, "patch_embed_a.proj.bias", &p, "patch_embed.proj.bias", 0, path, err);
        }
    }
    cav_pth_free(&p);
    return rc;
}

/* ---- training -------------------------------------------------------------------------------------- */

typedef struct {
    double mae_a, mae_v, c, total, acc;
    int64_t n;
} meter;

static void meter_add(meter *mt, double c_acc_mean, double total, double mae_a, double mae_v, double c) {
    mt->mae_a += mae_a, mt->mae_v += mae_v, mt->c += c, mt->total += total, mt->acc += c_acc_mean;
    mt->n++;
}

static double avg(double s, int64_t n) { return n ? s / (double)n : 0.0; }

typedef struct {
    const cav_pretrain_opts *o;
    const cav_dist *d;
    cav_model *m;
    float *acc;          /* accumulated gradients [nparams], when there is more than one group or rank */
    int local_groups;    /* whole groups on this rank (1 when a group is spread over ranks) */
    int gsize;           /* rows of a contrast group */
    int mrows;           /* rows of the model: gsize, or a rank's part of a group spread over ranks */
    cav_dist_block blk;  /* the ranks sharing this rank's group (size 1 when groups are whole) */
    float *grad;         /* one group's gradients read from the model [nparams], with acc */
    float *gca, *gcv;    /* a spread group's contrastive embeddings [gsize,D], then this rank's [mrows,D] */
} trainer;

/* A group spread over ranks: every rank of the group gathers the group's contrastive embeddings and MAE
 * sums and computes the group's losses, as one process over the whole group does. */
static void split_losses(trainer *t) {
    cav_model *m = t->m;
    size_t nd = (size_t)m->B * m->D;
    float *ca = t->gca + (size_t)t->gsize * m->D, *cv = t->gcv + (size_t)t->gsize * m->D;
    double mae[4];
    cav_model_split_embeddings(m, ca, cv, mae);
    if (m->cfg.contrast_loss_weight != 0) {
        cav_dist_block_gather_f32(&t->blk, ca, t->gca, nd);
        cav_dist_block_gather_f32(&t->blk, cv, t->gcv, nd);
    }
    cav_dist_block_sum_f64(&t->blk, mae, 4);
    cav_model_split_losses(m, t->gca, t->gcv, mae);
}

/* Forward (and backward when train) of every local group of a batch slice; returns the summed (or mean)
 * losses over the rank's groups in out[0..4] = total, mae_a, mae_v, c (weighted), c_acc (mean). A group
 * spread over ranks is counted by its first rank only, so that the sum over ranks counts it once. */
static void run_groups(trainer *t, const cav_batch *b, int train, uint64_t key_epoch, uint64_t key_step,
                       double out[5]) {
    cav_model *m = t->m;
    const cav_pretrain_opts *o = t->o;
    size_t A = (size_t)m->T * m->F, V = (size_t)3 * m->S * m->S, rows = (size_t)t->mrows;
    double scale = o->group_mean ? 1.0 / o->groups : 1.0;
    memset(out, 0, 5 * sizeof *out);
    if (train && t->acc) memset(t->acc, 0, m->nparams * sizeof *t->acc);
    for (int g = 0; g < t->local_groups; g++) {
        if (cav_model_input_size(m, CAV_IN_AUDIO))
            cav_model_set_input(m, CAV_IN_AUDIO, b->audio + (size_t)g * rows * A, t->mrows);
        if (cav_model_input_size(m, CAV_IN_VIDEO))
            cav_model_set_input(m, CAV_IN_VIDEO, b->video + (size_t)g * rows * V, t->mrows);
        /* the global group index; a rank holding part of a group draws the masks of its rows from the
         * group's stream, as one process over the whole group would */
        int gid = t->blk.size > 1 ? t->d->rank / t->blk.size : t->d->rank * t->local_groups + g;
        cav_rng r;
        cav_rng_seed(&r, o->seed, CAV_RNG_MASK + (train ? 0 : 100), key_epoch, key_step * 4096 + (uint64_t)gid);
        uint64_t state = cav_rng_u64(&r);
        cav_model_skip_masks(m, &state, t->blk.rank * t->mrows);
        cav_model_random_masks(m, &state);
        cav_model_forward(m);
        if (t->blk.size > 1) split_losses(t);
        if (t->blk.rank == 0) {
            out[0] += scale * m->out.loss;
            out[1] += scale * m->out.loss_mae_a;
            out[2] += scale * m->out.loss_mae_v;
            out[3] += scale * m->out.loss_c;
            out[4] += m->out.c_acc / o->groups;
        }
        if (train) {
            cav_model_backward(m);
            if (t->acc) {
                cav_model_read_buffer(m, CAV_BUF_GRADS, t->grad);
                for (size_t i = 0; i < m->nparams; i++) t->acc[i] += (float)scale * t->grad[i];
            }
        }
    }
}

static char *config_json(const cav_config *c) {
    char *s = malloc(1024);
    if (!s) return NULL;
    const char *mm[] = {"unstructured", "time", "freq", "tf"};
    snprintf(s, 1024,
             "{\"embed_dim\":%d,\"modality_specific_depth\":%d,\"depth\":%d,\"num_heads\":%d,"
             "\"decoder_embed_dim\":%d,\"decoder_depth\":%d,\"decoder_num_heads\":%d,\"mlp_ratio\":%g,"
             "\"norm_pix_loss\":%s,\"tr_pos\":%s,\"mask_ratio_a\":%.17g,\"mask_ratio_v\":%.17g,"
             "\"mae_loss_weight\":%.17g,\"contrast_loss_weight\":%.17g,\"mask_mode\":\"%s\","
             "\"bidirect_contrast\":%s,\"audio_length\":%d,\"img_size\":%d,\"modalities\":\"%s\"}",
             c->embed_dim, c->modality_specific_depth, c->depth, c->num_heads, c->decoder_embed_dim, c->decoder_depth,
             c->decoder_num_heads, c->mlp_ratio, c->norm_pix_loss ? "true" : "false", c->tr_pos ? "true" : "false",
             c->mask_ratio_a, c->mask_ratio_v, c->mae_loss_weight, c->contrast_loss_weight, mm[c->mask_mode],
             c->bidirect_contrast ? "true" : "false", c->audio_length, c->img_size,
             c->use_audio && c->use_video ? "av" : c->use_audio ? "a" : "v");
    return s;
}

typedef struct {
    int epoch;        /* epoch to run next (1-indexed) */
    int64_t batch;    /* batch within it */
    int64_t step;     /* global steps done */
    meter train;      /* the epoch's meters so far */
    double best_eval; /* lowest eval total loss so far */
    int best_epoch;
} position;

static int save_checkpoint(trainer *t, const position *pos, const char *cfgjson, cav_err *err) {
    cav_model *m = t->m;
    char state[2048];
    snprintf(state, sizeof state,
             "{\"epoch\":%d,\"batch\":%lld,\"step\":%lld,\"adam_t\":%d,\"seed\":%llu,"
             "\"train_mae_a\":%.17g,\"train_mae_v\":%.17g,\"train_c\":%.17g,\"train_total\":%.17g,"
             "\"train_acc\":%.17g,\"train_n\":%lld,\"best_eval\":%.17g,\"best_epoch\":%d}\n",
             pos->epoch, (long long)pos->batch, (long long)pos->step, m->adam_t, (unsigned long long)t->o->seed,
             pos->train.mae_a, pos->train.mae_v, pos->train.c, pos->train.total, pos->train.acc,
             (long long)pos->train.n, isfinite(pos->best_eval) ? pos->best_eval : 1e308, pos->best_epoch);
    return cav_train_save_checkpoint(m, t->o->out_dir, pos->epoch, pos->step, cfgjson, state, t->o->keep, err);
}

static int load_checkpoint(trainer *t, const char *dir, position *pos, cav_err *err) {
    cav_model *m = t->m;
    cav_json *j = cav_train_load_checkpoint(m, dir, err);
    if (!j) return -1;
    pos->epoch = (int)cav_json_get_number(j, "epoch", 1);
    pos->batch = (int64_t)cav_json_get_number(j, "batch", 0);
    pos->step = (int64_t)cav_json_get_number(j, "step", 0);
    m->adam_t = (int)cav_json_get_number(j, "adam_t", 0);
    pos->train.mae_a = cav_json_get_number(j, "train_mae_a", 0);
    pos->train.mae_v = cav_json_get_number(j, "train_mae_v", 0);
    pos->train.c = cav_json_get_number(j, "train_c", 0);
    pos->train.total = cav_json_get_number(j, "train_total", 0);
    pos->train.acc = cav_json_get_number(j, "train_acc", 0);
    pos->train.n = (int64_t)cav_json_get_number(j, "train_n", 0);
    pos->best_eval = cav_json_get_number(j, "best_eval", INFINITY);
    pos->best_epoch = (int)cav_json_get_number(j, "best_epoch", 0);
    uint64_t seed = (uint64_t)cav_json_get_number(j, "seed", 0);
    cav_json_free(j);
    if (seed != t->o->seed)
        return cav_fail(err, 1, "%s: the run used --seed %llu; resume with the same seed", dir, (unsigned long long)seed);
    return 0;
}

/* Evaluation with masking, as the reference validates (SPEC 3.1): eval loader, same groups. */
static int evaluate(trainer *t, cav_loader *ev, int epoch, double res[5], cav_err *err) {
    memset(res, 0, 5 * sizeof *res);
    if (cav_loader_begin(ev, epoch, 0, err)) return -1;
    cav_batch b;
    int rc;
    int64_t nb = 0;
    double sums[6] = {0};
    while ((rc = cav_loader_next(ev, &b, err)) == 1) {
        double out[5];
        run_groups(t, &b, 0, (uint64_t)epoch, (uint64_t)nb, out);
        for (int k = 0; k < 5; k++) sums[k] += out[k];
        nb++;
    }
    if (rc < 0) return -1;
    cav_dist_sum_f64(t->d, sums, 5); /* rank parts of each batch: losses add, accuracy means add */
    for (int k = 0; k < 5; k++) res[k] = avg(sums[k], nb);
    return 0;
}

int cav_pretrain_run(const cav_pretrain_opts *o, const cav_dist *d, cav_err *err) {
    int rc = 3;
    trainer t = {o, d, NULL, NULL, 0, 0, 0, {0, 1, NULL}, NULL, NULL, NULL};
    cav_loader *tl = NULL, *ev = NULL;
    char *cfgjson = NULL;
    FILE *metrics = NULL;
    if (o->groups < 1 || o->batch % o->groups) return cav_fail(err, 1, "--batch-size %d is not a multiple of --contrast-groups %d", o->batch, o->groups), 1;
    if (o->groups % d->world && d->world % o->groups)
        return cav_fail(err, 1, "%d contrast groups cannot be spread over %d processes: use a multiple or a divisor of the process count", o->groups, d->world), 1;
    if (o->batch % d->world)
        return cav_fail(err, 1, "--batch-size %d cannot be split over %d processes", o->batch, d->world), 1;
    t.gsize = o->batch / o->groups;
    if (o->groups >= d->world) { /* whole groups on every rank */
        t.local_groups = o->groups / d->world;
        t.mrows = t.gsize;
    } else { /* each group over world/groups ranks */
        t.local_groups = 1;
        t.mrows = o->batch / d->world;
        if (cav_dist_block_open(d, d->world / o->groups, &t.blk))
            return cav_fail(err, 3, "cannot make the communicators of the contrast groups"), 3;
    }
    if (cav_config_check(&o->cfg, err)) return 1;
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
    lo.need_audio = o->cfg.use_audio;
    lo.need_video = o->cfg.use_video;
    lo.label_dim = 0;
    if (!(tl = cav_loader_open(o->train, o->ntrain, &lo, err))) return err->code;
    if (o->loader_only) { /* the data pipeline's own rate, to compare with the training step's */
        double t0 = cav_now(), wait = 0;
        int64_t n = 0;
        cav_batch b;
        int got;
        if (cav_loader_begin(tl, 1, 0, err)) goto fail_data;
        while ((got = cav_loader_next(tl, &b, err)) == 1) n += b.n, wait += b.wait_s;
        if (got < 0) goto fail_data;
        double el = cav_now() - t0;
        printf("loader: %lld samples in %.2f s: %.2f samples/s with %d threads\n", (long long)n, el, el > 0 ? n / el : 0,
               lo.threads);
        rc = 0;
        goto done;
    }
    if (o->neval) {
        cav_loader_opts le = lo;
        le.train = 0;
        le.noise = le.roll = 0;
        le.freqm = le.timem = 0;
        le.frame = o->data.frame;
        if (!(ev = cav_loader_open(o->eval, o->neval, &le, err))) {
            rc = err->code;
            goto done;
        }
    }
    t.m = cav_model_create(&o->cfg, t.mrows, err);
    if (!t.m) {
        rc = err->code ? err->code : 3;
        goto done;
    }
    cav_model *m = t.m;
    if (t.blk.size > 1 && (cav_model_split(m, t.gsize, t.blk.rank * t.mrows) ||
                           !(t.gca = malloc((size_t)(t.gsize + t.mrows) * m->D * sizeof *t.gca)) ||
                           !(t.gcv = malloc((size_t)(t.gsize + t.mrows) * m->D * sizeof *t.gcv)))) {
        cav_fail(err, 3, "out of memory for the gathered contrastive embeddings");
        goto done;
    }
    if (cav_model_alloc_adam(m)) {
        cav_fail(err, 3, "out of memory for the optimiser state");
        goto done;
    }
    if (o->groups > 1 || d->world > 1 || t.local_groups > 1) {
        t.acc = malloc(m->nparams * sizeof *t.acc);
        t.grad = malloc(m->nparams * sizeof *t.grad);
        if (!t.acc || !t.grad) {
            cav_fail(err, 3, "out of memory for the gradient accumulator");
            goto done;
        }
    }
    cfgjson = config_json(&o->cfg);
    if (cav_mkdirs(o->out_dir, err)) goto done;
    char path[4200];
    position pos = {1, 0, 0, {0, 0, 0, 0, 0, 0}, INFINITY, 0};
    char ck[4096];
    int have = o->resume ? cav_ckpt_latest(o->out_dir, ck, sizeof ck, err) : 0;
    if (have < 0) goto done;
    if (have) {
        if (load_checkpoint(&t, ck, &pos, err)) {
            rc = err->code;
            goto done;
        }
        if (d->rank == 0) cav_msg("resuming from %s: epoch %d, batch %lld, step %lld", ck, pos.epoch, (long long)pos.batch, (long long)pos.step);
    } else {
        cav_model_init(m, o->seed);
        if (o->init_mae && cav_init_from_mae(m, o->init_mae, err)) {
            rc = err->code;
            goto done;
        }
        int nl = 0;
        if (o->init && cav_load_params(m, o->init, 1, 1, &nl, err)) {
            rc = err->code;
            goto done;
        }
        if (o->init && nl == 0) {
            cav_fail(err, 2, "%s: no parameter of this model in the file", o->init);
            rc = 2;
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
        cav_msg("%lld training rows, %lld steps per epoch, batch %d in %d contrast groups of %d (%s), %d process%s%s",
                (long long)cav_loader_rows(tl), (long long)cav_loader_batches(tl), o->batch, o->groups, t.gsize,
                o->group_mean ? "mean" : "sum", d->world, d->world > 1 ? "es" : "",
                t.blk.size > 1 ? ", each group over several (embeddings gathered)" : "");
        snprintf(path, sizeof path, "%s/metrics.jsonl", o->out_dir);
        metrics = fopen(path, "a");
        if (!metrics) {
            cav_fail(err, 3, "%s: %s", path, strerror(errno));
            goto done;
        }
    }
    int64_t steps_done_here = 0;
    for (; pos.epoch <= o->epochs; pos.epoch++, pos.batch = 0) {
        double lr = cav_schedule_lr(&o->sched, pos.epoch, pos.step);
        if (cav_loader_begin(tl, pos.epoch, pos.batch, err)) goto fail_data;
        cav_progress *pr = d->rank == 0 ? cav_progress_start("steps", cav_loader_batches(tl) - pos.batch) : NULL;
        double win[5] = {0}, wait = 0, compute = 0, t_win = cav_now();
        int64_t win_n = 0;
        cav_batch b;
        int got;
        while ((got = cav_loader_next(tl, &b, err)) == 1) {
            double t0 = cav_now(), out[5];
            lr = cav_schedule_lr(&o->sched, pos.epoch, pos.step);
            run_groups(&t, &b, 1, (uint64_t)pos.epoch, (uint64_t)pos.step, out);
            if (t.acc) {
                cav_dist_sum_f32(d, t.acc, m->nparams);
                cav_model_write_buffer(m, CAV_BUF_GRADS, t.acc);
            }
            cav_dist_sum_f64(d, out, 5);
            int bad = !isfinite(out[0]) || !cav_model_grads_finite(m);
            if (cav_dist_max_int(d, bad)) {
                char last[4096] = "none";
                cav_ckpt_latest(o->out_dir, last, sizeof last, NULL);
                cav_fail(err, 3, "epoch %d step %lld: non-finite %s; stopping (last good checkpoint: %s)", pos.epoch,
                         (long long)pos.step + 1, isfinite(out[0]) ? "gradient" : "loss", last);
                cav_progress_end(pr);
                goto done;
            }
            /* parameters the loss never reaches are skipped, as PyTorch's Adam skips grad None */
            cav_model_adam_step(m, lr, 1.0, o->beta1, o->beta2, o->adam_eps, o->weight_decay);
            pos.step++;
            pos.batch++;
            steps_done_here++;
            meter_add(&pos.train, out[4], out[0], out[1], out[2], out[3]);
            for (int k = 0; k < 5; k++) win[k] += out[k];
            win_n++;
            wait += b.wait_s;
            compute += cav_now() - t0;
            cav_progress_add(pr, 1);
            if (metrics && o->log_every > 0 && pos.step % o->log_every == 0) {
                double el = cav_now() - t_win;
                fprintf(metrics,
                        "{\"epoch\":%d,\"step\":%lld,\"loss\":%.6g,\"loss_mae_a\":%.6g,\"loss_mae_v\":%.6g,"
                        "\"loss_c\":%.6g,\"c_acc\":%.6g,\"lr\":%.6g,\"samples_per_s\":%.4g,\"data_wait_s\":%.4g,"
                        "\"compute_s\":%.4g}\n",
                        pos.epoch, (long long)pos.step, win[0] / win_n, win[1] / win_n, win[2] / win_n, win[3] / win_n,
                        win[4] / win_n, lr, el > 0 ? (double)win_n * o->batch / el : 0, wait, compute);
                fflush(metrics);
                memset(win, 0, sizeof win);
                win_n = 0;
                wait = compute = 0;
                t_win = cav_now();
            }
            int stop = o->max_steps > 0 && steps_done_here >= o->max_steps;
            int last_of_epoch = pos.batch == cav_loader_batches(tl);
            if (!last_of_epoch && ((o->save_every > 0 && pos.step % o->save_every == 0) || stop)) {
                if (d->rank == 0 && save_checkpoint(&t, &pos, cfgjson, err)) goto done;
            }
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
        if (ev && evaluate(&t, ev, pos.epoch, evr, err)) goto fail_data;
        if (d->rank == 0) {
            snprintf(path, sizeof path, "%s/result.csv", o->out_dir);
            FILE *f = fopen(path, "a");
            if (!f) {
                cav_fail(err, 3, "%s: %s", path, strerror(errno));
                goto done;
            }
            int64_t n = pos.train.n;
            /* The reference's columns (SPEC 3.6); the lr printed is the one used in this epoch. */
            fprintf(f, "%.8g,%.8g,%.8g,%.8g,%.8g,%.8g,%.8g,%.8g,%.8g,%.8g\n", avg(pos.train.mae_a, n),
                    avg(pos.train.mae_v, n), avg(pos.train.c, n), avg(pos.train.total, n), evr[1], evr[2], evr[3],
                    evr[0], evr[4], lr);
            if (fclose(f)) {
                cav_fail(err, 3, "%s: write failed", path);
                goto done;
            }
            cav_msg("epoch %d: train loss %.4f (a %.4f v %.4f c %.4f)%s eval loss %.4f (a %.4f v %.4f c %.4f) c_acc %.4f",
                    pos.epoch, avg(pos.train.total, n), avg(pos.train.mae_a, n), avg(pos.train.mae_v, n),
                    avg(pos.train.c, n), ev ? "" : " (no eval set)", evr[0], evr[1], evr[2], evr[3], evr[4]);
            snprintf(path, sizeof path, "%s/models", o->out_dir);
            if (cav_mkdirs(path, err)) goto done;
            snprintf(path, sizeof path, "%s/models/audio_model.%d.safetensors", o->out_dir, pos.epoch);
            if (cav_train_save_model(m, path, cfgjson, err)) goto done;
            if (ev && evr[0] < pos.best_eval) {
                pos.best_eval = evr[0];
                pos.best_epoch = pos.epoch;
                snprintf(path, sizeof path, "%s/models/best_audio_model.safetensors", o->out_dir);
                if (cav_train_save_model(m, path, cfgjson, err)) goto done;
            }
        }
        position next = pos;
        next.epoch = pos.epoch + 1;
        next.batch = 0;
        memset(&next.train, 0, sizeof next.train);
        if (d->rank == 0 && save_checkpoint(&t, &next, cfgjson, err)) goto done;
        pos.train = next.train;
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
    free(cfgjson);
    free(t.acc), free(t.grad), free(t.gca), free(t.gcv);
    cav_model_free(t.m);
    cav_dist_block_close(&t.blk);
    cav_loader_close(tl);
    cav_loader_close(ev);
    if (rc && !err->msg[0]) cav_fail(err, rc, "failed");
    return rc;
}
