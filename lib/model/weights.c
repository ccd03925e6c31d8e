/* weights.c: see weights.h. Values reach the model only through cav_model_write_param, so the same code
 * loads a model whose buffers live on a device. */
#include "weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *strip_module(const char *name) {
    return strncmp(name, "module.", 7) == 0 ? name + 7 : name;
}

int cav_weights_open(cav_weights *w, const char *path, cav_err *err) {
    memset(w, 0, sizeof *w);
    w->path = path;
    size_t len = strlen(path);
    w->is_st = len > 12 && strcmp(path + len - 12, ".safetensors") == 0;
    if (w->is_st) {
        if (cav_st_open(&w->st, path, err)) return -1;
        w->n = w->st.n;
    } else {
        if (cav_pth_load(&w->pth, path, err)) return -1;
        w->n = w->pth.n;
    }
    return 0;
}

void cav_weights_close(cav_weights *w) {
    if (!w->path) return;
    if (w->is_st)
        cav_st_close(&w->st);
    else
        cav_pth_free(&w->pth);
    w->path = NULL;
}

const char *cav_weights_name(const cav_weights *w, int i) {
    return strip_module(w->is_st ? w->st.t[i].name : w->pth.t[i].name);
}
int cav_weights_ndim(const cav_weights *w, int i) {
    return w->is_st ? w->st.t[i].ndim : w->pth.t[i].ndim;
}
const int64_t *cav_weights_shape(const cav_weights *w, int i) {
    return w->is_st ? w->st.t[i].shape : w->pth.t[i].shape;
}
static size_t numel(const cav_weights *w, int i) {
    return w->is_st ? w->st.t[i].numel : w->pth.t[i].numel;
}

int cav_weights_find(const cav_weights *w, const char *name) {
    for (int i = 0; i < w->n; i++)
        if (strcmp(cav_weights_name(w, i), name) == 0) return i;
    return -1;
}

const char *cav_weights_meta(const cav_weights *w, const char *key) {
    return w->is_st ? cav_st_meta(&w->st, key) : NULL;
}

/* Values [from, from + n) of tensor i as float32: a .pth's decoded data in place, a safetensors tensor
 * converted into *tmp (grown as needed). NULL with err. */
static const float *values(const cav_weights *w, int i, size_t from, size_t n, float **tmp, size_t *cap,
                           cav_err *err) {
    if (!w->is_st) return w->pth.t[i].data + from;
    size_t need = from + n;
    if (need > *cap) {
        float *p = realloc(*tmp, (need ? need : 1) * sizeof *p);
        if (!p) return cav_fail(err, 3, "out of memory"), NULL;
        *tmp = p, *cap = need;
    }
    if (cav_st_copy_f32(&w->st, &w->st.t[i], *tmp, need, err)) return NULL;
    return *tmp + from;
}

static void shape_text(char *s, size_t n, int ndim, const int64_t *shape) {
    s[0] = 0;
    for (int d = 0; d < ndim && d < 4; d++)
        snprintf(s + strlen(s), n - strlen(s), "%s%lld", d ? "," : "", (long long)shape[d]);
}

int cav_weights_load(cav_model *m, const cav_weights *w, cav_weights_load_opts *o, cav_err *err) {
    int rc = 0;
    float *tmp = NULL;
    size_t cap = 0;
    char *seen = o->seen ? o->seen : calloc((size_t)m->ntable, 1);
    if (!seen) return cav_fail(err, 3, "out of memory");
    memset(seen, 0, (size_t)m->ntable);
    o->loaded = 0;
    for (int i = 0; i < w->n && rc == 0; i++) {
        const char *name = cav_weights_name(w, i);
        if (o->ignore && o->ignore(name, o->ctx)) continue;
        cav_param *p = cav_model_param(m, name);
        if (!p) {
            if (!o->allow_extra)
                rc = cav_fail(err, 2, "%s: %s: not a parameter of this model", w->path, name);
            continue;
        }
        int ndim = cav_weights_ndim(w, i);
        const int64_t *shape = cav_weights_shape(w, i);
        int same = ndim == p->ndim;
        for (int d = 0; same && d < ndim; d++) same = shape[d] == p->shape[d];
        if (!same) {
            char got[96], want[96];
            shape_text(got, sizeof got, ndim, shape);
            shape_text(want, sizeof want, p->ndim, p->shape);
            rc = cav_fail(err, 2, "%s: %s: shape [%s], the model's is [%s]%s", w->path, name, got, want,
                          o->shape_hint ? o->shape_hint : "");
            break;
        }
        const float *v = values(w, i, 0, p->numel, &tmp, &cap, err);
        if (!v) {
            rc = -1;
            break;
        }
        cav_model_write_param(m, CAV_BUF_PARAMS, p, v);
        seen[p - m->table] = 1;
        o->loaded++;
    }
    for (int i = 0; i < m->ntable && rc == 0 && !o->allow_missing; i++)
        if (!seen[i]) rc = cav_fail(err, 2, "%s: parameter %s missing", w->path, m->table[i].name);
    free(tmp);
    if (seen != o->seen) free(seen);
    return rc ? -1 : 0;
}

