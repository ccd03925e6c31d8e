/* test_mixup.c: the training loader's mixup, label smoothing and balanced sampling (cav-numerics(7) 1.7,
 * 1.8). Against tests/ref/gen_mixup.py (the reference dataloader's mixup reimplemented with torch and
 * torchaudio on real clips, for a given partner, lambda and frames): the mixed audio to 1e-4 (the limit
 * fbank(1) keeps to torchaudio), the mixed image and the target vector to 1e-6, one line per case. On shards
 * built here: the mixup draws (rate p, lambda ~ Beta(10, 10), partners over all rows, none in evaluation);
 * every sample of the loader's batches equals the per-sample hook given the drawn partner's record (waves
 * mixed when both shards hold them, fbanks otherwise); --bal draw frequencies against the weights
 * (chi-square), zero weights never drawn, the same rows on every rank; a resumed epoch with mixup and bal
 * repeats the uninterrupted one; shards without a usable `weight` are refused naming the shard. */
#include "clip.h"
#include "harness.h"
#include "loader.h"
#include "shard.h"
#include "testdata.h"

#include <math.h>
#include <stdint.h>
#include <unistd.h>

#define GEN "gen_mixup"

static int K_, S_;
static double EPS_;

static void report(int ok, const char *name, const char *detail) {
    if (!ok) harness_failed_tests++;
    printf("%s mixup_ref_%s%s %s\n", ok ? "PASS" : "FAIL", name, ok ? "" : ":", detail);
    fflush(stdout);
}

/* A record of clip `name` from the golden files: its `wave` (as_fbank 0) or torchaudio's `fbank`
 * (as_fbank 1), its 10 raw frames and its labels. 0 ok. */
static int load_clip(const char *name, int as_fbank, cav_record *rec) {
    char fn[256];
    size_t n;
    cav_record_init(rec);
    cav_record_set_id(rec, name);
    snprintf(fn, sizeof fn, "%s.%s", name, as_fbank ? "fbank" : "s16");
    void *audio = ref_read(GEN, fn, &n);
    snprintf(fn, sizeof fn, "%s.rgb", name);
    void *rgb = ref_read(GEN, fn, NULL);
    snprintf(fn, sizeof fn, "%s.lab", name);
    size_t nl;
    float *lab = ref_read(GEN, fn, &nl);
    int rc = -1;
    if (audio && rgb && lab && nl == (size_t)K_ * sizeof(float)) {
        int64_t fshape[4] = {10, S_, S_, 3};
        rc = (as_fbank ? cav_clip_put_fbank(rec, 0, (int64_t)(n / (128 * sizeof(float))), 128, audio)
                       : cav_clip_put_wave(rec, CAV_I16, 1, (int64_t)(n / 2), audio)) ||
                     !cav_record_put(rec, CAV_FIELD_FRAMES, CAV_U8, 4, fshape, rgb) ||
                     cav_clip_put_labels(rec, lab, K_, 1.0f)
                 ? -1
                 : 0;
    }
    free(audio), free(rgb), free(lab);
    return rc;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d; /* NaN propagates as a failure */
    }
    return m;
}

