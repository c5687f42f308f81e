/* Unit tests for shared/cidr.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "shared/cidr.h"

static void expect_canonical(const char *text, int family, unsigned prefix_len,
			     const char *canonical)
{
	struct sp_cidr cidr;
	struct sp_diag diag = {{0}};
	char out[SP_CIDR_TEXT_MAX];
	if (sp_cidr_parse(text, &cidr, &diag) != 0)
		fail_msg("\"%s\" refused: %s", text, diag.message);
	assert_int_equal(cidr.family, family);
	assert_int_equal(cidr.prefix_len, prefix_len);
	assert_int_equal(sp_cidr_format(&cidr, out, sizeof(out)), 0);
	assert_string_equal(out, canonical);
	/* The canonical text parses back to the same network. */
	struct sp_cidr again;
	assert_int_equal(sp_cidr_parse(out, &again, NULL), 0);
	assert_memory_equal(&again, &cidr, sizeof(cidr));
}

static void expect_error(const char *text, const char *needle)
{
	struct sp_cidr cidr;
	struct sp_diag diag = {{0}};
	assert_int_equal(sp_cidr_parse(text, &cidr, &diag), SP_ERR_INVALID);
	assert_int_equal(cidr.family, 0);
	if (strstr(diag.message, needle) == NULL)
		fail_msg("\"%s\": diag \"%s\" lacks \"%s\"", text, diag.message, needle);
}

static void test_ipv4(void **state)
{
	(void)state;
	expect_canonical("10.1.2.3", AF_INET, 32, "10.1.2.3");
	expect_canonical("10.1.2.3/32", AF_INET, 32, "10.1.2.3");
	expect_canonical("10.1.2.0/24", AF_INET, 24, "10.1.2.0/24");
	expect_canonical("10.0.0.0/8", AF_INET, 8, "10.0.0.0/8");
	expect_canonical("0.0.0.0/0", AF_INET, 0, "0.0.0.0/0");
	expect_canonical("255.255.255.255", AF_INET, 32, "255.255.255.255");
	expect_canonical("10.1.2.128/25", AF_INET, 25, "10.1.2.128/25");
	expect_canonical("0.0.0.0", AF_INET, 32, "0.0.0.0");
}

static void test_ipv4_errors(void **state)
{
	(void)state;
	expect_error("10.1.2.3/24", "host bits set past /24; did you mean 10.1.2.0/24?");
	expect_error("10.1.2.129/25", "did you mean 10.1.2.128/25?");
	expect_error("10.1.2.0/33", "prefix length /33 is out of range 0-32 for IPv4");
	expect_error("10.1.2.0/999999", "out of range 0-32");
	expect_error("10.1.2.0/", "prefix length after '/' must be a number");
	expect_error("10.1.2.0/-1", "must be a number");
	expect_error("10.1.2.0/08", "without leading zeros");
	expect_error("10.1.2.0/24/24", "must be a number");
	expect_error("10.1.2.0/2x", "must be a number");
	expect_error("256.1.2.3", "not a valid IPv4 address");
	expect_error("10.1.2", "not a valid IPv4 address");
	expect_error("10.1.2.3.4", "not a valid IPv4 address");
	expect_error("010.1.2.3", "no leading zeros");
	expect_error("10.1.2.03", "not a valid IPv4");
	expect_error("10..2.3", "not a valid IPv4");
	expect_error("10.1.2.3.", "not a valid IPv4");
	expect_error("1234.1.2.3", "not a valid IPv4");
	expect_error(" 10.1.2.3", "not a valid IPv4");
	expect_error("", "empty");
	expect_error("/24", "not a valid IPv4");
	expect_error("0x0a.1.2.3", "not a valid IPv4");
	struct sp_cidr cidr;
	assert_int_equal(sp_cidr_parse(NULL, &cidr, NULL), SP_ERR_INVALID);
}

