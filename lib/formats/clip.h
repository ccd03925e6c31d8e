/* clip.h: the clip record schema of cav-stream(5) and cav-shard(5), in one place: the standard tensor names,
 * record attributes and dataset attributes as constants (string literals, so messages can splice them), and
 * typed accessors that find a field, check its type and shape against the schema and hand out its data:
 * the waveform as int16 or float [channels, n], the filterbank as float [T, F], the raw frames or the k-th
 * JPEG frame's bytes, the labels. Every module and tool that reads or writes clip records names fields
 * through here; the codecs (jpeg.h, fbank.h) take bytes and samples and know nothing of records.
 *
 * Accessors return 1 (found and valid), 0 (absent) or -1 with err naming the field ("field fbank: ...",
 * code CAV_EXIT_INPUT); callers prefix the file and the record. Writers return 0, or -1 out of memory. */
#ifndef CAV_CLIP_H
#define CAV_CLIP_H

#include <stddef.h>
#include <stdint.h>

#include "record.h"

/* Tensor names (cav-stream(5) "Standard field names"). */
#define CAV_FIELD_ID "id"                   /* not a tensor: the shard's id column, the stream's record id */
#define CAV_FIELD_WAVE "wave"               /* i16 or f32 [n] or [channels, n] */
#define CAV_FIELD_FRAMES "frames"           /* u8 [F, H, W, 3] (or [H, W, 3]) RGB */
#define CAV_FIELD_FRAMES_JPEG "frames_jpeg" /* u8 [bytes]: F JPEG files concatenated */
#define CAV_FIELD_FRAMES_JPEG_OFFSETS "frames_jpeg_offsets" /* i64 [F + 1] */
#define CAV_FIELD_FBANK "fbank"                             /* f32 or f16 [T, F] */
#define CAV_FIELD_AUDIO_PATCHES "audio_patches"             /* f32 [tokens, dim] */
#define CAV_FIELD_VIDEO_PATCHES "video_patches"             /* f32 [F, tokens, dim] or [tokens, dim] */
#define CAV_FIELD_LABELS "labels"                           /* f32 [K] multi-hot */
#define CAV_FIELD_WEIGHT "weight"                           /* f32 scalar sample weight */
/* Embedding records (cav-embed(1) writes them, cav-recall(1) reads them). */
#define CAV_FIELD_EMB_A "emb_a" /* f32 [D] */
#define CAV_FIELD_EMB_V "emb_v"
#define CAV_FIELD_FEAT_A "feat_a" /* f32 [tokens, D] */
#define CAV_FIELD_FEAT_V "feat_v"

/* Record attributes. */
#define CAV_ATTR_SAMPLE_RATE "sample_rate" /* Hz of `wave` */
#define CAV_ATTR_SOURCE "source"
#define CAV_ATTR_DURATION "duration"
#define CAV_ATTR_CONTAINER "container"
#define CAV_ATTR_SRC_SAMPLE_RATE "src_sample_rate"
#define CAV_ATTR_SRC_CHANNELS "src_channels"
#define CAV_ATTR_AUDIO_CODEC "audio_codec"
#define CAV_ATTR_VIDEO_CODEC "video_codec"
#define CAV_ATTR_FPS "fps"
#define CAV_ATTR_FRAME_COUNT "frame_count"
#define CAV_ATTR_FRAME_INDEX "frame_index"
#define CAV_ATTR_WAV "wav"               /* the reference dataset JSON's audio path */
#define CAV_ATTR_VIDEO_PATH "video_path" /* and its frame directory */

/* Dataset attributes (stream header, shard root). */
#define CAV_DATTR_TOOL "tool"
#define CAV_DATTR_VERSION "version"
#define CAV_DATTR_ARGS "args"
#define CAV_DATTR_HISTORY "history"
#define CAV_DATTR_LABEL_COUNT "label_count"
#define CAV_DATTR_LABEL_MIDS "label_mids"
#define CAV_DATTR_LABEL_NAMES "label_names"
#define CAV_DATTR_SAMPLE_RATE CAV_ATTR_SAMPLE_RATE /* av-extract's output rate */
#define CAV_DATTR_FRAMES_FORMAT "frames_format"    /* "jpeg" or "raw" */
#define CAV_DATTR_JPEG_QUALITY "jpeg_quality"
#define CAV_DATTR_AUDIO_CHANNEL "audio_channel"
#define CAV_DATTR_FBANK "fbank"       /* fbank(1)'s settings */
#define CAV_DATTR_PATCHIFY "patchify" /* patchify(1)'s settings */
#define CAV_DATTR_MODEL "model"       /* cav-embed(1): the checkpoint, the embedding, its size */
#define CAV_DATTR_EMBEDDING "embedding"
#define CAV_DATTR_EMBED_DIM "embed_dim"

