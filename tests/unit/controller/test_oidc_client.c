/*
 * Tests for controller/oidc_client.c without an IdP: ID token validation against a key
 * set already loaded, the algorithm rules, and the JWKS refetch policy (once per unknown
 * kid, at most every OIDC_REFETCH_MIN_INTERVAL_S seconds; a failed routine refresh keeps
 * the keys). The JWKS URL points at a closed loopback port, so every fetch fails fast and
 * is counted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "controller/oidc_client.h"
#include "shared/keys.h"
#include "shared/token.h"

#define T0 1700000000
#define ISSUER "http://127.0.0.1:1"

static struct oidc_client cl;
static EVP_PKEY *key1, *key2;

static int setup(void **state)
{
	(void)state;
	if (oidc_client_init(&cl, ISSUER, "client", "secret", 0, NULL) < 0 ||
	    sp_key_generate(&key1) < 0 || sp_key_generate(&key2) < 0 ||
	    sp_jwks_add_es256(&cl.jwks, "k1", key1) < 0)
		return -1;
	cl.discovered = 1;
	cl.provider.supports_es256 = 1;
	snprintf(cl.provider.jwks_uri, sizeof(cl.provider.jwks_uri), ISSUER "/jwks");
	cl.jwks_loaded = 1;
	cl.jwks_fetched_at = T0;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	oidc_client_free(&cl);
	EVP_PKEY_free(key1);
	EVP_PKEY_free(key2);
	return 0;
}

static char *token(EVP_PKEY *key, const char *kid, const char *nonce)
{
	json_t *claims = json_pack("{s:s, s:s, s:s, s:s, s:b, s:I, s:I}", "iss", ISSUER, "aud",
	                           "client", "sub", "u1", "email", "u1@example.com",
	                           "email_verified", 1, "iat", (json_int_t)T0, "exp",
	                           (json_int_t)(T0 + 300));
	json_object_set_new(claims, "nonce", json_string(nonce));
	char *jws = NULL;
	assert_int_equal(sp_token_sign_es256(key, kid, claims, &jws), 0);
	json_decref(claims);
	return jws;
}

/* The same token with its protected header replaced (signature left as it was). */
static char *with_header(const char *jws, const char *header_json)
{
	char head[256];
	assert_int_equal(sp_jwk_base64url_encode((const uint8_t *)header_json, strlen(header_json),
	                                         head, sizeof(head)), 0);
	const char *rest = strchr(jws, '.');
	size_t n = strlen(head) + strlen(rest) + 1;
	char *out = malloc(n);
	snprintf(out, n, "%s%s", head, rest);
	return out;
}

static int validate(const char *jws, const char *nonce, int64_t now)
{
	json_t *claims = NULL;
	struct sp_diag d;
	int r = oidc_client_validate_id_token(&cl, jws, nonce, now, &claims, &d);
	if (r == 0)
		assert_string_equal(json_string_value(json_object_get(claims, "sub")), "u1");
	else
		assert_null(claims);
	json_decref(claims);
	return r;
}

static void test_validation(void **state)
{
	(void)state;
	char *good = token(key1, "k1", "n1");
	assert_int_equal(validate(good, "n1", T0), 0);
	assert_int_equal(validate(good, "n2", T0), SP_ERR_CLAIM);
	assert_int_equal(validate(good, "n1", T0 + 361), SP_ERR_EXPIRED);

	/* RS256 named in the header: refused when the IdP does not offer it, and refused
	 * against an EC key when it does. */
	char *rs = with_header(good, "{\"alg\":\"RS256\",\"kid\":\"k1\"}");
	assert_int_equal(validate(rs, "n1", T0), SP_ERR_BAD_ALGORITHM);
	cl.provider.supports_rs256 = 1;
	assert_true(validate(rs, "n1", T0) < 0);
	cl.provider.supports_rs256 = 0;
	char *none = with_header(good, "{\"alg\":\"none\",\"kid\":\"k1\"}");
	assert_int_equal(validate(none, "n1", T0), SP_ERR_BAD_ALGORITHM);
	char *hs = with_header(good, "{\"alg\":\"HS256\",\"kid\":\"k1\"}");
	assert_int_equal(validate(hs, "n1", T0), SP_ERR_BAD_ALGORITHM);
	/* ES256 when the IdP only offers RS256. */
	cl.provider.supports_es256 = 0;
	cl.provider.supports_rs256 = 1;
	assert_int_equal(validate(good, "n1", T0), SP_ERR_BAD_ALGORITHM);
	cl.provider.supports_es256 = 1;
	cl.provider.supports_rs256 = 0;
	/* A token signed by another key under a known kid. */
	char *forged = token(key2, "k1", "n1");
	assert_int_equal(validate(forged, "n1", T0), SP_ERR_BAD_SIGNATURE);
	assert_int_equal(cl.jwks_fetches, 0);
	free(good);
	free(rs);
	free(none);
	free(hs);
	free(forged);
}

