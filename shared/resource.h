/*
 * shared/resource.h — resources: what an admin makes reachable through a connector.
 *
 * A resource is defined as a JSON object:
 *
 *   { "id": 12, "network_id": 3, "name": "Grafana",
 *     "address": "grafana.corp.example" | "*.corp.example" | "db-??.corp.example"
 *              | "10.1.2.0/24" | "10.1.2.3" | "fd00:1::/64",
 *     "alias": "grafana.sp",
 *     "tcp": "all" | "none" | ["22", "443", "8000-8100"],
 *     "udp": "all" | "none" | ["53"],
 *     "icmp": false }
 *
 * Only "address" is required. "id" and "network_id" are non-negative integers
 * (default 0), "name" a display string (default none), "alias" a host name or null
 * (default none), "tcp" and "udp" default to "all" and "icmp" to true: a resource
 * given only by its address is the whole host, and policies decide who reaches it.
 * Any other field, or a field of the wrong type, is an error that names the field.
 *
 * Address forms and their matching rules (see docs/resources.md):
 *   - a host name: matches that name exactly (case-insensitive, trailing dot ignored);
 *   - a wildcard pattern: '*' any run of characters including dots, '?' one character
 *     other than a dot (shared/resource_name.h has the exact rules);
 *   - an IPv4/IPv6 address or CIDR block: matches IP destinations inside it, with
 *     IPv4-mapped IPv6 folded into IPv4 (shared/cidr.h).
 * The alias is an extra exact name the client answers DNS for; it matches like a host
 * name address.
 *
 * Ownership: struct sp_resource and struct sp_resource_address own heap strings and
 * port ranges; the caller that filled them releases them with sp_resource_free /
 * sp_resource_address_free (safe on zeroed structs and twice). Once parsed they are
 * read-only, so any number of threads may check against them.
 */
#ifndef SALLYPORT_SHARED_RESOURCE_H
#define SALLYPORT_SHARED_RESOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "shared/cidr.h"
#include "shared/error.h"
#include "shared/portset.h"
#include "shared/resource_name.h"

/* Most resources one list (and one index) may hold. */
#define SP_RESOURCE_MAX_COUNT 1000000
/* Longest display name, in bytes of UTF-8. */
#define SP_RESOURCE_DISPLAY_NAME_MAX 256
/* Buffer for sp_resource_address_format, NUL included. */
#define SP_RESOURCE_ADDRESS_TEXT_MAX SP_RESOURCE_NAME_BUF

enum sp_resource_address_kind {
	SP_RESOURCE_ADDRESS_NONE = 0, /* a zeroed struct */
	SP_RESOURCE_ADDRESS_NAME,     /* one exact host name */
	SP_RESOURCE_ADDRESS_PATTERN,  /* a wildcard pattern */
	SP_RESOURCE_ADDRESS_CIDR,     /* an IP address or network */
};

/* A parsed address. Owned by its holder; sp_resource_address_free releases name. */
struct sp_resource_address {
	enum sp_resource_address_kind kind;
	char *name;	 /* NAME, PATTERN: normalised text (heap); NULL for CIDR */
	size_t name_len; /* strlen(name) */
	struct sp_resource_name_specificity specificity; /* PATTERN only */
	struct sp_cidr cidr;				 /* CIDR only */
};

/* IP protocol numbers, so a packet's protocol field can be passed as is. */
enum sp_resource_protocol {
	SP_RESOURCE_PROTOCOL_ICMP = 1,
	SP_RESOURCE_PROTOCOL_TCP = 6,
	SP_RESOURCE_PROTOCOL_UDP = 17,
	SP_RESOURCE_PROTOCOL_ICMPV6 = 58,
};

/* The decision about one flow; the names (sp_resource_reason_name) go into flow events. */
enum sp_resource_reason {
	SP_RESOURCE_ALLOWED = 0,
	SP_RESOURCE_NO_RESOURCE,	  /* no resource covers the destination */
	SP_RESOURCE_PORT_NOT_ALLOWED,	  /* the protocol is allowed, this port is not */
	SP_RESOURCE_PROTOCOL_NOT_ALLOWED, /* the resource allows no port of this protocol */
};

