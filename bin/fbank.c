/* fbank: adds the Kaldi-compatible log-mel filterbank of each record's waveform (the reference's
 * _wav2fbank: clip mean removed, kaldi.fbank, cut or zero-pad to 1024 frames) as the field `fbank`.
 * Reads record streams or shards (or WAV files with --wav), writes a stream or a shard. See fbank(1). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomicfile.h"
#include "augment.h"
#include "avdecode.h"
#include "cli.h"
#include "fbank.h"
#include "io.h"
#include "wav.h"

static const char usage[] =
    "Usage: fbank [OPTION]... [INPUT]...\n"
    "Add the log-mel filterbank `fbank` (f32 [1024,128] by default) of each record's `wave` (i16 or f32 [n] "
    "or\n"
    "[channels,n], record attribute sample_rate) to the records of INPUTs (record streams or shards; '-' or\n"
    "none = stdin), computed exactly as the reference (torchaudio.compliance.kaldi.fbank), and write them.\n"
    "\n"
    "  -o, --output=FILE        output: '-' = record stream on stdout (default); *.h5 = shard\n"
    "  -w, --wav=FILE           read a WAV file (16-bit PCM or 32-bit float) instead; repeatable; the id is\n"
    "                           the file name without directory and extension\n"
    "  -r, --sample-rate=HZ     rate of records without a sample_rate attribute (default 16000)\n"
    "  -b, --bins=N             mel bins (default 128)\n"
    "      --frame-length=MS    frame length (default 25)\n"
    "      --frame-shift=MS     frame shift (default 10)\n"
    "      --window=TYPE        hanning (default, symmetric Hann), hamming, povey, rectangular, blackman\n"
    "      --blackman-coeff=X   for --window=blackman (default 0.42)\n"
    "      --low-freq=HZ        lowest mel edge (default 20)\n"
    "      --high-freq=HZ       highest mel edge; 0 = Nyquist (default), negative = Nyquist + HZ\n"
    "      --preemphasis=X      pre-emphasis coefficient (default 0.97)\n"
    "      --dither=X           Gaussian dither scale (default 0 = none, as the reference)\n"
    "      --seed=N             dither seed (each record's stream is keyed by the seed and its id)\n"
    "  -t, --target-length=N    cut or zero-pad to N frames (default 1024; 0 = keep every frame)\n"
    "      --normalize=MEAN,STD store (x-MEAN)/STD (the reference's loader uses -5.081,4.4849); default raw\n"
    "      --half               store float16 instead of float32\n"
    "      --drop-wave          remove the waveform from the output records\n"
    "  -l, --level=N            zstd level of the output (default 3; 1..19, negative = faster; fbank values\n"
    "                           compress little, so -l 1 or -l -3 saves most of the writing time)\n"
    "      --help               print this help and exit\n"
    "      --version            print the version and exit\n"
    "\n"
    "Exit status: 0 ok, 1 usage, 2 bad input (message names file, record and field), 3 internal error.\n";

enum {
    OPT_FLEN = 0x100,
    OPT_FSHIFT,
    OPT_WINDOW,
    OPT_BCOEF,
    OPT_LOW,
    OPT_HIGH,
    OPT_PRE,
    OPT_DITHER,
    OPT_SEED,
    OPT_NORM,
    OPT_HALF,
    OPT_DROP
};

typedef struct {
    cav_fbank_opts o;
    double default_rate;
    int normalize, half, drop_wave;
    float norm_mean, norm_std;
    /* one filterbank per sample rate met */
    int nbanks;
    double rates[16];
    cav_fbank *banks[16];
    float *samples, *out;
    int64_t cap_samples, cap_out;
} state;

static cav_writer *writer;
static int level; /* 0 = the container's default */

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
    cav_tensor *wv = cav_record_find(rec, "wave");
    if (!wv)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: record %lld (id '%s'): no 'wave' field", source,
                        (long long)index, id);
    int channels;
    int64_t n;
    cav_err e1 = {0};
    const float *x = cav_fbank_wave_samples(wv, &st->samples, &st->cap_samples, &channels, &n, &e1);
    if (!x)
        return cav_fail(err, e1.code, "%s: record %lld (id '%s'): wave: %s", source, (long long)index, id, e1.msg);
    double rate = st->default_rate;
    const char *ra = cav_attrs_get(&rec->attrs, "sample_rate");
    if (ra) {
        char *end;
        rate = strtod(ra, &end);
        if (end == ra || *end || !(rate > 0) || rate > 1e7)
            return cav_fail(err, CAV_EXIT_INPUT, "%s: record %lld (id '%s'): sample_rate: '%s' is not a rate",
                            source, (long long)index, id, ra);
    }
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
                            "%s: record %lld (id '%s'): sample_rate: unsupported rate %g Hz: %s", source,
                            (long long)index, id, rate, e2.msg);
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
    if (cav_fbank_compute(fb, x, channels, n, st->out, NULL, &e2))
        return cav_fail(err, e2.code, "%s: record %lld (id '%s'): wave: %s", source, (long long)index, id,
                        e2.msg);
    if (st->normalize) cav_fbank_normalize(st->out, rows * bins, st->norm_mean, st->norm_std);
    int64_t shape[2] = {rows, bins};
    cav_tensor *t = cav_record_add(rec, "fbank", st->half ? CAV_F16 : CAV_F32, 2, shape);
    if (!t) return cav_fail(err, CAV_EXIT_INTERNAL, "out of memory");
    if (st->half) {
        uint16_t *h = t->data;
        for (int64_t i = 0; i < rows * bins; i++) h[i] = cav_f32_to_f16(st->out[i]);
    } else {
        memcpy(t->data, st->out, sizeof(float) * rows * bins);
    }
    if (st->drop_wave) cav_record_remove(rec, "wave");
    return 0;
}

