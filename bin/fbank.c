/* fbank: adds the Kaldi-compatible log-mel filterbank of each record's waveform (the reference's
 * _wav2fbank: clip mean removed, kaldi.fbank, cut or zero-pad to 1024 frames) as the field `fbank`.
 * Reads record streams or shards (or WAV files with --wav), writes a stream or a shard. See fbank(1). */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomicfile.h"
#include "augment.h"
#include "avdecode.h"
#include "cli.h"
#include "clip.h"
#include "fbank.h"
#include "filter.h"
#include "io.h"
#include "opts.h"
#include "wav.h"

static const char usage_head[] =
    "Usage: fbank [OPTION]... [INPUT]...\n"
    "Add the log-mel filterbank `" CAV_FIELD_FBANK
    "` (f32 [1024,128] by default) of each record's `" CAV_FIELD_WAVE "` (i16 or f32 [n] or\n"
    "[channels,n], record attribute " CAV_ATTR_SAMPLE_RATE
    ") to the records of INPUTs (record streams or shards; '-' or\n"
    "none = stdin), computed exactly as the reference (torchaudio.compliance.kaldi.fbank), and write them.\n"
    "\n";
static const char usage_tail[] = CAV_RECORD_USAGE_TAIL;

/* WAV and audio files in command-line order (--wav and --audio interleave). */
typedef struct {
    char **path;
    int *decode; /* 1: through FFmpeg (--audio), 0: the WAV reader (--wav) */
    int n;
} file_list;

typedef struct {
    int on;
    float mean, std;
} norm_opt;

/* The tool's own settings (the filterbank's are cav_fbank_opts, table cav_fbank_options). */
typedef struct {
    const char *output;
    file_list files;
    norm_opt norm;
    int half, drop_wave;
    int level; /* 0 = the container's default */
} tool_opts;

static int add_file(void *field, const char *s, int decode) {
    file_list *l = field;
    l->decode[l->n] = decode, l->path[l->n++] = (char *)s;
    return 0;
}
static int parse_wav(const char *s, void *field, char *why, size_t whylen) {
    (void)why, (void)whylen;
    return add_file(field, s, 0);
}
static int parse_audio(const char *s, void *field, char *why, size_t whylen) {
    (void)why, (void)whylen;
    return add_file(field, s, 1);
}

static int parse_norm(const char *s, void *field, char *why, size_t whylen) {
    norm_opt *n = field;
    char *end;
    double m = strtod(s, &end), d = 0;
    int ok = end != s && *end == ',' && isfinite(m);
    if (ok) {
        const char *p = end + 1;
        d = strtod(p, &end);
        ok = end != p && !*end && isfinite(d) && d > 0;
    }
    if (!ok) return snprintf(why, whylen, "need MEAN,STD with STD > 0"), -1;
    n->on = 1, n->mean = (float)m, n->std = (float)d;
    return 0;
}
static void format_norm(const void *field, char *buf, size_t len) {
    const norm_opt *n = field;
    snprintf(buf, len, "%s%g,%g", n->on ? "" : "none:", n->mean, n->std);
}
static void format_dtype(const void *field, char *buf, size_t len) {
    snprintf(buf, len, "%s", *(const int *)field ? "f16" : "f32");
}

#define TO(field) offsetof(tool_opts, field)
static const cav_opt io_options[] = {
    {CAV_OUTPUT_OPTION(TO(output), "FILE", "output: '-' = record stream on stdout (default); *.h5 = shard")},
    {.name = "wav",
     .short_name = 'w',
     .type = CAV_OPTT_CUSTOM,
     .offset = TO(files),
     .arg = "FILE",
     .help = "read a WAV file (16-bit PCM or 32-bit float) instead; repeatable; the id is\n"
             "the file name without directory and extension",
     .parse = parse_wav},
    {.name = "audio",
     .short_name = 'a',
     .type = CAV_OPTT_CUSTOM,
     .offset = TO(files),
     .arg = "FILE",
     .help = "read any audio or video file FFmpeg decodes (16 kHz, channel 1, as av-extract)\n"
             "instead; repeatable, may be mixed with --wav",
     .parse = parse_audio},
    {0},
};
static const cav_opt store_options[] = {
    {.name = "normalize",
     .type = CAV_OPTT_CUSTOM,
     .offset = TO(norm),
     .arg = "MEAN,STD",
     .help = "store (x-MEAN)/STD (the reference's loader uses -5.081,4.4849); default raw",
     .key = "normalize",
     .parse = parse_norm,
     .format = format_norm},
    {.name = "half",
     .type = CAV_OPTT_FLAG,
     .offset = TO(half),
     .help = "store float16 instead of float32",
     .key = "dtype",
     .format = format_dtype},
    {.name = "drop-wave",
     .type = CAV_OPTT_FLAG,
     .offset = TO(drop_wave),
     .help = "remove the waveform from the output records"},
    {CAV_LEVEL_OPTION(TO(level), CAV_LEVEL_HELP
                      "; fbank values\ncompress little, so -l 1 or -l -3 saves most of the writing time")},
    {0},
};

