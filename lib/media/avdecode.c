/* avdecode.c: the single FFmpeg pass behind av-extract (see avdecode.h). One demux loop feeds both decoders.
 * Audio goes through one SwrContext configured as ffmpeg's auto-inserted aresample filter would be
 * (swr defaults, s16 interleaved out, input layout kept), so the 16 kHz samples are the ones
 * `ffmpeg -i X -vn -ar 16000` writes. Video frames are numbered as OpenCV numbers them after a seek
 * (from the frame's best-effort timestamp: int(fps*(pts-start)*tb + 0.5), relative to the first frame), the
 * ten wanted ones go through swscale to RGB24 exactly as OpenCV's BGR24 conversion (same context flags, no
 * scaling) and then through the PIL-exact resize/crop. Packets whose frames nothing needs are discarded
 * before decoding when the codec allows it (AVDISCARD_NONREF), whole GOPs are dropped when the index
 * has a keyframe between the last wanted frame and the next one, and decoding stops once the last wanted
 * frame is out. GOP dropping is checked: if the first frame after the keyframe comes out later than the
 * wanted one (an open GOP, an index that lies), the file is decoded again without it. */
#include "avdecode.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
#include <libswresample/swresample.h>
#include <libswscale/swscale.h>

#include "cli.h"
#include "imresize.h"

void cav_av_opts_default(cav_av_opts *o) {
    memset(o, 0, sizeof *o);
    o->audio = o->video = 1;
    o->skip_unneeded = 1;
}

const char *cav_av_reason_name(cav_av_reason r) {
    static const char *names[CAV_AV_NREASONS] = {"ok",      "open",      "no-audio", "no-video",
                                                 "corrupt", "no-frames", "internal"};
    return (unsigned)r < CAV_AV_NREASONS ? names[r] : "?";
}

/* (int64_t)v where that is defined; hostile headers give NaN or enormous rates and durations. */
static int64_t to_i64(double v) {
    if (!(v == v)) return 0;
    if (v > 2e18) return INT64_C(2000000000000000000); /* differences of two still fit */
    if (v < -2e18) return -INT64_C(2000000000000000000);
    return (int64_t)v;
}

void cav_av_frame_indices(double fps, int64_t count, int idx[CAV_AV_NFRAMES]) {
    int64_t lim = to_i64(fps * 10); /* Python int() truncates */
    int64_t total = count < lim ? count : lim;
    if (total < 0) total = 0;
    if (total > INT32_MAX) total = INT32_MAX; /* keeps i*total and the indices in range */
    for (int i = 0; i < CAV_AV_NFRAMES; i++) idx[i] = (int)(i * total / CAV_AV_NFRAMES);
}

typedef struct {
    const cav_av_opts *o;
    cav_av_clip *c;
    cav_err *err;
    AVFormatContext *fmt;
    AVPacket *pkt;
    AVFrame *frame;
    /* audio */
    int ai;
    AVCodecContext *adec;
    SwrContext *swr;
    int swr_rate, swr_fmt;
    AVChannelLayout swr_layout;
    uint8_t *sbuf; /* s16 interleaved, all channels */
    int sbuf_samples;
    int64_t acap, alimit;
    int audio_done;
    /* video */
    int vi;
    AVCodecContext *vdec;
    struct SwsContext *sws;
    uint8_t *rgb;
    size_t rgb_cap;
    int target[CAV_AV_NFRAMES], next; /* 0-based frame numbers wanted, ascending; next unfilled */
    int have_first;
    int64_t first_num, last_idx, st_start;
    double tb;
    int video_done;
    int gop_skip;    /* allowed on this attempt */
    int64_t skip_ts; /* not AV_NOPTS_VALUE: dropping video packets until the keyframe at this index time */
    int resumed;     /* the first frame after a dropped stretch is still to come */
    int64_t *keys;   /* Matroska: keyframe times of the video stream from the Cues (ascending), nkeys */
    int nkeys;
    const char *path; /* the input again, to read a Matroska index on the side */
    const uint8_t *mem;
    size_t memsize;
} ctx;

/* Internal: a GOP skip went wrong; decode_* run the file again without skipping GOPs. */
#define AV_RETRY ((cav_av_reason)(CAV_AV_NREASONS + 1))

