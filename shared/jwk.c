/* shared/jwk.c — see jwk.h. */
#include "shared/jwk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/param_build.h>

#include "shared/keys.h"

/* Base64url characters needed for n bytes, without padding. */
#define B64URL_LEN(n) (((n) / 3) * 4 + ((n) % 3 == 0 ? 0 : (n) % 3 + 1))
#define COORD_B64_LEN B64URL_LEN(SP_KEY_COORD_LEN) /* 43 */
#define RSA_MAX_BYTES (SP_JWK_RSA_MAX_BITS / 8)
#define RSA_EXPONENT_MAX_BYTES 8

/* ---- base64url ------------------------------------------------------------------ */

/* The 6-bit value of a base64url character, or -1 for anything else (including '='). */
static int base64url_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

int sp_jwk_base64url_decode(const char *text, size_t len, uint8_t *out, size_t out_max,
			    size_t *out_len)
{
	int last = 0;

	*out_len = 0;
	if (len == 0)
		return 0;
	/* One character short of a group carries fewer than 8 bits: never valid. */
	if (len % 4 == 1)
		return SP_ERR_INVALID;
	for (size_t i = 0; i < len; i++) {
		last = base64url_value(text[i]);
		if (last < 0)
			return SP_ERR_INVALID;
	}
	/*
	 * Only the canonical form: the bits of the last character that fall past the
	 * final byte must be zero, so one byte string has exactly one encoding.
	 */
	if ((len % 4 == 2 && (last & 0x0f) != 0) || (len % 4 == 3 && (last & 0x03) != 0))
		return SP_ERR_INVALID;
	size_t need = (len / 4) * 3 + (len % 4 == 0 ? 0 : len % 4 - 1);
	if (need > out_max)
		return SP_ERR_TOO_LARGE;
	/* The text is valid now; decoding in place cannot fail (and allocates nothing). */
	uint32_t acc = 0;
	unsigned bits = 0;
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		acc = (acc << 6) | (uint32_t)base64url_value(text[i]);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (uint8_t)(acc >> bits);
			acc &= (1u << bits) - 1u;
		}
	}
	*out_len = n;
	return 0;
}

