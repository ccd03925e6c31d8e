/* cli.h: the conventions every tool shares — its name in diagnostics, --help and --version, the exit
 * codes 0-3 (cav-mae(7)), a progress line on stderr that appears only when stderr is a terminal, and the
 * quoting of CSV fields. Tools declare their options in tables (opts.h), whose parser calls these. */
#ifndef CAV_CLI_H
#define CAV_CLI_H

#include <stdint.h>
#include <stdio.h>
#include <stdnoreturn.h>

enum {
    CAV_EXIT_OK = 0,       /* success */
    CAV_EXIT_USAGE = 1,    /* bad command line */
    CAV_EXIT_INPUT = 2,    /* bad input data */
    CAV_EXIT_INTERNAL = 3, /* internal error or resource failure (memory, disk, library) */
};

/* getopt_long values of --help and --version (opts.c adds both to every tool's options). */
#define CAV_OPT_HELP 0x1001
#define CAV_OPT_VERSION 0x1002

void cav_set_tool(const char *name);
const char *cav_tool(void);
const char *cav_version_string(void);

/* Diagnostics on stderr, prefixed "tool: ". */
void cav_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
noreturn void cav_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the message and "Try 'tool --help'." and exits 1. */
noreturn void cav_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* --help prints usage (the man page's synopsis and option list) to stdout; --version prints the tool's
 * name, the project and the git-describe version. Both exit 0. */
noreturn void cav_help(const char *usage);
noreturn void cav_version(void);
/* Handles CAV_OPT_HELP, CAV_OPT_VERSION and getopt's '?' (usage error); returns for anything else. */
void cav_std_option(int c, const char *usage);

/* Progress line: count, rate and ETA (when total > 0), redrawn at most 4 times a second, on stderr, only
 * when stderr is a terminal (or CAV_PROGRESS=1 forces it). */
typedef struct cav_progress cav_progress;
cav_progress *cav_progress_start(const char *what, int64_t total);
void cav_progress_add(cav_progress *p, int64_t n);
void cav_progress_end(cav_progress *p);

double cav_now(void); /* monotonic seconds */

/* One CSV field (RFC 4180) of a tool's table: as it is, or quoted with its quotes doubled when it holds a
 * comma, a quote or a line break (record ids may). */
void cav_csv_field(FILE *f, const char *s);

#endif
