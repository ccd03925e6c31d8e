/* cav-embed: retrieval embeddings of clips (cav-numerics(7) 4): records holding fbank (or wave) and frames,
 * from shards or a record stream, through the evaluation transforms of the loader (frame 5, no noise, roll or
 * SpecAugment), a CAV-MAE encoder's forward_feat, mean pooling over all tokens and L2 normalisation. The
 * model side is lib/model/embed.c. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "blas.h"
#include "cli.h"
#include "clip.h"
#include "embed.h"
#include "io.h"
#include "loader.h"
#include "opts.h"
#include "picture.h"
#include "reconstruct.h"
#include "rng.h"
#include "shard.h"

static const char usage_head[] =
    "Usage: cav-embed --model CKPT [OPTION]... [INPUT]... [-o OUT]\n"
    "Audio and visual embeddings of clips for retrieval: each INPUT (shard or record stream, '-' for stdin,\n"
    "the default) holds records with fbank (or a 16 kHz `wave`) and frames; the middle frame (5) and the\n"
    "normalised fbank go through the encoder's forward_feat without masking, and each record is written "
    "with\n"
    "its id, emb_a f32 [D] and emb_v f32 [D]: the mean over all audio (visual) tokens, L2-normalised.\n"
    "\n";
static const char usage_tail[] =
    "      --help, --version\n"
    "\n"
    "Threads: OMP_NUM_THREADS. A bad record is reported (file, record, field) and skipped.\n"
    "Exit status: 0 ok, 1 usage, 2 bad input (bad records were skipped, or a bad checkpoint), 3 internal\n"
    "or resource failure.\n";

typedef struct {
    const char *model, *arch, *out, *device, *recon_dir, *mask_ratio;
    int type, batch, tokens, frame, clips;
    uint64_t seed;
    cav_opt_list set; /* KEY=VALUE */
} settings;

/* a ratio in [0, 0.99], kept as written: it goes to the model as a knob's value */
static int parse_ratio(const char *s, void *field, char *why, size_t whylen) {
    static const cav_opt r = {.type = CAV_OPTT_DOUBLE, .min = 0, .max = 0.99};
    double v;
    if (cav_opt_set(&r, &v, s, why, whylen)) return -1;
    *(const char **)field = s;
    return 0;
}

static const cav_opt_choice model_types[] = {
    {"pretrain", CAV_EMBED_PRETRAIN}, {"finetune", CAV_EMBED_FINETUNE}, {0}};
static const cav_opt_choice archs[] = {{"base", 0}, {"tiny", 0}, {0}};

