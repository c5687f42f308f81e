/* Unit tests for controller/oidc.c (discovery, PKCE, authorization URL, token answers). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "controller/oidc.h"

#define ISSUER "https://idp.example.com"

static const char good_doc[] =
	"{\"issuer\":\"https://idp.example.com\","
	"\"authorization_endpoint\":\"https://idp.example.com/auth\","
	"\"token_endpoint\":\"https://idp.example.com/token\","
	"\"jwks_uri\":\"https://idp.example.com/jwks\","
	"\"userinfo_endpoint\":\"https://idp.example.com/me\","
	"\"device_authorization_endpoint\":\"https://idp.example.com/device\","
	"\"id_token_signing_alg_values_supported\":[\"ES256\",\"RS256\"],"
	"\"code_challenge_methods_supported\":[\"S256\"],"
	"\"response_types_supported\":[\"code\"]}";

static void test_discovery_good(void **state)
{
	(void)state;
	struct oidc_provider p;
	struct sp_diag d;
	assert_int_equal(oidc_discovery_parse(good_doc, strlen(good_doc), ISSUER, &p, &d), 0);
	assert_string_equal(p.token_endpoint, "https://idp.example.com/token");
	assert_string_equal(p.device_authorization_endpoint, "https://idp.example.com/device");
	assert_string_equal(p.end_session_endpoint, "");
	assert_true(p.supports_es256);
	assert_true(p.supports_rs256);
}

static void expect_refusal(const char *doc, const char *issuer, int code, const char *words)
{
	struct oidc_provider p;
	struct sp_diag d;
	memset(&d, 0, sizeof(d));
	assert_int_equal(oidc_discovery_parse(doc, strlen(doc), issuer, &p, &d), code);
	if (strstr(d.message, words) == NULL)
		fail_msg("diag \"%s\" lacks \"%s\"", d.message, words);
	assert_string_equal(p.issuer, "");
}

static void test_discovery_refusals(void **state)
{
	(void)state;
	expect_refusal(good_doc, "https://other.example.com", SP_ERR_ISSUER, "identical");
	expect_refusal(good_doc, "https://idp.example.com/", SP_ERR_ISSUER, "identical");
	expect_refusal("{", ISSUER, SP_ERR_INVALID, "not JSON");
	expect_refusal("[]", ISSUER, SP_ERR_INVALID, "not an object");
	expect_refusal("{\"issuer\":\"https://idp.example.com\"}", ISSUER, SP_ERR_INVALID,
	               "authorization_endpoint");
	expect_refusal("{\"issuer\":\"https://idp.example.com\","
	               "\"authorization_endpoint\":\"http://evil.example.com/auth\","
	               "\"token_endpoint\":\"https://idp.example.com/token\","
	               "\"jwks_uri\":\"https://idp.example.com/jwks\"}",
	               ISSUER, SP_ERR_INVALID, "https");
	expect_refusal("{\"issuer\":\"https://idp.example.com\","
	               "\"authorization_endpoint\":\"https://idp.example.com/auth\","
	               "\"token_endpoint\":\"https://idp.example.com/token\","
	               "\"jwks_uri\":\"https://idp.example.com/jwks\","
	               "\"id_token_signing_alg_values_supported\":[\"HS256\",\"none\"]}",
	               ISSUER, SP_ERR_UNSUPPORTED, "ES256");
	expect_refusal("{\"issuer\":\"https://idp.example.com\","
	               "\"authorization_endpoint\":\"https://idp.example.com/auth\","
	               "\"token_endpoint\":\"https://idp.example.com/token\","
	               "\"jwks_uri\":\"https://idp.example.com/jwks\","
	               "\"code_challenge_methods_supported\":[\"plain\"]}",
	               ISSUER, SP_ERR_UNSUPPORTED, "S256");
	expect_refusal("{\"issuer\":\"https://idp.example.com\","
	               "\"authorization_endpoint\":7,"
	               "\"token_endpoint\":\"https://idp.example.com/token\","
	               "\"jwks_uri\":\"https://idp.example.com/jwks\"}",
	               ISSUER, SP_ERR_INVALID, "not a string");
	expect_refusal("{\"issuer\":\"a\",\"issuer\":\"https://idp.example.com\"}", ISSUER,
	               SP_ERR_INVALID, "not JSON");
}

static void test_url_acceptance(void **state)
{
	(void)state;
	assert_true(oidc_url_is_acceptable("https://idp.example.com/x"));
	assert_true(oidc_url_is_acceptable("http://127.0.0.1:9000/x"));
	assert_true(oidc_url_is_acceptable("http://127.5.6.7/x"));
	assert_true(oidc_url_is_acceptable("http://localhost:80"));
	assert_true(oidc_url_is_acceptable("http://[::1]:8080/"));
	assert_false(oidc_url_is_acceptable("http://10.0.0.1/"));
	assert_false(oidc_url_is_acceptable("http://127.0.0.1.evil.com/"));
	assert_false(oidc_url_is_acceptable("http://localhost.evil.com/"));
	assert_false(oidc_url_is_acceptable("http://127.0.0.1@evil.com/"));
	assert_false(oidc_url_is_acceptable("https:///path"));
	assert_false(oidc_url_is_acceptable("https://a b/"));
	assert_false(oidc_url_is_acceptable("ftp://x/"));
	assert_false(oidc_url_is_acceptable(NULL));
}

static void test_pkce(void **state)
{
	(void)state;
	/* RFC 7636 appendix B. */
	char challenge[64];
	assert_int_equal(oidc_pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", challenge),
	                 0);
	assert_string_equal(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
	assert_int_equal(oidc_pkce_challenge("short", challenge), SP_ERR_INVALID);
	assert_int_equal(oidc_pkce_challenge("dBjftJeZ4CVP+mB92K27uhbUJU1p1r_wW1gFWFOEjXk", challenge),
	                 SP_ERR_INVALID);
	struct oidc_pkce a, b;
	assert_int_equal(oidc_pkce_new(&a), 0);
	assert_int_equal(oidc_pkce_new(&b), 0);
	assert_int_equal(strlen(a.verifier), 43);
	assert_string_not_equal(a.verifier, b.verifier);
	assert_int_equal(oidc_pkce_challenge(a.verifier, challenge), 0);
	assert_string_equal(challenge, a.challenge);
}

