/* pretrain.h: cav-pretrain's task for the training driver (cav-numerics(7) 3.1, 3.2, 3.6): the CAV-MAE models
 * with masking, contrast groups (the reference's per-GPU contrastive batches, summed) also spread over ranks,
 * per-epoch evaluation with masking, and the reference's result.csv columns. */
#ifndef CAV_PRETRAIN_H
#define CAV_PRETRAIN_H

#include "dist.h"
#include "model.h"
#include "train.h"

typedef struct {
    cav_train_opts run;
    cav_model_opts model; /* size, variant, knobs: cfg is built from them */
    cav_config cfg;
    int groups;             /* contrast groups per global batch */
    int group_mean;         /* reduce group losses by their mean instead of the reference's sum */
    const char *init_mae;   /* an ImageNet MAE ViT-B .pth mapped as cav-numerics(7) 3.5 */
    cav_train_paths checks; /* debug states to check instead of training */
} cav_pretrain_opts;

/* cav-pretrain's options, declared once: its tables (see cav_train_options_of). */
extern const cav_train_options_of cav_pretrain_options_of;
/* The tool (cav_train_main): its tables, usage, the run, and --check-debug-state instead of training. */
extern const cav_train_tool cav_pretrain_tool;
/* Runs the whole training. 0 ok; else an exit code with err filled. */
int cav_pretrain_run(const cav_pretrain_opts *o, const cav_dist *d, cav_err *err);

#endif
