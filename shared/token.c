/* shared/token.c — see token.h. */
#include "shared/token.h"

#include <stdlib.h>
#include <string.h>

#include <cjose/header.h>
#include <cjose/jws.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>

#include "shared/keys.h"

/* ES256 signatures are R || S, each exactly 32 bytes (RFC 7518 section 3.4). */
#define ES256_SIGNATURE_LEN 64
#define RSA_SIGNATURE_MAX (SP_JWK_RSA_MAX_BITS / 8)

struct sp_token_signer {
	/* Holds its own copy of the private key; cjose wipes it on release. */
	cjose_jwk_t *cjose_key;
	char kid[SP_JWK_KID_MAX + 1];
};

/* ---- helpers -------------------------------------------------------------------- */

static int is_base64url_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

/* 1 when the JSON string v is exactly s (embedded NULs and all). */
static int json_string_is(const json_t *v, const char *s)
{
	size_t n = strlen(s);
	return json_string_length(v) == n && memcmp(json_string_value(v), s, n) == 0;
}

/* The same in constant time for equal lengths: for values an attacker may probe. */
static int json_string_is_secret(const json_t *v, const char *s)
{
	size_t n = strlen(s);
	return json_string_length(v) == n && CRYPTO_memcmp(json_string_value(v), s, n) == 0;
}

static int kid_is_usable(const char *kid)
{
	size_t n = 0;
	for (; kid[n] != '\0'; n++)
		if (n >= SP_JWK_KID_MAX || kid[n] < 0x20 || kid[n] > 0x7e)
			return 0;
	return n > 0;
}

/* ---- signing -------------------------------------------------------------------- */

int sp_token_signer_new(EVP_PKEY *priv, const char *kid, struct sp_token_signer **out)
{
	int r = SP_ERR_CRYPTO;
	uint8_t d[SP_KEY_COORD_LEN], x[SP_KEY_COORD_LEN], y[SP_KEY_COORD_LEN];
	BIGNUM *bn_d = NULL;
	struct sp_token_signer *signer = NULL;

	*out = NULL;
	if (kid == NULL || !kid_is_usable(kid))
		return SP_ERR_INVALID;
	if ((r = sp_key_public_coordinates(priv, x, y)) < 0)
		return r;
	if (EVP_PKEY_get_bn_param(priv, OSSL_PKEY_PARAM_PRIV_KEY, &bn_d) != 1)
		return SP_ERR_INVALID; /* a public key cannot sign */
	r = SP_ERR_CRYPTO;
	if (BN_bn2binpad(bn_d, d, sizeof(d)) != (int)sizeof(d))
		goto out;
	if ((signer = calloc(1, sizeof(*signer))) == NULL) {
		r = SP_ERR_NOMEM;
		goto out;
	}
	cjose_jwk_ec_keyspec spec = {
	    .crv = CJOSE_JWK_EC_P_256,
	    .d = d,
	    .dlen = sizeof(d),
	    .x = x,
	    .xlen = sizeof(x),
	    .y = y,
	    .ylen = sizeof(y),
	};
	if ((signer->cjose_key = cjose_jwk_create_EC_spec(&spec, NULL)) == NULL)
		goto out;
	memcpy(signer->kid, kid, strlen(kid) + 1);
	*out = signer;
	signer = NULL;
	r = 0;
out:
	OPENSSL_cleanse(d, sizeof(d));
	BN_clear_free(bn_d);
	sp_token_signer_free(signer);
	return r;
}

void sp_token_signer_free(struct sp_token_signer *signer)
{
	if (signer == NULL)
		return;
	cjose_jwk_release(signer->cjose_key);
	free(signer);
}

