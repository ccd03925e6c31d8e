/* train.c: see train.h. Every rank runs the same loop: its slice of each global batch through the task's
 * step, gradients and statistics summed over ranks, the same Adam step everywhere; rank 0 alone writes
 * files. A checkpoint holds the position (epoch, batch within it, global step), the epoch's statistics so
 * far, the best score and the result.csv rows of the epochs done, so that a resumed run repeats the
 * uninterrupted one exactly and rewrites result.csv from the checkpoint's own record. A checkpoint taken at
 * an epoch's end is named by that epoch, as the model of the epoch is. */
#include "train.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blas.h"
#include "cuda/bf16.h" /* the one float <-> bf16 rounding (--grad-dtype bf16 over groups) */
#include "checkpoint.h"
#include "cli.h"
#include "json.h"
#include "kernels.h"
#include "trainio.h"
#include "weights.h"

/* ---- options ----------------------------------------------------------------------------------- */

int cav_train_paths_parse(const char *s, void *field, char *why, size_t whylen) {
    cav_train_paths *p = field;
    char **v = realloc(p->v, (size_t)(p->n + 2) * sizeof *v);
    if (!v) return snprintf(why, whylen, "out of memory"), -1;
    p->v = v;
    v[p->n++] = (char *)s;
    v[p->n] = NULL;
    return 0;
}

void cav_train_paths_format(const void *field, char *buf, size_t len) {
    const cav_train_paths *p = field;
    size_t at = 0;
    if (len) buf[0] = 0;
    for (int i = 0; i < p->n && at < len; i++) {
        int k = snprintf(buf + at, len - at, "%s%s", i ? "," : "", p->v[i]);
        at += k > 0 ? (size_t)k : 0;
    }
}

int cav_knob_add(cav_model_opts *mo, const char *key, const char *val, char *why, size_t whylen) {
    if (mo->nknobs == CAV_MAX_KNOBS)
        return snprintf(why, whylen, "more than %d model knobs", CAV_MAX_KNOBS), -1;
    cav_knob *k = &mo->knobs[mo->nknobs];
    if (snprintf(k->key, sizeof k->key, "%s", key) >= (int)sizeof k->key)
        return snprintf(why, whylen, "no model knob is called '%s'", key), -1;
    k->val = val;
    mo->nknobs++;
    return 0;
}

int cav_knob_add_number(cav_model_opts *mo, const char *key, const char *s, double lo, double hi, char *why,
                        size_t whylen) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi))
        return snprintf(why, whylen, "'%s' is not a number in [%g, %g]", s, lo, hi), -1;
    return cav_knob_add(mo, key, s, why, whylen);
}

/* --set: the field is the whole cav_model_opts (the entry's offset is 0) */
static int parse_set(const char *s, void *field, char *why, size_t whylen) {
    const char *eq = strchr(s, '=');
    if (!eq) return snprintf(why, whylen, "wants KEY=VALUE, not '%s'", s), -1;
    char key[64];
    snprintf(key, sizeof key, "%.*s", (int)(eq - s < 63 ? eq - s : 63), s);
    return cav_knob_add(field, key, eq + 1, why, whylen);
}

static void format_knobs(const void *field, char *buf, size_t len) {
    const cav_model_opts *mo = field;
    size_t at = 0;
    if (len) buf[0] = 0;
    for (int i = 0; i < mo->nknobs && at < len; i++) {
        int k = snprintf(buf + at, len - at, "%s%s=%s", i ? "," : "", mo->knobs[i].key, mo->knobs[i].val);
        at += k > 0 ? (size_t)k : 0;
    }
}

static int parse_size(const char *s, void *field, char *why, size_t whylen) {
    if (strcmp(s, "base") && strcmp(s, "tiny")) return snprintf(why, whylen, "base or tiny, not '%s'", s), -1;
    return *(const char **)field = s, 0;
}

static void format_string(const void *field, char *buf, size_t len) {
    const char *s = *(const char *const *)field;
    snprintf(buf, len, "%s", s ? s : "");
}

/* --no-noise, --no-roll: an int of the loader's options to 0 */
static int parse_off(const char *s, void *field, char *why, size_t whylen) {
    (void)s, (void)why, (void)whylen;
    return *(int *)field = 0, 0;
}

static void format_int(const void *field, char *buf, size_t len) {
    snprintf(buf, len, "%d", *(const int *)field);
}

int cav_model_opts_apply(const cav_model_opts *mo, cav_config *cfg, cav_err *err) {
    if (cav_config_size(cfg, mo->size ? mo->size : "base"))
        return cav_fail(err, 1, "--model: base or tiny, not '%s'", mo->size);
    if (mo->variant && cav_config_variant(cfg, mo->variant))
        return cav_fail(err, 1,
                        "--variant: cav-mae, av-mae, vanilla-av-mae, cav, audio-mae or visual-mae, not '%s'",
                        mo->variant);
    for (int i = 0; i < mo->nknobs; i++) {
        int r = cav_config_set(cfg, mo->knobs[i].key, mo->knobs[i].val);
        if (r == -2) return cav_fail(err, 1, "unknown model knob '%s'", mo->knobs[i].key);
        if (r) return cav_fail(err, 1, "bad value '%s' for %s", mo->knobs[i].val, mo->knobs[i].key);
    }
    return 0;
}

static const cav_opt model_table[] = {
    {.name = "model",
     .type = CAV_OPTT_CUSTOM,
     .offset = offsetof(cav_model_opts, size),
     .def = "base",
     .arg = "NAME",
     .parse = parse_size,
     .format = format_string,
     .help = "base, or tiny (192-dim, 3 heads, 4+1 layers, decoder 128x2)",
     .key = "model"},
    {.name = "set",
     .type = CAV_OPTT_CUSTOM,
     .offset = 0,
     .arg = "KEY=VALUE",
     .parse = parse_set,
     .format = format_knobs,
     .help = "any model knob by the reference's name (embed_dim, depth,\nnum_heads, modality_specific_depth, "
             "audio_length, img_size, ...)",
     .key = "knobs"},
    {0},
};

