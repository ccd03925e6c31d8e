/* finetune.h: the fine-tuning loop of cav-finetune (SPEC 2.12, 3.1, 3.3, 3.4, 3.6): CAVMAEFT started from a
 * pretrained checkpoint (encoder by name, new head), Adam with two learning-rate groups (the head's lr x
 * head_lr), the per-epoch step schedule, label smoothing, SpecAugment/noise/roll through the loader, data
 * parallelism over ranks, per-epoch evaluation on frame 5 with mAP, mAUC and accuracy on raw logits,
 * result.csv [acc, mAP, mAUC, lr], JSON-lines metrics, and checkpoints from which a run resumes exactly. */
#ifndef CAV_FINETUNE_H
#define CAV_FINETUNE_H

#include <stdint.h>

#include "dist.h"
#include "loader.h"
#include "model.h"
#include "schedule.h"

typedef struct {
    cav_config cfg; /* task CAV_TASK_FINETUNE: label_dim, mode, loss */
    char **train, **eval;
    int ntrain, neval;
    const char *out_dir;
    int batch, epochs;
    cav_schedule sched;
    double head_lr;       /* the head group's lr multiplier (SPEC 3.3: 100, 50 or 10) */
    double weight_decay, beta1, beta2, adam_eps;
    double label_smooth;  /* epsilon of the training targets (0.1); evaluation uses hard targets */
    double mixup;         /* probability of mixup; only 0 is implemented (see cav-finetune(1)) */
    int metric_acc;       /* best model by accuracy instead of mAP */
    uint64_t seed;
    cav_loader_opts data;
    const char *init;     /* pretrained parameters by name (.safetensors or .pth); NULL: random init */
    int resume;
    int64_t save_every;
    int keep;
    int64_t log_every;
    int64_t max_steps;
    const char *args_json;
} cav_finetune_opts;

/* The AS-20K recipe (run_cavmae_ft_bal.sh) with mixup off: batch 36, 15 epochs, lr 5e-5 x head 100,
 * decay from epoch 5 every epoch by 0.5, label smoothing 0.1, freqm 48, timem 192, noise, BCE, 527 labels. */
void cav_finetune_opts_default(cav_finetune_opts *o);
/* Smoothed training targets (SPEC 1.7, without mixup): eps/K everywhere, positives 1 - eps. */
void cav_smooth_labels(const float *labels, float *out, int64_t n, int k, double eps);
/* Runs the whole fine-tuning. 0 ok; else an exit code with err filled. */
int cav_finetune_run(const cav_finetune_opts *o, const cav_dist *d, cav_err *err);

#endif
