/* Unit tests for shared/wire.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "shared/error.h"
#include "shared/wire.h"

static void test_client_hello_roundtrip_and_every_prefix(void **state)
{
	(void)state;
	const uint8_t ticket[] = "eyJhbGciOiJFUzI1NiJ9.e30.sig";
	struct sp_buf out;
	sp_buf_init(&out, 0);
	assert_int_equal(sp_relay_client_hello_encode(ticket, sizeof(ticket) - 1, &out), 0);
	assert_int_equal(out.len, 7 + sizeof(ticket) - 1);
	assert_memory_equal(out.data, "SPRC\x01", 5);
	struct sp_relay_client_hello h;
	for (size_t n = 0; n < out.len; n++)
		assert_int_equal(sp_relay_client_hello_decode(out.data, n, &h), SP_ERR_AGAIN);
	/* Trailing bytes (the inner TLS) are left for the caller. */
	assert_int_equal(sp_buf_put_str(&out, "\x16\x03\x01"), 0);
	assert_int_equal(sp_relay_client_hello_decode(out.data, out.len, &h),
	                 (int)(7 + sizeof(ticket) - 1));
	assert_int_equal(h.ticket_len, sizeof(ticket) - 1);
	assert_memory_equal(h.ticket, ticket, h.ticket_len);
	sp_buf_free(&out);
}

static void test_client_hello_refusals(void **state)
{
	(void)state;
	struct sp_relay_client_hello h;
	assert_int_equal(sp_relay_client_hello_decode((const uint8_t *)"GET / HTTP/1.1", 14, &h),
	                 SP_ERR_INVALID);
	assert_int_equal(sp_relay_client_hello_decode((const uint8_t *)"X", 1, &h), SP_ERR_INVALID);
	assert_int_equal(sp_relay_client_hello_decode((const uint8_t *)"SPRC\x02\x00\x01x", 8, &h),
	                 SP_ERR_VERSION);
	assert_int_equal(sp_relay_client_hello_decode((const uint8_t *)"SPRC\x01\x00\x00", 7, &h),
	                 SP_ERR_TOO_LARGE);
	assert_int_equal(sp_relay_client_hello_decode((const uint8_t *)"SPRC\x01\x10\x01", 7, &h),
	                 SP_ERR_TOO_LARGE); /* 4097 */
	assert_null(h.ticket);
	uint8_t big[SP_RELAY_TICKET_MAX + 1];
	memset(big, 'a', sizeof(big));
	struct sp_buf out;
	sp_buf_init(&out, 0);
	assert_int_equal(sp_relay_client_hello_encode(big, sizeof(big), &out), SP_ERR_TOO_LARGE);
	assert_int_equal(sp_relay_client_hello_encode(big, 0, &out), SP_ERR_TOO_LARGE);
	assert_int_equal(out.len, 0);
	assert_int_equal(sp_relay_client_hello_encode(big, SP_RELAY_TICKET_MAX, &out), 0);
	assert_int_equal(sp_relay_client_hello_decode(out.data, out.len, &h), (int)out.len);
	sp_buf_free(&out);
}

static void test_connector_hello(void **state)
{
	(void)state;
	uint8_t id[SP_RELAY_PAIRING_ID_LEN], back[SP_RELAY_PAIRING_ID_LEN];
	for (size_t i = 0; i < sizeof(id); i++)
		id[i] = (uint8_t)(i * 17);
	struct sp_buf out;
	sp_buf_init(&out, 0);
	assert_int_equal(sp_relay_connector_hello_encode(id, &out), 0);
	assert_int_equal(out.len, 21);
	for (size_t n = 0; n < out.len; n++)
		assert_int_equal(sp_relay_connector_hello_decode(out.data, n, back), SP_ERR_AGAIN);
	assert_int_equal(sp_relay_connector_hello_decode(out.data, out.len, back), 21);
	assert_memory_equal(id, back, sizeof(id));
	out.data[3] = 'C'; /* a client magic on the connector port */
	assert_int_equal(sp_relay_connector_hello_decode(out.data, out.len, back), SP_ERR_INVALID);
	sp_buf_free(&out);
	assert_string_equal(sp_relay_status_name(SP_RELAY_CONNECTOR_UNAVAILABLE),
	                    "connector_unavailable");
	assert_string_equal(sp_relay_status_name(200), "unknown");
}

