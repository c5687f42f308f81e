/*
 * Tests for controller/relay.c and controller/relay_api.c: ticket and relay-connector
 * token checks (each refusal gets its status), the claims the controller signs, who may
 * have a ticket, and a relay on 127.0.0.1 taking a new key set handed over by another
 * thread (the rotation path) without a restart.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "controller/relay.h"
#include "controller/relay_api.h"
#include "controller/settings.h"
#include "shared/token.h"
#include "shared/wire.h"

#define NOW 1700000000

static EVP_PKEY *key1, *key2;
static struct sp_jwks keys1;
static char cid_c1[SP_JWK_THUMBPRINT_LEN + 1];

static EVP_PKEY *new_key(void)
{
	return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

static int setup(void **state)
{
	(void)state;
	key1 = new_key();
	key2 = new_key();
	sp_jwks_init(&keys1);
	if (key1 == NULL || key2 == NULL || sp_jwks_add_es256(&keys1, "k1", key1) < 0 ||
	    relay_connector_cid("c1", cid_c1) < 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	sp_jwks_free(&keys1);
	EVP_PKEY_free(key1);
	EVP_PKEY_free(key2);
	return 0;
}

/* A token signed by key under kid with the given claims (stolen). */
static char *sign(EVP_PKEY *key, const char *kid, json_t *claims)
{
	char *jws = NULL;
	assert_int_equal(sp_token_sign_es256(key, kid, claims, &jws), 0);
	json_decref(claims);
	return jws;
}

static json_t *ticket_claims(int64_t iat, int64_t exp)
{
	return json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:s}", "v", 1, "typ", "relay-ticket", "aud",
	                 "sallyport:relay", "jti", "0123456789abcdef0123456789abcdef", "iat",
	                 (json_int_t)iat, "exp", (json_int_t)exp, "cid", cid_c1);
}

static int check(const char *typ, char *jws, struct relay_token *t)
{
	int r = relay_check_token(&keys1, typ, (const uint8_t *)jws, strlen(jws), NOW, t);
	free(jws);
	return r;
}

static void test_ticket_checks(void **state)
{
	(void)state;
	struct relay_token t;
	assert_int_equal(check(RELAY_TICKET_TYP, sign(key1, "k1", ticket_claims(NOW, NOW + 60)), &t),
	                 SP_RELAY_PAIRED);
	assert_string_equal(t.jti, "0123456789abcdef0123456789abcdef");
	assert_int_equal(t.exp, NOW + 60);
	uint8_t want[32];
	size_t n = 0;
	assert_int_equal(sp_jwk_base64url_decode(cid_c1, strlen(cid_c1), want, sizeof(want), &n), 0);
	assert_memory_equal(t.cid, want, 32);

	/* Expired, and living longer than a ticket may. */
	assert_int_equal(check(RELAY_TICKET_TYP, sign(key1, "k1", ticket_claims(NOW - 61, NOW - 1)), &t),
	                 SP_RELAY_EXPIRED);
	assert_int_equal(check(RELAY_TICKET_TYP, sign(key1, "k1", ticket_claims(NOW, NOW + 61)), &t),
	                 SP_RELAY_EXPIRED);
	/* Issued in the future beyond the skew. */
	assert_int_equal(check(RELAY_TICKET_TYP,
	                       sign(key1, "k1", ticket_claims(NOW + 61, NOW + 100)), &t),
	                 SP_RELAY_BAD_TICKET);
	/* Another key under the same kid; an unknown kid. */
	assert_int_equal(check(RELAY_TICKET_TYP, sign(key2, "k1", ticket_claims(NOW, NOW + 60)), &t),
	                 SP_RELAY_BAD_TICKET);
	assert_int_equal(check(RELAY_TICKET_TYP, sign(key1, "k9", ticket_claims(NOW, NOW + 60)), &t),
	                 SP_RELAY_BAD_TICKET);
	assert_int_equal(t.exp, 0);
	/* Each claim wrong in turn. */
	static const char *const broken[][2] = {
		{"typ", "relay-connector"}, {"aud", "sallyport:controller"}, {"cid", "short"},
		{"jti", ""}, {"v", "1"}};
	for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
		json_t *c = ticket_claims(NOW, NOW + 60);
		json_object_set_new(c, broken[i][0], json_string(broken[i][1]));
		assert_int_equal(check(RELAY_TICKET_TYP, sign(key1, "k1", c), &t), SP_RELAY_BAD_TICKET);
	}
	static const char *const required[] = {"v", "typ", "aud", "jti", "iat", "exp", "cid"};
	for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		json_t *c = ticket_claims(NOW, NOW + 60);
		json_object_del(c, required[i]);
		assert_int_equal(check(RELAY_TICKET_TYP, sign(key1, "k1", c), &t), SP_RELAY_BAD_TICKET);
	}
	/* Garbage and an empty key set. */
	assert_int_equal(relay_check_token(&keys1, RELAY_TICKET_TYP, (const uint8_t *)"a.b.c", 5, NOW,
	                                   &t),
	                 SP_RELAY_BAD_TICKET);
	assert_int_equal(relay_check_token(NULL, RELAY_TICKET_TYP, (const uint8_t *)"a.b.c", 5, NOW,
	                                   &t),
	                 SP_RELAY_BAD_TICKET);
}

