/* fuzz_records.c: libFuzzer target for the record readers of io.h: the input is read as a file, so a
 * stream goes through the stream parser and anything else through HDF5 and the shard schema checks (seed
 * it with real shards: tests/fuzz/corpus/records/). Every record is read to the end; a failure must carry
 * a message and one of the exit codes 2 or 3. */
#include "fuzz_file.h"
#include "io.h"

CAV_FUZZ_ENTRY(records) {
    char path[64];
    int fd = cav_fuzz_file(data, size, path, sizeof path);
    if (fd < 0) return 0;
    cav_err err = {0};
    cav_reader *rd = cav_reader_open(path, &err);
    if (!rd) {
        CAV_FUZZ_REQUIRE(err.msg[0] && (err.code == 2 || err.code == 3));
    } else {
        cav_record rec;
        cav_record_init(&rec);
        int st, errors = 0;
        while ((st = cav_reader_next(rd, &rec, &err)) != 0) {
            if (st < 0) {
                CAV_FUZZ_REQUIRE(err.msg[0] && (err.code == 2 || err.code == 3));
                if (cav_reader_format(rd) == CAV_FMT_STREAM || ++errors > 64) break;
                continue;
            }
            CAV_FUZZ_REQUIRE(rec.id && rec.id[0]);
            for (int i = 0; i < rec.ntensors; i++) { /* touch the data: ASan checks the sizes */
                const unsigned char *p = rec.tensors[i].data;
                if (rec.tensors[i].nbytes)
                    CAV_FUZZ_REQUIRE(p[0] == p[0] &&
                                     p[rec.tensors[i].nbytes - 1] == p[rec.tensors[i].nbytes - 1]);
            }
        }
        cav_record_clear(&rec);
        cav_reader_close(rd);
    }
    close(fd);
    return 0;
}
