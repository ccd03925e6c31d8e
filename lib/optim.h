/* optim.h: torch.optim.Adam over a model's parameter table with PyTorch's treatment of parameters the loss
 * never reaches. In PyTorch such a parameter keeps grad None and Adam skips it entirely (no weight decay,
 * no moment update); in the C model its gradient is exactly zero, and a plain Adam step would still move it
 * through the coupled weight decay. Which parameters the loss reaches depends only on the configuration (an
 * unused LayerNorm, a branch whose weight is 0), so it is read off one backward pass: a trainable
 * parameter whose gradient is exactly zero everywhere is unreached. */
#ifndef CAV_OPTIM_H
#define CAV_OPTIM_H

#include "model.h"

/* reached[ntable]: 1 where the current gradients are not all zero. Returns how many are reached. */
int cav_optim_mark_reached(const cav_model *m, unsigned char *reached);
/* Allocates the Adam moments if needed; 0 ok, -1 out of memory. */
int cav_optim_alloc(cav_model *m);
/* One Adam step (SPEC 3.1) over the trainable, reached parameters; mlp_head.* uses lr * head_lr_scale. */
void cav_optim_adam(cav_model *m, const unsigned char *reached, double lr, double head_lr_scale, double beta1,
                    double beta2, double eps, double wd);

#endif
