/* client/synthetic.c — see synthetic.h for the contract. */
#include "client/synthetic.h"

#include <stdlib.h>
#include <string.h>

#define NONE UINT32_MAX

/* One mapped name. Lives in s->entries; linked into two hash chains and the LRU list. */
struct synthetic_entry {
	char *name; /* heap copy, NUL-terminated; NULL when the entry is free */
	size_t name_len;
	uint64_t name_hash;
	uint32_t offset; /* host part shared by the IPv4 and IPv6 address */
	int64_t resource_id;
	uint32_t lru_prev, lru_next;  /* most recent at s->lru_head */
	uint32_t name_next;	      /* chain in s->name_buckets */
	uint32_t offset_next;	      /* chain in s->offset_buckets; also the free list */
};

struct synthetic {
	struct sp_cidr v4;
	struct sp_cidr v6;
	int has_v6;
	uint64_t pool;	    /* 2^(host bits of the smaller range), at most 2^32 */
	uint64_t cursor;    /* next offset to try, 1..pool-2 */
	uint64_t seed;
	size_t capacity;
	size_t count;
	struct synthetic_entry *entries;
	uint32_t free_head; /* free entries linked through offset_next */
	uint32_t lru_head, lru_tail;
	uint32_t *name_buckets;
	uint32_t *offset_buckets;
	size_t bucket_mask;
};

static uint64_t name_hash(uint64_t seed, const char *name, size_t len)
{
	/* FNV-1a, seeded so that chains cannot be predicted by whoever picks the names. */
	uint64_t h = 0xcbf29ce484222325ull ^ seed;
	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)name[i];
		h *= 0x100000001b3ull;
	}
	h ^= h >> 29;
	return h;
}

static size_t offset_bucket(const struct synthetic *s, uint32_t offset)
{
	uint64_t h = (uint64_t)offset * 0x9e3779b97f4a7c15ull;
	return (size_t)(h >> 32) & s->bucket_mask;
}

static int parse_range(const char *text, int family, unsigned max_prefix, const char *what,
		       struct sp_cidr *out, struct sp_diag *diag)
{
	struct sp_diag inner = {0};
	if (sp_cidr_parse(text, out, &inner) < 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "%s range: %s", what, inner.message);
	if (out->family != family)
		return sp_diag_set(diag, SP_ERR_INVALID, "%s range \"%s\" is not an %s network",
				   what, text, family == AF_INET ? "IPv4" : "IPv6");
	if (out->prefix_len > max_prefix)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "%s range \"%s\" is too small: the prefix must be /%u or shorter",
				   what, text, max_prefix);
	return 0;
}

int synthetic_new(const struct synthetic_config *cfg, struct synthetic **out, struct sp_diag *diag)
{
	int r = SP_ERR_NOMEM;
	struct synthetic *s = NULL;
	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		goto out;
	const char *v4 = cfg->v4_range != NULL ? cfg->v4_range : SYNTHETIC_DEFAULT_V4;
	r = parse_range(v4, AF_INET, 30, "IPv4 synthetic", &s->v4, diag);
	if (r < 0)
		goto out;
	unsigned host_bits = 32u - s->v4.prefix_len;
	if (cfg->v6_range != NULL) {
		r = parse_range(cfg->v6_range, AF_INET6, 126, "IPv6 synthetic", &s->v6, diag);
		if (r < 0)
			goto out;
		s->has_v6 = 1;
		unsigned v6_bits = 128u - s->v6.prefix_len;
		if (v6_bits < host_bits)
			host_bits = v6_bits;
	}
	s->pool = (uint64_t)1 << host_bits;
	size_t max = cfg->max_entries != 0 ? cfg->max_entries : SYNTHETIC_DEFAULT_MAX_ENTRIES;
	if (max > SYNTHETIC_MAX_ENTRIES_LIMIT) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "max_entries %zu is above the limit %u", max,
				SYNTHETIC_MAX_ENTRIES_LIMIT);
		goto out;
	}
	if ((uint64_t)max > s->pool - 2)
		max = (size_t)(s->pool - 2);
	s->capacity = max;
	s->cursor = 1;
	s->seed = cfg->hash_seed;
	size_t buckets = 16;
	while (buckets < max)
		buckets <<= 1;
	s->bucket_mask = buckets - 1;
	r = SP_ERR_NOMEM;
	s->entries = calloc(max, sizeof(*s->entries));
	s->name_buckets = malloc(buckets * sizeof(*s->name_buckets));
	s->offset_buckets = malloc(buckets * sizeof(*s->offset_buckets));
	if (s->entries == NULL || s->name_buckets == NULL || s->offset_buckets == NULL)
		goto out;
	memset(s->name_buckets, 0xff, buckets * sizeof(*s->name_buckets));
	memset(s->offset_buckets, 0xff, buckets * sizeof(*s->offset_buckets));
	for (size_t i = 0; i < max; i++)
		s->entries[i].offset_next = i + 1 < max ? (uint32_t)(i + 1) : NONE;
	s->free_head = 0;
	s->lru_head = s->lru_tail = NONE;
	*out = s;
	s = NULL;
	r = 0;
