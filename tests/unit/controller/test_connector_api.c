/*
 * Tests for controller/connector_api.c without HTTP: enrollment body and direct-address
 * validation, flow-event batch validation (every field, with the index in the message),
 * and the signed connector config built from a real migrated database, verified with
 * sp_token_verify against the authority's published JWKS, claim by claim.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "controller/authority.h"
#include "controller/connector_api.h"
#include "controller/db.h"

#define T0 1700000000

static char dir[64];
static struct db *db;

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/sp-connapi-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	char path[128];
	snprintf(path, sizeof(path), "%s/controller.db", dir);
	int applied = 0;
	if (db_open(&db_sqlite_driver, path, 0, &db, NULL) < 0 ||
	    db_migrate(db, &applied, NULL) < 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	db_close(db);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void exec_sql(const char *sql)
{
	int r = db_exec(db, sql);
	if (r != 0)
		fprintf(stderr, "sql: %s\n", db_errmsg(db));
	assert_int_equal(r, 0);
}

/* ---- enrollment ---- */

static json_t *enroll_body(void)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s}", "token", "spe_x", "name", "c1",
	                 "public_key_pem", "-----BEGIN PUBLIC KEY-----", "direct_address",
	                 "10.0.0.1:7443", "version", "1.0");
}

static void expect_enroll_refused(json_t *body, const char *field)
{
	struct connector_enroll_request in;
	struct sp_diag d;
	assert_int_equal(connector_enroll_validate(body, &in, &d), SP_ERR_INVALID);
	if (strstr(d.message, field) == NULL)
		fail_msg("diag \"%s\" does not name %s", d.message, field);
	json_decref(body);
}

static void test_enroll_validate(void **state)
{
	(void)state;
	struct connector_enroll_request in;
	struct sp_diag d;
	json_t *body = enroll_body();
	assert_int_equal(connector_enroll_validate(body, &in, &d), 0);
	assert_string_equal(in.token, "spe_x");
	assert_string_equal(in.name, "c1");
	assert_string_equal(in.direct_address, "10.0.0.1:7443");
	assert_string_equal(in.version, "1.0");
	json_object_set_new(body, "direct_address", json_null());
	json_object_del(body, "version");
	assert_int_equal(connector_enroll_validate(body, &in, &d), 0);
	assert_null(in.direct_address);
	assert_null(in.version);
	json_decref(body);

	body = enroll_body();
	json_object_del(body, "token");
	expect_enroll_refused(body, "token");
	body = enroll_body();
	json_object_set_new(body, "name", json_string(""));
	expect_enroll_refused(body, "name");
	body = enroll_body();
	json_object_set_new(body, "name", json_string("bad\nname"));
	expect_enroll_refused(body, "name");
	body = enroll_body();
	json_object_set_new(body, "public_key_pem", json_integer(3));
	expect_enroll_refused(body, "public_key_pem");
	body = enroll_body();
	json_object_set_new(body, "direct_address", json_string("10.0.0.1"));
	expect_enroll_refused(body, "direct_address");
	body = enroll_body();
	json_object_set_new(body, "version", json_null());
	expect_enroll_refused(body, "version");
	body = enroll_body();
	json_object_set_new(body, "admin", json_true());
	expect_enroll_refused(body, "admin");
}

static void test_direct_address(void **state)
{
	(void)state;
	assert_int_equal(connector_check_direct_address("10.0.0.1:443"), 0);
	assert_int_equal(connector_check_direct_address("conn-1.corp.example:7443"), 0);
	assert_int_equal(connector_check_direct_address("[fd00::1]:7443"), 0);
	assert_int_equal(connector_check_direct_address("host:65535"), 0);
	assert_int_equal(connector_check_direct_address("host:0"), SP_ERR_INVALID);
	assert_int_equal(connector_check_direct_address("host:65536"), SP_ERR_INVALID);
	assert_int_equal(connector_check_direct_address("host:"), SP_ERR_INVALID);
	assert_int_equal(connector_check_direct_address(":80"), SP_ERR_INVALID);
	assert_int_equal(connector_check_direct_address("host"), SP_ERR_INVALID);
	assert_int_equal(connector_check_direct_address("ho st:80"), SP_ERR_INVALID);
	assert_int_equal(connector_check_direct_address("[]:80"), SP_ERR_INVALID);
	assert_int_equal(connector_check_direct_address("[fd00::1]7443"), SP_ERR_INVALID);
	assert_int_equal(connector_check_direct_address("[zz::1]:80"), SP_ERR_INVALID);
	assert_int_equal(connector_check_direct_address("host:8o"), SP_ERR_INVALID);
	assert_int_equal(connector_check_direct_address(""), SP_ERR_INVALID);
}

