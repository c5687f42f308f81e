/* Unit tests for shared/resource_index.c: precedence, decisions, and a random
 * comparison of the index against a brute-force linear scan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "shared/resource_index.h"

/* Resources for one test, parsed from JSON strings. */
struct fixture {
	struct sp_resource *list;
	size_t count;
	struct sp_resource_index *index;
};

static void fixture_build(struct fixture *f, const char *const *json, size_t count)
{
	f->list = calloc(count, sizeof(f->list[0]));
	assert_non_null(f->list);
	f->count = count;
	for (size_t i = 0; i < count; i++) {
		json_error_t jerr;
		json_t *object = json_loads(json[i], 0, &jerr);
		if (object == NULL)
			fail_msg("bad test JSON %s", json[i]);
		struct sp_diag diag = {{0}};
		if (sp_resource_from_json(object, &f->list[i], &diag) != 0)
			fail_msg("%s: %s", json[i], diag.message);
		json_decref(object);
	}
	struct sp_diag diag = {{0}};
	if (sp_resource_index_build(f->list, count, &f->index, &diag) != 0)
		fail_msg("build: %s", diag.message);
}

static void fixture_free(struct fixture *f)
{
	sp_resource_index_free(f->index);
	sp_resource_list_free(f->list, f->count);
}

/* The id of the resource a name lookup finds, or -1. */
static int64_t name_id(const struct fixture *f, const char *name)
{
	const struct sp_resource *res = sp_resource_index_match_name(f->index, name);
	return res != NULL ? res->id : -1;
}

static int64_t ip_id(const struct fixture *f, const char *text)
{
	uint8_t addr[16];
	int family = strchr(text, ':') != NULL ? AF_INET6 : AF_INET;
	assert_int_equal(inet_pton(family, text, addr), 1);
	const struct sp_resource *res = sp_resource_index_match_ip(f->index, family, addr);
	return res != NULL ? res->id : -1;
}

static void test_name_precedence(void **state)
{
	(void)state;
	const char *const json[] = {
	    "{\"id\": 1, \"address\": \"*.corp.example\"}",
	    "{\"id\": 2, \"address\": \"*.db.corp.example\"}",
	    "{\"id\": 3, \"address\": \"db-??.db.corp.example\"}",
	    "{\"id\": 4, \"address\": \"db-*.db.corp.example\"}",
	    "{\"id\": 5, \"address\": \"db-01.db.corp.example\"}",
	    "{\"id\": 6, \"address\": \"10.0.0.9\", \"alias\": \"nine.sp\"}",
	    "{\"id\": 7, \"address\": \"*.sp\"}",
	    "{\"id\": 8, \"address\": \"w*.corp.example\"}",
	    "{\"id\": 9, \"address\": \"*b.corp.example\"}",
	};
	struct fixture f;
	fixture_build(&f, json, sizeof(json) / sizeof(json[0]));
	/* Exact beats every wildcard. */
	assert_int_equal(name_id(&f, "db-01.db.corp.example"), 5);
	assert_int_equal(name_id(&f, "DB-01.db.corp.example."), 5);
	/* Same literal count: "??" (no star) beats "*". */
	assert_int_equal(name_id(&f, "db-02.db.corp.example"), 3);
	/* "??" needs two characters: the star pattern takes the rest. */
	assert_int_equal(name_id(&f, "db-1.db.corp.example"), 4);
	assert_int_equal(name_id(&f, "db-123.db.corp.example"), 4);
	/* The longer literal suffix beats the shorter one. */
	assert_int_equal(name_id(&f, "x.db.corp.example"), 2);
	assert_int_equal(name_id(&f, "x.y.db.corp.example"), 2);
	assert_int_equal(name_id(&f, "x.corp.example"), 1);
	/* "w*" and "*b" in the same bucket: same literals and stars; lowest id wins. */
	assert_int_equal(name_id(&f, "web.corp.example"), 8);
	assert_int_equal(name_id(&f, "wb.corp.example"), 8);
	assert_int_equal(name_id(&f, "ab.corp.example"), 9);
	/* The apex is not matched by its own wildcard. */
	assert_int_equal(name_id(&f, "corp.example"), -1);
	assert_int_equal(name_id(&f, "db.corp.example"), 9); /* "*b" beats "*" */
	assert_int_equal(name_id(&f, "dc.corp.example"), 1);
	/* Aliases are exact names. */
	assert_int_equal(name_id(&f, "nine.sp"), 6);
	assert_int_equal(name_id(&f, "ten.sp"), 7);
	/* Not names. */
	assert_int_equal(name_id(&f, "10.0.0.9"), -1);
	assert_int_equal(name_id(&f, "bad..corp.example"), -1);
	assert_int_equal(name_id(&f, "*.corp.example"), -1);
	assert_int_equal(name_id(&f, ""), -1);
	assert_null(sp_resource_index_match_name(f.index, NULL));
	assert_int_equal(name_id(&f, "example"), -1);
	assert_int_equal(name_id(&f, "other.example"), -1);
	fixture_free(&f);
}

