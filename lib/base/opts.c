/* opts.c: option tables (see opts.h): defaults, getopt_long parsing with range and choice checks, --help
 * lines and the settings echo, all read from the same entries. */
#include "opts.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"

#define HELP_COLUMN 27 /* where help text starts in --help, as the tools' hand-written usages had it */
#define OPT_VAL 0x2000 /* getopt_long value of entry k (over all groups): OPT_VAL + k */

static int takes_arg(const cav_opt *o) {
    return o->type != CAV_OPTT_FLAG && !(o->type == CAV_OPTT_CUSTOM && !o->arg);
}

static int parse_ll(const cav_opt *o, const char *s, long long *v, char *why, size_t whylen) {
    char *end;
    errno = 0;
    *v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return snprintf(why, whylen, "'%s' is not an integer", s), -1;
    if ((double)*v < o->min || (double)*v > o->max) {
        /* 2^63 as a double is INT64_MAX's nearest: say INT64_MAX, as the table means */
        long long lo = o->min <= -0x1p63 ? LLONG_MIN : (long long)o->min;
        long long hi = o->max >= 0x1p63 ? LLONG_MAX : (long long)o->max;
        return snprintf(why, whylen, "%lld is outside [%lld, %lld]", *v, lo, hi), -1;
    }
    return 0;
}

static int parse_d(const cav_opt *o, const char *s, double *v, char *why, size_t whylen) {
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(*v))
        return snprintf(why, whylen, "'%s' is not a number", s), -1;
    if (*v < o->min || *v > o->max)
        return snprintf(why, whylen, "%g is outside [%g, %g]", *v, o->min, o->max), -1;
    return 0;
}

/* The entry of o->choices named s, or NULL with "'s' is not a, b or c" in why. */
static const cav_opt_choice *find_choice(const cav_opt *o, const char *s, char *why, size_t whylen) {
    int n = 0;
    for (const cav_opt_choice *c = o->choices; c->name; c++, n++)
        if (strcmp(c->name, s) == 0) return c;
    size_t k = (size_t)snprintf(why, whylen, "'%s' is not ", s);
    for (int i = 0; i < n && k < whylen; i++)
        k += (size_t)snprintf(why + k, whylen - k, "%s%s",
                              i == 0       ? ""
                              : i == n - 1 ? " or "
                                           : ", ",
                              o->choices[i].name);
    return NULL;
}

int cav_opt_set(const cav_opt *o, void *base, const char *s, char *why, size_t whylen) {
    void *field = (char *)base + o->offset;
    long long ll;
    double d;
    if (!s && takes_arg(o)) return snprintf(why, whylen, "needs a value"), -1;
    switch (o->type) {
    case CAV_OPTT_FLAG:
        *(int *)field = 1;
        return 0;
    case CAV_OPTT_INT:
        if (parse_ll(o, s, &ll, why, whylen)) return -1;
        *(int *)field = (int)ll;
        return 0;
    case CAV_OPTT_I64:
        if (parse_ll(o, s, &ll, why, whylen)) return -1;
        *(int64_t *)field = (int64_t)ll;
        return 0;
    case CAV_OPTT_U64:
        if (parse_ll(o, s, &ll, why, whylen)) return -1;
        if (ll < 0) return snprintf(why, whylen, "%lld is negative", ll), -1;
        *(uint64_t *)field = (uint64_t)ll;
        return 0;
    case CAV_OPTT_DOUBLE:
        if (parse_d(o, s, &d, why, whylen)) return -1;
        *(double *)field = d;
        return 0;
    case CAV_OPTT_FLOAT:
        if (parse_d(o, s, &d, why, whylen)) return -1;
        *(float *)field = (float)d;
        return 0;
    case CAV_OPTT_STRING:
        if (o->choices && !find_choice(o, s, why, whylen)) return -1;
        *(const char **)field = s;
        return 0;
    case CAV_OPTT_CUSTOM:
        if (!o->parse) return snprintf(why, whylen, "no parser"), -1;
        return o->parse(s, field, why, whylen) ? -1 : 0;
    case CAV_OPTT_CHOICE: {
        const cav_opt_choice *c = o->choices ? find_choice(o, s, why, whylen) : NULL;
        if (!c) return o->choices ? -1 : (snprintf(why, whylen, "no choices"), -1);
        *(int *)field = c->value;
        return 0;
    }
    case CAV_OPTT_LIST: {
        cav_opt_list *l = field;
        char **v = realloc(l->v, ((size_t)l->n + 1) * sizeof *v);
        if (!v) cav_die(CAV_EXIT_INTERNAL, "out of memory");
        l->v = v, l->v[l->n++] = (char *)s; /* argv's: the tool may cut it, as --set KEY=VALUE does */
        return 0;
    }
    }
    return snprintf(why, whylen, "unknown option type %d", (int)o->type), -1;
}

