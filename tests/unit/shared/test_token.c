/* Unit tests for shared/token.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>

#include "shared/jwk.h"
#include "shared/keys.h"
#include "shared/token.h"

#define NOW 1700000000

/* Shared by every test: the controller key "k1", another key, and the set with k1. */
static EVP_PKEY *controller_key;
static EVP_PKEY *other_key;
static EVP_PKEY *rsa_key;
static struct sp_jwks controller_set;

static int setup(void **state)
{
	(void)state;
	if (sp_key_generate(&controller_key) < 0 || sp_key_generate(&other_key) < 0)
		return -1;
	if ((rsa_key = EVP_RSA_gen(2048)) == NULL)
		return -1;
	sp_jwks_init(&controller_set);
	return sp_jwks_add_es256(&controller_set, "k1", controller_key) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	sp_jwks_free(&controller_set);
	EVP_PKEY_free(controller_key);
	EVP_PKEY_free(other_key);
	EVP_PKEY_free(rsa_key);
	return 0;
}

/* ---- building tokens by hand ------------------------------------------------------ */

/* base64url via OpenSSL's base64, independent of the code under test. Caller frees. */
static char *b64url(const void *data, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);
	assert_non_null(out);
	int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	while (n > 0 && out[n - 1] == '=')
		n--;
	out[n] = '\0';
	for (int i = 0; i < n; i++)
		out[i] = out[i] == '+' ? '-' : (out[i] == '/' ? '_' : out[i]);
	return out;
}

/* "b64(header).b64(payload)"; caller frees. */
static char *signing_input(const char *header, const char *payload)
{
	char *h = b64url(header, strlen(header)), *p = b64url(payload, strlen(payload));
	size_t n = strlen(h) + strlen(p) + 2;
	char *out = malloc(n);
	snprintf(out, n, "%s.%s", h, p);
	free(h);
	free(p);
	return out;
}

/* input "." b64(sig); caller frees. */
static char *join(const char *input, const uint8_t *sig, size_t sig_len)
{
	char *s = b64url(sig, sig_len);
	size_t n = strlen(input) + strlen(s) + 2;
	char *out = malloc(n);
	snprintf(out, n, "%s.%s", input, s);
	free(s);
	return out;
}

/* An ES256 token over arbitrary header and payload text, signed with raw OpenSSL. */
static char *es256_token(EVP_PKEY *key, const char *header, const char *payload)
{
	char *input = signing_input(header, payload);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t der[80], sig[64];
	size_t der_len = sizeof(der);
	assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key), 1);
	assert_int_equal(EVP_DigestSign(ctx, der, &der_len, (const uint8_t *)input, strlen(input)),
			 1);
	EVP_MD_CTX_free(ctx);
	const uint8_t *p = der;
	ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
	assert_non_null(es);
	assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32), 32);
	assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32), 32);
	ECDSA_SIG_free(es);
	char *token = join(input, sig, sizeof(sig));
	free(input);
	return token;
}

/* An RS256 token signed with raw OpenSSL (PKCS#1 v1.5, SHA-256). */
static char *rs256_token(EVP_PKEY *key, const char *header, const char *payload)
{
	char *input = signing_input(header, payload);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t sig[512];
	size_t sig_len = sizeof(sig);
	assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key), 1);
	assert_int_equal(EVP_DigestSign(ctx, sig, &sig_len, (const uint8_t *)input, strlen(input)),
			 1);
	EVP_MD_CTX_free(ctx);
	char *token = join(input, sig, sig_len);
	free(input);
	return token;
}

/* An HS256 token with the given secret. */
static char *hs256_token(const void *secret, size_t secret_len, const char *header,
			 const char *payload)
{
	char *input = signing_input(header, payload);
	uint8_t mac[32];
	unsigned int mac_len = 0;
	assert_non_null(HMAC(EVP_sha256(), secret, (int)secret_len, (const uint8_t *)input,
			     strlen(input), mac, &mac_len));
	char *token = join(input, mac, mac_len);
	free(input);
	return token;
}

static int verify(const char *token, const char *alg, json_t **claims, struct sp_diag *d)
{
	d->message[0] = '\0';
	int r = sp_token_verify(token, strlen(token), &controller_set, alg, claims, d);
	if (r < 0)
		assert_null(*claims);
	return r;
}

/* A realistic flow grant: about ten claims. */
static json_t *grant_claims(void)
{
	json_t *c = json_pack(
	    "{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:{s:s}, s:[s, s], s:i}", "iss",
	    "https://controller.example", "sub", "device-7f3a", "aud", "connector-eu-1", "iat",
	    (json_int_t)NOW, "nbf", (json_int_t)NOW, "exp", (json_int_t)(NOW + 300), "jti",
	    "b4c1d5e0-3f1a-4c2e-9d7b-2a6f8e0c1d23", "resource", "db.internal.example:5432", "cnf",
	    "jkt", "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I", "groups", "engineering", "oncall",
	    "proto", 6);
	assert_non_null(c);
	return c;
}

/* ---- signing and verifying -------------------------------------------------------- */

static void test_sign_verify_roundtrip(void **state)
{
	(void)state;
	json_t *claims = grant_claims(), *out = NULL;
	char *token = NULL;
	struct sp_diag d;
	assert_int_equal(sp_token_sign_es256(controller_key, "k1", claims, &token), 0);
	assert_int_equal(verify(token, "ES256", &out, &d), 0);
	assert_true(json_equal(claims, out));
	json_decref(out);

	/* The header is exactly what we promise. */
	const char *dot = strchr(token, '.');
	uint8_t header[256];
	size_t n = 0;
	assert_int_equal(
	    sp_jwk_base64url_decode(token, (size_t)(dot - token), header, sizeof(header), &n), 0);
	json_t *h = json_loadb((const char *)header, n, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(h, "alg")), "ES256");
	assert_string_equal(json_string_value(json_object_get(h, "kid")), "k1");
	assert_string_equal(json_string_value(json_object_get(h, "typ")), "JWT");
	assert_int_equal(json_object_size(h), 3);
	json_decref(h);

	/* A token made with raw OpenSSL verifies too (interoperability). */
	char *raw =
	    es256_token(controller_key, "{\"alg\":\"ES256\",\"kid\":\"k1\"}", "{\"iss\":\"x\"}");
	assert_int_equal(verify(raw, "ES256", &out, &d), 0);
	assert_string_equal(json_string_value(json_object_get(out, "iss")), "x");
	json_decref(out);
	free(raw);
	free(token);
	json_decref(claims);
}

