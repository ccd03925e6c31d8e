/* embed.c: see embed.h. The checkpoint is read once (a .pth is decoded into memory, a safetensors file is
 * mapped, both through lib/model/weights): its names decide the model type, and the weights module checks
 * them against the encoder's table as it copies. */
#include "embed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "kernels.h"
#include "weights.h"

static int is_decoder_name(const char *n) {
    return strncmp(n, "decoder_", 8) == 0 || strcmp(n, "mask_token") == 0;
}

typedef struct {
    cav_embed_type type;
    int decoder; /* the decoder is loaded too (reconstructions) */
} file_part;

/* The part of the checkpoint's model that this pass does not run. */
static int other_part(const char *name, void *ctx) {
    const file_part *f = ctx;
    return (f->type == CAV_EMBED_FINETUNE && strncmp(name, "mlp_head.", 9) == 0) ||
           (f->type == CAV_EMBED_PRETRAIN && !f->decoder && is_decoder_name(name));
}

int cav_embedder_open(cav_embedder *e, const cav_embed_opts *o, cav_err *err) {
    memset(e, 0, sizeof *e);
    err->code = 0;
    cav_weights w;
    cav_json *cj = NULL;
    int rc = -1;
    if (cav_weights_open(&w, o->path, err)) return -1;
    int has_head = 0, has_dec = 0;
    for (int i = 0; i < w.n; i++) {
        has_head |= strncmp(cav_weights_name(&w, i), "mlp_head.", 9) == 0;
        has_dec |= is_decoder_name(cav_weights_name(&w, i));
    }
    const char *cfgtext = cav_weights_meta(&w, "config");
    char jerr[256];
    if (cfgtext) {
        cj = cav_json_parse(cfgtext, strlen(cfgtext), jerr, sizeof jerr);
        if (!cj || cj->type != CAV_JSON_OBJECT) {
            cav_fail(err, 2, "%s: metadata config: %s", o->path, cj ? "not an object" : jerr);
            goto done;
        }
    }
    cav_embed_type file_type =
        has_head || (cj && cav_json_get(cj, "label_dim")) ? CAV_EMBED_FINETUNE : CAV_EMBED_PRETRAIN;
    if (has_head && has_dec) {
        cav_fail(err, 2, "%s: holds both a decoder and mlp_head: neither CAVMAE nor CAVMAEFT", o->path);
        goto done;
    }
    if (o->type != CAV_EMBED_AUTO && o->type != file_type) {
        cav_fail(err, 2, "%s: a %s checkpoint (%s), not %s", o->path,
                 file_type == CAV_EMBED_FINETUNE ? "fine-tuned (CAVMAEFT)" : "pretraining (CAVMAE)",
                 has_head  ? "it holds mlp_head.*"
                 : has_dec ? "it holds the decoder"
                           : "its config says so",
                 o->type == CAV_EMBED_FINETUNE ? "finetune" : "pretrain");
        goto done;
    }
    if (o->decoder && (file_type != CAV_EMBED_PRETRAIN || !has_dec)) {
        cav_fail(err, 2, "%s: no decoder (a pretraining checkpoint of CAV-MAE with its decoder is needed)",
                 o->path);
        goto done;
    }
    e->type = file_type;
    cav_config cfg = cav_config_default(CAV_TASK_FEAT);
    if (cj) {
        if (cav_config_from_json(&cfg, cj, o->path, "metadata config", NULL, err)) goto done;
        e->config_from_file = 1;
    } else if (o->arch && cav_config_size(&cfg, o->arch)) {
        cav_fail(err, 1, "--arch: base or tiny, not '%s'", o->arch);
        goto done;
    }
    cfg.task = o->decoder ? CAV_TASK_PRETRAIN : CAV_TASK_FEAT;
    for (int i = 0; i < o->nset; i++) {
        int r = cav_config_set(&cfg, o->set_keys[i], o->set_vals[i]);
        if (r) {
            if (r == -2)
                cav_fail(err, 1, "unknown model knob '%s'", o->set_keys[i]);
            else
                cav_fail(err, 1, "bad value '%s' for %s", o->set_vals[i], o->set_keys[i]);
            goto done;
        }
    }
    if (!cfg.use_audio || !cfg.use_video) {
        cav_fail(err, 2, "%s: a single-modality model (modalities %s): retrieval embeddings need both",
                 o->path, cfg.use_audio ? "a" : "v");
        goto done;
    }
    if (cav_config_check(&cfg, err)) {
        err->code = cfgtext ? 2 : 1;
        goto done;
    }
    cav_backend *be = cav_backend_open(o->device ? o->device : "cpu", err);
    if (!be) goto done;
    if (!(e->m = cav_model_create_on(be, &cfg, o->batch, err))) {
        if (!err->code) err->code = 3;
        goto done;
    }
    file_part part = {file_type, o->decoder};
    cav_weights_load_opts lo = {.ignore = other_part,
                                .ctx = &part,
                                .shape_hint = cfgtext ? "" : " (no config in the file: give --arch / --set)"};
    if (cav_weights_load(e->m, &w, &lo, err)) goto done;
    e->nparams_loaded = lo.loaded;
    rc = 0;
done:
    cav_json_free(cj);
    cav_weights_close(&w);
    if (rc) cav_embedder_close(e);
    return rc;
}

void cav_embedder_close(cav_embedder *e) {
    cav_model_free(e->m);
    e->m = NULL;
}

int cav_embedder_run(cav_embedder *e, int n, float *emb_a, float *emb_v) {
    cav_model *m = e->m;
    float *ea = malloc((size_t)m->B * m->D * sizeof *ea), *ev = malloc((size_t)m->B * m->D * sizeof *ev);
    if (ea && ev) {
        cav_model_forward(m);
        cav_model_read_output(m, "emb_a", ea), cav_model_read_output(m, "emb_v", ev);
        memcpy(emb_a, ea, (size_t)n * m->D * sizeof *ea), memcpy(emb_v, ev, (size_t)n * m->D * sizeof *ev);
    }
    free(ea), free(ev);
    return ea && ev ? 0 : -1;
}
