/*
 * client/loopback.h — loopback addresses for protected names ("loopback" mode).
 *
 * Without privileges the client cannot catch traffic to a resource's real address, so
 * each protected name gets its own address in a loopback range (default 127.77.0.0/16)
 * and the daemon listens there on the resource's TCP ports. A name keeps its address for
 * the daemon's lifetime (offsets are handed out in order from 1, never reused), so a
 * program that resolved it once keeps reaching the same listener. Only exact names (the
 * resource's address when it is a name, and its alias) get addresses: patterns and CIDRs
 * cannot be listened for. A resource whose TCP ports are "all" gets its address but no
 * listener (too many ports to bind): status says so. Pure: no sockets here.
 *
 * Ownership: loopback_new allocates, loopback_free (safe on NULL) releases.
 */
#ifndef SALLYPORT_CLIENT_LOOPBACK_H
#define SALLYPORT_CLIENT_LOOPBACK_H
#include <stddef.h>
#include <stdint.h>
#include "shared/error.h"
#include "shared/resource.h"

#define LOOPBACK_DEFAULT_RANGE "127.77.0.0/16"
#define LOOPBACK_MAX_NAMES 4096
/* At most this many ports of one resource get a listener (ranges are cut there). */
#define LOOPBACK_MAX_PORTS_PER_RESOURCE 64

struct loopback;

/* One listener the daemon should have: name, its address and one port. */
struct loopback_listener {
	const char *name; /* borrowed from the table */
	uint8_t addr[4];
	uint16_t port;
	size_t resource_position; /* index in the resource array given to loopback_plan */
};

/*
 * A table over `range` (an IPv4 CIDR inside 127.0.0.0/8 with a prefix of at most /30).
 * SP_ERR_INVALID naming the range otherwise; SP_ERR_NOMEM.
 */
int loopback_new(const char *range, struct loopback **out, struct sp_diag *diag);
void loopback_free(struct loopback *lb);
/*
 * The address of `name` (lower-case), assigning the next free one for a new name.
 * SP_ERR_TOO_LARGE when the range or LOOPBACK_MAX_NAMES is exhausted, SP_ERR_INVALID for an
 * empty name, SP_ERR_NOMEM.
 */
int loopback_assign(struct loopback *lb, const char *name, uint8_t addr[4]);
/* The name an address stands for, or NULL. */
const char *loopback_reverse(const struct loopback *lb, const uint8_t addr[4]);
/*
 * The listeners for `count` resources: for each exact name (address and alias) and each
 * explicit TCP port (at most LOOPBACK_MAX_PORTS_PER_RESOURCE per resource), one entry, in
 * resource order, written to out (at most cap; SP_ERR_TOO_LARGE beyond). *skipped_all is
 * set to the number of named resources whose TCP ports are "all". Returns 0 with *n.
 */
int loopback_plan(struct loopback *lb, const struct sp_resource *resources, size_t count,
		  struct loopback_listener *out, size_t cap, size_t *n, size_t *skipped_all);
#endif
