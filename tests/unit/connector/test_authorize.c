/*
 * Tests for connector/authorize.c and connector/connector_config.c: every refusal
 * reason of connector_authorize with grants signed by a test controller key over the
 * exact claims of docs/protocol.md §1.1, and the DNS-rebinding rule.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "connector/authorize.h"
#include "connector/connector_config.h"
#include "shared/jwk.h"
#include "shared/keys.h"
#include "shared/token.h"

#define NOW 1700000000
#define ISS "https://controller.test"
#define NET "11111111111111111111111111111111"
#define CONN "22222222222222222222222222222222"
#define RES_NAME "33333333333333333333333333333333"
#define RES_CIDR "44444444444444444444444444444444"
#define RES_OTHER "55555555555555555555555555555555"
#define USER "66666666666666666666666666666666"
#define DEV "77777777777777777777777777777777"
#define SID "88888888888888888888888888888888"

struct fixture {
	EVP_PKEY *controller_key;
	EVP_PKEY *other_key; /* not in the JWKS */
	EVP_PKEY *device_key;
	EVP_PKEY *device_key2;
	char jkt[SP_JWK_THUMBPRINT_LEN + 1];
	char jkt2[SP_JWK_THUMBPRINT_LEN + 1];
	struct sp_jwks jwks;
	struct connector_config *cfg;
};

static json_t *config_claims(const char *revoked_field, const char *revoked_id)
{
	json_t *rev = json_pack("{s:[], s:[], s:[]}", "sessions", "devices", "users");
	if (revoked_field != NULL)
		json_array_append_new(json_object_get(rev, revoked_field), json_string(revoked_id));
	return json_pack(
	    "{s:i, s:s, s:s, s:s, s:i, s:i, s:s, s:[{s:s, s:s, s:s, s:n, s:[s,s], s:s, s:b},"
	    " {s:s, s:s, s:s, s:n, s:s, s:s, s:b}], s:o, s:i}",
	    "v", 1, "typ", "connector-config", "iss", ISS, "aud", "sallyport:connector:" CONN,
	    "iat", NOW, "exp", NOW + 600, "network_id", NET, "resources",
	    /* a name resource allowing tcp 443 and 8000-8100 */
	    "id", RES_NAME, "name", "grafana", "address", "grafana.corp.example", "alias", "tcp",
	    "443", "8000-8100", "udp", "none", "icmp", 0,
	    /* a CIDR resource allowing all tcp */
	    "id", RES_CIDR, "name", "lab", "address", "10.1.2.0/24", "alias", "tcp", "all", "udp",
	    "none", "icmp", 0, "revocations", rev, "seq", 42);
}

static struct connector_config *build_config(struct fixture *f, const char *field, const char *id)
{
	json_t *claims = config_claims(field, id);
	assert_non_null(claims);
	struct connector_config *cfg = NULL;
	struct sp_diag d = {{0}};
	int r = connector_config_from_claims(claims, CONN, NET, &f->jwks, NOW, &cfg, &d);
	json_decref(claims);
	assert_int_equal(r, 0);
	return cfg;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_int_equal(sp_key_generate(&f->controller_key), 0);
	assert_int_equal(sp_key_generate(&f->other_key), 0);
	assert_int_equal(sp_key_generate(&f->device_key), 0);
	assert_int_equal(sp_key_generate(&f->device_key2), 0);
	assert_int_equal(sp_jwk_thumbprint(f->device_key, f->jkt), 0);
	assert_int_equal(sp_jwk_thumbprint(f->device_key2, f->jkt2), 0);
	sp_jwks_init(&f->jwks);
	assert_int_equal(sp_jwks_add_es256(&f->jwks, "k1", f->controller_key), 0);
	f->cfg = build_config(f, NULL, NULL);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	connector_config_free(f->cfg);
	sp_jwks_free(&f->jwks);
	EVP_PKEY_free(f->controller_key);
	EVP_PKEY_free(f->other_key);
	EVP_PKEY_free(f->device_key);
	EVP_PKEY_free(f->device_key2);
	free(f);
	return 0;
}

