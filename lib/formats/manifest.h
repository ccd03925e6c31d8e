/* manifest.h: import of the reference's dataset files (cav-numerics(7) 1.8): the label CSV
 * (index,mid,display_name) and the dataset JSON ({"data": [{"video_id", "wav", "video_path", "labels":
 * "mid1,mid2"}]}), and the reference's sample weights for balanced sampling (gen_weight_file.py):
 * label_weight[c] = 1000 / (count_c + 0.01), a sample's weight the sum of label_weight over its label
 * list. */
#ifndef CAV_MANIFEST_H
#define CAV_MANIFEST_H

#include "idset.h"
#include "record.h"

typedef struct {
    int k;        /* classes */
    char **mids;  /* [k], in index order */
    char **names; /* [k] display names */
    cav_idset by_mid;
} cav_labelset;

/* Reads a label CSV; the indices must be exactly 0..k-1 (any row order). 0 ok, -1 err. */
int cav_labelset_load(cav_labelset *ls, const char *path, cav_err *err);
void cav_labelset_free(cav_labelset *ls);
/* Dataset attributes: label_count, label_mids and label_names (newline-separated, index order). */
int cav_labelset_attrs(const cav_labelset *ls, cav_attrs *a);

typedef struct {
    char *id, *wav, *video_path;
    int nlab;
    int *lab; /* class indices in the order of the JSON's label list */
} cav_manifest_item;

typedef struct {
    int n;
    cav_manifest_item *items;
    double *label_weight; /* [k] */
    cav_idset by_id;      /* video_id -> item */
} cav_manifest;

/* Reads the dataset JSON, maps labels through ls (an unknown mid, a missing field or a duplicated video_id
 * is an error naming the entry) and computes the weights. */
int cav_manifest_load(cav_manifest *m, const char *path, const cav_labelset *ls, cav_err *err);
void cav_manifest_free(cav_manifest *m);
double cav_manifest_weight(const cav_manifest *m, int item);
/* Adds to rec the item's `labels` (f32 [k] multi-hot), `weight` (f32 scalar) and the record attributes
 * `wav` and `video_path`; sets the id when rec has none. 0 ok, -1 out of memory. */
int cav_manifest_apply(const cav_manifest *m, int item, const cav_labelset *ls, cav_record *rec);

#endif
