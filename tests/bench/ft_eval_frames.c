/* ft_eval_frames.c: the C side of bench_ft_eval.sh. Times the ten-frame evaluation of the fine-tuning model
 * (multimodal, 527 classes, random weights and inputs) two ways on the same batch: the whole model rerun for
 * each frame (the reference's ten evaluation passes), and the audio branch once with only the visual and
 * joint layers per frame (cav_model_forward_keep_audio, as cav-finetune evaluates), and checks that both
 * give the same logits.
 *   ft_eval_frames tiny|base B REPS   -> "full_s X", "audio_once_s X", "speedup X", "max_rel_diff X" */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"

#define FRAMES 10

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void fill(float *x, size_t n, uint64_t *s) {
    for (size_t i = 0; i < n; i++) {
        *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)((double)(*s >> 11) / 9007199254740992.0 * 3.46 - 1.73);
    }
}

/* ten frames' logits [FRAMES][B,K]; keep: the audio branch once */
static double ten_frames(cav_model *m, const float *audio, float *const *video, float *logits, int keep) {
    size_t bk = (size_t)m->B * m->cfg.label_dim;
    double t0 = now();
    for (int f = 0; f < FRAMES; f++) {
        if (f == 0 || !keep) cav_model_set_input(m, CAV_IN_AUDIO, audio, m->B);
        cav_model_set_input(m, CAV_IN_VIDEO, video[f], m->B);
        if (f == 0 || !keep)
            cav_model_forward(m);
        else
            cav_model_forward_keep_audio(m);
        cav_model_read_output(m, "logits", logits + f * bk);
    }
    return now() - t0;
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[1], "tiny") && strcmp(argv[1], "base"))) {
        fprintf(stderr, "usage: ft_eval_frames tiny|base B REPS\n");
        return 1;
    }
    int B = atoi(argv[2]), reps = atoi(argv[3]);
    cav_config cfg = cav_config_default(CAV_TASK_FINETUNE);
    cav_config_size(&cfg, argv[1]);
    cav_err err = {0, ""};
    cav_model *m = cav_model_create(&cfg, B, &err);
    if (!m || B < 1 || reps < 1) {
        fprintf(stderr, "ft_eval_frames: %s\n", m ? "B and REPS must be >= 1" : err.msg);
        return 3;
    }
    cav_model_init(m, 1);
    size_t A = cav_model_input_size(m, CAV_IN_AUDIO) * B, V = cav_model_input_size(m, CAV_IN_VIDEO) * B;
    size_t L = (size_t)FRAMES * B * cfg.label_dim;
    float *audio = malloc(A * sizeof *audio), *video[FRAMES], *full = malloc(L * sizeof *full),
          *once = malloc(L * sizeof *once);
    uint64_t s = 7;
    fill(audio, A, &s);
    for (int f = 0; f < FRAMES; f++) video[f] = malloc(V * sizeof(float)), fill(video[f], V, &s);
    double t_full = 1e30, t_once = 1e30;
    for (int r = 0; r < reps; r++) { /* best of reps, alternating, so that both see the same machine load */
        double a = ten_frames(m, audio, video, full, 0), b = ten_frames(m, audio, video, once, 1);
        t_full = a < t_full ? a : t_full, t_once = b < t_once ? b : t_once;
    }
    double worst = 0, scale = 0;
    for (size_t i = 0; i < L; i++) {
        double d = fabs((double)full[i] - once[i]);
        worst = d > worst ? d : worst;
        scale = fabs(full[i]) > scale ? fabs(full[i]) : scale;
    }
    printf("config %s B %d frames %d\nfull_s %.4f\naudio_once_s %.4f\nspeedup %.3f\nmax_rel_diff %.3g\n",
           argv[1], B, FRAMES, t_full, t_once, t_full / t_once, scale > 0 ? worst / scale : worst);
    for (int f = 0; f < FRAMES; f++) free(video[f]);
    free(audio), free(full), free(once);
    cav_model_free(m);
    return 0;
}
