/* cav-pretrain: self-supervised CAV-MAE pretraining (and the paper's baselines) on shards; also checks the
 * C model against PyTorch debug states. Options are parsed here; the loop is lib/train/pretrain.c. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "cli.h"
#include "debugstate.h"
#include "dist.h"
#include "json.h"
#include "pretrain.h"
#include "trainio.h"

static const char usage[] =
    "Usage: cav-pretrain [OPTION]... --out DIR TRAIN.h5...\n"
    "       cav-pretrain --check-debug-state FILE...\n"
    "Pretrain CAV-MAE (or one of the paper's baselines) on shards holding fbank (or the 16 kHz waveform\n"
    "`wave`, whose fbank the loader then computes as fbank(1) does) and frames.\n"
    "\n"
    "Data and run:\n"
    "  -o, --out DIR              run directory: result.csv, metrics.jsonl, models/, checkpoints/\n"
    "      --train FILE           a training shard (repeatable; also positional arguments)\n"
    "      --eval FILE            an evaluation shard (repeatable)\n"
    "      --resume               continue from the newest complete checkpoint in --out\n"
    "      --init FILE            start from parameters in FILE (.safetensors or .pth, by name)\n"
    "      --init-from-mae FILE   start from an ImageNet MAE ViT-B .pth, mapped as the paper (SPEC 3.5)\n"
    "      --seed N               seed of every random draw (default 1)\n"
    "Model:\n"
    "      --variant NAME         cav-mae (default), av-mae, vanilla-av-mae, cav, audio-mae, visual-mae\n"
    "      --model NAME           base (default) or tiny (192-dim, 3 heads, 4+1 layers, decoder 128x2)\n"
    "      --set KEY=VALUE        any model knob by the reference's name (embed_dim, depth, num_heads,\n"
    "                             modality_specific_depth, decoder_embed_dim, audio_length, img_size, ...)\n"
    "      --contrast-weight W    lambda_c (default 0.01)\n"
    "      --mae-weight W         weight of the reconstruction loss (default 1)\n"
    "      --mask-ratio-a R       audio mask ratio (default 0.75)\n"
    "      --mask-ratio-v R       visual mask ratio (default 0.75)\n"
    "      --mask-mode MODE       audio masking: unstructured (default), time, freq, tf\n"
    "      --norm-pix-loss / --no-norm-pix-loss   per-patch normalised targets (default on)\n"
    "      --bidirect-contrast    symmetric contrastive loss\n"
    "Optimisation:\n"
    "  -b, --batch-size N         global batch (default 48)\n"
    "  -e, --epochs N             (default 25)\n"
    "      --lr X                 (default 5e-5)\n"
    "      --lr-decay-start N --lr-decay-step N --lr-decay X   per-epoch halving (default 10, 5, 0.5)\n"
    "      --warmup-steps N       linear warmup (default 0: the reference has none)\n"
    "      --weight-decay X       coupled L2 (default 5e-7); --beta1 X (0.95); --beta2 X (0.999)\n"
    "      --contrast-groups G    contrastive groups per batch (default 4: the reference's 4 GPUs); a\n"
    "                             multiple or a divisor of the MPI processes (fewer groups than processes:\n"
    "                             each group spans several, its embeddings are gathered across them)\n"
    "      --group-reduce sum|mean  how group losses combine (default sum, as the reference)\n"
    "Data transforms (defaults are the reference's):\n"
    "      --no-noise --no-roll   disable the audio noise / time roll\n"
    "      --freqm N --timem N    SpecAugment widths (default 0)\n"
    "      --frame N              use this frame instead of a random one\n"
    "      --norm-mean X --norm-std X  fbank normalisation (default -5.081, 4.4849)\n"
    "      --loader-threads N     decoding threads (default 2); --prefetch N batches ahead (default 2)\n"
    "Checkpoints and logs:\n"
    "      --save-every N         checkpoint every N steps as well as every epoch\n"
    "      --keep N               complete checkpoints kept (default 2; 0 keeps all)\n"
    "      --log-every N          steps per metrics.jsonl line (default 100)\n"
    "      --max-steps N          stop after N steps of this invocation (with a checkpoint)\n"
    "      --loader-only          run one epoch of the data loader alone and print its samples/s\n"
    "Verification:\n"
    "      --check-debug-state FILE  compare the C model with a PyTorch debug state; exit 0 within\n"
    "                             tolerance (losses 1e-5, gradients 1e-4 relative), 2 otherwise\n"
    "      --help, --version\n"
    "\n"
    "Exit status: 0 ok, 1 usage, 2 bad input or outside tolerance, 3 internal or resource failure\n"
    "(including a non-finite loss).\n";

enum {
    O_TRAIN = 0x100, O_EVAL, O_RESUME, O_INIT, O_INIT_MAE, O_SEED, O_VARIANT, O_MODEL, O_SET, O_CW, O_MW, O_MRA,
    O_MRV, O_MM, O_NP, O_NNP, O_BIDI, O_LR, O_LDS, O_LDST, O_LD, O_WARM, O_WD, O_B1, O_B2, O_GROUPS, O_GRED,
    O_NONOISE, O_NOROLL, O_FREQM, O_TIMEM, O_FRAME, O_NMEAN, O_NSTD, O_LTHREADS, O_PREFETCH, O_SAVE, O_KEEP,
    O_LOG, O_MAXSTEPS, O_CHECK, O_LOADER_ONLY,
};

/* Model knobs are applied after --model and --variant, whatever their order on the command line, so that
 * "--variant cav-mae --contrast-weight 0.1" and "--contrast-weight 0.1 --variant cav-mae" mean the same. */