int sp_jwk_base64url_encode(const uint8_t *data, size_t len, char *out, size_t out_size)
{
	static const char alphabet[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

	if (out_size == 0)
		return SP_ERR_TOO_LARGE;
	out[0] = '\0';
	if (B64URL_LEN(len) >= out_size)
		return SP_ERR_TOO_LARGE;
	size_t n = 0;
	uint32_t acc = 0;
	unsigned bits = 0;
	for (size_t i = 0; i < len; i++) {
		acc = (acc << 8) | data[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[n++] = alphabet[(acc >> bits) & 0x3f];
		}
		acc &= (1u << bits) - 1u;
	}
	if (bits > 0)
		out[n++] = alphabet[(acc << (6 - bits)) & 0x3f];
	out[n] = '\0';
	return 0;
}

/* ---- small helpers -------------------------------------------------------------- */

/* A kid we keep: 1..SP_JWK_KID_MAX printable ASCII characters (so it is safe in logs). */
static int kid_is_valid(const char *kid)
{
	size_t n = 0;
	if (kid == NULL)
		return 0;
	for (; kid[n] != '\0'; n++)
		if (n >= SP_JWK_KID_MAX || kid[n] < 0x20 || kid[n] > 0x7e)
			return 0;
	return n > 0;
}

/* Decodes a base64url string member into out (at most out_max bytes). */
static int member_bytes(const json_t *obj, const char *name, uint8_t *out, size_t out_max,
			size_t *out_len, struct sp_diag *diag)
{
	const json_t *v = json_object_get(obj, name);
	*out_len = 0;
	if (v == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "JWK has no \"%s\"", name);
	if (!json_is_string(v))
		return sp_diag_set(diag, SP_ERR_INVALID, "JWK \"%s\" is not a string", name);
	int r = sp_jwk_base64url_decode(json_string_value(v), json_string_length(v), out, out_max,
					out_len);
	if (r < 0)
		return sp_diag_set(
		    diag, SP_ERR_INVALID,
		    "JWK \"%s\" is not canonical unpadded base64url of at most %zu bytes", name,
		    out_max);
	return 0;
}

/*
 * `use`, when present, must be "sig" and `alg`, when present, the one this key type
 * serves. Anything else means the key is not for us (SP_ERR_UNSUPPORTED); a member
 * of the wrong JSON type is malformed (SP_ERR_INVALID).
 */
static int check_use_and_alg(const json_t *jwk, const char *alg_name, struct sp_diag *diag)
{
	char shown[40];
	const json_t *use = json_object_get(jwk, "use");
	const json_t *alg = json_object_get(jwk, "alg");
	if (use != NULL) {
		if (!json_is_string(use))
			return sp_diag_set(diag, SP_ERR_INVALID, "JWK \"use\" is not a string");
		if (strcmp(json_string_value(use), "sig") != 0)
			return sp_diag_set(diag, SP_ERR_UNSUPPORTED,
					   "JWK use \"%s\" is not \"sig\"",
					   sp_diag_echo(json_string_value(use), strlen(json_string_value(use)), shown, sizeof(shown)));
	}
	if (alg != NULL) {
		if (!json_is_string(alg))
			return sp_diag_set(diag, SP_ERR_INVALID, "JWK \"alg\" is not a string");
		if (strcmp(json_string_value(alg), alg_name) != 0)
			return sp_diag_set(diag, SP_ERR_UNSUPPORTED, "JWK alg \"%s\" is not %s",
					   sp_diag_echo(json_string_value(alg), strlen(json_string_value(alg)), shown, sizeof(shown)),
					   alg_name);
	}
	return 0;
}

/* ---- thumbprint and export ------------------------------------------------------ */

/* x and y of a P-256 key as unpadded base64url. */
static int coordinates_base64url(EVP_PKEY *key, char x_b64[COORD_B64_LEN + 1],
				 char y_b64[COORD_B64_LEN + 1])
{
	uint8_t x[SP_KEY_COORD_LEN], y[SP_KEY_COORD_LEN];
	int r = sp_key_public_coordinates(key, x, y);
	if (r < 0)
		return r;
	if ((r = sp_jwk_base64url_encode(x, sizeof(x), x_b64, COORD_B64_LEN + 1)) < 0)
		return r;
	return sp_jwk_base64url_encode(y, sizeof(y), y_b64, COORD_B64_LEN + 1);
}

int sp_jwk_thumbprint(EVP_PKEY *key, char out[SP_JWK_THUMBPRINT_LEN + 1])
{
	char x_b64[COORD_B64_LEN + 1], y_b64[COORD_B64_LEN + 1];
	char canonical[128];
	uint8_t digest[32];
	unsigned int digest_len = 0;

	out[0] = '\0';
	int r = coordinates_base64url(key, x_b64, y_b64);
	if (r < 0)
		return r;
	/*
	 * RFC 7638: the required members only, in lexicographic order, no whitespace.
	 * Every value is ASCII without characters JSON would escape, so formatting the
	 * text directly gives exactly the canonical bytes.
	 */
	int n =
	    snprintf(canonical, sizeof(canonical),
		     "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x_b64, y_b64);
	if (n < 0 || (size_t)n >= sizeof(canonical))
		return SP_ERR_INTERNAL;
	if (EVP_Digest(canonical, (size_t)n, digest, &digest_len, EVP_sha256(), NULL) != 1 ||
	    digest_len != sizeof(digest))
		return SP_ERR_CRYPTO;
	return sp_jwk_base64url_encode(digest, sizeof(digest), out, SP_JWK_THUMBPRINT_LEN + 1);
}

int sp_jwk_export_public(EVP_PKEY *key, const char *kid, json_t **out)
{
	char x_b64[COORD_B64_LEN + 1], y_b64[COORD_B64_LEN + 1];

	*out = NULL;
	if (!kid_is_valid(kid))
		return SP_ERR_INVALID;
	int r = coordinates_base64url(key, x_b64, y_b64);
	if (r < 0)
		return r;
	*out = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x",
			 x_b64, "y", y_b64, "kid", kid, "alg", "ES256", "use", "sig");
	return *out != NULL ? 0 : SP_ERR_NOMEM;
}

/* ---- parsing one key ------------------------------------------------------------ */

int sp_jwk_parse_public(const json_t *jwk, EVP_PKEY **out, struct sp_diag *diag)
{
	char shown[40];
	uint8_t x[SP_KEY_COORD_LEN], y[SP_KEY_COORD_LEN];
	size_t x_len = 0, y_len = 0;

	*out = NULL;
	if (!json_is_object(jwk))
		return sp_diag_set(diag, SP_ERR_INVALID, "JWK is not a JSON object");
	const json_t *kty = json_object_get(jwk, "kty");
	if (!json_is_string(kty))
		return sp_diag_set(diag, SP_ERR_INVALID, "JWK has no \"kty\" string");
	if (strcmp(json_string_value(kty), "EC") != 0)
		return sp_diag_set(diag, SP_ERR_UNSUPPORTED, "JWK kty \"%s\" is not \"EC\"",
				   sp_diag_echo(json_string_value(kty), strlen(json_string_value(kty)), shown, sizeof(shown)));
	const json_t *crv = json_object_get(jwk, "crv");
	if (!json_is_string(crv))
		return sp_diag_set(diag, SP_ERR_INVALID, "EC JWK has no \"crv\" string");
	if (strcmp(json_string_value(crv), "P-256") != 0)
		return sp_diag_set(diag, SP_ERR_UNSUPPORTED, "EC JWK crv \"%s\" is not \"P-256\"",
				   sp_diag_echo(json_string_value(crv), strlen(json_string_value(crv)), shown, sizeof(shown)));
	int r = check_use_and_alg(jwk, "ES256", diag);
	if (r < 0)
		return r;
	/* A private key published as a public one is a leak to report, not to skip. */
	if (json_object_get(jwk, "d") != NULL)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "JWK holds a private key (\"d\") where a public key belongs");
	if ((r = member_bytes(jwk, "x", x, sizeof(x), &x_len, diag)) < 0 ||
	    (r = member_bytes(jwk, "y", y, sizeof(y), &y_len, diag)) < 0)
		return r;
	if (x_len != SP_KEY_COORD_LEN || y_len != SP_KEY_COORD_LEN)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "EC JWK coordinates must be exactly 32 bytes (x %zu, y %zu)",
				   x_len, y_len);
	r = sp_key_from_coordinates(x, y, out);
	if (r == SP_ERR_INVALID)
		return sp_diag_set(diag, r, "EC JWK point is not on the P-256 curve");
	if (r < 0)
		return sp_diag_set(diag, r, "cannot build a key from the EC JWK: %s",
				   sp_strerror(r));
	return 0;
}

