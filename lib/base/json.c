/* json.c: recursive-descent JSON parser with strict number/string syntax and position-aware errors, and
 * string escaping for writers. Numbers are parsed with strtod after the grammar is checked. */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 256

typedef struct {
    const char *s, *end, *p;
    char *err;
    size_t errlen;
    int failed;
} parser;

static void fail(parser *ps, const char *why) {
    if (ps->failed) return;
    ps->failed = 1;
    int line = 1, col = 1;
    for (const char *q = ps->s; q < ps->p && q < ps->end; q++) {
        if (*q == '\n')
            line++, col = 1;
        else
            col++;
    }
    if (ps->err && ps->errlen) snprintf(ps->err, ps->errlen, "line %d, column %d: %s", line, col, why);
}

static void skip_ws(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static cav_json *node(parser *ps, cav_json_type t) {
    cav_json *j = calloc(1, sizeof *j);
    if (!j)
        fail(ps, "out of memory");
    else
        j->type = t;
    return j;
}

static int push(parser *ps, cav_json *arr, cav_json *item, char *key, int *cap) {
    if (arr->n == *cap) {
        int nc = *cap ? 2 * *cap : 4;
        cav_json **ni = realloc(arr->items, (size_t)nc * sizeof *ni);
        if (!ni) return fail(ps, "out of memory"), -1;
        arr->items = ni;
        if (arr->type == CAV_JSON_OBJECT) {
            char **nk = realloc(arr->keys, (size_t)nc * sizeof *nk);
            if (!nk) return fail(ps, "out of memory"), -1;
            arr->keys = nk;
        }
        *cap = nc;
    }
    arr->items[arr->n] = item;
    if (arr->type == CAV_JSON_OBJECT) arr->keys[arr->n] = key;
    arr->n++;
    return 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex4(parser *ps, unsigned *out) {
    if (ps->end - ps->p < 4) return fail(ps, "truncated \\u escape"), -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(ps->p[i]);
        if (h < 0) return fail(ps, "bad \\u escape"), -1;
        v = v * 16 + (unsigned)h;
    }
    ps->p += 4;
    *out = v;
    return 0;
}

/* Parses a string literal at ps->p (on the opening quote); returns a malloc'd UTF-8 string. */
static char *parse_string(parser *ps, size_t *outlen) {
    ps->p++; /* opening quote */
    size_t cap = 16, n = 0;
    char *out = malloc(cap);
    if (!out) return fail(ps, "out of memory"), NULL;
    for (;;) {
        if (ps->p >= ps->end) {
            fail(ps, "unterminated string");
            break;
        }
        unsigned char c = (unsigned char)*ps->p;
        if (c == '"') {
            ps->p++;
            out[n] = 0;
            if (outlen) *outlen = n;
            return out;
        }
        if (c < 0x20) {
            fail(ps, "control character in string");
            break;
        }
        char buf[4];
        size_t k = 0;
        if (c == '\\') {
            ps->p++;
            if (ps->p >= ps->end) {
                fail(ps, "unterminated string");
                break;
            }
            char e = *ps->p++;
            unsigned cp;
            switch (e) {
            case '"':
                buf[k++] = '"';
                break;
            case '\\':
                buf[k++] = '\\';
                break;
            case '/':
                buf[k++] = '/';
                break;
            case 'b':
                buf[k++] = '\b';
                break;
            case 'f':
                buf[k++] = '\f';
                break;
            case 'n':
                buf[k++] = '\n';
                break;
            case 'r':
                buf[k++] = '\r';
                break;
            case 't':
                buf[k++] = '\t';
                break;
            case 'u':
                if (read_hex4(ps, &cp)) goto bad;
                if (cp >= 0xd800 && cp < 0xdc00) { /* surrogate pair */
                    unsigned lo;
                    if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u') {
                        fail(ps, "unpaired surrogate");
                        goto bad;
                    }
                    ps->p += 2;
                    if (read_hex4(ps, &lo)) goto bad;
                    if (lo < 0xdc00 || lo > 0xdfff) {
                        fail(ps, "unpaired surrogate");
                        goto bad;
                    }
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                } else if (cp >= 0xdc00 && cp < 0xe000) {
                    fail(ps, "unpaired surrogate");
                    goto bad;
                }
                if (cp == 0) {
                    fail(ps, "\\u0000 in string");
                    goto bad;
                }
                if (cp < 0x80)
                    buf[k++] = (char)cp;
                else if (cp < 0x800) {
                    buf[k++] = (char)(0xc0 | (cp >> 6));
                    buf[k++] = (char)(0x80 | (cp & 0x3f));
                } else if (cp < 0x10000) {
                    buf[k++] = (char)(0xe0 | (cp >> 12));
                    buf[k++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                    buf[k++] = (char)(0x80 | (cp & 0x3f));
                } else {
                    buf[k++] = (char)(0xf0 | (cp >> 18));
                    buf[k++] = (char)(0x80 | ((cp >> 12) & 0x3f));
                    buf[k++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                    buf[k++] = (char)(0x80 | (cp & 0x3f));
                }
                break;
            default:
                fail(ps, "bad escape in string");
                goto bad;
            }
        } else {
            buf[k++] = (char)c;
            ps->p++;
        }
        if (n + k + 1 > cap) {
            while (n + k + 1 > cap) cap *= 2;
            char *no = realloc(out, cap);
            if (!no) {
                fail(ps, "out of memory");
                break;
            }
            out = no;
        }
        memcpy(out + n, buf, k);
        n += k;
    }
bad:
    free(out);
    return NULL;
}

static int parse_number(parser *ps, double *out) {
    const char *q = ps->p;
    if (q < ps->end && *q == '-') q++;
    if (q >= ps->end) return fail(ps, "bad number"), -1;
    if (*q == '0')
        q++;
    else if (*q >= '1' && *q <= '9')
        while (q < ps->end && *q >= '0' && *q <= '9') q++;
    else
        return fail(ps, "bad number"), -1;
    if (q < ps->end && *q == '.') {
        q++;
        if (q >= ps->end || *q < '0' || *q > '9') return fail(ps, "bad number"), -1;
        while (q < ps->end && *q >= '0' && *q <= '9') q++;
    }
    if (q < ps->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < ps->end && (*q == '+' || *q == '-')) q++;
        if (q >= ps->end || *q < '0' || *q > '9') return fail(ps, "bad number"), -1;
        while (q < ps->end && *q >= '0' && *q <= '9') q++;
    }
    char tmp[64];
    size_t n = (size_t)(q - ps->p);
    char *buf = n < sizeof tmp ? tmp : malloc(n + 1);
    if (!buf) return fail(ps, "out of memory"), -1;
    memcpy(buf, ps->p, n);
    buf[n] = 0;
    errno = 0;
    *out = strtod(buf, NULL);
    if (buf != tmp) free(buf);
    ps->p = q;
    return 0;
}

static cav_json *parse_value(parser *ps, int depth);

static cav_json *parse_container(parser *ps, int depth, int is_obj) {
    cav_json *j = node(ps, is_obj ? CAV_JSON_OBJECT : CAV_JSON_ARRAY);
    if (!j) return NULL;
    int cap = 0;
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == (is_obj ? '}' : ']')) {
        ps->p++;
        return j;
    }
    for (;;) {
        char *key = NULL;
        skip_ws(ps);
        if (is_obj) {
            if (ps->p >= ps->end || *ps->p != '"') {
                fail(ps, "expected a string key");
                break;
            }
            key = parse_string(ps, NULL);
            if (!key) break;
            for (int i = 0; i < j->n; i++)
                if (strcmp(j->keys[i], key) == 0) {
                    fail(ps, "duplicate key in object");
                    break;
                }
            skip_ws(ps);
            if (!ps->failed && (ps->p >= ps->end || *ps->p != ':')) fail(ps, "expected ':'");
            if (ps->failed) {
                free(key);
                break;
            }
            ps->p++;
        }
        cav_json *v = parse_value(ps, depth + 1);
        if (!v) {
            free(key);
            break;
        }
        if (push(ps, j, v, key, &cap)) {
            cav_json_free(v);
            free(key);
            break;
        }
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == (is_obj ? '}' : ']')) {
            ps->p++;
            return j;
        }
        fail(ps, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
        break;
    }
    cav_json_free(j);
    return NULL;
}