int sp_token_signer_sign_max(struct sp_token_signer *signer, const json_t *claims, size_t max_len,
			     char **out_jws)
{
	int r = SP_ERR_NOMEM;
	char *payload = NULL;
	cjose_header_t *header = NULL;
	cjose_jws_t *jws = NULL;
	const char *compact = NULL;

	*out_jws = NULL;
	if (!json_is_object(claims))
		return SP_ERR_INVALID;
	if ((payload = json_dumps(claims, JSON_COMPACT)) == NULL)
		return SP_ERR_NOMEM;
	size_t payload_len = strlen(payload);
	/* base64url grows 3 bytes to 4: refuse early what could never fit. */
	if (payload_len > max_len / 4 * 3) {
		r = SP_ERR_TOO_LARGE;
		goto out;
	}
	if ((header = cjose_header_new(NULL)) == NULL ||
	    !cjose_header_set(header, CJOSE_HDR_ALG, CJOSE_HDR_ALG_ES256, NULL) ||
	    !cjose_header_set(header, CJOSE_HDR_KID, signer->kid, NULL) ||
	    !cjose_header_set(header, "typ", "JWT", NULL))
		goto out;
	jws =
	    cjose_jws_sign(signer->cjose_key, header, (const uint8_t *)payload, payload_len, NULL);
	if (jws == NULL || !cjose_jws_export(jws, &compact, NULL)) {
		r = SP_ERR_CRYPTO;
		goto out;
	}
	if (strlen(compact) > max_len) {
		r = SP_ERR_TOO_LARGE;
		goto out;
	}
	if ((*out_jws = strdup(compact)) == NULL)
		goto out;
	r = 0;
out:
	cjose_jws_release(jws);
	cjose_header_release(header);
	free(payload);
	return r;
}

int sp_token_signer_sign(struct sp_token_signer *signer, const json_t *claims, char **out_jws)
{
	return sp_token_signer_sign_max(signer, claims, SP_TOKEN_MAX_LEN, out_jws);
}

int sp_token_sign_es256(EVP_PKEY *priv, const char *kid, const json_t *claims, char **out_jws)
{
	struct sp_token_signer *signer = NULL;
	*out_jws = NULL;
	int r = sp_token_signer_new(priv, kid, &signer);
	if (r < 0)
		return r;
	r = sp_token_signer_sign(signer, claims, out_jws);
	sp_token_signer_free(signer);
	return r;
}

/* ---- verifying ------------------------------------------------------------------ */

/* Decodes one base64url part of the token and parses it as a JSON object. */
static int decode_json_object(const char *text, size_t len, json_t **out)
{
	size_t max = len / 4 * 3 + 3, n = 0;
	uint8_t *bytes = malloc(max);
	json_error_t jerr;

	*out = NULL;
	if (bytes == NULL)
		return SP_ERR_NOMEM;
	int r = sp_jwk_base64url_decode(text, len, bytes, max, &n);
	if (r == 0) {
		/* Duplicate members are refused: two parsers must never read two meanings. */
		*out = json_loadb((const char *)bytes, n, JSON_REJECT_DUPLICATES, &jerr);
		if (*out != NULL && !json_is_object(*out)) {
			json_decref(*out);
			*out = NULL;
		}
		r = *out != NULL ? 0 : SP_ERR_INVALID;
	}
	free(bytes);
	return r;
}

/*
 * The header decides which key and algorithm to use, so it is read with our own
 * strict rules before any key or signature work, and refused on the first doubt.
 */
static int check_header(const json_t *header, const struct sp_jwks *keys, const char *expected_alg,
			enum sp_jwk_alg want, const struct sp_jwks_entry **entry_out,
			struct sp_diag *diag)
{
	char shown[40];
	*entry_out = NULL;
	const json_t *alg = json_object_get(header, "alg");
	if (!json_is_string(alg))
		return sp_diag_set(diag, SP_ERR_BAD_ALGORITHM,
				   "token header has no \"alg\" string");
	if (!json_string_is(alg, expected_alg))
		return sp_diag_set(diag, SP_ERR_BAD_ALGORITHM,
				   "token algorithm \"%s\" refused; only %s is accepted here",
				   sp_diag_echo(json_string_value(alg), strlen(json_string_value(alg)), shown, sizeof(shown)),
				   expected_alg);
	if (json_object_get(header, "crit") != NULL)
		return sp_diag_set(diag, SP_ERR_UNSUPPORTED,
				   "token header has \"crit\"; no critical extension is supported");
	const json_t *kid = json_object_get(header, "kid");
	if (kid == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "token header has no \"kid\"");
	if (!json_is_string(kid) || json_string_length(kid) != strlen(json_string_value(kid)) ||
	    !kid_is_usable(json_string_value(kid)))
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "token \"kid\" is not 1..%d printable characters",
				   SP_JWK_KID_MAX);
	const struct sp_jwks_entry *entry = sp_jwks_find(keys, json_string_value(kid));
	if (entry == NULL)
		return sp_diag_set(diag, SP_ERR_NOT_FOUND, "no key with kid \"%s\"",
				   sp_diag_echo(json_string_value(kid), strlen(json_string_value(kid)), shown, sizeof(shown)));
	if (entry->alg != want)
		return sp_diag_set(diag, SP_ERR_BAD_ALGORITHM, "key \"%s\" is not an %s key",
				   entry->kid, expected_alg);
	*entry_out = entry;
	return 0;
}

