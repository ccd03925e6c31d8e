/* cav-recall: audio-visual retrieval metrics of the reference (cav-numerics(7) 4, src/retrieval.py) from
 * embedding records (cav-embed's output): the cosine similarity dot / (|a| |b|), and per direction the rank
 * of every query's own item (or, with --class, of its best item sharing a label), R@1, R@5, R@10 and the
 * median rank, as one CSV line like its retrieval_result.csv; top-k lists per query, a gallery page of them,
 * and queries against another set (--gallery). The ranks are lib/train/retrieval.c (blocks, never the n x n
 * matrix; their products on the host or on a --device backend), the statistics lib/train/metrics.c. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>

#include "blas.h"
#include "cli.h"
#include "clip.h"
#include "idset.h"
#include "io.h"
#include "kernels.h"
#include "metrics.h"
#include "opts.h"
#include "picture.h"
#include "retrieval.h"

static const char usage_head[] =
    "Usage: cav-recall [OPTION]... [INPUT]...\n"
    "Audio->visual and visual->audio retrieval (R@1, R@5, R@10, median rank) over embedding records (id,\n"
    "emb_a, emb_v: what cav-embed writes) read from shards or record streams ('-', the default: stdin).\n"
    "Record i's audio and visual embeddings are the matching pair. Prints one CSV line per direction:\n"
    "dataset,direction,R1,R5,R10,MR (direction video: visual queries; audio: audio queries).\n"
    "\n";
static const char usage_tail[] =
    "      --help, --version\n"
    "\n"
    "Threads: OMP_NUM_THREADS. Memory: the embeddings and one block, never the n x n matrix.\n"
    "Exit status: 0 ok, 1 usage, 2 bad input (file, record and field named), 3 internal failure.\n";

typedef struct {
    const char *dataset, *ranks, *matches, *html, *out, *device;
    int dirs, first_only, class_level, topk, nshow;
    int64_t block; /* 0: CAV_RECALL_BLOCK or 2048 */
    cav_opt_list gallery, labels, media;
} settings;

/* bit 0: video (visual queries), bit 1: audio */
static const cav_opt_choice directions[] = {{"audio", 2}, {"video", 1}, {"both", 3}, {0}};
static const cav_opt_choice ties[] = {{"reference", 0}, {"first", 1}, {0}};

