/* cav-finetune: supervised fine-tuning of CAV-MAE (CAVMAEFT) on labelled shards from a pretrained
 * checkpoint. The tool is lib/train/finetune.c's (its option tables, usage and task) on the training
 * driver's main and loop (lib/train/train.c). */
#include "finetune.h"

int main(int argc, char **argv) {
    cav_finetune_opts o;
    return cav_train_main(argc, argv, &cav_finetune_tool, &o);
}
