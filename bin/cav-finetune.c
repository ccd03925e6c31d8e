/* cav-finetune: supervised fine-tuning of CAV-MAE (CAVMAEFT) on labelled shards from a pretrained
 * checkpoint. Options are parsed here; the loop is lib/train/finetune.c. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "cli.h"
#include "dist.h"
#include "finetune.h"
#include "trainio.h"
#include "json.h"

static const char usage[] =
    "Usage: cav-finetune [OPTION]... --out DIR --init CKPT TRAIN.h5...\n"
    "Fine-tune CAV-MAE for classification on shards holding fbank (or `wave`), frames and `labels`\n"
    "(f32 [K], shard-pack -j). Defaults are the reference's AS-20K recipe, without mixup.\n"
    "\n"
    "Data and run:\n"
    "  -o, --out DIR              run directory: result.csv, metrics.jsonl, models/, checkpoints/\n"
    "      --train FILE           a training shard (repeatable; also positional arguments)\n"
    "      --eval FILE            an evaluation shard (repeatable), scored every epoch on frame 5\n"
    "      --init FILE            pretrained parameters (.safetensors from cav-pretrain or a reference .pth):\n"
    "                             every encoder parameter by name, the head new\n"
    "      --resume               continue from the newest complete checkpoint in --out\n"
    "      --seed N               seed of every random draw (default 1)\n"
    "Model:\n"
    "      --label-dim K          classes (default 527)\n"
    "      --mode MODE            multimodal (default), audioonly, videoonly, missingaudioonly,\n"
    "                             missingvideoonly\n"
    "      --loss bce|ce          BCEWithLogits (default) or cross-entropy on soft targets\n"
    "      --model NAME           base (default) or tiny (192-dim, 3 heads, 4+1 layers)\n"
    "      --set KEY=VALUE        any model knob by the reference's name (embed_dim, depth, num_heads, ...)\n"
    "Optimisation:\n"
    "  -b, --batch-size N         global batch (default 36)\n"
    "  -e, --epochs N             (default 15)\n"
    "      --lr X                 base learning rate (default 5e-5)\n"
    "      --head-lr X            the head's lr multiplier (default 100)\n"
    "      --lr-decay-start N --lr-decay-step N --lr-decay X   per-epoch decay (default 5, 1, 0.5)\n"
    "      --warmup-steps N       linear warmup (default 0: the reference has none)\n"
    "      --weight-decay X       coupled L2 (default 5e-7); --beta1 X (0.95); --beta2 X (0.999)\n"
    "      --label-smooth E       training label smoothing (default 0.1)\n"
    "      --mixup P              mixup probability; only 0 (the default here) is implemented yet\n"
    "      --metric map|acc       which metric picks best_audio_model (default map; acc with --loss ce)\n"
    "Data transforms (defaults are the reference's fine-tuning ones):\n"
    "      --no-noise --no-roll   disable the audio noise / time roll\n"
    "      --freqm N --timem N    SpecAugment widths (default 48, 192)\n"
    "      --frame N              use frame N in training and evaluation (default: random, and 5)\n"
    "      --norm-mean X --norm-std X  fbank normalisation (default -5.081, 4.4849)\n"
    "      --loader-threads N     decoding threads (default 2); --prefetch N batches ahead (default 2)\n"
    "Checkpoints and logs:\n"
    "      --save-every N         checkpoint every N steps as well as every epoch\n"
    "      --keep N               complete checkpoints kept (default 2; 0 keeps all)\n"
    "      --log-every N          steps per metrics.jsonl line (default 100)\n"
    "      --max-steps N          stop after N steps of this invocation (with a checkpoint)\n"
    "      --help, --version\n"
    "\n"
    "Exit status: 0 ok, 1 usage, 2 bad input, 3 internal or resource failure (including a non-finite loss).\n";

enum {
    O_TRAIN = 0x100, O_EVAL, O_RESUME, O_INIT, O_SEED, O_LABELS, O_MODE, O_LOSS, O_MODEL, O_SET, O_LR, O_HEADLR,
    O_LDS, O_LDST, O_LD, O_WARM, O_WD, O_B1, O_B2, O_SMOOTH, O_MIXUP, O_METRIC, O_NONOISE, O_NOROLL, O_FREQM,
    O_TIMEM, O_FRAME, O_NMEAN, O_NSTD, O_LTHREADS, O_PREFETCH, O_SAVE, O_KEEP, O_LOG, O_MAXSTEPS,
};

typedef struct {
    const char *key;
    char *val;
} knob;

int main(int argc, char **argv) {
    cav_set_tool("cav-finetune");
    cav_blas_fit_cpu("cav-finetune", argv);
    cav_dist d;
    cav_dist_init(&d, &argc, &argv);
    static const struct option opts[] = {
        {"out", 1, 0, 'o'}, {"train", 1, 0, O_TRAIN}, {"eval", 1, 0, O_EVAL}, {"resume", 0, 0, O_RESUME},
        {"init", 1, 0, O_INIT}, {"seed", 1, 0, O_SEED}, {"label-dim", 1, 0, O_LABELS}, {"mode", 1, 0, O_MODE},
        {"loss", 1, 0, O_LOSS}, {"model", 1, 0, O_MODEL}, {"set", 1, 0, O_SET}, {"batch-size", 1, 0, 'b'},
        {"epochs", 1, 0, 'e'}, {"lr", 1, 0, O_LR}, {"head-lr", 1, 0, O_HEADLR}, {"lr-decay-start", 1, 0, O_LDS},
        {"lr-decay-step", 1, 0, O_LDST}, {"lr-decay", 1, 0, O_LD}, {"warmup-steps", 1, 0, O_WARM},
        {"weight-decay", 1, 0, O_WD}, {"beta1", 1, 0, O_B1}, {"beta2", 1, 0, O_B2},
        {"label-smooth", 1, 0, O_SMOOTH}, {"mixup", 1, 0, O_MIXUP}, {"metric", 1, 0, O_METRIC},
        {"no-noise", 0, 0, O_NONOISE}, {"no-roll", 0, 0, O_NOROLL}, {"freqm", 1, 0, O_FREQM},
        {"timem", 1, 0, O_TIMEM}, {"frame", 1, 0, O_FRAME}, {"norm-mean", 1, 0, O_NMEAN},
        {"norm-std", 1, 0, O_NSTD}, {"loader-threads", 1, 0, O_LTHREADS}, {"prefetch", 1, 0, O_PREFETCH},
        {"save-every", 1, 0, O_SAVE}, {"keep", 1, 0, O_KEEP}, {"log-every", 1, 0, O_LOG},
        {"max-steps", 1, 0, O_MAXSTEPS}, CAV_STD_OPTIONS, {0, 0, 0, 0}};
    cav_finetune_opts o;
    cav_finetune_opts_default(&o);
    char **train = calloc((size_t)argc + 1, sizeof *train), **eval = calloc((size_t)argc + 1, sizeof *eval);
    knob *knobs = calloc((size_t)argc + 4, sizeof *knobs);
    int ntrain = 0, neval = 0, nknobs = 0, c, metric = -1;
    const char *model = "base";
    while ((c = getopt_long(argc, argv, "o:b:e:", opts, NULL)) != -1) {
        switch (c) {
        case 'o': o.out_dir = optarg; break;
        case O_TRAIN: train[ntrain++] = optarg; break;
        case O_EVAL: eval[neval++] = optarg; break;
        case O_RESUME: o.resume = 1; break;
        case O_INIT: o.init = optarg; break;
        case O_SEED: o.seed = (uint64_t)cav_parse_int("seed", optarg, 0, INT64_MAX); break;
        case O_LABELS:
            cav_parse_int("label-dim", optarg, 1, 1 << 20);
            knobs[nknobs++] = (knob){"label_dim", optarg};
            break;
        case O_MODE:
            if (cav_ft_mode_parse(optarg) < 0) cav_usage_error("--mode: multimodal, audioonly, videoonly, missingaudioonly or missingvideoonly, not '%s'", optarg);
            knobs[nknobs++] = (knob){"mode", optarg};
            break;
        case O_LOSS:
            if (strcmp(optarg, "bce") && strcmp(optarg, "ce")) cav_usage_error("--loss: bce or ce, not '%s'", optarg);
            knobs[nknobs++] = (knob){"loss", optarg};
            break;
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
        case 'b': o.batch = (int)cav_parse_int("batch-size", optarg, 1, 1 << 20); break;
        case 'e': o.epochs = (int)cav_parse_int("epochs", optarg, 1, 100000); break;
        case O_LR: o.sched.lr = cav_parse_double("lr", optarg, 0, 10); break;
        case O_HEADLR: o.head_lr = cav_parse_double("head-lr", optarg, 0, 1e6); break;
        case O_LDS: o.sched.decay_start = (int)cav_parse_int("lr-decay-start", optarg, 0, 1000); break;
        case O_LDST: o.sched.decay_step = (int)cav_parse_int("lr-decay-step", optarg, 0, 1000); break;
        case O_LD: o.sched.decay = cav_parse_double("lr-decay", optarg, 0, 1); break;
        case O_WARM: o.sched.warmup_steps = cav_parse_int("warmup-steps", optarg, 0, INT64_MAX); break;
        case O_WD: o.weight_decay = cav_parse_double("weight-decay", optarg, 0, 1); break;
        case O_B1: o.beta1 = cav_parse_double("beta1", optarg, 0, 0.999999); break;
        case O_B2: o.beta2 = cav_parse_double("beta2", optarg, 0, 0.999999999); break;
        case O_SMOOTH: o.label_smooth = cav_parse_double("label-smooth", optarg, 0, 1); break;
        case O_MIXUP: o.mixup = cav_parse_double("mixup", optarg, 0, 1); break;
        case O_METRIC:
            if (strcmp(optarg, "map") && strcmp(optarg, "acc")) cav_usage_error("--metric: map or acc, not '%s'", optarg);
            metric = !strcmp(optarg, "acc");
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
        default: cav_std_option(c, usage); cav_usage_error("unexpected option");
        }
    }
    if (cav_config_size(&o.cfg, model)) cav_usage_error("--model: base or tiny, not '%s'", model);
    for (int i = 0; i < nknobs; i++) cav_train_set_knob(&o.cfg, knobs[i].key, knobs[i].val);
    o.metric_acc = metric >= 0 ? metric : o.cfg.loss_ce;
    for (int i = optind; i < argc; i++) train[ntrain++] = argv[i];
    if (!o.out_dir) cav_usage_error("--out DIR is required");
    if (!ntrain) cav_usage_error("no training shards");
    if (o.mixup != 0)
        cav_usage_error("--mixup %g: mixup is not implemented yet (the reference mixes waveforms before the fbank, "
                        "SPEC 1.7); only --mixup 0 runs", o.mixup);
    o.train = train, o.ntrain = ntrain, o.eval = eval, o.neval = neval;
    char *args = NULL;
    size_t len = 0, cap = 0;
    int bad = cav_json_append_raw(&args, &len, &cap, "[");
    for (int i = 0; i < argc; i++)
        bad |= cav_json_append_string(&args, &len, &cap, argv[i]) | cav_json_append_raw(&args, &len, &cap, i + 1 < argc ? "," : "]\n");
    if (bad) cav_die(CAV_EXIT_INTERNAL, "out of memory");
    o.args_json = args;
    cav_err err = {0, ""};
    int rc = cav_finetune_run(&o, &d, &err);
    if (rc) cav_msg("%s", err.msg);
    free(args), free(train), free(eval), free(knobs);
    cav_dist_finalize(&d);
    return rc;
}