/* The settings, as a dataset attribute, so later stages (and people) can see how fbank was made. */
static void settings_attr(const state *st, cav_attrs *a) {
    char s[512];
    snprintf(s, sizeof s,
             "kaldi fbank: bins=%d frame_length_ms=%g frame_shift_ms=%g window=%s low_freq=%g high_freq=%g "
             "preemphasis=%g dither=%g target_length=%d normalize=%s%g,%g dtype=%s",
             st->o.num_mel_bins, st->o.frame_length_ms, st->o.frame_shift_ms, cav_window_name(st->o.window),
             st->o.low_freq, st->o.high_freq, st->o.preemph, st->o.dither, st->o.target_length,
             st->normalize ? "" : "none:", st->norm_mean, st->norm_std, st->half ? "f16" : "f32");
    if (cav_attrs_set(a, "fbank", s)) cav_die(CAV_EXIT_INTERNAL, "out of memory");
}

static void open_writer(const char *output, const cav_attrs *from, const state *st, int argc, char **argv) {
    cav_attrs a;
    cav_attrs_init(&a);
    if ((from && cav_attrs_copy(&a, from)) || cav_attrs_provenance(&a, argc, argv))
        cav_die(CAV_EXIT_INTERNAL, "out of memory");
    settings_attr(st, &a);
    cav_err err = {0};
    writer = cav_writer_open_level(output, cav_format_for_path(output), &a, level, &err);
    cav_attrs_clear(&a);
    if (!writer) fail(&err);
}

static const char *base_id(const char *path, char *buf, size_t len) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(buf, len, "%s", b);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = 0;
    return buf;
}

