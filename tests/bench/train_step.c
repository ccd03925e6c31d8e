/* train_step.c: the C side of bench_train_step.sh and bench_finetune.sh. Times the pretraining step of the C
 * model (forward, backward, Adam, as cav-pretrain runs it) on random inputs with fresh random masks each
 * step, or the fine-tuning step (CAVMAEFT on every token, the head, BCE on random 0/1 targets, Adam with the
 * head's rate x 100, as cav-finetune runs it), and the sgemm peak of the linked BLAS, for ratios in one run.
 *   train_step step tiny|base B STEPS   -> "samples_per_s X", per-phase seconds
 *   train_step ft tiny|base B STEPS [multimodal|audioonly|videoonly [K]]   -> the same, fine-tuning (K 527)
 *   train_step sgemm                    -> "sgemm_gflops X" (best over the model's large GEMM shapes)
 * STEPS 0 prints gflop_per_sample alone, without running (bench_gpu_train.sh's MFU, test_bench_flops.py).
 * tiny is the benchmark config of tests/bench/RESULTS.md: 192-dim, 3 heads, 4+1 layers, decoder 128 x 2 with
 * 4 heads. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blas.h"
#include "kernels.h"
#include "model.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void fill(float *x, size_t n, uint64_t *s) {
    for (size_t i = 0; i < n; i++) { /* cheap uniform in [-1.7, 1.7): unit variance, like normalised input */
        *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)((double)(*s >> 11) / 9007199254740992.0 * 3.46 - 1.73);
    }
}

static int bench_sgemm(void) {
    /* (M, N, K): the base model's largest per-step GEMMs (decoder fc1 at batch 4, encoder fc1, qkv) and a
     * square one; peak = the best rate over them */
    static const int shapes[][3] = {
        {2832, 2048, 512}, {512, 3072, 768}, {512, 2304, 768}, {2048, 2048, 2048}};
    double best = 0;
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int M = shapes[k][0], N = shapes[k][1], K = shapes[k][2];
        float *a = malloc(sizeof(float) * M * K), *b = malloc(sizeof(float) * K * N),
              *c = malloc(sizeof(float) * M * N);
        uint64_t s = 1;
        fill(a, (size_t)M * K, &s);
        fill(b, (size_t)K * N, &s);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
        int reps = (int)(2e10 / (2.0 * M * N * K)) + 1;
        double t0 = now();
        for (int r = 0; r < reps; r++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, b, K, 0, c, N);
        double g = 2.0 * M * N * K * reps / (now() - t0) / 1e9;
        printf("sgemm %dx%dx%d %.1f GFLOP/s\n", M, N, K, g);
        if (g > best) best = g;
        free(a), free(b), free(c);
    }
    printf("sgemm_gflops %.1f\n", best);
    return 0;
}

/* Multiply-add FLOPs of one block on N tokens of width C (qkv, proj, fc1, fc2; QK^T and att @ V). */
static double block_flops(double N, double C, double hidden) {
    return 2 * N * (3 * C * C + C * C + 2 * C * hidden) + 4 * N * N * C;
}

/* FLOPs of one training sample: 3x the forward's matmuls (the backward does two products per forward one),
 * counting the contrastive streams' extra passes through the joint blocks. About 234 GFLOP at base. */
static double step_flops(const cav_model *m) {
    const cav_config *c = &m->cfg;
    double D = m->D, Dd = m->Dd, La = m->La, Lv = m->Lv, N = m->La_full + m->Lv_full;
    int msd = c->modality_specific_depth, joint = c->depth - msd;
    double f = 2 * (m->La_full * 256.0 + m->Lv_full * 768.0) * D; /* patch embeddings */
    f += msd * (block_flops(La, D, m->hidden) + block_flops(Lv, D, m->hidden));
    f += joint *
         (block_flops(La + Lv, D, m->hidden) + block_flops(La, D, m->hidden) + block_flops(Lv, D, m->hidden));
    f += 2 * (La + Lv) * D * Dd + c->decoder_depth * block_flops(N, Dd, m->dhidden);
    f += 2 * (m->La_full * 256.0 + m->Lv_full * 768.0) * Dd; /* prediction heads */
    return 3 * f;
}

/* FLOPs of one fine-tuning sample: every token through the modality-specific blocks of the modalities the
 * mode uses, then the joint blocks once (on the concatenation when multimodal, on one modality's tokens
 * otherwise), the head; 3x the forward as above. */