#define TO(field) offsetof(settings, field)
static const cav_opt options[] = {
    {.name = "dataset",
     .type = CAV_OPTT_STRING,
     .offset = TO(dataset),
     .arg = "NAME",
     .help = "first CSV field (default: the first input's base name, 'stdin' for '-')"},
    {.name = "direction",
     .type = CAV_OPTT_CHOICE,
     .offset = TO(dirs),
     .def = "both",
     .arg = "D",
     .help = "audio, video or both (default: both, video first, as the reference)",
     .flags = CAV_OPTF_NODEFAULT,
     .choices = directions},
    {.name = "ranks",
     .type = CAV_OPTT_STRING,
     .offset = TO(ranks),
     .arg = "FILE",
     .help = "write each query's rank: direction,index,id,rank,ties (CSV with a header)"},
    {.name = "ties",
     .type = CAV_OPTT_CHOICE,
     .offset = TO(first_only),
     .def = "reference",
     .arg = "MODE",
     .help = "reference (default): a diagonal tied with k other columns counts k+1 hits\n"
             "at rank..rank+k, as np.where in compute_metrics; first: one hit per query,\n"
             "at the first position of its value",
     .flags = CAV_OPTF_NODEFAULT,
     .choices = ties},
    {.name = "gallery",
     .type = CAV_OPTT_LIST,
     .offset = TO(gallery),
     .arg = "FILE",
     .help = "search FILE's records (repeatable) with the INPUT records as queries; a\n"
             "query's own item is the gallery record with its id (none: no rank)"},
    {.name = "class",
     .type = CAV_OPTT_FLAG,
     .offset = TO(class_level),
     .help = "class-level: the rank of the best item sharing a label with the query\n"
             "(f32 multi-hot field labels, in the records or in --labels)"},
    {.name = "labels",
     .type = CAV_OPTT_LIST,
     .offset = TO(labels),
     .arg = "FILE",
     .help = "records with id and labels (e.g. the clips' shard) for --class (repeatable)"},
    {.name = "topk",
     .short_name = 'k',
     .type = CAV_OPTT_INT,
     .offset = TO(topk),
     .def = "5",
     .min = 1,
     .max = 1000,
     .arg = "K",
     .help = "keep each query's K best items (for --matches and --html; default 5)",
     .flags = CAV_OPTF_NODEFAULT},
    {.name = "matches",
     .type = CAV_OPTT_STRING,
     .offset = TO(matches),
     .arg = "FILE",
     .help = "write the top-k lists: direction,index,id,k,match_index,match_id,similarity,own"},
    {.name = "html",
     .type = CAV_OPTT_STRING,
     .offset = TO(html),
     .arg = "DIR",
     .help = "write a gallery page DIR/index.html (pictures in DIR/img) for --html-queries\n"
             "queries per direction: their middle frame and spectrogram, their top-k items"},
    {.name = "html-queries",
     .type = CAV_OPTT_INT,
     .offset = TO(nshow),
     .def = "8",
     .min = 1,
     .max = 100000,
     .arg = "N",
     .help = "queries shown (default 8: the first N)",
     .flags = CAV_OPTF_NODEFAULT},
    {.name = "media",
     .type = CAV_OPTT_LIST,
     .offset = TO(media),
     .arg = "FILE",
     .help = "records with frames (or frames_jpeg) and fbank for the pictures, by id\n"
             "(repeatable; the clips' shards)"},
    {.name = "block",
     .type = CAV_OPTT_I64,
     .offset = TO(block),
     .min = 1,
     .max = 16384,
     .arg = "N",
     .help = "rows and columns per similarity block (default 2048, or CAV_RECALL_BLOCK)"},
    {.name = "device",
     .type = CAV_OPTT_STRING,
     .offset = TO(device),
     .arg = "NAME",
     .help = "the similarity blocks on a compute backend: cpu, or cuda / cuda:N in a build\n"
             "with CUDA (uploaded once, each block computed there while the host scans\n"
             "the one before; the same results). Default: the host's sgemm, no copies"},
    {.name = "out",
     .short_name = 'o',
     .type = CAV_OPTT_STRING,
     .offset = TO(out),
     .def = "-",
     .arg = "FILE",
     .help = "the CSV lines (default: stdout)",
     .flags = CAV_OPTF_NODEFAULT},
    {0},
};

typedef struct {
    int64_t n, cap;
    int D, K, lw; /* embedding size; label count and its 64-bit words (0: no labels seen) */
    char **ids;
    float *a, *v;  /* [n, D] */
    uint64_t *lab; /* [n, lw] label bitsets, when any record has labels */
    unsigned char *has_lab;
    cav_idset byid;
} embs;

static void *grow(void *p, int64_t cap, size_t elem) {
    void *q = realloc(p, (size_t)cap * elem + 1);
    if (!q) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    return q;
}

/* labels f32 [K] multi-hot into row i's bitset; the first one seen fixes K */
static void put_labels(embs *e, int64_t i, const cav_tensor *t, const char *path, int64_t idx,
                       const char *id) {
    if (t->dtype != CAV_F32 || t->ndim != 1 || t->shape[0] < 1)
        cav_die(CAV_EXIT_INPUT, "%s: record %lld (%s): field labels: expected f32 [K]", path, (long long)idx,
                id);
    if (!e->K) {
        e->K = (int)t->shape[0], e->lw = (e->K + 63) / 64;
        e->lab = calloc((size_t)e->cap * e->lw + 1, sizeof *e->lab);
        if (!e->lab) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    }
    if (t->shape[0] != e->K)
        cav_die(CAV_EXIT_INPUT, "%s: record %lld (%s): field labels: %lld classes, earlier records have %d",
                path, (long long)idx, id, (long long)t->shape[0], e->K);
    const float *x = t->data;
    uint64_t *b = e->lab + i * e->lw;
    for (int k = 0; k < e->K; k++)
        if (x[k] > 0.5f) b[k / 64] |= 1ull << (k % 64);
    e->has_lab[i] = 1;
}

