/* reconstruct.c: see reconstruct.h. The model is read only through cav_model_output (pred_*, mask_*) and its
 * inputs; the targets are cut again from the inputs with patchify, so nothing here depends on the model's
 * internal buffers. */
#include "reconstruct.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "patchify.h"

/* One modality: tok [L, P] target patches of plane pl; pred [L, P]; mask [L]. Fills out[0..2] in pl's layout.
 */
static int one(const cav_plane *pl, const float *src, const float *pred, const float *mask, int L, int P,
               int norm_pix, float *out[3]) {
    float *tok = malloc((size_t)L * P * sizeof *tok), *rec = malloc((size_t)L * P * sizeof *rec);
    if (!tok || !rec) return free(tok), free(rec), -1;
    cav_patchify_f32(pl, src, 16, 16, tok);
    cav_unpatchify_f32(pl, tok, 16, 16, out[0]);
    for (int l = 0; l < L; l++) {
        const float *t = tok + (size_t)l * P, *p = pred + (size_t)l * P;
        float *r = rec + (size_t)l * P;
        double mean = 0, var = 0;
        if (norm_pix) { /* the inverse of cav_norm_pix (eps 1e-6, unbiased variance) */
            for (int k = 0; k < P; k++) mean += t[k];
            mean /= P;
            for (int k = 0; k < P; k++) var += (t[k] - mean) * (t[k] - mean);
            var /= P - 1;
        }
        for (int k = 0; k < P; k++)
            r[k] = mask[l] > 0.5f ? (norm_pix ? (float)(p[k] * sqrt(var + 1e-6) + mean) : p[k]) : t[k];
    }
    cav_unpatchify_f32(pl, rec, 16, 16, out[2]);
    for (int l = 0; l < L; l++)
        if (mask[l] > 0.5f)
            for (int k = 0; k < P; k++) tok[(size_t)l * P + k] = NAN;
    cav_unpatchify_f32(pl, tok, 16, 16, out[1]);
    free(tok), free(rec);
    return 0;
}

int cav_reconstruct(cav_model *m, int b, cav_reconstruction *r, cav_err *err) {
    memset(r, 0, sizeof *r);
    int64_t sa[4], sv[4], sma[4], smv[4];
    int nd;
    const float *pa = cav_model_output(m, "pred_a", sa, &nd), *pv = cav_model_output(m, "pred_v", sv, &nd);
    const float *ma = cav_model_output(m, "mask_a", sma, &nd), *mv = cav_model_output(m, "mask_v", smv, &nd);
    if (!pa || !pv || !ma || !mv)
        return cav_fail(err, 2,
                        "the model has no decoder output for both modalities (a pretraining CAV-MAE with "
                        "mae_loss_weight > 0 is needed)");
    r->T = m->T, r->F = m->F, r->S = m->S, r->La = (int)sa[1], r->Lv = (int)sv[1];
    size_t A = (size_t)r->T * r->F, V = (size_t)3 * r->S * r->S;
    int bad = 0;
    for (int k = 0; k < 3; k++) {
        bad |= !(r->audio[k] = malloc(A * sizeof(float)));
        bad |= !(r->video[k] = malloc(V * sizeof(float)));
    }
    bad |= !(r->mask_a = malloc((size_t)r->La * sizeof(float))) ||
           !(r->mask_v = malloc((size_t)r->Lv * sizeof(float)));
    bad |= !(r->pred_a = malloc((size_t)r->La * 256 * sizeof(float))) ||
           !(r->pred_v = malloc((size_t)r->Lv * 768 * sizeof(float)));
    if (bad) return cav_reconstruction_free(r), cav_fail(err, 3, "out of memory");
    memcpy(r->mask_a, ma + (size_t)b * r->La, (size_t)r->La * sizeof(float));
    memcpy(r->mask_v, mv + (size_t)b * r->Lv, (size_t)r->Lv * sizeof(float));
    memcpy(r->pred_a, pa + (size_t)b * r->La * 256, (size_t)r->La * 256 * sizeof(float));
    memcpy(r->pred_v, pv + (size_t)b * r->Lv * 768, (size_t)r->Lv * 768 * sizeof(float));
    cav_plane pla = cav_plane_fbank(r->T, r->F), plv = cav_plane_chw(3, r->S, r->S);
    if (one(&pla, m->in.audio + (size_t)b * A, r->pred_a, r->mask_a, r->La, 256, m->cfg.norm_pix_loss,
            r->audio) ||
        one(&plv, m->in.video + (size_t)b * V, r->pred_v, r->mask_v, r->Lv, 768, m->cfg.norm_pix_loss,
            r->video))
        return cav_reconstruction_free(r), cav_fail(err, 3, "out of memory");
    return 0;
}

void cav_reconstruction_free(cav_reconstruction *r) {
    for (int k = 0; k < 3; k++) free(r->audio[k]), free(r->video[k]);
    free(r->mask_a), free(r->mask_v), free(r->pred_a), free(r->pred_v);
    memset(r, 0, sizeof *r);
}
