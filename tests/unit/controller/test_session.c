/*
 * Tests for controller/session.c on a real migrated sqlite database: provisioning with
 * IdP group sync, device registration, sessions, refresh-token rotation and reuse
 * detection, expiry, revocation and the access token; plus the pure sign-in rules
 * (admin e-mail list, loopback redirects, ID token claim checks).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "controller/auth.h"
#include "controller/oidc_client.h"
#include "controller/session.h"
#include "shared/keys.h"
#include "controller/db.h"
#include "shared/token.h"

#define T0 1700000000
#define ISSUER "https://idp.example.com"

static char dir[64];
static struct controller ctl;
static int64_t clock_now = T0;

static int64_t test_now(void)
{
	return clock_now;
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/sp-session-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	char path[128];
	snprintf(path, sizeof(path), "%s/controller.db", dir);
	int applied = 0;
	memset(&ctl, 0, sizeof(ctl));
	clock_now = T0;
	ctl.now = test_now;
	snprintf(ctl.settings.public_url, sizeof(ctl.settings.public_url), "https://sp.example.com");
	snprintf(ctl.settings.admin_emails, sizeof(ctl.settings.admin_emails),
	         "root@example.com, Boss@Example.com");
	ctl.settings.session_ttl_s = 3600;
	if (db_open(&db_sqlite_driver, path, 0, &ctl.db, NULL) < 0 ||
	    db_migrate(ctl.db, &applied, NULL) < 0 ||
	    authority_open(&ctl.authority, ctl.db, NULL, T0, NULL) < 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	authority_close(&ctl.authority);
	db_close(ctl.db);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int64_t count(const char *sql, const char *param)
{
	struct db_stmt *st = NULL;
	assert_int_equal(db_prepare(ctl.db, sql, &st), 0);
	if (param != NULL)
		db_bind_text(st, 1, param, -1, DB_STATIC);
	assert_int_equal(db_step(st), DB_ROW);
	int64_t n = db_column_int64(st, 0);
	db_finalize(st);
	return n;
}

static void text(const char *sql, const char *param, char *out, size_t size)
{
	struct db_stmt *st = NULL;
	assert_int_equal(db_prepare(ctl.db, sql, &st), 0);
	db_bind_text(st, 1, param, -1, DB_STATIC);
	assert_int_equal(db_step(st), DB_ROW);
	snprintf(out, size, "%s",
		 db_column_text(st, 0) != NULL ? (const char *)db_column_text(st, 0) : "(null)");
	db_finalize(st);
}

static void exec(const char *sql)
{
	assert_int_equal(db_exec(ctl.db, sql), 0);
}

static json_t *claims_for(const char *sub, const char *email)
{
	return json_pack("{s:s, s:s, s:s, s:b, s:s}", "iss", ISSUER, "sub", sub, "email", email,
	                 "email_verified", 1, "name", "Some One");
}

static char *new_device_pem(void)
{
	EVP_PKEY *key = NULL;
	char *pem = NULL;
	size_t len = 0;
	assert_int_equal(sp_key_generate(&key), 0);
	assert_int_equal(sp_key_public_pem(key, &pem, &len), 0);
	EVP_PKEY_free(key);
	char *copy = strdup(pem);
	sp_key_free_pem(pem, len);
	return copy;
}

static void provision(const char *sub, const char *email, const char *groups_json,
                      struct session_user *u)
{
	json_t *claims = claims_for(sub, email);
	json_t *groups = groups_json != NULL ? json_loads(groups_json, 0, NULL) : NULL;
	struct sp_diag d;
	assert_int_equal(session_provision_user(&ctl, claims, groups, "console", NULL, u, &d), 0);
	json_decref(claims);
	json_decref(groups);
}

static void test_provision_and_group_sync(void **state)
{
	(void)state;
	struct session_user u, again;
	provision("alice", "Alice@Example.COM", "[\"eng\", \"ops\", 7, \"\"]", &u);
	assert_string_equal(u.email, "alice@example.com");
	assert_string_equal(u.role, "user");
	assert_int_equal(strlen(u.id), 32);
	assert_int_equal(count("SELECT count(*) FROM memberships WHERE user_id = ? AND source = 'idp'",
	                       u.id), 2);
	assert_int_equal(count("SELECT count(*) FROM groups WHERE source = 'idp'", NULL), 2);

	/* A local group of the same name as an IdP group is never joined through the IdP;
	 * a local membership survives every sign-in. */
	exec("INSERT INTO groups (id, name, source, created_at, updated_at) VALUES"
	     " ('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'admins', 'local', 1, 1)");
	exec("INSERT INTO groups (id, name, source, created_at, updated_at) VALUES"
	     " ('bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', 'handmade', 'local', 1, 1)");
	char sql[256];
	snprintf(sql, sizeof(sql), "INSERT INTO memberships (user_id, group_id, source, created_at)"
	         " VALUES ('%s', 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', 'local', 1)", u.id);
	exec(sql);

	provision("alice", "alice@example.com", "[\"ops\", \"admins\", \"new\"]", &again);
	assert_string_equal(again.id, u.id);
	assert_int_equal(count("SELECT count(*) FROM memberships WHERE user_id = ? AND source = 'idp'",
	                       u.id), 2); /* ops, new; eng dropped; admins refused */
	assert_int_equal(count("SELECT count(*) FROM memberships m JOIN groups g ON g.id = m.group_id"
	                       " WHERE m.user_id = ? AND g.name IN ('admins', 'eng')", u.id), 0);
	assert_int_equal(count("SELECT count(*) FROM memberships WHERE user_id = ?"
	                       " AND group_id = 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'", u.id), 1);

	/* No groups claim: every IdP membership goes, local ones stay. */
	provision("alice", "alice@example.com", NULL, &again);
	assert_int_equal(count("SELECT count(*) FROM memberships WHERE user_id = ?", u.id), 1);
	assert_int_equal(count("SELECT count(*) FROM audit_events WHERE action = 'auth.sign_in'"
	                       " AND target_id = ?", u.id), 3);
	assert_int_equal(count("SELECT count(*) FROM users", NULL), 1);
}

