/* debugstate.c: see debugstate.h. The config is applied by cav_config_from_json (a key the C model does not
 * know is an error rather than silently ignored), the parameters by the weights module, and the batch runs
 * in its contrast groups through cav_groups_run, the loop the pretraining step runs. */
#include "debugstate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"
#include "model.h"
#include "train.h"
#include "weights.h"

/* Config keys of the debug state that are not the model's: the batch, the optimiser run, the groups. */
static int not_model_key(const char *key) {
    return strcmp(key, "batch") == 0 || strncmp(key, "adam_", 5) == 0 || strcmp(key, "contrast_groups") == 0;
}

/* The file's tensors that are not parameters. */
static int not_param(const char *name, void *ctx) {
    (void)ctx;
    return strncmp(name, "in.", 3) == 0 || strncmp(name, "out.", 4) == 0 || strncmp(name, "grad.", 5) == 0 ||
           strncmp(name, "final.", 6) == 0 || strncmp(name, "autocast.", 9) == 0;
}

/* max |a-b| and that over max |b|. */
static void compare(const float *c, const float *p, size_t n, double *max_abs, double *rel) {
    double ma = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)c[i] - (double)p[i]);
        if (!(d <= ma)) ma = d; /* NaN sticks */
        if (fabs((double)p[i]) > mb) mb = fabs((double)p[i]);
    }
    *max_abs = ma;
    *rel = mb > 0 ? ma / mb : (ma > 0 ? INFINITY : 0);
    if (isnan(ma)) *rel = NAN;
}

/* ||c - p|| / ||p|| (2-norms; 0 for two zero tensors) */
static double rel_l2(const float *c, const float *p, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)c[i] - (double)p[i];
        d += e * e, r += (double)p[i] * p[i];
    }
    return r > 0 ? sqrt(d / r) : (d > 0 ? INFINITY : 0);
}

static double worse(double a, double b) {
    return isnan(a) || isnan(b) ? NAN : (a > b ? a : b);
}

static const char *const tensors[] = {"pred_a", "pred_v", "logits"};

/* The whole batch of the file, handed to the groups one slice at a time; their tensor outputs gathered. */
typedef struct {
    int ft;
    size_t ga, gv, gka, gkv, gl; /* a group's elements of each input */
    float *fa, *fv, *fl;
    int64_t *fka, *fkv;
    float *gath[3]; /* pred_a, pred_v, logits over the groups */
    size_t gsz[3];
    int G, oom;
} batch_in;

static void fill(void *ctx, cav_model *m, int g) {
    batch_in *b = ctx;
    if (b->ga) cav_model_set_input(m, CAV_IN_AUDIO, b->fa + g * b->ga, m->B);
    if (b->gv) cav_model_set_input(m, CAV_IN_VIDEO, b->fv + g * b->gv, m->B);
    if (!b->ft) {
        if (b->gka) cav_model_set_input(m, CAV_IN_KEEP_A, b->fka + g * b->gka, m->B);
        if (b->gkv) cav_model_set_input(m, CAV_IN_KEEP_V, b->fkv + g * b->gkv, m->B);
    } else
        cav_model_set_input(m, CAV_IN_LABELS, b->fl + g * b->gl, m->B);
}

static void seen(void *ctx, cav_model *m, int g) {
    batch_in *b = ctx;
    for (int k = 0; k < 3; k++) {
        int64_t sh[4];
        int nd;
        int n = cav_model_output_shape(m, tensors[k], sh, &nd);
        if (n < 0) continue;
        if (!b->gath[k]) {
            b->gsz[k] = (size_t)n;
            if (!(b->gath[k] = malloc(b->G * (size_t)n * sizeof(float)))) {
                b->oom = 1;
                continue;
            }
        }
        cav_model_read_output(m, tensors[k], b->gath[k] + g * b->gsz[k]);
    }
}

