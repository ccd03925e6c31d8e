/* test_av_extract_tool.c: the av-extract tool end to end — run as a process ($CAV_BIN/av-extract, or the
 * sanitizer build $CAV_ASAN_BIN/av-extract when this test is itself the ASan build, so leaks and UB in the
 * tool fail here), its output read back through io.h and compared with the reference's preprocessing of the
 * same clips ($CAV_REF/gen_avextract, made by tests/ref/gen_avextract.py): stream and shard outputs, JPEG
 * bytes equal to PIL's, raw frames equal to OpenCV+torchvision, audio equal to ffmpeg+sox, -j 2 equal to
 * -j 1, list/stdin/JSON inputs, and bad inputs reported with reasons, counted, with the right exit codes. */
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "io.h"

static char tool[4096], ref[4096], tmp[256];

static void *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = malloc(len > 0 ? (size_t)len + 1 : 1);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) free(b), b = NULL;
    if (b) ((char *)b)[len] = 0;
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* Runs `av-extract ARGS` through the shell with stderr captured in tmp/err; returns the exit status. */
static int run(const char *args) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "cd %s && %s %s 2>%s/err", ref, tool, args, tmp);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static char *err_text(void) {
    static char *t;
    size_t n;
    free(t);
    char p[512];
    snprintf(p, sizeof p, "%s/err", tmp);
    t = slurp(p, &n);
    return t ? t : "";
}

/* Reads every record of a file; returns how many (up to max), -1 on a read error. */
static int read_all(const char *path, cav_record *recs, int max) {
    cav_err err = {0};
    cav_reader *rd = cav_reader_open(path, &err);
    if (!rd) {
        fprintf(stderr, "  %s\n", err.msg);
        return -1;
    }
    int n = 0, r = 0;
    while (n < max) {
        cav_record_init(&recs[n]);
        if ((r = cav_reader_next(rd, &recs[n], &err)) != 1) break;
        n++;
    }
    if (r < 0) fprintf(stderr, "  %s\n", err.msg);
    cav_reader_close(rd);
    return r < 0 ? -1 : n;
}

static void free_all(cav_record *recs, int n) {
    for (int i = 0; i < n; i++) cav_record_clear(&recs[i]);
}

static int file_equals(const char *rel, const void *data, size_t n) {
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", ref, rel);
    size_t m;
    void *b = slurp(p, &m);
    int eq = b && m == n && !memcmp(b, data, n);
    free(b);
    return eq;
}

static const char *clips[] = {"h264_25_640x360.mp4", "vp9_15_300x500_portrait.webm", "h264_2997_320x240.mkv",
                              "mpeg4_20_500x320.mkv"};
#define NCLIPS 4

/* Default output: JPEG q75 frames byte-identical to the reference's files, audio as ffmpeg+sox. */
static void test_stream_jpeg_matches_reference(void) {
    char args[4096] = "", out[512];
    for (int i = 0; i < NCLIPS; i++)
        snprintf(args + strlen(args), sizeof args - strlen(args), " video/%s", clips[i]);
    snprintf(out, sizeof out, "%s/a.cavs", tmp);
    char a2[8192];
    snprintf(a2, sizeof a2, "%s -o %s", args, out);
    REQUIRE(run(a2) == 0);
    CHECK(strstr(err_text(), "4 of 4 files extracted, 0 failed") != NULL);
    cav_record recs[8];
    int n = read_all(out, recs, 8);
    REQUIRE(n == NCLIPS);
    for (int i = 0; i < n; i++) {
        char name[256], rel[512];
        snprintf(name, sizeof name, "%s", clips[i]);
        *strrchr(name, '.') = 0;
        CHECK(!strcmp(recs[i].id, name));
        cav_tensor *w = cav_record_find(&recs[i], "wave"), *j = cav_record_find(&recs[i], "frames_jpeg"),
                   *o = cav_record_find(&recs[i], "frames_jpeg_offsets");
        REQUIRE(w && j && o && w->dtype == CAV_I16 && j->dtype == CAV_U8 && o->dtype == CAV_I64);
        REQUIRE(o->ndim == 1 && o->shape[0] == 11);
        snprintf(rel, sizeof rel, "audio/%s.ref.s16", name);
        CHECK(file_equals(rel, w->data, w->nbytes));
        const int64_t *off = o->data;
        CHECK(off[0] == 0 && off[10] == j->shape[0]);
        int same = 0;
        for (int k = 0; k < 10; k++) {
            snprintf(rel, sizeof rel, "video/%s.%d.jpg", name, k);
            same += off[k] < off[k + 1] && off[k + 1] <= j->shape[0] &&
                    file_equals(rel, (uint8_t *)j->data + off[k], (size_t)(off[k + 1] - off[k]));
        }
        fprintf(stderr, "  %s: %lld samples, %d/10 JPEGs byte-identical to the reference's\n", name,
                (long long)w->shape[0], same);
        CHECK(same == 10);
        CHECK(cav_attrs_get(&recs[i].attrs, "sample_rate") &&
              !strcmp(cav_attrs_get(&recs[i].attrs, "sample_rate"), "16000"));
        const char *keys[] = {"source",    "duration",    "src_sample_rate", "src_channels", "fps",
                              "container", "audio_codec", "video_codec",     "frame_index"};
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
            CHECK(cav_attrs_get(&recs[i].attrs, keys[k]) != NULL);
    }
    free_all(recs, n);
}