static void test_admin_emails_and_disabled(void **state)
{
	(void)state;
	struct session_user u;
	provision("boss", "BOSS@example.com", NULL, &u);
	assert_string_equal(u.role, "admin");
	char sql[256];
	snprintf(sql, sizeof(sql), "UPDATE users SET disabled = 1 WHERE id = '%s'", u.id);
	exec(sql);
	json_t *claims = claims_for("boss", "boss@example.com");
	struct session_user v;
	struct sp_diag d;
	assert_int_equal(session_provision_user(&ctl, claims, NULL, "console", NULL, &v, &d),
	                 SP_ERR_PERMISSION);
	json_decref(claims);

	assert_true(session_email_listed("a@x.io, b@y.io", "B@Y.IO"));
	assert_true(session_email_listed(" a@x.io ,b@y.io ", "a@x.io"));
	assert_false(session_email_listed("a@x.io", "a@x.i"));
	assert_false(session_email_listed("aa@x.io", "a@x.io"));
	assert_false(session_email_listed("", "a@x.io"));
	assert_false(session_email_listed(NULL, "a@x.io"));
}

static void test_session_refresh_and_reuse(void **state)
{
	(void)state;
	struct session_user u;
	provision("carol", "carol@example.com", NULL, &u);
	char *pem = new_device_pem();
	struct session_grant g, g2, g3, bad;
	struct sp_diag d;
	assert_int_equal(session_create(&ctl, u.id, "oidc", T0 - 5, "[\"pwd\"]", pem, "laptop", NULL,
	                                &g, &d), 0);
	assert_int_equal(strncmp(g.refresh_token, "spr_", 4), 0);
	assert_int_equal(g.session_expires_at, T0 + 3600);
	char st[32];
	text("SELECT state FROM devices WHERE id = ?", g.device_id, st, sizeof(st));
	assert_string_equal(st, "approved");
	text("SELECT amr FROM sessions WHERE id = ?", g.session_id, st, sizeof(st));
	assert_string_equal(st, "[\"pwd\"]");

	/* The access token is docs/protocol.md §1.3 and verifies with the published keys. */
	json_t *claims = NULL;
	assert_int_equal(sp_token_verify(g.access_token, strlen(g.access_token),
	                                 &ctl.authority.published, "ES256", &claims, &d), 0);
	struct sp_token_expect e = {.issuer = "https://sp.example.com",
	                            .audience = "sallyport:controller", .now = T0, .jkt = g.jkt,
	                            .require_exp = 1};
	assert_int_equal(sp_token_check_claims(claims, &e, &d), 0);
	assert_string_equal(json_string_value(json_object_get(claims, "typ")), "access");
	assert_string_equal(json_string_value(json_object_get(claims, "sid")), g.session_id);
	assert_string_equal(json_string_value(json_object_get(claims, "dev")), g.device_id);
	assert_string_equal(json_string_value(json_object_get(claims, "sub")), u.id);
	assert_int_equal(json_integer_value(json_object_get(claims, "exp")), T0 + 600);
	json_decref(claims);

	clock_now += 100;
	assert_int_equal(session_refresh(&ctl, g.refresh_token, NULL, &g2, &d), 0);
	assert_string_not_equal(g2.refresh_token, g.refresh_token);
	assert_string_equal(g2.session_id, g.session_id);
	assert_int_equal(g2.access_token_expires_at, T0 + 100 + 600);
	assert_int_equal(session_refresh(&ctl, g2.refresh_token, NULL, &g3, &d), 0);

	/* The first token again: theft assumed, the session and its family end. */
	assert_int_equal(session_refresh(&ctl, g.refresh_token, NULL, &bad, &d), SP_ERR_KEY_BINDING);
	assert_null(bad.access_token);
	text("SELECT revoke_reason FROM sessions WHERE id = ?", g.session_id, st, sizeof(st));
	assert_string_equal(st, "refresh_token_reuse");
	assert_int_equal(count("SELECT count(*) FROM refresh_tokens WHERE session_id = ?"
	                       " AND revoked_at IS NULL", g.session_id), 0);
	assert_int_equal(count("SELECT count(*) FROM audit_events WHERE action = 'session.revoke'"
	                       " AND target_id = ? AND outcome = 'denied'", g.session_id), 1);
	/* The newest token of the family is dead too; a second reuse is refused and audited. */
	assert_int_equal(session_refresh(&ctl, g3.refresh_token, NULL, &bad, &d), SP_ERR_PERMISSION);
	assert_int_equal(session_refresh(&ctl, g.refresh_token, NULL, &bad, &d), SP_ERR_KEY_BINDING);
	assert_int_equal(count("SELECT count(*) FROM audit_events WHERE action = 'session.revoke'"
	                       " AND target_id = ?", g.session_id), 2);
	assert_int_equal(session_refresh(&ctl, "spr_nope", NULL, &bad, &d), SP_ERR_NOT_FOUND);
	assert_int_equal(session_refresh(&ctl, "spr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL,
	                                 &bad, &d), SP_ERR_NOT_FOUND);
	assert_int_equal(session_refresh(&ctl, NULL, NULL, &bad, &d), SP_ERR_NOT_FOUND);
	session_grant_clear(&g);
	session_grant_clear(&g2);
	session_grant_clear(&g3);
	free(pem);
}