#define TO(field) offsetof(settings, field)
static const cav_opt options[] = {
    {.name = "model",
     .short_name = 'm',
     .type = CAV_OPTT_STRING,
     .offset = TO(model),
     .arg = "CKPT",
     .help = "checkpoint: .safetensors (cav-pretrain, cav-ckpt) or a reference .pth"},
    {.name = "model-type",
     .type = CAV_OPTT_CHOICE,
     .offset = TO(type),
     .arg = "TYPE",
     .help = "pretrain (CAVMAE) or finetune (CAVMAEFT); default: from the checkpoint",
     .choices = model_types},
    {.name = "arch",
     .type = CAV_OPTT_STRING,
     .offset = TO(arch),
     .arg = "NAME",
     .help = "base (default) or tiny, for a checkpoint without a config (.pth)",
     .choices = archs},
    {.name = "set",
     .type = CAV_OPTT_LIST,
     .offset = TO(set),
     .arg = "KEY=VALUE",
     .help = "a model knob by the reference's name (applied last)"},
    {.name = "out",
     .short_name = 'o',
     .type = CAV_OPTT_STRING,
     .offset = TO(out),
     .def = "-",
     .arg = "OUT",
     .help = "output: a shard (*.h5) or a record stream ('-', the default: stdout)",
     .flags = CAV_OPTF_NODEFAULT},
    {.name = "batch-size",
     .short_name = 'b',
     .type = CAV_OPTT_INT,
     .offset = TO(batch),
     .def = "4",
     .min = 1,
     .max = 1 << 16,
     .arg = "N",
     .help = "clips per forward pass"},
    {.name = "device",
     .type = CAV_OPTT_STRING,
     .offset = TO(device),
     .arg = "NAME",
     .help = "compute backend: cpu (default), cuda, cuda:N (when built with it)"},
    {.name = "tokens",
     .type = CAV_OPTT_FLAG,
     .offset = TO(tokens),
     .help = "also write feat_a [La, D] and feat_v [Lv, D], the unpooled token outputs"},
    {.name = "frame",
     .type = CAV_OPTT_INT,
     .offset = TO(frame),
     .min = 0,
     .max = 1000,
     .arg = "N",
     .help = "use frame N instead of the middle frame 5"},
    {.name = "reconstruct",
     .type = CAV_OPTT_STRING,
     .offset = TO(recon_dir),
     .arg = "DIR",
     .help = "instead of embeddings: for the first --clips clips, PNG pictures of the input,\n"
             "the masked input and the decoder's reconstruction of the spectrogram\n"
             "(DIR/N-audio.png) and the image (DIR/N-video.png), and DIR/reconstruction.cavs\n"
             "(id, mask_a, mask_v, pred_a, pred_v); needs a pretraining checkpoint"},
    {.name = "mask-ratio",
     .type = CAV_OPTT_CUSTOM,
     .offset = TO(mask_ratio),
     .arg = "R",
     .help = "masked fraction of both modalities (default: the checkpoint's)",
     .parse = parse_ratio},
    {.name = "seed",
     .type = CAV_OPTT_U64,
     .offset = TO(seed),
     .def = "0",
     .min = 0,
     .max = (double)INT64_MAX,
     .arg = "N",
     .help = "masks' seed"},
    {.name = "clips",
     .type = CAV_OPTT_INT,
     .offset = TO(clips),
     .def = "4",
     .min = 1,
     .max = 256,
     .arg = "N",
     .help = "clips to reconstruct"},
    {0},
};

typedef struct {
    cav_embedder e;
    cav_writer *w;
    int tokens, n, B;
    char **ids;           /* [B] ids of the rows in the batch */
    float *ea, *ev;       /* [B, D] */
    float *audio, *video; /* the batch's inputs [B,T,F] [B,3,S,S], uploaded to the model per batch */
    float *fa, *fv;       /* --tokens: the model's feat_a [B,La,D], feat_v [B,Lv,D] */
    int64_t written;
} state;

/* The batch's n clips to the model; rows past n hold the previous batch's inputs: zero them so the unused
 * rows compute on finite values. */
static void upload_batch(state *s) {
    cav_model *m = s->e.m;
    size_t A = cav_model_input_size(m, CAV_IN_AUDIO), V = cav_model_input_size(m, CAV_IN_VIDEO);
    memset(s->audio + (size_t)s->n * A, 0, (size_t)(s->B - s->n) * A * sizeof(float));
    memset(s->video + (size_t)s->n * V, 0, (size_t)(s->B - s->n) * V * sizeof(float));
    cav_model_set_input(m, CAV_IN_AUDIO, s->audio, s->B);
    cav_model_set_input(m, CAV_IN_VIDEO, s->video, s->B);
}

