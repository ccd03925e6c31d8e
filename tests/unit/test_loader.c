/* test_loader.c: the training data loader on a small shard built here: evaluation batches equal the
 * per-sample transform applied in order; training batches do not depend on the thread count, a resumed
 * epoch repeats the uninterrupted one from the resume point, two ranks' slices make up the one-process
 * batch; start-up validation and a corrupt frame are reported with the shard and the row; shards of
 * waveforms give exactly the batches of the same shards after the fbank tool. */
#include "harness.h"
#include "jpeg.h"
#include "loader.h"
#include "shard.h"

#include <math.h>
#include <stdint.h>
#include <unistd.h>

#define ROWS 13
#define T 64
#define F 16
#define S 32
#define K 5

static char shard_path[256];

static int make_shard(const char *path, int corrupt_row) {
    cav_err err;
    cav_shard_writer *w = cav_shard_create(path, NULL, 0, &err);
    if (!w) return fprintf(stderr, "%s\n", err.msg), -1;
    for (int r = 0; r < ROWS; r++) {
        cav_record rec;
        cav_record_init(&rec);
        char id[32];
        snprintf(id, sizeof id, "clip%02d", r);
        cav_record_set_id(&rec, id);
        int64_t fs[2] = {T - 4 + r % 7, F}; /* some shorter, some longer than T */
        cav_tensor *fb = cav_record_add(&rec, "fbank", CAV_F32, 2, fs);
        for (int64_t i = 0; i < fs[0] * F; i++)
            ((float *)fb->data)[i] = -8.0f + (float)((i * 7 + r * 13) % 97) / 10;
        /* 10 JPEG frames, each a different flat-ish picture */
        uint8_t *rgb = malloc(S * S * 3), *all = NULL;
        int64_t off[11] = {0};
        size_t total = 0;
        for (int k = 0; k < 10; k++) {
            for (int i = 0; i < S * S * 3; i++) rgb[i] = (uint8_t)((i / 3 % S) * 4 + k * 20 + r);
            uint8_t *j;
            size_t jl;
            if (cav_jpeg_encode(rgb, S, S, 75, &j, &jl, &err)) return -1;
            if (r == corrupt_row && k == 5) jl /= 2; /* truncate the evaluation frame */
            all = realloc(all, total + jl);
            memcpy(all + total, j, jl);
            total += jl;
            off[k + 1] = (int64_t)total;
            free(j);
        }
        int64_t tot = (int64_t)total, n11 = 11, k5 = K;
        cav_record_put(&rec, "frames_jpeg", CAV_U8, 1, &tot, all);
        cav_record_put(&rec, "frames_jpeg_offsets", CAV_I64, 1, &n11, off);
        cav_tensor *lab = cav_record_add(&rec, "labels", CAV_F32, 1, &k5);
        ((float *)lab->data)[r % K] = 1.0f;
        free(rgb);
        free(all);
        if (cav_shard_append(w, &rec, &err)) return fprintf(stderr, "%s\n", err.msg), -1;
        cav_record_clear(&rec);
    }
    return cav_shard_writer_close(w, &err);
}

static cav_loader_opts opts(int train, int threads) {
    cav_loader_opts o;
    cav_loader_opts_default(&o, train);
    o.batch = 4;
    o.target_length = T;
    o.mel_bins = F;
    o.img_size = S;
    o.label_dim = K;
    o.seed = 99;
    o.threads = threads;
    o.freqm = train ? 4 : 0;
    o.timem = train ? 8 : 0;
    return o;
}

#define A_SZ (T * F)
#define V_SZ (3 * S * S)

/* Every batch of an epoch, concatenated: audio, video, labels. */
static int epoch_data(cav_loader_opts o, int epoch, int64_t start, float **out, int64_t *nout) {
    cav_err err;
    char *paths[1] = {shard_path};
    cav_loader *ld = cav_loader_open(paths, 1, &o, &err);
    if (!ld) return fprintf(stderr, "%s\n", err.msg), -1;
    if (cav_loader_begin(ld, epoch, start, &err)) return -1;
    size_t per = A_SZ + V_SZ + K, n = 0;
    float *buf = malloc(ROWS * per * sizeof *buf);
    cav_batch b;
    int rc;
    while ((rc = cav_loader_next(ld, &b, &err)) == 1) {
        for (int i = 0; i < b.n; i++, n++) {
            memcpy(buf + n * per, b.audio + (size_t)i * A_SZ, A_SZ * sizeof(float));
            memcpy(buf + n * per + A_SZ, b.video + (size_t)i * V_SZ, V_SZ * sizeof(float));
            memcpy(buf + n * per + A_SZ + V_SZ, b.labels + (size_t)i * K, K * sizeof(float));
        }
    }
    if (rc < 0) fprintf(stderr, "%s\n", err.msg);
    cav_loader_close(ld);
    *out = buf;
    *nout = (int64_t)n;
    return rc;
}

