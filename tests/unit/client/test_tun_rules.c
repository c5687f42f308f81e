/* Unit tests for client/tun_rules.c: validation, the exact nft script and ip commands of
 * tun mode, the cleanup list, and the word splitter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "client/tun_rules.h"

static struct tun_rules dual(void)
{
	struct tun_rules r;
	struct sp_diag diag = {{0}};
	struct tun_rules_config c = {.v4_range = "100.96.0.0/12", .v6_range = "fd73:7061:6c6c::/64",
				     .port_v4 = 7777, .port_v6 = 7778};
	assert_int_equal(tun_rules_prepare(&c, &r, &diag), 0);
	return r;
}

static void test_prepare(void **state)
{
	(void)state;
	struct tun_rules r = dual();
	assert_string_equal(r.device, "sallyport0");
	assert_string_equal(r.v4, "100.96.0.0/12");
	assert_string_equal(r.v6, "fd73:7061:6c6c::/64");
	/* the last offset of the 2^20 pool: never handed out by client/synthetic.c */
	assert_string_equal(r.dev_v4, "100.111.255.255");
	assert_string_equal(r.dev_v6, "fd73:7061:6c6c::f:ffff");
	struct sp_diag diag = {{0}};
	struct tun_rules_config c = {.device = "sp-test_1", .v4_range = "10.1.2.0/24",
				     .v6_range = "off", .port_v4 = 1};
	assert_int_equal(tun_rules_prepare(&c, &r, &diag), 0);
	assert_string_equal(r.device, "sp-test_1");
	assert_string_equal(r.v6, "");
	assert_string_equal(r.dev_v4, "10.1.2.255");
	assert_string_equal(r.dev_v6, "");
	/* a /120 IPv6 range makes the pool smaller than the IPv4 one */
	c = (struct tun_rules_config){.v4_range = "100.64.0.0/10", .v6_range = "fd00::/120",
				      .port_v4 = 1, .port_v6 = 2};
	assert_int_equal(tun_rules_prepare(&c, &r, &diag), 0);
	assert_string_equal(r.dev_v4, "100.64.0.255");
	assert_string_equal(r.dev_v6, "fd00::ff");
}

static void test_prepare_refuses(void **state)
{
	(void)state;
	struct tun_rules r;
	struct sp_diag diag = {{0}};
	const char *bad_devices[] = {"", "0abc", "Sallyport", "a b", "a;reboot", "abcdefghijklmnop",
				     "eth0/x"};
	for (size_t i = 0; i < sizeof(bad_devices) / sizeof(bad_devices[0]); i++) {
		struct tun_rules_config c = {.device = bad_devices[i], .v4_range = "100.96.0.0/12",
					     .port_v4 = 1};
		assert_int_equal(tun_rules_prepare(&c, &r, &diag), SP_ERR_INVALID);
		assert_non_null(strstr(diag.message, "tun device"));
	}
	struct tun_rules_config c = {.v4_range = "fd00::/64", .port_v4 = 1};
	assert_int_equal(tun_rules_prepare(&c, &r, &diag), SP_ERR_INVALID);
	assert_non_null(strstr(diag.message, "IPv4 range"));
	c = (struct tun_rules_config){.v4_range = "100.96.0.0/12 accept", .port_v4 = 1};
	assert_int_equal(tun_rules_prepare(&c, &r, &diag), SP_ERR_INVALID);
	c = (struct tun_rules_config){.v4_range = "100.96.0.1/31", .port_v4 = 1};
	assert_int_equal(tun_rules_prepare(&c, &r, &diag), SP_ERR_INVALID);
	c = (struct tun_rules_config){.v4_range = "100.96.0.0/12", .v6_range = "10.0.0.0/8",
				      .port_v4 = 1, .port_v6 = 2};
	assert_int_equal(tun_rules_prepare(&c, &r, &diag), SP_ERR_INVALID);
	assert_non_null(strstr(diag.message, "IPv6 range"));
	c = (struct tun_rules_config){.v4_range = "100.96.0.0/12", .v6_range = "fd00::/64",
				      .port_v4 = 1};
	assert_int_equal(tun_rules_prepare(&c, &r, &diag), SP_ERR_INVALID);
	c = (struct tun_rules_config){.v4_range = "100.96.0.0/12", .port_v4 = 0};
	assert_int_equal(tun_rules_prepare(&c, &r, &diag), SP_ERR_INVALID);
	assert_string_equal(r.device, "");
}

