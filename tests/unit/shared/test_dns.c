/* Unit tests for shared/dns.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <ares.h>
#include <cmocka.h>
#include <netdb.h>

#include "shared/dns.h"

/*
 * `dig app.corp.test A` (BIND 9.18): RD and AD set, EDNS0 with a 1232-byte payload
 * and a client COOKIE option.
 */
static const uint8_t dig_a_query[] = {
	0x1a, 0x2b, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
	0x03, 'a', 'p', 'p', 0x04, 'c', 'o', 'r', 'p', 0x04, 't', 'e', 's', 't', 0x00,
	0x00, 0x01, 0x00, 0x01,
	0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c,
	0x00, 0x0a, 0x00, 0x08, 0x5b, 0x1e, 0x8c, 0x77, 0x0f, 0x3a, 0xd2, 0x41,
};

/* glibc's stub resolver asking AAAA for App.Corp.Test (mixed case), no EDNS. */
static const uint8_t glibc_aaaa_query[] = {
	0x5c, 0x31, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x03, 'A', 'p', 'p', 0x04, 'C', 'o', 'r', 'p', 0x04, 'T', 'e', 's', 't', 0x00,
	0x00, 0x1c, 0x00, 0x01,
};

/* The question section both queries share (lower case), 19 bytes from offset 12. */
static const uint8_t app_corp_test_wire[] = {
	0x03, 'a', 'p', 'p', 0x04, 'c', 'o', 'r', 'p', 0x04, 't', 'e', 's', 't', 0x00,
};

/* A copy of a capture that a test may patch. */
static size_t copy_msg(uint8_t *dst, const uint8_t *src, size_t len)
{
	memcpy(dst, src, len);
	return len;
}

/* Header + `name` (wire) + type/class IN, then optional raw extra bytes. */
static size_t make_query(uint8_t *buf, uint16_t flags, uint16_t qdcount, uint16_t arcount,
                         const uint8_t *name, size_t name_len, uint16_t qtype,
                         const uint8_t *extra, size_t extra_len)
{
	const uint8_t header[] = {0x12, 0x34, (uint8_t)(flags >> 8), (uint8_t)flags,
	                          (uint8_t)(qdcount >> 8), (uint8_t)qdcount, 0, 0, 0, 0,
	                          (uint8_t)(arcount >> 8), (uint8_t)arcount};
	size_t n = 0;
	memcpy(buf, header, sizeof(header));
	n += sizeof(header);
	memcpy(buf + n, name, name_len);
	n += name_len;
	buf[n++] = (uint8_t)(qtype >> 8);
	buf[n++] = (uint8_t)qtype;
	buf[n++] = 0;
	buf[n++] = 1;
	if (extra_len != 0)
		memcpy(buf + n, extra, extra_len);
	return n + extra_len;
}

/* Fills `wire` with labels of the given lengths ('x' bytes) and the root label. */
static size_t make_long_name(uint8_t *wire, const size_t *label_lens, size_t count)
{
	size_t n = 0;
	for (size_t i = 0; i < count; i++) {
		wire[n++] = (uint8_t)label_lens[i];
		memset(wire + n, 'x', label_lens[i]);
		n += label_lens[i];
	}
	wire[n++] = 0;
	return n;
}

static void assert_formerr(const uint8_t *msg, size_t len, const char *why)
{
	struct sp_dns_query q;
	int rc = sp_dns_parse_query(msg, len, &q);
	if (rc != SP_ERR_INVALID || q.verdict != SP_DNS_VERDICT_FORMERR)
		fail_msg("%s: rc %d verdict %d problem %s", why, rc, (int)q.verdict,
		         q.problem != NULL ? q.problem : "(none)");
	assert_true(q.has_header);
	assert_non_null(q.problem);
	assert_false(q.edns.present);
	assert_int_equal(q.reply_limit, 512);
}

static void test_parse_dig_query_with_cookie(void **state)
{
	(void)state;
	struct sp_dns_query q;
	assert_int_equal(sp_dns_parse_query(dig_a_query, sizeof(dig_a_query), &q), 0);
	assert_int_equal(q.verdict, SP_DNS_VERDICT_ANSWER);
	assert_null(q.problem);
	assert_true(q.has_header);
	assert_int_equal(q.header.id, 0x1a2b);
	assert_int_equal(q.header.flags, 0x0120);
	assert_int_equal(q.header.qdcount, 1);
	assert_int_equal(q.header.arcount, 1);
	assert_true(q.has_question);
	assert_string_equal(q.question.name.text, "app.corp.test");
	assert_int_equal(q.question.name.text_len, 13);
	assert_int_equal(q.question.name.labels, 3);
	assert_int_equal(q.question.name.wire_len, sizeof(app_corp_test_wire));
	assert_memory_equal(q.question.name.wire, app_corp_test_wire, sizeof(app_corp_test_wire));
	assert_int_equal(q.question.qtype, SP_DNS_TYPE_A);
	assert_int_equal(q.question.qclass, SP_DNS_CLASS_IN);
	assert_int_equal(q.question_end, 31);
	assert_true(q.edns.present);
	assert_int_equal(q.edns.udp_payload_size, 1232);
	assert_int_equal(q.edns.version, 0);
	assert_int_equal(q.edns.extended_rcode, 0);
	assert_false(q.edns.dnssec_ok);
	assert_int_equal(q.edns.options_len, 12);
	assert_int_equal(q.reply_limit, 1232);
}

static void test_parse_keeps_case_on_wire_lowers_text(void **state)
{
	(void)state;
	struct sp_dns_query q;
	assert_int_equal(sp_dns_parse_query(glibc_aaaa_query, sizeof(glibc_aaaa_query), &q), 0);
	assert_string_equal(q.question.name.text, "app.corp.test");
	assert_memory_equal(q.question.name.wire, glibc_aaaa_query + 12, 15);
	assert_int_equal(q.question.qtype, SP_DNS_TYPE_AAAA);
	assert_false(q.edns.present);
	assert_int_equal(q.reply_limit, 512);
	assert_int_equal(q.question_end, sizeof(glibc_aaaa_query));
}

static void test_every_prefix_fails_cleanly(void **state)
{
	(void)state;
	const struct {
		const uint8_t *msg;
		size_t len;
	} captures[] = {{dig_a_query, sizeof(dig_a_query)},
	                {glibc_aaaa_query, sizeof(glibc_aaaa_query)}};
	for (size_t c = 0; c < 2; c++) {
		for (size_t len = 0; len < captures[c].len; len++) {
			/* An exact-size heap copy, so the sanitizer sees any read past the end. */
			uint8_t *prefix = malloc(len != 0 ? len : 1);
			assert_non_null(prefix);
			memcpy(prefix, captures[c].msg, len);
			struct sp_dns_query q;
			int rc = sp_dns_parse_query(prefix, len, &q);
			free(prefix);
			if (len < SP_DNS_HEADER_LEN) {
				assert_int_equal(rc, SP_ERR_TRUNCATED);
				assert_int_equal(q.verdict, SP_DNS_VERDICT_DROP);
				assert_false(q.has_header);
				continue;
			}
			assert_int_equal(rc, SP_ERR_INVALID);
			assert_int_equal(q.verdict, SP_DNS_VERDICT_FORMERR);
			const uint8_t *m = captures[c].msg;
			assert_int_equal(q.header.id, (m[0] << 8) | m[1]);
			/* A FORMERR can always be built. */
			uint8_t storage[512];
			struct sp_buf out;
			sp_buf_init_fixed(&out, storage, sizeof(storage));
			assert_int_equal(sp_dns_build_verdict(&out, &q), 0);
			struct sp_dns_response resp;
			assert_int_equal(sp_dns_parse_response(storage, out.len, &resp), 0);
			assert_int_equal(resp.header.id, q.header.id);
			assert_int_equal(SP_DNS_FLAGS_RCODE(resp.header.flags),
			                 SP_DNS_RCODE_FORMERR);
		}
	}
	struct sp_dns_query q;
	assert_int_equal(sp_dns_parse_query(NULL, 0, &q), SP_ERR_TRUNCATED);
}