/* The exact sixteen claims of a grant. */
static json_t *grant_claims(const char *res, const char *dst, json_t *tcp, int64_t iat,
			    int64_t exp, const char *jkt, const char *net)
{
	return json_pack("{s:i, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:{s:s}, s:s, s:s,"
			 " s:s, s:o, s:s}",
			 "v", 1, "typ", "grant", "iss", ISS, "aud",
			 net != NULL ? net : "sallyport:network:" NET, "jti",
			 "0123456789abcdef0123456789abcdef", "iat", (json_int_t)iat, "exp",
			 (json_int_t)exp, "sub", USER, "sid", SID, "dev", DEV, "cnf", "jkt", jkt,
			 "res", res, "net", NET, "dst", dst, "tcp", tcp, "udp", "none");
}

static char *sign(EVP_PKEY *key, json_t *claims)
{
	char *jws = NULL;
	assert_non_null(claims);
	assert_int_equal(sp_token_sign_es256(key, "k1", claims, &jws), 0);
	json_decref(claims);
	return jws;
}

static char *good_grant(struct fixture *f)
{
	return sign(f->controller_key,
		    grant_claims(RES_NAME, "grafana.corp.example", json_pack("[s,s]", "443", "8000-8100"),
				 NOW - 10, NOW + 290, f->jkt, NULL));
}

static enum sp_tunnel_reason decide(const struct connector_config *cfg, const char *jkt,
				    const char *grant, const char *authority,
				    struct connector_decision *dec)
{
	struct sp_tunnel_open_request req = {.authority = authority,
					     .proto = SP_TUNNEL_PROTO_TCP,
					     .grant = grant,
					     .flow_id = "00000000000000000000000000000001"};
	assert_int_equal(connector_authorize(cfg, jkt, &req, NOW, dec), 0);
	return dec->reason;
}

static void test_allowed(void **state)
{
	struct fixture *f = *state;
	char *g = good_grant(f);
	struct connector_decision dec;
	assert_int_equal(decide(f->cfg, f->jkt, g, "grafana.corp.example:443", &dec),
			 SP_TUNNEL_REASON_NONE);
	assert_string_equal(dec.user_id, USER);
	assert_string_equal(dec.device_id, DEV);
	assert_string_equal(dec.session_id, SID);
	assert_string_equal(dec.resource_id, RES_NAME);
	assert_string_equal(dec.host, "grafana.corp.example");
	assert_int_equal(dec.port, 443);
	assert_non_null(dec.resource);
	assert_int_equal(decide(f->cfg, f->jkt, g, "GRAFANA.corp.example:8050", &dec),
			 SP_TUNNEL_REASON_NONE);
	free(g);
}

static void test_bad_signature(void **state)
{
	struct fixture *f = *state;
	struct connector_decision dec;
	/* signed by a key the connector does not hold, under the same kid */
	char *g = sign(f->other_key, grant_claims(RES_NAME, "grafana.corp.example",
						   json_string("all"), NOW, NOW + 300, f->jkt, NULL));
	assert_int_equal(decide(f->cfg, f->jkt, g, "grafana.corp.example:443", &dec),
			 SP_TUNNEL_REASON_BAD_GRANT);
	free(g);
	/* a good grant with one payload byte changed */
	g = good_grant(f);
	char *dot = strchr(g, '.');
	dot[3] = dot[3] == 'A' ? 'B' : 'A';
	assert_int_equal(decide(f->cfg, f->jkt, g, "grafana.corp.example:443", &dec),
			 SP_TUNNEL_REASON_BAD_GRANT);
	free(g);
	/* not a JWS at all */
	assert_int_equal(decide(f->cfg, f->jkt, "abc.def", "grafana.corp.example:443", &dec),
			 SP_TUNNEL_REASON_BAD_GRANT);
}

