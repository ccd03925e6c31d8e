/* avdecode.h: one pass of FFmpeg over a media file that yields what the reference's two preprocessing
 * scripts produce (cav-numerics(7) 1.1, 1.2): the whole audio track at 16 kHz mono s16 (swresample at its
 * defaults, as `ffmpeg -i X -vn -ar 16000` does, then channel 1 as `sox remix 1`, or a channel average), and
 * the 10 frames OpenCV's CAP_PROP_POS_FRAMES seek + read return at indices int(i*total/10)-1, converted to
 * RGB as OpenCV converts them and resized/cropped to 224x224 as torchvision's Resize+CenterCrop do on PIL
 * images. Only the video packets that lead to those 10 frames are decoded: decoding stops after the last one,
 * non-reference frames nobody needs are discarded, and when the container's index shows a keyframe between
 * the last needed frame and the next, the packets before that keyframe are dropped unseen. */
#ifndef CAV_AVDECODE_H
#define CAV_AVDECODE_H

#include <stddef.h>
#include <stdint.h>

#include "record.h"

#define CAV_AV_NFRAMES 10
#define CAV_AV_SIZE 224
#define CAV_AV_RATE 16000

typedef struct {
    int audio, video;   /* which sides are wanted (and required to exist); default both */
    int downmix;        /* average the channels instead of keeping channel 1 */
    double max_seconds; /* stop audio after this many seconds of output (<= 0: whole track) */
    int skip_unneeded;  /* skip non-reference frames and whole GOPs no target frame depends on (default 1) */
    int decode_only;    /* benchmark floor: decode what is needed, but no conversion/resampling/resizing */
} cav_av_opts;

void cav_av_opts_default(cav_av_opts *o);

/* Why a file could not be extracted; the tool counts these for its summary. */
typedef enum {
    CAV_AV_OK = 0,
    CAV_AV_ERR_OPEN,      /* missing, unreadable, or not a media file FFmpeg recognises */
    CAV_AV_ERR_NO_AUDIO,  /* no audio stream (when audio is wanted) */
    CAV_AV_ERR_NO_VIDEO,  /* no video stream (when frames are wanted) */
    CAV_AV_ERR_CORRUPT,   /* demux or decode error, truncated data */
    CAV_AV_ERR_NO_FRAMES, /* a stream exists but yields no audio samples / not the needed frames */
    CAV_AV_ERR_INTERNAL,  /* out of memory or a library failure */
    CAV_AV_NREASONS
} cav_av_reason;

const char *cav_av_reason_name(cav_av_reason r); /* "open", "no-audio", ... */

typedef struct {
    int16_t *wave; /* [nsamples] 16 kHz mono (NULL without audio) */
    int64_t nsamples;
    uint8_t *frames;                 /* [10, 224, 224, 3] RGB (NULL without video) */
    int frame_index[CAV_AV_NFRAMES]; /* the reference's frame_idx per frame (decoded at max(idx-1, 0)) */
    double duration;                 /* container duration in seconds (0 if unknown) */
    int src_sample_rate, src_channels;
    double fps;            /* as OpenCV's CAP_PROP_FPS */
    int64_t frame_count;   /* as OpenCV's CAP_PROP_FRAME_COUNT */
    int width, height;     /* source frame size */
    int64_t video_packets; /* video packets read until the last needed frame */
    int64_t video_skipped; /* of those, dropped unseen: GOPs before the keyframe a needed frame starts from */
    char container[64], audio_codec[64], video_codec[64];
} cav_av_clip;

/* Decodes a file. Returns CAV_AV_OK, or a reason with err->msg saying what went wrong (err->code is
 * CAV_EXIT_INPUT, or CAV_EXIT_INTERNAL for CAV_AV_ERR_INTERNAL). The clip is empty on failure. */
cav_av_reason cav_av_decode_file(const char *path, const cav_av_opts *o, cav_av_clip *c, cav_err *err);
/* The same from memory (read through a custom AVIOContext; used by the fuzzer and for piped input). */
cav_av_reason cav_av_decode_mem(const uint8_t *data, size_t size, const cav_av_opts *o, cav_av_clip *c,
                                cav_err *err);
void cav_av_clip_free(cav_av_clip *c);

/* The reference's frame selection: total = min(count, int(fps*10)); idx[i] = int(i*total/10). */
void cav_av_frame_indices(double fps, int64_t count, int idx[CAV_AV_NFRAMES]);

#endif
