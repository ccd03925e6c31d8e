/* cli.c: diagnostics, --help/--version, the terminal progress line and CSV quoting shared by every tool
 * (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef CAV_VERSION
#define CAV_VERSION "unknown"
#endif

static const char *tool_name = "cav";

/* Output on stdout is checked like any file: a full disk or /dev/full behind it is an error (exit 3), not a
 * silent loss; registered first, so it runs after every other exit handler. */
static void check_stdout(void) {
    errno = 0;
    if (fflush(stdout) == 0 && !ferror(stdout)) return;
    int e = errno ? errno : EIO;
    if (e == EPIPE) return; /* the reader went away (| head): not a loss */
    fprintf(stderr, "%s: write error on stdout: %s\n", tool_name, strerror(e));
    _exit(CAV_EXIT_INTERNAL);
}

void cav_set_tool(const char *name) {
    const char *slash = strrchr(name, '/');
    tool_name = slash ? slash + 1 : name;
    static int registered;
    if (!registered) registered = 1, atexit(check_stdout);
}
const char *cav_tool(void) {
    return tool_name;
}
const char *cav_version_string(void) {
    return CAV_VERSION;
}

static void vmsg(const char *fmt, va_list ap) {
    fprintf(stderr, "%s: ", tool_name);
    vfprintf(stderr, fmt, ap);
    size_t n = strlen(fmt);
    if (n == 0 || fmt[n - 1] != '\n') fputc('\n', stderr);
}

void cav_msg(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
}

void cav_die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
    exit(code);
}

void cav_usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmsg(fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try '%s --help' for more information.\n", tool_name);
    exit(CAV_EXIT_USAGE);
}

void cav_help(const char *usage) {
    fputs(usage, stdout);
    exit(fflush(stdout) == 0 ? CAV_EXIT_OK : CAV_EXIT_INTERNAL);
}

void cav_version(void) {
    printf("%s (cav-mae) %s\n", tool_name, CAV_VERSION);
    exit(fflush(stdout) == 0 ? CAV_EXIT_OK : CAV_EXIT_INTERNAL);
}

void cav_std_option(int c, const char *usage) {
    if (c == CAV_OPT_HELP) cav_help(usage);
    if (c == CAV_OPT_VERSION) cav_version();
    if (c == '?' || c == ':') { /* getopt already said what was wrong */
        fprintf(stderr, "Try '%s --help' for more information.\n", tool_name);
        exit(CAV_EXIT_USAGE);
    }
}

double cav_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

struct cav_progress {
    char what[64];
    int64_t total, done;
    double t0, last;
    int on;
};

cav_progress *cav_progress_start(const char *what, int64_t total) {
    cav_progress *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    snprintf(p->what, sizeof p->what, "%s", what);
    p->total = total;
    p->t0 = p->last = cav_now();
    const char *force = getenv("CAV_PROGRESS");
    p->on = force ? atoi(force) != 0 : isatty(STDERR_FILENO);
    return p;
}

static void progress_draw(cav_progress *p, double now, int final) {
    double el = now - p->t0;
    double rate = el > 0 ? (double)p->done / el : 0;
    fprintf(stderr, "\r%s: %s %lld", tool_name, p->what, (long long)p->done);
    if (p->total > 0) fprintf(stderr, "/%lld", (long long)p->total);
    fprintf(stderr, "  %.1f/s", rate);
    if (p->total > 0 && rate > 0 && !final) {
        double eta = (double)(p->total - p->done) / rate;
        fprintf(stderr, "  ETA %dm%02ds", (int)(eta / 60), (int)fmod(eta, 60));
    } else if (final) {
        fprintf(stderr, "  in %.1fs", el);
    }
    fputs(final ? "\033[K\n" : "\033[K", stderr);
}

void cav_progress_add(cav_progress *p, int64_t n) {
    if (!p) return;
    p->done += n;
    if (!p->on) return;
    double now = cav_now();
    if (now - p->last >= 0.25) {
        p->last = now;
        progress_draw(p, now, 0);
    }
}

void cav_progress_end(cav_progress *p) {
    if (!p) return;
    if (p->on) progress_draw(p, cav_now(), 1);
    free(p);
}

void cav_csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}
