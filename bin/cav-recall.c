/* cav-recall: audio-visual retrieval metrics of the reference (SPEC 4, src/retrieval.py) from embedding
 * records (cav-embed's output): the cosine similarity matrix dot / (|a| |b|), and per direction the rank of
 * every query's own item, R@1, R@5, R@10 and the median rank, as one CSV line like its
 * retrieval_result.csv. The metrics themselves are lib/train/metrics.c. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "clip.h"
#include "io.h"
#include "metrics.h"

static const char usage[] =
    "Usage: cav-recall [OPTION]... [INPUT]...\n"
    "Audio->visual and visual->audio retrieval (R@1, R@5, R@10, median rank) over embedding records (id,\n"
    "emb_a, emb_v: what cav-embed writes) read from shards or record streams ('-', the default: stdin).\n"
    "Record i's audio and visual embeddings are the matching pair. Prints one CSV line per direction:\n"
    "dataset,direction,R1,R5,R10,MR (direction video: visual queries; audio: audio queries).\n"
    "\n"
    "      --dataset NAME       first CSV field (default: the first input's base name, 'stdin' for '-')\n"
    "      --direction D        audio, video or both (default: both, video first, as the reference)\n"
    "      --ranks FILE         write each query's rank: direction,index,id,rank,ties (CSV with a header)\n"
    "      --ties MODE          reference (default): a diagonal tied with k other columns counts k+1 hits\n"
    "                           at rank..rank+k, as np.where in compute_metrics; first: one hit per query,\n"
    "                           at the first position of its value\n"
    "  -o, --out FILE           the CSV lines (default: stdout)\n"
    "      --help, --version\n"
    "\n"
    "Exit status: 0 ok, 1 usage, 2 bad input (file, record and field named), 3 internal failure.\n";

enum { O_DATASET = 0x100, O_DIRECTION, O_RANKS, O_TIES };

typedef struct {
    int64_t n, cap;
    int D;
    char **ids;
    float *a, *v; /* [n, D] */
} embs;

static void add(embs *e, const cav_record *rec, const char *path, int64_t idx) {
    const cav_tensor *t[2] = {cav_record_find(rec, CAV_FIELD_EMB_A), cav_record_find(rec, CAV_FIELD_EMB_V)};
    const char *names[2] = {CAV_FIELD_EMB_A, CAV_FIELD_EMB_V};
    for (int k = 0; k < 2; k++) {
        if (!t[k]) cav_die(CAV_EXIT_INPUT, "%s: record %lld (%s): no field %s", path, (long long)idx, rec->id, names[k]);
        if (t[k]->dtype != CAV_F32 || t[k]->ndim != 1 || t[k]->shape[0] < 1)
            cav_die(CAV_EXIT_INPUT, "%s: record %lld (%s): field %s: expected f32 [D]", path, (long long)idx, rec->id,
                    names[k]);
        if (!e->D) e->D = (int)t[k]->shape[0];
        if (t[k]->shape[0] != e->D)
            cav_die(CAV_EXIT_INPUT, "%s: record %lld (%s): field %s: %lld values, earlier records have %d", path,
                    (long long)idx, rec->id, names[k], (long long)t[k]->shape[0], e->D);
    }
    if (e->n == e->cap) {
        e->cap = e->cap ? 2 * e->cap : 256;
        char **ids = realloc(e->ids, (size_t)e->cap * sizeof *ids);
        if (ids) e->ids = ids;
        float *a = realloc(e->a, (size_t)e->cap * e->D * sizeof *a);
        if (a) e->a = a;
        float *v = realloc(e->v, (size_t)e->cap * e->D * sizeof *v);
        if (v) e->v = v;
        if (!ids || !a || !v) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    }
    memcpy(e->a + (size_t)e->n * e->D, t[0]->data, (size_t)e->D * sizeof(float));
    memcpy(e->v + (size_t)e->n * e->D, t[1]->data, (size_t)e->D * sizeof(float));
    if (!(e->ids[e->n++] = strdup(rec->id ? rec->id : ""))) cav_die(CAV_EXIT_INTERNAL, "out of memory");
}

