/* recipes.c: see recipes.h. The values are the reference's fine-tuning scripts' (run_cavmae_ft_bal.sh for
 * AS-20K, run_cavmae_ft_full.sh for AS-2M, the VGGSound run_cavmae_ft.sh): learning rate and the head's
 * multiplier, batch, epochs, the per-epoch decay, the loss and the metric that picks the best model, the
 * classes, label smoothing, SpecAugment and the fbank normalisation. Audio noise and roll are on in every
 * recipe, as they are by default; Adam's betas, eps and weight decay are the same in every script and stay
 * the tool's defaults.
 *
 * Mixup 0.5 everywhere, balanced sampling (--bal, undone by --no-bal) for AS-2M and VGGSound, the weight
 * average of each script's epoch range; the ten-frame evaluation needs no entry: the tool's default is the
 * reference's (on, except for a model that sees no video). A flag's entry
 * has the value NULL; then the man page's lines and test_finetune_modes.py's reading of them take the flag
 * alone. */
#include "recipes.h"

#include <stdio.h>
#include <string.h>

static const cav_preset_entry as20k[] = {
    {"lr", "5e-5"},          {"head-lr", "100"},      {"batch-size", "36"},    {"epochs", "15"},
    {"lr-decay-start", "5"}, {"lr-decay-step", "1"},  {"lr-decay", "0.5"},     {"loss", "bce"},
    {"metric", "map"},       {"label-dim", "527"},    {"label-smooth", "0.1"}, {"freqm", "48"},
    {"timem", "192"},        {"norm-mean", "-5.081"}, {"norm-std", "4.4849"},  {"mixup", "0.5"},
    {"wa-start", "3"},       {"wa-end", "15"},        {NULL, NULL}};
static const cav_preset_entry as2m[] = {
    {"lr", "1e-5"},          {"head-lr", "50"},       {"batch-size", "48"},    {"epochs", "10"},
    {"lr-decay-start", "2"}, {"lr-decay-step", "1"},  {"lr-decay", "0.5"},     {"loss", "bce"},
    {"metric", "map"},       {"label-dim", "527"},    {"label-smooth", "0.1"}, {"freqm", "48"},
    {"timem", "192"},        {"norm-mean", "-5.081"}, {"norm-std", "4.4849"},  {"mixup", "0.5"},
    {"bal", NULL},           {"wa-start", "1"},       {"wa-end", "10"},        {NULL, NULL}};
static const cav_preset_entry vggsound[] = {
    {"lr", "1e-4"},          {"head-lr", "10"},       {"batch-size", "48"},    {"epochs", "10"},
    {"lr-decay-start", "2"}, {"lr-decay-step", "1"},  {"lr-decay", "0.5"},     {"loss", "ce"},
    {"metric", "acc"},       {"label-dim", "309"},    {"label-smooth", "0.1"}, {"freqm", "48"},
    {"timem", "192"},        {"norm-mean", "-5.081"}, {"norm-std", "4.4849"},  {"mixup", "0.5"},
    {"bal", NULL},           {"wa-start", "3"},       {"wa-end", "10"},        {NULL, NULL}};

static const struct {
    const char *name;
    const cav_preset_entry *e;
} recipes[] = {{"as20k", as20k}, {"as2m", as2m}, {"vggsound", vggsound}};

const cav_preset_entry *cav_ft_recipe(const char *name) {
    for (size_t i = 0; name && i < sizeof recipes / sizeof *recipes; i++)
        if (!strcmp(name, recipes[i].name)) return recipes[i].e;
    return NULL;
}

int cav_ft_recipe_parse(const char *s, void *field, char *why, size_t whylen) {
    if (!cav_ft_recipe(s)) return snprintf(why, whylen, "as20k, as2m or vggsound, not '%s'", s), -1;
    return *(const char **)field = s, 0;
}

void cav_ft_recipe_format(const void *field, char *buf, size_t len) {
    const char *s = *(const char *const *)field;
    snprintf(buf, len, "%s", s ? s : "");
}
