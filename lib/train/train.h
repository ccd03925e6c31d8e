/* train.h: the one training driver under cav-pretrain and cav-finetune (cav-numerics(7) 3.1, 3.6): the
 * options both share, the data loaders, the epoch and step loop with the per-epoch schedule, data parallelism
 * over ranks (gradients and statistics summed), the non-finite stop, Adam, metrics.jsonl, result.csv, the
 * models of each epoch and the best one, and checkpoints from which a run resumes exactly. What differs
 * between the tasks (the step's forward and backward, the evaluation, the start point, the columns they
 * report) comes in as a cav_train_task of small hooks.
 *
 * It also holds the contrast groups (cav-numerics(7) 2.10: the reference's per-GPU replicas, their losses
 * summed), the group loop that pretraining steps and the debug-state check (cav-pretrain --check-debug-state)
 * both run. */
#ifndef CAV_TRAIN_H
#define CAV_TRAIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dist.h"
#include "loader.h"
#include "model.h"
#include "opts.h"
#include "schedule.h"

/* A repeatable option's values (they point into argv). */
typedef struct {
    char **v;
    int n;
} cav_train_paths;

/* The options of a run that both trainers have (their own come in the task's options). */
typedef struct {
    cav_train_paths train, eval; /* shard paths */
    const char *out_dir;
    int batch, epochs;
    cav_schedule sched;
    double weight_decay, beta1, beta2, adam_eps;
    uint64_t seed;
    cav_loader_opts
        data;           /* transforms, threads, prefetch (batch, train, rank fields are set by the driver) */
    const char *init;   /* parameters by name from a checkpoint (.safetensors or .pth); NULL: random */
    int resume;         /* continue from out_dir's newest complete checkpoint */
    int force;          /* start a new run in a non-empty out_dir, replacing the previous run's outputs */
    int64_t save_every; /* steps between checkpoints (0: only at epoch ends) */
    int keep;           /* complete checkpoints kept (0: all) */
    int64_t log_every;  /* steps between metrics lines */
    int64_t max_steps;  /* stop (after a checkpoint) once this many steps are done; 0: no limit */
    int loader_only;    /* run one epoch of the data loader alone and report its rate (no model) */
    const char *args_json; /* the option values, saved as args.json */
    const char *device;    /* compute backend by name ("cpu") */
    int precision;         /* the Linears' precision: 0 fp32, 1 bf16 (cav_model_set_precision) */
    int zero;              /* 1: ZeRO stage 1 (Adam's moments and update sharded over ranks) */
    double bucket_mb;      /* gradient exchange bucket size in MiB (0: one exchange after the backward) */
    int grad_dtype;        /* the gradient exchange's payloads: CAV_DIST_FP32 or CAV_DIST_BF16 (dist.h) */
} cav_train_opts;

/* The model's options: a size, a variant (pretraining) and knobs by the reference's names, applied in that
 * order whatever their order on the command line, so that "--variant cav-mae --contrast-weight 0.1" and
 * "--contrast-weight 0.1 --variant cav-mae" mean the same; knobs in command-line order. */
#define CAV_MAX_KNOBS 64
typedef struct {
    char key[48];
    const char *val;
} cav_knob;
typedef struct {
    const char *size;    /* "base" or "tiny" */
    const char *variant; /* NULL: the task's default model */
    cav_knob knobs[CAV_MAX_KNOBS];
    int nknobs;
} cav_model_opts;

/* cfg from the model options; -1 with err (code 1) for an unknown size, variant, knob or value. */
int cav_model_opts_apply(const cav_model_opts *mo, cav_config *cfg, cav_err *err);
/* A knob from an option's value, for the tables' parse callbacks; -1 with why when the list is full. */
int cav_knob_add(cav_model_opts *mo, const char *key, const char *val, char *why, size_t whylen);
/* A knob whose value must be a number in [lo, hi]. */
int cav_knob_add_number(cav_model_opts *mo, const char *key, const char *s, double lo, double hi, char *why,
                        size_t whylen);
/* Parse callbacks of options that are model knobs (the field is the cav_model_opts): KEY takes the option's
 * value, a number in [LO, HI], or a fixed VALUE (an option without argument). */
#define CAV_KNOB_NUMBER(fn, KEY, LO, HI)                                                                     \
    static int fn(const char *s, void *f, char *why, size_t n) {                                             \
        return cav_knob_add_number(f, KEY, s, LO, HI, why, n);                                               \
    }
