/* model.h: the CAV-MAE models in C — the pretraining model CAVMAE (cav-numerics(7) 2.2-2.11, with the six
 * pretraining variants of the paper as settings of one config), the fine-tuning model CAVMAEFT
 * (cav-numerics(7) 2.12) and the embedding pass forward_feat — composed explicitly from kernels/kernels.h,
 * forward and backward, in the style of llm.c: one allocation per role (parameters, gradients, Adam moments,
 * activations), structs of typed pointers into them, sizes computed from the config and the batch size.
 *
 * Parameters are listed in a table under the reference's state-dict names and shapes, in its order
 * (cav-numerics(7) 2.2: e.g. "blocks_a.3.attn.qkv.weight", conv weights [768,1,16,16]), so checkpoints and
 * PyTorch debug states map by name. Usage:
 *   cav_model *m = cav_model_create(&cfg, B, &err);  cav_model_init(m, seed);   (or load by name)
 *   cav_model_set_input(m, CAV_IN_AUDIO, audio, B) ... (keep indices, or cav_model_random_masks; labels)
 *   cav_model_forward(m);  cav_model_backward(m);  cav_model_adam_step(m, ...);
 * Scalar losses are in m->out; tensors by name through cav_model_read_output. Code outside model.c
 * touches the model's buffers only through the accessors below, which copy (the distributed layer's
 * collectives alone run on them in place: cav_model_buffer_ptr). */
#ifndef CAV_MODEL_H
#define CAV_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "record.h"

#define CAV_MAX_DEPTH 32

typedef enum { CAV_TASK_PRETRAIN = 0, CAV_TASK_FINETUNE = 1, CAV_TASK_FEAT = 2 } cav_task;
typedef enum { CAV_MASK_UNSTRUCTURED = 0, CAV_MASK_TIME, CAV_MASK_FREQ, CAV_MASK_TF } cav_mask_mode;
typedef enum {
    CAV_FT_MULTIMODAL = 0,
    CAV_FT_AUDIOONLY,
    CAV_FT_VIDEOONLY,
    CAV_FT_MISSINGAUDIOONLY, /* fine-tuned multimodally, only audio present: (mean(norm(U a)) +
                                mean(norm_a(U_a a)))/2 */
    CAV_FT_MISSINGVIDEOONLY,
    /* The paper's Table 2f fusions, which the authors' code lacks (cav-numerics(7) 2.12), with
     * p_a = mean(norm_a(U_a a)), p_v = mean(norm_v(U_v v)), p_u = mean(norm(U [a;v])): "singlemodal" (SM)
     * head(cat(p_a, p_v)), a head of 2D inputs; "multimodal+singlemodal" (MM+SM) head(p_u + (p_a + p_v)/2) */
    CAV_FT_SINGLEMODAL,
    CAV_FT_MMSM,
} cav_ft_mode;

typedef struct {
    cav_task task;
    /* input geometry: audio [T=audio_length, F=mel_bins] fbank, video [3, img_size, img_size]; all multiples
     * of the patch size 16. The reference is 1024 x 128 (8 x 64 patch grid) and 224 (14 x 14). */
    int audio_length, mel_bins, img_size;
    /* encoder: modality_specific_depth audio and visual layers, depth - modality_specific_depth joint ones */
    int embed_dim, depth, modality_specific_depth, num_heads;
    int decoder_embed_dim, decoder_depth, decoder_num_heads;
    double mlp_ratio;
    int norm_pix_loss;
    int tr_pos; /* position tables trainable (pretraining default 0; fine-tuning default 1) */
    /* pretraining forward arguments (cav-numerics(7) 2.11) */
    double mask_ratio_a, mask_ratio_v, mae_loss_weight, contrast_loss_weight;
    cav_mask_mode mask_mode;
    int bidirect_contrast;
    /* single-modality variants (Audio-MAE, Visual-MAE): the absent modality is skipped entirely */
    int use_audio, use_video;
    /* The reference's contrastive streams apply each joint block to the modality-specific output, not to
     * the previous joint block's (cav-numerics(7) 2.7 step 5): only the last joint block counts. 1 chains
     * them instead. */
    int chain_contrast_streams;
    /* fine-tuning (cav-numerics(7) 2.12) */
    int label_dim;
    cav_ft_mode mode;
    int loss_ce; /* 0: BCEWithLogits (mean over B x K); 1: CrossEntropy with soft targets */
    /* linear probing (the reference's freeze_base): only mlp_head is trainable; the backward stops at it */
    int freeze_base;
} cav_config;