/* ---- flow events ---- */

static json_t *good_event(int i)
{
	char flow[16];
	snprintf(flow, sizeof(flow), "flow-%d", i);
	return json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:I, s:I, s:I}",
	                 "flow_id", flow, "time", (json_int_t)T0, "user_id", "u1", "device_id", "d1",
	                 "resource_id", "r1", "protocol", "tcp", "destination_host", "db.corp",
	                 "destination_ip", "10.1.2.3", "destination_port", 5432, "decision", "allow",
	                 "bytes_up", (json_int_t)1, "bytes_down", (json_int_t)2, "duration_ms",
	                 (json_int_t)3);
}

static struct connector_flow_event events[CONNECTOR_FLOW_BATCH_MAX];

/* A batch of two good events where event 1 gets `field` set to `value` (NULL: removed). */
static void expect_event_refused(const char *field, json_t *value, const char *named)
{
	json_t *second = good_event(1);
	if (value != NULL)
		json_object_set_new(second, field, value);
	else
		json_object_del(second, field);
	json_t *body = json_pack("{s:[o, o]}", "events", good_event(0), second);
	size_t count = 99;
	struct sp_diag d;
	assert_int_equal(connector_flow_events_validate(body, events, &count, &d), SP_ERR_INVALID);
	assert_int_equal(count, 0);
	if (strstr(d.message, named) == NULL)
		fail_msg("diag \"%s\" does not name %s", d.message, named);
	json_decref(body);
}

static void test_flow_events_valid(void **state)
{
	(void)state;
	json_t *minimal = json_pack("{s:s, s:i, s:s, s:s, s:s}", "flow_id", "f", "time", 0,
	                            "protocol", "udp", "decision", "deny", "reason", "no_policy");
	json_object_set_new(minimal, "user_id", json_null());
	json_t *body = json_pack("{s:[o, o]}", "events", good_event(0), minimal);
	size_t count = 0;
	struct sp_diag d;
	assert_int_equal(connector_flow_events_validate(body, events, &count, &d), 0);
	assert_int_equal(count, 2);
	assert_string_equal(events[0].flow_id, "flow-0");
	assert_int_equal(events[0].time, T0);
	assert_string_equal(events[0].protocol, "tcp");
	assert_string_equal(events[0].destination_ip, "10.1.2.3");
	assert_int_equal(events[0].destination_port, 5432);
	assert_string_equal(events[0].decision, "allow");
	assert_null(events[0].reason);
	assert_int_equal(events[0].bytes_up, 1);
	assert_int_equal(events[0].bytes_down, 2);
	assert_int_equal(events[0].duration_ms, 3);
	assert_null(events[1].user_id);
	assert_null(events[1].destination_host);
	assert_int_equal(events[1].destination_port, -1);
	assert_string_equal(events[1].reason, "no_policy");
	assert_int_equal(events[1].bytes_up, 0);
	json_decref(body);

	/* IPv6 destinations and the largest batch are fine. */
	body = json_pack("{s:[]}", "events");
	for (int i = 0; i < CONNECTOR_FLOW_BATCH_MAX; i++) {
		json_t *e = good_event(i);
		json_object_set_new(e, "destination_ip", json_string("fd00::1"));
		json_array_append_new(json_object_get(body, "events"), e);
	}
	assert_int_equal(connector_flow_events_validate(body, events, &count, &d), 0);
	assert_int_equal(count, CONNECTOR_FLOW_BATCH_MAX);
	json_array_append_new(json_object_get(body, "events"), good_event(1000));
	assert_int_equal(connector_flow_events_validate(body, events, &count, &d), SP_ERR_TOO_LARGE);
	assert_int_equal(count, 0);
	assert_non_null(strstr(d.message, "1000"));
	json_decref(body);
}