static void test_signer_reuse(void **state)
{
	(void)state;
	struct sp_token_signer *signer = NULL;
	json_t *claims = grant_claims(), *out = NULL;
	struct sp_diag d;
	char *a = NULL, *b = NULL;
	assert_int_equal(sp_token_signer_new(controller_key, "k1", &signer), 0);
	assert_int_equal(sp_token_signer_sign(signer, claims, &a), 0);
	assert_int_equal(sp_token_signer_sign(signer, claims, &b), 0);
	assert_string_not_equal(a, b); /* ECDSA is randomised */
	assert_int_equal(verify(a, "ES256", &out, &d), 0);
	json_decref(out);
	assert_int_equal(verify(b, "ES256", &out, &d), 0);
	json_decref(out);
	sp_token_signer_free(signer);
	sp_token_signer_free(NULL);
	free(a);
	free(b);
	json_decref(claims);
}

/*
 * The signer writes its protected header itself (no JSON library between the kid and the
 * signed bytes): exactly {"alg":"ES256","kid":...,"typ":"JWT"}, with '"' and '\\' in a kid
 * escaped, and a kid of the longest allowed length.
 */
static void test_signer_header_bytes(void **state)
{
	(void)state;
	const char *kids[] = {"k1", "a\"b\\c d", NULL};
	char longest[SP_JWK_KID_MAX + 1];
	memset(longest, '"', SP_JWK_KID_MAX);
	longest[SP_JWK_KID_MAX] = '\0';
	kids[2] = longest;
	const char *want[] = {"{\"alg\":\"ES256\",\"kid\":\"k1\",\"typ\":\"JWT\"}",
			      "{\"alg\":\"ES256\",\"kid\":\"a\\\"b\\\\c d\",\"typ\":\"JWT\"}", NULL};
	json_t *claims = grant_claims();
	for (size_t i = 0; i < 3; i++) {
		struct sp_token_signer *signer = NULL;
		char *token = NULL;
		assert_int_equal(sp_token_signer_new(controller_key, kids[i], &signer), 0);
		assert_int_equal(sp_token_signer_sign(signer, claims, &token), 0);
		sp_token_signer_free(signer);
		const char *dot = strchr(token, '.');
		uint8_t header[512];
		size_t n = 0;
		assert_int_equal(sp_jwk_base64url_decode(token, (size_t)(dot - token), header,
							 sizeof(header) - 1, &n),
				 0);
		header[n] = '\0';
		if (want[i] != NULL)
			assert_string_equal((const char *)header, want[i]);
		char kid[SP_JWK_KID_MAX + 1];
		assert_int_equal(sp_token_header_string(token, strlen(token), "kid", kid, sizeof(kid)),
				 0);
		assert_string_equal(kid, kids[i]);
		/* It verifies under that kid. */
		struct sp_jwks set;
		sp_jwks_init(&set);
		assert_int_equal(sp_jwks_add_es256(&set, kids[i], controller_key), 0);
		json_t *out = NULL;
		struct sp_diag d;
		assert_int_equal(sp_token_verify(token, strlen(token), &set, "ES256", &out, &d), 0);
		assert_true(json_equal(out, claims));
		json_decref(out);
		sp_jwks_free(&set);
		free(token);
	}
	json_decref(claims);
}

/* Signed documents may pass the 16 KiB token bound only through the *_max forms. */
static void test_document_bound(void **state)
{
	(void)state;
	struct sp_token_signer *signer = NULL;
	struct sp_diag d;
	char *jws = NULL;
	json_t *claims = grant_claims(), *out = NULL;
	char *big = calloc(1, 64 * 1024 + 1);
	assert_non_null(big);
	memset(big, 'r', 64 * 1024);
	json_object_set_new(claims, "resources", json_string(big));
	assert_int_equal(sp_token_signer_new(controller_key, "k1", &signer), 0);
	assert_int_equal(sp_token_signer_sign(signer, claims, &jws), SP_ERR_TOO_LARGE);
	assert_null(jws);
	assert_int_equal(sp_token_signer_sign_max(signer, claims, SP_TOKEN_DOCUMENT_MAX_LEN, &jws), 0);
	assert_int_equal(sp_token_verify(jws, strlen(jws), &controller_set, "ES256", &out, &d),
			 SP_ERR_TOO_LARGE);
	assert_int_equal(sp_token_verify_max(jws, strlen(jws), SP_TOKEN_DOCUMENT_MAX_LEN,
					     &controller_set, "ES256", &out, &d),
			 0);
	assert_string_equal(json_string_value(json_object_get(out, "resources")), big);
	json_decref(out);
	free(jws);
	/* Past the document bound too: refused before signing. */
	assert_int_equal(sp_token_signer_sign_max(signer, claims, 1024, &jws), SP_ERR_TOO_LARGE);
	sp_token_signer_free(signer);
	free(big);
	json_decref(claims);
}

static void test_header_string(void **state)
{
	(void)state;
	char out[8];
	char *jws = NULL;
	json_t *claims = grant_claims();
	assert_int_equal(sp_token_sign_es256(controller_key, "k1", claims, &jws), 0);
	assert_int_equal(sp_token_header_string(jws, strlen(jws), "kid", out, sizeof(out)), 0);
	assert_string_equal(out, "k1");
	assert_int_equal(sp_token_header_string(jws, strlen(jws), "alg", out, sizeof(out)), 0);
	assert_string_equal(out, "ES256");
	assert_int_equal(sp_token_header_string(jws, strlen(jws), "x5u", out, sizeof(out)),
			 SP_ERR_NOT_FOUND);
	assert_int_equal(sp_token_header_string(jws, strlen(jws), "kid", out, 2), SP_ERR_TOO_LARGE);
	assert_string_equal(out, "");
	/* {"kid":7} and a header that is not base64url JSON. */
	assert_int_equal(sp_token_header_string("eyJraWQiOjd9.e30.x", 18, "kid", out, sizeof(out)),
			 SP_ERR_INVALID);
	assert_int_equal(sp_token_header_string("!!.e30.x", 8, "kid", out, sizeof(out)),
			 SP_ERR_INVALID);
	assert_int_equal(sp_token_header_string("nodots", 6, "kid", out, sizeof(out)),
			 SP_ERR_INVALID);
	free(jws);
	json_decref(claims);
}