static void flush(state *s) {
    if (!s->n) return;
    cav_model *m = s->e.m;
    upload_batch(s);
    if (cav_embedder_run(&s->e, s->n, s->ea, s->ev)) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    if (s->tokens) cav_model_read_output(m, "feat_a", s->fa), cav_model_read_output(m, "feat_v", s->fv);
    int D = m->D;
    cav_record rec;
    cav_record_init(&rec);
    cav_err err = {0, ""};
    for (int i = 0; i < s->n; i++) {
        cav_record_clear(&rec);
        int64_t sd[1] = {D}, sa[2] = {m->La, D}, sv[2] = {m->Lv, D};
        if (cav_record_set_id(&rec, s->ids[i]) ||
            !cav_record_put(&rec, CAV_FIELD_EMB_A, CAV_F32, 1, sd, s->ea + (size_t)i * D) ||
            !cav_record_put(&rec, CAV_FIELD_EMB_V, CAV_F32, 1, sd, s->ev + (size_t)i * D) ||
            (s->tokens &&
             (!cav_record_put(&rec, CAV_FIELD_FEAT_A, CAV_F32, 2, sa, s->fa + (size_t)i * m->La * D) ||
              !cav_record_put(&rec, CAV_FIELD_FEAT_V, CAV_F32, 2, sv, s->fv + (size_t)i * m->Lv * D))))
            cav_die(CAV_EXIT_INTERNAL, "out of memory");
        if (cav_writer_put(s->w, &rec, &err)) {
            cav_writer_abort(s->w);
            cav_die(err.code ? err.code : CAV_EXIT_INTERNAL, "%s", err.msg);
        }
        free(s->ids[i]);
        s->ids[i] = NULL;
        s->written++;
    }
    cav_record_clear(&rec);
    s->n = 0;
}

/* The model's part of a reconstruction: masks drawn from seed (the project's generator, as cav-pretrain draws
 * them), then the pretraining forward. */
static void masked_forward(cav_model *m, uint64_t seed) {
    cav_rng r;
    cav_rng_seed(&r, seed, CAV_RNG_MASK, 0, 0);
    uint64_t state = cav_rng_u64(&r);
    cav_model_random_masks(m, &state);
    cav_model_forward(m);
}

/* pictures side by side (video: horizontal) or stacked (audio), 4 white pixels apart */
static uint8_t *triptych(uint8_t *p[3], int w, int h, int horizontal, int *W, int *H) {
    *W = horizontal ? 3 * w + 8 : w, *H = horizontal ? h : 3 * h + 8;
    uint8_t *o = malloc((size_t)*W * *H * 3);
    if (!o) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    memset(o, 255, (size_t)*W * *H * 3);
    for (int k = 0; k < 3; k++)
        for (int y = 0; y < h; y++)
            memcpy(o + ((size_t)(horizontal ? y : y + k * (h + 4)) * *W + (horizontal ? k * (w + 4) : 0)) * 3,
                   p[k] + (size_t)y * w * 3, (size_t)w * 3);
    return o;
}

/* image [3, S, S] in the model's units back to RGB (mean and std of the loader); NaN (masked) is grey */
static uint8_t *to_rgb(const float *x, int S, const cav_loader_opts *lo) {
    uint8_t *o = malloc((size_t)S * S * 3);
    if (!o) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < (size_t)S * S; i++) {
            float v = x[(size_t)c * S * S + i];
            float u = isnan(v) ? 128 : (v * lo->img_std[c] + lo->img_mean[c]) * 255;
            o[i * 3 + c] = (uint8_t)(u < 0 ? 0 : u > 255 ? 255 : lrintf(u));
        }
    return o;
}