static void test_name_ties_go_to_lowest_id_then_position(void **state)
{
	(void)state;
	const char *const json[] = {
	    "{\"id\": 9, \"address\": \"a.corp\"}",
	    "{\"id\": 3, \"address\": \"b.corp\", \"alias\": \"a.corp\"}",
	    "{\"id\": 3, \"address\": \"a.corp\"}",
	    "{\"id\": 7, \"address\": \"*.x.corp\", \"name\": \"first\"}",
	    "{\"id\": 7, \"address\": \"*.x.corp\", \"name\": \"second\"}",
	};
	struct fixture f;
	fixture_build(&f, json, sizeof(json) / sizeof(json[0]));
	const struct sp_resource *res = sp_resource_index_match_name(f.index, "a.corp");
	assert_non_null(res);
	assert_int_equal(res->id, 3);
	assert_string_equal(res->address.name, "b.corp"); /* id 3 at position 1 beats position 2 */
	res = sp_resource_index_match_name(f.index, "q.x.corp");
	assert_non_null(res);
	assert_string_equal(res->name, "first");
	fixture_free(&f);
}

static void test_ip_precedence(void **state)
{
	(void)state;
	const char *const json[] = {
	    "{\"id\": 1, \"address\": \"10.1.0.0/16\"}",
	    "{\"id\": 2, \"address\": \"10.1.2.0/24\"}",
	    "{\"id\": 3, \"address\": \"10.1.2.3\"}",
	    "{\"id\": 4, \"address\": \"0.0.0.0/0\"}",
	    "{\"id\": 5, \"address\": \"fd00::/8\"}",
	    "{\"id\": 6, \"address\": \"fd00:1::/64\"}",
	    "{\"id\": 7, \"address\": \"fd00:1::5\"}",
	    "{\"id\": 8, \"address\": \"10.1.2.0/24\"}",
	};
	struct fixture f;
	fixture_build(&f, json, sizeof(json) / sizeof(json[0]));
	assert_int_equal(ip_id(&f, "10.1.2.3"), 3);
	assert_int_equal(ip_id(&f, "10.1.2.4"), 2); /* /24 twice: lowest id */
	assert_int_equal(ip_id(&f, "10.1.3.4"), 1);
	assert_int_equal(ip_id(&f, "10.2.0.1"), 4);
	assert_int_equal(ip_id(&f, "fd00:1::5"), 7);
	assert_int_equal(ip_id(&f, "fd00:1::6"), 6);
	assert_int_equal(ip_id(&f, "fd00:2::6"), 5);
	assert_int_equal(ip_id(&f, "fe80::1"), -1);
	/* IPv4-mapped IPv6 is matched as IPv4, so it meets the IPv4 rules. */
	assert_int_equal(ip_id(&f, "::ffff:10.1.2.3"), 3);
	assert_int_equal(ip_id(&f, "::ffff:10.1.9.9"), 1);
	uint8_t addr[16] = {0};
	assert_null(sp_resource_index_match_ip(f.index, AF_UNIX, addr));
	fixture_free(&f);

	/* Without any IPv4 rule, a mapped address finds nothing, even with ::/0 present. */
	const char *const v6_only[] = {"{\"id\": 1, \"address\": \"::/0\"}"};
	fixture_build(&f, v6_only, 1);
	assert_int_equal(ip_id(&f, "::ffff:10.1.2.3"), -1);
	assert_int_equal(ip_id(&f, "10.1.2.3"), -1);
	assert_int_equal(ip_id(&f, "2001:db8::1"), 1);
	fixture_free(&f);
}