static void one_case(const char *line) {
    char name[64], mode[16], a[64], b[64];
    double lambda;
    int f1, f2;
    if (sscanf(line, "%63s %15s %63s %63s %lf %d %d", name, mode, a, b, &lambda, &f1, &f2) != 7) {
        report(0, "index", "unparsable line in index.txt");
        return;
    }
    int fbank_only = strcmp(mode, "fbank") == 0, none = strcmp(mode, "none") == 0;
    cav_record r1, r2;
    if (load_clip(a, fbank_only, &r1) || (!none && load_clip(b, fbank_only, &r2))) {
        report(0, name, "cannot read the clips (run make refs)");
        return;
    }
    cav_loader_opts o;
    cav_loader_opts_default(&o, 1);
    o.target_length = 1024, o.mel_bins = 128, o.img_size = S_, o.label_dim = K_;
    o.label_smooth = EPS_, o.mixup = 0.5;
    o.freqm = o.timem = 0, o.noise = o.roll = 0; /* draws the reference's cannot match: off */
    o.frame = f1;
    cav_loader_mix mix = {lambda, f2};
    size_t A = (size_t)1024 * 128, V = (size_t)3 * S_ * S_;
    float *audio = malloc(A * sizeof(float)), *video = malloc(V * sizeof(float)),
          *lab = malloc(K_ * sizeof(float));
    cav_err err = {0};
    int rc = cav_loader_sample_mix(&o, &r1, none ? NULL : &r2, &mix, 1, 0, audio, video, lab, &err);
    char fn[128], detail[1400];
    snprintf(fn, sizeof fn, "%s.audio", name);
    char path[4096];
    float *ea = read_f32(ref_path(path, sizeof path, GEN, fn), A);
    snprintf(fn, sizeof fn, "%s.image", name);
    float *ev = read_f32(ref_path(path, sizeof path, GEN, fn), V);
    snprintf(fn, sizeof fn, "%s.label", name);
    float *el = read_f32(ref_path(path, sizeof path, GEN, fn), (size_t)K_);
    if (rc || !ea || !ev || !el) {
        snprintf(detail, sizeof detail, "%s", rc ? err.msg : "missing expected files");
        report(0, name, detail);
    } else {
        double da = max_diff(audio, ea, A), dv = max_diff(video, ev, V), dl = max_diff(lab, el, (size_t)K_);
        snprintf(detail, sizeof detail,
                 "(%s %s + %s, lambda %.4f): max |audio| diff %.3g, image %.3g, labels %.3g", mode, a,
                 none ? "-" : b, lambda, da, dv, dl);
        report(da <= 1e-4 && dv <= 1e-6 && dl <= 1e-6, name, detail);
    }
    cav_record_clear(&r1);
    if (!none) cav_record_clear(&r2);
    free(audio), free(video), free(lab), free(ea), free(ev), free(el);
}

static int reference_cases(void) {
    char path[4096];
    if (!ref_path(path, sizeof path, GEN, "index.txt"))
        return printf("FAIL mixup_ref: CAV_REF is not set\n"), 1;
    FILE *f = fopen(path, "r");
    if (!f) return printf("FAIL mixup_ref: no golden data at %s (run make refs)\n", path), 1;
    char line[512];
    int cases = 0;
    if (!fgets(line, sizeof line, f) || sscanf(line, "clips %d %d %lf", &K_, &S_, &EPS_) != 3) {
        fclose(f);
        return printf("FAIL mixup_ref: index.txt has no clips line\n"), 1;
    }
    while (fgets(line, sizeof line, f))
        if (line[0] != '\n') one_case(line), cases++;
    fclose(f);
    if (cases < 5) report(0, "index", "fewer than 5 cases in index.txt");
    return 0;
}

/* ---- draws ------------------------------------------------------------------------------------------ */

/* Rate p, lambda's Beta(10, 10) mean and variance, partners over every row; nothing in evaluation or at
 * mixup 0; the draws are a function of (seed, epoch, position). */
