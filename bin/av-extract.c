/* av-extract: media files -> records holding 16 kHz mono audio and the reference's 10 frames (see
 * av-extract(1)). Wiring only: inputs and records are lib/avextract, decoding lib/avdecode. Files are
 * decoded by -j worker threads; the main thread writes the records in input order and keeps the counts. */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomicfile.h"
#include "avdecode.h"
#include "avextract.h"
#include "cli.h"
#include "clip.h"
#include "io.h"
#include "opts.h"

static const char usage_head[] =
    "Usage: av-extract [OPTION]... [FILE]...\n"
    "Decode media files once into records: 16 kHz mono audio (`wave`) and the reference's 10 frames at\n"
    "224x224 (`frames_jpeg` or `frames`), with the clip's attributes.\n"
    "\n";
static const char usage_tail[] =
    "      --help               show this help\n"
    "      --version            show the version\n"
    "\n"
    "Exit status: 0 ok (bad files, if any, were skipped and reported), 1 usage, 2 nothing could be "
    "extracted\n"
    "or a bad file with --on-error fail, 3 internal or output error.\n"
    "Failure reasons counted in the closing summary: open, no-audio, no-video, corrupt, no-frames, "
    "internal,\n"
    "rejected (the output refused the record, e.g. a duplicate id in a shard).\n";

/* How frames are stored: the last of --raw, --jpeg and --jpeg-quality wins. */
typedef struct {
    int raw, quality;
} frames_opt;

typedef struct {
    cav_opt_list lists, jsons;
    const char *json_key, *out;
    frames_opt frames;
    int aonly, vonly, decode_all, jobs, fail_fast;
    cav_av_opts d; /* downmix, max_seconds and decode_only set directly */
} settings;

static int parse_jpeg(const char *s, void *field, char *why, size_t whylen) {
    (void)s, (void)why, (void)whylen;
    ((frames_opt *)field)->raw = 0;
    return 0;
}
static int parse_raw(const char *s, void *field, char *why, size_t whylen) {
    (void)s, (void)why, (void)whylen;
    ((frames_opt *)field)->raw = 1;
    return 0;
}
static int parse_quality(const char *s, void *field, char *why, size_t whylen) {
    static const cav_opt q = {.type = CAV_OPTT_INT, .min = 1, .max = 100};
    frames_opt *f = field;
    if (cav_opt_set(&q, &f->quality, s, why, whylen)) return -1;
    f->raw = 0;
    return 0;
}

static const cav_opt_choice on_error[] = {{"skip", 0}, {"fail", 1}, {0}};

#define TO(field) offsetof(settings, field)
static const cav_opt options[] = {
    {.name = "list",
     .short_name = 'l',
     .type = CAV_OPTT_LIST,
     .offset = TO(lists),
     .arg = "FILE",
     .help = "one media path per line ('-' = stdin)",
     .section =
         "Input (any mix):\n"
         "  FILE...                  media files; the record id is the file name without its extension"},
    {.name = "json",
     .type = CAV_OPTT_LIST,
     .offset = TO(jsons),
     .arg = "FILE",
     .help = "the reference's dataset JSON: ids from video_id, paths from --json-key"},
    {.name = "json-key",
     .type = CAV_OPTT_STRING,
     .offset = TO(json_key),
     .arg = "KEY",
     .help = "member holding the media path (default: video, media, path, then wav)"},
    {CAV_OUTPUT_OPTION(TO(out), "PATH",
                       "record stream, or an HDF5 shard for a name ending in .h5 (default: stdout)"),
     .section = "Output:"},
    {.name = "jpeg",
     .type = CAV_OPTT_CUSTOM,
     .offset = TO(frames),
     .help = "store frames as JPEG (the default)",
     .parse = parse_jpeg},
    {.name = "jpeg-quality",
     .type = CAV_OPTT_CUSTOM,
     .offset = TO(frames),
     .def = "75",
     .arg = "Q",
     .help = "JPEG quality (1-100; default 75, as the reference stores them)",
     .parse = parse_quality,
     .flags = CAV_OPTF_NODEFAULT},
    {.name = "raw",
     .type = CAV_OPTT_CUSTOM,
     .offset = TO(frames),
     .help = "store frames as raw u8 [10,224,224,3] instead of JPEG",
     .parse = parse_raw},
    {.name = "audio-only",
     .type = CAV_OPTT_FLAG,
     .offset = TO(aonly),
     .help = "only the audio (files need no video stream)"},
    {.name = "video-only",
     .type = CAV_OPTT_FLAG,
     .offset = TO(vonly),
     .help = "only the frames (files need no audio stream)"},
    {.name = "downmix",
     .type = CAV_OPTT_FLAG,
     .offset = TO(d.downmix),
     .help = "average the channels (default: channel 1, as the reference's sox remix 1)"},
    {.name = "max-seconds",
     .type = CAV_OPTT_DOUBLE,
     .offset = TO(d.max_seconds),
     .min = 1e-3,
     .max = 1e9,
     .arg = "S",
     .help = "decode at most S seconds of audio (default: all of it)"},
    {.name = "decode-all",
     .type = CAV_OPTT_FLAG,
     .offset = TO(decode_all),
     .help = "decode every video frame up to the last needed one (no skipping)"},
    {.name = "decode-only",
     .type = CAV_OPTT_FLAG,
     .offset = TO(d.decode_only),
     .help = "benchmark floor: demux and decode what is needed, convert nothing, write no\n"
             "records (the output holds only the header)"},
    {.name = "jobs",
     .short_name = 'j',
     .type = CAV_OPTT_INT,
     .offset = TO(jobs),
     .def = "1",
     .min = 1,
     .max = 256,
     .arg = "N",
     .help = "decode N files in parallel (default 1); output stays in input order",
     .flags = CAV_OPTF_NODEFAULT,
     .section = "Batch:"},
    {.name = "on-error",
     .type = CAV_OPTT_CHOICE,
     .offset = TO(fail_fast),
     .def = "skip",
     .arg = "POLICY",
     .help = "skip (default: report, count, go on) or fail (stop at the first bad file)",
     .flags = CAV_OPTF_NODEFAULT,
     .choices = on_error},
    {0},
};