static void test_extra_claim_refused(void **state)
{
	struct fixture *f = *state;
	struct connector_decision dec;
	json_t *c = grant_claims(RES_NAME, "grafana.corp.example", json_string("all"), NOW,
				 NOW + 300, f->jkt, NULL);
	json_object_set_new(c, "admin", json_true());
	char *g = sign(f->controller_key, c);
	assert_int_equal(decide(f->cfg, f->jkt, g, "grafana.corp.example:443", &dec),
			 SP_TUNNEL_REASON_BAD_GRANT);
	free(g);
}

static void test_expired(void **state)
{
	struct fixture *f = *state;
	struct connector_decision dec;
	/* exp 61 s ago: beyond the 60 s skew */
	char *g = sign(f->controller_key, grant_claims(RES_NAME, "grafana.corp.example",
							json_string("all"), NOW - 361, NOW - 61,
							f->jkt, NULL));
	assert_int_equal(decide(f->cfg, f->jkt, g, "grafana.corp.example:443", &dec),
			 SP_TUNNEL_REASON_EXPIRED);
	assert_string_equal(dec.user_id, USER);
	free(g);
	/* exp 59 s ago: inside the skew */
	g = sign(f->controller_key, grant_claims(RES_NAME, "grafana.corp.example",
						 json_string("all"), NOW - 359, NOW - 59, f->jkt,
						 NULL));
	assert_int_equal(decide(f->cfg, f->jkt, g, "grafana.corp.example:443", &dec),
			 SP_TUNNEL_REASON_NONE);
	free(g);
	/* issued 61 s in the future */
	g = sign(f->controller_key, grant_claims(RES_NAME, "grafana.corp.example",
						 json_string("all"), NOW + 61, NOW + 361, f->jkt,
						 NULL));
	assert_int_equal(decide(f->cfg, f->jkt, g, "grafana.corp.example:443", &dec),
			 SP_TUNNEL_REASON_BAD_GRANT);
	free(g);
}

static void test_wrong_audience(void **state)
{
	struct fixture *f = *state;
	struct connector_decision dec;
	char *g = sign(f->controller_key,
		       grant_claims(RES_NAME, "grafana.corp.example", json_string("all"), NOW,
				    NOW + 300, f->jkt,
				    "sallyport:network:99999999999999999999999999999999"));
	assert_int_equal(decide(f->cfg, f->jkt, g, "grafana.corp.example:443", &dec),
			 SP_TUNNEL_REASON_BAD_GRANT);
	
	assert_non_null(strstr(dec.detail, "not addressed"));
	free(g);
}

static void test_other_device_key(void **state)
{
	struct fixture *f = *state;
	struct connector_decision dec;
	char *g = good_grant(f);
	/* the grant names device key 1, the tunnel was authenticated by device key 2 */
	assert_int_equal(decide(f->cfg, f->jkt2, g, "grafana.corp.example:443", &dec),
			 SP_TUNNEL_REASON_BAD_GRANT);
	free(g);
}

