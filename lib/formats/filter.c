/* filter.c: the read -> change -> write loop of the record filter tools (see filter.h). */
#include "filter.h"

#include "atomicfile.h"
#include "cli.h"

int cav_filter_run(const cav_filter *f, int ninputs, char **inputs, cav_writer **writer, cav_err *err) {
    char *dash = "-";
    if (!ninputs) inputs = &dash, ninputs = 1;
    for (int i = 0; i < ninputs; i++) cav_input_note(inputs[i]); /* the output may replace none of them */
    cav_record rec;
    cav_record_init(&rec);
    cav_progress *prog = cav_progress_start("records", 0);
    int rc = 0;
    for (int i = 0; i < ninputs && !rc; i++) {
        cav_reader *rd = cav_reader_open(inputs[i], err);
        if (!rd) {
            rc = -1;
            break;
        }
        if (!*writer && !(*writer = f->open(f->ctx, cav_reader_attrs(rd), err))) rc = -1;
        int r = 0;
        while (!rc && (r = cav_reader_next(rd, &rec, err)) == 1) {
            if (f->record(f->ctx, &rec, cav_reader_path(rd), cav_reader_index(rd), err) ||
                cav_writer_put(*writer, &rec, err))
                rc = -1;
            else
                cav_progress_add(prog, 1);
        }
        if (r < 0) rc = -1;
        cav_reader_close(rd);
    }
    cav_progress_end(prog);
    cav_record_clear(&rec);
    return rc;
}
