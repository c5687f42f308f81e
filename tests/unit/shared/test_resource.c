/* Unit tests for shared/resource.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "shared/resource.h"

/* Parses JSON text into a resource, failing the test on any error. */
static void parse_ok(const char *json, struct sp_resource *res)
{
	json_error_t jerr;
	json_t *object = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
	if (object == NULL)
		fail_msg("bad test JSON %s: %s", json, jerr.text);
	struct sp_diag diag = {{0}};
	int r = sp_resource_from_json(object, res, &diag);
	json_decref(object);
	if (r != 0)
		fail_msg("%s refused: %s", json, diag.message);
}

/* Expects the resource JSON to be refused with a diag containing needle. */
static void parse_error(const char *json, const char *needle)
{
	json_error_t jerr;
	json_t *object = json_loads(json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	if (object == NULL)
		fail_msg("bad test JSON %s: %s", json, jerr.text);
	struct sp_resource res;
	struct sp_diag diag = {{0}};
	int r = sp_resource_from_json(object, &res, &diag);
	json_decref(object);
	assert_true(r == SP_ERR_INVALID || r == SP_ERR_TOO_LARGE);
	/* Left zeroed. */
	assert_null(res.address.name);
	assert_int_equal(res.address.kind, SP_RESOURCE_ADDRESS_NONE);
	assert_null(res.alias);
	assert_null(res.tcp.ranges);
	if (strstr(diag.message, needle) == NULL)
		fail_msg("%s: diag \"%s\" lacks \"%s\"", json, diag.message, needle);
}

static void expect_address(const char *text, enum sp_resource_address_kind kind,
			   const char *canonical)
{
	struct sp_resource_address address;
	struct sp_diag diag = {{0}};
	char out[SP_RESOURCE_ADDRESS_TEXT_MAX];
	if (sp_resource_address_parse(text, &address, &diag) != 0)
		fail_msg("\"%s\" refused: %s", text, diag.message);
	assert_int_equal(address.kind, kind);
	assert_int_equal(sp_resource_address_format(&address, out, sizeof(out)), 0);
	assert_string_equal(out, canonical);
	sp_resource_address_free(&address);
	sp_resource_address_free(&address);
}

static void expect_address_error(const char *text, const char *needle)
{
	struct sp_resource_address address;
	struct sp_diag diag = {{0}};
	assert_int_equal(sp_resource_address_parse(text, &address, &diag), SP_ERR_INVALID);
	assert_int_equal(address.kind, SP_RESOURCE_ADDRESS_NONE);
	assert_null(address.name);
	if (strstr(diag.message, needle) == NULL)
		fail_msg("\"%s\": diag \"%s\" lacks \"%s\"", text, diag.message, needle);
}

static void test_address_kinds(void **state)
{
	(void)state;
	expect_address("grafana.corp.example", SP_RESOURCE_ADDRESS_NAME, "grafana.corp.example");
	expect_address("Grafana.Corp.Example.", SP_RESOURCE_ADDRESS_NAME, "grafana.corp.example");
	expect_address("*.corp.example", SP_RESOURCE_ADDRESS_PATTERN, "*.corp.example");
	expect_address("db-??.corp.example", SP_RESOURCE_ADDRESS_PATTERN, "db-??.corp.example");
	expect_address("10.1.2.0/24", SP_RESOURCE_ADDRESS_CIDR, "10.1.2.0/24");
	expect_address("10.1.2.3", SP_RESOURCE_ADDRESS_CIDR, "10.1.2.3");
	expect_address("fd00:1::/64", SP_RESOURCE_ADDRESS_CIDR, "fd00:1::/64");
	expect_address("::ffff:10.1.2.3", SP_RESOURCE_ADDRESS_CIDR, "10.1.2.3");
}

static void test_address_errors(void **state)
{
	(void)state;
	expect_address_error("10.1.2.3/24", "host bits set past /24; did you mean 10.1.2.0/24?");
	expect_address_error("10.1.2.0/33", "/33 is out of range 0-32");
	expect_address_error("10.1.2", "not a valid IPv4 address");
	expect_address_error("10.1.2.300", "not a valid IPv4 address");
	expect_address_error("grafana..corp", "label 2 is empty");
	expect_address_error("*", "last label must not hold a wildcard");
	expect_address_error("corp.*", "last label must not hold a wildcard");
	expect_address_error("", "empty");
	expect_address_error("a/b", "not a valid IPv4");
	char huge[400];
	memset(huge, 'a', sizeof(huge) - 1);
	huge[sizeof(huge) - 1] = '\0';
	expect_address_error(huge, "longer than 253");
	struct sp_resource_address address;
	assert_int_equal(sp_resource_address_parse(NULL, &address, NULL), SP_ERR_INVALID);
	char small[4];
	assert_int_equal(sp_resource_address_parse("grafana.corp", &address, NULL), 0);
	assert_int_equal(sp_resource_address_format(&address, small, sizeof(small)),
			 SP_ERR_TOO_LARGE);
	sp_resource_address_free(&address);
	assert_int_equal(sp_resource_address_format(&address, small, sizeof(small)),
			 SP_ERR_INVALID);
	sp_resource_address_free(NULL);
}

static void test_full_object(void **state)
{
	(void)state;
	struct sp_resource res;
	parse_ok("{\"id\": 12, \"network_id\": 3, \"name\": \"Grafana\", "
		 "\"address\": \"Grafana.Corp.Example.\", \"alias\": \"GRAFANA.sp\", "
		 "\"tcp\": [\"443\", \"22\", \"8000-8100\"], \"udp\": \"none\", \"icmp\": false}",
		 &res);
	assert_int_equal(res.id, 12);
	assert_int_equal(res.network_id, 3);
	assert_string_equal(res.name, "Grafana");
	assert_int_equal(res.address.kind, SP_RESOURCE_ADDRESS_NAME);
	assert_string_equal(res.address.name, "grafana.corp.example");
	assert_string_equal(res.alias, "grafana.sp");
	assert_int_equal(res.alias_len, 10);
	assert_int_equal(res.tcp.count, 3);
	assert_true(sp_portset_is_none(&res.udp));
	assert_false(res.icmp);

	json_t *out = NULL;
	assert_int_equal(sp_resource_to_json(&res, &out), 0);
	char *text = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
	assert_string_equal(text, "{\"address\":\"grafana.corp.example\",\"alias\":\"grafana.sp\","
				  "\"icmp\":false,\"id\":12,\"name\":\"Grafana\",\"network_id\":3,"
				  "\"tcp\":[\"22\",\"443\",\"8000-8100\"],\"udp\":\"none\"}");
	/* The canonical form parses back to an equal resource. */
	struct sp_resource again;
	parse_ok(text, &again);
	assert_int_equal(again.id, res.id);
	assert_string_equal(again.address.name, res.address.name);
	assert_true(sp_portset_equal(&again.tcp, &res.tcp));
	assert_true(sp_portset_equal(&again.udp, &res.udp));
	free(text);
	json_decref(out);
	sp_resource_free(&again);
	sp_resource_free(&res);
	sp_resource_free(&res);
	sp_resource_free(NULL);
}

static void test_defaults(void **state)
{
	(void)state;
	struct sp_resource res;
	parse_ok("{\"address\": \"10.1.2.0/24\"}", &res);
	assert_int_equal(res.id, 0);
	assert_int_equal(res.network_id, 0);
	assert_null(res.name);
	assert_null(res.alias);
	assert_true(sp_portset_is_all(&res.tcp));
	assert_true(sp_portset_is_all(&res.udp));
	assert_true(res.icmp);
	json_t *out = NULL;
	assert_int_equal(sp_resource_to_json(&res, &out), 0);
	char *text = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
	assert_string_equal(text, "{\"address\":\"10.1.2.0/24\",\"icmp\":true,\"id\":0,"
				  "\"network_id\":0,\"tcp\":\"all\",\"udp\":\"all\"}");
	free(text);
	json_decref(out);
	sp_resource_free(&res);
	/* null alias and name mean none. */
	parse_ok("{\"address\": \"a.corp\", \"alias\": null, \"name\": null}", &res);
	assert_null(res.alias);
	assert_null(res.name);
	sp_resource_free(&res);
}

static void test_json_errors_name_the_field(void **state)
{
	(void)state;
	parse_error("[]", "must be a JSON object");
	parse_error("\"a.corp\"", "must be a JSON object");
	parse_error("{}", "field \"address\" is missing");
	parse_error("{\"address\": \"a.corp\", \"ports\": \"all\"}", "unknown field \"ports\"");
	parse_error("{\"address\": \"a.corp\", \"Address\": \"b.corp\"}",
		    "unknown field \"Address\"");
	parse_error("{\"address\": 10}", "field \"address\" must be a string");
	parse_error("{\"address\": null}", "field \"address\" must be a string");
	parse_error("{\"address\": \"a\\u0000.corp\"}", "field \"address\" holds a NUL");
	parse_error("{\"address\": \"10.1.2.3/24\"}",
		    "field \"address\": \"10.1.2.3/24\" has host");
	parse_error("{\"address\": \"a.corp\", \"alias\": 5}", "field \"alias\" must be a string");
	parse_error("{\"address\": \"a.corp\", \"alias\": \"*.sp\"}",
		    "field \"alias\": \"*.sp\": wildcards");
	parse_error("{\"address\": \"a.corp\", \"alias\": \"-x.sp\"}",
		    "field \"alias\": \"-x.sp\": label 1 starts with a hyphen");
	parse_error("{\"address\": \"a.corp\", \"tcp\": 22}", "tcp: must be \"all\", \"none\"");
	parse_error("{\"address\": \"a.corp\", \"tcp\": [22]}", "tcp[0]: must be a string");
	parse_error("{\"address\": \"a.corp\", \"udp\": [\"0\"]}",
		    "udp[0]: port 0 is out of range");
	parse_error("{\"address\": \"a.corp\", \"udp\": [\"53\", \"65536\"]}",
		    "udp[1]: port 65536 is out of range");
	parse_error("{\"address\": \"a.corp\", \"tcp\": [\"8100-8000\"]}",
		    "tcp[0]: range start 8100 is above its end 8000");
	parse_error("{\"address\": \"a.corp\", \"icmp\": \"no\"}",
		    "field \"icmp\" must be true or false");
	parse_error("{\"address\": \"a.corp\", \"icmp\": 0}",
		    "field \"icmp\" must be true or false");
	parse_error("{\"address\": \"a.corp\", \"id\": \"12\"}", "field \"id\" must be an integer");
	parse_error("{\"address\": \"a.corp\", \"id\": 1.5}", "field \"id\" must be an integer");
	parse_error("{\"address\": \"a.corp\", \"id\": -1}", "field \"id\" must not be negative");
	parse_error("{\"address\": \"a.corp\", \"network_id\": true}",
		    "field \"network_id\" must be an integer");
	parse_error("{\"address\": \"a.corp\", \"name\": 7}", "field \"name\" must be a string");
	parse_error("{\"address\": \"a.corp\", \"name\": \"a\\nb\"}",
		    "field \"name\" holds a control character at byte 2");
	char json[600];
	char name[300];
	memset(name, 'n', 257);
	name[257] = '\0';
	snprintf(json, sizeof(json), "{\"address\": \"a.corp\", \"name\": \"%s\"}", name);
	parse_error(json, "field \"name\" is longer than 256 bytes");
	/* An unknown key with odd bytes is echoed safely. */
	parse_error("{\"address\": \"a.corp\", \"x\\ny\": 1}", "unknown field \"x?y\"");
}

static void test_list_from_json(void **state)
{
	(void)state;
	json_error_t jerr;
	json_t *array = json_loads("[{\"id\": 1, \"address\": \"a.corp\"},"
				   " {\"id\": 2, \"address\": \"10.0.0.0/8\"}]",
				   0, &jerr);
	assert_non_null(array);
	struct sp_resource *list = NULL;
	size_t count = 99;
	assert_int_equal(sp_resource_list_from_json(array, &list, &count, NULL), 0);
	assert_int_equal(count, 2);
	assert_int_equal(list[1].id, 2);
	assert_int_equal(list[1].address.kind, SP_RESOURCE_ADDRESS_CIDR);
	sp_resource_list_free(list, count);
	json_decref(array);

	array = json_loads("[{\"address\": \"a.corp\"}, {\"address\": \"b.corp\", \"tcp\": [1]}]",
			   0, &jerr);
	struct sp_diag diag = {{0}};
	assert_int_equal(sp_resource_list_from_json(array, &list, &count, &diag), SP_ERR_INVALID);
	assert_null(list);
	assert_int_equal(count, 0);
	assert_string_equal(diag.message, "resources[1]: tcp[0]: must be a string such as \"22\" "
					  "or \"8000-8100\"");
	json_decref(array);

	array = json_object();
	assert_int_equal(sp_resource_list_from_json(array, &list, &count, &diag), SP_ERR_INVALID);
	json_decref(array);
	array = json_array();
	assert_int_equal(sp_resource_list_from_json(array, &list, &count, NULL), 0);
	assert_int_equal(count, 0);
	sp_resource_list_free(list, count);
	json_decref(array);
	sp_resource_list_free(NULL, 3);
}

static void test_check_reasons(void **state)
{
	(void)state;
	struct sp_resource res;
	parse_ok("{\"address\": \"a.corp\", \"tcp\": [\"22\", \"8000-8100\"], \"udp\": \"none\","
		 " \"icmp\": false}",
		 &res);
	assert_int_equal(sp_resource_check(&res, SP_RESOURCE_PROTOCOL_TCP, 22),
			 SP_RESOURCE_ALLOWED);
	assert_int_equal(sp_resource_check(&res, SP_RESOURCE_PROTOCOL_TCP, 8000),
			 SP_RESOURCE_ALLOWED);
	assert_int_equal(sp_resource_check(&res, SP_RESOURCE_PROTOCOL_TCP, 8100),
			 SP_RESOURCE_ALLOWED);
	assert_int_equal(sp_resource_check(&res, SP_RESOURCE_PROTOCOL_TCP, 8101),
			 SP_RESOURCE_PORT_NOT_ALLOWED);
	assert_int_equal(sp_resource_check(&res, SP_RESOURCE_PROTOCOL_TCP, 0),
			 SP_RESOURCE_PORT_NOT_ALLOWED);
	assert_int_equal(sp_resource_check(&res, SP_RESOURCE_PROTOCOL_UDP, 53),
			 SP_RESOURCE_PROTOCOL_NOT_ALLOWED);
	assert_int_equal(sp_resource_check(&res, SP_RESOURCE_PROTOCOL_ICMP, 0),
			 SP_RESOURCE_PROTOCOL_NOT_ALLOWED);
	assert_int_equal(sp_resource_check(&res, SP_RESOURCE_PROTOCOL_ICMPV6, 0),
			 SP_RESOURCE_PROTOCOL_NOT_ALLOWED);
	assert_int_equal(sp_resource_check(&res, 47 /* GRE */, 0),
			 SP_RESOURCE_PROTOCOL_NOT_ALLOWED);
	assert_int_equal(sp_resource_check(NULL, SP_RESOURCE_PROTOCOL_TCP, 22),
			 SP_RESOURCE_NO_RESOURCE);
	assert_true(sp_resource_allows(&res, SP_RESOURCE_PROTOCOL_TCP, 22));
	assert_false(sp_resource_allows(&res, SP_RESOURCE_PROTOCOL_TCP, 23));
	sp_resource_free(&res);

	parse_ok("{\"address\": \"a.corp\", \"udp\": [\"53\"]}", &res);
	assert_true(sp_resource_allows(&res, SP_RESOURCE_PROTOCOL_ICMP, 0));
	assert_true(sp_resource_allows(&res, SP_RESOURCE_PROTOCOL_ICMPV6, 12345));
	assert_true(sp_resource_allows(&res, SP_RESOURCE_PROTOCOL_UDP, 53));
	assert_false(sp_resource_allows(&res, SP_RESOURCE_PROTOCOL_UDP, 54));
	assert_true(sp_resource_allows(&res, SP_RESOURCE_PROTOCOL_TCP, 65535));
	sp_resource_free(&res);

	assert_string_equal(sp_resource_reason_name(SP_RESOURCE_ALLOWED), "allowed");
	assert_string_equal(sp_resource_reason_name(SP_RESOURCE_NO_RESOURCE), "no_resource");
	assert_string_equal(sp_resource_reason_name(SP_RESOURCE_PORT_NOT_ALLOWED),
			    "port_not_allowed");
	assert_string_equal(sp_resource_reason_name(SP_RESOURCE_PROTOCOL_NOT_ALLOWED),
			    "protocol_not_allowed");
	assert_string_equal(sp_resource_reason_name((enum sp_resource_reason)42), "unknown");
}

static bool name_matches(const struct sp_resource *res, const char *name)
{
	return sp_resource_matches_name(res, name, strlen(name));
}

static void test_matches_name(void **state)
{
	(void)state;
	struct sp_resource exact, wild, cidr;
	parse_ok("{\"address\": \"grafana.corp.example\", \"alias\": \"grafana.sp\"}", &exact);
	parse_ok("{\"address\": \"*.a.b\"}", &wild);
	parse_ok("{\"address\": \"10.1.2.3\", \"alias\": \"db.sp\"}", &cidr);
	assert_true(name_matches(&exact, "grafana.corp.example"));
	assert_true(name_matches(&exact, "grafana.sp"));
	assert_false(name_matches(&exact, "grafana.corp.example.evil"));
	assert_false(name_matches(&exact, "x.grafana.corp.example"));
	assert_false(name_matches(&exact, "grafana.corp.exampl"));
	assert_true(name_matches(&wild, "x.a.b"));
	assert_false(name_matches(&wild, "a.b"));
	assert_true(name_matches(&cidr, "db.sp"));
	assert_false(name_matches(&cidr, "10.1.2.3"));
	sp_resource_free(&exact);
	sp_resource_free(&wild);
	sp_resource_free(&cidr);
}

static void test_address_allows_ip(void **state)
{
	(void)state;
	struct sp_resource net, host6, name;
	parse_ok("{\"address\": \"10.1.2.0/24\"}", &net);
	parse_ok("{\"address\": \"fd00::5\"}", &host6);
	parse_ok("{\"address\": \"a.corp\"}", &name);
	struct in_addr v4;
	struct in6_addr v6;
	inet_pton(AF_INET, "10.1.2.200", &v4);
	assert_true(sp_resource_address_allows_ip(&net, AF_INET, (const uint8_t *)&v4));
	inet_pton(AF_INET, "10.1.3.1", &v4);
	assert_false(sp_resource_address_allows_ip(&net, AF_INET, (const uint8_t *)&v4));
	/* A resolved IPv4-mapped answer is held to the IPv4 block. */
	inet_pton(AF_INET6, "::ffff:10.1.2.9", &v6);
	assert_true(sp_resource_address_allows_ip(&net, AF_INET6, v6.s6_addr));
	inet_pton(AF_INET6, "::ffff:10.9.2.9", &v6);
	assert_false(sp_resource_address_allows_ip(&net, AF_INET6, v6.s6_addr));
	inet_pton(AF_INET6, "fd00::5", &v6);
	assert_true(sp_resource_address_allows_ip(&host6, AF_INET6, v6.s6_addr));
	inet_pton(AF_INET6, "fd00::6", &v6);
	assert_false(sp_resource_address_allows_ip(&host6, AF_INET6, v6.s6_addr));
	/* A name resource contains no IP. */
	assert_false(sp_resource_address_allows_ip(&name, AF_INET, (const uint8_t *)&v4));
	assert_false(sp_resource_address_allows_ip(NULL, AF_INET, (const uint8_t *)&v4));
	assert_false(sp_resource_address_allows_ip(&net, AF_UNIX, (const uint8_t *)&v4));
	sp_resource_free(&net);
	sp_resource_free(&host6);
	sp_resource_free(&name);
}

static void test_copy(void **state)
{
	(void)state;
	struct sp_resource res, copy;
	parse_ok("{\"id\": 4, \"name\": \"N\", \"address\": \"*.corp\", \"alias\": \"x.sp\", "
		 "\"tcp\": [\"22\"], \"udp\": \"none\"}",
		 &res);
	assert_int_equal(sp_resource_copy(&res, &copy), 0);
	sp_resource_free(&res);
	assert_int_equal(copy.id, 4);
	assert_string_equal(copy.name, "N");
	assert_string_equal(copy.address.name, "*.corp");
	assert_int_equal(copy.address.specificity.literals, 5);
	assert_string_equal(copy.alias, "x.sp");
	assert_true(sp_portset_contains(&copy.tcp, 22));
	assert_true(sp_portset_is_none(&copy.udp));
	sp_resource_free(&copy);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_address_kinds),
	    cmocka_unit_test(test_address_errors),
	    cmocka_unit_test(test_full_object),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_json_errors_name_the_field),
	    cmocka_unit_test(test_list_from_json),
	    cmocka_unit_test(test_check_reasons),
	    cmocka_unit_test(test_matches_name),
	    cmocka_unit_test(test_address_allows_ip),
	    cmocka_unit_test(test_copy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