static void test_flow_events_refused(void **state)
{
	(void)state;
	expect_event_refused("flow_id", NULL, "events[1].flow_id");
	expect_event_refused("flow_id", json_string(""), "events[1].flow_id");
	expect_event_refused("flow_id", json_string("0123456789012345678901234567890123456789"
	                                            "0123456789012345678901234"),
	                     "events[1].flow_id");
	expect_event_refused("time", NULL, "events[1].time");
	expect_event_refused("time", json_integer(-1), "events[1].time");
	expect_event_refused("time", json_string("now"), "events[1].time");
	expect_event_refused("user_id", json_integer(1), "events[1].user_id");
	expect_event_refused("device_id", json_string(""), "events[1].device_id");
	expect_event_refused("session_id", json_true(), "events[1].session_id");
	expect_event_refused("resource_id", json_string("r\x01"), "events[1].resource_id");
	expect_event_refused("protocol", json_string("sctp"), "events[1].protocol");
	expect_event_refused("protocol", NULL, "events[1].protocol");
	expect_event_refused("destination_host", json_string(""), "events[1].destination_host");
	expect_event_refused("destination_ip", json_string("10.1.2"), "events[1].destination_ip");
	expect_event_refused("destination_ip", json_string("localhost"), "events[1].destination_ip");
	expect_event_refused("destination_port", json_integer(65536), "events[1].destination_port");
	expect_event_refused("destination_port", json_integer(-1), "events[1].destination_port");
	expect_event_refused("destination_port", json_string("443"), "events[1].destination_port");
	expect_event_refused("decision", json_string("allowed"), "events[1].decision");
	expect_event_refused("decision", NULL, "events[1].decision");
	expect_event_refused("reason", json_string("No Policy"), "events[1].reason");
	expect_event_refused("bytes_up", json_integer(-5), "events[1].bytes_up");
	expect_event_refused("bytes_down", json_real(1.5), "events[1].bytes_down");
	expect_event_refused("duration_ms", json_integer(-1), "events[1].duration_ms");
	expect_event_refused("connector_id", json_string("spoof"), "events[1].connector_id");
	expect_event_refused("decision", json_string("deny"), "events[1].reason"); /* no reason */

	size_t count = 0;
	struct sp_diag d;
	json_t *body = json_pack("{s:[]}", "events");
	assert_int_equal(connector_flow_events_validate(body, events, &count, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "events"));
	json_decref(body);
	body = json_pack("{s:{}}", "events");
	assert_int_equal(connector_flow_events_validate(body, events, &count, &d), SP_ERR_INVALID);
	json_decref(body);
	body = json_pack("{s:[i]}", "events", 1);
	assert_int_equal(connector_flow_events_validate(body, events, &count, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "events[0]"));
	json_decref(body);
	body = json_pack("{s:[], s:i}", "events", "more", 1);
	assert_int_equal(connector_flow_events_validate(body, events, &count, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "more"));
	json_decref(body);
}

/* ---- the signed config ---- */

#define NET_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define NET_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define CONNECTOR "cccccccccccccccccccccccccccccccc"
#define RES_1 "11111111111111111111111111111111"
#define RES_2 "22222222222222222222222222222222"
#define USER_OK "33333333333333333333333333333333"
#define USER_OFF "44444444444444444444444444444444"
#define DEV_OK "55555555555555555555555555555555"
#define DEV_BLOCKED "66666666666666666666666666666666"
#define SESS_LIVE "77777777777777777777777777777777"
#define SESS_REVOKED "88888888888888888888888888888888"
#define SESS_REVOKED_OLD "99999999999999999999999999999999"