static cav_av_reason fail(ctx *x, cav_av_reason r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static cav_av_reason fail(ctx *x, cav_av_reason r, const char *fmt, ...) {
    if (x->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(x->err->msg, sizeof x->err->msg, fmt, ap);
        va_end(ap);
        x->err->code = r == CAV_AV_ERR_INTERNAL ? CAV_EXIT_INTERNAL : CAV_EXIT_INPUT;
    }
    return r;
}

static const char *averr(int e, char *buf) {
    av_strerror(e, buf, AV_ERROR_MAX_STRING_SIZE);
    return buf;
}
#define AVERR(e) averr((e), (char[AV_ERROR_MAX_STRING_SIZE]){0})

/* ---------------------------------------------------------------- audio */

static cav_av_reason audio_append(ctx *x, int n) {
    cav_av_clip *c = x->c;
    int ch = c->src_channels;
    if (x->alimit > 0 && c->nsamples + n >= x->alimit) {
        n = (int)(x->alimit - c->nsamples);
        x->audio_done = 1;
    }
    if (n <= 0) return CAV_AV_OK;
    if (c->nsamples + n > x->acap) {
        int64_t cap = x->acap ? x->acap : 16000 * 12;
        while (cap < c->nsamples + n) cap *= 2;
        int16_t *w = realloc(c->wave, (size_t)cap * sizeof *w);
        if (!w) return fail(x, CAV_AV_ERR_INTERNAL, "out of memory for %lld audio samples", (long long)cap);
        c->wave = w;
        x->acap = cap;
    }
    const int16_t *s = (const int16_t *)x->sbuf;
    int16_t *d = c->wave + c->nsamples;
    if (!x->o->downmix || ch == 1) {
        for (int i = 0; i < n; i++) d[i] = s[(size_t)i * ch]; /* sox remix 1: channel 1 only */
    } else {
        for (int i = 0; i < n; i++) {
            int64_t sum = 0;
            for (int k = 0; k < ch; k++) sum += s[(size_t)i * ch + k];
            d[i] = (int16_t)floor((double)sum / ch + 0.5);
        }
    }
    c->nsamples += n;
    return CAV_AV_OK;
}

static cav_av_reason audio_convert(ctx *x, const AVFrame *f) {
    int ret;
    if (x->o->decode_only) { /* floor measurement: decoding alone */
        x->c->nsamples += f ? f->nb_samples : 0;
        return CAV_AV_OK;
    }
    if (f && !x->swr) {
        if ((ret = av_channel_layout_copy(&x->swr_layout, &f->ch_layout)) < 0)
            return fail(x, CAV_AV_ERR_INTERNAL, "channel layout: %s", AVERR(ret));
        ret = swr_alloc_set_opts2(&x->swr, &x->swr_layout, AV_SAMPLE_FMT_S16, CAV_AV_RATE, &x->swr_layout,
                                  f->format, f->sample_rate, 0, NULL);
        if (ret < 0 || (ret = swr_init(x->swr)) < 0)
            return fail(x, CAV_AV_ERR_INTERNAL, "cannot set up the resampler (%d Hz, %d channels): %s",
                        f->sample_rate, f->ch_layout.nb_channels, AVERR(ret));
        x->swr_rate = f->sample_rate;
        x->swr_fmt = f->format;
        x->c->src_channels = f->ch_layout.nb_channels;
        x->c->src_sample_rate = f->sample_rate;
    }
    if (!x->swr) return CAV_AV_OK;
    if (f && (f->sample_rate != x->swr_rate || f->format != x->swr_fmt ||
              av_channel_layout_compare(&f->ch_layout, &x->swr_layout)))
        return fail(x, CAV_AV_ERR_CORRUPT, "audio format changes mid-stream (at sample %lld)",
                    (long long)x->c->nsamples);
    int in = f ? f->nb_samples : 0;
    for (;;) {
        int out_max = swr_get_out_samples(x->swr, in);
        if (out_max < 0) return fail(x, CAV_AV_ERR_INTERNAL, "resampler: %s", AVERR(out_max));
        if (out_max == 0 && !f) break;
        if (out_max + 256 > x->sbuf_samples) {
            int ns = out_max + 4096;
            uint8_t *b = realloc(x->sbuf, (size_t)ns * x->c->src_channels * sizeof(int16_t));
            if (!b) return fail(x, CAV_AV_ERR_INTERNAL, "out of memory");
            x->sbuf = b;
            x->sbuf_samples = ns;
        }
        int n =
            swr_convert(x->swr, &x->sbuf, x->sbuf_samples, f ? (const uint8_t **)f->extended_data : NULL, in);
        if (n < 0) return fail(x, CAV_AV_ERR_INTERNAL, "resampler: %s", AVERR(n));
        cav_av_reason r = audio_append(x, n);
        if (r) return r;
        if (f || n == 0 || x->audio_done) break; /* flushing loops until the resampler is empty */
        in = 0;
    }
    return CAV_AV_OK;
}

/* Sends one packet (NULL: flush) to the audio decoder and converts what comes out. */
static cav_av_reason audio_packet(ctx *x, const AVPacket *p) {
    int ret = avcodec_send_packet(x->adec, p);
    if (ret < 0 && ret != AVERROR_EOF)
        return fail(x, CAV_AV_ERR_CORRUPT, "audio decode error after %.3f s: %s",
                    (double)x->c->nsamples / CAV_AV_RATE, AVERR(ret));
    while (!x->audio_done) {
        ret = avcodec_receive_frame(x->adec, x->frame);
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) break;
        if (ret < 0)
            return fail(x, CAV_AV_ERR_CORRUPT, "audio decode error after %.3f s: %s",
                        (double)x->c->nsamples / CAV_AV_RATE, AVERR(ret));
        cav_av_reason r = audio_convert(x, x->frame);
        av_frame_unref(x->frame);
        if (r) return r;
    }
    return CAV_AV_OK;
}

