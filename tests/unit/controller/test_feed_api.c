/*
 * Tests for controller/feed_api.c and controller/change_watch.c: which change concerns
 * which connector or client (rule by rule, then over real `changes` rows written by the
 * schema's triggers), the answer's shape, and the watcher publishing a commit made by
 * another connection to the feed.
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

#include "controller/change_watch.h"
#include "controller/feed.h"
#include "controller/feed_api.h"
#include "controller/db.h"

static char dir[64];
static char path[128];
static struct db *db;

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/sp-feedapi-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
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

static int64_t latest(void)
{
	struct db_stmt *st = NULL;
	db_prepare(db, "SELECT coalesce(max(seq), 0) FROM changes", &st);
	db_step(st);
	int64_t seq = db_column_int64(st, 0);
	db_finalize(st);
	return seq;
}

/* ---- rules ---- */

static unsigned for_connector(const char *kind, const char *op, const char *entity,
                              const char *detail_json)
{
	json_t *detail = detail_json != NULL ? json_loads(detail_json, 0, NULL) : NULL;
	struct feed_change ch = {.kind = kind, .op = op, .entity_id = entity, .detail = detail};
	unsigned kinds = feed_change_for_connector(&ch, "conn1", "netA");
	json_decref(detail);
	return kinds;
}

static void test_connector_rules(void **state)
{
	(void)state;
	assert_int_equal(for_connector("resource", "insert", "r1", "{\"network_id\":\"netA\"}"),
	                 FEED_KIND_CONFIG);
	assert_int_equal(for_connector("resource", "delete", "r1", "{\"network_id\":\"netA\"}"),
	                 FEED_KIND_CONFIG);
	assert_int_equal(for_connector("resource", "insert", "r1", "{\"network_id\":\"netB\"}"), 0);
	/* moved out of its network */
	assert_int_equal(for_connector("resource", "update", "r1",
	                               "{\"network_id\":\"netB\",\"previous_network_id\":\"netA\"}"),
	                 FEED_KIND_CONFIG);
	assert_int_equal(for_connector("session", "update", "s1", NULL), FEED_KIND_CONFIG);
	assert_int_equal(for_connector("session", "delete", "s1", NULL), FEED_KIND_CONFIG);
	assert_int_equal(for_connector("session", "insert", "s1", NULL), 0);
	assert_int_equal(for_connector("device", "update", "d1", NULL), FEED_KIND_CONFIG);
	assert_int_equal(for_connector("device", "insert", "d1", NULL), 0);
	assert_int_equal(for_connector("user", "update", "u1", NULL), FEED_KIND_CONFIG);
	assert_int_equal(for_connector("user", "insert", "u1", NULL), 0);
	assert_int_equal(for_connector("membership", "insert", "u:g", NULL), FEED_KIND_CONFIG);
	assert_int_equal(for_connector("policy", "delete", "p1", NULL), FEED_KIND_CONFIG);
	assert_int_equal(for_connector("signing_key", "insert", "kid", NULL), FEED_KIND_CONFIG);
	assert_int_equal(for_connector("connector", "update", "conn1", NULL), FEED_KIND_CONFIG);
	assert_int_equal(for_connector("connector", "update", "conn2", NULL), 0);
	assert_int_equal(for_connector("group", "insert", "g1", NULL), 0);
	assert_int_equal(for_connector("remote_network", "insert", "netC", NULL), 0);
	assert_int_equal(for_connector("settings", "update", "settings", NULL), 0);
	assert_int_equal(for_connector("service_account_key", "update", "k", NULL), 0);
}

static struct feed_client_view view(void)
{
	struct feed_client_view v;
	memset(&v, 0, sizeof(v));
	snprintf(v.user_id, sizeof(v.user_id), "u1");
	snprintf(v.session_id, sizeof(v.session_id), "s1");
	snprintf(v.device_id, sizeof(v.device_id), "d1");
	v.groups = json_pack("{s:b}", "g1", 1);
	v.resources = json_pack("{s:b}", "r1", 1);
	v.networks = json_pack("{s:b}", "netA", 1);
	return v;
}

