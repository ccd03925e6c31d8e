/* test_grads_final.c: the backward's progress hook (cav_model_on_grads_final), on which the gradient
 * exchange starts its buckets during the backward: one backward's calls cover the flat gradient buffer once;
 * a range reported during the backward already holds its final gradient (nothing the backward writes later
 * changes it: the joint block, which three passes use in pretraining, comes only after the last); some
 * ranges do come before the end (else nothing overlaps); and the hook changes no gradient. Pretraining
 * (reconstruction and contrastive streams) and fine-tuning, on a tiny config with random inputs. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model.h"

typedef struct {
    cav_model *m;
    unsigned char *seen; /* [nparams]: reported this backward */
    float *at_report;    /* [nparams]: each element's gradient when its range was reported */
    float *scratch;      /* [nparams] */
    int calls, early, twice;
} probe;

static void hook(void *ctx, size_t lo, size_t hi, int at_end) {
    probe *p = ctx;
    p->calls++;
    p->early += !at_end;
    cav_model_read_buffer(p->m, CAV_BUF_GRADS, p->scratch);
    for (size_t i = lo; i < hi; i++) {
        p->twice += p->seen[i];
        p->seen[i] = 1;
        p->at_report[i] = p->scratch[i];
    }
}

static cav_config tiny(cav_task task) {
    cav_config c = cav_config_default(task);
    c.audio_length = 48, c.mel_bins = 32, c.img_size = 48;
    c.embed_dim = 16, c.num_heads = 2, c.depth = 3, c.modality_specific_depth = 1; /* 2 joint blocks */
    c.decoder_embed_dim = 8, c.decoder_num_heads = 2, c.decoder_depth = 2, c.mlp_ratio = 2;
    c.mask_ratio_a = 0.5, c.mask_ratio_v = 0.5;
    c.contrast_loss_weight = 0.5;
    c.label_dim = 5;
    return c;
}

static void fill(cav_model *m, int B) {
    static const cav_input ins[] = {CAV_IN_AUDIO, CAV_IN_VIDEO, CAV_IN_LABELS};
    uint64_t s = 12345;
    for (size_t k = 0; k < sizeof ins / sizeof *ins; k++) {
        size_t n = cav_model_input_size(m, ins[k]) * (size_t)B;
        if (!n) continue;
        float *x = malloc(n * sizeof *x);
        for (size_t i = 0; i < n; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            x[i] = ins[k] == CAV_IN_LABELS ? (float)((s >> 40) & 1)
                                           : (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
        }
        cav_model_set_input(m, ins[k], x, B);
        free(x);
    }
    if (m->cfg.task == CAV_TASK_PRETRAIN) {
        uint64_t r = 7;
        cav_model_random_masks(m, &r);
    }
}

static void check_task(cav_task task) {
    const int B = 3;
    cav_config c = tiny(task);
    cav_err err = {0, ""};
    cav_model *m = cav_model_create(&c, B, &err);
    REQUIRE(m);
    cav_model_init(m, 42);
    size_t n = m->nparams;
    probe p = {m, calloc(n, 1), malloc(n * sizeof(float)), malloc(n * sizeof(float)), 0, 0, 0};
    float *plain = malloc(n * sizeof(float)), *hooked = malloc(n * sizeof(float));
    REQUIRE(p.seen && p.at_report && p.scratch && plain && hooked);
    fill(m, B);
    cav_model_forward(m);
    cav_model_backward(m); /* without the hook */
    cav_model_read_buffer(m, CAV_BUF_GRADS, plain);
    REQUIRE(cav_model_on_grads_final(m, hook, &p) == 0);
    for (int round = 0; round < 2; round++) { /* the counts restart with each forward and backward */
        memset(p.seen, 0, n);
        p.calls = p.early = p.twice = 0;
        cav_model_forward(m);
        cav_model_backward(m);
        cav_model_read_buffer(m, CAV_BUF_GRADS, hooked);
        size_t unseen = 0, changed = 0;
        for (size_t i = 0; i < n; i++) {
            unseen += !p.seen[i];
            changed += memcmp(&p.at_report[i], &hooked[i], sizeof(float)) != 0;
        }
        fprintf(stderr,
                "  %s: %d ranges reported, %d before the backward's end; %zu of %zu elements changed after\n",
                task == CAV_TASK_PRETRAIN ? "pretraining" : "fine-tuning", p.calls, p.early, changed, n);
        CHECK(unseen == 0);
        CHECK(p.twice == 0);
        CHECK(changed == 0);
        CHECK(p.early > 0);
        CHECK(memcmp(plain, hooked, n * sizeof(float)) == 0);
    }
    cav_model_on_grads_final(m, NULL, NULL);
    free(p.seen), free(p.at_report), free(p.scratch), free(plain), free(hooked);
    cav_model_free(m);
}

static void pretraining_ranges_final_when_reported(void) {
    check_task(CAV_TASK_PRETRAIN);
}

static void finetuning_ranges_final_when_reported(void) {
    check_task(CAV_TASK_FINETUNE);
}

int main(void) {
    TEST(pretraining_ranges_final_when_reported);
    TEST(finetuning_ranges_final_when_reported);
    return harness_exit();
}