/* ---------------------------------------------------------------- video */

/* OpenCV's dts_to_frame_number: int64(fps * (ts - start_time) * time_base + 0.5). */
static int64_t frame_number(const ctx *x, int64_t ts) {
    return to_i64(x->c->fps * ((double)ts - (double)x->st_start) * x->tb + 0.5);
}

static int target_wanted(const ctx *x, int64_t idx) {
    for (int k = x->next; k < CAV_AV_NFRAMES; k++)
        if (x->target[k] == idx) return 1;
    return 0;
}

static cav_av_reason video_take(ctx *x, const AVFrame *f, int k) {
    cav_av_clip *c = x->c;
    if (x->o->decode_only) return CAV_AV_OK;
    uint8_t *dst = c->frames + (size_t)k * CAV_AV_SIZE * CAV_AV_SIZE * 3;
    if (k > 0 && x->target[k] == x->target[k - 1]) { /* the same frame again (short clips) */
        memcpy(dst, dst - (size_t)CAV_AV_SIZE * CAV_AV_SIZE * 3, (size_t)CAV_AV_SIZE * CAV_AV_SIZE * 3);
        return CAV_AV_OK;
    }
    int w = f->width, h = f->height;
    /* OpenCV: sws_getCachedContext(src size/format -> same size BGR24, SWS_BICUBIC); RGB24 here. */
    x->sws =
        sws_getCachedContext(x->sws, w, h, f->format, w, h, AV_PIX_FMT_RGB24, SWS_BICUBIC, NULL, NULL, NULL);
    if (!x->sws)
        return fail(x, CAV_AV_ERR_CORRUPT, "cannot convert %dx%d %s frames to RGB", w, h,
                    av_get_pix_fmt_name(f->format) ? av_get_pix_fmt_name(f->format) : "?");
    int stride = (w * 3 + 63) & ~63;
    size_t need = (size_t)stride * h + 64;
    if (need > x->rgb_cap) {
        free(x->rgb);
        x->rgb = malloc(need);
        x->rgb_cap = x->rgb ? need : 0;
        if (!x->rgb) return fail(x, CAV_AV_ERR_INTERNAL, "out of memory for a %dx%d frame", w, h);
    }
    uint8_t *planes[4] = {x->rgb, NULL, NULL, NULL};
    int strides[4] = {stride, 0, 0, 0};
    if (sws_scale(x->sws, (const uint8_t *const *)f->data, f->linesize, 0, h, planes, strides) != h)
        return fail(x, CAV_AV_ERR_CORRUPT, "frame conversion to RGB failed");
    if (cav_resize_center_crop(x->rgb, w, h, stride, CAV_AV_SIZE, dst))
        return fail(x, CAV_AV_ERR_INTERNAL, "cannot resize a %dx%d frame", w, h);
    return CAV_AV_OK;
}