static unsigned for_client(const struct feed_client_view *v, const char *kind, const char *op,
                           const char *entity, const char *detail_json)
{
	json_t *detail = detail_json != NULL ? json_loads(detail_json, 0, NULL) : NULL;
	struct feed_change ch = {.kind = kind, .op = op, .entity_id = entity, .detail = detail};
	unsigned kinds = feed_change_for_client(&ch, v);
	json_decref(detail);
	return kinds;
}

static void test_client_rules(void **state)
{
	(void)state;
	struct feed_client_view v = view();
	assert_int_equal(for_client(&v, "session", "update", "s1", NULL), FEED_KIND_SESSION);
	assert_int_equal(for_client(&v, "session", "delete", "s1", NULL), FEED_KIND_SESSION);
	assert_int_equal(for_client(&v, "session", "update", "s2", NULL), 0);
	assert_int_equal(for_client(&v, "session", "insert", "s1", NULL), 0);
	assert_int_equal(for_client(&v, "device", "update", "d1", NULL), FEED_KIND_SESSION);
	assert_int_equal(for_client(&v, "device", "update", "d2", NULL), 0);
	assert_int_equal(for_client(&v, "user", "update", "u1", NULL), FEED_KIND_SESSION);
	assert_int_equal(for_client(&v, "user", "delete", "u2", NULL), 0);
	assert_int_equal(for_client(&v, "service_account_key", "update", "k",
	                            "{\"service_account_id\":\"u1\"}"),
	                 FEED_KIND_SESSION);
	assert_int_equal(for_client(&v, "service_account_key", "update", "k",
	                            "{\"service_account_id\":\"u2\"}"),
	                 0);
	assert_int_equal(for_client(&v, "membership", "delete", "u1:g9",
	                            "{\"user_id\":\"u1\",\"group_id\":\"g9\"}"),
	                 FEED_KIND_RESOURCES);
	assert_int_equal(for_client(&v, "membership", "insert", "u2:g1",
	                            "{\"user_id\":\"u2\",\"group_id\":\"g1\"}"),
	                 0);
	assert_int_equal(for_client(&v, "group", "update", "g1", NULL), FEED_KIND_RESOURCES);
	assert_int_equal(for_client(&v, "group", "insert", "g2", NULL), 0);
	assert_int_equal(for_client(&v, "policy", "insert", "p1",
	                            "{\"group_id\":\"g1\",\"resource_id\":\"r5\"}"),
	                 FEED_KIND_RESOURCES);
	assert_int_equal(for_client(&v, "policy", "update", "p1",
	                            "{\"group_id\":\"g2\",\"previous_group_id\":\"g1\"}"),
	                 FEED_KIND_RESOURCES);
	assert_int_equal(for_client(&v, "policy", "insert", "p2",
	                            "{\"group_id\":\"g2\",\"resource_id\":\"r1\"}"),
	                 0);
	assert_int_equal(for_client(&v, "resource", "update", "r1", "{\"network_id\":\"netA\"}"),
	                 FEED_KIND_RESOURCES);
	assert_int_equal(for_client(&v, "resource", "update", "r2", "{\"network_id\":\"netA\"}"), 0);
	assert_int_equal(for_client(&v, "connector", "update", "c1", "{\"network_id\":\"netA\"}"),
	                 FEED_KIND_RESOURCES);
	assert_int_equal(for_client(&v, "connector", "insert", "c2", "{\"network_id\":\"netB\"}"), 0);
	assert_int_equal(for_client(&v, "remote_network", "update", "netA", NULL),
	                 FEED_KIND_RESOURCES);
	assert_int_equal(for_client(&v, "remote_network", "update", "netB", NULL), 0);
	assert_int_equal(for_client(&v, "signing_key", "insert", "kid", NULL), 0);
	assert_int_equal(for_client(&v, "settings", "update", "settings", NULL), 0);
	feed_client_view_free(&v);
	feed_client_view_free(&v); /* safe twice */
	feed_client_view_free(NULL);
}