typedef struct {
    int done;
    cav_av_reason reason;
    cav_err err;
    cav_record rec;
} slot;

typedef struct {
    const cav_av_inputs *in;
    const cav_av_opts *dopts;
    const cav_av_record_opts *ropts;
    slot *slots;
    int next_take, written, window, stop;
    pthread_mutex_t mu;
    pthread_cond_t done_cv, room_cv;
} pool;

/* Decode one input into its slot (no locks held). */
static void work(pool *p, int i) {
    slot *s = &p->slots[i];
    const cav_av_input *in = &p->in->v[i];
    cav_av_clip c;
    s->reason = cav_av_decode_file(in->path, p->dopts, &c, &s->err);
    if (s->reason == CAV_AV_OK && !p->dopts->decode_only) {
        if (cav_av_clip_to_record(&c, in->id, in->path, p->ropts, &s->rec, &s->err))
            s->reason = CAV_AV_ERR_INTERNAL;
        cav_av_clip_free(&c);
    }
}

static void *worker(void *arg) {
    pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->next_take < p->in->n && p->next_take >= p->written + p->window)
            pthread_cond_wait(&p->room_cv, &p->mu);
        if (p->stop || p->next_take >= p->in->n) break;
        int i = p->next_take++;
        pthread_mutex_unlock(&p->mu);
        work(p, i);
        pthread_mutex_lock(&p->mu);
        p->slots[i].done = 1;
        pthread_cond_broadcast(&p->done_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int main(int argc, char **argv) {
    cav_set_tool("av-extract");
    settings o = {0};
    cav_av_opts_default(&o.d);
    cav_opts_defaults(options, &o);
    const cav_optgroup g = {options, &o};
    int first = cav_opts_parse(argc, argv, &g, 1, usage_head, usage_tail);
    if (o.aonly && o.vonly) cav_usage_error("--audio-only and --video-only exclude each other");
    cav_av_opts dopts = o.d;
    dopts.skip_unneeded = !o.decode_all;
    dopts.audio = !o.vonly;
    dopts.video = !o.aonly;
    cav_av_record_opts ropts = {.jpeg_quality = o.frames.raw ? 0 : o.frames.quality};
    const char *out = o.out;
    int jobs = o.jobs, fail_fast = o.fail_fast;

    cav_av_inputs in = {0};
    cav_err err = {0};
    for (int i = first; i < argc; i++)
        if (cav_av_inputs_add(&in, argv[i], NULL, &err)) cav_die(err.code, "%s", err.msg);
    for (int i = 0; i < o.lists.n; i++)
        if (cav_av_inputs_load_list(&in, o.lists.v[i], &err)) cav_die(err.code, "%s", err.msg);
    for (int i = 0; i < o.jsons.n; i++)
        if (cav_av_inputs_load_json(&in, o.jsons.v[i], o.json_key, &err)) cav_die(err.code, "%s", err.msg);
    cav_opt_list_free(&o.lists), cav_opt_list_free(&o.jsons);
    if (in.n == 0) cav_usage_error("no input files (give FILEs, --list or --json)");
    for (int i = 0; i < in.n; i++) cav_input_note(in.v[i].path); /* the output may replace none of them */

    cav_attrs attrs;
    cav_attrs_init(&attrs);
    char q[16], rate[16];
    snprintf(q, sizeof q, "%d", ropts.jpeg_quality);
    snprintf(rate, sizeof rate, "%d", CAV_AV_RATE);
    if (cav_attrs_provenance(&attrs, argc, argv) || cav_attrs_set(&attrs, CAV_DATTR_SAMPLE_RATE, rate) ||
        (dopts.video &&
         cav_attrs_set(&attrs, CAV_DATTR_FRAMES_FORMAT, ropts.jpeg_quality ? "jpeg" : "raw")) ||
        (dopts.video && ropts.jpeg_quality && cav_attrs_set(&attrs, CAV_DATTR_JPEG_QUALITY, q)) ||
        (dopts.audio && cav_attrs_set(&attrs, CAV_DATTR_AUDIO_CHANNEL, dopts.downmix ? "mean" : "1")))
        cav_die(CAV_EXIT_INTERNAL, "out of memory");
    cav_writer *w = cav_writer_open(out, cav_format_for_path(out), &attrs, &err);
    cav_attrs_clear(&attrs);
    if (!w) cav_die(err.code ? err.code : CAV_EXIT_INTERNAL, "%s", err.msg);

    pool p = {.in = &in, .dopts = &dopts, .ropts = &ropts, .window = 4 * jobs};
    p.slots = calloc((size_t)in.n, sizeof *p.slots);
    if (!p.slots) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    for (int i = 0; i < in.n; i++) cav_record_init(&p.slots[i].rec);
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.done_cv, NULL);
    pthread_cond_init(&p.room_cv, NULL);
    pthread_t th[256];
    int nth = jobs > in.n ? in.n : jobs;
    for (int t = 0; t < nth; t++)
        if (pthread_create(&th[t], NULL, worker, &p))
            cav_die(CAV_EXIT_INTERNAL, "cannot start a worker thread");

    int64_t counts[CAV_AV_NREASONS + 1] = {0}; /* the last: records the output refused (duplicate id, ...) */
    int status = CAV_EXIT_OK, written = 0;
    cav_progress *prog = cav_progress_start("files", in.n);
    for (int i = 0; i < in.n; i++) {
        pthread_mutex_lock(&p.mu);
        while (!p.slots[i].done) pthread_cond_wait(&p.done_cv, &p.mu);
        pthread_mutex_unlock(&p.mu);
        slot *s = &p.slots[i];
        counts[s->reason]++;
        if (s->reason != CAV_AV_OK) {
            cav_msg("%s: %s: %s", in.v[i].path, cav_av_reason_name(s->reason), s->err.msg);
            if (s->reason == CAV_AV_ERR_INTERNAL) status = CAV_EXIT_INTERNAL;
        } else if (dopts.decode_only) {
            written++;
        } else if (cav_writer_put(w, &s->rec, &err)) {
            cav_msg("%s: rejected: %s", in.v[i].path, err.msg);
            if (err.code == CAV_EXIT_INPUT) {
                counts[CAV_AV_OK]--;
                counts[CAV_AV_NREASONS]++;
                s->reason = CAV_AV_NREASONS;
            } else {
                status = CAV_EXIT_INTERNAL;
            }
        } else {
            written++;
        }
        cav_record_clear(&s->rec);
        cav_progress_add(prog, 1);
        int stop = status == CAV_EXIT_INTERNAL || (fail_fast && s->reason != CAV_AV_OK);
        if (stop && status == CAV_EXIT_OK) status = CAV_EXIT_INPUT;
        pthread_mutex_lock(&p.mu);
        p.written = i + 1;
        if (stop) p.stop = 1;
        pthread_cond_broadcast(&p.room_cv);
        pthread_mutex_unlock(&p.mu);
        if (stop) break;
    }
    cav_progress_end(prog);
    for (int t = 0; t < nth; t++) pthread_join(th[t], NULL);
    if (cav_writer_close(w, &err)) {
        cav_msg("%s", err.msg);
        status = CAV_EXIT_INTERNAL;
    }
    /* Summary: always, so a batch never fails quietly. */
    int64_t failed = 0;
    char why[512] = "";
    for (int r = 1; r <= CAV_AV_NREASONS; r++) {
        failed += counts[r];
        if (counts[r])
            snprintf(why + strlen(why), sizeof why - strlen(why), "%s%s %lld", why[0] ? ", " : " (",
                     r < CAV_AV_NREASONS ? cav_av_reason_name(r) : "rejected", (long long)counts[r]);
    }
    if (why[0]) strncat(why, ")", sizeof why - strlen(why) - 1);
    int64_t seen = 0;
    for (int r = 0; r <= CAV_AV_NREASONS; r++) seen += counts[r];
    cav_msg("%d of %d files extracted, %lld failed%s%s", written, in.n, (long long)failed, why,
            seen < in.n ? " (stopped early)" : "");
    if (status == CAV_EXIT_OK && written == 0) status = CAV_EXIT_INPUT;
    for (int i = 0; i < in.n; i++) cav_record_clear(&p.slots[i].rec);
    free(p.slots);
    pthread_mutex_destroy(&p.mu);
    pthread_cond_destroy(&p.done_cv);
    pthread_cond_destroy(&p.room_cv);
    cav_av_inputs_free(&in);
    return status;
}
