/* Unit tests for client/dns_stub.c's pure decision and client/resource_list.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "client/dns_stub.h"
#include "client/resource_list.h"

static const char resources_json[] =
    "{\"v\":1,\"typ\":\"resources\",\"seq\":3,\"networks\":[],\"resources\":["
    "{\"id\":\"r-app\",\"network_id\":\"n1\",\"name\":\"App\",\"address\":\"app.corp.test\","
    "\"alias\":null,\"tcp\":\"all\",\"udp\":\"all\",\"icmp\":false},"
    "{\"id\":\"r-wild\",\"network_id\":\"n1\",\"name\":\"W\",\"address\":\"*.wild.corp.test\","
    "\"alias\":null,\"tcp\":[\"443\"],\"udp\":\"none\",\"icmp\":false},"
    "{\"id\":\"r-db\",\"network_id\":\"n1\",\"name\":\"Db\",\"address\":\"10.1.2.0/24\","
    "\"alias\":\"db.sp\",\"tcp\":[\"5432\"],\"udp\":\"none\",\"icmp\":false}]}";

struct fixture {
	struct sp_resource_index *index;
	struct synthetic *synthetic;
	uint8_t storage[4096];
	struct sp_buf out;
	struct sp_dns_query q;
};

static int setup_with(void **state, const char *v6)
{
	struct fixture *f = test_calloc(1, sizeof(*f));
	struct sp_resource *list = NULL;
	size_t count = 0;
	struct sp_diag diag = {{0}};
	assert_int_equal(resource_list_parse(resources_json, strlen(resources_json), &list, &count,
					     &diag),
			 0);
	assert_int_equal(count, 3);
	assert_int_equal(sp_resource_index_build(list, count, &f->index, &diag), 0);
	sp_resource_list_free(list, count);
	struct synthetic_config sc = {.v6_range = v6, .max_entries = 16};
	assert_int_equal(synthetic_new(&sc, &f->synthetic, &diag), 0);
	sp_buf_init_fixed(&f->out, f->storage, sizeof(f->storage));
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_with(state, SYNTHETIC_DEFAULT_V6);
}

static int setup_v4_only(void **state)
{
	return setup_with(state, NULL);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	sp_resource_index_free(f->index);
	synthetic_free(f->synthetic);
	test_free(f);
	return 0;
}

/* A query: header (RD), one question, optional flags override. */
static size_t make_query(uint8_t *buf, uint16_t id, const char *name, uint16_t qtype,
			 uint16_t qclass)
{
	size_t n = 0;
	buf[n++] = (uint8_t)(id >> 8);
	buf[n++] = (uint8_t)id;
	buf[n++] = 0x01;
	buf[n++] = 0x00;
	const uint8_t counts[8] = {0, 1, 0, 0, 0, 0, 0, 0};
	memcpy(buf + n, counts, 8);
	n += 8;
	const char *p = name;
	while (*p != '\0') {
		const char *dot = strchr(p, '.');
		size_t len = dot != NULL ? (size_t)(dot - p) : strlen(p);
		buf[n++] = (uint8_t)len;
		memcpy(buf + n, p, len);
		n += len;
		p += len + (dot != NULL ? 1 : 0);
	}
	buf[n++] = 0;
	buf[n++] = (uint8_t)(qtype >> 8);
	buf[n++] = (uint8_t)qtype;
	buf[n++] = (uint8_t)(qclass >> 8);
	buf[n++] = (uint8_t)qclass;
	return n;
}

static struct dns_stub_decision decide(struct fixture *f, const uint8_t *msg, size_t len,
				       int over_tcp)
{
	sp_buf_reset(&f->out);
	return dns_stub_decide(f->index, f->synthetic, 30, msg, len, over_tcp, &f->q, &f->out);
}

static unsigned rcode(const struct fixture *f)
{
	return f->out.data[3] & 0xfu;
}