/* sim[i][j] = q_i . k_j / (|q_i| |k_j|), in double (the reference: get_sim_mat's double loop). */
static void similarity(const float *q, const float *k, int64_t n, int D, double *sim) {
    double *nq = malloc((size_t)n * sizeof *nq), *nk = malloc((size_t)n * sizeof *nk);
    if (!nq || !nk) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        double sq = 0, sk = 0;
        for (int d = 0; d < D; d++) sq += (double)q[i * D + d] * q[i * D + d], sk += (double)k[i * D + d] * k[i * D + d];
        nq[i] = sqrt(sq), nk[i] = sqrt(sk);
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double dot = 0;
            for (int d = 0; d < D; d++) dot += (double)q[i * D + d] * k[j * D + d];
            sim[i * n + j] = dot / (nq[i] * nk[j]);
        }
    free(nq), free(nk);
}

/* Python's str() of a float, as np.savetxt(fmt='%s') prints the reference's numbers: the shortest
 * round-tripping digits, with ".0" on integral values. */
static void pyfloat(char *buf, size_t len, double x) {
    if (isnan(x)) {
        snprintf(buf, len, "nan");
        return;
    }
    double ax = fabs(x);
    if (ax == 0 || (ax >= 1e-4 && ax < 1e16)) { /* Python's positional range */
        for (int p = 0; p <= 25; p++) {
            snprintf(buf, len, "%.*f", p, x);
            if (strtod(buf, NULL) == x) break;
        }
    } else {
        for (int p = 1; p <= 17; p++) {
            snprintf(buf, len, "%.*g", p, x);
            if (strtod(buf, NULL) == x) break;
        }
    }
    if (!strpbrk(buf, ".eni")) strncat(buf, ".0", len - strlen(buf) - 1);
}

static void csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