static void test_match_decisions(void **state)
{
	(void)state;
	const char *const json[] = {
	    "{\"id\": 1, \"address\": \"10.1.0.0/16\", \"tcp\": \"all\"}",
	    ("{\"id\": 2, \"address\": \"10.1.2.3\", \"tcp\": [\"22\"], \"udp\": \"none\", "
	     "\"icmp\": false}"),
	    "{\"id\": 3, \"address\": \"*.corp\", \"tcp\": [\"443\"], \"udp\": [\"53\"]}",
	};
	struct fixture f;
	fixture_build(&f, json, sizeof(json) / sizeof(json[0]));
	const struct sp_resource *res;
	enum sp_resource_reason reason;

	assert_int_equal(sp_resource_index_match(f.index, "10.1.2.3", SP_RESOURCE_PROTOCOL_TCP, 22,
						 &res, &reason),
			 0);
	assert_int_equal(res->id, 2);
	assert_int_equal(reason, SP_RESOURCE_ALLOWED);
	/* The most specific resource decides: the /16 that allows 443 is not consulted. */
	assert_int_equal(sp_resource_index_match(f.index, "10.1.2.3", SP_RESOURCE_PROTOCOL_TCP, 443,
						 &res, &reason),
			 0);
	assert_int_equal(res->id, 2);
	assert_int_equal(reason, SP_RESOURCE_PORT_NOT_ALLOWED);
	assert_string_equal(sp_resource_reason_name(reason), "port_not_allowed");
	assert_int_equal(sp_resource_index_match(f.index, "10.1.2.3", SP_RESOURCE_PROTOCOL_UDP, 53,
						 &res, &reason),
			 0);
	assert_int_equal(reason, SP_RESOURCE_PROTOCOL_NOT_ALLOWED);
	assert_int_equal(sp_resource_index_match(f.index, "::ffff:10.1.2.3",
						 SP_RESOURCE_PROTOCOL_ICMP, 0, &res, &reason),
			 0);
	assert_int_equal(res->id, 2);
	assert_int_equal(reason, SP_RESOURCE_PROTOCOL_NOT_ALLOWED);
	assert_int_equal(sp_resource_index_match(f.index, "10.1.9.9", SP_RESOURCE_PROTOCOL_TCP, 443,
						 &res, &reason),
			 0);
	assert_int_equal(res->id, 1);
	assert_int_equal(reason, SP_RESOURCE_ALLOWED);
	assert_int_equal(sp_resource_index_match(f.index, "10.2.0.1", SP_RESOURCE_PROTOCOL_TCP, 443,
						 &res, &reason),
			 0);
	assert_null(res);
	assert_int_equal(reason, SP_RESOURCE_NO_RESOURCE);
	assert_string_equal(sp_resource_reason_name(reason), "no_resource");

	assert_int_equal(sp_resource_index_match(f.index, "App.Corp.", SP_RESOURCE_PROTOCOL_TCP,
						 443, &res, &reason),
			 0);
	assert_int_equal(res->id, 3);
	assert_int_equal(reason, SP_RESOURCE_ALLOWED);
	assert_int_equal(sp_resource_index_match(f.index, "app.corp", SP_RESOURCE_PROTOCOL_UDP, 54,
						 &res, &reason),
			 0);
	assert_int_equal(reason, SP_RESOURCE_PORT_NOT_ALLOWED);
	assert_int_equal(
	    sp_resource_index_match(f.index, "corp", SP_RESOURCE_PROTOCOL_TCP, 443, &res, &reason),
	    0);
	assert_int_equal(reason, SP_RESOURCE_NO_RESOURCE);

	/* Destinations that are neither names nor addresses. */
	const char *bad[] = {"10.1.2",	"10.1.2.0/24",	"a..corp", "",
			     "-x.corp", "fe80::1%eth0", "*.corp"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		res = (const struct sp_resource *)1;
		reason = SP_RESOURCE_ALLOWED;
		assert_int_equal(sp_resource_index_match(f.index, bad[i], SP_RESOURCE_PROTOCOL_TCP,
							 1, &res, &reason),
				 SP_ERR_INVALID);
		assert_null(res);
		assert_int_equal(reason, SP_RESOURCE_NO_RESOURCE);
	}
	assert_int_equal(
	    sp_resource_index_match(f.index, NULL, SP_RESOURCE_PROTOCOL_TCP, 1, &res, &reason),
	    SP_ERR_INVALID);
	fixture_free(&f);
}

