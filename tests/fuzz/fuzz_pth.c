/* fuzz_pth.c: libFuzzer target for the PyTorch checkpoint reader (cav_pth_load): the zip container, the
 * legacy format and the pickle subset. */
#include "fuzz_file.h"
#include "pth.h"

CAV_FUZZ_ENTRY(pth) {
    char path[64];
    int fd = cav_fuzz_file(data, size, path, sizeof path);
    if (fd < 0) return 0;
    cav_err err = {0};
    cav_pth p;
    if (cav_pth_load(&p, path, &err)) {
        CAV_FUZZ_REQUIRE(err.msg[0] && err.code >= 2);
    } else {
        for (int i = 0; i < p.n; i++) CAV_FUZZ_REQUIRE(p.t[i].name && p.t[i].ndim >= 0);
        cav_pth_free(&p);
    }
    close(fd);
    return 0;
}
