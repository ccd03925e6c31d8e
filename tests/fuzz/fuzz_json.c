/* fuzz_json.c: libFuzzer target for the JSON parser (cav_json_parse), used for state.json, configs and the
 * reference's dataset files. */
#include "fuzz_file.h"
#include "json.h"

CAV_FUZZ_ENTRY(json) {
    char errbuf[256] = "";
    cav_json *j = cav_json_parse((const char *)data, size, errbuf, sizeof errbuf);
    if (!j) CAV_FUZZ_REQUIRE(errbuf[0]);
    cav_json_free(j);
    return 0;
}