static void fill_store(void)
{
	exec_sql("INSERT INTO remote_networks (id, name, created_at, updated_at) VALUES"
	         " ('" NET_A "', 'a', 1, 1), ('" NET_B "', 'b', 1, 1);"
	         "INSERT INTO resources (id, network_id, name, address, alias, tcp_ports, udp_ports,"
	         " icmp, created_at, updated_at) VALUES"
	         " ('" RES_1 "', '" NET_A "', 'grafana', 'grafana.corp', 'grafana.sp',"
	         "  '[\"443\",\"8000-8100\"]', '\"none\"', 0, 1, 1),"
	         " ('" RES_2 "', '" NET_A "', 'subnet', '10.1.0.0/16', NULL, '\"all\"', '[\"53\"]',"
	         "  1, 1, 1),"
	         " ('dddddddddddddddddddddddddddddddd', '" NET_B "', 'other', '10.2.0.0/16', NULL,"
	         "  '\"all\"', '\"all\"', 0, 1, 1);"
	         "INSERT INTO users (id, issuer, subject, disabled, created_at, updated_at) VALUES"
	         " ('" USER_OK "', 'i', 'ok', 0, 1, 1), ('" USER_OFF "', 'i', 'off', 1, 1, 1);"
	         "INSERT INTO devices (id, user_id, public_key_thumbprint, public_key_pem, state,"
	         " first_seen_at, last_seen_at, updated_at) VALUES"
	         " ('" DEV_OK "', '" USER_OK "', 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', 'p',"
	         "  'approved', 1, 1, 1),"
	         " ('" DEV_BLOCKED "', '" USER_OK "', 'BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB',"
	         "  'p', 'blocked', 1, 1, 1);"
	         "INSERT INTO sessions (id, user_id, device_id, auth_method, auth_time, created_at,"
	         " last_used_at, expires_at, revoked_at, revoke_reason) VALUES"
	         " ('" SESS_LIVE "', '" USER_OK "', '" DEV_OK "', 'oidc', 1, 1, 1, 1800000000,"
	         "  NULL, NULL),"
	         " ('" SESS_REVOKED "', '" USER_OK "', '" DEV_OK "', 'oidc', 1, 1, 1, 1800000000,"
	         "  1600000000, 'admin'),"
	         " ('" SESS_REVOKED_OLD "', '" USER_OK "', '" DEV_OK "', 'oidc', 1, 1, 1, 1600000000,"
	         "  1500000000, 'sign_out');");
}

static void assert_ids(const json_t *array, const char *only)
{
	assert_true(json_is_array(array));
	if (only == NULL) {
		assert_int_equal(json_array_size(array), 0);
		return;
	}
	assert_int_equal(json_array_size(array), 1);
	assert_string_equal(json_string_value(json_array_get(array, 0)), only);
}

