/* reconstruct.h: what a pretrained CAV-MAE sees (the paper's Figures 5-7): after a pretraining forward with
 * masks, one clip's spectrogram and image as the model got them, masked, and reconstructed by the decoder,
 * back in the input's layout through the inverse of patchify(1) (norm-pix predictions un-normalised with
 * each target patch's own mean and standard deviation, as norm_pix_loss normalised them). */
#ifndef CAV_RECONSTRUCT_H
#define CAV_RECONSTRUCT_H

#include "model.h"

typedef struct {
    int T, F, S, La, Lv;
    /* [0] the input, [1] masked (NaN in the masked patches), [2] the reconstruction: the visible patches
     * from the input, the masked ones from the decoder; in the model's units (normalised fbank [T, F],
     * normalised image [3, S, S]) */
    float *audio[3], *video[3];
    float *mask_a, *mask_v; /* [La], [Lv]: 1 masked, 0 visible */
    float *pred_a, *pred_v; /* [La, 256], [Lv, 768]: the decoder's output as it is (norm-pix units or not) */
} cav_reconstruction;

/* Row b of a model that ran cav_model_forward in task PRETRAIN (with the decoder). 0 ok; -1 with err when
 * the model has no decoder output (mae_loss_weight 0, or a single-modality model) or memory runs out. */
int cav_reconstruct(cav_model *m, int b, cav_reconstruction *r, cav_err *err);
void cav_reconstruction_free(cav_reconstruction *r);

#endif
