/* cav-pretrain: self-supervised CAV-MAE pretraining (and the paper's baselines) on shards; also checks the
 * C model against PyTorch debug states. The tool is lib/train/pretrain.c's (its option tables, usage and
 * task) on the training driver's main and loop (lib/train/train.c). */
#include "pretrain.h"

int main(int argc, char **argv) {
    cav_pretrain_opts o;
    return cav_train_main(argc, argv, &cav_pretrain_tool, &o);
}