static void test_connector_token_and_claims(void **state)
{
	(void)state;
	json_t *c = relay_connector_token_claims("c1", NOW);
	assert_non_null(c);
	assert_int_equal(json_object_size(c), 6);
	assert_string_equal(json_string_value(json_object_get(c, "typ")), "relay-connector");
	assert_string_equal(json_string_value(json_object_get(c, "aud")), "sallyport:relay");
	assert_string_equal(json_string_value(json_object_get(c, "cid")), cid_c1);
	assert_int_equal(json_integer_value(json_object_get(c, "exp")), NOW + 600);
	struct relay_token t;
	char *jws = sign(key1, "k1", json_incref(c));
	/* A connector token is not a ticket (typ), and lives 600 s. */
	assert_int_equal(relay_check_token(&keys1, RELAY_TICKET_TYP, (const uint8_t *)jws,
	                                   strlen(jws), NOW, &t),
	                 SP_RELAY_BAD_TICKET);
	assert_int_equal(check(RELAY_CONNECTOR_TYP, jws, &t), SP_RELAY_PAIRED);
	assert_int_equal(t.exp, NOW + 600);
	json_decref(c);

	c = relay_ticket_claims("c1", "00112233445566778899aabbccddeeff", NOW);
	assert_non_null(c);
	assert_int_equal(json_object_size(c), 7);
	assert_int_equal(json_integer_value(json_object_get(c, "v")), 1);
	assert_string_equal(json_string_value(json_object_get(c, "typ")), "relay-ticket");
	assert_string_equal(json_string_value(json_object_get(c, "jti")),
	                    "00112233445566778899aabbccddeeff");
	assert_int_equal(json_integer_value(json_object_get(c, "iat")), NOW);
	assert_int_equal(json_integer_value(json_object_get(c, "exp")), NOW + 60);
	assert_int_equal(check(RELAY_TICKET_TYP, sign(key1, "k1", c), &t), SP_RELAY_PAIRED);
	/* The cid is base64url(SHA-256("c1")). */
	assert_string_equal(cid_c1, "0PYxyh3bqNs7z8ueBXzcmNA3nxvuAOdaVFFHon2t2YI");
}