/* The reference defaults for a task: CAV-MAE base (768, 11 + 1 layers, 12 heads, decoder 512 x 8 with 16
 * heads), mask 0.75 unstructured, lambda_c 0.01, MAE weight 1, norm_pix off (the class default), tr_pos
 * off in pretraining and on in fine-tuning, label_dim 527 multimodal BCE in fine-tuning. */
cav_config cav_config_default(cav_task task);
/* Sets the pretraining variant of the paper's Table 1 on top of cfg: "cav-mae", "av-mae" (lambda_c 0),
 * "vanilla-av-mae" (12 joint layers, lambda_c 0), "cav" (MAE weight 0), "audio-mae" and "visual-mae"
 * (12 joint layers, one modality, lambda_c 0); '_' may stand for '-'. Returns -1 for an unknown name. */
int cav_config_variant(cav_config *cfg, const char *name);
/* Named model sizes: "base" (the reference's, the default config) or "tiny" (192-dim, 3 heads, 4 + 1
 * layers; for pretraining and embedding configs also decoder 128 x 2 with 4 heads), for CPU runs and tests.
 * Returns -1 for another name. */
int cav_config_size(cav_config *cfg, const char *name);
/* Sets one knob by the reference's constructor/forward argument name (the debug state's config keys):
 * embed_dim, modality_specific_depth, num_heads, decoder_embed_dim, decoder_depth, decoder_num_heads,
 * mlp_ratio, norm_pix_loss, tr_pos, mask_ratio_a, mask_ratio_v, mae_loss_weight, contrast_loss_weight,
 * mask_mode, bidirect_contrast, depth, label_dim, mode, loss ("bce"/"ce"), freeze_base, and the extensions
 * audio_length, img_size, modalities ("a", "v", "av"), chain_contrast_streams; patch_size and in_chans
 * are accepted only at 16 and 3. value is the JSON text (numbers, true/false, bare strings). Returns 0,
 * -1 for a bad value, -2 for an unknown key. */
int cav_config_set(cav_config *cfg, const char *key, const char *value);
/* The config as a flat JSON object with the keys cav_config_set reads (checkpoint metadata): the
 * constructor's keys, then the forward's (pretraining) or label_dim/mode/loss (fine-tuning). Returns the
 * length, or -1 if n is too small. */
int cav_config_json(const cav_config *cfg, char *buf, size_t n);
/* "multimodal", "audioonly", ..., "singlemodal", "multimodal+singlemodal" -> mode, or -1. */
int cav_ft_mode_parse(const char *name);
int cav_mask_mode_parse(const char *name);
/* Checks ranges and divisibility; on failure fills err (code 1: a usage error) and returns -1. */
int cav_config_check(const cav_config *cfg, cav_err *err);

/* One Block's parameters (timm 0.4.5 Block with the reference's 6 LayerNorms), in state-dict order. */
typedef struct {
    float *norm1_w, *norm1_b, *norm1_a_w, *norm1_a_b, *norm1_v_w, *norm1_v_b;
    float *qkv_w, *qkv_b, *proj_w, *proj_b;
    float *norm2_w, *norm2_b, *norm2_a_w, *norm2_a_b, *norm2_v_w, *norm2_v_b;
    float *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} cav_block_params;

/* Every parameter of every task (unused ones stay NULL); the same struct types the gradients. */
typedef struct {
    float *modality_a, *modality_v, *pos_embed_a, *pos_embed_v; /* [1,1,D] [1,1,D] [1,La,D] [1,Lv,D] */
    float *mask_token, *decoder_modality_a, *decoder_modality_v, *decoder_pos_embed_a, *decoder_pos_embed_v;
    float *patch_a_w, *patch_a_b, *patch_v_w, *patch_v_b; /* [D,1,16,16] [D] [D,3,16,16] [D] */
    cav_block_params blocks_a[CAV_MAX_DEPTH], blocks_v[CAV_MAX_DEPTH], blocks_u[CAV_MAX_DEPTH];
    float *norm_a_w, *norm_a_b, *norm_v_w, *norm_v_b, *norm_w, *norm_b;
    float *decoder_embed_w, *decoder_embed_b; /* [Dd,D] */
    cav_block_params decoder_blocks[CAV_MAX_DEPTH];
    float *decoder_norm_w, *decoder_norm_b;
    float *decoder_pred_a_w, *decoder_pred_a_b, *decoder_pred_v_w, *decoder_pred_v_b; /* [256,Dd] [768,Dd] */
    float *head_norm_w, *head_norm_b, *head_w, *head_b; /* mlp_head.0 LN [D], mlp_head.1 Linear [K,D] */
} cav_params;

