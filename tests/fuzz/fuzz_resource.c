/*
 * tests/fuzz/fuzz_resource.c — resource addressing under hostile input.
 *
 * The input is read two ways:
 *   1. as JSON, fed to sp_resource_from_json / sp_resource_list_from_json; whatever
 *      parses must survive a round trip through sp_resource_to_json unchanged;
 *   2. as three lines "ADDRESS\nPORTS\nHOSTNAME": the address and port list are parsed
 *      (and must round-trip through their canonical forms); when both parse, a small
 *      index is built from them plus fixed resources, and its answer for HOSTNAME (as a
 *      name, and as an IP when it is one) must equal a linear scan's. A pattern's match
 *      is also checked against a plain dynamic-programming matcher.
 * Any disagreement aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "shared/resource_index.h"

#define FUZZ_INPUT_MAX 4096
#define FUZZ_PART_MAX 400

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_resource: %s\n", what);
		abort();
	}
}

/* Fixed resources the fuzzed one competes with, parsed once. */
static const char *const fixed_json[] = {
    "{\"id\": 1, \"address\": \"*.corp.example\", \"tcp\": [\"443\"]}",
    "{\"id\": 2, \"address\": \"db-??.corp.example\", \"tcp\": [\"5432\"]}",
    "{\"id\": 3, \"address\": \"grafana.corp.example\", \"alias\": \"grafana.sp\"}",
    "{\"id\": 4, \"address\": \"10.0.0.0/8\", \"udp\": \"none\"}",
    "{\"id\": 5, \"address\": \"10.1.2.0/24\", \"icmp\": false}",
    "{\"id\": 6, \"address\": \"10.1.2.3\", \"tcp\": [\"22\"]}",
    "{\"id\": 7, \"address\": \"fd00::/8\"}",
    "{\"id\": 8, \"address\": \"fd00:1::/64\", \"alias\": \"v6.sp\"}",
    "{\"id\": 9, \"address\": \"*a*.example\"}",
    "{\"id\": 10, \"address\": \"?.*.example\"}",
    "{\"id\": 0, \"address\": \"*.sp\"}",
    "{\"id\": 3, \"address\": \"a.b\"}",
};
#define FIXED_COUNT (sizeof(fixed_json) / sizeof(fixed_json[0]))
static struct sp_resource fixed[FIXED_COUNT];
static bool fixed_ready;

static void fixed_init(void)
{
	if (fixed_ready)
		return;
	for (size_t i = 0; i < FIXED_COUNT; i++) {
		json_t *object = json_loads(fixed_json[i], 0, NULL);
		check(object != NULL && sp_resource_from_json(object, &fixed[i], NULL) == 0,
		      "fixed resource does not parse");
		json_decref(object);
	}
	fixed_ready = true;
}

/* --- references ----------------------------------------------------------------- */

static bool dp_match(const char *pattern, size_t pl, const char *name, size_t nl)
{
	bool *m = calloc((pl + 1) * (nl + 1), sizeof(bool));
	check(m != NULL, "out of memory");
#define M(i, j) m[(i) * (nl + 1) + (j)]
	M(pl, nl) = true;
	for (size_t i = pl; i-- > 0;)
		for (size_t j = nl + 1; j-- > 0;) {
			if (pattern[i] == '*')
				M(i, j) = M(i + 1, j) || (j < nl && M(i, j + 1));
			else if (j < nl &&
				 (pattern[i] == name[j] || (pattern[i] == '?' && name[j] != '.')))
				M(i, j) = M(i + 1, j + 1);
		}
	bool result = M(0, 0);
#undef M
	free(m);
	return result;
}

static bool lower_id(const struct sp_resource *list, size_t a, size_t b)
{
	return list[a].id != list[b].id ? list[a].id < list[b].id : a < b;
}

static void count_pattern(const char *p, unsigned c[3])
{
	c[0] = c[1] = c[2] = 0;
	for (; *p != '\0'; p++)
		c[*p == '*' ? 1 : (*p == '?' ? 2 : 0)]++;
}

static bool pattern_better(const struct sp_resource *list, size_t a, size_t b)
{
	unsigned ca[3], cb[3];
	count_pattern(list[a].address.name, ca);
	count_pattern(list[b].address.name, cb);
	if (ca[0] != cb[0])
		return ca[0] > cb[0];
	if (ca[1] != cb[1])
		return ca[1] < cb[1];
	if (ca[2] != cb[2])
		return ca[2] < cb[2];
	return lower_id(list, a, b);
}