static void test_sign_refusals(void **state)
{
	(void)state;
	json_t *claims = grant_claims();
	char *token = NULL;
	struct sp_token_signer *signer = NULL;

	json_t *array = json_array();
	assert_int_equal(sp_token_sign_es256(controller_key, "k1", array, &token), SP_ERR_INVALID);
	assert_null(token);
	json_decref(array);
	assert_int_equal(sp_token_sign_es256(controller_key, "", claims, &token), SP_ERR_INVALID);
	assert_int_equal(sp_token_sign_es256(controller_key, NULL, claims, &token), SP_ERR_INVALID);

	/* A verification key cannot sign. */
	const struct sp_jwks_entry *e = sp_jwks_find(&controller_set, "k1");
	assert_int_equal(sp_token_signer_new(e->key, "k1", &signer), SP_ERR_INVALID);
	assert_null(signer);
	/* Nor can a key of another curve. */
	EVP_PKEY *p384 = EVP_EC_gen("P-384");
	assert_int_equal(sp_token_signer_new(p384, "k1", &signer), SP_ERR_UNSUPPORTED);
	EVP_PKEY_free(p384);

	/* We never mint a token we would refuse to verify. */
	char *filler = malloc(SP_TOKEN_MAX_LEN);
	memset(filler, 'a', SP_TOKEN_MAX_LEN - 1);
	filler[SP_TOKEN_MAX_LEN - 1] = '\0';
	json_object_set_new(claims, "filler", json_string(filler));
	assert_int_equal(sp_token_sign_es256(controller_key, "k1", claims, &token),
			 SP_ERR_TOO_LARGE);
	/* Just under the input bound but over once encoded: refused after signing. */
	filler[SP_TOKEN_MAX_LEN / 4 * 3 - 400] = '\0';
	json_object_set_new(claims, "filler", json_string(filler));
	assert_int_equal(sp_token_sign_es256(controller_key, "k1", claims, &token),
			 SP_ERR_TOO_LARGE);
	assert_null(token);
	free(filler);
	json_decref(claims);
}

static void test_tampering_is_detected(void **state)
{
	(void)state;
	json_t *claims = grant_claims(), *out = NULL;
	char *token = NULL;
	struct sp_diag d;
	assert_int_equal(sp_token_sign_es256(controller_key, "k1", claims, &token), 0);
	char *dot1 = strchr(token, '.'), *dot2 = strrchr(token, '.');

	/* Tampered payload: a different, valid claim set under the old signature. */
	const char *evil_json = "{\"iss\":\"https://controller.example\",\"sub\":\"admin\"}";
	char *evil = b64url(evil_json, strlen(evil_json));
	size_t n = strlen(token) + strlen(evil) + 1;
	char *forged = malloc(n);
	snprintf(forged, n, "%.*s.%s%s", (int)(dot1 - token), token, evil, dot2);
	assert_int_equal(verify(forged, "ES256", &out, &d), SP_ERR_BAD_SIGNATURE);
	assert_non_null(strstr(d.message, "k1"));
	free(forged);
	free(evil);

	/* One payload character changed. */
	char *copy = strdup(token);
	copy[dot1 - token + 5] = copy[dot1 - token + 5] == 'A' ? 'B' : 'A';
	assert_int_equal(verify(copy, "ES256", &out, &d), SP_ERR_BAD_SIGNATURE);
	free(copy);

	/* One signature character changed (in the middle, so it stays canonical). */
	copy = strdup(token);
	size_t mid = (size_t)(dot2 - token) + 20;
	copy[mid] = copy[mid] == 'A' ? 'B' : 'A';
	assert_int_equal(verify(copy, "ES256", &out, &d), SP_ERR_BAD_SIGNATURE);
	free(copy);

	/* Header swapped for one with the same meaning but other bytes. */
	char *input = signing_input("{\"kid\":\"k1\",\"alg\":\"ES256\"}", "{}");
	char *h_end = strchr(input, '.');
	n = strlen(token) + strlen(input) + 1;
	forged = malloc(n);
	snprintf(forged, n, "%.*s%s", (int)(h_end - input), input, dot1);
	assert_int_equal(verify(forged, "ES256", &out, &d), SP_ERR_BAD_SIGNATURE);
	free(forged);
	free(input);

	free(token);
	json_decref(claims);
}

static void test_signature_from_another_key(void **state)
{
	(void)state;
	json_t *claims = grant_claims(), *out = NULL;
	char *token = NULL;
	struct sp_diag d;
	/* Signed by a key that is not in the set, claiming to be k1. */
	assert_int_equal(sp_token_sign_es256(other_key, "k1", claims, &token), 0);
	assert_int_equal(verify(token, "ES256", &out, &d), SP_ERR_BAD_SIGNATURE);
	free(token);
	json_decref(claims);
}