out:
	if (r == SP_ERR_NOMEM)
		sp_diag_set(diag, r, "out of memory for the synthetic address table");
	synthetic_free(s);
	return r;
}

void synthetic_free(struct synthetic *s)
{
	if (s == NULL)
		return;
	if (s->entries != NULL) {
		for (size_t i = 0; i < s->capacity; i++)
			free(s->entries[i].name);
	}
	free(s->entries);
	free(s->name_buckets);
	free(s->offset_buckets);
	free(s);
}

static uint32_t find_name(const struct synthetic *s, const char *name, size_t len, uint64_t hash)
{
	uint32_t i = s->name_buckets[hash & s->bucket_mask];
	while (i != NONE) {
		const struct synthetic_entry *e = &s->entries[i];
		if (e->name_hash == hash && e->name_len == len && memcmp(e->name, name, len) == 0)
			return i;
		i = e->name_next;
	}
	return NONE;
}

static uint32_t find_offset(const struct synthetic *s, uint32_t offset)
{
	uint32_t i = s->offset_buckets[offset_bucket(s, offset)];
	while (i != NONE && s->entries[i].offset != offset)
		i = s->entries[i].offset_next;
	return i;
}

static void lru_unlink(struct synthetic *s, uint32_t i)
{
	struct synthetic_entry *e = &s->entries[i];
	if (e->lru_prev != NONE)
		s->entries[e->lru_prev].lru_next = e->lru_next;
	else
		s->lru_head = e->lru_next;
	if (e->lru_next != NONE)
		s->entries[e->lru_next].lru_prev = e->lru_prev;
	else
		s->lru_tail = e->lru_prev;
	e->lru_prev = e->lru_next = NONE;
}

static void lru_push_front(struct synthetic *s, uint32_t i)
{
	struct synthetic_entry *e = &s->entries[i];
	e->lru_prev = NONE;
	e->lru_next = s->lru_head;
	if (s->lru_head != NONE)
		s->entries[s->lru_head].lru_prev = i;
	s->lru_head = i;
	if (s->lru_tail == NONE)
		s->lru_tail = i;
}

static void touch(struct synthetic *s, uint32_t i)
{
	if (s->lru_head == i)
		return;
	lru_unlink(s, i);
	lru_push_front(s, i);
}

/* Removes entry i from both chains and the LRU list and puts it on the free list. */
static void evict(struct synthetic *s, uint32_t i)
{
	struct synthetic_entry *e = &s->entries[i];
	uint32_t *link = &s->name_buckets[e->name_hash & s->bucket_mask];
	while (*link != i)
		link = &s->entries[*link].name_next;
	*link = e->name_next;
	link = &s->offset_buckets[offset_bucket(s, e->offset)];
	while (*link != i)
		link = &s->entries[*link].offset_next;
	*link = e->offset_next;
	lru_unlink(s, i);
	free(e->name);
	memset(e, 0, sizeof(*e));
	e->offset_next = s->free_head;
	s->free_head = i;
	s->count--;
}

/*
 * The next offset not in use, from the cursor on. At most count of the pool's usable
 * offsets are taken and count < pool - 2 here, so count + 1 steps always find one.
 */
static uint32_t next_free_offset(struct synthetic *s)
{
	for (size_t step = 0; step <= s->count; step++) {
		uint32_t offset = (uint32_t)s->cursor;
		s->cursor = s->cursor + 1 > s->pool - 2 ? 1 : s->cursor + 1;
		if (find_offset(s, offset) == NONE)
			return offset;
	}
	return 0; /* unreachable while count < capacity <= pool - 2 */
}

static void fill_mapping(const struct synthetic *s, const struct synthetic_entry *e,
			 struct synthetic_mapping *out)
{
	memset(out, 0, sizeof(*out));
	uint32_t base = ((uint32_t)s->v4.addr[0] << 24) | ((uint32_t)s->v4.addr[1] << 16) |
			((uint32_t)s->v4.addr[2] << 8) | s->v4.addr[3];
	uint32_t v4 = base | e->offset;
	out->v4[0] = (uint8_t)(v4 >> 24);
	out->v4[1] = (uint8_t)(v4 >> 16);
	out->v4[2] = (uint8_t)(v4 >> 8);
	out->v4[3] = (uint8_t)v4;
	if (s->has_v6) {
		out->has_v6 = 1;
		memcpy(out->v6, s->v6.addr, 16);
		/* Host bits are zero and offset < 2^(host bits): OR never touches the prefix. */
		out->v6[12] |= (uint8_t)(e->offset >> 24);
		out->v6[13] |= (uint8_t)(e->offset >> 16);
		out->v6[14] |= (uint8_t)(e->offset >> 8);
		out->v6[15] |= (uint8_t)e->offset;
	}
	out->resource_id = e->resource_id;
}

