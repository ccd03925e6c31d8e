/* pth.c: the .pth reader: a zip central-directory walker for stored entries, the legacy stream layout, and
 * a restricted pickle machine whose objects live in an arena freed in one go. Limits (stack, memo, object
 * count, nesting of the result) keep hostile files from exhausting memory; every offset and size read from
 * the file is checked against the mapping before use. */
#include "pth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PK_MAX_STACK (1 << 20)
#define PK_MAX_MEMO (1 << 24)
#define PK_MAX_OBJS (1 << 26)

/* ---------------------------------------------------------------------------------------------------- */
/* Pickle objects */

enum {
    PV_NONE,
    PV_BOOL,
    PV_INT,
    PV_FLOAT,
    PV_STR,
    PV_TUPLE,
    PV_LIST,
    PV_DICT,
    PV_GLOBAL,  /* s = "module.name" of an allowed global */
    PV_STORAGE, /* a persistent storage reference */
    PV_TENSOR,
    PV_MARK,
};

typedef struct pv pv;
struct pv {
    int type;
    int64_t i; /* INT, BOOL; STORAGE: element count; TENSOR: storage offset */
    double f;
    char *s; /* STR, GLOBAL; STORAGE: key */
    size_t slen;
    pv **items; /* TUPLE/LIST; DICT: key, value pairs; TENSOR: [storage, size tuple, stride tuple] */
    int n, cap;
    int stype; /* STORAGE: index into storage_types */
    pv *next;  /* arena chain */
};

static const struct {
    const char *global; /* "torch.FloatStorage" */
    const char *name;   /* "Float" */
    size_t size;
} storage_types[] = {
    {"torch.FloatStorage", "Float", 4}, {"torch.DoubleStorage", "Double", 8},
    {"torch.HalfStorage", "Half", 2},   {"torch.BFloat16Storage", "BFloat16", 2},
    {"torch.LongStorage", "Long", 8},   {"torch.IntStorage", "Int", 4},
    {"torch.ShortStorage", "Short", 2}, {"torch.CharStorage", "Char", 1},
    {"torch.ByteStorage", "Byte", 1},   {"torch.BoolStorage", "Bool", 1},
};
#define N_STORAGE_TYPES (int)(sizeof storage_types / sizeof storage_types[0])

static const char *allowed_callables[] = {
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_parameter",
};

typedef struct {
    const char *path;
    cav_err *err;
    pv *arena;
    long nobjs;
    pv **stack;
    int sp, scap;
    pv **memo;
    size_t nmemo;
    int failed;
} pk;

static int pk_fail(pk *m, int code, const char *fmt, const char *a) {
    if (!m->failed) {
        char msg[512];
        snprintf(msg, sizeof msg, fmt, a ? a : "");
        cav_fail(m->err, code, "%s: %s", m->path, msg);
    }
    m->failed = 1;
    return -1;
}

static pv *pv_new(pk *m, int type) {
    if (m->nobjs >= PK_MAX_OBJS) return pk_fail(m, 2, "pickle: too many objects", NULL), NULL;
    pv *v = calloc(1, sizeof *v);
    if (!v) return pk_fail(m, 3, "out of memory", NULL), NULL;
    v->type = type;
    v->next = m->arena;
    m->arena = v;
    m->nobjs++;
    return v;
}

static void pk_free(pk *m) {
    while (m->arena) {
        pv *n = m->arena->next;
        free(m->arena->s);
        free(m->arena->items);
        free(m->arena);
        m->arena = n;
    }
    free(m->stack);
    free(m->memo);
    m->stack = NULL;
    m->memo = NULL;
}

static int pv_push_item(pk *m, pv *c, pv *x) {
    if (c->n == c->cap) {
        if (c->cap >= (1 << 28)) return pk_fail(m, 2, "pickle: container too large", NULL);
        int nc = c->cap ? 2 * c->cap : 4;
        pv **ni = realloc(c->items, (size_t)nc * sizeof *ni);
        if (!ni) return pk_fail(m, 3, "out of memory", NULL);
        c->items = ni;
        c->cap = nc;
    }
    c->items[c->n++] = x;
    return 0;
}

static int push(pk *m, pv *v) {
    if (!v) return -1;
    if (m->sp == m->scap) {
        if (m->scap >= PK_MAX_STACK) return pk_fail(m, 2, "pickle: stack too deep", NULL);
        int nc = m->scap ? 2 * m->scap : 64;
        pv **ns = realloc(m->stack, (size_t)nc * sizeof *ns);
        if (!ns) return pk_fail(m, 3, "out of memory", NULL);
        m->stack = ns;
        m->scap = nc;
    }
    m->stack[m->sp++] = v;
    return 0;
}

static pv *pop(pk *m) {
    if (m->sp == 0 || m->stack[m->sp - 1]->type == PV_MARK)
        return pk_fail(m, 2, "pickle: stack underflow", NULL), NULL;
    return m->stack[--m->sp];
}

static pv *top(pk *m) {
    if (m->sp == 0 || m->stack[m->sp - 1]->type == PV_MARK)
        return pk_fail(m, 2, "pickle: stack underflow", NULL), NULL;
    return m->stack[m->sp - 1];
}

/* Index of the topmost MARK, or -1. */
static int find_mark(pk *m) {
    for (int i = m->sp - 1; i >= 0; i--)
        if (m->stack[i]->type == PV_MARK) return i;
    pk_fail(m, 2, "pickle: no MARK on the stack", NULL);
    return -1;
}