static void test_register_roundtrip_and_refusals(void **state)
{
	(void)state;
	static const uint8_t token[] = "eyJhbGciOiJFUzI1NiJ9.e30.c2ln";
	struct sp_buf out;
	sp_buf_init(&out, 0);
	assert_int_equal(sp_relay_register_encode(token, sizeof(token) - 1, &out), 0);
	assert_int_equal(out.len, 7 + sizeof(token) - 1);
	assert_memory_equal(out.data, "SPRK\x01\x00\x1d", 7);
	struct sp_relay_register h;
	for (size_t n = 0; n < out.len; n++)
		assert_int_equal(sp_relay_register_decode(out.data, n, &h), SP_ERR_AGAIN);
	/* Bytes after the preamble are not consumed. */
	assert_int_equal(sp_buf_put(&out, "D", 1), 0);
	assert_int_equal(sp_relay_register_decode(out.data, out.len, &h), (int)out.len - 1);
	assert_int_equal(h.version, 1);
	assert_int_equal(h.token_len, sizeof(token) - 1);
	assert_memory_equal(h.token, token, h.token_len);
	/* A client hello is not a registration and the reverse. */
	struct sp_relay_client_hello ch;
	assert_int_equal(sp_relay_client_hello_decode(out.data, out.len, &ch), SP_ERR_INVALID);
	sp_buf_free(&out);
	assert_int_equal(sp_relay_register_decode((const uint8_t *)"SPRC\x01\x00\x01x", 8, &h),
	                 SP_ERR_INVALID);
	assert_int_equal(sp_relay_register_decode((const uint8_t *)"SPRK\x02\x00\x01x", 8, &h),
	                 SP_ERR_VERSION);
	assert_int_equal(sp_relay_register_decode((const uint8_t *)"SPRK\x01\x00\x00", 7, &h),
	                 SP_ERR_TOO_LARGE);
	assert_int_equal(sp_relay_register_decode((const uint8_t *)"SPRK\x01\x10\x01", 7, &h),
	                 SP_ERR_TOO_LARGE);
	assert_null(h.token);
	assert_int_equal(h.token_len, 0);
	static uint8_t big[SP_RELAY_TOKEN_MAX + 1];
	sp_buf_init(&out, 0);
	assert_int_equal(sp_relay_register_encode(big, sizeof(big), &out), SP_ERR_TOO_LARGE);
	assert_int_equal(sp_relay_register_encode(big, 0, &out), SP_ERR_TOO_LARGE);
	assert_int_equal(out.len, 0);
	assert_int_equal(sp_relay_register_encode(big, SP_RELAY_TOKEN_MAX, &out), 0);
	assert_int_equal(sp_relay_register_decode(out.data, out.len, &h), (int)out.len);
	assert_int_equal(h.token_len, SP_RELAY_TOKEN_MAX);
	sp_buf_free(&out);
}

static void test_dial(void **state)
{
	(void)state;
	uint8_t id[SP_RELAY_PAIRING_ID_LEN], back[SP_RELAY_PAIRING_ID_LEN];
	for (size_t i = 0; i < sizeof(id); i++)
		id[i] = (uint8_t)(200 - i);
	struct sp_buf out;
	sp_buf_init(&out, 0);
	assert_int_equal(sp_relay_dial_encode(id, &out), 0);
	assert_int_equal(sp_relay_dial_encode(id, &out), 0); /* two messages back to back */
	assert_int_equal(out.len, 2 * SP_RELAY_DIAL_LEN);
	assert_int_equal(out.data[0], 'D');
	for (size_t n = 0; n < SP_RELAY_DIAL_LEN; n++)
		assert_int_equal(sp_relay_dial_decode(out.data, n, back), SP_ERR_AGAIN);
	assert_int_equal(sp_relay_dial_decode(out.data, out.len, back), SP_RELAY_DIAL_LEN);
	assert_memory_equal(back, id, sizeof(id));
	assert_int_equal(sp_relay_dial_decode(out.data + SP_RELAY_DIAL_LEN, SP_RELAY_DIAL_LEN, back),
	                 SP_RELAY_DIAL_LEN);
	assert_memory_equal(back, id, sizeof(id));
	out.data[0] = 'X';
	assert_int_equal(sp_relay_dial_decode(out.data, 1, back), SP_ERR_INVALID);
	assert_int_equal(back[0], 0);
	sp_buf_free(&out);
}

static void test_udp_frames(void **state)
{
	(void)state;
	struct sp_buf out;
	sp_buf_init(&out, 0);
	assert_int_equal(sp_udp_frame_encode((const uint8_t *)"abc", 3, &out), 0);
	assert_int_equal(sp_udp_frame_encode(NULL, 0, &out), 0); /* empty datagrams are legal */
	assert_int_equal(out.len, 7);
	const uint8_t *p;
	size_t n;
	assert_int_equal(sp_udp_frame_decode(out.data, 1, &p, &n), SP_ERR_AGAIN);
	assert_int_equal(sp_udp_frame_decode(out.data, 4, &p, &n), SP_ERR_AGAIN);
	assert_null(p);
	assert_int_equal(sp_udp_frame_decode(out.data, out.len, &p, &n), 5);
	assert_int_equal(n, 3);
	assert_memory_equal(p, "abc", 3);
	assert_int_equal(sp_udp_frame_decode(out.data + 5, 2, &p, &n), 2);
	assert_int_equal(n, 0);
	const uint8_t huge[] = {0xff, 0xff};
	assert_int_equal(sp_udp_frame_decode(huge, 2, &p, &n), SP_ERR_TOO_LARGE);
	static uint8_t big[SP_UDP_DATAGRAM_MAX + 1];
	sp_buf_reset(&out);
	assert_int_equal(sp_udp_frame_encode(big, sizeof(big), &out), SP_ERR_TOO_LARGE);
	assert_int_equal(out.len, 0);
	sp_buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_client_hello_roundtrip_and_every_prefix),
		cmocka_unit_test(test_client_hello_refusals),
		cmocka_unit_test(test_connector_hello),
		cmocka_unit_test(test_register_roundtrip_and_refusals),
		cmocka_unit_test(test_dial),
		cmocka_unit_test(test_udp_frames),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