int cav_weights_load_path(cav_model *m, const char *path, int allow_extra, int allow_missing, int *loaded,
                          cav_err *err) {
    cav_weights w;
    if (cav_weights_open(&w, path, err)) return -1;
    cav_weights_load_opts o = {.allow_extra = allow_extra, .allow_missing = allow_missing};
    int rc = cav_weights_load(m, &w, &o, err);
    cav_weights_close(&w);
    if (loaded) *loaded = o.loaded;
    return rc;
}

int cav_weights_load_buffer(cav_model *m, const cav_weights *w, cav_buffer buf, const char *prefix,
                            cav_err *err) {
    float *tmp = NULL;
    size_t cap = 0;
    int rc = 0;
    for (int i = 0; i < m->ntable && !rc; i++) {
        char name[128];
        snprintf(name, sizeof name, "%s%s", prefix, m->table[i].name);
        int k = cav_weights_find(w, name);
        const float *v = NULL;
        if (k < 0)
            rc = cav_fail(err, 2, "%s: %s missing", w->path, name);
        else if (numel(w, k) != m->table[i].numel)
            rc = cav_fail(err, 2, "%s: %s: %zu values, the model's has %zu", w->path, name, numel(w, k),
                          m->table[i].numel);
        else if (!(v = values(w, k, 0, m->table[i].numel, &tmp, &cap, err)))
            rc = -1;
        else
            cav_model_write_param(m, buf, &m->table[i], v);
    }
    free(tmp);
    return rc ? -1 : 0;
}

/* ---- the ImageNet-MAE start point ------------------------------------------------------------------ */

/* dst <- src's values from skip_front on (the first rows of a larger matrix, or a table without its cls row).
 */
static int copy_rows(cav_model *m, const char *dst, const cav_weights *w, const char *src, size_t skip_front,
                     cav_err *err) {
    cav_param *d = cav_model_param(m, dst);
    int s = cav_weights_find(w, src);
    if (!d) return 0; /* the model has no such parameter (e.g. a single-modality variant) */
    if (s < 0) return cav_fail(err, 2, "%s: %s missing (needed for %s)", w->path, src, dst);
    if (numel(w, s) < skip_front + d->numel)
        return cav_fail(err, 2, "%s: %s has %zu values, %s needs %zu", w->path, src, numel(w, s), dst,
                        d->numel);
    cav_model_write_param(m, CAV_BUF_PARAMS, d, w->pth.t[s].data + skip_front);
    return 0;
}

