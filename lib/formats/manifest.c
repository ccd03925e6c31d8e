/* manifest.c: the label CSV reader (RFC 4180 quoting, as Python's csv module writes it), the dataset JSON
 * import through lib/json, and the reference's label/sample weights (see manifest.h). */
#include "manifest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "clip.h"
#include "json.h"

/* Splits one CSV record starting at *p into up to max fields (copied, unquoted); advances *p past the
 * record's line end. Returns the field count, or -1 on an unterminated quote. */
static int csv_record(const char **p, const char *end, char **fields, int max) {
    int n = 0;
    const char *s = *p;
    for (;;) {
        size_t cap = 64, len = 0;
        char *f = malloc(cap);
        if (!f) goto fail;
        if (s < end && *s == '"') {
            s++;
            for (;;) {
                if (s >= end) {
                    free(f);
                    goto fail;
                }
                if (*s == '"') {
                    if (s + 1 < end && s[1] == '"')
                        s++;
                    else
                        break;
                }
                if (len + 2 > cap) f = realloc(f, cap *= 2);
                if (!f) goto fail;
                f[len++] = *s++;
            }
            s++; /* closing quote */
        }
        while (s < end && *s != ',' && *s != '\n' && *s != '\r') {
            if (len + 2 > cap) f = realloc(f, cap *= 2);
            if (!f) goto fail;
            f[len++] = *s++;
        }
        f[len] = 0;
        if (n < max)
            fields[n] = f;
        else
            free(f);
        n++;
        if (s < end && *s == ',') {
            s++;
            continue;
        }
        break;
    }
    if (s < end && *s == '\r') s++;
    if (s < end && *s == '\n') s++;
    *p = s;
    return n;
fail: /* the fields already copied are the caller's only on success (found by fuzz_manifest) */
    for (int i = 0; i < n && i < max; i++) free(fields[i]), fields[i] = NULL;
    return -1;
}

static char *slurp(const char *path, size_t *n, cav_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return cav_fail(err, CAV_EXIT_INPUT, "%s: cannot open: %m", path), NULL;
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    while (b) {
        len += fread(b + len, 1, cap - len, f);
        if (len < cap) break;
        char *nb = realloc(b, cap *= 2);
        if (!nb) free(b);
        b = nb;
    }
    fclose(f);
    if (!b) return cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", path), NULL;
    *n = len;
    return b;
}

static char *trim(char *s) {
    while (*s == ' ') s++;
    size_t n = strlen(s);
    while (n && s[n - 1] == ' ') s[--n] = 0;
    return s;
}

int cav_labelset_load(cav_labelset *ls, const char *path, cav_err *err) {
    memset(ls, 0, sizeof *ls);
    size_t n;
    char *text = slurp(path, &n, err);
    if (!text) return -1;
    const char *p = text, *end = text + n;
    if (n >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0) p += 3; /* UTF-8 byte order mark */
    char *f[3] = {0};
    int st = 0, line = 1, nf = csv_record(&p, end, f, 3);
    if (nf != 3 || strcmp(trim(f[0]), "index") || strcmp(trim(f[1]), "mid") ||
        strcmp(trim(f[2]), "display_name"))
        st = cav_fail(err, CAV_EXIT_INPUT, "%s: line 1: header: expected 'index,mid,display_name'", path);
    for (int i = 0; i < 3 && i < nf; i++) free(f[i]);
    int cap = 0;
    char **mids = NULL, **names = NULL;
    while (!st && p < end) {
        line++;
        if (*p == '\n' || *p == '\r') { /* blank line */
            csv_record(&p, end, f, 0);
            continue;
        }
        memset(f, 0, sizeof f);
        nf = csv_record(&p, end, f, 3);
        char *e = NULL;
        long idx = nf == 3 ? strtol(trim(f[0]), &e, 10) : -1;
        if (nf != 3)
            st = cav_fail(err, CAV_EXIT_INPUT, "%s: line %d: %d fields, expected 3 (index,mid,display_name)",
                          path, line, nf);
        else if (!*f[0] || *e || idx < 0 || idx > 1000000)
            st = cav_fail(err, CAV_EXIT_INPUT, "%s: line %d: index: '%s' is not a class index", path, line,
                          f[0]);
        else if (!*trim(f[1]))
            st = cav_fail(err, CAV_EXIT_INPUT, "%s: line %d: mid: empty", path, line);
        if (!st && idx >= cap) {
            int nc = cap ? cap : 64;
            while (nc <= idx) nc *= 2;
            char **nm = realloc(mids, (size_t)nc * sizeof *nm);
            if (nm) mids = nm;
            char **nn = realloc(names, (size_t)nc * sizeof *nn);
            if (nn) names = nn;
            if (!nm || !nn) st = cav_fail(err, CAV_EXIT_INTERNAL, "out of memory");
            for (int i = cap; !st && i < nc; i++) mids[i] = names[i] = NULL;
            if (!st) cap = nc;
        }
        if (!st && mids[idx])
            st = cav_fail(err, CAV_EXIT_INPUT, "%s: line %d: index: %ld appears twice", path, line, idx);
        if (!st && cav_idset_add(&ls->by_mid, trim(f[1]), idx) == 0)
            st =
                cav_fail(err, CAV_EXIT_INPUT, "%s: line %d: mid: '%s' appears twice", path, line, trim(f[1]));
        if (!st) {
            mids[idx] = strdup(trim(f[1]));
            names[idx] = strdup(f[2]);
            if (idx + 1 > ls->k) ls->k = (int)idx + 1;
        }
        for (int i = 0; i < 3 && i < nf; i++) free(f[i]);
    }
    free(text);
    ls->mids = mids;
    ls->names = names;
    for (int i = 0; !st && i < ls->k; i++)
        if (!mids[i])
            st = cav_fail(err, CAV_EXIT_INPUT, "%s: index: %d is missing (indices must be 0..%d)", path, i,
                          ls->k - 1);
    if (!st && ls->k == 0) st = cav_fail(err, CAV_EXIT_INPUT, "%s: no classes", path);
    if (st) {
        for (int i = ls->k; i < cap; i++) mids[i] = names[i] = NULL; /* never set beyond k */
        cav_labelset_free(ls);
    }
    return st;
}

