/*
 * client/grant_cache.c — per-resource grant cache (see grant_cache.h).
 */
#include "client/grant_cache.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

void grant_cache_init(struct grant_cache *c)
{
	memset(c, 0, sizeof(*c));
}

static void drop(struct grant_cache *c, size_t i)
{
	if (c->entries[i].grant != NULL) {
		OPENSSL_cleanse(c->entries[i].grant, strlen(c->entries[i].grant));
		free(c->entries[i].grant);
	}
	c->entries[i] = c->entries[c->count - 1];
	memset(&c->entries[c->count - 1], 0, sizeof(c->entries[0]));
	c->count--;
}

void grant_cache_free(struct grant_cache *c)
{
	if (c == NULL)
		return;
	while (c->count > 0)
		drop(c, c->count - 1);
}

static int usable(const struct grant_cache_entry *e, int64_t now)
{
	return now < e->expires_at - GRANT_CACHE_MARGIN_S;
}

const char *grant_cache_get(struct grant_cache *c, const char *resource_id, int64_t now)
{
	for (size_t i = 0; i < c->count; i++) {
		if (strcmp(c->entries[i].resource_id, resource_id) != 0)
			continue;
		if (usable(&c->entries[i], now))
			return c->entries[i].grant;
		drop(c, i);
		return NULL;
	}
	return NULL;
}

void grant_cache_remove(struct grant_cache *c, const char *resource_id)
{
	for (size_t i = 0; i < c->count; i++) {
		if (strcmp(c->entries[i].resource_id, resource_id) == 0) {
			drop(c, i);
			return;
		}
	}
}

int grant_cache_put(struct grant_cache *c, const char *resource_id, const char *grant,
		    int64_t expires_at, int64_t now)
{
	size_t id_len = strlen(resource_id);
	if (id_len == 0 || id_len > GRANT_CACHE_ID_MAX || grant == NULL || grant[0] == '\0' ||
	    now >= expires_at - GRANT_CACHE_MARGIN_S)
		return SP_ERR_INVALID;
	char *copy = strdup(grant);
	if (copy == NULL)
		return SP_ERR_NOMEM;
	grant_cache_remove(c, resource_id);
	if (c->count == GRANT_CACHE_MAX) {
		for (size_t i = c->count; i-- > 0;)
			if (!usable(&c->entries[i], now))
				drop(c, i);
	}
	if (c->count == GRANT_CACHE_MAX) {
		size_t oldest = 0;
		for (size_t i = 1; i < c->count; i++)
			if (c->entries[i].expires_at < c->entries[oldest].expires_at)
				oldest = i;
		drop(c, oldest);
	}
	struct grant_cache_entry *e = &c->entries[c->count++];
	memcpy(e->resource_id, resource_id, id_len + 1);
	e->grant = copy;
	e->expires_at = expires_at;
	return 0;
}