static void test_expiry_and_revoke(void **state)
{
	(void)state;
	struct session_user u;
	provision("dave", "dave@example.com", NULL, &u);
	char *pem = new_device_pem();
	struct session_grant g, g2, bad;
	struct sp_diag d;
	assert_int_equal(session_create(&ctl, u.id, "oidc", T0, NULL, pem, NULL, NULL, &g, &d), 0);
	clock_now = T0 + 3600;
	assert_int_equal(session_refresh(&ctl, g.refresh_token, NULL, &bad, &d), SP_ERR_EXPIRED);
	clock_now = T0 + 10;
	/* A refused refresh of an expired session did not use the token up. */
	assert_int_equal(session_refresh(&ctl, g.refresh_token, NULL, &g2, &d), 0);
	assert_int_equal(session_revoke(&ctl, g2.session_id, "sign_out", NULL, &d), 0);
	assert_int_equal(session_refresh(&ctl, g2.refresh_token, NULL, &bad, &d), SP_ERR_PERMISSION);
	char st[32];
	text("SELECT revoke_reason FROM sessions WHERE id = ?", g.session_id, st, sizeof(st));
	assert_string_equal(st, "sign_out");
	session_grant_clear(&g);
	session_grant_clear(&g2);
	free(pem);
}

static void test_devices(void **state)
{
	(void)state;
	struct session_user a, b;
	provision("erin", "erin@example.com", NULL, &a);
	provision("frank", "frank@example.com", NULL, &b);
	char *pem = new_device_pem();
	struct session_grant g, g2, bad;
	struct sp_diag d;
	exec("UPDATE settings SET device_approval = 'admin'");
	assert_int_equal(session_create(&ctl, a.id, "oidc", T0, NULL, pem, "pc", NULL, &g, &d), 0);
	char st[16];
	text("SELECT state FROM devices WHERE id = ?", g.device_id, st, sizeof(st));
	assert_string_equal(st, "pending");
	/* The same key for another user: refused, nothing stored. */
	int64_t sessions = count("SELECT count(*) FROM sessions", NULL);
	assert_int_equal(session_create(&ctl, b.id, "oidc", T0, NULL, pem, NULL, NULL, &bad, &d),
	                 SP_ERR_EXISTS);
	assert_int_equal(count("SELECT count(*) FROM sessions", NULL), sessions);
	/* The same user again: the same device, a new session. */
	assert_int_equal(session_create(&ctl, a.id, "oidc", T0, NULL, pem, NULL, NULL, &g2, &d), 0);
	assert_string_equal(g2.device_id, g.device_id);
	assert_string_not_equal(g2.session_id, g.session_id);
	/* Blocked: no new session, no refresh. */
	char sql[160];
	snprintf(sql, sizeof(sql), "UPDATE devices SET state = 'blocked' WHERE id = '%s'", g.device_id);
	exec(sql);
	assert_int_equal(session_create(&ctl, a.id, "oidc", T0, NULL, pem, NULL, NULL, &bad, &d),
	                 SP_ERR_PERMISSION);
	assert_int_equal(session_refresh(&ctl, g2.refresh_token, NULL, &bad, &d), SP_ERR_PERMISSION);
	/* Bad keys. */
	assert_int_equal(session_create(&ctl, a.id, "oidc", T0, NULL, "not a key", NULL, NULL, &bad,
	                                &d), SP_ERR_INVALID);
	assert_int_equal(session_create(&ctl, a.id, "oidc", T0, NULL, NULL, NULL, NULL, &bad, &d),
	                 SP_ERR_INVALID);
	char *other = new_device_pem();
	assert_int_equal(session_create(&ctl, a.id, "oidc", T0, NULL, other, "", NULL, &bad, &d),
	                 SP_ERR_INVALID);
	assert_int_equal(session_create(&ctl, "00000000000000000000000000000000", "oidc", T0, NULL,
	                                other, NULL, NULL, &bad, &d), SP_ERR_PERMISSION);
	session_grant_clear(&g);
	session_grant_clear(&g2);
	free(pem);
	free(other);
}