static size_t linear_name(const struct sp_resource *list, size_t count, const char *name,
			  size_t len)
{
	size_t exact = SIZE_MAX, pattern = SIZE_MAX;
	for (size_t i = 0; i < count; i++) {
		const struct sp_resource *r = &list[i];
		if (((r->address.kind == SP_RESOURCE_ADDRESS_NAME &&
		      strcmp(r->address.name, name) == 0) ||
		     (r->alias != NULL && strcmp(r->alias, name) == 0)) &&
		    (exact == SIZE_MAX || lower_id(list, i, exact)))
			exact = i;
		if (r->address.kind == SP_RESOURCE_ADDRESS_PATTERN &&
		    dp_match(r->address.name, r->address.name_len, name, len) &&
		    (pattern == SIZE_MAX || pattern_better(list, i, pattern)))
			pattern = i;
	}
	return exact != SIZE_MAX ? exact : pattern;
}

static size_t linear_ip(const struct sp_resource *list, size_t count, int family,
			const uint8_t *addr)
{
	size_t best = SIZE_MAX;
	for (size_t i = 0; i < count; i++) {
		if (!sp_resource_address_allows_ip(&list[i], family, addr))
			continue;
		unsigned len = list[i].address.cidr.prefix_len;
		if (best == SIZE_MAX || len > list[best].address.cidr.prefix_len ||
		    (len == list[best].address.cidr.prefix_len && lower_id(list, i, best)))
			best = i;
	}
	return best;
}

/* --- checks ----------------------------------------------------------------------- */

static void check_portset(const struct sp_portset *set)
{
	for (uint32_t i = 0; i < set->count; i++) {
		check(set->ranges[i].first >= 1 && set->ranges[i].first <= set->ranges[i].last,
		      "port range out of order");
		if (i > 0)
			check((uint32_t)set->ranges[i - 1].last + 1 < set->ranges[i].first,
			      "port ranges not merged");
	}
	/* Round trips through text and JSON. */
	char storage[SP_PORTSET_TEXT_MAX + 1];
	struct sp_buf buf;
	sp_buf_init_fixed(&buf, storage, sizeof(storage));
	check(sp_portset_format(set, &buf) == 0 && sp_buf_cstr(&buf) != NULL, "format failed");
	struct sp_portset again;
	check(sp_portset_parse(storage, &again, NULL) == 0, "canonical text does not parse");
	check(sp_portset_equal(set, &again), "text round trip changed the set");
	sp_portset_free(&again);
	json_t *json = NULL;
	check(sp_portset_to_json(set, &json) == 0, "to_json failed");
	check(sp_portset_from_json(json, "tcp", &again, NULL) == 0,
	      "canonical JSON does not parse");
	check(sp_portset_equal(set, &again), "JSON round trip changed the set");
	sp_portset_free(&again);
	json_decref(json);
	/* Membership agrees with a scan at the edges of every range. */
	for (uint32_t i = 0; i < set->count && i < 64; i++) {
		uint32_t probes[4] = {set->ranges[i].first - 1u, set->ranges[i].first,
				      set->ranges[i].last, set->ranges[i].last + 1u};
		for (int p = 0; p < 4; p++) {
			if (probes[p] > 65535)
				continue;
			bool want = false;
			for (uint32_t k = 0; k < set->count; k++)
				want |= probes[p] >= set->ranges[k].first &&
					probes[p] <= set->ranges[k].last;
			check(sp_portset_contains(set, (uint16_t)probes[p]) == want,
			      "contains is wrong");
		}
	}
}

static void check_address_round_trip(const struct sp_resource_address *address)
{
	char text[SP_RESOURCE_ADDRESS_TEXT_MAX];
	check(sp_resource_address_format(address, text, sizeof(text)) == 0, "address format");
	struct sp_resource_address again;
	check(sp_resource_address_parse(text, &again, NULL) == 0, "canonical address refused");
	check(again.kind == address->kind, "address kind changed");
	if (address->kind == SP_RESOURCE_ADDRESS_CIDR)
		check(memcmp(&again.cidr, &address->cidr, sizeof(again.cidr)) == 0, "cidr changed");
	else
		check(strcmp(again.name, address->name) == 0, "name changed");
	sp_resource_address_free(&again);
}

static void check_json(const uint8_t *data, size_t size)
{
	json_t *root =
	    json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
	if (root == NULL)
		return;
	struct sp_resource res;
	struct sp_diag diag;
	if (sp_resource_from_json(root, &res, &diag) == 0) {
		check_address_round_trip(&res.address);
		check_portset(&res.tcp);
		check_portset(&res.udp);
		json_t *out = NULL;
		check(sp_resource_to_json(&res, &out) == 0, "resource to_json failed");
		struct sp_resource again;
		check(sp_resource_from_json(out, &again, NULL) == 0, "canonical resource refused");
		check(again.id == res.id && again.network_id == res.network_id &&
			  again.icmp == res.icmp && sp_portset_equal(&again.tcp, &res.tcp) &&
			  sp_portset_equal(&again.udp, &res.udp) &&
			  (again.alias == NULL) == (res.alias == NULL) &&
			  (again.name == NULL) == (res.name == NULL),
		      "resource round trip changed it");
		sp_resource_free(&again);
		json_decref(out);
		sp_resource_free(&res);
	}
	struct sp_resource *list = NULL;
	size_t count = 0;
	if (sp_resource_list_from_json(root, &list, &count, &diag) == 0)
		sp_resource_list_free(list, count);
	json_decref(root);
}