static int memo_put(pk *m, size_t idx, pv *v) {
    if (!v) return pk_fail(m, 2, "pickle: memoising an empty stack", NULL);
    if (idx >= PK_MAX_MEMO) return pk_fail(m, 2, "pickle: memo index too large", NULL);
    if (idx >= m->nmemo) {
        size_t nn = idx + 1 > 2 * m->nmemo ? idx + 1 : 2 * m->nmemo;
        if (nn > PK_MAX_MEMO) nn = PK_MAX_MEMO;
        pv **nm = realloc(m->memo, nn * sizeof *nm);
        if (!nm) return pk_fail(m, 3, "out of memory", NULL);
        memset(nm + m->nmemo, 0, (nn - m->nmemo) * sizeof *nm);
        m->memo = nm;
        m->nmemo = nn;
    }
    m->memo[idx] = v;
    return 0;
}

static pv *memo_get(pk *m, size_t idx) {
    if (idx >= m->nmemo || !m->memo[idx]) return pk_fail(m, 2, "pickle: memo entry missing", NULL), NULL;
    return m->memo[idx];
}

static int str_eq(const pv *v, const char *s) {
    return v && v->type == PV_STR && !strcmp(v->s, s);
}

static int dict_set(pk *m, pv *d, pv *k, pv *v) {
    if (d->type != PV_DICT) return pk_fail(m, 2, "pickle: SETITEM on a non-dict", NULL);
    if (k->type == PV_STR)
        for (int i = 0; i + 1 < d->n; i += 2)
            if (str_eq(d->items[i], k->s)) {
                d->items[i + 1] = v;
                return 0;
            }
    if (pv_push_item(m, d, k) || pv_push_item(m, d, v)) return -1;
    return 0;
}

/* An int tuple (sizes, strides) into out[]; -1 on anything else. */
static int int_tuple(const pv *t, int64_t *out, int *n) {
    if (!t || t->type != PV_TUPLE || t->n > CAV_MAX_NDIM) return -1;
    for (int i = 0; i < t->n; i++) {
        if (t->items[i]->type != PV_INT) return -1;
        out[i] = t->items[i]->i;
    }
    *n = t->n;
    return 0;
}

/* REDUCE: only the allowed callables, with the argument shapes torch writes. */
static pv *reduce(pk *m, pv *fn, pv *args) {
    if (fn->type != PV_GLOBAL) return pk_fail(m, 2, "pickle: REDUCE on a non-callable", NULL), NULL;
    if (args->type != PV_TUPLE) return pk_fail(m, 2, "pickle: REDUCE arguments are not a tuple", NULL), NULL;
    if (!strcmp(fn->s, "collections.OrderedDict")) {
        if (args->n != 0) return pk_fail(m, 2, "pickle: OrderedDict with arguments", NULL), NULL;
        return pv_new(m, PV_DICT);
    }
    if (!strcmp(fn->s, "torch._utils._rebuild_parameter")) {
        if (args->n < 1 || args->items[0]->type != PV_TENSOR)
            return pk_fail(m, 2, "pickle: _rebuild_parameter without a tensor", NULL), NULL;
        return args->items[0];
    }
    if (!strcmp(fn->s, "torch._utils._rebuild_tensor_v2") || !strcmp(fn->s, "torch._utils._rebuild_tensor")) {
        /* (storage, storage_offset, size, stride, [requires_grad, backward_hooks, [metadata]]) */
        if (args->n < 4 || args->items[0]->type != PV_STORAGE || args->items[1]->type != PV_INT ||
            args->items[2]->type != PV_TUPLE || args->items[3]->type != PV_TUPLE)
            return pk_fail(m, 2, "pickle: %s with unexpected arguments", fn->s), NULL;
        int64_t sz[CAV_MAX_NDIM], st[CAV_MAX_NDIM];
        int nd1, nd2;
        if (int_tuple(args->items[2], sz, &nd1) || int_tuple(args->items[3], st, &nd2) || nd1 != nd2)
            return pk_fail(m, 2, "pickle: tensor size/stride are not int tuples of equal length (at most 8)",
                           NULL),
                   NULL;
        pv *t = pv_new(m, PV_TENSOR);
        if (!t) return NULL;
        t->i = args->items[1]->i;
        if (pv_push_item(m, t, args->items[0]) || pv_push_item(m, t, args->items[2]) ||
            pv_push_item(m, t, args->items[3]))
            return NULL;
        return t;
    }
    return pk_fail(m, 2, "pickle: callable %s refused", fn->s), NULL;
}

/* Persistent id -> storage reference. Zip: ('storage', type, key, location, numel); legacy adds a sixth
 * item, view metadata, which must be None. */
