/*
 * Tests for connector/relay_link.c: the relay control connection as the connector reads
 * it (docs/protocol.md §3), the reconnect backoff, token renewal and the relay list.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "connector/relay_link.h"

static void test_registered_then_dials(void **state)
{
	(void)state;
	struct connector_relay_parser p;
	struct connector_relay_event ev;
	connector_relay_parser_reset(&p);
	assert_int_equal(connector_relay_parse(&p, NULL, 0, &ev), SP_ERR_AGAIN);
	/* status 0 and two dials in one read, the second cut in half */
	uint8_t bytes[1 + 2 * SP_RELAY_DIAL_LEN];
	bytes[0] = 0;
	for (int k = 0; k < 2; k++) {
		bytes[1 + k * SP_RELAY_DIAL_LEN] = 'D';
		memset(bytes + 2 + k * SP_RELAY_DIAL_LEN, 0x10 + k, SP_RELAY_PAIRING_ID_LEN);
	}
	size_t off = 0;
	assert_int_equal(connector_relay_parse(&p, bytes, sizeof(bytes), &ev), 1);
	assert_int_equal(ev.kind, CONNECTOR_RELAY_EV_REGISTERED);
	assert_int_equal(p.state, CONNECTOR_RELAY_REGISTERED);
	off = 1;
	assert_int_equal(connector_relay_parse(&p, bytes + off, sizeof(bytes) - off, &ev),
			 SP_RELAY_DIAL_LEN);
	assert_int_equal(ev.kind, CONNECTOR_RELAY_EV_DIAL);
	uint8_t want[SP_RELAY_PAIRING_ID_LEN];
	memset(want, 0x10, sizeof(want));
	assert_memory_equal(ev.pairing_id, want, sizeof(want));
	off += SP_RELAY_DIAL_LEN;
	assert_int_equal(connector_relay_parse(&p, bytes + off, 9, &ev), SP_ERR_AGAIN);
	assert_int_equal(connector_relay_parse(&p, bytes + off, SP_RELAY_DIAL_LEN, &ev),
			 SP_RELAY_DIAL_LEN);
	memset(want, 0x11, sizeof(want));
	assert_memory_equal(ev.pairing_id, want, sizeof(want));
	/* an unknown message ends the connection */
	uint8_t junk[SP_RELAY_DIAL_LEN] = {'X'};
	assert_int_equal(connector_relay_parse(&p, junk, sizeof(junk), &ev), SP_ERR_INVALID);
	assert_int_equal(p.state, CONNECTOR_RELAY_CLOSED);
	assert_int_equal(connector_relay_parse(&p, bytes + 1, SP_RELAY_DIAL_LEN, &ev),
			 SP_ERR_INVALID);
}

static void test_refused(void **state)
{
	(void)state;
	struct connector_relay_parser p;
	struct connector_relay_event ev;
	connector_relay_parser_reset(&p);
	uint8_t bytes[] = {SP_RELAY_EXPIRED, 'D'};
	assert_int_equal(connector_relay_parse(&p, bytes, sizeof(bytes), &ev), 1);
	assert_int_equal(ev.kind, CONNECTOR_RELAY_EV_REFUSED);
	assert_int_equal(ev.status, SP_RELAY_EXPIRED);
	assert_int_equal(p.state, CONNECTOR_RELAY_CLOSED);
	assert_int_equal(connector_relay_parse(&p, bytes + 1, 1, &ev), SP_ERR_INVALID);
}

static void test_backoff_and_renewal(void **state)
{
	(void)state;
	assert_int_equal(connector_relay_backoff_ms(1, 0), 250);
	assert_int_equal(connector_relay_backoff_ms(1, 250), 500);
	assert_int_equal(connector_relay_backoff_ms(1, 251), 250);
	assert_int_equal(connector_relay_backoff_ms(2, 0), 500);
	assert_int_equal(connector_relay_backoff_ms(3, 500), 1500);
	assert_int_equal(connector_relay_backoff_ms(40, 0), 15000);
	assert_int_equal(connector_relay_backoff_ms(40, UINT32_MAX), 15000 + UINT32_MAX % 15001);
	for (uint32_t r = 0; r < 100000; r += 997)
		assert_true(connector_relay_backoff_ms(100, r) <= CONNECTOR_RELAY_BACKOFF_MAX_MS);
	assert_int_equal(connector_relay_token_due(0, 1000), 1);
	assert_int_equal(connector_relay_token_due(1600, 1000), 0);
	assert_int_equal(connector_relay_token_due(1600, 1479), 0);
	assert_int_equal(connector_relay_token_due(1600, 1480), 1);
}

static void test_relay_list(void **state)
{
	(void)state;
	struct connector_relay_addr a[CONNECTOR_RELAY_MAX];
	size_t n = 99;
	struct sp_diag d = {{0}};
	assert_int_equal(connector_relay_list_parse(NULL, a, &n, &d), 0);
	assert_int_equal(n, 0);
	json_t *list =
	    json_pack("[s, s, s]", "relay.example:443", "[::1]:8443", "relay.example:443");
	assert_int_equal(connector_relay_list_parse(list, a, &n, &d), 0);
	assert_int_equal(n, 2);
	assert_string_equal(a[0].host, "relay.example");
	assert_int_equal(a[0].port, 443);
	assert_string_equal(a[1].host, "::1");
	assert_string_equal(a[1].text, "[::1]:8443");
	json_decref(list);
	list = json_pack("[s, i]", "relay.example:443", 5);
	assert_int_equal(connector_relay_list_parse(list, a, &n, &d), SP_ERR_INVALID);
	assert_string_equal(d.message, "relays[1]: must be host:port");
	json_decref(list);
	list = json_pack("[s]", "relay.example");
	assert_int_equal(connector_relay_list_parse(list, a, &n, &d), SP_ERR_INVALID);
	json_decref(list);
	list = json_pack("{}");
	assert_int_equal(connector_relay_list_parse(list, a, &n, &d), SP_ERR_INVALID);
	json_decref(list);
	list = json_array();
	for (int i = 0; i < 12; i++)
		json_array_append_new(list, json_sprintf("r%d.example:1", i));
	assert_int_equal(connector_relay_list_parse(list, a, &n, &d), 0);
	assert_int_equal(n, CONNECTOR_RELAY_MAX);
	json_decref(list);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_registered_then_dials),
	    cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_backoff_and_renewal),
	    cmocka_unit_test(test_relay_list),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