/* Keys of the reference's dataset JSON ({"data": [{"video_id", "wav", "video_path", "labels"}]}), which
 * shard-pack imports into records (the id, the attributes wav and video_path, labels and weight). */
#define CAV_REFJSON_ID "video_id"
#define CAV_REFJSON_WAV CAV_ATTR_WAV
#define CAV_REFJSON_VIDEO_PATH CAV_ATTR_VIDEO_PATH
#define CAV_REFJSON_LABELS "labels" /* "mid1,mid2", not the tensor */

/* A sample rate attribute: a finite number in (0, 1e7] Hz. 0 ok, -1 not a rate. */
int cav_clip_parse_rate(const char *s, double *rate);
/* The record's sample_rate, or dflt when it has none. 0 ok, -1 (err names the attribute). */
int cav_clip_rate(const cav_record *r, double dflt, double *rate, cav_err *err);

/* `wave`: exactly one of i16 and f32 is set; samples [channels, n] in C order. */
typedef struct {
    const int16_t *i16;
    const float *f32;
    int channels;
    int64_t n;
} cav_clip_wave;
int cav_clip_get_wave(const cav_record *r, cav_clip_wave *w, cav_err *err);
/* Adds `wave` (dtype CAV_I16 or CAV_F32) as [n] for one channel, else [channels, n]. */
int cav_clip_put_wave(cav_record *r, cav_dtype dtype, int channels, int64_t n, const void *data);

/* `fbank` [frames, bins]: exactly one of f32 and f16 (IEEE half bits) is set. bins > 0 also requires
 * that many bins; frames >= 1. */
typedef struct {
    const float *f32;
    const uint16_t *f16;
    int64_t frames;
    int bins;
} cav_clip_fbank;
int cav_clip_get_fbank(const cav_record *r, int bins, cav_clip_fbank *f, cav_err *err);
/* The first rows frames (rows <= f->frames) as float [rows, bins] into out (half widened). */
void cav_clip_fbank_rows(const cav_clip_fbank *f, int64_t rows, float *out);
/* Adds `fbank` [frames, bins] from float x, stored as f16 when half. */
int cav_clip_put_fbank(cav_record *r, int half, int64_t frames, int bins, const float *x);

/* Raw `frames`: u8 [n, h, w, 3], or [h, w, 3] (single = 1, n = 1). */
typedef struct {
    const uint8_t *rgb;
    int n, h, w, single;
} cav_clip_frames;
int cav_clip_get_frames(const cav_record *r, cav_clip_frames *f, cav_err *err);

/* Frame k of `frames_jpeg` as delimited by `frames_jpeg_offsets`: its bytes. Returns the frame count F;
 * 0 when the record has no frames_jpeg; -1 when the pair is malformed or k is not a frame. */
int cav_clip_jpeg_frame(const cav_record *r, int k, const uint8_t **data, size_t *len, cav_err *err);
/* Adds `frames_jpeg` and `frames_jpeg_offsets` from n JPEG files. */
int cav_clip_put_jpeg_frames(cav_record *r, int n, uint8_t *const *bytes, const size_t *lens);
/* Removes every form of the frames (raw and JPEG). */
void cav_clip_drop_frames(cav_record *r);

/* `labels` f32 [K]; k > 0 also requires K = k. Returns 1 with *labels and *count set, 0, or -1. */
int cav_clip_get_labels(const cav_record *r, int k, const float **labels, int *count, cav_err *err);
/* Adds `labels` [k] and the scalar `weight`. */
int cav_clip_put_labels(cav_record *r, const float *labels, int k, float weight);

#endif