static void test_destination_outside(void **state)
{
	struct fixture *f = *state;
	struct connector_decision dec;
	char *g = good_grant(f);
	assert_int_equal(decide(f->cfg, f->jkt, g, "other.corp.example:443", &dec),
			 SP_TUNNEL_REASON_NO_POLICY);
	assert_int_equal(decide(f->cfg, f->jkt, g, "10.1.2.3:443", &dec),
			 SP_TUNNEL_REASON_NO_POLICY);
	free(g);
	/* grant dst wider than our own resource: the intersection is what counts */
	g = sign(f->controller_key, grant_claims(RES_NAME, "*.corp.example", json_string("all"),
						 NOW, NOW + 300, f->jkt, NULL));
	assert_int_equal(decide(f->cfg, f->jkt, g, "db.corp.example:443", &dec),
			 SP_TUNNEL_REASON_NO_POLICY);
	free(g);
	/* CIDR resource: inside and outside the block */
	g = sign(f->controller_key, grant_claims(RES_CIDR, "10.1.2.0/24", json_string("all"),
						 NOW, NOW + 300, f->jkt, NULL));
	assert_int_equal(decide(f->cfg, f->jkt, g, "10.1.2.200:22", &dec), SP_TUNNEL_REASON_NONE);
	assert_int_equal(decide(f->cfg, f->jkt, g, "10.1.3.1:22", &dec),
			 SP_TUNNEL_REASON_NO_POLICY);
	assert_int_equal(decide(f->cfg, f->jkt, g, "[::ffff:10.1.2.7]:22", &dec),
			 SP_TUNNEL_REASON_NONE);
	assert_int_equal(decide(f->cfg, f->jkt, g, "lab.corp.example:22", &dec),
			 SP_TUNNEL_REASON_NO_POLICY);
	free(g);
}

static void test_port_not_allowed(void **state)
{
	struct fixture *f = *state;
	struct connector_decision dec;
	char *g = good_grant(f);
	assert_int_equal(decide(f->cfg, f->jkt, g, "grafana.corp.example:22", &dec),
			 SP_TUNNEL_REASON_PORT_NOT_ALLOWED);
	assert_int_equal(decide(f->cfg, f->jkt, g, "grafana.corp.example:8101", &dec),
			 SP_TUNNEL_REASON_PORT_NOT_ALLOWED);
	free(g);
	/* the grant allows all tcp, our resource only 443 and 8000-8100 */
	g = sign(f->controller_key, grant_claims(RES_NAME, "grafana.corp.example",
						 json_string("all"), NOW, NOW + 300, f->jkt, NULL));
	assert_int_equal(decide(f->cfg, f->jkt, g, "grafana.corp.example:80", &dec),
			 SP_TUNNEL_REASON_PORT_NOT_ALLOWED);
	free(g);
	/* our resource allows 8000, the grant only 443 */
	g = sign(f->controller_key, grant_claims(RES_NAME, "grafana.corp.example",
						 json_pack("[s]", "443"), NOW, NOW + 300, f->jkt,
						 NULL));
	assert_int_equal(decide(f->cfg, f->jkt, g, "grafana.corp.example:8000", &dec),
			 SP_TUNNEL_REASON_PORT_NOT_ALLOWED);
	free(g);
	/* udp is "none" in both */
	g = good_grant(f);
	struct sp_tunnel_open_request req = {.authority = "grafana.corp.example:443",
					     .proto = SP_TUNNEL_PROTO_UDP,
					     .grant = g,
					     .flow_id = "00000000000000000000000000000001"};
	assert_int_equal(connector_authorize(f->cfg, f->jkt, &req, NOW, &dec), 0);
	assert_int_equal(dec.reason, SP_TUNNEL_REASON_PORT_NOT_ALLOWED);
	free(g);
}

static void test_revoked(void **state)
{
	struct fixture *f = *state;
	struct connector_decision dec;
	char *g = good_grant(f);
	const char *fields[] = {"users", "devices", "sessions"};
	const char *ids[] = {USER, DEV, SID};
	for (size_t i = 0; i < 3; i++) {
		struct connector_config *cfg = build_config(f, fields[i], ids[i]);
		assert_int_equal(decide(cfg, f->jkt, g, "grafana.corp.example:443", &dec),
				 SP_TUNNEL_REASON_REVOKED);
		connector_config_free(cfg);
	}
	/* someone else's revocation changes nothing */
	struct connector_config *cfg = build_config(f, "sessions", "99999999999999999999999999999999");
	assert_int_equal(decide(cfg, f->jkt, g, "grafana.corp.example:443", &dec),
			 SP_TUNNEL_REASON_NONE);
	connector_config_free(cfg);
	free(g);
}

