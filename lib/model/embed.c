/* embed.c: see embed.h. The checkpoint is read once (a .pth is decoded into memory, a safetensors file is
 * mapped): its names decide the model type and are checked against the encoder's table before any value
 * is copied. */
#include "embed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "pth.h"
#include "safetensors.h"

static const char *strip_module(const char *name) { return strncmp(name, "module.", 7) == 0 ? name + 7 : name; }

static int is_decoder_name(const char *n) { return strncmp(n, "decoder_", 8) == 0 || strcmp(n, "mask_token") == 0; }

/* The checkpoint's "config" metadata (cav-pretrain, cav-finetune) applied key by key; a key the C model
 * does not know is an error, not silently ignored. */
static int apply_config(cav_config *cfg, const cav_json *j, const char *path, cav_err *err) {
    for (int i = 0; i < j->n; i++) {
        const cav_json *v = j->items[i];
        char text[64];
        switch (v->type) {
        case CAV_JSON_NUMBER: snprintf(text, sizeof text, "%.17g", v->number); break;
        case CAV_JSON_BOOL: snprintf(text, sizeof text, "%s", v->boolean ? "true" : "false"); break;
        case CAV_JSON_STRING: snprintf(text, sizeof text, "%s", v->string); break;
        case CAV_JSON_NULL: continue;
        default: return cav_fail(err, 2, "%s: metadata config key %s: not a scalar", path, j->keys[i]);
        }
        int rc = cav_config_set(cfg, j->keys[i], text);
        if (rc == -2) return cav_fail(err, 2, "%s: metadata config key %s: unknown to this model", path, j->keys[i]);
        if (rc) return cav_fail(err, 2, "%s: metadata config key %s: bad value %s", path, j->keys[i], text);
    }
    return 0;
}