/*
 * The signature must be canonical base64url of exactly the length the algorithm
 * produces. cjose splits whatever it is given, so a signature with extra bytes
 * could otherwise verify as a second spelling of the same token.
 */
static int check_signature_shape(const char *text, size_t len, const struct sp_jwks_entry *entry,
				 struct sp_diag *diag)
{
	uint8_t sig[RSA_SIGNATURE_MAX];
	size_t n = 0;
	size_t want = entry->alg == SP_JWK_ALG_ES256 ? ES256_SIGNATURE_LEN
						     : (size_t)EVP_PKEY_get_size(entry->key);
	int r = sp_jwk_base64url_decode(text, len, sig, sizeof(sig), &n);
	if (r < 0 || n != want)
		return sp_diag_set(diag, SP_ERR_BAD_SIGNATURE,
				   "token signature is not %zu bytes of canonical base64url", want);
	return 0;
}

int sp_token_verify_max(const char *jws, size_t len, size_t max_len, const struct sp_jwks *keys,
		    const char *expected_alg, json_t **claims_out, struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	enum sp_jwk_alg want;
	size_t dots[2] = {0, 0}, ndots = 0;
	json_t *header = NULL, *claims = NULL;
	const struct sp_jwks_entry *entry = NULL;
	cjose_jws_t *parsed = NULL;
	uint8_t *payload = NULL;
	size_t payload_len = 0;
	json_error_t jerr;

	*claims_out = NULL;
	if (expected_alg != NULL && strcmp(expected_alg, "ES256") == 0)
		want = SP_JWK_ALG_ES256;
	else if (expected_alg != NULL && strcmp(expected_alg, "RS256") == 0)
		want = SP_JWK_ALG_RS256;
	else
		return sp_diag_set(diag, SP_ERR_UNSUPPORTED,
				   "only ES256 and RS256 can be expected");
	if (jws == NULL || len == 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "token is empty");
	if (len > max_len)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "token is longer than %zu bytes",
				   max_len);

	/* header '.' payload '.' signature, each non-empty base64url. */
	for (size_t i = 0; i < len; i++) {
		if (jws[i] == '.') {
			if (ndots == 2)
				return sp_diag_set(diag, SP_ERR_INVALID,
						   "token has more than three parts");
			dots[ndots++] = i;
		} else if (!is_base64url_char(jws[i])) {
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "token has a character outside base64url at byte %zu",
					   i);
		}
	}
	if (ndots != 2)
		return sp_diag_set(diag, SP_ERR_INVALID, "token is not three dot-separated parts");
	const char *header_text = jws, *sig_text = jws + dots[1] + 1;
	size_t header_len = dots[0], payload_text_len = dots[1] - dots[0] - 1;
	size_t sig_len = len - dots[1] - 1;
	/* An empty signature is judged after the header, so an unsigned "alg":"none" token is
	 * refused for its algorithm, which is what a person reading the log needs to know. */
	if (header_len == 0 || payload_text_len == 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "token has an empty part");

	if ((r = decode_json_object(header_text, header_len, &header)) < 0) {
		r = sp_diag_set(diag, r, "token header is not a base64url JSON object");
		goto out;
	}
	if ((r = check_header(header, keys, expected_alg, want, &entry, diag)) < 0)
		goto out;
	if (sig_len == 0) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "token has an empty part");
		goto out;
	}
	if ((r = check_signature_shape(sig_text, sig_len, entry, diag)) < 0)
		goto out;

	/* The bytes are now known to be well formed; cjose checks the signature. */
	if ((parsed = cjose_jws_import(jws, len, NULL)) == NULL) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "token cannot be parsed as a JWS");
		goto out;
	}
	if (!cjose_jws_verify(parsed, entry->cjose_key, NULL)) {
		r = sp_diag_set(diag, SP_ERR_BAD_SIGNATURE,
				"token signature does not verify with key "
				"\"%s\"",
				entry->kid);
		goto out;
	}
	if (!cjose_jws_get_plaintext(parsed, &payload, &payload_len, NULL)) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "token payload cannot be read");
		goto out;
	}
	claims = json_loadb((const char *)payload, payload_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(claims)) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "token payload is not a JSON object");
		goto out;
	}
	*claims_out = claims;
	claims = NULL;
	r = 0;