static pv *persistent_load(pk *m, pv *pid) {
    if (pid->type != PV_TUPLE || pid->n < 5 || pid->n > 6 || !str_eq(pid->items[0], "storage") ||
        pid->items[1]->type != PV_GLOBAL || pid->items[2]->type != PV_STR || pid->items[3]->type != PV_STR ||
        pid->items[4]->type != PV_INT || pid->items[4]->i < 0)
        return pk_fail(m, 2, "pickle: unsupported persistent id", NULL), NULL;
    if (pid->n == 6 && pid->items[5]->type != PV_NONE)
        return pk_fail(m, 2, "pickle: legacy storage views are not supported", NULL), NULL;
    int ti = -1;
    for (int k = 0; k < N_STORAGE_TYPES; k++)
        if (!strcmp(pid->items[1]->s, storage_types[k].global)) ti = k;
    if (ti < 0) return pk_fail(m, 2, "pickle: %s is not a storage type", pid->items[1]->s), NULL;
    pv *s = pv_new(m, PV_STORAGE);
    if (!s) return NULL;
    s->stype = ti;
    s->i = pid->items[4]->i;
    s->s = strdup(pid->items[2]->s);
    if (!s->s) return pk_fail(m, 3, "out of memory", NULL), NULL;
    return s;
}

static int global_allowed(const char *g) {
    for (size_t k = 0; k < sizeof allowed_callables / sizeof *allowed_callables; k++)
        if (!strcmp(g, allowed_callables[k])) return 1;
    for (int k = 0; k < N_STORAGE_TYPES; k++)
        if (!strcmp(g, storage_types[k].global)) return 1;
    return 0;
}