static void test_answer(void **state)
{
	(void)state;
	json_t *a = feed_answer(7, FEED_KIND_SESSION | FEED_KIND_RESOURCES);
	char *text = json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS);
	assert_string_equal(text, "{\"changes\":[\"resources\",\"session\"],\"seq\":7,\"v\":1}");
	free(text);
	json_decref(a);
	a = feed_answer(0, 0);
	text = json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS);
	assert_string_equal(text, "{\"changes\":[],\"seq\":0,\"v\":1}");
	free(text);
	json_decref(a);
}

/* ---- over real changes rows ---- */

#define NET_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define NET_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define CONN "cccccccccccccccccccccccccccccccc"
#define RES_A "11111111111111111111111111111111"
#define RES_B "22222222222222222222222222222222"
#define USER "33333333333333333333333333333333"
#define OTHER "44444444444444444444444444444444"
#define DEV "55555555555555555555555555555555"
#define SESS "77777777777777777777777777777777"
#define GROUP "88888888888888888888888888888888"

static unsigned pending_connector(int64_t after)
{
	unsigned kinds = 99;
	assert_int_equal(feed_pending_kinds(db, after, latest(), CONN, NET_A, NULL, &kinds), 0);
	return kinds;
}

static unsigned pending_client(int64_t after)
{
	struct feed_client_view v;
	assert_int_equal(feed_client_view_load(db, USER, SESS, DEV, &v), 0);
	unsigned kinds = 99;
	assert_int_equal(feed_pending_kinds(db, after, latest(), NULL, NULL, &v, &kinds), 0);
	feed_client_view_free(&v);
	return kinds;
}

