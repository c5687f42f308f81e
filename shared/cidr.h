/*
 * shared/cidr.h — IPv4 and IPv6 addresses and prefixes (CIDR blocks) for resources.
 *
 * A prefix is written "10.1.2.0/24" or "fd00:1::/64"; a bare address ("10.1.2.3",
 * "fd00::1") is the prefix of full length (/32, /128). Parsing is strict: the prefix
 * length must be in range and every host bit (the bits past the prefix) must be zero,
 * so "10.1.2.3/24" is refused with a diag that says which network was probably meant.
 * IPv4 accepts only dotted-quad decimal without leading zeros (no "010.1.2.3", no
 * "10.1"); IPv6 accepts the forms of RFC 4291 section 2.2 without zone ids.
 *
 * IPv4-mapped IPv6 (::ffff:a.b.c.d, RFC 4291 section 2.5.5.2) is folded into IPv4
 * everywhere: a prefix "::ffff:10.1.2.0/120" is stored as 10.1.2.0/24, and an address
 * ::ffff:10.1.2.3 handed to sp_cidr_contains or sp_cidr_normalize is treated as
 * 10.1.2.3. So a flow cannot dodge an IPv4 rule by spelling its destination as IPv6,
 * and an IPv6 rule (even ::/0) never covers IPv4 destinations.
 *
 * Families are the socket constants AF_INET and AF_INET6; address bytes are in
 * network order (4 or 16 bytes, as in struct in_addr / in6_addr).
 *
 * Ownership: plain values, no heap memory; copy freely. Pure functions, thread-safe.
 */
#ifndef SALLYPORT_SHARED_CIDR_H
#define SALLYPORT_SHARED_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "shared/error.h"

/* Longest text sp_cidr_format writes, NUL included ("ffff:...:ffff/128"). */
#define SP_CIDR_TEXT_MAX 64
/* Longest text sp_cidr_parse looks at; anything longer is refused unread. */
#define SP_CIDR_INPUT_MAX 63

/* A network: family AF_INET (addr[0..3] used, the rest zero) or AF_INET6. */
struct sp_cidr {
	int family;
	uint8_t prefix_len; /* 0..32 or 0..128 */
	uint8_t addr[16];   /* host bits are always zero */
};

/*
 * Parses "ADDRESS" or "ADDRESS/LEN". Host bits set, a length past the family's width,
 * a malformed address or a zone id are SP_ERR_INVALID with a diag naming the problem.
 * IPv4-mapped IPv6 with a length of at least 96 becomes IPv4 (length minus 96).
 */
int sp_cidr_parse(const char *text, struct sp_cidr *out, struct sp_diag *diag);

/*
 * Parses a single address (no "/LEN") into *family and addr (16 bytes; IPv4 uses the
 * first 4, the rest zeroed). IPv4-mapped IPv6 comes back as AF_INET.
 */
int sp_cidr_parse_address(const char *text, int *family, uint8_t addr[16], struct sp_diag *diag);

/*
 * Folds an address into the form rules are matched in: AF_INET stays, AF_INET6 that is
 * IPv4-mapped becomes AF_INET, other AF_INET6 stays. addr_in holds 4 or 16 bytes per
 * family; out gets 16 bytes (zero padded). SP_ERR_INVALID for any other family.
 */
int sp_cidr_normalize(int family, const uint8_t *addr_in, int *out_family, uint8_t out[16]);

/*
 * True when the address (4 or 16 bytes per family, folded as sp_cidr_normalize does)
 * lies inside the network. False for an unknown family or a family mismatch.
 */
bool sp_cidr_contains(const struct sp_cidr *cidr, int family, const uint8_t *addr);

/*
 * Canonical text into out (SP_CIDR_TEXT_MAX bytes is always enough): "10.1.2.0/24",
 * "fd00:1::/64", and a full-length prefix without its length ("10.1.2.3", "fd00::1").
 * SP_ERR_TOO_LARGE when out is too small, SP_ERR_INVALID for an unknown family.
 */
int sp_cidr_format(const struct sp_cidr *cidr, char *out, size_t out_len);

/* Width of the family in bits: 32, 128, or 0 for anything else. */
unsigned sp_cidr_family_bits(int family);

/* Zeroes the bits of addr (16 bytes) past prefix_len. */
void sp_cidr_mask(uint8_t addr[16], unsigned prefix_len);

#endif