out:
	json_decref(claims);
	cjose_jws_release(parsed);
	json_decref(header);
	return r;
}

/* ---- claims --------------------------------------------------------------------- */

/* An optional integer claim: *present says whether it was there. */
static int integer_claim(const json_t *claims, const char *name, int *present, int64_t *value,
			 struct sp_diag *diag)
{
	const json_t *v = json_object_get(claims, name);
	*present = 0;
	*value = 0;
	if (v == NULL)
		return 0;
	if (!json_is_integer(v))
		return sp_diag_set(diag, SP_ERR_CLAIM, "claim \"%s\" is not an integer", name);
	*present = 1;
	*value = (int64_t)json_integer_value(v);
	return 0;
}

/* A string claim that must be present. */
static int string_claim(const json_t *claims, const char *name, const json_t **out,
			struct sp_diag *diag)
{
	*out = json_object_get(claims, name);
	if (*out == NULL)
		return sp_diag_set(diag, SP_ERR_CLAIM, "claim \"%s\" is missing", name);
	if (!json_is_string(*out))
		return sp_diag_set(diag, SP_ERR_CLAIM, "claim \"%s\" is not a string", name);
	return 0;
}

static int check_audience(const json_t *claims, const struct sp_token_expect *e,
			  struct sp_diag *diag)
{
	const json_t *aud = json_object_get(claims, "aud");
	size_t audiences = 1;
	int found = 0;

	if (aud == NULL)
		return sp_diag_set(diag, SP_ERR_CLAIM, "claim \"aud\" is missing");
	if (json_is_string(aud)) {
		found = json_string_is(aud, e->audience);
	} else if (json_is_array(aud)) {
		audiences = json_array_size(aud);
		if (audiences > SP_TOKEN_MAX_AUDIENCES)
			return sp_diag_set(diag, SP_ERR_CLAIM,
					   "claim \"aud\" has more than %d entries",
					   SP_TOKEN_MAX_AUDIENCES);
		for (size_t i = 0; i < audiences; i++) {
			const json_t *one = json_array_get(aud, i);
			if (!json_is_string(one))
				return sp_diag_set(diag, SP_ERR_CLAIM,
						   "claim \"aud\"[%zu] is not a string", i);
			found |= json_string_is(one, e->audience);
		}
	} else {
		return sp_diag_set(diag, SP_ERR_CLAIM, "claim \"aud\" is not a string or an array");
	}
	if (!found)
		return sp_diag_set(diag, SP_ERR_AUDIENCE, "token is not addressed to \"%s\"",
				   e->audience);

	/* OpenID Connect Core 3.1.3.7: with several audiences azp names the one it is for. */
	const char *party = e->authorized_party != NULL ? e->authorized_party : e->audience;
	const json_t *azp = json_object_get(claims, "azp");
	if (azp == NULL && audiences > 1)
		return sp_diag_set(diag, SP_ERR_CLAIM,
				   "claim \"azp\" is missing although \"aud\" has several entries");
	if (azp != NULL && !json_is_string(azp))
		return sp_diag_set(diag, SP_ERR_CLAIM, "claim \"azp\" is not a string");
	if (azp != NULL && !json_string_is(azp, party))
		return sp_diag_set(diag, SP_ERR_AUDIENCE, "claim \"azp\" does not name \"%s\"",
				   party);
	return 0;
}

static int check_times(const json_t *claims, const struct sp_token_expect *e, struct sp_diag *diag)
{
	int present = 0;
	int64_t value = 0;
	const int64_t skew = e->max_skew_s;
	static const char *const not_before[] = {"nbf", "iat"};

	int r = integer_claim(claims, "exp", &present, &value, diag);
	if (r < 0)
		return r;
	if (!present && e->require_exp)
		return sp_diag_set(diag, SP_ERR_CLAIM, "claim \"exp\" is missing");
	/* now > exp + skew, written so that no sum can overflow. */
	if (present && value <= INT64_MAX - skew && e->now > value + skew)
		return sp_diag_set(diag, SP_ERR_EXPIRED,
				   "token expired at %lld (now %lld, skew %llds)", (long long)value,
				   (long long)e->now, (long long)skew);
	for (size_t i = 0; i < sizeof(not_before) / sizeof(not_before[0]); i++) {
		if ((r = integer_claim(claims, not_before[i], &present, &value, diag)) < 0)
			return r;
		/* value > now + skew, likewise without overflow (skew >= 0). */
		if (present && value >= INT64_MIN + skew && value - skew > e->now)
			return sp_diag_set(
			    diag, SP_ERR_NOT_YET_VALID,
			    "claim \"%s\" %lld is in the future (now %lld, skew %llds)",
			    not_before[i], (long long)value, (long long)e->now, (long long)skew);
	}
	return 0;
}