static const cav_opt_choice precisions[] = {{"fp32", 0}, {"bf16", 1}, {NULL, 0}};
static const cav_opt_choice grad_dtypes[] = {{"fp32", CAV_DIST_FP32}, {"bf16", CAV_DIST_BF16}, {NULL, 0}};
#define RUN(f) offsetof(cav_train_opts, f)
static const cav_opt train_table[] = {
    {.name = "out",
     .short_name = 'o',
     .type = CAV_OPTT_STRING,
     .offset = RUN(out_dir),
     .arg = "DIR",
     .help = "run directory: result.csv, metrics.jsonl, models/, checkpoints/, args.json",
     .key = "out"},
    {.name = "train",
     .type = CAV_OPTT_CUSTOM,
     .offset = RUN(train),
     .arg = "FILE",
     .parse = cav_train_paths_parse,
     .format = cav_train_paths_format,
     .help = "a training shard (repeatable; also positional arguments)",
     .key = "train"},
    {.name = "eval",
     .type = CAV_OPTT_CUSTOM,
     .offset = RUN(eval),
     .arg = "FILE",
     .parse = cav_train_paths_parse,
     .format = cav_train_paths_format,
     .help = "an evaluation shard (repeatable), scored every epoch",
     .key = "eval"},
    {.name = "resume",
     .type = CAV_OPTT_FLAG,
     .offset = RUN(resume),
     .help = "continue from the newest complete checkpoint in --out",
     .key = "resume"},
    {.name = "force",
     .type = CAV_OPTT_FLAG,
     .offset = RUN(force),
     .help = "start anew in a non-empty --out, deleting the previous run's outputs",
     .key = "force"},
    {.name = "init",
     .type = CAV_OPTT_STRING,
     .offset = RUN(init),
     .arg = "FILE",
     .help = "start from parameters in FILE (.safetensors or .pth, by name)",
     .key = "init"},
    {.name = "seed",
     .type = CAV_OPTT_U64,
     .offset = RUN(seed),
     .def = "1",
     .min = 0,
     .max = 9.2e18,
     .arg = "N",
     .help = "seed of every random draw",
     .key = "seed"},
    {.name = "device",
     .type = CAV_OPTT_STRING,
     .offset = RUN(device),
     .def = "cpu",
     .arg = "NAME",
     .help = "compute backend: cpu, or cuda / cuda:N in a build with CUDA (several ranks: cuda is each "
             "rank's cuda:LOCAL_RANK)",
     .key = "device"},
    {.name = "precision",
     .type = CAV_OPTT_CHOICE,
     .offset = RUN(precision),
     .def = "fp32",
     .arg = "P",
     .choices = precisions,
     .help =
         "fp32, or bf16: the Linears and attention's products on bf16 operands with fp32 accumulation (fp32 "
         "master weights, Adam, LayerNorm, softmax, losses); --resume in another precision is refused",
     .key = "precision"},
    {.name = "zero",
     .type = CAV_OPTT_INT,
     .offset = RUN(zero),
     .def = "0",
     .min = 0,
     .max = 1,
     .arg = "N",
     .help = "optimizer state sharding over ranks: 0 none, 1 ZeRO stage 1 (gradients reduce-scattered, each "
             "rank's Adam on its shard, parameters all-gathered)",
     .key = "zero"},
    {.name = "bucket-mb",
     .type = CAV_OPTT_DOUBLE,
     .offset = RUN(bucket_mb),
     .def = "25",
     .min = 0,
     .max = 1 << 20,
     .arg = "MB",
     .help = "gradient exchange in buckets of MB MiB, each started when the backward has finished it "
             "(0: one exchange after the backward)",
     .key = "bucket_mb"},
    {.name = "grad-dtype",
     .type = CAV_OPTT_CHOICE,
     .offset = RUN(grad_dtype),
     .def = "fp32",
     .arg = "T",
     .choices = grad_dtypes,
     .help = "gradient exchange payloads: fp32, or bf16 (each rank's gradient rounded to bf16, summed in "
             "fp32 in rank order, the sum rounded to bf16; one process: each contrast group as a rank); "
             "--resume with another is refused",
     .key = "grad_dtype"},
    {.name = "batch-size",
     .short_name = 'b',
     .type = CAV_OPTT_INT,
     .offset = RUN(batch),
     .min = 1,
     .max = 1 << 20,
     .arg = "N",
     .help = "global batch",
     .key = "batch_size"},
    {.name = "epochs",
     .short_name = 'e',
     .type = CAV_OPTT_INT,
     .offset = RUN(epochs),
     .min = 1,
     .max = 100000,
     .arg = "N",
     .help = "epochs",
     .key = "epochs"},
    {.name = "lr",
     .type = CAV_OPTT_DOUBLE,
     .offset = RUN(sched.lr),
     .def = "5e-5",
     .min = 0,
     .max = 10,
     .arg = "X",
     .help = "base learning rate",
     .key = "lr"},
    {.name = "lr-decay-start",
     .type = CAV_OPTT_INT,
     .offset = RUN(sched.decay_start),
     .min = 0,
     .max = 1000,
     .arg = "N",
     .help = "first epoch of the per-epoch decay",
     .key = "lr_decay_start"},
    {.name = "lr-decay-step",
     .type = CAV_OPTT_INT,
     .offset = RUN(sched.decay_step),
     .min = 0,
     .max = 1000,
     .arg = "N",
     .help = "epochs between decays",
     .key = "lr_decay_step"},
    {.name = "lr-decay",
     .type = CAV_OPTT_DOUBLE,
     .offset = RUN(sched.decay),
     .def = "0.5",
     .min = 0,
     .max = 1,
     .arg = "X",
     .help = "decay factor",
     .key = "lr_decay"},
    {.name = "warmup-steps",
     .type = CAV_OPTT_I64,
     .offset = RUN(sched.warmup_steps),
     .def = "0",
     .min = 0,
     .max = 9.2e18,
     .arg = "N",
     .help = "linear warmup (the reference has none)",
     .key = "warmup_steps"},
    {.name = "weight-decay",
     .type = CAV_OPTT_DOUBLE,
     .offset = RUN(weight_decay),
     .def = "5e-7",
     .min = 0,
     .max = 1,
     .arg = "X",
     .help = "coupled L2 (torch.optim.Adam's)",
     .key = "weight_decay"},
    {.name = "beta1",
     .type = CAV_OPTT_DOUBLE,
     .offset = RUN(beta1),
     .def = "0.95",
     .min = 0,
     .max = 0.999999,
     .arg = "X",
     .help = "Adam's beta1",
     .key = "beta1"},
    {.name = "beta2",
     .type = CAV_OPTT_DOUBLE,
     .offset = RUN(beta2),
     .def = "0.999",
     .min = 0,
     .max = 0.999999999,
     .arg = "X",
     .help = "Adam's beta2",
     .key = "beta2"},
    {.name = "no-noise",
     .type = CAV_OPTT_CUSTOM,
     .offset = RUN(data.noise),
     .parse = parse_off,
     .format = format_int,
     .help = "no audio noise",
     .key = "noise"},
    {.name = "no-roll",
     .type = CAV_OPTT_CUSTOM,
     .offset = RUN(data.roll),
     .parse = parse_off,
     .format = format_int,
     .help = "no audio time roll",
     .key = "roll"},
    {.name = "freqm",
     .type = CAV_OPTT_INT,
     .offset = RUN(data.freqm),
     .min = 0,
     .max = 100000,
     .arg = "N",
     .help = "SpecAugment frequency mask width",
     .key = "freqm"},
    {.name = "timem",
     .type = CAV_OPTT_INT,
     .offset = RUN(data.timem),
     .min = 0,
     .max = 100000,
     .arg = "N",
     .help = "SpecAugment time mask width",
     .key = "timem"},
    {.name = "frame",
     .type = CAV_OPTT_INT,
     .offset = RUN(data.frame),
     .min = 0,
     .max = 1000,
     .arg = "N",
     .help = "this frame in training and evaluation (default: random, and 5)",
     .key = "frame"},
    {.name = "norm-mean",
     .type = CAV_OPTT_FLOAT,
     .offset = RUN(data.norm_mean),
     .def = "-5.081",
     .min = -1e6,
     .max = 1e6,
     .arg = "X",
     .help = "fbank normalisation mean",
     .key = "norm_mean"},
    {.name = "norm-std",
     .type = CAV_OPTT_FLOAT,
     .offset = RUN(data.norm_std),
     .def = "4.4849",
     .min = 0,
     .max = 1e6,
     .arg = "X",
     .help = "fbank normalisation std",
     .key = "norm_std"},
    {.name = "loader-threads",
     .type = CAV_OPTT_INT,
     .offset = RUN(data.threads),
     .def = "2",
     .min = 1,
     .max = 256,
     .arg = "N",
     .help = "decoding threads"},
    {.name = "prefetch",
     .type = CAV_OPTT_INT,
     .offset = RUN(data.prefetch),
     .def = "2",
     .min = 1,
     .max = 64,
     .arg = "N",
     .help = "batches prepared ahead"},
    {.name = "save-every",
     .type = CAV_OPTT_I64,
     .offset = RUN(save_every),
     .def = "0",
     .min = 0,
     .max = 9.2e18,
     .arg = "N",
     .help = "checkpoint every N steps as well as every epoch (0: epochs only)",
     .key = "save_every"},
    {.name = "keep",
     .type = CAV_OPTT_INT,
     .offset = RUN(keep),
     .def = "2",
     .min = 0,
     .max = 1 << 20,
     .arg = "N",
     .help = "complete checkpoints kept (0 keeps all)",
     .key = "keep"},
    {.name = "log-every",
     .type = CAV_OPTT_I64,
     .offset = RUN(log_every),
     .def = "100",
     .min = 0,
     .max = 9.2e18,
     .arg = "N",
     .help = "steps per metrics.jsonl line",
     .key = "log_every"},
    {.name = "max-steps",
     .type = CAV_OPTT_I64,
     .offset = RUN(max_steps),
     .def = "0",
     .min = 0,
     .max = 9.2e18,
     .arg = "N",
     .help = "stop after N steps of this invocation, with a checkpoint (0: no limit)",
     .key = "max_steps"},
    {.name = "loader-only",
     .type = CAV_OPTT_FLAG,
     .offset = RUN(loader_only),
     .help = "run one epoch of the data loader alone and print its samples/s"},
    {0},
};
#undef RUN

