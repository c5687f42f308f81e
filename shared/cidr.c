/* shared/cidr.c — see cidr.h. */
#include "shared/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const uint8_t cidr_v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

unsigned sp_cidr_family_bits(int family)
{
	return family == AF_INET ? 32u : (family == AF_INET6 ? 128u : 0u);
}

void sp_cidr_mask(uint8_t addr[16], unsigned prefix_len)
{
	for (unsigned i = 0; i < 16; i++) {
		unsigned bit = i * 8;
		if (bit >= prefix_len)
			addr[i] = 0;
		else if (bit + 8 > prefix_len)
			addr[i] &= (uint8_t)(0xffu << (8 - (prefix_len - bit)));
	}
}

/* A printable copy of user text for diags. */
static void cidr_echo(const char *s, char out[SP_CIDR_INPUT_MAX + 1])
{
	size_t i = 0;
	for (; i < SP_CIDR_INPUT_MAX && s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];
		out[i] = (c >= 0x20 && c < 0x7f && c != '"') ? (char)c : '?';
	}
	out[i] = '\0';
}

/*
 * Dotted-quad decimal only: exactly four parts of 1-3 digits, each 0..255, no leading
 * zeros. Written here rather than left to inet_pton so the accepted forms are ours.
 */
static bool cidr_parse_v4(const char *s, uint8_t out[4])
{
	for (int part = 0; part < 4; part++) {
		unsigned value = 0, digits = 0;
		while (*s >= '0' && *s <= '9') {
			if (digits == 3 || (digits == 1 && value == 0))
				return false;
			value = value * 10 + (unsigned)(*s - '0');
			digits++;
			s++;
		}
		if (digits == 0 || value > 255)
			return false;
		out[part] = (uint8_t)value;
		if (part < 3 && *s++ != '.')
			return false;
	}
	return *s == '\0';
}

/* Address text (no "/LEN") into family and 16 bytes, not yet folded. */
static int cidr_parse_raw_address(const char *text, int *family, uint8_t addr[16])
{
	memset(addr, 0, 16);
	*family = AF_UNSPEC;
	if (strchr(text, ':') == NULL) {
		if (!cidr_parse_v4(text, addr))
			return SP_ERR_INVALID;
		*family = AF_INET;
		return 0;
	}
	struct in6_addr a6;
	if (inet_pton(AF_INET6, text, &a6) != 1)
		return SP_ERR_INVALID;
	memcpy(addr, a6.s6_addr, 16);
	*family = AF_INET6;
	return 0;
}

static bool cidr_is_v4_mapped(const uint8_t addr[16])
{
	return memcmp(addr, cidr_v4_mapped_prefix, sizeof(cidr_v4_mapped_prefix)) == 0;
}

/* Rewrites a mapped IPv6 address in place as IPv4 (16 bytes, zero padded). */
static void cidr_fold_mapped(uint8_t addr[16])
{
	uint8_t v4[4];
	memcpy(v4, addr + 12, 4);
	memset(addr, 0, 16);
	memcpy(addr, v4, 4);
}