static uint64_t rd_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* Runs one pickle from buf[*pos..len); leaves *pos after STOP; returns the result or NULL. */
static pv *unpickle(pk *m, const unsigned char *buf, size_t len, size_t *pos) {
    size_t p = *pos;
    m->sp = 0;
#define NEED(k)                                                                                              \
    do {                                                                                                     \
        if ((size_t)(k) > len - p) return pk_fail(m, 2, "pickle: truncated", NULL), NULL;                    \
    } while (0)
    for (;;) {
        NEED(1);
        unsigned char op = buf[p++];
        pv *v, *a, *b;
        int mk;
        uint64_t n;
        switch (op) {
        case 0x80: /* PROTO */
            NEED(1);
            if (buf[p] < 2 || buf[p] > 5) return pk_fail(m, 2, "pickle: unsupported protocol", NULL), NULL;
            p++;
            break;
        case 0x95: /* FRAME: the frame length only helps buffering */
            NEED(8);
            p += 8;
            break;
        case '.': /* STOP */
            *pos = p;
            v = pop(m);
            return v;
        case '(':
            if (push(m, pv_new(m, PV_MARK))) return NULL;
            break;
        case 'N':
            if (push(m, pv_new(m, PV_NONE))) return NULL;
            break;
        case 0x88:
        case 0x89:
            if (!(v = pv_new(m, PV_BOOL))) return NULL;
            v->i = op == 0x88;
            if (push(m, v)) return NULL;
            break;
        case 'J':
        case 'K':
        case 'M':
            NEED(op == 'J' ? 4 : op == 'K' ? 1 : 2);
            if (!(v = pv_new(m, PV_INT))) return NULL;
            if (op == 'J')
                v->i = (int32_t)rd_le(buf + p, 4), p += 4;
            else if (op == 'K')
                v->i = buf[p++];
            else
                v->i = (int64_t)rd_le(buf + p, 2), p += 2;
            if (push(m, v)) return NULL;
            break;
        case 0x8a: /* LONG1: little-endian two's complement, up to 8 bytes kept */
            NEED(1);
            n = buf[p++];
            NEED(n);
            if (!(v = pv_new(m, PV_INT))) return NULL;
            if (n > 8) {
                v->i = INT64_MAX; /* only the legacy magic number is this long; it is checked as "too big" */
                v->f = 1;
            } else if (n > 0) {
                uint64_t u = rd_le(buf + p, (int)n);
                if (n < 8 && (buf[p + n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n);
                v->i = (int64_t)u;
            }
            p += n;
            if (push(m, v)) return NULL;
            break;
        case 'G': /* BINFLOAT, big-endian */
            NEED(8);
            {
                uint64_t u = 0;
                for (int i = 0; i < 8; i++) u = u << 8 | buf[p + i];
                if (!(v = pv_new(m, PV_FLOAT))) return NULL;
                memcpy(&v->f, &u, 8);
                p += 8;
                if (push(m, v)) return NULL;
            }
            break;
        case 'X':  /* BINUNICODE */
        case 0x8c: /* SHORT_BINUNICODE */
        case 'T':  /* BINSTRING */
        case 'U':  /* SHORT_BINSTRING */
        case 'B':  /* BINBYTES */
        case 'C':  /* SHORT_BINBYTES */
        {
            int w = (op == 0x8c || op == 'U' || op == 'C') ? 1 : 4;
            NEED(w);
            n = rd_le(buf + p, w);
            p += w;
            NEED(n);
            if (!(v = pv_new(m, PV_STR))) return NULL;
            v->s = malloc(n + 1);
            if (!v->s) return pk_fail(m, 3, "out of memory", NULL), NULL;
            memcpy(v->s, buf + p, n);
            v->s[n] = 0;
            v->slen = n;
            if (memchr(v->s, 0, n)) v->slen = (size_t)-1; /* never matches a name */
            p += n;
            if (push(m, v)) return NULL;
        } break;
        case 'c': /* GLOBAL "module\nname\n" */
        {
            const unsigned char *e1 = memchr(buf + p, '\n', len - p);
            if (!e1) return pk_fail(m, 2, "pickle: truncated GLOBAL", NULL), NULL;
            const unsigned char *e2 = memchr(e1 + 1, '\n', len - (size_t)(e1 + 1 - buf));
            if (!e2) return pk_fail(m, 2, "pickle: truncated GLOBAL", NULL), NULL;
            size_t l1 = (size_t)(e1 - (buf + p)), l2 = (size_t)(e2 - (e1 + 1));
            if (l1 + l2 > 200) return pk_fail(m, 2, "pickle: GLOBAL name too long", NULL), NULL;
            char g[256];
            memcpy(g, buf + p, l1);
            g[l1] = '.';
            memcpy(g + l1 + 1, e1 + 1, l2);
            g[l1 + 1 + l2] = 0;
            for (size_t i = 0; i < l1 + 1 + l2; i++)
                if ((unsigned char)g[i] < 0x20 || (unsigned char)g[i] > 0x7e) g[i] = '?';
            if (!global_allowed(g)) return pk_fail(m, 2, "pickle: global %s refused", g), NULL;
            if (!(v = pv_new(m, PV_GLOBAL))) return NULL;
            v->s = strdup(g);
            if (!v->s) return pk_fail(m, 3, "out of memory", NULL), NULL;
            p = (size_t)(e2 + 1 - buf);
            if (push(m, v)) return NULL;
        } break;
        case 0x93: /* STACK_GLOBAL (protocol 4): module and name strings on the stack */
        {
            b = pop(m);
            a = b ? pop(m) : NULL;
            if (!a || a->type != PV_STR || b->type != PV_STR || a->slen + b->slen > 200)
                return pk_fail(m, 2, "pickle: bad STACK_GLOBAL", NULL), NULL;
            char g[256];
            snprintf(g, sizeof g, "%s.%s", a->s, b->s);
            if (!global_allowed(g)) return pk_fail(m, 2, "pickle: global %s refused", g), NULL;
            if (!(v = pv_new(m, PV_GLOBAL))) return NULL;
            v->s = strdup(g);
            if (!v->s) return pk_fail(m, 3, "out of memory", NULL), NULL;
            if (push(m, v)) return NULL;
        } break;
        case ')':
            if (push(m, pv_new(m, PV_TUPLE))) return NULL;
            break;
        case ']':
            if (push(m, pv_new(m, PV_LIST))) return NULL;
            break;
        case '}':
            if (push(m, pv_new(m, PV_DICT))) return NULL;
            break;
        case 't': /* TUPLE from MARK */
        case 'l': /* LIST from MARK */
        case 'd': /* DICT from MARK */
            if ((mk = find_mark(m)) < 0) return NULL;
            if (!(v = pv_new(m, op == 't' ? PV_TUPLE : op == 'l' ? PV_LIST : PV_DICT))) return NULL;
            if (op == 'd' && (m->sp - mk - 1) % 2) return pk_fail(m, 2, "pickle: odd DICT items", NULL), NULL;
            for (int i = mk + 1; i < m->sp; i += (op == 'd' ? 2 : 1)) {
                if (op == 'd') {
                    if (dict_set(m, v, m->stack[i], m->stack[i + 1])) return NULL;
                } else if (pv_push_item(m, v, m->stack[i]))
                    return NULL;
            }
            m->sp = mk;
            if (push(m, v)) return NULL;
            break;
        case 0x85:
        case 0x86:
        case 0x87: /* TUPLE1..3 */
        {
            int k = op - 0x84;
            if (m->sp < k) return pk_fail(m, 2, "pickle: stack underflow", NULL), NULL;
            for (int i = m->sp - k; i < m->sp; i++)
                if (m->stack[i]->type == PV_MARK)
                    return pk_fail(m, 2, "pickle: MARK inside TUPLEn", NULL), NULL;
            if (!(v = pv_new(m, PV_TUPLE))) return NULL;
            for (int i = m->sp - k; i < m->sp; i++)
                if (pv_push_item(m, v, m->stack[i])) return NULL;
            m->sp -= k;
            if (push(m, v)) return NULL;
        } break;
        case 'q': /* BINPUT */
            NEED(1);
            if (memo_put(m, buf[p++], top(m))) return NULL;
            break;
        case 'r': /* LONG_BINPUT */
            NEED(4);
            n = rd_le(buf + p, 4);
            p += 4;
            if (memo_put(m, n, top(m))) return NULL;
            break;
        case 0x94: /* MEMOIZE */
            if (memo_put(m, m->nmemo, top(m))) return NULL;
            break;
        case 'h': /* BINGET */
            NEED(1);
            if (push(m, memo_get(m, buf[p++]))) return NULL;
            break;
        case 'j': /* LONG_BINGET */
            NEED(4);
            n = rd_le(buf + p, 4);
            p += 4;
            if (push(m, memo_get(m, n))) return NULL;
            break;
        case '2': /* DUP */
            if (push(m, top(m))) return NULL;
            break;
        case '0': /* POP */
            if (m->sp > 0)
                m->sp--;
            else
                return pk_fail(m, 2, "pickle: stack underflow", NULL), NULL;
            break;
        case '1': /* POP_MARK */
            if ((mk = find_mark(m)) < 0) return NULL;
            m->sp = mk;
            break;
        case 'a': /* APPEND */
            if (!(v = pop(m)) || !(a = top(m))) return NULL;
            if (a->type != PV_LIST) return pk_fail(m, 2, "pickle: APPEND to a non-list", NULL), NULL;
            if (pv_push_item(m, a, v)) return NULL;
            break;
        case 'e': /* APPENDS */
            if ((mk = find_mark(m)) < 0) return NULL;
            if (mk == 0 || m->stack[mk - 1]->type != PV_LIST)
                return pk_fail(m, 2, "pickle: APPENDS to a non-list", NULL), NULL;
            for (int i = mk + 1; i < m->sp; i++)
                if (pv_push_item(m, m->stack[mk - 1], m->stack[i])) return NULL;
            m->sp = mk;
            break;
        case 's': /* SETITEM */
            if (!(b = pop(m)) || !(a = pop(m)) || !(v = top(m))) return NULL;
            if (dict_set(m, v, a, b)) return NULL;
            break;
        case 'u': /* SETITEMS */
            if ((mk = find_mark(m)) < 0) return NULL;
            if (mk == 0 || (m->sp - mk - 1) % 2) return pk_fail(m, 2, "pickle: bad SETITEMS", NULL), NULL;
            for (int i = mk + 1; i < m->sp; i += 2)
                if (dict_set(m, m->stack[mk - 1], m->stack[i], m->stack[i + 1])) return NULL;
            m->sp = mk;
            break;
        case 'R': /* REDUCE */
            if (!(b = pop(m)) || !(a = pop(m))) return NULL;
            if (push(m, reduce(m, a, b))) return NULL;
            break;
        case 'b': /* BUILD: state for an OrderedDict (its _metadata) or a tensor is ignored */
            if (!(b = pop(m)) || !(a = top(m))) return NULL;
            if (a->type != PV_DICT && a->type != PV_TENSOR)
                return pk_fail(m, 2, "pickle: BUILD on an unsupported object", NULL), NULL;
            break;
        case 'Q': /* BINPERSID */
            if (!(a = pop(m))) return NULL;
            if (push(m, persistent_load(m, a))) return NULL;
            break;
        default: {
            char o[8];
            snprintf(o, sizeof o, "0x%02x", op);
            return pk_fail(m, 2, "pickle: opcode %s not supported", o), NULL;
        }
        }
    }
#undef NEED
}

/* ---------------------------------------------------------------------------------------------------- */
/* Zip */

typedef struct {
    char *name;
    uint64_t off, size; /* data offset and size in the file */
} zentry;

typedef struct {
    zentry *e;
    int n;
} zdir;

static void zdir_free(zdir *z) {
    for (int i = 0; i < z->n; i++) free(z->e[i].name);
    free(z->e);
    z->e = NULL;
    z->n = 0;
}

static int zip_read(const unsigned char *b, size_t len, zdir *z, const char *path, cav_err *err) {
    memset(z, 0, sizeof *z);
    if (len < 22) return cav_fail(err, 2, "%s: zip: too short", path);
    size_t eocd = (size_t)-1;
    size_t lo = len > 22 + 65535 ? len - 22 - 65535 : 0;
    for (size_t i = len - 22 + 1; i-- > lo;)
        if (rd_le(b + i, 4) == 0x06054b50) {
            eocd = i;
            break;
        }
    if (eocd == (size_t)-1)
        return cav_fail(err, 2, "%s: zip: no end-of-central-directory record (truncated?)", path);
    uint64_t nent = rd_le(b + eocd + 10, 2), cdsize = rd_le(b + eocd + 12, 4),
             cdoff = rd_le(b + eocd + 16, 4);
    if (nent == 0xffff || cdoff == 0xffffffffu || cdsize == 0xffffffffu) {
        /* zip64: locator just before the EOCD points to the zip64 EOCD record */
        if (eocd < 20 || rd_le(b + eocd - 20, 4) != 0x07064b50)
            return cav_fail(err, 2, "%s: zip: zip64 locator missing", path);
        uint64_t z64 = rd_le(b + eocd - 20 + 8, 8);
        if (len < 56 || z64 > len - 56 || rd_le(b + z64, 4) != 0x06064b50) /* len - 56 must not wrap */
            return cav_fail(err, 2, "%s: zip: bad zip64 end record", path);
        nent = rd_le(b + z64 + 32, 8);
        cdsize = rd_le(b + z64 + 40, 8);
        cdoff = rd_le(b + z64 + 48, 8);
    }
    if (cdoff > len || cdsize > len - cdoff || nent > cdsize / 46 + 1)
        return cav_fail(err, 2, "%s: zip: central directory outside the file", path);
    z->e = calloc((size_t)nent + 1, sizeof *z->e);
    if (!z->e) return cav_fail(err, 3, "%s: out of memory", path);
    uint64_t p = cdoff, end = cdoff + cdsize;
    for (uint64_t i = 0; i < nent; i++) {
        if (end - p < 46 || rd_le(b + p, 4) != 0x02014b50)
            return zdir_free(z), cav_fail(err, 2, "%s: zip: bad central directory entry", path);
        unsigned method = (unsigned)rd_le(b + p + 10, 2), flags = (unsigned)rd_le(b + p + 8, 2);
        uint64_t csize = rd_le(b + p + 20, 4), usize = rd_le(b + p + 24, 4);
        uint64_t nl = rd_le(b + p + 28, 2), xl = rd_le(b + p + 30, 2), cl = rd_le(b + p + 32, 2);
        uint64_t lho = rd_le(b + p + 42, 4);
        if (end - p - 46 < nl + xl + cl)
            return zdir_free(z), cav_fail(err, 2, "%s: zip: central directory entry overruns", path);
        const unsigned char *x = b + p + 46 + nl, *xe = x + xl;
        while (xe - x >= 4) { /* zip64 extended information */
            unsigned id = (unsigned)rd_le(x, 2), sz = (unsigned)rd_le(x + 2, 2);
            if ((size_t)(xe - x - 4) < sz) break;
            if (id == 1) {
                const unsigned char *q = x + 4, *qe = q + sz;
                if (usize == 0xffffffffu && qe - q >= 8) usize = rd_le(q, 8), q += 8;
                if (csize == 0xffffffffu && qe - q >= 8) csize = rd_le(q, 8), q += 8;
                if (lho == 0xffffffffu && qe - q >= 8) lho = rd_le(q, 8), q += 8;
            }
            x += 4 + sz;
        }
        if (method != 0 || (flags & 1))
            return zdir_free(z),
                   cav_fail(err, 2, "%s: zip: entry compressed or encrypted (torch.save stores)", path);
        if (csize != usize)
            return zdir_free(z), cav_fail(err, 2, "%s: zip: stored entry sizes disagree", path);
        if (lho > len - 30 || rd_le(b + lho, 4) != 0x04034b50)
            return zdir_free(z), cav_fail(err, 2, "%s: zip: bad local header", path);
        uint64_t lnl = rd_le(b + lho + 26, 2), lxl = rd_le(b + lho + 28, 2);
        uint64_t doff = lho + 30 + lnl + lxl;
        if (doff > len || csize > len - doff)
            return zdir_free(z), cav_fail(err, 2, "%s: zip: entry data beyond the file (truncated?)", path);
        zentry *ze = &z->e[z->n];
        ze->name = malloc(nl + 1);
        if (!ze->name) return zdir_free(z), cav_fail(err, 3, "%s: out of memory", path);
        memcpy(ze->name, b + p + 46, nl);
        ze->name[nl] = 0;
        ze->off = doff;
        ze->size = csize;
        z->n++;
        p += 46 + nl + xl + cl;
    }
    return 0;
}

static const zentry *zip_find_suffix(const zdir *z, const char *prefix, const char *suffix) {
    size_t pl = strlen(prefix), sl = strlen(suffix);
    for (int i = 0; i < z->n; i++) {
        size_t nl = strlen(z->e[i].name);
        if (nl == pl + sl && !strncmp(z->e[i].name, prefix, pl) && !strcmp(z->e[i].name + pl, suffix))
            return &z->e[i];
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Tensors out */

typedef struct {
    const pv *storage;
    const unsigned char *data; /* storage bytes */
    uint64_t nbytes;
} storage_ref;

static float elem_f32(const unsigned char *p, int stype) {
    switch (stype) {
    case 0: {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    case 1: {
        double d;
        memcpy(&d, p, 8);
        return (float)d;
    }
    case 2: {
        uint16_t h = (uint16_t)rd_le(p, 2);
        uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, mt = h & 1023, bits;
        if (e == 0) {
            if (!mt)
                bits = s;
            else {
                int sh = 0;
                while (!(mt & 1024)) mt <<= 1, sh++;
                bits = s | (uint32_t)(113 - sh) << 23 | (mt & 1023) << 13;
            }
        } else if (e == 31)
            bits = s | 0x7f800000u | mt << 13;
        else
            bits = s | (e + 112) << 23 | mt << 13;
        float f;
        memcpy(&f, &bits, 4);
        return f;
    }
    case 3: {
        uint32_t bits = (uint32_t)rd_le(p, 2) << 16;
        float f;
        memcpy(&f, &bits, 4);
        return f;
    }
    case 4:
        return (float)(int64_t)rd_le(p, 8);
    case 5:
        return (float)(int32_t)rd_le(p, 4);
    case 6:
        return (float)(int16_t)rd_le(p, 2);
    case 7:
        return (float)(int8_t)p[0];
    default:
        return (float)p[0];
    }
}

/* Materialises tensor t (PV_TENSOR) from its storage bytes into out. */
static int make_tensor(const char *path, const char *name, const pv *t, const unsigned char *sdata,
                       uint64_t snbytes, cav_pth_tensor *out, cav_err *err) {
    const pv *s = t->items[0];
    size_t es = storage_types[s->stype].size;
    if ((uint64_t)s->i > snbytes / es || (uint64_t)s->i * es != snbytes)
        return cav_fail(err, 2,
                        "%s: tensor %s: storage %s holds %llu bytes, the pickle says %lld elements of %zu",
                        path, name, s->s, (unsigned long long)snbytes, (long long)s->i, es);
    int nd;
    int64_t st[CAV_MAX_NDIM];
    int_tuple(t->items[1], out->shape, &nd);
    int_tuple(t->items[2], st, &nd);
    out->ndim = nd;
    int64_t numel = cav_shape_count(nd, out->shape, 4, (uint64_t)1 << 40);
    if (numel < 0 || t->i < 0) return cav_fail(err, 2, "%s: tensor %s: bad size or offset", path, name);
    if (numel > 0) {
        /* the last element reached must lie inside the storage */
        uint64_t maxi = (uint64_t)t->i;
        for (int d = 0; d < nd; d++) {
            if (st[d] < 0 || (uint64_t)st[d] > (uint64_t)1 << 40)
                return cav_fail(err, 2, "%s: tensor %s: bad stride", path, name);
            maxi += (uint64_t)(out->shape[d] - 1) * (uint64_t)st[d];
        }
        if (maxi >= (uint64_t)s->i)
            return cav_fail(err, 2, "%s: tensor %s: view reaches element %llu of a %lld-element storage",
                            path, name, (unsigned long long)maxi, (long long)s->i);
    }
    out->numel = (size_t)numel;
    out->src_dtype = storage_types[s->stype].name;
    out->data = malloc(numel ? (size_t)numel * 4 : 4);
    if (!out->data) return cav_fail(err, 3, "%s: out of memory", path);
    int64_t idx[CAV_MAX_NDIM] = {0};
    uint64_t off = (uint64_t)t->i;
    for (size_t k = 0; k < (size_t)numel; k++) {
        out->data[k] = elem_f32(sdata + off * es, s->stype);
        for (int d = nd - 1; d >= 0; d--) { /* odometer over the index, updating the storage offset */
            if (++idx[d] < out->shape[d]) {
                off += (uint64_t)st[d];
                break;
            }
            off -= (uint64_t)st[d] * (uint64_t)(out->shape[d] - 1);
            idx[d] = 0;
        }
    }
    return 0;
}

void cav_pth_free(cav_pth *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) free(p->t[i].name), free(p->t[i].data);
    free(p->t);
    p->t = NULL;
    p->n = 0;
}

const cav_pth_tensor *cav_pth_find(const cav_pth *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->t[i].name, name)) return &p->t[i];
    return NULL;
}

/* The state dict inside the unpickled top object. */
static const pv *state_dict_of(const pv *top) {
    if (!top || top->type != PV_DICT) return NULL;
    for (int i = 0; i + 1 < top->n; i += 2)
        if (top->items[i + 1]->type == PV_TENSOR) return top;
    for (int i = 0; i + 1 < top->n; i += 2)
        if ((str_eq(top->items[i], "model") || str_eq(top->items[i], "state_dict")) &&
            top->items[i + 1]->type == PV_DICT)
            return top->items[i + 1];
    return top; /* an empty state dict */
}

/* Storage bytes lookup: zip entries, or the legacy table. */
typedef struct {
    const zdir *z;
    const char *prefix;
    const unsigned char *map;
    /* legacy */
    int nleg;
    char **leg_keys;
    const unsigned char **leg_data;
    uint64_t *leg_n;
} storages;

static int storage_bytes(const storages *S, const pv *s, const unsigned char **data, uint64_t *nbytes) {
    if (S->z) {
        char suf[300];
        if (strlen(s->s) > 200) return -1;
        snprintf(suf, sizeof suf, "data/%s", s->s);
        const zentry *e = zip_find_suffix(S->z, S->prefix, suf);
        if (!e) return -1;
        *data = S->map + e->off;
        *nbytes = e->size;
        return 0;
    }
    for (int i = 0; i < S->nleg; i++)
        if (!strcmp(S->leg_keys[i], s->s)) {
            *data = S->leg_data[i];
            *nbytes = S->leg_n[i] * storage_types[s->stype].size;
            return 0;
        }
    return -1;
}

static int collect(const char *path, const pv *top, const storages *S, cav_pth *out, cav_err *err) {
    const pv *sd = state_dict_of(top);
    if (!sd) return cav_fail(err, 2, "%s: the pickle is not a dict of tensors", path);
    out->t = calloc((size_t)sd->n / 2 + 1, sizeof *out->t);
    if (!out->t) return cav_fail(err, 3, "%s: out of memory", path);
    for (int i = 0; i + 1 < sd->n; i += 2) {
        const pv *k = sd->items[i], *v = sd->items[i + 1];
        if (v->type != PV_TENSOR) continue; /* e.g. an epoch number beside the weights */
        if (k->type != PV_STR || k->slen == (size_t)-1 || k->slen == 0 || k->slen > CAV_MAX_NAME)
            return cav_fail(err, 2, "%s: a tensor key is not a usable string", path);
        const char *name = k->s;
        if (!strncmp(name, "module.", 7)) name += 7;
        if (!*name) return cav_fail(err, 2, "%s: empty tensor name after removing \"module.\"", path);
        if (cav_pth_find(out, name))
            return cav_fail(err, 2, "%s: tensor %s appears twice (with and without \"module.\"?)", path,
                            name);
        const unsigned char *data;
        uint64_t nb;
        if (storage_bytes(S, v->items[0], &data, &nb))
            return cav_fail(err, 2, "%s: tensor %s: storage %s not in the file", path, name, v->items[0]->s);
        cav_pth_tensor *t = &out->t[out->n];
        if (make_tensor(path, name, v, data, nb, t, err)) {
            free(t->data);
            t->data = NULL;
            return -1;
        }
        t->name = strdup(name);
        out->n++;
        if (!t->name) return cav_fail(err, 3, "%s: out of memory", path);
    }
    return 0;
}

static int load_zip(const char *path, const unsigned char *map, size_t len, cav_pth *out, cav_err *err) {
    zdir z;
    if (zip_read(map, len, &z, path, err)) return -1;
    int rc = -1;
    pk m = {.path = path, .err = err};
    /* the pickle is <prefix>/data.pkl; the prefix is whatever the archive was named */
    const zentry *pkl = NULL;
    char prefix[512] = "";
    for (int i = 0; i < z.n; i++) {
        const char *nm = z.e[i].name, *sl = strchr(nm, '/');
        if (sl && !strcmp(sl, "/data.pkl") && (size_t)(sl - nm) + 2 < sizeof prefix) {
            pkl = &z.e[i];
            memcpy(prefix, nm, (size_t)(sl - nm) + 1);
            prefix[sl - nm + 1] = 0;
            break;
        }
    }
    if (!pkl) {
        cav_fail(err, 2, "%s: zip without a data.pkl: not a torch.save file", path);
        goto done;
    }
    size_t pos = 0;
    pv *top = unpickle(&m, map + pkl->off, pkl->size, &pos);
    if (!top) goto done;
    storages S = {.z = &z, .prefix = prefix, .map = map};
    rc = collect(path, top, &S, out, err);
done:
    pk_free(&m);
    zdir_free(&z);
    if (rc) cav_pth_free(out);
    return rc;
}

static int load_legacy(const char *path, const unsigned char *map, size_t len, cav_pth *out, cav_err *err) {
    pk m = {.path = path, .err = err};
    int rc = -1;
    storages S = {0};
    size_t pos = 0;
    pv *magic = unpickle(&m, map, len, &pos);
    if (!magic) goto done;
    /* the legacy magic 0x1950a86a20f9469cfc6c is 10 bytes: the LONG1 reader marks it f = 1 */
    if (magic->type != PV_INT || magic->f != 1 || pos < 14 || map[3] != 10 ||
        memcmp(map + 4, "\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10)) {
        cav_fail(err, 2, "%s: neither a zip nor a legacy torch.save file (bad magic number)", path);
        goto done;
    }
    pv *proto = unpickle(&m, map, len, &pos);
    if (!proto) goto done;
    if (proto->type != PV_INT || proto->i != 1001) {
        cav_fail(err, 2, "%s: legacy torch.save protocol %lld not supported", path,
                 proto->type == PV_INT ? (long long)proto->i : -1LL);
        goto done;
    }
    pv *info = unpickle(&m, map, len, &pos);
    if (!info) goto done;
    if (info->type != PV_DICT) {
        cav_fail(err, 2, "%s: legacy sys_info is not a dict", path);
        goto done;
    }
    for (int i = 0; i + 1 < info->n; i += 2)
        if (str_eq(info->items[i], "little_endian") && info->items[i + 1]->type == PV_BOOL &&
            !info->items[i + 1]->i) {
            cav_fail(err, 2, "%s: big-endian legacy file not supported", path);
            goto done;
        }
    pv *top = unpickle(&m, map, len, &pos);
    if (!top) goto done;
    pv *keys = unpickle(&m, map, len, &pos);
    if (!keys) goto done;
    if (keys->type != PV_LIST) {
        cav_fail(err, 2, "%s: legacy storage key list missing", path);
        goto done;
    }
    S.nleg = keys->n;
    S.leg_keys = calloc((size_t)keys->n + 1, sizeof *S.leg_keys);
    S.leg_data = calloc((size_t)keys->n + 1, sizeof *S.leg_data);
    S.leg_n = calloc((size_t)keys->n + 1, sizeof *S.leg_n);
    if (!S.leg_keys || !S.leg_data || !S.leg_n) {
        cav_fail(err, 3, "%s: out of memory", path);
        goto done;
    }
    /* Element sizes per key come from the storages the pickle referenced. */
    for (int i = 0; i < keys->n; i++) {
        if (keys->items[i]->type != PV_STR) {
            cav_fail(err, 2, "%s: legacy storage key is not a string", path);
            goto done;
        }
        S.leg_keys[i] = keys->items[i]->s;
        size_t es = 0;
        for (pv *o = m.arena; o; o = o->next)
            if (o->type == PV_STORAGE && !strcmp(o->s, S.leg_keys[i])) es = storage_types[o->stype].size;
        if (!es) {
            cav_fail(err, 2, "%s: legacy storage %s is not referenced by the pickle", path, S.leg_keys[i]);
            goto done;
        }
        if (len - pos < 8) {
            cav_fail(err, 2, "%s: legacy storage %s: truncated", path, S.leg_keys[i]);
            goto done;
        }
        uint64_t n = rd_le(map + pos, 8);
        pos += 8;
        if (n > (len - pos) / es) {
            cav_fail(err, 2, "%s: legacy storage %s: %llu elements beyond the end of the file", path,
                     S.leg_keys[i], (unsigned long long)n);
            goto done;
        }
        S.leg_data[i] = map + pos;
        S.leg_n[i] = n;
        pos += n * es;
    }
    rc = collect(path, top, &S, out, err);
done:
    free(S.leg_keys);
    free(S.leg_data);
    free(S.leg_n);
    pk_free(&m);
    if (rc) cav_pth_free(out);
    return rc;
}

int cav_pth_load(cav_pth *out, const char *path, cav_err *err) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cav_fail(err, 2, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size < 4) {
        close(fd);
        return cav_fail(err, 2, "%s: not a regular file of at least 4 bytes", path);
    }
    size_t len = (size_t)sb.st_size;
    unsigned char *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return cav_fail(err, 3, "%s: cannot map: %s", path, strerror(errno));
    int rc;
    if (!memcmp(map, "PK\x03\x04", 4))
        rc = load_zip(path, map, len, out, err);
    else if (map[0] == 0x80)
        rc = load_legacy(path, map, len, out, err);
    else
        rc = cav_fail(err, 2, "%s: not a torch.save file (neither zip nor pickle)", path);
    munmap(map, len);
    return rc;
}