static void test_compression_self_pointer(void **state)
{
	(void)state;
	uint8_t msg[64];
	const uint8_t name[] = {0xc0, 0x0c};
	size_t len = make_query(msg, 0x0100, 1, 0, name, sizeof(name), 1, NULL, 0);
	assert_formerr(msg, len, "self pointer");
	/* A label, then a pointer back to that label: a loop through a label. */
	const uint8_t looped[] = {0x01, 'a', 0xc0, 0x0c};
	len = make_query(msg, 0x0100, 1, 0, looped, sizeof(looped), 1, NULL, 0);
	assert_formerr(msg, len, "label loop");
}

static void test_compression_forward_pointer(void **state)
{
	(void)state;
	uint8_t msg[64];
	const uint8_t name[] = {0xc0, 0x0e, 0x00};
	size_t len = make_query(msg, 0x0100, 1, 0, name, sizeof(name), 1, NULL, 0);
	assert_formerr(msg, len, "forward pointer");
	/* Pointer past the end of the message. */
	const uint8_t far[] = {0xc3, 0xff};
	len = make_query(msg, 0x0100, 1, 0, far, sizeof(far), 1, NULL, 0);
	assert_formerr(msg, len, "pointer past the end");
	/* Pointer cut after its first byte. */
	const uint8_t cut[] = {0x03, 'a', 'b', 'c', 0xc0};
	memcpy(msg + 12, cut, sizeof(cut));
	assert_formerr(msg, 12 + sizeof(cut), "pointer cut short");
}

static void test_compression_two_pointer_cycle(void **state)
{
	(void)state;
	/* At 0 a pointer to 2, at 2 a pointer to 0: starting at 2 goes back, then forward. */
	const uint8_t cycle[] = {0xc0, 0x02, 0xc0, 0x00};
	struct sp_dns_name name;
	size_t end = 99;
	assert_int_equal(sp_dns_name_from_wire(cycle, sizeof(cycle), 2, &name, &end),
	                 SP_ERR_INVALID);
	assert_int_equal(end, 0);
	assert_int_equal(name.wire_len, 0);
	assert_int_equal(sp_dns_name_from_wire(cycle, sizeof(cycle), 0, &name, &end),
	                 SP_ERR_INVALID);

	/* The same cycle reached from a query's answer-section owner name. */
	uint8_t msg[64];
	const uint8_t rr[] = {0xc0, 0x21, 0xc0, 0x1f, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0};
	size_t len = make_query(msg, 0x0100, 1, 0, app_corp_test_wire, sizeof(app_corp_test_wire),
	                        1, rr, sizeof(rr));
	msg[7] = 1; /* ancount */
	assert_formerr(msg, len, "pointer cycle in a record owner");
}

static void test_compression_valid_and_hop_limit(void **state)
{
	(void)state;
	/* "www" + pointer to "example.org" earlier in the buffer. */
	const uint8_t buf[] = {0x07, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0x03, 'o', 'r', 'g', 0x00,
	                       0x03, 'W', 'w', 'W', 0xc0, 0x00, 0xff};
	struct sp_dns_name name;
	size_t end;
	assert_int_equal(sp_dns_name_from_wire(buf, sizeof(buf), 13, &name, &end), 0);
	assert_string_equal(name.text, "www.example.org");
	assert_int_equal(end, 19);
	assert_int_equal(name.wire_len, 17);
	assert_int_equal(name.wire[1], 'W');
	assert_int_equal(name.labels, 3);
	end = 0;
	assert_int_equal(sp_dns_name_from_wire(buf, sizeof(buf), 0, &name, &end), 0);
	assert_int_equal(end, 13);
	assert_int_equal(sp_dns_name_from_wire(buf, sizeof(buf), sizeof(buf), &name, NULL),
	                 SP_ERR_TRUNCATED);

	/* A root at 0, then pointers each to the one before: n hops from the last. */
	uint8_t chain[1 + 2 * 40];
	chain[0] = 0;
	for (size_t i = 0; i < 40; i++) {
		size_t at = 1 + 2 * i, target = i == 0 ? 0 : at - 2;
		chain[at] = (uint8_t)(0xc0 | (target >> 8));
		chain[at + 1] = (uint8_t)target;
	}
	size_t start_32 = 1 + 2 * (SP_DNS_MAX_POINTER_HOPS - 1);
	assert_int_equal(sp_dns_name_from_wire(chain, sizeof(chain), start_32, &name, &end), 0);
	assert_string_equal(name.text, ".");
	assert_int_equal(name.wire_len, 1);
	assert_int_equal(end, start_32 + 2);
	assert_int_equal(sp_dns_name_from_wire(chain, sizeof(chain), start_32 + 2, &name, &end),
	                 SP_ERR_INVALID);
}

static void test_label_64_and_name_256(void **state)
{
	(void)state;
	uint8_t msg[400], wire[300];
	size_t lens64[] = {64};
	size_t n = make_long_name(wire, lens64, 1);
	size_t len = make_query(msg, 0x0100, 1, 0, wire, n, 1, NULL, 0);
	assert_formerr(msg, len, "label 64");

	size_t lens63[] = {63};
	n = make_long_name(wire, lens63, 1);
	len = make_query(msg, 0x0100, 1, 0, wire, n, 1, NULL, 0);
	struct sp_dns_query q;
	assert_int_equal(sp_dns_parse_query(msg, len, &q), 0);

	/* 63+63+63+61 with length bytes and the root: exactly 255 bytes. */
	size_t lens255[] = {63, 63, 63, 61};
	n = make_long_name(wire, lens255, 4);
	assert_int_equal(n, 255);
	len = make_query(msg, 0x0100, 1, 0, wire, n, 1, NULL, 0);
	assert_int_equal(sp_dns_parse_query(msg, len, &q), 0);
	assert_int_equal(q.question.name.wire_len, 255);
	assert_int_equal(q.question.name.text_len, 253);

	size_t lens256[] = {63, 63, 63, 62};
	n = make_long_name(wire, lens256, 4);
	assert_int_equal(n, 256);
	len = make_query(msg, 0x0100, 1, 0, wire, n, 1, NULL, 0);
	assert_formerr(msg, len, "name 256");

	/* Reserved label type 0x80. */
	const uint8_t reserved[] = {0x81, 'a', 0x00};
	len = make_query(msg, 0x0100, 1, 0, reserved, sizeof(reserved), 1, NULL, 0);
	assert_formerr(msg, len, "label type 0x80");
}