/* The run options whose defaults differ between the recipes: pretraining (the run_cavmae_pretrain scripts)
 * and fine-tuning on AS-20K (run_cavmae_ft_bal.sh). */
static const char *const recipe_defaults[][3] = {{"batch-size", "48", "36"},    {"epochs", "25", "15"},
                                                 {"lr-decay-start", "10", "5"}, {"lr-decay-step", "5", "1"},
                                                 {"freqm", "0", "48"},          {"timem", "0", "192"}};

int cav_train_options(cav_optgroup g[CAV_TRAIN_GROUPS], const cav_train_options_of *of, void *o) {
    size_t n = sizeof train_table / sizeof *train_table;
    int col = of->task == CAV_TASK_FINETUNE ? 2 : 1;
    cav_opt *t = malloc(sizeof train_table);
    if (!t) return -1;
    memcpy(t, train_table, sizeof train_table);
    for (size_t i = 0; i < sizeof recipe_defaults / sizeof *recipe_defaults; i++)
        for (size_t k = 0; k + 1 < n; k++)
            if (strcmp(t[k].name, recipe_defaults[i][0]) == 0) t[k].def = recipe_defaults[i][col];
    void *mo = (char *)o + of->model;
    g[0] = (cav_optgroup){t, (char *)o + of->run};
    g[1] = (cav_optgroup){model_table, mo};
    g[2] = (cav_optgroup){of->knobs, mo};
    g[3] = (cav_optgroup){of->own, o};
    return 0;
}

int cav_train_opts_default(const cav_train_options_of *of, void *o) {
    cav_optgroup g[CAV_TRAIN_GROUPS];
    memset(o, 0, of->size);
    if (cav_train_options(g, of, o)) return -1;
    cav_train_opts *run = g[0].base;
    cav_loader_opts_default(&run->data, 1);
    run->adam_eps = 1e-8;
    for (int i = 0; i < CAV_TRAIN_GROUPS; i++) cav_opts_defaults(g[i].opts, g[i].base);
    free((void *)g[0].opts);
    cav_config *cfg = (cav_config *)((char *)o + of->cfg);
    *cfg = cav_config_default(of->task);
    if (of->task == CAV_TASK_PRETRAIN) cfg->norm_pix_loss = 1;
    return 0;
}

void cav_train_set_inputs(cav_model *m, const cav_batch *b, int first, int n) {
    size_t A = cav_model_input_size(m, CAV_IN_AUDIO), V = cav_model_input_size(m, CAV_IN_VIDEO);
    if (A) cav_model_set_input(m, CAV_IN_AUDIO, b->audio + (size_t)first * A, n);
    if (V) cav_model_set_input(m, CAV_IN_VIDEO, b->video + (size_t)first * V, n);
}

/* A preset's defaults (cav_train_options_of.preset): the command line is parsed once into a scratch copy of
 * the options to learn which preset it names (usage errors and --help end there, as they would later),
 * then the preset's values go into the fields of g's groups through the tables' own parsers, before the real
 * parse. */
static void apply_preset(int argc, char **argv, const cav_train_tool *tool,
                         cav_optgroup g[CAV_TRAIN_GROUPS]) {
    const cav_train_options_of *of = tool->options;
    cav_optgroup sg[CAV_TRAIN_GROUPS];
    void *scratch = malloc(of->size);
    if (!scratch || cav_train_opts_default(of, scratch) || cav_train_options(sg, of, scratch))
        cav_die(CAV_EXIT_INTERNAL, "out of memory");
    cav_opts_parse(argc, argv, sg, CAV_TRAIN_GROUPS, tool->usage_head, tool->usage_tail);
    optind = 0; /* glibc's getopt starts over, its own state reset, on the real parse */
    const cav_preset_entry *e = of->preset(scratch);
    for (; e && e->opt; e++) {
        const cav_opt *opt = NULL;
        int k = 0;
        for (; k < CAV_TRAIN_GROUPS && !opt; k++) opt = cav_opts_find(g[k].opts, e->opt);
        char why[256];
        if (!opt || cav_opt_set(opt, g[k - 1].base, e->val, why, sizeof why))
            cav_die(CAV_EXIT_INTERNAL, "preset: --%s %s: %s", e->opt, e->val ? e->val : "",
                    opt ? why : "no such option");
    }
    cav_train_opts *run = sg[0].base;
    free(run->train.v), free(run->eval.v);
    free((void *)sg[0].opts);
    free(scratch);
}