static void mix_draws(void) {
    cav_loader_opts o;
    cav_loader_opts_default(&o, 1);
    o.mixup = 0.3, o.seed = 5;
    const int N = 40000, ROWS = 7;
    int mixed = 0, hit[7] = {0}, frames[10] = {0};
    double s = 0, s2 = 0;
    for (int i = 0; i < N; i++) {
        int64_t p = -1, p2 = -1;
        cav_loader_mix m, m2;
        int on = cav_loader_mix_draw(&o, ROWS, 2, i, &p, &m);
        CHECK(on == cav_loader_mix_draw(&o, ROWS, 2, i, &p2, &m2));
        if (!on) continue;
        CHECK(p == p2 && m.lambda == m2.lambda && m.partner_frame == m2.partner_frame);
        REQUIRE(p >= 0 && p < ROWS && m.lambda > 0 && m.lambda < 1 && m.partner_frame >= 0 &&
                m.partner_frame < 10);
        mixed++, hit[p]++, frames[m.partner_frame]++;
        s += m.lambda, s2 += m.lambda * m.lambda;
    }
    /* binomial: 0.3 N +- 5 sigma */
    CHECK(fabs(mixed - 0.3 * N) < 5 * sqrt(N * 0.3 * 0.7));
    double mean = s / mixed, var = s2 / mixed - mean * mean;
    CHECK_NEAR(mean, 0.5, 5 * sqrt(100.0 / (400 * 21) / mixed));
    CHECK_NEAR(var, 100.0 / (400 * 21), 0.001); /* Beta(10, 10): ab / ((a + b)^2 (a + b + 1)) */
    for (int r = 0; r < ROWS; r++) CHECK(fabs(hit[r] - mixed / 7.0) < 5 * sqrt(mixed / 7.0));
    for (int k = 0; k < 10; k++) CHECK(frames[k] > 0);
    int64_t p;
    cav_loader_mix m;
    int other = 0;
    for (int i = 0; i < 200; i++)
        other += cav_loader_mix_draw(&o, ROWS, 3, i, &p, &m) != cav_loader_mix_draw(&o, ROWS, 2, i, &p, &m);
    CHECK(other > 0); /* another epoch, other draws */
    o.mixup = 0;
    for (int i = 0; i < 100; i++) CHECK(cav_loader_mix_draw(&o, ROWS, 2, i, &p, &m) == 0);
    cav_loader_opts_default(&o, 0);
    o.mixup = 1;
    for (int i = 0; i < 100; i++) CHECK(cav_loader_mix_draw(&o, ROWS, 2, i, &p, &m) == 0);
}

/* ---- the loader on shards -------------------------------------------------------------------------- */

#define ROWS 12
#define T 48
#define F 32
#define S 16
#define K 6

/* Row r: a tone of its own pitch (`wave`, i16, 0.3 to 0.5 s), its fbank when with_fbank (any values: the
 * loader must read it only when a row is not mixed), 10 raw frames, class r % K, weight w(r) (none when
 * weights is 0; row 5 weighs 0). */
static float weight_of(int r) {
    return r == 5 ? 0.0f : (float)(1 + r % 4);
}

static int make_shard(const char *path, int with_wave, int with_fbank, int weights, int first_row) {
    cav_err err;
    cav_shard_writer *w = cav_shard_create(path, NULL, 0, &err);
    if (!w) return fprintf(stderr, "%s\n", err.msg), -1;
    for (int r = first_row; r < first_row + ROWS; r++) {
        cav_record rec;
        cav_record_init(&rec);
        char id[32];
        snprintf(id, sizeof id, "clip%02d", r);
        cav_record_set_id(&rec, id);
        int64_t n = 4800 + 160 * (r % 13);
        if (with_wave) {
            cav_tensor *t = cav_record_add(&rec, CAV_FIELD_WAVE, CAV_I16, 1, &n);
            for (int64_t i = 0; i < n; i++)
                ((int16_t *)t->data)[i] =
                    (int16_t)(8000 * sin(0.01 * (double)i * (3 + r)) + 100 * ((i * 7 + r) % 5));
        }
        if (with_fbank) {
            int64_t fs[2] = {T - 6 + r % 9, F};
            cav_tensor *t = cav_record_add(&rec, CAV_FIELD_FBANK, CAV_F32, 2, fs);
            for (int64_t i = 0; i < fs[0] * F; i++)
                ((float *)t->data)[i] = -9.0f + (float)((i * 5 + r * 3) % 89) / 9;
        }
        int64_t fsh[4] = {10, S, S, 3};
        cav_tensor *fr = cav_record_add(&rec, CAV_FIELD_FRAMES, CAV_U8, 4, fsh);
        for (int64_t i = 0; i < 10 * S * S * 3; i++) ((uint8_t *)fr->data)[i] = (uint8_t)(i * 3 + r * 17);
        float lab[K] = {0};
        lab[r % K] = 1;
        if (weights) {
            if (cav_clip_put_labels(&rec, lab, K, weight_of(r))) return -1;
            if (weights < 0 && r == first_row + 3)
                ((float *)cav_record_find(&rec, CAV_FIELD_WEIGHT)->data)[0] = -1;
        } else {
            int64_t k = K;
            cav_record_put(&rec, CAV_FIELD_LABELS, CAV_F32, 1, &k, lab);
        }
        if (cav_shard_append(w, &rec, &err)) return fprintf(stderr, "%s\n", err.msg), -1;
        cav_record_clear(&rec);
    }
    return cav_shard_writer_close(w, &err);
}