static void test_signature_shape(void **state)
{
	(void)state;
	json_t *out = NULL;
	struct sp_diag d;
	char *input = signing_input("{\"alg\":\"ES256\",\"kid\":\"k1\"}", "{}");
	uint8_t sig[65];
	memset(sig, 0x11, sizeof(sig));
	char *t63 = join(input, sig, 63), *t65 = join(input, sig, 65), *t64 = join(input, sig, 64);
	assert_int_equal(verify(t63, "ES256", &out, &d), SP_ERR_BAD_SIGNATURE);
	assert_non_null(strstr(d.message, "64 bytes"));
	assert_int_equal(verify(t65, "ES256", &out, &d), SP_ERR_BAD_SIGNATURE);
	assert_int_equal(verify(t64, "ES256", &out, &d), SP_ERR_BAD_SIGNATURE);
	free(t63);
	free(t65);
	free(t64);

	/* A real signature with non-canonical trailing bits: a second spelling, refused. */
	char *token = es256_token(controller_key, "{\"alg\":\"ES256\",\"kid\":\"k1\"}", "{}");
	assert_int_equal(verify(token, "ES256", &out, &d), 0);
	json_decref(out);
	out = NULL;
	size_t last = strlen(token) - 1; /* 86 characters: the last holds 4 spare bits */
	const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t v = (size_t)(strchr(alphabet, token[last]) - alphabet);
	token[last] = alphabet[v | 1];
	assert_int_equal(verify(token, "ES256", &out, &d), SP_ERR_BAD_SIGNATURE);
	free(token);
	free(input);
}

/* ---- algorithm confusion ---------------------------------------------------------- */

static void test_alg_none_refused(void **state)
{
	(void)state;
	json_t *out = NULL;
	struct sp_diag d;
	char *input = signing_input("{\"alg\":\"none\",\"kid\":\"k1\"}", "{\"iss\":\"x\"}");
	size_t n = strlen(input) + 2;
	char *unsigned_token = malloc(n);
	snprintf(unsigned_token, n, "%s.", input);
	/* The classic form has an empty signature: refused for its algorithm first... */
	assert_int_equal(verify(unsigned_token, "ES256", &out, &d), SP_ERR_BAD_ALGORITHM);
	assert_non_null(strstr(d.message, "none"));
	free(unsigned_token);
	/* ...and with any signature the algorithm itself is refused. */
	uint8_t junk[64] = {1};
	char *token = join(input, junk, sizeof(junk));
	assert_int_equal(verify(token, "ES256", &out, &d), SP_ERR_BAD_ALGORITHM);
	assert_non_null(strstr(d.message, "none"));
	free(token);
	free(input);

	/* Other spellings and a missing or mistyped alg. */
	const char *headers[] = {
	    "{\"alg\":\"None\",\"kid\":\"k1\"}",
	    "{\"alg\":\"NONE\",\"kid\":\"k1\"}",
	    "{\"kid\":\"k1\"}",
	    "{\"alg\":null,\"kid\":\"k1\"}",
	    "{\"alg\":[\"ES256\"],\"kid\":\"k1\"}",
	    "{\"alg\":\"es256\",\"kid\":\"k1\"}",
	    "{\"alg\":\"ES256 \",\"kid\":\"k1\"}",
	    "{\"alg\":\"ES384\",\"kid\":\"k1\"}",
	    "{\"alg\":\"ES256K\",\"kid\":\"k1\"}",
	    "{\"alg\":\"EdDSA\",\"kid\":\"k1\"}",
	    "{\"alg\":\"PS256\",\"kid\":\"k1\"}",
	};
	for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
		token = es256_token(controller_key, headers[i], "{}");
		assert_int_equal(verify(token, "ES256", &out, &d), SP_ERR_BAD_ALGORITHM);
		free(token);
	}
	/* An alg with a NUL inside is not "ES256" either. */
	token = es256_token(controller_key, "{\"alg\":\"ES256\\u0000x\",\"kid\":\"k1\"}", "{}");
	assert_int_equal(verify(token, "ES256", &out, &d),
			 SP_ERR_INVALID); /* jansson refuses NUL */
	free(token);
}

static void test_hs256_key_confusion_refused(void **state)
{
	(void)state;
	json_t *out = NULL;
	struct sp_diag d;
	/* The attack: HMAC keyed with the verifier's public key, which the attacker knows. */
	char *pem = NULL;
	size_t pem_len = 0;
	assert_int_equal(sp_key_public_pem(controller_key, &pem, &pem_len), 0);
	const char *payload = "{\"iss\":\"https://controller.example\",\"sub\":\"admin\"}";
	const char *hs[] = {"HS256", "HS384", "HS512"};
	for (size_t i = 0; i < 3; i++) {
		char header[64];
		snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"kid\":\"k1\"}", hs[i]);
		char *token = hs256_token(pem, pem_len, header, payload);
		assert_int_equal(verify(token, "ES256", &out, &d), SP_ERR_BAD_ALGORITHM);
		/* Refused on the header alone, before any key or signature work. */
		assert_non_null(strstr(d.message, hs[i]));
		free(token);
	}
	/* The raw public point as the secret, too. */
	uint8_t point[65] = {4};
	assert_int_equal(sp_key_public_coordinates(controller_key, point + 1, point + 33), 0);
	char *token =
	    hs256_token(point, sizeof(point), "{\"alg\":\"HS256\",\"kid\":\"k1\"}", payload);
	assert_int_equal(verify(token, "ES256", &out, &d), SP_ERR_BAD_ALGORITHM);
	/* A caller can never ask for HS256 either. */
	assert_int_equal(verify(token, "HS256", &out, &d), SP_ERR_UNSUPPORTED);
	assert_int_equal(sp_token_verify(token, strlen(token), &controller_set, NULL, &out, &d),
			 SP_ERR_UNSUPPORTED);
	free(token);
	free(pem);
}