int cav_train_main(int argc, char **argv, const cav_train_tool *tool, void *o) {
    cav_set_tool(tool->name);
    cav_blas_fit_cpu(tool->name, argv);
    cav_dist d;
    cav_dist_init(&d, &argc, &argv);
    const cav_train_options_of *of = tool->options;
    cav_optgroup g[CAV_TRAIN_GROUPS];
    if (cav_train_opts_default(of, o) || cav_train_options(g, of, o))
        cav_die(CAV_EXIT_INTERNAL, "out of memory");
    cav_train_opts *run = g[0].base;
    if (of->preset) apply_preset(argc, argv, tool, g);
    int first = cav_opts_parse(argc, argv, g, CAV_TRAIN_GROUPS, tool->usage_head, tool->usage_tail), rc = 0;
    char *args = NULL, why[256];
    for (int i = first; i < argc; i++) /* before the other mode, which may refuse training shards */
        if (cav_train_paths_parse(argv[i], &run->train, why, sizeof why))
            cav_die(CAV_EXIT_INTERNAL, "%s", why);
    if (!tool->other || !tool->other(o, &rc)) {
        cav_err err = {0, ""};
        if (cav_model_opts_apply(g[1].base, (cav_config *)((char *)o + of->cfg), &err))
            cav_usage_error("%s", err.msg);
        if (!run->out_dir && !run->loader_only) cav_usage_error("--out DIR is required");
        if (!run->train.n) cav_usage_error("no training shards");
        /* args.json: the settings the run was given, from the option tables (the reference keeps its args) */
        size_t len = 0, cap = 0;
        if (cav_opts_json(g, CAV_TRAIN_GROUPS, &args, &len, &cap) ||
            cav_json_append_raw(&args, &len, &cap, "\n"))
            cav_die(CAV_EXIT_INTERNAL, "out of memory");
        run->args_json = args;
        rc = tool->run(o, &d, &err);
        if (rc) cav_msg("%s", err.msg);
    }
    free(args);
    free((void *)g[0].opts);
    free(run->train.v), free(run->eval.v);
    cav_dist_finalize(&d);
    return rc;
}

/* ---- contrast groups ------------------------------------------------------------------------------- */

int cav_groups_alloc(cav_groups *g, const cav_model *m, int group_rows) {
    g->acc = g->tmp = g->ca = g->cv = g->gca = g->gcv = NULL;
    if (g->ngroups > 1 || g->scale != 1.0) {
        g->acc = malloc(m->nparams * sizeof *g->acc);
        g->tmp = malloc(m->nparams * sizeof *g->tmp);
        if (!g->acc || !g->tmp) return -1;
    }
    if (g->blk && g->blk->size > 1) {
        size_t mine = (size_t)m->B * m->D, all = (size_t)group_rows * m->D;
        g->ca = malloc(mine * sizeof *g->ca), g->cv = malloc(mine * sizeof *g->cv);
        g->gca = calloc(all, sizeof *g->gca), g->gcv = calloc(all, sizeof *g->gcv);
        if (!g->ca || !g->cv || !g->gca || !g->gcv) return -1;
    }
    return 0;
}

void cav_groups_free(cav_groups *g) {
    free(g->acc), free(g->tmp), free(g->ca), free(g->cv), free(g->gca), free(g->gcv);
    g->acc = g->tmp = g->ca = g->cv = g->gca = g->gcv = NULL;
}

/* A group spread over ranks: every rank of the group gathers the group's contrastive embeddings and MAE
 * sums and computes the group's losses, as one process over the whole group does. */
static void split_losses(cav_groups *g, cav_model *m) {
    size_t nd = (size_t)m->B * m->D;
    double mae[4];
    cav_model_split_embeddings(m, g->ca, g->cv, mae);
    if (m->cfg.contrast_loss_weight != 0) {
        cav_dist_block_gather_f32(g->blk, g->ca, g->gca, nd);
        cav_dist_block_gather_f32(g->blk, g->cv, g->gcv, nd);
    }
    cav_dist_block_sum_f64(g->blk, mae, 4);
    cav_model_split_losses(m, g->gca, g->gcv, mae);
}

void cav_groups_run(cav_groups *g, cav_model *m, int train, cav_group_fill fill, cav_group_seen seen,
                    void *ctx, double out[6]) {
    int spread = g->blk && g->blk->size > 1, first = !spread || g->blk->rank == 0;
    memset(out, 0, 6 * sizeof *out);
    if (train && g->acc) memset(g->acc, 0, m->nparams * sizeof *g->acc);
    for (int k = 0; k < g->ngroups; k++) {
        fill(ctx, m, k);
        cav_model_forward(m);
        if (spread) split_losses(g, m);
        if (first) {
            out[0] += g->scale * m->out.loss;
            out[1] += g->scale * m->out.loss_mae_a;
            out[2] += g->scale * m->out.loss_mae_v;
            out[3] += g->scale * m->out.loss_c;
            out[4] += m->out.c_acc / g->groups_total;
            out[5] += g->scale * m->out.loss_mae;
        }
        if (seen) seen(ctx, m, k);
        if (train) {
            cav_model_backward(m);
            if (g->acc) {
                cav_model_read_buffer(m, CAV_BUF_GRADS, g->tmp);
                if (g->bf16_groups) /* the group's payload as a rank's, widened; added in fp32 */
                    for (size_t i = 0; i < m->nparams; i++)
                        g->acc[i] += cav_bf16_round((float)g->scale * g->tmp[i]);
                else
                    for (size_t i = 0; i < m->nparams; i++) g->acc[i] += (float)g->scale * g->tmp[i];
            }
        }
    }
    if (train && g->acc) cav_model_write_buffer(m, CAV_BUF_GRADS, g->acc);
}

/* ---- the run's files ------------------------------------------------------------------------------- */

typedef struct {
    int epoch;                        /* epoch to run next (1-indexed) */
    int64_t batch;                    /* batch within it */
    int64_t step;                     /* global steps done */
    double sums[CAV_TRAIN_MAX_STATS]; /* the epoch's statistics so far */
    int64_t n;                        /* and their count */
    double best;                      /* best evaluation score so far (+-inf: none) */
    int best_epoch;
    char **rows; /* result.csv rows of the epochs done */
    int nrows;
} position;

static void rows_free(position *p) {
    for (int i = 0; i < p->nrows; i++) free(p->rows[i]);
    free(p->rows);
    p->rows = NULL, p->nrows = 0;
}

static int rows_add(position *p, const char *row) {
    char **r = realloc(p->rows, (size_t)(p->nrows + 1) * sizeof *r);
    if (!r) return -1;
    p->rows = r;
    if (!(r[p->nrows] = strdup(row))) return -1;
    p->nrows++;
    return 0;
}

/* A file replaced whole (written aside, then renamed), so that a crash leaves the old or the new one. */
static int write_replace(const char *path, const char *text, cav_err *err) {
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", path, (int)getpid());
    if (cav_train_write_file(tmp, text, err)) return unlink(tmp), -1;
    if (rename(tmp, path)) return unlink(tmp), cav_fail(err, 3, "%s: rename: %s", path, strerror(errno));
    return 0;
}

static int write_results(const cav_train_opts *o, const position *p, cav_err *err) {
    size_t len = 1;
    for (int i = 0; i < p->nrows; i++) len += strlen(p->rows[i]) + 1;
    char *text = malloc(len), path[4200];
    if (!text) return cav_fail(err, 3, "out of memory");
    text[0] = 0;
    for (int i = 0, at = 0; i < p->nrows; i++) at += sprintf(text + at, "%s\n", p->rows[i]);
    snprintf(path, sizeof path, "%s/result.csv", o->out_dir);
    int rc = write_replace(path, text, err);
    free(text);
    return rc;
}

static double json_safe(double x) {
    return isfinite(x) ? x : x > 0 ? 1e308 : -1e308;
}

