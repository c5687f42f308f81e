/*
 * tests/fuzz/fuzz_dns.c — the DNS codec on hostile bytes.
 *
 * The input is parsed as a query. When a reply can be built, every kind the stub sends
 * is built into a fixed buffer and read back with the response parser: the ID, the
 * question type and the question name must survive. The input is also read as a
 * response, and as a presentation name that must round-trip through the wire form.
 * Any broken property aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/dns.h"

#define REQUIRE(cond)                                                                  \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "fuzz_dns: %s failed at line %d\n", #cond, __LINE__); \
			abort();                                                       \
		}                                                                      \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads a built reply back and checks it against the query it answers. */
static void check_reply(const struct sp_dns_query *q, const struct sp_buf *out, uint16_t rcode)
{
	struct sp_dns_response resp;
	REQUIRE(out->len >= SP_DNS_HEADER_LEN);
	REQUIRE(out->len <= out->max);
	REQUIRE(sp_dns_parse_response(out->data, out->len, &resp) == 0);
	REQUIRE(resp.header.id == q->header.id);
	REQUIRE(SP_DNS_FLAGS_RCODE(resp.header.flags) == (rcode & 0xfu));
	REQUIRE(SP_DNS_FLAGS_OPCODE(resp.header.flags) == SP_DNS_FLAGS_OPCODE(q->header.flags));
	REQUIRE(resp.has_question == q->has_question);
	if (q->has_question) {
		REQUIRE(resp.question.qtype == q->question.qtype);
		REQUIRE(resp.question.qclass == q->question.qclass);
		REQUIRE(resp.question.name.wire_len == q->question.name.wire_len);
		REQUIRE(memcmp(resp.question.name.wire, q->question.name.wire,
		               q->question.name.wire_len) == 0);
	}
	uint16_t id;
	REQUIRE(sp_dns_get_id(out->data, out->len, &id) == 0 && id == q->header.id);
}

static void build_answers(const struct sp_dns_query *q)
{
	static uint8_t storage[4096];
	static const uint8_t addresses[40 * 16] = {100, 64, 0, 1};
	struct sp_buf out;
	uint16_t qtype = q->question.qtype, qclass = q->question.qclass;
	int class_ok = qclass == SP_DNS_CLASS_IN || qclass == SP_DNS_CLASS_ANY;
	const uint16_t types[] = {SP_DNS_TYPE_A, SP_DNS_TYPE_AAAA};

	for (size_t t = 0; t < 2; t++) {
		size_t rdlen = types[t] == SP_DNS_TYPE_A ? 4 : 16;
		int type_ok = class_ok && (qtype == types[t] || qtype == SP_DNS_TYPE_ANY);
		/* One address, then forty (past 512 bytes: TC without EDNS). */
		for (size_t count = 1; count <= 40; count += 39) {
			sp_buf_init_fixed(&out, storage, sizeof(storage));
			int rc = sp_dns_build_addresses(&out, q, types[t], addresses, count * rdlen,
			                                3600);
			REQUIRE(rc == (type_ok ? 0 : SP_ERR_INVALID));
			if (rc == 0) {
				check_reply(q, &out, SP_DNS_RCODE_NOERROR);
				REQUIRE(out.len <= q->reply_limit);
			} else {
				REQUIRE(out.len == 0);
			}
		}
	}

	/* The question name itself is always a valid SOA zone. */
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	REQUIRE(sp_dns_build_nodata(&out, q, q->question.name.text, 60) == 0);
	check_reply(q, &out, SP_DNS_RCODE_NOERROR);
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	REQUIRE(sp_dns_build_nxdomain(&out, q, NULL, 0) == 0);
	check_reply(q, &out, SP_DNS_RCODE_NXDOMAIN);
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	REQUIRE(sp_dns_build_nxdomain(&out, q, ".", 60) == 0);
	check_reply(q, &out, SP_DNS_RCODE_NXDOMAIN);
}