static void eval_batches_equal_per_sample_transform(void) {
    cav_loader_opts o = opts(0, 2);
    float *got;
    int64_t n;
    REQUIRE(epoch_data(o, 1, 0, &got, &n) == 0);
    CHECK(n == 12); /* 13 rows, batch 4, last partial batch dropped as the reference */
    cav_err err;
    cav_shard *s = cav_shard_open(shard_path, &err);
    REQUIRE(s);
    float *a = malloc(A_SZ * sizeof *a), *v = malloc(V_SZ * sizeof *v), l[K];
    size_t per = A_SZ + V_SZ + K;
    for (int64_t r = 0; r < n; r++) {
        cav_record rec;
        cav_record_init(&rec);
        REQUIRE(cav_shard_read(s, r, &rec, &err) == 0);
        REQUIRE(cav_loader_sample(&o, &rec, 1, r, a, v, l, &err) == 0);
        CHECK(memcmp(got + r * per, a, A_SZ * sizeof *a) == 0);
        CHECK(memcmp(got + r * per + A_SZ, v, V_SZ * sizeof *v) == 0);
        CHECK(memcmp(got + r * per + A_SZ + V_SZ, l, sizeof l) == 0);
        CHECK(l[r % K] == 1.0f);
        /* eval: no noise, so padded rows hold exactly the normalised zero; frame 5 was used */
        int64_t m = T - 4 + r % 7;
        if (m < T) CHECK(a[(T - 1) * F] == (0.0f - (-5.081f)) / 4.4849f);
        cav_record_clear(&rec);
    }
    cav_shard_close(s);
    free(a), free(v), free(got);
}

static void train_batches_independent_of_threads_and_resume(void) {
    float *one, *three, *resumed;
    int64_t n1, n3, nr;
    REQUIRE(epoch_data(opts(1, 1), 2, 0, &one, &n1) == 0);
    REQUIRE(epoch_data(opts(1, 3), 2, 0, &three, &n3) == 0);
    REQUIRE(epoch_data(opts(1, 2), 2, 2, &resumed, &nr) == 0);
    size_t per = A_SZ + V_SZ + K;
    CHECK(n1 == 12 && n3 == 12 && nr == 4);
    CHECK(memcmp(one, three, (size_t)n1 * per * sizeof(float)) == 0);
    CHECK(memcmp(one + 8 * per, resumed, 4 * per * sizeof(float)) == 0);
    /* another epoch is another order and other draws */
    float *other;
    int64_t no;
    REQUIRE(epoch_data(opts(1, 2), 3, 0, &other, &no) == 0);
    CHECK(memcmp(one, other, (size_t)n1 * per * sizeof(float)) != 0);
    free(one), free(three), free(resumed), free(other);
}

static void ranks_split_the_global_batch(void) {
    float *whole, *r0, *r1;
    int64_t nw, n0, n1;
    cav_loader_opts o = opts(1, 2), a = o, b = o;
    a.world = b.world = 2;
    a.rank = 0;
    b.rank = 1;
    REQUIRE(epoch_data(o, 1, 0, &whole, &nw) == 0);
    REQUIRE(epoch_data(a, 1, 0, &r0, &n0) == 0);
    REQUIRE(epoch_data(b, 1, 0, &r1, &n1) == 0);
    REQUIRE(n0 == 6 && n1 == 6);
    size_t per = A_SZ + V_SZ + K;
    for (int bt = 0; bt < 3; bt++) {
        CHECK(memcmp(whole + (bt * 4) * per, r0 + (bt * 2) * per, 2 * per * sizeof(float)) == 0);
        CHECK(memcmp(whole + (bt * 4 + 2) * per, r1 + (bt * 2) * per, 2 * per * sizeof(float)) == 0);
    }
    free(whole), free(r0), free(r1);
}

/* Without drop_last (cav-finetune's final evaluation) the partial last batch comes too, and a rank whose
 * slice of it is empty gets an empty batch instead of waiting for one forever (repeated: the wait raced the
 * workers); record ids by global row. */