static int save_checkpoint(cav_trainer *t, const position *p, const char *cfgjson, const float *moments,
                           cav_err *err) {
    const cav_train_task *k = t->task;
    char *s = NULL, num[128];
    size_t len = 0, cap = 0;
    int bad = 0;
    snprintf(num, sizeof num, "{\"epoch\":%d,\"batch\":%lld,\"step\":%lld,\"adam_t\":%d,\"seed\":%llu",
             p->epoch, (long long)p->batch, (long long)p->step, t->m->adam_t, (unsigned long long)t->o->seed);
    bad |= cav_json_append_raw(&s, &len, &cap, num);
    snprintf(num, sizeof num, ",\"precision\":\"%s\",\"grad_dtype\":\"%s\"", precisions[t->o->precision].name,
             grad_dtypes[t->o->grad_dtype].name);
    bad |= cav_json_append_raw(&s, &len, &cap, num);
    for (int i = 0; i < k->nstats; i++) {
        snprintf(num, sizeof num, ",\"%s\":%.17g", k->state_keys[i], p->sums[i]);
        bad |= cav_json_append_raw(&s, &len, &cap, num);
    }
    snprintf(num, sizeof num, ",\"train_n\":%lld,\"%s\":%.17g,\"best_epoch\":%d,\"results\":[",
             (long long)p->n, k->best_key, json_safe(p->best), p->best_epoch);
    bad |= cav_json_append_raw(&s, &len, &cap, num);
    for (int i = 0; i < p->nrows; i++)
        bad |= cav_json_append_string(&s, &len, &cap, p->rows[i]) |
               cav_json_append_raw(&s, &len, &cap, i + 1 < p->nrows ? "," : "");
    bad |= cav_json_append_raw(&s, &len, &cap, "]}\n");
    if (bad) return free(s), cav_fail(err, 3, "out of memory");
    /* named by the epoch it ends, when it ends one */
    int name_epoch = p->batch == 0 && p->epoch > 1 ? p->epoch - 1 : p->epoch;
    int rc = cav_train_save_checkpoint(t->m, moments, t->o->out_dir, name_epoch, p->step, cfgjson, s,
                                       t->o->keep, err);
    free(s);
    return rc;
}

/* The rows of a checkpoint without a record of them (written before there was one): those of the
 * epochs it has done, from result.csv. */
static int rows_from_csv(const cav_train_opts *o, position *p, cav_err *err) {
    char path[4200], line[4096];
    snprintf(path, sizeof path, "%s/result.csv", o->out_dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    while (p->nrows < p->epoch - 1 && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (rows_add(p, line)) return fclose(f), cav_fail(err, 3, "out of memory");
    }
    fclose(f);
    return 0;
}

static int load_checkpoint(cav_trainer *t, const char *dir, position *p, cav_err *err) {
    const cav_train_task *k = t->task;
    cav_json *j = cav_train_load_checkpoint(t->m, dir, err);
    if (!j) return -1;
    p->epoch = (int)cav_json_get_number(j, "epoch", 1);
    p->batch = (int64_t)cav_json_get_number(j, "batch", 0);
    p->step = (int64_t)cav_json_get_number(j, "step", 0);
    t->m->adam_t = (int)cav_json_get_number(j, "adam_t", 0);
    for (int i = 0; i < k->nstats; i++) p->sums[i] = cav_json_get_number(j, k->state_keys[i], 0);
    p->n = (int64_t)cav_json_get_number(j, "train_n", 0);
    p->best = cav_json_get_number(j, k->best_key, k->best_higher ? -INFINITY : INFINITY);
    p->best_epoch = (int)cav_json_get_number(j, "best_epoch", 0);
    uint64_t seed = (uint64_t)cav_json_get_number(j, "seed", 0);
    /* a checkpoint from before --precision existed was written in fp32 */
    char prec[16];
    snprintf(prec, sizeof prec, "%s", cav_json_get_string(j, "precision", "fp32"));
    char gdt[16]; /* and before --grad-dtype, exchanged fp32 gradients */
    snprintf(gdt, sizeof gdt, "%s", cav_json_get_string(j, "grad_dtype", "fp32"));
    const cav_json *rows = cav_json_get(j, "results");
    int rc = 0;
    for (int i = 0; rows && rows->type == CAV_JSON_ARRAY && i < rows->n && !rc; i++)
        if (rows->items[i]->type != CAV_JSON_STRING || rows_add(p, rows->items[i]->string))
            rc = cav_fail(err, 2, "%s/state.json: results: not a list of rows", dir);
    if (!rc && !rows) rc = rows_from_csv(t->o, p, err);
    cav_json_free(j);
    if (rc) return -1;
    if (seed != t->o->seed)
        return cav_fail(err, 1, "%s: the run used --seed %llu; resume with the same seed", dir,
                        (unsigned long long)seed);
    if (strcmp(prec, precisions[t->o->precision].name))
        return cav_fail(err, 1, "%s: the run used --precision %s; resume with the same precision", dir, prec);
    if (strcmp(gdt, grad_dtypes[t->o->grad_dtype].name))
        return cav_fail(err, 1, "%s: the run used --grad-dtype %s; resume with the same --grad-dtype", dir,
                        gdt);
    return 0;
}

/* What a run writes into its directory; --force removes these before a new run starts. */
static const char *const run_files[] = {"checkpoints", "models", "result.csv", "metrics.jsonl", "args.json"};

static int remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) return errno == ENOTDIR ? unlink(path) : errno == ENOENT ? 0 : -1;
    struct dirent *e;
    char sub[4200];
    int rc = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            rc |= remove_tree(sub);
        }
    closedir(d);
    return rc | rmdir(path);
}

/* A new run goes into an empty (or absent) directory; one that holds anything is refused, so that a
 * forgotten --resume neither appends to an old result.csv nor overwrites its models. */
static int claim_dir(const cav_train_opts *o, cav_err *err) {
    DIR *d = opendir(o->out_dir);
    if (!d) return 0;
    struct dirent *e;
    int used = 0;
    while ((e = readdir(d))) used |= strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    if (!used) return 0;
    if (!o->force)
        return cav_fail(err, 1, "%s: not empty (a previous run?): --resume continues it, --force replaces it",
                        o->out_dir);
    char p[4200];
    for (size_t i = 0; i < sizeof run_files / sizeof *run_files; i++) {
        snprintf(p, sizeof p, "%s/%s", o->out_dir, run_files[i]);
        if (remove_tree(p) && errno != ENOENT)
            return cav_fail(err, 3, "%s: cannot remove: %s", p, strerror(errno));
    }
    return 0;
}

/* ---- the loop -------------------------------------------------------------------------------------- */

static int loader_only(cav_loader *tl, int threads, cav_err *err) {
    double t0 = cav_now();
    int64_t n = 0;
    cav_batch b;
    int got;
    if (cav_loader_begin(tl, 1, 0, err)) return -1;
    while ((got = cav_loader_next(tl, &b, err)) == 1) n += b.n;
    if (got < 0) return -1;
    double el = cav_now() - t0;
    printf("%s: loader: %lld samples in %.2f s: %.2f samples/s with %d threads\n", cav_tool(), (long long)n,
           el, el > 0 ? n / el : 0, threads);
    return 0;
}