static void test_nft_script(void **state)
{
	(void)state;
	struct tun_rules r = dual();
	char out[TUN_RULES_SCRIPT_MAX];
	assert_int_equal(tun_rules_nft_script(&r, out, sizeof(out)), 0);
	assert_string_equal(
	    out, "table inet sallyport {\n"
		 "\tchain output {\n"
		 "\t\ttype route hook output priority mangle; policy accept;\n"
		 "\t\tip daddr 100.96.0.0/12 meta l4proto tcp meta mark set 0x5350\n"
		 "\t\tip6 daddr fd73:7061:6c6c::/64 meta l4proto tcp meta mark set 0x5350\n"
		 "\t}\n"
		 "\tchain prerouting {\n"
		 "\t\ttype filter hook prerouting priority mangle; policy accept;\n"
		 "\t\tiifname \"lo\" ip daddr 100.96.0.0/12 meta l4proto tcp tproxy ip to "
		 "127.0.0.1:7777 meta mark set 0x5350 accept\n"
		 "\t\tiifname \"lo\" ip6 daddr fd73:7061:6c6c::/64 meta l4proto tcp tproxy ip6 to "
		 "[::1]:7778 meta mark set 0x5350 accept\n"
		 "\t}\n"
		 "}\n");
	/* IPv4 only: no ip6 lines */
	struct sp_diag diag = {{0}};
	struct tun_rules_config c = {.v4_range = "100.96.0.0/12", .port_v4 = 9};
	assert_int_equal(tun_rules_prepare(&c, &r, &diag), 0);
	assert_int_equal(tun_rules_nft_script(&r, out, sizeof(out)), 0);
	assert_null(strstr(out, "ip6"));
	assert_non_null(strstr(out, "tproxy ip to 127.0.0.1:9 "));
	/* too small a buffer: nothing half-written */
	assert_int_equal(tun_rules_nft_script(&r, out, 40), SP_ERR_TOO_LARGE);
	assert_string_equal(out, "");
	assert_int_equal(tun_rules_nft_script(&r, out, 0), SP_ERR_TOO_LARGE);
}

static void test_nft_script_udp(void **state)
{
	(void)state;
	struct tun_rules r;
	struct sp_diag diag = {{0}};
	struct tun_rules_config c = {.v4_range = "100.96.0.0/12", .v6_range = "fd73:7061:6c6c::/64",
				     .port_v4 = 7777, .port_v6 = 7778, .udp_port_v4 = 5353,
				     .udp_port_v6 = 5354};
	assert_int_equal(tun_rules_prepare(&c, &r, &diag), 0);
	assert_int_equal(r.udp_port_v4, 5353);
	assert_int_equal(r.udp_port_v6, 5354);
	char out[TUN_RULES_SCRIPT_MAX];
	assert_int_equal(tun_rules_nft_script(&r, out, sizeof(out)), 0);
	assert_string_equal(
	    out, "table inet sallyport {\n"
		 "\tchain output {\n"
		 "\t\ttype route hook output priority mangle; policy accept;\n"
		 "\t\tip daddr 100.96.0.0/12 meta l4proto tcp meta mark set 0x5350\n"
		 "\t\tip6 daddr fd73:7061:6c6c::/64 meta l4proto tcp meta mark set 0x5350\n"
		 "\t\tip daddr 100.96.0.0/12 ip daddr != 100.111.255.255 meta l4proto udp "
		 "meta mark set 0x5350\n"
		 "\t\tip6 daddr fd73:7061:6c6c::/64 ip6 daddr != fd73:7061:6c6c::f:ffff "
		 "meta l4proto udp meta mark set 0x5350\n"
		 "\t}\n"
		 "\tchain prerouting {\n"
		 "\t\ttype filter hook prerouting priority mangle; policy accept;\n"
		 "\t\tiifname \"lo\" ip daddr 100.96.0.0/12 meta l4proto tcp tproxy ip to "
		 "127.0.0.1:7777 meta mark set 0x5350 accept\n"
		 "\t\tiifname \"lo\" ip6 daddr fd73:7061:6c6c::/64 meta l4proto tcp tproxy ip6 to "
		 "[::1]:7778 meta mark set 0x5350 accept\n"
		 "\t\tiifname \"lo\" ip daddr 100.96.0.0/12 ip daddr != 100.111.255.255 "
		 "meta l4proto udp tproxy ip to 127.0.0.1:5353 meta mark set 0x5350 accept\n"
		 "\t\tiifname \"lo\" ip6 daddr fd73:7061:6c6c::/64 ip6 daddr != fd73:7061:6c6c::f:ffff "
		 "meta l4proto udp tproxy ip6 to [::1]:5354 meta mark set 0x5350 accept\n"
		 "\t}\n"
		 "}\n");
	/* IPv4 only with UDP */
	c = (struct tun_rules_config){.v4_range = "100.96.0.0/12", .port_v4 = 9, .udp_port_v4 = 10};
	assert_int_equal(tun_rules_prepare(&c, &r, &diag), 0);
	assert_int_equal(tun_rules_nft_script(&r, out, sizeof(out)), 0);
	assert_null(strstr(out, "ip6"));
	assert_non_null(strstr(out, "udp tproxy ip to 127.0.0.1:10 "));
	/* UDP ports: one per family in use, or none */
	c = (struct tun_rules_config){.v4_range = "100.96.0.0/12", .v6_range = "fd00::/64",
				      .port_v4 = 1, .port_v6 = 2, .udp_port_v4 = 3};
	assert_int_equal(tun_rules_prepare(&c, &r, &diag), SP_ERR_INVALID);
	assert_non_null(strstr(diag.message, "UDP"));
	c = (struct tun_rules_config){.v4_range = "100.96.0.0/12", .port_v4 = 1, .udp_port_v6 = 3};
	assert_int_equal(tun_rules_prepare(&c, &r, &diag), SP_ERR_INVALID);
	c = (struct tun_rules_config){.v4_range = "100.96.0.0/12", .port_v4 = 1, .udp_port_v4 = 3,
				      .udp_port_v6 = 4};
	assert_int_equal(tun_rules_prepare(&c, &r, &diag), SP_ERR_INVALID);
	assert_int_equal(r.udp_port_v4, 0);
}

