/* checkpoint.c: see checkpoint.h. Durability: every file is written through atomicfile.h (fsync'ed, renamed
 * into place) before the COMPLETE marker is written, the directory is renamed into place, and the parent
 * directory is fsync'ed after the rename. */
#include "checkpoint.h"

#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomicfile.h"

/* snprintf into a path buffer, refusing truncation. */
static int pathf(char *out, size_t n, cav_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int pathf(char *out, size_t n, cav_err *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(out, n, fmt, ap);
    va_end(ap);
    if (r < 0 || (size_t)r >= n) return cav_fail(err, 3, "path too long: %.200s...", out);
    return 0;
}

int cav_mkdirs(const char *path, cav_err *err) {
    char buf[4096];
    if (strlen(path) >= sizeof buf) return cav_fail(err, 3, "%s: path too long", path);
    strcpy(buf, path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) && errno != EEXIST) return cav_fail(err, 3, "%s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) && errno != EEXIST) return cav_fail(err, 3, "%s: %s", buf, strerror(errno));
    return 0;
}

static int fsync_path(const char *path, int dir, cav_err *err) {
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return cav_fail(err, 3, "%s: %s", path, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc && !(dir && e == EINVAL)) return cav_fail(err, 3, "%s: fsync: %s", path, strerror(e));
    return 0;
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[4096];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            if (pathf(p, sizeof p, NULL, "%s/%s", dir, e->d_name) == 0) unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static int is_complete(const char *root, const char *name) {
    char p[4096];
    struct stat st;
    return name[0] == 'e' && pathf(p, sizeof p, NULL, "%s/%s/COMPLETE", root, name) == 0 && stat(p, &st) == 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Complete checkpoint names, sorted oldest first (the names sort by epoch then step). */
static int list_complete(const char *root, char ***out, int *n) {
    *out = NULL;
    *n = 0;
    DIR *d = opendir(root);
    if (!d) return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    int cap = 0;
    while ((e = readdir(d))) {
        if (!is_complete(root, e->d_name)) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nv = realloc(*out, (size_t)cap * sizeof *nv);
            if (!nv) break;
            *out = nv;
        }
        (*out)[(*n)++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(*out, (size_t)*n, sizeof **out, cmp_str);
    return 0;
}

int cav_ckpt_save(const char *run_dir, int epoch, long long step, const cav_ckpt *c, int keep, cav_err *err) {
    char root[4096], tmp[4096], fin[4096], p[4096];
    if (pathf(root, sizeof root, err, "%s/checkpoints", run_dir) || cav_mkdirs(root, err) ||
        pathf(tmp, sizeof tmp, err, "%s/.tmp-e%04d-s%010lld-%d", root, epoch, step, (int)getpid()) ||
        pathf(fin, sizeof fin, err, "%s/e%04d-s%010lld", root, epoch, step))
        return -1;
    remove_tree(tmp);
    if (mkdir(tmp, 0777)) return cav_fail(err, 3, "%s: %s", tmp, strerror(errno));
    const char *mk[] = {"format", "config"}, *mv[] = {"cav-mae/1", c->config_json ? c->config_json : "{}"};
    if (pathf(p, sizeof p, err, "%s/model.safetensors", tmp) ||
        cav_st_write(p, c->model, c->nmodel, mk, mv, 2, err))
        goto fail;
    if (pathf(p, sizeof p, err, "%s/optim.safetensors", tmp) ||
        cav_st_write(p, c->optim, c->noptim, mk, mv, 2, err))
        goto fail;
    if (pathf(p, sizeof p, err, "%s/state.json", tmp) || cav_afile_write_text(p, c->state_json, err))
        goto fail;
    if (pathf(p, sizeof p, err, "%s/COMPLETE", tmp) || cav_afile_write_text(p, "ok\n", err) ||
        fsync_path(tmp, 1, err))
        goto fail;
    remove_tree(fin); /* a complete checkpoint of the same position is replaced */
    if (rename(tmp, fin)) {
        cav_fail(err, 3, "%s: rename: %s", fin, strerror(errno));
        goto fail;
    }
    if (fsync_path(root, 1, err)) return -1;
    if (keep > 0) {
        char **names;
        int n;
        if (list_complete(root, &names, &n) == 0) {
            for (int i = 0; i < n; i++) {
                if (i < n - keep) {
                    if (pathf(p, sizeof p, NULL, "%s/%s", root, names[i]) == 0) remove_tree(p);
                }
                free(names[i]);
            }
            free(names);
        }
    }
    return 0;
fail:
    remove_tree(tmp);
    return -1;
}

int cav_ckpt_latest(const char *run_dir, char *out, size_t outlen, cav_err *err) {
    char root[4096];
    if (pathf(root, sizeof root, err, "%s/checkpoints", run_dir)) return -1;
    char **names;
    int n;
    if (list_complete(root, &names, &n)) return cav_fail(err, 3, "%s: %s", root, strerror(errno));
    int found = n > 0;
    if (found && pathf(out, outlen, err, "%s/%s", root, names[n - 1])) found = -1;
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return found;
}
