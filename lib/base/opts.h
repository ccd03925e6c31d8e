/* opts.h: options declared once, in a table (Kaldi's Register as the model): each entry gives the long name,
 * the short letter, the type, where the value lives (an offset into a settings struct), the default, the
 * range, the argument's name and the help. From that one table come the defaults of the settings struct,
 * getopt_long's arrays and the parsing with range checks, the option lines of --help, and the echo of the
 * settings a tool records ("key=value ..." text or a JSON object), so that a tool's parser, its help, its
 * library's defaults and its provenance cannot drift apart.
 *
 * A tool may combine several tables (groups), each over its own settings struct: a library's table (the
 * filterbank's Kaldi options over cav_fbank_opts) and the tool's own (output, level...). Besides numbers and
 * strings an entry may be a choice among names, a repeatable option (a list), or a tool's own parser; an
 * entry may open a section of --help with a heading. */
#ifndef CAV_OPTS_H
#define CAV_OPTS_H

#include <stddef.h>
#include <stdio.h>

typedef enum {
    CAV_OPTT_FLAG = 1, /* no argument; int set to 1 */
    CAV_OPTT_INT,      /* int in [min, max] */
    CAV_OPTT_I64,      /* int64_t in [min, max] */
    CAV_OPTT_U64,      /* uint64_t in [min, max] (max up to INT64_MAX) */
    CAV_OPTT_DOUBLE,   /* double in [min, max] */
    CAV_OPTT_FLOAT,    /* float in [min, max] (parsed as double, then rounded) */
    CAV_OPTT_STRING,   /* const char *: the argument itself (argv outlives the settings) or the default */
    CAV_OPTT_CUSTOM,   /* the entry's parse callback stores it; with .arg NULL it takes no argument */
    CAV_OPTT_CHOICE,   /* int: the value of the entry of .choices whose name is the argument */
    CAV_OPTT_LIST, /* cav_opt_list: the argument appended (a repeatable option); free with cav_opt_list_free
                    */
} cav_opt_type;

/* One name a CHOICE (or a STRING with .choices) accepts, and for CHOICE the int it stores. */
typedef struct {
    const char *name; /* NULL ends the list */
    int value;
} cav_opt_choice;

/* The arguments of a repeatable option, in command-line order (argv's own strings). */
typedef struct {
    char **v;
    int n;
} cav_opt_list;

enum {
    CAV_OPTF_NODEFAULT = 1, /* --help does not print "(default X)" (the help text says it in words) */
};

typedef struct cav_opt {
    const char *name; /* long name without dashes; NULL ends a table */
    int short_name;   /* 'b', or 0 for none */
    cav_opt_type type;
    size_t offset; /* offsetof(settings struct, field) */
    const char
        *def; /* default, written as on the command line; NULL: the field's zero, not shown in --help */
    double min, max;  /* INT, I64, U64, DOUBLE, FLOAT */
    const char *arg;  /* the argument in --help ("MS"); NULL for a flag */
    const char *help; /* one or more lines, '\n' between them */
    const char *key;  /* name in the echo; NULL: not echoed */
    /* CUSTOM: stores s into the field and returns 0, or -1 with why s is refused in why (a usage error then
     * names the option). s is NULL for an option without argument. */
    int (*parse)(const char *s, void *field, char *why, size_t whylen);
    /* The echo of the field (any type; NULL: the type's own format: %d, %lld, %llu, %g, the string). */
    void (*format)(const void *field, char *buf, size_t len);
    int flags; /* CAV_OPTF_* */
    /* CHOICE: the names and their values; STRING: when set, the argument must be one of the names. A refused
     * argument is "'x' is not a, b or c". */
    const cav_opt_choice *choices;
    const char *section; /* --help: this line (or lines) printed before the entry, e.g. "Output:" */
} cav_opt;

typedef struct {
    const cav_opt *opts; /* a table ended by an entry with name NULL */
    void *base;          /* the settings struct its offsets point into */
} cav_optgroup;

/* Sets every field that has a default to it; the others keep their value (zero the struct first). A default
 * that does not parse is a bug in the table: abort. */
void cav_opts_defaults(const cav_opt *opts, void *base);

/* Sets one option from a string. 0 ok; -1 with the reason in why when s is refused. */
int cav_opt_set(const cav_opt *o, void *base, const char *s, char *why, size_t whylen);

/* Parses argv with getopt_long over the groups, in order; --help prints usage_head, the option lines of
 * every group (cav_opts_help) and usage_tail, and exits 0; --version exits 0; a bad option or value is a
 * usage error (exit 1) naming the option. Returns optind (the first operand). */
int cav_opts_parse(int argc, char **argv, const cav_optgroup *groups, int ngroups, const char *usage_head,
                   const char *usage_tail);

/* The option lines of --help: "  -b, --bins=N             mel bins (default 128)". */
void cav_opts_help(FILE *f, const cav_optgroup *groups, int ngroups);

/* The value of one field as the echo writes it. */
void cav_opt_format(const cav_opt *o, const void *base, char *buf, size_t len);

/* "key=value key=value ..." over the entries with a key, in table order; truncated to len. Returns the
 * length it needed (as snprintf). */
size_t cav_opts_echo(const cav_optgroup *groups, int ngroups, char *buf, size_t len);

/* The same as a JSON object {"key": value, ...} (numbers bare, the rest as strings) appended to a malloc'd
 * buffer as cav_json_append_raw does; 0 ok, -1 out of memory. */
int cav_opts_json(const cav_optgroup *groups, int ngroups, char **buf, size_t *len, size_t *cap);

void cav_opt_list_free(cav_opt_list *l);

/* The entry named name (long name) in a table, or NULL. */
const cav_opt *cav_opts_find(const cav_opt *opts, const char *name);

#endif