int main(int argc, char **argv) {
    cav_set_tool("fbank");
    state st = {0};
    cav_fbank_opts_default(&st.o);
    st.default_rate = 16000;
    const char *output = "-";
    char **wavs = calloc(argc, sizeof *wavs);
    int *decode = calloc(argc, sizeof *decode); /* per file: 1 = through FFmpeg, 0 = WAV reader */
    int nwavs = 0;
    static const struct option longopts[] = {{"output", 1, 0, 'o'},
                                             {"level", 1, 0, 'l'},
                                             {"wav", 1, 0, 'w'},
                                             {"audio", 1, 0, 'a'},
                                             {"sample-rate", 1, 0, 'r'},
                                             {"bins", 1, 0, 'b'},
                                             {"frame-length", 1, 0, OPT_FLEN},
                                             {"frame-shift", 1, 0, OPT_FSHIFT},
                                             {"window", 1, 0, OPT_WINDOW},
                                             {"blackman-coeff", 1, 0, OPT_BCOEF},
                                             {"low-freq", 1, 0, OPT_LOW},
                                             {"high-freq", 1, 0, OPT_HIGH},
                                             {"preemphasis", 1, 0, OPT_PRE},
                                             {"dither", 1, 0, OPT_DITHER},
                                             {"seed", 1, 0, OPT_SEED},
                                             {"target-length", 1, 0, 't'},
                                             {"normalize", 1, 0, OPT_NORM},
                                             {"half", 0, 0, OPT_HALF},
                                             {"drop-wave", 0, 0, OPT_DROP},
                                             CAV_STD_OPTIONS,
                                             {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "o:l:w:a:r:b:t:", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            output = optarg;
            break;
        case 'l':
            level = (int)cav_parse_int("--level", optarg, -7, 19);
            break;
        case 'w':
            wavs[nwavs++] = optarg;
            break;
        case 'a':
            decode[nwavs] = 1, wavs[nwavs++] = optarg;
            break;
        case 'r':
            st.default_rate = cav_parse_double("--sample-rate", optarg, 1, 1e7);
            break;
        case 'b':
            st.o.num_mel_bins = (int)cav_parse_int("--bins", optarg, 4, 4096);
            break;
        case OPT_FLEN:
            st.o.frame_length_ms = cav_parse_double("--frame-length", optarg, 0.01, 10000);
            break;
        case OPT_FSHIFT:
            st.o.frame_shift_ms = cav_parse_double("--frame-shift", optarg, 0.01, 10000);
            break;
        case OPT_WINDOW: {
            int w = cav_window_parse(optarg);
            if (w < 0) cav_usage_error("option --window: unknown window '%s'", optarg);
            st.o.window = (cav_window)w;
            break;
        }
        case OPT_BCOEF:
            st.o.blackman_coeff = cav_parse_double("--blackman-coeff", optarg, -10, 10);
            break;
        case OPT_LOW:
            st.o.low_freq = cav_parse_double("--low-freq", optarg, 0, 1e7);
            break;
        case OPT_HIGH:
            st.o.high_freq = cav_parse_double("--high-freq", optarg, -1e7, 1e7);
            break;
        case OPT_PRE:
            st.o.preemph = cav_parse_double("--preemphasis", optarg, 0, 1);
            break;
        case OPT_DITHER:
            st.o.dither = cav_parse_double("--dither", optarg, 0, 1e3);
            break;
        case OPT_SEED:
            st.o.dither_seed = (uint64_t)cav_parse_int("--seed", optarg, 0, INT64_MAX);
            break;
        case 't':
            st.o.target_length = (int)cav_parse_int("--target-length", optarg, 0, 1 << 24);
            break;
        case OPT_NORM: {
            double v[2];
            if (cav_parse_doubles("--normalize", optarg, v, 2) != 2 || !(v[1] > 0))
                cav_usage_error("option --normalize: need MEAN,STD with STD > 0");
            st.normalize = 1, st.norm_mean = (float)v[0], st.norm_std = (float)v[1];
            break;
        }
        case OPT_HALF:
            st.half = 1;
            break;
        case OPT_DROP:
            st.drop_wave = 1;
            break;
        default:
            cav_std_option(c, usage);
        }
    }
    /* Check the options once at the default rate, so a bad combination is a usage error up front. */
    {
        cav_fbank_opts o = st.o;
        o.sample_rate = st.default_rate;
        cav_err err;
        cav_fbank *fb = cav_fbank_new(&o, &err);
        if (!fb) cav_usage_error("%s", err.msg);
        cav_fbank_free(fb);
    }
    cav_err err = {0};
    cav_record rec;
    cav_record_init(&rec);
    int64_t count = 0;
    cav_progress *prog = cav_progress_start("records", 0);
    if (nwavs) {
        if (optind < argc) cav_usage_error("give either --wav/--audio files or record INPUTs, not both");
        for (int i = 0; i < nwavs; i++) cav_input_note(wavs[i]); /* the output may replace none of them */
        open_writer(output, NULL, &st, argc, argv);
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
            int64_t shape[2] = {w.channels, w.frames};
            snprintf(rate, sizeof rate, "%d", w.rate);
            cav_record_clear(&rec);
            if (cav_record_set_id(&rec, base_id(wavs[i], id, sizeof id)) ||
                !cav_record_put(&rec, "wave", w.dtype, w.channels > 1 ? 2 : 1,
                                w.channels > 1 ? shape : shape + 1, w.data) ||
                cav_attrs_set(&rec.attrs, "sample_rate", rate) ||
                cav_attrs_set(&rec.attrs, "source", wavs[i]))
                cav_die(CAV_EXIT_INTERNAL, "out of memory");
            cav_wav_free(&w);
            if (process(&st, &rec, wavs[i], 0, &err) || cav_writer_put(writer, &rec, &err)) fail(&err);
            count++;
            cav_progress_add(prog, 1);
        }
    } else {
        int ninputs = argc - optind;
        char *dash = "-";
        char **inputs = ninputs ? argv + optind : &dash;
        if (!ninputs) ninputs = 1;
        for (int i = 0; i < ninputs; i++) cav_input_note(inputs[i]); /* the output may replace none of them */
        for (int i = 0; i < ninputs; i++) {
            cav_reader *rd = cav_reader_open(inputs[i], &err);
            if (!rd) fail(&err);
            if (!writer) open_writer(output, cav_reader_attrs(rd), &st, argc, argv);
            int r;
            while ((r = cav_reader_next(rd, &rec, &err)) == 1) {
                if (process(&st, &rec, cav_reader_path(rd), cav_reader_index(rd), &err) ||
                    cav_writer_put(writer, &rec, &err))
                    fail(&err);
                count++;
                cav_progress_add(prog, 1);
            }
            if (r < 0) fail(&err);
            cav_reader_close(rd);
        }
    }
    cav_progress_end(prog);
    if (cav_writer_close(writer, &err)) {
        writer = NULL;
        fail(&err);
    }
    cav_record_clear(&rec);
    for (int i = 0; i < st.nbanks; i++) cav_fbank_free(st.banks[i]);
    free(st.samples);
    free(st.out);
    free(wavs);
    free(decode);
    (void)count;
    return 0;
}
