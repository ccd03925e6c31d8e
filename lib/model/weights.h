/* weights.h: a model's parameters by name from a file, for every tool that loads a model (cav-pretrain,
 * cav-finetune, cav-embed, the debug-state check): a PyTorch .pth state dict or a safetensors file opened
 * alike ("module." prefixes stripped), its tensors checked against the model's table and copied in, the
 * paper's ImageNet-MAE start point (cav-numerics(7) 3.5), and the model config read back from the JSON that
 * cav_config_json writes into a file's metadata (the one serialiser; this is its reader). */
#ifndef CAV_WEIGHTS_H
#define CAV_WEIGHTS_H

#include "json.h"
#include "model.h"
#include "pth.h"
#include "safetensors.h"

/* An open weights file: a .pth is decoded into memory, a safetensors file is mapped. */
typedef struct {
    const char *path;
    int is_st; /* the name ends in .safetensors */
    cav_safetensors st;
    cav_pth pth;
    int n; /* tensors */
} cav_weights;

int cav_weights_open(cav_weights *w, const char *path, cav_err *err);
void cav_weights_close(cav_weights *w);
const char *cav_weights_name(const cav_weights *w, int i); /* "module." stripped */
int cav_weights_ndim(const cav_weights *w, int i);
const int64_t *cav_weights_shape(const cav_weights *w, int i);
int cav_weights_find(const cav_weights *w, const char *name); /* index, or -1 */
/* Metadata (safetensors only; NULL for a .pth or an absent key). */
const char *cav_weights_meta(const cav_weights *w, const char *key);

/* How a file's tensors go into a model. */
typedef struct {
    int allow_extra;   /* names the model lacks are passed over instead of refused */
    int allow_missing; /* model parameters absent from the file keep their values instead of being refused */
    /* names neither loaded nor refused (the decoder of a pretraining file in a retrieval encoder, the
     * debug state's inputs and outputs); NULL: none */
    int (*ignore)(const char *name, void *ctx);
    void *ctx;
    const char *shape_hint; /* appended to a shape mismatch's message; NULL: nothing */
    char *seen;             /* when not NULL: [m->ntable], 1 where the file supplied the parameter */
    int loaded;             /* out: parameters copied */
} cav_weights_load_opts;

/* Every tensor of w whose name is a parameter of m, shapes checked, into m's parameters. 0 ok; -1 with err
 * (2: a name or shape the model does not have, or a missing parameter; 3: memory). */
int cav_weights_load(cav_model *m, const cav_weights *w, cav_weights_load_opts *o, cav_err *err);
/* The same from a path, into a buffer of the model (CAV_BUF_PARAMS, or an Adam moment with a name prefix:
 * prefix "m." reads "m.<name>" into CAV_BUF_ADAM_M). */
int cav_weights_load_path(cav_model *m, const char *path, int allow_extra, int allow_missing, int *loaded,
                          cav_err *err);
int cav_weights_load_buffer(cav_model *m, const cav_weights *w, cav_buffer buf, const char *prefix,
                            cav_err *err);

/* The paper's start point (cav-numerics(7) 3.5): an ImageNet MAE ViT-B/16 .pth mapped onto the CAV-MAE
 * model. */
int cav_weights_from_mae(cav_model *m, const char *path, cav_err *err);

/* Config keys (as cav_config_json writes them, or a debug state's) applied to cfg one by one: a key the C
 * model does not know is an error, never silently ignored. `what` names the source in messages ("metadata
 * config"); skip(key) passes over keys that are not the model's (NULL: none). -1 with err code 2. */
int cav_config_from_json(cav_config *cfg, const cav_json *j, const char *path, const char *what,
                         int (*skip)(const char *key), cav_err *err);

#endif
