/* Unit tests for shared/jwk.c. */
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
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "shared/jwk.h"
#include "shared/keys.h"

/*
 * base64url written independently of the code under test: OpenSSL's base64, then
 * the URL alphabet and no padding. The caller frees the result.
 */
static char *independent_b64url(const uint8_t *data, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);
	assert_non_null(out);
	int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	while (n > 0 && out[n - 1] == '=')
		n--;
	out[n] = '\0';
	for (int i = 0; i < n; i++) {
		if (out[i] == '+')
			out[i] = '-';
		else if (out[i] == '/')
			out[i] = '_';
	}
	return out;
}

/* An EC JWK object for key, built with the independent encoder. */
static json_t *ec_jwk(EVP_PKEY *key, const char *kid)
{
	uint8_t x[32], y[32];
	assert_int_equal(sp_key_public_coordinates(key, x, y), 0);
	char *xb = independent_b64url(x, 32), *yb = independent_b64url(y, 32);
	json_t *jwk =
	    json_pack("{s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x", xb, "y", yb);
	assert_non_null(jwk);
	if (kid != NULL)
		json_object_set_new(jwk, "kid", json_string(kid));
	free(xb);
	free(yb);
	return jwk;
}

/* An RSA JWK object for the public half of key. */
static json_t *rsa_jwk(EVP_PKEY *key, const char *kid)
{
	BIGNUM *n = NULL, *e = NULL;
	assert_int_equal(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n), 1);
	assert_int_equal(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e), 1);
	uint8_t nb[1024], eb[8];
	int nl = BN_bn2bin(n, nb), el = BN_bn2bin(e, eb);
	char *ns = independent_b64url(nb, (size_t)nl), *es = independent_b64url(eb, (size_t)el);
	json_t *jwk = json_pack("{s:s, s:s, s:s, s:s}", "kty", "RSA", "n", ns, "e", es, "kid", kid);
	assert_non_null(jwk);
	free(ns);
	free(es);
	BN_free(n);
	BN_free(e);
	return jwk;
}

/* {"keys":[...]} as text; takes the references of the given keys. Caller frees. */
static char *jwks_text(json_t *k1, json_t *k2, json_t *k3)
{
	json_t *keys = json_array();
	json_t *list[] = {k1, k2, k3};
	for (size_t i = 0; i < 3; i++)
		if (list[i] != NULL)
			json_array_append_new(keys, list[i]);
	json_t *root = json_pack("{s:o}", "keys", keys);
	char *text = json_dumps(root, JSON_COMPACT);
	assert_non_null(text);
	json_decref(root);
	return text;
}

static int parse_text(const char *text, struct sp_jwks *set, struct sp_diag *d)
{
	return sp_jwks_parse(text, strlen(text), set, d);
}

static EVP_PKEY *new_key(void)
{
	EVP_PKEY *key = NULL;
	assert_int_equal(sp_key_generate(&key), 0);
	return key;
}

/* ---- base64url ------------------------------------------------------------------ */