/* A config whose revocations.access is the JSON text `access`; NULL when refused. */
static struct connector_config *config_with_access(struct fixture *f, const char *access,
						   int *result)
{
	json_t *claims = config_claims(NULL, NULL);
	assert_non_null(claims);
	json_t *list = json_loads(access, JSON_DECODE_ANY, NULL);
	assert_non_null(list);
	json_object_set_new(json_object_get(claims, "revocations"), "access", list);
	struct connector_config *cfg = NULL;
	struct sp_diag d = {{0}};
	*result = connector_config_from_claims(claims, CONN, NET, &f->jwks, NOW, &cfg, &d);
	json_decref(claims);
	return cfg;
}

/* revocations.access: a grant issued at or before an access revocation of its (user,
 * resource) is refused revoked; one issued after, or for another pair, is not. */
static void test_access_ended(void **state)
{
	struct fixture *f = *state;
	char *g = good_grant(f); /* USER, RES_NAME, iat NOW - 10 */
	static const struct {
		const char *access;
		enum sp_tunnel_reason want;
	} cases[] = {
		{"[{\"user\":\"" USER "\",\"resource\":\"" RES_NAME "\",\"at\":1699999990}]",
		 SP_TUNNEL_REASON_REVOKED}, /* iat == at: issued in the second of the change */
		{"[{\"user\":\"" USER "\",\"resource\":\"" RES_NAME "\",\"at\":1699999989}]",
		 SP_TUNNEL_REASON_NONE}, /* issued after access ended: regained */
		{"[{\"user\":\"" USER "\",\"resource\":\"" RES_CIDR "\",\"at\":1700000000}]",
		 SP_TUNNEL_REASON_NONE}, /* another resource */
		{"[{\"user\":\"" DEV "\",\"resource\":\"" RES_NAME "\",\"at\":1700000000}]",
		 SP_TUNNEL_REASON_NONE}, /* another user */
		{"[{\"user\":\"" USER "\",\"resource\":\"*\",\"at\":1700000000}]",
		 SP_TUNNEL_REASON_REVOKED}, /* past the cap: every resource of the user */
		{"[{\"user\":\"*\",\"resource\":\"*\",\"at\":1700000000}]",
		 SP_TUNNEL_REASON_REVOKED}, /* past it again: everyone */
		{"[{\"user\":\"*\",\"resource\":\"*\",\"at\":1699999980}]",
		 SP_TUNNEL_REASON_NONE},
		{"[{\"user\":\"" USER "\",\"resource\":\"" RES_NAME "\",\"at\":1699999980},"
		 " {\"user\":\"" USER "\",\"resource\":\"" RES_NAME "\",\"at\":1700000000},"
		 " {\"user\":\"" USER "\",\"resource\":\"" RES_NAME "\",\"at\":1699999970}]",
		 SP_TUNNEL_REASON_REVOKED}, /* duplicates: the latest time counts */
		{"[]", SP_TUNNEL_REASON_NONE},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r = -1;
		struct connector_config *cfg = config_with_access(f, cases[i].access, &r);
		assert_int_equal(r, 0);
		struct connector_decision dec;
		if (decide(cfg, f->jkt, g, "grafana.corp.example:443", &dec) != cases[i].want)
			fail_msg("case %zu: reason %d, detail %s", i, (int)dec.reason, dec.detail);
		if (cases[i].want == SP_TUNNEL_REASON_REVOKED)
			assert_non_null(strstr(dec.detail, "ended"));
		assert_int_equal(dec.grant_issued_at, NOW - 10);
		connector_config_free(cfg);
	}
	/* the lookup itself: the latest of the pair, the user's "*" and "*" "*" */
	int r = -1;
	struct connector_config *cfg = config_with_access(
		f,
		"[{\"user\":\"" USER "\",\"resource\":\"" RES_NAME "\",\"at\":5},"
		" {\"user\":\"" USER "\",\"resource\":\"*\",\"at\":7},"
		" {\"user\":\"*\",\"resource\":\"*\",\"at\":6}]",
		&r);
	assert_int_equal(r, 0);
	assert_int_equal(connector_access_revoked_at(cfg, USER, RES_NAME), 7);
	assert_int_equal(connector_access_revoked_at(cfg, DEV, RES_NAME), 6);
	assert_int_equal(cfg->access_count, 3);
	connector_config_free(cfg);
	cfg = config_with_access(
		f, "[{\"user\":\"" USER "\",\"resource\":\"" RES_NAME "\",\"at\":5}]", &r);
	assert_int_equal(connector_access_revoked_at(cfg, USER, RES_CIDR), -1);
	assert_int_equal(connector_access_revoked_at(cfg, USER, RES_NAME), 5);
	connector_config_free(cfg);

	/* malformed lists are refused whole */
	static const char *const bad[] = {
		"{}",
		"[\"" USER "\"]",
		"[{\"user\":\"" USER "\",\"resource\":\"" RES_NAME "\"}]",
		"[{\"user\":\"" USER "\",\"resource\":\"" RES_NAME "\",\"at\":-1}]",
		"[{\"user\":\"" USER "\",\"resource\":\"" RES_NAME "\",\"at\":1,\"x\":1}]",
		"[{\"user\":\"\",\"resource\":\"" RES_NAME "\",\"at\":1}]",
		"[{\"user\":\"" USER "\",\"resource\":7,\"at\":1}]",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cfg = config_with_access(f, bad[i], &r);
		assert_int_equal(r, SP_ERR_INVALID);
		assert_null(cfg);
	}
	/* one entry over the cap is refused */
	json_t *many = json_array();
	for (int i = 0; i <= CONNECTOR_ACCESS_REVOCATIONS_MAX; i++)
		json_array_append_new(many, json_pack("{s:s, s:s, s:i}", "user", USER, "resource",
						      RES_NAME, "at", i));
	char *text = json_dumps(many, 0);
	json_decref(many);
	cfg = config_with_access(f, text, &r);
	free(text);
	assert_int_equal(r, SP_ERR_INVALID);
	assert_null(cfg);
	free(g);
}