void cav_opts_defaults(const cav_opt *opts, void *base) {
    for (const cav_opt *o = opts; o->name; o++) {
        if (!o->def) continue;
        char why[256];
        if (cav_opt_set(o, base, o->def, why, sizeof why)) {
            fprintf(stderr, "option table: --%s: default '%s': %s\n", o->name, o->def, why);
            abort();
        }
    }
}

void cav_opt_list_free(cav_opt_list *l) {
    free(l->v);
    l->v = NULL, l->n = 0;
}

const cav_opt *cav_opts_find(const cav_opt *opts, const char *name) {
    for (const cav_opt *o = opts; o->name; o++)
        if (strcmp(o->name, name) == 0) return o;
    return NULL;
}

void cav_opt_format(const cav_opt *o, const void *base, char *buf, size_t len) {
    const void *field = (const char *)base + o->offset;
    if (o->format) {
        o->format(field, buf, len);
        return;
    }
    switch (o->type) {
    case CAV_OPTT_FLAG:
    case CAV_OPTT_INT:
        snprintf(buf, len, "%d", *(const int *)field);
        break;
    case CAV_OPTT_I64:
        snprintf(buf, len, "%" PRId64, *(const int64_t *)field);
        break;
    case CAV_OPTT_U64:
        snprintf(buf, len, "%" PRIu64, *(const uint64_t *)field);
        break;
    case CAV_OPTT_DOUBLE:
        snprintf(buf, len, "%g", *(const double *)field);
        break;
    case CAV_OPTT_FLOAT:
        snprintf(buf, len, "%g", (double)*(const float *)field);
        break;
    case CAV_OPTT_STRING: {
        const char *s = *(const char *const *)field;
        snprintf(buf, len, "%s", s ? s : "");
        break;
    }
    case CAV_OPTT_CHOICE: {
        const char *name = "";
        for (const cav_opt_choice *c = o->choices; c && c->name; c++)
            if (c->value == *(const int *)field) name = c->name;
        snprintf(buf, len, "%s", name);
        break;
    }
    case CAV_OPTT_LIST: {
        const cav_opt_list *l = field;
        size_t k = 0;
        if (len) buf[0] = 0;
        for (int i = 0; i < l->n && k < len; i++)
            k += (size_t)snprintf(buf + k, len - k, "%s%s", i ? "," : "", l->v[i]);
        break;
    }
    default:
        snprintf(buf, len, "%s", "");
        break;
    }
}

size_t cav_opts_echo(const cav_optgroup *groups, int ngroups, char *buf, size_t len) {
    size_t n = 0;
    if (len) buf[0] = 0;
    for (int g = 0; g < ngroups; g++)
        for (const cav_opt *o = groups[g].opts; o->name; o++) {
            if (!o->key) continue;
            char v[512];
            cav_opt_format(o, groups[g].base, v, sizeof v);
            int k =
                snprintf(n < len ? buf + n : NULL, n < len ? len - n : 0, "%s%s=%s", n ? " " : "", o->key, v);
            n += k > 0 ? (size_t)k : 0;
        }
    return n;
}

