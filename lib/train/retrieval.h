/* retrieval.h: retrieval ranks at any scale (cav-recall(1)). The similarity matrix of the reference
 * (dot / (|q| |g|) in double, cav-numerics(7) 4) is never held: it is computed in blocks by a float product
 * (the kernel seam's linear_forward: OpenBLAS sgemm on the CPU, or a backend's device), every entry is
 * compared with its query's threshold (the similarity of its own item, or its best same-label item), and the
 * entries that the float product cannot decide within its rounding bound are recomputed in double exactly as
 * the reference does. So ranks, ties and top-k lists equal the full double matrix's, bit for bit, with O(n D
 * + block^2) memory. Queries q [nq, D] are matched against a gallery g [ng, D]; one product also serves the
 * reverse direction (gallery items as queries against q), which is how both directions of a paired set cost
 * one product. */
#ifndef CAV_RETRIEVAL_H
#define CAV_RETRIEVAL_H

#include <stdint.h>

/* A set of embeddings prepared for retrieval: each valid row is scaled in place by a power of two (max |x|
 * in [1, 2): exact, and it keeps the float product away from overflow and underflow); a row with a zero or
 * non-finite norm is invalid (its similarities are all NaN, as in the reference) and becomes NaN. */
typedef struct {
    float *x;     /* [n, D], borrowed, modified in place */
    double *norm; /* [n]: the scaled row's norm in double (NaN: invalid) */
    float *rnorm; /* [n]: 1 / norm in float */
    int64_t n;
    int D;
    int64_t invalid;
} cav_retr_set;

/* Prepares x [n, D] (see above). 0 ok, -1 out of memory. */
int cav_retr_set_init(cav_retr_set *s, float *x, int64_t n, int D);
void cav_retr_set_free(cav_retr_set *s);
/* The reference's similarity of q row i and g row j: their dot product and norms accumulated in double in
 * index order, dot / (|q_i| |g_j|). Equal, bit for bit, to that of the unscaled rows; NaN if either is
 * invalid. */
double cav_retr_sim(const cav_retr_set *q, int64_t i, const cav_retr_set *g, int64_t j);

/* One direction's queries and what is asked of them. */
typedef struct {
    const int64_t *target; /* [nq]: the index of each query's own item in the other set, -1 none */
    const uint64_t *lab; /* class-level retrieval: label bitsets [n, lw] of the queries (NULL: item-level) */
    const uint64_t *other_lab; /* [n_other, lw]: of the items searched */
    int lw;
    int k;                         /* top-k per query (0: none) */
    const unsigned char *want_top; /* [nq]: the queries that need a top-k list (NULL: all) */
    /* outputs, [nq]: threshold (the similarity ranked: the own item's, or the best same-label item's; NaN:
     * none), rank (items with a strictly greater similarity), ties (items with an equal one, the ranked item
     * included; 0 when the threshold is NaN), and top [nq, k] indices / topsim similarities, best first
     * (equal similarities: lower index first), -1 / NaN past the valid items */
    double *thr;
    int64_t *rank, *ties;
    int64_t *top;
    double *topsim;
    int64_t rechecked; /* entries recomputed in double (statistics) */
} cav_retr_dir;

/* Ranks q's rows against g (fwd) and, when rev is not NULL, g's rows against q from the same products.
 * block: rows and columns per product (<= 0: the default, 2048, or CAV_RECALL_BLOCK from the environment).
 * be: NULL, the products into host memory by the CPU's sgemm; a backend (kernels.h: cav-recall --device),
 * both sets uploaded once and each block's product computed there (its linear_forward), downloaded into
 * pinned host memory and scanned by the host while the backend computes the next block. The results are the
 * same either way (cav_retr_margin covers any float sgemm). 0 ok, -1 out of memory (host or device). */
struct cav_backend;
int cav_retrieve(const cav_retr_set *q, const cav_retr_set *g, cav_retr_dir *fwd, cav_retr_dir *rev,
                 int64_t block, struct cav_backend *be);

/* The absolute bound on |float product cosine - reference similarity| used to decide entries (D terms). */
double cav_retr_margin(int D);

#endif