static unsigned ancount(const struct fixture *f)
{
	return (unsigned)(f->out.data[6] << 8 | f->out.data[7]);
}

/* The RDATA of the single answer: the last rdlen bytes (no OPT in these queries). */
static const uint8_t *last_bytes(const struct fixture *f, size_t n)
{
	return f->out.data + f->out.len - n;
}

static void test_protected_a_gets_synthetic_address(void **state)
{
	struct fixture *f = *state;
	uint8_t msg[512];
	size_t len = make_query(msg, 0xabcd, "app.corp.test", SP_DNS_TYPE_A, SP_DNS_CLASS_IN);
	struct dns_stub_decision d = decide(f, msg, len, 0);
	assert_int_equal(d.action, DNS_STUB_REPLY);
	assert_int_equal(d.protected_name, 1);
	assert_int_equal(d.malformed, 0);
	assert_int_equal(f->out.data[0], 0xab);
	assert_int_equal(f->out.data[1], 0xcd);
	assert_int_equal(rcode(f), 0);
	assert_int_equal(ancount(f), 1);
	const uint8_t want[4] = {100, 96, 0, 1};
	assert_memory_equal(last_bytes(f, 4), want, 4);
	/* TTL 30 sits just before RDLENGTH. */
	const uint8_t ttl[6] = {0, 0, 0, 30, 0, 4};
	assert_memory_equal(last_bytes(f, 10), ttl, 6);
	/* Alias and wildcard get their own addresses, in order. */
	len = make_query(msg, 1, "db.sp", SP_DNS_TYPE_A, SP_DNS_CLASS_IN);
	assert_int_equal(decide(f, msg, len, 0).action, DNS_STUB_REPLY);
	assert_int_equal(last_bytes(f, 1)[0], 2);
	len = make_query(msg, 1, "x.y.wild.corp.test", SP_DNS_TYPE_ANY, SP_DNS_CLASS_IN);
	assert_int_equal(decide(f, msg, len, 0).action, DNS_STUB_REPLY);
	assert_int_equal(ancount(f), 1);
	assert_int_equal(last_bytes(f, 1)[0], 3);
	/* Upper case is the same name, and the same address. */
	len = make_query(msg, 1, "APP.corp.TEST", SP_DNS_TYPE_A, SP_DNS_CLASS_IN);
	assert_int_equal(decide(f, msg, len, 0).action, DNS_STUB_REPLY);
	assert_memory_equal(last_bytes(f, 4), want, 4);
	assert_int_equal(synthetic_count(f->synthetic), 3);
}