int cav_weights_from_mae(cav_model *m, const char *path, cav_err *err) {
    cav_weights w;
    if (cav_weights_open(&w, path, err)) return -1;
    if (w.is_st) {
        cav_weights_close(&w);
        return cav_fail(err, 2, "%s: an ImageNet MAE checkpoint is a PyTorch .pth", path);
    }
    int rc = 0, msd = m->cfg.modality_specific_depth, depth = m->cfg.depth;
    const char *blk[] = {"norm1.weight",     "norm1.bias",     "attn.qkv.weight", "attn.qkv.bias",
                         "attn.proj.weight", "attn.proj.bias", "norm2.weight",    "norm2.bias",
                         "mlp.fc1.weight",   "mlp.fc1.bias",   "mlp.fc2.weight",  "mlp.fc2.bias"};
    char src[128], dst[128];
    for (int j = 0; j < depth && !rc; j++)
        for (size_t k = 0; k < sizeof blk / sizeof *blk && !rc; k++) {
            snprintf(src, sizeof src, "blocks.%d.%s", j, blk[k]);
            if (j < msd) { /* MAE block j -> audio and visual block j */
                snprintf(dst, sizeof dst, "blocks_a.%d.%s", j, blk[k]);
                rc = copy_rows(m, dst, &w, src, 0, err);
                snprintf(dst, sizeof dst, "blocks_v.%d.%s", j, blk[k]);
                if (!rc) rc = copy_rows(m, dst, &w, src, 0, err);
            } else { /* the rest -> joint blocks, whose modality LayerNorms start as the shared ones */
                snprintf(dst, sizeof dst, "blocks_u.%d.%s", j - msd, blk[k]);
                rc = copy_rows(m, dst, &w, src, 0, err);
                if (!rc && strncmp(blk[k], "norm", 4) == 0)
                    for (int mod = 0; mod < 2 && !rc; mod++) {
                        snprintf(dst, sizeof dst, "blocks_u.%d.norm%c_%c.%s", j - msd, blk[k][4],
                                 mod ? 'v' : 'a', blk[k] + 6);
                        rc = copy_rows(m, dst, &w, src, 0, err);
                    }
            }
        }
    const char *same[] = {"decoder_embed.weight",   "decoder_embed.bias", "mask_token",
                          "decoder_norm.weight",    "decoder_norm.bias",  "patch_embed_v.proj.weight",
                          "patch_embed_v.proj.bias"};
    for (size_t k = 0; k < sizeof same / sizeof *same && !rc; k++) {
        char mae[64]; /* the same name in MAE, but patch_embed_v is MAE's patch_embed */
        if (strncmp(same[k], "patch_embed_v", 13) == 0)
            snprintf(mae, sizeof mae, "patch_embed%s", same[k] + 13);
        else
            snprintf(mae, sizeof mae, "%s", same[k]);
        rc = copy_rows(m, same[k], &w, mae, 0, err);
    }
    for (int i = 0; i < m->cfg.decoder_depth && !rc; i++)
        for (size_t k = 0; k < sizeof blk / sizeof *blk && !rc; k++) {
            snprintf(dst, sizeof dst, "decoder_blocks.%d.%s", i, blk[k]);
            rc = copy_rows(m, dst, &w, dst, 0, err);
        }
    for (int k = 0; k < 2 && !rc; k++) {
        const char *suf = k ? "bias" : "weight";
        const char *targets[] = {"norm", "norm_a", "norm_v"};
        for (int t = 0; t < 3 && !rc; t++) {
            snprintf(dst, sizeof dst, "%s.%s", targets[t], suf);
            snprintf(src, sizeof src, "norm.%s", suf);
            rc = copy_rows(m, dst, &w, src, 0, err);
        }
        snprintf(dst, sizeof dst, "decoder_pred_a.%s", suf); /* the first 256 rows */
        snprintf(src, sizeof src, "decoder_pred.%s", suf);
        if (!rc) rc = copy_rows(m, dst, &w, src, 0, err);
        snprintf(dst, sizeof dst, "decoder_pred_v.%s", suf);
        if (!rc) rc = copy_rows(m, dst, &w, src, 0, err);
    }
    /* Position tables without MAE's cls row. */
    if (!rc) rc = copy_rows(m, "pos_embed_v", &w, "pos_embed", (size_t)m->D, err);
    if (!rc) rc = copy_rows(m, "decoder_pos_embed_v", &w, "decoder_pos_embed", (size_t)m->Dd, err);
    /* The audio patch embedding: MAE's RGB kernels summed over the channel axis. */
    cav_param *pa = cav_model_param(m, "patch_embed_a.proj.weight");
    const cav_pth_tensor *pw = cav_pth_find(&w.pth, "patch_embed.proj.weight");
    if (!rc && pa) {
        float *sum = NULL;
        if (!pw || pw->ndim != 4 || pw->shape[0] != pa->shape[0] || pw->shape[1] != 3 ||
            pw->shape[2] * pw->shape[3] != pa->shape[2] * pa->shape[3])
            rc = cav_fail(err, 2, "%s: patch_embed.proj.weight: missing or not [%lld,3,16,16]", path,
                          (long long)pa->shape[0]);
        else if (!(sum = malloc(pa->numel * sizeof *sum)))
            rc = cav_fail(err, 3, "out of memory");
        else {
            size_t K = (size_t)(pw->shape[2] * pw->shape[3]);
            for (int64_t o = 0; o < pa->shape[0]; o++)
                for (size_t q = 0; q < K; q++) {
                    const float *x = pw->data + (size_t)o * 3 * K;
                    sum[o * K + q] = x[q] + x[K + q] + x[2 * K + q];
                }
            cav_model_write_param(m, CAV_BUF_PARAMS, pa, sum);
            free(sum);
            rc = copy_rows(m, "patch_embed_a.proj.bias", &w, "patch_embed.proj.bias", 0, err);
        }
    }
    cav_weights_close(&w);
    return rc ? -1 : 0;
}

/* ---- config ---------------------------------------------------------------------------------------- */

int cav_config_from_json(cav_config *cfg, const cav_json *j, const char *path, const char *what,
                         int (*skip)(const char *key), cav_err *err) {
    for (int i = 0; i < j->n; i++) {
        const char *key = j->keys[i];
        const cav_json *v = j->items[i];
        char text[64];
        if (skip && skip(key)) continue;
        switch (v->type) {
        case CAV_JSON_NUMBER:
            snprintf(text, sizeof text, "%.17g", v->number);
            break;
        case CAV_JSON_BOOL:
            snprintf(text, sizeof text, "%s", v->boolean ? "true" : "false");
            break;
        case CAV_JSON_STRING:
            snprintf(text, sizeof text, "%s", v->string);
            break;
        case CAV_JSON_NULL:
            continue; /* null means the reference's default */
        default:
            return cav_fail(err, 2, "%s: %s key %s: not a scalar", path, what, key);
        }
        int rc = cav_config_set(cfg, key, text);
        if (rc == -2) return cav_fail(err, 2, "%s: %s key %s: unknown to this model", path, what, key);
        if (rc) return cav_fail(err, 2, "%s: %s key %s: bad value %s", path, what, key, text);
    }
    return 0;
}