static cav_av_reason video_frame(ctx *x, const AVFrame *f) {
    int64_t ts = f->best_effort_timestamp;
    if (ts == AV_NOPTS_VALUE) ts = f->pts != AV_NOPTS_VALUE ? f->pts : f->pkt_dts;
    int64_t idx;
    if (ts == AV_NOPTS_VALUE) {
        idx = x->have_first ? x->last_idx + 1 : 0;
    } else {
        int64_t num = frame_number(x, ts);
        if (!x->have_first) x->first_num = num;
        idx = num - x->first_num;
    }
    x->have_first = 1;
    x->last_idx = idx;
    if (x->resumed) { /* the keyframe we jumped to must not be past the frame we jumped for */
        x->resumed = 0;
        if (x->next < CAV_AV_NFRAMES && idx > x->target[x->next]) return AV_RETRY;
    }
    if (!x->c->width) x->c->width = f->width, x->c->height = f->height;
    /* A wanted number with no frame of its own (timestamp gaps) takes the next frame, as counting on
     * after a seek would. */
    while (x->next < CAV_AV_NFRAMES && x->target[x->next] <= idx) {
        cav_av_reason r = video_take(x, f, x->next);
        if (r) return r;
        x->next++;
    }
    if (x->next == CAV_AV_NFRAMES) x->video_done = 1;
    return CAV_AV_OK;
}

/* The later of a packet's timestamps: mp4 indexes decode timestamps, Matroska presentation ones. */
static int64_t pkt_ts(const AVPacket *p) {
    if (p->pts == AV_NOPTS_VALUE) return p->dts;
    if (p->dts == AV_NOPTS_VALUE) return p->pts;
    return p->pts > p->dts ? p->pts : p->dts;
}

/* The index timestamp of the keyframe the next wanted frame decodes from, when the index has one after
 * packet p (in a closed GOP every earlier packet has earlier timestamps of both kinds); AV_NOPTS_VALUE
 * otherwise. The search looks a few frames before the wanted one (more than the decoder's reordering
 * delay), since an index of decode timestamps runs ahead of presentation. */
static int64_t keyframe_ahead(ctx *x, const AVPacket *p) {
    AVStream *st = x->fmt->streams[x->vi];
    int64_t cur = pkt_ts(p);
    if (cur == AV_NOPTS_VALUE || x->next >= CAV_AV_NFRAMES || x->c->fps <= 0 || x->tb <= 0)
        return AV_NOPTS_VALUE;
    int margin = st->codecpar->video_delay + 2;
    double sec = (double)(x->target[x->next] + x->first_num - margin) / x->c->fps;
    if (sec <= 0) return AV_NOPTS_VALUE;
    int64_t ts = to_i64((double)x->st_start + floor(sec / x->tb));
    if (x->keys) { /* the last keyframe at or before ts */
        int lo = 0, hi = x->nkeys - 1, e = -1;
        while (lo <= hi) {
            int mid = lo + (hi - lo) / 2;
            if (x->keys[mid] <= ts)
                e = mid, lo = mid + 1;
            else
                hi = mid - 1;
        }
        return e >= 0 && x->keys[e] > cur ? x->keys[e] : AV_NOPTS_VALUE;
    }
    int e = av_index_search_timestamp(st, ts, AVSEEK_FLAG_BACKWARD);
    const AVIndexEntry *ie = e >= 0 ? avformat_index_get_entry(st, e) : NULL;
    if (!ie || !(ie->flags & AVINDEX_KEYFRAME) || ie->timestamp <= cur) return AV_NOPTS_VALUE;
    return ie->timestamp;
}