/* One entry of the parameter table. */
typedef struct {
    char name[64];
    int ndim;
    int64_t shape[4];
    size_t offset, numel; /* into the parameter (and gradient, moment) buffers, in floats */
    int trainable;
    int head; /* part of mlp_head (the fine-tuning head's learning-rate group) */
    /* reached by this config's forward; in PyTorch an unreached parameter's .grad stays None and
     * torch.optim.Adam skips it (no weight decay, no moment update), so cav_model_adam_step does too */
    int used;
    size_t slot; /* model.c's own: where this tensor's pointer sits inside cav_params */
} cav_param;

/* Saved activations of one Block on [B,N,C] tokens (hidden = C * mlp_ratio). */
typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd; /* [B,N,C] [B,N] [B,N] */
    float *qkv, *att, *atty;          /* [B,N,3C] [B,H,N,N] [B,N,C] */
    float *x1;                        /* after the attention residual [B,N,C] */
    float *ln2, *ln2_mean, *ln2_rstd;
    float *fc1, *gelu; /* [B,N,hidden] */
    float *out;        /* [B,N,C] */
    /* In bf16 (cav_model_set_precision) ln1, ln2 and gelu, read only as Linear inputs, are kept rounded to
     * bf16 here instead (NULL in fp32): the Linears' forward and backward read the same bits either way. */
    uint16_t *ln1_16, *ln2_16; /* [B,N,C] */
    uint16_t *gelu16;          /* [B,N,hidden] */
} cav_block_acts;

/* A run of Blocks over one token sequence, with the modality's LayerNorms (0 none, 1 'a', 2 'v'). */
typedef struct {
    int nblk, N, C, H, hidden, mod;
    cav_block_params *p[CAV_MAX_DEPTH], *g[CAV_MAX_DEPTH];
    cav_block_acts a[CAV_MAX_DEPTH];
    const float *in; /* [B,N,C], set by the forward */
    float *out;      /* the last block's output, or in when there is no block */
    float *d;        /* residual-stream gradient [B,N,C]: of out before the backward, of in after */
} cav_stream;

/* A final LayerNorm's output and statistics. */
typedef struct {
    float *out, *mean, *rstd;
} cav_ln_acts;

typedef struct cav_backend cav_backend; /* kernels/kernels.h */