void cav_labelset_free(cav_labelset *ls) {
    for (int i = 0; i < ls->k; i++) {
        free(ls->mids[i]);
        free(ls->names[i]);
    }
    free(ls->mids);
    free(ls->names);
    cav_idset_clear(&ls->by_mid);
    memset(ls, 0, sizeof *ls);
}

static char *join(char **v, int n) {
    size_t len = 1;
    for (int i = 0; i < n; i++) len += strlen(v[i]) + 1;
    char *s = malloc(len), *o = s;
    if (!s) return NULL;
    for (int i = 0; i < n; i++) o += sprintf(o, "%s%s", i ? "\n" : "", v[i]);
    *o = 0;
    return s;
}

int cav_labelset_attrs(const cav_labelset *ls, cav_attrs *a) {
    char k[32];
    snprintf(k, sizeof k, "%d", ls->k);
    char *m = join(ls->mids, ls->k), *n = join(ls->names, ls->k);
    int st = !m || !n || cav_attrs_set(a, CAV_DATTR_LABEL_COUNT, k) ||
             cav_attrs_set(a, CAV_DATTR_LABEL_MIDS, m) || cav_attrs_set(a, CAV_DATTR_LABEL_NAMES, n);
    free(m);
    free(n);
    return st ? -1 : 0;
}

static const char *jstr(const cav_json *o, const char *key) {
    const cav_json *v = cav_json_get(o, key);
    return v && v->type == CAV_JSON_STRING ? v->string : NULL;
}