static cav_av_reason video_packet(ctx *x, const AVPacket *p) {
    if (p) {
        x->c->video_packets++;
        if (x->skip_ts != AV_NOPTS_VALUE) { /* dropping up to the keyframe */
            int64_t t = pkt_ts(p);
            if (!(p->flags & AV_PKT_FLAG_KEY) || t == AV_NOPTS_VALUE || t < x->skip_ts) {
                x->c->video_skipped++;
                return CAV_AV_OK;
            }
            x->skip_ts = AV_NOPTS_VALUE;
            x->resumed = 1;
        } else if (x->gop_skip && x->have_first) {
            /* Frames already sent and not yet out are all before the next wanted one's keyframe (it lies
             * after this packet), so none of them is wanted: the decoder can be reset. */
            int64_t ts = keyframe_ahead(x, p);
            if (ts != AV_NOPTS_VALUE) {
                avcodec_flush_buffers(x->vdec);
                x->skip_ts = ts;
                x->c->video_skipped++;
                return CAV_AV_OK;
            }
        }
        /* Frames nothing depends on: if this packet's own frame is not wanted, let the decoder drop it
         * when it is not a reference (the decision needs the first frame's number, so not before it). */
        if (x->o->skip_unneeded && x->have_first && p->pts != AV_NOPTS_VALUE) {
            int64_t idx = frame_number(x, p->pts) - x->first_num;
            x->vdec->skip_frame = target_wanted(x, idx) ? AVDISCARD_DEFAULT : AVDISCARD_NONREF;
        }
    } else {
        x->vdec->skip_frame = AVDISCARD_DEFAULT;
    }
    int ret = avcodec_send_packet(x->vdec, p);
    if (ret < 0 && ret != AVERROR_EOF) {
        if (x->c->video_skipped) return AV_RETRY; /* perhaps our doing: try again without dropping */
        return fail(x, CAV_AV_ERR_CORRUPT, "video decode error near frame %lld: %s",
                    (long long)x->last_idx + 1, AVERR(ret));
    }
    while (!x->video_done) {
        ret = avcodec_receive_frame(x->vdec, x->frame);
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) break;
        if (ret < 0 && x->c->video_skipped) return AV_RETRY;
        if (ret < 0)
            return fail(x, CAV_AV_ERR_CORRUPT, "video decode error near frame %lld: %s",
                        (long long)x->last_idx + 1, AVERR(ret));
        cav_av_reason r = video_frame(x, x->frame);
        av_frame_unref(x->frame);
        if (r) return r;
    }
    return CAV_AV_OK;
}

/* ---------------------------------------------------------------- setup and the demux loop */

static cav_av_reason open_decoder(ctx *x, int si, AVCodecContext **dec, const char *what) {
    AVStream *st = x->fmt->streams[si];
    const AVCodec *codec = avcodec_find_decoder(st->codecpar->codec_id);
    if (!codec)
        return fail(x, CAV_AV_ERR_CORRUPT, "no decoder for the %s codec %s", what,
                    avcodec_get_name(st->codecpar->codec_id));
    *dec = avcodec_alloc_context3(codec);
    if (!*dec) return fail(x, CAV_AV_ERR_INTERNAL, "out of memory");
    int ret = avcodec_parameters_to_context(*dec, st->codecpar);
    if (ret < 0) return fail(x, CAV_AV_ERR_INTERNAL, "%s decoder parameters: %s", what, AVERR(ret));
    (*dec)->thread_count = 1; /* one core per file: parallelism is across files */
    (*dec)->pkt_timebase = st->time_base;
    if ((ret = avcodec_open2(*dec, codec, NULL)) < 0)
        return fail(x, CAV_AV_ERR_CORRUPT, "cannot open the %s decoder (%s): %s", what, codec->name,
                    AVERR(ret));
    return CAV_AV_OK;
}

/* OpenCV's CAP_PROP_FPS and CAP_PROP_FRAME_COUNT for the stream. */
static void opencv_fps_count(ctx *x, AVStream *st) {
    double fps = st->avg_frame_rate.den ? av_q2d(st->avg_frame_rate) : 0;
    if (!(fps >= 1e-6) && st->r_frame_rate.den) fps = av_q2d(st->r_frame_rate);
    if (!(fps >= 1e-6) && st->time_base.num && st->time_base.den) fps = 1.0 / av_q2d(st->time_base);
    if (!(fps >= 1e-6) || !isfinite(fps)) fps = 0;
    x->c->fps = fps;
    int64_t n = st->nb_frames;
    if (n == 0) {
        double sec = (double)x->fmt->duration / AV_TIME_BASE;
        if (x->fmt->duration == AV_NOPTS_VALUE || sec < 1e-6)
            sec = st->duration == AV_NOPTS_VALUE ? 0 : (double)st->duration * av_q2d(st->time_base);
        n = to_i64(floor(sec * fps + 0.5));
    }
    x->c->frame_count = n;
}

typedef struct {
    const uint8_t *data;
    size_t size, pos;
} membuf;
static int mem_read(void *opaque, uint8_t *buf, int n);
static int64_t mem_seek(void *opaque, int64_t off, int whence);

/* Matroska reads its index (Cues) only when asked to seek, and a seek in the context being decoded loses
 * the first audio packets; so the index is read through a second context on the same input, and the video
 * stream's keyframe times are kept. Without them GOPs are simply not dropped. */
