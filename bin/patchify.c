/* patchify: cuts each record's fbank and frames into the patch tokens the model sees, in the reference's
 * orders (audio_patches, video_patches), with optional norm_pix targets; --inverse turns tokens back into
 * an fbank and frames (reconstructions). See patchify(1). */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomicfile.h"
#include "augment.h"
#include "cli.h"
#include "clip.h"
#include "cpu.h"
#include "filter.h"
#include "io.h"
#include "jpeg.h"
#include "opts.h"
#include "patchify.h"

static const char usage_head[] =
    "Usage: patchify [OPTION]... [INPUT]...\n"
    "Add patch tokens to the records of INPUTs (record streams or shards; '-' or none = stdin), in the\n"
    "reference's orders: audio_patches f32 [512,256] from fbank [1024,128] (frequency-major 8x64 grid,\n"
    "element p*16+q) and video_patches f32 [N,196,768] from frames u8 [N,224,224,3] or frames_jpeg\n"
    "(element (p*16+q)*3+c); or, with --inverse, turn such tokens back into fbank and frames.\n"
    "\n";
static const char usage_tail[] = CAV_RECORD_USAGE_TAIL;

enum { NORM_IMAGENET, NORM_UNIT, NORM_NONE };

typedef struct {
    int a, b; /* TxF or HxW */
} size2;

typedef struct {
    const char *output;
    int level; /* 0 = the container's default */
    int patch, stride, norm_pix, image_norm, frame, audio_only, video_only, drop, inverse;
    size2 fb, im; /* --inverse: fbank [T,F], frames [H,W] */
    int audio, video;
} opts;

/* "AxB", each side in [1, 2^20] */
static int parse_size(const char *s, void *field, char *why, size_t whylen) {
    static const cav_opt side = {.type = CAV_OPTT_INT, .min = 1, .max = 1 << 20};
    size2 *z = field;
    const char *x = strchr(s, 'x');
    if (!x) return snprintf(why, whylen, "need AxB, e.g. 1024x128"), -1;
    char first[32];
    snprintf(first, sizeof first, "%.*s", (int)(x - s), s);
    return cav_opt_set(&side, &z->a, first, why, whylen) || cav_opt_set(&side, &z->b, x + 1, why, whylen) ? -1
                                                                                                          : 0;
}

static const cav_opt_choice image_norms[] = {
    {"imagenet", NORM_IMAGENET}, {"unit", NORM_UNIT}, {"none", NORM_NONE}, {0}};