static void test_build_errors_and_empty_index(void **state)
{
	(void)state;
	struct sp_resource_index *index = (struct sp_resource_index *)1;
	struct sp_diag diag = {{0}};
	struct sp_resource dummy;
	memset(&dummy, 0, sizeof(dummy));
	assert_int_equal(sp_resource_index_build(&dummy, SP_RESOURCE_MAX_COUNT + 1, &index, &diag),
			 SP_ERR_TOO_LARGE);
	assert_null(index);
	assert_non_null(strstr(diag.message, "the most allowed is 1000000"));
	assert_int_equal(sp_resource_index_build(&dummy, 1, &index, &diag), SP_ERR_INVALID);
	assert_null(index);
	assert_non_null(strstr(diag.message, "position 0"));

	assert_int_equal(sp_resource_index_build(NULL, 0, &index, NULL), 0);
	assert_int_equal(sp_resource_index_count(index), 0);
	assert_null(sp_resource_index_get(index, 0));
	assert_null(sp_resource_index_match_name(index, "a.corp"));
	const uint8_t v4[4] = {10, 0, 0, 1};
	assert_null(sp_resource_index_match_ip(index, AF_INET, v4));
	sp_resource_index_free(index);
	sp_resource_index_free(NULL);
}

static void test_index_owns_copies(void **state)
{
	(void)state;
	const char *const json[] = {"{\"id\": 1, \"address\": \"a.corp\", \"tcp\": [\"22\"]}"};
	struct fixture f;
	fixture_build(&f, json, 1);
	/* The caller's array can go right after the build. */
	sp_resource_list_free(f.list, f.count);
	f.list = NULL;
	f.count = 0;
	const struct sp_resource *res = sp_resource_index_match_name(f.index, "a.corp");
	assert_non_null(res);
	assert_true(sp_portset_contains(&res->tcp, 22));
	assert_ptr_equal(sp_resource_index_get(f.index, 0), res);
	assert_int_equal(sp_resource_index_count(f.index), 1);
	fixture_free(&f);
}

/* --- random comparison against a linear scan --------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint32_t rng(uint32_t bound)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % bound);
}

static const char *const vocabulary[] = {"a",	"b",	 "db",	  "web",   "x1",
					 "api", "db-01", "db-1",  "w",	   "corp",
					 "eu",	"us",	 "app-7", "_ldap", "_tcp"};
static const char *const tlds[] = {"corp", "example", "sp", "net"}; /* patterns never use .net */
static const char *const wild_labels[] = {"*", "db-??", "db-*", "*b", "w*",
					  "?", "a*p-?", "*-01", "?b", "x?"};

#define VOCABULARY_SIZE (sizeof(vocabulary) / sizeof(vocabulary[0]))

/* A random name of 1-4 labels from the vocabulary plus a TLD. */
static void random_name(char *out, size_t len)
{
	size_t used = 0;
	unsigned labels = 1 + rng(3);
	for (unsigned i = 0; i < labels; i++)
		used += (size_t)snprintf(out + used, len - used, "%s.",
					 vocabulary[rng(VOCABULARY_SIZE)]);
	snprintf(out + used, len - used, "%s", tlds[rng(4)]);
}

/* A random pattern: like a name with one or two labels made wild. */
static void random_pattern(char *out, size_t len)
{
	size_t used = 0;
	unsigned labels = 1 + rng(3);
	bool wild = false;
	for (unsigned i = 0; i < labels; i++) {
		const char *label;
		if (rng(3) == 0 || (i == labels - 1 && !wild)) {
			label = wild_labels[rng(sizeof(wild_labels) / sizeof(wild_labels[0]))];
			wild = true;
		} else {
			label = vocabulary[rng(VOCABULARY_SIZE)];
		}
		used += (size_t)snprintf(out + used, len - used, "%s.", label);
	}
	snprintf(out + used, len - used, "%s", tlds[rng(3)]);
}

static void random_v4(uint8_t addr[4])
{
	addr[0] = 10;
	addr[1] = (uint8_t)rng(4);
	addr[2] = (uint8_t)rng(8);
	addr[3] = (uint8_t)(rng(2) ? rng(16) : rng(256));
}

static void random_v6(uint8_t addr[16])
{
	memset(addr, 0, 16);
	addr[0] = 0xfd;
	addr[1] = (uint8_t)rng(3);
	addr[7] = (uint8_t)rng(4);
	addr[15] = (uint8_t)rng(8);
}