static int match(parser *ps, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, lit, n) == 0) {
        ps->p += n;
        return 1;
    }
    return 0;
}

static cav_json *parse_value(parser *ps, int depth) {
    if (depth > JSON_MAX_DEPTH) return fail(ps, "nesting too deep"), NULL;
    skip_ws(ps);
    if (ps->p >= ps->end) return fail(ps, "unexpected end of input"), NULL;
    char c = *ps->p;
    cav_json *j;
    if (c == '{' || c == '[') return parse_container(ps, depth, c == '{');
    if (c == '"') {
        size_t len;
        char *s = parse_string(ps, &len);
        if (!s) return NULL;
        if (!(j = node(ps, CAV_JSON_STRING))) return free(s), NULL;
        j->string = s;
        j->len = len;
        return j;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        double v;
        if (parse_number(ps, &v)) return NULL;
        if ((j = node(ps, CAV_JSON_NUMBER))) j->number = v;
        return j;
    }
    if (match(ps, "true") || match(ps, "false")) {
        if ((j = node(ps, CAV_JSON_BOOL))) j->boolean = ps->p[-1] == 'e' && ps->p[-2] == 'u';
        return j;
    }
    if (match(ps, "null")) return node(ps, CAV_JSON_NULL);
    return fail(ps, "unexpected character"), NULL;
}