typedef struct {
    const char *key;
    char *val;
} knob;

int main(int argc, char **argv) {
    cav_set_tool("cav-pretrain");
    cav_blas_fit_cpu("cav-pretrain", argv);
    cav_dist d;
    cav_dist_init(&d, &argc, &argv);
    static const struct option opts[] = {
        {"out", 1, 0, 'o'}, {"train", 1, 0, O_TRAIN}, {"eval", 1, 0, O_EVAL}, {"resume", 0, 0, O_RESUME},
        {"init", 1, 0, O_INIT}, {"init-from-mae", 1, 0, O_INIT_MAE}, {"seed", 1, 0, O_SEED},
        {"variant", 1, 0, O_VARIANT}, {"model", 1, 0, O_MODEL}, {"set", 1, 0, O_SET},
        {"contrast-weight", 1, 0, O_CW}, {"mae-weight", 1, 0, O_MW}, {"mask-ratio-a", 1, 0, O_MRA},
        {"mask-ratio-v", 1, 0, O_MRV}, {"mask-mode", 1, 0, O_MM}, {"norm-pix-loss", 0, 0, O_NP},
        {"no-norm-pix-loss", 0, 0, O_NNP}, {"bidirect-contrast", 0, 0, O_BIDI}, {"batch-size", 1, 0, 'b'},
        {"epochs", 1, 0, 'e'}, {"lr", 1, 0, O_LR}, {"lr-decay-start", 1, 0, O_LDS}, {"lr-decay-step", 1, 0, O_LDST},
        {"lr-decay", 1, 0, O_LD}, {"warmup-steps", 1, 0, O_WARM}, {"weight-decay", 1, 0, O_WD},
        {"beta1", 1, 0, O_B1}, {"beta2", 1, 0, O_B2}, {"contrast-groups", 1, 0, O_GROUPS},
        {"group-reduce", 1, 0, O_GRED}, {"no-noise", 0, 0, O_NONOISE}, {"no-roll", 0, 0, O_NOROLL},
        {"freqm", 1, 0, O_FREQM}, {"timem", 1, 0, O_TIMEM}, {"frame", 1, 0, O_FRAME}, {"norm-mean", 1, 0, O_NMEAN},
        {"norm-std", 1, 0, O_NSTD}, {"loader-threads", 1, 0, O_LTHREADS}, {"prefetch", 1, 0, O_PREFETCH},
        {"save-every", 1, 0, O_SAVE}, {"keep", 1, 0, O_KEEP}, {"log-every", 1, 0, O_LOG},
        {"max-steps", 1, 0, O_MAXSTEPS}, {"check-debug-state", 1, 0, O_CHECK}, {"loader-only", 0, 0, O_LOADER_ONLY}, CAV_STD_OPTIONS, {0, 0, 0, 0}};
    cav_pretrain_opts o;
    cav_pretrain_opts_default(&o);
    char **train = calloc((size_t)argc + 1, sizeof *train), **eval = calloc((size_t)argc + 1, sizeof *eval);
    char **checks = calloc((size_t)argc + 1, sizeof *checks);
    int ntrain = 0, neval = 0, nchecks = 0, c;
    const char *variant = NULL, *model = "base";
    knob *knobs = calloc((size_t)argc + 1, sizeof *knobs);
    int nknobs = 0;
    while ((c = getopt_long(argc, argv, "o:b:e:", opts, NULL)) != -1) {
        switch (c) {
        case 'o': o.out_dir = optarg; break;
        case O_TRAIN: train[ntrain++] = optarg; break;
        case O_EVAL: eval[neval++] = optarg; break;
        case O_RESUME: o.resume = 1; break;
        case O_INIT: o.init = optarg; break;
        case O_INIT_MAE: o.init_mae = optarg; break;
        case O_SEED: o.seed = (uint64_t)cav_parse_int("seed", optarg, 0, INT64_MAX); break;
        case O_VARIANT: variant = optarg; break;
        case O_MODEL:
            if (strcmp(optarg, "tiny") && strcmp(optarg, "base")) cav_usage_error("--model: base or tiny, not '%s'", optarg);
            model = optarg;
            break;
        case O_SET: {
            char *eq = strchr(optarg, '=');
            if (!eq) cav_usage_error("--set wants KEY=VALUE, not '%s'", optarg);
            *eq = 0;
            knobs[nknobs++] = (knob){optarg, eq + 1};
            break;
        }
        case O_CW:
            cav_parse_double("contrast-weight", optarg, 0, 1e6);
            knobs[nknobs++] = (knob){"contrast_loss_weight", optarg};
            break;
        case O_MW:
            cav_parse_double("mae-weight", optarg, 0, 1e6);
            knobs[nknobs++] = (knob){"mae_loss_weight", optarg};
            break;
        case O_MRA:
            cav_parse_double("mask-ratio-a", optarg, 0, 0.99);
            knobs[nknobs++] = (knob){"mask_ratio_a", optarg};
            break;
        case O_MRV:
            cav_parse_double("mask-ratio-v", optarg, 0, 0.99);
            knobs[nknobs++] = (knob){"mask_ratio_v", optarg};
            break;
        case O_MM: knobs[nknobs++] = (knob){"mask_mode", optarg}; break;
        case O_NP: knobs[nknobs++] = (knob){"norm_pix_loss", "true"}; break;
        case O_NNP: knobs[nknobs++] = (knob){"norm_pix_loss", "false"}; break;
        case O_BIDI: knobs[nknobs++] = (knob){"bidirect_contrast", "true"}; break;
        case 'b': o.batch = (int)cav_parse_int("batch-size", optarg, 1, 1 << 20); break;
        case 'e': o.epochs = (int)cav_parse_int("epochs", optarg, 1, 100000); break;
        case O_LR: o.sched.lr = cav_parse_double("lr", optarg, 0, 10); break;
        case O_LDS: o.sched.decay_start = (int)cav_parse_int("lr-decay-start", optarg, 0, 1000); break;
        case O_LDST: o.sched.decay_step = (int)cav_parse_int("lr-decay-step", optarg, 0, 1000); break;
        case O_LD: o.sched.decay = cav_parse_double("lr-decay", optarg, 0, 1); break;
        case O_WARM: o.sched.warmup_steps = cav_parse_int("warmup-steps", optarg, 0, INT64_MAX); break;
        case O_WD: o.weight_decay = cav_parse_double("weight-decay", optarg, 0, 1); break;
        case O_B1: o.beta1 = cav_parse_double("beta1", optarg, 0, 0.999999); break;
        case O_B2: o.beta2 = cav_parse_double("beta2", optarg, 0, 0.999999999); break;
        case O_GROUPS: o.groups = (int)cav_parse_int("contrast-groups", optarg, 1, 1 << 20); break;
        case O_GRED:
            if (strcmp(optarg, "sum") && strcmp(optarg, "mean")) cav_usage_error("--group-reduce: sum or mean");
            o.group_mean = !strcmp(optarg, "mean");
            break;
        case O_NONOISE: o.data.noise = 0; break;
        case O_NOROLL: o.data.roll = 0; break;
        case O_FREQM: o.data.freqm = (int)cav_parse_int("freqm", optarg, 0, 100000); break;
        case O_TIMEM: o.data.timem = (int)cav_parse_int("timem", optarg, 0, 100000); break;
        case O_FRAME: o.data.frame = (int)cav_parse_int("frame", optarg, 0, 1000); break;
        case O_NMEAN: o.data.norm_mean = (float)cav_parse_double("norm-mean", optarg, -1e6, 1e6); break;
        case O_NSTD: o.data.norm_std = (float)cav_parse_double("norm-std", optarg, 0, 1e6); break;
        case O_LTHREADS: o.data.threads = (int)cav_parse_int("loader-threads", optarg, 1, 256); break;
        case O_PREFETCH: o.data.prefetch = (int)cav_parse_int("prefetch", optarg, 1, 64); break;
        case O_SAVE: o.save_every = cav_parse_int("save-every", optarg, 0, INT64_MAX); break;
        case O_KEEP: o.keep = (int)cav_parse_int("keep", optarg, 0, 1 << 20); break;
        case O_LOG: o.log_every = cav_parse_int("log-every", optarg, 0, INT64_MAX); break;
        case O_MAXSTEPS: o.max_steps = cav_parse_int("max-steps", optarg, 0, INT64_MAX); break;
        case O_CHECK: checks[nchecks++] = optarg; break;
        case O_LOADER_ONLY: o.loader_only = 1; break;
        default: cav_std_option(c, usage); cav_usage_error("unexpected option");
        }
    }
    if (nchecks) {
        int worst = 0;
        for (int i = 0; i < nchecks; i++) {
            cav_debug_report rep;
            cav_err err = {0, ""};
            int rc = cav_debug_state_check(checks[i], stdout, &rep, &err);
            if (rc) cav_msg("%s", err.msg);
            if (rc > worst) worst = rc;
        }
        free(train), free(eval), free(checks), free(knobs);
        cav_dist_finalize(&d);
        return worst;
    }
    if (cav_config_size(&o.cfg, model)) cav_usage_error("--model: base or tiny, not '%s'", model);
    if (variant && cav_config_variant(&o.cfg, variant))
        cav_usage_error("--variant: cav-mae, av-mae, vanilla-av-mae, cav, audio-mae or visual-mae, not '%s'", variant);
    for (int i = 0; i < nknobs; i++) cav_train_set_knob(&o.cfg, knobs[i].key, knobs[i].val);
    for (int i = optind; i < argc; i++) train[ntrain++] = argv[i];
    if (!o.out_dir && !o.loader_only) cav_usage_error("--out DIR is required");
    if (!ntrain) cav_usage_error("no training shards");
    o.train = train, o.ntrain = ntrain, o.eval = eval, o.neval = neval;
    /* args.json: the command line, as the reference keeps its arguments */
    char *args = NULL;
    size_t len = 0, cap = 0;
    int bad = cav_json_append_raw(&args, &len, &cap, "[");
    for (int i = 0; i < argc; i++)
        bad |= cav_json_append_string(&args, &len, &cap, argv[i]) | cav_json_append_raw(&args, &len, &cap, i + 1 < argc ? "," : "]\n");
    if (bad) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    o.args_json = args;
    cav_err err = {0, ""};
    int rc = cav_pretrain_run(&o, &d, &err);
    if (rc) cav_msg("%s", err.msg);
    free(args), free(train), free(eval), free(checks), free(knobs);
    cav_dist_finalize(&d);
    return rc;
}
