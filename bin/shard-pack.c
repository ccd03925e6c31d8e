/* shard-pack: moves records between the two containers: streams into shards (split by row count or size
 * under a numbered name pattern), shards back into a stream, merging, resharding, selecting by id,
 * shuffling with a seed, importing the reference's dataset JSON and label CSV (labels and sample weights),
 * and verifying shards (--verify). See shard-pack(1). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atomicfile.h"
#include "cli.h"
#include "clip.h"
#include "idset.h"
#include "io.h"
#include "manifest.h"
#include "opts.h"
#include "pack.h"
#include "rng.h"
#include "shard.h"

static const char usage_head[] =
    "Usage: shard-pack [OPTION]... [INPUT]...\n"
    "Copy records from INPUTs (record streams or shards, '-' = stdin; default '-') to the output:\n"
    "merge, reshard, convert, select, shuffle, import labels; or check shards with --verify.\n"
    "\n";
static const char usage_tail[] = CAV_RECORD_USAGE_TAIL;

/* ------------------------------------------------------------ temporary spool shards (for --shuffle) */
static char spool_dir[512];
static int nspool;
static void spool_cleanup(void) {
    if (!spool_dir[0]) return;
    for (int i = 0; i < nspool; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s/spool-%d.h5", spool_dir, i);
        unlink(p);
    }
    rmdir(spool_dir);
    spool_dir[0] = 0;
}

static cav_pack_out *out_global; /* abandoned on a fatal error so no complete-looking file remains */
static void fatal(const cav_err *err) {
    cav_pack_out_abort(out_global);
    out_global = NULL;
    cav_die(err->code ? err->code : CAV_EXIT_INTERNAL, "%s", err->msg);
}

/* --max-bytes: a size with an optional K, M or G (powers of 1024) */
static int parse_size(const char *s, void *field, char *why, size_t whylen) {
    char *end;
    double v = strtod(s, &end);
    double m = 1;
    if (*end == 'K' || *end == 'k')
        m = 1024, end++;
    else if (*end == 'M' || *end == 'm')
        m = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        m = 1024.0 * 1024 * 1024, end++;
    if (end == s || *end || v <= 0 || v * m > 1e18) return snprintf(why, whylen, "'%s' is not a size", s), -1;
    *(uint64_t *)field = (uint64_t)(v * m);
    return 0;
}

typedef struct {
    uint64_t seed;
    int on;
} shuffle_opt;

static int parse_shuffle(const char *s, void *field, char *why, size_t whylen) {
    static const cav_opt seed = {.type = CAV_OPTT_U64, .min = 0, .max = (double)INT64_MAX};
    shuffle_opt *sh = field;
    if (cav_opt_set(&seed, &sh->seed, s, why, whylen)) return -1;
    sh->on = 1;
    return 0;
}

typedef struct {
    const char *output, *select, *json, *csv;
    int64_t max_rows;
    uint64_t max_bytes;
    shuffle_opt shuffle;
    int level, verify;
} settings;

#define TO(field) offsetof(settings, field)
static const cav_opt options[] = {
    {CAV_OUTPUT_OPTION(TO(output), "PATTERN",
                       "output file, or '-' for a stream on stdout (default); names ending in .h5 or\n"
                       ".hdf5 are shards, others streams; a pattern with one integer conversion\n"
                       "(out-%03d.h5) numbers the files from 0")},
    {.name = "max-rows",
     .short_name = 'n',
     .type = CAV_OPTT_I64,
     .offset = TO(max_rows),
     .min = 1,
     .max = (double)INT64_MAX,
     .arg = "N",
     .help = "at most N records per output file (needs a pattern)"},
    {.name = "max-bytes",
     .short_name = 'b',
     .type = CAV_OPTT_CUSTOM,
     .offset = TO(max_bytes),
     .arg = "SIZE",
     .help = "start a new file once one reaches SIZE bytes (K, M, G suffixes; needs a pattern)",
     .parse = parse_size},
    {.name = "select",
     .short_name = 's',
     .type = CAV_OPTT_STRING,
     .offset = TO(select),
     .arg = "FILE",
     .help = "only the records whose id is listed in FILE (one id per line); every listed id\nmust be found"},
    {.name = "shuffle",
     .type = CAV_OPTT_CUSTOM,
     .offset = TO(shuffle),
     .arg = "SEED",
     .help = "write the records in a random order fixed by SEED (stream inputs are spooled\n"
             "to a temporary shard in $TMPDIR first)",
     .parse = parse_shuffle},
    {.name = "json",
     .short_name = 'j',
     .type = CAV_OPTT_STRING,
     .offset = TO(json),
     .arg = "FILE",
     .help = "the reference's dataset JSON: adds labels (f32 [K] multi-hot), weight (f32\n"
             "sample weight) and the attributes wav and video_path to each record, by\n"
             "video_id; without INPUTs, makes one record per JSON entry"},
    {.name = "label-csv",
     .short_name = 'c',
     .type = CAV_OPTT_STRING,
     .offset = TO(csv),
     .arg = "FILE",
     .help = "the label CSV (index,mid,display_name) for --json"},
    {CAV_LEVEL_OPTION(TO(level), CAV_LEVEL_HELP)},
    {.name = "verify",
     .type = CAV_OPTT_FLAG,
     .offset = TO(verify),
     .help = "read every record of every INPUT and report counts, fields and problems;\n"
             "write nothing; exit 2 on any problem"},
    {0},
};

