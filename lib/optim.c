/* optim.c: see optim.h. */
#include "optim.h"

#include <stdlib.h>

#include "kernels.h"

int cav_optim_mark_reached(const cav_model *m, unsigned char *reached) {
    int n = 0;
    for (int i = 0; i < m->ntable; i++) {
        const cav_param *p = &m->table[i];
        reached[i] = 0;
        if (!p->trainable) continue;
        for (size_t k = 0; k < p->numel; k++)
            if (p->grad[k] != 0.0f) {
                reached[i] = 1;
                break;
            }
        n += reached[i];
    }
    return n;
}

int cav_optim_alloc(cav_model *m) {
    if (m->adam_m) return 0;
    m->adam_m = calloc(m->nparams, sizeof(float));
    m->adam_v = calloc(m->nparams, sizeof(float));
    if (!m->adam_m || !m->adam_v) {
        free(m->adam_m), free(m->adam_v);
        m->adam_m = m->adam_v = NULL;
        return -1;
    }
    return 0;
}

void cav_optim_adam(cav_model *m, const unsigned char *reached, double lr, double head_lr_scale, double beta1,
                    double beta2, double eps, double wd) {
    m->adam_t++;
    for (int i = 0; i < m->ntable; i++) {
        cav_param *e = &m->table[i];
        if (!e->trainable || !reached[i]) continue;
        cav_adam_step(e->data, e->grad, m->adam_m + e->offset, m->adam_v + e->offset, e->numel,
                      e->head ? lr * head_lr_scale : lr, beta1, beta2, eps, wd, m->adam_t);
    }
}