static void matroska_keys(ctx *x) {
    AVFormatContext *f = NULL;
    AVIOContext *pb = NULL;
    membuf m = {x->mem, x->memsize, 0};
    if (x->mem) {
        uint8_t *iobuf = av_malloc(1 << 16);
        pb = iobuf ? avio_alloc_context(iobuf, 1 << 16, 0, &m, mem_read, NULL, mem_seek) : NULL;
        if (!pb) {
            av_free(iobuf);
            return;
        }
        if (!(f = avformat_alloc_context())) goto out;
        f->pb = pb;
        f->flags |= AVFMT_FLAG_CUSTOM_IO;
    }
    if (avformat_open_input(&f, x->mem ? NULL : x->path, x->fmt->iformat, NULL) < 0) goto out;
    if ((unsigned)x->vi >= f->nb_streams || f->streams[x->vi]->codecpar->codec_type != AVMEDIA_TYPE_VIDEO)
        goto out;
    av_seek_frame(f, x->vi, 0, AVSEEK_FLAG_BACKWARD); /* loads the Cues; where it lands does not matter */
    AVStream *st = f->streams[x->vi];
    int n = avformat_index_get_entries_count(st);
    if (n < 2 || !(x->keys = malloc(sizeof *x->keys * (size_t)n))) goto out;
    for (int i = 0; i < n; i++) {
        const AVIndexEntry *ie = avformat_index_get_entry(st, i);
        if (ie && (ie->flags & AVINDEX_KEYFRAME) && (x->nkeys == 0 || ie->timestamp > x->keys[x->nkeys - 1]))
            x->keys[x->nkeys++] = ie->timestamp;
    }
out:
    avformat_close_input(&f);
    if (pb) {
        av_freep(&pb->buffer);
        avio_context_free(&pb);
    }
}

