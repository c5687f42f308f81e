/*
 * tests/fuzz/fuzz_client_dns_stub.c — the DNS stub's decision on hostile bytes.
 *
 * The first input byte picks UDP or TCP; the rest is a query handed to dns_stub_decide
 * against a fixed resource set (exact name, wildcard, alias) and a synthetic table of
 * only 8 names, so eviction runs constantly. Properties: a reply echoes the query's ID
 * and reads back as a response; a protected name is never forwarded; every mapped
 * address lies in the synthetic range and reverses to a name that is still mapped.
 * The same bytes are also scanned as an upstream reply: a reported leak names an A/AAAA
 * record owned by a protected name.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "client/dns_stub.h"
#include "client/resource_list.h"

#define REQUIRE(cond)                                                                        \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "fuzz_client_dns_stub: %s failed at line %d\n", #cond, \
				__LINE__);                                                   \
			abort();                                                             \
		}                                                                            \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct sp_resource_index *index_;
static struct synthetic *synthetic_;

static void init(void)
{
	static const char json[] = "[{\"address\":\"app.corp.test\"},{\"address\":\"*.w.test\"},"
				   "{\"address\":\"10.0.0.0/8\",\"alias\":\"db.sp\"},"
				   "{\"address\":\"h?.x.test\"}]";
	struct sp_resource *list = NULL;
	size_t count = 0;
	REQUIRE(resource_list_parse(json, sizeof(json) - 1, &list, &count, NULL) == 0);
	REQUIRE(sp_resource_index_build(list, count, &index_, NULL) == 0);
	sp_resource_list_free(list, count);
	struct synthetic_config sc = {.v4_range = "100.96.0.0/28",
				      .v6_range = SYNTHETIC_DEFAULT_V6,
				      .max_entries = 8};
	REQUIRE(synthetic_new(&sc, &synthetic_, NULL) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (index_ == NULL)
		init();
	if (size < 1)
		return 0;
	int over_tcp = data[0] & 1;
	static uint8_t storage[65535];
	struct sp_buf out;
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	struct sp_dns_query q;
	struct dns_stub_decision d =
	    dns_stub_decide(index_, synthetic_, 30, data + 1, size - 1, over_tcp, &q, &out);
	if (d.action == DNS_STUB_REPLY) {
		REQUIRE(out.len >= SP_DNS_HEADER_LEN);
		REQUIRE(out.len <= q.reply_limit || out.len <= SP_DNS_HEADER_LEN + 4 + 255 + 11);
		uint16_t id = 0;
		REQUIRE(sp_dns_get_id(out.data, out.len, &id) == 0);
		REQUIRE(id == q.header.id);
		struct sp_dns_response resp;
		REQUIRE(sp_dns_parse_response(out.data, out.len, &resp) == 0);
	} else {
		REQUIRE(out.len == 0);
	}
	if (d.protected_name)
		REQUIRE(d.action != DNS_STUB_FORWARD);
	if (d.action == DNS_STUB_FORWARD)
		REQUIRE(q.verdict == SP_DNS_VERDICT_ANSWER && !d.protected_name);
	if (d.protected_name) {
		struct synthetic_mapping m;
		if (synthetic_find(synthetic_, q.question.name.text, q.question.name.text_len,
				   &m) == 0) {
			REQUIRE(m.v4[0] == 100 && m.v4[1] == 96 && m.v4[2] == 0);
			REQUIRE(m.v4[3] >= 1 && m.v4[3] <= 14);
			char name[SYNTHETIC_NAME_MAX + 1];
			REQUIRE(synthetic_reverse(synthetic_, AF_INET, m.v4, name,
						  sizeof(name), NULL) == 0);
			REQUIRE(strcmp(name, q.question.name.text) == 0);
		}
	}
	REQUIRE(synthetic_count(synthetic_) <= 8);
	struct dns_stub_leak leak;
	int found = dns_stub_scan_upstream(index_, data + 1, size - 1, &leak);
	REQUIRE(found == 0 || found == 1 || found == SP_ERR_TRUNCATED || found == SP_ERR_INVALID);
	if (found == 1) {
		REQUIRE(leak.section >= 1 && leak.section <= 3);
		REQUIRE(leak.rrtype == SP_DNS_TYPE_A || leak.rrtype == SP_DNS_TYPE_AAAA);
		REQUIRE(leak.resource == sp_resource_index_match_name(index_, leak.owner.text));
	}
	return 0;
}