static void test_ticket_allowed(void **state)
{
	(void)state;
	struct policy_resource_row res[] = {
		{.id = "r1", .network_id = "n1", .name = "a", .address = "a.corp.example",
		 .tcp_json = "\"all\"", .udp_json = "\"none\""},
		{.id = "r2", .network_id = "n2", .name = "b", .address = "b.corp.example",
		 .tcp_json = "\"all\"", .udp_json = "\"none\""},
		{.id = "r3", .network_id = "n3", .name = "c", .address = "c.corp.example",
		 .tcp_json = "\"all\"", .udp_json = "\"none\""}};
	struct policy_rule_row rules[] = {
		{.id = "p1", .group_id = "g1", .resource_id = "r1"},
		{.id = "p3", .group_id = "g1", .resource_id = "r3", .require_mfa = 1}};
	struct policy_connector_row conns[] = {
		{.id = "c1", .network_id = "n1", .name = "x", .public_key_digest = "00"},
		{.id = "c2", .network_id = "n2", .name = "y", .public_key_digest = "00"},
		{.id = "c3", .network_id = "n3", .name = "z", .public_key_digest = "00"}};
	struct policy_rows rows = {res, 3, rules, 2, conns, 3};
	struct policy_snapshot *s = NULL;
	assert_int_equal(policy_snapshot_build(&rows, 1, &s, NULL), 0);
	const char *g1[] = {"g1"}, *g2[] = {"g2"};
	struct policy_subject member = {.group_ids = g1, .group_count = 1, .auth_time = NOW};
	struct policy_subject stranger = {.group_ids = g2, .group_count = 1, .auth_time = NOW};
	assert_int_equal(relay_ticket_allowed(s, &member, "c1", NOW), 1);
	assert_int_equal(relay_ticket_allowed(s, &member, "c2", NOW), 0); /* no policy there */
	assert_int_equal(relay_ticket_allowed(s, &member, "c3", NOW), 0); /* policy needs MFA */
	member.mfa = 1;
	assert_int_equal(relay_ticket_allowed(s, &member, "c3", NOW), 1);
	assert_int_equal(relay_ticket_allowed(s, &member, "c9", NOW), 0); /* unknown or inactive */
	assert_int_equal(relay_ticket_allowed(s, &stranger, "c1", NOW), 0);
	policy_snapshot_free(s);
}

static int64_t fixed_now(void)
{
	return NOW;
}

/* One client hello to the relay and its status byte. */
static int hello(uint16_t port, const char *ticket)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	struct sp_buf b;
	sp_buf_init(&b, 0);
	assert_int_equal(sp_relay_client_hello_encode((const uint8_t *)ticket, strlen(ticket), &b), 0);
	assert_int_equal(send(fd, b.data, b.len, 0), (ssize_t)b.len);
	sp_buf_free(&b);
	uint8_t status = 255;
	ssize_t n = recv(fd, &status, 1, MSG_WAITALL);
	close(fd);
	return n == 1 ? status : -1;
}