static void test_escaped_text_for_odd_bytes(void **state)
{
	(void)state;
	/* One label "a.b", one with a space, a backslash and 0xff: never "a.b.x". */
	const uint8_t wire[] = {0x03, 'a', '.', 'b', 0x04, ' ', '\\', 0xff, 'Z', 0x00};
	struct sp_dns_name name;
	assert_int_equal(sp_dns_name_from_wire(wire, sizeof(wire), 0, &name, NULL), 0);
	assert_string_equal(name.text, "a\\.b.\\032\\\\\\255z");
	assert_int_equal(name.labels, 2);
	uint8_t back[SP_DNS_NAME_WIRE_MAX];
	size_t back_len;
	assert_int_equal(sp_dns_name_to_wire(name.text, name.text_len, SP_DNS_NAME_ANY_BYTES, back,
	                                     &back_len, NULL),
	                 0);
	assert_true(sp_dns_name_wire_equal(back, back_len, wire, sizeof(wire)));

	/* The longest text: four labels of 0x01 bytes, all escaped. */
	uint8_t big[255];
	size_t lens[] = {63, 63, 63, 61};
	size_t n = make_long_name(big, lens, 4);
	for (size_t i = 0; i < n; i++)
		if (big[i] == 'x')
			big[i] = 0x01;
	assert_int_equal(sp_dns_name_from_wire(big, n, 0, &name, NULL), 0);
	assert_int_equal(name.text_len, SP_DNS_NAME_TEXT_SIZE - 1);
	assert_int_equal(strlen(name.text), SP_DNS_NAME_TEXT_SIZE - 1);
}

static void test_question_counts_and_qr(void **state)
{
	(void)state;
	uint8_t msg[128];
	struct sp_dns_query q;
	size_t len = make_query(msg, 0x0100, 0, 0, app_corp_test_wire, sizeof(app_corp_test_wire),
	                        1, NULL, 0);
	assert_formerr(msg, len, "qdcount 0");

	/* Two questions, both well-formed. */
	uint8_t second[19];
	memcpy(second, app_corp_test_wire, sizeof(app_corp_test_wire));
	memcpy(second + 15, "\x00\x1c\x00\x01", 4);
	len = make_query(msg, 0x0100, 2, 0, app_corp_test_wire, sizeof(app_corp_test_wire), 1,
	                 second, sizeof(second));
	assert_formerr(msg, len, "qdcount 2");

	/* A response sent to the stub is dropped, never answered. */
	uint8_t resp[sizeof(dig_a_query)];
	len = copy_msg(resp, dig_a_query, sizeof(dig_a_query));
	resp[2] |= 0x80;
	assert_int_equal(sp_dns_parse_query(resp, len, &q), SP_ERR_INVALID);
	assert_int_equal(q.verdict, SP_DNS_VERDICT_DROP);
	uint8_t storage[512];
	struct sp_buf out;
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	assert_int_equal(sp_dns_build_verdict(&out, &q), SP_ERR_INVALID);
	assert_int_equal(sp_dns_build_error(&out, &q, SP_DNS_RCODE_REFUSED), SP_ERR_INVALID);
	assert_int_equal(out.len, 0);
}

static void test_opcode_not_query_is_notimp(void **state)
{
	(void)state;
	uint8_t msg[sizeof(dig_a_query)];
	size_t len = copy_msg(msg, dig_a_query, sizeof(dig_a_query));
	msg[2] = (uint8_t)(msg[2] | (5 << 3)); /* UPDATE */
	struct sp_dns_query q;
	assert_int_equal(sp_dns_parse_query(msg, len, &q), SP_ERR_UNSUPPORTED);
	assert_int_equal(q.verdict, SP_DNS_VERDICT_NOTIMP);
	assert_false(q.has_question);
	uint8_t storage[512];
	struct sp_buf out;
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	assert_int_equal(sp_dns_build_verdict(&out, &q), 0);
	/* Header only: id, QR + opcode 5 + RD, RA, NOTIMP. */
	const uint8_t want[] = {0x1a, 0x2b, 0xa9, 0x84, 0, 0, 0, 0, 0, 0, 0, 0};
	assert_int_equal(out.len, sizeof(want));
	assert_memory_equal(storage, want, sizeof(want));
}

static void test_unknown_type_and_class_still_parse(void **state)
{
	(void)state;
	uint8_t msg[64];
	size_t len = make_query(msg, 0x0100, 1, 0, app_corp_test_wire, sizeof(app_corp_test_wire),
	                        0xfff0, NULL, 0);
	msg[len - 1] = SP_DNS_CLASS_CH;
	struct sp_dns_query q;
	assert_int_equal(sp_dns_parse_query(msg, len, &q), 0);
	assert_int_equal(q.question.qtype, 0xfff0);
	assert_int_equal(q.question.qclass, SP_DNS_CLASS_CH);
	/* The caller decides; the address builder refuses a mismatching type or class. */
	uint8_t storage[512];
	struct sp_buf out;
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	const uint8_t addr[4] = {100, 64, 0, 1};
	assert_int_equal(sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_A, addr, 4, 60),
	                 SP_ERR_INVALID);
	assert_int_equal(sp_dns_build_error(&out, &q, SP_DNS_RCODE_REFUSED), 0);
	assert_int_equal(storage[3], 0x85);
	/* The root name as a question also parses. */
	const uint8_t root[] = {0x00};
	len = make_query(msg, 0x0100, 1, 0, root, 1, SP_DNS_TYPE_SOA, NULL, 0);
	assert_int_equal(sp_dns_parse_query(msg, len, &q), 0);
	assert_string_equal(q.question.name.text, ".");
	assert_int_equal(q.question.name.labels, 0);
}

static void test_edns_version_1_is_badvers(void **state)
{
	(void)state;
	uint8_t msg[sizeof(dig_a_query)];
	size_t len = copy_msg(msg, dig_a_query, sizeof(dig_a_query));
	msg[31 + 6] = 1; /* OPT TTL byte 2: version */
	msg[31 + 7] = 0x80; /* DO */
	struct sp_dns_query q;
	assert_int_equal(sp_dns_parse_query(msg, len, &q), SP_ERR_VERSION);
	assert_int_equal(q.verdict, SP_DNS_VERDICT_BADVERS);
	assert_true(q.edns.present);
	assert_int_equal(q.edns.version, 1);
	assert_true(q.edns.dnssec_ok);
	uint8_t storage[512];
	struct sp_buf out;
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	assert_int_equal(sp_dns_build_verdict(&out, &q), 0);
	/* rcode 16: 0 in the header, 1 in the OPT's extended rcode; version 0; DO echoed. */
	uint8_t want[12 + 19 + 11] = {0x1a, 0x2b, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 1};
	memcpy(want + 12, dig_a_query + 12, 19);
	const uint8_t opt[] = {0, 0, 0x29, 0x04, 0xd0, 0x01, 0x00, 0x80, 0x00, 0, 0};
	memcpy(want + 31, opt, sizeof(opt));
	assert_int_equal(out.len, sizeof(want));
	assert_memory_equal(storage, want, sizeof(want));
	/* Rcodes above 15 need the query's OPT record. */
	struct sp_dns_query plain;
	assert_int_equal(sp_dns_parse_query(glibc_aaaa_query, sizeof(glibc_aaaa_query), &plain), 0);
	sp_buf_reset(&out);
	assert_int_equal(sp_dns_build_error(&out, &plain, SP_DNS_RCODE_BADVERS), SP_ERR_INVALID);
	assert_int_equal(sp_dns_build_error(&out, &q, 4096), SP_ERR_INVALID);
	assert_int_equal(out.len, 0);
}