/* ------------------------------------------------------------ the record pipeline */
typedef struct {
    const cav_manifest *man;
    const cav_labelset *labels;
    cav_idset *select;       /* NULL = all */
    unsigned char *selected; /* per select entry: found */
    cav_idset seen;          /* every id written, for duplicates across inputs */
    cav_pack_out *out;
    cav_progress *prog;
} pipeline;

/* Label join, selection, duplicate check, write. 0 written or skipped, -1 error. */
static int emit(pipeline *p, cav_record *rec, const char *src, int64_t index, cav_err *err) {
    if (p->select) {
        int64_t k = cav_idset_get(p->select, rec->id);
        if (k < 0) return 0;
        p->selected[k] = 1;
    }
    if (p->man) {
        int64_t item = cav_idset_get(&p->man->by_id, rec->id);
        if (item < 0)
            return cav_fail(err, CAV_EXIT_INPUT, "%s: record %lld (id '%s'): id: not in the dataset JSON",
                            src, (long long)index, rec->id);
        if (cav_manifest_apply(p->man, (int)item, p->labels, rec))
            return cav_fail(err, CAV_EXIT_INTERNAL, "out of memory");
    }
    int a = cav_idset_add(&p->seen, rec->id, 0);
    if (a < 0) return cav_fail(err, CAV_EXIT_INTERNAL, "out of memory");
    if (a == 0)
        return cav_fail(err, CAV_EXIT_INPUT,
                        "%s: record %lld (id '%s'): id: duplicated (already written from an earlier record)",
                        src, (long long)index, rec->id);
    if (cav_pack_out_put(p->out, rec, err)) return -1;
    cav_progress_add(p->prog, 1);
    return 0;
}

/* Warn when inputs disagree on a dataset attribute other than provenance. */
static void compare_attrs(const cav_attrs *first, const cav_attrs *a, const char *path) {
    static const char *prov[] = {CAV_DATTR_TOOL, CAV_DATTR_VERSION, CAV_DATTR_ARGS, CAV_DATTR_HISTORY};
    for (int i = 0; i < a->n; i++) {
        int skip = 0;
        for (int k = 0; k < 4; k++) skip |= strcmp(a->v[i].key, prov[k]) == 0;
        const char *v = cav_attrs_get(first, a->v[i].key);
        if (!skip && v && strcmp(v, a->v[i].value))
            cav_msg("warning: %s: dataset attribute '%s' differs from the first input's; the output keeps "
                    "the first",
                    path, a->v[i].key);
    }
}

/* ------------------------------------------------------------ --verify */
typedef struct {
    char *name;
    cav_dtype dtype;
    int ndim, varies, dtype_conflict;
    int64_t shape[CAV_MAX_NDIM];
    int64_t present;
} vfield;