static void test_rs256(void **state)
{
	(void)state;
	json_t *out = NULL;
	struct sp_diag d;
	/* The IdP's set: one RSA key and one EC key. */
	BIGNUM *n = NULL, *e = NULL;
	assert_int_equal(EVP_PKEY_get_bn_param(rsa_key, "n", &n), 1);
	assert_int_equal(EVP_PKEY_get_bn_param(rsa_key, "e", &e), 1);
	uint8_t nb[512], eb[8];
	int nl = BN_bn2bin(n, nb), el = BN_bn2bin(e, eb);
	char *ns = b64url(nb, (size_t)nl), *es_text = b64url(eb, (size_t)el);
	json_t *rsa_jwk = json_pack("{s:s, s:s, s:s, s:s, s:s}", "kty", "RSA", "n", ns, "e",
				    es_text, "kid", "idp-rsa", "alg", "RS256");
	free(ns);
	free(es_text);
	BN_free(n);
	BN_free(e);
	json_t *ec_jwk = NULL;
	assert_int_equal(sp_jwk_export_public(controller_key, "idp-ec", &ec_jwk), 0);
	json_t *root = json_pack("{s:[o, o]}", "keys", rsa_jwk, ec_jwk);
	char *doc = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	struct sp_jwks idp;
	assert_int_equal(sp_jwks_parse(doc, strlen(doc), &idp, &d), 0);
	free(doc);
	assert_int_equal(idp.count, 2);

	const char *payload = "{\"iss\":\"https://idp.example\",\"aud\":\"sallyport\"}";
	char *rs = rs256_token(rsa_key, "{\"alg\":\"RS256\",\"kid\":\"idp-rsa\"}", payload);
	assert_int_equal(sp_token_verify(rs, strlen(rs), &idp, "RS256", &out, &d), 0);
	assert_string_equal(json_string_value(json_object_get(out, "aud")), "sallyport");
	json_decref(out);
	out = NULL;
	/* RS256 when ES256 is expected: refused on the header. */
	assert_int_equal(sp_token_verify(rs, strlen(rs), &idp, "ES256", &out, &d),
			 SP_ERR_BAD_ALGORITHM);
	assert_int_equal(verify(rs, "ES256", &out, &d), SP_ERR_BAD_ALGORITHM);
	/* Tampered RS256 signature. */
	char *copy = strdup(rs);
	size_t mid = (size_t)(strrchr(copy, '.') - copy) + 30;
	copy[mid] = copy[mid] == 'A' ? 'B' : 'A';
	assert_int_equal(sp_token_verify(copy, strlen(copy), &idp, "RS256", &out, &d),
			 SP_ERR_BAD_SIGNATURE);
	free(copy);
	free(rs);

	/* An RS256 header naming the EC key, and an ES256 header naming the RSA key. */
	rs = rs256_token(rsa_key, "{\"alg\":\"RS256\",\"kid\":\"idp-ec\"}", payload);
	assert_int_equal(sp_token_verify(rs, strlen(rs), &idp, "RS256", &out, &d),
			 SP_ERR_BAD_ALGORITHM);
	free(rs);
	char *es = es256_token(controller_key, "{\"alg\":\"ES256\",\"kid\":\"idp-rsa\"}", payload);
	assert_int_equal(sp_token_verify(es, strlen(es), &idp, "ES256", &out, &d),
			 SP_ERR_BAD_ALGORITHM);
	free(es);
	es = es256_token(controller_key, "{\"alg\":\"ES256\",\"kid\":\"idp-ec\"}", payload);
	assert_int_equal(sp_token_verify(es, strlen(es), &idp, "ES256", &out, &d), 0);
	json_decref(out);
	free(es);
	sp_jwks_free(&idp);
}

/* ---- header and kid --------------------------------------------------------------- */

static void test_kid_rules(void **state)
{
	(void)state;
	json_t *out = NULL;
	struct sp_diag d;
	char *token = es256_token(controller_key, "{\"alg\":\"ES256\"}", "{}");
	assert_int_equal(verify(token, "ES256", &out, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "kid"));
	free(token);
	token = es256_token(controller_key, "{\"alg\":\"ES256\",\"kid\":1}", "{}");
	assert_int_equal(verify(token, "ES256", &out, &d), SP_ERR_INVALID);
	free(token);
	token = es256_token(controller_key, "{\"alg\":\"ES256\",\"kid\":\"\"}", "{}");
	assert_int_equal(verify(token, "ES256", &out, &d), SP_ERR_INVALID);
	free(token);
	token = es256_token(controller_key, "{\"alg\":\"ES256\",\"kid\":\"a\\nb\"}", "{}");
	assert_int_equal(verify(token, "ES256", &out, &d), SP_ERR_INVALID);
	free(token);
	/* Unknown kid: NOT_FOUND so the caller may refetch the set once. */
	token = es256_token(controller_key, "{\"alg\":\"ES256\",\"kid\":\"k9\"}", "{}");
	assert_int_equal(verify(token, "ES256", &out, &d), SP_ERR_NOT_FOUND);
	assert_non_null(strstr(d.message, "k9"));
	free(token);
	/* crit is refused, even naming something harmless. */
	token = es256_token(controller_key, "{\"alg\":\"ES256\",\"kid\":\"k1\",\"crit\":[\"exp\"]}",
			    "{}");
	assert_int_equal(verify(token, "ES256", &out, &d), SP_ERR_UNSUPPORTED);
	assert_non_null(strstr(d.message, "crit"));
	free(token);
	/* Duplicate header members. */
	token = es256_token(controller_key, "{\"alg\":\"ES256\",\"kid\":\"k1\",\"alg\":\"ES256\"}",
			    "{}");
	assert_int_equal(verify(token, "ES256", &out, &d), SP_ERR_INVALID);
	free(token);
	/* Unknown members that are not crit are ignored. */
	token =
	    es256_token(controller_key, "{\"alg\":\"ES256\",\"kid\":\"k1\",\"x-note\":1}", "{}");
	assert_int_equal(verify(token, "ES256", &out, &d), 0);
	json_decref(out);
	out = NULL;
	free(token);
}

/* ---- malformed compact forms ------------------------------------------------------ */