#define CAV_KNOB_FIXED(fn, KEY, VALUE)                                                                       \
    static int fn(const char *s, void *f, char *why, size_t n) {                                             \
        return (void)s, cav_knob_add(f, KEY, VALUE, why, n);                                                 \
    }
/* A repeatable path option's parse callback (field: cav_train_paths), and its echo (comma-separated). */
int cav_train_paths_parse(const char *s, void *field, char *why, size_t whylen);
void cav_train_paths_format(const void *field, char *buf, size_t len);

/* One default of a preset: an option by its long name and its value as on the command line. */
typedef struct {
    const char *opt, *val;
} cav_preset_entry;

/* A trainer's options: its own table and its model knobs' table, its task (which picks the recipe's
 * defaults: the run options that differ between pretraining and fine-tuning, and the model config), and
 * where its options struct keeps the run's options, the model's and the config. */
typedef struct {
    const cav_opt *own, *knobs;
    cav_task task;
    size_t size, run, model, cfg; /* sizeof the trainer's options; offsetof its cav_train_opts,
                                   * cav_model_opts, cav_config */
    /* A preset option (cav-finetune --recipe): from options parsed once, the defaults the preset named
     * there sets (ended by {NULL}), or NULL for none. cav_train_main applies them to the tables' defaults
     * and then parses the command line, so that an option given there overrides the preset wherever it
     * stands. NULL: the trainer has no presets. */
    const cav_preset_entry *(*preset)(const void *o);
} cav_train_options_of;
/* The options of a trainer of TASK whose options struct TYPE has fields run, model and cfg, and its preset
 * hook (or NULL). */
#define CAV_TRAIN_OPTIONS_OF_PRESET(TYPE, OWN, KNOBS, TASK, PRESET)                                          \
    {                                                                                                        \
        OWN, KNOBS, TASK, sizeof(TYPE), offsetof(TYPE, run), offsetof(TYPE, model), offsetof(TYPE, cfg),     \
            PRESET                                                                                           \
    }
#define CAV_TRAIN_OPTIONS_OF(TYPE, OWN, KNOBS, TASK) CAV_TRAIN_OPTIONS_OF_PRESET(TYPE, OWN, KNOBS, TASK, NULL)

/* The option groups of a trainer's options o, in --help order: [0] the run's table (malloc'd: the driver's
 * with the recipe's defaults), [1] the model's size and --set and [2] the trainer's knobs, [3] its own
 * table. 0 ok, -1 out of memory. */
#define CAV_TRAIN_GROUPS 4
int cav_train_options(cav_optgroup g[CAV_TRAIN_GROUPS], const cav_train_options_of *of, void *o);
/* o zeroed, then the defaults of those tables (the loader's first) and the task's reference config (for
 * pretraining with norm_pix_loss, as every pretraining script sets it). -1 out of memory. */
int cav_train_opts_default(const cav_train_options_of *of, void *o);

/* A training tool: cav-pretrain and cav-finetune are this main over their own tables and run function. */
typedef struct {
    const char *name, *usage_head, *usage_tail; /* --help: head, the tables' option lines, tail */
    const cav_train_options_of *options;
    int (*run)(const void *o, const cav_dist *d, cav_err *err);
    /* After parsing, a mode other than training (the debug-state check): 1 when it ran, with *rc its exit
     * code; NULL: none. */
    int (*other)(void *o, int *rc);
} cav_train_tool;

/* The tool's main: its name in messages, the BLAS kernels fitted to the CPU, MPI, the options parsed from
 * the tables (operands are training shards), the model config from the model options (usage errors),
 * the required --out and shards, args.json from the tables' echo, the run and its message. o: the tool's
 * options struct. Returns the exit code. */
int cav_train_main(int argc, char **argv, const cav_train_tool *tool, void *o);

#define CAV_TRAIN_MAX_STATS 8

typedef struct cav_trainer cav_trainer;

