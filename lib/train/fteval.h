/* fteval.h: cav-finetune's final evaluation (cav-numerics(7) 3.3, 3.4): the weight average of the models of
 * an epoch range (or the best model), scored on every evaluation row (no drop_last) with each of the ten
 * frames and with the mean of the ten probability matrices; the audio branch runs once per clip and only the
 * visual and joint layers once per frame. It writes mul_frame_res.csv, final_eval.json (per-frame scores,
 * the final acc/mAP/mAUC/d' and per-class AP) and, on request, the predictions (id, one probability per
 * class) of every evaluated frame and of their mean. Runs after training, or alone on a model
 * (cav-finetune --eval-only). */
#ifndef CAV_FTEVAL_H
#define CAV_FTEVAL_H

#include "dist.h"
#include "model.h"
#include "train.h"

#define CAV_FT_FRAMES 10 /* the reference's total_frames */

typedef struct {
    int wa_start, wa_end; /* models/audio_model.{wa_start..wa_end} averaged; 0: no averaging (best model) */
    int frame_agg;        /* 1: the ten frames and their mean; 0: one frame; -1: 1 unless no video is seen */
    int eval_only;        /* evaluate --init alone, no training */
    int predictions;      /* write predictions_*.csv */
} cav_ft_eval_opts;

/* What the final evaluation needs from the run. */
typedef struct {
    const cav_train_opts *run; /* eval shards, out_dir, batch, device, loader settings, frame, force */
    const cav_config *cfg;
    const cav_ft_eval_opts *ev;
    int by_acc; /* accuracy task: softmax, scored by accuracy; else sigmoid and mAP */
} cav_ft_eval_setup;

/* Usage checks of the options against the run (exit code 1 with err): the WA range within 1..epochs. */
int cav_ft_eval_check(const cav_ft_eval_opts *ev, int epochs, cav_err *err);
/* After a training run that finished its last epoch: models/audio_model_wa.safetensors (the mean of the
 * range) or models/best_audio_model.safetensors, evaluated into out_dir (its files replaced). 0 ok, else an
 * exit code with err. */
int cav_ft_final_eval(const cav_ft_eval_setup *s, const cav_dist *d, cav_err *err);
/* Removes the final evaluation's files from a run directory (a new run with --force replaces the old run's
 * outputs: none of them may pass for the new run's). */
void cav_ft_eval_clear(const char *dir);
/* The final evaluation of the model file `model` into out_dir; an existing output file is refused (exit 1)
 * unless replace. 0 ok, else an exit code with err. */
int cav_ft_eval_model(const cav_ft_eval_setup *s, const char *model, int replace, const cav_dist *d,
                      cav_err *err);

#endif