/* One random resource in res; returns it parsed. */
static void random_resource(struct sp_resource *res, int64_t id)
{
	char address[300], alias[300];
	uint32_t kind = rng(10);
	if (kind < 4) {
		random_name(address, sizeof(address));
	} else if (kind < 7) {
		random_pattern(address, sizeof(address));
	} else {
		struct sp_cidr cidr;
		memset(&cidr, 0, sizeof(cidr));
		if (kind < 9) {
			cidr.family = AF_INET;
			random_v4(cidr.addr);
			cidr.prefix_len = (uint8_t)(rng(2) ? 32 : 14 + rng(19));
		} else {
			cidr.family = AF_INET6;
			random_v6(cidr.addr);
			cidr.prefix_len = (uint8_t)(rng(2) ? 128 : 16 + rng(113));
		}
		sp_cidr_mask(cidr.addr, cidr.prefix_len);
		assert_int_equal(sp_cidr_format(&cidr, address, sizeof(address)), 0);
	}
	char json[800];
	if (rng(8) == 0) {
		random_name(alias, sizeof(alias));
		snprintf(
		    json, sizeof(json),
		    "{\"id\": %lld, \"address\": \"%s\", \"alias\": \"%s\", \"tcp\": [\"%u\"]}",
		    (long long)id, address, alias, 1 + rng(4));
	} else {
		snprintf(json, sizeof(json),
			 "{\"id\": %lld, \"address\": \"%s\", \"tcp\": [\"%u\"]}", (long long)id,
			 address, 1 + rng(4));
	}
	json_error_t jerr;
	json_t *object = json_loads(json, 0, &jerr);
	assert_non_null(object);
	struct sp_diag diag = {{0}};
	if (sp_resource_from_json(object, res, &diag) != 0)
		fail_msg("%s: %s", json, diag.message);
	json_decref(object);
}

/* The reference: literal characters, stars and questions counted here, independently. */
static void count_pattern(const char *pattern, unsigned *literals, unsigned *stars,
			  unsigned *questions)
{
	*literals = *stars = *questions = 0;
	for (const char *p = pattern; *p != '\0'; p++) {
		if (*p == '*')
			(*stars)++;
		else if (*p == '?')
			(*questions)++;
		else
			(*literals)++;
	}
}

/* True when candidate i should replace the current best b by the tie rules. */
static bool lower_id(const struct sp_resource *list, size_t i, size_t b)
{
	return list[i].id != list[b].id ? list[i].id < list[b].id : i < b;
}

static bool pattern_better(const struct sp_resource *list, size_t i, size_t b)
{
	unsigned li, si, qi, lb, sb, qb;
	count_pattern(list[i].address.name, &li, &si, &qi);
	count_pattern(list[b].address.name, &lb, &sb, &qb);
	if (li != lb)
		return li > lb;
	if (si != sb)
		return si < sb;
	if (qi != qb)
		return qi < qb;
	return lower_id(list, i, b);
}

static const struct sp_resource *linear_match_name(const struct sp_resource *list, size_t count,
						   const char *query)
{
	char name[SP_RESOURCE_NAME_BUF];
	size_t len;
	if (sp_resource_name_normalize(query, name, &len, NULL) < 0)
		return NULL;
	size_t best_exact = SIZE_MAX, best_pattern = SIZE_MAX;
	for (size_t i = 0; i < count; i++) {
		const struct sp_resource *res = &list[i];
		bool exact = (res->address.kind == SP_RESOURCE_ADDRESS_NAME &&
			      strcmp(res->address.name, name) == 0) ||
			     (res->alias != NULL && strcmp(res->alias, name) == 0);
		if (exact && (best_exact == SIZE_MAX || lower_id(list, i, best_exact)))
			best_exact = i;
		if (res->address.kind == SP_RESOURCE_ADDRESS_PATTERN &&
		    sp_resource_name_pattern_matches(res->address.name, res->address.name_len, name,
						     len) &&
		    (best_pattern == SIZE_MAX || pattern_better(list, i, best_pattern)))
			best_pattern = i;
	}
	if (best_exact != SIZE_MAX)
		return &list[best_exact];
	return best_pattern != SIZE_MAX ? &list[best_pattern] : NULL;
}

static const struct sp_resource *linear_match_ip(const struct sp_resource *list, size_t count,
						 int family, const uint8_t *addr)
{
	size_t best = SIZE_MAX;
	for (size_t i = 0; i < count; i++) {
		if (!sp_resource_address_allows_ip(&list[i], family, addr))
			continue;
		if (best == SIZE_MAX ||
		    list[i].address.cidr.prefix_len > list[best].address.cidr.prefix_len ||
		    (list[i].address.cidr.prefix_len == list[best].address.cidr.prefix_len &&
		     lower_id(list, i, best)))
			best = i;
	}
	return best != SIZE_MAX ? &list[best] : NULL;
}

#define RANDOM_RESOURCES 10000
#define RANDOM_QUERIES 3000