static void test_loopback_redirects(void **state)
{
	(void)state;
	assert_true(auth_loopback_redirect_ok("http://127.0.0.1:4711/callback"));
	assert_true(auth_loopback_redirect_ok("http://[::1]:1/cb?x=1"));
	assert_false(auth_loopback_redirect_ok("http://127.0.0.1/callback"));
	assert_false(auth_loopback_redirect_ok("http://127.0.0.1:0/callback"));
	assert_false(auth_loopback_redirect_ok("http://127.0.0.1:65536/callback"));
	assert_false(auth_loopback_redirect_ok("http://127.0.0.1:80"));
	assert_false(auth_loopback_redirect_ok("http://127.0.0.1:80@evil.example/"));
	assert_false(auth_loopback_redirect_ok("http://127.0.0.1.evil.example:80/"));
	assert_false(auth_loopback_redirect_ok("https://127.0.0.1:80/"));
	assert_false(auth_loopback_redirect_ok("http://localhost:80/"));
	assert_false(auth_loopback_redirect_ok("http://127.0.0.1:80/#frag"));
	assert_false(auth_loopback_redirect_ok("http://127.0.0.1:80/a b"));
	assert_false(auth_loopback_redirect_ok(NULL));
}

static void test_id_token_claims(void **state)
{
	(void)state;
	struct sp_diag d;
	json_t *c = json_pack("{s:s, s:s, s:s, s:s, s:b, s:I, s:I, s:s}", "iss", ISSUER, "aud",
	                      "client", "sub", "u1", "email", "u1@example.com", "email_verified", 1,
	                      "iat", (json_int_t)T0, "exp", (json_int_t)(T0 + 300), "nonce", "n1");
	assert_int_equal(oidc_check_id_token_claims(c, ISSUER, "client", "n1", T0, &d), 0);
	assert_int_equal(oidc_check_id_token_claims(c, ISSUER, "client", "n2", T0, &d), SP_ERR_CLAIM);
	assert_int_equal(oidc_check_id_token_claims(c, ISSUER "/", "client", "n1", T0, &d),
	                 SP_ERR_ISSUER);
	assert_int_equal(oidc_check_id_token_claims(c, ISSUER, "other", "n1", T0, &d),
	                 SP_ERR_AUDIENCE);
	assert_int_equal(oidc_check_id_token_claims(c, ISSUER, "client", "n1", T0 + 361, &d),
	                 SP_ERR_EXPIRED);
	assert_int_equal(oidc_check_id_token_claims(c, ISSUER, "client", "n1", T0 + 359, &d), 0);
	assert_int_equal(oidc_check_id_token_claims(c, ISSUER, "client", "n1", T0 - 61, &d),
	                 SP_ERR_NOT_YET_VALID);
	assert_int_equal(oidc_check_id_token_claims(c, ISSUER, "client", NULL, T0, &d),
	                 SP_ERR_INTERNAL);
	json_object_set_new(c, "email_verified", json_string("true"));
	assert_int_equal(oidc_check_id_token_claims(c, ISSUER, "client", "n1", T0, &d), SP_ERR_CLAIM);
	assert_non_null(strstr(d.message, "email_verified"));
	json_object_set_new(c, "email_verified", json_true());
	json_object_set_new(c, "aud", json_pack("[s, s]", "client", "other"));
	assert_int_equal(oidc_check_id_token_claims(c, ISSUER, "client", "n1", T0, &d), SP_ERR_CLAIM);
	json_object_set_new(c, "azp", json_string("other"));
	assert_int_equal(oidc_check_id_token_claims(c, ISSUER, "client", "n1", T0, &d),
	                 SP_ERR_AUDIENCE);
	json_object_set_new(c, "azp", json_string("client"));
	assert_int_equal(oidc_check_id_token_claims(c, ISSUER, "client", "n1", T0, &d), 0);
	json_object_del(c, "iat");
	assert_int_equal(oidc_check_id_token_claims(c, ISSUER, "client", "n1", T0, &d), SP_ERR_CLAIM);
	json_object_set_new(c, "iat", json_integer(T0));
	json_object_del(c, "email");
	assert_int_equal(oidc_check_id_token_claims(c, ISSUER, "client", "n1", T0, &d), SP_ERR_CLAIM);
	json_decref(c);
}

