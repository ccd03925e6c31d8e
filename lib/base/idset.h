/* idset.h: a set of strings (record ids) with their first position, for duplicate-id checks in the
 * containers and id lookup in shard-pack. Open addressing, grows by doubling, so n inserts cost O(n). */
#ifndef CAV_IDSET_H
#define CAV_IDSET_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    size_t n, cap; /* entries, slots (a power of two) */
    char **keys;   /* owned copies; NULL = empty slot */
    int64_t *vals;
} cav_idset;

void cav_idset_init(cav_idset *s);
void cav_idset_clear(cav_idset *s);
/* Value stored for key, or -1 when absent. */
int64_t cav_idset_get(const cav_idset *s, const char *key);
/* Inserts key -> val. Returns 1 inserted, 0 already present (nothing changed), -1 out of memory. */
int cav_idset_add(cav_idset *s, const char *key, int64_t val);

#endif
