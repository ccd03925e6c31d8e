/* atomicfile.c: the output rules of atomicfile.h: the registry of inputs (device, inode), the checks on a
 * target, temporary files beside the target, fsync + rename + directory fsync on commit, and the cleanup of
 * temporary files at exit and on the usual termination signals. */
#include "atomicfile.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- inputs */
typedef struct {
    dev_t dev;
    ino_t ino;
    char *name;
} input_id;
static input_id *inputs;
static int ninputs, cinputs;

static void note_stat(const struct stat *st, const char *name) {
    if (!S_ISREG(st->st_mode)) return; /* pipes and devices cannot be replaced by a rename */
    for (int i = 0; i < ninputs; i++)
        if (inputs[i].dev == st->st_dev && inputs[i].ino == st->st_ino) return;
    if (ninputs == cinputs) {
        int nc = cinputs ? 2 * cinputs : 16;
        input_id *n = realloc(inputs, (size_t)nc * sizeof *n);
        if (!n) return; /* the rename-time check then only sees fewer inputs; nothing is written wrongly */
        inputs = n;
        cinputs = nc;
    }
    inputs[ninputs].dev = st->st_dev;
    inputs[ninputs].ino = st->st_ino;
    inputs[ninputs].name = strdup(name);
    ninputs++;
}

void cav_input_note(const char *path) {
    struct stat st;
    if (!path || !strcmp(path, "-") || stat(path, &st)) return;
    note_stat(&st, path);
}

void cav_input_note_fd(int fd) {
    struct stat st;
    if (fd >= 0 && !fstat(fd, &st)) note_stat(&st, fd == 0 ? "stdin" : "an input");
}

static const char *input_of(const struct stat *st) {
    for (int i = 0; i < ninputs; i++)
        if (inputs[i].dev == st->st_dev && inputs[i].ino == st->st_ino)
            return inputs[i].name ? inputs[i].name : "an input";
    return NULL;
}

/* ---------------------------------------------------------------- temporary files alive */
/* Fixed slots so the signal handler only reads pointers that are set once. */
#define MAX_LIVE 256
static char *volatile live[MAX_LIVE];

static void unlink_live(void) {
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i]) unlink(live[i]);
}