static void test_malformed_compact_forms(void **state)
{
	(void)state;
	json_t *out = NULL;
	struct sp_diag d;
	char *good = es256_token(controller_key, "{\"alg\":\"ES256\",\"kid\":\"k1\"}", "{}");
	char *d1 = strchr(good, '.'), *d2 = strrchr(good, '.');
	char buf[1024];

	const char *plain[] = {
	    "abc",	 /* no dot */
	    "abc.def",	 /* one dot */
	    "a.b.c.d",	 /* three dots */
	    "a.b.c.d.e", /* four dots (a JWE) */
	    "..",	 ".b.c",    "a..c",    "a.b.",	     "a.b.c ",
	    "a.b.c\n",	 "a+b.c.d", "a/b.c.d", "YQ==.YQ.YQ", "a.b.c=",
	};
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
		assert_int_equal(verify(plain[i], "ES256", &out, &d), SP_ERR_INVALID);
	assert_int_equal(sp_token_verify("", 0, &controller_set, "ES256", &out, &d),
			 SP_ERR_INVALID);
	assert_int_equal(sp_token_verify(NULL, 5, &controller_set, "ES256", &out, &d),
			 SP_ERR_INVALID);

	/* A NUL inside the counted bytes. */
	memcpy(buf, good, strlen(good) + 1);
	buf[3] = '\0';
	assert_int_equal(sp_token_verify(buf, strlen(good), &controller_set, "ES256", &out, &d),
			 SP_ERR_INVALID);

	/* Good token with a fourth part appended. */
	snprintf(buf, sizeof(buf), "%s.%s", good, "YQ");
	assert_int_equal(verify(buf, "ES256", &out, &d), SP_ERR_INVALID);

	/* Header: bad base64url (length 4k+1), not JSON, an array, a string. */
	snprintf(buf, sizeof(buf), "abcde%s", d1);
	assert_int_equal(verify(buf, "ES256", &out, &d), SP_ERR_INVALID);
	const char *bad_headers[] = {"not json", "[\"ES256\",\"k1\"]", "\"ES256\"", "{\"alg\":"};
	for (size_t i = 0; i < sizeof(bad_headers) / sizeof(bad_headers[0]); i++) {
		char *h = b64url(bad_headers[i], strlen(bad_headers[i]));
		snprintf(buf, sizeof(buf), "%s%s", h, d1);
		assert_int_equal(verify(buf, "ES256", &out, &d), SP_ERR_INVALID);
		assert_non_null(strstr(d.message, "header"));
		free(h);
	}

	/* Payload that is signed but not a JSON object: array, number, text, duplicates. */
	const char *bad_payloads[] = {"[1,2]", "42", "hello", "{\"a\":1,\"a\":2}", "{\"a\":"};
	for (size_t i = 0; i < sizeof(bad_payloads) / sizeof(bad_payloads[0]); i++) {
		char *t = es256_token(controller_key, "{\"alg\":\"ES256\",\"kid\":\"k1\"}",
				      bad_payloads[i]);
		assert_int_equal(verify(t, "ES256", &out, &d), SP_ERR_INVALID);
		assert_non_null(strstr(d.message, "payload"));
		free(t);
	}

	/* Oversize: refused before anything else is looked at. */
	char *huge = malloc(SP_TOKEN_MAX_LEN + 1);
	memset(huge, 'A', SP_TOKEN_MAX_LEN + 1);
	assert_int_equal(
	    sp_token_verify(huge, SP_TOKEN_MAX_LEN + 1, &controller_set, "ES256", &out, &d),
	    SP_ERR_TOO_LARGE);
	/* Exactly at the limit is parsed (and here fails as malformed). */
	assert_int_equal(
	    sp_token_verify(huge, SP_TOKEN_MAX_LEN, &controller_set, "ES256", &out, &d),
	    SP_ERR_INVALID);
	free(huge);
	(void)d2;
	free(good);
}

/* ---- claims ----------------------------------------------------------------------- */

static struct sp_token_expect grant_expect(void)
{
	struct sp_token_expect e = {
	    .issuer = "https://controller.example",
	    .audience = "connector-eu-1",
	    .now = NOW,
	    .max_skew_s = 60,
	    .jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
	    .require_exp = 1,
	};
	return e;
}

/* Checks claims with one member replaced (value NULL deletes it); releases nothing. */
static int check_with(const char *name, json_t *value, const struct sp_token_expect *e,
		      struct sp_diag *d)
{
	json_t *claims = grant_claims();
	if (value == NULL)
		json_object_del(claims, name);
	else
		json_object_set_new(claims, name, value);
	d->message[0] = '\0';
	int r = sp_token_check_claims(claims, e, d);
	json_decref(claims);
	return r;
}

static void test_claims_happy_path(void **state)
{
	(void)state;
	struct sp_token_expect e = grant_expect();
	json_t *claims = grant_claims();
	struct sp_diag d;
	assert_int_equal(sp_token_check_claims(claims, &e, &d), 0);
	assert_int_equal(sp_token_check_claims(claims, &e, NULL), 0);
	json_decref(claims);
}

static void test_claims_issuer(void **state)
{
	(void)state;
	struct sp_token_expect e = grant_expect();
	struct sp_diag d;
	assert_int_equal(check_with("iss", NULL, &e, &d), SP_ERR_CLAIM);
	assert_non_null(strstr(d.message, "iss"));
	assert_int_equal(check_with("iss", json_integer(1), &e, &d), SP_ERR_CLAIM);
	assert_int_equal(check_with("iss", json_string("https://evil.example"), &e, &d),
			 SP_ERR_ISSUER);
	assert_int_equal(check_with("iss", json_string("https://controller.example/"), &e, &d),
			 SP_ERR_ISSUER);
	assert_int_equal(check_with("iss", json_string("https://controller.exampl"), &e, &d),
			 SP_ERR_ISSUER);
	assert_int_equal(
	    check_with("iss", json_stringn("https://controller.example\0x", 28), &e, &d),
	    SP_ERR_ISSUER);
}