static void test_index_equals_linear_scan(void **state)
{
	(void)state;
	struct sp_resource *list = calloc(RANDOM_RESOURCES, sizeof(list[0]));
	assert_non_null(list);
	for (size_t i = 0; i < RANDOM_RESOURCES; i++)
		random_resource(&list[i], (int64_t)rng(RANDOM_RESOURCES / 2)); /* ids repeat */
	struct sp_resource_index *index = NULL;
	assert_int_equal(sp_resource_index_build(list, RANDOM_RESOURCES, &index, NULL), 0);

	size_t name_hits = 0, pattern_hits = 0, name_misses = 0, ip_hits = 0, ip_misses = 0;
	for (int q = 0; q < RANDOM_QUERIES; q++) {
		char name[300];
		random_name(name, sizeof(name));
		if (rng(4) == 0)
			name[0] = (char)(name[0] >= 'a' && name[0] <= 'z' ? name[0] - 32 : name[0]);
		if (rng(4) == 0)
			snprintf(name + strlen(name), sizeof(name) - strlen(name), "%s", ".");
		const struct sp_resource *want = linear_match_name(list, RANDOM_RESOURCES, name);
		const struct sp_resource *got = sp_resource_index_match_name(index, name);
		if ((want == NULL) != (got == NULL) ||
		    (want != NULL && got != sp_resource_index_get(index, (size_t)(want - list))))
			fail_msg("name %s: index says %lld, linear says %lld", name,
				 got ? (long long)got->id : -1LL,
				 want ? (long long)want->id : -1LL);
		if (want != NULL && want->address.kind == SP_RESOURCE_ADDRESS_PATTERN)
			pattern_hits++;
		else if (want != NULL)
			name_hits++;
		else
			name_misses++;
		/* The full decision agrees too. */
		const struct sp_resource *res;
		enum sp_resource_reason reason;
		uint16_t port = (uint16_t)(1 + rng(4));
		assert_int_equal(sp_resource_index_match(index, name, SP_RESOURCE_PROTOCOL_TCP,
							 port, &res, &reason),
				 0);
		assert_ptr_equal(res, got);
		assert_int_equal(reason, sp_resource_check(want, SP_RESOURCE_PROTOCOL_TCP, port));

		uint8_t addr[16];
		int family;
		switch (rng(3)) {
		case 0:
			family = AF_INET;
			random_v4(addr);
			break;
		case 1: /* the same IPv4 space, spelt as mapped IPv6 */
			family = AF_INET6;
			random_v4(addr + 12);
			memset(addr, 0, 10);
			addr[10] = addr[11] = 0xff;
			break;
		default:
			family = AF_INET6;
			random_v6(addr);
			break;
		}
		if (rng(3) == 0) /* outside every generated network but the shortest ones */
			addr[family == AF_INET ? 1 : (addr[10] == 0xff ? 13 : 1)] ^= 0x40;
		want = linear_match_ip(list, RANDOM_RESOURCES, family, addr);
		got = sp_resource_index_match_ip(index, family, addr);
		if ((want == NULL) != (got == NULL) ||
		    (want != NULL && got != sp_resource_index_get(index, (size_t)(want - list))))
			fail_msg("ip query %d: index says %lld, linear says %lld", q,
				 got ? (long long)got->id : -1LL,
				 want ? (long long)want->id : -1LL);
		if (want != NULL)
			ip_hits++;
		else
			ip_misses++;
	}
	/* The random space is dense enough that every kind of answer was exercised. */
	assert_true(name_hits > RANDOM_QUERIES / 20);
	assert_true(pattern_hits > RANDOM_QUERIES / 20);
	assert_true(name_misses > RANDOM_QUERIES / 20);
	assert_true(ip_hits > RANDOM_QUERIES / 4);
	assert_true(ip_misses > RANDOM_QUERIES / 20);
	print_message("names: %zu exact, %zu pattern, %zu none; IPs: %zu hit, %zu none\n",
		      name_hits, pattern_hits, name_misses, ip_hits, ip_misses);
	sp_resource_index_free(index);
	sp_resource_list_free(list, RANDOM_RESOURCES);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_name_precedence),
	    cmocka_unit_test(test_name_ties_go_to_lowest_id_then_position),
	    cmocka_unit_test(test_ip_precedence),
	    cmocka_unit_test(test_match_decisions),
	    cmocka_unit_test(test_build_errors_and_empty_index),
	    cmocka_unit_test(test_index_owns_copies),
	    cmocka_unit_test(test_index_equals_linear_scan),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
