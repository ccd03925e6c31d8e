/* model.c: the CAV-MAE pretraining model, the fine-tuning model and the embedding pass in C (contracts in
 * model.h). The forward and backward passes are written out op by op over kernels/kernels.h; a "stream"
 * is a run of Blocks over one token sequence (audio, video, joint, the two contrastive passes through the
 * joint block with the modality LayerNorms, the decoder), each with its saved activations and its
 * residual-gradient buffer. Memory is planned twice over the same code: once to size, once to assign. */
#include "model.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kernels.h"
#include "rng.h"

/* ---- configuration ------------------------------------------------------------------------------ */

cav_config cav_config_default(cav_task task) {
    cav_config c = {
        .task = task,
        .audio_length = 1024,
        .mel_bins = 128,
        .img_size = 224,
        .embed_dim = 768,
        .depth = 12,
        .modality_specific_depth = 11,
        .num_heads = 12,
        .decoder_embed_dim = 512,
        .decoder_depth = 8,
        .decoder_num_heads = 16,
        .mlp_ratio = 4.0,
        .norm_pix_loss = 0,
        .tr_pos = task == CAV_TASK_FINETUNE,
        .mask_ratio_a = 0.75,
        .mask_ratio_v = 0.75,
        .mae_loss_weight = 1.0,
        .contrast_loss_weight = 0.01,
        .mask_mode = CAV_MASK_UNSTRUCTURED,
        .use_audio = 1,
        .use_video = 1,
        .label_dim = task == CAV_TASK_FINETUNE ? 527 : 0,
        .mode = CAV_FT_MULTIMODAL,
    };
    return c;
}

int cav_config_variant(cav_config *c, const char *variant) {
    char name[32];
    snprintf(name, sizeof name, "%s", variant);
    for (char *q = name; *q; q++) *q = *q == '_' ? '-' : *q;
    if (!strcmp(name, "cav-mae")) {
        c->mae_loss_weight = 1, c->contrast_loss_weight = 0.01;
    } else if (!strcmp(name, "av-mae")) {
        c->mae_loss_weight = 1, c->contrast_loss_weight = 0;
    } else if (!strcmp(name, "cav")) {
        c->mae_loss_weight = 0, c->contrast_loss_weight = 0.01;
    } else if (!strcmp(name, "vanilla-av-mae") || !strcmp(name, "audio-mae") || !strcmp(name, "visual-mae")) {
        c->modality_specific_depth = 0, c->mae_loss_weight = 1, c->contrast_loss_weight = 0;
        c->use_audio = strcmp(name, "visual-mae") != 0;
        c->use_video = strcmp(name, "audio-mae") != 0;
    } else {
        return -1;
    }
    return 0;
}

int cav_config_size(cav_config *c, const char *name) {
    if (!strcmp(name, "base")) return 0;
    if (strcmp(name, "tiny")) return -1;
    c->embed_dim = 192, c->num_heads = 3, c->depth = 5, c->modality_specific_depth = 4;
    if (c->task != CAV_TASK_FINETUNE)
        c->decoder_embed_dim = 128, c->decoder_depth = 2, c->decoder_num_heads = 4;
    return 0;
}

static int parse_bool(const char *v) {
    if (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "1")) return 1;
    if (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "0")) return 0;
    return -1;
}

static int parse_int(const char *v, int *out) {
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end || d != (int)d) return -1;
    *out = (int)d;
    return 0;
}

static int parse_num(const char *v, double *out) {
    char *end;
    *out = strtod(v, &end);
    return end == v || *end ? -1 : 0;
}

