/* recipes.h: the paper's three fine-tuning recipes as named presets of cav-finetune (--recipe as20k, as2m,
 * vggsound; cav-numerics(7) 3.3, cav-finetune(1) RECIPES): each is a list of (option, value) pairs that the
 * training driver applies as defaults before it parses the command line (cav_train_options_of.preset), so
 * that an option given on the command line overrides the recipe wherever it stands. */
#ifndef CAV_RECIPES_H
#define CAV_RECIPES_H

#include <stddef.h>

#include "train.h"

/* The recipe's defaults, ended by {NULL}; NULL for an unknown name. */
const cav_preset_entry *cav_ft_recipe(const char *name);
/* The --recipe option's parse callback (field: const char *, the name) and its echo ("" for none). */
int cav_ft_recipe_parse(const char *s, void *field, char *why, size_t whylen);
void cav_ft_recipe_format(const void *field, char *buf, size_t len);

#endif