static void test_edns_record_faults_are_formerr(void **state)
{
	(void)state;
	uint8_t msg[128];
	const uint8_t opt[] = {0x00, 0x00, 0x29, 0x10, 0x00, 0, 0, 0, 0, 0x00, 0x00};
	uint8_t two[sizeof(opt) * 2];
	memcpy(two, opt, sizeof(opt));
	memcpy(two + sizeof(opt), opt, sizeof(opt));
	size_t len = make_query(msg, 0x0100, 1, 2, app_corp_test_wire, sizeof(app_corp_test_wire),
	                        1, two, sizeof(two));
	assert_formerr(msg, len, "two OPT records");
	/* The FORMERR reply echoes the question but carries no OPT. */
	struct sp_dns_query q;
	(void)sp_dns_parse_query(msg, len, &q);
	assert_true(q.has_question);
	uint8_t storage[512];
	struct sp_buf out;
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	assert_int_equal(sp_dns_build_verdict(&out, &q), 0);
	uint8_t want[12 + 19] = {0x12, 0x34, 0x81, 0x81, 0, 1, 0, 0, 0, 0, 0, 0};
	memcpy(want + 12, msg + 12, 19);
	assert_int_equal(out.len, sizeof(want));
	assert_memory_equal(storage, want, sizeof(want));

	/* OPT owned by a name other than the root. */
	const uint8_t owned[] = {0xc0, 0x0c, 0x00, 0x29, 0x10, 0x00, 0, 0, 0, 0, 0x00, 0x00};
	len = make_query(msg, 0x0100, 1, 1, app_corp_test_wire, sizeof(app_corp_test_wire), 1,
	                 owned, sizeof(owned));
	assert_formerr(msg, len, "OPT not owned by the root");

	/* OPT in the answer section. */
	len = make_query(msg, 0x0100, 1, 0, app_corp_test_wire, sizeof(app_corp_test_wire), 1, opt,
	                 sizeof(opt));
	msg[7] = 1;
	assert_formerr(msg, len, "OPT in the answer section");

	/* An option claiming more bytes than the RDATA holds. */
	const uint8_t bad_option[] = {0x00, 0x00, 0x29, 0x10, 0x00, 0, 0, 0, 0, 0x00, 0x05,
	                              0x00, 0x0a, 0x00, 0x08, 0xaa};
	len = make_query(msg, 0x0100, 1, 1, app_corp_test_wire, sizeof(app_corp_test_wire), 1,
	                 bad_option, sizeof(bad_option));
	assert_formerr(msg, len, "option longer than RDATA");

	/* RDATA longer than the message. */
	const uint8_t long_rdata[] = {0x00, 0x00, 0x29, 0x10, 0x00, 0, 0, 0, 0, 0x00, 0x20};
	len = make_query(msg, 0x0100, 1, 1, app_corp_test_wire, sizeof(app_corp_test_wire), 1,
	                 long_rdata, sizeof(long_rdata));
	assert_formerr(msg, len, "RDATA past the end");
}

static void test_other_records_skipped_and_small_payload(void **state)
{
	(void)state;
	/* An unknown record before the OPT, a payload size under 512, trailing bytes. */
	const uint8_t extra[] = {0xc0, 0x0c, 0xff, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0x00, 0x02, 0xab,
	                         0xcd, 0x00, 0x00, 0x29, 0x00, 0x64, 0, 0, 0x80, 0, 0x00, 0x00,
	                         0xde, 0xad};
	uint8_t msg[128];
	size_t len = make_query(msg, 0x0110, 1, 2, app_corp_test_wire, sizeof(app_corp_test_wire),
	                        1, extra, sizeof(extra));
	struct sp_dns_query q;
	assert_int_equal(sp_dns_parse_query(msg, len, &q), 0);
	assert_true(q.edns.present);
	assert_true(q.edns.dnssec_ok);
	assert_int_equal(q.edns.udp_payload_size, 100);
	assert_int_equal(q.reply_limit, 512);
	/* RD and CD echoed, DO echoed. */
	uint8_t storage[512];
	struct sp_buf out;
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	const uint8_t addr[4] = {100, 64, 0, 7};
	assert_int_equal(sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_A, addr, 4, 30), 0);
	assert_int_equal(storage[2], 0x81);
	assert_int_equal(storage[3], 0x90);
	assert_int_equal(storage[out.len - 4], 0x80);
}

/* Checks a reply with c-ares's parser and returns the addresses it found. */
static int cares_a(const uint8_t *msg, size_t len, struct ares_addrttl *addrs, int *count)
{
	return ares_parse_a_reply(msg, (int)len, NULL, addrs, count);
}

static void test_a_answer_bytes_and_cares(void **state)
{
	(void)state;
	struct sp_dns_query q;
	assert_int_equal(sp_dns_parse_query(dig_a_query, sizeof(dig_a_query), &q), 0);
	uint8_t storage[1232];
	struct sp_buf out;
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	const uint8_t addr[4] = {100, 64, 0, 1};
	assert_int_equal(sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_A, addr, sizeof(addr), 60),
	                 0);
	uint8_t want[58] = {0x1a, 0x2b, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 1};
	memcpy(want + 12, dig_a_query + 12, 19);
	const uint8_t rr[] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 100, 64, 0, 1,
	                      0, 0, 0x29, 0x04, 0xd0, 0, 0, 0, 0, 0, 0};
	memcpy(want + 31, rr, sizeof(rr));
	assert_int_equal(out.len, sizeof(want));
	assert_memory_equal(storage, want, sizeof(want));

	struct ares_addrttl addrs[4];
	int count = 4;
	assert_int_equal(cares_a(storage, out.len, addrs, &count), ARES_SUCCESS);
	assert_int_equal(count, 1);
	assert_int_equal(addrs[0].ttl, 60);
	assert_memory_equal(&addrs[0].ipaddr, addr, 4);

	/* Several addresses; the response helper reads id and question back. */
	sp_buf_reset(&out);
	const uint8_t three[12] = {10, 0, 0, 1, 10, 0, 0, 2, 10, 0, 0, 3};
	assert_int_equal(sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_A, three, 12, 5), 0);
	count = 4;
	assert_int_equal(cares_a(storage, out.len, addrs, &count), ARES_SUCCESS);
	assert_int_equal(count, 3);
	assert_memory_equal(&addrs[2].ipaddr, three + 8, 4);
	struct sp_dns_response resp;
	assert_int_equal(sp_dns_parse_response(storage, out.len, &resp), 0);
	assert_int_equal(resp.header.id, 0x1a2b);
	assert_int_equal(resp.header.ancount, 3);
	assert_true(resp.has_question);
	assert_string_equal(resp.question.name.text, "app.corp.test");
	assert_int_equal(resp.question.qtype, SP_DNS_TYPE_A);
}