static void test_config_document(void **state)
{
	(void)state;
	fill_store();
	struct authority a;
	memset(&a, 0, sizeof(a));
	struct sp_diag d;
	assert_int_equal(authority_open(&a, db, NULL, T0, &d), 0);
	char *doc = NULL;
	assert_int_equal(connector_config_document(db, &a, "https://sp.example", CONNECTOR, NET_A,
	                                           T0 + 5, 42, &doc),
	                 0);

	size_t len = 0;
	const char *jwks_text = authority_jwks(&a, &len);
	struct sp_jwks keys;
	assert_int_equal(sp_jwks_parse(jwks_text, len, &keys, &d), 0);
	json_t *claims = NULL;
	assert_int_equal(sp_token_verify(doc, strlen(doc), &keys, "ES256", &claims, &d), 0);
	struct sp_token_expect e = {.issuer = "https://sp.example",
	                            .audience = "sallyport:connector:" CONNECTOR,
	                            .now = T0 + 10,
	                            .max_skew_s = 0,
	                            .require_exp = 1};
	assert_int_equal(sp_token_check_claims(claims, &e, &d), 0);
	e.audience = "sallyport:connector:" NET_A;
	assert_int_equal(sp_token_check_claims(claims, &e, &d), SP_ERR_AUDIENCE);
	e.audience = "sallyport:connector:" CONNECTOR;
	e.now = T0 + 5 + CONNECTOR_CONFIG_TTL_S + 1;
	assert_int_equal(sp_token_check_claims(claims, &e, &d), SP_ERR_EXPIRED);

	assert_int_equal(json_integer_value(json_object_get(claims, "v")), 1);
	assert_string_equal(json_string_value(json_object_get(claims, "typ")), "connector-config");
	assert_string_equal(json_string_value(json_object_get(claims, "iss")), "https://sp.example");
	assert_string_equal(json_string_value(json_object_get(claims, "aud")),
	                    "sallyport:connector:" CONNECTOR);
	assert_int_equal(json_integer_value(json_object_get(claims, "iat")), T0 + 5);
	assert_int_equal(json_integer_value(json_object_get(claims, "exp")), T0 + 5 + 600);
	assert_string_equal(json_string_value(json_object_get(claims, "network_id")), NET_A);
	assert_int_equal(json_integer_value(json_object_get(claims, "seq")), 42);
	assert_int_equal(json_object_size(claims), 10);

	/* Only the resources of its own network, each complete and in id order. */
	json_t *expected = json_loads(
		"[{\"id\":\"" RES_1 "\",\"name\":\"grafana\",\"address\":\"grafana.corp\","
		"\"alias\":\"grafana.sp\",\"tcp\":[\"443\",\"8000-8100\"],\"udp\":\"none\","
		"\"icmp\":false},"
		"{\"id\":\"" RES_2 "\",\"name\":\"subnet\",\"address\":\"10.1.0.0/16\","
		"\"alias\":null,\"tcp\":\"all\",\"udp\":[\"53\"],\"icmp\":true}]",
		0, NULL);
	assert_non_null(expected);
	assert_true(json_equal(json_object_get(claims, "resources"), expected));
	json_decref(expected);

	/* Revoked sessions that have not yet expired, blocked devices, disabled users. */
	const json_t *rev = json_object_get(claims, "revocations");
	assert_int_equal(json_object_size(rev), 4);
	assert_int_equal(json_array_size(json_object_get(rev, "access")), 0);
	assert_ids(json_object_get(rev, "sessions"), SESS_REVOKED);
	assert_ids(json_object_get(rev, "devices"), DEV_BLOCKED);
	assert_ids(json_object_get(rev, "users"), USER_OFF);
	json_decref(claims);

	/* A network without resources gets an empty list, not an error. */
	json_t *empty = NULL;
	assert_int_equal(connector_config_claims(db, "https://sp.example", CONNECTOR,
	                                         "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", T0, 0, &empty),
	                 0);
	assert_int_equal(json_array_size(json_object_get(empty, "resources")), 0);
	json_decref(empty);

	/* A tampered document does not verify. */
	char *dot = strrchr(doc, '.');
	dot[1] = dot[1] == 'A' ? 'B' : 'A';
	assert_int_not_equal(sp_token_verify(doc, strlen(doc), &keys, "ES256", &claims, &d), 0);
	sp_jwks_free(&keys);
	free(doc);
	authority_close(&a);
}

/* ---- "access ended" revocations (db/migrations/0002, revocations.access) ---- */

#define USER_B "abababababababababababababababab"
#define GROUP_1 "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
#define GROUP_2 "a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2"
#define POL_1_R1 "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1"
#define POL_1_R2 "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"
#define POL_2_R1 "b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3"

/* The access list of NET_A as "user:resource" lines (times checked separately). */
static void access_pairs(size_t cap, char *out, size_t size, int64_t *earliest, int64_t *latest)
{
	json_t *list = json_array();
	assert_non_null(list);
	int64_t now = (int64_t)time(NULL);
	assert_int_equal(connector_access_revocations(db, NET_A, now, cap, list), 0);
	out[0] = '\0';
	size_t used = 0;
	*earliest = INT64_MAX;
	*latest = -1;
	for (size_t i = 0; i < json_array_size(list); i++) {
		const json_t *e = json_array_get(list, i);
		assert_int_equal(json_object_size(e), 3);
		int64_t at = json_integer_value(json_object_get(e, "at"));
		*earliest = at < *earliest ? at : *earliest;
		*latest = at > *latest ? at : *latest;
		int n = snprintf(out + used, size - used, "%.2s:%.2s ",
		                 json_string_value(json_object_get(e, "user")),
		                 json_string_value(json_object_get(e, "resource")));
		assert_true(n > 0 && (size_t)n < size - used);
		used += (size_t)n;
	}
	json_decref(list);
}