typedef struct {
    cav_config cfg;
    cav_backend *be; /* where the buffers live and the ops run */
    int B;
    /* derived sizes */
    int T, F, S, gf, gt;  /* audio patch grid gf x gt (frequency rows x time columns) */
    int La_full, Lv_full; /* 512, 196 */
    int La, Lv;           /* tokens that enter the encoder (kept ones in pretraining) */
    int D, Dd, H, Hdec, hidden, dhidden, joint;
    int Dh; /* the head's input: D, or 2D (singlemodal) */
    /* parameters, gradients, Adam moments: one buffer each, and the table over them */
    cav_params p, g;
    float *params, *grads, *adam_m, *adam_v;
    size_t nparams;
    size_t shard_lo, shard_hi; /* the elements Adam updates and its moments hold (all: 0, nparams) */
    /* Mixed precision (cav_model_set_precision): bf16 1 runs every Linear (patch embeddings, qkv, proj, fc1,
     * fc2, decoder embed and predictions, head) on bf16 operands with fp32 results (kernels.h); the master
     * weights, gradients, Adam moments and everything else stay fp32. params16 [nparams] is the bf16 copy of
     * params the Linears read; each writer of params (init, the write calls, Adam, the buffer handed to the
     * collectives) marks it stale and the next forward remakes it. lin_in16, lin_dout16 [lin16_cap]: one
     * Linear's bf16 input and output gradient. */
    int bf16, params16_stale;
    uint16_t *params16, *lin_in16, *lin_dout16;
    size_t lin16_cap;
    cav_param *table;
    int ntable;
    int adam_t;
    /* d(what is minimised) / d out.loss, where the fine-tuning backward starts (1 unless set): a rank's share
     * of the global batch, so that the gradients need no scaling after the backward (cav_model_on_grads_final
     * can send them while it runs) and their sum over ranks is the whole batch's */
    float dloss;
    /* the backward's progress (cav_model_on_grads_final) */
    void (*final_fn)(void *ctx, size_t lo, size_t hi, int at_end);
    void *final_ctx;
    int *passes;          /* [ntable]: forward passes through a tensor's block not yet backpropagated */
    unsigned char *final; /* [ntable]: reported final by this backward */
    /* inputs (one allocation) */
    struct {
        float *audio;    /* [B,T,F] normalised fbank */
        float *video;    /* [B,3,S,S] */
        int64_t *keep_a; /* [B,La] kept audio token indices, in the order kept */
        int64_t *keep_v; /* [B,Lv] */
        float *labels;   /* [B,K] */
    } in;
    void *in_mem;
    void *in_host; /* in_mem's layout in the backend's pinned host memory: cav_model_set_input's staging */
    /* activations (one allocation) */
    float *acts;
    size_t acts_size, acts_used;
    cav_stream s_a, s_v, s_u, s_ca, s_cv, s_dec;
    float *cols_a, *cols_v;   /* im2col of the inputs [B,La_full,256] [B,Lv_full,768] */
    float *emb_a, *emb_v;     /* patch embedding + pos + modality [B,La_full,D] [B,Lv_full,D] */
    float *x_a, *x_v, *x_cat; /* masked [B,La,D] [B,Lv,D]; joint input [B,La+Lv,D] */
    cav_ln_acts ln_u, ln_ca, ln_cv, ln_dec, ln_head;
    float *ca_mean, *cv_mean, *ca_n, *cv_n, *ca_norm, *cv_norm; /* [B,D] x4, [B] x2 */
    /* dec_ua, dec_uv: the un-shuffled tokens of each modality, then the decoder's output split by modality */
    float *dec_emb, *dec_ua, *dec_uv, *dec_x; /* [B,La+Lv,Dd] [B,La_full,Dd] [B,Lv_full,Dd] [B,Ld,Dd] */
    float *pred_a, *pred_v, *tgt_a, *tgt_v, *mask_a, *mask_v; /* [B,La_full,256] [B,Lv_full,768] ... */
    float *pool_u, *pool_s, *pooled, *logits;                 /* [B,D] x2, [B,Dh], [B,K] */
    float *feat_a, *feat_v;                                   /* forward_feat outputs */
    float *pool_a, *pool_v; /* [B,D] x2: the single-modal pooled outputs of the Table 2f fusions */
    /* gradient scratch */
    float *d_emb_a, *d_emb_v, *d_lat, *d_dec_emb, *d_ua, *d_uv, *d_pred_a, *d_pred_v, *d_dn;
    float *d_vec1, *d_vec2, *d_vec3, *d_vec4, *d_logits, *d_tok;
    float *sc_ln, *sc_atty, *sc_qkv, *sc_h1, *sc_h2, *sc_att; /* sc_att: attention's backward workspace */
    double *con_work;                                         /* the contrastive loss's workspace */
    /* outputs */
    struct {
        float loss, loss_mae, loss_mae_a, loss_mae_v, loss_c, c_acc;
    } out;
    /* a contrast group spread over several models (cav_model_split) */
    struct {
        int on, n, row0;     /* the group's rows; this model's B rows are rows row0.. of them */
        float *ca, *cv;      /* [n,D] the group's contrastive embeddings, filled by the caller */
        float *da, *dv;      /* [n,D] backward scratch */
        double mae[4];       /* forward: this model's MAE sums (audio squared-error sum, mask count; video) */
        double den_a, den_v; /* the group's mask counts, set by cav_model_split_losses */
        double *work;        /* the contrastive loss's workspace for n rows */
    } split;
} cav_model;

/* Parameter count of a config (all tensors, and the trainable ones) without building the model. */
size_t cav_config_param_count(const cav_config *cfg, size_t *trainable);

/* Builds the model for batch size B on a backend (cav_backend_open: "cpu", "cuda", ...; parameters
 * uninitialised). NULL with err filled on failure. cav_model_create is the same on the CPU. */
cav_model *cav_model_create_on(cav_backend *be, const cav_config *cfg, int B, cav_err *err);
/* The memory, in bytes, that cav_model_create_on(be, cfg, B), cav_model_set_precision(m, bf16) and the
 * trainers' cav_model_alloc_adam take on the backend (the same computation: cav_model_describe prints it at
 * start); the backend's own workspaces (cuBLASLt's, a few scratch buffers) come on top. 0, or 1 with err
 * filled for a config or batch the model refuses. Allocates nothing on the backend. */