static void partial_last_batch_over_ranks(void) {
    for (int rep = 0; rep < 20; rep++)
        for (int rank = 0; rank < 2; rank++) {
            cav_loader_opts o = opts(0, 2);
            o.batch = 12, o.drop_last = 0, o.world = 2, o.rank = rank; /* 13 rows: 12, then 1 (rank 0's) */
            cav_err err;
            char *paths[1] = {shard_path};
            cav_loader *ld = cav_loader_open(paths, 1, &o, &err);
            REQUIRE(ld);
            REQUIRE(cav_loader_batches(ld) == 2 && cav_loader_begin(ld, 1, 0, &err) == 0);
            cav_batch b;
            CHECK(cav_loader_next(ld, &b, &err) == 1 && b.n == 6 && b.rows[0] == 6 * rank);
            CHECK(cav_loader_next(ld, &b, &err) == 1 && b.n == (rank ? 0 : 1) && (rank || b.rows[0] == 12));
            CHECK(cav_loader_next(ld, &b, &err) == 0);
            CHECK(strcmp(cav_loader_id(ld, 12), "clip12") == 0 && !cav_loader_id(ld, 13));
            cav_loader_close(ld);
        }
}

static void bad_data_is_reported_with_shard_and_row(void) {
    char bad[256];
    snprintf(bad, sizeof bad, "/tmp/cav-test-loader-bad-%d.h5", (int)getpid());
    REQUIRE(make_shard(bad, 6) == 0);
    cav_loader_opts o = opts(0, 2);
    cav_err err;
    char *paths[1] = {bad};
    cav_loader *ld = cav_loader_open(paths, 1, &o, &err);
    REQUIRE(ld);
    REQUIRE(cav_loader_begin(ld, 1, 0, &err) == 0);
    cav_batch b;
    CHECK(cav_loader_next(ld, &b, &err) == 1);
    CHECK(cav_loader_next(ld, &b, &err) == -1);
    CHECK(err.code == 2 && strstr(err.msg, bad) && strstr(err.msg, "row 6") &&
          strstr(err.msg, "frames_jpeg"));
    cav_loader_close(ld);
    o.label_dim = K + 1; /* a shape the shard does not hold: refused at open */
    CHECK(cav_loader_open(paths, 1, &o, &err) == NULL && err.code == 2 && strstr(err.msg, "labels"));
    unlink(bad);
}

/* ---- waveforms instead of fbank ---- */

#define WT 64  /* frames the loader fits to */
#define WF 128 /* mel bins: the fbank tool's default */
#define WROWS 6

/* A shard of i16 waves at 16 kHz (rows from 30 to 90 frames long, one stereo; sample_rate set on some
 * rows only: absent means 16 kHz), or with one row at `bad_rate`. */
static int make_wave_shard(const char *path, const char *bad_rate) {
    cav_err err;
    cav_shard_writer *w = cav_shard_create(path, NULL, 0, &err);
    if (!w) return fprintf(stderr, "%s\n", err.msg), -1;
    uint64_t st = 5;
    for (int r = 0; r < WROWS; r++) {
        cav_record rec;
        cav_record_init(&rec);
        char id[32];
        snprintf(id, sizeof id, "wave%02d", r);
        cav_record_set_id(&rec, id);
        int ch = r == 3 ? 2 : 1;
        int64_t n = 240 + (int64_t)(30 + 12 * r) * 160, shape[2] = {ch, n};
        cav_tensor *t = cav_record_add(&rec, "wave", CAV_I16, ch == 2 ? 2 : 1, ch == 2 ? shape : shape + 1);
        int16_t *x = t->data;
        for (int64_t i = 0; i < n * ch; i++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            x[i] =
                (int16_t)(3000 * sin(0.05 * (double)(i % n) * (1 + r)) + (double)(int64_t)(st >> 52) - 2048);
        }
        if (r % 2 == 0 && cav_attrs_set(&rec.attrs, "sample_rate", r == 4 && bad_rate ? bad_rate : "16000"))
            return -1;
        if (cav_shard_append(w, &rec, &err)) return fprintf(stderr, "%s\n", err.msg), -1;
        cav_record_clear(&rec);
    }
    return cav_shard_writer_close(w, &err);
}

static cav_loader_opts wave_opts(int train) {
    cav_loader_opts o;
    cav_loader_opts_default(&o, train);
    o.batch = 2, o.target_length = WT, o.mel_bins = WF, o.need_video = 0, o.seed = 3, o.threads = 2;
    o.freqm = train ? 8 : 0, o.timem = train ? 10 : 0;
    return o;
}