static void test_protected_aaaa_and_other_types(void **state)
{
	struct fixture *f = *state;
	uint8_t msg[512];
	size_t len = make_query(msg, 7, "app.corp.test", SP_DNS_TYPE_AAAA, SP_DNS_CLASS_IN);
	struct dns_stub_decision d = decide(f, msg, len, 0);
	assert_int_equal(d.action, DNS_STUB_REPLY);
	assert_int_equal(ancount(f), 1);
	const uint8_t want[16] = {0xfd, 0x73, 0x70, 0x61, 0x6c, 0x6c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
	assert_memory_equal(last_bytes(f, 16), want, 16);
	len = make_query(msg, 8, "app.corp.test", SP_DNS_TYPE_MX, SP_DNS_CLASS_IN);
	d = decide(f, msg, len, 0);
	assert_int_equal(d.action, DNS_STUB_REPLY);
	assert_int_equal(d.protected_name, 1);
	assert_int_equal(rcode(f), 0);
	assert_int_equal(ancount(f), 0);
	/* Another class for a protected name: NODATA too, never forwarded. */
	len = make_query(msg, 9, "app.corp.test", SP_DNS_TYPE_A, SP_DNS_CLASS_CH);
	d = decide(f, msg, len, 0);
	assert_int_equal(d.action, DNS_STUB_REPLY);
	assert_int_equal(ancount(f), 0);
	assert_int_equal(rcode(f), 0);
}

static void test_aaaa_without_v6_is_nodata_at_once(void **state)
{
	struct fixture *f = *state;
	uint8_t msg[512];
	size_t len = make_query(msg, 7, "app.corp.test", SP_DNS_TYPE_AAAA, SP_DNS_CLASS_IN);
	struct dns_stub_decision d = decide(f, msg, len, 0);
	assert_int_equal(d.action, DNS_STUB_REPLY);
	assert_int_equal(rcode(f), 0);
	assert_int_equal(ancount(f), 0);
}

static void test_unprotected_is_forwarded(void **state)
{
	struct fixture *f = *state;
	uint8_t msg[512];
	const char *names[] = {"example.test", "corp.test", "wild.corp.test", "app.corp.test.x",
			       "xapp.corp.test"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		size_t len = make_query(msg, 1, names[i], SP_DNS_TYPE_A, SP_DNS_CLASS_IN);
		struct dns_stub_decision d = decide(f, msg, len, 0);
		assert_int_equal(d.action, DNS_STUB_FORWARD);
		assert_int_equal(d.protected_name, 0);
		assert_int_equal(f->out.len, 0);
	}
	/* No resource set: everything is forwarded. */
	size_t len = make_query(msg, 1, "app.corp.test", SP_DNS_TYPE_A, SP_DNS_CLASS_IN);
	sp_buf_reset(&f->out);
	struct dns_stub_decision d =
	    dns_stub_decide(NULL, f->synthetic, 30, msg, len, 0, &f->q, &f->out);
	assert_int_equal(d.action, DNS_STUB_FORWARD);
}

static void test_malformed(void **state)
{
	struct fixture *f = *state;
	uint8_t msg[512];
	size_t len = make_query(msg, 0x4242, "app.corp.test", SP_DNS_TYPE_A, SP_DNS_CLASS_IN);
	/* Shorter than a header: dropped. */
	struct dns_stub_decision d = decide(f, msg, 11, 0);
	assert_int_equal(d.action, DNS_STUB_DROP);
	assert_int_equal(d.malformed, 1);
	/* A response: dropped. */
	msg[2] |= 0x80;
	d = decide(f, msg, len, 0);
	assert_int_equal(d.action, DNS_STUB_DROP);
	msg[2] &= 0x7f;
	/* Question cut short: FORMERR with our ID. */
	d = decide(f, msg, len - 2, 0);
	assert_int_equal(d.action, DNS_STUB_REPLY);
	assert_int_equal(d.malformed, 1);
	assert_int_equal(rcode(f), SP_DNS_RCODE_FORMERR);
	assert_int_equal(f->out.data[0], 0x42);
	/* Two questions: FORMERR. */
	msg[5] = 2;
	d = decide(f, msg, len, 0);
	assert_int_equal(d.action, DNS_STUB_REPLY);
	assert_int_equal(rcode(f), SP_DNS_RCODE_FORMERR);
	msg[5] = 1;
	/* A name that points at itself. */
	const uint8_t loop[] = {0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1};
	d = decide(f, loop, sizeof(loop), 0);
	assert_int_equal(d.action, DNS_STUB_REPLY);
	assert_int_equal(rcode(f), SP_DNS_RCODE_FORMERR);
	/* Opcode STATUS: NOTIMP. */
	msg[2] = 0x10;
	d = decide(f, msg, len, 0);
	assert_int_equal(d.action, DNS_STUB_REPLY);
	assert_int_equal(rcode(f), SP_DNS_RCODE_NOTIMP);
	assert_int_equal(synthetic_count(f->synthetic), 0);
}

static void test_tcp_limit_and_tiny_buffer(void **state)
{
	struct fixture *f = *state;
	uint8_t msg[512];
	size_t len = make_query(msg, 5, "app.corp.test", SP_DNS_TYPE_A, SP_DNS_CLASS_IN);
	struct dns_stub_decision d = decide(f, msg, len, 1);
	assert_int_equal(d.action, DNS_STUB_REPLY);
	assert_int_equal(f->q.reply_limit, 65535);
	/* Not even a header fits: nothing to send. */
	uint8_t tiny[8];
	struct sp_buf small;
	sp_buf_init_fixed(&small, tiny, sizeof(tiny));
	d = dns_stub_decide(f->index, f->synthetic, 30, msg, len, 0, &f->q, &small);
	assert_int_equal(d.action, DNS_STUB_DROP);
	assert_int_equal(d.protected_name, 1);
	assert_int_equal(small.len, 0);
}

/* Appends a name in wire form (no compression). */
static size_t put_name(uint8_t *buf, size_t n, const char *name)
{
	const char *p = name;
	while (*p != '\0') {
		const char *dot = strchr(p, '.');
		size_t len = dot != NULL ? (size_t)(dot - p) : strlen(p);
		buf[n++] = (uint8_t)len;
		memcpy(buf + n, p, len);
		n += len;
		p += len + (dot != NULL ? 1 : 0);
	}
	buf[n++] = 0;
	return n;
}

static size_t put_rr_head(uint8_t *buf, size_t n, uint16_t type, uint16_t rdlength)
{
	const uint8_t head[10] = {(uint8_t)(type >> 8), (uint8_t)type, 0, 1, 0, 0, 0, 60,
				  (uint8_t)(rdlength >> 8), (uint8_t)rdlength};
	memcpy(buf + n, head, 10);
	return n + 10;
}

/* alias.other.test CNAME app.corp.test; app.corp.test A 10.1.2.3 (in `section`). */
static size_t make_cname_reply(uint8_t *buf, int section)
{
	const uint8_t header[12] = {0, 1, 0x81, 0x80, 0, 1, 0, section == 1 ? 2 : 1,
				    0, 0, 0, section == 3 ? 1 : 0};
	memcpy(buf, header, 12);
	size_t n = put_name(buf, 12, "alias.other.test");
	const uint8_t qtail[4] = {0, 1, 0, 1};
	memcpy(buf + n, qtail, 4);
	n += 4;
	buf[n++] = 0xc0;
	buf[n++] = 12;
	size_t target_len = strlen("app.corp.test") + 2;
	n = put_rr_head(buf, n, SP_DNS_TYPE_CNAME, (uint16_t)target_len);
	size_t target = n;
	n = put_name(buf, n, "app.corp.test");
	buf[n++] = (uint8_t)(0xc0 | (target >> 8));
	buf[n++] = (uint8_t)target;
	n = put_rr_head(buf, n, SP_DNS_TYPE_A, 4);
	const uint8_t internal[4] = {10, 1, 2, 3};
	memcpy(buf + n, internal, 4);
	return n + 4;
}

static void test_scan_upstream_finds_protected_addresses(void **state)
{
	struct fixture *f = *state;
	uint8_t msg[512];
	struct dns_stub_leak leak;
	size_t len = make_cname_reply(msg, 1);
	assert_int_equal(dns_stub_scan_upstream(f->index, msg, len, &leak), 1);
	assert_int_equal(leak.section, 1);
	assert_int_equal(leak.rrtype, SP_DNS_TYPE_A);
	assert_string_equal(leak.owner.text, "app.corp.test");
	assert_non_null(leak.resource);
	assert_string_equal(leak.resource->address.name, "app.corp.test");
	/* The same record in the additional section. */
	len = make_cname_reply(msg, 3);
	assert_int_equal(dns_stub_scan_upstream(f->index, msg, len, &leak), 1);
	assert_int_equal(leak.section, 3);
	/* No protected owner: clean. */
	len = make_cname_reply(msg, 1);
	assert_int_equal(dns_stub_scan_upstream(NULL, msg, len, &leak), 0);
	uint8_t clean[512];
	const uint8_t header[12] = {0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0};
	memcpy(clean, header, 12);
	size_t n = put_name(clean, 12, "example.test");
	const uint8_t tail[4] = {0, 1, 0, 1};
	memcpy(clean + n, tail, 4);
	n += 4;
	clean[n++] = 0xc0;
	clean[n++] = 12;
	n = put_rr_head(clean, n, SP_DNS_TYPE_A, 4);
	memset(clean + n, 7, 4);
	n += 4;
	assert_int_equal(dns_stub_scan_upstream(f->index, clean, n, &leak), 0);
	/* Cut anywhere: an error, never a read past the end. */
	len = make_cname_reply(msg, 1);
	for (size_t cut = 0; cut < len; cut++) {
		int r = dns_stub_scan_upstream(f->index, msg, cut, &leak);
		assert_true(r == SP_ERR_TRUNCATED || r == SP_ERR_INVALID);
	}
	/* A record claiming more data than there is. */
	n -= 4;
	assert_int_equal(dns_stub_scan_upstream(f->index, clean, n, &leak), SP_ERR_TRUNCATED);
}

static void test_resource_list_shapes_and_errors(void **state)
{
	(void)state;
	struct sp_resource *list = NULL;
	size_t count = 0;
	struct sp_diag diag = {{0}};
	/* A bare array; string ids become positions, integer ids stay. */
	const char *array = "[{\"id\":\"x\",\"address\":\"a.test\"},{\"id\":42,\"address\":\"b.test\"},"
			    "{\"address\":\"c.test\"}]";
	assert_int_equal(resource_list_parse(array, strlen(array), &list, &count, &diag), 0);
	assert_int_equal(count, 3);
	assert_int_equal(list[0].id, 1);
	assert_int_equal(list[1].id, 42);
	assert_int_equal(list[2].id, 3);
	assert_string_equal(list[0].address.name, "a.test");
	sp_resource_list_free(list, count);

	const char *bad_json = "{\"resources\": [";
	assert_int_equal(resource_list_parse(bad_json, strlen(bad_json), &list, &count, &diag),
			 SP_ERR_INVALID);
	assert_null(list);
	assert_int_equal(count, 0);
	const char *no_list = "{\"v\":1}";
	assert_int_equal(resource_list_parse(no_list, strlen(no_list), &list, &count, &diag),
			 SP_ERR_INVALID);
	assert_non_null(strstr(diag.message, "\"resources\""));
	const char *not_object = "[{\"address\":\"a.test\"}, 5]";
	assert_int_equal(resource_list_parse(not_object, strlen(not_object), &list, &count, &diag),
			 SP_ERR_INVALID);
	assert_string_equal(diag.message, "resources[1]: must be an object");
	const char *bad_field = "[{\"address\":\"a.test\"},{\"address\":\"b.test\",\"colour\":1}]";
	assert_int_equal(resource_list_parse(bad_field, strlen(bad_field), &list, &count, &diag),
			 SP_ERR_INVALID);
	assert_non_null(strstr(diag.message, "resources[1]"));
	const char *dup = "[{\"address\":\"a.test\",\"address\":\"b.test\"}]";
	assert_int_equal(resource_list_parse(dup, strlen(dup), &list, &count, &diag),
			 SP_ERR_INVALID);
	assert_int_equal(resource_list_parse("[]", RESOURCE_LIST_JSON_MAX + 1, &list, &count,
					     &diag),
			 SP_ERR_TOO_LARGE);
	assert_int_equal(resource_list_load("/nonexistent/sallyport.json", &list, &count, &diag),
			 SP_ERR_IO);
	assert_null(list);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_protected_a_gets_synthetic_address, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_protected_aaaa_and_other_types, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_aaaa_without_v6_is_nodata_at_once, setup_v4_only,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_unprotected_is_forwarded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tcp_limit_and_tiny_buffer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_scan_upstream_finds_protected_addresses, setup,
					    teardown),
	    cmocka_unit_test(test_resource_list_shapes_and_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