/*
 * An RSA public key for RS256 from n and e (both big-endian, unsigned).
 *
 * The checks are deterministic on purpose: OpenSSL's RSA public key check runs a
 * Miller-Rabin test with random bases that may or may not stumble on a factor of a
 * malformed modulus, so the same document could be accepted once and refused the
 * next time. A bad modulus cannot make a forged signature verify; it can only make
 * the IdP's own tokens fail, so size and parity are what we insist on.
 */
static int rsa_key_from_modulus(const uint8_t *n, size_t n_len, const uint8_t *e, size_t e_len,
				EVP_PKEY **out, struct sp_diag *diag)
{
	int r = SP_ERR_CRYPTO;
	BIGNUM *bn_n = NULL, *bn_e = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;

	*out = NULL;
	if ((bn_n = BN_bin2bn(n, (int)n_len, NULL)) == NULL ||
	    (bn_e = BN_bin2bn(e, (int)e_len, NULL)) == NULL) {
		r = SP_ERR_NOMEM;
		goto out;
	}
	int bits = BN_num_bits(bn_n);
	if (bits < SP_JWK_RSA_MIN_BITS || bits > SP_JWK_RSA_MAX_BITS) {
		r = sp_diag_set(diag, SP_ERR_UNSUPPORTED, "RSA JWK modulus has %d bits, not %d..%d",
				bits, SP_JWK_RSA_MIN_BITS, SP_JWK_RSA_MAX_BITS);
		goto out;
	}
	if (!BN_is_odd(bn_n) || !BN_is_odd(bn_e) || BN_is_one(bn_e)) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "RSA JWK modulus or exponent is not valid");
		goto out;
	}
	if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) != 1 ||
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) != 1 ||
	    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL)
		goto out;
	if ((ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) != 1)
		goto out;
	if (EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "RSA JWK is not a valid public key");
		goto out;
	}
	r = 0;