int synthetic_assign(struct synthetic *s, const char *name, size_t name_len, int64_t resource_id,
		     struct synthetic_mapping *out)
{
	memset(out, 0, sizeof(*out));
	if (name_len == 0 || name_len > SYNTHETIC_NAME_MAX)
		return SP_ERR_INVALID;
	uint64_t hash = name_hash(s->seed, name, name_len);
	uint32_t i = find_name(s, name, name_len, hash);
	if (i != NONE) {
		touch(s, i);
		s->entries[i].resource_id = resource_id;
		fill_mapping(s, &s->entries[i], out);
		return 0;
	}
	char *copy = malloc(name_len + 1);
	if (copy == NULL)
		return SP_ERR_NOMEM;
	memcpy(copy, name, name_len);
	copy[name_len] = '\0';
	if (s->count == s->capacity)
		evict(s, s->lru_tail);
	uint32_t offset = next_free_offset(s);
	i = s->free_head;
	struct synthetic_entry *e = &s->entries[i];
	s->free_head = e->offset_next;
	e->name = copy;
	e->name_len = name_len;
	e->name_hash = hash;
	e->offset = offset;
	e->resource_id = resource_id;
	size_t nb = hash & s->bucket_mask;
	e->name_next = s->name_buckets[nb];
	s->name_buckets[nb] = i;
	size_t ob = offset_bucket(s, offset);
	e->offset_next = s->offset_buckets[ob];
	s->offset_buckets[ob] = i;
	lru_push_front(s, i);
	s->count++;
	fill_mapping(s, e, out);
	return 0;
}

int synthetic_find(const struct synthetic *s, const char *name, size_t name_len,
		   struct synthetic_mapping *out)
{
	memset(out, 0, sizeof(*out));
	if (name_len == 0 || name_len > SYNTHETIC_NAME_MAX)
		return SP_ERR_NOT_FOUND;
	uint32_t i = find_name(s, name, name_len, name_hash(s->seed, name, name_len));
	if (i == NONE)
		return SP_ERR_NOT_FOUND;
	fill_mapping(s, &s->entries[i], out);
	return 0;
}

/* The offset an address stands for, or 0 when it is not one we could hand out. */
static uint32_t address_offset(const struct synthetic *s, int family, const uint8_t *addr)
{
	uint64_t offset;
	if (family == AF_INET) {
		if (!sp_cidr_contains(&s->v4, AF_INET, addr))
			return 0;
		uint32_t a = ((uint32_t)addr[0] << 24) | ((uint32_t)addr[1] << 16) |
			     ((uint32_t)addr[2] << 8) | addr[3];
		uint32_t base = ((uint32_t)s->v4.addr[0] << 24) | ((uint32_t)s->v4.addr[1] << 16) |
				((uint32_t)s->v4.addr[2] << 8) | s->v4.addr[3];
		offset = a - base;
	} else if (family == AF_INET6) {
		if (!s->has_v6 || !sp_cidr_contains(&s->v6, AF_INET6, addr))
			return 0;
		/* Offsets fit in the last 32 bits; anything set above them is not ours. */
		if (memcmp(addr, s->v6.addr, 12) != 0)
			return 0;
		offset = ((uint32_t)addr[12] << 24) | ((uint32_t)addr[13] << 16) |
			 ((uint32_t)addr[14] << 8) | addr[15];
	} else {
		return 0;
	}
	if (offset == 0 || offset > s->pool - 2)
		return 0;
	return (uint32_t)offset;
}

int synthetic_reverse(struct synthetic *s, int family, const uint8_t *addr, char *name_out,
		      size_t name_size, int64_t *resource_id)
{
	if (name_size > 0)
		name_out[0] = '\0';
	if (resource_id != NULL)
		*resource_id = 0;
	uint32_t offset = address_offset(s, family, addr);
	if (offset == 0)
		return SP_ERR_NOT_FOUND;
	uint32_t i = find_offset(s, offset);
	if (i == NONE)
		return SP_ERR_NOT_FOUND;
	const struct synthetic_entry *e = &s->entries[i];
	if (e->name_len + 1 > name_size)
		return SP_ERR_TOO_LARGE;
	memcpy(name_out, e->name, e->name_len + 1);
	if (resource_id != NULL)
		*resource_id = e->resource_id;
	touch(s, i);
	return 0;
}

size_t synthetic_count(const struct synthetic *s)
{
	return s->count;
}

size_t synthetic_capacity(const struct synthetic *s)
{
	return s->capacity;
}

int synthetic_has_v6(const struct synthetic *s)
{
	return s->has_v6;
}

const struct sp_cidr *synthetic_v4_range(const struct synthetic *s)
{
	return &s->v4;
}

const struct sp_cidr *synthetic_v6_range(const struct synthetic *s)
{
	return s->has_v6 ? &s->v6 : NULL;
}