static void test_claims_audience(void **state)
{
	(void)state;
	struct sp_token_expect e = grant_expect();
	struct sp_diag d;
	assert_int_equal(check_with("aud", NULL, &e, &d), SP_ERR_CLAIM);
	assert_non_null(strstr(d.message, "aud"));
	assert_int_equal(check_with("aud", json_integer(3), &e, &d), SP_ERR_CLAIM);
	assert_int_equal(check_with("aud", json_string("connector-eu-2"), &e, &d), SP_ERR_AUDIENCE);
	assert_int_equal(check_with("aud", json_string(""), &e, &d), SP_ERR_AUDIENCE);
	/* Arrays: one entry, ours among others (azp needed), none ours, empty, bad entry. */
	assert_int_equal(check_with("aud", json_pack("[s]", "connector-eu-1"), &e, &d), 0);
	assert_int_equal(check_with("aud", json_pack("[s, s]", "other", "connector-eu-1"), &e, &d),
			 SP_ERR_CLAIM);
	assert_non_null(strstr(d.message, "azp"));
	assert_int_equal(check_with("aud", json_pack("[s, s]", "a", "b"), &e, &d), SP_ERR_AUDIENCE);
	assert_int_equal(check_with("aud", json_array(), &e, &d), SP_ERR_AUDIENCE);
	assert_int_equal(check_with("aud", json_pack("[s, i]", "connector-eu-1", 5), &e, &d),
			 SP_ERR_CLAIM);
	json_t *many = json_array();
	for (int i = 0; i <= SP_TOKEN_MAX_AUDIENCES; i++)
		json_array_append_new(many, json_string("connector-eu-1"));
	assert_int_equal(check_with("aud", many, &e, &d), SP_ERR_CLAIM);
	many = json_array();
	for (int i = 0; i < SP_TOKEN_MAX_AUDIENCES; i++)
		json_array_append_new(many, json_string("connector-eu-1"));
	json_t *claims = grant_claims();
	json_object_set_new(claims, "aud", many);
	json_object_set_new(claims, "azp", json_string("connector-eu-1"));
	assert_int_equal(sp_token_check_claims(claims, &e, &d), 0);
	json_decref(claims);

	/* OIDC: several audiences, azp must be our client id. */
	struct sp_token_expect oidc = {
	    .issuer = "https://idp.example",
	    .audience = "sallyport-web",
	    .authorized_party = "sallyport-web",
	    .now = NOW,
	    .max_skew_s = 30,
	    .require_exp = 1,
	};
	claims = json_pack("{s:s, s:[s, s], s:s, s:I}", "iss", "https://idp.example", "aud",
			   "sallyport-web", "other-app", "azp", "sallyport-web", "exp",
			   (json_int_t)(NOW + 60));
	assert_int_equal(sp_token_check_claims(claims, &oidc, &d), 0);
	json_object_set_new(claims, "azp", json_string("other-app"));
	assert_int_equal(sp_token_check_claims(claims, &oidc, &d), SP_ERR_AUDIENCE);
	json_object_set_new(claims, "azp", json_integer(1));
	assert_int_equal(sp_token_check_claims(claims, &oidc, &d), SP_ERR_CLAIM);
	/* azp present with a single audience must still be ours. */
	json_object_set_new(claims, "aud", json_string("sallyport-web"));
	json_object_set_new(claims, "azp", json_string("other-app"));
	assert_int_equal(sp_token_check_claims(claims, &oidc, &d), SP_ERR_AUDIENCE);
	json_object_del(claims, "azp");
	assert_int_equal(sp_token_check_claims(claims, &oidc, &d), 0);
	json_decref(claims);
}

static void test_claims_expiry_and_skew(void **state)
{
	(void)state;
	struct sp_token_expect e = grant_expect(); /* skew 60 */
	struct sp_diag d;
	const int64_t exp = NOW + 300;
	/* Exactly at exp + skew passes; one second later fails. */
	e.now = exp + 60;
	assert_int_equal(check_with("exp", json_integer(exp), &e, &d), 0);
	e.now = exp + 61;
	assert_int_equal(check_with("exp", json_integer(exp), &e, &d), SP_ERR_EXPIRED);
	assert_non_null(strstr(d.message, "expired"));
	/* Without skew: at exp passes, exp + 1 fails. */
	e.max_skew_s = 0;
	e.now = exp;
	assert_int_equal(check_with("exp", json_integer(exp), &e, &d), 0);
	e.now = exp + 1;
	assert_int_equal(check_with("exp", json_integer(exp), &e, &d), SP_ERR_EXPIRED);
	/* Largest skew allowed; beyond it the expectation is refused. */
	e = grant_expect();
	e.max_skew_s = SP_TOKEN_MAX_SKEW_S;
	e.now = exp + SP_TOKEN_MAX_SKEW_S;
	assert_int_equal(check_with("exp", json_integer(exp), &e, &d), 0);
	e.max_skew_s = SP_TOKEN_MAX_SKEW_S + 1;
	assert_int_equal(check_with("exp", json_integer(exp), &e, &d), SP_ERR_INVALID);
	e.max_skew_s = -1;
	assert_int_equal(check_with("exp", json_integer(exp), &e, &d), SP_ERR_INVALID);

	/* Types and presence. */
	e = grant_expect();
	assert_int_equal(check_with("exp", NULL, &e, &d), SP_ERR_CLAIM);
	assert_non_null(strstr(d.message, "exp"));
	e.require_exp = 0;
	assert_int_equal(check_with("exp", NULL, &e, &d), 0);
	assert_int_equal(check_with("exp", json_string("1700000300"), &e, &d), SP_ERR_CLAIM);
	assert_int_equal(check_with("exp", json_real(1700000300.5), &e, &d), SP_ERR_CLAIM);
	assert_int_equal(check_with("exp", json_true(), &e, &d), SP_ERR_CLAIM);
	/* Extremes do not overflow. */
	assert_int_equal(check_with("exp", json_integer(INT64_MAX), &e, &d), 0);
	assert_int_equal(check_with("exp", json_integer(INT64_MIN), &e, &d), SP_ERR_EXPIRED);
	assert_int_equal(check_with("exp", json_integer(-1), &e, &d), SP_ERR_EXPIRED);
}

static void test_claims_not_before_and_issued_at(void **state)
{
	(void)state;
	struct sp_token_expect e = grant_expect(); /* now NOW, skew 60 */
	struct sp_diag d;
	const char *names[] = {"nbf", "iat"};
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(check_with(names[i], json_integer(NOW + 60), &e, &d), 0);
		assert_int_equal(check_with(names[i], json_integer(NOW + 61), &e, &d),
				 SP_ERR_NOT_YET_VALID);
		assert_non_null(strstr(d.message, names[i]));
		assert_int_equal(check_with(names[i], json_integer(NOW - 100000), &e, &d), 0);
		assert_int_equal(check_with(names[i], NULL, &e, &d), 0);
		assert_int_equal(check_with(names[i], json_string("soon"), &e, &d), SP_ERR_CLAIM);
		assert_non_null(strstr(d.message, names[i]));
		assert_int_equal(check_with(names[i], json_real(1.0), &e, &d), SP_ERR_CLAIM);
		assert_int_equal(check_with(names[i], json_integer(INT64_MIN), &e, &d), 0);
		assert_int_equal(check_with(names[i], json_integer(INT64_MAX), &e, &d),
				 SP_ERR_NOT_YET_VALID);
	}
	e.max_skew_s = 0;
	assert_int_equal(check_with("nbf", json_integer(NOW), &e, &d), 0);
	assert_int_equal(check_with("nbf", json_integer(NOW + 1), &e, &d), SP_ERR_NOT_YET_VALID);
}