static void test_ipv6(void **state)
{
	(void)state;
	expect_canonical("fd00:1::/64", AF_INET6, 64, "fd00:1::/64");
	expect_canonical("FD00:0001:0000:0000::/64", AF_INET6, 64, "fd00:1::/64");
	expect_canonical("fd00::1", AF_INET6, 128, "fd00::1");
	expect_canonical("fd00::1/128", AF_INET6, 128, "fd00::1");
	expect_canonical("::/0", AF_INET6, 0, "::/0");
	expect_canonical("::", AF_INET6, 128, "::");
	expect_canonical("2001:db8::/32", AF_INET6, 32, "2001:db8::/32");
	/* A /95 around the mapped block is IPv6: it is not wholly IPv4. */
	expect_canonical("::fffe:0:0/95", AF_INET6, 95, "::fffe:0:0/95");
}

static void test_ipv6_errors(void **state)
{
	(void)state;
	expect_error("fd00::1/64", "host bits set past /64; did you mean fd00::/64?");
	expect_error("fd00::/129", "prefix length /129 is out of range 0-128 for IPv6");
	expect_error("fd00:::1", "not a valid IPv6 address");
	expect_error("fd00::1::2", "not a valid IPv6 address");
	expect_error("fe80::1%eth0", "zone ids");
	expect_error("12345::", "not a valid IPv6");
	expect_error("g::1", "not a valid IPv6");
	char longtext[100];
	memset(longtext, '1', sizeof(longtext) - 1);
	longtext[sizeof(longtext) - 1] = '\0';
	expect_error(longtext, "longer than");
}

static void test_v4_mapped_folds_to_v4(void **state)
{
	(void)state;
	expect_canonical("::ffff:10.1.2.3", AF_INET, 32, "10.1.2.3");
	expect_canonical("::ffff:10.1.2.0/120", AF_INET, 24, "10.1.2.0/24");
	expect_canonical("::ffff:0:0/96", AF_INET, 0, "0.0.0.0/0");
	expect_canonical("::FFFF:a01:203", AF_INET, 32, "10.1.2.3");
	expect_error("::ffff:10.1.2.3/120", "host bits set");

	/* An address given as mapped IPv6 lands inside an IPv4 rule... */
	struct sp_cidr v4, v6_all;
	assert_int_equal(sp_cidr_parse("10.1.2.0/24", &v4, NULL), 0);
	assert_int_equal(sp_cidr_parse("::/0", &v6_all, NULL), 0);
	struct in6_addr mapped;
	assert_int_equal(inet_pton(AF_INET6, "::ffff:10.1.2.77", &mapped), 1);
	assert_true(sp_cidr_contains(&v4, AF_INET6, mapped.s6_addr));
	/* ...and never inside an IPv6 rule, not even ::/0. */
	assert_false(sp_cidr_contains(&v6_all, AF_INET6, mapped.s6_addr));
	struct in6_addr other;
	assert_int_equal(inet_pton(AF_INET6, "::ffff:10.1.3.1", &other), 1);
	assert_false(sp_cidr_contains(&v4, AF_INET6, other.s6_addr));
	/* The IPv4-compatible form ::a.b.c.d is plain IPv6, not folded. */
	struct in6_addr compat;
	assert_int_equal(inet_pton(AF_INET6, "::10.1.2.77", &compat), 1);
	assert_false(sp_cidr_contains(&v4, AF_INET6, compat.s6_addr));
	assert_true(sp_cidr_contains(&v6_all, AF_INET6, compat.s6_addr));

	int family;
	uint8_t addr[16];
	assert_int_equal(sp_cidr_normalize(AF_INET6, mapped.s6_addr, &family, addr), 0);
	assert_int_equal(family, AF_INET);
	const uint8_t want[16] = {10, 1, 2, 77};
	assert_memory_equal(addr, want, 16);
	assert_int_equal(sp_cidr_normalize(AF_UNIX, mapped.s6_addr, &family, addr), SP_ERR_INVALID);
	assert_int_equal(family, AF_UNSPEC);
}

