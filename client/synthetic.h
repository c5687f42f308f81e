/*
 * client/synthetic.h — the synthetic addresses the client hands out for protected names.
 *
 * The DNS stub answers a protected name with an address from a range the client owns
 * (default 100.96.0.0/12, and an fd00::/8 ULA /64 for AAAA), never with the resource's
 * real address. Traffic to that address is then caught by the interception layer, which
 * asks this table which name (and resource) the address stands for.
 *
 * Each mapped name holds one "slot": an offset into both ranges, so a name's IPv4 and
 * IPv6 addresses share their host part (100.96.0.5 <-> fd73:7061:6c6c::5). Offsets run
 * from 1 to pool-1 where pool is the smaller range's size (capped at 2^32), so the
 * network address (offset 0) and the IPv4 broadcast address (last offset) are never
 * handed out. A name keeps its slot for as long as it is mapped, even when the resource
 * set changes. The table holds at most max_entries names; when full, the least recently
 * used name is dropped. New slots are taken from a cursor that walks the pool in order,
 * skipping slots still in use, so an address freed by eviction is reused as late as the
 * pool allows and an address still mapped is never given to a second name.
 *
 * Pure: no I/O, no clock (recency is the order of use). Names are compared exactly as
 * given: pass the lower-cased presentation text (struct sp_dns_name.text).
 *
 * Ownership: synthetic_new allocates the table; synthetic_free (safe on NULL) releases
 * it and every name it copied. Not thread-safe: the stub's event-loop thread owns it.
 */
#ifndef SALLYPORT_CLIENT_SYNTHETIC_H
#define SALLYPORT_CLIENT_SYNTHETIC_H

#include <stddef.h>
#include <stdint.h>

#include "shared/cidr.h"
#include "shared/error.h"

#define SYNTHETIC_DEFAULT_V4 "100.96.0.0/12"
/* A ULA (fd00::/8) /64 whose global id spells "spall" (0x73 0x70 0x61 0x6c 0x6c). */
#define SYNTHETIC_DEFAULT_V6 "fd73:7061:6c6c::/64"
#define SYNTHETIC_DEFAULT_MAX_ENTRIES 65536
/* Hard cap on max_entries, whatever the configuration says. */
#define SYNTHETIC_MAX_ENTRIES_LIMIT (1u << 22)
/* Longest name kept (presentation text of a DNS name, NUL excluded). */
#define SYNTHETIC_NAME_MAX 1003

/* Configuration. Strings are only read during synthetic_new. */
struct synthetic_config {
	const char *v4_range;	/* IPv4 CIDR, prefix at most /30; NULL: the default */
	const char *v6_range;	/* IPv6 CIDR, prefix at most /126; NULL: no IPv6 addresses */
	size_t max_entries;	/* 0: the default; at most SYNTHETIC_MAX_ENTRIES_LIMIT */
	uint64_t hash_seed;	/* seeds the name hash (pass random bytes) */
};

/* One mapping, copied out. */
struct synthetic_mapping {
	uint8_t v4[4];
	int has_v6;
	uint8_t v6[16];
	int64_t resource_id;
};

struct synthetic;

/*
 * Validates the ranges (SP_ERR_INVALID naming the bad one: not a CIDR, wrong family,
 * too small) and allocates an empty table. The pool is 2^(host bits) of the smaller
 * range, capped at 2^32; the usable slots are pool - 2, and max_entries is lowered to
 * that when larger.
 */
int synthetic_new(const struct synthetic_config *cfg, struct synthetic **out, struct sp_diag *diag);

/* Releases the table and its names. Safe on NULL. */
void synthetic_free(struct synthetic *s);

/*
 * The addresses for `name` (name_len bytes, 1..SYNTHETIC_NAME_MAX): the existing
 * mapping when there is one (made most recently used, resource_id updated), else a new
 * one, evicting the least recently used name when the table is full. Returns 0,
 * SP_ERR_INVALID (empty or overlong name) or SP_ERR_NOMEM; *out is zeroed on failure.
 */
int synthetic_assign(struct synthetic *s, const char *name, size_t name_len, int64_t resource_id,
		     struct synthetic_mapping *out);

/*
 * The existing mapping of `name`, without creating one or changing recency.
 * SP_ERR_NOT_FOUND when the name is not mapped.
 */
int synthetic_find(const struct synthetic *s, const char *name, size_t name_len,
		   struct synthetic_mapping *out);

/*
 * Reverse lookup for the interception layer: the name and resource an address
 * (family AF_INET with 4 bytes or AF_INET6 with 16) stands for. The name is copied into
 * name_out (NUL-terminated; SYNTHETIC_NAME_MAX + 1 bytes always suffice, SP_ERR_TOO_LARGE
 * when name_size is smaller than needed). A hit makes the name most recently used,
 * since a flow to it is a use. SP_ERR_NOT_FOUND for an address outside the ranges or
 * not mapped now.
 */
int synthetic_reverse(struct synthetic *s, int family, const uint8_t *addr, char *name_out,
		      size_t name_size, int64_t *resource_id);

/* Names mapped now. */
size_t synthetic_count(const struct synthetic *s);
/* The most names the table holds (max_entries after lowering to the pool). */
size_t synthetic_capacity(const struct synthetic *s);
/* 1 when the table hands out IPv6 addresses. */
int synthetic_has_v6(const struct synthetic *s);
/* The configured ranges. */
const struct sp_cidr *synthetic_v4_range(const struct synthetic *s);
const struct sp_cidr *synthetic_v6_range(const struct synthetic *s); /* NULL without IPv6 */

#endif