static void on_signal(int sig) {
    unlink_live();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void at_exit(void) {
    unlink_live();
}

static void install_cleanup(void) {
    static int done;
    if (done) return;
    done = 1;
    atexit(at_exit);
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
        struct sigaction old;
        if (sigaction(sigs[i], NULL, &old) || old.sa_handler != SIG_DFL) continue; /* the caller's own wins */
        struct sigaction sa = {0};
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

static int live_add(char *p) {
    for (int i = 0; i < MAX_LIVE; i++)
        if (!live[i]) return live[i] = p, i;
    return -1;
}

/* ---------------------------------------------------------------- the output */
struct cav_afile {
    char *path;   /* as given */
    char *target; /* what the rename replaces (a symlink's target) */
    char *tmp;    /* NULL: written in place (stdout, a device, a FIFO) */
    int fd, slot;
    FILE *f;
};

static void afile_free(cav_afile *a) {
    if (a->slot >= 0) live[a->slot] = NULL;
    free(a->tmp);
    free(a->target);
    free(a->path);
    free(a);
}

cav_afile *cav_afile_open(const char *path, int flags, cav_err *err) {
    cav_afile *a = calloc(1, sizeof *a);
    if (!a || !(a->path = strdup(path))) {
        free(a);
        cav_fail(err, 3, "%s: out of memory", path);
        return NULL;
    }
    a->fd = -1;
    a->slot = -1;
    if (!strcmp(path, "-")) {
        if (flags & CAV_AFILE_SEEKABLE) {
            cav_fail(err, 1, "stdout: this output needs a file name (it cannot be written to a pipe)");
            goto fail;
        }
        a->f = stdout;
        return a;
    }
    struct stat lst, st;
    if (lstat(path, &lst) == 0) {
        if (stat(path, &st)) {
            cav_fail(err, 1, "%s: a symlink to nothing: not replaced (remove it or name its target)", path);
            goto fail;
        }
        const char *in = input_of(&st);
        if (in) {
            cav_fail(err, 1, "%s: the output is also an input (%s): refused, it would be destroyed", path,
                     in);
            goto fail;
        }
        if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) {
            if (flags & CAV_AFILE_SEEKABLE) {
                cav_fail(err, 1, "%s: not a regular file (a device or pipe): this output needs a file", path);
                goto fail;
            }
            if ((a->fd = open(path, O_WRONLY | O_CLOEXEC)) < 0) {
                cav_fail(err, 3, "%s: cannot open: %s", path, strerror(errno));
                goto fail;
            }
            return a;
        }
        if (!S_ISREG(st.st_mode)) {
            cav_fail(err, 1, "%s: not a regular file: not replaced", path);
            goto fail;
        }
        if (S_ISLNK(lst.st_mode)) {
            if (!(a->target = realpath(path, NULL))) {
                cav_fail(err, 3, "%s: cannot resolve the symlink: %s", path, strerror(errno));
                goto fail;
            }
        }
    }
    if (!a->target && !(a->target = strdup(path))) {
        cav_fail(err, 3, "%s: out of memory", path);
        goto fail;
    }
    size_t n = strlen(a->target) + 32;
    if (!(a->tmp = malloc(n))) {
        cav_fail(err, 3, "%s: out of memory", path);
        goto fail;
    }
    snprintf(a->tmp, n, "%s.tmp.%ld", a->target, (long)getpid());
    install_cleanup();
    if ((a->slot = live_add(a->tmp)) < 0) {
        cav_fail(err, 3, "%s: out of memory (too many outputs open)", path);
        goto fail;
    }
    mode_t mode = 0666;
    if (lstat(a->target, &st) == 0) mode = st.st_mode & 07777; /* a replaced file keeps its permissions */
    a->fd = open(a->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (a->fd < 0 && errno == EEXIST) { /* left by a killed process that had our pid */
        unlink(a->tmp);
        a->fd = open(a->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    }
    if (a->fd < 0) {
        cav_fail(err, 3, "%s: cannot create: %s", a->tmp, strerror(errno));
        goto fail;
    }
    return a;
fail:
    if (a->fd >= 0) close(a->fd);
    afile_free(a);
    return NULL;
}

FILE *cav_afile_stream(cav_afile *a) {
    if (!a->f) {
        a->f = fdopen(a->fd, "wb");
        if (a->f) setvbuf(a->f, NULL, _IOFBF, 1 << 20);
    }
    return a->f;
}

const char *cav_afile_name(const cav_afile *a) {
    return a->tmp ? a->tmp : a->f == stdout ? "stdout" : a->path;
}
static void sync_dir(const char *file) {
    char *copy = strdup(file);
    if (!copy) return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0) return;
    fsync(fd); /* some file systems cannot sync a directory (EINVAL); the rename is still done */
    close(fd);
}

int cav_afile_commit(cav_afile *a, cav_err *err) {
    const char *name = cav_afile_name(a);
    int bad = 0, e = 0;
    if (a->f) {
        bad = fflush(a->f) != 0 || ferror(a->f);
        if (bad) e = errno;
    }
    if (!a->tmp) { /* stdout or a device: written as it went */
        if (a->f && a->f != stdout)
            bad = fclose(a->f) != 0 || bad;
        else if (!a->f && a->fd >= 0)
            close(a->fd);
        if (bad) cav_fail(err, 3, "%s: write failed: %s", name, strerror(e ? e : EIO));
        afile_free(a);
        return bad ? -1 : 0;
    }
    int fd = a->f ? fileno(a->f) : a->fd;
    if (!bad && fsync(fd)) bad = 1, e = errno;
    if (a->f) {
        if (fclose(a->f) && !bad) bad = 1, e = errno;
    } else {
        close(a->fd);
    }
    a->f = NULL;
    a->fd = -1;
    if (bad) {
        cav_fail(err, 3, "%s: write failed: %s", name, strerror(e ? e : EIO));
        goto fail;
    }
    struct stat st;
    if (lstat(a->target, &st) == 0) {
        const char *in = input_of(&st);
        if (in) {
            cav_fail(err, 1, "%s: the output is also an input (%s): not replaced", a->path, in);
            goto fail;
        }
        if (!S_ISREG(st.st_mode)) {
            cav_fail(err, 3, "%s: became a non-regular file while being written: not replaced", a->path);
            goto fail;
        }
    }
    if (rename(a->tmp, a->target)) {
        cav_fail(err, 3, "%s: cannot rename %s into place: %s", a->path, a->tmp, strerror(errno));
        goto fail;
    }
    sync_dir(a->target);
    afile_free(a);
    return 0;
fail:
    unlink(a->tmp);
    afile_free(a);
    return -1;
}

void cav_afile_abort(cav_afile *a) {
    if (!a) return;
    if (a->f && a->f != stdout)
        fclose(a->f);
    else if (!a->f && a->fd >= 0)
        close(a->fd);
    if (a->f == stdout) fflush(stdout);
    if (a->tmp) unlink(a->tmp);
    afile_free(a);
}

int cav_afile_write_text(const char *path, const char *text, cav_err *err) {
    cav_afile *a = cav_afile_open(path, 0, err);
    if (!a) return -1;
    FILE *f = cav_afile_stream(a);
    if (!f || fputs(text, f) < 0) {
        cav_fail(err, 3, "%s: write failed: %s", cav_afile_name(a), strerror(errno));
        cav_afile_abort(a);
        return -1;
    }
    return cav_afile_commit(a, err);
}
