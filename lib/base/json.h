/* json.h: a small strict JSON reader (RFC 8259) for the files the tools import — the reference's dataset
 * JSON, safetensors headers, checkpoint metadata — and helpers to write JSON strings. Depth, size and
 * number syntax are checked; errors say line and column. */
#ifndef CAV_JSON_H
#define CAV_JSON_H

#include <stddef.h>
#include <stdio.h>

typedef enum {
    CAV_JSON_NULL,
    CAV_JSON_BOOL,
    CAV_JSON_NUMBER,
    CAV_JSON_STRING,
    CAV_JSON_ARRAY,
    CAV_JSON_OBJECT,
} cav_json_type;

typedef struct cav_json cav_json;
struct cav_json {
    cav_json_type type;
    int boolean;      /* BOOL */
    double number;    /* NUMBER */
    char *string;     /* STRING: UTF-8, NUL-terminated (embedded NULs are refused) */
    size_t len;       /* STRING: bytes */
    int n;            /* ARRAY/OBJECT: number of items */
    cav_json **items; /* ARRAY/OBJECT: values, in document order */
    char **keys;      /* OBJECT: keys, parallel to items */
};

/* Parses text[0..len). NULL on error, with "line L, column C: reason" in errbuf. Duplicate object keys
 * are refused. Nesting deeper than 256 is refused. */
cav_json *cav_json_parse(const char *text, size_t len, char *errbuf, size_t errlen);
void cav_json_free(cav_json *j);
/* Member of an object by key (NULL if absent or j is not an object). */
const cav_json *cav_json_get(const cav_json *j, const char *key);
/* Typed lookups with defaults, for config objects. */
const char *cav_json_get_string(const cav_json *j, const char *key, const char *dflt);
double cav_json_get_number(const cav_json *j, const char *key, double dflt);
int cav_json_get_bool(const cav_json *j, const char *key, int dflt);
/* Reads a whole file and parses it; errbuf gets "FILE: line L, column C: reason". */
cav_json *cav_json_load(const char *path, char *errbuf, size_t errlen);

/* Appends the JSON literal of s to a malloc'd buffer (*buf, *len, *cap); -1 on out of memory. */
int cav_json_append_string(char **buf, size_t *len, size_t *cap, const char *s);
/* Appends s as it is (punctuation, numbers) to the same kind of buffer. */
int cav_json_append_raw(char **buf, size_t *len, size_t *cap, const char *s);
/* x as a JSON number of `digits` significant digits into buf[n], or null where x is not finite (JSON has no
 * NaN or infinity: an evaluation set without a positive of some class gives NaN scores); returns buf. */
char *cav_json_num(char *buf, size_t n, double x, int digits);

#endif