static cav_loader_opts shard_opts(void) {
    cav_loader_opts o;
    cav_loader_opts_default(&o, 1);
    o.batch = 4, o.target_length = T, o.mel_bins = F, o.img_size = S, o.label_dim = K, o.seed = 11;
    o.threads = 2, o.freqm = 6, o.timem = 8, o.label_smooth = 0.1, o.mixup = 0.6;
    return o;
}

/* Every sample of epoch 3 over paths equals cav_loader_sample_mix on the rows' records (cav_shard_read:
 * every field) with the partner cav_loader_mix_draw gives; counts the mixed samples. */
static void batches_equal_hook(char **paths, int npaths, int *mixed_out) {
    cav_loader_opts o = shard_opts();
    cav_err err;
    cav_loader *ld = cav_loader_open(paths, npaths, &o, &err);
    REQUIRE(ld || (fprintf(stderr, "%s\n", err.msg), 0));
    REQUIRE(cav_loader_begin(ld, 3, 0, &err) == 0);
    size_t A = (size_t)T * F, V = (size_t)3 * S * S;
    float *a = malloc(A * sizeof *a), *v = malloc(V * sizeof *v), l[K];
    cav_batch b;
    int64_t pos = 0;
    int mixed = 0, bad = 0;
    while (cav_loader_next(ld, &b, &err) == 1) {
        for (int i = 0; i < b.n; i++, pos++) {
            int64_t prow;
            cav_loader_mix m;
            int on = cav_loader_mix_draw(&o, cav_loader_rows(ld), 3, pos, &prow, &m);
            cav_record r1, r2;
            cav_record_init(&r1), cav_record_init(&r2);
            int64_t row = b.rows[i];
            cav_shard *s1 = cav_shard_open(paths[row / ROWS], &err);
            REQUIRE(s1 && cav_shard_read(s1, row % ROWS, &r1, &err) == 0);
            cav_shard_close(s1);
            if (on) {
                cav_shard *s2 = cav_shard_open(paths[prow / ROWS], &err);
                REQUIRE(s2 && cav_shard_read(s2, prow % ROWS, &r2, &err) == 0);
                cav_shard_close(s2);
                mixed++;
            }
            REQUIRE(cav_loader_sample_mix(&o, &r1, on ? &r2 : NULL, &m, 3, pos, a, v, l, &err) == 0);
            bad += memcmp(a, b.audio + i * A, A * sizeof *a) != 0 ||
                   memcmp(v, b.video + i * V, V * sizeof *v) != 0 ||
                   memcmp(l, b.labels + i * K, sizeof l) != 0;
            cav_record_clear(&r1), cav_record_clear(&r2);
        }
    }
    CHECK(pos == 12 * npaths && bad == 0);
    *mixed_out = mixed;
    free(a), free(v);
    cav_loader_close(ld);
}

static char dir[128];

/* out (256 bytes): the shard NAME in the test's directory */
static char *shard_path(char *out, const char *name) {
    snprintf(out, 256, "%s/%s", dir, name);
    return out;
}

static void loader_batches_use_the_draws(void) {
    char p1[256], p2[256], p3[256];
    shard_path(p1, "both.h5");
    shard_path(p2, "wave.h5");
    shard_path(p3, "fbank.h5");
    REQUIRE(make_shard(p1, 1, 1, 1, 0) == 0 && make_shard(p2, 1, 0, 1, 12) == 0 &&
            make_shard(p3, 0, 1, 1, 24) == 0);
    int mixed;
    char *waves[2] = {p1, p2}, *all[3] = {p1, p2, p3};
    batches_equal_hook(waves, 2, &mixed); /* mixed: waveforms; not mixed: the stored fbank (p1), or wave */
    CHECK(mixed > 4 && mixed < 20);
    batches_equal_hook(all, 3, &mixed); /* a partner in the fbank-only shard: fbanks mixed */
    CHECK(mixed > 6 && mixed < 30);
}