static double ft_step_flops(const cav_model *m) {
    const cav_config *c = &m->cfg;
    int msd = c->modality_specific_depth, joint = c->depth - msd;
    int ua = c->mode != CAV_FT_VIDEOONLY && c->mode != CAV_FT_MISSINGVIDEOONLY;
    int uv = c->mode != CAV_FT_AUDIOONLY && c->mode != CAV_FT_MISSINGAUDIOONLY;
    double D = m->D, La = ua ? m->La_full : 0, Lv = uv ? m->Lv_full : 0;
    double f = 2 * (La * 256.0 + Lv * 768.0) * D;
    f += msd * ((ua ? block_flops(La, D, m->hidden) : 0) + (uv ? block_flops(Lv, D, m->hidden) : 0));
    f += joint * block_flops(La + Lv, D, m->hidden);
    f += 2 * D * c->label_dim;
    return 3 * f;
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "sgemm")) return bench_sgemm();
    int ft = argc >= 2 && !strcmp(argv[1], "ft");
    /* the fine-tuning step is timed with the kernels cav-finetune would run (it re-executes itself the same
     * way); the BLAS core is printed so that the PyTorch side can be given the same */
    if (ft) cav_blas_fit_cpu("train_step", argv);
    if (!(argc == 5 && !strcmp(argv[1], "step")) && !(ft && argc >= 5 && argc <= 7)) {
        fprintf(stderr, "usage: train_step step tiny|base B STEPS | train_step ft tiny|base B STEPS "
                        "[multimodal|audioonly|videoonly [K]] | train_step sgemm\n");
        return 1;
    }
    cav_config cfg = cav_config_default(ft ? CAV_TASK_FINETUNE : CAV_TASK_PRETRAIN);
    cfg.norm_pix_loss = 1; /* as cav-pretrain and the reference's recipe */
    if (!strcmp(argv[2], "tiny")) {
        cfg.embed_dim = 192, cfg.num_heads = 3, cfg.modality_specific_depth = 4, cfg.depth = 5;
        cfg.decoder_embed_dim = 128, cfg.decoder_depth = 2, cfg.decoder_num_heads = 4;
    } else if (strcmp(argv[2], "base")) {
        fprintf(stderr, "train_step: unknown config %s\n", argv[2]);
        return 1;
    }
    if (ft && argc >= 6) {
        static const char *const modes[] = {"multimodal", "audioonly", "videoonly"};
        int k = 0;
        while (k < 3 && strcmp(argv[5], modes[k])) k++;
        if (k == 3) {
            fprintf(stderr, "train_step: unknown mode %s\n", argv[5]);
            return 1;
        }
        cfg.mode = (cav_ft_mode)k; /* the first three of cav_ft_mode, in this order */
    }
    if (ft && argc == 7) cfg.label_dim = atoi(argv[6]);
    int B = atoi(argv[3]), steps = atoi(argv[4]);
    cav_err err = {0};
    /* CAV_BENCH_DEVICE picks the backend (tests/bench/gpu_session.sh times "cuda"); the CPU otherwise */
    const char *device = getenv("CAV_BENCH_DEVICE");
    cav_backend *be = cav_backend_open(device ? device : "cpu", &err);
    cav_model *m = be ? cav_model_create_on(be, &cfg, B, &err) : NULL;
    /* CAV_BENCH_PRECISION=bf16: the Linears on bf16 operands (--precision bf16); fp32 otherwise */
    const char *prec = getenv("CAV_BENCH_PRECISION");
    int bf16 = prec && !strcmp(prec, "bf16");
    if (!m || cav_model_alloc_adam(m) || cav_model_set_precision(m, bf16)) {
        fprintf(stderr, "train_step: %s\n", m ? "out of memory" : err.msg);
        return 3;
    }
    double gflop = (ft ? ft_step_flops(m) : step_flops(m)) / 1e9;
    if (steps == 0) {
        printf("gflop_per_sample %.4f\n", gflop);
        cav_model_free(m);
        return 0;
    }
    cav_model_init(m, 1);
    uint64_t s = 7, mask_rng = 11;
    size_t na = (size_t)B * m->T * m->F, nv = (size_t)B * 3 * m->S * m->S;
    float *audio = malloc(na * sizeof *audio), *video = malloc(nv * sizeof *video);
    if (!audio || !video) {
        fprintf(stderr, "train_step: out of memory\n");
        return 3;
    }
    fill(audio, na, &s);
    fill(video, nv, &s);
    cav_model_set_input(m, CAV_IN_AUDIO, audio, B);
    cav_model_set_input(m, CAV_IN_VIDEO, video, B);
    free(audio), free(video);
    if (ft) { /* random multi-hot targets (B, K), about 2% positive as AudioSet's */
        size_t nl = (size_t)B * cfg.label_dim;
        float *labels = malloc(nl * sizeof *labels);
        if (!labels) {
            fprintf(stderr, "train_step: out of memory\n");
            return 3;
        }
        fill(labels, nl, &s);
        for (size_t i = 0; i < nl; i++) labels[i] = labels[i] > 1.66f; /* uniform on [-1.73, 1.73) */
        cav_model_set_input(m, CAV_IN_LABELS, labels, B);
        free(labels);
    }
    double tf = 0, tb = 0, ta = 0, t_all = 0;
    for (int i = 0; i <= steps; i++) { /* step 0 warms up (first touch of activations, BLAS buffers) */
        double t0 = now();
        if (!ft) cav_model_random_masks(m, &mask_rng);
        cav_model_forward(m);
        double t1 = now();
        cav_model_backward(m);
        double t2 = now();
        cav_model_adam_step(m, 5e-5, ft ? 100.0 : 1.0, 0.95, 0.999, 1e-8, 5e-7);
        double t3 = now();
        if (!isfinite(m->out.loss)) {
            fprintf(stderr, "train_step: non-finite loss\n");
            return 3;
        }
        if (i == 0) continue;
        tf += t1 - t0, tb += t2 - t1, ta += t3 - t2, t_all += t3 - t0;
    }
    printf("forward_s %.4f\nbackward_s %.4f\nadam_s %.4f\nstep_s %.4f\n", tf / steps, tb / steps, ta / steps,
           t_all / steps);
    printf("gflop_per_sample %.4f\n", gflop);
    printf("samples_per_s %.4f\n", B * steps / t_all);
    printf("blas_core %s\n", openblas_get_corename());
    printf("last_loss %.9g\n", m->out.loss); /* fixed seeds: two runs on one device give the same bits */
    cav_model_free(m);
    return 0;
}
