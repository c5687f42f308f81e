/* shared/resource_index.c — see resource_index.h. */
#include "shared/resource_index.h"

#include <stdlib.h>
#include <string.h>

#define INDEX_EMPTY UINT32_MAX
/* A name has at most 127 labels, so at most 126 suffixes after a dot. */
#define INDEX_MAX_SUFFIXES (SP_RESOURCE_NAME_BUF / 2)

/* A slot of a name table: exact names map to a resource, bucket keys to a pattern run. */
struct index_name_slot {
	uint64_t hash;
	const char *key; /* NULL: empty slot; points into the index's resource copies */
	uint32_t key_len;
	uint32_t first; /* exact: resource position; bucket: start in index->patterns */
	uint32_t count; /* bucket: number of patterns */
};

/* A slot of the IP table: (family, prefix length, masked address) -> resource. */
struct index_ip_slot {
	uint64_t hash;
	uint32_t resource; /* INDEX_EMPTY: empty slot */
	uint8_t family_bits;
	uint8_t prefix_len;
	uint8_t addr[16];
};

/* Prefix lengths in use for one family, longest first. */
struct index_prefix_lengths {
	uint8_t lengths[129];
	unsigned count;
};

struct sp_resource_index {
	struct sp_resource *resources; /* deep copies, input order */
	size_t count;
	struct index_name_slot *names; /* exact names and aliases */
	size_t names_mask;
	struct index_name_slot *buckets; /* pattern buckets by key */
	size_t buckets_mask;
	uint32_t *patterns; /* resource positions, grouped by bucket, most specific first */
	size_t pattern_count;
	struct index_ip_slot *ips;
	size_t ips_mask;
	struct index_prefix_lengths v4, v6;
};

/* FNV-1a over the bytes from last to first, so suffix hashes extend leftwards. */
#define INDEX_HASH_SEED 0xcbf29ce484222325ULL
static inline uint64_t index_hash_step(uint64_t h, char c)
{
	return (h ^ (uint8_t)c) * 0x100000001b3ULL;
}

static uint64_t index_hash_name(const char *s, size_t len)
{
	uint64_t h = INDEX_HASH_SEED;
	while (len > 0)
		h = index_hash_step(h, s[--len]);
	return h;
}

/* Spreads the bits so the low ones index a power-of-two table well. */
static inline uint64_t index_mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/* Smallest power of two at least twice n (load factor at most one half). */
static size_t index_table_size(size_t n)
{
	size_t size = 16;
	while (size < 2 * n)
		size *= 2;
	return size;
}

/* True when resource a comes before b among equals: lower id, then earlier position. */
static bool index_before(const struct sp_resource_index *index, uint32_t a, uint32_t b)
{
	int64_t id_a = index->resources[a].id, id_b = index->resources[b].id;
	return id_a != id_b ? id_a < id_b : a < b;
}

static struct index_name_slot *index_name_find(struct index_name_slot *table, size_t mask,
					       uint64_t hash, const char *key, size_t key_len)
{
	for (size_t i = index_mix(hash) & mask;; i = (i + 1) & mask) {
		struct index_name_slot *slot = &table[i];
		if (slot->key == NULL)
			return slot;
		if (slot->hash == hash && slot->key_len == key_len &&
		    memcmp(slot->key, key, key_len) == 0)
			return slot;
	}
}

/* Adds an exact name for resource `position`, keeping the better resource on a clash. */
static void index_add_exact(struct sp_resource_index *index, const char *name, size_t len,
			    uint32_t position)
{
	uint64_t hash = index_hash_name(name, len);
	struct index_name_slot *slot =
	    index_name_find(index->names, index->names_mask, hash, name, len);
	if (slot->key == NULL) {
		*slot = (struct index_name_slot){hash, name, (uint32_t)len, position, 1};
	} else if (index_before(index, position, slot->first)) {
		slot->first = position;
	}
}

/* A pattern resource while sorting: its bucket key and rank. */
struct index_pattern {
	const char *key;
	uint32_t key_len;
	uint32_t position;
	int64_t id;
	struct sp_resource_name_specificity specificity;
};

/* Negative when a is more specific than b (most specific first), by the full order. */
static int index_pattern_rank(const struct index_pattern *a, const struct index_pattern *b)
{
	int c = sp_resource_name_specificity_compare(&a->specificity, &b->specificity);
	if (c != 0)
		return c;
	if (a->id != b->id)
		return a->id < b->id ? -1 : 1;
	return a->position < b->position ? -1 : (a->position > b->position ? 1 : 0);
}

