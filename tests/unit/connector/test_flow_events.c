/*
 * Tests for connector/flow_events.c (the bounded queue and the event JSON of
 * docs/protocol.md §1.7) and connector_token_make (docs/protocol.md §1.4).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "connector/control.h"
#include "connector/flow_events.h"
#include "shared/keys.h"
#include "shared/token.h"

static struct connector_flow_event sample(int i, int allowed)
{
	struct connector_flow_event ev;
	memset(&ev, 0, sizeof(ev));
	snprintf(ev.flow_id, sizeof(ev.flow_id), "%032d", i);
	ev.time = 1700000000;
	ev.protocol = "tcp";
	ev.allowed = allowed;
	ev.reason = allowed ? NULL : "port_not_allowed";
	snprintf(ev.user_id, sizeof(ev.user_id), "u1");
	snprintf(ev.destination_host, sizeof(ev.destination_host), "db.corp");
	ev.destination_port = 5432;
	ev.bytes_up = 10;
	ev.bytes_down = 20;
	ev.duration_ms = 30;
	return ev;
}

static void test_event_json(void **state)
{
	(void)state;
	struct connector_flow_event ev = sample(7, 0);
	json_t *o = connector_flow_event_json(&ev);
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "flow_id")),
			    "00000000000000000000000000000007");
	assert_string_equal(json_string_value(json_object_get(o, "decision")), "deny");
	assert_string_equal(json_string_value(json_object_get(o, "reason")), "port_not_allowed");
	assert_string_equal(json_string_value(json_object_get(o, "protocol")), "tcp");
	assert_int_equal(json_integer_value(json_object_get(o, "destination_port")), 5432);
	assert_int_equal(json_integer_value(json_object_get(o, "bytes_down")), 20);
	/* unknown strings are left out rather than sent empty */
	assert_null(json_object_get(o, "device_id"));
	assert_null(json_object_get(o, "destination_ip"));
	assert_int_equal(json_object_size(o), 11);
	json_decref(o);
	ev = sample(8, 1);
	o = connector_flow_event_json(&ev);
	assert_string_equal(json_string_value(json_object_get(o, "decision")), "allow");
	assert_null(json_object_get(o, "reason"));
	json_decref(o);
}

static void test_queue_bounded(void **state)
{
	(void)state;
	struct connector_flow_queue q;
	assert_int_equal(connector_flow_queue_init(&q), 0);
	for (int i = 0; i < CONNECTOR_FLOW_EVENTS_MAX + 5; i++) {
		struct connector_flow_event ev = sample(i, 1);
		connector_flow_queue_push(&q, &ev);
	}
	assert_int_equal(connector_flow_queue_length(&q), CONNECTOR_FLOW_EVENTS_MAX);
	assert_int_equal(connector_flow_queue_dropped(&q), 5);
	json_t *batch = NULL;
	connector_flow_queue_take(&q, CONNECTOR_FLOW_EVENTS_BATCH, 0, &batch);
	assert_int_equal(json_array_size(batch), CONNECTOR_FLOW_EVENTS_BATCH);
	/* oldest first */
	assert_string_equal(json_string_value(json_object_get(json_array_get(batch, 0), "flow_id")),
			    "00000000000000000000000000000000");
	json_decref(batch);
	assert_int_equal(connector_flow_queue_length(&q),
			 CONNECTOR_FLOW_EVENTS_MAX - CONNECTOR_FLOW_EVENTS_BATCH);
	/* room again: a push is kept, not dropped */
	struct connector_flow_event ev = sample(99999, 0);
	connector_flow_queue_push(&q, &ev);
	assert_int_equal(connector_flow_queue_dropped(&q), 5);
	connector_flow_queue_destroy(&q);
}

static void test_queue_empty_take_waits_and_returns_null(void **state)
{
	(void)state;
	struct connector_flow_queue q;
	assert_int_equal(connector_flow_queue_init(&q), 0);
	json_t *batch = (json_t *)1;
	connector_flow_queue_take(&q, 10, 20, &batch);
	assert_null(batch);
	connector_flow_queue_destroy(&q);
}

static void test_connector_token(void **state)
{
	(void)state;
	EVP_PKEY *key = NULL;
	assert_int_equal(sp_key_generate(&key), 0);
	const char *cid = "0123456789abcdef0123456789abcdef";
	char *jws = NULL;
	assert_int_equal(connector_token_make(key, cid, 1700000000, &jws), 0);
	struct sp_jwks set;
	sp_jwks_init(&set);
	assert_int_equal(sp_jwks_add_es256(&set, cid, key), 0);
	json_t *claims = NULL;
	assert_int_equal(sp_token_verify(jws, strlen(jws), &set, "ES256", &claims, NULL), 0);
	assert_string_equal(json_string_value(json_object_get(claims, "iss")), cid);
	assert_string_equal(json_string_value(json_object_get(claims, "aud")), "sallyport:controller");
	assert_int_equal(json_integer_value(json_object_get(claims, "iat")), 1700000000);
	/* at most 300 s, as the controller requires */
	assert_true(json_integer_value(json_object_get(claims, "exp")) - 1700000000 <= 300);
	json_decref(claims);
	sp_jwks_free(&set);
	free(jws);
	EVP_PKEY_free(key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_event_json),
		cmocka_unit_test(test_queue_bounded),
		cmocka_unit_test(test_queue_empty_take_waits_and_returns_null),
		cmocka_unit_test(test_connector_token),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