static void test_aaaa_answer_echoes_case_and_cares(void **state)
{
	(void)state;
	struct sp_dns_query q;
	assert_int_equal(sp_dns_parse_query(glibc_aaaa_query, sizeof(glibc_aaaa_query), &q), 0);
	uint8_t storage[512];
	struct sp_buf out;
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	uint8_t addrs[32];
	assert_int_equal(inet_pton(AF_INET6, "fd7a:115c:a1e0::1", addrs), 1);
	assert_int_equal(inet_pton(AF_INET6, "fd7a:115c:a1e0::2", addrs + 16), 1);
	assert_int_equal(sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_AAAA, addrs, 32, 300), 0);
	assert_int_equal(out.len, 31 + 2 * 28);
	/* The question is echoed byte for byte, mixed case included. */
	assert_memory_equal(storage + 12, glibc_aaaa_query + 12, 19);
	const uint8_t first_rr[] = {0xc0, 0x0c, 0, 28, 0, 1, 0, 0, 0x01, 0x2c, 0, 16};
	assert_memory_equal(storage + 31, first_rr, sizeof(first_rr));

	struct ares_addr6ttl got[4];
	int count = 4;
	assert_int_equal(ares_parse_aaaa_reply(storage, (int)out.len, NULL, got, &count),
	                 ARES_SUCCESS);
	assert_int_equal(count, 2);
	assert_int_equal(got[0].ttl, 300);
	assert_memory_equal(&got[1].ip6addr, addrs + 16, 16);
}

static void test_twenty_aaaa_truncate_at_512(void **state)
{
	(void)state;
	struct sp_dns_query q;
	assert_int_equal(sp_dns_parse_query(glibc_aaaa_query, sizeof(glibc_aaaa_query), &q), 0);
	uint8_t addrs[20 * 16];
	for (size_t i = 0; i < 20; i++) {
		memset(addrs + 16 * i, 0, 16);
		addrs[16 * i] = 0xfd;
		addrs[16 * i + 15] = (uint8_t)(i + 1);
	}
	uint8_t storage[2048];
	struct sp_buf out;
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	/* 12 + 19 + 20 * 28 = 591 > 512: TC, no answers. */
	assert_int_equal(
		sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_AAAA, addrs, sizeof(addrs), 60), 0);
	const uint8_t want_header[] = {0x5c, 0x31, 0x83, 0x80, 0, 1, 0, 0, 0, 0, 0, 0};
	assert_int_equal(out.len, 31);
	assert_memory_equal(storage, want_header, sizeof(want_header));
	struct sp_dns_response resp;
	assert_int_equal(sp_dns_parse_response(storage, out.len, &resp), 0);
	assert_true(resp.header.flags & SP_DNS_FLAG_TC);
	assert_int_equal(resp.question.qtype, SP_DNS_TYPE_AAAA);

	/* 18 still do not fit (535 bytes); 17 do (507). */
	sp_buf_reset(&out);
	assert_int_equal(sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_AAAA, addrs, 17 * 16, 60), 0);
	assert_int_equal(out.len, 507);
	assert_int_equal(storage[2] & 0x02, 0);

	/* Over TCP the caller lifts the limit. */
	q.reply_limit = 65535;
	sp_buf_reset(&out);
	assert_int_equal(
		sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_AAAA, addrs, sizeof(addrs), 60), 0);
	assert_int_equal(out.len, 591);

	/* With EDNS (1232) all twenty fit: 591 + 11. */
	struct sp_dns_query eq;
	uint8_t msg[sizeof(dig_a_query)];
	size_t len = copy_msg(msg, dig_a_query, sizeof(dig_a_query));
	msg[28] = 28; /* qtype AAAA */
	assert_int_equal(sp_dns_parse_query(msg, len, &eq), 0);
	sp_buf_reset(&out);
	assert_int_equal(
		sp_dns_build_addresses(&out, &eq, SP_DNS_TYPE_AAAA, addrs, sizeof(addrs), 60), 0);
	assert_int_equal(out.len, 602);
	/* A buffer smaller than the requester's limit truncates too. */
	struct sp_buf small;
	uint8_t small_storage[100];
	sp_buf_init_fixed(&small, small_storage, sizeof(small_storage));
	assert_int_equal(
		sp_dns_build_addresses(&small, &eq, SP_DNS_TYPE_AAAA, addrs, sizeof(addrs), 60), 0);
	assert_int_equal(small.len, 42);
	assert_int_equal(small_storage[2], 0x83);
}

static void test_negative_answers(void **state)
{
	(void)state;
	struct sp_dns_query q;
	assert_int_equal(sp_dns_parse_query(glibc_aaaa_query, sizeof(glibc_aaaa_query), &q), 0);
	uint8_t storage[512];
	struct sp_buf out;
	sp_buf_init_fixed(&out, storage, sizeof(storage));

	/* NODATA with a SOA for corp.test (offset 4 in the name: pointer 0xc010). */
	assert_int_equal(sp_dns_build_nodata(&out, &q, "CORP.test.", 30), 0);
	uint8_t want[31 + 47] = {0x5c, 0x31, 0x81, 0x80, 0, 1, 0, 0, 0, 1, 0, 0};
	memcpy(want + 12, glibc_aaaa_query + 12, 19);
	const uint8_t soa[] = {0xc0, 0x10, 0, 6, 0, 1, 0, 0, 0, 30, 0, 35,
	                       0xc0, 0x10, 10, 'h', 'o', 's', 't', 'm', 'a', 's', 't', 'e', 'r',
	                       0xc0, 0x10, 0, 0, 0, 1, 0, 0, 0x0e, 0x10, 0, 0, 0x02, 0x58,
	                       0, 1, 0x51, 0x80, 0, 0, 0, 30};
	memcpy(want + 31, soa, sizeof(soa));
	assert_int_equal(out.len, sizeof(want));
	assert_memory_equal(storage, want, sizeof(want));
	struct ares_addr6ttl got[2];
	int count = 2;
	assert_int_equal(ares_parse_aaaa_reply(storage, (int)out.len, NULL, got, &count),
	                 ARES_ENODATA);

	/* The whole name as the zone: pointer 0xc00c. NXDOMAIN. */
	sp_buf_reset(&out);
	assert_int_equal(sp_dns_build_nxdomain(&out, &q, "app.corp.test", 30), 0);
	assert_int_equal(storage[3], 0x83);
	assert_int_equal(storage[31], 0xc0);
	assert_int_equal(storage[32], 0x0c);

	/* Without SOA. */
	sp_buf_reset(&out);
	assert_int_equal(sp_dns_build_nxdomain(&out, &q, NULL, 0), 0);
	const uint8_t nx[] = {0x5c, 0x31, 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0};
	assert_int_equal(out.len, 31);
	assert_memory_equal(storage, nx, sizeof(nx));
	/* c-ares's record parser reads no rcode (its resolver does): no addresses. */
	count = 2;
	assert_int_equal(ares_parse_aaaa_reply(storage, (int)out.len, NULL, got, &count),
	                 ARES_ENODATA);

	/* A zone that is not a parent of the name, or malformed, is refused. */
	sp_buf_reset(&out);
	assert_int_equal(sp_dns_build_nodata(&out, &q, "other.test", 30), SP_ERR_INVALID);
	assert_int_equal(sp_dns_build_nodata(&out, &q, "orp.test", 30), SP_ERR_INVALID);
	assert_int_equal(sp_dns_build_nodata(&out, &q, "a..b", 30), SP_ERR_INVALID);
	assert_int_equal(sp_dns_build_nodata(&out, &q, "", 30), SP_ERR_INVALID);
	assert_int_equal(out.len, 0);
	/* The root is everyone's parent. */
	assert_int_equal(sp_dns_build_nodata(&out, &q, ".", 30), 0);
	assert_int_equal(storage[31], 0xc0);
	assert_int_equal(storage[32], 12 + 14);
}