/* Raw frames into a shard; -j 2 writes the same records in the same order as -j 1. */
static void test_shard_raw_and_parallel(void) {
    const char *args = "video/*.mp4 video/*.mkv video/*.webm"; /* every clip, distinct ids */
    glob_t g;
    char pat[8192];
    int nclips = 0;
    const char *exts[] = {"mp4", "mkv", "webm"};
    for (int k = 0; k < 3; k++) {
        snprintf(pat, sizeof pat, "%s/video/*.%s", ref, exts[k]);
        if (glob(pat, 0, NULL, &g) == 0) nclips += (int)g.gl_pathc;
        globfree(&g);
    }
    REQUIRE(nclips >= 8 && nclips <= 16);
    char a1[8192], a2[8192], o1[512], o2[512];
    snprintf(o1, sizeof o1, "%s/j1.h5", tmp);
    snprintf(o2, sizeof o2, "%s/j2.h5", tmp);
    snprintf(a1, sizeof a1, "--raw -j 1 %s -o %s", args, o1);
    snprintf(a2, sizeof a2, "--raw -j 2 %s -o %s", args, o2);
    REQUIRE(run(a1) == 0);
    REQUIRE(run(a2) == 0);
    static cav_record r1[16], r2[16];
    int n1 = read_all(o1, r1, 16), n2 = read_all(o2, r2, 16);
    REQUIRE(n1 == nclips && n2 == n1);
    for (int i = 0; i < n1; i++) {
        CHECK(cav_record_equal(&r1[i], &r2[i]));
        cav_tensor *f = cav_record_find(&r1[i], "frames");
        REQUIRE(f && f->dtype == CAV_U8 && f->ndim == 4 && f->shape[0] == 10 && f->shape[1] == 224 &&
                f->shape[2] == 224 && f->shape[3] == 3);
        char rel[512];
        snprintf(rel, sizeof rel, "video/%s.frames.u8", r1[i].id);
        CHECK(file_equals(rel, f->data, f->nbytes)); /* OpenCV seek+read, torchvision Resize+CenterCrop */
    }
    free_all(r1, n1);
    free_all(r2, n2);
}

/* Inputs from a list on stdin and from the reference's JSON; --audio-only on audio files; --downmix. */
static void test_inputs_and_sides(void) {
    char a[8192], out[512], js[512];
    snprintf(out, sizeof out, "%s/l.cavs", tmp);
    char lst[512];
    snprintf(lst, sizeof lst, "%s/list.txt", tmp);
    FILE *lf = fopen(lst, "w");
    REQUIRE(lf);
    fprintf(lf, "# comment\naudio/flac_48k_6ch.flac\n\n  audio/opus_48k_st.opus\r\n");
    fclose(lf);
    snprintf(a, sizeof a, "--audio-only --downmix -l - -o %s < %s", out, lst);
    REQUIRE(run(a) == 0);
    cav_record recs[4];
    int n = read_all(out, recs, 4);
    REQUIRE(n == 2);
    CHECK(!strcmp(recs[0].id, "flac_48k_6ch") && !strcmp(recs[1].id, "opus_48k_st"));
    cav_tensor *w = cav_record_find(&recs[0], "wave");
    REQUIRE(w);
    CHECK(file_equals("audio/flac_48k_6ch.mix.s16", w->data, w->nbytes));
    CHECK(cav_record_find(&recs[0], "frames_jpeg") == NULL && cav_record_find(&recs[0], "frames") == NULL);
    free_all(recs, n);

    snprintf(js, sizeof js, "%s/d.json", tmp);
    FILE *f = fopen(js, "w");
    REQUIRE(f);
    fprintf(f, "{\"data\": [{\"video_id\": \"clipA\", \"wav\": \"audio/wav_s16_44k_st.wav\", \"labels\": "
               "\"/m/09x0r\"},\n"
               "          {\"video_id\": \"clipB\", \"wav\": \"audio/aac_32k_mono.m4a\", \"labels\": "
               "\"/m/0jbk\"}]}\n");
    fclose(f);
    snprintf(a, sizeof a, "--audio-only --max-seconds 2.5 --json %s -o %s", js, out);
    REQUIRE(run(a) == 0);
    n = read_all(out, recs, 4);
    REQUIRE(n == 2);
    CHECK(!strcmp(recs[0].id, "clipA") && !strcmp(recs[1].id, "clipB"));
    w = cav_record_find(&recs[0], "wave");
    REQUIRE(w && w->shape[0] == 40000);
    size_t m;
    char p[8192];
    snprintf(p, sizeof p, "%s/audio/wav_s16_44k_st.ref.s16", ref);
    void *full = slurp(p, &m);
    CHECK(full && !memcmp(full, w->data, w->nbytes)); /* a prefix of the whole-file result */
    free(full);
    free_all(recs, n);

    snprintf(a, sizeof a, "--video-only --raw video/vp9_24_480x270.webm bad/no_audio.mp4 -o %s", out);
    REQUIRE(run(a) == 0); /* no audio is fine when only frames are wanted */
    n = read_all(out, recs, 4);
    CHECK(n == 2 && cav_record_find(&recs[0], "wave") == NULL && cav_record_find(&recs[1], "frames") != NULL);
    free_all(recs, n > 0 ? n : 0);
}