static void test_relay_takes_new_keys(void **state)
{
	(void)state;
	char *doc = NULL, *doc2 = NULL;
	size_t len = 0, len2 = 0;
	assert_int_equal(sp_jwks_serialize(&keys1, &doc, &len), 0);
	struct relay_metrics m;
	struct sp_metrics_registry registry = {0};
	relay_metrics_register(&m, &registry);
	struct relay_options o = {.listen = "127.0.0.1:0", .jwks_document = doc, .jwks_length = len,
	                          .metrics = &m, .now = fixed_now};
	struct relay *r = NULL;
	struct sp_diag d;
	assert_int_equal(relay_start(&o, &r, &d), 0);
	assert_true(relay_port(r) > 0);

	char *t1 = sign(key1, "k1", ticket_claims(NOW, NOW + 60));
	json_t *c2 = ticket_claims(NOW, NOW + 60);
	json_object_set_new(c2, "jti", json_string("ffffffffffffffffffffffffffffffff"));
	char *t2 = sign(key2, "k2", c2);
	/* Valid ticket, no connector registered: 4; the same again: 3. */
	assert_int_equal(hello(relay_port(r), t1), SP_RELAY_CONNECTOR_UNAVAILABLE);
	assert_int_equal(hello(relay_port(r), t1), SP_RELAY_REPLAYED);
	/* Signed by a key the relay does not have yet: 1. */
	assert_int_equal(hello(relay_port(r), t2), SP_RELAY_BAD_TICKET);
	/* The owner hands over a set with both keys (rotation): now it verifies. */
	struct sp_jwks both;
	sp_jwks_init(&both);
	assert_int_equal(sp_jwks_add_es256(&both, "k1", key1), 0);
	assert_int_equal(sp_jwks_add_es256(&both, "k2", key2), 0);
	assert_int_equal(sp_jwks_serialize(&both, &doc2, &len2), 0);
	relay_sync_keys(r, doc2, len2);
	relay_sync_keys(r, doc2, len2); /* unchanged: nothing handed over */
	assert_int_equal(hello(relay_port(r), t2), SP_RELAY_CONNECTOR_UNAVAILABLE);
	/* A bad document leaves the keys as they were. */
	assert_int_equal(relay_set_keys(r, "{", 1), SP_ERR_INVALID);
	assert_int_equal(m.refused[SP_RELAY_BAD_TICKET].value, 1);
	assert_int_equal(m.refused[SP_RELAY_REPLAYED].value, 1);
	assert_int_equal(m.refused[SP_RELAY_CONNECTOR_UNAVAILABLE].value, 2);
	/* A second relay on the same port cannot listen and says where. */
	char taken[32];
	snprintf(taken, sizeof(taken), "127.0.0.1:%u", relay_port(r));
	struct relay_options o2 = o;
	o2.listen = taken;
	struct relay *r2 = (struct relay *)&o2;
	assert_int_equal(relay_start(&o2, &r2, &d), SP_ERR_IO);
	assert_null(r2);
	assert_non_null(strstr(d.message, taken));
	o2.listen = "not an address";
	assert_int_equal(relay_start(&o2, &r2, &d), SP_ERR_INVALID);
	relay_stop(r);
	relay_sync_keys(r, doc, len); /* still safe between stop and free */
	relay_free(r);
	sp_jwks_free(&both);
	free(t1);
	free(t2);
	free(doc);
	free(doc2);
}

static int64_t clock_now = NOW;

static int64_t moving_now(void)
{
	return clock_now;
}

static char *ticket_with_jti(int64_t iat, int n)
{
	char jti[33];
	snprintf(jti, sizeof(jti), "%032d", n);
	json_t *c = ticket_claims(iat, iat + 60);
	json_object_set_new(c, "jti", json_string(jti));
	return sign(key1, "k1", c);
}

/* At most max_replay live ticket ids; expired ones make room again. */
static void test_replay_table_bound(void **state)
{
	(void)state;
	char *doc = NULL;
	size_t len = 0;
	assert_int_equal(sp_jwks_serialize(&keys1, &doc, &len), 0);
	struct relay_options o = {.listen = "127.0.0.1:0", .jwks_document = doc, .jwks_length = len,
	                          .max_replay = 4, .now = moving_now};
	struct relay *r = NULL;
	struct sp_diag d;
	clock_now = NOW;
	assert_int_equal(relay_start(&o, &r, &d), 0);
	char *t[12];
	for (int i = 0; i < 4; i++) {
		t[i] = ticket_with_jti(NOW, i);
		/* Accepted by the replay check; no connector is registered. */
		assert_int_equal(hello(relay_port(r), t[i]), SP_RELAY_CONNECTOR_UNAVAILABLE);
	}
	for (int i = 0; i < 4; i++)
		assert_int_equal(hello(relay_port(r), t[i]), SP_RELAY_REPLAYED);
	t[4] = ticket_with_jti(NOW, 4);
	assert_int_equal(hello(relay_port(r), t[4]), SP_RELAY_OVERLOADED);
	/* 61 s later the first four have expired: new ids fit again, old ones are expired. */
	clock_now = NOW + 61;
	for (int i = 5; i < 9; i++) {
		t[i] = ticket_with_jti(NOW + 61, i);
		assert_int_equal(hello(relay_port(r), t[i]), SP_RELAY_CONNECTOR_UNAVAILABLE);
	}
	assert_int_equal(hello(relay_port(r), t[0]), SP_RELAY_EXPIRED);
	assert_int_equal(hello(relay_port(r), t[5]), SP_RELAY_REPLAYED);
	t[9] = ticket_with_jti(NOW + 61, 9);
	assert_int_equal(hello(relay_port(r), t[9]), SP_RELAY_OVERLOADED);
	relay_free(r);
	for (int i = 0; i < 10; i++)
		free(t[i]);
	free(doc);
}

