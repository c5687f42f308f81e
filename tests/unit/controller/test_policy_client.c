/*
 * Tests for controller/policy_store.c and the client routes of policy_routes.c: a real
 * controller (migrated temp database, signing authority, gate and route table) served on
 * 127.0.0.1 and driven by libcurl with access tokens minted as docs/protocol.md §1.3
 * says. Every signed document is verified against the authority's published JWKS and
 * every claim checked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "controller/app.h"
#include "controller/policy.h"
#include "controller/store.h"
#include "shared/jwk.h"
#include "shared/keys.h"
#include "controller/db.h"
#include "shared/token.h"

#define URL_BASE "https://controller.test"

/* Ids (32 hex digits, as the schema requires). */
#define U1 "11111111111111111111111111111111"
#define U2 "22222222222222222222222222222222"
#define G1 "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
#define G2 "a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2"
#define N1 "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1"
#define N2 "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"
#define C1 "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1"
#define C2 "c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2"
#define C3 "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3"
#define R1 "d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1"
#define R2 "d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2"
#define R3 "d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3d3"
#define P1 "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1"
#define P2 "e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2"
#define P3 "e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3"
#define D1 "f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1"
#define D2 "f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2f2"
#define S1 "0101010101010101010101010101010a"
#define S2 "0202020202020202020202020202020b"

static char dir[64];
static struct controller ctl;
static char jkt1[SP_JWK_THUMBPRINT_LEN + 1], jkt2[SP_JWK_THUMBPRINT_LEN + 1];
static uint16_t port;

static int64_t wall_clock(void)
{
	return (int64_t)time(NULL);
}

static void exec_sql(const char *sql)
{
	int rc = db_exec(ctl.db, sql);
	if (rc != 0)
		fail_msg("%s: %s", sql, db_errmsg(ctl.db));
}

/* Inserts a device row for `user` with a fresh key; its thumbprint into jkt. */
static void insert_device(const char *id, const char *user, const char *state, char *jkt)
{
	EVP_PKEY *key = NULL;
	char *pem = NULL;
	size_t len = 0;
	assert_int_equal(sp_key_generate(&key), 0);
	assert_int_equal(sp_jwk_thumbprint(key, jkt), 0);
	assert_int_equal(sp_key_public_pem(key, &pem, &len), 0);
	struct db_stmt *st = NULL;
	assert_int_equal(db_prepare(ctl.db,
				    "INSERT INTO devices (id, user_id, public_key_thumbprint,"
				    " public_key_pem, state, first_seen_at, last_seen_at,"
				    " updated_at) VALUES (?, ?, ?, ?, ?, 1, 1, 1)",
				    &st),
			 0);
	db_bind_text(st, 1, id, -1, DB_STATIC);
	db_bind_text(st, 2, user, -1, DB_STATIC);
	db_bind_text(st, 3, jkt, -1, DB_STATIC);
	db_bind_text(st, 4, pem, (int)len, DB_STATIC);
	db_bind_text(st, 5, state, -1, DB_STATIC);
	assert_int_equal(db_step(st), DB_DONE);
	db_finalize(st);
	free(pem);
	EVP_PKEY_free(key);
}