out:
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn_n);
	BN_free(bn_e);
	return r;
}

/* Parses an RSA JWK for RS256 (the caller checked kty). Same conventions as the EC parser. */
static int parse_rsa_public(const json_t *jwk, EVP_PKEY **out, struct sp_diag *diag)
{
	static const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi", "oth"};
	uint8_t n[RSA_MAX_BYTES + 1], e[RSA_EXPONENT_MAX_BYTES];
	size_t n_len = 0, e_len = 0;

	*out = NULL;
	int r = check_use_and_alg(jwk, "RS256", diag);
	if (r < 0)
		return r;
	for (size_t i = 0; i < sizeof(private_members) / sizeof(private_members[0]); i++)
		if (json_object_get(jwk, private_members[i]) != NULL)
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "RSA JWK holds private key material (\"%s\")",
					   private_members[i]);
	/* One spare byte so a modulus with a (non-canonical) leading zero still fits. */
	if ((r = member_bytes(jwk, "n", n, sizeof(n), &n_len, diag)) < 0 ||
	    (r = member_bytes(jwk, "e", e, sizeof(e), &e_len, diag)) < 0)
		return r;
	if (n_len == 0 || e_len == 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "RSA JWK has an empty \"n\" or \"e\"");
	return rsa_key_from_modulus(n, n_len, e, e_len, out, diag);
}

/* ---- key sets ------------------------------------------------------------------- */

void sp_jwks_init(struct sp_jwks *set)
{
	memset(set, 0, sizeof(*set));
}

void sp_jwks_free(struct sp_jwks *set)
{
	if (set == NULL)
		return;
	for (size_t i = 0; i < set->count; i++)
		EVP_PKEY_free(set->entries[i].key);
	free(set->entries);
	memset(set, 0, sizeof(*set));
}

const struct sp_jwks_entry *sp_jwks_find(const struct sp_jwks *set, const char *kid)
{
	if (set == NULL || kid == NULL)
		return NULL;
	for (size_t i = 0; i < set->count; i++)
		if (strcmp(set->entries[i].kid, kid) == 0)
			return &set->entries[i];
	return NULL;
}

/* Adds an entry; on success the set owns `key`, on failure the caller still does. */
static int jwks_append(struct sp_jwks *set, const char *kid, enum sp_jwk_alg alg, EVP_PKEY *key)
{
	if (!kid_is_valid(kid))
		return SP_ERR_INVALID;
	if (sp_jwks_find(set, kid) != NULL)
		return SP_ERR_EXISTS;
	if (set->count >= SP_JWKS_MAX_KEYS)
		return SP_ERR_TOO_LARGE;
	if (set->count == set->capacity) {
		size_t capacity = set->capacity == 0 ? 4 : set->capacity * 2;
		if (capacity > SP_JWKS_MAX_KEYS)
			capacity = SP_JWKS_MAX_KEYS;
		struct sp_jwks_entry *grown = realloc(set->entries, capacity * sizeof(*grown));
		if (grown == NULL)
			return SP_ERR_NOMEM;
		set->entries = grown;
		set->capacity = capacity;
	}
	struct sp_jwks_entry *entry = &set->entries[set->count];
	memset(entry, 0, sizeof(*entry));
	memcpy(entry->kid, kid, strlen(kid) + 1);
	entry->alg = alg;
	entry->key = key;
	set->count++;
	return 0;
}

