/* test_opts.c: option tables (opts.h): defaults, values and their range checks, the --help lines and the
 * echo (text and JSON) all come from one table; choices, repeatable options and --help sections. */
#include <stddef.h>
#include <stdint.h>

#include "harness.h"
#include "opts.h"

typedef struct {
    int n, flag;
    double x;
    float f;
    uint64_t seed;
    const char *name;
    int mode;
} settings;

static int parse_mode(const char *s, void *field, char *why, size_t whylen) {
    if (strcmp(s, "up") == 0) return *(int *)field = 1, 0;
    if (strcmp(s, "down") == 0) return *(int *)field = 2, 0;
    return snprintf(why, whylen, "unknown mode '%s'", s), -1;
}
static void format_mode(const void *field, char *buf, size_t len) {
    snprintf(buf, len, "%s", *(const int *)field == 1 ? "up" : "down");
}

static const cav_opt table[] = {
    {.name = "count",
     .short_name = 'n',
     .type = CAV_OPTT_INT,
     .offset = offsetof(settings, n),
     .def = "7",
     .min = 1,
     .max = 100,
     .arg = "N",
     .help = "how many",
     .key = "count"},
    {.name = "scale",
     .type = CAV_OPTT_DOUBLE,
     .offset = offsetof(settings, x),
     .def = "0.25",
     .min = -1,
     .max = 1,
     .arg = "X",
     .help = "a scale;\ntwo lines",
     .key = "scale"},
    {.name = "gain",
     .type = CAV_OPTT_FLOAT,
     .offset = offsetof(settings, f),
     .min = 0,
     .max = 10,
     .arg = "G",
     .help = "a gain"},
    {.name = "seed",
     .type = CAV_OPTT_U64,
     .offset = offsetof(settings, seed),
     .def = "0",
     .min = 0,
     .max = (double)INT64_MAX,
     .arg = "N",
     .help = "seed",
     .flags = CAV_OPTF_NODEFAULT},
    {.name = "a-rather-long-option-name",
     .type = CAV_OPTT_STRING,
     .offset = offsetof(settings, name),
     .def = "abc",
     .arg = "NAME",
     .help = "wraps",
     .key = "name"},
    {.name = "mode",
     .type = CAV_OPTT_CUSTOM,
     .offset = offsetof(settings, mode),
     .def = "down",
     .arg = "M",
     .help = "up or down",
     .key = "mode",
     .parse = parse_mode,
     .format = format_mode},
    {.name = "on",
     .short_name = 'o',
     .type = CAV_OPTT_FLAG,
     .offset = offsetof(settings, flag),
     .help = "switch",
     .key = "on"},
    {0},
};

static void defaults_and_values(void) {
    settings s = {0};
    cav_opts_defaults(table, &s);
    CHECK(s.n == 7 && s.x == 0.25 && s.f == 0 && s.seed == 0 && strcmp(s.name, "abc") == 0 && s.mode == 2 &&
          !s.flag);
    char why[256];
    const cav_opt *o = cav_opts_find(table, "count");
    REQUIRE(o != NULL && cav_opts_find(table, "nope") == NULL);
    CHECK(cav_opt_set(o, &s, "100", why, sizeof why) == 0 && s.n == 100);
    CHECK(cav_opt_set(o, &s, "101", why, sizeof why) == -1 && strstr(why, "outside") && s.n == 100);
    CHECK(cav_opt_set(o, &s, "3x", why, sizeof why) == -1 && strstr(why, "not an integer"));
    o = cav_opts_find(table, "scale");
    CHECK(cav_opt_set(o, &s, "-1", why, sizeof why) == 0 && s.x == -1);
    CHECK(cav_opt_set(o, &s, "nan", why, sizeof why) == -1 && strstr(why, "not a number"));
    CHECK(cav_opt_set(o, &s, "1.5", why, sizeof why) == -1 && strstr(why, "outside"));
    o = cav_opts_find(table, "gain");
    CHECK(cav_opt_set(o, &s, "0.1", why, sizeof why) == 0 && s.f == 0.1f);
    o = cav_opts_find(table, "seed");
    CHECK(cav_opt_set(o, &s, "9223372036854775807", why, sizeof why) == 0 && s.seed == (uint64_t)INT64_MAX);
    CHECK(cav_opt_set(o, &s, "-1", why, sizeof why) == -1);
    o = cav_opts_find(table, "mode");
    CHECK(cav_opt_set(o, &s, "up", why, sizeof why) == 0 && s.mode == 1);
    CHECK(cav_opt_set(o, &s, "sideways", why, sizeof why) == -1 && strstr(why, "sideways"));
    CHECK(cav_opt_set(cav_opts_find(table, "on"), &s, NULL, why, sizeof why) == 0 && s.flag == 1);
}

static void echo_text_and_json(void) {
    settings s = {0};
    cav_opts_defaults(table, &s);
    s.x = 0.1;
    cav_optgroup g = {table, &s};
    char buf[256];
    size_t n = cav_opts_echo(&g, 1, buf, sizeof buf);
    CHECK(strcmp(buf, "count=7 scale=0.1 name=abc mode=down on=0") == 0);
    CHECK(n == strlen(buf));
    char small[8];
    CHECK(cav_opts_echo(&g, 1, small, sizeof small) == n && strlen(small) == 7);
    char *js = NULL;
    size_t len = 0, cap = 0;
    REQUIRE(cav_opts_json(&g, 1, &js, &len, &cap) == 0);
    CHECK(strcmp(js, "{\"count\": 7, \"scale\": 0.10000000000000001, \"name\": \"abc\", \"mode\": \"down\", "
                     "\"on\": 0}") == 0);
    if (strcmp(js, "{\"count\": 7, \"scale\": 0.10000000000000001, \"name\": \"abc\", \"mode\": \"down\", "
                   "\"on\": 0}"))
        fprintf(stderr, "  json: %s\n", js);
    free(js);
}