static void test_refetch_policy(void **state)
{
	(void)state;
	char *k2 = token(key2, "k2", "n1");
	char *k3 = token(key2, "k3", "n1");
	/* Unknown kid: one refetch (which fails here: nobody listens). */
	assert_int_equal(validate(k2, "n1", T0), SP_ERR_IO);
	assert_int_equal(cl.jwks_fetches, 1);
	/* The same kid again: no second refetch, ever. */
	assert_int_equal(validate(k2, "n1", T0 + 100), SP_ERR_NOT_FOUND);
	assert_int_equal(cl.jwks_fetches, 1);
	/* Another unknown kid within the interval: no refetch either. */
	assert_int_equal(validate(k3, "n1", T0 + OIDC_REFETCH_MIN_INTERVAL_S - 1),
	                 SP_ERR_NOT_FOUND);
	assert_int_equal(cl.jwks_fetches, 1);
	/* After the interval, a new unknown kid gets its refetch. */
	assert_int_equal(validate(k3, "n1", T0 + OIDC_REFETCH_MIN_INTERVAL_S), SP_ERR_IO);
	assert_int_equal(cl.jwks_fetches, 2);
	/* A routine refresh that fails keeps the keys: a known kid still verifies. */
	char *good = token(key1, "k1", "n1");
	json_t *claims = NULL;
	assert_int_equal(oidc_client_validate_id_token(&cl, good, "n1", T0 + 4000, &claims, NULL),
	                 SP_ERR_EXPIRED); /* the token's own exp, not a key problem */
	assert_int_equal(cl.jwks_fetches, 3);
	assert_int_equal(cl.jwks.count, 1);
	/* ...and the next routine refresh waits a minute. */
	assert_int_equal(oidc_client_validate_id_token(&cl, good, "n1", T0 + 4010, &claims, NULL),
	                 SP_ERR_EXPIRED);
	assert_int_equal(cl.jwks_fetches, 3);
	free(k2);
	free(k3);
	free(good);
}

static void test_init_and_scopes(void **state)
{
	(void)state;
	struct oidc_client c2;
	assert_int_equal(oidc_client_init(&c2, "http://idp.example.com", "c", NULL, 0, NULL),
	                 SP_ERR_INVALID);
	oidc_client_free(&c2);
	assert_int_equal(oidc_client_init(&c2, "", "c", NULL, 0, NULL), SP_ERR_INVALID);
	oidc_client_free(&c2);
	assert_int_equal(oidc_client_init(&c2, "https://idp.example.com", "c", NULL, 1, NULL), 0);
	snprintf(c2.scopes, sizeof(c2.scopes), " openid email groups_extra");
	assert_true(oidc_client_offers_scope(&c2, "email"));
	assert_true(oidc_client_offers_scope(&c2, "openid"));
	assert_false(oidc_client_offers_scope(&c2, "groups"));
	assert_false(oidc_client_offers_scope(&c2, "mail"));
	oidc_client_free(&c2);
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_validation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refetch_policy, setup, teardown),
		cmocka_unit_test(test_init_and_scopes),
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return r;
}
