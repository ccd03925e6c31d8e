/* test_json.c: the JSON reader on the shapes of documents the tools import, and on malformed input. */
#include "harness.h"
#include "json.h"

static cav_json *P(const char *s, char *err) {
    return cav_json_parse(s, strlen(s), err, 256);
}

static void parses_reference_dataset_json(void) {
    char err[256];
    const char *doc =
        "{\"data\": [ {\"video_id\": \"abc\", \"wav\": \"/d/abc.wav\", \"video_path\": \"/d/frames\","
        " \"labels\": \"/m/09x0r,/m/04rlf\"}, {\"video_id\": \"x\\u00e9\\ud83d\\ude00\", "
        "\"labels\": \"\"} ], \"n\": -1.5e3, \"ok\": true, \"no\": false, \"z\": null}";
    cav_json *j = P(doc, err);
    REQUIRE(j != NULL);
    const cav_json *data = cav_json_get(j, "data");
    REQUIRE(data && data->type == CAV_JSON_ARRAY && data->n == 2);
    CHECK(strcmp(cav_json_get_string(data->items[0], "wav", ""), "/d/abc.wav") == 0);
    CHECK(strcmp(cav_json_get_string(data->items[1], "video_id", ""), "x\xc3\xa9\xf0\x9f\x98\x80") == 0);
    CHECK(cav_json_get_number(j, "n", 0) == -1500.0);
    CHECK(cav_json_get_bool(j, "ok", 0) == 1);
    CHECK(cav_json_get_bool(j, "no", 1) == 0);
    CHECK(cav_json_get(j, "z")->type == CAV_JSON_NULL);
    CHECK(cav_json_get(j, "missing") == NULL);
    CHECK(strcmp(cav_json_get_string(j, "missing", "dflt"), "dflt") == 0);
    cav_json_free(j);
}

static void refuses_malformed(void) {
    char err[256];
    const char *bad[] = {"",
                         "{",
                         "[1,]",
                         "{\"a\":1,}",
                         "{\"a\" 1}",
                         "01",
                         "1.",
                         "-",
                         "1e",
                         "tru",
                         "\"abc",
                         "\"a\\x\"",
                         "\"\\ud800\"",
                         "{\"a\":1,\"a\":2}",
                         "[1] [2]",
                         "\"tab\there\"",
                         "nan",
                         "\"\\u0000\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cav_json *j = P(bad[i], err);
        if (j) fprintf(stderr, "accepted: %s\n", bad[i]);
        CHECK(j == NULL);
        CHECK(err[0] != 0);
        cav_json_free(j);
    }
    cav_json *j = P("{\n  \"a\": [1, 2,\n   x]}", err);
    CHECK(j == NULL);
    CHECK(strncmp(err, "line 3, column 4", 16) == 0);
}

static void refuses_deep_nesting(void) {
    char err[256], doc[2001];
    memset(doc, '[', 1000);
    memset(doc + 1000, ']', 1000);
    doc[2000] = 0;
    CHECK(P(doc, err) == NULL);
    CHECK(strstr(err, "deep") != NULL);
}

static void writes_escaped_strings(void) {
    char *buf = NULL;
    size_t len = 0, cap = 0;
    REQUIRE(cav_json_append_string(&buf, &len, &cap, "a\"b\\c\n\x01") == 0);
    CHECK(strcmp(buf, "\"a\\\"b\\\\c\\n\\u0001\"") == 0);
    char err[256];
    cav_json *j = cav_json_parse(buf, len, err, sizeof err);
    REQUIRE(j != NULL);
    CHECK(strcmp(j->string, "a\"b\\c\n\x01") == 0);
    cav_json_free(j);
    free(buf);
}

int main(void) {
    TEST(parses_reference_dataset_json);
    TEST(refuses_malformed);
    TEST(refuses_deep_nesting);
    TEST(writes_escaped_strings);
    return harness_exit();
}