/* ---- the gradient exchange -------------------------------------------------------------------- */

/* The step's exchange over ranks (dist.h), on the model's buffers where the backend keeps them: the
 * gradients all-reduced, or with ZeRO-1 reduce-scattered to each rank's shard of the flat buffer (Adam then
 * updates that shard alone, and the parameters are all-gathered after it). Buckets of bucket_mb MiB go from
 * the end of the buffer down, the order in which the backward finishes the parameters (decoder, joint
 * block, modality blocks, patch embeddings). */
typedef struct {
    const cav_dist *d;
    cav_model *m;
    int zero;
    size_t *part;           /* [world + 1]: the ranks' shards of the flat buffer (ZeRO) */
    size_t step;            /* elements per bucket */
    size_t nb;              /* buckets: k is [n - (k + 1) step, n - k step) clipped at 0 */
    size_t *left;           /* [nb]: elements of each bucket the backward has not finished in this step */
    unsigned char *started; /* [nb] */
    int early;              /* buckets started during this step's backward */
    int failed;             /* a start inside the backward failed (err) */
    cav_err err;
    uint16_t *round16; /* [nparams] one process with --grad-dtype bf16: the gradient's bf16 copy */
} exchange;

static int bucket_start(exchange *x, size_t k, cav_err *err) {
    size_t n = x->m->nparams, hi = n - k * x->step, lo = hi > x->step ? hi - x->step : 0;
    float *g = cav_model_buffer_ptr(x->m, CAV_BUF_GRADS);
    x->started[k] = 1;
    return x->zero ? cav_dist_scatter_start(x->d, g, lo, hi, x->part, err)
                   : cav_dist_sum_start(x->d, g, lo, hi, err);
}

/* cav_model_on_grads_final's hook: a bucket starts when the backward has finished all of it. Every rank
 * runs the same backward, so the buckets start in the same order everywhere, as the collectives want. */
static void grads_final(void *ctx, size_t lo, size_t hi, int at_end) {
    exchange *x = ctx;
    size_t n = x->m->nparams;
    if (hi <= lo) return;
    for (size_t k = (n - hi) / x->step; k <= (n - 1 - lo) / x->step && k < x->nb; k++) {
        size_t bhi = n - k * x->step, blo = bhi > x->step ? bhi - x->step : 0;
        size_t a = lo > blo ? lo : blo, b = hi < bhi ? hi : bhi;
        if (b <= a) continue;
        x->left[k] -= b - a;
        if (x->left[k] == 0 && !x->started[k] && !x->failed) {
            if (bucket_start(x, k, &x->err)) x->failed = 1;
            x->early += !at_end;
        }
    }
}

static int exchange_open(exchange *x, const cav_train_opts *o, const cav_train_task *task, const cav_dist *d,
                         cav_model *m, cav_err *err) {
    memset(x, 0, sizeof *x);
    x->d = d, x->m = m, x->zero = o->zero && d->world > 1;
    size_t n = m->nparams;
    x->step = (size_t)(o->bucket_mb * 1048576.0 / sizeof(float));
    if (x->step == 0 || x->step > n) x->step = n ? n : 1;
    x->nb = n ? (n + x->step - 1) / x->step : 0;
    x->part = malloc((size_t)(d->world + 1) * sizeof *x->part);
    x->left = malloc((x->nb + 1) * sizeof *x->left);
    x->started = malloc(x->nb + 1);
    if (!x->part || !x->left || !x->started) return cav_fail(err, 3, "out of memory");
    cav_dist_parts(d, n, x->part);
    if (x->zero && cav_model_shard_adam(m, x->part[d->rank], x->part[d->rank + 1]))
        return cav_fail(err, 3, "out of memory for the optimiser state");
    if (d->world > 1 && task->overlap && cav_model_on_grads_final(m, grads_final, x))
        return cav_fail(err, 3, "out of memory");
    if (d->world > 1) return cav_dist_set_grad_dtype(d, o->grad_dtype, m->be, n, err);
    if (o->grad_dtype == CAV_DIST_BF16 && !(x->round16 = m->be->alloc((n ? n : 1) * sizeof *x->round16)))
        return cav_fail(err, 3, "out of memory for the bf16 gradient");
    return 0;
}

static void exchange_close(exchange *x) {
    cav_err err = {0, ""};
    if (x->m) cav_model_on_grads_final(x->m, NULL, NULL);
    if (x->d) cav_dist_set_grad_dtype(x->d, CAV_DIST_FP32, x->m->be, 0, &err); /* the payload freed */
    if (x->round16) x->m->be->free(x->round16);
    free(x->part), free(x->left), free(x->started);
}

/* before a step's backward: no bucket finished or started */
static void exchange_begin(exchange *x) {
    size_t n = x->m->nparams;
    for (size_t k = 0; k < x->nb; k++) {
        size_t hi = n - k * x->step;
        x->left[k] = hi > x->step ? x->step : hi;
        x->started[k] = 0;
    }
    x->early = 0, x->failed = 0;
}

/* after the step: the buckets not started yet (all of them without the hook), then all waited for */
static int exchange_grads(exchange *x, cav_err *err) {
    if (x->round16) { /* one process, one rank's bf16 exchange: the gradient (its groups' sum) rounded */
        float *g = cav_model_buffer_ptr(x->m, CAV_BUF_GRADS);
        x->m->be->cast_bf16(x->round16, g, x->m->nparams);
        x->m->be->widen_bf16(g, x->round16, x->m->nparams);
    }
    if (x->d->world <= 1) return 0;
    for (size_t k = 0; k < x->nb && !x->failed; k++)
        if (!x->started[k] && bucket_start(x, k, &x->err)) x->failed = 1;
    int rc = cav_dist_wait(x->d, err);
    if (x->failed) rc = cav_fail(err, x->err.code ? x->err.code : 3, "%s", x->err.msg);
    if (rc) cav_dist_abort(x->d, err); /* the other ranks wait in this step's exchange */
    return rc;
}

/* After Adam on the shards: every rank's updated shard to all. */
static int exchange_params(exchange *x, cav_err *err) {
    int rc =
        x->zero ? cav_dist_gather_parts(x->d, cav_model_buffer_ptr(x->m, CAV_BUF_PARAMS), x->part, err) : 0;
    if (rc) cav_dist_abort(x->d, err);
    return rc;
}

/* A checkpoint, written by rank 0; with ZeRO every rank sends it its shard of the moments first (so every
 * rank calls this). */
static int checkpoint(cav_trainer *t, const exchange *x, const position *p, const char *cfgjson,
                      cav_err *err) {
    const cav_dist *d = t->d;
    int rc = 0;
    if (!x->zero) {
        rc = d->rank == 0 ? save_checkpoint(t, p, cfgjson, NULL, err) : 0;
    } else {
        size_t n = t->m->nparams;
        float *mv = malloc(2 * n * sizeof *mv);
        if (cav_dist_max_int(d, !mv))
            return free(mv), cav_fail(err, 3, "out of memory for the gathered Adam moments");
        cav_model_read_buffer(t->m, CAV_BUF_ADAM_M, mv);
        cav_model_read_buffer(t->m, CAV_BUF_ADAM_V, mv + n);
        cav_dist_gather_parts_f32(d, mv, x->part);
        cav_dist_gather_parts_f32(d, mv + n, x->part);
        rc = d->rank == 0 ? save_checkpoint(t, p, cfgjson, mv, err) : 0;
        free(mv);
    }
    return cav_dist_rank0_wrote(d, rc, "the checkpoint", err);
}