static void test_base64url_strict(void **state)
{
	(void)state;
	uint8_t out[8];
	size_t n = 99;
	assert_int_equal(sp_jwk_base64url_decode("aGk", 3, out, sizeof(out), &n), 0);
	assert_int_equal(n, 2);
	assert_memory_equal(out, "hi", 2);
	assert_int_equal(sp_jwk_base64url_decode("", 0, out, sizeof(out), &n), 0);
	assert_int_equal(n, 0);
	/* 0xfb 0xff: both URL-alphabet characters. */
	assert_int_equal(sp_jwk_base64url_decode("-_8", 3, out, sizeof(out), &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(out[0], 0xfb);
	assert_int_equal(out[1], 0xff);
	/* Padding, the standard alphabet, whitespace, a lone character: refused. */
	assert_int_equal(sp_jwk_base64url_decode("aGk=", 4, out, sizeof(out), &n), SP_ERR_INVALID);
	assert_int_equal(sp_jwk_base64url_decode("+/8", 3, out, sizeof(out), &n), SP_ERR_INVALID);
	assert_int_equal(sp_jwk_base64url_decode("aG k", 4, out, sizeof(out), &n), SP_ERR_INVALID);
	assert_int_equal(sp_jwk_base64url_decode("aGkaG", 5, out, sizeof(out), &n), SP_ERR_INVALID);
	/* "aGl" differs from "aGk" only in bits past the last byte: not canonical. */
	assert_int_equal(sp_jwk_base64url_decode("aGl", 3, out, sizeof(out), &n), SP_ERR_INVALID);
	assert_int_equal(sp_jwk_base64url_decode("aB", 2, out, sizeof(out), &n), SP_ERR_INVALID);
	assert_int_equal(sp_jwk_base64url_decode("aA", 2, out, sizeof(out), &n), 0);
	/* Too long for the buffer. */
	assert_int_equal(sp_jwk_base64url_decode("aGVsbG8gd29ybGQ", 15, out, sizeof(out), &n),
			 SP_ERR_TOO_LARGE);

	char text[8];
	assert_int_equal(sp_jwk_base64url_encode((const uint8_t *)"hi", 2, text, sizeof(text)), 0);
	assert_string_equal(text, "aGk");
	assert_int_equal(sp_jwk_base64url_encode((const uint8_t *)"hello", 5, text, 7),
			 SP_ERR_TOO_LARGE);
	assert_int_equal(sp_jwk_base64url_encode((const uint8_t *)"hello", 5, text, 8), 0);
	assert_string_equal(text, "aGVsbG8");
}

/*
 * The encoder and decoder allocate nothing (so they cannot fail for want of memory):
 * every length 0..100 and every byte value against OpenSSL's base64, both ways, and an
 * output buffer one byte short.
 */
static void test_base64url_against_openssl(void **state)
{
	(void)state;
	uint8_t data[100];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 37u + 11u);
	for (size_t len = 0; len <= sizeof(data); len++) {
		char *want = independent_b64url(data, len);
		size_t want_len = strlen(want);
		char text[160];
		assert_int_equal(sp_jwk_base64url_encode(data, len, text, sizeof(text)), 0);
		assert_string_equal(text, want);
		assert_int_equal(sp_jwk_base64url_encode(data, len, text, want_len), SP_ERR_TOO_LARGE);
		assert_int_equal(sp_jwk_base64url_encode(data, len, text, want_len + 1), 0);
		uint8_t back[100];
		size_t n = 1234;
		assert_int_equal(sp_jwk_base64url_decode(want, want_len, back, sizeof(back), &n), 0);
		assert_int_equal(n, len);
		assert_memory_equal(back, data, len);
		if (len > 0)
			assert_int_equal(sp_jwk_base64url_decode(want, want_len, back, len - 1, &n),
					 SP_ERR_TOO_LARGE);
		free(want);
	}
	uint8_t every[256];
	for (size_t i = 0; i < sizeof(every); i++)
		every[i] = (uint8_t)i;
	char *want = independent_b64url(every, sizeof(every));
	char text[400];
	assert_int_equal(sp_jwk_base64url_encode(every, sizeof(every), text, sizeof(text)), 0);
	assert_string_equal(text, want);
	uint8_t back[256];
	size_t n = 0;
	assert_int_equal(sp_jwk_base64url_decode(text, strlen(text), back, sizeof(back), &n), 0);
	assert_int_equal(n, sizeof(every));
	assert_memory_equal(back, every, sizeof(every));
	free(want);
}

/* ---- thumbprint ----------------------------------------------------------------- */

static void test_thumbprint_matches_rfc7638_by_hand(void **state)
{
	(void)state;
	for (int round = 0; round < 8; round++) {
		EVP_PKEY *key = new_key();
		uint8_t x[32], y[32];
		assert_int_equal(sp_key_public_coordinates(key, x, y), 0);
		char *xb = independent_b64url(x, 32), *yb = independent_b64url(y, 32);
		char canonical[256];
		snprintf(canonical, sizeof(canonical),
			 "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", xb, yb);
		uint8_t digest[32];
		unsigned int dl = 0;
		assert_int_equal(
		    EVP_Digest(canonical, strlen(canonical), digest, &dl, EVP_sha256(), NULL), 1);
		char *want = independent_b64url(digest, 32);

		char got[SP_JWK_THUMBPRINT_LEN + 1];
		assert_int_equal(sp_jwk_thumbprint(key, got), 0);
		assert_int_equal(strlen(got), 43);
		assert_string_equal(got, want);

		/* The public half alone gives the same thumbprint. */
		EVP_PKEY *pub = NULL;
		assert_int_equal(sp_key_from_coordinates(x, y, &pub), 0);
		char again[SP_JWK_THUMBPRINT_LEN + 1];
		assert_int_equal(sp_jwk_thumbprint(pub, again), 0);
		assert_string_equal(again, want);
		EVP_PKEY_free(pub);
		free(xb);
		free(yb);
		free(want);
		EVP_PKEY_free(key);
	}
}

static void test_thumbprint_refuses_other_curves(void **state)
{
	(void)state;
	EVP_PKEY *p384 = EVP_EC_gen("P-384");
	assert_non_null(p384);
	char out[SP_JWK_THUMBPRINT_LEN + 1];
	assert_int_equal(sp_jwk_thumbprint(p384, out), SP_ERR_UNSUPPORTED);
	assert_string_equal(out, "");
	EVP_PKEY_free(p384);
}

/* ---- one JWK -------------------------------------------------------------------- */

static void test_export_then_parse_roundtrip(void **state)
{
	(void)state;
	EVP_PKEY *key = new_key(), *parsed = NULL;
	json_t *jwk = NULL;
	assert_int_equal(sp_jwk_export_public(key, "controller-2024", &jwk), 0);
	assert_string_equal(json_string_value(json_object_get(jwk, "kty")), "EC");
	assert_string_equal(json_string_value(json_object_get(jwk, "crv")), "P-256");
	assert_string_equal(json_string_value(json_object_get(jwk, "kid")), "controller-2024");
	assert_string_equal(json_string_value(json_object_get(jwk, "alg")), "ES256");
	assert_string_equal(json_string_value(json_object_get(jwk, "use")), "sig");
	assert_null(json_object_get(jwk, "d"));
	assert_int_equal(strlen(json_string_value(json_object_get(jwk, "x"))), 43);

	/* Same text as the independent encoder. */
	json_t *mine = ec_jwk(key, NULL);
	assert_string_equal(json_string_value(json_object_get(jwk, "x")),
			    json_string_value(json_object_get(mine, "x")));
	assert_string_equal(json_string_value(json_object_get(jwk, "y")),
			    json_string_value(json_object_get(mine, "y")));
	json_decref(mine);

	struct sp_diag d;
	assert_int_equal(sp_jwk_parse_public(jwk, &parsed, &d), 0);
	assert_false(sp_key_has_private(parsed));
	uint8_t a[32], b[32];
	assert_int_equal(sp_key_spki_sha256(key, a), 0);
	assert_int_equal(sp_key_spki_sha256(parsed, b), 0);
	assert_memory_equal(a, b, 32);
	EVP_PKEY_free(parsed);
	json_decref(jwk);

	/* Bad kids are refused on export. */
	assert_int_equal(sp_jwk_export_public(key, "", &jwk), SP_ERR_INVALID);
	assert_null(jwk);
	assert_int_equal(sp_jwk_export_public(key, "tab\there", &jwk), SP_ERR_INVALID);
	char long_kid[SP_JWK_KID_MAX + 2];
	memset(long_kid, 'k', sizeof(long_kid) - 1);
	long_kid[sizeof(long_kid) - 1] = '\0';
	assert_int_equal(sp_jwk_export_public(key, long_kid, &jwk), SP_ERR_INVALID);
	long_kid[SP_JWK_KID_MAX] = '\0'; /* exactly the maximum is fine */
	assert_int_equal(sp_jwk_export_public(key, long_kid, &jwk), 0);
	json_decref(jwk);
	EVP_PKEY_free(key);
}

/* Parses jwk (and releases it); returns the code and leaves the diag in *d. */
static int parse_one(json_t *jwk, struct sp_diag *d)
{
	EVP_PKEY *key = NULL;
	d->message[0] = '\0';
	int r = sp_jwk_parse_public(jwk, &key, d);
	if (r < 0)
		assert_null(key);
	EVP_PKEY_free(key);
	json_decref(jwk);
	return r;
}

static void test_parse_public_refusals(void **state)
{
	(void)state;
	EVP_PKEY *key = new_key();
	struct sp_diag d;
	json_t *jwk;

	assert_int_equal(parse_one(json_array(), &d), SP_ERR_INVALID);
	jwk = ec_jwk(key, "k");
	json_object_del(jwk, "kty");
	assert_int_equal(parse_one(jwk, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "kty"));
	jwk = ec_jwk(key, "k");
	json_object_set_new(jwk, "kty", json_integer(2));
	assert_int_equal(parse_one(jwk, &d), SP_ERR_INVALID);

	/* Not for us: another type, curve, algorithm or use. */
	jwk = ec_jwk(key, "k");
	json_object_set_new(jwk, "kty", json_string("RSA"));
	assert_int_equal(parse_one(jwk, &d), SP_ERR_UNSUPPORTED);
	jwk = ec_jwk(key, "k");
	json_object_set_new(jwk, "crv", json_string("P-384"));
	assert_int_equal(parse_one(jwk, &d), SP_ERR_UNSUPPORTED);
	assert_non_null(strstr(d.message, "P-384"));
	jwk = ec_jwk(key, "k");
	json_object_set_new(jwk, "alg", json_string("ES384"));
	assert_int_equal(parse_one(jwk, &d), SP_ERR_UNSUPPORTED);
	jwk = ec_jwk(key, "k");
	json_object_set_new(jwk, "use", json_string("enc"));
	assert_int_equal(parse_one(jwk, &d), SP_ERR_UNSUPPORTED);
	jwk = ec_jwk(key, "k");
	json_object_set_new(jwk, "use", json_true());
	assert_int_equal(parse_one(jwk, &d), SP_ERR_INVALID);
	jwk = ec_jwk(key, "k");
	json_object_del(jwk, "crv");
	assert_int_equal(parse_one(jwk, &d), SP_ERR_INVALID);

	/* Accepted with the optional members set right. */
	jwk = ec_jwk(key, "k");
	json_object_set_new(jwk, "alg", json_string("ES256"));
	json_object_set_new(jwk, "use", json_string("sig"));
	assert_int_equal(parse_one(jwk, &d), 0);

	/* A private key where a public one belongs. */
	jwk = ec_jwk(key, "k");
	json_object_set_new(jwk, "d", json_string("AAAA"));
	assert_int_equal(parse_one(jwk, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "\"d\""));

	/* Coordinates: missing, wrong type, 31 and 33 bytes, padded, non-canonical. */
	jwk = ec_jwk(key, "k");
	json_object_del(jwk, "y");
	assert_int_equal(parse_one(jwk, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "\"y\""));
	jwk = ec_jwk(key, "k");
	json_object_set_new(jwk, "x", json_integer(5));
	assert_int_equal(parse_one(jwk, &d), SP_ERR_INVALID);
	uint8_t bytes[33];
	memset(bytes, 0x41, sizeof(bytes));
	char *b31 = independent_b64url(bytes, 31), *b33 = independent_b64url(bytes, 33);
	jwk = ec_jwk(key, "k");
	json_object_set_new(jwk, "x", json_string(b31));
	assert_int_equal(parse_one(jwk, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "32 bytes"));
	jwk = ec_jwk(key, "k");
	json_object_set_new(jwk, "x", json_string(b33));
	assert_int_equal(parse_one(jwk, &d), SP_ERR_INVALID);
	free(b31);
	free(b33);

	jwk = ec_jwk(key, "k");
	char padded[64];
	snprintf(padded, sizeof(padded), "%s=", json_string_value(json_object_get(jwk, "x")));
	json_object_set_new(jwk, "x", json_string(padded));
	assert_int_equal(parse_one(jwk, &d), SP_ERR_INVALID);

	/* 43 characters carry 258 bits: the last character's low 2 bits must be zero. */
	jwk = ec_jwk(key, "k");
	char tweaked[64];
	snprintf(tweaked, sizeof(tweaked), "%s", json_string_value(json_object_get(jwk, "x")));
	char last = tweaked[42];
	tweaked[42] = last == 'A' ? 'B' : (last == 'B' ? 'A' : (char)(last ^ 1));
	json_object_set_new(jwk, "x", json_string(tweaked));
	int r = parse_one(jwk, &d);
	assert_true(r == SP_ERR_INVALID);

	/* A point off the curve. */
	uint8_t x[32], y[32];
	assert_int_equal(sp_key_public_coordinates(key, x, y), 0);
	y[31] ^= 1;
	char *yb = independent_b64url(y, 32);
	jwk = ec_jwk(key, "k");
	json_object_set_new(jwk, "y", json_string(yb));
	assert_int_equal(parse_one(jwk, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "curve"));
	free(yb);
	EVP_PKEY_free(key);
}

/* ---- key sets ------------------------------------------------------------------- */

static void test_jwks_parse_find_and_roundtrip(void **state)
{
	(void)state;
	EVP_PKEY *k1 = new_key(), *k2 = new_key();
	char *text = jwks_text(ec_jwk(k1, "k1"), ec_jwk(k2, "k2"), NULL);
	struct sp_jwks set;
	struct sp_diag d;
	assert_int_equal(parse_text(text, &set, &d), 0);
	assert_int_equal(set.count, 2);
	const struct sp_jwks_entry *e = sp_jwks_find(&set, "k2");
	assert_non_null(e);
	assert_string_equal(e->kid, "k2");
	assert_int_equal(e->alg, SP_JWK_ALG_ES256);
	uint8_t a[32], b[32];
	sp_key_spki_sha256(k2, a);
	sp_key_spki_sha256(e->key, b);
	assert_memory_equal(a, b, 32);
	assert_null(sp_jwks_find(&set, "k3"));
	assert_null(sp_jwks_find(&set, "k"));
	assert_null(sp_jwks_find(&set, NULL));

	/* Serialise and parse again: same keys, same kids, same order. */
	char *doc = NULL;
	size_t doc_len = 0;
	assert_int_equal(sp_jwks_serialize(&set, &doc, &doc_len), 0);
	assert_int_equal(strlen(doc), doc_len);
	assert_null(strstr(doc, "\"d\""));
	struct sp_jwks again;
	assert_int_equal(sp_jwks_parse(doc, doc_len, &again, &d), 0);
	assert_int_equal(again.count, 2);
	for (size_t i = 0; i < 2; i++) {
		assert_string_equal(again.entries[i].kid, set.entries[i].kid);
		sp_key_spki_sha256(set.entries[i].key, a);
		sp_key_spki_sha256(again.entries[i].key, b);
		assert_memory_equal(a, b, 32);
	}
	json_t *root = NULL;
	assert_int_equal(sp_jwks_to_json(&again, &root), 0);
	assert_int_equal(json_array_size(json_object_get(root, "keys")), 2);
	json_decref(root);

	sp_jwks_free(&again);
	free(doc);
	sp_jwks_free(&set);
	sp_jwks_free(&set); /* safe twice */
	sp_jwks_free(NULL);
	free(text);
	EVP_PKEY_free(k1);
	EVP_PKEY_free(k2);
}

static void test_jwks_skips_what_is_not_for_us(void **state)
{
	(void)state;
	EVP_PKEY *k1 = new_key();
	json_t *enc = ec_jwk(k1, "enc-key");
	json_object_set_new(enc, "use", json_string("enc"));
	json_t *p384 = ec_jwk(k1, "p384");
	json_object_set_new(p384, "crv", json_string("P-384"));
	json_t *es384 = ec_jwk(k1, "es384");
	json_object_set_new(es384, "alg", json_string("ES384"));
	json_t *no_kid = ec_jwk(k1, NULL);
	json_t *odd_kid = ec_jwk(k1, "line\nbreak");
	json_t *keys = json_array();
	json_array_append_new(
	    keys, json_pack("{s:s, s:s, s:s}", "kty", "oct", "k", "c2VjcmV0", "kid", "hmac"));
	json_array_append_new(keys, json_pack("{s:s, s:s, s:s, s:s}", "kty", "OKP", "crv",
					      "Ed25519", "x", "AAAA", "kid", "ed"));
	json_array_append_new(keys, enc);
	json_array_append_new(keys, p384);
	json_array_append_new(keys, es384);
	json_array_append_new(keys, no_kid);
	json_array_append_new(keys, odd_kid);
	/* "enc-key" was skipped, so reusing its kid for the one kept key is no duplicate. */
	json_array_append_new(keys, ec_jwk(k1, "enc-key"));
	json_t *root = json_pack("{s:o, s:s}", "keys", keys, "extra", "ignored");
	char *text = json_dumps(root, JSON_COMPACT);
	json_decref(root);

	struct sp_jwks set;
	struct sp_diag d;
	assert_int_equal(parse_text(text, &set, &d), 0);
	assert_int_equal(set.count, 1);
	assert_non_null(sp_jwks_find(&set, "enc-key"));
	sp_jwks_free(&set);
	free(text);

	/* Nothing usable is not an error: the caller decides. */
	assert_int_equal(parse_text("{\"keys\":[]}", &set, &d), 0);
	assert_int_equal(set.count, 0);
	sp_jwks_free(&set);
	EVP_PKEY_free(k1);
}

static void test_jwks_refusals(void **state)
{
	(void)state;
	EVP_PKEY *k1 = new_key(), *k2 = new_key();
	struct sp_jwks set;
	struct sp_diag d;
	char *text;

	/* Duplicate kid among kept keys. */
	text = jwks_text(ec_jwk(k1, "same"), ec_jwk(k2, "same"), NULL);
	assert_int_equal(parse_text(text, &set, &d), SP_ERR_EXISTS);
	assert_non_null(strstr(d.message, "keys[1]"));
	assert_non_null(strstr(d.message, "same"));
	assert_int_equal(set.count, 0);
	assert_null(set.entries);
	free(text);

	/* Bad x length in the second key: the whole document is refused. */
	json_t *bad = ec_jwk(k2, "k2");
	json_object_set_new(bad, "x", json_string("AAAA"));
	text = jwks_text(ec_jwk(k1, "k1"), bad, NULL);
	assert_int_equal(parse_text(text, &set, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "keys[1]"));
	assert_int_equal(set.count, 0);
	free(text);

	/* Point not on the curve. */
	uint8_t x[32], y[32];
	sp_key_public_coordinates(k1, x, y);
	x[0] ^= 0x80;
	char *xb = independent_b64url(x, 32);
	bad = ec_jwk(k1, "k1");
	json_object_set_new(bad, "x", json_string(xb));
	free(xb);
	text = jwks_text(bad, NULL, NULL);
	assert_int_equal(parse_text(text, &set, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "curve"));
	free(text);

	/* A private d in a published set. */
	bad = ec_jwk(k1, "k1");
	json_object_set_new(bad, "d", json_string("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
	text = jwks_text(bad, NULL, NULL);
	assert_int_equal(parse_text(text, &set, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "private"));
	free(text);

	/* kid of the wrong type, element not an object, kty missing. */
	bad = ec_jwk(k1, NULL);
	json_object_set_new(bad, "kid", json_integer(7));
	text = jwks_text(bad, NULL, NULL);
	assert_int_equal(parse_text(text, &set, &d), SP_ERR_INVALID);
	free(text);
	assert_int_equal(parse_text("{\"keys\":[1]}", &set, &d), SP_ERR_INVALID);
	assert_int_equal(parse_text("{\"keys\":[{\"kid\":\"a\"}]}", &set, &d), SP_ERR_INVALID);

	/* Document shape. */
	assert_int_equal(sp_jwks_parse("", 0, &set, &d), SP_ERR_INVALID);
	assert_int_equal(parse_text("not json", &set, &d), SP_ERR_INVALID);
	assert_int_equal(parse_text("[]", &set, &d), SP_ERR_INVALID);
	assert_int_equal(parse_text("{\"keys\":{}}", &set, &d), SP_ERR_INVALID);
	assert_int_equal(parse_text("{\"other\":[]}", &set, &d), SP_ERR_INVALID);
	assert_int_equal(parse_text("{\"keys\":[],\"keys\":[]}", &set, &d), SP_ERR_INVALID);
	assert_int_equal(parse_text("{\"keys\":[]} trailing", &set, &d), SP_ERR_INVALID);

	/* Oversize document. */
	size_t big = SP_JWKS_DOC_MAX + 1;
	char *huge = malloc(big);
	memset(huge, ' ', big);
	memcpy(huge, "{\"keys\":[]}", 11);
	assert_int_equal(sp_jwks_parse(huge, big, &set, &d), SP_ERR_TOO_LARGE);
	assert_int_equal(sp_jwks_parse(huge, big - 1, &set, &d), 0); /* the limit itself is fine */
	sp_jwks_free(&set);
	free(huge);

	/* Too many entries listed, even if every one would be skipped. */
	json_t *keys = json_array();
	for (int i = 0; i <= SP_JWKS_MAX_LISTED; i++)
		json_array_append_new(keys, json_pack("{s:s}", "kty", "oct"));
	json_t *root = json_pack("{s:o}", "keys", keys);
	text = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	assert_int_equal(parse_text(text, &set, &d), SP_ERR_TOO_LARGE);
	free(text);

	/* More usable keys than a set holds. */
	keys = json_array();
	for (int i = 0; i <= SP_JWKS_MAX_KEYS; i++) {
		char kid[16];
		snprintf(kid, sizeof(kid), "k%d", i);
		json_array_append_new(keys, ec_jwk(k1, kid));
	}
	root = json_pack("{s:o}", "keys", keys);
	text = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	assert_int_equal(parse_text(text, &set, &d), SP_ERR_TOO_LARGE);
	assert_int_equal(set.count, 0);
	free(text);

	EVP_PKEY_free(k1);
	EVP_PKEY_free(k2);
}

static void test_jwks_add_keeps_public_half_only(void **state)
{
	(void)state;
	EVP_PKEY *k1 = new_key();
	struct sp_jwks set;
	sp_jwks_init(&set);
	assert_int_equal(sp_jwks_add_es256(&set, "k1", k1), 0);
	assert_false(sp_key_has_private(set.entries[0].key));
	assert_int_equal(sp_jwks_add_es256(&set, "k1", k1), SP_ERR_EXISTS);
	assert_int_equal(sp_jwks_add_es256(&set, "", k1), SP_ERR_INVALID);
	assert_int_equal(sp_jwks_add_es256(&set, NULL, k1), SP_ERR_INVALID);
	EVP_PKEY *p384 = EVP_EC_gen("P-384");
	assert_int_equal(sp_jwks_add_es256(&set, "p384", p384), SP_ERR_UNSUPPORTED);
	EVP_PKEY_free(p384);
	for (int i = 1; i < SP_JWKS_MAX_KEYS; i++) {
		char kid[16];
		snprintf(kid, sizeof(kid), "extra%d", i);
		assert_int_equal(sp_jwks_add_es256(&set, kid, k1), 0);
	}
	assert_int_equal(set.count, SP_JWKS_MAX_KEYS);
	assert_int_equal(sp_jwks_add_es256(&set, "one-too-many", k1), SP_ERR_TOO_LARGE);
	sp_jwks_free(&set);
	assert_int_equal(set.count, 0);
	EVP_PKEY_free(k1);
}

static void test_jwks_rsa_keys(void **state)
{
	(void)state;
	EVP_PKEY *rsa = EVP_RSA_gen(2048);
	EVP_PKEY *small = EVP_RSA_gen(1024);
	assert_non_null(rsa);
	assert_non_null(small);
	EVP_PKEY *ec = new_key();

	json_t *weak = rsa_jwk(small, "weak");
	json_t *ps = rsa_jwk(rsa, "ps256");
	json_object_set_new(ps, "alg", json_string("PS256"));
	char *text = jwks_text(rsa_jwk(rsa, "idp-rsa"), weak, ps);
	struct sp_jwks set;
	struct sp_diag d;
	assert_int_equal(parse_text(text, &set, &d), 0);
	free(text);
	assert_int_equal(set.count, 1); /* 1024 bits and PS256 skipped */
	const struct sp_jwks_entry *e = sp_jwks_find(&set, "idp-rsa");
	assert_non_null(e);
	assert_int_equal(e->alg, SP_JWK_ALG_RS256);
	assert_int_equal(EVP_PKEY_get_bits(e->key), 2048);
	assert_int_equal(sp_jwks_add_es256(&set, "ec", ec), 0);

	/* Serialise both kinds and read them back. */
	char *doc = NULL;
	size_t len = 0;
	assert_int_equal(sp_jwks_serialize(&set, &doc, &len), 0);
	struct sp_jwks again;
	assert_int_equal(sp_jwks_parse(doc, len, &again, &d), 0);
	assert_int_equal(again.count, 2);
	assert_int_equal(sp_jwks_find(&again, "idp-rsa")->alg, SP_JWK_ALG_RS256);
	assert_int_equal(sp_jwks_find(&again, "ec")->alg, SP_JWK_ALG_ES256);
	assert_int_equal(EVP_PKEY_eq(sp_jwks_find(&again, "idp-rsa")->key, e->key), 1);
	sp_jwks_free(&again);
	free(doc);
	sp_jwks_free(&set);

	/* RSA private material in a public set. */
	json_t *priv = rsa_jwk(rsa, "leak");
	json_object_set_new(priv, "p", json_string("AQAB"));
	text = jwks_text(priv, NULL, NULL);
	assert_int_equal(parse_text(text, &set, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "\"p\""));
	free(text);
	/* Missing e. */
	json_t *no_e = rsa_jwk(rsa, "no-e");
	json_object_del(no_e, "e");
	text = jwks_text(no_e, NULL, NULL);
	assert_int_equal(parse_text(text, &set, &d), SP_ERR_INVALID);
	free(text);

	/* e = 1 and an even modulus. */
	json_t *e_one = rsa_jwk(rsa, "e-one");
	json_object_set_new(e_one, "e", json_string("AQ"));
	text = jwks_text(e_one, NULL, NULL);
	assert_int_equal(parse_text(text, &set, &d), SP_ERR_INVALID);
	free(text);
	BIGNUM *n = NULL;
	assert_int_equal(EVP_PKEY_get_bn_param(rsa, OSSL_PKEY_PARAM_RSA_N, &n), 1);
	assert_int_equal(BN_clear_bit(n, 0), 1);
	uint8_t nb[256];
	assert_int_equal(BN_bn2bin(n, nb), 256);
	char *even = independent_b64url(nb, sizeof(nb));
	json_t *even_jwk = rsa_jwk(rsa, "even");
	json_object_set_new(even_jwk, "n", json_string(even));
	text = jwks_text(even_jwk, NULL, NULL);
	assert_int_equal(parse_text(text, &set, &d), SP_ERR_INVALID);
	free(text);
	free(even);
	BN_free(n);

	EVP_PKEY_free(rsa);
	EVP_PKEY_free(small);
	EVP_PKEY_free(ec);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_base64url_strict),
	    cmocka_unit_test(test_base64url_against_openssl),
	    cmocka_unit_test(test_thumbprint_matches_rfc7638_by_hand),
	    cmocka_unit_test(test_thumbprint_refuses_other_curves),
	    cmocka_unit_test(test_export_then_parse_roundtrip),
	    cmocka_unit_test(test_parse_public_refusals),
	    cmocka_unit_test(test_jwks_parse_find_and_roundtrip),
	    cmocka_unit_test(test_jwks_skips_what_is_not_for_us),
	    cmocka_unit_test(test_jwks_refusals),
	    cmocka_unit_test(test_jwks_add_keeps_public_half_only),
	    cmocka_unit_test(test_jwks_rsa_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