static cav_av_reason run(ctx *x) {
    const cav_av_opts *o = x->o;
    cav_av_clip *c = x->c;
    int ret = avformat_find_stream_info(x->fmt, NULL);
    if (ret < 0) return fail(x, CAV_AV_ERR_CORRUPT, "cannot read stream information: %s", AVERR(ret));
    snprintf(c->container, sizeof c->container, "%s", x->fmt->iformat->name);
    c->duration = x->fmt->duration == AV_NOPTS_VALUE ? 0 : (double)x->fmt->duration / AV_TIME_BASE;
    x->ai = x->vi = -1;
    if (o->audio) {
        x->ai = av_find_best_stream(x->fmt, AVMEDIA_TYPE_AUDIO, -1, -1, NULL, 0);
        if (x->ai < 0) return fail(x, CAV_AV_ERR_NO_AUDIO, "no audio stream");
    }
    if (o->video) {
        x->vi = -1;
        for (unsigned i = 0; i < x->fmt->nb_streams; i++) { /* cover art is not video */
            AVStream *st = x->fmt->streams[i];
            if (st->codecpar->codec_type == AVMEDIA_TYPE_VIDEO &&
                !(st->disposition & AV_DISPOSITION_ATTACHED_PIC)) {
                x->vi = av_find_best_stream(x->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
                if (x->vi >= 0 && (x->fmt->streams[x->vi]->disposition & AV_DISPOSITION_ATTACHED_PIC))
                    x->vi = (int)i;
                break;
            }
        }
        if (x->vi < 0) return fail(x, CAV_AV_ERR_NO_VIDEO, "no video stream");
    }
    cav_av_reason r;
    if (x->ai >= 0) {
        AVStream *st = x->fmt->streams[x->ai];
        snprintf(c->audio_codec, sizeof c->audio_codec, "%s", avcodec_get_name(st->codecpar->codec_id));
        c->src_sample_rate = st->codecpar->sample_rate;
        c->src_channels = st->codecpar->ch_layout.nb_channels;
        if ((r = open_decoder(x, x->ai, &x->adec, "audio"))) return r;
        x->alimit = o->max_seconds > 0 ? (int64_t)llround(o->max_seconds * CAV_AV_RATE) : 0;
    } else {
        x->audio_done = 1;
    }
    if (x->vi >= 0) {
        AVStream *st = x->fmt->streams[x->vi];
        snprintf(c->video_codec, sizeof c->video_codec, "%s", avcodec_get_name(st->codecpar->codec_id));
        if ((r = open_decoder(x, x->vi, &x->vdec, "video"))) return r;
        opencv_fps_count(x, st);
        cav_av_frame_indices(c->fps, c->frame_count, c->frame_index);
        for (int i = 0; i < CAV_AV_NFRAMES; i++)
            x->target[i] = c->frame_index[i] > 0 ? c->frame_index[i] - 1 : 0;
        x->tb = av_q2d(st->time_base);
        x->st_start = st->start_time == AV_NOPTS_VALUE ? 0 : st->start_time;
        if (!o->decode_only) {
            c->frames = calloc((size_t)CAV_AV_NFRAMES * CAV_AV_SIZE * CAV_AV_SIZE * 3, 1);
            if (!c->frames) return fail(x, CAV_AV_ERR_INTERNAL, "out of memory");
        }
    } else {
        x->video_done = 1;
    }
    if (x->gop_skip && x->vi >= 0 && !strncmp(x->fmt->iformat->name, "matroska", 8) &&
        avformat_index_get_entries_count(x->fmt->streams[x->vi]) <= 1)
        matroska_keys(x);
    /* Only the chosen streams' packets are read at all. */
    for (unsigned i = 0; i < x->fmt->nb_streams; i++)
        if ((int)i != x->ai && (int)i != x->vi) x->fmt->streams[i]->discard = AVDISCARD_ALL;

    while (!(x->audio_done && x->video_done)) {
        ret = av_read_frame(x->fmt, x->pkt);
        if (ret == AVERROR_EOF) break;
        if (ret < 0) return fail(x, CAV_AV_ERR_CORRUPT, "read error: %s", AVERR(ret));
        r = CAV_AV_OK;
        if (x->pkt->stream_index == x->ai && !x->audio_done)
            r = audio_packet(x, x->pkt);
        else if (x->pkt->stream_index == x->vi && !x->video_done)
            r = video_packet(x, x->pkt);
        av_packet_unref(x->pkt);
        if (r) return r;
        if (x->video_done && x->vdec && x->fmt->streams[x->vi]->discard != AVDISCARD_ALL)
            x->fmt->streams[x->vi]->discard = AVDISCARD_ALL; /* nothing more to read for video */
    }
    if (!x->video_done && (r = video_packet(x, NULL))) return r;
    if (!x->audio_done) {
        if ((r = audio_packet(x, NULL))) return r;
        if (!x->audio_done && !o->decode_only && (r = audio_convert(x, NULL))) return r;
    }
    if (x->ai >= 0 && c->nsamples == 0)
        return fail(x, CAV_AV_ERR_NO_FRAMES, "the audio stream holds no samples");
    if (x->vi >= 0 && x->next < CAV_AV_NFRAMES) {
        if (x->c->video_skipped) return AV_RETRY;
        if (!x->have_first) return fail(x, CAV_AV_ERR_NO_FRAMES, "the video stream holds no decodable frame");
        return fail(
            x, CAV_AV_ERR_CORRUPT,
            "video ends at frame %lld, before frame %d (frame %d of 10; %lld frames declared at %.3f fps): "
            "truncated?",
            (long long)x->last_idx, x->target[x->next], x->next, (long long)c->frame_count, c->fps);
    }
    return CAV_AV_OK;
}

static void ctx_free(ctx *x) {
    avcodec_free_context(&x->adec);
    avcodec_free_context(&x->vdec);
    swr_free(&x->swr);
    av_channel_layout_uninit(&x->swr_layout);
    sws_freeContext(x->sws);
    av_packet_free(&x->pkt);
    av_frame_free(&x->frame);
    free(x->sbuf);
    free(x->rgb);
    free(x->keys);
}

static cav_av_reason decode(ctx *x) {
    cav_av_reason r;
    x->pkt = av_packet_alloc();
    x->frame = av_frame_alloc();
    if (!x->pkt || !x->frame)
        r = fail(x, CAV_AV_ERR_INTERNAL, "out of memory");
    else
        r = run(x);
    ctx_free(x);
    if (r)
        cav_av_clip_free(x->c);
    else if (x->c->wave && x->c->nsamples < x->acap) {
        int16_t *w = realloc(x->c->wave, (size_t)x->c->nsamples * sizeof *w);
        if (w) x->c->wave = w;
    }
    return r;
}

/* Diagnostics are ours (one line per file with the reason); FFmpeg's own chatter goes only with
 * CAV_FFMPEG_LOG set. */
static void set_log_level(void) {
    av_log_set_level(getenv("CAV_FFMPEG_LOG") ? AV_LOG_WARNING : AV_LOG_QUIET);
}
static void quiet_ffmpeg(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, set_log_level);
}