/* Connector tokens and service assertions: exp - iat <= limit without signed overflow (an
 * iat near INT64_MIN once wrapped the span negative and passed any limit). */
static void test_lifetime_within(void **state)
{
	(void)state;
	struct {
		json_int_t iat, exp;
		int want;
	} cases[] = {
	    {T0, T0 + 300, 1},
	    {T0, T0, 1},
	    {T0, T0 + 301, 0},
	    {T0 + 10, T0, 0},
	    {INT64_MIN, T0 + 86400, 0},
	    {INT64_MIN, INT64_MAX, 0},
	    {-((json_int_t)1 << 62), ((json_int_t)1 << 62) + T0, 0},
	    {INT64_MAX - 300, INT64_MAX, 1},
	    {INT64_MIN, INT64_MIN + 300, 1},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *c = json_pack("{s:I, s:I}", "iat", cases[i].iat, "exp", cases[i].exp);
		assert_int_equal(session_lifetime_within(c, 300), cases[i].want);
		json_decref(c);
	}
	json_t *c = json_pack("{s:I}", "exp", (json_int_t)T0);
	assert_int_equal(session_lifetime_within(c, 300), 0);
	json_object_set_new(c, "iat", json_real((double)T0));
	assert_int_equal(session_lifetime_within(c, 300), 0);
	json_object_set_new(c, "iat", json_integer(T0));
	json_object_set_new(c, "exp", json_string("1"));
	assert_int_equal(session_lifetime_within(c, 300), 0);
	json_decref(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_provision_and_group_sync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_admin_emails_and_disabled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_refresh_and_reuse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expiry_and_revoke, setup, teardown),
		cmocka_unit_test_setup_teardown(test_devices, setup, teardown),
		cmocka_unit_test(test_loopback_redirects),
		cmocka_unit_test(test_id_token_claims),
		cmocka_unit_test(test_lifetime_within),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