int sp_jwks_add_es256(struct sp_jwks *set, const char *kid, EVP_PKEY *key)
{
	uint8_t x[SP_KEY_COORD_LEN], y[SP_KEY_COORD_LEN];
	EVP_PKEY *public_only = NULL;

	if (!kid_is_valid(kid))
		return SP_ERR_INVALID;
	int r = sp_key_public_coordinates(key, x, y);
	if (r < 0)
		return r;
	/* A fresh public-only key, so a private half never sits in a verification set. */
	if ((r = sp_key_from_coordinates(x, y, &public_only)) < 0)
		return r;
	if ((r = jwks_append(set, kid, SP_JWK_ALG_ES256, public_only)) < 0)
		EVP_PKEY_free(public_only);
	return r;
}

/*
 * One element of a JWKS "keys" array. SP_ERR_UNSUPPORTED means "skip this key";
 * any other error refuses the document.
 */
static int jwks_parse_key(struct sp_jwks *set, const json_t *jwk, struct sp_diag *diag)
{
	EVP_PKEY *key = NULL;
	enum sp_jwk_alg alg = SP_JWK_ALG_NONE;
	char shown[40];
	int r;

	if (!json_is_object(jwk))
		return sp_diag_set(diag, SP_ERR_INVALID, "not a JSON object");
	const json_t *kty = json_object_get(jwk, "kty");
	if (!json_is_string(kty))
		return sp_diag_set(diag, SP_ERR_INVALID, "no \"kty\" string");
	if (strcmp(json_string_value(kty), "EC") == 0) {
		r = sp_jwk_parse_public(jwk, &key, diag);
		alg = SP_JWK_ALG_ES256;
	} else if (strcmp(json_string_value(kty), "RSA") == 0) {
		r = parse_rsa_public(jwk, &key, diag);
		alg = SP_JWK_ALG_RS256;
	} else {
		return SP_ERR_UNSUPPORTED;
	}
	if (r < 0)
		return r;
	const json_t *kid = json_object_get(jwk, "kid");
	if (kid != NULL && !json_is_string(kid)) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "\"kid\" is not a string");
		goto out;
	}
	/* A key we could never select (no kid, or one unfit for logs) is of no use: skip. */
	if (kid == NULL || !kid_is_valid(json_string_value(kid))) {
		r = SP_ERR_UNSUPPORTED;
		goto out;
	}
	r = jwks_append(set, json_string_value(kid), alg, key);
	if (r == SP_ERR_EXISTS)
		r = sp_diag_set(diag, r, "kid \"%s\" appears twice",
				sp_diag_echo(json_string_value(kid), strlen(json_string_value(kid)), shown, sizeof(shown)));
	else if (r == SP_ERR_TOO_LARGE)
		r = sp_diag_set(diag, r, "more than %d usable keys", SP_JWKS_MAX_KEYS);
	else if (r < 0)
		r = sp_diag_set(diag, r, "cannot keep key: %s", sp_strerror(r));
	if (r == 0)
		key = NULL;
out:
	EVP_PKEY_free(key);
	return r;
}