static int verify(int n, char **inputs) {
    int64_t total = 0, problems = 0;
    cav_idset ids;
    cav_idset_init(&ids);
    for (int i = 0; i < n; i++) {
        cav_err err = {0};
        cav_reader *rd = cav_reader_open(inputs[i], &err);
        if (!rd) {
            cav_msg("%s", err.msg);
            printf("%s: unreadable\n", strcmp(inputs[i], "-") ? inputs[i] : "stdin");
            problems++;
            continue;
        }
        const char *path = cav_reader_path(rd);
        vfield *f = NULL;
        int nf = 0;
        int64_t count = 0, bad = 0;
        cav_record rec;
        cav_record_init(&rec);
        for (;;) {
            int st = cav_reader_next(rd, &rec, &err);
            if (st == 0) break;
            if (st < 0) {
                cav_msg("%s", err.msg);
                bad++;
                if (cav_reader_format(rd) == CAV_FMT_STREAM) break;
                continue;
            }
            count++;
            /* no checksum covers ids and attribute strings: they are re-validated as text instead */
            if (!cav_text_ok(rec.id, 0)) {
                cav_msg("%s: record %lld: id: not valid UTF-8 text (or holds control characters)", path,
                        (long long)cav_reader_index(rd));
                bad++;
            }
            for (int a = 0; a < rec.attrs.n; a++)
                if (!cav_text_ok(rec.attrs.v[a].key, 0) || !cav_text_ok(rec.attrs.v[a].value, 1)) {
                    cav_msg(
                        "%s: record %lld (id '%s'): attribute '%s': not valid UTF-8 text (or holds control "
                        "characters)",
                        path, (long long)cav_reader_index(rd), rec.id, rec.attrs.v[a].key);
                    bad++;
                }
            int64_t first = cav_idset_get(&ids, rec.id);
            if (first >= 0) {
                cav_msg("%s: record %lld (id '%s'): id: duplicated (also in %s)", path,
                        (long long)cav_reader_index(rd), rec.id, inputs[first]);
                bad++;
            } else {
                cav_idset_add(&ids, rec.id, i);
            }
            for (int t = 0; t < rec.ntensors; t++) {
                const cav_tensor *x = &rec.tensors[t];
                int j = 0;
                while (j < nf && strcmp(f[j].name, x->name)) j++;
                if (j == nf) {
                    f = realloc(f, (size_t)(nf + 1) * sizeof *f);
                    memset(&f[nf], 0, sizeof *f);
                    f[nf].name = strdup(x->name);
                    f[nf].dtype = x->dtype;
                    f[nf].ndim = x->ndim;
                    memcpy(f[nf].shape, x->shape, sizeof f[nf].shape);
                    nf++;
                }
                vfield *v = &f[j];
                v->present++;
                if (x->dtype != v->dtype && !v->dtype_conflict) {
                    cav_msg("%s: record %lld (id '%s'): field '%s': dtype %s, earlier records %s", path,
                            (long long)cav_reader_index(rd), rec.id, x->name, cav_dtype_name(x->dtype),
                            cav_dtype_name(v->dtype));
                    v->dtype_conflict = 1;
                    bad++;
                }
                int same = x->ndim == v->ndim;
                for (int k = 0; same && k < x->ndim; k++) same = x->shape[k] == v->shape[k];
                v->varies |= !same;
            }
        }
        cav_record_clear(&rec);
        for (int j = 0; j < nf; j++)
            if (f[j].present < count) {
                cav_msg("%s: field '%s': missing in %lld of %lld records", path, f[j].name,
                        (long long)(count - f[j].present), (long long)count);
                bad++;
            }
        printf("%s: %s, %lld records, %lld problems\n", path,
               cav_reader_format(rd) == CAV_FMT_SHARD ? "shard" : "stream", (long long)count, (long long)bad);
        for (int j = 0; j < nf; j++) {
            printf("  %-20s %-4s ", f[j].name, cav_dtype_name(f[j].dtype));
            if (f[j].varies) {
                printf("[variable]");
            } else {
                printf("[");
                for (int k = 0; k < f[j].ndim; k++) printf("%s%lld", k ? "," : "", (long long)f[j].shape[k]);
                printf("]");
            }
            printf(" in %lld/%lld\n", (long long)f[j].present, (long long)count);
            free(f[j].name);
        }
        free(f);
        total += count;
        problems += bad;
        cav_reader_close(rd);
    }
    printf("total: %d inputs, %lld records, %lld problems\n", n, (long long)total, (long long)problems);
    cav_idset_clear(&ids);
    if (fflush(stdout)) return CAV_EXIT_INTERNAL;
    return problems ? CAV_EXIT_INPUT : CAV_EXIT_OK;
}

/* ------------------------------------------------------------ main */
static cav_idset *load_select(const char *path, int64_t *n) {
    FILE *f = fopen(path, "r");
    if (!f) cav_die(CAV_EXIT_INPUT, "%s: cannot open: %m", path);
    cav_idset *s = malloc(sizeof *s);
    cav_idset_init(s);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int64_t k = 0, lineno = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (!len) continue;
        if (cav_idset_add(s, line, k) == 0)
            cav_die(CAV_EXIT_INPUT, "%s: line %lld: id '%s' listed twice", path, (long long)lineno, line);
        k++;
    }
    free(line);
    fclose(f);
    *n = k;
    return s;
}