int cav_opts_json(const cav_optgroup *groups, int ngroups, char **buf, size_t *len, size_t *cap) {
    int bad = cav_json_append_raw(buf, len, cap, "{"), first = 1;
    for (int g = 0; g < ngroups; g++)
        for (const cav_opt *o = groups[g].opts; o->name; o++) {
            if (!o->key) continue;
            const void *field = (const char *)groups[g].base + o->offset;
            char v[512];
            /* JSON keeps doubles exact; the text echo's %g is for people. */
            if (!o->format && o->type == CAV_OPTT_DOUBLE)
                snprintf(v, sizeof v, "%.17g", *(const double *)field);
            else if (!o->format && o->type == CAV_OPTT_FLOAT)
                snprintf(v, sizeof v, "%.9g", (double)*(const float *)field);
            else
                cav_opt_format(o, groups[g].base, v, sizeof v);
            int number = !o->format && o->type != CAV_OPTT_STRING && o->type != CAV_OPTT_CUSTOM &&
                         o->type != CAV_OPTT_CHOICE && o->type != CAV_OPTT_LIST;
            bad |= cav_json_append_raw(buf, len, cap, first ? "" : ", ");
            bad |= cav_json_append_string(buf, len, cap, o->key) | cav_json_append_raw(buf, len, cap, ": ");
            bad |= number ? cav_json_append_raw(buf, len, cap, v) : cav_json_append_string(buf, len, cap, v);
            first = 0;
        }
    bad |= cav_json_append_raw(buf, len, cap, "}");
    return bad ? -1 : 0;
}

void cav_opts_help(FILE *f, const cav_optgroup *groups, int ngroups) {
    for (int g = 0; g < ngroups; g++)
        for (const cav_opt *o = groups[g].opts; o->name; o++) {
            if (o->section) fprintf(f, "%s\n", o->section);
            char head[128];
            int n = snprintf(head, sizeof head, "  %c%c%s--%s%s%s", o->short_name ? '-' : ' ',
                             o->short_name ? o->short_name : ' ', o->short_name ? ", " : "  ", o->name,
                             o->arg ? "=" : "", o->arg ? o->arg : "");
            fputs(head, f);
            if (n >= HELP_COLUMN - 1)
                fprintf(f, "\n%*s", HELP_COLUMN, "");
            else
                fprintf(f, "%*s", HELP_COLUMN - n, "");
            for (const char *p = o->help ? o->help : ""; *p; p++) {
                fputc(*p, f);
                if (*p == '\n') fprintf(f, "%*s", HELP_COLUMN, "");
            }
            if (o->def && !(o->flags & CAV_OPTF_NODEFAULT)) fprintf(f, " (default %s)", o->def);
            fputc('\n', f);
        }
}

int cav_opts_parse(int argc, char **argv, const cav_optgroup *groups, int ngroups, const char *usage_head,
                   const char *usage_tail) {
    int total = 0;
    for (int g = 0; g < ngroups; g++)
        for (const cav_opt *o = groups[g].opts; o->name; o++) total++;
    struct option *lo = calloc((size_t)total + 3, sizeof *lo);
    char *shorts = calloc((size_t)total * 2 + 1, 1);
    const cav_opt **ent = calloc((size_t)total + 1, sizeof *ent);
    void **base = calloc((size_t)total + 1, sizeof *base);
    if (!lo || !shorts || !ent || !base) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    int k = 0, ns = 0;
    for (int g = 0; g < ngroups; g++)
        for (const cav_opt *o = groups[g].opts; o->name; o++, k++) {
            ent[k] = o, base[k] = groups[g].base;
            lo[k] =
                (struct option){o->name, takes_arg(o) ? required_argument : no_argument, NULL, OPT_VAL + k};
            if (o->short_name) {
                shorts[ns++] = (char)o->short_name;
                if (takes_arg(o)) shorts[ns++] = ':';
            }
        }
    lo[k++] = (struct option){"help", no_argument, NULL, CAV_OPT_HELP};
    lo[k++] = (struct option){"version", no_argument, NULL, CAV_OPT_VERSION};
    int c;
    while ((c = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
        int i = -1;
        if (c >= OPT_VAL && c < OPT_VAL + total) i = c - OPT_VAL;
        for (int j = 0; i < 0 && j < total && c > 0 && c < 256; j++)
            if (ent[j]->short_name == c) i = j;
        if (i >= 0) {
            char why[512];
            if (cav_opt_set(ent[i], base[i], takes_arg(ent[i]) ? optarg : NULL, why, sizeof why))
                cav_usage_error("option --%s: %s", ent[i]->name, why);
            continue;
        }
        if (c == CAV_OPT_HELP) {
            fputs(usage_head ? usage_head : "", stdout);
            cav_opts_help(stdout, groups, ngroups);
            cav_help(usage_tail ? usage_tail : "");
        }
        cav_std_option(c, "");
        cav_usage_error("unexpected option");
    }
    free(lo), free(shorts), free(ent), free(base);
    return optind;
}