static void help_lines(void) {
    settings s = {0};
    cav_optgroup g = {table, &s};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    REQUIRE(f != NULL);
    cav_opts_help(f, &g, 1);
    fclose(f);
    const char *want = "  -n, --count=N            how many (default 7)\n"
                       "      --scale=X            a scale;\n"
                       "                           two lines (default 0.25)\n"
                       "      --gain=G             a gain\n"
                       "      --seed=N             seed\n"
                       "      --a-rather-long-option-name=NAME\n"
                       "                           wraps (default abc)\n"
                       "      --mode=M             up or down (default down)\n"
                       "  -o, --on                 switch\n";
    CHECK(strcmp(text, want) == 0);
    if (strcmp(text, want)) fprintf(stderr, "  help:\n%s", text);
    free(text);
}

typedef struct {
    int dir;
    const char *arch;
    cav_opt_list files;
} more;

static const cav_opt_choice dirs[] = {{"audio", 2}, {"video", 1}, {"both", 3}, {0}};
static const cav_opt_choice archs[] = {{"base", 0}, {"tiny", 0}, {0}};
static const cav_opt more_table[] = {
    {.name = "direction",
     .type = CAV_OPTT_CHOICE,
     .offset = offsetof(more, dir),
     .def = "both",
     .arg = "D",
     .help = "audio, video or both",
     .key = "direction",
     .choices = dirs,
     .section = "Search:"},
    {.name = "arch",
     .type = CAV_OPTT_STRING,
     .offset = offsetof(more, arch),
     .arg = "NAME",
     .help = "base or tiny",
     .key = "arch",
     .choices = archs},
    {.name = "file",
     .short_name = 'f',
     .type = CAV_OPTT_LIST,
     .offset = offsetof(more, files),
     .arg = "FILE",
     .help = "repeatable",
     .key = "files",
     .section = "Input:\n  FILE...                  also operands"},
    {0},
};

static void choices_lists_sections(void) {
    more m = {0};
    cav_opts_defaults(more_table, &m);
    CHECK(m.dir == 3 && m.arch == NULL && m.files.n == 0);
    char why[256];
    const cav_opt *o = cav_opts_find(more_table, "direction");
    CHECK(cav_opt_set(o, &m, "audio", why, sizeof why) == 0 && m.dir == 2);
    CHECK(cav_opt_set(o, &m, "left", why, sizeof why) == -1 && m.dir == 2);
    CHECK(strcmp(why, "'left' is not audio, video or both") == 0);
    o = cav_opts_find(more_table, "arch");
    CHECK(cav_opt_set(o, &m, "tiny", why, sizeof why) == 0 && strcmp(m.arch, "tiny") == 0);
    CHECK(cav_opt_set(o, &m, "huge", why, sizeof why) == -1 && strcmp(m.arch, "tiny") == 0);
    CHECK(strcmp(why, "'huge' is not base or tiny") == 0);
    char a[] = "a.h5", b[] = "b.h5", c[] = "-";
    o = cav_opts_find(more_table, "file");
    CHECK(cav_opt_set(o, &m, a, why, sizeof why) == 0 && cav_opt_set(o, &m, b, why, sizeof why) == 0 &&
          cav_opt_set(o, &m, c, why, sizeof why) == 0);
    REQUIRE(m.files.n == 3);
    CHECK(m.files.v[0] == a && m.files.v[1] == b && m.files.v[2] == c); /* argv's own, in order */
    cav_optgroup g = {more_table, &m};
    char buf[256];
    cav_opts_echo(&g, 1, buf, sizeof buf);
    CHECK(strcmp(buf, "direction=audio arch=tiny files=a.h5,b.h5,-") == 0);
    char *js = NULL;
    size_t len = 0, cap = 0;
    REQUIRE(cav_opts_json(&g, 1, &js, &len, &cap) == 0);
    CHECK(strcmp(js, "{\"direction\": \"audio\", \"arch\": \"tiny\", \"files\": \"a.h5,b.h5,-\"}") == 0);
    free(js);
    char *text = NULL;
    FILE *f = open_memstream(&text, &len);
    REQUIRE(f != NULL);
    cav_opts_help(f, &g, 1);
    fclose(f);
    const char *want = "Search:\n"
                       "      --direction=D        audio, video or both (default both)\n"
                       "      --arch=NAME          base or tiny\n"
                       "Input:\n"
                       "  FILE...                  also operands\n"
                       "  -f, --file=FILE          repeatable\n";
    CHECK(strcmp(text, want) == 0);
    if (strcmp(text, want)) fprintf(stderr, "  help:\n%s", text);
    free(text);
    cav_opt_list_free(&m.files);
    CHECK(m.files.n == 0 && m.files.v == NULL);
}

int main(void) {
    TEST(defaults_and_values);
    TEST(choices_lists_sections);
    TEST(echo_text_and_json);
    TEST(help_lines);
    return harness_exit();
}