static void test_error_replies(void **state)
{
	(void)state;
	struct sp_dns_query q;
	assert_int_equal(sp_dns_parse_query(dig_a_query, sizeof(dig_a_query), &q), 0);
	uint8_t storage[512];
	struct sp_buf out;
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	assert_int_equal(sp_dns_build_error(&out, &q, SP_DNS_RCODE_SERVFAIL), 0);
	uint8_t want[42] = {0x1a, 0x2b, 0x81, 0x82, 0, 1, 0, 0, 0, 0, 0, 1};
	memcpy(want + 12, dig_a_query + 12, 19);
	const uint8_t opt[] = {0, 0, 0x29, 0x04, 0xd0, 0, 0, 0, 0, 0, 0};
	memcpy(want + 31, opt, sizeof(opt));
	assert_int_equal(out.len, sizeof(want));
	assert_memory_equal(storage, want, sizeof(want));

	sp_buf_reset(&out);
	assert_int_equal(sp_dns_build_error(&out, &q, SP_DNS_RCODE_REFUSED), 0);
	assert_int_equal(storage[3], 0x85);
	/* A well-formed query has no verdict reply. */
	sp_buf_reset(&out);
	assert_int_equal(sp_dns_build_verdict(&out, &q), SP_ERR_INVALID);

	/* FORMERR when not even the question parsed: header only. */
	uint8_t msg[64];
	size_t len = make_query(msg, 0x0100, 0, 0, app_corp_test_wire, sizeof(app_corp_test_wire),
	                        1, NULL, 0);
	assert_int_equal(sp_dns_parse_query(msg, len, &q), SP_ERR_INVALID);
	sp_buf_reset(&out);
	assert_int_equal(sp_dns_build_verdict(&out, &q), 0);
	const uint8_t formerr[] = {0x12, 0x34, 0x81, 0x81, 0, 0, 0, 0, 0, 0, 0, 0};
	assert_int_equal(out.len, sizeof(formerr));
	assert_memory_equal(storage, formerr, sizeof(formerr));
	struct sp_dns_response resp;
	assert_int_equal(sp_dns_parse_response(storage, out.len, &resp), 0);
	assert_false(resp.has_question);

	/* Answers need a well-formed query. */
	sp_buf_reset(&out);
	const uint8_t addr[4] = {1, 2, 3, 4};
	assert_int_equal(sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_A, addr, 4, 1),
	                 SP_ERR_INVALID);
	assert_int_equal(sp_dns_build_nodata(&out, &q, NULL, 0), SP_ERR_INVALID);
	/* Nothing can be built without a header. */
	assert_int_equal(sp_dns_parse_query(msg, 5, &q), SP_ERR_TRUNCATED);
	assert_int_equal(sp_dns_build_error(&out, &q, SP_DNS_RCODE_FORMERR), SP_ERR_INVALID);
	assert_int_equal(out.len, 0);
}

static void test_address_builder_arguments(void **state)
{
	(void)state;
	struct sp_dns_query q;
	assert_int_equal(sp_dns_parse_query(dig_a_query, sizeof(dig_a_query), &q), 0);
	uint8_t storage[512];
	struct sp_buf out;
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	const uint8_t addr[16] = {0};
	assert_int_equal(sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_CNAME, addr, 4, 1),
	                 SP_ERR_INVALID);
	assert_int_equal(sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_AAAA, addr, 16, 1),
	                 SP_ERR_INVALID); /* the query asked for A */
	assert_int_equal(sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_A, addr, 6, 1),
	                 SP_ERR_INVALID);
	assert_int_equal(sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_A, addr, 0, 1),
	                 SP_ERR_INVALID);
	assert_int_equal(sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_A, NULL, 4, 1),
	                 SP_ERR_INVALID);
	assert_int_equal(out.len, 0);
	/* TTLs are capped at 2^31-1. */
	assert_int_equal(sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_A, addr, 4, 0xffffffffu), 0);
	const uint8_t ttl[] = {0x7f, 0xff, 0xff, 0xff};
	assert_memory_equal(storage + 31 + 6, ttl, 4);

	/* An ANY query may be answered with either type. */
	uint8_t msg[64];
	size_t len = make_query(msg, 0x0100, 1, 0, app_corp_test_wire, sizeof(app_corp_test_wire),
	                        SP_DNS_TYPE_ANY, NULL, 0);
	assert_int_equal(sp_dns_parse_query(msg, len, &q), 0);
	sp_buf_reset(&out);
	assert_int_equal(sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_AAAA, addr, 16, 1), 0);
	assert_int_equal(storage[31 + 3], SP_DNS_TYPE_AAAA);
}

static void test_buffer_space_all_or_nothing(void **state)
{
	(void)state;
	struct sp_dns_query q;
	assert_int_equal(sp_dns_parse_query(dig_a_query, sizeof(dig_a_query), &q), 0);
	const uint8_t addr[4] = {100, 64, 0, 1};
	/* Not even the TC reply (42 bytes) fits. */
	uint8_t tiny[41];
	struct sp_buf out;
	sp_buf_init_fixed(&out, tiny, sizeof(tiny));
	assert_int_equal(sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_A, addr, 4, 60),
	                 SP_ERR_TOO_LARGE);
	assert_int_equal(sp_dns_build_error(&out, &q, SP_DNS_RCODE_SERVFAIL), SP_ERR_TOO_LARGE);
	assert_int_equal(out.len, 0);

	/* After a 2-byte TCP length prefix: same message, shifted, pointers unchanged. */
	uint8_t storage[128];
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	assert_int_equal(sp_buf_put_u16be(&out, 0), 0);
	assert_int_equal(sp_dns_build_addresses(&out, &q, SP_DNS_TYPE_A, addr, 4, 60), 0);
	assert_int_equal(out.len, 2 + 58);
	assert_int_equal(sp_buf_patch_u16be(&out, 0, 58), 0);
	assert_int_equal(storage[2 + 31], 0xc0);
	assert_int_equal(storage[2 + 32], 0x0c);
	struct ares_addrttl got[1];
	int count = 1;
	assert_int_equal(cares_a(storage + 2, 58, got, &count), ARES_SUCCESS);

	/* An owning buffer grows to hold a reply. */
	struct sp_buf heap;
	sp_buf_init(&heap, 4096);
	assert_int_equal(sp_dns_build_addresses(&heap, &q, SP_DNS_TYPE_A, addr, 4, 60), 0);
	assert_int_equal(heap.len, 58);
	sp_buf_free(&heap);
}

