/* trainio.h: the files a training tool writes and reads back, shared by cav-pretrain and cav-finetune:
 * a model as safetensors (reference names, config JSON as metadata), a checkpoint of the parameters and
 * Adam moments with the trainer's own state.json (through lib/checkpoint's crash-safe directories), the
 * restore of such a checkpoint into a model (through lib/model/weights), the weight average of models, and
 * writing a small text file. */
#ifndef CAV_TRAINIO_H
#define CAV_TRAINIO_H

#include <stddef.h>

#include "json.h"
#include "model.h"

/* The model's parameters to path; 0 ok, -1 with err. */
int cav_train_save_model(cav_model *m, const char *path, const char *cfgjson, cav_err *err);
/* RUN/checkpoints/e<epoch>-s<step> with model.safetensors, optim.safetensors (m.<name>, v.<name>) and
 * state_json as state.json; keeps the newest `keep` (0: all). moments: NULL for the model's own, or both
 * moments in host memory ([2, nparams]: m then v; a ZeRO run gathers them from the ranks' shards). 0 ok,
 * -1 with err. */
int cav_train_save_checkpoint(cav_model *m, const float *moments, const char *run_dir, int epoch,
                              long long step, const char *cfgjson, const char *state_json, int keep,
                              cav_err *err);
/* Parameters and Adam moments (allocated by the caller) from checkpoint directory dir; returns its
 * state.json parsed (the caller frees it), or NULL with err. */
cav_json *cav_train_load_checkpoint(cav_model *m, const char *dir, cav_err *err);
/* Weight averaging (cav-numerics(7) 3.3, the reference's wa_model): the mean of every parameter over the n
 * model files (each loaded strictly: exactly the model's tensors), summed in file order in float32 and then
 * divided by n, as the reference does; left in m's parameters and, when out is not NULL, written there as
 * a model. 0 ok, -1 with err. */
int cav_train_average_models(cav_model *m, char *const *paths, int n, const char *out, const char *cfgjson,
                             cav_err *err);
int cav_train_write_file(const char *path, const char *text, cav_err *err);

#endif