static void build_replies(const struct sp_dns_query *q)
{
	static uint8_t storage[4096];
	struct sp_buf out;
	const uint16_t rcodes[] = {SP_DNS_RCODE_SERVFAIL, SP_DNS_RCODE_REFUSED,
	                           SP_DNS_RCODE_NOTIMP, SP_DNS_RCODE_FORMERR};

	if (q->verdict == SP_DNS_VERDICT_ANSWER)
		build_answers(q);
	for (size_t i = 0; i < sizeof(rcodes) / sizeof(rcodes[0]); i++) {
		sp_buf_init_fixed(&out, storage, sizeof(storage));
		REQUIRE(sp_dns_build_error(&out, q, rcodes[i]) == 0);
		check_reply(q, &out, rcodes[i]);
	}
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	int rc = sp_dns_build_verdict(&out, q);
	if (q->verdict == SP_DNS_VERDICT_ANSWER) {
		REQUIRE(rc == SP_ERR_INVALID);
		return;
	}
	REQUIRE(rc == 0);
	uint16_t rcode = q->verdict == SP_DNS_VERDICT_FORMERR  ? SP_DNS_RCODE_FORMERR
	                 : q->verdict == SP_DNS_VERDICT_NOTIMP ? SP_DNS_RCODE_NOTIMP
	                                                       : SP_DNS_RCODE_BADVERS;
	check_reply(q, &out, rcode);
}

/* Reads the input as presentation text; what converts must convert back the same. */
static void check_name_text(const uint8_t *data, size_t size)
{
	uint8_t wire[SP_DNS_NAME_WIRE_MAX], again[SP_DNS_NAME_WIRE_MAX];
	size_t wire_len, again_len;
	static struct sp_dns_name name;
	const enum sp_dns_name_rules rules[] = {SP_DNS_NAME_HOSTNAME, SP_DNS_NAME_ANY_BYTES};

	if (size > 1100)
		return;
	for (size_t i = 0; i < 2; i++) {
		const char *text = (const char *)data;
		if (sp_dns_name_to_wire(text, size, rules[i], wire, &wire_len, NULL) < 0)
			continue;
		REQUIRE(wire_len >= 1 && wire_len <= SP_DNS_NAME_WIRE_MAX);
		REQUIRE(sp_dns_name_from_wire(wire, wire_len, 0, &name, NULL) == 0);
		REQUIRE(name.wire_len == wire_len);
		REQUIRE(strlen(name.text) == name.text_len);
		REQUIRE(sp_dns_name_to_wire(name.text, name.text_len, SP_DNS_NAME_ANY_BYTES, again,
		                            &again_len, NULL) == 0);
		REQUIRE(sp_dns_name_wire_equal(wire, wire_len, again, again_len));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct sp_dns_query q;
	static struct sp_dns_response resp;

	int rc = sp_dns_parse_query(data, size, &q);
	REQUIRE((rc == 0) == (q.verdict == SP_DNS_VERDICT_ANSWER));
	REQUIRE((rc == SP_ERR_TRUNCATED) == !q.has_header);
	REQUIRE(rc == 0 || q.problem != NULL);
	REQUIRE(q.reply_limit >= SP_DNS_UDP_MIN);
	if (q.has_question) {
		REQUIRE(q.question.name.wire_len >= 1 &&
		        q.question.name.wire_len <= SP_DNS_NAME_WIRE_MAX);
		REQUIRE(strlen(q.question.name.text) == q.question.name.text_len);
		REQUIRE(q.question_end <= size);
	}
	if (q.has_header && q.verdict != SP_DNS_VERDICT_DROP)
		build_replies(&q);

	rc = sp_dns_parse_response(data, size, &resp);
	if (rc == 0 && resp.has_question)
		REQUIRE(resp.question.name.wire_len <= SP_DNS_NAME_WIRE_MAX);

	check_name_text(data, size);
	return 0;
}