static enum sp_tunnel_reason decide_cached(const struct connector_config *cfg,
					   struct connector_grant_cache *cache, const char *jkt,
					   const char *grant, int64_t now)
{
	struct connector_decision dec;
	struct sp_tunnel_open_request req = {.authority = "grafana.corp.example:443",
					     .proto = SP_TUNNEL_PROTO_TCP,
					     .grant = grant,
					     .flow_id = "00000000000000000000000000000001"};
	assert_int_equal(connector_authorize_cached(cfg, cache, jkt, &req, now, &dec), 0);
	return dec.reason;
}

/* The verified-grant cache skips only the signature: every claim check still runs. */
static void test_grant_cache(void **state)
{
	struct fixture *f = *state;
	struct connector_grant_cache *cache = calloc(1, sizeof(*cache));
	assert_non_null(cache);
	char *g = good_grant(f);
	assert_int_equal(decide_cached(f->cfg, cache, f->jkt, g, NOW), SP_TUNNEL_REASON_NONE);
	assert_int_equal(cache->misses, 1);
	assert_int_equal(decide_cached(f->cfg, cache, f->jkt, g, NOW), SP_TUNNEL_REASON_NONE);
	assert_int_equal(cache->hits, 1);
	/* a hit is still bound to the device key and to the clock */
	assert_int_equal(decide_cached(f->cfg, cache, f->jkt2, g, NOW), SP_TUNNEL_REASON_BAD_GRANT);
	assert_int_equal(decide_cached(f->cfg, cache, f->jkt, g, NOW + 290 + 61),
			 SP_TUNNEL_REASON_EXPIRED);
	assert_int_equal(cache->hits, 3);
	/* a bad signature is never cached: it is refused every time */
	char *bad = sign(f->other_key, grant_claims(RES_NAME, "grafana.corp.example",
						     json_string("all"), NOW, NOW + 300, f->jkt, NULL));
	assert_int_equal(decide_cached(f->cfg, cache, f->jkt, bad, NOW), SP_TUNNEL_REASON_BAD_GRANT);
	assert_int_equal(decide_cached(f->cfg, cache, f->jkt, bad, NOW), SP_TUNNEL_REASON_BAD_GRANT);
	assert_int_equal(cache->misses, 3);
	/* another config (here one revoking the session) empties it; the revocation holds */
	struct connector_config *cfg = build_config(f, "sessions", SID);
	cfg->seq = f->cfg->seq + 1;
	assert_int_equal(decide_cached(cfg, cache, f->jkt, g, NOW), SP_TUNNEL_REASON_REVOKED);
	assert_int_equal(cache->misses, 4);
	assert_int_equal(decide_cached(cfg, cache, f->jkt, g, NOW), SP_TUNNEL_REASON_REVOKED);
	assert_int_equal(cache->hits, 4);
	connector_grant_cache_clear(cache);
	connector_grant_cache_clear(NULL);
	connector_config_free(cfg);
	free(cache);
	free(bad);
	free(g);
}