cav_json *cav_json_parse(const char *text, size_t len, char *errbuf, size_t errlen) {
    parser ps = {text, text + len, text, errbuf, errlen, 0};
    if (errbuf && errlen) errbuf[0] = 0;
    cav_json *j = parse_value(&ps, 0);
    if (!j) return NULL;
    skip_ws(&ps);
    if (ps.p != ps.end) {
        fail(&ps, "trailing characters after the JSON value");
        cav_json_free(j);
        return NULL;
    }
    return j;
}

void cav_json_free(cav_json *j) {
    if (!j) return;
    for (int i = 0; i < j->n; i++) {
        cav_json_free(j->items[i]);
        if (j->keys) free(j->keys[i]);
    }
    free(j->items);
    free(j->keys);
    free(j->string);
    free(j);
}

const cav_json *cav_json_get(const cav_json *j, const char *key) {
    if (!j || j->type != CAV_JSON_OBJECT) return NULL;
    for (int i = 0; i < j->n; i++)
        if (strcmp(j->keys[i], key) == 0) return j->items[i];
    return NULL;
}

const char *cav_json_get_string(const cav_json *j, const char *key, const char *dflt) {
    const cav_json *v = cav_json_get(j, key);
    return v && v->type == CAV_JSON_STRING ? v->string : dflt;
}
double cav_json_get_number(const cav_json *j, const char *key, double dflt) {
    const cav_json *v = cav_json_get(j, key);
    return v && v->type == CAV_JSON_NUMBER ? v->number : dflt;
}
int cav_json_get_bool(const cav_json *j, const char *key, int dflt) {
    const cav_json *v = cav_json_get(j, key);
    return v && v->type == CAV_JSON_BOOL ? v->boolean : dflt;
}

cav_json *cav_json_load(const char *path, char *errbuf, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(errbuf, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = cap < SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int rerr = ferror(f);
    fclose(f);
    if (!buf || rerr) {
        free(buf);
        snprintf(errbuf, errlen, "%s: %s", path, buf ? "read error" : "out of memory");
        return NULL;
    }
    char inner[512];
    cav_json *j = cav_json_parse(buf, n, inner, sizeof inner);
    free(buf);
    if (!j) snprintf(errbuf, errlen, "%s: %s", path, inner);
    return j;
}

static const char *escape_of(unsigned char c, char tmp[8]) {
    switch (c) {
    case '"':
        return "\\\"";
    case '\\':
        return "\\\\";
    case '\n':
        return "\\n";
    case '\r':
        return "\\r";
    case '\t':
        return "\\t";
    case '\b':
        return "\\b";
    case '\f':
        return "\\f";
    default:
        if (c < 0x20) {
            snprintf(tmp, 8, "\\u%04x", c);
            return tmp;
        }
        return NULL;
    }
}

static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 64;
        while (*len + n + 1 > nc) nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb) return -1;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

int cav_json_append_string(char **buf, size_t *len, size_t *cap, const char *s) {
    char tmp[8];
    if (append(buf, len, cap, "\"", 1)) return -1;
    for (; *s; s++) {
        const char *e = escape_of((unsigned char)*s, tmp);
        if (e ? append(buf, len, cap, e, strlen(e)) : append(buf, len, cap, s, 1)) return -1;
    }
    return append(buf, len, cap, "\"", 1);
}

int cav_json_append_raw(char **buf, size_t *len, size_t *cap, const char *s) {
    return append(buf, len, cap, s, strlen(s));
}

char *cav_json_num(char *buf, size_t n, double x, int digits) {
    if (isfinite(x))
        snprintf(buf, n, "%.*g", digits, x);
    else
        snprintf(buf, n, "null");
    return buf;
}
