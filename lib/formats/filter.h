/* filter.h: the loop of a record filter tool (fbank, patchify): every record of the inputs, in order, is
 * handed to the tool, which changes it, and written to one output. The output is opened when the first
 * input is, from that input's dataset attributes, so the attributes travel down a pipeline. */
#ifndef CAV_FILTER_H
#define CAV_FILTER_H

#include "io.h"

typedef struct {
    void *ctx;
    /* Opens the output, given the first input's dataset attributes; NULL with err on failure. */
    cav_writer *(*open)(void *ctx, const cav_attrs *first, cav_err *err);
    /* Changes rec (source and index name the record in messages); 0 ok, -1 with err. */
    int (*record)(void *ctx, cav_record *rec, const char *source, int64_t index, cav_err *err);
} cav_filter;

/* Runs f over the records of inputs (none: stdin), each noted first as an input the output may not replace.
 * *writer is set as soon as the output is open, so that a fatal handler can abandon it; the caller closes
 * it. 0 ok; -1 with err, the writer still open. */
int cav_filter_run(const cav_filter *f, int ninputs, char **inputs, cav_writer **writer, cav_err *err);

#endif