/* Rank 0's files at an epoch's end: its row of result.csv, its line of metrics.jsonl, its model file, and
 * the best model when its score is the best so far. 0, or -1 with err. */
static int epoch_files(cav_trainer *t, position *p, const double *mean, const double *res, double lr,
                       FILE *metrics, const char *cfgjson, cav_err *err) {
    const cav_train_opts *o = t->o;
    const cav_train_task *task = t->task;
    char row[1024], msg[1024], extra[1024], path[4200];
    task->epoch_report(t, mean, res, lr, row, sizeof row, msg, sizeof msg);
    if (rows_add(p, row)) return cav_fail(err, 3, "out of memory");
    if (write_results(o, p, err)) return -1;
    if (task->epoch_metrics) {
        task->epoch_metrics(t, mean, res, lr, extra, sizeof extra);
        fprintf(metrics, "{\"epoch\":%d,\"step\":%lld%s}\n", p->epoch, (long long)p->step, extra);
        if (fflush(metrics)) return cav_fail(err, 3, "%s/metrics.jsonl: %s", o->out_dir, strerror(errno));
    }
    cav_msg("epoch %d: %s", p->epoch, msg);
    snprintf(path, sizeof path, "%s/models", o->out_dir);
    if (cav_mkdirs(path, err)) return -1;
    snprintf(path, sizeof path, "%s/models/audio_model.%d.safetensors", o->out_dir, p->epoch);
    if (cav_train_save_model(t->m, path, cfgjson, err)) return -1;
    double score = res ? task->score(t, res) : NAN;
    if (isfinite(score) && (task->best_higher ? score > p->best : score < p->best)) {
        p->best = score;
        p->best_epoch = p->epoch;
        snprintf(path, sizeof path, "%s/models/best_audio_model.safetensors", o->out_dir);
        if (cav_train_save_model(t->m, path, cfgjson, err)) return -1;
    }
    return 0;
}

static int stop_nonfinite(cav_trainer *t, const position *p, double loss, cav_err *err) {
    char last[4096] = "none";
    cav_ckpt_latest(t->o->out_dir, last, sizeof last, NULL);
    return cav_fail(err, 3, "epoch %d step %lld: non-finite %s; stopping (last good checkpoint: %s)",
                    p->epoch, (long long)p->step + 1, isfinite(loss) ? "gradient" : "loss", last);
}