/* Out of descriptors: the relay pauses accepting, then serves again once some are free. */
static void test_out_of_descriptors(void **state)
{
	(void)state;
	char *doc = NULL;
	size_t len = 0;
	assert_int_equal(sp_jwks_serialize(&keys1, &doc, &len), 0);
	struct relay_options o = {.listen = "127.0.0.1:0", .jwks_document = doc, .jwks_length = len,
	                          .now = fixed_now};
	struct relay *r = NULL;
	struct sp_diag d;
	assert_int_equal(relay_start(&o, &r, &d), 0);
	struct rlimit saved, low;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
	low = saved;
	low.rlim_cur = 96;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(relay_port(r))};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fds[256], n = 0;
	while (n < 256) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0)
			break;
		fds[n++] = fd;
		assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	}
	assert_true(n > 10 && n < 256); /* the limit was reached */
	usleep(300 * 1000);             /* the relay hits it too and pauses */
	for (int i = 0; i < n; i++)
		close(fds[i]);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
	usleep(300 * 1000);
	/* Serving again: a malformed ticket is answered. */
	assert_int_equal(hello(relay_port(r), "x.y.z"), SP_RELAY_BAD_TICKET);
	relay_free(r);
	free(doc);
}

static void assert_list(json_t *list, const char *const *want, size_t n)
{
	assert_non_null(list);
	assert_int_equal(json_array_size(list), n);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(json_string_value(json_array_get(list, i)), want[i]);
	json_decref(list);
}

/* relay_public wins; else relay_listen with the bound port; nothing without a relay. */
static void test_relay_public_list(void **state)
{
	(void)state;
	const char *two[] = {"relay-a.example:443", "[2001:db8::1]:8443"};
	assert_list(relay_public_list("relay-a.example:443,[2001:db8::1]:8443", "127.0.0.1:0", 9),
	            two, 2);
	const char *bound[] = {"127.0.0.1:40001"};
	assert_list(relay_public_list(NULL, "127.0.0.1:0", 40001), bound, 1);
	assert_list(relay_public_list("", "127.0.0.1:8443", 40001), bound, 1);
	assert_list(relay_public_list(NULL, "127.0.0.1:8443", 0), NULL, 0);
	struct sp_diag d = {{0}};
	assert_int_equal(settings_relay_public_check("a.example:1,127.0.0.1:8443", &d), 0);
	assert_int_equal(settings_relay_public_check("a.example:1,,b:2", &d), SP_ERR_INVALID);
	assert_string_equal(d.message, "relay_public: entry 2 must be host:port");
	assert_int_equal(settings_relay_public_check("a.example", &d), SP_ERR_INVALID);
	assert_int_equal(settings_relay_public_check("a:0", &d), SP_ERR_INVALID);
	assert_int_equal(settings_relay_public_check("a:1,a:2,a:3,a:4,a:5,a:6,a:7,a:8", &d), 0);
	assert_int_equal(settings_relay_public_check("a:1,a:2,a:3,a:4,a:5,a:6,a:7,a:8,a:9", &d),
	                 SP_ERR_INVALID);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ticket_checks),
		cmocka_unit_test(test_connector_token_and_claims),
		cmocka_unit_test(test_ticket_allowed),
		cmocka_unit_test(test_relay_takes_new_keys),
		cmocka_unit_test(test_replay_table_bound),
		cmocka_unit_test(test_out_of_descriptors),
		cmocka_unit_test(test_relay_public_list),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