static void seed(void)
{
	char sql[4096];
	int64_t now = wall_clock();
	exec_sql("INSERT INTO users (id, issuer, subject, email, created_at, updated_at) VALUES"
	         " ('" U1 "', 'https://idp', 'alice', 'alice@corp.example', 1, 1),"
	         " ('" U2 "', 'https://idp', 'bob', 'bob@corp.example', 1, 1);"
	         "INSERT INTO groups (id, name, created_at, updated_at) VALUES"
	         " ('" G1 "', 'eng', 1, 1), ('" G2 "', 'ops', 1, 1);"
	         "INSERT INTO memberships (user_id, group_id, created_at) VALUES ('" U1 "', '" G1
	         "', 1);"
	         "INSERT INTO remote_networks (id, name, created_at, updated_at) VALUES"
	         " ('" N1 "', 'vpc', 1, 1), ('" N2 "', 'lab', 1, 1);"
	         "INSERT INTO connectors (id, network_id, name, public_key_digest, public_key_pem,"
	         " state, direct_address, enrolled_at, updated_at) VALUES"
	         " ('" C1 "', '" N1 "', 'vpc-a', '" "1111111111111111111111111111111111111111111111111111111111111111"
	         "', 'pem', 'active', '198.51.100.4:7443', 1, 1),"
	         " ('" C2 "', '" N1 "', 'vpc-b', '" "2222222222222222222222222222222222222222222222222222222222222222"
	         "', 'pem', 'disabled', NULL, 1, 1),"
	         " ('" C3 "', '" N2 "', 'lab-a', '" "3333333333333333333333333333333333333333333333333333333333333333"
	         "', 'pem', 'active', NULL, 1, 1);"
	         "INSERT INTO resources (id, network_id, name, address, alias, tcp_ports, udp_ports,"
	         " icmp, created_at, updated_at) VALUES"
	         " ('" R1 "', '" N1 "', 'Grafana', 'grafana.corp.example', 'grafana.sp', '[\"443\"]',"
	         " '\"none\"', 0, 1, 1),"
	         " ('" R2 "', '" N1 "', 'Vault', 'vault.corp.example', NULL, '\"all\"', '\"none\"', 0, 1, 1),"
	         " ('" R3 "', '" N2 "', 'Lab', '10.20.0.0/16', NULL, '[\"22\"]', '[\"53\"]', 1, 1, 1);"
	         "INSERT INTO policies (id, group_id, resource_id, require_mfa, created_at, updated_at)"
	         " VALUES ('" P1 "', '" G1 "', '" R1 "', 0, 1, 1), ('" P2 "', '" G1 "', '" R2
	         "', 1, 1, 1);");
	insert_device(D1, U1, "approved", jkt1);
	insert_device(D2, U1, "pending", jkt2);
	snprintf(sql, sizeof(sql),
	         "INSERT INTO sessions (id, user_id, device_id, auth_method, auth_time, amr,"
	         " created_at, last_used_at, expires_at) VALUES"
	         " ('" S1 "', '" U1 "', '" D1 "', 'oidc', %lld, '[\"pwd\"]', 1, 1, %lld),"
	         " ('" S2 "', '" U1 "', '" D2 "', 'oidc', %lld, '[\"pwd\",\"mfa\"]', 1, 1, %lld)",
	         (long long)now, (long long)now + 86400, (long long)now, (long long)now + 86400);
	exec_sql(sql);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/sp-policy-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	char path[128];
	snprintf(path, sizeof(path), "%s/controller.db", dir);
	int applied = 0;
	if (db_open(&db_sqlite_driver, path, 0, &ctl.db, NULL) < 0 ||
	    db_migrate(ctl.db, &applied, NULL) < 0)
		return -1;
	snprintf(ctl.settings.public_url, sizeof(ctl.settings.public_url), URL_BASE);
	ctl.settings.grant_ttl_s = 300;
	ctl.now = wall_clock;
	if (authority_open(&ctl.authority, ctl.db, NULL, ctl.now(), NULL) < 0 ||
	    feed_new(store_latest_change(&ctl), 50, &ctl.feed) < 0)
		return -1;
	seed();
	size_t count = 0;
	const struct route *routes = controller_routes(&count);
	struct http_server_options o = {.listen = "127.0.0.1:0",
	                                .routes = routes,
	                                .route_count = count,
	                                .app = &ctl,
	                                .gate = controller_gate};
	if (http_server_start(&o, &ctl.http, NULL) < 0)
		return -1;
	port = http_server_port(ctl.http);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	feed_wake_all(ctl.feed);
	http_server_stop(ctl.http);
	feed_free(ctl.feed);
	policy_state_free(&ctl);
	authority_close(&ctl.authority);
	db_close(ctl.db);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* An access token for (user, session, device) as the sign-in code mints them (§1.3). */
static char *access_token(const char *user, const char *session, const char *device,
                          const char *jkt)
{
	int64_t now = wall_clock();
	json_t *claims = json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:{s:s}}", "v", 1,
	                           "typ", "access", "iss", URL_BASE, "aud", "sallyport:controller",
	                           "iat", (json_int_t)now, "exp", (json_int_t)(now + 600), "sub",
	                           user, "sid", session, "dev", device, "cnf", "jkt", jkt);
	char *jws = NULL;
	assert_int_equal(authority_sign(&ctl.authority, claims, &jws), 0);
	json_decref(claims);
	return jws;
}