static int index_pattern_order(const void *pa, const void *pb)
{
	const struct index_pattern *a = pa, *b = pb;
	if (a->key_len != b->key_len)
		return a->key_len < b->key_len ? -1 : 1;
	int c = memcmp(a->key, b->key, a->key_len);
	return c != 0 ? c : index_pattern_rank(a, b);
}

static int index_build_patterns(struct sp_resource_index *index)
{
	struct index_pattern *list = NULL;
	size_t n = 0, buckets = 0;
	int r = SP_ERR_NOMEM;

	for (size_t i = 0; i < index->count; i++)
		if (index->resources[i].address.kind == SP_RESOURCE_ADDRESS_PATTERN)
			n++;
	index->pattern_count = n;
	list = malloc((n != 0 ? n : 1) * sizeof(list[0]));
	index->patterns = malloc((n != 0 ? n : 1) * sizeof(index->patterns[0]));
	if (list == NULL || index->patterns == NULL)
		goto out;
	n = 0;
	for (size_t i = 0; i < index->count; i++) {
		const struct sp_resource *res = &index->resources[i];
		size_t key_offset;
		if (res->address.kind != SP_RESOURCE_ADDRESS_PATTERN)
			continue;
		if (sp_resource_name_pattern_key(res->address.name, res->address.name_len,
						 &key_offset) < 0) {
			r = SP_ERR_INTERNAL; /* parsed patterns always have a key */
			goto out;
		}
		list[n++] = (struct index_pattern){res->address.name + key_offset,
						   (uint32_t)(res->address.name_len - key_offset),
						   (uint32_t)i, res->id, res->address.specificity};
	}
	qsort(list, n, sizeof(list[0]), index_pattern_order);
	for (size_t i = 0; i < n; i++)
		if (i == 0 || list[i].key_len != list[i - 1].key_len ||
		    memcmp(list[i].key, list[i - 1].key, list[i].key_len) != 0)
			buckets++;
	size_t size = index_table_size(buckets);
	index->buckets = calloc(size, sizeof(index->buckets[0]));
	if (index->buckets == NULL)
		goto out;
	index->buckets_mask = size - 1;
	for (size_t i = 0; i < n; i++) {
		index->patterns[i] = list[i].position;
		uint64_t hash = index_hash_name(list[i].key, list[i].key_len);
		struct index_name_slot *slot = index_name_find(index->buckets, index->buckets_mask,
							       hash, list[i].key, list[i].key_len);
		if (slot->key == NULL)
			*slot = (struct index_name_slot){hash, list[i].key, list[i].key_len,
							 (uint32_t)i, 0};
		slot->count++;
	}
	r = 0;
out:
	free(list);
	return r;
}

static uint64_t index_hash_ip(unsigned family_bits, unsigned prefix_len, const uint8_t addr[16])
{
	uint64_t high, low;
	memcpy(&high, addr, 8);
	memcpy(&low, addr + 8, 8);
	uint64_t h = (high ^ (uint64_t)family_bits << 8 ^ prefix_len) * 0x9e3779b97f4a7c15ULL;
	return index_mix(h ^ low);
}

static struct index_ip_slot *index_ip_find(const struct sp_resource_index *index, uint64_t hash,
					   unsigned family_bits, unsigned prefix_len,
					   const uint8_t addr[16])
{
	for (size_t i = hash & index->ips_mask;; i = (i + 1) & index->ips_mask) {
		struct index_ip_slot *slot = &index->ips[i];
		if (slot->resource == INDEX_EMPTY)
			return slot;
		if (slot->hash == hash && slot->family_bits == family_bits &&
		    slot->prefix_len == prefix_len && memcmp(slot->addr, addr, 16) == 0)
			return slot;
	}
}

static int index_length_order(const void *pa, const void *pb)
{
	uint8_t a = *(const uint8_t *)pa, b = *(const uint8_t *)pb;
	return a > b ? -1 : (a < b ? 1 : 0);
}