static void test_message_id_helpers(void **state)
{
	(void)state;
	uint8_t msg[sizeof(dig_a_query)];
	size_t len = copy_msg(msg, dig_a_query, sizeof(dig_a_query));
	uint16_t id = 0;
	assert_int_equal(sp_dns_get_id(msg, len, &id), 0);
	assert_int_equal(id, 0x1a2b);
	assert_int_equal(sp_dns_set_id(msg, len, 0xbeef), 0);
	assert_int_equal(msg[0], 0xbe);
	assert_int_equal(msg[1], 0xef);
	assert_memory_equal(msg + 2, dig_a_query + 2, len - 2);
	assert_int_equal(sp_dns_get_id(msg, len, &id), 0);
	assert_int_equal(id, 0xbeef);
	id = 7;
	assert_int_equal(sp_dns_get_id(msg, 11, &id), SP_ERR_TRUNCATED);
	assert_int_equal(id, 0);
	assert_int_equal(sp_dns_set_id(msg, 11, 1), SP_ERR_TRUNCATED);
	assert_int_equal(msg[1], 0xef);
	assert_int_equal(sp_dns_set_id(NULL, 12, 1), SP_ERR_TRUNCATED);
}

static void test_response_parser_refusals(void **state)
{
	(void)state;
	struct sp_dns_response resp;
	/* A query is not a response. */
	assert_int_equal(sp_dns_parse_response(dig_a_query, sizeof(dig_a_query), &resp),
	                 SP_ERR_INVALID);
	assert_int_equal(sp_dns_parse_response(dig_a_query, 11, &resp), SP_ERR_TRUNCATED);
	/* An upstream reply with compression in the question's answers is fine. */
	uint8_t msg[64];
	size_t len = copy_msg(msg, glibc_aaaa_query, sizeof(glibc_aaaa_query));
	msg[2] |= 0x80;
	assert_int_equal(sp_dns_parse_response(msg, len, &resp), 0);
	assert_int_equal(resp.header.id, 0x5c31);
	assert_memory_equal(resp.question.name.wire, glibc_aaaa_query + 12, 15);
	msg[5] = 2;
	assert_int_equal(sp_dns_parse_response(msg, len, &resp), SP_ERR_INVALID);
	msg[5] = 1;
	assert_int_equal(sp_dns_parse_response(msg, len - 1, &resp), SP_ERR_INVALID);
	assert_false(resp.has_question);
	assert_int_equal(resp.question.name.wire_len, 0);

	/* Every prefix of a reply shorter than its question fails; the rest parse. */
	msg[5] = 1;
	for (size_t cut = 0; cut <= len; cut++) {
		uint8_t *prefix = malloc(cut != 0 ? cut : 1);
		assert_non_null(prefix);
		memcpy(prefix, msg, cut);
		int rc = sp_dns_parse_response(prefix, cut, &resp);
		free(prefix);
		if (cut < SP_DNS_HEADER_LEN)
			assert_int_equal(rc, SP_ERR_TRUNCATED);
		else if (cut < len)
			assert_int_equal(rc, SP_ERR_INVALID);
		else
			assert_int_equal(rc, 0);
	}
}

static void to_wire_expect(const char *text, enum sp_dns_name_rules rules, int want_rc,
                           const uint8_t *want, size_t want_len)
{
	uint8_t wire[SP_DNS_NAME_WIRE_MAX];
	size_t wire_len = 99;
	struct sp_diag diag = {{0}};
	int rc = sp_dns_name_to_wire(text, strlen(text), rules, wire, &wire_len, &diag);
	if (rc != want_rc)
		fail_msg("\"%s\": rc %d, want %d (%s)", text, rc, want_rc, diag.message);
	if (rc == 0) {
		assert_int_equal(wire_len, want_len);
		assert_memory_equal(wire, want, want_len);
	} else {
		assert_int_equal(wire_len, 0);
		assert_true(diag.message[0] != '\0');
	}
}