/* Every batch of an epoch over the shards, audio only. */
static int audio_epoch(cav_loader_opts o, char **paths, int n, float *out, int64_t *rows) {
    cav_err err;
    cav_loader *ld = cav_loader_open(paths, n, &o, &err);
    if (!ld) return fprintf(stderr, "%s\n", err.msg), -1;
    int rc = cav_loader_begin(ld, 2, 0, &err);
    cav_batch b;
    *rows = 0;
    while (rc == 0 && (rc = cav_loader_next(ld, &b, &err)) == 1) {
        memcpy(out + *rows * WT * WF, b.audio, (size_t)b.n * WT * WF * sizeof(float));
        *rows += b.n, rc = 0;
    }
    if (rc < 0) fprintf(stderr, "%s\n", err.msg);
    cav_loader_close(ld);
    return rc;
}

/* A shard of waveforms gives the batches of the same shard after `fbank --drop-wave` (the tool's defaults),
 * bit for bit, in training (SpecAugment, noise, roll) and evaluation; a loader over both kinds of shard
 * reads each its own way; a row at another rate is refused at open, naming the shard and the field. */
static void waves_equal_fbank_tool(void) {
    char waves[256], fb[256], bad[256], cmd[2048];
    snprintf(waves, sizeof waves, "/tmp/cav-test-loader-waves-%d.h5", (int)getpid());
    snprintf(fb, sizeof fb, "/tmp/cav-test-loader-fb-%d.h5", (int)getpid());
    snprintf(bad, sizeof bad, "/tmp/cav-test-loader-rate-%d.h5", (int)getpid());
#ifdef __SANITIZE_ADDRESS__
    const char *bin = getenv("CAV_ASAN_BIN");
#else
    const char *bin = getenv("CAV_BIN");
#endif
    snprintf(cmd, sizeof cmd, "%s/fbank --drop-wave -o %s %s", bin ? bin : "build/bin", fb, waves);
    REQUIRE(make_wave_shard(waves, NULL) == 0);
    REQUIRE(system(cmd) == 0);
    float *a = malloc(2 * WROWS * WT * WF * sizeof *a), *b = malloc(2 * WROWS * WT * WF * sizeof *b);
    int64_t na, nb;
    char *pw[2] = {waves, fb}, *pf[1] = {fb};
    for (int train = 0; train < 2; train++) {
        REQUIRE(audio_epoch(wave_opts(train), pw, 1, a, &na) == 0);
        REQUIRE(audio_epoch(wave_opts(train), pf, 1, b, &nb) == 0);
        CHECK(na == WROWS && nb == WROWS);
        CHECK(memcmp(a, b, (size_t)na * WT * WF * sizeof *a) == 0);
        double d = 0;
        for (int64_t i = 0; i < na * WT * WF; i++) d = fmax(d, fabs(a[i] - b[i]));
        fprintf(stderr, "  %s: max |waves - fbank tool| %g over %lld rows\n", train ? "train" : "eval", d,
                (long long)na);
    }
    /* both shards in one loader (evaluation order: the wave rows, then the same rows from fbank) */
    REQUIRE(audio_epoch(wave_opts(0), pw, 2, a, &na) == 0);
    CHECK(na == 2 * WROWS && memcmp(a, a + WROWS * WT * WF, (size_t)WROWS * WT * WF * sizeof *a) == 0);
    /* rows shorter than WT frames are zero-padded before normalisation: row 0 has 30 frames */
    CHECK(a[(size_t)(WT - 1) * WF] == (0.0f - (-5.081f)) / 4.4849f &&
          a[(size_t)29 * WF] != a[(size_t)(WT - 1) * WF]);
    REQUIRE(make_wave_shard(bad, "44100") == 0);
    cav_loader_opts o = wave_opts(1);
    cav_err err;
    char *pb[1] = {bad};
    CHECK(cav_loader_open(pb, 1, &o, &err) == NULL && err.code == 2 && strstr(err.msg, bad) &&
          strstr(err.msg, "wave") && strstr(err.msg, "44100") && strstr(err.msg, "row 4"));
    fprintf(stderr, "  refused: %s\n", err.msg);
    unlink(waves), unlink(fb), unlink(bad);
    free(a), free(b);
}

int main(void) {
    snprintf(shard_path, sizeof shard_path, "/tmp/cav-test-loader-%d.h5", (int)getpid());
    if (make_shard(shard_path, -1)) {
        printf("FAIL setup: cannot build the test shard\n");
        return 1;
    }
    TEST(eval_batches_equal_per_sample_transform);
    TEST(train_batches_independent_of_threads_and_resume);
    TEST(ranks_split_the_global_batch);
    TEST(partial_last_batch_over_ranks);
    TEST(bad_data_is_reported_with_shard_and_row);
    TEST(waves_equal_fbank_tool);
    unlink(shard_path);
    return harness_exit();
}