int sp_jwks_parse(const char *doc, size_t len, struct sp_jwks *out, struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	json_t *root = NULL;
	json_error_t jerr;
	struct sp_diag inner;

	sp_jwks_init(out);
	if (len == 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "JWKS document is empty");
	if (len > SP_JWKS_DOC_MAX)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "JWKS document is larger than %d bytes",
				   SP_JWKS_DOC_MAX);
	root = json_loadb(doc, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "JWKS is not valid JSON (line %d): %.120s",
				   jerr.line, jerr.text);
	const json_t *keys = json_object_get(root, "keys");
	if (!json_is_object(root) || !json_is_array(keys)) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "JWKS has no \"keys\" array");
		goto out;
	}
	if (json_array_size(keys) > SP_JWKS_MAX_LISTED) {
		r = sp_diag_set(diag, SP_ERR_TOO_LARGE, "JWKS lists more than %d keys",
				SP_JWKS_MAX_LISTED);
		goto out;
	}
	for (size_t i = 0; i < json_array_size(keys); i++) {
		inner.message[0] = '\0';
		r = jwks_parse_key(out, json_array_get(keys, i), &inner);
		if (r == SP_ERR_UNSUPPORTED)
			continue;
		if (r < 0) {
			sp_diag_set(diag, r, "JWKS keys[%zu]: %.200s", i, inner.message);
			goto out;
		}
	}
	r = 0;
out:
	if (r < 0)
		sp_jwks_free(out);
	json_decref(root);
	return r;
}

/* ---- serialising ---------------------------------------------------------------- */

static int rsa_entry_to_json(const struct sp_jwks_entry *entry, json_t **out)
{
	uint8_t n[RSA_MAX_BYTES], e[RSA_EXPONENT_MAX_BYTES];
	char n_b64[B64URL_LEN(RSA_MAX_BYTES) + 1], e_b64[B64URL_LEN(RSA_EXPONENT_MAX_BYTES) + 1];
	BIGNUM *bn_n = NULL, *bn_e = NULL;
	int r = SP_ERR_CRYPTO;

	*out = NULL;
	if (EVP_PKEY_get_bn_param(entry->key, OSSL_PKEY_PARAM_RSA_N, &bn_n) != 1 ||
	    EVP_PKEY_get_bn_param(entry->key, OSSL_PKEY_PARAM_RSA_E, &bn_e) != 1 ||
	    BN_num_bytes(bn_n) > (int)sizeof(n) || BN_num_bytes(bn_e) > (int)sizeof(e))
		goto out;
	int n_len = BN_bn2bin(bn_n, n);
	int e_len = BN_bn2bin(bn_e, e);
	if ((r = sp_jwk_base64url_encode(n, (size_t)n_len, n_b64, sizeof(n_b64))) < 0 ||
	    (r = sp_jwk_base64url_encode(e, (size_t)e_len, e_b64, sizeof(e_b64))) < 0)
		goto out;
	*out = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "RSA", "n", n_b64, "e", e_b64,
			 "kid", entry->kid, "alg", "RS256", "use", "sig");
	r = *out != NULL ? 0 : SP_ERR_NOMEM;
out:
	BN_free(bn_n);
	BN_free(bn_e);
	return r;
}

int sp_jwks_to_json(const struct sp_jwks *set, json_t **out)
{
	int r = SP_ERR_NOMEM;
	json_t *keys = json_array();
	json_t *root = NULL;

	*out = NULL;
	if (keys == NULL)
		return SP_ERR_NOMEM;
	for (size_t i = 0; i < set->count; i++) {
		json_t *jwk = NULL;
		const struct sp_jwks_entry *entry = &set->entries[i];
		if (entry->alg == SP_JWK_ALG_ES256)
			r = sp_jwk_export_public(entry->key, entry->kid, &jwk);
		else
			r = rsa_entry_to_json(entry, &jwk);
		if (r < 0)
			goto out;
		if (json_array_append_new(keys, jwk) != 0) {
			r = SP_ERR_NOMEM;
			goto out;
		}
	}
	root = json_pack("{s:O}", "keys", keys);
	if (root == NULL) {
		r = SP_ERR_NOMEM;
		goto out;
	}
	*out = root;
	r = 0;
out:
	json_decref(keys);
	return r;
}

int sp_jwks_serialize(const struct sp_jwks *set, char **out, size_t *out_len)
{
	json_t *root = NULL;

	*out = NULL;
	*out_len = 0;
	int r = sp_jwks_to_json(set, &root);
	if (r < 0)
		return r;
	*out = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (*out == NULL)
		return SP_ERR_NOMEM;
	*out_len = strlen(*out);
	return 0;
}
