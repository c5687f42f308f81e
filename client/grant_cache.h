/*
 * client/grant_cache.h — flow grants kept per resource until shortly before they expire.
 *
 * A grant (docs/protocol.md §1.1) lets this device open flows to one resource for five
 * minutes; the daemon asks the controller once and reuses it for every flow until
 * GRANT_CACHE_MARGIN_S before its exp, so a grant never reaches the connector expired
 * because of a slow path or a small clock difference. Pure: the clock is passed in.
 *
 * Ownership: grant_cache_init on caller storage, grant_cache_free releases the copies.
 */
#ifndef SALLYPORT_CLIENT_GRANT_CACHE_H
#define SALLYPORT_CLIENT_GRANT_CACHE_H
#include <stddef.h>
#include <stdint.h>
#include "shared/error.h"

#define GRANT_CACHE_MARGIN_S 30
#define GRANT_CACHE_MAX 1024
#define GRANT_CACHE_ID_MAX 64

struct grant_cache_entry {
	char resource_id[GRANT_CACHE_ID_MAX + 1];
	char *grant; /* heap, wiped on release */
	int64_t expires_at;
};

struct grant_cache {
	struct grant_cache_entry entries[GRANT_CACHE_MAX];
	size_t count;
};

void grant_cache_init(struct grant_cache *c);
/* Releases every grant (wiped). Safe on NULL. */
void grant_cache_free(struct grant_cache *c);
/* The cached grant for resource_id while now < expires_at - margin, else NULL (an entry
 * past that is dropped). The string stays valid until the next put/remove/free. */
const char *grant_cache_get(struct grant_cache *c, const char *resource_id, int64_t now);
/*
 * Stores a copy of grant for resource_id, replacing an older one. When full, entries that
 * are no longer usable at `now` are dropped first, then the one nearest its end.
 * SP_ERR_INVALID for an empty or over-long id or a grant already unusable at now;
 * SP_ERR_NOMEM.
 */
int grant_cache_put(struct grant_cache *c, const char *resource_id, const char *grant,
		    int64_t expires_at, int64_t now);
/* Drops the grant of one resource (resource removed or access denied). */
void grant_cache_remove(struct grant_cache *c, const char *resource_id);
#endif