static void test_pending_from_store(void **state)
{
	(void)state;
	exec_sql("INSERT INTO remote_networks (id, name, created_at, updated_at) VALUES"
	         " ('" NET_A "', 'a', 1, 1), ('" NET_B "', 'b', 1, 1);"
	         "INSERT INTO users (id, issuer, subject, created_at, updated_at) VALUES"
	         " ('" USER "', 'i', 'u', 1, 1), ('" OTHER "', 'i', 'o', 1, 1);"
	         "INSERT INTO devices (id, user_id, public_key_thumbprint, public_key_pem, state,"
	         " first_seen_at, last_seen_at, updated_at) VALUES ('" DEV "', '" USER "',"
	         " 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', 'p', 'approved', 1, 1, 1);"
	         "INSERT INTO sessions (id, user_id, device_id, auth_method, auth_time, created_at,"
	         " last_used_at, expires_at) VALUES ('" SESS "', '" USER "', '" DEV "', 'oidc', 1,"
	         " 1, 1, 1800000000);"
	         "INSERT INTO groups (id, name, created_at, updated_at) VALUES ('" GROUP "', 'g', 1, 1);"
	         "INSERT INTO memberships (user_id, group_id, created_at) VALUES"
	         " ('" USER "', '" GROUP "', 1);");
	int64_t s = latest();
	assert_int_equal(pending_connector(s), 0);
	assert_int_equal(pending_client(s), 0);

	/* A resource in another network: nobody here. */
	exec_sql("INSERT INTO resources (id, network_id, name, address, created_at, updated_at)"
	         " VALUES ('" RES_B "', '" NET_B "', 'b', '10.2.0.1', 1, 1)");
	assert_int_equal(pending_connector(s), 0);
	assert_int_equal(pending_client(s), 0);
	s = latest();

	/* A resource in its network: the connector; the client cannot reach it yet. */
	exec_sql("INSERT INTO resources (id, network_id, name, address, created_at, updated_at)"
	         " VALUES ('" RES_A "', '" NET_A "', 'a', '10.1.0.1', 1, 1)");
	assert_int_equal(pending_connector(s), FEED_KIND_CONFIG);
	assert_int_equal(pending_client(s), 0);
	s = latest();

	/* A policy for the client's group: both (connectors hold policies' effects too). */
	exec_sql("INSERT INTO policies (id, group_id, resource_id, created_at, updated_at) VALUES"
	         " ('99999999999999999999999999999999', '" GROUP "', '" RES_A "', 1, 1)");
	assert_int_equal(pending_connector(s), FEED_KIND_CONFIG);
	assert_int_equal(pending_client(s), FEED_KIND_RESOURCES);
	s = latest();

	/* Another user's membership: the connector, not this client. */
	exec_sql("INSERT INTO memberships (user_id, group_id, created_at) VALUES"
	         " ('" OTHER "', '" GROUP "', 1)");
	assert_int_equal(pending_client(s), 0);
	s = latest();

	/* Now reachable: a change to the resource concerns the client. */
	exec_sql("UPDATE resources SET address = '10.1.0.2' WHERE id = '" RES_A "'");
	assert_int_equal(pending_client(s), FEED_KIND_RESOURCES);
	s = latest();

	/* Deleting the group cascades to memberships and policies, which name the user. */
	int64_t before_delete = s;
	exec_sql("DELETE FROM groups WHERE id = '" GROUP "'");
	assert_int_equal(pending_client(before_delete), FEED_KIND_RESOURCES);
	s = latest();

	/* The client's session revoked: session (and the connector's revocation list). */
	exec_sql("UPDATE sessions SET revoked_at = 5, revoke_reason = 'admin' WHERE id = '" SESS "'");
	assert_int_equal(pending_client(s), FEED_KIND_SESSION);
	assert_int_equal(pending_connector(s), FEED_KIND_CONFIG);

	/* Both kinds over a longer range; the range end is inclusive, the start exclusive. */
	assert_int_equal(pending_client(0), FEED_KIND_RESOURCES | FEED_KIND_SESSION);
	unsigned kinds = 99;
	assert_int_equal(feed_pending_kinds(db, 5, 5, CONN, NET_A, NULL, &kinds), 0);
	assert_int_equal(kinds, 0);
	/* Past the scan bound every kind is named without reading. */
	assert_int_equal(feed_pending_kinds(db, 0, FEED_SCAN_MAX + 1, CONN, NET_A, NULL, &kinds), 0);
	assert_int_equal(kinds, FEED_KIND_CONFIG);
}

/* ---- the watcher ---- */

static int64_t monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_change_watch(void **state)
{
	(void)state;
	struct feed *feed = NULL;
	assert_int_equal(feed_new(latest(), 20, &feed), 0);
	int64_t start = feed_seq(feed);
	struct change_watch *w = NULL;
	struct sp_diag d;
	assert_int_equal(change_watch_start(&db_sqlite_driver, path, feed, 20, &w, &d), 0);
	/* A commit by another connection (this test's), which publishes nothing itself. */
	exec_sql("INSERT INTO remote_networks (id, name, created_at, updated_at) VALUES"
	         " ('" NET_A "', 'a', 1, 1)");
	int64_t t0 = monotonic_ms();
	while (feed_seq(feed) == start && monotonic_ms() - t0 < 2000)
		usleep(1000);
	int64_t took = monotonic_ms() - t0;
	assert_int_equal(feed_seq(feed), latest());
	assert_true(feed_seq(feed) > start);
	assert_true(took < 500);
	change_watch_stop(w);
	change_watch_stop(NULL);
	feed_free(feed);

	assert_int_equal(change_watch_start(&db_sqlite_driver, "/nonexistent/dir/controller.db",
					    NULL, 0, &w, &d),
			 SP_ERR_DATABASE);
	assert_null(w);
	assert_non_null(strstr(d.message, "/nonexistent/dir/controller.db"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_connector_rules),
		cmocka_unit_test(test_client_rules),
		cmocka_unit_test(test_answer),
		cmocka_unit_test_setup_teardown(test_pending_from_store, setup, teardown),
		cmocka_unit_test_setup_teardown(test_change_watch, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