static void test_access_revocations(void **state)
{
	(void)state;
	fill_store();
	/* USER_OK in groups 1 and 2, USER_B in group 1. Group 1 has RES_1 and RES_2, group 2
	 * has RES_1 only. */
	exec_sql("INSERT INTO users (id, issuer, subject, created_at, updated_at) VALUES"
	         " ('" USER_B "', 'i', 'b', 1, 1);"
	         "INSERT INTO groups (id, name, created_at, updated_at) VALUES"
	         " ('" GROUP_1 "', 'g1', 1, 1), ('" GROUP_2 "', 'g2', 1, 1);"
	         "INSERT INTO memberships (user_id, group_id, created_at) VALUES"
	         " ('" USER_OK "', '" GROUP_1 "', 1), ('" USER_OK "', '" GROUP_2 "', 1),"
	         " ('" USER_B "', '" GROUP_1 "', 1);"
	         "INSERT INTO policies (id, group_id, resource_id, created_at, updated_at) VALUES"
	         " ('" POL_1_R1 "', '" GROUP_1 "', '" RES_1 "', 1, 1),"
	         " ('" POL_1_R2 "', '" GROUP_1 "', '" RES_2 "', 1, 1),"
	         " ('" POL_2_R1 "', '" GROUP_2 "', '" RES_1 "', 1, 1);");
	char pairs[512];
	int64_t earliest = 0, latest = 0;
	access_pairs(100, pairs, sizeof(pairs), &earliest, &latest);
	assert_string_equal(pairs, "");
	/* the table is STRICT like every other */
	struct db_stmt *st = NULL;
	assert_int_equal(db_prepare(db, "SELECT strict FROM pragma_table_list"
	                                " WHERE name = 'access_revocations'", &st), 0);
	assert_int_equal(db_step(st), DB_ROW);
	assert_int_equal(db_column_int(st, 0), 1);
	db_finalize(st);

	/* Policy (group 1, RES_1) deleted: USER_B loses RES_1; USER_OK keeps it by group 2. */
	int64_t before = (int64_t)time(NULL);
	exec_sql("DELETE FROM policies WHERE id = '" POL_1_R1 "'");
	int64_t after = (int64_t)time(NULL);
	access_pairs(100, pairs, sizeof(pairs), &earliest, &latest);
	assert_string_equal(pairs, "ab:11 ");
	/* time(NULL) reads a coarse clock that can trail SQLite's by a tick at a second boundary */
	assert_true(earliest >= before && latest <= after + 1);

	/* USER_OK leaves group 1: loses RES_2 (RES_1 still through group 2). */
	exec_sql("DELETE FROM memberships WHERE user_id = '" USER_OK "' AND group_id = '" GROUP_1
	         "'");
	access_pairs(100, pairs, sizeof(pairs), &earliest, &latest);
	assert_string_equal(pairs, "33:22 ab:11 ");

	/* Group 2 deleted (cascading its memberships and policies): USER_OK loses RES_1. */
	exec_sql("DELETE FROM groups WHERE id = '" GROUP_2 "'");
	access_pairs(100, pairs, sizeof(pairs), &earliest, &latest);
	assert_string_equal(pairs, "33:11 33:22 ab:11 ");

	/* A policy moved to another resource ends the old pairing: USER_B loses RES_2. */
	exec_sql("INSERT INTO resources (id, network_id, name, address, created_at, updated_at)"
	         " VALUES ('eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee', '" NET_B "', 'x', 'x.corp', 1, 1);"
	         "UPDATE policies SET resource_id = 'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee'"
	         " WHERE id = '" POL_1_R2 "'");
	access_pairs(100, pairs, sizeof(pairs), &earliest, &latest);
	assert_string_equal(pairs, "33:11 33:22 ab:11 ab:22 ");

	/* Past the cap: one entry per user with resource "*" and the user's latest time. */
	access_pairs(3, pairs, sizeof(pairs), &earliest, &latest);
	assert_string_equal(pairs, "33:* ab:* ");
	/* Past it again: everyone, everything, the latest time of all. */
	access_pairs(1, pairs, sizeof(pairs), &earliest, &latest);
	assert_string_equal(pairs, "*:* ");
	assert_true(latest >= before && latest <= (int64_t)time(NULL) + 1);

	/* Expired rows are left out (and deleted by the next write). */
	exec_sql("UPDATE access_revocations SET expires_at = revoked_at");
	access_pairs(100, pairs, sizeof(pairs), &earliest, &latest);
	assert_string_equal(pairs, "");

	/* A deleted resource takes nothing along to the list (its flows are cut anyway). */
	json_t *claims = NULL;
	assert_int_equal(connector_config_claims(db, "https://sp.example", CONNECTOR, NET_A,
	                                         (int64_t)time(NULL), 1, &claims),
	                 0);
	assert_int_equal(
		json_array_size(json_object_get(json_object_get(claims, "revocations"), "access")),
		0);
	json_decref(claims);
}