struct reply {
	long status;
	char body[65536];
	size_t len;
	json_t *json;
};

static size_t on_body(char *data, size_t size, size_t n, void *user)
{
	struct reply *r = user;
	size_t len = size * n;
	size_t room = sizeof(r->body) - 1 - r->len;
	size_t take = len < room ? len : room;
	memcpy(r->body + r->len, data, take);
	r->len += take;
	r->body[r->len] = '\0';
	return len;
}

static void request(const char *method, const char *path, const char *token, const char *body,
                    struct reply *out)
{
	memset(out, 0, sizeof(*out));
	char url[256], auth[4096];
	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
	CURL *c = curl_easy_init();
	assert_non_null(c);
	struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (token != NULL) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		headers = curl_slist_append(headers, auth);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	if (body != NULL)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
	curl_slist_free_all(headers);
	curl_easy_cleanup(c);
	out->json = json_loads(out->body, 0, NULL);
}

static const char *error_code(const struct reply *r)
{
	return json_string_value(json_object_get(json_object_get(r->json, "error"), "code"));
}

/* Verifies a signed document against the published JWKS and checks iss/aud/exp/jkt. */
static json_t *verify(const char *jws, const char *audience, const char *jkt)
{
	size_t len = 0;
	const char *doc = authority_jwks(&ctl.authority, &len);
	struct sp_jwks keys;
	struct sp_diag d;
	assert_int_equal(sp_jwks_parse(doc, len, &keys, &d), 0);
	json_t *claims = NULL;
	assert_int_equal(sp_token_verify(jws, strlen(jws), &keys, "ES256", &claims, &d), 0);
	sp_jwks_free(&keys);
	struct sp_token_expect e = {.issuer = URL_BASE, .audience = audience, .now = wall_clock(),
	                            .max_skew_s = 60, .jkt = jkt, .require_exp = 1};
	if (sp_token_check_claims(claims, &e, &d) < 0)
		fail_msg("claims: %s", d.message);
	return claims;
}