typedef struct {
    cav_fbank_opts o;
    tool_opts t;
    /* one filterbank per sample rate met */
    int nbanks;
    double rates[16];
    cav_fbank *banks[16];
    float *samples, *out;
    int64_t cap_samples, cap_out;
} state;

static cav_writer *writer;

static noreturn void fail(const cav_err *err) {
    if (writer) cav_writer_abort(writer);
    cav_die(err->code ? err->code : CAV_EXIT_INTERNAL, "%s", err->msg);
}

static uint64_t id_seed(uint64_t seed, const char *id) {
    uint64_t h = 1469598103934665603ull ^ seed;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) h = (h ^ *p) * 1099511628211ull;
    return h;
}

/* Adds fbank to rec (source names the input for messages, index the record). 0 ok, -1 error. */
static int process(state *st, cav_record *rec, const char *source, int64_t index, cav_err *err) {
    const char *id = rec->id ? rec->id : "";
    cav_clip_wave wv;
    cav_err e1 = {0};
    int found = cav_clip_get_wave(rec, &wv, &e1);
    if (found == 0)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: record %lld (id '%s'): no '" CAV_FIELD_WAVE "' field",
                        source, (long long)index, id);
    int64_t n = wv.n;
    const float *x = found < 0 ? NULL
                               : cav_fbank_wave_samples(wv.i16, wv.f32, n * wv.channels, &st->samples,
                                                        &st->cap_samples, &e1);
    if (!x)
        return cav_fail(err, e1.code, "%s: record %lld (id '%s'): %s", source, (long long)index, id, e1.msg);
    double rate;
    if (cav_clip_rate(rec, st->o.sample_rate, &rate, &e1))
        return cav_fail(err, e1.code, "%s: record %lld (id '%s'): %s", source, (long long)index, id, e1.msg);
    cav_fbank *fb = NULL;
    for (int i = 0; i < st->nbanks; i++)
        if (st->rates[i] == rate) fb = st->banks[i];
    if (!fb) {
        cav_fbank_opts o = st->o;
        o.sample_rate = rate;
        cav_err e2;
        fb = cav_fbank_new(&o, &e2);
        if (!fb)
            return cav_fail(err, e2.code,
                            "%s: record %lld (id '%s'): " CAV_ATTR_SAMPLE_RATE ": unsupported rate %g Hz: %s",
                            source, (long long)index, id, rate, e2.msg);
        if (st->nbanks == 16) cav_fbank_free(st->banks[--st->nbanks]);
        st->rates[st->nbanks] = rate;
        st->banks[st->nbanks++] = fb;
    }
    int64_t rows = cav_fbank_out_frames(fb, n), bins = cav_fbank_bins(fb);
    if (rows * bins > st->cap_out) {
        float *o = realloc(st->out, sizeof(float) * rows * bins);
        if (!o) return cav_fail(err, CAV_EXIT_INTERNAL, "out of memory");
        st->out = o, st->cap_out = rows * bins;
    }
    if (st->o.dither != 0) cav_fbank_reseed(fb, id_seed(st->o.dither_seed, id));
    cav_err e2;
    if (cav_fbank_compute(fb, x, wv.channels, n, st->out, NULL, &e2))
        return cav_fail(err, e2.code, "%s: record %lld (id '%s'): field " CAV_FIELD_WAVE ": %s", source,
                        (long long)index, id, e2.msg);
    if (st->t.norm.on) cav_fbank_normalize(st->out, rows * bins, st->t.norm.mean, st->t.norm.std);
    if (cav_clip_put_fbank(rec, st->t.half, rows, (int)bins, st->out))
        return cav_fail(err, CAV_EXIT_INTERNAL, "out of memory");
    if (st->t.drop_wave) cav_record_remove(rec, CAV_FIELD_WAVE);
    return 0;
}

/* The settings, as a dataset attribute, so later stages (and people) can see how fbank was made. */
static void settings_attr(state *st, cav_attrs *a) {
    char s[512];
    const cav_optgroup g[2] = {{cav_fbank_options, &st->o}, {store_options, &st->t}};
    size_t n = (size_t)snprintf(s, sizeof s, "kaldi fbank: ");
    cav_opts_echo(g, 2, s + n, sizeof s - n);
    if (cav_attrs_set(a, CAV_DATTR_FBANK, s)) cav_die(CAV_EXIT_INTERNAL, "out of memory");
}

/* The output, with the first input's dataset attributes (none for WAV files) and the settings. */
static cav_writer *open_writer(const char *output, const cav_attrs *from, state *st, int argc, char **argv,
                               cav_err *err) {
    cav_attrs a;
    cav_attrs_init(&a);
    if ((from && cav_attrs_copy(&a, from)) || cav_attrs_provenance(&a, argc, argv))
        cav_die(CAV_EXIT_INTERNAL, "out of memory");
    settings_attr(st, &a);
    cav_writer *w = cav_writer_open_level(output, cav_format_for_path(output), &a, st->t.level, err);
    cav_attrs_clear(&a);
    return w;
}