#define TO(field) offsetof(opts, field)
static const cav_opt options[] = {
    {CAV_OUTPUT_OPTION(TO(output), "FILE", "output: '-' = record stream on stdout (default); *.h5 = shard")},
    {.name = "patch",
     .short_name = 'p',
     .type = CAV_OPTT_INT,
     .offset = TO(patch),
     .def = "16",
     .min = 1,
     .max = 4096,
     .arg = "P",
     .help = "patch size",
     .key = "patch"},
    {.name = "stride",
     .short_name = 's',
     .type = CAV_OPTT_INT,
     .offset = TO(stride),
     .min = 1,
     .max = 4096,
     .arg = "S",
     .help = "patch stride (default P; S < P overlaps, the inverse averages overlaps)",
     .key = "stride"},
    {.name = "norm-pix",
     .type = CAV_OPTT_FLAG,
     .offset = TO(norm_pix),
     .help = "per-token (t - mean) / sqrt(var + 1e-6), unbiased var (the reference's\nnorm_pix_loss targets)",
     .key = "norm_pix"},
    {.name = "image-norm",
     .type = CAV_OPTT_CHOICE,
     .offset = TO(image_norm),
     .def = "imagenet",
     .arg = "MODE",
     .help =
         "imagenet (default: x/255 then ImageNet mean/std, as the model sees frames),\nunit (x/255) or none "
         "(0..255)",
     .key = "image_norm",
     .flags = CAV_OPTF_NODEFAULT,
     .choices = image_norms},
    {.name = "frame",
     .type = CAV_OPTT_INT,
     .offset = TO(frame),
     .min = 0,
     .max = 1 << 20,
     .arg = "I",
     .help = "only frame I (0-based; the reference evaluates frame 5): video_patches [L,D]"},
    {.name = "audio-only",
     .type = CAV_OPTT_FLAG,
     .offset = TO(audio_only),
     .help = "only fbank -> audio_patches"},
    {.name = "video-only",
     .type = CAV_OPTT_FLAG,
     .offset = TO(video_only),
     .help = "only frames -> video_patches"},
    {.name = "drop-input",
     .type = CAV_OPTT_FLAG,
     .offset = TO(drop),
     .help = "remove the fields that were patchified"},
    {.name = "inverse",
     .type = CAV_OPTT_FLAG,
     .offset = TO(inverse),
     .help = "audio_patches -> fbank f32, video_patches -> frames u8 (un-normalised with\n--image-norm, "
             "rounded as "
             "torchvision's save_image)"},
    {.name = "fbank-size",
     .type = CAV_OPTT_CUSTOM,
     .offset = TO(fb),
     .def = "1024x128",
     .arg = "TxF",
     .help = "fbank shape for --inverse",
     .parse = parse_size},
    {.name = "image-size",
     .type = CAV_OPTT_CUSTOM,
     .offset = TO(im),
     .def = "224x224",
     .arg = "HxW",
     .help = "frame shape for --inverse",
     .parse = parse_size},
    {CAV_LEVEL_OPTION(TO(level), CAV_LEVEL_HELP
                      "; fbank values\ncompress little, so -l 1 or -l -3 saves most of the writing time")},
    {0},
};

static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f}, imagenet_std[3] = {0.229f, 0.224f, 0.225f};
static const float unit_mean[3] = {0, 0, 0}, unit_std[3] = {1, 1, 1};

static cav_writer *writer;

static noreturn void fail(const cav_err *err) {
    if (writer) cav_writer_abort(writer);
    cav_die(err->code ? err->code : CAV_EXIT_INTERNAL, "%s", err->msg);
}

#define BAD(...) cav_fail(err, CAV_EXIT_INPUT, __VA_ARGS__)
#define OOM() cav_fail(err, CAV_EXIT_INTERNAL, "out of memory")

/* The fbank as float32 (f32 as is, f16 widened); *tmp is freed by the caller. */
static const float *as_f32(const cav_clip_fbank *f, float **tmp) {
    *tmp = NULL;
    if (f->f32) return f->f32;
    float *v = malloc(sizeof(float) * (size_t)(f->frames * f->bins));
    if (!v) return NULL;
    cav_clip_fbank_rows(f, f->frames, v);
    return *tmp = v;
}

static int audio_forward(const opts *o, cav_record *rec, const char *where, cav_err *err) {
    cav_clip_fbank fb;
    cav_err e2;
    int has = cav_clip_get_fbank(rec, 0, &fb, &e2);
    if (has <= 0) return has ? BAD("%s: %s", where, e2.msg) : 0;
    cav_plane pl = cav_plane_fbank((int)fb.frames, fb.bins);
    int ntok, dim;
    if (!cav_patch_shape(&pl, o->patch, o->stride, &ntok, &dim))
        return BAD("%s: " CAV_FIELD_FBANK ": [%lld,%d] is smaller than one %d x %d patch", where,
                   (long long)fb.frames, fb.bins, o->patch, o->patch);
    float *tmp;
    const float *x = as_f32(&fb, &tmp);
    int64_t shape[2] = {ntok, dim};
    cav_tensor *out = x ? cav_record_add(rec, CAV_FIELD_AUDIO_PATCHES, CAV_F32, 2, shape) : NULL;
    if (!out) return free(tmp), OOM();
    cav_patchify_f32(&pl, x, o->patch, o->stride, out->data);
    free(tmp);
    if (o->norm_pix) cav_normpix(out->data, ntok, dim, 1e-6f);
    if (o->drop) cav_record_remove(rec, CAV_FIELD_FBANK);
    return 1;
}