static void test_resources_document(void **state)
{
	(void)state;
	struct reply r;
	request("GET", "/api/client/v1/resources", NULL, NULL, &r);
	assert_int_equal(r.status, 401);
	json_decref(r.json);

	char *token = access_token(U1, S1, D1, jkt1);
	int64_t before = wall_clock();
	request("GET", "/api/client/v1/resources", token, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(json_object_size(r.json), 1);
	json_t *c = verify(json_string_value(json_object_get(r.json, "document")),
	                   "sallyport:client:" D1, NULL);
	json_decref(r.json);
	assert_int_equal(json_object_size(c), 10);
	assert_int_equal(json_integer_value(json_object_get(c, "v")), 1);
	assert_string_equal(json_string_value(json_object_get(c, "typ")), "resources");
	assert_string_equal(json_string_value(json_object_get(c, "sub")), U1);
	json_int_t iat = json_integer_value(json_object_get(c, "iat"));
	assert_true(iat >= before && iat <= wall_clock());
	assert_int_equal(json_integer_value(json_object_get(c, "exp")), iat + 600);
	assert_int_equal(json_integer_value(json_object_get(c, "seq")), store_latest_change(&ctl));
	/* eng reaches Grafana; Vault needs MFA, which session S1 lacks; Lab has no policy. */
	json_t *list = json_object_get(c, "resources");
	assert_int_equal(json_array_size(list), 1);
	json_t *g = json_array_get(list, 0);
	assert_string_equal(json_string_value(json_object_get(g, "id")), R1);
	assert_string_equal(json_string_value(json_object_get(g, "name")), "Grafana");
	assert_string_equal(json_string_value(json_object_get(g, "network_id")), N1);
	assert_string_equal(json_string_value(json_object_get(g, "address")), "grafana.corp.example");
	assert_string_equal(json_string_value(json_object_get(g, "alias")), "grafana.sp");
	assert_string_equal(json_string_value(json_array_get(json_object_get(g, "tcp"), 0)), "443");
	assert_string_equal(json_string_value(json_object_get(g, "udp")), "none");
	assert_true(json_is_false(json_object_get(g, "icmp")));
	/* Its network with the active connector only. */
	json_t *nets = json_object_get(c, "networks");
	assert_int_equal(json_array_size(nets), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(nets, 0), "id")), N1);
	json_t *cons = json_object_get(json_array_get(nets, 0), "connectors");
	assert_int_equal(json_array_size(cons), 1);
	json_t *con = json_array_get(cons, 0);
	assert_int_equal(json_object_size(con), 4);
	assert_string_equal(json_string_value(json_object_get(con, "id")), C1);
	assert_string_equal(json_string_value(json_object_get(con, "name")), "vpc-a");
	assert_string_equal(json_string_value(json_object_get(con, "public_key_digest")),
	                    "1111111111111111111111111111111111111111111111111111111111111111");
	assert_string_equal(json_string_value(json_object_get(con, "direct_address")),
	                    "198.51.100.4:7443");
	json_decref(c);
	free(token);
}

static json_t *grant(const char *token, const char *resource, long status, const char *code)
{
	char body[128];
	snprintf(body, sizeof(body), "{\"resource_id\":\"%s\"}", resource);
	struct reply r;
	request("POST", "/api/client/v1/grants", token, body, &r);
	if (r.status != status)
		fail_msg("grant %s: status %ld, body %s", resource, r.status, r.body);
	if (code != NULL)
		assert_string_equal(error_code(&r), code);
	return r.json;
}