int main(int argc, char **argv) {
    cav_set_tool("shard-pack");
    settings o = {0};
    cav_opts_defaults(options, &o);
    const cav_optgroup g = {options, &o};
    int first = cav_opts_parse(argc, argv, &g, 1, usage_head, usage_tail);
    const char *output = o.output, *select_path = o.select, *json = o.json, *csv = o.csv;
    int64_t max_rows = o.max_rows;
    uint64_t max_bytes = o.max_bytes, seed = o.shuffle.seed;
    int level = o.level, do_shuffle = o.shuffle.on;
    int nin = argc - first;
    char **inputs = argv + first;
    static char *dash[] = {"-"};
    if (o.verify) {
        if (nin == 0) cav_usage_error("--verify needs INPUT files");
        return verify(nin, inputs);
    }
    if (!!json != !!csv) cav_usage_error("--json and --label-csv go together");
    if (nin == 0 && !json) nin = 1, inputs = dash;
    int pc = cav_pattern_check(output);
    if (pc < 0) cav_usage_error("--output '%s': at most one integer conversion such as %%03d", output);
    if (pc == 0 && (max_rows || max_bytes))
        cav_usage_error("--max-rows/--max-bytes need a numbered --output pattern (out-%%03d.h5)");
    if (cav_format_for_path(output) == CAV_FMT_SHARD && strcmp(output, "-") == 0)
        cav_usage_error("a shard needs a file name");
    /* an output that is an input (same device and inode) is refused when opened and again at its rename */
    for (int i = 0; i < nin; i++) cav_input_note(inputs[i]);
    cav_input_note(json);
    cav_input_note(csv);
    cav_input_note(select_path);

    cav_err err = {0};
    cav_labelset labels = {0};
    cav_manifest man = {0};
    if (json) {
        if (cav_labelset_load(&labels, csv, &err) || cav_manifest_load(&man, json, &labels, &err))
            fatal(&err);
    }
    pipeline p = {.man = json && nin ? &man : NULL, .labels = &labels};
    int64_t nselect = 0;
    if (select_path) {
        p.select = load_select(select_path, &nselect);
        p.selected = calloc((size_t)nselect + 1, 1);
    }
    cav_idset_init(&p.seen);

    /* Open the inputs: all at once when shuffling (random access), else one after the other. */
    cav_reader **rds = calloc((size_t)nin + 1, sizeof *rds);
    atexit(spool_cleanup);
    cav_attrs attrs;
    cav_attrs_init(&attrs);
    for (int i = 0; i < (do_shuffle ? nin : nin ? 1 : 0); i++) {
        if (!(rds[i] = cav_reader_open(inputs[i], &err))) fatal(&err);
        if (do_shuffle && !cav_reader_shard(rds[i])) {
            /* spool the stream into a temporary shard for random access */
            if (!spool_dir[0]) {
                const char *tmp = getenv("TMPDIR");
                snprintf(spool_dir, sizeof spool_dir, "%s/shard-pack.XXXXXX", tmp && *tmp ? tmp : "/tmp");
                if (!mkdtemp(spool_dir))
                    spool_dir[0] = 0, cav_die(CAV_EXIT_INTERNAL, "cannot create a spool directory: %m");
            }
            char sp[600];
            snprintf(sp, sizeof sp, "%s/spool-%d.h5", spool_dir, nspool++);
            cav_writer *w = cav_writer_open_level(sp, CAV_FMT_SHARD, cav_reader_attrs(rds[i]), 1, &err);
            if (!w) fatal(&err);
            cav_record rec;
            cav_record_init(&rec);
            int st;
            while ((st = cav_reader_next(rds[i], &rec, &err)) == 1)
                if (cav_writer_put(w, &rec, &err)) fatal(&err);
            cav_record_clear(&rec);
            if (st < 0 || cav_writer_close(w, &err)) fatal(&err);
            cav_reader_close(rds[i]);
            if (!(rds[i] = cav_reader_open(sp, &err))) fatal(&err);
        }
        if (i > 0)
            compare_attrs(&attrs, cav_reader_attrs(rds[i]), cav_reader_path(rds[i]));
        else
            cav_attrs_copy(&attrs, cav_reader_attrs(rds[0]));
    }
    if (json && cav_labelset_attrs(&labels, &attrs)) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    if (cav_attrs_provenance(&attrs, argc, argv)) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    p.out = out_global = cav_pack_out_open(output, &attrs, level, max_rows, max_bytes, &err);
    if (!p.out) fatal(&err);
    cav_attrs_clear(&attrs);

    cav_record rec;
    cav_record_init(&rec);
    if (nin == 0) { /* records from the JSON alone */
        p.prog = cav_progress_start("records", man.n);
        int64_t *order = malloc(((size_t)man.n + 1) * sizeof *order);
        for (int64_t i = 0; i < man.n; i++) order[i] = i;
        if (do_shuffle) {
            cav_rng r;
            cav_rng_seed(&r, seed, CAV_RNG_SHUFFLE, 0, 0);
            cav_rng_permutation(&r, order, man.n);
        }
        for (int64_t i = 0; i < man.n; i++) {
            cav_record_clear(&rec);
            if (cav_manifest_apply(&man, (int)order[i], &labels, &rec))
                cav_die(CAV_EXIT_INTERNAL, "out of memory");
            if (emit(&p, &rec, json, order[i], &err)) fatal(&err);
        }
        free(order);
    } else if (do_shuffle) {
        int64_t *first = malloc(((size_t)nin + 1) * sizeof *first); /* first[i]: global position of shard i */
        first[0] = 0;
        for (int i = 0; i < nin; i++) first[i + 1] = first[i] + cav_shard_rows(cav_reader_shard(rds[i]));
        int64_t total = first[nin];
        int64_t *order = malloc(((size_t)total + 1) * sizeof *order);
        cav_rng r;
        cav_rng_seed(&r, seed, CAV_RNG_SHUFFLE, 0, 0);
        cav_rng_permutation(&r, order, total);
        p.prog = cav_progress_start("records", total);
        for (int64_t k = 0; k < total; k++) {
            int lo = 0, hi = nin; /* the shard holding order[k]: first[lo] <= order[k] < first[lo + 1] */
            while (hi - lo > 1) {
                int mid = (lo + hi) / 2;
                if (first[mid] <= order[k])
                    lo = mid;
                else
                    hi = mid;
            }
            int i = lo;
            int64_t pos = order[k] - first[i];
            cav_shard *s = cav_reader_shard(rds[i]);
            if (p.select && cav_idset_get(p.select, cav_shard_id(s, pos)) < 0) continue;
            if (cav_shard_read(s, pos, &rec, &err) || emit(&p, &rec, cav_reader_path(rds[i]), pos, &err))
                fatal(&err);
        }
        free(order);
        free(first);
    } else {
        p.prog = cav_progress_start("records", 0);
        for (int i = 0; i < nin; i++) {
            if (!rds[i]) {
                if (!(rds[i] = cav_reader_open(inputs[i], &err))) fatal(&err);
                compare_attrs(cav_reader_attrs(rds[0]), cav_reader_attrs(rds[i]), cav_reader_path(rds[i]));
            }
            int st;
            while ((st = cav_reader_next(rds[i], &rec, &err)) == 1)
                if (emit(&p, &rec, cav_reader_path(rds[i]), cav_reader_index(rds[i]), &err)) fatal(&err);
            if (st < 0) fatal(&err);
            if (i > 0) cav_reader_close(rds[i]), rds[i] = NULL;
        }
    }
    cav_record_clear(&rec);
    cav_progress_end(p.prog);
    int64_t written = cav_pack_out_count(p.out);
    int files = cav_pack_out_files(p.out);
    out_global = NULL;
    if (cav_pack_out_close(p.out, &err)) fatal(&err);
    for (int i = 0; i < nin; i++) cav_reader_close(rds[i]);
    free(rds);
    int status = CAV_EXIT_OK;
    if (p.select) {
        int64_t missing = 0;
        for (size_t s = 0; s < p.select->cap; s++) {
            if (!p.select->keys[s] || p.selected[p.select->vals[s]]) continue;
            if (missing++ < 5)
                cav_msg("%s: id '%s': not found in the inputs", select_path, p.select->keys[s]);
        }
        if (missing) {
            cav_msg("%s: %lld of %lld listed ids not found", select_path, (long long)missing,
                    (long long)nselect);
            status = CAV_EXIT_INPUT;
        }
        cav_idset_clear(p.select);
        free(p.select);
        free(p.selected);
    }
    if (strcmp(output, "-"))
        cav_msg("%lld records into %d file%s", (long long)written, files, files == 1 ? "" : "s");
    cav_idset_clear(&p.seen);
    cav_manifest_free(&man);
    cav_labelset_free(&labels);
    return status;
}
