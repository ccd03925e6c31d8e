/* reconstruct.c: see reconstruct.h. The model is read only through its copying accessors (outputs pred_*,
 * mask_* and its inputs); the targets are cut again from the inputs with patchify, so nothing here depends
 * on the model's internal buffers. */
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
        if (norm_pix) { /* the inverse of cav_normpix (eps 1e-6, unbiased variance) */
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

/* Row b of a model output, downloaded (rows of `per` floats); NULL when the model has no such output. */
static float *output_row(const cav_model *m, const char *name, int b, size_t per) {
    int64_t shape[4];
    int nd, n = cav_model_output_shape(m, name, shape, &nd);
    float *all = n > 0 ? malloc((size_t)n * sizeof(float)) : NULL, *row = NULL;
    if (all && !cav_model_read_output(m, name, all) && (row = malloc(per * sizeof(float))))
        memcpy(row, all + (size_t)b * per, per * sizeof(float));
    free(all);
    return row;
}

int cav_reconstruct(cav_model *m, int b, cav_reconstruction *r, cav_err *err) {
    memset(r, 0, sizeof *r);
    int64_t sa[4], sv[4];
    int nd;
    if (cav_model_output_shape(m, "pred_a", sa, &nd) <= 0 ||
        cav_model_output_shape(m, "pred_v", sv, &nd) <= 0)
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
    r->mask_a = output_row(m, "mask_a", b, (size_t)r->La),
    r->mask_v = output_row(m, "mask_v", b, (size_t)r->Lv);
    r->pred_a = output_row(m, "pred_a", b, (size_t)r->La * 256);
    r->pred_v = output_row(m, "pred_v", b, (size_t)r->Lv * 768);
    /* the model's inputs, rows 0..b */
    float *ia = malloc((size_t)(b + 1) * A * sizeof(float)),
          *iv = malloc((size_t)(b + 1) * V * sizeof(float));
    bad |= !r->mask_a || !r->mask_v || !r->pred_a || !r->pred_v || !ia || !iv;
    if (!bad) {
        cav_model_get_input(m, CAV_IN_AUDIO, ia, b + 1), cav_model_get_input(m, CAV_IN_VIDEO, iv, b + 1);
        cav_plane pla = cav_plane_fbank(r->T, r->F), plv = cav_plane_chw(3, r->S, r->S);
        bad =
            one(&pla, ia + (size_t)b * A, r->pred_a, r->mask_a, r->La, 256, m->cfg.norm_pix_loss, r->audio) ||
            one(&plv, iv + (size_t)b * V, r->pred_v, r->mask_v, r->Lv, 768, m->cfg.norm_pix_loss, r->video);
    }
    free(ia), free(iv);
    if (bad) return cav_reconstruction_free(r), cav_fail(err, 3, "out of memory");
    return 0;
}

void cav_reconstruction_free(cav_reconstruction *r) {
    for (int k = 0; k < 3; k++) free(r->audio[k]), free(r->video[k]);
    free(r->mask_a), free(r->mask_v), free(r->pred_a), free(r->pred_v);
    memset(r, 0, sizeof *r);
}