static void test_grants(void **state)
{
	(void)state;
	char *token = access_token(U1, S1, D1, jkt1);
	int64_t issued = atomic_load(&ctl.metrics.grants_issued.value);
	int64_t before = wall_clock();
	json_t *reply = grant(token, R1, 200, NULL);
	assert_int_equal(json_object_size(reply), 2);
	json_t *c = verify(json_string_value(json_object_get(reply, "grant")),
	                   "sallyport:network:" N1, jkt1);
	assert_int_equal(json_object_size(c), 16);
	assert_int_equal(json_integer_value(json_object_get(c, "v")), 1);
	assert_string_equal(json_string_value(json_object_get(c, "typ")), "grant");
	const char *jti = json_string_value(json_object_get(c, "jti"));
	assert_int_equal(strlen(jti), 32);
	assert_int_equal(strspn(jti, "0123456789abcdef"), 32);
	json_int_t iat = json_integer_value(json_object_get(c, "iat"));
	assert_true(iat >= before && iat <= wall_clock());
	assert_int_equal(json_integer_value(json_object_get(c, "exp")), iat + 300);
	assert_int_equal(json_integer_value(json_object_get(reply, "expires_at")), iat + 300);
	assert_string_equal(json_string_value(json_object_get(c, "sub")), U1);
	assert_string_equal(json_string_value(json_object_get(c, "sid")), S1);
	assert_string_equal(json_string_value(json_object_get(c, "dev")), D1);
	assert_string_equal(json_string_value(json_object_get(json_object_get(c, "cnf"), "jkt")), jkt1);
	assert_string_equal(json_string_value(json_object_get(c, "res")), R1);
	assert_string_equal(json_string_value(json_object_get(c, "net")), N1);
	assert_string_equal(json_string_value(json_object_get(c, "dst")), "grafana.corp.example");
	assert_string_equal(json_string_value(json_array_get(json_object_get(c, "tcp"), 0)), "443");
	assert_string_equal(json_string_value(json_object_get(c, "udp")), "none");
	assert_int_equal(atomic_load(&ctl.metrics.grants_issued.value), issued + 1);
	/* A second grant has another jti. */
	json_t *again = grant(token, R1, 200, NULL);
	json_t *c2 = verify(json_string_value(json_object_get(again, "grant")),
	                    "sallyport:network:" N1, jkt1);
	assert_string_not_equal(json_string_value(json_object_get(c2, "jti")), jti);
	assert_int_equal(atomic_load(&ctl.metrics.grants_issued.value), issued + 2);
	json_decref(c2);
	json_decref(again);
	json_decref(c);
	json_decref(reply);

	/* Refusals carry the reason and count nothing. */
	json_decref(grant(token, R2, 403, "mfa_required"));
	json_decref(grant(token, R3, 403, "no_policy"));
	json_decref(grant(token, "ffffffffffffffffffffffffffffffff", 403, "no_resource"));
	assert_int_equal(atomic_load(&ctl.metrics.grants_issued.value), issued + 2);

	/* Bad bodies: 400 naming the field. */
	struct reply r;
	request("POST", "/api/client/v1/grants", token, "{\"resource\":\"x\"}", &r);
	assert_int_equal(r.status, 400);
	assert_non_null(strstr(r.body, "unknown field \\\"resource\\\""));
	json_decref(r.json);
	request("POST", "/api/client/v1/grants", token, "{}", &r);
	assert_int_equal(r.status, 400);
	assert_non_null(strstr(r.body, "resource_id"));
	json_decref(r.json);
	request("POST", "/api/client/v1/grants", token, "{\"resource_id\":7}", &r);
	assert_int_equal(r.status, 400);
	assert_non_null(strstr(r.body, "resource_id"));
	json_decref(r.json);
	request("POST", "/api/client/v1/grants", token, "{\"resource_id\":", &r);
	assert_int_equal(r.status, 400);
	json_decref(r.json);
	request("POST", "/api/client/v1/grants", NULL, "{\"resource_id\":\"" R1 "\"}", &r);
	assert_int_equal(r.status, 401);
	json_decref(r.json);
	free(token);
}

/* Changes reach decisions: the snapshot follows the change feed; session facts are live. */
static void test_changes_apply(void **state)
{
	(void)state;
	char *token = access_token(U1, S1, D1, jkt1);
	json_decref(grant(token, R1, 200, NULL));
	int64_t rebuilds = ctl.policy->rebuilds;
	json_decref(grant(token, R1, 200, NULL));
	assert_int_equal(ctl.policy->rebuilds, rebuilds); /* nothing changed, nothing rebuilt */

	exec_sql("INSERT INTO policies (id, group_id, resource_id, created_at, updated_at)"
	         " VALUES ('" P3 "', '" G1 "', '" R3 "', 1, 1)");
	json_t *reply = grant(token, R3, 200, NULL);
	assert_int_equal(ctl.policy->rebuilds, rebuilds + 1);
	json_t *c = verify(json_string_value(json_object_get(reply, "grant")),
	                   "sallyport:network:" N2, jkt1);
	assert_string_equal(json_string_value(json_object_get(c, "dst")), "10.20.0.0/16");
	assert_string_equal(json_string_value(json_array_get(json_object_get(c, "udp"), 0)), "53");
	json_decref(c);
	json_decref(reply);

	/* MFA in the session: the Vault policy is satisfied. */
	exec_sql("UPDATE sessions SET amr = '[\"pwd\",\"mfa\"]' WHERE id = '" S1 "'");
	json_decref(grant(token, R2, 200, NULL));
	/* Removing the user from the group removes everything. */
	exec_sql("DELETE FROM memberships WHERE user_id = '" U1 "'");
	json_decref(grant(token, R1, 403, "no_policy"));
	exec_sql("INSERT INTO memberships (user_id, group_id, created_at) VALUES ('" U1 "', '" G1
	         "', 1)");
	/* Deleting the resource: gone at once. */
	exec_sql("DELETE FROM resources WHERE id = '" R3 "'");
	json_decref(grant(token, R3, 403, "no_resource"));
	exec_sql("UPDATE sessions SET amr = '[\"pwd\"]' WHERE id = '" S1 "'");
	free(token);
}