static cav_av_reason decode_file_once(const char *path, const cav_av_opts *o, cav_av_clip *c, cav_err *err,
                                      int gop_skip) {
    ctx x = {.o = o,
             .c = c,
             .err = err,
             .gop_skip = gop_skip && o->skip_unneeded,
             .skip_ts = AV_NOPTS_VALUE,
             .path = path};
    memset(c, 0, sizeof *c);
    quiet_ffmpeg();
    int ret = avformat_open_input(&x.fmt, path, NULL, NULL);
    if (ret < 0) {
        if (ret == AVERROR_INVALIDDATA || ret == AVERROR_EOF)
            return fail(&x, CAV_AV_ERR_CORRUPT, "not a readable media file: %s", AVERR(ret));
        return fail(&x, CAV_AV_ERR_OPEN, "cannot open: %s", AVERR(ret));
    }
    cav_av_reason r = decode(&x);
    avformat_close_input(&x.fmt);
    return r;
}

static int mem_read(void *opaque, uint8_t *buf, int n) {
    membuf *m = opaque;
    size_t left = m->size - m->pos;
    if (left == 0) return AVERROR_EOF;
    if ((size_t)n > left) n = (int)left;
    memcpy(buf, m->data + m->pos, (size_t)n);
    m->pos += (size_t)n;
    return n;
}

static int64_t mem_seek(void *opaque, int64_t off, int whence) {
    membuf *m = opaque;
    int64_t base;
    switch (whence & ~AVSEEK_FORCE) {
    case AVSEEK_SIZE:
        return (int64_t)m->size;
    case SEEK_SET:
        base = 0;
        break;
    case SEEK_CUR:
        base = (int64_t)m->pos;
        break;
    case SEEK_END:
        base = (int64_t)m->size;
        break;
    default:
        return AVERROR(EINVAL);
    }
    if (off > INT64_MAX - base || base + off < 0 || base + off > (int64_t)m->size) return AVERROR(EINVAL);
    m->pos = (size_t)(base + off);
    return (int64_t)m->pos;
}

static cav_av_reason decode_mem_once(const uint8_t *data, size_t size, const cav_av_opts *o, cav_av_clip *c,
                                     cav_err *err, int gop_skip) {
    ctx x = {.o = o,
             .c = c,
             .err = err,
             .gop_skip = gop_skip && o->skip_unneeded,
             .skip_ts = AV_NOPTS_VALUE,
             .mem = data,
             .memsize = size};
    memset(c, 0, sizeof *c);
    quiet_ffmpeg();
    membuf m = {data, size, 0};
    const int bufsize = 1 << 16;
    uint8_t *iobuf = av_malloc(bufsize);
    AVIOContext *pb = iobuf ? avio_alloc_context(iobuf, bufsize, 0, &m, mem_read, NULL, mem_seek) : NULL;
    x.fmt = pb ? avformat_alloc_context() : NULL;
    if (!x.fmt) {
        if (pb)
            av_freep(&pb->buffer);
        else
            av_free(iobuf);
        avio_context_free(&pb);
        return fail(&x, CAV_AV_ERR_INTERNAL, "out of memory");
    }
    x.fmt->pb = pb;
    x.fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
    int ret = avformat_open_input(&x.fmt, NULL, NULL, NULL); /* frees fmt on failure */
    cav_av_reason r;
    if (ret < 0) {
        r = fail(&x, ret == AVERROR_INVALIDDATA || ret == AVERROR_EOF ? CAV_AV_ERR_CORRUPT : CAV_AV_ERR_OPEN,
                 "not a readable media stream: %s", AVERR(ret));
    } else {
        r = decode(&x);
        avformat_close_input(&x.fmt);
    }
    av_freep(&pb->buffer);
    avio_context_free(&pb);
    return r;
}

cav_av_reason cav_av_decode_file(const char *path, const cav_av_opts *o, cav_av_clip *c, cav_err *err) {
    cav_av_reason r = decode_file_once(path, o, c, err, 1);
    return r == AV_RETRY ? decode_file_once(path, o, c, err, 0) : r;
}

cav_av_reason cav_av_decode_mem(const uint8_t *data, size_t size, const cav_av_opts *o, cav_av_clip *c,
                                cav_err *err) {
    cav_av_reason r = decode_mem_once(data, size, o, c, err, 1);
    return r == AV_RETRY ? decode_mem_once(data, size, o, c, err, 0) : r;
}

void cav_av_clip_free(cav_av_clip *c) {
    free(c->wave);
    free(c->frames);
    c->wave = NULL;
    c->frames = NULL;
    c->nsamples = 0;
}
