/* pth.h: import of PyTorch `.pth` state dicts without Python, for the reference's released checkpoints and
 * MAE initialisations. Two containers are read: the zip archive torch.save writes by default (stored
 * entries `<prefix>/data.pkl` and `<prefix>/data/<key>`; zip64 records accepted) and the legacy stream of
 * `_use_new_zipfile_serialization=False` (magic, protocol and sys-info pickles, the main pickle, the
 * storage-key list, then each storage as an int64 element count and raw data).
 *
 * The pickle is interpreted by a small stack machine that knows only the opcodes of protocols 2-4 and the
 * globals a tensor file needs (collections.OrderedDict, torch._utils._rebuild_tensor[_v2],
 * torch._utils._rebuild_parameter, torch.<Type>Storage). Any other global, opcode or callable is refused
 * with code 2; nothing from the file is executed. Tensors are returned as contiguous f32 copies (views with
 * offsets and strides resolved, Double/Half/BFloat16/integer storages converted), named as in the file
 * with a leading `module.` removed. A checkpoint whose top level is {"model": state_dict} or
 * {"state_dict": state_dict} (MAE, DeiT) is unwrapped. */
#ifndef CAV_PTH_H
#define CAV_PTH_H

#include <stddef.h>
#include <stdint.h>

#include "record.h"

typedef struct {
    char *name;
    const char *src_dtype; /* the storage type in the file: "Float", "Half", "Long", ... */
    int ndim;
    int64_t shape[CAV_MAX_NDIM];
    size_t numel;
    float *data; /* contiguous, row-major */
} cav_pth_tensor;

typedef struct {
    int n;
    cav_pth_tensor *t; /* in the file's order */
} cav_pth;

/* 0 ok; -1 with err: code 2 for a malformed, hostile or unsupported file, 3 for resources. */
int cav_pth_load(cav_pth *out, const char *path, cav_err *err);
void cav_pth_free(cav_pth *p);
const cav_pth_tensor *cav_pth_find(const cav_pth *p, const char *name);

#endif
