/* checkpoint.h: training checkpoints that survive crashes. A checkpoint is a directory
 *   RUN/checkpoints/e<epoch>-s<step>/{model.safetensors, optim.safetensors, state.json, COMPLETE}
 * written under a temporary name, flushed to disk, marked COMPLETE and then renamed into place, so a crash
 * or a full disk never leaves a half checkpoint that resuming would pick up; the previous ones stay intact.
 * model.safetensors holds the parameters under the reference's names (loadable by PyTorch's
 * load_state_dict), with the config JSON as metadata; optim.safetensors the Adam moments
 * (`m.<name>`, `v.<name>`); state.json the position (epoch, step, batch in epoch), seed and anything else
 * the trainer needs to continue exactly. */
#ifndef CAV_CHECKPOINT_H
#define CAV_CHECKPOINT_H

#include <stddef.h>

#include "record.h"
#include "safetensors.h"

typedef struct {
    const cav_st_entry *model;
    int nmodel;
    const cav_st_entry *optim;
    int noptim;
    const char *config_json; /* stored as metadata "config" of both files */
    const char *state_json;  /* the whole of state.json */
} cav_ckpt;

/* Writes RUN/checkpoints/e<epoch>-s<step>; then keeps only the newest `keep` complete checkpoints (keep 0
 * keeps all). 0 ok; -1 with err (code 3: disk full or I/O error; nothing of the new checkpoint remains). */
int cav_ckpt_save(const char *run_dir, int epoch, long long step, const cav_ckpt *c, int keep, cav_err *err);

/* The newest complete checkpoint directory under RUN/checkpoints into out; 1 found, 0 none, -1 error. */
int cav_ckpt_latest(const char *run_dir, char *out, size_t outlen, cav_err *err);

/* mkdir -p; 0 ok, -1 with err (code 3). */
int cav_mkdirs(const char *path, cav_err *err);

#endif