static void add(embs *e, const cav_record *rec, const char *path, int64_t idx) {
    const cav_tensor *t[2] = {cav_record_find(rec, CAV_FIELD_EMB_A), cav_record_find(rec, CAV_FIELD_EMB_V)};
    const char *names[2] = {CAV_FIELD_EMB_A, CAV_FIELD_EMB_V};
    for (int k = 0; k < 2; k++) {
        if (!t[k])
            cav_die(CAV_EXIT_INPUT, "%s: record %lld (%s): no field %s", path, (long long)idx, rec->id,
                    names[k]);
        if (t[k]->dtype != CAV_F32 || t[k]->ndim != 1 || t[k]->shape[0] < 1)
            cav_die(CAV_EXIT_INPUT, "%s: record %lld (%s): field %s: expected f32 [D]", path, (long long)idx,
                    rec->id, names[k]);
        if (!e->D) e->D = (int)t[k]->shape[0];
        if (t[k]->shape[0] != e->D)
            cav_die(CAV_EXIT_INPUT, "%s: record %lld (%s): field %s: %lld values, earlier records have %d",
                    path, (long long)idx, rec->id, names[k], (long long)t[k]->shape[0], e->D);
    }
    if (e->n == e->cap) {
        int64_t old = e->cap;
        e->cap = e->cap ? 2 * e->cap : 256;
        e->ids = grow(e->ids, e->cap, sizeof *e->ids);
        e->a = grow(e->a, e->cap * e->D, sizeof *e->a);
        e->v = grow(e->v, e->cap * e->D, sizeof *e->v);
        e->has_lab = grow(e->has_lab, e->cap, 1);
        memset(e->has_lab + old, 0, (size_t)(e->cap - old));
        if (e->lab) {
            e->lab = grow(e->lab, e->cap * e->lw, sizeof *e->lab);
            memset(e->lab + old * e->lw, 0, (size_t)(e->cap - old) * e->lw * sizeof *e->lab);
        }
    }
    memcpy(e->a + (size_t)e->n * e->D, t[0]->data, (size_t)e->D * sizeof(float));
    memcpy(e->v + (size_t)e->n * e->D, t[1]->data, (size_t)e->D * sizeof(float));
    if (!(e->ids[e->n] = strdup(rec->id ? rec->id : ""))) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    const cav_tensor *l = cav_record_find(rec, CAV_FIELD_LABELS);
    if (l) put_labels(e, e->n, l, path, idx, e->ids[e->n]);
    e->n++;
}

/* Calls fn for every record of the files (the inputs, and the joins by id of --labels and --media). */
typedef void (*record_fn)(void *ctx, const cav_record *rec, const char *path, int64_t idx);
static void scan_files(char **paths, int npaths, record_fn fn, void *ctx) {
    cav_err err = {0, ""};
    cav_record rec;
    cav_record_init(&rec);
    for (int i = 0; i < npaths; i++) {
        cav_reader *rd = cav_reader_open(paths[i], &err);
        if (!rd) cav_die(err.code ? err.code : CAV_EXIT_INPUT, "%s", err.msg);
        int r;
        while ((r = cav_reader_next(rd, &rec, &err)) == 1) fn(ctx, &rec, paths[i], cav_reader_index(rd));
        if (r < 0) cav_die(err.code ? err.code : CAV_EXIT_INPUT, "%s", err.msg);
        cav_reader_close(rd);
    }
    cav_record_clear(&rec);
}

static void add_fn(void *ctx, const cav_record *rec, const char *path, int64_t idx) {
    add(ctx, rec, path, idx);
}

static void read_set(embs *e, char **inputs, int ninputs) {
    scan_files(inputs, ninputs, add_fn, e);
    if (e->n == 0) cav_die(CAV_EXIT_INPUT, "%s: no embedding records", inputs[0]);
    cav_idset_init(&e->byid);
    for (int64_t i = 0; i < e->n; i++)
        if (cav_idset_add(&e->byid, e->ids[i], i) < 0) cav_die(CAV_EXIT_INTERNAL, "out of memory");
}

static void label_fn(void *ctx, const cav_record *rec, const char *path, int64_t idx) {
    embs **sets = ctx;
    const cav_tensor *l = cav_record_find(rec, CAV_FIELD_LABELS);
    for (int k = 0; k < 2 && sets[k] && l && rec->id; k++) {
        int64_t i = cav_idset_get(&sets[k]->byid, rec->id);
        if (i >= 0 && !sets[k]->has_lab[i]) put_labels(sets[k], i, l, path, idx, rec->id);
    }
}