static void test_contains(void **state)
{
	(void)state;
	struct sp_cidr net, host, all;
	assert_int_equal(sp_cidr_parse("10.1.2.0/23", &net, NULL), 0);
	assert_int_equal(sp_cidr_parse("10.1.2.3", &host, NULL), 0);
	assert_int_equal(sp_cidr_parse("0.0.0.0/0", &all, NULL), 0);
	const uint8_t in_low[4] = {10, 1, 2, 0}, in_high[4] = {10, 1, 3, 255};
	const uint8_t below[4] = {10, 1, 1, 255}, above[4] = {10, 1, 4, 0};
	assert_true(sp_cidr_contains(&net, AF_INET, in_low));
	assert_true(sp_cidr_contains(&net, AF_INET, in_high));
	assert_false(sp_cidr_contains(&net, AF_INET, below));
	assert_false(sp_cidr_contains(&net, AF_INET, above));
	const uint8_t exact[4] = {10, 1, 2, 3}, next[4] = {10, 1, 2, 4};
	assert_true(sp_cidr_contains(&host, AF_INET, exact));
	assert_false(sp_cidr_contains(&host, AF_INET, next));
	assert_true(sp_cidr_contains(&all, AF_INET, above));
	/* Family mismatch and unknown family. */
	struct sp_cidr v6;
	assert_int_equal(sp_cidr_parse("fd00::/8", &v6, NULL), 0);
	assert_false(sp_cidr_contains(&v6, AF_INET, exact));
	uint8_t v6_addr[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9};
	assert_true(sp_cidr_contains(&v6, AF_INET6, v6_addr));
	assert_false(sp_cidr_contains(&all, AF_INET6, v6_addr));
	assert_false(sp_cidr_contains(&v6, 12345, v6_addr));
}

static void test_parse_address(void **state)
{
	(void)state;
	int family;
	uint8_t addr[16];
	struct sp_diag diag = {{0}};
	assert_int_equal(sp_cidr_parse_address("192.168.0.1", &family, addr, NULL), 0);
	assert_int_equal(family, AF_INET);
	assert_int_equal(addr[0], 192);
	assert_int_equal(addr[3], 1);
	assert_int_equal(sp_cidr_parse_address("::ffff:192.168.0.1", &family, addr, NULL), 0);
	assert_int_equal(family, AF_INET);
	assert_int_equal(sp_cidr_parse_address("fd00::2", &family, addr, NULL), 0);
	assert_int_equal(family, AF_INET6);
	assert_int_equal(addr[15], 2);
	assert_int_equal(sp_cidr_parse_address("10.0.0.0/8", &family, addr, &diag), SP_ERR_INVALID);
	assert_non_null(strstr(diag.message, "single IP address"));
	assert_int_equal(family, AF_UNSPEC);
	assert_int_equal(sp_cidr_parse_address("nope", &family, addr, NULL), SP_ERR_INVALID);
}

static void test_format_small_buffer_and_mask(void **state)
{
	(void)state;
	struct sp_cidr cidr;
	char out[6];
	assert_int_equal(sp_cidr_parse("10.1.2.0/24", &cidr, NULL), 0);
	assert_int_equal(sp_cidr_format(&cidr, out, sizeof(out)), SP_ERR_TOO_LARGE);
	assert_string_equal(out, "");
	struct sp_cidr bad = {.family = 99};
	assert_int_equal(sp_cidr_format(&bad, out, sizeof(out)), SP_ERR_INVALID);

	uint8_t addr[16];
	memset(addr, 0xff, sizeof(addr));
	sp_cidr_mask(addr, 13);
	assert_int_equal(addr[0], 0xff);
	assert_int_equal(addr[1], 0xf8);
	assert_int_equal(addr[2], 0);
	memset(addr, 0xff, sizeof(addr));
	sp_cidr_mask(addr, 128);
	assert_int_equal(addr[15], 0xff);
	sp_cidr_mask(addr, 0);
	assert_int_equal(addr[0], 0);
	assert_int_equal(sp_cidr_family_bits(AF_INET), 32);
	assert_int_equal(sp_cidr_family_bits(AF_INET6), 128);
	assert_int_equal(sp_cidr_family_bits(AF_UNIX), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ipv4),
	    cmocka_unit_test(test_ipv4_errors),
	    cmocka_unit_test(test_ipv6),
	    cmocka_unit_test(test_ipv6_errors),
	    cmocka_unit_test(test_v4_mapped_folds_to_v4),
	    cmocka_unit_test(test_contains),
	    cmocka_unit_test(test_parse_address),
	    cmocka_unit_test(test_format_small_buffer_and_mask),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