/*
 * A network with hundreds of resources makes a config larger than a token may be (16 KiB);
 * it is still one signed document, bounded by SP_TOKEN_DOCUMENT_MAX_LEN, and verifies with
 * the document bound.
 */
static void test_config_size_limit(void **state)
{
	(void)state;
	struct authority a;
	memset(&a, 0, sizeof(a));
	assert_int_equal(authority_open(&a, db, NULL, T0, NULL), 0);
	exec_sql("INSERT INTO remote_networks (id, name, created_at, updated_at) VALUES"
	         " ('" NET_A "', 'a', 1, 1)");
	for (int i = 0; i < 500; i++) {
		char sql[512];
		snprintf(sql, sizeof(sql),
		         "INSERT INTO resources (id, network_id, name, address, alias, tcp_ports,"
		         " created_at, updated_at) VALUES ('%032x', '" NET_A "', 'service %d',"
		         " 'service-%d.corp.example.com', 'service-%d.sp', '[\"443\",\"8443\"]', 1, 1)",
		         (unsigned)i + 1, i, i, i);
		exec_sql(sql);
	}
	char *doc = NULL;
	assert_int_equal(connector_config_document(db, &a, "https://sp.example", CONNECTOR, NET_A,
	                                           T0, 1, &doc),
	                 0);
	assert_true(strlen(doc) > SP_TOKEN_MAX_LEN);
	size_t len = 0;
	const char *jwks = authority_jwks(&a, &len);
	struct sp_jwks keys;
	assert_int_equal(sp_jwks_parse(jwks, len, &keys, NULL), 0);
	json_t *claims = NULL;
	struct sp_diag d;
	assert_int_equal(sp_token_verify(doc, strlen(doc), &keys, "ES256", &claims, &d),
	                 SP_ERR_TOO_LARGE);
	assert_int_equal(sp_token_verify_max(doc, strlen(doc), SP_TOKEN_DOCUMENT_MAX_LEN, &keys,
	                                     "ES256", &claims, &d),
	                 0);
	assert_int_equal(json_array_size(json_object_get(claims, "resources")), 500);
	print_message("connector config: 500 resources make a %zu-byte signed document\n",
	              strlen(doc));
	json_decref(claims);
	sp_jwks_free(&keys);
	free(doc);
	authority_close(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_enroll_validate),
		cmocka_unit_test(test_direct_address),
		cmocka_unit_test(test_flow_events_valid),
		cmocka_unit_test(test_flow_events_refused),
		cmocka_unit_test_setup_teardown(test_config_document, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_size_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_access_revocations, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