static void test_resource_not_in_config(void **state)
{
	struct fixture *f = *state;
	struct connector_decision dec;
	char *g = sign(f->controller_key, grant_claims(RES_OTHER, "grafana.corp.example",
						    json_string("all"), NOW, NOW + 300, f->jkt,
						    NULL));
	assert_int_equal(decide(f->cfg, f->jkt, g, "grafana.corp.example:443", &dec),
			 SP_TUNNEL_REASON_NO_POLICY);
	assert_string_equal(dec.resource_id, RES_OTHER);
	free(g);
}

static void test_config_checks(void **state)
{
	struct fixture *f = *state;
	struct connector_config *cfg = NULL;
	json_t *c = config_claims(NULL, NULL);
	/* another connector's config */
	assert_int_equal(connector_config_from_claims(c, "99999999999999999999999999999999", NET,
						      &f->jwks, NOW, &cfg, NULL),
			 SP_ERR_AUDIENCE);
	assert_null(cfg);
	/* another network than the one enrolled into */
	assert_int_equal(connector_config_from_claims(c, CONN, "99999999999999999999999999999999",
						      &f->jwks, NOW, &cfg, NULL),
			 SP_ERR_INVALID);
	/* expired */
	assert_int_equal(connector_config_from_claims(c, CONN, NET, &f->jwks, NOW + 661, &cfg, NULL),
			 SP_ERR_EXPIRED);
	/* a revocation that is not an id names the field */
	struct sp_diag d = {{0}};
	json_array_append_new(json_object_get(json_object_get(c, "revocations"), "users"),
			      json_integer(5));
	assert_int_equal(connector_config_from_claims(c, CONN, NET, &f->jwks, NOW, &cfg, &d),
			 SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "revocations.users[0]"));
	json_array_clear(json_object_get(json_object_get(c, "revocations"), "users"));
	/* a resource with a bad port spec names its position */
	json_object_set_new(json_array_get(json_object_get(c, "resources"), 1), "tcp",
			    json_string("eleven"));
	assert_int_equal(connector_config_from_claims(c, CONN, NET, &f->jwks, NOW, &cfg, &d),
			 SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "resources[1]"));
	assert_null(cfg);
	/* a replayed older config (lower seq, issued no later) is older; a restored
	 * controller (lower seq, newer iat) and a newer seq are not */
	json_object_set_new(json_array_get(json_object_get(c, "resources"), 1), "tcp",
			    json_string("all"));
	assert_int_equal(connector_config_from_claims(c, CONN, NET, &f->jwks, NOW, &cfg, &d), 0);
	assert_int_equal(cfg->seq, 42);
	assert_int_equal(cfg->issued_at, NOW);
	assert_int_equal(connector_config_is_older(-1, 0, cfg), 0);
	assert_int_equal(connector_config_is_older(43, NOW, cfg), 1);
	assert_int_equal(connector_config_is_older(43, NOW + 5, cfg), 1);
	assert_int_equal(connector_config_is_older(43, NOW - 1, cfg), 0);
	assert_int_equal(connector_config_is_older(42, NOW, cfg), 0);
	assert_int_equal(connector_config_is_older(41, NOW + 5, cfg), 0);
	connector_config_free(cfg);
	cfg = NULL;
	/* wrong typ */
	json_object_set_new(c, "typ", json_string("grant"));
	assert_int_equal(connector_config_from_claims(c, CONN, NET, &f->jwks, NOW, &cfg, NULL),
			 SP_ERR_INVALID);
	json_decref(c);
}

