/*
 * shared/portset.h — sets of TCP or UDP ports, as admins write them on a resource.
 *
 * A port set is written as "all", "none", or a list of items "N" or "A-B"
 * (1 <= N, A, B <= 65535, A <= B). In JSON the list is an array of strings
 * (["22", "443", "8000-8100"]); as text (command line, fuzzing) it is the same items
 * joined by commas ("22,443,8000-8100"). Parsing sorts the ranges and merges any that
 * overlap or touch, so every set has one canonical form: "22,23" and "22-23" are the
 * same set, and a list covering 1-65535 is "all". Port 0 is never a member.
 *
 * Membership is a binary search over the merged ranges: O(log n).
 *
 * Ownership: struct sp_portset is owned by whoever holds it (usually inside struct
 * sp_resource); its ranges are heap memory released by sp_portset_free, which is safe
 * on a zeroed or already-freed set. A set is immutable after parsing, so concurrent
 * readers need no lock.
 */
#ifndef SALLYPORT_SHARED_PORTSET_H
#define SALLYPORT_SHARED_PORTSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "shared/buf.h"
#include "shared/error.h"

/* Most items one list may hold before merging (a bound on admin input, not on ports). */
#define SP_PORTSET_MAX_ITEMS 1024
/* Longest text form sp_portset_parse accepts ("65535-65535," is 12 bytes per item). */
#define SP_PORTSET_TEXT_MAX (SP_PORTSET_MAX_ITEMS * 12)

/* An inclusive range first..last, 1 <= first <= last <= 65535. */
struct sp_portset_range {
	uint16_t first;
	uint16_t last;
};

/*
 * Sorted, merged, non-adjacent ranges: ranges[i].last + 1 < ranges[i + 1].first.
 * count == 0 is "none"; one range 1-65535 is "all".
 */
struct sp_portset {
	struct sp_portset_range *ranges;
	uint32_t count;
};

/* Releases the ranges and leaves an empty ("none") set. Safe on NULL and twice. */
void sp_portset_free(struct sp_portset *set);

/*
 * Parses "all", "none" or a comma-separated list "22,443,8000-8100" (no spaces, no
 * empty items, no leading zeros). On failure *out is empty, the diag names the item,
 * and the result is SP_ERR_INVALID (SP_ERR_TOO_LARGE past SP_PORTSET_MAX_ITEMS items).
 */
int sp_portset_parse(const char *text, struct sp_portset *out, struct sp_diag *diag);

/*
 * Parses the JSON form: the string "all" or "none", or an array of strings each "N" or
 * "A-B" (an empty array is "none"). `field` ("tcp", "udp") is named in the diag, with
 * the array position when an item is wrong ("tcp[2]: port 0 is out of range 1-65535").
 */
int sp_portset_from_json(const json_t *value, const char *field, struct sp_portset *out,
			 struct sp_diag *diag);

/*
 * The canonical JSON form as a new reference in *out: "all", "none", or an array of
 * "N" / "A-B" strings in ascending order. SP_ERR_NOMEM when jansson cannot allocate.
 */
int sp_portset_to_json(const struct sp_portset *set, json_t **out);

/* Appends the canonical text form ("all", "none", "22,443,8000-8100") to buf. */
int sp_portset_format(const struct sp_portset *set, struct sp_buf *buf);

/* A deep copy into *out (zeroed first). 0 or SP_ERR_NOMEM. */
int sp_portset_copy(const struct sp_portset *set, struct sp_portset *out);

/* True when port is in the set. Port 0 is never a member. O(log count). */
bool sp_portset_contains(const struct sp_portset *set, uint16_t port);

/* True for the empty set ("none"). */
bool sp_portset_is_none(const struct sp_portset *set);
/* True for the full set 1-65535 ("all"). */
bool sp_portset_is_all(const struct sp_portset *set);
/* True when both sets hold exactly the same ports. */
bool sp_portset_equal(const struct sp_portset *a, const struct sp_portset *b);

#endif
