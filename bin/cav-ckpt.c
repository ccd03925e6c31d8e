/* cav-ckpt: lists checkpoints and converts them to safetensors: PyTorch .pth state dicts (zip or legacy,
 * read without Python by lib/pth) and safetensors files (lib/safetensors). The logic lives in those two
 * modules; this main only wires them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "atomicfile.h"
#include "cli.h"
#include "opts.h"
#include "pth.h"
#include "safetensors.h"

static const char usage_head[] =
    "Usage: cav-ckpt ls FILE\n"
    "       cav-ckpt convert IN OUT.safetensors\n"
    "FILE, IN: '-' = stdin; OUT: '-' = stdout. OUT is written under a temporary name and renamed into place\n"
    "when complete (a device such as /dev/null is written as is; OUT may not be IN).\n"
    "List the tensors of a checkpoint, or convert one to safetensors.\n"
    "FILE and IN are PyTorch .pth state dicts (torch.save zip or legacy format; a leading \"module.\" is\n"
    "removed, {\"model\": ...} is unwrapped; tensors become float32) or safetensors files (dtypes and\n"
    "metadata kept). Only the pickle subset of tensor files is understood; anything else is refused.\n"
    "\n";
static const char usage_tail[] = "      --help      print this help and exit\n"
                                 "      --version   print the version and exit\n"
                                 "\n"
                                 "Exit status: 0 ok, 1 usage, 2 bad input, 3 internal error.\n";

/* "-": stdin copied into an anonymous memory file, so the readers (which map or seek files) see a path. */
static const char *input_path(const char *path, char *buf, size_t n) {
    if (strcmp(path, "-")) return path;
    int fd = memfd_create("stdin", MFD_CLOEXEC);
    if (fd < 0) cav_die(CAV_EXIT_INTERNAL, "stdin: cannot make a memory file: %m");
    char b[1 << 16];
    size_t k;
    while ((k = fread(b, 1, sizeof b, stdin)) > 0)
        if (write(fd, b, k) != (ssize_t)k) cav_die(CAV_EXIT_INTERNAL, "stdin: cannot keep it in memory: %m");
    if (ferror(stdin)) cav_die(CAV_EXIT_INPUT, "stdin: read error: %m");
    snprintf(buf, n, "/proc/self/fd/%d", fd);
    return buf;
}

/* .pth files start with a zip local header or a pickle PROTO opcode; anything else is read as safetensors. */
static int is_pth(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char b[4] = {0};
    size_t n = fread(b, 1, 4, f);
    fclose(f);
    return n == 4 && ((b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4) || b[0] == 0x80);
}

/* "name<TAB>dtype<TAB>[d0,d1,...]" */
static void print_tensor(const char *name, const char *dtype, int ndim, const int64_t *shape) {
    printf("%s\t%s\t[", name, dtype);
    for (int d = 0; d < ndim; d++) printf("%s%lld", d ? "," : "", (long long)shape[d]);
    printf("]\n");
}

static int cmd_ls(const char *path) {
    cav_err err = {0};
    if (is_pth(path)) {
        cav_pth p;
        if (cav_pth_load(&p, path, &err)) cav_die(err.code, "%s", err.msg);
        for (int i = 0; i < p.n; i++) print_tensor(p.t[i].name, p.t[i].src_dtype, p.t[i].ndim, p.t[i].shape);
        cav_pth_free(&p);
        return 0;
    }
    cav_safetensors st;
    if (cav_st_open(&st, path, &err)) cav_die(err.code, "%s", err.msg);
    for (int i = 0; i < st.nmeta; i++) printf("# %s = %s\n", st.meta_keys[i], st.meta_vals[i]);
    for (int i = 0; i < st.n; i++) print_tensor(st.t[i].name, st.t[i].st_dtype, st.t[i].ndim, st.t[i].shape);
    cav_st_close(&st);
    return 0;
}

static int cmd_convert(const char *in, const char *out) {
    cav_err err = {0};
    int rc = 0;
    if (is_pth(in)) {
        cav_pth p;
        if (cav_pth_load(&p, in, &err)) cav_die(err.code, "%s", err.msg);
        cav_st_entry *e = calloc((size_t)p.n + 1, sizeof *e);
        if (!e) cav_die(3, "out of memory");
        for (int i = 0; i < p.n; i++) {
            e[i].name = p.t[i].name;
            e[i].dtype = CAV_F32;
            e[i].ndim = p.t[i].ndim;
            memcpy(e[i].shape, p.t[i].shape, sizeof e[i].shape);
            e[i].data = p.t[i].data;
        }
        const char *mk[] = {"source"}, *mv[] = {in};
        if (cav_st_write(out, e, p.n, mk, mv, 1, &err)) rc = err.code;
        free(e);
        cav_pth_free(&p);
    } else {
        cav_safetensors st;
        if (cav_st_open(&st, in, &err)) cav_die(err.code, "%s", err.msg);
        cav_st_entry *e = calloc((size_t)st.n + 1, sizeof *e);
        float **conv = calloc((size_t)st.n + 1, sizeof *conv);
        if (!e || !conv) cav_die(3, "out of memory");
        for (int i = 0; i < st.n && !rc; i++) {
            const cav_st_tensor *t = &st.t[i];
            e[i].name = t->name;
            e[i].ndim = t->ndim;
            memcpy(e[i].shape, t->shape, sizeof e[i].shape);
            if (t->dtype) {
                e[i].dtype = t->dtype;
                e[i].data = t->data;
            } else { /* BF16 and the types records lack: float32 */
                conv[i] = malloc(t->numel * 4 + 4);
                if (!conv[i]) cav_die(3, "out of memory");
                if (cav_st_copy_f32(&st, t, conv[i], t->numel, &err)) rc = err.code;
                e[i].dtype = CAV_F32;
                e[i].data = conv[i];
            }
        }
        if (!rc && cav_st_write(out, e, st.n, (const char *const *)st.meta_keys,
                                (const char *const *)st.meta_vals, st.nmeta, &err))
            rc = err.code;
        for (int i = 0; i < st.n; i++) free(conv[i]);
        free(conv);
        free(e);
        cav_st_close(&st);
    }
    if (rc) cav_die(rc, "%s", err.msg);
    return 0;
}

int main(int argc, char **argv) {
    cav_set_tool("cav-ckpt");
    static const cav_opt none[] = {{0}}; /* --help and --version only */
    const cav_optgroup g = {none, NULL};
    int first = cav_opts_parse(argc, argv, &g, 1, usage_head, usage_tail);
    int n = argc - first;
    if (n < 1) cav_usage_error("a command is needed: ls or convert");
    const char *cmd = argv[first];
    if (!strcmp(cmd, "ls")) {
        if (n != 2) cav_usage_error("ls takes one FILE");
        char buf[64];
        return cmd_ls(input_path(argv[first + 1], buf, sizeof buf));
    }
    if (!strcmp(cmd, "convert")) {
        if (n != 3) cav_usage_error("convert takes IN and OUT.safetensors");
        char buf[64];
        const char *in = input_path(argv[first + 1], buf, sizeof buf);
        cav_input_note(in);
        return cmd_convert(in, argv[first + 2]);
    }
    cav_usage_error("unknown command '%s'", cmd);
}