static void test_device_approval(void **state)
{
	(void)state;
	char *token = access_token(U1, S2, D2, jkt2);
	/* 'auto' approval: a pending device is not held back. */
	json_t *reply = grant(token, R2, 200, NULL);
	json_t *c = verify(json_string_value(json_object_get(reply, "grant")),
	                   "sallyport:network:" N1, jkt2);
	assert_string_equal(json_string_value(json_object_get(c, "dev")), D2);
	json_decref(c);
	json_decref(reply);
	exec_sql("UPDATE settings SET device_approval = 'admin'");
	json_decref(grant(token, R2, 403, "device_not_approved"));
	struct reply r;
	request("GET", "/api/client/v1/resources", token, NULL, &r);
	assert_int_equal(r.status, 403);
	assert_string_equal(error_code(&r), "device_not_approved");
	json_decref(r.json);
	/* The approved device is unaffected. */
	char *t1 = access_token(U1, S1, D1, jkt1);
	json_decref(grant(t1, R1, 200, NULL));
	exec_sql("UPDATE devices SET state = 'approved' WHERE id = '" D2 "'");
	json_decref(grant(token, R2, 200, NULL));
	/* Blocked: the gate refuses before policy is asked. */
	exec_sql("UPDATE devices SET state = 'blocked' WHERE id = '" D2 "'");
	json_decref(grant(token, R2, 401, "unauthorized"));
	exec_sql("UPDATE settings SET device_approval = 'auto'");
	free(t1);
	free(token);
}

/* policy_snapshot_load over the same rows gives the same shape the routes saw. */
static void test_snapshot_load(void **state)
{
	(void)state;
	struct policy_snapshot *s = NULL;
	assert_int_equal(policy_snapshot_load(ctl.db, &s, NULL), 0);
	assert_int_equal(s->seq, store_latest_change(&ctl));
	assert_int_equal(s->resource_count, 2); /* R3 was deleted */
	assert_int_equal(s->skipped_resources, 0);
	assert_int_equal(s->connector_count, 2); /* the disabled one is not there */
	assert_int_equal(s->rule_count, 2);
	struct policy_groups groups;
	assert_int_equal(policy_load_groups(ctl.db, U1, &groups), 0);
	assert_int_equal(groups.count, 1);
	assert_string_equal(groups.list[0], G1);
	policy_groups_free(&groups);
	assert_int_equal(policy_load_groups(ctl.db, U2, &groups), 0);
	assert_int_equal(groups.count, 0);
	policy_groups_free(&groups);
	int mfa = -1;
	int64_t auth_time = -1;
	assert_int_equal(policy_load_session(ctl.db, S2, &mfa, &auth_time), 0);
	assert_int_equal(mfa, 1);
	assert_true(auth_time > 0);
	assert_int_equal(policy_load_session(ctl.db, "nope", &mfa, &auth_time), SP_ERR_NOT_FOUND);
	policy_snapshot_free(s);
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_resources_document),
		cmocka_unit_test(test_grants),
		cmocka_unit_test(test_changes_apply),
		cmocka_unit_test(test_device_approval),
		cmocka_unit_test(test_snapshot_load),
	};
	int r = cmocka_run_group_tests(tests, setup, teardown);
	curl_global_cleanup();
	return r;
}