static int index_build_ips(struct sp_resource_index *index)
{
	bool seen_v4[33] = {false}, seen_v6[129] = {false};
	size_t n = 0;

	for (size_t i = 0; i < index->count; i++)
		if (index->resources[i].address.kind == SP_RESOURCE_ADDRESS_CIDR)
			n++;
	size_t size = index_table_size(n);
	index->ips = malloc(size * sizeof(index->ips[0]));
	if (index->ips == NULL)
		return SP_ERR_NOMEM;
	index->ips_mask = size - 1;
	for (size_t i = 0; i < size; i++)
		index->ips[i].resource = INDEX_EMPTY;
	for (size_t i = 0; i < index->count; i++) {
		const struct sp_cidr *cidr = &index->resources[i].address.cidr;
		if (index->resources[i].address.kind != SP_RESOURCE_ADDRESS_CIDR)
			continue;
		unsigned bits = sp_cidr_family_bits(cidr->family);
		if (bits == 0 || cidr->prefix_len > bits)
			return SP_ERR_INTERNAL;
		struct index_prefix_lengths *lengths = bits == 32 ? &index->v4 : &index->v6;
		bool *seen = bits == 32 ? seen_v4 : seen_v6;
		if (!seen[cidr->prefix_len]) {
			seen[cidr->prefix_len] = true;
			lengths->lengths[lengths->count++] = cidr->prefix_len;
		}
		uint64_t hash = index_hash_ip(bits, cidr->prefix_len, cidr->addr);
		struct index_ip_slot *slot =
		    index_ip_find(index, hash, bits, cidr->prefix_len, cidr->addr);
		if (slot->resource == INDEX_EMPTY) {
			slot->hash = hash;
			slot->resource = (uint32_t)i;
			slot->family_bits = (uint8_t)bits;
			slot->prefix_len = cidr->prefix_len;
			memcpy(slot->addr, cidr->addr, 16);
		} else if (index_before(index, (uint32_t)i, slot->resource)) {
			slot->resource = (uint32_t)i;
		}
	}
	qsort(index->v4.lengths, index->v4.count, 1, index_length_order);
	qsort(index->v6.lengths, index->v6.count, 1, index_length_order);
	return 0;
}

int sp_resource_index_build(const struct sp_resource *resources, size_t count,
			    struct sp_resource_index **out, struct sp_diag *diag)
{
	struct sp_resource_index *index = NULL;
	size_t exact = 0;
	int r = SP_ERR_NOMEM;

	*out = NULL;
	if (count > SP_RESOURCE_MAX_COUNT)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "%zu resources; the most allowed is %d",
				   count, SP_RESOURCE_MAX_COUNT);
	for (size_t i = 0; i < count; i++) {
		enum sp_resource_address_kind kind = resources[i].address.kind;
		if (kind != SP_RESOURCE_ADDRESS_NAME && kind != SP_RESOURCE_ADDRESS_PATTERN &&
		    kind != SP_RESOURCE_ADDRESS_CIDR)
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "resource at position %zu (id %lld) has no address", i,
					   (long long)resources[i].id);
		if (kind == SP_RESOURCE_ADDRESS_NAME)
			exact++;
		if (resources[i].alias != NULL)
			exact++;
	}
	index = calloc(1, sizeof(*index));
	if (index == NULL)
		return SP_ERR_NOMEM;
	index->resources = calloc(count != 0 ? count : 1, sizeof(index->resources[0]));
	if (index->resources == NULL)
		goto fail;
	for (; index->count < count; index->count++)
		if (sp_resource_copy(&resources[index->count], &index->resources[index->count]) < 0)
			goto fail;

	size_t size = index_table_size(exact);
	index->names = calloc(size, sizeof(index->names[0]));
	if (index->names == NULL)
		goto fail;
	index->names_mask = size - 1;
	for (size_t i = 0; i < count; i++) {
		const struct sp_resource *res = &index->resources[i];
		if (res->address.kind == SP_RESOURCE_ADDRESS_NAME)
			index_add_exact(index, res->address.name, res->address.name_len,
					(uint32_t)i);
		if (res->alias != NULL)
			index_add_exact(index, res->alias, res->alias_len, (uint32_t)i);
	}
	r = index_build_patterns(index);
	if (r < 0)
		goto fail;
	r = index_build_ips(index);
	if (r < 0)
		goto fail;
	*out = index;
	return 0;
fail:
	sp_resource_index_free(index);
	return r;
}

void sp_resource_index_free(struct sp_resource_index *index)
{
	if (index == NULL)
		return;
	if (index->resources != NULL)
		for (size_t i = 0; i < index->count; i++)
			sp_resource_free(&index->resources[i]);
	free(index->resources);
	free(index->names);
	free(index->buckets);
	free(index->patterns);
	free(index->ips);
	free(index);
}

size_t sp_resource_index_count(const struct sp_resource_index *index)
{
	return index->count;
}

const struct sp_resource *sp_resource_index_get(const struct sp_resource_index *index,
						size_t position)
{
	return position < index->count ? &index->resources[position] : NULL;
}

/* Rank of a pattern resource for comparisons during lookup. */
static struct index_pattern index_pattern_of(const struct sp_resource_index *index,
					     uint32_t position)
{
	const struct sp_resource *res = &index->resources[position];
	return (struct index_pattern){NULL, 0, position, res->id, res->address.specificity};
}