int cav_config_set(cav_config *c, const char *key, const char *v) {
    int b;
    struct {
        const char *k;
        int *p;
    } ints[] = {{"embed_dim", &c->embed_dim},
                {"modality_specific_depth", &c->modality_specific_depth},
                {"num_heads", &c->num_heads},
                {"decoder_embed_dim", &c->decoder_embed_dim},
                {"decoder_depth", &c->decoder_depth},
                {"decoder_num_heads", &c->decoder_num_heads},
                {"depth", &c->depth},
                {"label_dim", &c->label_dim},
                {"audio_length", &c->audio_length},
                {"img_size", &c->img_size}};
    struct {
        const char *k;
        double *p;
    } nums[] = {{"mlp_ratio", &c->mlp_ratio},
                {"mask_ratio_a", &c->mask_ratio_a},
                {"mask_ratio_v", &c->mask_ratio_v},
                {"mae_loss_weight", &c->mae_loss_weight},
                {"contrast_loss_weight", &c->contrast_loss_weight}};
    struct {
        const char *k;
        int *p;
    } bools[] = {{"norm_pix_loss", &c->norm_pix_loss},
                 {"tr_pos", &c->tr_pos},
                 {"bidirect_contrast", &c->bidirect_contrast},
                 {"chain_contrast_streams", &c->chain_contrast_streams},
                 {"freeze_base", &c->freeze_base}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (!strcmp(key, ints[i].k)) return parse_int(v, ints[i].p);
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
        if (!strcmp(key, nums[i].k)) return parse_num(v, nums[i].p);
    for (size_t i = 0; i < sizeof bools / sizeof bools[0]; i++)
        if (!strcmp(key, bools[i].k)) return (b = parse_bool(v)) < 0 ? -1 : (*bools[i].p = b, 0);
    if (!strcmp(key, "mask_mode")) return (b = cav_mask_mode_parse(v)) < 0 ? -1 : (c->mask_mode = b, 0);
    if (!strcmp(key, "mode")) return (b = cav_ft_mode_parse(v)) < 0 ? -1 : (c->mode = b, 0);
    if (!strcmp(key, "loss")) {
        if (strcmp(v, "ce") && strcmp(v, "bce")) return -1;
        c->loss_ce = !strcmp(v, "ce");
        return 0;
    }
    if (!strcmp(key, "modalities")) {
        if (strcmp(v, "a") && strcmp(v, "v") && strcmp(v, "av")) return -1;
        c->use_audio = strchr(v, 'a') != NULL, c->use_video = strchr(v, 'v') != NULL;
        return 0;
    }
    if (!strcmp(key, "patch_size")) return strcmp(v, "16") ? -1 : 0;
    if (!strcmp(key, "in_chans")) return strcmp(v, "3") ? -1 : 0;
    return -2;
}

/* cav_ft_mode's names, in its order */
static const char *const ft_modes[] = {"multimodal",
                                       "audioonly",
                                       "videoonly",
                                       "missingaudioonly",
                                       "missingvideoonly",
                                       "singlemodal",
                                       "multimodal+singlemodal"};

int cav_config_json(const cav_config *c, char *buf, size_t n) {
    static const char *masks[] = {"unstructured", "time", "freq", "tf"};
    const char *tf[] = {"false", "true"};
    const char *mod = c->use_audio && c->use_video ? "av" : c->use_audio ? "a" : "v";
    int k = snprintf(buf, n,
                     "{\"audio_length\": %d, \"img_size\": %d, \"patch_size\": 16, \"in_chans\": 3, "
                     "\"embed_dim\": %d, \"depth\": %d, \"modality_specific_depth\": %d, \"num_heads\": %d, "
                     "\"mlp_ratio\": %.17g, \"tr_pos\": %s",
                     c->audio_length, c->img_size, c->embed_dim, c->depth, c->modality_specific_depth,
                     c->num_heads, c->mlp_ratio, tf[c->tr_pos != 0]);
    if (k >= 0 && (size_t)k < n && c->task == CAV_TASK_FINETUNE)
        k += snprintf(buf + k, n - k, ", \"label_dim\": %d, \"mode\": \"%s\", \"loss\": \"%s\"%s}",
                      c->label_dim, ft_modes[c->mode], c->loss_ce ? "ce" : "bce",
                      c->freeze_base ? ", \"freeze_base\": true" : "");
    else if (k >= 0 && (size_t)k < n)
        k += snprintf(buf + k, n - k,
                      ", \"decoder_embed_dim\": %d, \"decoder_depth\": %d, \"decoder_num_heads\": %d, "
                      "\"norm_pix_loss\": %s, \"mask_ratio_a\": %.17g, \"mask_ratio_v\": %.17g, "
                      "\"mae_loss_weight\": %.17g, \"contrast_loss_weight\": %.17g, \"mask_mode\": \"%s\", "
                      "\"bidirect_contrast\": %s, \"modalities\": \"%s\", \"chain_contrast_streams\": %s}",
                      c->decoder_embed_dim, c->decoder_depth, c->decoder_num_heads, tf[c->norm_pix_loss != 0],
                      c->mask_ratio_a, c->mask_ratio_v, c->mae_loss_weight, c->contrast_loss_weight,
                      masks[c->mask_mode], tf[c->bidirect_contrast != 0], mod,
                      tf[c->chain_contrast_streams != 0]);
    return k < 0 || (size_t)k >= n ? -1 : k;
}

int cav_ft_mode_parse(const char *s) {
    for (int i = 0; i <= CAV_FT_MMSM; i++)
        if (!strcmp(s, ft_modes[i])) return i;
    return -1;
}

int cav_mask_mode_parse(const char *s) {
    static const char *names[] = {"unstructured", "time", "freq", "tf"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

/* Which modalities the task's forward reads. */
static void modalities(const cav_config *c, int *ua, int *uv) {
    if (c->task == CAV_TASK_FINETUNE) {
        *ua = c->mode != CAV_FT_VIDEOONLY && c->mode != CAV_FT_MISSINGVIDEOONLY;
        *uv = c->mode != CAV_FT_AUDIOONLY && c->mode != CAV_FT_MISSINGAUDIOONLY;
    } else {
        *ua = c->use_audio != 0, *uv = c->use_video != 0;
    }
}

int cav_config_check(const cav_config *c, cav_err *err) {
    int ua, uv;
    modalities(c, &ua, &uv);
#define BAD(...) return cav_fail(err, 1, __VA_ARGS__)
    if (c->audio_length < 16 || c->audio_length % 16 || c->mel_bins < 16 || c->mel_bins % 16)
        BAD("audio_length %d and mel_bins %d must be positive multiples of 16", c->audio_length, c->mel_bins);
    if (c->img_size < 16 || c->img_size % 16)
        BAD("img_size %d must be a positive multiple of 16", c->img_size);
    if (c->embed_dim <= 0 || c->num_heads <= 0 || c->embed_dim % c->num_heads || c->embed_dim % 4)
        BAD("embed_dim %d must be a multiple of 4 and of num_heads %d", c->embed_dim, c->num_heads);
    if (c->modality_specific_depth < 0 || c->depth <= c->modality_specific_depth ||
        c->modality_specific_depth > CAV_MAX_DEPTH || c->depth - c->modality_specific_depth > CAV_MAX_DEPTH)
        BAD("need 0 <= modality_specific_depth %d < depth %d (at most %d layers per part)",
            c->modality_specific_depth, c->depth, CAV_MAX_DEPTH);
    if (c->mlp_ratio <= 0) BAD("mlp_ratio %g must be positive", c->mlp_ratio);
    if (!ua && !uv) BAD("no modality is used");
    if (c->task == CAV_TASK_PRETRAIN) {
        if (c->decoder_embed_dim <= 0 || c->decoder_num_heads <= 0 ||
            c->decoder_embed_dim % c->decoder_num_heads || c->decoder_embed_dim % 4 || c->decoder_depth < 0 ||
            c->decoder_depth > CAV_MAX_DEPTH)
            BAD("decoder_embed_dim %d must be a multiple of 4 and of decoder_num_heads %d; decoder_depth %d "
                "<= %d",
                c->decoder_embed_dim, c->decoder_num_heads, c->decoder_depth, CAV_MAX_DEPTH);
        if (!(c->mask_ratio_a >= 0 && c->mask_ratio_a < 1 && c->mask_ratio_v >= 0 && c->mask_ratio_v < 1))
            BAD("mask ratios must be in [0,1): %g %g", c->mask_ratio_a, c->mask_ratio_v);
        if (c->contrast_loss_weight != 0 && !(ua && uv)) BAD("the contrastive loss needs both modalities");
        if (c->mae_loss_weight == 0 && c->contrast_loss_weight == 0) BAD("both loss weights are 0");
        if (c->mask_mode != CAV_MASK_UNSTRUCTURED && c->mask_mode != CAV_MASK_TIME &&
            c->mask_mode != CAV_MASK_FREQ && c->mask_mode != CAV_MASK_TF)
            BAD("unknown mask mode %d", (int)c->mask_mode);
    } else if (c->task == CAV_TASK_FINETUNE) {
        if (c->label_dim <= 0) BAD("label_dim %d must be positive", c->label_dim);
        if ((int)c->mode < 0 || c->mode > CAV_FT_MMSM) BAD("unknown fine-tuning mode %d", (int)c->mode);
    } else if (c->task != CAV_TASK_FEAT) {
        BAD("unknown task %d", (int)c->task);
    }
#undef BAD
    return 0;
}

/* ---- parameter table ---------------------------------------------------------------------------- */

static int reg(cav_model *m, float **field, int trainable, int head, int ndim, const int64_t *shape,
               const char *fmt, ...) {
    if (m->ntable % 64 == 0) {
        void *t = realloc(m->table, sizeof(cav_param) * (m->ntable + 64));
        if (!t) return -1;
        m->table = t;
    }
    cav_param *e = &m->table[m->ntable++];
    memset(e, 0, sizeof *e);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->name, sizeof e->name, fmt, ap);
    va_end(ap);
    e->ndim = ndim;
    e->numel = 1;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i], e->numel *= (size_t)shape[i];
    e->offset = m->nparams;
    e->trainable = trainable;
    e->head = head;
    m->nparams += e->numel;
    /* where the pointer lives inside cav_params, so the gradient struct gets the same field */
    e->slot = (size_t)((char *)field - (char *)&m->p);
    return 0;
}
#define S1(a) ((const int64_t[]){a})
#define S2(a, b) ((const int64_t[]){a, b})
#define S3(a, b, c) ((const int64_t[]){a, b, c})
#define S4(a, b, c, d) ((const int64_t[]){a, b, c, d})

static void reg_ln(cav_model *m, float **w, float **b, int C, const char *name) {
    reg(m, w, 1, 0, 1, S1(C), "%s.weight", name);
    reg(m, b, 1, 0, 1, S1(C), "%s.bias", name);
}

static void reg_block(cav_model *m, cav_block_params *p, const char *prefix, int i, int C, int hid) {
    char n[48];
#define LN(field, nm)                                                                                        \
    snprintf(n, sizeof n, "%s.%d.%s", prefix, i, nm);                                                        \
    reg_ln(m, &p->field##_w, &p->field##_b, C, n)
    LN(norm1, "norm1");
    LN(norm1_a, "norm1_a");
    LN(norm1_v, "norm1_v");
    reg(m, &p->qkv_w, 1, 0, 2, S2(3 * C, C), "%s.%d.attn.qkv.weight", prefix, i);
    reg(m, &p->qkv_b, 1, 0, 1, S1(3 * C), "%s.%d.attn.qkv.bias", prefix, i);
    reg(m, &p->proj_w, 1, 0, 2, S2(C, C), "%s.%d.attn.proj.weight", prefix, i);
    reg(m, &p->proj_b, 1, 0, 1, S1(C), "%s.%d.attn.proj.bias", prefix, i);
    LN(norm2, "norm2");
    LN(norm2_a, "norm2_a");
    LN(norm2_v, "norm2_v");
#undef LN
    reg(m, &p->fc1_w, 1, 0, 2, S2(hid, C), "%s.%d.mlp.fc1.weight", prefix, i);
    reg(m, &p->fc1_b, 1, 0, 1, S1(hid), "%s.%d.mlp.fc1.bias", prefix, i);
    reg(m, &p->fc2_w, 1, 0, 2, S2(C, hid), "%s.%d.mlp.fc2.weight", prefix, i);
    reg(m, &p->fc2_b, 1, 0, 1, S1(C), "%s.%d.mlp.fc2.bias", prefix, i);
}

/* The reference's state-dict order: a module's own parameters first (in assignment order), then its
 * children's. */
static void register_params(cav_model *m) {
    const cav_config *c = &m->cfg;
    cav_params *p = &m->p;
    int D = m->D, Dd = m->Dd, pre = c->task == CAV_TASK_PRETRAIN;
    reg(m, &p->modality_a, 1, 0, 3, S3(1, 1, D), "modality_a");
    reg(m, &p->modality_v, 1, 0, 3, S3(1, 1, D), "modality_v");
    reg(m, &p->pos_embed_a, c->tr_pos, 0, 3, S3(1, m->La_full, D), "pos_embed_a");
    reg(m, &p->pos_embed_v, c->tr_pos, 0, 3, S3(1, m->Lv_full, D), "pos_embed_v");
    if (pre) {
        reg(m, &p->mask_token, 1, 0, 3, S3(1, 1, Dd), "mask_token");
        reg(m, &p->decoder_modality_a, 1, 0, 3, S3(1, 1, Dd), "decoder_modality_a");
        reg(m, &p->decoder_modality_v, 1, 0, 3, S3(1, 1, Dd), "decoder_modality_v");
        reg(m, &p->decoder_pos_embed_a, c->tr_pos, 0, 3, S3(1, m->La_full, Dd), "decoder_pos_embed_a");
        reg(m, &p->decoder_pos_embed_v, c->tr_pos, 0, 3, S3(1, m->Lv_full, Dd), "decoder_pos_embed_v");
    }
    reg(m, &p->patch_a_w, 1, 0, 4, S4(D, 1, 16, 16), "patch_embed_a.proj.weight");
    reg(m, &p->patch_a_b, 1, 0, 1, S1(D), "patch_embed_a.proj.bias");
    reg(m, &p->patch_v_w, 1, 0, 4, S4(D, 3, 16, 16), "patch_embed_v.proj.weight");
    reg(m, &p->patch_v_b, 1, 0, 1, S1(D), "patch_embed_v.proj.bias");
    for (int i = 0; i < c->modality_specific_depth; i++)
        reg_block(m, &p->blocks_a[i], "blocks_a", i, D, m->hidden);
    for (int i = 0; i < c->modality_specific_depth; i++)
        reg_block(m, &p->blocks_v[i], "blocks_v", i, D, m->hidden);
    for (int i = 0; i < m->joint; i++) reg_block(m, &p->blocks_u[i], "blocks_u", i, D, m->hidden);
    reg_ln(m, &p->norm_a_w, &p->norm_a_b, D, "norm_a");
    reg_ln(m, &p->norm_v_w, &p->norm_v_b, D, "norm_v");
    reg_ln(m, &p->norm_w, &p->norm_b, D, "norm");
    if (pre) {
        reg(m, &p->decoder_embed_w, 1, 0, 2, S2(Dd, D), "decoder_embed.weight");
        reg(m, &p->decoder_embed_b, 1, 0, 1, S1(Dd), "decoder_embed.bias");
        for (int i = 0; i < c->decoder_depth; i++)
            reg_block(m, &p->decoder_blocks[i], "decoder_blocks", i, Dd, m->dhidden);
        reg_ln(m, &p->decoder_norm_w, &p->decoder_norm_b, Dd, "decoder_norm");
        reg(m, &p->decoder_pred_a_w, 1, 0, 2, S2(256, Dd), "decoder_pred_a.weight");
        reg(m, &p->decoder_pred_a_b, 1, 0, 1, S1(256), "decoder_pred_a.bias");
        reg(m, &p->decoder_pred_v_w, 1, 0, 2, S2(768, Dd), "decoder_pred_v.weight");
        reg(m, &p->decoder_pred_v_b, 1, 0, 1, S1(768), "decoder_pred_v.bias");
    }
    if (c->task == CAV_TASK_FINETUNE) {
        reg(m, &p->head_norm_w, 1, 1, 1, S1(m->Dh), "mlp_head.0.weight");
        reg(m, &p->head_norm_b, 1, 1, 1, S1(m->Dh), "mlp_head.0.bias");
        reg(m, &p->head_w, 1, 1, 2, S2(c->label_dim, m->Dh), "mlp_head.1.weight");
        reg(m, &p->head_b, 1, 1, 1, S1(c->label_dim), "mlp_head.1.bias");
        /* requires_grad=False on the rest: Adam never sees it (no weight decay), and it gets no gradient */
        for (int i = 0; i < m->ntable && c->freeze_base; i++)
            if (!m->table[i].head) m->table[i].trainable = 0;
    }
}

/* ---- activation planning ------------------------------------------------------------------------ */

static size_t max_mc, max_mh, max_att; /* scratch sizes found while planning (reset per plan) */

static float *bump(cav_model *m, size_t n) {
    size_t o = m->acts_used;
    m->acts_used += (n + 15) & ~(size_t)15; /* 64-byte aligned slices */
    return m->acts ? m->acts + o : NULL;
}

/* n bf16 values in the float arena */
static uint16_t *bump16(cav_model *m, size_t n) {
    return (uint16_t *)bump(m, (n + 1) / 2);
}

/* attention's saved state and backward workspace, in floats, for the model's precision (kernels.h) */
static size_t att_state(const cav_model *m, int H, int N) {
    return m->bf16 ? m->be->attention_bf16_state_size(m->B, H, N) : m->be->attention_state_size(m->B, H, N);
}
static size_t att_work(const cav_model *m, int H, int N) {
    return m->bf16 ? m->be->attention_bf16_workspace(m->B, H, N) : m->be->attention_workspace(m->B, H, N);
}

static void plan_stream(cav_model *m, cav_stream *s, int nblk, cav_block_params *pb, cav_block_params *gb,
                        int N, int C, int H, int hidden, int mod) {
    size_t B = (size_t)m->B, M = B * N;
    s->nblk = nblk, s->N = N, s->C = C, s->H = H, s->hidden = hidden, s->mod = mod;
    for (int i = 0; i < nblk; i++) {
        cav_block_acts *a = &s->a[i];
        s->p[i] = pb + i, s->g[i] = gb + i;
        memset(a, 0, sizeof *a);
        if (m->bf16)
            a->ln1_16 = bump16(m, M * C), a->ln2_16 = bump16(m, M * C), a->gelu16 = bump16(m, M * hidden);
        else
            a->ln1 = bump(m, M * C), a->ln2 = bump(m, M * C), a->gelu = bump(m, M * hidden);
        a->ln1_mean = bump(m, M), a->ln1_rstd = bump(m, M);
        a->qkv = bump(m, M * 3 * C), a->att = bump(m, att_state(m, H, N));
        a->atty = bump(m, M * C);
        a->x1 = bump(m, M * C);
        a->ln2_mean = bump(m, M), a->ln2_rstd = bump(m, M);
        a->fc1 = bump(m, M * hidden), a->out = bump(m, M * C);
    }
    s->d = bump(m, M * C);
    if (M * C > max_mc) max_mc = M * C;
    if (M * hidden > max_mh) max_mh = M * hidden;
    if (nblk && att_work(m, H, N) > max_att) max_att = att_work(m, H, N);
}

static void plan_ln(cav_model *m, cav_ln_acts *l, size_t M, int C) {
    l->out = bump(m, M * C), l->mean = bump(m, M), l->rstd = bump(m, M);
}

static void plan(cav_model *m) {
    const cav_config *c = &m->cfg;
    size_t B = (size_t)m->B;
    int D = m->D, Dd = m->Dd, ua, uv, msd = c->modality_specific_depth, J = m->joint;
    modalities(c, &ua, &uv);
    max_mc = max_mh = max_att = 0;
    m->acts_used = 0;
    cav_params *p = &m->p, *g = &m->g;
    /* the joint block used by the contrastive passes: all of them chained, or the reference's last one */
    int cfirst = c->task == CAV_TASK_PRETRAIN && !c->chain_contrast_streams ? J - 1 : 0;
    if (ua) {
        m->cols_a = bump(m, B * m->La_full * 256), m->emb_a = bump(m, B * m->La_full * D);
        plan_stream(m, &m->s_a, msd, p->blocks_a, g->blocks_a, m->La, D, m->H, m->hidden, 0);
    }
    if (uv) {
        m->cols_v = bump(m, B * m->Lv_full * 768), m->emb_v = bump(m, B * m->Lv_full * D);
        plan_stream(m, &m->s_v, msd, p->blocks_v, g->blocks_v, m->Lv, D, m->H, m->hidden, 0);
    }
    size_t Ltok = (size_t)m->La + m->Lv;
    if (c->task == CAV_TASK_PRETRAIN) {
        if (ua)
            m->x_a = bump(m, B * m->La * D), m->mask_a = bump(m, B * m->La_full),
            m->d_emb_a = bump(m, B * m->La_full * D);
        if (uv)
            m->x_v = bump(m, B * m->Lv * D), m->mask_v = bump(m, B * m->Lv_full),
            m->d_emb_v = bump(m, B * m->Lv_full * D);
        if (c->contrast_loss_weight != 0) {
            plan_stream(m, &m->s_ca, J - cfirst, p->blocks_u + cfirst, g->blocks_u + cfirst, m->La, D, m->H,
                        m->hidden, 1);
            plan_stream(m, &m->s_cv, J - cfirst, p->blocks_u + cfirst, g->blocks_u + cfirst, m->Lv, D, m->H,
                        m->hidden, 2);
            plan_ln(m, &m->ln_ca, B * m->La, D), plan_ln(m, &m->ln_cv, B * m->Lv, D);
            m->ca_mean = bump(m, B * D), m->cv_mean = bump(m, B * D), m->ca_n = bump(m, B * D);
            m->cv_n = bump(m, B * D), m->ca_norm = bump(m, B), m->cv_norm = bump(m, B);
            /* doubles: two floats each, on the slices' 64-byte alignment */
            m->con_work = (double *)bump(m, 2 * m->be->contrastive_workspace(m->B));
        }
        if (c->mae_loss_weight != 0) {
            int Ld = (ua ? m->La_full : 0) + (uv ? m->Lv_full : 0);
            if (ua && uv) m->x_cat = bump(m, B * Ltok * D);
            plan_stream(m, &m->s_u, J, p->blocks_u, g->blocks_u, (int)Ltok, D, m->H, m->hidden, 0);
            plan_ln(m, &m->ln_u, B * Ltok, D);
            m->dec_emb = bump(m, B * Ltok * Dd), m->d_dec_emb = bump(m, B * Ltok * Dd),
            m->d_lat = bump(m, B * Ltok * D);
            if (ua) m->dec_ua = bump(m, B * m->La_full * Dd), m->d_ua = bump(m, B * m->La_full * Dd);
            if (uv) m->dec_uv = bump(m, B * m->Lv_full * Dd), m->d_uv = bump(m, B * m->Lv_full * Dd);
            m->dec_x = bump(m, B * Ld * Dd);
            plan_stream(m, &m->s_dec, c->decoder_depth, p->decoder_blocks, g->decoder_blocks, Ld, Dd, m->Hdec,
                        m->dhidden, 0);
            plan_ln(m, &m->ln_dec, B * Ld, Dd);
            m->d_dn = bump(m, B * Ld * Dd);
        }
        if (ua)
            m->pred_a = bump(m, B * m->La_full * 256), m->tgt_a = bump(m, B * m->La_full * 256),
            m->d_pred_a = bump(m, B * m->La_full * 256);
        if (uv)
            m->pred_v = bump(m, B * m->Lv_full * 768), m->tgt_v = bump(m, B * m->Lv_full * 768),
            m->d_pred_v = bump(m, B * m->Lv_full * 768);
    } else if (c->task == CAV_TASK_FINETUNE) {
        cav_ft_mode md = c->mode;
        if (md == CAV_FT_MULTIMODAL || md == CAV_FT_MMSM) {
            m->x_cat = bump(m, B * Ltok * D);
            plan_stream(m, &m->s_u, J, p->blocks_u, g->blocks_u, (int)Ltok, D, m->H, m->hidden, 0);
            plan_ln(m, &m->ln_u, B * Ltok, D);
        }
        if (md == CAV_FT_MISSINGAUDIOONLY || md == CAV_FT_MISSINGVIDEOONLY) {
            plan_stream(m, &m->s_u, J, p->blocks_u, g->blocks_u, (int)Ltok, D, m->H, m->hidden, 0);
            plan_ln(m, &m->ln_u, B * Ltok, D);
        }
        int sm = md == CAV_FT_SINGLEMODAL || md == CAV_FT_MMSM;
        if (md == CAV_FT_AUDIOONLY || md == CAV_FT_MISSINGAUDIOONLY || sm) {
            plan_stream(m, &m->s_ca, J, p->blocks_u, g->blocks_u, m->La, D, m->H, m->hidden, 1);
            plan_ln(m, &m->ln_ca, B * m->La, D);
        }
        if (md == CAV_FT_VIDEOONLY || md == CAV_FT_MISSINGVIDEOONLY || sm) {
            plan_stream(m, &m->s_cv, J, p->blocks_u, g->blocks_u, m->Lv, D, m->H, m->hidden, 2);
            plan_ln(m, &m->ln_cv, B * m->Lv, D);
        }
        m->pool_u = bump(m, B * D), m->pool_s = bump(m, B * D), m->pooled = bump(m, B * m->Dh);
        if (sm) m->pool_a = bump(m, B * D), m->pool_v = bump(m, B * D);
        plan_ln(m, &m->ln_head, B, m->Dh);
        m->logits = bump(m, B * c->label_dim), m->d_logits = bump(m, B * c->label_dim);
    } else { /* FEAT */
        if (ua)
            plan_stream(m, &m->s_ca, J, p->blocks_u, g->blocks_u, m->La, D, m->H, m->hidden, 1),
                plan_ln(m, &m->ln_ca, B * m->La, D);
        if (uv)
            plan_stream(m, &m->s_cv, J, p->blocks_u, g->blocks_u, m->Lv, D, m->H, m->hidden, 2),
                plan_ln(m, &m->ln_cv, B * m->Lv, D);
        m->feat_a = m->ln_ca.out, m->feat_v = m->ln_cv.out;
        /* the retrieval embeddings: pooled, then L2-normalised (as the contrastive branch) */
        if (ua) m->ca_mean = bump(m, B * D), m->ca_n = bump(m, B * D), m->ca_norm = bump(m, B);
        if (uv) m->cv_mean = bump(m, B * D), m->cv_n = bump(m, B * D), m->cv_norm = bump(m, B);
    }
    m->d_vec1 = bump(m, B * m->Dh), m->d_vec2 = bump(m, B * m->Dh), m->d_vec3 = bump(m, B * D),
    m->d_vec4 = bump(m, B * D);
    m->d_tok = bump(m, B * Ltok * D);
    /* The largest operand of one Linear, input [M,IC] or output [M,OC], over every Linear of every task (an
     * upper bound: the bf16 operands' buffers, cav_model_set_precision) */
    size_t lin = 3 * max_mc > max_mh ? 3 * max_mc : max_mh;
    size_t lins[] = {B * m->La_full * (size_t)(D > 256 ? D : 256),
                     B * m->Lv_full * (size_t)(D > 768 ? D : 768),
                     B * Ltok * (size_t)(D > Dd ? D : Dd),
                     B * m->La_full * (size_t)(Dd > 256 ? Dd : 256),
                     B * m->Lv_full * (size_t)(Dd > 768 ? Dd : 768),
                     B * (size_t)(m->Dh > c->label_dim ? m->Dh : c->label_dim)};
    for (size_t i = 0; i < sizeof lins / sizeof lins[0]; i++) lin = lins[i] > lin ? lins[i] : lin;
    m->lin16_cap = lin;
    if (c->task != CAV_TASK_FEAT) {
        /* gradient scratch shared by every block */
        m->sc_ln = bump(m, max_mc), m->sc_atty = bump(m, max_mc), m->sc_qkv = bump(m, 3 * max_mc);
        m->sc_h1 = bump(m, max_mh), m->sc_h2 = bump(m, max_mh), m->sc_att = bump(m, max_att);
    }
}

/* ---- which parameters the forward reaches ------------------------------------------------------ */

static void block_lns(cav_block_params *p, int mod, float **w1, float **b1, float **w2, float **b2);

static void mark(cav_model *m, const float *p) {
    for (int i = 0; i < m->ntable; i++)
        if (p && m->params + m->table[i].offset == p) m->table[i].used = 1;
}

static void mark_stream(cav_model *m, const cav_stream *s) {
    for (int i = 0; i < s->nblk; i++) {
        cav_block_params *p = s->p[i];
        float *w1, *b1, *w2, *b2;
        block_lns(p, s->mod, &w1, &b1, &w2, &b2);
        const float *f[] = {w1,        b1,        w2,       b2,       p->qkv_w, p->qkv_b,
                            p->proj_w, p->proj_b, p->fc1_w, p->fc1_b, p->fc2_w, p->fc2_b};
        for (size_t k = 0; k < sizeof f / sizeof f[0]; k++) mark(m, f[k]);
    }
}

/* After planning: the streams that run and the tensors around them. */
static void mark_used(cav_model *m) {
    const cav_config *c = &m->cfg;
    cav_params *p = &m->p;
    int ua = m->La > 0, uv = m->Lv > 0, pre = c->task == CAV_TASK_PRETRAIN;
    if (ua) mark(m, p->patch_a_w), mark(m, p->patch_a_b), mark(m, p->modality_a), mark(m, p->pos_embed_a);
    if (uv) mark(m, p->patch_v_w), mark(m, p->patch_v_b), mark(m, p->modality_v), mark(m, p->pos_embed_v);
    const cav_stream *st[] = {&m->s_a, &m->s_v, &m->s_u, &m->s_ca, &m->s_cv, &m->s_dec};
    for (int i = 0; i < 6; i++) mark_stream(m, st[i]);
    /* a stream's final LayerNorm runs whenever the stream does (planned: it has an activation buffer) */
    if (m->ln_u.out) mark(m, p->norm_w), mark(m, p->norm_b);
    if (m->ln_ca.out) mark(m, p->norm_a_w), mark(m, p->norm_a_b);
    if (m->ln_cv.out) mark(m, p->norm_v_w), mark(m, p->norm_v_b);
    if (pre && c->mae_loss_weight != 0) {
        mark(m, p->decoder_embed_w), mark(m, p->decoder_embed_b);
        mark(m, p->decoder_norm_w), mark(m, p->decoder_norm_b);
        if ((ua && m->La < m->La_full) || (uv && m->Lv < m->Lv_full)) mark(m, p->mask_token);
        if (ua)
            mark(m, p->decoder_modality_a), mark(m, p->decoder_pos_embed_a), mark(m, p->decoder_pred_a_w),
                mark(m, p->decoder_pred_a_b);
        if (uv)
            mark(m, p->decoder_modality_v), mark(m, p->decoder_pos_embed_v), mark(m, p->decoder_pred_v_w),
                mark(m, p->decoder_pred_v_b);
    }
    if (c->task == CAV_TASK_FINETUNE)
        mark(m, p->head_norm_w), mark(m, p->head_norm_b), mark(m, p->head_w), mark(m, p->head_b);
}

/* ---- create / free ------------------------------------------------------------------------------ */

static void derive(cav_model *m, const cav_config *cfg, int B) {
    const cav_config *c = &m->cfg;
    m->cfg = *cfg, m->B = B, m->dloss = 1;
    m->T = c->audio_length, m->F = c->mel_bins, m->S = c->img_size;
    m->gf = m->F / 16, m->gt = m->T / 16;
    m->La_full = m->gf * m->gt, m->Lv_full = (m->S / 16) * (m->S / 16);
    m->D = c->embed_dim, m->Dd = c->decoder_embed_dim, m->H = c->num_heads, m->Hdec = c->decoder_num_heads;
    m->hidden = (int)(m->D * c->mlp_ratio), m->dhidden = (int)(m->Dd * c->mlp_ratio);
    m->joint = c->depth - c->modality_specific_depth;
    m->Dh = c->task == CAV_TASK_FINETUNE && c->mode == CAV_FT_SINGLEMODAL ? 2 * m->D : m->D;
}

size_t cav_config_param_count(const cav_config *cfg, size_t *trainable) {
    cav_model m;
    memset(&m, 0, sizeof m);
    derive(&m, cfg, 1);
    register_params(&m);
    if (trainable) *trainable = cav_model_trainable(&m);
    free(m.table);
    return m.nparams;
}

/* Points the fields of a cav_params at the table's tensors inside one buffer of nparams floats. */
static void params_at(const cav_model *m, float *base, cav_params *out) {
    memset(out, 0, sizeof *out);
    for (int i = 0; i < m->ntable; i++)
        *(float **)((char *)out + m->table[i].slot) = base + m->table[i].offset;
}

cav_model *cav_model_create(const cav_config *cfg, int B, cav_err *err) {
    return cav_model_create_on(cav_backend_cpu(), cfg, B, err);
}

/* The shapes of a model for cfg and batch B on m->be, its parameter table and its activation plan (sizes
 * only: no memory of the backend yet). 0, or 1 with err filled for a config or batch it refuses. */
static int layout(cav_model *m, const cav_config *cfg, int B, cav_err *err) {
    if (cav_config_check(cfg, err)) return 1;
    if (B <= 0) return cav_fail(err, 1, "batch size %d must be positive", B), 1;
    derive(m, cfg, B);
    const cav_config *c = &m->cfg;
    int ua, uv;
    modalities(c, &ua, &uv);
    if (c->task == CAV_TASK_PRETRAIN) {
        /* int(L * (1 - r)) in double, as Python */
        m->La = ua ? (int)(m->La_full * (1.0 - c->mask_ratio_a)) : 0;
        m->Lv = uv ? (int)(m->Lv_full * (1.0 - c->mask_ratio_v)) : 0;
        if ((ua && m->La == 0) || (uv && m->Lv == 0))
            return cav_fail(err, 1, "mask ratios %g/%g keep no token", c->mask_ratio_a, c->mask_ratio_v), 1;
    } else {
        m->La = ua ? m->La_full : 0, m->Lv = uv ? m->Lv_full : 0;
    }
    register_params(m);
    m->shard_lo = 0, m->shard_hi = m->nparams; /* the Adam moments' part (cav_model_shard_adam) */
    plan(m);
    m->acts_size = m->acts_used;
    return 0;
}

/* The inputs' elements in their buffer's order: n[0] keep indices (int64: [B,La] then [B,Lv]), then floats:
 * n[1] audio [B,T,F], n[2] video [B,3,S,S], n[3] labels [B,K]; 0 for what the task does not read. */
static void input_counts(const cav_model *m, size_t n[4]) {
    const cav_config *c = &m->cfg;
    n[0] = c->task == CAV_TASK_PRETRAIN ? (size_t)m->B * (m->La + m->Lv) : 0;
    n[1] = m->La ? (size_t)m->B * m->T * m->F : 0;
    n[2] = m->Lv ? (size_t)m->B * 3 * m->S * m->S : 0;
    n[3] = c->task == CAV_TASK_FINETUNE ? (size_t)m->B * c->label_dim : 0;
}

/* What layout() sized, in bytes of the backend's memory: the cav_model_mem of cav_model_memory. */
static cav_model_mem memory_of(const cav_model *m) {
    const cav_config *c = &m->cfg;
    cav_model_mem r;
    size_t n[4];
    input_counts(m, n);
    r.params = m->nparams * sizeof(float);
    r.grads = c->task == CAV_TASK_FEAT ? 0 : r.params;
    /* allocated by cav_model_alloc_adam: this rank's shard of the flat buffer (all of it without ZeRO) */
    r.adam = c->task == CAV_TASK_FEAT ? 0 : 2 * (m->shard_hi - m->shard_lo) * sizeof(float);
    r.acts = m->acts_size * sizeof(float);
    r.inputs = sizeof(int64_t) * n[0] + sizeof(float) * (n[1] + n[2] + n[3]) + 64;
    r.bf16 = m->bf16 ? sizeof(uint16_t) * (m->nparams + 2 * m->lin16_cap) : 0;
    r.total = r.params + r.grads + r.adam + r.acts + r.inputs + r.bf16;
    return r;
}

int cav_model_memory(cav_backend *be, const cav_config *cfg, int B, int bf16, cav_model_mem *out,
                     cav_err *err) {
    cav_model m;
    memset(&m, 0, sizeof m);
    m.be = be, m.bf16 = bf16 != 0;
    int rc = layout(&m, cfg, B, err);
    if (!rc) *out = memory_of(&m);
    free(m.table);
    return rc;
}

cav_model *cav_model_create_on(cav_backend *be, const cav_config *cfg, int B, cav_err *err) {
    cav_model *m = calloc(1, sizeof *m);
    if (!m) goto oom;
    m->be = be;
    if (layout(m, cfg, B, err)) {
        free(m->table), free(m);
        return NULL;
    }
    const cav_config *c = &m->cfg;
    cav_model_mem mem = memory_of(m);
    m->params = be->alloc(mem.params);
    m->grads = mem.grads ? be->alloc(mem.grads) : NULL;
    if (!m->params || (mem.grads && !m->grads)) goto oom;
    params_at(m, m->params, &m->p);
    if (m->grads) params_at(m, m->grads, &m->g);
    if (!(m->acts = be->alloc(mem.acts))) goto oom;
    plan(m); /* again, now that the arena exists: the activations' addresses */
    mark_used(m);
    /* inputs */
    size_t n[4], nk;
    input_counts(m, n);
    nk = n[0];
    m->in_mem = be->alloc(mem.inputs);
    m->in_host = be->host_alloc(mem.inputs);
    if (!m->in_mem || !m->in_host) goto oom;
    m->in.keep_a = (int64_t *)m->in_mem, m->in.keep_v = m->in.keep_a + (size_t)B * m->La;
    float *f = (float *)(m->in.keep_a + nk);
    m->in.audio = n[1] ? f : NULL, f += n[1];
    m->in.video = n[2] ? f : NULL, f += n[2];
    m->in.labels = n[3] ? f : NULL;
    if (c->task == CAV_TASK_PRETRAIN) { /* a valid default: keep the first tokens */
        int64_t *keep = malloc(sizeof(int64_t) * (nk + 1));
        if (!keep) goto oom;
        for (int b = 0; b < B; b++) {
            for (int l = 0; l < m->La; l++) keep[(size_t)b * m->La + l] = l;
            for (int l = 0; l < m->Lv; l++) keep[(size_t)B * m->La + (size_t)b * m->Lv + l] = l;
        }
        be->upload(m->in.keep_a, keep, sizeof(int64_t) * nk);
        free(keep);
    }
    return m;
oom:
    if (m)
        cav_fail(err, 3, "out of memory building the model (batch %d: %.2f GiB on %s)", B,
                 memory_of(m).total / 1073741824.0, be->name);
    else
        cav_fail(err, 3, "out of memory building the model (batch %d)", B);
    cav_model_free(m);
    return NULL;
}

void cav_model_free(cav_model *m) {
    if (!m) return;
    cav_backend *be = m->be;
    be->free(m->params), be->free(m->grads), be->free(m->adam_m), be->free(m->adam_v), be->free(m->acts);
    be->free(m->in_mem), be->free(m->split.ca);
    be->free(m->params16), be->free(m->lin_in16), be->free(m->lin_dout16);
    if (m->in_host) be->upload_wait(), be->host_free(m->in_host); /* no copy may still read it */
    free(m->passes), free(m->final);
    free(m->table), free(m);
}

int cav_model_set_precision(cav_model *m, int bf16) {
    cav_backend *be = m->be;
    be->free(m->params16), be->free(m->lin_in16), be->free(m->lin_dout16);
    m->params16 = m->lin_in16 = m->lin_dout16 = NULL;
    bf16 = bf16 != 0;
    if (bf16 != m->bf16) { /* the arena again, planned for the precision (sized, then assigned) */
        be->free(m->acts);
        m->acts = NULL, m->bf16 = bf16;
        plan(m);
        m->acts_size = m->acts_used;
        if (!(m->acts = be->alloc(m->acts_size * sizeof(float)))) return -1;
        plan(m);
    }
    if (!bf16) return 0;
    m->params16 = be->alloc(sizeof(uint16_t) * m->nparams);
    m->lin_in16 = be->alloc(sizeof(uint16_t) * m->lin16_cap);
    m->lin_dout16 = be->alloc(sizeof(uint16_t) * m->lin16_cap);
    if (!m->params16 || !m->lin_in16 || !m->lin_dout16) return -1;
    m->params16_stale = 1;
    return 0;
}

cav_param *cav_model_param(cav_model *m, const char *name) {
    if (!strncmp(name, "module.", 7)) name += 7;
    for (int i = 0; i < m->ntable; i++)
        if (!strcmp(m->table[i].name, name)) return &m->table[i];
    return NULL;
}

size_t cav_model_trainable(const cav_model *m) {
    size_t n = 0;
    for (int i = 0; i < m->ntable; i++) n += m->table[i].trainable ? m->table[i].numel : 0;
    return n;
}

void cav_model_describe(const cav_model *m, FILE *f) {
    static const char *tasks[] = {"pretraining", "fine-tuning", "embedding"};
    double mb = 1.0 / (1 << 20);
    fprintf(f, "%s: model: %s on %s, batch %d, %d+%d layers of %d (%d heads)", cav_tool(), tasks[m->cfg.task],
            m->be->name, m->B, m->cfg.modality_specific_depth, m->joint, m->D, m->H);
    if (m->cfg.task == CAV_TASK_PRETRAIN)
        fprintf(f, ", decoder %d x %d (%d heads)", m->cfg.decoder_depth, m->Dd, m->Hdec);
    cav_model_mem mem = memory_of(m);
    fprintf(
        f,
        "\n%s: model: parameters %zu (%zu trainable) %.1f MiB; gradients %.1f MiB; Adam moments %.1f MiB; "
        "activations %.1f MiB; inputs %.1f MiB",
        cav_tool(), m->nparams, cav_model_trainable(m), mem.params * mb, mem.grads * mb, mem.adam * mb,
        mem.acts * mb, mem.inputs * mb);
    if (m->bf16) fprintf(f, "; bf16 weights and operands %.1f MiB", mem.bf16 * mb);
    fprintf(f, "\n%s: model: %s memory: %.1f MiB (%.2f GiB)\n", cav_tool(), m->be->name, mem.total * mb,
            mem.total * mb / 1024);
    if (m->bf16)
        fprintf(f,
                "%s: model: precision bf16: the Linears on bf16 operands (the Blocks' inputs kept in bf16), "
                "fp32 elsewhere\n",
                cav_tool());
}

/* ---- initialisation and masks ------------------------------------------------------------------ */

static double uniform01(uint64_t *s) {
    return (double)(cav_splitmix64(s) >> 11) / 9007199254740992.0;
}
static double normal01(uint64_t *s) {
    double u = uniform01(s), v = uniform01(s);
    return sqrt(-2.0 * log(1.0 - u)) * cos(2 * M_PI * v);
}
static void fill_uniform(float *p, size_t n, double a, uint64_t *s) {
    for (size_t i = 0; i < n; i++) p[i] = (float)((2 * uniform01(s) - 1) * a);
}
static void xavier(float *w, int fan_out, int fan_in, uint64_t *s) {
    fill_uniform(w, (size_t)fan_out * fan_in, sqrt(6.0 / (fan_in + fan_out)), s);
}
static void init_ln(float *w, float *b, int C) {
    for (int i = 0; i < C; i++) w[i] = 1, b[i] = 0;
}
static void init_block(cav_block_params *p, int C, int hid, uint64_t *s) {
    init_ln(p->norm1_w, p->norm1_b, C), init_ln(p->norm1_a_w, p->norm1_a_b, C),
        init_ln(p->norm1_v_w, p->norm1_v_b, C);
    init_ln(p->norm2_w, p->norm2_b, C), init_ln(p->norm2_a_w, p->norm2_a_b, C),
        init_ln(p->norm2_v_w, p->norm2_v_b, C);
    xavier(p->qkv_w, 3 * C, C, s), xavier(p->proj_w, C, C, s), xavier(p->fc1_w, hid, C, s),
        xavier(p->fc2_w, C, hid, s);
    memset(p->qkv_b, 0, sizeof(float) * 3 * C), memset(p->proj_b, 0, sizeof(float) * C);
    memset(p->fc1_b, 0, sizeof(float) * hid), memset(p->fc2_b, 0, sizeof(float) * C);
}

/* Computed in host memory, then uploaded (the tensors the init does not set keep their values). */
void cav_model_init(cav_model *m, uint64_t seed) {
    uint64_t s = seed;
    float *host = malloc(sizeof(float) * m->nparams);
    if (!host) {
        fprintf(stderr, "%s: model: out of memory initialising the parameters\n", cav_tool());
        abort();
    }
    m->be->download(host, m->params, sizeof(float) * m->nparams);
    cav_params hp, *p = &hp;
    params_at(m, host, &hp);
    const cav_config *c = &m->cfg;
    int D = m->D, Dd = m->Dd;
    cav_sincos_pos_2d(p->pos_embed_a, D, m->gf, m->gt);
    cav_sincos_pos_2d(p->pos_embed_v, D, m->S / 16, m->S / 16);
    xavier(p->patch_a_w, D, 256, &s), xavier(p->patch_v_w, D, 768, &s);
    fill_uniform(p->patch_a_b, D, 1 / sqrt(256.0), &s), fill_uniform(p->patch_v_b, D, 1 / sqrt(768.0), &s);
    for (int i = 0; i < D; i++) p->modality_a[i] = (float)(0.02 * normal01(&s));
    for (int i = 0; i < D; i++) p->modality_v[i] = (float)(0.02 * normal01(&s));
    for (int i = 0; i < c->modality_specific_depth; i++)
        init_block(&p->blocks_a[i], D, m->hidden, &s), init_block(&p->blocks_v[i], D, m->hidden, &s);
    for (int i = 0; i < m->joint; i++) init_block(&p->blocks_u[i], D, m->hidden, &s);
    init_ln(p->norm_a_w, p->norm_a_b, D), init_ln(p->norm_v_w, p->norm_v_b, D),
        init_ln(p->norm_w, p->norm_b, D);
    if (c->task == CAV_TASK_PRETRAIN) {
        cav_sincos_pos_2d(p->decoder_pos_embed_a, Dd, m->gf, m->gt);
        cav_sincos_pos_2d(p->decoder_pos_embed_v, Dd, m->S / 16, m->S / 16);
        for (int i = 0; i < Dd; i++) p->mask_token[i] = (float)(0.02 * normal01(&s));
        for (int i = 0; i < Dd; i++) p->decoder_modality_a[i] = (float)(0.02 * normal01(&s));
        for (int i = 0; i < Dd; i++) p->decoder_modality_v[i] = (float)(0.02 * normal01(&s));
        xavier(p->decoder_embed_w, Dd, D, &s), memset(p->decoder_embed_b, 0, sizeof(float) * Dd);
        for (int i = 0; i < c->decoder_depth; i++) init_block(&p->decoder_blocks[i], Dd, m->dhidden, &s);
        init_ln(p->decoder_norm_w, p->decoder_norm_b, Dd);
        xavier(p->decoder_pred_a_w, 256, Dd, &s), memset(p->decoder_pred_a_b, 0, sizeof(float) * 256);
        xavier(p->decoder_pred_v_w, 768, Dd, &s), memset(p->decoder_pred_v_b, 0, sizeof(float) * 768);
    }
    if (c->task == CAV_TASK_FINETUNE) {
        init_ln(p->head_norm_w, p->head_norm_b, m->Dh);
        xavier(p->head_w, c->label_dim, m->Dh, &s), memset(p->head_b, 0, sizeof(float) * c->label_dim);
    }
    m->be->upload(m->params, host, sizeof(float) * m->nparams);
    m->params16_stale = 1;
    free(host);
}

typedef struct {
    double noise;
    int idx;
} noise_item;
static int cmp_noise(const void *a, const void *b) {
    const noise_item *x = a, *y = b;
    if (x->noise != y->noise) return x->noise < y->noise ? -1 : 1;
    return x->idx - y->idx;
}
/* k distinct values of [0, n), by a partial Fisher-Yates shuffle */
static void sample(int *out, int n, int k, uint64_t *rng) {
    int pool[n];
    for (int i = 0; i < n; i++) pool[i] = i;
    for (int i = 0; i < k; i++) {
        int j = i + (int)(uniform01(rng) * (n - i));
        int t = pool[i];
        pool[i] = pool[j], pool[j] = t;
        out[i] = pool[i];
    }
}

/* cav-numerics(7) 2.6: noise in [0,1) per token; structured modes force whole time columns and/or frequency
 * rows to 1.1 (removed first); the kept tokens are the len_keep smallest, in ascending order of noise. */
static void make_mask(int64_t *keep, int L, int len_keep, int mode, int gf, int gt, double r, uint64_t *rng) {
    noise_item *it = malloc(sizeof(noise_item) * L);
    int sel[gt > gf ? gt : gf];
    for (int i = 0; i < L; i++) it[i].noise = uniform01(rng), it[i].idx = i;
    int ncol = mode == CAV_MASK_TIME ? (int)(gt * r) : mode == CAV_MASK_TF ? (int)(gt * r * 0.7) : 0;
    int nrow = mode == CAV_MASK_FREQ ? (int)(gf * r) : mode == CAV_MASK_TF ? (int)(gf * r * 0.7) : 0;
    sample(sel, gt, ncol, rng);
    for (int k = 0; k < ncol; k++)
        for (int f = 0; f < gf; f++) it[f * gt + sel[k]].noise = 1.1;
    sample(sel, gf, nrow, rng);
    for (int k = 0; k < nrow; k++)
        for (int t = 0; t < gt; t++) it[sel[k] * gt + t].noise = 1.1;
    qsort(it, (size_t)L, sizeof *it, cmp_noise);
    for (int i = 0; i < len_keep; i++) keep[i] = it[i].idx;
    free(it);
}

/* Drawn on the host ([B,La] then [B,Lv], as the input buffer holds them), then uploaded. */
void cav_model_random_masks(cav_model *m, uint64_t *rng) {
    if (m->cfg.task != CAV_TASK_PRETRAIN) return;
    size_t na = (size_t)m->B * m->La, n = na + (size_t)m->B * m->Lv;
    int64_t *keep = malloc(sizeof(int64_t) * n);
    if (!keep) {
        fprintf(stderr, "%s: model: out of memory drawing masks\n", cav_tool());
        abort();
    }
    for (int b = 0; b < m->B; b++) {
        if (m->La)
            make_mask(keep + (size_t)b * m->La, m->La_full, m->La, m->cfg.mask_mode, m->gf, m->gt,
                      m->cfg.mask_ratio_a, rng);
        if (m->Lv)
            make_mask(keep + na + (size_t)b * m->Lv, m->Lv_full, m->Lv, CAV_MASK_UNSTRUCTURED, 1, m->Lv_full,
                      m->cfg.mask_ratio_v, rng);
    }
    m->be->upload(m->in.keep_a, keep, sizeof(int64_t) * n);
    free(keep);
}

void cav_model_skip_masks(cav_model *m, uint64_t *rng, int rows) {
    if (m->cfg.task != CAV_TASK_PRETRAIN || rows <= 0) return;
    int64_t *keep = malloc(sizeof(int64_t) * (size_t)(m->La > m->Lv ? m->La : m->Lv));
    for (int b = 0; b < rows; b++) {
        if (m->La)
            make_mask(keep, m->La_full, m->La, m->cfg.mask_mode, m->gf, m->gt, m->cfg.mask_ratio_a, rng);
        if (m->Lv)
            make_mask(keep, m->Lv_full, m->Lv, CAV_MASK_UNSTRUCTURED, 1, m->Lv_full, m->cfg.mask_ratio_v,
                      rng);
    }
    free(keep);
}

/* ---- blocks and streams ------------------------------------------------------------------------- */

static void block_lns(cav_block_params *p, int mod, float **w1, float **b1, float **w2, float **b2) {
    if (mod == 1)
        *w1 = p->norm1_a_w, *b1 = p->norm1_a_b, *w2 = p->norm2_a_w, *b2 = p->norm2_a_b;
    else if (mod == 2)
        *w1 = p->norm1_v_w, *b1 = p->norm1_v_b, *w2 = p->norm2_v_w, *b2 = p->norm2_v_b;
    else
        *w1 = p->norm1_w, *b1 = p->norm1_b, *w2 = p->norm2_w, *b2 = p->norm2_b;
}

/* ---- the backward's progress (cav_model_on_grads_final) ------------------------------------------- */

/* The table entries of Block p (its tensors' pointers lie inside *p, within cav_params). */
static int block_entry(const cav_model *m, const cav_block_params *p, int k) {
    size_t lo = (size_t)((const char *)p - (const char *)&m->p), slot = m->table[k].slot;
    return slot >= lo && slot < lo + sizeof *p;
}

static void count_pass(cav_model *m, const cav_block_params *p) {
    for (int k = 0; m->passes && k < m->ntable; k++)
        if (block_entry(m, p, k)) m->passes[k]++;
}

/* entries [k, e) reported final at once (contiguous in the flat buffer) */
static void report_final(cav_model *m, int k, int e, int at_end) {
    for (int i = k; i < e; i++) m->final[i] = 1;
    if (e > k)
        m->final_fn(m->final_ctx, m->table[k].offset, m->table[e - 1].offset + m->table[e - 1].numel, at_end);
}

/* after a backward pass through Block p: its tensors are final when no forward pass through it is left */
static void pass_done(cav_model *m, const cav_block_params *p) {
    if (!m->final_fn) return;
    for (int k = 0; k < m->ntable; k++)
        if (block_entry(m, p, k) && --m->passes[k] <= 0 && !m->final[k]) report_final(m, k, k + 1, 0);
}

/* the backward's end: every tensor not yet reported, in runs of neighbours */
static void report_rest(cav_model *m) {
    if (!m->final_fn) return;
    for (int k = 0; k < m->ntable;) {
        if (m->final[k]) {
            k++;
            continue;
        }
        int e = k;
        while (e < m->ntable && !m->final[e]) e++;
        report_final(m, k, e, 1);
        k = e;
    }
}

int cav_model_on_grads_final(cav_model *m, void (*fn)(void *ctx, size_t lo, size_t hi, int at_end),
                             void *ctx) {
    if (fn && !m->passes) {
        m->passes = calloc((size_t)m->ntable, sizeof *m->passes);
        m->final = calloc((size_t)m->ntable, 1);
        if (!m->passes || !m->final)
            return free(m->passes), free(m->final), m->passes = NULL, m->final = NULL, -1;
    }
    m->final_fn = fn, m->final_ctx = ctx;
    return 0;
}

/* ---- the Linears, in the model's precision ---------------------------------------------------------- */

/* a parameter's bf16 copy: the same offset in params16 */
static const uint16_t *p16(const cav_model *m, const float *p) {
    return p ? m->params16 + (p - m->params) : NULL;
}
static void lin16_check(const cav_model *m, size_t n) {
    if (n > m->lin16_cap) { /* plan() bounds every Linear: a new one it does not know */
        fprintf(stderr, "%s: model: a Linear operand of %zu exceeds the bf16 buffers (%zu)\n", cav_tool(), n,
                m->lin16_cap);
        abort();
    }
}

/* out[M,OC] = inp16[M,IC] @ w^T + b on bf16 operands: the input already rounded, the weights' copy */
static void lin16_fwd(cav_model *m, float *out, const uint16_t *inp16, const float *w, const float *b, int M,
                      int IC, int OC) {
    m->be->linear_forward_bf16(out, inp16, p16(m, w), p16(m, b), M, IC, OC);
}

/* out[M,OC] = inp[M,IC] @ w^T + b: fp32, or bf16 operands (the input cast here) */
static void lin_fwd(cav_model *m, float *out, const float *inp, const float *w, const float *b, int M, int IC,
                    int OC) {
    if (!m->bf16) {
        m->be->linear_forward(out, inp, w, b, M, IC, OC);
        return;
    }
    lin16_check(m, (size_t)M * IC);
    m->be->cast_bf16(m->lin_in16, inp, (size_t)M * IC);
    lin16_fwd(m, out, m->lin_in16, w, b, M, IC, OC);
}

/* its backward (kernels.h) in bf16, the saved input given rounded (read only for dw); the output gradient
 * is cast here */
static void lin16_bwd(cav_model *m, float *dinp, float *dw, float *db, const float *dout,
                      const uint16_t *inp16, const float *w, int M, int IC, int OC) {
    lin16_check(m, (size_t)M * OC);
    if (dinp || dw) m->be->cast_bf16(m->lin_dout16, dout, (size_t)M * OC);
    m->be->linear_backward_bf16(dinp, dw, db, dout, m->lin_dout16, inp16, p16(m, w), M, IC, OC);
}

/* the backward from the fp32 input: in bf16 it is cast again here (a Linear outside the Blocks keeps no bf16
 * activation between the passes) */
static void lin_bwd(cav_model *m, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                    const float *w, int M, int IC, int OC) {
    if (!m->bf16) {
        m->be->linear_backward(dinp, dw, db, dout, inp, w, M, IC, OC);
        return;
    }
    lin16_check(m, (size_t)M * IC);
    if (dw) m->be->cast_bf16(m->lin_in16, inp, (size_t)M * IC);
    lin16_bwd(m, dinp, dw, db, dout, m->lin_in16, w, M, IC, OC);
}

/* x1 = x + proj(attn(N1(x))); out = x1 + fc2(gelu(fc1(N2(x1)))). In bf16 N1, N2 and gelu are written rounded
 * (cav_block_acts), which the Linears would otherwise round from fp32 copies. */
static void block_forward(cav_model *m, cav_stream *s, int i, const float *x) {
    cav_block_params *p = s->p[i];
    count_pass(m, p);
    cav_block_acts *a = &s->a[i];
    int B = m->B, N = s->N, C = s->C, M = B * N, hid = s->hidden;
    float *w1, *b1, *w2, *b2;
    block_lns(p, s->mod, &w1, &b1, &w2, &b2);
    if (m->bf16) {
        m->be->layernorm_forward_bf16(a->ln1_16, a->ln1_mean, a->ln1_rstd, x, w1, b1, M, C);
        lin16_fwd(m, a->qkv, a->ln1_16, p->qkv_w, p->qkv_b, M, C, 3 * C);
    } else {
        m->be->layernorm_forward(a->ln1, a->ln1_mean, a->ln1_rstd, x, w1, b1, M, C);
        lin_fwd(m, a->qkv, a->ln1, p->qkv_w, p->qkv_b, M, C, 3 * C);
    }
    if (m->bf16)
        m->be->attention_forward_bf16(a->atty, a->att, a->qkv, B, N, C, s->H);
    else
        m->be->attention_forward(a->atty, a->att, a->qkv, B, N, C, s->H);
    lin_fwd(m, a->x1, a->atty, p->proj_w, p->proj_b, M, C, C);
    /* x1 = x + proj in place, and N2(x1) in the same pass */
    m->be->add_layernorm_forward(a->x1, a->ln2, a->ln2_16, a->ln2_mean, a->ln2_rstd, x, a->x1, w2, b2, M, C);
    if (m->bf16) {
        lin16_fwd(m, a->fc1, a->ln2_16, p->fc1_w, p->fc1_b, M, C, hid);
        m->be->gelu_forward_bf16(a->gelu16, a->fc1, (size_t)M * hid);
        lin16_fwd(m, a->out, a->gelu16, p->fc2_w, p->fc2_b, M, hid, C);
    } else {
        lin_fwd(m, a->fc1, a->ln2, p->fc1_w, p->fc1_b, M, C, hid);
        m->be->gelu_forward(a->gelu, a->fc1, (size_t)M * hid);
        lin_fwd(m, a->out, a->gelu, p->fc2_w, p->fc2_b, M, hid, C);
    }
    m->be->add_forward(a->out, a->x1, a->out, (size_t)M * C);
}

/* A Block's Linear backward from its saved input: fp32, or the bf16 one the forward kept */
static void block_lin_bwd(cav_model *m, float *dinp, float *dw, float *db, const float *dout,
                          const float *inp, const uint16_t *inp16, const float *w, int M, int IC, int OC) {
    if (m->bf16)
        lin16_bwd(m, dinp, dw, db, dout, inp16, w, M, IC, OC);
    else
        lin_bwd(m, dinp, dw, db, dout, inp, w, M, IC, OC);
}

/* On entry s->d holds d out; on exit d x (in place: the residual path carries it through). */
static void block_backward(cav_model *m, cav_stream *s, int i, const float *x) {
    cav_block_params *p = s->p[i], *g = s->g[i];
    cav_block_acts *a = &s->a[i];
    int B = m->B, N = s->N, C = s->C, M = B * N, hid = s->hidden;
    float *w1, *b1, *w2, *b2, *gw1, *gb1, *gw2, *gb2, *d = s->d;
    block_lns(p, s->mod, &w1, &b1, &w2, &b2);
    block_lns(g, s->mod, &gw1, &gb1, &gw2, &gb2);
    m->be->zero(m->sc_h1, sizeof(float) * M * hid);
    block_lin_bwd(m, m->sc_h1, g->fc2_w, g->fc2_b, d, a->gelu, a->gelu16, p->fc2_w, M, hid, C);
    m->be->zero(m->sc_h2, sizeof(float) * M * hid);
    m->be->gelu_backward(m->sc_h2, a->fc1, m->sc_h1, (size_t)M * hid);
    m->be->zero(m->sc_ln, sizeof(float) * M * C);
    block_lin_bwd(m, m->sc_ln, g->fc1_w, g->fc1_b, m->sc_h2, a->ln2, a->ln2_16, p->fc1_w, M, C, hid);
    m->be->layernorm_backward(d, gw2, gb2, m->sc_ln, a->x1, w2, a->ln2_mean, a->ln2_rstd, M, C);
    m->be->zero(m->sc_atty, sizeof(float) * M * C);
    lin_bwd(m, m->sc_atty, g->proj_w, g->proj_b, d, a->atty, p->proj_w, M, C, C);
    if (m->bf16)
        m->be->attention_backward_bf16(m->sc_qkv, m->sc_atty, a->qkv, a->atty, a->att, m->sc_att, B, N, C,
                                       s->H);
    else
        m->be->attention_backward(m->sc_qkv, m->sc_atty, a->qkv, a->atty, a->att, m->sc_att, B, N, C, s->H);
    m->be->zero(m->sc_ln, sizeof(float) * M * C);
    block_lin_bwd(m, m->sc_ln, g->qkv_w, g->qkv_b, m->sc_qkv, a->ln1, a->ln1_16, p->qkv_w, M, C, 3 * C);
    m->be->layernorm_backward(d, gw1, gb1, m->sc_ln, x, w1, a->ln1_mean, a->ln1_rstd, M, C);
    pass_done(m, p);
}

static void stream_forward(cav_model *m, cav_stream *s, const float *in) {
    s->in = in;
    const float *x = in;
    for (int i = 0; i < s->nblk; i++) {
        block_forward(m, s, i, x);
        x = s->a[i].out;
    }
    s->out = (float *)x;
}

static void stream_backward(cav_model *m, cav_stream *s) {
    for (int i = s->nblk - 1; i >= 0; i--) block_backward(m, s, i, i ? s->a[i - 1].out : s->in);
}

/* A final LayerNorm over a stream's output: forward, and backward that sets s->d. */
static void final_ln_forward(cav_model *m, cav_ln_acts *l, const float *x, const float *w, const float *b,
                             size_t M, int C) {
    m->be->layernorm_forward(l->out, l->mean, l->rstd, x, w, b, (int)M, C);
}
static void final_ln_backward(cav_model *m, cav_stream *s, cav_ln_acts *l, float *gw, float *gb,
                              const float *dout, const float *w, size_t M) {
    m->be->zero(s->d, sizeof(float) * M * s->C);
    m->be->layernorm_backward(s->d, gw, gb, dout, s->out, w, l->mean, l->rstd, (int)M, s->C);
}

/* patch embedding + position table + modality embedding: emb [B,L,D] */
static void embed_audio(cav_model *m) {
    m->be->patchify_audio(m->cols_a, m->in.audio, m->B, m->T, m->F);
    lin_fwd(m, m->emb_a, m->cols_a, m->p.patch_a_w, m->p.patch_a_b, m->B * m->La_full, 256, m->D);
    m->be->add_pos_forward(m->emb_a, m->p.pos_embed_a, m->p.modality_a, m->B, m->La_full, 0, m->La_full,
                           m->D);
}
static void embed_video(cav_model *m) {
    m->be->im2col_video(m->cols_v, m->in.video, m->B, m->S);
    lin_fwd(m, m->emb_v, m->cols_v, m->p.patch_v_w, m->p.patch_v_b, m->B * m->Lv_full, 768, m->D);
    m->be->add_pos_forward(m->emb_v, m->p.pos_embed_v, m->p.modality_v, m->B, m->Lv_full, 0, m->Lv_full,
                           m->D);
}
/* d emb [B,L,D] -> position, modality and patch-embedding gradients */
static void embed_audio_backward(cav_model *m, const float *demb) {
    m->be->add_pos_backward(m->cfg.tr_pos ? m->g.pos_embed_a : NULL, m->g.modality_a, demb, m->B, m->La_full,
                            0, m->La_full, m->D);
    lin_bwd(m, NULL, m->g.patch_a_w, m->g.patch_a_b, demb, m->cols_a, m->p.patch_a_w, m->B * m->La_full, 256,
            m->D);
}
static void embed_video_backward(cav_model *m, const float *demb) {
    m->be->add_pos_backward(m->cfg.tr_pos ? m->g.pos_embed_v : NULL, m->g.modality_v, demb, m->B, m->Lv_full,
                            0, m->Lv_full, m->D);
    lin_bwd(m, NULL, m->g.patch_v_w, m->g.patch_v_b, demb, m->cols_v, m->p.patch_v_w, m->B * m->Lv_full, 768,
            m->D);
}

/* contrastive pass of one modality: stream -> norm_x -> mean over tokens -> L2 normalise */
static void contrast_side_forward(cav_model *m, cav_stream *s, cav_ln_acts *l, const float *in,
                                  const float *w, const float *b, float *mean, float *n, float *norm) {
    stream_forward(m, s, in);
    final_ln_forward(m, l, s->out, w, b, (size_t)m->B * s->N, m->D);
    m->be->mean_tokens_forward(mean, l->out, m->B, s->N, m->D);
    m->be->l2norm_forward(n, norm, mean, m->B, m->D);
}
static void contrast_side_backward(cav_model *m, cav_stream *s, cav_ln_acts *l, float *gw, float *gb,
                                   const float *w, const float *dn, const float *n, const float *norm,
                                   float *dres) {
    m->be->zero(m->d_vec3, sizeof(float) * m->B * m->D);
    m->be->l2norm_backward(m->d_vec3, dn, n, norm, m->B, m->D);
    m->be->zero(m->d_tok, sizeof(float) * m->B * s->N * m->D);
    m->be->mean_tokens_backward(m->d_tok, m->d_vec3, m->B, s->N, m->D);
    final_ln_backward(m, s, l, gw, gb, m->d_tok, w, (size_t)m->B * s->N);
    stream_backward(m, s);
    m->be->accumulate(dres, s->d, (size_t)m->B * s->N * m->D);
}

/* ---- pretraining ------------------------------------------------------------------------------- */

static void forward_pretrain(cav_model *m) {
    const cav_config *c = &m->cfg;
    int B = m->B, D = m->D, Dd = m->Dd, ua = m->La > 0, uv = m->Lv > 0;
    cav_params *p = &m->p;
    memset(&m->out, 0, sizeof m->out);
    if (ua) {
        embed_audio(m);
        m->be->gather_tokens_forward(m->x_a, m->emb_a, m->in.keep_a, B, m->La_full, m->La, D);
        m->be->mask_from_keep(m->mask_a, m->in.keep_a, B, m->La_full, m->La);
        stream_forward(m, &m->s_a, m->x_a);
    }
    if (uv) {
        embed_video(m);
        m->be->gather_tokens_forward(m->x_v, m->emb_v, m->in.keep_v, B, m->Lv_full, m->Lv, D);
        m->be->mask_from_keep(m->mask_v, m->in.keep_v, B, m->Lv_full, m->Lv);
        stream_forward(m, &m->s_v, m->x_v);
    }
    if (c->contrast_loss_weight != 0) {
        contrast_side_forward(m, &m->s_ca, &m->ln_ca, m->s_a.out, p->norm_a_w, p->norm_a_b, m->ca_mean,
                              m->ca_n, m->ca_norm);
        contrast_side_forward(m, &m->s_cv, &m->ln_cv, m->s_v.out, p->norm_v_w, p->norm_v_b, m->cv_mean,
                              m->cv_n, m->cv_norm);
        if (!m->split.on) { /* split: the loss needs the whole group (cav_model_split_losses) */
            float nce = m->be->contrastive_forward(&m->out.c_acc, m->ca_n, m->cv_n, B, D,
                                                   c->bidirect_contrast, m->con_work);
            m->out.loss_c = (float)c->contrast_loss_weight * nce;
        }
    }
    if (c->mae_loss_weight != 0) {
        int Lvis = m->La + m->Lv, Ld = (ua ? m->La_full : 0) + (uv ? m->Lv_full : 0),
            voff = ua ? m->La_full : 0;
        const float *xin = ua && uv ? m->x_cat : ua ? m->s_a.out : m->s_v.out;
        if (ua && uv) m->be->concat_forward(m->x_cat, m->s_a.out, m->s_v.out, B, m->La, m->Lv, D);
        stream_forward(m, &m->s_u, xin);
        final_ln_forward(m, &m->ln_u, m->s_u.out, p->norm_w, p->norm_b, (size_t)B * Lvis, D);
        /* decoder: visible audio tokens first, then the visible video tokens (cav-numerics(7) 2.8) */
        lin_fwd(m, m->dec_emb, m->ln_u.out, p->decoder_embed_w, p->decoder_embed_b, B * Lvis, D, Dd);
        if (ua)
            m->be->unshuffle_forward(m->dec_ua, m->dec_emb, m->in.keep_a, p->mask_token, B, m->La_full, m->La,
                                     Lvis, 0, Dd);
        if (uv)
            m->be->unshuffle_forward(m->dec_uv, m->dec_emb, m->in.keep_v, p->mask_token, B, m->Lv_full, m->Lv,
                                     Lvis, m->La, Dd);
        if (ua && uv)
            m->be->concat_forward(m->dec_x, m->dec_ua, m->dec_uv, B, m->La_full, m->Lv_full, Dd);
        else
            m->be->copy(m->dec_x, ua ? m->dec_ua : m->dec_uv, sizeof(float) * B * Ld * Dd);
        if (ua)
            m->be->add_pos_forward(m->dec_x, p->decoder_pos_embed_a, p->decoder_modality_a, B, Ld, 0,
                                   m->La_full, Dd);
        if (uv)
            m->be->add_pos_forward(m->dec_x, p->decoder_pos_embed_v, p->decoder_modality_v, B, Ld, voff,
                                   m->Lv_full, Dd);
        stream_forward(m, &m->s_dec, m->dec_x);
        final_ln_forward(m, &m->ln_dec, m->s_dec.out, p->decoder_norm_w, p->decoder_norm_b, (size_t)B * Ld,
                         Dd);
        /* the predictions, one Linear over every sample's tokens of a modality: with both, the decoder's
         * output split by modality first (into dec_ua, dec_uv, free since dec_x was built; kept for the
         * backward) */
        const float *xa = m->ln_dec.out, *xv = m->ln_dec.out;
        if (ua && uv) {
            m->be->zero(m->dec_ua, sizeof(float) * B * m->La_full * Dd);
            m->be->zero(m->dec_uv, sizeof(float) * B * m->Lv_full * Dd);
            m->be->concat_backward(m->dec_ua, m->dec_uv, m->ln_dec.out, B, m->La_full, m->Lv_full, Dd);
            xa = m->dec_ua, xv = m->dec_uv;
        }
        if (ua) lin_fwd(m, m->pred_a, xa, p->decoder_pred_a_w, p->decoder_pred_a_b, B * m->La_full, Dd, 256);
        if (uv) lin_fwd(m, m->pred_v, xv, p->decoder_pred_v_w, p->decoder_pred_v_b, B * m->Lv_full, Dd, 768);
        /* targets: the patchified input (audio's im2col is its patchify) */
        if (ua) {
            m->be->copy(m->tgt_a, m->cols_a, sizeof(float) * B * m->La_full * 256);
            if (c->norm_pix_loss) m->be->normpix(m->tgt_a, B * m->La_full, 256, 1e-6f);
            if (m->split.on)
                m->be->masked_mse_sums(m->pred_a, m->tgt_a, m->mask_a, B * m->La_full, 256, &m->split.mae[0],
                                       &m->split.mae[1]);
            else
                m->out.loss_mae_a =
                    m->be->masked_mse_forward(m->pred_a, m->tgt_a, m->mask_a, B * m->La_full, 256);
        }
        if (uv) {
            m->be->patchify_video(m->tgt_v, m->in.video, B, m->S);
            if (c->norm_pix_loss) m->be->normpix(m->tgt_v, B * m->Lv_full, 768, 1e-6f);
            if (m->split.on)
                m->be->masked_mse_sums(m->pred_v, m->tgt_v, m->mask_v, B * m->Lv_full, 768, &m->split.mae[2],
                                       &m->split.mae[3]);
            else
                m->out.loss_mae_v =
                    m->be->masked_mse_forward(m->pred_v, m->tgt_v, m->mask_v, B * m->Lv_full, 768);
        }
        m->out.loss_mae = (float)c->mae_loss_weight * (m->out.loss_mae_a + m->out.loss_mae_v);
    }
    m->out.loss = m->out.loss_mae + m->out.loss_c; /* split: 0, set by cav_model_split_losses */
}

int cav_model_split(cav_model *m, int n, int row0) {
    m->be->free(m->split.ca);
    memset(&m->split, 0, sizeof m->split);
    size_t nd = (size_t)n * m->D, nw = m->be->contrastive_workspace(n);
    /* ca, cv, da, dv [n,D], then the contrastive loss's workspace (doubles) */
    if (!(m->split.ca = m->be->alloc(4 * nd * sizeof(float) + nw * sizeof(double) + 64))) return -1;
    m->split.cv = m->split.ca + nd, m->split.da = m->split.cv + nd, m->split.dv = m->split.da + nd;
    m->split.work = (double *)(m->split.dv + nd + (nd & 1)); /* 8-byte aligned */
    m->split.on = 1, m->split.n = n, m->split.row0 = row0;
    return 0;
}

void cav_model_split_embeddings(const cav_model *m, float *ca, float *cv, double mae[4]) {
    size_t nd = (size_t)m->B * m->D;
    if (m->cfg.contrast_loss_weight != 0) {
        m->be->download(ca, m->ca_n, sizeof(float) * nd);
        m->be->download(cv, m->cv_n, sizeof(float) * nd);
    }
    memcpy(mae, m->split.mae, sizeof m->split.mae);
}

/* As forward_pretrain's loss lines, on the group's embeddings and sums. */
void cav_model_split_losses(cav_model *m, const float *group_ca, const float *group_cv, const double mae[4]) {
    const cav_config *c = &m->cfg;
    memset(&m->out, 0, sizeof m->out);
    if (c->contrast_loss_weight != 0) {
        size_t nd = (size_t)m->split.n * m->D;
        m->be->upload(m->split.ca, group_ca, sizeof(float) * nd);
        m->be->upload(m->split.cv, group_cv, sizeof(float) * nd);
        float nce = m->be->contrastive_forward(&m->out.c_acc, m->split.ca, m->split.cv, m->split.n, m->D,
                                               c->bidirect_contrast, m->split.work);
        m->out.loss_c = (float)c->contrast_loss_weight * nce;
    }
    if (c->mae_loss_weight != 0) {
        if (m->La) m->out.loss_mae_a = (float)(mae[0] / mae[1]);
        if (m->Lv) m->out.loss_mae_v = (float)(mae[2] / mae[3]);
        m->out.loss_mae = (float)c->mae_loss_weight * (m->out.loss_mae_a + m->out.loss_mae_v);
    }
    m->split.den_a = mae[1], m->split.den_v = mae[3];
    m->out.loss = m->out.loss_mae + m->out.loss_c;
}

static void backward_pretrain(cav_model *m) {
    const cav_config *c = &m->cfg;
    int B = m->B, D = m->D, Dd = m->Dd, ua = m->La > 0, uv = m->Lv > 0;
    cav_params *p = &m->p, *g = &m->g;
    if (ua) m->be->zero(m->s_a.d, sizeof(float) * B * m->La * D);
    if (uv) m->be->zero(m->s_v.d, sizeof(float) * B * m->Lv * D);
    if (c->mae_loss_weight != 0) {
        int Lvis = m->La + m->Lv, Ld = (ua ? m->La_full : 0) + (uv ? m->Lv_full : 0),
            voff = ua ? m->La_full : 0;
        float w = (float)c->mae_loss_weight;
        m->be->zero(m->d_dn, sizeof(float) * B * Ld * Dd);
        if (ua) {
            m->be->zero(m->d_pred_a, sizeof(float) * B * m->La_full * 256);
            if (m->split.on)
                m->be->masked_mse_backward_den(m->d_pred_a, w, m->pred_a, m->tgt_a, m->mask_a, B * m->La_full,
                                               256, m->split.den_a);
            else
                m->be->masked_mse_backward(m->d_pred_a, w, m->pred_a, m->tgt_a, m->mask_a, B * m->La_full,
                                           256);
        }
        if (uv) {
            m->be->zero(m->d_pred_v, sizeof(float) * B * m->Lv_full * 768);
            if (m->split.on)
                m->be->masked_mse_backward_den(m->d_pred_v, w, m->pred_v, m->tgt_v, m->mask_v, B * m->Lv_full,
                                               768, m->split.den_v);
            else
                m->be->masked_mse_backward(m->d_pred_v, w, m->pred_v, m->tgt_v, m->mask_v, B * m->Lv_full,
                                           768);
        }
        if (ua && uv) { /* the forward's split, backwards: each modality's gradient, then joined */
            m->be->zero(m->d_ua, sizeof(float) * B * m->La_full * Dd);
            m->be->zero(m->d_uv, sizeof(float) * B * m->Lv_full * Dd);
            lin_bwd(m, m->d_ua, g->decoder_pred_a_w, g->decoder_pred_a_b, m->d_pred_a, m->dec_ua,
                    p->decoder_pred_a_w, B * m->La_full, Dd, 256);
            lin_bwd(m, m->d_uv, g->decoder_pred_v_w, g->decoder_pred_v_b, m->d_pred_v, m->dec_uv,
                    p->decoder_pred_v_w, B * m->Lv_full, Dd, 768);
            m->be->concat_forward(m->d_dn, m->d_ua, m->d_uv, B, m->La_full, m->Lv_full, Dd);
        } else if (ua) {
            lin_bwd(m, m->d_dn, g->decoder_pred_a_w, g->decoder_pred_a_b, m->d_pred_a, m->ln_dec.out,
                    p->decoder_pred_a_w, B * m->La_full, Dd, 256);
        } else {
            lin_bwd(m, m->d_dn, g->decoder_pred_v_w, g->decoder_pred_v_b, m->d_pred_v, m->ln_dec.out,
                    p->decoder_pred_v_w, B * m->Lv_full, Dd, 768);
        }
        final_ln_backward(m, &m->s_dec, &m->ln_dec, g->decoder_norm_w, g->decoder_norm_b, m->d_dn,
                          p->decoder_norm_w, (size_t)B * Ld);
        stream_backward(m, &m->s_dec);
        float *dx = m->s_dec.d; /* d dec_x [B,Ld,Dd] */
        if (ua)
            m->be->add_pos_backward(c->tr_pos ? g->decoder_pos_embed_a : NULL, g->decoder_modality_a, dx, B,
                                    Ld, 0, m->La_full, Dd);
        if (uv)
            m->be->add_pos_backward(c->tr_pos ? g->decoder_pos_embed_v : NULL, g->decoder_modality_v, dx, B,
                                    Ld, voff, m->Lv_full, Dd);
        const float *dua = dx, *duv = dx;
        if (ua && uv) {
            m->be->zero(m->d_ua, sizeof(float) * B * m->La_full * Dd);
            m->be->zero(m->d_uv, sizeof(float) * B * m->Lv_full * Dd);
            m->be->concat_backward(m->d_ua, m->d_uv, dx, B, m->La_full, m->Lv_full, Dd);
            dua = m->d_ua, duv = m->d_uv;
        }
        m->be->zero(m->d_dec_emb, sizeof(float) * B * Lvis * Dd);
        if (ua)
            m->be->unshuffle_backward(m->d_dec_emb, g->mask_token, dua, m->in.keep_a, B, m->La_full, m->La,
                                      Lvis, 0, Dd);
        if (uv)
            m->be->unshuffle_backward(m->d_dec_emb, g->mask_token, duv, m->in.keep_v, B, m->Lv_full, m->Lv,
                                      Lvis, m->La, Dd);
        m->be->zero(m->d_lat, sizeof(float) * B * Lvis * D);
        lin_bwd(m, m->d_lat, g->decoder_embed_w, g->decoder_embed_b, m->d_dec_emb, m->ln_u.out,
                p->decoder_embed_w, B * Lvis, D, Dd);
        final_ln_backward(m, &m->s_u, &m->ln_u, g->norm_w, g->norm_b, m->d_lat, p->norm_w, (size_t)B * Lvis);
        stream_backward(m, &m->s_u);
        if (ua && uv)
            m->be->concat_backward(m->s_a.d, m->s_v.d, m->s_u.d, B, m->La, m->Lv, D);
        else
            m->be->accumulate(ua ? m->s_a.d : m->s_v.d, m->s_u.d, (size_t)B * Lvis * D);
    }
    if (c->contrast_loss_weight != 0) {
        m->be->zero(m->d_vec1, sizeof(float) * B * D), m->be->zero(m->d_vec2, sizeof(float) * B * D);
        if (m->split.on) { /* the whole group's gradient, of which this model's rows go on */
            size_t nd = (size_t)m->split.n * D, off = (size_t)m->split.row0 * D;
            m->be->zero(m->split.da, sizeof(float) * nd), m->be->zero(m->split.dv, sizeof(float) * nd);
            m->be->contrastive_backward(m->split.da, m->split.dv, (float)c->contrast_loss_weight, m->split.ca,
                                        m->split.cv, m->split.n, D, c->bidirect_contrast, m->split.work);
            m->be->copy(m->d_vec1, m->split.da + off, sizeof(float) * B * D);
            m->be->copy(m->d_vec2, m->split.dv + off, sizeof(float) * B * D);
        } else {
            m->be->contrastive_backward(m->d_vec1, m->d_vec2, (float)c->contrast_loss_weight, m->ca_n,
                                        m->cv_n, B, D, c->bidirect_contrast, m->con_work);
        }
        contrast_side_backward(m, &m->s_ca, &m->ln_ca, g->norm_a_w, g->norm_a_b, p->norm_a_w, m->d_vec1,
                               m->ca_n, m->ca_norm, m->s_a.d);
        contrast_side_backward(m, &m->s_cv, &m->ln_cv, g->norm_v_w, g->norm_v_b, p->norm_v_w, m->d_vec2,
                               m->cv_n, m->cv_norm, m->s_v.d);
    }
    if (ua) {
        stream_backward(m, &m->s_a);
        m->be->zero(m->d_emb_a, sizeof(float) * B * m->La_full * D);
        m->be->gather_tokens_backward(m->d_emb_a, m->s_a.d, m->in.keep_a, B, m->La_full, m->La, D);
        embed_audio_backward(m, m->d_emb_a);
    }
    if (uv) {
        stream_backward(m, &m->s_v);
        m->be->zero(m->d_emb_v, sizeof(float) * B * m->Lv_full * D);
        m->be->gather_tokens_backward(m->d_emb_v, m->s_v.d, m->in.keep_v, B, m->Lv_full, m->Lv, D);
        embed_video_backward(m, m->d_emb_v);
    }
}

/* ---- fine-tuning and embeddings ----------------------------------------------------------------- */

/* a pooled branch: stream -> final LN -> mean over tokens into pool */
static void pooled_forward(cav_model *m, cav_stream *s, cav_ln_acts *l, const float *in, const float *w,
                           const float *b, float *pool) {
    stream_forward(m, s, in);
    final_ln_forward(m, l, s->out, w, b, (size_t)m->B * s->N, m->D);
    m->be->mean_tokens_forward(pool, l->out, m->B, s->N, m->D);
}
static void pooled_backward(cav_model *m, cav_stream *s, cav_ln_acts *l, float *gw, float *gb, const float *w,
                            const float *dpool) {
    m->be->zero(m->d_tok, sizeof(float) * m->B * s->N * m->D);
    m->be->mean_tokens_backward(m->d_tok, dpool, m->B, s->N, m->D);
    final_ln_backward(m, s, l, gw, gb, m->d_tok, w, (size_t)m->B * s->N);
    stream_backward(m, s);
}

/* audio_kept: the audio branch's output (s_a.out) of the previous forward stands for this one's audio */
static void forward_finetune(cav_model *m, int audio_kept) {
    const cav_config *c = &m->cfg;
    cav_params *p = &m->p;
    int B = m->B, D = m->D, K = c->label_dim;
    memset(&m->out, 0, sizeof m->out);
    if (m->La && !audio_kept) embed_audio(m), stream_forward(m, &m->s_a, m->emb_a);
    if (m->Lv) embed_video(m), stream_forward(m, &m->s_v, m->emb_v);
    switch (c->mode) {
    case CAV_FT_MULTIMODAL:
        m->be->concat_forward(m->x_cat, m->s_a.out, m->s_v.out, B, m->La, m->Lv, D);
        pooled_forward(m, &m->s_u, &m->ln_u, m->x_cat, p->norm_w, p->norm_b, m->pooled);
        break;
    case CAV_FT_AUDIOONLY:
        pooled_forward(m, &m->s_ca, &m->ln_ca, m->s_a.out, p->norm_a_w, p->norm_a_b, m->pooled);
        break;
    case CAV_FT_VIDEOONLY:
        pooled_forward(m, &m->s_cv, &m->ln_cv, m->s_v.out, p->norm_v_w, p->norm_v_b, m->pooled);
        break;
    case CAV_FT_MISSINGAUDIOONLY:
    case CAV_FT_MISSINGVIDEOONLY: {
        int a = c->mode == CAV_FT_MISSINGAUDIOONLY;
        const float *x = a ? m->s_a.out : m->s_v.out;
        pooled_forward(m, &m->s_u, &m->ln_u, x, p->norm_w, p->norm_b, m->pool_u);
        if (a)
            pooled_forward(m, &m->s_ca, &m->ln_ca, x, p->norm_a_w, p->norm_a_b, m->pool_s);
        else
            pooled_forward(m, &m->s_cv, &m->ln_cv, x, p->norm_v_w, p->norm_v_b, m->pool_s);
        m->be->average_forward(m->pooled, m->pool_u, m->pool_s, (size_t)B * D);
        break;
    }
    case CAV_FT_SINGLEMODAL:
    case CAV_FT_MMSM:
        pooled_forward(m, &m->s_ca, &m->ln_ca, m->s_a.out, p->norm_a_w, p->norm_a_b, m->pool_a);
        pooled_forward(m, &m->s_cv, &m->ln_cv, m->s_v.out, p->norm_v_w, p->norm_v_b, m->pool_v);
        if (c->mode == CAV_FT_SINGLEMODAL) {
            /* [B,D] and [B,D] side by side are [B,2,D] concatenated along tokens: [B,2D] */
            m->be->concat_forward(m->pooled, m->pool_a, m->pool_v, B, 1, 1, D);
            break;
        }
        m->be->concat_forward(m->x_cat, m->s_a.out, m->s_v.out, B, m->La, m->Lv, D);
        pooled_forward(m, &m->s_u, &m->ln_u, m->x_cat, p->norm_w, p->norm_b, m->pool_u);
        m->be->average_forward(m->pool_s, m->pool_a, m->pool_v, (size_t)B * D);
        m->be->add_forward(m->pooled, m->pool_u, m->pool_s, (size_t)B * D);
        break;
    }
    m->be->layernorm_forward(m->ln_head.out, m->ln_head.mean, m->ln_head.rstd, m->pooled, p->head_norm_w,
                             p->head_norm_b, B, m->Dh);
    lin_fwd(m, m->logits, m->ln_head.out, p->head_w, p->head_b, B, m->Dh, K);
    m->out.loss = c->loss_ce ? m->be->soft_ce_forward(m->logits, m->in.labels, B, K)
                             : m->be->bce_logits_forward(m->logits, m->in.labels, B, K);
}

static void backward_finetune(cav_model *m) {
    const cav_config *c = &m->cfg;
    cav_params *p = &m->p, *g = &m->g;
    int B = m->B, D = m->D, K = c->label_dim;
    m->be->zero(m->d_logits, sizeof(float) * B * K);
    if (c->loss_ce)
        m->be->soft_ce_backward(m->d_logits, m->dloss, m->logits, m->in.labels, B, K);
    else
        m->be->bce_logits_backward(m->d_logits, m->dloss, m->logits, m->in.labels, B, K);
    int Dh = m->Dh;
    m->be->zero(m->d_vec1, sizeof(float) * B * Dh), m->be->zero(m->d_vec2, sizeof(float) * B * Dh);
    lin_bwd(m, m->d_vec1, g->head_w, g->head_b, m->d_logits, m->ln_head.out, p->head_w, B, Dh, K);
    /* linear probing: nothing below the head learns, so its backward is not run (d pooled neither) */
    m->be->layernorm_backward(c->freeze_base ? NULL : m->d_vec2, g->head_norm_w, g->head_norm_b, m->d_vec1,
                              m->pooled, p->head_norm_w, m->ln_head.mean, m->ln_head.rstd, B, Dh);
    if (c->freeze_base) return;
    float *dp = m->d_vec2; /* d pooled [B,Dh] */
    if (m->La) m->be->zero(m->s_a.d, sizeof(float) * B * m->La * D);
    if (m->Lv) m->be->zero(m->s_v.d, sizeof(float) * B * m->Lv * D);
    switch (c->mode) {
    case CAV_FT_MULTIMODAL:
        pooled_backward(m, &m->s_u, &m->ln_u, g->norm_w, g->norm_b, p->norm_w, dp);
        m->be->concat_backward(m->s_a.d, m->s_v.d, m->s_u.d, B, m->La, m->Lv, D);
        break;
    case CAV_FT_AUDIOONLY:
        pooled_backward(m, &m->s_ca, &m->ln_ca, g->norm_a_w, g->norm_a_b, p->norm_a_w, dp);
        m->be->accumulate(m->s_a.d, m->s_ca.d, (size_t)B * m->La * D);
        break;
    case CAV_FT_VIDEOONLY:
        pooled_backward(m, &m->s_cv, &m->ln_cv, g->norm_v_w, g->norm_v_b, p->norm_v_w, dp);
        m->be->accumulate(m->s_v.d, m->s_cv.d, (size_t)B * m->Lv * D);
        break;
    case CAV_FT_MISSINGAUDIOONLY:
    case CAV_FT_MISSINGVIDEOONLY: {
        int a = c->mode == CAV_FT_MISSINGAUDIOONLY;
        m->be->average_backward(m->d_vec3, dp, (size_t)B * D);
        m->be->copy(m->d_vec4, m->d_vec3, sizeof(float) * B * D); /* contrast_side/pooled reuse d_vec3 */
        float *dres = a ? m->s_a.d : m->s_v.d;
        size_t n = (size_t)B * (a ? m->La : m->Lv) * D;
        pooled_backward(m, &m->s_u, &m->ln_u, g->norm_w, g->norm_b, p->norm_w, m->d_vec4);
        m->be->accumulate(dres, m->s_u.d, n);
        if (a)
            pooled_backward(m, &m->s_ca, &m->ln_ca, g->norm_a_w, g->norm_a_b, p->norm_a_w, m->d_vec4);
        else
            pooled_backward(m, &m->s_cv, &m->ln_cv, g->norm_v_w, g->norm_v_b, p->norm_v_w, m->d_vec4);
        m->be->accumulate(dres, a ? m->s_ca.d : m->s_cv.d, n);
        break;
    }
    case CAV_FT_SINGLEMODAL:
    case CAV_FT_MMSM:
        /* d_vec3, d_vec4: d pool_a, d pool_v [B,D] */
        if (c->mode == CAV_FT_SINGLEMODAL) {
            m->be->zero(m->d_vec3, sizeof(float) * B * D), m->be->zero(m->d_vec4, sizeof(float) * B * D);
            m->be->concat_backward(m->d_vec3, m->d_vec4, dp, B, 1, 1, D);
        } else {
            pooled_backward(m, &m->s_u, &m->ln_u, g->norm_w, g->norm_b, p->norm_w, dp);
            m->be->concat_backward(m->s_a.d, m->s_v.d, m->s_u.d, B, m->La, m->Lv, D);
            m->be->average_backward(m->d_vec3, dp, (size_t)B * D);
            m->be->copy(m->d_vec4, m->d_vec3, sizeof(float) * B * D);
        }
        pooled_backward(m, &m->s_ca, &m->ln_ca, g->norm_a_w, g->norm_a_b, p->norm_a_w, m->d_vec3);
        m->be->accumulate(m->s_a.d, m->s_ca.d, (size_t)B * m->La * D);
        pooled_backward(m, &m->s_cv, &m->ln_cv, g->norm_v_w, g->norm_v_b, p->norm_v_w, m->d_vec4);
        m->be->accumulate(m->s_v.d, m->s_cv.d, (size_t)B * m->Lv * D);
        break;
    }
    if (m->La) stream_backward(m, &m->s_a), embed_audio_backward(m, m->s_a.d);
    if (m->Lv) stream_backward(m, &m->s_v), embed_video_backward(m, m->s_v.d);
}

static void forward_feat(cav_model *m) {
    cav_params *p = &m->p;
    if (m->La) {
        embed_audio(m), stream_forward(m, &m->s_a, m->emb_a), stream_forward(m, &m->s_ca, m->s_a.out);
        final_ln_forward(m, &m->ln_ca, m->s_ca.out, p->norm_a_w, p->norm_a_b, (size_t)m->B * m->La, m->D);
        m->be->mean_tokens_forward(m->ca_mean, m->ln_ca.out, m->B, m->La, m->D);
        m->be->l2norm_forward(m->ca_n, m->ca_norm, m->ca_mean, m->B, m->D);
    }
    if (m->Lv) {
        embed_video(m), stream_forward(m, &m->s_v, m->emb_v), stream_forward(m, &m->s_cv, m->s_v.out);
        final_ln_forward(m, &m->ln_cv, m->s_cv.out, p->norm_v_w, p->norm_v_b, (size_t)m->B * m->Lv, m->D);
        m->be->mean_tokens_forward(m->cv_mean, m->ln_cv.out, m->B, m->Lv, m->D);
        m->be->l2norm_forward(m->cv_n, m->cv_norm, m->cv_mean, m->B, m->D);
    }
}

/* The bf16 copy of the master weights, when they changed since it was made. */
static void refresh16(cav_model *m) {
    if (!m->bf16 || !m->params16_stale) return;
    m->be->cast_bf16(m->params16, m->params, m->nparams);
    m->params16_stale = 0;
}

void cav_model_forward(cav_model *m) {
    refresh16(m);
    if (m->passes) memset(m->passes, 0, sizeof *m->passes * (size_t)m->ntable);
    if (m->cfg.task == CAV_TASK_PRETRAIN)
        forward_pretrain(m);
    else if (m->cfg.task == CAV_TASK_FINETUNE)
        forward_finetune(m, 0);
    else
        forward_feat(m);
}

void cav_model_forward_keep_audio(cav_model *m) {
    if (m->cfg.task == CAV_TASK_FINETUNE)
        refresh16(m), forward_finetune(m, 1);
    else
        cav_model_forward(m);
}

void cav_model_zero_grad(cav_model *m) {
    if (m->grads) m->be->zero(m->grads, sizeof(float) * m->nparams);
}

void cav_model_backward_accumulate(cav_model *m) {
    if (!m->grads) return;
    if (m->final) memset(m->final, 0, (size_t)m->ntable);
    if (m->cfg.task == CAV_TASK_PRETRAIN)
        backward_pretrain(m);
    else
        backward_finetune(m);
    report_rest(m);
}

void cav_model_backward(cav_model *m) {
    cav_model_zero_grad(m);
    cav_model_backward_accumulate(m);
}

/* Moments of the elements [m->shard_lo, m->shard_hi) of the flat buffer (all of it unless sharded). */
int cav_model_alloc_adam(cav_model *m) {
    if (m->adam_m) return 0;
    size_t n = m->shard_hi - m->shard_lo;
    m->adam_m = m->be->alloc(n * sizeof(float));
    m->adam_v = m->be->alloc(n * sizeof(float));
    if (!m->adam_m || !m->adam_v) {
        m->be->free(m->adam_m), m->be->free(m->adam_v);
        m->adam_m = m->adam_v = NULL;
        return -1;
    }
    return 0;
}

int cav_model_shard_adam(cav_model *m, size_t lo, size_t hi) {
    if (lo > hi || hi > m->nparams) return -1;
    m->be->free(m->adam_m), m->be->free(m->adam_v);
    m->adam_m = m->adam_v = NULL;
    m->shard_lo = lo, m->shard_hi = hi;
    return cav_model_alloc_adam(m);
}

/* A part of the parameter buffer that one Adam call updates, [a, b) at learning rate lr. */
typedef struct {
    size_t a, b;
    double lr;
} adam_span;
static int span_cmp(const void *x, const void *y) {
    const adam_span *p = x, *q = y;
    return p->a < q->a ? -1 : p->a > q->a;
}

void cav_model_adam_step(cav_model *m, double lr, double head_lr_scale, double beta1, double beta2,
                         double eps, double wd) {
    if (!m->grads) return;
    if (cav_model_alloc_adam(m)) {
        fprintf(stderr, "%s: model: out of memory for the Adam moments\n", cav_tool());
        abort();
    }
    m->adam_t++;
    m->params16_stale = 1; /* the next forward casts the updated master weights */
    size_t lo = m->shard_lo, hi = m->shard_hi;
    /* Each tensor's part inside the shard. Adam is elementwise, so the parts that are neighbours in the
     * buffer and share a learning rate go as one span: one call (one kernel launch on a GPU) for each run of
     * them rather than one a tensor (hundreds at the base config), with the same numbers. The table is not in
     * buffer order (a Linear's bias may sit before its weight), hence the sort. */
    adam_span *sp = malloc((size_t)(m->ntable + 1) * sizeof *sp);
    if (!sp) {
        fprintf(stderr, "%s: model: out of memory\n", cav_tool());
        abort();
    }
    int n = 0;
    for (int i = 0; i < m->ntable; i++) {
        cav_param *e = &m->table[i];
        if (!e->trainable || !e->used) continue;
        size_t a = e->offset > lo ? e->offset : lo, b = e->offset + e->numel < hi ? e->offset + e->numel : hi;
        if (b > a) sp[n++] = (adam_span){a, b, e->head ? lr * head_lr_scale : lr};
    }
    qsort(sp, (size_t)n, sizeof *sp, span_cmp);
    for (int i = 0, j; i < n; i = j) {
        size_t b = sp[i].b;
        for (j = i + 1; j < n && sp[j].a == b && sp[j].lr == sp[i].lr; j++) b = sp[j].b;
        size_t a = sp[i].a;
        m->be->adam_step(m->params + a, m->grads + a, m->adam_m + (a - lo), m->adam_v + (a - lo), b - a,
                         sp[i].lr, beta1, beta2, eps, wd, m->adam_t);
    }
    free(sp);
}

/* ---- model memory ------------------------------------------------------------------------------- */

/* The input's buffer and its element size, or NULL when the task does not read it. */
static void *input_buf(const cav_model *m, cav_input which, size_t *elsize) {
    *elsize = which == CAV_IN_KEEP_A || which == CAV_IN_KEEP_V ? sizeof(int64_t) : sizeof(float);
    if (!cav_model_input_size(m, which)) return NULL;
    switch (which) {
    case CAV_IN_AUDIO:
        return m->in.audio;
    case CAV_IN_VIDEO:
        return m->in.video;
    case CAV_IN_KEEP_A:
        return m->in.keep_a;
    case CAV_IN_KEEP_V:
        return m->in.keep_v;
    case CAV_IN_LABELS:
        return m->in.labels;
    }
    return NULL;
}

size_t cav_model_input_size(const cav_model *m, cav_input which) {
    int pre = m->cfg.task == CAV_TASK_PRETRAIN;
    switch (which) {
    case CAV_IN_AUDIO:
        return m->in.audio ? (size_t)m->T * m->F : 0;
    case CAV_IN_VIDEO:
        return m->in.video ? (size_t)3 * m->S * m->S : 0;
    case CAV_IN_KEEP_A:
        return pre ? (size_t)m->La : 0;
    case CAV_IN_KEEP_V:
        return pre ? (size_t)m->Lv : 0;
    case CAV_IN_LABELS:
        return m->in.labels ? (size_t)m->cfg.label_dim : 0;
    }
    return 0;
}

void cav_model_set_input(cav_model *m, cav_input which, const void *host, int rows) {
    size_t es;
    void *dst = input_buf(m, which, &es);
    if (!dst || rows <= 0) return;
    size_t bytes = es * cav_model_input_size(m, which) * (size_t)rows;
    char *stage = (char *)m->in_host + ((char *)dst - (char *)m->in_mem); /* dst's place in the staging */
    m->be->upload_wait(); /* the previous batch's copy may still read the staging */
    memcpy(stage, host, bytes);
    m->be->upload_async(dst, stage, bytes);
}

void cav_model_get_input(const cav_model *m, cav_input which, void *host, int rows) {
    size_t es;
    const void *src = input_buf(m, which, &es);
    if (src && rows > 0) m->be->download(host, src, es * cav_model_input_size(m, which) * (size_t)rows);
}

static float *buffer(const cav_model *m, cav_buffer buf) {
    switch (buf) {
    case CAV_BUF_PARAMS:
        return m->params;
    case CAV_BUF_GRADS:
        return m->grads;
    case CAV_BUF_ADAM_M:
        return m->adam_m;
    case CAV_BUF_ADAM_V:
        return m->adam_v;
    }
    return NULL;
}

/* The buffer to write, allocating the moments on first use; NULL: not held (gradients of FEAT). */
static float *buffer_w(cav_model *m, cav_buffer buf) {
    if ((buf == CAV_BUF_ADAM_M || buf == CAV_BUF_ADAM_V) && cav_model_alloc_adam(m)) {
        fprintf(stderr, "%s: model: out of memory for the Adam moments\n", cav_tool());
        abort();
    }
    return buffer(m, buf);
}

/* The elements [a, a + n) of a buffer, host <-> backend. The moments hold [shard_lo, shard_hi) only:
 * reading elsewhere gives zeros, writing elsewhere is ignored. */
static int is_moment(cav_buffer buf) {
    return buf == CAV_BUF_ADAM_M || buf == CAV_BUF_ADAM_V;
}

static void read_range(const cav_model *m, cav_buffer buf, size_t a, size_t n, float *host) {
    const float *b = buffer(m, buf);
    if (!b) {
        memset(host, 0, sizeof(float) * n);
        return;
    }
    if (!is_moment(buf)) {
        m->be->download(host, b + a, sizeof(float) * n);
        return;
    }
    size_t lo = a > m->shard_lo ? a : m->shard_lo, hi = a + n < m->shard_hi ? a + n : m->shard_hi;
    memset(host, 0, sizeof(float) * n);
    if (hi > lo) m->be->download(host + (lo - a), b + (lo - m->shard_lo), sizeof(float) * (hi - lo));
}

static void write_range(cav_model *m, cav_buffer buf, size_t a, size_t n, const float *host) {
    float *b = buffer_w(m, buf);
    if (!b) return;
    if (buf == CAV_BUF_PARAMS) m->params16_stale = 1;
    if (!is_moment(buf)) {
        m->be->upload(b + a, host, sizeof(float) * n);
        return;
    }
    size_t lo = a > m->shard_lo ? a : m->shard_lo, hi = a + n < m->shard_hi ? a + n : m->shard_hi;
    if (hi > lo) m->be->upload(b + (lo - m->shard_lo), host + (lo - a), sizeof(float) * (hi - lo));
}

void cav_model_read_param(const cav_model *m, cav_buffer buf, const cav_param *p, float *host) {
    read_range(m, buf, p->offset, p->numel, host);
}

void cav_model_write_param(cav_model *m, cav_buffer buf, const cav_param *p, const float *host) {
    write_range(m, buf, p->offset, p->numel, host);
}

void cav_model_read_buffer(const cav_model *m, cav_buffer buf, float *host) {
    read_range(m, buf, 0, m->nparams, host);
}

void cav_model_write_buffer(cav_model *m, cav_buffer buf, const float *host) {
    write_range(m, buf, 0, m->nparams, host);
}

float *cav_model_buffer_ptr(cav_model *m, cav_buffer buf) {
    if (buf == CAV_BUF_PARAMS) m->params16_stale = 1; /* a collective may write them */
    return is_moment(buf) ? NULL : buffer(m, buf);
}

int cav_model_grads_finite(const cav_model *m) {
    return !m->grads || m->be->all_finite(m->grads + m->shard_lo, m->shard_hi - m->shard_lo);
}

/* An output's memory and shape, or NULL when this task has none by that name. */
static const float *output(const cav_model *m, const char *name, int64_t shape[4], int *ndim) {
    int B = m->B;
    struct {
        const char *name;
        const float *p;
        int nd;
        int64_t s[3];
    } t[] = {
        {"loss", &m->out.loss, 1, {1}},
        {"loss_mae", &m->out.loss_mae, 1, {1}},
        {"loss_mae_a", &m->out.loss_mae_a, 1, {1}},
        {"loss_mae_v", &m->out.loss_mae_v, 1, {1}},
        {"loss_c", &m->out.loss_c, 1, {1}},
        {"c_acc", &m->out.c_acc, 1, {1}},
        {"pred_a", m->pred_a, 3, {B, m->La_full, 256}},
        {"pred_v", m->pred_v, 3, {B, m->Lv_full, 768}},
        {"mask_a", m->mask_a, 2, {B, m->La_full}},
        {"mask_v", m->mask_v, 2, {B, m->Lv_full}},
        {"logits", m->logits, 2, {B, m->cfg.label_dim}},
        {"feat_a", m->feat_a, 3, {B, m->La, m->D}},
        {"feat_v", m->feat_v, 3, {B, m->Lv, m->D}},
        {"emb_a", m->cfg.task == CAV_TASK_FEAT ? m->ca_n : NULL, 2, {B, m->D}},
        {"emb_v", m->cfg.task == CAV_TASK_FEAT ? m->cv_n : NULL, 2, {B, m->D}},
    };
    int pre = m->cfg.task == CAV_TASK_PRETRAIN, ft = m->cfg.task == CAV_TASK_FINETUNE;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (strcmp(t[i].name, name)) continue;
        if (i < 6 && !(pre || (ft && i == 0))) return NULL;
        if (!t[i].p) return NULL;
        *ndim = t[i].nd;
        for (int k = 0; k < t[i].nd; k++) shape[k] = t[i].s[k];
        return t[i].p;
    }
    return NULL;
}

int cav_model_output_shape(const cav_model *m, const char *name, int64_t shape[4], int *ndim) {
    int64_t s[4];
    int nd;
    if (!output(m, name, s, &nd)) return -1;
    int64_t n = 1;
    for (int k = 0; k < nd; k++) n *= s[k];
    if (shape) memcpy(shape, s, sizeof(int64_t) * nd);
    if (ndim) *ndim = nd;
    return (int)n;
}

int cav_model_read_output(const cav_model *m, const char *name, float *host) {
    int64_t s[4];
    int nd;
    const float *p = output(m, name, s, &nd);
    if (!p) return -1;
    size_t n = 1;
    for (int k = 0; k < nd; k++) n *= (size_t)s[k];
    /* the scalar losses are in the host struct, the tensors in the backend's memory */
    const char *o = (const char *)&m->out;
    if ((const char *)p >= o && (const char *)p < o + sizeof m->out)
        memcpy(host, p, sizeof(float) * n);
    else
        m->be->download(host, p, sizeof(float) * n);
    return 0;
}
