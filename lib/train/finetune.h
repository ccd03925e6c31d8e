/* finetune.h: cav-finetune's task for the training driver (cav-numerics(7) 2.12, 3.1, 3.3, 3.4, 3.6):
 * CAVMAEFT started from a pretrained checkpoint (encoder by name, new head), Adam with two learning-rate
 * groups (the head's lr x head_lr), the loader's smoothed and mixed targets (1.7), per-epoch evaluation on
 * frame 5 with mAP, mAUC and accuracy on raw logits, and result.csv [acc, mAP, mAUC, lr]. */
#ifndef CAV_FINETUNE_H
#define CAV_FINETUNE_H

#include <stdint.h>

#include "dist.h"
#include "fteval.h"
#include "model.h"
#include "train.h"

typedef struct {
    cav_train_opts run;
    cav_model_opts model; /* size and knobs (label_dim, mode, loss, ...): cfg is built from them */
    cav_config cfg;       /* task CAV_TASK_FINETUNE: label_dim, mode, loss */
    double head_lr;       /* the head group's lr multiplier (cav-numerics(7) 3.3: 100, 50 or 10) */
    double label_smooth;  /* epsilon of the training targets (0.1); evaluation uses hard targets */
    double mixup;         /* probability that a training sample is mixed (cav-numerics(7) 1.7) */
    int bal;              /* balanced sampling by the shards' `weight` (cav-numerics(7) 1.8) */
    int metric;           /* best model by: 1 accuracy, 0 mAP, -1 (auto) accuracy with --loss ce, else mAP */
    const char *recipe;   /* the preset whose defaults the run took (recipes.h), or NULL */
    cav_ft_eval_opts final; /* the final evaluation: WA, frames, --eval-only, predictions (fteval.h) */
} cav_finetune_opts;

/* cav-finetune's options, declared once: its tables (see cav_train_options_of). */
extern const cav_train_options_of cav_finetune_options_of;
/* The tool (cav_train_main): its tables, usage and the run. */
extern const cav_train_tool cav_finetune_tool;
/* Runs the whole fine-tuning. 0 ok; else an exit code with err filled. */
int cav_finetune_run(const cav_finetune_opts *o, const cav_dist *d, cav_err *err);

#endif