/* Bad inputs: each reported with its reason, counted in the summary; skip goes on, fail stops. */
static void test_bad_inputs(void) {
    char a[8192], out[512];
    snprintf(out, sizeof out, "%s/b.cavs", tmp);
    snprintf(a, sizeof a,
             "bad/does-not-exist.mp4 bad/no_audio.mp4 video/h264_25_short_4s.mp4 bad/no_video.m4a "
             "bad/truncated.mkv "
             "bad/truncated_head.mp4 bad/garbage.mp4 bad/empty.mp4 -j 2 -o %s",
             out);
    CHECK(run(a) == 0);
    const char *e = err_text();
    fprintf(stderr, "%s", e);
    CHECK(strstr(e, "bad/does-not-exist.mp4: open: ") != NULL);
    CHECK(strstr(e, "bad/no_audio.mp4: no-audio: ") != NULL);
    CHECK(strstr(e, "bad/no_video.m4a: no-video: ") != NULL);
    CHECK(strstr(e, "bad/truncated.mkv: corrupt: ") != NULL);
    CHECK(strstr(e, "bad/garbage.mp4: corrupt: ") != NULL);
    CHECK(strstr(e, "1 of 8 files extracted, 7 failed (open 1, no-audio 1, no-video 1, corrupt 4)") != NULL);
    cav_record recs[2];
    CHECK(read_all(out, recs, 2) == 1);
    free_all(recs, 1);

    snprintf(a, sizeof a, "bad/garbage.mp4 bad/empty.mp4 -o %s", out);
    CHECK(run(a) == 2); /* nothing extracted */
    CHECK(strstr(err_text(), "0 of 2 files extracted, 2 failed (corrupt 2)") != NULL);
    snprintf(a, sizeof a,
             "--on-error fail video/h264_25_short_4s.mp4 bad/no_audio.mp4 video/h264_25_short_4s.mp4 -o %s",
             out);
    CHECK(run(a) == 2);
    CHECK(strstr(err_text(), "1 of 3 files extracted, 1 failed (no-audio 1) (stopped early)") != NULL);
    CHECK(run("--jobs 0 x.mp4") == 1);
    CHECK(run("--on-error maybe x.mp4") == 1);
    CHECK(run("") == 1);
    CHECK(run("--audio-only --video-only x.mp4") == 1);
    /* a shard refuses a second record with the same id: counted as rejected, the batch goes on */
    snprintf(a, sizeof a, "video/h264_25_short_4s.mp4 video/h264_25_short_4s.mp4 -o %s/dup.h5", tmp);
    CHECK(run(a) == 0);
    CHECK(strstr(err_text(), "1 of 2 files extracted, 1 failed (rejected 1)") != NULL);
}

int main(void) {
    const char *r = getenv("CAV_REF");
#ifdef __SANITIZE_ADDRESS__
    const char *bin = getenv("CAV_ASAN_BIN");
#else
    const char *bin = getenv("CAV_BIN");
#endif
    snprintf(ref, sizeof ref, "%s/gen_avextract", r ? r : "build/ref");
    snprintf(tool, sizeof tool, "%s/av-extract", bin ? bin : "build/bin");
    snprintf(tmp, sizeof tmp, "/tmp/test_av_extract.XXXXXX");
    if (!mkdtemp(tmp)) return 1;
    if (access(tool, X_OK) || access(ref, R_OK)) {
        printf("FAIL setup: %s or %s missing\n", tool, ref);
        return 1;
    }
    TEST(test_stream_jpeg_matches_reference);
    TEST(test_shard_raw_and_parallel);
    TEST(test_inputs_and_sides);
    TEST(test_bad_inputs);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd)) fprintf(stderr, "cannot remove %s\n", tmp);
    return harness_exit();
}