static uint8_t *ip(const char *text, int *family)
{
	static uint8_t a[16];
	memset(a, 0, sizeof(a));
	if (inet_pton(AF_INET, text, a) == 1) {
		*family = AF_INET;
		return a;
	}
	assert_int_equal(inet_pton(AF_INET6, text, a), 1);
	*family = AF_INET6;
	return a;
}

/* The family must be known before the call: set it first (argument order is unspecified). */
static int allowed_text(const struct sp_resource *res, const char *text)
{
	int fam = 0;
	uint8_t *a = ip(text, &fam);
	return connector_address_allowed(res, fam, a);
}

static void test_dns_rebinding_rule(void **state)
{
	struct fixture *f = *state;
	const struct sp_resource *name = &connector_config_find_resource(f->cfg, RES_NAME)->resource;
	const struct sp_resource *cidr = &connector_config_find_resource(f->cfg, RES_CIDR)->resource;
	int fam = 0;
	const char *refused[] = {"127.0.0.1", "127.8.9.10", "0.0.0.0",	   "169.254.169.254",
				 "224.0.0.1", "239.1.1.1",  "::1",	   "::",
				 "fe80::1",   "ff02::1",    "::ffff:127.0.0.1"};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		uint8_t *a = ip(refused[i], &fam);
		assert_int_equal(connector_address_allowed(name, fam, a), 0);
	}
	const char *fine[] = {"10.1.2.3", "192.168.1.1", "8.8.8.8", "fd00::1", "2001:db8::1"};
	for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++) {
		uint8_t *a = ip(fine[i], &fam);
		assert_int_equal(connector_address_allowed(name, fam, a), 1);
	}
	/* a CIDR resource allows exactly its block (no escape by a resolved answer) */
	assert_int_equal(allowed_text(cidr, "10.1.2.9"), 1);
	assert_int_equal(allowed_text(cidr, "::ffff:10.1.2.9"), 1);
	assert_int_equal(allowed_text(cidr, "10.1.3.9"), 0);
	/* a loopback IP resource is allowed its loopback address: the admin said so */
	struct sp_resource lo;
	memset(&lo, 0, sizeof(lo));
	assert_int_equal(sp_resource_address_parse("127.0.0.1", &lo.address, NULL), 0);
	assert_int_equal(allowed_text(&lo, "127.0.0.1"), 1);
	assert_int_equal(allowed_text(&lo, "127.0.0.2"), 0);
	sp_resource_free(&lo);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_allowed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_signature, setup, teardown),
		cmocka_unit_test_setup_teardown(test_extra_claim_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expired, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_audience, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_device_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_destination_outside, setup, teardown),
		cmocka_unit_test_setup_teardown(test_port_not_allowed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_revoked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_access_ended, setup, teardown),
		cmocka_unit_test_setup_teardown(test_grant_cache, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resource_not_in_config, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_checks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dns_rebinding_rule, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