/* One resource. Filled by sp_resource_from_json, released by sp_resource_free. */
struct sp_resource {
	int64_t id;
	int64_t network_id;
	char *name; /* display name (heap) or NULL */
	struct sp_resource_address address;
	char *alias; /* normalised host name (heap) or NULL */
	size_t alias_len;
	struct sp_portset tcp;
	struct sp_portset udp;
	bool icmp;
};

/*
 * Parses an address string: an IP address or CIDR when it holds ':' or '/' or only
 * digits and dots, a wildcard pattern when it holds '*' or '?', a host name otherwise.
 * On failure *out is zeroed and the diag says what is wrong (SP_ERR_INVALID, or
 * SP_ERR_NOMEM).
 */
int sp_resource_address_parse(const char *text, struct sp_resource_address *out,
			      struct sp_diag *diag);
/* Releases the name and zeroes the struct. Safe on NULL and twice. */
void sp_resource_address_free(struct sp_resource_address *address);
/* Canonical text of the address into out (SP_RESOURCE_ADDRESS_TEXT_MAX bytes suffice). */
int sp_resource_address_format(const struct sp_resource_address *address, char *out,
			       size_t out_len);

/*
 * Parses one resource object (shape above). Unknown fields, wrong types and bad values
 * are SP_ERR_INVALID with a diag naming the field ("tcp[1]: port 0 is out of range").
 * *out is zeroed first and left zeroed on failure. For JSON text, load it with
 * JSON_REJECT_DUPLICATES so a repeated field is refused too.
 */
int sp_resource_from_json(const json_t *object, struct sp_resource *out, struct sp_diag *diag);

/*
 * Parses an array of resource objects into a new array *out of *count resources
 * (release with sp_resource_list_free). Errors name the position ("resources[4]: ...").
 * More than SP_RESOURCE_MAX_COUNT is SP_ERR_TOO_LARGE.
 */
int sp_resource_list_from_json(const json_t *array, struct sp_resource **out, size_t *count,
			       struct sp_diag *diag);
/* Frees each resource and the array. Safe on NULL. */
void sp_resource_list_free(struct sp_resource *resources, size_t count);

/* The canonical JSON object of the resource, as a new reference in *out. */
int sp_resource_to_json(const struct sp_resource *res, json_t **out);

/* A deep copy into *out (zeroed first; left zeroed on failure). 0 or SP_ERR_NOMEM. */
int sp_resource_copy(const struct sp_resource *res, struct sp_resource *out);

/* Releases everything the resource owns and zeroes it. Safe on NULL and twice. */
void sp_resource_free(struct sp_resource *res);

/*
 * The decision for a flow of `protocol` (enum sp_resource_protocol; anything else is
 * refused) to `port` on this resource: ALLOWED, PROTOCOL_NOT_ALLOWED when the resource
 * allows no port of that protocol (or ICMP is off), PORT_NOT_ALLOWED otherwise. The
 * port is ignored for ICMP. A NULL resource gives NO_RESOURCE.
 */
enum sp_resource_reason sp_resource_check(const struct sp_resource *res, int protocol,
					  uint16_t port);
/* True when sp_resource_check gives SP_RESOURCE_ALLOWED. */
bool sp_resource_allows(const struct sp_resource *res, int protocol, uint16_t port);
/* "allowed", "no_resource", "port_not_allowed", "protocol_not_allowed" ("unknown" else). */
const char *sp_resource_reason_name(enum sp_resource_reason reason);

/*
 * True when a NORMALISED host name (sp_resource_name_normalize) is this resource's
 * name address, matches its pattern, or equals its alias. Always false for a CIDR
 * resource without an alias. The linear reference for the index.
 */
bool sp_resource_matches_name(const struct sp_resource *res, const char *name, size_t name_len);

/*
 * True when the resource is given by an IP address or CIDR and the address (family
 * AF_INET with 4 bytes or AF_INET6 with 16, IPv4-mapped folded to IPv4) lies inside
 * it. False for name and pattern resources: they contain no IP of their own. The
 * connector calls this on every resolved or requested IP of a CIDR/IP resource so a
 * flow cannot leave the block it was allowed into.
 */
bool sp_resource_address_allows_ip(const struct sp_resource *res, int family, const uint8_t *addr);

#endif