int cav_train_run(const cav_train_opts *o, const cav_config *cfg, int rows, const cav_train_task *task,
                  const cav_dist *d, cav_err *err) {
    int rc = 3;
    cav_trainer t = {o, task, d, cfg, NULL, rows};
    cav_loader *tl = NULL, *ev = NULL;
    FILE *metrics = NULL;
    position pos = {1, 0, 0, {0}, 0, task->best_higher ? -INFINITY : INFINITY, 0, NULL, 0};
    char cfgjson[2048], path[4200], ck[4096];
    cav_err berr = {0, ""};
    exchange x = {0};
    char device[64];
    cav_dist_device(o->device, d->world, d->local_rank, device, sizeof device);
    cav_backend *be = cav_backend_open(device, &berr);
    /* every rank stops when one has no device: the others would wait for it in the transport's set-up */
    if (cav_dist_max_int(d, !be)) {
        if (be) return cav_fail(err, 1, "--device %s: another rank could not open its device", device), 1;
        return cav_fail(err, berr.code ? berr.code : 1, "%s", berr.msg), err->code; /* names --device */
    }
    if (cav_dist_max_int(d, cav_dist_bind(d, be->name, err) != 0)) {
        if (!err->msg[0])
            cav_fail(err, 3, "another rank could not set up the %s transport", cav_dist_transport(d));
        return err->code ? err->code : 3;
    }
    if (o->batch % d->world)
        return cav_fail(err, 1, "--batch-size %d cannot be split over %d processes", o->batch, d->world), 1;
    if (cav_config_check(cfg, err)) return 1;
    if (!o->resume && !o->loader_only) { /* rank 0 looks at the directory; every rank stops if it refuses */
        int refused = d->rank == 0 && claim_dir(o, err);
        if (cav_dist_max_int(d, refused)) {
            if (!refused) cav_fail(err, 1, "%s: refused by rank 0", o->out_dir);
            return err->code;
        }
    }
    cav_loader_opts lo = o->data;
    lo.train = 1;
    lo.batch = o->batch;
    lo.drop_last = 1;
    lo.rank = d->rank;
    lo.world = d->world;
    lo.seed = o->seed;
    lo.target_length = cfg->audio_length;
    lo.mel_bins = cfg->mel_bins;
    lo.img_size = cfg->img_size;
    lo.need_audio = task->need_audio;
    lo.need_video = task->need_video;
    lo.label_dim = task->label_dim;
    if (!(tl = cav_loader_open(o->train.v, o->train.n, &lo, err))) return err->code;
    if (o->loader_only) { /* the data pipeline's own rate, to compare with the training step's */
        rc = loader_only(tl, lo.threads, err) ? (err->code ? err->code : 2) : 0;
        goto done;
    }
    if (o->eval.n) {
        cav_loader_opts le = lo;
        le.train = 0;
        le.noise = le.roll = 0;
        le.freqm = le.timem = 0;
        le.frame = o->data.frame; /* -1: frame 5, as the reference's per-epoch validation */
        if (!(ev = cav_loader_open(o->eval.v, o->eval.n, &le, err))) {
            rc = err->code;
            goto done;
        }
    }
    if (!(t.m = cav_model_create_on(be, cfg, rows, err))) {
        rc = err->code ? err->code : 3;
        goto done;
    }
    cav_model *m = t.m;
    if (exchange_open(&x, o, task, d, m, err)) goto done; /* before the moments: ZeRO allocates a shard's */
    if (cav_model_alloc_adam(m)) {
        cav_fail(err, 3, "out of memory for the optimiser state");
        goto done;
    }
    if (cav_model_set_precision(m, o->precision)) {
        cav_fail(err, 3, "out of memory for the bf16 weights and operands");
        goto done;
    }
    if (task->prepare && task->prepare(&t, err)) goto fail;
    if (cav_config_json(cfg, cfgjson, sizeof cfgjson) < 0) {
        cav_fail(err, 3, "config too long");
        goto done;
    }
    if (cav_mkdirs(o->out_dir, err)) goto done;
    int wrote = 0; /* rank 0's writes: 0 or -1 with err */
    int have = o->resume ? cav_ckpt_latest(o->out_dir, ck, sizeof ck, err) : 0;
    if (have < 0) goto done;
    if (have) {
        if (load_checkpoint(&t, ck, &pos, err)) goto fail;
        if (d->rank == 0)
            cav_msg("resuming from %s: epoch %d, batch %lld, step %lld", ck, pos.epoch, (long long)pos.batch,
                    (long long)pos.step);
    } else {
        cav_model_init(m, o->seed);
        if (task->init && task->init(&t, err)) goto fail;
        if (d->rank == 0 && o->args_json) {
            snprintf(path, sizeof path, "%s/args.json", o->out_dir);
            wrote = cav_train_write_file(path, o->args_json, err);
        }
        if (cav_dist_rank0_wrote(d, wrote, "args.json", err)) goto fail;
    }
    if (d->rank == 0) {
        char more[512] = "";
        cav_model_describe(m, stderr);
        cav_msg("config %s", cfgjson);
        if (task->describe) task->describe(&t, more, sizeof more);
        cav_msg("%lld training rows, %lld steps per epoch, batch %d, %d process%s%s",
                (long long)cav_loader_rows(tl), (long long)cav_loader_batches(tl), o->batch, d->world,
                d->world > 1 ? "es" : "", more);
        if (d->world > 1)
            cav_msg("data parallel: %d ranks over %s, gradient buckets of %g MiB in %s%s", d->world,
                    cav_dist_transport(d), o->bucket_mb, grad_dtypes[o->grad_dtype].name,
                    x.zero ? ", ZeRO-1 (each rank's Adam on its shard of the parameters)" : "");
        wrote = write_results(o, &pos, err); /* the checkpoint's rows only: none of a lost epoch */
        snprintf(path, sizeof path, "%s/metrics.jsonl", o->out_dir);
        if (!wrote && !(metrics = fopen(path, "a")))
            wrote = cav_fail(err, 3, "%s: %s", path, strerror(errno));
    }
    if (cav_dist_rank0_wrote(d, wrote, "result.csv or metrics.jsonl", err)) goto fail;
    int ns = task->nstats;
    int64_t steps_done_here = 0;
    for (; pos.epoch <= o->epochs; pos.epoch++, pos.batch = 0) {
        double lr = cav_schedule_lr(&o->sched, pos.epoch, pos.step);
        if (cav_loader_begin(tl, pos.epoch, pos.batch, err)) goto fail_data;
        cav_progress *pr =
            d->rank == 0 ? cav_progress_start("steps", cav_loader_batches(tl) - pos.batch) : NULL;
        double win[CAV_TRAIN_MAX_STATS] = {0}, wait = 0, compute = 0, t_win = cav_now();
        int64_t win_n = 0;
        cav_batch b;
        int got;
        while ((got = cav_loader_next(tl, &b, err)) == 1) {
            double t0 = cav_now(), stats[CAV_TRAIN_MAX_STATS] = {0};
            lr = cav_schedule_lr(&o->sched, pos.epoch, pos.step);
            exchange_begin(&x);
            task->step(&t, &b, pos.epoch, pos.step, stats);
            if (exchange_grads(&x, err)) goto fail;
            if (d->rank == 0 && d->world > 1 && steps_done_here == 0)
                cav_msg("gradient exchange: %zu bucket%s, %d started during the backward", x.nb,
                        x.nb > 1 ? "s" : "", x.early);
            cav_dist_sum_f64(d, stats, (size_t)ns);
            int bad = !isfinite(stats[0]) || !cav_model_grads_finite(m);
            if (cav_dist_max_int(d, bad)) {
                stop_nonfinite(&t, &pos, stats[0], err);
                cav_progress_end(pr);
                goto done;
            }
            /* parameters the loss never reaches are skipped, as PyTorch's Adam skips grad None */
            cav_model_adam_step(m, lr, task->head_lr, o->beta1, o->beta2, o->adam_eps, o->weight_decay);
            if (exchange_params(&x, err)) goto fail;
            pos.step++, pos.batch++, steps_done_here++;
            for (int k = 0; k < ns; k++) pos.sums[k] += stats[k], win[k] += stats[k];
            pos.n++, win_n++;
            wait += b.wait_s;
            compute += cav_now() - t0;
            cav_progress_add(pr, 1);
            if (metrics && o->log_every > 0 && pos.step % o->log_every == 0) {
                double el = cav_now() - t_win;
                fprintf(metrics, "{\"epoch\":%d,\"step\":%lld", pos.epoch, (long long)pos.step);
                char num[40];
                for (int k = 0; k < ns; k++)
                    fprintf(metrics, ",\"%s\":%s", task->stat_keys[k],
                            cav_json_num(num, sizeof num, win[k] / win_n, 9));
                fprintf(metrics, ",\"lr\":%.9g", lr);
                if (task->head_lr != 1) fprintf(metrics, ",\"head_lr\":%.9g", lr * task->head_lr);
                fprintf(metrics, ",\"samples_per_s\":%.4g,\"data_wait_s\":%.4g,\"compute_s\":%.4g}\n",
                        el > 0 ? (double)win_n * o->batch / el : 0, wait, compute);
                fflush(metrics);
                memset(win, 0, sizeof win);
                win_n = 0, wait = compute = 0, t_win = cav_now();
            }
            int stop = o->max_steps > 0 && steps_done_here >= o->max_steps;
            int last_of_epoch = pos.batch == cav_loader_batches(tl);
            if (!last_of_epoch && ((o->save_every > 0 && pos.step % o->save_every == 0) || stop))
                if (checkpoint(&t, &x, &pos, cfgjson, err)) goto fail;
            if (stop && !last_of_epoch) {
                cav_progress_end(pr);
                if (d->rank == 0)
                    cav_msg("stopped after %lld steps (--max-steps)", (long long)steps_done_here);
                rc = 0;
                goto done;
            }
        }
        cav_progress_end(pr);
        if (got < 0) goto fail_data;
        double res[CAV_TRAIN_MAX_STATS] = {0}, mean[CAV_TRAIN_MAX_STATS] = {0};
        if (ev && task->evaluate(&t, ev, pos.epoch, res, err)) goto fail_data;
        if (d->rank == 0) {
            for (int k = 0; k < ns; k++) mean[k] = pos.n ? pos.sums[k] / pos.n : 0;
            wrote = epoch_files(&t, &pos, mean, ev ? res : NULL, lr, metrics, cfgjson, err);
        }
        if (cav_dist_rank0_wrote(d, wrote, "the epoch's results", err)) goto fail;
        position next = pos;
        next.epoch = pos.epoch + 1;
        next.batch = 0;
        memset(next.sums, 0, sizeof next.sums);
        next.n = 0;
        if (checkpoint(&t, &x, &next, cfgjson, err)) goto fail;
        memset(pos.sums, 0, sizeof pos.sums);
        pos.n = 0;
        if (o->max_steps > 0 && steps_done_here >= o->max_steps && pos.epoch < o->epochs) {
            if (d->rank == 0) cav_msg("stopped after %lld steps (--max-steps)", (long long)steps_done_here);
            rc = 0;
            goto done;
        }
    }
    rc = 0;
    goto done;
fail:
    rc = err->code ? err->code : 3;
    goto done;
fail_data:
    rc = err->code ? err->code : 2;
done:
    if (metrics) fclose(metrics);
    rows_free(&pos);
    exchange_close(&x);
    cav_model_free(t.m);
    cav_loader_close(tl);
    cav_loader_close(ev);
    if (rc && !err->msg[0]) cav_fail(err, rc, "failed");
    return rc;
}