/* A mixed sample's targets: eps/K + lambda(1 - eps) on the first's class, eps/K + (1 - lambda)(1 - eps) on
 * the partner's (both when the same class); unmixed: 1 - eps and eps/K. */
static void targets_follow_the_draw(void) {
    char p1[256];
    shard_path(p1, "both.h5");
    cav_loader_opts o = shard_opts();
    cav_err err;
    char *paths[1] = {p1};
    cav_loader *ld = cav_loader_open(paths, 1, &o, &err);
    REQUIRE(ld && cav_loader_begin(ld, 1, 0, &err) == 0);
    cav_batch b;
    int64_t pos = 0;
    while (cav_loader_next(ld, &b, &err) == 1)
        for (int i = 0; i < b.n; i++, pos++) {
            int64_t prow;
            cav_loader_mix m;
            float want[K];
            int on = cav_loader_mix_draw(&o, ROWS, 1, pos, &prow, &m);
            for (int k = 0; k < K; k++) {
                double v = 0.1 / K;
                if (!on && k == b.rows[i] % K) v = 0.9;
                if (on && k == b.rows[i] % K) v += m.lambda * 0.9;
                if (on && k == prow % K) v += (1 - m.lambda) * 0.9;
                want[k] = (float)v;
            }
            CHECK(memcmp(want, b.labels + i * K, sizeof want) == 0);
        }
    cav_loader_close(ld);
}

/* The upper 1e-4 quantile of chi-square with df degrees of freedom (Wilson-Hilferty; z = 3.719). */
static double chi2_limit(int df) {
    double c = 2.0 / (9.0 * df);
    return df * pow(1 - c + 3.719 * sqrt(c), 3);
}

/* Draw frequencies over 400 epochs against weight / sum (chi-square, zero-weight row excluded and never
 * drawn); two ranks take the one-process rows; a different seed draws differently. */
static void bal_frequencies_match_weights(void) {
    char p1[256], p2[256];
    shard_path(p1, "both.h5");
    shard_path(p2, "wave.h5");
    char *paths[2] = {p1, p2};
    cav_loader_opts o = shard_opts();
    o.bal = 1, o.need_audio = o.need_video = 0, o.label_dim = 0, o.batch = 24, o.threads = 1;
    cav_err err;
    cav_loader *ld = cav_loader_open(paths, 2, &o, &err);
    REQUIRE(ld || (fprintf(stderr, "%s\n", err.msg), 0));
    cav_loader_opts o1 = o;
    o1.world = 2, o1.rank = 1;
    cav_loader *l1 = cav_loader_open(paths, 2, &o1, &err);
    REQUIRE(l1);
    const int E = 400;
    long count[2 * ROWS] = {0};
    int ranks_agree = 1;
    for (int e = 1; e <= E; e++) {
        cav_batch b, b1;
        REQUIRE(cav_loader_begin(ld, e, 0, &err) == 0 && cav_loader_begin(l1, e, 0, &err) == 0);
        REQUIRE(cav_loader_next(ld, &b, &err) == 1 && cav_loader_next(l1, &b1, &err) == 1);
        for (int i = 0; i < b.n; i++) count[b.rows[i]]++;
        ranks_agree &= b1.n == 12 && memcmp(b1.rows, b.rows + 12, 12 * sizeof *b.rows) == 0;
    }
    CHECK(ranks_agree);
    double total = 0, chi = 0;
    for (int r = 0; r < 2 * ROWS; r++) total += weight_of(r);
    int df = -1;
    for (int r = 0; r < 2 * ROWS; r++) {
        double expect = (double)E * 2 * ROWS * weight_of(r) / total;
        if (expect == 0) {
            CHECK(count[r] == 0);
            continue;
        }
        chi += (count[r] - expect) * (count[r] - expect) / expect, df++;
    }
    fprintf(stderr, "  bal: chi-square %.2f with %d degrees of freedom (limit %.2f at p = 1e-4)\n", chi, df,
            chi2_limit(df));
    CHECK(chi < chi2_limit(df));
    CHECK(chi > 1); /* not the expected counts themselves */
    cav_loader_close(ld);
    cav_loader_close(l1);
}

