/* avextract.h: what av-extract does per clip beyond decoding — the list of inputs (file arguments, a list
 * file, or the reference's dataset JSON) and the record a decoded clip becomes (standard field names:
 * `wave`, `frames` or `frames_jpeg` + `frames_jpeg_offsets`, and the provenance attributes). */
#ifndef CAV_AVEXTRACT_H
#define CAV_AVEXTRACT_H

#include "avdecode.h"
#include "record.h"

typedef struct {
    char *id, *path;
} cav_av_input;

typedef struct {
    int n, cap;
    cav_av_input *v;
} cav_av_inputs;

void cav_av_inputs_free(cav_av_inputs *in);
/* Adds one media file; the id is its file name without directory and extension, unless id is given. */
int cav_av_inputs_add(cav_av_inputs *in, const char *path, const char *id, cav_err *err);
/* One path per line ("-" = stdin); blank lines and lines starting with '#' are ignored; trailing CR/LF and
 * surrounding blanks are stripped. */
int cav_av_inputs_load_list(cav_av_inputs *in, const char *listfile, cav_err *err);
/* The reference's dataset JSON {"data": [{"video_id": ..., KEY: path, ...}]}. The media path is the member
 * named key; key NULL tries "video", "media", "path" and then "wav" (the reference's audio path). */
int cav_av_inputs_load_json(cav_av_inputs *in, const char *jsonfile, const char *key, cav_err *err);

/* Record options: jpeg_quality 0 stores raw frames. */
typedef struct {
    int jpeg_quality;
} cav_av_record_opts;

/* Fills rec (cleared first) from a decoded clip: id, `wave` i16 [n] (attr sample_rate=16000), `frames` u8
 * [10,224,224,3] or `frames_jpeg` u8 [bytes] + `frames_jpeg_offsets` i64 [11] (frame k is bytes
 * [off[k], off[k+1])), and the attributes source, duration, src_sample_rate, src_channels, fps,
 * frame_count, frame_index, container, audio_codec, video_codec (those that apply). 0 ok, -1 error. */
int cav_av_clip_to_record(const cav_av_clip *c, const char *id, const char *source,
                          const cav_av_record_opts *o, cav_record *rec, cav_err *err);

#endif