int cav_embedder_open(cav_embedder *e, const cav_embed_opts *o, cav_err *err) {
    memset(e, 0, sizeof *e);
    err->code = 0;
    size_t len = strlen(o->path);
    int is_st = len > 12 && strcmp(o->path + len - 12, ".safetensors") == 0;
    cav_safetensors st;
    cav_pth pth;
    cav_json *cj = NULL;
    int rc = -1, count;
    if (is_st) {
        if (cav_st_open(&st, o->path, err)) return -1;
        count = st.n;
    } else {
        if (cav_pth_load(&pth, o->path, err)) return -1;
        count = pth.n;
    }
#define NAME(i) strip_module(is_st ? st.t[i].name : pth.t[i].name)
    int has_head = 0, has_dec = 0;
    for (int i = 0; i < count; i++) {
        has_head |= strncmp(NAME(i), "mlp_head.", 9) == 0;
        has_dec |= is_decoder_name(NAME(i));
    }
    const char *cfgtext = is_st ? cav_st_meta(&st, "config") : NULL;
    char jerr[256];
    if (cfgtext) {
        cj = cav_json_parse(cfgtext, strlen(cfgtext), jerr, sizeof jerr);
        if (!cj || cj->type != CAV_JSON_OBJECT) {
            cav_fail(err, 2, "%s: metadata config: %s", o->path, cj ? "not an object" : jerr);
            goto done;
        }
    }
    cav_embed_type file_type = has_head || (cj && cav_json_get(cj, "label_dim")) ? CAV_EMBED_FINETUNE : CAV_EMBED_PRETRAIN;
    if (has_head && has_dec) {
        cav_fail(err, 2, "%s: holds both a decoder and mlp_head: neither CAVMAE nor CAVMAEFT", o->path);
        goto done;
    }
    if (o->type != CAV_EMBED_AUTO && o->type != file_type) {
        cav_fail(err, 2, "%s: a %s checkpoint (%s), not %s", o->path,
                 file_type == CAV_EMBED_FINETUNE ? "fine-tuned (CAVMAEFT)" : "pretraining (CAVMAE)",
                 has_head ? "it holds mlp_head.*" : has_dec ? "it holds the decoder" : "its config says so",
                 o->type == CAV_EMBED_FINETUNE ? "finetune" : "pretrain");
        goto done;
    }
    if (o->decoder && (file_type != CAV_EMBED_PRETRAIN || !has_dec)) {
        cav_fail(err, 2, "%s: no decoder (a pretraining checkpoint of CAV-MAE with its decoder is needed)", o->path);
        goto done;
    }
    e->type = file_type;
    cav_config cfg = cav_config_default(CAV_TASK_FEAT);
    if (cj) {
        if (apply_config(&cfg, cj, o->path, err)) goto done;
        e->config_from_file = 1;
    } else if (o->arch && cav_config_size(&cfg, o->arch)) {
        cav_fail(err, 1, "--arch: base or tiny, not '%s'", o->arch);
        goto done;
    }
    cfg.task = o->decoder ? CAV_TASK_PRETRAIN : CAV_TASK_FEAT;
    for (int i = 0; i < o->nset; i++) {
        int r = cav_config_set(&cfg, o->set_keys[i], o->set_vals[i]);
        if (r) {
            if (r == -2) cav_fail(err, 1, "unknown model knob '%s'", o->set_keys[i]);
            else cav_fail(err, 1, "bad value '%s' for %s", o->set_vals[i], o->set_keys[i]);
            goto done;
        }
    }
    if (!cfg.use_audio || !cfg.use_video) {
        cav_fail(err, 2, "%s: a single-modality model (modalities %s): retrieval embeddings need both", o->path,
                 cfg.use_audio ? "a" : "v");
        goto done;
    }
    if (cav_config_check(&cfg, err)) {
        err->code = cfgtext ? 2 : 1;
        goto done;
    }
    if (!(e->m = cav_model_create(&cfg, o->batch, err))) {
        if (!err->code) err->code = 3;
        goto done;
    }
    cav_model *m = e->m;
    char *seen = calloc((size_t)m->ntable, 1);
    if (!seen) {
        cav_fail(err, 3, "out of memory");
        goto done;
    }
    for (int i = 0; i < count; i++) {
        const char *name = NAME(i);
        cav_param *p = cav_model_param(m, name);
        if (!p) {
            if ((file_type == CAV_EMBED_FINETUNE && strncmp(name, "mlp_head.", 9) == 0) ||
                (file_type == CAV_EMBED_PRETRAIN && is_decoder_name(name) && !o->decoder))
                continue; /* the part of the model retrieval does not run */
            cav_fail(err, 2, "%s: %s: not a parameter of this model", o->path, name);
            break;
        }
        int ndim = is_st ? st.t[i].ndim : pth.t[i].ndim;
        const int64_t *shape = is_st ? st.t[i].shape : pth.t[i].shape;
        int same = ndim == p->ndim;
        for (int d = 0; same && d < ndim; d++) same = shape[d] == p->shape[d];
        if (!same) {
            char got[96] = "", want[96] = "";
            for (int d = 0; d < ndim && d < 4; d++) snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "," : "", (long long)shape[d]);
            for (int d = 0; d < p->ndim; d++) snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? "," : "", (long long)p->shape[d]);
            cav_fail(err, 2, "%s: %s: shape [%s], the model's is [%s]%s", o->path, name, got, want,
                     cfgtext ? "" : " (no config in the file: give --arch / --set)");
            break;
        }
        if (is_st) {
            if (cav_st_copy_f32(&st, &st.t[i], p->data, p->numel, err)) break;
        } else {
            memcpy(p->data, pth.t[i].data, p->numel * sizeof(float));
        }
        seen[p - m->table] = 1;
        e->nparams_loaded++;
    }
#undef NAME
    int bad = err->code != 0;
    for (int i = 0; i < m->ntable && !bad; i++)
        if (!seen[i]) bad = 1, cav_fail(err, 2, "%s: parameter %s missing", o->path, m->table[i].name);
    free(seen);
    if (!bad) rc = 0;
done:
    cav_json_free(cj);
    if (is_st) cav_st_close(&st);
    else cav_pth_free(&pth);
    if (rc) cav_embedder_close(e);
    return rc;
}

void cav_embedder_close(cav_embedder *e) {
    cav_model_free(e->m);
    e->m = NULL;
}

void cav_pool_normalize(const float *x, int n, int L, int D, float *out) {
    for (int b = 0; b < n; b++) {
        const float *xb = x + (size_t)b * L * D;
        float *ob = out + (size_t)b * D;
        double ss = 0;
        for (int d = 0; d < D; d++) {
            double acc = 0;
            for (int l = 0; l < L; l++) acc += xb[(size_t)l * D + d];
            ob[d] = (float)(acc / L); /* torch.mean's float32 result */
            ss += (double)ob[d] * ob[d];
        }
        double nrm = sqrt(ss);
        if (nrm < 1e-12) nrm = 1e-12;
        for (int d = 0; d < D; d++) ob[d] = (float)(ob[d] / nrm);
    }
}

void cav_embedder_run(cav_embedder *e, int n, float *emb_a, float *emb_v) {
    cav_model *m = e->m;
    cav_model_forward(m);
    cav_pool_normalize(m->feat_a, n, m->La, m->D, emb_a);
    cav_pool_normalize(m->feat_v, n, m->Lv, m->D, emb_v);
}