int main(int argc, char **argv) {
    cav_set_tool("cav-recall");
    static const struct option opts[] = {{"dataset", 1, 0, O_DATASET}, {"direction", 1, 0, O_DIRECTION},
                                         {"ranks", 1, 0, O_RANKS},     {"ties", 1, 0, O_TIES},
                                         {"out", 1, 0, 'o'},           CAV_STD_OPTIONS,
                                         {0, 0, 0, 0}};
    const char *dataset = NULL, *ranks_path = NULL, *out_path = "-";
    int dirs = 3, first_only = 0, c; /* bit 0: video, bit 1: audio */
    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (c) {
        case O_DATASET: dataset = optarg; break;
        case O_DIRECTION:
            if (!strcmp(optarg, "both")) dirs = 3;
            else if (!strcmp(optarg, "video")) dirs = 1;
            else if (!strcmp(optarg, "audio")) dirs = 2;
            else cav_usage_error("--direction: audio, video or both, not '%s'", optarg);
            break;
        case O_RANKS: ranks_path = optarg; break;
        case O_TIES:
            if (strcmp(optarg, "reference") && strcmp(optarg, "first")) cav_usage_error("--ties: reference or first, not '%s'", optarg);
            first_only = !strcmp(optarg, "first");
            break;
        case 'o': out_path = optarg; break;
        default: cav_std_option(c, usage); cav_usage_error("unexpected option");
        }
    }
    char *stdin_only[] = {"-"};
    char **inputs = optind < argc ? argv + optind : stdin_only;
    int ninputs = optind < argc ? argc - optind : 1, nstdin = 0;
    for (int i = 0; i < ninputs; i++) nstdin += !strcmp(inputs[i], "-");
    if (nstdin > 1) cav_usage_error("stdin ('-') can be read only once");
    if (ranks_path && !strcmp(ranks_path, "-") && !strcmp(out_path, "-")) cav_usage_error("--ranks - and the CSV cannot both go to stdout");
    char base[256];
    if (!dataset) {
        const char *p = strcmp(inputs[0], "-") ? inputs[0] : "stdin", *slash = strrchr(p, '/');
        snprintf(base, sizeof base, "%s", slash ? slash + 1 : p);
        char *dot = strrchr(base, '.');
        if (dot && dot != base) *dot = 0;
        dataset = base;
    }

    embs e = {0};
    cav_err err = {0, ""};
    cav_record rec;
    cav_record_init(&rec);
    for (int i = 0; i < ninputs; i++) {
        cav_reader *rd = cav_reader_open(inputs[i], &err);
        if (!rd) cav_die(err.code ? err.code : CAV_EXIT_INPUT, "%s", err.msg);
        int r;
        while ((r = cav_reader_next(rd, &rec, &err)) == 1) add(&e, &rec, inputs[i], cav_reader_index(rd));
        if (r < 0) cav_die(err.code ? err.code : CAV_EXIT_INPUT, "%s", err.msg);
        cav_reader_close(rd);
    }
    cav_record_clear(&rec);
    if (e.n == 0) cav_die(CAV_EXIT_INPUT, "%s: no embedding records", inputs[0]);
    int64_t n = e.n;
    for (int64_t i = 0; i < n; i++) {
        double sa = 0, sv = 0;
        for (int d = 0; d < e.D; d++) sa += (double)e.a[i * e.D + d] * e.a[i * e.D + d], sv += (double)e.v[i * e.D + d] * e.v[i * e.D + d];
        if (!(sa > 0 && isfinite(sa)) || !(sv > 0 && isfinite(sv)))
            cav_msg("warning: record %lld (%s): a zero or non-finite embedding: its similarities are NaN and it has "
                    "no hit, as in the reference", (long long)i, e.ids[i]);
    }

    double *sim = malloc((size_t)n * n * sizeof *sim);
    int64_t *rank = malloc((size_t)n * sizeof *rank), *ties = malloc((size_t)n * sizeof *ties);
    if (!sim || !rank || !ties) cav_die(CAV_EXIT_INTERNAL, "out of memory for the %lld x %lld similarity matrix", (long long)n, (long long)n);
    FILE *out = strcmp(out_path, "-") ? fopen(out_path, "w") : stdout;
    if (!out) cav_die(CAV_EXIT_INTERNAL, "%s: cannot create", out_path);
    FILE *rf = NULL;
    if (ranks_path) {
        rf = strcmp(ranks_path, "-") ? fopen(ranks_path, "w") : stdout;
        if (!rf) cav_die(CAV_EXIT_INTERNAL, "%s: cannot create", ranks_path);
        fprintf(rf, "direction,index,id,rank,ties\n");
    }
    static const char *dname[2] = {"video", "audio"};
    for (int k = 0; k < 2; k++) {
        if (!(dirs & (1 << k))) continue;
        /* 'audio': rows are audio queries against the videos; 'video': the transpose */
        similarity(k ? e.a : e.v, k ? e.v : e.a, n, e.D, sim);
        cav_retrieval_ranks(sim, n, rank, ties);
        cav_recall_stats st = cav_retrieval_stats_ranks(rank, first_only ? NULL : ties, n);
        if (st.hits == 0) cav_die(CAV_EXIT_INPUT, "direction %s: no query has a defined similarity to its own item", dname[k]);
        char f[4][40];
        pyfloat(f[0], sizeof f[0], st.r1), pyfloat(f[1], sizeof f[1], st.r5), pyfloat(f[2], sizeof f[2], st.r10);
        pyfloat(f[3], sizeof f[3], st.mr);
        csv_field(out, dataset);
        fprintf(out, ",%s,%s,%s,%s,%s\n", dname[k], f[0], f[1], f[2], f[3]);
        cav_msg("%s %s->%s: R@1 %.4f R@5 %.4f R@10 %.4f MR %g over %lld queries (%lld hits)", dataset, k ? "audio" : "video",
                k ? "video" : "audio", st.r1, st.r5, st.r10, st.mr, (long long)n, (long long)st.hits);
        for (int64_t i = 0; rf && i < n; i++) {
            fprintf(rf, "%s,%lld,", dname[k], (long long)i);
            csv_field(rf, e.ids[i]);
            fprintf(rf, ",%lld,%lld\n", (long long)rank[i], (long long)(ties[i] > 0 ? ties[i] - 1 : -1));
        }
    }
    int bad = fflush(out) != 0 || ferror(out);
    if (out != stdout) bad |= fclose(out) != 0;
    if (rf) {
        bad |= fflush(rf) != 0 || ferror(rf);
        if (rf != stdout) bad |= fclose(rf) != 0;
    }
    if (bad) cav_die(CAV_EXIT_INTERNAL, "write error");
    for (int64_t i = 0; i < n; i++) free(e.ids[i]);
    free(e.ids), free(e.a), free(e.v), free(sim), free(rank), free(ties);
    return 0;
}