typedef struct {
    int need_audio, need_video, label_dim; /* what the loader must deliver */
    int nstats;                   /* statistics of a step; stats[0] is the loss the non-finite stop watches */
    const char *const *stat_keys; /* metrics.jsonl names of their window means ("loss", ...) */
    const char *const *state_keys; /* state.json names of their epoch sums */
    const char *best_key;          /* state.json name of the best evaluation score */
    int best_higher;               /* a higher score is better (else lower) */
    double head_lr;                /* the head group's lr multiplier (1: one group) */
    /* The step's gradients are the backward's as it writes them (no accumulation or scaling after it), so
     * the exchange over ranks may start during the backward (cav_model_on_grads_final). */
    int overlap;
    void *ctx; /* the task's own state */
    /* After the model exists (t->m): the task's buffers. */
    int (*prepare)(cav_trainer *t, cav_err *err);
    /* A new run's start point, after cav_model_init. */
    int (*init)(cav_trainer *t, cav_err *err);
    /* Forward and backward of this rank's slice of a global batch: leaves in the model's gradients this
     * rank's part of the batch gradient and in stats this rank's part of the statistics (both are summed
     * over ranks). The step's randomness is keyed by (epoch, step). */
    void (*step)(cav_trainer *t, const cav_batch *b, int epoch, int64_t step, double *stats);
    /* The whole evaluation set; res[] the same on every rank. */
    int (*evaluate)(cav_trainer *t, cav_loader *ev, int epoch, double *res, cav_err *err);
    double (*score)(const cav_trainer *t, const double *res); /* the best model's criterion */
    /* Rank 0 at an epoch's end: its result.csv row (the reference's columns, no newline) into row, and its
     * log message (after "epoch N: ") into msg; train: the epoch's mean statistics; res: NULL without an
     * evaluation set. */
    void (*epoch_report)(const cav_trainer *t, const double *train, const double *res, double lr, char *row,
                         size_t nrow, char *msg, size_t nmsg);
    /* Rank 0 at an epoch's end: more keys for that epoch's metrics.jsonl line (",\"key\":value..."), or
     * NULL for no such line. */
    void (*epoch_metrics)(const cav_trainer *t, const double *train, const double *res, double lr, char *out,
                          size_t n);
    void (*describe)(const cav_trainer *t, char *out, size_t n); /* the setup line, after the common part */
} cav_train_task;

struct cav_trainer {
    const cav_train_opts *o;
    const cav_train_task *task;
    const cav_dist *d;
    const cav_config *cfg;
    cav_model *m;
    int rows; /* of the model: this rank's rows of a step (or of a group) */
};

/* Runs the whole training: a model of cfg with `rows` rows per step on this rank. 0 ok; else an exit code
 * with err filled. */
int cav_train_run(const cav_train_opts *o, const cav_config *cfg, int rows, const cav_train_task *task,
                  const cav_dist *d, cav_err *err);
/* Rows [first, first + n) of a batch (this rank's slice) into the model's inputs (those it reads). */
void cav_train_set_inputs(cav_model *m, const cav_batch *b, int first, int n);

/* ---- contrast groups ------------------------------------------------------------------------------- */

/* Groups of a batch run one after another on one model (the reference's DataParallel replicas), or one
 * group spread over a block of ranks (each runs its rows; the contrastive embeddings and MAE sums are
 * gathered so that every rank of the block computes the group's losses). */
typedef struct {
    int ngroups;         /* groups this process runs */
    int groups_total;    /* groups of the global batch (c_acc is their mean) */
    double scale;        /* each group's losses and gradient x scale (1: the reference's sum; 1/G: mean) */
    cav_dist_block *blk; /* the ranks sharing one group; NULL or size 1: whole groups */
    float *acc, *tmp;    /* [nparams] each; needed when ngroups > 1 or scale != 1 */
    float *ca, *cv, *gca, *gcv; /* a spread group's embeddings: [rows, D] mine, [group rows, D] gathered */
    int bf16_groups; /* one process with --grad-dtype bf16: each group's gradient rounded to bf16 as a rank's
                      * payload is (dist.h), added in fp32 in group order (the driver rounds the sum) */
} cav_groups;

/* Sets a group's inputs (and masks) into the model, before its forward. */
typedef void (*cav_group_fill)(void *ctx, cav_model *m, int group);
/* After a group's forward (outputs readable), before its backward; may be NULL. */
typedef void (*cav_group_seen)(void *ctx, cav_model *m, int group);

/* Buffers for the groups (acc, tmp, and the gathered embeddings when spread); 0 ok, -1 out of memory. */
int cav_groups_alloc(cav_groups *g, const cav_model *m, int group_rows);
void cav_groups_free(cav_groups *g);
/* Forward (and backward when train) of every group; the gradient of the scaled sum is left in the model's
 * gradients. out[6]: total, mae_a, mae_v, c (weighted), c_acc (mean over all groups), mae (weighted), each
 * scaled and summed; a spread group is counted by its first rank only (the sum over ranks counts it once). */
void cav_groups_run(cav_groups *g, cav_model *m, int train, cav_group_fill fill, cav_group_seen seen,
                    void *ctx, double out[6]);

#endif
