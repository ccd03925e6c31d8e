/* pretrain.h: the pretraining loop of cav-pretrain (SPEC 3.1, 3.2, 3.6): Adam with coupled weight decay,
 * the per-epoch step schedule, contrast groups (the reference's per-GPU contrastive batches, summed), data
 * parallelism over ranks, per-epoch evaluation with masking, result.csv and JSON-lines metrics, and
 * checkpoints from which a crashed run resumes exactly. */
#ifndef CAV_PRETRAIN_H
#define CAV_PRETRAIN_H

#include <stdint.h>

#include "dist.h"
#include "loader.h"
#include "model.h"
#include "schedule.h"

typedef struct {
    cav_config cfg;
    char **train, **eval; /* shard paths */
    int ntrain, neval;
    const char *out_dir;
    int batch, epochs;
    cav_schedule sched;
    double weight_decay, beta1, beta2, adam_eps;
    int groups;     /* contrast groups per global batch */
    int group_mean; /* reduce group losses by their mean instead of the reference's sum */
    uint64_t seed;
    cav_loader_opts data; /* transforms, threads, prefetch (batch, train, rank fields are set by the loop) */
    const char *init;     /* parameters by name from a checkpoint (.safetensors or .pth); NULL: random */
    const char *init_mae; /* an ImageNet MAE ViT-B .pth mapped as SPEC 3.5 */
    int resume;           /* continue from out_dir's newest complete checkpoint */
    int64_t save_every;   /* steps between checkpoints (0: only at epoch ends) */
    int keep;             /* complete checkpoints kept (0: all) */
    int64_t log_every;    /* steps between metrics lines */
    int64_t max_steps;    /* stop (after a checkpoint) once this many steps are done; 0: no limit */
    const char *args_json; /* the command line, saved as args.json */
    int loader_only;       /* run one epoch of the data loader alone and report its rate (no model) */
} cav_pretrain_opts;

void cav_pretrain_opts_default(cav_pretrain_opts *o);
/* Runs the whole training. 0 ok; else an exit code with err filled. */
int cav_pretrain_run(const cav_pretrain_opts *o, const cav_dist *d, cav_err *err);

/* Parameters by name from a safetensors or .pth file ("module." prefixes accepted). Names the file has and
 * the model lacks are refused unless allow_extra; model parameters missing from the file are refused
 * unless allow_missing (then they keep their values). Shapes must match. */
int cav_load_params(cav_model *m, const char *path, int allow_extra, int allow_missing, int *loaded, cav_err *err);
/* The paper's start point (SPEC 3.5): an ImageNet MAE ViT-B/16 checkpoint mapped onto the CAV-MAE model. */
int cav_init_from_mae(cav_model *m, const char *path, cav_err *err);

#endif