/* The record filter over record inputs (cav_filter). */
typedef struct {
    state *st;
    int argc;
    char **argv;
} filter_ctx;

static cav_writer *filter_open(void *ctx, const cav_attrs *first, cav_err *err) {
    filter_ctx *c = ctx;
    return open_writer(c->st->t.output, first, c->st, c->argc, c->argv, err);
}

static int filter_record(void *ctx, cav_record *rec, const char *source, int64_t index, cav_err *err) {
    return process(((filter_ctx *)ctx)->st, rec, source, index, err);
}

static const char *base_id(const char *path, char *buf, size_t len) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(buf, len, "%s", b);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = 0;
    return buf;
}

/* The --wav and --audio files, in command-line order, one record each. */
static void wav_inputs(state *st, int argc, char **argv) {
    char **wavs = st->t.files.path;
    int *decode = st->t.files.decode, nwavs = st->t.files.n;
    cav_err err = {0};
    cav_record rec;
    cav_record_init(&rec);
    cav_progress *prog = cav_progress_start("records", 0);
    for (int i = 0; i < nwavs; i++) cav_input_note(wavs[i]); /* the output may replace none of them */
    if (!(writer = open_writer(st->t.output, NULL, st, argc, argv, &err))) fail(&err);
    for (int i = 0; i < nwavs; i++) {
        cav_wav w;
        if (decode[i]) {
            cav_av_opts ao;
            cav_av_opts_default(&ao);
            ao.video = 0;
            cav_av_clip clip = {0};
            cav_err e2 = {0};
            if (cav_av_decode_file(wavs[i], &ao, &clip, &e2) != CAV_AV_OK) {
                cav_fail(&err, e2.code ? e2.code : CAV_EXIT_INPUT, "%s: %s", wavs[i], e2.msg);
                fail(&err);
            }
            w = (cav_wav){.rate = CAV_AV_RATE,
                          .channels = 1,
                          .frames = clip.nsamples,
                          .dtype = CAV_I16,
                          .data = clip.wave};
            clip.wave = NULL;
            cav_av_clip_free(&clip);
        } else if (cav_wav_read(wavs[i], &w, &err)) {
            fail(&err);
        }
        char id[256], rate[32];
        snprintf(rate, sizeof rate, "%d", w.rate);
        cav_record_clear(&rec);
        if (cav_record_set_id(&rec, base_id(wavs[i], id, sizeof id)) ||
            cav_clip_put_wave(&rec, w.dtype, w.channels, w.frames, w.data) ||
            cav_attrs_set(&rec.attrs, CAV_ATTR_SAMPLE_RATE, rate) ||
            cav_attrs_set(&rec.attrs, CAV_ATTR_SOURCE, wavs[i]))
            cav_die(CAV_EXIT_INTERNAL, "out of memory");
        cav_wav_free(&w);
        if (process(st, &rec, wavs[i], 0, &err) || cav_writer_put(writer, &rec, &err)) fail(&err);
        cav_progress_add(prog, 1);
    }
    cav_progress_end(prog);
    cav_record_clear(&rec);
}

int main(int argc, char **argv) {
    cav_set_tool("fbank");
    state st = {0};
    cav_fbank_opts_default(&st.o);
    cav_opts_defaults(io_options, &st.t);
    cav_opts_defaults(store_options, &st.t);
    st.t.files.path = calloc((size_t)argc, sizeof *st.t.files.path);
    st.t.files.decode = calloc((size_t)argc, sizeof *st.t.files.decode);
    if (!st.t.files.path || !st.t.files.decode) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    const cav_optgroup groups[] = {{io_options, &st.t}, {cav_fbank_options, &st.o}, {store_options, &st.t}};
    int optind_ = cav_opts_parse(argc, argv, groups, 3, usage_head, usage_tail);
    /* Check the options once at the default rate, so a bad combination is a usage error up front. */
    {
        cav_err err;
        cav_fbank *fb = cav_fbank_new(&st.o, &err);
        if (!fb) cav_usage_error("%s", err.msg);
        cav_fbank_free(fb);
    }
    cav_err err = {0};
    if (st.t.files.n) {
        if (optind_ < argc) cav_usage_error("give either --wav/--audio files or record INPUTs, not both");
        wav_inputs(&st, argc, argv);
    } else {
        filter_ctx c = {&st, argc, argv};
        const cav_filter f = {&c, filter_open, filter_record};
        if (cav_filter_run(&f, argc - optind_, argv + optind_, &writer, &err)) fail(&err);
    }
    if (cav_writer_close(writer, &err)) {
        writer = NULL;
        fail(&err);
    }
    for (int i = 0; i < st.nbanks; i++) cav_fbank_free(st.banks[i]);
    free(st.samples);
    free(st.out);
    free(st.t.files.path);
    free(st.t.files.decode);
    return 0;
}