static void test_up_lines(void **state)
{
	(void)state;
	struct tun_rules r = dual();
	struct tun_rules_lines l;
	assert_int_equal(tun_rules_up_lines(&r, &l), 0);
	const char *want[] = {
	    "ip addr add 100.111.255.255/32 dev sallyport0",
	    "ip -6 addr add fd73:7061:6c6c::f:ffff/128 dev sallyport0 nodad",
	    "ip link set dev sallyport0 mtu 65535 up",
	    "ip route add 100.96.0.0/12 dev sallyport0",
	    "ip -6 route add fd73:7061:6c6c::/64 dev sallyport0",
	    "ip rule add fwmark 0x5350 lookup 5350",
	    "ip route add local 0.0.0.0/0 dev lo table 5350",
	    "ip -6 rule add fwmark 0x5350 lookup 5350",
	    "ip -6 route add local ::/0 dev lo table 5350",
	};
	assert_int_equal(l.count, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < l.count; i++)
		assert_string_equal(l.line[i], want[i]);
	struct sp_diag diag = {{0}};
	struct tun_rules_config c = {.v4_range = "100.96.0.0/12", .port_v4 = 9};
	assert_int_equal(tun_rules_prepare(&c, &r, &diag), 0);
	assert_int_equal(tun_rules_up_lines(&r, &l), 0);
	assert_int_equal(l.count, 5);
	for (size_t i = 0; i < l.count; i++)
		assert_null(strstr(l.line[i], "-6"));
}

static void test_down_lines(void **state)
{
	(void)state;
	struct tun_rules r = dual();
	struct tun_rules_lines l;
	assert_int_equal(tun_rules_down_lines(&r, &l), 0);
	const char *want[] = {
	    "nft delete table inet sallyport",	     "ip rule del fwmark 0x5350 lookup 5350",
	    "ip -6 rule del fwmark 0x5350 lookup 5350", "ip route flush table 5350",
	    "ip -6 route flush table 5350",	     "ip link del dev sallyport0",
	};
	assert_int_equal(l.count, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < l.count; i++)
		assert_string_equal(l.line[i], want[i]);
	/* the cleanup needs only the device name (the CLI's `down` knows no ranges) */
	struct tun_rules only_name;
	memset(&only_name, 0, sizeof(only_name));
	snprintf(only_name.device, sizeof(only_name.device), "spx");
	assert_int_equal(tun_rules_down_lines(&only_name, &l), 0);
	assert_string_equal(l.line[5], "ip link del dev spx");
}

static void test_split(void **state)
{
	(void)state;
	char line[] = "ip  -6 rule add fwmark 0x5350 ";
	char *argv[8];
	assert_int_equal(tun_rules_split(line, argv, 8), 6);
	assert_string_equal(argv[0], "ip");
	assert_string_equal(argv[1], "-6");
	assert_string_equal(argv[5], "0x5350");
	assert_null(argv[6]);
	char two[] = "a b";
	assert_int_equal(tun_rules_split(two, argv, 3), 2);
	assert_string_equal(argv[1], "b");
	assert_null(argv[2]);
	char four[] = "a b c d";
	assert_int_equal(tun_rules_split(four, argv, 3), 0); /* more words than room */
	assert_null(argv[0]);
	char empty[] = "   ";
	assert_int_equal(tun_rules_split(empty, argv, 8), 0);
	assert_null(argv[0]);
	assert_int_equal(tun_rules_split(empty, argv, 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_prepare),	cmocka_unit_test(test_prepare_refuses),
	    cmocka_unit_test(test_nft_script),
	    cmocka_unit_test(test_nft_script_udp), cmocka_unit_test(test_up_lines),
	    cmocka_unit_test(test_down_lines), cmocka_unit_test(test_split),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