static void reconstruct_batch(state *s, const char *dir, uint64_t seed, const cav_loader_opts *lo) {
    cav_model *m = s->e.m;
    size_t A = (size_t)m->T * m->F;
    upload_batch(s);
    masked_forward(m, seed);
    cav_err err = {0, ""};
    cav_record rec;
    cav_record_init(&rec);
    for (int i = 0; i < s->n; i++) {
        cav_reconstruction r;
        if (cav_reconstruct(m, i, &r, &err)) cav_die(err.code, "%s: %s", dir, err.msg);
        uint8_t *pa[3], *pv[3];
        float lo_a = INFINITY, hi_a = -INFINITY; /* the input's range, for all three spectrograms */
        for (size_t k = 0; k < A; k++) lo_a = fminf(lo_a, r.audio[0][k]), hi_a = fmaxf(hi_a, r.audio[0][k]);
        for (int k = 0; k < 3; k++) {
            if (!(pa[k] = cav_picture_spectrogram(r.audio[k], r.T, r.F, lo_a, hi_a)))
                cav_die(CAV_EXIT_INTERNAL, "out of memory");
            pv[k] = to_rgb(r.video[k], r.S, lo);
        }
        int W, H;
        char path[4200];
        uint8_t *pic = triptych(pa, r.T, r.F, 0, &W, &H);
        snprintf(path, sizeof path, "%s/%d-audio.png", dir, i);
        if (cav_png_write(path, pic, W, H, &err)) cav_die(err.code, "%s", err.msg);
        free(pic);
        pic = triptych(pv, r.S, r.S, 1, &W, &H);
        snprintf(path, sizeof path, "%s/%d-video.png", dir, i);
        if (cav_png_write(path, pic, W, H, &err)) cav_die(err.code, "%s", err.msg);
        free(pic);
        double ma = 0, mv = 0;
        for (int l = 0; l < r.La; l++) ma += r.mask_a[l];
        for (int l = 0; l < r.Lv; l++) mv += r.mask_v[l];
        cav_msg(
            "%s: %s/%d-audio.png, %s/%d-video.png (%.0f of %d audio and %.0f of %d visual patches masked)",
            s->ids[i], dir, i, dir, i, ma, r.La, mv, r.Lv);
        cav_record_clear(&rec);
        int64_t sa[1] = {r.La}, sv[1] = {r.Lv}, spa[2] = {r.La, 256}, spv[2] = {r.Lv, 768};
        if (cav_record_set_id(&rec, s->ids[i]) || !cav_record_put(&rec, "mask_a", CAV_F32, 1, sa, r.mask_a) ||
            !cav_record_put(&rec, "mask_v", CAV_F32, 1, sv, r.mask_v) ||
            !cav_record_put(&rec, "pred_a", CAV_F32, 2, spa, r.pred_a) ||
            !cav_record_put(&rec, "pred_v", CAV_F32, 2, spv, r.pred_v))
            cav_die(CAV_EXIT_INTERNAL, "out of memory");
        if (cav_writer_put(s->w, &rec, &err)) {
            cav_writer_abort(s->w);
            cav_die(err.code ? err.code : CAV_EXIT_INTERNAL, "%s", err.msg);
        }
        for (int k = 0; k < 3; k++) free(pa[k]), free(pv[k]);
        cav_reconstruction_free(&r);
        free(s->ids[i]);
        s->ids[i] = NULL;
        s->written++;
    }
    cav_record_clear(&rec);
    s->n = 0;
}

