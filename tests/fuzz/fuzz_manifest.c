/* fuzz_manifest.c: libFuzzer target for the reference's dataset files (manifest.h): the input is a label
 * CSV, then a line "--json--", then a dataset JSON (no separator: all CSV, with an empty JSON). */
#include <string.h>

#include "fuzz_file.h"
#include "manifest.h"

CAV_FUZZ_ENTRY(manifest) {
    static const char sep[] = "\n--json--\n";
    size_t cut = size;
    for (size_t i = 0; i + sizeof sep - 1 <= size; i++)
        if (!memcmp(data + i, sep, sizeof sep - 1)) {
            cut = i;
            break;
        }
    size_t jstart = cut < size ? cut + sizeof sep - 1 : size;
    char cpath[64], jpath[64];
    int cfd = cav_fuzz_file(data, cut, cpath, sizeof cpath);
    int jfd = cav_fuzz_file(data + jstart, size - jstart, jpath, sizeof jpath);
    if (cfd >= 0 && jfd >= 0) {
        cav_err err = {0};
        cav_labelset ls = {0};
        cav_manifest m = {0};
        if (cav_labelset_load(&ls, cpath, &err)) {
            CAV_FUZZ_REQUIRE(err.msg[0]);
        } else if (cav_manifest_load(&m, jpath, &ls, &err)) {
            CAV_FUZZ_REQUIRE(err.msg[0]);
        } else {
            for (int i = 0; i < m.n; i++) {
                cav_record rec;
                cav_record_init(&rec);
                if (cav_record_set_id(&rec, "x") == 0) cav_manifest_apply(&m, i, &ls, &rec);
                (void)cav_manifest_weight(&m, i);
                cav_record_clear(&rec);
            }
            cav_manifest_free(&m);
        }
        cav_labelset_free(&ls);
    }
    if (cfd >= 0) close(cfd);
    if (jfd >= 0) close(jfd);
    return 0;
}