/* The lookup on a normalised name. */
static const struct sp_resource *index_match_normal(const struct sp_resource_index *index,
						    const char *name, size_t len)
{
	uint64_t suffix_hash[INDEX_MAX_SUFFIXES];
	size_t suffix_start[INDEX_MAX_SUFFIXES];
	size_t suffixes = 0;
	uint64_t h = INDEX_HASH_SEED;

	/* One right-to-left pass hashes every label suffix and then the whole name. */
	for (size_t i = len; i > 0; i--) {
		if (name[i - 1] == '.' && suffixes < INDEX_MAX_SUFFIXES) {
			suffix_hash[suffixes] = h;
			suffix_start[suffixes++] = i;
		}
		h = index_hash_step(h, name[i - 1]);
	}
	const struct index_name_slot *exact =
	    index_name_find(index->names, index->names_mask, h, name, len);
	if (exact->key != NULL)
		return &index->resources[exact->first];

	uint32_t best = INDEX_EMPTY;
	struct index_pattern best_rank = {NULL, 0, 0, 0, {0, 0, 0}};
	for (size_t s = 0; s < suffixes; s++) {
		const struct index_name_slot *bucket =
		    index_name_find(index->buckets, index->buckets_mask, suffix_hash[s],
				    name + suffix_start[s], len - suffix_start[s]);
		if (bucket->key == NULL)
			continue;
		for (uint32_t k = 0; k < bucket->count; k++) {
			uint32_t position = index->patterns[bucket->first + k];
			struct index_pattern rank = index_pattern_of(index, position);
			/* Sorted most specific first: nothing further down can win. */
			if (best != INDEX_EMPTY && index_pattern_rank(&rank, &best_rank) >= 0)
				break;
			const struct sp_resource_address *address =
			    &index->resources[position].address;
			if (sp_resource_name_pattern_matches(address->name, address->name_len, name,
							     len)) {
				best = position;
				best_rank = rank;
				break;
			}
		}
	}
	return best != INDEX_EMPTY ? &index->resources[best] : NULL;
}

const struct sp_resource *sp_resource_index_match_name(const struct sp_resource_index *index,
						       const char *hostname)
{
	char normal[SP_RESOURCE_NAME_BUF];
	size_t len;

	if (sp_resource_name_normalize(hostname, normal, &len, NULL) < 0)
		return NULL;
	return index_match_normal(index, normal, len);
}

const struct sp_resource *sp_resource_index_match_ip(const struct sp_resource_index *index,
						     int family, const uint8_t *addr)
{
	uint8_t normal[16], key[16];
	int normal_family;

	if (sp_cidr_normalize(family, addr, &normal_family, normal) < 0)
		return NULL;
	unsigned bits = sp_cidr_family_bits(normal_family);
	const struct index_prefix_lengths *lengths = bits == 32 ? &index->v4 : &index->v6;
	for (unsigned i = 0; i < lengths->count; i++) {
		unsigned prefix_len = lengths->lengths[i];
		memcpy(key, normal, 16);
		sp_cidr_mask(key, prefix_len);
		uint64_t hash = index_hash_ip(bits, prefix_len, key);
		const struct index_ip_slot *slot =
		    index_ip_find(index, hash, bits, prefix_len, key);
		if (slot->resource != INDEX_EMPTY)
			return &index->resources[slot->resource];
	}
	return NULL;
}

/* True when text can only be an IP literal (the same test the address parser uses). */
static bool index_looks_like_ip(const char *text)
{
	bool digits_and_dots = true;
	for (const char *p = text; *p != '\0'; p++) {
		if (*p == ':')
			return true;
		if (*p != '.' && (*p < '0' || *p > '9'))
			digits_and_dots = false;
	}
	return digits_and_dots;
}

int sp_resource_index_match(const struct sp_resource_index *index, const char *destination,
			    int protocol, uint16_t port, const struct sp_resource **res,
			    enum sp_resource_reason *reason)
{
	const struct sp_resource *found;

	*res = NULL;
	*reason = SP_RESOURCE_NO_RESOURCE;
	if (destination == NULL ||
	    strnlen(destination, SP_RESOURCE_NAME_MAX + 2) > SP_RESOURCE_NAME_MAX + 1)
		return SP_ERR_INVALID;
	if (index_looks_like_ip(destination)) {
		uint8_t addr[16];
		int family;
		if (sp_cidr_parse_address(destination, &family, addr, NULL) < 0)
			return SP_ERR_INVALID;
		found = sp_resource_index_match_ip(index, family, addr);
	} else {
		char normal[SP_RESOURCE_NAME_BUF];
		size_t len;
		if (sp_resource_name_normalize(destination, normal, &len, NULL) < 0)
			return SP_ERR_INVALID;
		found = index_match_normal(index, normal, len);
	}
	*res = found;
	*reason = sp_resource_check(found, protocol, port);
	return 0;
}