/* Copies the next '\n'-separated part into out (truncated to FUZZ_PART_MAX). */
static const uint8_t *next_part(const uint8_t *p, const uint8_t *end, char *out)
{
	const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
	const uint8_t *stop = nl != NULL ? nl : end;
	size_t len = (size_t)(stop - p);
	if (len > FUZZ_PART_MAX)
		len = FUZZ_PART_MAX;
	memcpy(out, p, len);
	out[len] = '\0';
	return nl != NULL ? nl + 1 : end;
}

static void check_index(struct sp_resource *list, size_t count, const char *hostname)
{
	struct sp_resource_index *index = NULL;
	check(sp_resource_index_build(list, count, &index, NULL) == 0, "index build failed");

	char name[SP_RESOURCE_NAME_BUF];
	size_t len;
	const struct sp_resource *got = sp_resource_index_match_name(index, hostname);
	if (sp_resource_name_normalize(hostname, name, &len, NULL) == 0) {
		size_t want = linear_name(list, count, name, len);
		check(want == SIZE_MAX ? got == NULL : got == sp_resource_index_get(index, want),
		      "name lookup differs from the linear scan");
		/* The module's matcher agrees with the DP reference on every pattern. */
		for (size_t i = 0; i < count; i++)
			if (list[i].address.kind == SP_RESOURCE_ADDRESS_PATTERN)
				check(sp_resource_name_pattern_matches(
					  list[i].address.name, list[i].address.name_len, name,
					  len) == dp_match(list[i].address.name,
							   list[i].address.name_len, name, len),
				      "pattern matcher differs from the DP reference");
	} else {
		check(got == NULL, "an invalid name matched");
	}

	int family;
	uint8_t addr[16];
	if (sp_cidr_parse_address(hostname, &family, addr, NULL) == 0) {
		got = sp_resource_index_match_ip(index, family, addr);
		size_t want = linear_ip(list, count, family, addr);
		check(want == SIZE_MAX ? got == NULL : got == sp_resource_index_get(index, want),
		      "IP lookup differs from the linear scan");
	}

	const struct sp_resource *res;
	enum sp_resource_reason reason;
	uint16_t port = (uint16_t)(len * 131u);
	if (sp_resource_index_match(index, hostname, SP_RESOURCE_PROTOCOL_TCP, port, &res,
				    &reason) == 0)
		check(reason == sp_resource_check(res, SP_RESOURCE_PROTOCOL_TCP, port),
		      "decision differs from the resource's check");
	else
		check(res == NULL && reason == SP_RESOURCE_NO_RESOURCE,
		      "failed match left a result");
	sp_resource_index_free(index);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char address_text[FUZZ_PART_MAX + 1], ports_text[FUZZ_PART_MAX + 1],
	    hostname[FUZZ_PART_MAX + 1];
	struct sp_resource list[FIXED_COUNT + 1];
	struct sp_portset ports;
	struct sp_diag diag;

	if (size > FUZZ_INPUT_MAX)
		return 0;
	fixed_init();
	check_json(data, size);

	const uint8_t *p = data, *end = data + size;
	p = next_part(p, end, address_text);
	p = next_part(p, end, ports_text);
	next_part(p, end, hostname);

	struct sp_resource fuzzed;
	memset(&fuzzed, 0, sizeof(fuzzed));
	int address_ok = sp_resource_address_parse(address_text, &fuzzed.address, &diag) == 0;
	if (address_ok)
		check_address_round_trip(&fuzzed.address);
	int ports_ok = sp_portset_parse(ports_text, &ports, &diag) == 0;
	if (ports_ok)
		check_portset(&ports);
	if (address_ok && ports_ok) {
		fuzzed.id = (int64_t)(size % 12);
		fuzzed.tcp = ports;
		memset(&ports, 0, sizeof(ports));
		fuzzed.icmp = size % 2 == 0;
		for (size_t i = 0; i < FIXED_COUNT; i++)
			list[i] = fixed[i]; /* shallow: the index copies, nothing here frees */
		list[FIXED_COUNT] = fuzzed;
		check_index(list, FIXED_COUNT + 1, hostname);
	}
	sp_portset_free(&ports);
	sp_resource_free(&fuzzed);
	return 0;
}
