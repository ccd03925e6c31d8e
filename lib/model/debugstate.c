/* debugstate.c: see debugstate.h. Config keys are passed to cav_config_set as JSON text, so a key the C
 * model does not know is an error rather than silently ignored. */
#include "debugstate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "model.h"
#include "safetensors.h"

static int apply_config(cav_config *cfg, const cav_json *j, int *batch, cav_err *err, const char *path) {
    for (int i = 0; i < j->n; i++) {
        const char *key = j->keys[i];
        const cav_json *v = j->items[i];
        char text[64];
        if (strcmp(key, "batch") == 0) {
            *batch = (int)v->number;
            continue;
        }
        if (strncmp(key, "adam_", 5) == 0 || strcmp(key, "contrast_groups") == 0) continue; /* the optimiser run of an Adam state, read later */
        switch (v->type) {
        case CAV_JSON_NUMBER: snprintf(text, sizeof text, "%.17g", v->number); break;
        case CAV_JSON_BOOL: snprintf(text, sizeof text, "%s", v->boolean ? "true" : "false"); break;
        case CAV_JSON_STRING: snprintf(text, sizeof text, "%s", v->string); break;
        case CAV_JSON_NULL: continue; /* null means the reference's default */
        default: return cav_fail(err, 2, "%s: config key %s: not a scalar", path, key);
        }
        int rc = cav_config_set(cfg, key, text);
        if (rc == -2) return cav_fail(err, 2, "%s: config key %s: unknown to the C model", path, key);
        if (rc) return cav_fail(err, 2, "%s: config key %s: bad value %s", path, key, text);
    }
    return 0;
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

static double worse(double a, double b) { return isnan(a) || isnan(b) ? NAN : (a > b ? a : b); }

int cav_debug_state_check(const char *path, FILE *out, cav_debug_report *rep, cav_err *err) {
    memset(rep, 0, sizeof *rep);
    cav_safetensors st;
    if (cav_st_open(&st, path, err)) return err->code;
    const char *fmt = cav_st_meta(&st, "format"), *cfgtext = cav_st_meta(&st, "config");
    int rc = 2;
    cav_model *m = NULL, *fm = NULL;
    cav_json *cj = NULL;
    float *gath[3] = {NULL, NULL, NULL}; /* pred_a, pred_v, logits gathered over the groups */
    float *buf = NULL, *fa = NULL, *fv = NULL, *fl = NULL, *acc = NULL;
    float *pbuf = NULL, *feat = NULL; /* one buffer of the model [nparams]; a forward_feat output */
    int64_t *fka = NULL, *fkv = NULL;
    if (!fmt || strcmp(fmt, "cav-debug-state/1")) {
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
    int batch = 0;
    if (apply_config(&cfg, cj, &batch, err, path)) goto done;
    const cav_st_tensor *ta = cav_st_find(&st, "in.audio"), *tv = cav_st_find(&st, "in.video");
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
        cav_fail(err, 2, "%s: contrast_groups %d does not divide the batch %lld", path, G, (long long)ta->shape[0]);
        goto done;
    }
    m = cav_model_create(&cfg, (int)ta->shape[0] / G, err);
    if (!m) {
        rc = err->code ? err->code : 3;
        goto done;
    }
    if (!(pbuf = malloc(m->nparams * sizeof *pbuf))) {
        cav_fail(err, 3, "out of memory");
        rc = 3;
        goto done;
    }
    /* Parameters: every model parameter must be in the file, and the file must hold no other. */
    int nparam_file = 0;
    for (int i = 0; i < st.n; i++)
        if (strncmp(st.t[i].name, "in.", 3) && strncmp(st.t[i].name, "out.", 4) && strncmp(st.t[i].name, "grad.", 5) &&
            strncmp(st.t[i].name, "final.", 6)) {
            nparam_file++;
            if (!cav_model_param(m, st.t[i].name)) {
                cav_fail(err, 2, "%s: %s: not a parameter of the C model", path, st.t[i].name);
                goto done;
            }
        }
    for (int i = 0; i < m->ntable; i++) {
        cav_param *p = &m->table[i];
        const cav_st_tensor *t = cav_st_find(&st, p->name);
        if (!t) {
            cav_fail(err, 2, "%s: parameter %s missing", path, p->name);
            goto done;
        }
        if (cav_st_copy_f32(&st, t, pbuf, p->numel, err)) goto done;
        cav_model_write_param(m, CAV_BUF_PARAMS, p, pbuf);
    }
    if (nparam_file != m->ntable) {
        cav_fail(err, 2, "%s: %d parameters in the file, %d in the model", path, nparam_file, m->ntable);
        goto done;
    }
    /* Inputs, whole batch; the model runs them in G groups (the reference's per-GPU replicas: losses summed,
     * c_acc averaged, gradients of the sum). */
    int B = (int)ta->shape[0], Bg = m->B;
    size_t ga = (size_t)Bg * m->T * m->F, gv = (size_t)Bg * 3 * m->S * m->S;
    size_t gka = (size_t)Bg * m->La, gkv = (size_t)Bg * m->Lv, gl = (size_t)Bg * (ft ? cfg.label_dim : 0);
    fa = malloc(G * ga * sizeof *fa), fv = malloc(G * gv * sizeof *fv), fl = malloc((G * gl + 1) * sizeof *fl);
    fka = malloc((G * gka + 1) * sizeof *fka), fkv = malloc((G * gkv + 1) * sizeof *fkv);
    acc = malloc(m->nparams * sizeof *acc);
    if (!fa || !fv || !fl || !fka || !fkv || !acc) {
        cav_fail(err, 3, "out of memory");
        rc = 3;
        goto done;
    }
    /* A single-modality model reads only its own input. */
    int ua = cav_model_input_size(m, CAV_IN_AUDIO) > 0, uv = cav_model_input_size(m, CAV_IN_VIDEO) > 0;
    if (ua && cav_st_copy_f32(&st, ta, fa, G * ga, err)) goto done;
    if (uv && (!tv || cav_st_copy_f32(&st, tv, fv, G * gv, err))) {
        if (!tv) cav_fail(err, 2, "%s: in.video missing", path);
        goto done;
    }
    if (!ft) {
        const cav_st_tensor *ka = cav_st_find(&st, "in.keep_a"), *kv = cav_st_find(&st, "in.keep_v");
        if (cfg.use_audio && (!ka || cav_st_copy_i64(&st, ka, fka, G * gka, err))) {
            if (!ka) cav_fail(err, 2, "%s: in.keep_a missing", path);
            goto done;
        }
        if (cfg.use_video && (!kv || cav_st_copy_i64(&st, kv, fkv, G * gkv, err))) {
            if (!kv) cav_fail(err, 2, "%s: in.keep_v missing", path);
            goto done;
        }
    } else {
        const cav_st_tensor *tl = cav_st_find(&st, "in.labels");
        if (!tl || cav_st_copy_f32(&st, tl, fl, G * gl, err)) {
            if (!tl) cav_fail(err, 2, "%s: in.labels missing", path);
            goto done;
        }
    }
    static const char *const scalars[] = {"loss", "loss_mae", "loss_mae_a", "loss_mae_v", "loss_c", "c_acc"};
    static const char *const tensors[] = {"pred_a", "pred_v", "logits"};
    double sc[6] = {0};
    size_t gsz[3] = {0, 0, 0};
    memset(acc, 0, m->nparams * sizeof *acc);
    for (int g = 0; g < G; g++) {
        if (ua) cav_model_set_input(m, CAV_IN_AUDIO, fa + g * ga, Bg);
        if (uv) cav_model_set_input(m, CAV_IN_VIDEO, fv + g * gv, Bg);
        if (!ft) {
            if (m->La) cav_model_set_input(m, CAV_IN_KEEP_A, fka + g * gka, Bg);
            if (m->Lv) cav_model_set_input(m, CAV_IN_KEEP_V, fkv + g * gkv, Bg);
        } else cav_model_set_input(m, CAV_IN_LABELS, fl + g * gl, Bg);
        cav_model_forward(m);
        for (int k = 0; k < 6; k++) {
            float v;
            if (cav_model_output_shape(m, scalars[k], NULL, NULL) == 1 && !cav_model_read_output(m, scalars[k], &v))
                sc[k] += k == 5 ? v / G : v;
        }
        for (int k = 0; k < 3; k++) {
            int nv = cav_model_output_shape(m, tensors[k], NULL, NULL);
            if (nv < 0) continue;
            size_t n = (size_t)nv;
            if (!gath[k]) {
                gsz[k] = n;
                if (!(gath[k] = malloc(G * n * sizeof(float)))) {
                    cav_fail(err, 3, "out of memory");
                    rc = 3;
                    goto done;
                }
            }
            cav_model_read_output(m, tensors[k], gath[k] + g * n);
        }
        cav_model_backward(m);
        cav_model_read_buffer(m, CAV_BUF_GRADS, pbuf);
        for (size_t i = 0; i < m->nparams; i++) acc[i] += pbuf[i];
    }
    cav_model_write_buffer(m, CAV_BUF_GRADS, acc);
    /* Outputs: every out.* of the file that the C model has. */
    for (int i = 0; i < st.n; i++) {
        const cav_st_tensor *t = &st.t[i];
        if (strncmp(t->name, "out.", 4) || strcmp(t->name, "out.losses") == 0) continue;
        const char *name = t->name + 4;
        const float *c = NULL;
        size_t cn = 0;
        float scv;
        for (int k = 0; k < 6; k++)
            if (!strcmp(name, scalars[k])) scv = (float)sc[k], c = &scv, cn = 1;
        for (int k = 0; k < 3; k++)
            if (!strcmp(name, tensors[k])) c = gath[k], cn = G * gsz[k];
        if (strncmp(name, "feat_", 5) == 0) {
            if (!fm) { /* forward_feat runs as its own task on the same parameters and the whole batch */
                cav_config fc = cfg;
                fc.task = CAV_TASK_FEAT;
                if (!(fm = cav_model_create(&fc, B, err))) goto done;
                for (int k = 0; k < fm->ntable; k++) {
                    cav_param *src = cav_model_param(m, fm->table[k].name);
                    if (!src || src->numel != fm->table[k].numel) {
                        cav_fail(err, 2, "%s: forward_feat parameter %s has no counterpart", path, fm->table[k].name);
                        goto done;
                    }
                    cav_model_read_param(m, CAV_BUF_PARAMS, src, pbuf);
                    cav_model_write_param(fm, CAV_BUF_PARAMS, &fm->table[k], pbuf);
                }
                if (cav_model_input_size(fm, CAV_IN_AUDIO)) cav_model_set_input(fm, CAV_IN_AUDIO, fa, B);
                if (cav_model_input_size(fm, CAV_IN_VIDEO)) cav_model_set_input(fm, CAV_IN_VIDEO, fv, B);
                cav_model_forward(fm);
            }
            int nf = cav_model_output_shape(fm, name, NULL, NULL);
            free(feat);
            feat = nf > 0 ? malloc((size_t)nf * sizeof *feat) : NULL;
            if (nf > 0 && !feat) {
                cav_fail(err, 3, "out of memory");
                rc = 3;
                goto done;
            }
            if (feat) cav_model_read_output(fm, name, feat);
            c = feat, cn = nf > 0 ? (size_t)nf : 0;
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
        if (cn != t->numel || cav_st_copy_f32(&st, t, buf, t->numel, err)) {
            if (cn != t->numel) cav_fail(err, 2, "%s: %s: %zu values, the C model has %zu", path, t->name, t->numel, cn);
            goto done;
        }
        double ma, rel;
        compare(c, buf, t->numel, &ma, &rel);
        if (t->numel == 1) { /* a loss: relative to its own value */
            double p = fabs((double)buf[0]);
            rel = p > 0 ? ma / p : (ma > 0 ? INFINITY : 0);
            rep->max_rel_loss = worse(rep->max_rel_loss, rel);
        } else {
            rep->max_rel_out = worse(rep->max_rel_out, rel);
        }
        fprintf(out, "%-48s max_abs=%.3e max_rel=%.3e\n", t->name, ma, rel);
        rep->tensors++;
    }
    /* The parameters PyTorch leaves without a gradient (metadata no_grad, when present) must be exactly the
     * ones the C model marks unused (its Adam skips them), and those must get no gradient in C either. */
    const char *nogtext = cav_st_meta(&st, "no_grad");
    if (nogtext) {
        cav_json *ng = cav_json_parse(nogtext, strlen(nogtext), jerr, sizeof jerr);
        int bad = !ng || ng->type != CAV_JSON_ARRAY;
        for (int i = 0; !bad && i < m->ntable; i++) {
            const cav_param *p = &m->table[i];
            if (!p->trainable) continue;
            int listed = 0, nonzero = 0;
            for (int k = 0; k < ng->n; k++)
                listed |= ng->items[k]->type == CAV_JSON_STRING && strcmp(ng->items[k]->string, p->name) == 0;
            cav_model_read_param(m, CAV_BUF_GRADS, p, pbuf);
            for (size_t k = 0; k < p->numel && !nonzero; k++) nonzero = pbuf[k] != 0.0f;
            if (listed == p->used || (!p->used && nonzero)) {
                fprintf(out, "%-48s %s\n", p->name,
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
        const cav_st_tensor *t = cav_st_find(&st, gname);
        if (!t) {
            cav_fail(err, 2, "%s: %s missing", path, gname);
            goto done;
        }
        free(buf);
        buf = malloc(p->numel * sizeof *buf);
        if (!buf || cav_st_copy_f32(&st, t, buf, p->numel, err)) {
            if (!buf) cav_fail(err, 3, "out of memory");
            goto done;
        }
        double ma, rel;
        cav_model_read_param(m, CAV_BUF_GRADS, p, pbuf);
        compare(pbuf, buf, p->numel, &ma, &rel);
        rep->max_rel_grad = worse(rep->max_rel_grad, rel);
        fprintf(out, "%-48s max_abs=%.3e max_rel=%.3e\n", gname, ma, rel);
        rep->tensors++;
    }
    /* An Adam state: the losses before each of adam_steps torch.optim.Adam steps and after the last, and
     * the parameters at the end. */
    const cav_json *as = cav_json_get(cj, "adam_steps");
    if (as) {
        const cav_json *betas = cav_json_get(cj, "adam_betas");
        const cav_st_tensor *tl = cav_st_find(&st, "out.losses");
        int steps = (int)as->number;
        if (!betas || betas->type != CAV_JSON_ARRAY || betas->n != 2 || !tl || tl->numel != (size_t)steps + 1) {
            cav_fail(err, 2, "%s: adam_betas or out.losses malformed", path);
            goto done;
        }
        float losses[64];
        if (steps + 1 > 64 || cav_st_copy_f32(&st, tl, losses, tl->numel, err)) {
            if (steps + 1 > 64) cav_fail(err, 2, "%s: adam_steps %d: too many", path, steps);
            goto done;
        }
        for (int k = 0; k <= steps; k++) {
            if (k > 0) cav_model_forward(m); /* step 0 ran above, with its backward */
            double rel = fabs((double)m->out.loss - losses[k]) / fabs((double)losses[k]);
            rep->max_rel_loss = worse(rep->max_rel_loss, rel);
            fprintf(out, "adam.loss[%d]%36s max_abs=%.3e max_rel=%.3e\n", k, "", fabs((double)m->out.loss - losses[k]), rel);
            if (k == steps) break;
            if (k > 0) cav_model_backward(m);
            cav_model_adam_step(m, cav_json_get_number(cj, "adam_lr", 0), 1.0, betas->items[0]->number,
                                betas->items[1]->number, cav_json_get_number(cj, "adam_eps", 1e-8),
                                cav_json_get_number(cj, "adam_weight_decay", 0));
        }
        for (int i = 0; i < m->ntable; i++) {
            char fname[80];
            snprintf(fname, sizeof fname, "final.%s", m->table[i].name);
            const cav_st_tensor *t = cav_st_find(&st, fname);
            free(buf);
            buf = t ? malloc(t->numel * sizeof *buf) : NULL;
            if (!t || !buf || t->numel != m->table[i].numel || cav_st_copy_f32(&st, t, buf, t->numel, err)) {
                if (!t || (buf && t->numel != m->table[i].numel)) cav_fail(err, 2, "%s: %s missing or misshapen", path, fname);
                else if (!buf) cav_fail(err, 3, "out of memory");
                goto done;
            }
            /* Reported, not gated: the contract is the losses at every step. Parameters whose gradient is
             * zero in exact arithmetic (the attention key bias: softmax ignores a constant shift) get
             * rounding noise for a gradient, and Adam divides it by its own tiny RMS, so both
             * implementations move them by noise of order lr. */
            double ma, rel;
            cav_model_read_param(m, CAV_BUF_PARAMS, &m->table[i], pbuf);
            compare(pbuf, buf, t->numel, &ma, &rel);
            rep->max_rel_final = worse(rep->max_rel_final, rel);
            fprintf(out, "%-48s max_abs=%.3e max_rel=%.3e (after the steps; not gated)\n", fname, ma, rel);
        }
    }
    fprintf(out, "max_rel_loss=%.3e max_rel_grad=%.3e\n", rep->max_rel_loss, worse(rep->max_rel_grad, rep->max_rel_out));
    rc = rep->max_rel_loss <= CAV_DEBUG_TOL_LOSS && rep->max_rel_grad <= CAV_DEBUG_TOL_GRAD && !rep->reach_mismatches &&
                 rep->max_rel_out <= CAV_DEBUG_TOL_GRAD
             ? 0
             : 2;
    if (rc) cav_fail(err, 2, "%s: outside tolerance (losses %g, outputs and gradients %g)", path, CAV_DEBUG_TOL_LOSS, CAV_DEBUG_TOL_GRAD);
done:
    for (int k = 0; k < 3; k++) free(gath[k]);
    free(buf), free(fa), free(fv), free(fl), free(fka), free(fkv), free(acc), free(pbuf), free(feat);
    cav_json_free(cj);
    cav_model_free(m);
    cav_model_free(fm);
    cav_st_close(&st);
    return rc;
}