/* With mixup and bal, epoch 2 resumed at batch 2 repeats the uninterrupted epoch from there, whatever the
 * thread count. */
static void resume_with_mixup_and_bal_exact(void) {
    char p1[256], p2[256];
    shard_path(p1, "both.h5");
    shard_path(p2, "fbank.h5");
    char *paths[2] = {p1, p2};
    cav_loader_opts o = shard_opts();
    o.bal = 1;
    size_t per = (size_t)T * F + 3 * S * S + K;
    float *whole = malloc(6 * 4 * per * sizeof(float)), *res = malloc(6 * 4 * per * sizeof(float));
    int64_t rows_w[24], rows_r[24];
    for (int pass = 0; pass < 2; pass++) {
        o.threads = pass ? 3 : 1;
        cav_err err;
        cav_loader *ld = cav_loader_open(paths, 2, &o, &err);
        REQUIRE(ld && cav_loader_begin(ld, 2, pass ? 2 : 0, &err) == 0);
        float *out = pass ? res : whole;
        int64_t *rows = pass ? rows_r : rows_w;
        cav_batch b;
        int at = 0;
        while (cav_loader_next(ld, &b, &err) == 1)
            for (int i = 0; i < b.n; i++, at++) {
                memcpy(out + at * per, b.audio + i * T * F, (size_t)T * F * sizeof(float));
                memcpy(out + at * per + T * F, b.video + i * 3 * S * S, (size_t)3 * S * S * sizeof(float));
                memcpy(out + at * per + T * F + 3 * S * S, b.labels + i * K, K * sizeof(float));
                rows[at] = b.rows[i];
            }
        CHECK(at == (pass ? 16 : 24));
        cav_loader_close(ld);
    }
    CHECK(memcmp(whole + 8 * per, res, 16 * per * sizeof(float)) == 0);
    CHECK(memcmp(rows_w + 8, rows_r, 16 * sizeof *rows_r) == 0);
    free(whole), free(res);
}

/* --bal on a shard without `weight`, or with a negative one, is refused at open naming the shard (and
 * the row); evaluation loaders ignore bal. */
static void bal_needs_weights(void) {
    char p1[256], p2[256];
    shard_path(p1, "noweight.h5");
    shard_path(p2, "negweight.h5");
    REQUIRE(make_shard(p1, 0, 1, 0, 0) == 0 && make_shard(p2, 0, 1, -1, 0) == 0);
    cav_loader_opts o = shard_opts();
    o.bal = 1;
    cav_err err;
    char *a[1] = {p1}, *b[1] = {p2};
    CHECK(cav_loader_open(a, 1, &o, &err) == NULL && err.code == 2 && strstr(err.msg, p1) &&
          strstr(err.msg, "field weight"));
    CHECK(cav_loader_open(b, 1, &o, &err) == NULL && err.code == 2 && strstr(err.msg, p2) &&
          strstr(err.msg, "row 3") && strstr(err.msg, "weight"));
    o.train = 0;
    cav_loader *ld = cav_loader_open(a, 1, &o, &err);
    CHECK(ld != NULL);
    cav_loader_close(ld);
}

int main(void) {
    int st = reference_cases();
    snprintf(dir, sizeof dir, "/tmp/cav-test-mixup-%d", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    if (system(cmd)) return 1;
    TEST(mix_draws);
    TEST(loader_batches_use_the_draws);
    TEST(targets_follow_the_draw);
    TEST(bal_frequencies_match_weights);
    TEST(resume_with_mixup_and_bal_exact);
    TEST(bal_needs_weights);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "cannot remove %s\n", dir);
    return st ? st : harness_exit();
}