/* The frames of a record as u8 RGB [n,h,w,3]: raw `frames`, or decoded `frames_jpeg`. */
static uint8_t *get_frames(cav_record *rec, const char *where, int *n, int *h, int *w, int *single,
                           cav_err *err) {
    cav_clip_frames fr;
    cav_err e2;
    int has = cav_clip_get_frames(rec, &fr, &e2);
    if (has < 0) return BAD("%s: %s", where, e2.msg), NULL;
    if (has) {
        *single = fr.single, *n = fr.n, *h = fr.h, *w = fr.w;
        size_t bytes = (size_t)fr.n * fr.h * fr.w * 3;
        uint8_t *c = malloc(bytes ? bytes : 1);
        if (!c) return OOM(), NULL;
        return memcpy(c, fr.rgb, bytes);
    }
    const uint8_t *src;
    size_t len;
    *n = cav_clip_jpeg_frame(rec, 0, &src, &len, &e2), *single = 0;
    if (*n == 0) return NULL;
    if (*n < 0) return BAD("%s: %s", where, e2.msg), NULL;
    uint8_t *all = NULL;
    for (int k = 0; k < *n; k++) {
        if (cav_clip_jpeg_frame(rec, k, &src, &len, &e2) < 0)
            return free(all), BAD("%s: %s", where, e2.msg), NULL;
        int fw, fh;
        if (cav_jpeg_size(src, len, &fw, &fh, &e2))
            return free(all), BAD("%s: " CAV_FIELD_FRAMES_JPEG ": frame %d: %s", where, k, e2.msg), NULL;
        if (k == 0) {
            *w = fw, *h = fh;
            all = malloc((size_t)*n * fw * fh * 3);
            if (!all) return OOM(), NULL;
        } else if (fw != *w || fh != *h) {
            return free(all),
                   BAD("%s: " CAV_FIELD_FRAMES_JPEG ": frame %d is %dx%d, frame 0 %dx%d", where, k, fw, fh,
                       *w, *h),
                   NULL;
        }
        size_t fsz = (size_t)fw * fh * 3;
        if (cav_jpeg_decode(src, len, all + k * fsz, fsz, &fw, &fh, &e2))
            return free(all), BAD("%s: " CAV_FIELD_FRAMES_JPEG ": frame %d: %s", where, k, e2.msg), NULL;
    }
    return all;
}

static int video_forward(const opts *o, cav_record *rec, const char *where, cav_err *err) {
    int n, h, w, single;
    err->code = 0;
    uint8_t *px = get_frames(rec, where, &n, &h, &w, &single, err);
    if (!px) return err->code ? -1 : 0;
    int first = 0, count = n;
    if (o->frame >= 0) {
        if (o->frame >= n)
            return free(px),
                   BAD("%s: " CAV_FIELD_FRAMES ": --frame=%d but the record has %d", where, o->frame, n);
        first = o->frame, count = 1, single = 1;
    }
    cav_plane hwc = cav_plane_hwc(h, w, 3), chw = cav_plane_chw(3, h, w);
    int ntok, dim;
    if (!cav_patch_shape(&hwc, o->patch, o->stride, &ntok, &dim))
        return free(px), BAD("%s: " CAV_FIELD_FRAMES ": %dx%d is smaller than one %d x %d patch", where, h, w,
                             o->patch, o->patch);
    int64_t shape[3] = {count, ntok, dim};
    cav_tensor *out =
        cav_record_add(rec, CAV_FIELD_VIDEO_PATCHES, CAV_F32, single ? 2 : 3, single ? shape + 1 : shape);
    float *img = malloc(sizeof(float) * (size_t)h * w * 3);
    if (!out || !img) return free(px), free(img), OOM();
    for (int k = 0; k < count; k++) {
        const uint8_t *f = px + (size_t)(first + k) * h * w * 3;
        float *tok = (float *)out->data + (size_t)k * ntok * dim;
        if (o->image_norm == NORM_NONE) {
            cav_patchify_u8(&hwc, f, o->patch, o->stride, tok);
        } else {
            int in = o->image_norm == NORM_IMAGENET;
            cav_image_normalize(f, h, w, in ? imagenet_mean : unit_mean, in ? imagenet_std : unit_std, img);
            cav_patchify_f32(&chw, img, o->patch, o->stride, tok);
        }
        if (o->norm_pix) cav_normpix(tok, ntok, dim, 1e-6f);
    }
    free(px);
    free(img);
    if (o->drop) cav_clip_drop_frames(rec);
    return 1;
}