typedef struct {
    size_t params, grads, adam, acts, inputs; /* adam: both moments; grads and adam 0 for embedding */
    size_t bf16; /* bf16's buffers: the weights' copy and two Linear operands (0 in fp32) */
    size_t total;
} cav_model_mem;
int cav_model_memory(cav_backend *be, const cav_config *cfg, int B, int bf16, cav_model_mem *out,
                     cav_err *err);
cav_model *cav_model_create(const cav_config *cfg, int B, cav_err *err);
void cav_model_free(cav_model *m);
/* The precision of the Linears: "fp32" (bf16 0, the default) or "bf16" (1: model.h's cav_model.bf16; its
 * bf16 buffers, 2 bytes per parameter and two Linear operands, are allocated here). The activations are
 * planned again for the precision (bf16 keeps the Blocks' Linear inputs in bf16, cav_block_acts) in a new
 * arena: their contents are lost. 0 ok, -1 out of memory (the model can then only be freed). */
int cav_model_set_precision(cav_model *m, int bf16);
/* The reference's initialisation (cav-numerics(7) 2.5) from a seed: sin-cos tables, xavier-uniform Linear and
 * patch-embedding weights, zero Linear biases, PyTorch's default conv bias, LN (1,0), N(0, 0.02) tokens. */
void cav_model_init(cav_model *m, uint64_t seed);
/* The parameter table entry for a reference name, or NULL. */
cav_param *cav_model_param(cav_model *m, const char *name);
size_t cav_model_trainable(const cav_model *m);
/* One line per role with its size, for the start-up message. */
void cav_model_describe(const cav_model *m, FILE *f);

/* Masks by the project's seeded generator (cav-numerics(7) 2.6, incl. the structured audio modes): fills
 * in.keep_a and in.keep_v. *rng is a 64-bit state that advances. */
void cav_model_random_masks(cav_model *m, uint64_t *rng);

/* Advances *rng as drawing the masks of `rows` rows would, so that a model holding rows r.. of a group
 * draws exactly the masks one model over the whole group draws for them. */
void cav_model_skip_masks(cav_model *m, uint64_t *rng, int rows);

/* Contrast groups spread over several processes (pretraining with fewer groups than ranks): this model's B
 * rows are rows row0..row0+B-1 of a group of n, the others are on other models. After cav_model_split
 * (0 ok, -1 out of memory), cav_model_forward stops short of the losses that need the whole group: it
 * leaves this model's contrastive embeddings [B,D] and its MAE sums for cav_model_split_embeddings, and
 * sets no output. The caller gathers the group's embeddings [n,D] (row order) and sums the MAE sums over
 * the group, then calls cav_model_split_losses (below), which sets out as one model over
 * the whole group would; cav_model_backward then gives the gradient of that group loss through this
 * model's rows only (the other rows' part is computed where they are; the parts add up to the whole). */
int cav_model_split(cav_model *m, int n, int row0);

/* Forward of the task: pretraining losses and predictions, fine-tuning logits and loss, or (task FEAT)
 * feat_a [B,La_full,D] and feat_v [B,Lv_full,D] and the retrieval embeddings emb_a, emb_v [B,D] (their
 * mean over tokens, L2-normalised). */
void cav_model_forward(cav_model *m);
/* The fine-tuning forward for inputs whose audio is the previous forward's (the ten frames of the same clips,
 * cav-numerics(7) 3.4): the audio-specific layers (patch embedding, blocks_a), which do not see the frame,
 * are not rerun; their output [B,La,D] kept from the previous forward feeds the joint layers with the new
 * video, and the audio input is not read. The same numbers as cav_model_forward on that audio. Other
 * tasks: cav_model_forward. */
void cav_model_forward_keep_audio(cav_model *m);
/* Zeroes the gradients and fills them with d out.loss / d parameter (pretraining and fine-tuning). */
void cav_model_backward(cav_model *m);
/* The backward's progress, for a gradient exchange that overlaps it: during each backward, fn(ctx, lo, hi, 0)
 * is called for each range [lo, hi) of the flat gradient buffer as soon as the backward has written its last
 * contribution there (a Block's tensors after the backward of the last forward pass through it: the joint
 * blocks serve three passes in pretraining), and fn(ctx, lo, hi, 1) at the backward's end for everything
 * else; together the calls of one backward cover [0, nparams) once. fn NULL: none. 0 ok, -1 out of memory. */
int cav_model_on_grads_final(cav_model *m, void (*fn)(void *ctx, size_t lo, size_t hi, int at_end),
                             void *ctx);
