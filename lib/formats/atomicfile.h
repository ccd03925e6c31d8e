/* atomicfile.h: the one way every output file is written (streams, shards, safetensors, checkpoints,
 * CSV/JSON). A file is written as NAME.tmp.PID beside its final name, flushed to disk with fsync and renamed
 * into place only when complete, so a crash, a kill or a full disk leaves either the previous file or none
 * under NAME, never a half-written one. The rules, in one place:
 *   - "-" is stdout (written as it goes; its write errors are errors);
 *   - an existing character device or FIFO (/dev/null, a named pipe) is written in place, never replaced;
 *     other non-regular targets (directories, sockets, block devices) are refused; a symlink is followed
 *     and its target replaced, the link kept;
 *   - an output that is one of the process's inputs (same device and inode, whatever the names) is refused,
 *     when opened and again just before the rename;
 *   - temporary files are removed on every failure path: by cav_afile_abort, at exit (cav_die included) and
 *     on SIGINT, SIGTERM, SIGHUP and SIGPIPE. Only kill -9 can leave a NAME.tmp.PID behind. */
#ifndef CAV_ATOMICFILE_H
#define CAV_ATOMICFILE_H

#include <stdio.h>

#include "record.h"

/* Notes path as an input of this process (by device and inode), so that no output replaces it. "-" and
 * missing files are ignored. Readers note what they open; tools note their input arguments before opening
 * outputs, so the refusal comes before any work. */
void cav_input_note(const char *path);
void cav_input_note_fd(int fd);

typedef struct cav_afile cav_afile;
enum {
    CAV_AFILE_SEEKABLE = 1, /* the writer needs a regular file (HDF5): stdout, devices and FIFOs refused */
};
/* Starts the output path (see above). Errors: code 1 for a refused target (names it and why), code 3 when
 * the temporary file cannot be created. */
cav_afile *cav_afile_open(const char *path, int flags, cav_err *err);
/* The FILE to write to (stdout, the device or the temporary file); NULL with errno on failure. */
FILE *cav_afile_stream(cav_afile *a);
/* The name to write under: the temporary file, or the target itself when written in place. */
const char *cav_afile_name(const cav_afile *a);
/* Flushes (the FILE and the kernel's cache: fsync), checks that the target is still not an input, renames
 * the temporary file over the target and syncs the directory. Frees a either way. 0 ok; -1 with err (code 3,
 * or 1 for an output found to be an input): the temporary file is removed and the previous target intact. */
int cav_afile_commit(cav_afile *a, cav_err *err);
/* Gives up: the temporary file is removed (a device or stdout is left as written). Frees a; NULL is fine. */
void cav_afile_abort(cav_afile *a);

/* Writes a whole text file through the rules above (0 ok, -1 with err). */
int cav_afile_write_text(const char *path, const char *text, cav_err *err);

#endif