int main(int argc, char **argv) {
    cav_set_tool("cav-embed");
    cav_blas_fit_cpu("cav-embed", argv);
    settings o = {.type = CAV_EMBED_AUTO, .frame = -1};
    cav_opts_defaults(options, &o);
    const cav_optgroup g = {options, &o};
    int first = cav_opts_parse(argc, argv, &g, 1, usage_head, usage_tail);
    cav_embed_opts eo = {.path = o.model,
                         .type = (cav_embed_type)o.type,
                         .arch = o.arch,
                         .batch = o.batch,
                         .device = o.device};
    const char **keys = calloc((size_t)o.set.n + 3, sizeof *keys),
               **vals = calloc((size_t)o.set.n + 3, sizeof *vals);
    if (!keys || !vals) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    for (int i = 0; i < o.set.n; i++) {
        char *eq = strchr(o.set.v[i], '=');
        if (!eq) cav_usage_error("--set wants KEY=VALUE, not '%s'", o.set.v[i]);
        *eq = 0; /* the argument is argv's own: KEY ends there */
        keys[eo.nset] = o.set.v[i], vals[eo.nset++] = eq + 1;
    }
    if (!o.model) cav_usage_error("--model CKPT is required");
    const char *out = o.out, *recon_dir = o.recon_dir;
    int tokens = o.tokens, frame = o.frame;
    if (recon_dir) {
        eo.decoder = 1, eo.batch = o.clips;
        if (o.mask_ratio)
            keys[eo.nset] = "mask_ratio_a", vals[eo.nset++] = o.mask_ratio, keys[eo.nset] = "mask_ratio_v",
            vals[eo.nset++] = o.mask_ratio;
    }
    eo.set_keys = keys, eo.set_vals = vals;
    char *stdin_only[] = {"-"};
    char **inputs = first < argc ? argv + first : stdin_only;
    int ninputs = first < argc ? argc - first : 1, nstdin = 0;
    for (int i = 0; i < ninputs; i++) nstdin += !strcmp(inputs[i], "-");
    if (nstdin > 1) cav_usage_error("stdin ('-') can be read only once");

    state s = {0};
    cav_err err = {0, ""};
    if (cav_embedder_open(&s.e, &eo, &err)) {
        if (err.code == CAV_EXIT_USAGE) cav_usage_error("%s", err.msg);
        cav_die(err.code ? err.code : CAV_EXIT_INTERNAL, "%s", err.msg);
    }
    cav_model *m = s.e.m;
    cav_msg("%s: %s model (config from %s), %d tensors loaded; embed_dim %d, %d audio and %d visual tokens",
            eo.path, s.e.type == CAV_EMBED_FINETUNE ? "fine-tuned" : "pretraining",
            s.e.config_from_file ? "the file" : "the command line", s.e.nparams_loaded, m->D, m->La, m->Lv);
    cav_model_describe(m, stderr);
    s.tokens = tokens, s.B = eo.batch;
    s.ids = calloc((size_t)s.B, sizeof *s.ids);
    s.ea = malloc((size_t)s.B * m->D * sizeof(float)), s.ev = malloc((size_t)s.B * m->D * sizeof(float));
    size_t A = cav_model_input_size(m, CAV_IN_AUDIO), V = cav_model_input_size(m, CAV_IN_VIDEO);
    s.audio = malloc((size_t)s.B * A * sizeof(float)), s.video = malloc((size_t)s.B * V * sizeof(float));
    if (tokens) {
        s.fa = malloc((size_t)s.B * m->La * m->D * sizeof(float));
        s.fv = malloc((size_t)s.B * m->Lv * m->D * sizeof(float));
    }
    if (!s.ids || !s.ea || !s.ev || !s.audio || !s.video || (tokens && (!s.fa || !s.fv)))
        cav_die(CAV_EXIT_INTERNAL, "out of memory");

    cav_loader_opts lo;
    cav_loader_opts_default(&lo, 0);
    lo.target_length = m->cfg.audio_length, lo.mel_bins = m->cfg.mel_bins, lo.img_size = m->cfg.img_size;
    lo.frame = frame; /* -1: the evaluation frame, 5 */
    lo.label_dim = 0;

    /* Open every input first, so a missing file fails before any work and the progress line has a total. */
    cav_reader **rds = calloc((size_t)ninputs, sizeof *rds);
    if (!rds) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    int64_t total = 0;
    for (int i = 0; i < ninputs; i++) {
        if (!(rds[i] = cav_reader_open(inputs[i], &err)))
            cav_die(err.code ? err.code : CAV_EXIT_INPUT, "%s", err.msg);
        struct cav_shard *sh = cav_reader_shard(rds[i]);
        total = total >= 0 && sh ? total + cav_shard_rows(sh) : -1;
    }
    cav_attrs attrs;
    cav_attrs_init(&attrs);
    char dim[32];
    snprintf(dim, sizeof dim, "%d", m->D);
    if (cav_attrs_provenance(&attrs, argc, argv) || cav_attrs_set(&attrs, CAV_DATTR_MODEL, eo.path) ||
        cav_attrs_set(&attrs, CAV_DATTR_EMBEDDING, "forward_feat, mean over all tokens, L2-normalised") ||
        cav_attrs_set(&attrs, CAV_DATTR_EMBED_DIM, dim))
        cav_die(CAV_EXIT_INTERNAL, "out of memory");
    char recon_out[4200];
    if (recon_dir) {
        if (mkdir(recon_dir, 0777) && errno != EEXIST)
            cav_die(CAV_EXIT_INTERNAL, "%s: cannot create: %s", recon_dir, strerror(errno));
        snprintf(recon_out, sizeof recon_out, "%s/reconstruction.cavs", recon_dir);
        out = recon_out;
    }
    if (!(s.w = cav_writer_open(out, cav_format_for_path(out), &attrs, &err)))
        cav_die(err.code ? err.code : CAV_EXIT_INTERNAL, "%s", err.msg);
    cav_attrs_clear(&attrs);

    int64_t bad = 0, seen = 0;
    cav_record rec;
    cav_record_init(&rec);
    cav_progress *prog = cav_progress_start("clips", total > 0 ? total : 0);
    for (int i = 0; i < ninputs; i++) {
        cav_reader *rd = rds[i];
        int shard = cav_reader_format(rd) == CAV_FMT_SHARD, r;
        while ((r = cav_reader_next(rd, &rec, &err)) != 0) {
            int64_t idx = cav_reader_index(rd);
            seen++;
            cav_progress_add(prog, 1);
            if (r < 0) {
                if (err.code == CAV_EXIT_INTERNAL) cav_die(err.code, "%s", err.msg);
                cav_msg("%s: record %lld: %s", inputs[i], (long long)idx, err.msg);
                bad++;
                if (!shard) break; /* a stream cannot be resynchronised after a bad frame */
                continue;
            }
            if (cav_loader_sample(&lo, &rec, 1, seen - 1, s.audio + (size_t)s.n * A,
                                  s.video + (size_t)s.n * V, NULL, &err)) {
                if (err.code == CAV_EXIT_INTERNAL)
                    cav_die(err.code, "%s: record %lld: %s", inputs[i], (long long)idx, err.msg);
                cav_msg("%s: record %lld: %s; skipped", inputs[i], (long long)idx, err.msg);
                bad++;
                continue;
            }
            if (!(s.ids[s.n++] = strdup(rec.id ? rec.id : ""))) cav_die(CAV_EXIT_INTERNAL, "out of memory");
            if (s.n == s.B) {
                if (recon_dir) break; /* the clips to draw are in */
                flush(&s);
            }
        }
        cav_reader_close(rd);
        if (recon_dir && s.n == s.B) {
            for (int j = i + 1; j < ninputs; j++) cav_reader_close(rds[j]);
            break;
        }
    }
    if (recon_dir)
        reconstruct_batch(&s, recon_dir, o.seed, &lo);
    else
        flush(&s);
    cav_progress_end(prog);
    cav_record_clear(&rec);
    if (cav_writer_close(s.w, &err)) cav_die(err.code ? err.code : CAV_EXIT_INTERNAL, "%s", err.msg);
    cav_msg("%lld clips %s", (long long)s.written, recon_dir ? "reconstructed" : "embedded");
    cav_embedder_close(&s.e);
    free(s.ids), free(s.ea), free(s.ev), free(s.audio), free(s.video), free(s.fa), free(s.fv), free(rds),
        free(keys), free(vals);
    cav_opt_list_free(&o.set);
    if (bad) {
        cav_msg("%lld bad record%s skipped", (long long)bad, bad > 1 ? "s" : "");
        return CAV_EXIT_INPUT;
    }
    return CAV_EXIT_OK;
}