int cav_manifest_load(cav_manifest *m, const char *path, const cav_labelset *ls, cav_err *err) {
    memset(m, 0, sizeof *m);
    char eb[1024];
    cav_json *j = cav_json_load(path, eb, sizeof eb);
    if (!j) return cav_fail(err, CAV_EXIT_INPUT, "%s", eb);
    const cav_json *data = cav_json_get(j, "data");
    int st = 0;
    if (!data || data->type != CAV_JSON_ARRAY)
        st = cav_fail(err, CAV_EXIT_INPUT, "%s: data: missing or not an array", path);
    if (!st && !(m->items = calloc(data->n ? (size_t)data->n : 1, sizeof *m->items)))
        st = cav_fail(err, CAV_EXIT_INTERNAL, "out of memory");
    if (!st && !(m->label_weight = calloc((size_t)ls->k, sizeof *m->label_weight)))
        st = cav_fail(err, CAV_EXIT_INTERNAL, "out of memory");
    for (int i = 0; !st && i < data->n; i++) {
        const cav_json *e = data->items[i];
        const char *id = jstr(e, CAV_REFJSON_ID), *wav = jstr(e, CAV_REFJSON_WAV),
                   *vp = jstr(e, CAV_REFJSON_VIDEO_PATH), *labels = jstr(e, CAV_REFJSON_LABELS);
        const char *missing = !id       ? CAV_REFJSON_ID
                              : !wav    ? CAV_REFJSON_WAV
                              : !labels ? CAV_REFJSON_LABELS
                                        : NULL;
        if (missing) {
            st = cav_fail(err, CAV_EXIT_INPUT, "%s: data[%d]%s%s%s: %s: missing or not a string", path, i,
                          id ? " (" CAV_REFJSON_ID " '" : "", id ? id : "", id ? "')" : "", missing);
            break;
        }
        if (!id[0] || strlen(id) > CAV_MAX_NAME) {
            st = cav_fail(err, CAV_EXIT_INPUT, "%s: data[%d]: video_id: empty or longer than %d bytes", path,
                          i, CAV_MAX_NAME);
            break;
        }
        int a = cav_idset_add(&m->by_id, id, i);
        if (a <= 0) {
            st = a < 0 ? cav_fail(err, CAV_EXIT_INTERNAL, "out of memory")
                       : cav_fail(err, CAV_EXIT_INPUT,
                                  "%s: data[%d] (video_id '%s'): video_id: duplicated (first at data[%lld])",
                                  path, i, id, (long long)cav_idset_get(&m->by_id, id));
            break;
        }
        cav_manifest_item *it = &m->items[m->n++];
        it->id = strdup(id);
        it->wav = strdup(wav);
        it->video_path = strdup(vp ? vp : "");
        int cnt = 1;
        for (const char *p = labels; *p; p++) cnt += *p == ',';
        it->lab = malloc((size_t)cnt * sizeof *it->lab);
        if (!it->id || !it->wav || !it->video_path || !it->lab) {
            st = cav_fail(err, CAV_EXIT_INTERNAL, "out of memory");
            break;
        }
        const char *p = labels;
        for (;;) {
            const char *c = strchr(p, ',');
            size_t len = c ? (size_t)(c - p) : strlen(p);
            char mid[CAV_MAX_NAME + 1];
            int64_t idx = -1;
            if (len <= CAV_MAX_NAME) {
                memcpy(mid, p, len);
                mid[len] = 0;
                idx = cav_idset_get(&ls->by_mid, mid);
            }
            if (idx < 0) {
                st = cav_fail(err, CAV_EXIT_INPUT,
                              "%s: data[%d] (video_id '%s'): labels: '%.*s' is not in the label CSV", path, i,
                              id, (int)(len > 80 ? 80 : len), p);
                break;
            }
            it->lab[it->nlab++] = (int)idx;
            m->label_weight[idx] += 1; /* counts for now */
            if (!c) break;
            p = c + 1;
        }
    }
    cav_json_free(j);
    if (st) {
        cav_manifest_free(m);
        return -1;
    }
    for (int c = 0; c < ls->k; c++) m->label_weight[c] = 1000.0 / (m->label_weight[c] + 0.01);
    return 0;
}

void cav_manifest_free(cav_manifest *m) {
    for (int i = 0; i < m->n; i++) {
        free(m->items[i].id);
        free(m->items[i].wav);
        free(m->items[i].video_path);
        free(m->items[i].lab);
    }
    free(m->items);
    free(m->label_weight);
    cav_idset_clear(&m->by_id);
    memset(m, 0, sizeof *m);
}

double cav_manifest_weight(const cav_manifest *m, int item) {
    double w = 0;
    for (int i = 0; i < m->items[item].nlab; i++) w += m->label_weight[m->items[item].lab[i]];
    return w;
}

int cav_manifest_apply(const cav_manifest *m, int item, const cav_labelset *ls, cav_record *rec) {
    const cav_manifest_item *it = &m->items[item];
    if (!rec->id && cav_record_set_id(rec, it->id)) return -1;
    float *lab = calloc(ls->k ? (size_t)ls->k : 1, sizeof *lab);
    if (!lab) return -1;
    for (int i = 0; i < it->nlab; i++) lab[it->lab[i]] = 1.0f;
    int bad = cav_clip_put_labels(rec, lab, ls->k, (float)cav_manifest_weight(m, item));
    free(lab);
    if (bad) return -1;
    if (cav_attrs_set(&rec->attrs, CAV_ATTR_WAV, it->wav)) return -1;
    if (it->video_path[0] && cav_attrs_set(&rec->attrs, CAV_ATTR_VIDEO_PATH, it->video_path)) return -1;
    return 0;
}
