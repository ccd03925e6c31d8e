/* trainio.c: see trainio.h. */
#include "trainio.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomicfile.h"
#include "checkpoint.h"
#include "safetensors.h"
#include "weights.h"

/* One of the model's buffers (parameters, Adam's moments) as safetensors entries over a host copy *base
 * (freed by the caller), or over from[nparams] when given. */
static cav_st_entry *param_entries(cav_model *m, cav_buffer buf, float **base, const char *prefix,
                                   char ***names, const float *from) {
    cav_st_entry *e = calloc((size_t)m->ntable, sizeof *e);
    *names = calloc((size_t)m->ntable, sizeof **names);
    *base = from ? NULL : malloc(m->nparams * sizeof **base);
    if (!e || !*names || (!from && !*base)) return free(e), NULL;
    if (!from) cav_model_read_buffer(m, buf, *base);
    const float *src = from ? from : *base;
    for (int i = 0; i < m->ntable; i++) {
        cav_param *p = &m->table[i];
        size_t n = strlen(prefix) + strlen(p->name) + 1;
        (*names)[i] = malloc(n);
        if (!(*names)[i]) return free(e), NULL;
        snprintf((*names)[i], n, "%s%s", prefix, p->name);
        e[i].name = (*names)[i];
        e[i].dtype = CAV_F32;
        e[i].ndim = p->ndim;
        memcpy(e[i].shape, p->shape, sizeof p->shape);
        e[i].data = src + p->offset;
    }
    return e;
}

static void free_names(char **names, int n) {
    for (int i = 0; names && i < n; i++) free(names[i]);
    free(names);
}

int cav_train_save_model(cav_model *m, const char *path, const char *cfgjson, cav_err *err) {
    char **names = NULL;
    float *host = NULL;
    cav_st_entry *e = param_entries(m, CAV_BUF_PARAMS, &host, "", &names, NULL);
    if (!e) return free(host), free_names(names, m->ntable), cav_fail(err, 3, "out of memory");
    const char *k[] = {"format", "config"}, *v[] = {"cav-mae/1", cfgjson};
    int rc = cav_st_write(path, e, m->ntable, k, v, 2, err);
    free(e), free(host);
    free_names(names, m->ntable);
    return rc;
}

int cav_train_save_checkpoint(cav_model *m, const float *moments, const char *run_dir, int epoch,
                              long long step, const char *cfgjson, const char *state_json, int keep,
                              cav_err *err) {
    char **n1 = NULL, **n2 = NULL, **n3 = NULL;
    float *h1 = NULL, *h2 = NULL, *h3 = NULL;
    cav_st_entry *pe = param_entries(m, CAV_BUF_PARAMS, &h1, "", &n1, NULL),
                 *me = param_entries(m, CAV_BUF_ADAM_M, &h2, "m.", &n2, moments),
                 *ve =
                     param_entries(m, CAV_BUF_ADAM_V, &h3, "v.", &n3, moments ? moments + m->nparams : NULL);
    cav_st_entry *oe = calloc((size_t)m->ntable * 2, sizeof *oe);
    int rc = -1;
    if (!pe || !me || !ve || !oe) {
        cav_fail(err, 3, "out of memory");
        goto out;
    }
    memcpy(oe, me, (size_t)m->ntable * sizeof *oe);
    memcpy(oe + m->ntable, ve, (size_t)m->ntable * sizeof *oe);
    cav_ckpt c = {pe, m->ntable, oe, 2 * m->ntable, cfgjson, state_json};
    rc = cav_ckpt_save(run_dir, epoch, step, &c, keep, err);
out:
    free(pe), free(me), free(ve), free(oe), free(h1), free(h2), free(h3);
    free_names(n1, m->ntable), free_names(n2, m->ntable), free_names(n3, m->ntable);
    return rc;
}

cav_json *cav_train_load_checkpoint(cav_model *m, const char *dir, cav_err *err) {
    char p[4200];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (cav_weights_load_path(m, p, 0, 0, NULL, err)) return NULL;
    snprintf(p, sizeof p, "%s/optim.safetensors", dir);
    cav_weights w;
    if (cav_weights_open(&w, p, err)) return NULL;
    int rc = cav_weights_load_buffer(m, &w, CAV_BUF_ADAM_M, "m.", err) ||
             cav_weights_load_buffer(m, &w, CAV_BUF_ADAM_V, "v.", err);
    cav_weights_close(&w);
    if (rc) return NULL;
    snprintf(p, sizeof p, "%s/state.json", dir);
    char jerr[512];
    cav_json *j = cav_json_load(p, jerr, sizeof jerr);
    if (!j) cav_fail(err, 2, "%s", jerr);
    return j;
}

int cav_train_average_models(cav_model *m, char *const *paths, int n, const char *out, const char *cfgjson,
                             cav_err *err) {
    float *sum = malloc(m->nparams * sizeof *sum), *x = malloc(m->nparams * sizeof *x);
    int rc = -1;
    if (!sum || !x) {
        cav_fail(err, 3, "out of memory for the weight average");
        goto out;
    }
    for (int k = 0; k < n; k++) { /* strict: every tensor of the model, nothing else */
        if (cav_weights_load_path(m, paths[k], 0, 0, NULL, err)) goto out;
        cav_model_read_buffer(m, CAV_BUF_PARAMS, k ? x : sum);
        for (size_t i = 0; k && i < m->nparams; i++) sum[i] = sum[i] + x[i];
    }
    for (size_t i = 0; i < m->nparams; i++) sum[i] = sum[i] / (float)n;
    cav_model_write_buffer(m, CAV_BUF_PARAMS, sum);
    rc = out ? cav_train_save_model(m, out, cfgjson, err) : 0;
out:
    free(sum), free(x);
    return rc;
}

int cav_train_write_file(const char *path, const char *text, cav_err *err) {
    return cav_afile_write_text(path, text, err);
}
