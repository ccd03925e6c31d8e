/* embed.h: the retrieval embeddings of the reference (cav-numerics(7) 4, 2.11): a CAV-MAE encoder loaded from
 * a checkpoint (safetensors with the config as metadata, as cav-pretrain writes, or a reference .pth),
 * forward_feat without masking, and the pooled embeddings: the mean over all tokens (audio 512, visual
 * 196 at the reference's sizes) followed by L2 normalisation, as src/retrieval.py computes them.
 *
 * The checkpoint may be a pretraining model (CAVMAE: the decoder and mask token are ignored) or a
 * fine-tuned one (CAVMAEFT: the classification head is ignored); every encoder parameter must be in the
 * file with its shape, and a name that belongs to neither model is refused, so a file of another model
 * is never silently half-loaded (the reference loads with strict=False and would run on random weights). */
#ifndef CAV_EMBED_H
#define CAV_EMBED_H

#include "model.h"

typedef enum { CAV_EMBED_AUTO = -1, CAV_EMBED_PRETRAIN = 0, CAV_EMBED_FINETUNE = 1 } cav_embed_type;

typedef struct {
    const char *path;    /* checkpoint: *.safetensors, else a PyTorch .pth */
    cav_embed_type type; /* AUTO: finetune when the file holds mlp_head.* or its config has label_dim */
    const char *arch;    /* "base" or "tiny" (cav-pretrain --model): used only without a metadata config */
    int nset;            /* knobs applied last, by the reference's names (cav_config_set) */
    const char *const *set_keys, *const *set_vals;
    int batch;          /* rows per forward */
    const char *device; /* backend name for cav_backend_open ("cpu" when NULL) */
    int decoder;        /* also load the decoder and run task PRETRAIN (reconstructions; pretraining files) */
} cav_embed_opts;

typedef struct {
    cav_model *m;         /* task FEAT, batch rows; inputs CAV_IN_AUDIO [B,T,F] and CAV_IN_VIDEO [B,3,S,S] */
    cav_embed_type type;  /* what the checkpoint was */
    int config_from_file; /* the config came from the checkpoint's metadata */
    int nparams_loaded;
} cav_embedder;

/* Builds the encoder and loads the checkpoint. 0 ok; -1 with err (1 usage: bad --set/--arch, 2 bad or
 * mismatching checkpoint, 3 resources). */
int cav_embedder_open(cav_embedder *e, const cav_embed_opts *o, cav_err *err);
void cav_embedder_close(cav_embedder *e);

/* forward_feat on the model's inputs, then for rows 0..n-1: emb_a [n,D], emb_v [n,D] pooled and
 * normalised (the model's outputs "emb_a", "emb_v"). The token outputs stay in the model (outputs "feat_a"
 * [B,La,D], "feat_v" [B,Lv,D]). 0 ok, -1 out of memory. */
int cav_embedder_run(cav_embedder *e, int n, float *emb_a, float *emb_v);

#endif