static void free_set(embs *e) {
    for (int64_t i = 0; i < e->n; i++) free(e->ids[i]);
    free(e->ids), free(e->a), free(e->v), free(e->lab), free(e->has_lab);
    cav_idset_clear(&e->byid);
}

/* ---- the gallery page ---- */

typedef struct {
    const char *dir;
    cav_idset need;          /* id -> picture number */
    unsigned char *rendered; /* [number]: bit 0 frame, bit 1 spectrogram */
    int64_t n, missing;
} pictures;

static void need_id(pictures *p, const char *id) {
    if (cav_idset_get(&p->need, id) >= 0) return;
    if (cav_idset_add(&p->need, id, p->n++) < 0) cav_die(CAV_EXIT_INTERNAL, "out of memory");
}

static void picture_fn(void *ctx, const cav_record *rec, const char *path, int64_t idx) {
    pictures *p = ctx;
    int64_t k = rec->id ? cav_idset_get(&p->need, rec->id) : -1;
    if (k < 0 || p->rendered[k]) return;
    cav_err err = {0, ""};
    char file[4200];
    uint8_t *rgb;
    int w, h;
    if (cav_picture_frame(rec, -1, &rgb, &w, &h, &err) == 0) {
        snprintf(file, sizeof file, "%s/img/%lld-frame.png", p->dir, (long long)k);
        if (cav_png_write(file, rgb, w, h, &err)) cav_die(err.code, "%s", err.msg);
        free(rgb);
        p->rendered[k] |= 1;
    } else if (err.code == CAV_EXIT_INTERNAL)
        cav_die(err.code, "%s", err.msg);
    const cav_tensor *fb = cav_record_find(rec, CAV_FIELD_FBANK);
    if (fb && fb->dtype == CAV_F32 && fb->ndim == 2 && fb->shape[0] > 0 && fb->shape[1] > 0) {
        int T = (int)fb->shape[0], F = (int)fb->shape[1];
        if (!(rgb = cav_picture_spectrogram(fb->data, T, F, 0, 0)))
            cav_die(CAV_EXIT_INTERNAL, "out of memory");
        snprintf(file, sizeof file, "%s/img/%lld-spec.png", p->dir, (long long)k);
        if (cav_png_write(file, rgb, T, F, &err)) cav_die(err.code, "%s", err.msg);
        free(rgb);
        p->rendered[k] |= 2;
    }
    if (p->rendered[k] != 3)
        cav_msg("%s: record %lld (%s): no %s for the gallery", path, (long long)idx, rec->id,
                p->rendered[k] & 1 ? "f32 fbank [T, F]" : "frames");
}

/* a growing string */
typedef struct {
    char *s;
    size_t n, cap;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(t->s + t->n, t->cap - t->n, fmt, ap);
        va_end(ap);
        if (k < 0) cav_die(CAV_EXIT_INTERNAL, "format error");
        if (t->n + (size_t)k < t->cap) {
            t->n += (size_t)k;
            return;
        }
        t->cap = 2 * (t->n + (size_t)k + 1024);
        if (!(t->s = realloc(t->s, t->cap))) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    }
}

static void put_html(text *t, const char *s) {
    for (; *s; s++) {
        if (*s == '<')
            put(t, "&lt;");
        else if (*s == '>')
            put(t, "&gt;");
        else if (*s == '&')
            put(t, "&amp;");
        else if (*s == '"')
            put(t, "&quot;");
        else
            put(t, "%c", *s);
    }
}

static void put_img(text *t, const pictures *p, const char *id, int spec) {
    int64_t k = cav_idset_get(&p->need, id);
    if (k >= 0 && p->rendered[k] & (spec ? 2 : 1))
        put(t, "<img class=\"%s\" src=\"img/%lld-%s.png\" alt=\"%s\">", spec ? "spec" : "frame", (long long)k,
            spec ? "spec" : "frame", spec ? "spectrogram" : "frame");
    else
        put(t, "<span class=\"nopic\">no %s</span>", spec ? "spectrogram" : "frame");
}

typedef struct {
    const char *name;      /* video, audio */
    const cav_retr_dir *d; /* its results */
    const embs *q, *g;
    int64_t nshow;
    int class_level;
} shown;

/* DIR/index.html: per direction, a row per shown query: its frame and spectrogram, then its top-k items
 * from the other modality with their similarity; the query's own item (or, with --class, an item sharing
 * a label) is marked. */