/* The two halves, for gradient accumulation over micro-batches: every gradient write is a +=. */
void cav_model_zero_grad(cav_model *m);
void cav_model_backward_accumulate(cav_model *m);
/* torch.optim.Adam over the trainable parameters (coupled weight decay, cav-numerics(7) 3.1); the head group
 * (mlp_head.*) uses lr * head_lr_scale. */
/* Allocates the Adam moments (zero) if they are not yet; 0 ok, -1 out of memory. */
int cav_model_alloc_adam(cav_model *m);
/* ZeRO stage 1: the moments hold, and Adam updates, only the elements [lo, hi) of the flat buffer (a rank's
 * shard; Adam is elementwise, so each element's update is the unsharded one). The moments restart at zero.
 * 0 ok, -1 bad range or out of memory. */
int cav_model_shard_adam(cav_model *m, size_t lo, size_t hi);
void cav_model_adam_step(cav_model *m, double lr, double head_lr_scale, double beta1, double beta2,
                         double eps, double wd);

/* ---- model memory --------------------------------------------------------------------------------- */

/* The model's buffers live where its backend puts them (host memory on the CPU, device memory on a GPU);
 * code outside model.c reads and writes them only through these calls, which copy. */
typedef enum { CAV_IN_AUDIO, CAV_IN_VIDEO, CAV_IN_KEEP_A, CAV_IN_KEEP_V, CAV_IN_LABELS } cav_input;
/* Elements per row (floats; int64 for the keep indices); 0: this task does not read that input. */
size_t cav_model_input_size(const cav_model *m, cav_input which);
/* Rows [0,rows) of an input from host memory (keep indices: int64_t, the rest float), copied into pinned
 * staging and uploaded asynchronously (the backend's upload_async: the ops issued next see it). */
void cav_model_set_input(cav_model *m, cav_input which, const void *host, int rows);
/* The inverse, e.g. the masks cav_model_random_masks drew. */
void cav_model_get_input(const cav_model *m, cav_input which, void *host, int rows);

typedef enum { CAV_BUF_PARAMS, CAV_BUF_GRADS, CAV_BUF_ADAM_M, CAV_BUF_ADAM_V } cav_buffer;
/* One table entry's numel floats. Reading a buffer the model does not hold (the gradients of an
 * embedding model, moments before the first step, moments outside a ZeRO shard) gives zeros; writing the
 * moments allocates them, writing gradients the model does not hold (or moments outside the shard) is
 * ignored. */
void cav_model_read_param(const cav_model *m, cav_buffer buf, const cav_param *p, float *host);
void cav_model_write_param(cav_model *m, cav_buffer buf, const cav_param *p, const float *host);
/* A whole buffer, nparams floats in table order (cav_param.offset). */
void cav_model_read_buffer(const cav_model *m, cav_buffer buf, float *host);
void cav_model_write_buffer(cav_model *m, cav_buffer buf, const float *host);
/* 1 when every gradient of the Adam shard (all of them unless sharded) is finite (1 for a model without
 * gradients). */
int cav_model_grads_finite(const cav_model *m);
/* The parameters' or gradients' buffer itself, in the backend's memory (NULL for the moments), for the
 * distributed layer's collectives alone, which run on that memory (dist.h). */
float *cav_model_buffer_ptr(cav_model *m, cav_buffer buf);

/* Outputs by name: "loss", "loss_mae", "loss_mae_a", "loss_mae_v", "loss_c", "c_acc" (pretraining; "loss"
 * also fine-tuning), "pred_a", "pred_v", "mask_a", "mask_v", "logits", "feat_a", "feat_v", "emb_a", "emb_v"
 * (embedding). The shape and
 * the element count, or -1 when this task has no such output. Scalar losses stay in the host struct m->out
 * (the model downloads them after the forward). */
int cav_model_output_shape(const cav_model *m, const char *name, int64_t shape[4], int *ndim);
/* 0 ok, -1 no such output. */
int cav_model_read_output(const cav_model *m, const char *name, float *host);

/* Contrast groups spread over processes: this model's contrastive embeddings ca, cv [B,D] (left alone when
 * the contrastive loss is off) and its MAE sums (audio squared-error sum, mask count; video). */
void cav_model_split_embeddings(const cav_model *m, float *ca, float *cv, double mae[4]);
/* The group's embeddings [n,D] x2 (row order; ignored when the contrastive loss is off) and MAE sums:
 * sets m->out as one model over the whole group would. */
void cav_model_split_losses(cav_model *m, const float *group_ca, const float *group_cv,
                            const double group_mae[4]);

#endif