static void test_authorization_url(void **state)
{
	(void)state;
	struct oidc_provider p;
	assert_int_equal(oidc_discovery_parse(good_doc, strlen(good_doc), ISSUER, &p, NULL), 0);
	struct oidc_auth_request req = {
		.client_id = "sallyport",
		.redirect_uri = "http://127.0.0.1:8080/auth/callback",
		.scope = "openid email groups",
		.state = "st&=1",
		.nonce = "n1",
		.code_challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
	};
	struct sp_buf out;
	sp_buf_init(&out, 0);
	assert_int_equal(oidc_authorization_url(&p, &req, &out), 0);
	assert_string_equal(sp_buf_cstr(&out),
	                    "https://idp.example.com/auth?response_type=code&client_id=sallyport"
	                    "&redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Fauth%2Fcallback"
	                    "&scope=openid%20email%20groups&state=st%26%3D1&nonce=n1"
	                    "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
	                    "&code_challenge_method=S256");
	sp_buf_reset(&out);
	req.nonce = NULL;
	assert_int_equal(oidc_authorization_url(&p, &req, &out), SP_ERR_INVALID);
	assert_int_equal(out.len, 0);
	sp_buf_free(&out);
}

static void test_token_response(void **state)
{
	(void)state;
	struct oidc_token_response t;
	struct sp_diag d;
	const char ok[] = "{\"access_token\":\"at\",\"id_token\":\"a.b.c\",\"token_type\":\"bearer\","
	                  "\"expires_in\":300,\"refresh_token\":\"rt\"}";
	assert_int_equal(oidc_token_response_parse(ok, strlen(ok), &t, &d), 0);
	assert_string_equal(t.id_token, "a.b.c");
	assert_string_equal(t.refresh_token, "rt");
	assert_int_equal(t.expires_in, 300);
	oidc_token_response_clear(&t);
	assert_null(t.id_token);

	const char err[] = "{\"error\":\"invalid_grant\",\"error_description\":\"code reused\"}";
	assert_int_equal(oidc_token_response_parse(err, strlen(err), &t, &d), SP_ERR_INVALID);
	assert_string_equal(d.message, "identity provider refused the code: invalid_grant: code reused");
	const char *bad[] = {
		"{\"access_token\":\"at\",\"token_type\":\"Bearer\"}",
		"{\"access_token\":\"at\",\"id_token\":1,\"token_type\":\"Bearer\"}",
		"{\"access_token\":\"at\",\"id_token\":\"x\",\"token_type\":\"mac\"}",
		"{\"access_token\":\"at\",\"id_token\":\"x\",\"token_type\":\"Bearer\",\"expires_in\":-1}",
		"{\"access_token\":\"at\",\"id_token\":\"x\",\"token_type\":\"Bearer\",\"refresh_token\":{}}",
		"[1]",
		"",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(oidc_token_response_parse(bad[i], strlen(bad[i]), &t, &d),
		                 SP_ERR_INVALID);
		assert_null(t.id_token);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_discovery_good),
		cmocka_unit_test(test_discovery_refusals),
		cmocka_unit_test(test_url_acceptance),
		cmocka_unit_test(test_pkce),
		cmocka_unit_test(test_authorization_url),
		cmocka_unit_test(test_token_response),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