static void write_gallery(const char *dir, const char *dataset, const shown *dirs, int ndirs, char **media,
                          int nmedia) {
    pictures p = {.dir = dir};
    cav_idset_init(&p.need);
    for (int s = 0; s < ndirs; s++)
        for (int64_t i = 0; i < dirs[s].nshow; i++) {
            need_id(&p, dirs[s].q->ids[i]);
            for (int j = 0; j < dirs[s].d->k; j++) {
                int64_t m = dirs[s].d->top[i * dirs[s].d->k + j];
                if (m >= 0) need_id(&p, dirs[s].g->ids[m]);
            }
        }
    char img[4200];
    snprintf(img, sizeof img, "%s/img", dir);
    if ((mkdir(dir, 0777) && errno != EEXIST) || (mkdir(img, 0777) && errno != EEXIST))
        cav_die(CAV_EXIT_INTERNAL, "%s: cannot create: %s", img, strerror(errno));
    if (!(p.rendered = calloc((size_t)p.n + 1, 1))) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    scan_files(media, nmedia, picture_fn, &p);
    for (int64_t k = 0; k < p.n; k++) p.missing += p.rendered[k] != 3;
    if (p.missing)
        cav_msg("warning: %lld of %lld clips in the gallery have no record with pictures in --media",
                (long long)p.missing, (long long)p.n);

    text t = {0};
    put(&t, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>cav-recall: ");
    put_html(&t, dataset);
    put(&t, "</title>\n<style>body{font-family:sans-serif;background:#fafafa}table{border-collapse:collapse}"
            "td{border:1px solid #ccc;padding:4px;vertical-align:top;text-align:center;font-size:12px}"
            "img.frame{width:112px;height:112px}img.spec{width:256px;height:64px;image-rendering:pixelated}"
            "td.own{background:#c8f0c8;border:3px solid "
            "#2a2}td.query{background:#e8e8ff}</style></head><body>\n");
    put(&t, "<h1>cav-recall: ");
    put_html(&t, dataset);
    put(&t,
        "</h1>\n<p>Each row: a query (its middle frame and spectrogram), its own rank, and its best items "
        "from the "
        "other modality with their cosine similarity; the %s is marked green.</p>\n",
        dirs[0].class_level ? "items sharing a label with the query" : "query's own item");
    for (int s = 0; s < ndirs; s++) {
        const shown *sh = &dirs[s];
        int video = !strcmp(sh->name, "video");
        put(&t,
            "<h2 id=\"%s\">%s queries &rarr; %s items</h2>\n<table class=\"direction\" "
            "data-direction=\"%s\">\n",
            sh->name, video ? "visual" : "audio", video ? "audio" : "visual", sh->name);
        for (int64_t i = 0; i < sh->nshow; i++) {
            const cav_retr_dir *d = sh->d;
            put(&t, "<tr class=\"result\"><td class=\"query\">");
            put_img(&t, &p, sh->q->ids[i], 0);
            put(&t, "<br>");
            put_img(&t, &p, sh->q->ids[i], 1);
            put(&t, "<br><b>");
            put_html(&t, sh->q->ids[i]);
            if (d->ties[i] > 0)
                put(&t, "</b><br>rank %lld</td>", (long long)d->rank[i] + 1);
            else
                put(&t, "</b><br>no rank</td>");
            for (int j = 0; j < d->k; j++) {
                int64_t m = d->top[i * d->k + j];
                if (m < 0) continue;
                int own = !sh->class_level && d->target && d->target[i] == m;
                if (sh->class_level)
                    for (int w = 0; w < d->lw; w++)
                        own |= (d->lab[i * d->lw + w] & d->other_lab[m * d->lw + w]) != 0;
                put(&t, "<td class=\"match%s\">", own ? " own" : "");
                put_img(&t, &p, sh->g->ids[m], video);
                put(&t, "<br>%d. ", j + 1);
                put_html(&t, sh->g->ids[m]);
                put(&t, "<br>%.4f%s</td>", d->topsim[i * d->k + j], own ? " &#10003;" : "");
            }
            put(&t, "</tr>\n");
        }
        put(&t, "</table>\n");
    }
    put(&t, "</body></html>\n");
    char file[4200];
    snprintf(file, sizeof file, "%s/index.html", dir);
    cav_err err = {0, ""};
    if (cav_file_replace(file, t.s, t.n, &err)) cav_die(err.code, "%s", err.msg);
    cav_msg("gallery: %s (%lld clips pictured)", file, (long long)(p.n - p.missing));
    free(t.s), free(p.rendered);
    cav_idset_clear(&p.need);
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

/* The retrieval of one direction and what it needs: queries' rows against the items' rows. */
typedef struct {
    cav_retr_dir d;
    int64_t *target;
    unsigned char *want;
} direction;

static void direction_init(direction *x, int64_t nq, int k, int64_t nshow, int class_level, const embs *q,
                           const embs *g, int paired) {
    memset(x, 0, sizeof *x);
    cav_retr_dir *d = &x->d;
    d->thr = malloc((size_t)nq * sizeof *d->thr), d->rank = malloc((size_t)nq * sizeof *d->rank);
    d->ties = malloc((size_t)nq * sizeof *d->ties);
    x->target = malloc((size_t)nq * sizeof *x->target);
    d->k = k;
    if (k) {
        d->top = malloc((size_t)nq * k * sizeof *d->top),
        d->topsim = malloc((size_t)nq * k * sizeof *d->topsim);
        x->want = calloc((size_t)nq, 1);
        if (!d->top || !d->topsim || !x->want)
            cav_die(CAV_EXIT_INTERNAL, "out of memory for the top-%d lists", k);
        for (int64_t i = 0; i < nq; i++) x->want[i] = nshow < 0 || i < nshow;
        d->want_top = x->want;
    }
    if (!d->thr || !d->rank || !d->ties || !x->target) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    for (int64_t i = 0; i < nq; i++) x->target[i] = paired ? i : cav_idset_get(&g->byid, q->ids[i]);
    d->target = x->target;
    if (class_level) d->lab = q->lab, d->other_lab = g->lab, d->lw = q->lw;
}

static void direction_free(direction *x) {
    free(x->d.thr), free(x->d.rank), free(x->d.ties), free(x->d.top), free(x->d.topsim), free(x->target),
        free(x->want);
}

static FILE *create(const char *path) {
    if (!path) return NULL;
    FILE *f = strcmp(path, "-") ? fopen(path, "w") : stdout;
    if (!f) cav_die(CAV_EXIT_INTERNAL, "%s: cannot create: %s", path, strerror(errno));
    return f;
}

static int finish(FILE *f) {
    if (!f) return 0;
    int bad = fflush(f) != 0 || ferror(f);
    if (f != stdout) bad |= fclose(f) != 0;
    return bad;
}

static void check_labels(const embs *e, const char *what) {
    int64_t none = 0;
    for (int64_t i = 0; i < e->n; i++) none += !e->has_lab[i];
    if (!e->K)
        cav_die(CAV_EXIT_INPUT, "--class: the %s records have no field labels (give --labels FILE)", what);
    if (none)
        cav_msg("warning: --class: %lld %s records have no labels: they match no class", (long long)none,
                what);
}

/* the rows cav_retr_set_init found invalid (a NaN norm), named */
static void warn_invalid(const embs *e, const cav_retr_set *a, const cav_retr_set *v, const char *what) {
    for (int64_t i = 0; (a->invalid || v->invalid) && i < e->n; i++)
        if (isnan(a->norm[i]) || isnan(v->norm[i]))
            cav_msg("warning: %srecord %lld (%s): a zero or non-finite embedding: its similarities are NaN "
                    "and it has "
                    "no hit, as in the reference",
                    what, (long long)i, e->ids[i]);
}

int main(int argc, char **argv) {
    cav_set_tool("cav-recall");
    cav_blas_fit_cpu("cav-recall", argv);
    settings o = {0};
    cav_opts_defaults(options, &o);
    const cav_optgroup g = {options, &o};
    int optind_ = cav_opts_parse(argc, argv, &g, 1, usage_head, usage_tail);
    const char *dataset = o.dataset, *ranks_path = o.ranks, *out_path = o.out, *matches_path = o.matches,
               *html_dir = o.html;
    char **gallery = o.gallery.v, **labels = o.labels.v, **media = o.media.v;
    int ngallery = o.gallery.n, nlabels = o.labels.n, nmedia = o.media.n, class_level = o.class_level,
        topk = o.topk, nshow = o.nshow, dirs = o.dirs, first_only = o.first_only;
    int64_t block = o.block;
    char *stdin_only[] = {"-"};
    char **inputs = optind_ < argc ? argv + optind_ : stdin_only;
    int ninputs = optind_ < argc ? argc - optind_ : 1, nstdin = 0;
    for (int i = 0; i < ninputs; i++) nstdin += !strcmp(inputs[i], "-");
    for (int i = 0; i < ngallery; i++) nstdin += !strcmp(gallery[i], "-");
    if (nstdin > 1) cav_usage_error("stdin ('-') can be read only once");
    int nout = !strcmp(out_path, "-") + (ranks_path && !strcmp(ranks_path, "-")) +
               (matches_path && !strcmp(matches_path, "-"));
    if (nout > 1) cav_usage_error("only one of the CSV, --ranks and --matches can go to stdout");
    if (html_dir && !nmedia)
        cav_usage_error("--html needs --media FILE (records with frames and fbank, by id)");
    char base[256];
    if (!dataset) {
        const char *p = strcmp(inputs[0], "-") ? inputs[0] : "stdin", *slash = strrchr(p, '/');
        snprintf(base, sizeof base, "%s", slash ? slash + 1 : p);
        char *dot = strrchr(base, '.');
        if (dot && dot != base) *dot = 0;
        dataset = base;
    }

    embs e = {0}, eg = {0};
    read_set(&e, inputs, ninputs);
    int paired = ngallery == 0;
    if (!paired) {
        read_set(&eg, gallery, ngallery);
        if (eg.D != e.D)
            cav_die(CAV_EXIT_INPUT, "%s: %d-dim embeddings, the queries have %d", gallery[0], eg.D, e.D);
    }
    embs *G = paired ? &e : &eg;
    if (class_level) {
        embs *sets[2] = {&e, paired ? NULL : &eg};
        scan_files(labels, nlabels, label_fn, sets);
        check_labels(&e, paired ? "input" : "query");
        if (!paired) check_labels(&eg, "gallery");
        if (!paired && eg.K != e.K)
            cav_die(CAV_EXIT_INPUT, "--class: queries have %d classes, the gallery %d", e.K, eg.K);
    }
    cav_retr_set qa, qv, ga, gv;
    if (cav_retr_set_init(&qa, e.a, e.n, e.D) || cav_retr_set_init(&qv, e.v, e.n, e.D))
        cav_die(CAV_EXIT_INTERNAL, "out of memory");
    if (!paired && (cav_retr_set_init(&ga, eg.a, eg.n, eg.D) || cav_retr_set_init(&gv, eg.v, eg.n, eg.D)))
        cav_die(CAV_EXIT_INTERNAL, "out of memory");
    warn_invalid(&e, &qa, &qv, paired ? "" : "query ");
    if (!paired) warn_invalid(&eg, &ga, &gv, "gallery ");
    int k = matches_path || html_dir ? topk : 0;
    int64_t show = matches_path ? -1 : html_dir ? nshow : 0; /* the queries needing a top-k list: -1 all */
    direction dv, da; /* video: visual queries against audio items; audio: the reverse */
    direction_init(&dv, e.n, k, show, class_level, &e, G, paired);
    direction_init(&da, e.n, k, show, class_level, &e, G, paired);
    cav_backend *be = NULL; /* no --device: the host path */
    if (o.device) {
        cav_err berr = {0, ""};
        if (!(be = cav_backend_open(o.device, &berr))) cav_die(berr.code ? berr.code : 1, "%s", berr.msg);
    }
    double t0 = cav_now();
    int rc = 0;
    if (paired && dirs == 3)
        rc = cav_retrieve(&qv, &qa, &dv.d, &da.d, block, be); /* one product, both directions */
    else {
        if (dirs & 1) rc |= cav_retrieve(&qv, paired ? &qa : &ga, &dv.d, NULL, block, be);
        if (dirs & 2) rc |= cav_retrieve(&qa, paired ? &qv : &gv, &da.d, NULL, block, be);
    }
    if (rc)
        cav_die(CAV_EXIT_INTERNAL,
                "out of memory for the embeddings or the similarity blocks (%s%s, --block)",
                be ? "--device " : "host", be ? be->name : "");
    cav_msg("%lld queries x %lld items, %d-dim: ranked in %.2f s on %s (%lld entries rechecked in double)",
            (long long)e.n, (long long)G->n, e.D, cav_now() - t0, be ? be->name : "the host",
            (long long)(dv.d.rechecked + da.d.rechecked));

    FILE *out = create(out_path), *rf = create(ranks_path), *mf = create(matches_path);
    if (rf) fprintf(rf, "direction,index,id,rank,ties\n");
    if (mf) fprintf(mf, "direction,index,id,k,match_index,match_id,similarity,own\n");
    static const char *dname[2] = {"video", "audio"};
    direction *dd[2] = {&dv, &da};
    int64_t *ones = malloc((size_t)e.n * sizeof *ones);
    if (!ones) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    for (int kd = 0; kd < 2; kd++) {
        if (!(dirs & (1 << kd))) continue;
        cav_retr_dir *d = &dd[kd]->d;
        /* --ties first: one hit per query; a paired query keeps today's hit at its rank even without a value
         */
        for (int64_t i = 0; i < e.n; i++) ones[i] = paired || d->ties[i] > 0;
        cav_recall_stats st = cav_retrieval_stats_ranks(d->rank, first_only ? ones : d->ties, e.n, G->n);
        if (st.hits == 0) {
            if (!paired && (mf || html_dir)) {
                cav_msg("direction %s: no query has its own item in the gallery: no metrics", dname[kd]);
            } else
                cav_die(CAV_EXIT_INPUT, "direction %s: no query has a defined similarity to its own item",
                        dname[kd]);
        } else {
            char f[4][40];
            pyfloat(f[0], sizeof f[0], st.r1), pyfloat(f[1], sizeof f[1], st.r5),
                pyfloat(f[2], sizeof f[2], st.r10);
            pyfloat(f[3], sizeof f[3], st.mr);
            cav_csv_field(out, dataset);
            fprintf(out, ",%s,%s,%s,%s,%s\n", dname[kd], f[0], f[1], f[2], f[3]);
            cav_msg("%s %s->%s: R@1 %.4f R@5 %.4f R@10 %.4f MR %g over %lld queries (%lld hits)", dataset,
                    kd ? "audio" : "video", kd ? "video" : "audio", st.r1, st.r5, st.r10, st.mr,
                    (long long)e.n, (long long)st.hits);
        }
        for (int64_t i = 0; rf && i < e.n; i++) {
            fprintf(rf, "%s,%lld,", dname[kd], (long long)i);
            cav_csv_field(rf, e.ids[i]);
            fprintf(rf, ",%lld,%lld\n", (long long)d->rank[i],
                    (long long)(d->ties[i] > 0 ? d->ties[i] - 1 : -1));
        }
        for (int64_t i = 0; mf && i < e.n; i++)
            for (int j = 0; j < d->k; j++) {
                int64_t m = d->top[i * d->k + j];
                if (m < 0) continue;
                int own = d->target[i] == m;
                if (class_level) {
                    own = 0;
                    for (int w = 0; w < d->lw; w++)
                        own |= (d->lab[i * d->lw + w] & d->other_lab[m * d->lw + w]) != 0;
                }
                char sv[40];
                pyfloat(sv, sizeof sv, d->topsim[i * d->k + j]);
                fprintf(mf, "%s,%lld,", dname[kd], (long long)i);
                cav_csv_field(mf, e.ids[i]);
                fprintf(mf, ",%d,%lld,", j + 1, (long long)m);
                cav_csv_field(mf, G->ids[m]);
                fprintf(mf, ",%s,%d\n", sv, own);
            }
    }
    if (finish(out) | finish(rf) | finish(mf)) cav_die(CAV_EXIT_INTERNAL, "write error");
    if (html_dir) {
        shown sh[2];
        int ns = 0;
        for (int kd = 0; kd < 2; kd++)
            if (dirs & (1 << kd))
                sh[ns++] = (shown){dname[kd], &dd[kd]->d, &e, G, nshow < e.n ? nshow : e.n, class_level};
        write_gallery(html_dir, dataset, sh, ns, media, nmedia);
    }
    direction_free(&dv), direction_free(&da);
    cav_retr_set_free(&qa), cav_retr_set_free(&qv);
    if (!paired) cav_retr_set_free(&ga), cav_retr_set_free(&gv), free_set(&eg);
    free_set(&e);
    free(ones);
    cav_opt_list_free(&o.gallery), cav_opt_list_free(&o.labels), cav_opt_list_free(&o.media);
    return 0;
}