int cav_debug_state_check(cav_backend *be, const char *path, FILE *out, cav_debug_report *rep, cav_err *err) {
    memset(rep, 0, sizeof *rep);
    cav_weights w;
    if (cav_weights_open(&w, path, err)) return err->code;
    const char *fmt = cav_weights_meta(&w, "format"), *cfgtext = cav_weights_meta(&w, "config");
    const char *tool = cav_tool();
    int rc = 2;
    cav_model *m = NULL, *fm = NULL;
    cav_json *cj = NULL;
    batch_in in = {0};
    cav_groups grp = {0};
    float *buf = NULL, *host = NULL, *feat = NULL;
    if (!w.is_st || !fmt || strcmp(fmt, "cav-debug-state/1")) {
        cav_fail(err, 2, "%s: metadata format is not cav-debug-state/1", path);
        goto done;
    }
    char jerr[256];
    cj = cfgtext ? cav_json_parse(cfgtext, strlen(cfgtext), jerr, sizeof jerr) : NULL;
    if (!cj || cj->type != CAV_JSON_OBJECT) {
        cav_fail(err, 2, "%s: metadata config: %s", path, cj ? "not an object" : cfgtext ? jerr : "missing");
        goto done;
    }
    int ft = cav_json_get(cj, "label_dim") != NULL;
    cav_config cfg = cav_config_default(ft ? CAV_TASK_FINETUNE : CAV_TASK_PRETRAIN);
    int batch = (int)cav_json_get_number(cj, "batch", 0);
    if (cav_config_from_json(&cfg, cj, path, "config", not_model_key, err)) goto done;
    const cav_st_tensor *ta = cav_st_find(&w.st, "in.audio"), *tv = cav_st_find(&w.st, "in.video");
    if (!ta || ta->ndim != 3) {
        cav_fail(err, 2, "%s: in.audio: missing or not [B, T, F]", path);
        goto done;
    }
    if (batch && batch != ta->shape[0]) {
        cav_fail(err, 2, "%s: in.audio: batch %lld, config says %d", path, (long long)ta->shape[0], batch);
        goto done;
    }
    cav_err cerr;
    if (cav_config_check(&cfg, &cerr)) {
        cav_fail(err, 2, "%s: config: %s", path, cerr.msg);
        goto done;
    }
    int G = (int)cav_json_get_number(cj, "contrast_groups", 1);
    if (G < 1 || ta->shape[0] % G) {
        cav_fail(err, 2, "%s: contrast_groups %d does not divide the batch %lld", path, G,
                 (long long)ta->shape[0]);
        goto done;
    }
    m = cav_model_create_on(be, &cfg, (int)ta->shape[0] / G, err);
    if (!m) {
        rc = err->code ? err->code : 3;
        goto done;
    }
    /* A bf16 state (gen_bf16_states.py) is run in bf16 and judged with the bf16 tolerances. */
    const char *prec = cav_weights_meta(&w, "precision");
    int bf16 = prec && strcmp(prec, "bf16") == 0;
    if (prec && !bf16 && strcmp(prec, "fp32")) {
        cav_fail(err, 2, "%s: metadata precision %.32s: expected fp32 or bf16", path, prec);
        goto done;
    }
    double tol_loss = bf16 ? CAV_DEBUG_TOL_LOSS_BF16 : CAV_DEBUG_TOL_LOSS,
           tol_grad = bf16 ? CAV_DEBUG_TOL_GRAD_BF16 : CAV_DEBUG_TOL_GRAD;
    if (bf16 && cav_model_set_precision(m, 1)) {
        cav_fail(err, 3, "out of memory");
        rc = 3;
        goto done;
    }
    /* Parameters: every model parameter must be in the file, and the file must hold no other. */
    cav_weights_load_opts lo = {.ignore = not_param};
    if (cav_weights_load(m, &w, &lo, err)) goto done;
    /* Inputs, whole batch; the model runs them in G groups (the reference's per-GPU replicas: losses summed,
     * c_acc averaged, gradients of the sum). A single-modality model reads only its own input. */
    int B = (int)ta->shape[0], Bg = m->B;
    in.ft = ft, in.G = G;
    in.ga = (size_t)Bg * cav_model_input_size(m, CAV_IN_AUDIO),
    in.gv = (size_t)Bg * cav_model_input_size(m, CAV_IN_VIDEO);
    in.gka = ft ? 0 : (size_t)Bg * cav_model_input_size(m, CAV_IN_KEEP_A);
    in.gkv = ft ? 0 : (size_t)Bg * cav_model_input_size(m, CAV_IN_KEEP_V);
    in.gl = ft ? (size_t)Bg * cfg.label_dim : 0;
    in.fa = malloc((G * in.ga + 1) * sizeof *in.fa), in.fv = malloc((G * in.gv + 1) * sizeof *in.fv);
    in.fl = malloc((G * in.gl + 1) * sizeof *in.fl);
    in.fka = malloc((G * in.gka + 1) * sizeof *in.fka), in.fkv = malloc((G * in.gkv + 1) * sizeof *in.fkv);
    host = malloc(m->nparams * sizeof *host);
    grp.ngroups = grp.groups_total = G;
    grp.scale = 1.0;
    if (!in.fa || !in.fv || !in.fl || !in.fka || !in.fkv || !host || cav_groups_alloc(&grp, m, Bg)) {
        cav_fail(err, 3, "out of memory");
        rc = 3;
        goto done;
    }
    if (in.ga && cav_st_copy_f32(&w.st, ta, in.fa, G * in.ga, err)) goto done;
    if (in.gv && (!tv || cav_st_copy_f32(&w.st, tv, in.fv, G * in.gv, err))) {
        if (!tv) cav_fail(err, 2, "%s: in.video missing", path);
        goto done;
    }
    if (!ft) {
        const cav_st_tensor *ka = cav_st_find(&w.st, "in.keep_a"), *kv = cav_st_find(&w.st, "in.keep_v");
        if (cfg.use_audio && (!ka || cav_st_copy_i64(&w.st, ka, in.fka, G * in.gka, err))) {
            if (!ka) cav_fail(err, 2, "%s: in.keep_a missing", path);
            goto done;
        }
        if (cfg.use_video && (!kv || cav_st_copy_i64(&w.st, kv, in.fkv, G * in.gkv, err))) {
            if (!kv) cav_fail(err, 2, "%s: in.keep_v missing", path);
            goto done;
        }
    } else {
        const cav_st_tensor *tl = cav_st_find(&w.st, "in.labels");
        if (!tl || cav_st_copy_f32(&w.st, tl, in.fl, G * in.gl, err)) {
            if (!tl) cav_fail(err, 2, "%s: in.labels missing", path);
            goto done;
        }
    }
    static const char *const scalars[] = {"loss", "loss_mae", "loss_mae_a", "loss_mae_v", "loss_c", "c_acc"};
    double o6[6];
    cav_groups_run(&grp, m, 1, fill, seen, &in, o6);
    if (in.oom) {
        cav_fail(err, 3, "out of memory");
        rc = 3;
        goto done;
    }
    const double sc[6] = {o6[0], o6[5], o6[1], o6[2], o6[3], o6[4]}; /* in the order of scalars[] */
    /* A bf16 state's autocast.<scalar>: PyTorch's own autocast, which also rounds each Linear's output to
     * bf16: the losses within CAV_DEBUG_TOL_AUTOCAST of it (gated as a loss). */
    for (int k = 0; bf16 && k < 6; k++) {
        char an[32];
        float av;
        snprintf(an, sizeof an, "autocast.%s", scalars[k]);
        const cav_st_tensor *t = cav_st_find(&w.st, an);
        if (!t) continue;
        if (t->numel != 1 || cav_st_copy_f32(&w.st, t, &av, 1, err)) {
            if (t->numel != 1) cav_fail(err, 2, "%s: %s: not one value", path, an);
            goto done;
        }
        double d = fabs(sc[k] - av), rel = av != 0 ? d / fabs(av) : (d > 0 ? INFINITY : 0);
        fprintf(out, "%s: %-48s max_abs=%.3e max_rel=%.3e (tolerance %g)\n", tool, an, d, rel,
                CAV_DEBUG_TOL_AUTOCAST);
        if (!(rel <= CAV_DEBUG_TOL_AUTOCAST)) rep->max_rel_loss = worse(rep->max_rel_loss, INFINITY);
    }
    /* Outputs: every out.* of the file that the C model has. */
    for (int i = 0; i < w.st.n; i++) {
        const cav_st_tensor *t = &w.st.t[i];
        if (strncmp(t->name, "out.", 4) || strcmp(t->name, "out.losses") == 0) continue;
        const char *name = t->name + 4;
        const float *c = NULL;
        size_t cn = 0;
        float scv;
        for (int k = 0; k < 6; k++)
            if (!strcmp(name, scalars[k])) scv = (float)sc[k], c = &scv, cn = 1;
        for (int k = 0; k < 3; k++)
            if (!strcmp(name, tensors[k])) c = in.gath[k], cn = G * in.gsz[k];
        if (strncmp(name, "feat_", 5) == 0) {
            if (!fm) { /* forward_feat runs as its own task on the same parameters and the whole batch */
                cav_config fc = cfg;
                fc.task = CAV_TASK_FEAT;
                if (!(fm = cav_model_create_on(be, &fc, B, err))) goto done;
                for (int k = 0; k < fm->ntable; k++) {
                    cav_param *src = cav_model_param(m, fm->table[k].name);
                    if (!src || src->numel != fm->table[k].numel) {
                        cav_fail(err, 2, "%s: forward_feat parameter %s has no counterpart", path,
                                 fm->table[k].name);
                        goto done;
                    }
                    cav_model_read_param(m, CAV_BUF_PARAMS, src, host);
                    cav_model_write_param(fm, CAV_BUF_PARAMS, &fm->table[k], host);
                }
                if (in.ga) cav_model_set_input(fm, CAV_IN_AUDIO, in.fa, B);
                if (in.gv) cav_model_set_input(fm, CAV_IN_VIDEO, in.fv, B);
                cav_model_forward(fm);
            }
            int64_t sh[4];
            int nd, n = cav_model_output_shape(fm, name, sh, &nd);
            free(feat);
            if (n >= 0 && !(feat = malloc(((size_t)n + 1) * sizeof *feat))) {
                cav_fail(err, 3, "out of memory");
                rc = 3;
                goto done;
            }
            c = n >= 0 && cav_model_read_output(fm, name, feat) == 0 ? feat : NULL;
            cn = n >= 0 ? (size_t)n : 0;
        }
        if (!c) {
            cav_fail(err, 2, "%s: %s: the C model has no such output", path, t->name);
            goto done;
        }
        free(buf);
        buf = malloc(t->numel * sizeof *buf);
        if (!buf) {
            cav_fail(err, 3, "out of memory");
            rc = 3;
            goto done;
        }
        if (cn != t->numel || cav_st_copy_f32(&w.st, t, buf, t->numel, err)) {
            if (cn != t->numel)
                cav_fail(err, 2, "%s: %s: %zu values, the C model has %zu", path, t->name, t->numel, cn);
            goto done;
        }
        double ma, rel;
        compare(c, buf, t->numel, &ma, &rel);
        double l2 = rel_l2(c, buf, t->numel);
        if (t->numel == 1) { /* a loss: relative to its own value */
            double p = fabs((double)buf[0]);
            rel = p > 0 ? ma / p : (ma > 0 ? INFINITY : 0);
            if (!bf16 || !strcmp(name, "loss"))
                rep->max_rel_loss = worse(rep->max_rel_loss, rel);
            else if (!(rel <= CAV_DEBUG_TOL_PARTS_BF16)) /* the other losses of a bf16 state */
                rep->max_rel_loss = worse(rep->max_rel_loss, INFINITY);
        } else {
            rep->max_rel_out = worse(rep->max_rel_out, rel);
            if (bf16) rep->max_l2 = worse(rep->max_l2, l2);
        }
        if (bf16 && t->numel > 1)
            fprintf(out, "%s: %-48s max_abs=%.3e max_rel=%.3e rel_l2=%.3e\n", tool, t->name, ma, rel, l2);
        else
            fprintf(out, "%s: %-48s max_abs=%.3e max_rel=%.3e\n", tool, t->name, ma, rel);
        rep->tensors++;
    }
    /* The parameters PyTorch leaves without a gradient (metadata no_grad, when present) must be exactly the
     * ones the C model marks unused (its Adam skips them), and those must get no gradient in C either. */
    cav_model_read_buffer(m, CAV_BUF_GRADS, host); /* the gradients, [nparams] */
    const char *nogtext = cav_st_meta(&w.st, "no_grad");
    if (nogtext) {
        cav_json *ng = cav_json_parse(nogtext, strlen(nogtext), jerr, sizeof jerr);
        int bad = !ng || ng->type != CAV_JSON_ARRAY;
        for (int i = 0; !bad && i < m->ntable; i++) {
            const cav_param *p = &m->table[i];
            if (!p->trainable) continue;
            int listed = 0, nonzero = 0;
            for (int k = 0; k < ng->n; k++)
                listed |= ng->items[k]->type == CAV_JSON_STRING && strcmp(ng->items[k]->string, p->name) == 0;
            for (size_t k = 0; k < p->numel && !nonzero; k++) nonzero = host[p->offset + k] != 0.0f;
            if (listed == p->used || (!p->used && nonzero)) {
                fprintf(out, "%s: %-48s %s\n", tool, p->name,
                        listed == p->used ? (listed ? "has no gradient in PyTorch, but is used in C"
                                                    : "has a gradient in PyTorch, but is unused in C")
                                          : "is unused in C but got a gradient");
                rep->reach_mismatches++;
            }
        }
        cav_json_free(ng);
        if (bad) {
            cav_fail(err, 2, "%s: metadata no_grad is not a JSON array of names", path);
            goto done;
        }
    }
    /* Gradients: every trainable parameter's. */
    for (int i = 0; i < m->ntable; i++) {
        cav_param *p = &m->table[i];
        if (!p->trainable) continue;
        char gname[80];
        snprintf(gname, sizeof gname, "grad.%s", p->name);
        const cav_st_tensor *t = cav_st_find(&w.st, gname);
        if (!t) {
            cav_fail(err, 2, "%s: %s missing", path, gname);
            goto done;
        }
        free(buf);
        buf = malloc(p->numel * sizeof *buf);
        if (!buf || cav_st_copy_f32(&w.st, t, buf, p->numel, err)) {
            if (!buf) cav_fail(err, 3, "out of memory");
            goto done;
        }
        double ma, rel;
        compare(host + p->offset, buf, p->numel, &ma, &rel);
        rep->max_rel_grad = worse(rep->max_rel_grad, rel);
        if (bf16) {
            double l2 = rel_l2(host + p->offset, buf, p->numel);
            rep->max_l2 = worse(rep->max_l2, l2);
            fprintf(out, "%s: %-48s max_abs=%.3e max_rel=%.3e rel_l2=%.3e\n", tool, gname, ma, rel, l2);
        } else
            fprintf(out, "%s: %-48s max_abs=%.3e max_rel=%.3e\n", tool, gname, ma, rel);
        rep->tensors++;
    }
    /* An Adam state: the losses before each of adam_steps torch.optim.Adam steps and after the last, and
     * the parameters at the end. */
    const cav_json *as = cav_json_get(cj, "adam_steps");
    if (as) {
        const cav_json *betas = cav_json_get(cj, "adam_betas");
        const cav_st_tensor *tl = cav_st_find(&w.st, "out.losses");
        int steps = (int)as->number;
        if (!betas || betas->type != CAV_JSON_ARRAY || betas->n != 2 || !tl ||
            tl->numel != (size_t)steps + 1) {
            cav_fail(err, 2, "%s: adam_betas or out.losses malformed", path);
            goto done;
        }
        float losses[64];
        if (steps + 1 > 64 || cav_st_copy_f32(&w.st, tl, losses, tl->numel, err)) {
            if (steps + 1 > 64) cav_fail(err, 2, "%s: adam_steps %d: too many", path, steps);
            goto done;
        }
        for (int k = 0; k <= steps; k++) {
            if (k > 0) cav_model_forward(m); /* step 0 ran above, with its backward */
            double rel = fabs((double)m->out.loss - losses[k]) / fabs((double)losses[k]);
            rep->max_rel_loss = worse(rep->max_rel_loss, rel);
            fprintf(out, "%s: adam.loss[%d]%36s max_abs=%.3e max_rel=%.3e\n", tool, k, "",
                    fabs((double)m->out.loss - losses[k]), rel);
            if (k == steps) break;
            if (k > 0) cav_model_backward(m);
            cav_model_adam_step(m, cav_json_get_number(cj, "adam_lr", 0), 1.0, betas->items[0]->number,
                                betas->items[1]->number, cav_json_get_number(cj, "adam_eps", 1e-8),
                                cav_json_get_number(cj, "adam_weight_decay", 0));
        }
        cav_model_read_buffer(m, CAV_BUF_PARAMS, host); /* the parameters after the steps */
        for (int i = 0; i < m->ntable; i++) {
            char fname[80];
            snprintf(fname, sizeof fname, "final.%s", m->table[i].name);
            const cav_st_tensor *t = cav_st_find(&w.st, fname);
            free(buf);
            buf = t ? malloc(t->numel * sizeof *buf) : NULL;
            if (!t || !buf || t->numel != m->table[i].numel ||
                cav_st_copy_f32(&w.st, t, buf, t->numel, err)) {
                if (!t || (buf && t->numel != m->table[i].numel))
                    cav_fail(err, 2, "%s: %s missing or misshapen", path, fname);
                else if (!buf)
                    cav_fail(err, 3, "out of memory");
                goto done;
            }
            /* Reported, not gated: the contract is the losses at every step. Parameters whose gradient is
             * zero in exact arithmetic (the attention key bias: softmax ignores a constant shift) get
             * rounding noise for a gradient, and Adam divides it by its own tiny RMS, so both
             * implementations move them by noise of order lr. */
            double ma, rel;
            compare(host + m->table[i].offset, buf, t->numel, &ma, &rel);
            rep->max_rel_final = worse(rep->max_rel_final, rel);
            fprintf(out, "%s: %-48s max_abs=%.3e max_rel=%.3e (after the steps; not gated)\n", tool, fname,
                    ma, rel);
        }
    }
    if (bf16)
        fprintf(out, "%s: bf16: max_rel_l2=%.3e (tolerance %g)\n", tool, rep->max_l2, CAV_DEBUG_TOL_L2_BF16);
    fprintf(out, "%s: max_rel_loss=%.3e max_rel_grad=%.3e on %s\n", tool, rep->max_rel_loss,
            worse(rep->max_rel_grad, rep->max_rel_out), be->name);
    rc = rep->max_rel_loss <= tol_loss && rep->max_rel_grad <= tol_grad && !rep->reach_mismatches &&
                 rep->max_rel_out <= tol_grad && (!bf16 || rep->max_l2 <= CAV_DEBUG_TOL_L2_BF16)
             ? 0
             : 2;
    if (rc)
        cav_fail(err, 2, "%s: outside tolerance (%slosses %g, outputs and gradients %g)", path,
                 bf16 ? "bf16: " : "", tol_loss, tol_grad);
done:
    for (int k = 0; k < 3; k++) free(in.gath[k]);
    free(buf), free(host), free(feat), free(in.fa), free(in.fv), free(in.fl), free(in.fka), free(in.fkv);
    cav_groups_free(&grp);
    cav_json_free(cj);
    cav_model_free(m);
    cav_model_free(fm);
    cav_weights_close(&w);
    return rc;
}