static void test_claims_key_binding(void **state)
{
	(void)state;
	struct sp_token_expect e = grant_expect();
	struct sp_diag d;
	assert_int_equal(
	    check_with("cnf",
		       json_pack("{s:s}", "jkt", "1ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"), &e,
		       &d),
	    SP_ERR_KEY_BINDING);
	assert_int_equal(check_with("cnf", json_pack("{s:s}", "jkt", "0ZcOCORZ"), &e, &d),
			 SP_ERR_KEY_BINDING);
	assert_int_equal(check_with("cnf", json_pack("{s:s}", "jkt", ""), &e, &d),
			 SP_ERR_KEY_BINDING);
	assert_int_equal(check_with("cnf", NULL, &e, &d), SP_ERR_KEY_BINDING);
	assert_int_equal(check_with("cnf", json_object(), &e, &d), SP_ERR_KEY_BINDING);
	assert_int_equal(check_with("cnf", json_string("jkt"), &e, &d), SP_ERR_CLAIM);
	assert_non_null(strstr(d.message, "cnf"));
	assert_int_equal(check_with("cnf", json_pack("{s:i}", "jkt", 1), &e, &d), SP_ERR_CLAIM);
	/* Unbound expectations ignore cnf. */
	e.jkt = NULL;
	assert_int_equal(check_with("cnf", NULL, &e, &d), 0);
	assert_int_equal(check_with("cnf", json_string("whatever"), &e, &d), 0);
}

static void test_claims_nonce_and_expectation(void **state)
{
	(void)state;
	struct sp_token_expect e = grant_expect();
	struct sp_diag d;
	e.nonce = "n-0S6_WzA2Mj";
	assert_int_equal(check_with("nonce", json_string("n-0S6_WzA2Mj"), &e, &d), 0);
	assert_int_equal(check_with("nonce", json_string("n-0S6_WzA2Mk"), &e, &d), SP_ERR_CLAIM);
	assert_non_null(strstr(d.message, "nonce"));
	assert_int_equal(check_with("nonce", NULL, &e, &d), SP_ERR_CLAIM);
	assert_int_equal(check_with("nonce", json_integer(5), &e, &d), SP_ERR_CLAIM);

	e = grant_expect();
	e.issuer = NULL;
	assert_int_equal(check_with("x", json_null(), &e, &d), SP_ERR_INVALID);
	e = grant_expect();
	e.audience = NULL;
	assert_int_equal(check_with("x", json_null(), &e, &d), SP_ERR_INVALID);
	e = grant_expect();
	json_t *array = json_array();
	assert_int_equal(sp_token_check_claims(array, &e, &d), SP_ERR_CLAIM);
	assert_int_equal(sp_token_check_claims(NULL, &e, &d), SP_ERR_CLAIM);
	assert_int_equal(sp_token_check_claims(array, NULL, &d), SP_ERR_INVALID);
	json_decref(array);
}

/* The whole path as a connector runs it: verify, then bind to the presenting device. */
static void test_grant_end_to_end(void **state)
{
	(void)state;
	EVP_PKEY *device = NULL;
	assert_int_equal(sp_key_generate(&device), 0);
	char jkt[SP_JWK_THUMBPRINT_LEN + 1];
	assert_int_equal(sp_jwk_thumbprint(device, jkt), 0);
	json_t *claims = grant_claims();
	json_object_set_new(claims, "cnf", json_pack("{s:s}", "jkt", jkt));
	char *token = NULL;
	assert_int_equal(sp_token_sign_es256(controller_key, "k1", claims, &token), 0);

	json_t *got = NULL;
	struct sp_diag d;
	assert_int_equal(verify(token, "ES256", &got, &d), 0);
	struct sp_token_expect e = grant_expect();
	e.jkt = jkt;
	assert_int_equal(sp_token_check_claims(got, &e, &d), 0);
	/* Presented by another device: refused. */
	char other[SP_JWK_THUMBPRINT_LEN + 1];
	assert_int_equal(sp_jwk_thumbprint(other_key, other), 0);
	e.jkt = other;
	assert_int_equal(sp_token_check_claims(got, &e, &d), SP_ERR_KEY_BINDING);
	json_decref(got);
	free(token);
	json_decref(claims);
	EVP_PKEY_free(device);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sign_verify_roundtrip),
	    cmocka_unit_test(test_signer_reuse),
	    cmocka_unit_test(test_signer_header_bytes),
	    cmocka_unit_test(test_document_bound),
	    cmocka_unit_test(test_header_string),
	    cmocka_unit_test(test_sign_refusals),
	    cmocka_unit_test(test_tampering_is_detected),
	    cmocka_unit_test(test_signature_from_another_key),
	    cmocka_unit_test(test_signature_shape),
	    cmocka_unit_test(test_alg_none_refused),
	    cmocka_unit_test(test_hs256_key_confusion_refused),
	    cmocka_unit_test(test_rs256),
	    cmocka_unit_test(test_kid_rules),
	    cmocka_unit_test(test_malformed_compact_forms),
	    cmocka_unit_test(test_claims_happy_path),
	    cmocka_unit_test(test_claims_issuer),
	    cmocka_unit_test(test_claims_audience),
	    cmocka_unit_test(test_claims_expiry_and_skew),
	    cmocka_unit_test(test_claims_not_before_and_issued_at),
	    cmocka_unit_test(test_claims_key_binding),
	    cmocka_unit_test(test_claims_nonce_and_expectation),
	    cmocka_unit_test(test_grant_end_to_end),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