int sp_cidr_parse(const char *text, struct sp_cidr *out, struct sp_diag *diag)
{
	char copy[SP_CIDR_INPUT_MAX + 1], echo[SP_CIDR_INPUT_MAX + 1];
	unsigned prefix_len;
	int family;

	memset(out, 0, sizeof(*out));
	if (text == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "address is missing");
	size_t len = strnlen(text, SP_CIDR_INPUT_MAX + 1);
	if (len > SP_CIDR_INPUT_MAX)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "IP address or CIDR is longer than %d characters",
				   SP_CIDR_INPUT_MAX);
	memcpy(copy, text, len + 1);
	cidr_echo(text, echo);
	if (len == 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "IP address is empty");
	if (strchr(copy, '%') != NULL)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "\"%s\": zone ids (\"%%eth0\") are not allowed in resources",
				   echo);

	char *slash = strchr(copy, '/');
	if (slash != NULL)
		*slash = '\0';
	if (cidr_parse_raw_address(copy, &family, out->addr) < 0)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   strchr(copy, ':') != NULL
				       ? "\"%s\" is not a valid IPv6 address"
				       : "\"%s\" is not a valid IPv4 address (dotted decimal, "
					 "no leading zeros)",
				   echo);
	unsigned bits = sp_cidr_family_bits(family);
	prefix_len = bits;
	if (slash != NULL) {
		const char *p = slash + 1;
		unsigned value = 0, digits = 0;
		for (; *p >= '0' && *p <= '9'; p++, digits++)
			if (digits < 4)
				value = value * 10 + (unsigned)(*p - '0');
		if (digits == 0 || *p != '\0' || (digits > 1 && slash[1] == '0'))
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "\"%s\": the prefix length after '/' must be a number "
					   "0-%u without leading zeros",
					   echo, bits);
		if (digits > 3 || value > bits)
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "\"%s\": prefix length /%s is out of range 0-%u for %s",
					   echo, slash + 1, bits,
					   family == AF_INET ? "IPv4" : "IPv6");
		prefix_len = value;
	}

	uint8_t masked[16];
	memcpy(masked, out->addr, 16);
	sp_cidr_mask(masked, prefix_len);
	if (memcmp(masked, out->addr, 16) != 0) {
		char network[SP_CIDR_TEXT_MAX];
		struct sp_cidr meant = {.family = family, .prefix_len = (uint8_t)prefix_len};
		memcpy(meant.addr, masked, 16);
		if (sp_cidr_format(&meant, network, sizeof(network)) < 0)
			network[0] = '\0';
		memset(out, 0, sizeof(*out));
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "\"%s\" has host bits set past /%u; did you mean %s?", echo,
				   prefix_len, network);
	}

	if (family == AF_INET6 && prefix_len >= 96 && cidr_is_v4_mapped(out->addr)) {
		cidr_fold_mapped(out->addr);
		family = AF_INET;
		prefix_len -= 96;
	}
	out->family = family;
	out->prefix_len = (uint8_t)prefix_len;
	return 0;
}

int sp_cidr_parse_address(const char *text, int *family, uint8_t addr[16], struct sp_diag *diag)
{
	struct sp_cidr cidr;

	*family = AF_UNSPEC;
	memset(addr, 0, 16);
	if (text != NULL && strnlen(text, SP_CIDR_INPUT_MAX + 1) <= SP_CIDR_INPUT_MAX &&
	    strchr(text, '/') != NULL)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "a single IP address was expected, not a network with '/'");
	int r = sp_cidr_parse(text, &cidr, diag);
	if (r < 0)
		return r;
	*family = cidr.family;
	memcpy(addr, cidr.addr, 16);
	return 0;
}

int sp_cidr_normalize(int family, const uint8_t *addr_in, int *out_family, uint8_t out[16])
{
	memset(out, 0, 16);
	*out_family = AF_UNSPEC;
	if (family == AF_INET) {
		memcpy(out, addr_in, 4);
	} else if (family == AF_INET6) {
		memcpy(out, addr_in, 16);
		if (cidr_is_v4_mapped(out)) {
			cidr_fold_mapped(out);
			family = AF_INET;
		}
	} else {
		return SP_ERR_INVALID;
	}
	*out_family = family;
	return 0;
}

bool sp_cidr_contains(const struct sp_cidr *cidr, int family, const uint8_t *addr)
{
	uint8_t normal[16];
	int normal_family;

	if (sp_cidr_normalize(family, addr, &normal_family, normal) < 0)
		return false;
	if (normal_family != cidr->family)
		return false;
	sp_cidr_mask(normal, cidr->prefix_len);
	return memcmp(normal, cidr->addr, 16) == 0;
}

int sp_cidr_format(const struct sp_cidr *cidr, char *out, size_t out_len)
{
	char text[INET6_ADDRSTRLEN];
	unsigned bits = sp_cidr_family_bits(cidr->family);

	if (out_len > 0)
		out[0] = '\0';
	if (bits == 0)
		return SP_ERR_INVALID;
	if (inet_ntop(cidr->family, cidr->addr, text, sizeof(text)) == NULL)
		return SP_ERR_INVALID;
	int n = cidr->prefix_len == bits
		    ? snprintf(out, out_len, "%s", text)
		    : snprintf(out, out_len, "%s/%u", text, (unsigned)cidr->prefix_len);
	if (n < 0 || (size_t)n >= out_len) {
		if (out_len > 0)
			out[0] = '\0';
		return SP_ERR_TOO_LARGE;
	}
	return 0;
}