static int audio_inverse(const opts *o, cav_record *rec, const char *where, cav_err *err) {
    cav_tensor *t = cav_record_find(rec, CAV_FIELD_AUDIO_PATCHES);
    if (!t) return 0;
    cav_plane pl = cav_plane_fbank(o->fb.a, o->fb.b);
    int ntok, dim;
    if (!cav_patch_shape(&pl, o->patch, o->stride, &ntok, &dim))
        return BAD("%s: --fbank-size too small", where);
    if (t->dtype != CAV_F32 || t->ndim != 2 || t->shape[0] != ntok || t->shape[1] != dim)
        return BAD("%s: " CAV_FIELD_AUDIO_PATCHES
                   ": need f32 [%d,%d] for a %dx%d fbank with patch %d stride %d",
                   where, ntok, dim, o->fb.a, o->fb.b, o->patch, o->stride);
    int64_t shape[2] = {o->fb.a, o->fb.b};
    cav_tensor *out = cav_record_add(rec, CAV_FIELD_FBANK, CAV_F32, 2, shape);
    if (!out) return OOM();
    t = cav_record_find(rec, CAV_FIELD_AUDIO_PATCHES);
    if (cav_unpatchify_f32(&pl, t->data, o->patch, o->stride, out->data) < 0) return OOM();
    if (o->drop) cav_record_remove(rec, CAV_FIELD_AUDIO_PATCHES);
    return 1;
}

static int video_inverse(const opts *o, cav_record *rec, const char *where, cav_err *err) {
    cav_tensor *t = cav_record_find(rec, CAV_FIELD_VIDEO_PATCHES);
    if (!t) return 0;
    cav_plane hwc = cav_plane_hwc(o->im.a, o->im.b, 3);
    int ntok, dim;
    if (!cav_patch_shape(&hwc, o->patch, o->stride, &ntok, &dim))
        return BAD("%s: --image-size too small", where);
    if (t->dtype != CAV_F32 || t->ndim < 2 || t->ndim > 3 || t->shape[t->ndim - 2] != ntok ||
        t->shape[t->ndim - 1] != dim)
        return BAD("%s: " CAV_FIELD_VIDEO_PATCHES
                   ": need f32 [N,%d,%d] or [%d,%d] for %dx%d frames with patch %d stride %d",
                   where, ntok, dim, ntok, dim, o->im.a, o->im.b, o->patch, o->stride);
    int n = t->ndim == 3 ? (int)t->shape[0] : 1;
    int64_t shape[4] = {n, o->im.a, o->im.b, 3};
    size_t npx = (size_t)o->im.a * o->im.b * 3;
    float *img = malloc(sizeof(float) * npx);
    uint8_t *u8 = malloc((size_t)n * npx);
    if (!img || !u8) return free(img), free(u8), OOM();
    const float *mean = o->image_norm == NORM_IMAGENET ? imagenet_mean : unit_mean;
    const float *std = o->image_norm == NORM_IMAGENET ? imagenet_std : unit_std;
    for (int k = 0; k < n; k++) {
        if (cav_unpatchify_f32(&hwc, (const float *)t->data + (size_t)k * ntok * dim, o->patch, o->stride,
                               img) < 0)
            return free(img), free(u8), OOM();
        for (size_t i = 0; i < npx; i++) {
            int c = (int)(i % 3);
            /* back to [0,1] (or 0..255 with none), then save_image's uint8(clamp(x*255+0.5, 0, 255)) */
            float v =
                o->image_norm == NORM_NONE ? img[i] + 0.5f : (img[i] * std[c] + mean[c]) * 255.0f + 0.5f;
            u8[k * npx + i] = (uint8_t)(v <= 0 || v != v ? 0 : v >= 255 ? 255 : v);
        }
    }
    cav_tensor *out = cav_record_put(rec, CAV_FIELD_FRAMES, CAV_U8, t->ndim == 3 ? 4 : 3,
                                     t->ndim == 3 ? shape : shape + 1, u8);
    free(img);
    free(u8);
    if (!out) return OOM();
    if (o->drop) cav_record_remove(rec, CAV_FIELD_VIDEO_PATCHES);
    return 1;
}

