/*
 * shared/resource_index.h — find the resource a host name or IP belongs to, fast.
 *
 * The client asks "is this DNS name a resource?" for every query and the connector
 * asks "which resource covers this destination?" for every flow, against up to
 * SP_RESOURCE_MAX_COUNT resources. The index answers without scanning them:
 *
 *   - exact host names and aliases: one hash table (O(1));
 *   - wildcard patterns: bucketed by the whole labels after their last wildcard
 *     ("*.corp.example" and "db-??.corp.example" share the bucket "corp.example"); a
 *     lookup walks the name's label suffixes, finds each bucket with one hash probe, and
 *     tries that bucket's patterns most specific first, stopping at the first match or
 *     as soon as no remaining pattern could beat the best match so far;
 *   - IP addresses and CIDRs: one hash table keyed by (family, prefix length, masked
 *     address); a lookup probes the prefix lengths in use, longest first, and stops at
 *     the first hit (so at most 33 probes for IPv4, 129 for IPv6; usually two or three).
 *
 * Precedence when several resources cover one destination (docs/resources.md):
 *   - names: an exact name or alias beats every pattern; among patterns the most
 *     specific wins (most literal characters, then fewest '*', then fewest '?');
 *   - IPs: the longest prefix wins; an address (/32, /128) beats any network;
 *   - remaining ties go to the lowest id, then to the earliest position in the input.
 * The chosen resource alone decides the flow: if it does not allow the port, a broader
 * resource that would is not consulted.
 *
 * Ownership: sp_resource_index_build deep-copies the resources, so the caller may free
 * its array right after. The index is immutable once built: any number of threads may
 * look up concurrently without locks. Resources returned by lookups belong to the index
 * and live until sp_resource_index_free, which is safe on NULL.
 */
#ifndef SALLYPORT_SHARED_RESOURCE_INDEX_H
#define SALLYPORT_SHARED_RESOURCE_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "shared/error.h"
#include "shared/resource.h"

struct sp_resource_index;

/*
 * Builds an index over copies of `count` resources (at most SP_RESOURCE_MAX_COUNT,
 * else SP_ERR_TOO_LARGE). A resource without an address is SP_ERR_INVALID, with its
 * position in the diag. *out is NULL on failure.
 */
int sp_resource_index_build(const struct sp_resource *resources, size_t count,
			    struct sp_resource_index **out, struct sp_diag *diag);

/* Releases the index and its copies. Safe on NULL. */
void sp_resource_index_free(struct sp_resource_index *index);

/* Number of resources in the index. */
size_t sp_resource_index_count(const struct sp_resource_index *index);
/* The resource at `position` (input order), or NULL past the end. */
const struct sp_resource *sp_resource_index_get(const struct sp_resource_index *index,
						size_t position);

/*
 * The most specific resource whose name, alias or pattern matches `hostname` (any
 * case, optional trailing dot), or NULL when none does or the text is not a valid host
 * name. IP literals are not names: use sp_resource_index_match_ip for them.
 */
const struct sp_resource *sp_resource_index_match_name(const struct sp_resource_index *index,
						       const char *hostname);

/*
 * The resource with the longest prefix holding the address (family AF_INET with 4
 * bytes, or AF_INET6 with 16; IPv4-mapped IPv6 is matched as IPv4), or NULL.
 */
const struct sp_resource *sp_resource_index_match_ip(const struct sp_resource_index *index,
						     int family, const uint8_t *addr);

/*
 * The full decision for a flow to `destination` (a host name or an IP literal) with
 * `protocol` (enum sp_resource_protocol) and `port`: *res is the most specific resource
 * or NULL, *reason is SP_RESOURCE_ALLOWED, _NO_RESOURCE, _PORT_NOT_ALLOWED or
 * _PROTOCOL_NOT_ALLOWED. Returns 0 whenever a decision was made (allowed or not);
 * SP_ERR_INVALID, with *res NULL and *reason NO_RESOURCE, when the destination is
 * neither a valid host name nor an IP address.
 */
int sp_resource_index_match(const struct sp_resource_index *index, const char *destination,
			    int protocol, uint16_t port, const struct sp_resource **res,
			    enum sp_resource_reason *reason);

#endif