static int check_key_binding(const json_t *claims, const char *jkt, struct sp_diag *diag)
{
	const json_t *cnf = json_object_get(claims, "cnf");
	if (cnf == NULL)
		return sp_diag_set(diag, SP_ERR_KEY_BINDING,
				   "token is not bound to a key (no \"cnf\")");
	if (!json_is_object(cnf))
		return sp_diag_set(diag, SP_ERR_CLAIM, "claim \"cnf\" is not an object");
	const json_t *bound = json_object_get(cnf, "jkt");
	if (bound == NULL)
		return sp_diag_set(diag, SP_ERR_KEY_BINDING, "claim \"cnf\" has no \"jkt\"");
	if (!json_is_string(bound))
		return sp_diag_set(diag, SP_ERR_CLAIM, "claim \"cnf.jkt\" is not a string");
	if (!json_string_is_secret(bound, jkt))
		return sp_diag_set(diag, SP_ERR_KEY_BINDING,
				   "token is bound to another key (cnf.jkt differs)");
	return 0;
}

int sp_token_check_claims(const json_t *claims, const struct sp_token_expect *e,
			  struct sp_diag *diag)
{
	const json_t *v = NULL;
	int r;

	if (e == NULL || e->issuer == NULL || e->audience == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "token expectation lacks issuer or audience");
	if (e->max_skew_s < 0 || e->max_skew_s > SP_TOKEN_MAX_SKEW_S)
		return sp_diag_set(diag, SP_ERR_INVALID, "clock skew must be 0..%d seconds",
				   SP_TOKEN_MAX_SKEW_S);
	if (!json_is_object(claims))
		return sp_diag_set(diag, SP_ERR_CLAIM, "token claims are not a JSON object");

	if ((r = string_claim(claims, "iss", &v, diag)) < 0)
		return r;
	if (!json_string_is(v, e->issuer))
		return sp_diag_set(diag, SP_ERR_ISSUER, "token is not issued by \"%s\"", e->issuer);
	if ((r = check_audience(claims, e, diag)) < 0)
		return r;
	if ((r = check_times(claims, e, diag)) < 0)
		return r;
	if (e->jkt != NULL && (r = check_key_binding(claims, e->jkt, diag)) < 0)
		return r;
	if (e->nonce != NULL) {
		if ((r = string_claim(claims, "nonce", &v, diag)) < 0)
			return r;
		if (!json_string_is_secret(v, e->nonce))
			return sp_diag_set(diag, SP_ERR_CLAIM, "claim \"nonce\" does not match");
	}
	return 0;
}

int sp_token_verify(const char *jws, size_t len, const struct sp_jwks *keys,
		    const char *expected_alg, json_t **claims_out, struct sp_diag *diag)
{
	return sp_token_verify_max(jws, len, SP_TOKEN_MAX_LEN, keys, expected_alg, claims_out,
				   diag);
}

int sp_token_header_string(const char *jws, size_t len, const char *name, char *out, size_t size)
{
	if (size > 0)
		out[0] = '\0';
	if (jws == NULL || len > SP_TOKEN_DOCUMENT_MAX_LEN)
		return SP_ERR_INVALID;
	const char *dot = memchr(jws, '.', len);
	if (dot == NULL || dot == jws || (size_t)(dot - jws) > 4096)
		return SP_ERR_INVALID;
	json_t *header = NULL;
	int r = decode_json_object(jws, (size_t)(dot - jws), &header);
	if (r < 0)
		return r;
	const json_t *v = json_object_get(header, name);
	if (v == NULL)
		r = SP_ERR_NOT_FOUND;
	else if (!json_is_string(v))
		r = SP_ERR_INVALID;
	else if (json_string_length(v) >= size || strlen(json_string_value(v)) != json_string_length(v))
		r = SP_ERR_TOO_LARGE;
	else
		memcpy(out, json_string_value(v), json_string_length(v) + 1);
	json_decref(header);
	return r;
}