/* The record filter (cav_filter): the output opened with the settings as a dataset attribute. */
typedef struct {
    const opts *o;
    int argc;
    char **argv;
} filter_ctx;

static cav_writer *filter_open(void *ctx, const cav_attrs *first, cav_err *err) {
    filter_ctx *c = ctx;
    const opts *o = c->o;
    cav_attrs a;
    cav_attrs_init(&a);
    char s[256];
    const cav_optgroup g = {options, (void *)o};
    size_t n = (size_t)snprintf(s, sizeof s, "%s ", o->inverse ? "inverse" : "forward");
    cav_opts_echo(&g, 1, s + n, sizeof s - n);
    if (cav_attrs_copy(&a, first) || cav_attrs_provenance(&a, c->argc, c->argv) ||
        cav_attrs_set(&a, CAV_DATTR_PATCHIFY, s))
        cav_die(CAV_EXIT_INTERNAL, "out of memory");
    cav_writer *w = cav_writer_open_level(o->output, cav_format_for_path(o->output), &a, o->level, err);
    cav_attrs_clear(&a);
    return w;
}

static int filter_record(void *ctx, cav_record *rec, const char *source, int64_t index, cav_err *err) {
    const opts *o = ((filter_ctx *)ctx)->o;
    char where[600];
    snprintf(where, sizeof where, "%s: record %lld (id '%s')", source, (long long)index,
             rec->id ? rec->id : "");
    int ra = 0, rv = 0;
    if (o->inverse) {
        if ((o->audio && (ra = audio_inverse(o, rec, where, err)) < 0) ||
            (o->video && (rv = video_inverse(o, rec, where, err)) < 0))
            return -1;
    } else {
        if ((o->audio && (ra = audio_forward(o, rec, where, err)) < 0) ||
            (o->video && (rv = video_forward(o, rec, where, err)) < 0))
            return -1;
    }
    if (!ra && !rv)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: nothing to %s: no %s", where,
                        o->inverse ? "reassemble" : "patchify",
                        o->inverse ? "audio_patches or video_patches" : "fbank, frames or frames_jpeg");
    return 0;
}

int main(int argc, char **argv) {
    cav_set_tool("patchify");
    opts o = {.frame = -1};
    cav_opts_defaults(options, &o);
    const cav_optgroup g = {options, &o};
    int first = cav_opts_parse(argc, argv, &g, 1, usage_head, usage_tail);
    if (!o.stride) o.stride = o.patch;
    o.audio = !o.video_only, o.video = !o.audio_only;
    if (!o.audio && !o.video) cav_usage_error("--audio-only and --video-only exclude each other");
    if (o.inverse && (o.norm_pix || o.frame >= 0))
        cav_usage_error("--inverse cannot undo --norm-pix or select --frame");
    cav_err err = {0};
    filter_ctx c = {&o, argc, argv};
    const cav_filter f = {&c, filter_open, filter_record};
    if (cav_filter_run(&f, argc - first, argv + first, &writer, &err)) fail(&err);
    if (cav_writer_close(writer, &err)) {
        writer = NULL;
        fail(&err);
    }
    return 0;
}