static void test_name_to_wire(void **state)
{
	(void)state;
	to_wire_expect("app.corp.test", SP_DNS_NAME_HOSTNAME, 0, app_corp_test_wire, 15);
	to_wire_expect("app.corp.test.", SP_DNS_NAME_HOSTNAME, 0, app_corp_test_wire, 15);
	const uint8_t root[] = {0};
	to_wire_expect(".", SP_DNS_NAME_HOSTNAME, 0, root, 1);
	const uint8_t wildcard[] = {1, '*', 4, 'c', 'o', 'r', 'p', 0};
	to_wire_expect("*.corp", SP_DNS_NAME_HOSTNAME, 0, wildcard, sizeof(wildcard));
	const uint8_t srv[] = {4, '_', 's', 'i', 'p', 2, 'A', '1', 0};
	to_wire_expect("_sip.A1", SP_DNS_NAME_HOSTNAME, 0, srv, sizeof(srv));

	to_wire_expect("", SP_DNS_NAME_HOSTNAME, SP_ERR_INVALID, NULL, 0);
	to_wire_expect("..", SP_DNS_NAME_ANY_BYTES, SP_ERR_INVALID, NULL, 0);
	to_wire_expect(".a", SP_DNS_NAME_HOSTNAME, SP_ERR_INVALID, NULL, 0);
	to_wire_expect("a..b", SP_DNS_NAME_ANY_BYTES, SP_ERR_INVALID, NULL, 0);
	to_wire_expect("a.b..", SP_DNS_NAME_HOSTNAME, SP_ERR_INVALID, NULL, 0);
	to_wire_expect("a b.test", SP_DNS_NAME_HOSTNAME, SP_ERR_INVALID, NULL, 0);
	to_wire_expect("-a.test", SP_DNS_NAME_HOSTNAME, SP_ERR_INVALID, NULL, 0);
	to_wire_expect("a.test-", SP_DNS_NAME_HOSTNAME, SP_ERR_INVALID, NULL, 0);
	to_wire_expect("a.*.test", SP_DNS_NAME_HOSTNAME, SP_ERR_INVALID, NULL, 0);
	to_wire_expect("a*.test", SP_DNS_NAME_HOSTNAME, SP_ERR_INVALID, NULL, 0);
	to_wire_expect("a\\.b", SP_DNS_NAME_HOSTNAME, SP_ERR_INVALID, NULL, 0);

	/* Any bytes, with escapes. */
	const uint8_t odd[] = {3, 'a', '.', 'b', 3, ' ', 'A', '\\', 0};
	to_wire_expect("a\\.b.\\032\\065\\\\", SP_DNS_NAME_ANY_BYTES, 0, odd, sizeof(odd));
	const uint8_t spaced[] = {3, 'a', ' ', 'b', 0};
	to_wire_expect("a b", SP_DNS_NAME_ANY_BYTES, 0, spaced, sizeof(spaced));
	const uint8_t dotted[] = {2, 'a', '.', 0};
	to_wire_expect("a\\.", SP_DNS_NAME_ANY_BYTES, 0, dotted, sizeof(dotted));
	to_wire_expect("a\\256", SP_DNS_NAME_ANY_BYTES, SP_ERR_INVALID, NULL, 0);
	to_wire_expect("a\\25", SP_DNS_NAME_ANY_BYTES, SP_ERR_INVALID, NULL, 0);
	to_wire_expect("a\\2x5", SP_DNS_NAME_ANY_BYTES, SP_ERR_INVALID, NULL, 0);
	to_wire_expect("a\\", SP_DNS_NAME_ANY_BYTES, SP_ERR_INVALID, NULL, 0);

	/* Limits: label 63 fine, 64 too large; 255 bytes fine, 256 too large. */
	char text[400];
	memset(text, 'x', 64);
	text[63] = '\0';
	uint8_t want[300];
	size_t lens63[] = {63};
	size_t n = make_long_name(want, lens63, 1);
	to_wire_expect(text, SP_DNS_NAME_HOSTNAME, 0, want, n);
	text[63] = 'x';
	text[64] = '\0';
	to_wire_expect(text, SP_DNS_NAME_HOSTNAME, SP_ERR_TOO_LARGE, NULL, 0);

	size_t lens255[] = {63, 63, 63, 61};
	n = make_long_name(want, lens255, 4);
	size_t t = 0;
	for (size_t i = 0; i < 4; i++) {
		if (i != 0)
			text[t++] = '.';
		memset(text + t, 'x', lens255[i]);
		t += lens255[i];
	}
	text[t] = '\0';
	to_wire_expect(text, SP_DNS_NAME_HOSTNAME, 0, want, n);
	text[t] = '.';
	text[t + 1] = '\0';
	to_wire_expect(text, SP_DNS_NAME_HOSTNAME, 0, want, n);
	text[t] = 'x'; /* 62 in the last label: 256 bytes */
	text[t + 1] = '\0';
	to_wire_expect(text, SP_DNS_NAME_HOSTNAME, SP_ERR_TOO_LARGE, NULL, 0);
	text[t] = '.'; /* a fifth label */
	text[t + 1] = 'y';
	text[t + 2] = '\0';
	to_wire_expect(text, SP_DNS_NAME_HOSTNAME, SP_ERR_TOO_LARGE, NULL, 0);
	/* Many one-byte labels: 127 fit (255 bytes), 128 do not. */
	t = 0;
	for (size_t i = 0; i < 127; i++) {
		text[t++] = 'a';
		text[t++] = '.';
	}
	text[t] = '\0';
	uint8_t wire[SP_DNS_NAME_WIRE_MAX];
	size_t wire_len;
	assert_int_equal(sp_dns_name_to_wire(text, t, SP_DNS_NAME_HOSTNAME, wire, &wire_len, NULL),
	                 0);
	assert_int_equal(wire_len, 255);
	text[t] = 'a';
	assert_int_equal(
		sp_dns_name_to_wire(text, t + 1, SP_DNS_NAME_HOSTNAME, wire, &wire_len, NULL),
		SP_ERR_TOO_LARGE);
	assert_int_equal(sp_dns_name_to_wire(NULL, 3, SP_DNS_NAME_HOSTNAME, wire, &wire_len, NULL),
	                 SP_ERR_INVALID);
}

static void test_name_compare(void **state)
{
	(void)state;
	assert_true(sp_dns_name_text_equal("App.Corp.Test", "app.corp.test."));
	assert_true(sp_dns_name_text_equal("app.corp.test.", "APP.CORP.TEST."));
	assert_false(sp_dns_name_text_equal("app.corp.test", "app.corp.tes"));
	assert_false(sp_dns_name_text_equal("app.corp.test", "app.corp.test.."));
	/* An escaped trailing dot is part of the label, an escaped backslash is not. */
	assert_false(sp_dns_name_text_equal("a\\.", "a"));
	assert_true(sp_dns_name_text_equal("a\\\\.", "a\\\\"));
	assert_true(sp_dns_name_text_equal(".", ""));

	const uint8_t upper[] = {3, 'A', 'P', 'P', 0};
	const uint8_t lower[] = {3, 'a', 'p', 'p', 0};
	const uint8_t other[] = {3, 'a', 'p', 'q', 0};
	const uint8_t shorter[] = {2, 'a', 'p', 0};
	assert_true(sp_dns_name_wire_equal(upper, 5, lower, 5));
	assert_false(sp_dns_name_wire_equal(upper, 5, other, 5));
	assert_false(sp_dns_name_wire_equal(upper, 5, shorter, 4));
	/* Only ASCII letters fold: 0xc1 and 0xe1 differ. */
	const uint8_t latin_upper[] = {1, 0xc1, 0};
	const uint8_t latin_lower[] = {1, 0xe1, 0};
	assert_false(sp_dns_name_wire_equal(latin_upper, 3, latin_lower, 3));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_dig_query_with_cookie),
		cmocka_unit_test(test_parse_keeps_case_on_wire_lowers_text),
		cmocka_unit_test(test_every_prefix_fails_cleanly),
		cmocka_unit_test(test_compression_self_pointer),
		cmocka_unit_test(test_compression_forward_pointer),
		cmocka_unit_test(test_compression_two_pointer_cycle),
		cmocka_unit_test(test_compression_valid_and_hop_limit),
		cmocka_unit_test(test_label_64_and_name_256),
		cmocka_unit_test(test_escaped_text_for_odd_bytes),
		cmocka_unit_test(test_question_counts_and_qr),
		cmocka_unit_test(test_opcode_not_query_is_notimp),
		cmocka_unit_test(test_unknown_type_and_class_still_parse),
		cmocka_unit_test(test_edns_version_1_is_badvers),
		cmocka_unit_test(test_edns_record_faults_are_formerr),
		cmocka_unit_test(test_other_records_skipped_and_small_payload),
		cmocka_unit_test(test_a_answer_bytes_and_cares),
		cmocka_unit_test(test_aaaa_answer_echoes_case_and_cares),
		cmocka_unit_test(test_twenty_aaaa_truncate_at_512),
		cmocka_unit_test(test_negative_answers),
		cmocka_unit_test(test_error_replies),
		cmocka_unit_test(test_address_builder_arguments),
		cmocka_unit_test(test_buffer_space_all_or_nothing),
		cmocka_unit_test(test_message_id_helpers),
		cmocka_unit_test(test_response_parser_refusals),
		cmocka_unit_test(test_name_to_wire),
		cmocka_unit_test(test_name_compare),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
