/* fuzz_safetensors.c: libFuzzer target for the safetensors reader (cav_st_open): header JSON, dtypes,
 * shapes and offsets; every tensor is converted to float32 as cav-ckpt does. */
#include <string.h>

#include "fuzz_file.h"
#include "safetensors.h"

CAV_FUZZ_ENTRY(safetensors) {
    char path[64];
    int fd = cav_fuzz_file(data, size, path, sizeof path);
    if (fd < 0) return 0;
    cav_err err = {0};
    cav_safetensors st;
    if (cav_st_open(&st, path, &err)) {
        CAV_FUZZ_REQUIRE(err.msg[0] && err.code >= 2);
    } else {
        for (int i = 0; i < st.n; i++) {
            const cav_st_tensor *t = &st.t[i];
            if (t->numel > (1 << 20)) continue;
            float *x = malloc((size_t)t->numel * 4 + 4);
            cav_err e2 = {0};
            if (x && cav_st_copy_f32(&st, t, x, (size_t)t->numel, &e2)) CAV_FUZZ_REQUIRE(e2.msg[0]);
            free(x);
        }
        for (int i = 0; i < st.nmeta; i++) CAV_FUZZ_REQUIRE(st.meta_keys[i] && st.meta_vals[i]);
        cav_st_close(&st);
    }
    close(fd);
    return 0;
}
