/* shared/token.c — see token.h. */
#include "shared/token.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>

#include "shared/keys.h"

/* ES256 signatures are R || S, each exactly 32 bytes (RFC 7518 section 3.4). */
#define ES256_SIGNATURE_LEN 64
#define RSA_SIGNATURE_MAX (SP_JWK_RSA_MAX_BITS / 8)

/* {"alg":"ES256","kid":"<kid, each '"' and '\\' escaped>","typ":"JWT"} */
#define HEADER_JSON_MAX (sizeof("{\"alg\":\"ES256\",\"kid\":\"\",\"typ\":\"JWT\"}") + 2 * SP_JWK_KID_MAX)
#define HEADER_B64_MAX (HEADER_JSON_MAX / 3 * 4 + 8)
#define ES256_SIGNATURE_B64_LEN 86

struct sp_token_signer {
	/* Its own copy of the private key (OpenSSL clears it when freed). */
	EVP_PKEY *key;
	/* base64url of the protected header, the same for every token of this signer. */
	char header_b64[HEADER_B64_MAX];
	size_t header_b64_len;
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


/*
 * The header is fixed per signer, so it is written once, by hand: no JSON library runs
 * between the caller's kid and the signed bytes. Signing uses OpenSSL directly.
 */
static int header_b64_for(const char *kid, char out[HEADER_B64_MAX])
{
	char json[HEADER_JSON_MAX];
	size_t n = 0;
	const char *head = "{\"alg\":\"ES256\",\"kid\":\"";
	const char *tail = "\",\"typ\":\"JWT\"}";
	memcpy(json, head, strlen(head));
	n = strlen(head);
	for (const char *c = kid; *c != '\0'; c++) {
		if (*c == '"' || *c == '\\')
			json[n++] = '\\';
		json[n++] = *c;
	}
	memcpy(json + n, tail, strlen(tail));
	n += strlen(tail);
	return sp_jwk_base64url_encode((const uint8_t *)json, n, out, HEADER_B64_MAX);
}

int sp_token_signer_new(EVP_PKEY *priv, const char *kid, struct sp_token_signer **out)
{
	int r = SP_ERR_CRYPTO;
	BIGNUM *bn_d = NULL;
	struct sp_token_signer *signer = NULL;

	*out = NULL;
	if (kid == NULL || !kid_is_usable(kid))
		return SP_ERR_INVALID;
	if (priv == NULL)
		return SP_ERR_INVALID;
	/* SP_ERR_UNSUPPORTED for another curve; SP_ERR_CRYPTO when OpenSSL fails. */
	uint8_t x[SP_KEY_COORD_LEN], y[SP_KEY_COORD_LEN];
	if ((r = sp_key_public_coordinates(priv, x, y)) < 0)
		return r;
	r = SP_ERR_CRYPTO;
	if (EVP_PKEY_get_bn_param(priv, OSSL_PKEY_PARAM_PRIV_KEY, &bn_d) != 1) {
		/* A public key cannot sign; an allocation failure inside OpenSSL looks alike,
		 * so only a key that has no private part is called invalid. */
		r = sp_key_has_private(priv) ? SP_ERR_CRYPTO : SP_ERR_INVALID;
		goto out;
	}
	if ((signer = calloc(1, sizeof(*signer))) == NULL) {
		r = SP_ERR_NOMEM;
		goto out;
	}
	if ((signer->key = EVP_PKEY_dup(priv)) == NULL)
		goto out;
	if ((r = header_b64_for(kid, signer->header_b64)) < 0)
		goto out;
	signer->header_b64_len = strlen(signer->header_b64);
	*out = signer;
	signer = NULL;
	r = 0;
out:
	BN_clear_free(bn_d);
	sp_token_signer_free(signer);
	return r;
}

void sp_token_signer_free(struct sp_token_signer *signer)
{
	if (signer == NULL)
		return;
	EVP_PKEY_free(signer->key);
	free(signer);
}

/* ES256 over input: R || S as 86 base64url characters into out (NUL-terminated). */
static int es256_sign_b64(EVP_PKEY *key, const char *input, size_t input_len,
			  char out[ES256_SIGNATURE_B64_LEN + 1])
{
	int r = SP_ERR_CRYPTO;
	EVP_MD_CTX *ctx = NULL;
	unsigned char der[80];
	size_t der_len = sizeof(der);
	ECDSA_SIG *sig = NULL;
	uint8_t raw[ES256_SIGNATURE_LEN];

	if ((ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSign(ctx, der, &der_len, (const unsigned char *)input, input_len) != 1)
		goto out;
	const unsigned char *p = der;
	if ((sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len)) == NULL)
		goto out;
	const BIGNUM *br = NULL, *bs = NULL;
	ECDSA_SIG_get0(sig, &br, &bs);
	if (BN_bn2binpad(br, raw, ES256_SIGNATURE_LEN / 2) != ES256_SIGNATURE_LEN / 2 ||
	    BN_bn2binpad(bs, raw + ES256_SIGNATURE_LEN / 2, ES256_SIGNATURE_LEN / 2) !=
		ES256_SIGNATURE_LEN / 2)
		goto out;
	r = sp_jwk_base64url_encode(raw, sizeof(raw), out, ES256_SIGNATURE_B64_LEN + 1);
out:
	ECDSA_SIG_free(sig);
	EVP_MD_CTX_free(ctx);
	return r;
}

int sp_token_signer_sign_max(struct sp_token_signer *signer, const json_t *claims, size_t max_len,
			     char **out_jws)
{
	int r = SP_ERR_NOMEM;
	char *payload = NULL;
	char *jws = NULL;
	json_t *back = NULL;
	json_error_t jerr;

	*out_jws = NULL;
	if (signer == NULL || !json_is_object(claims))
		return SP_ERR_INVALID;
	if ((payload = json_dumps(claims, JSON_COMPACT)) == NULL)
		return SP_ERR_NOMEM;
	size_t payload_len = strlen(payload);
	/* base64url grows 3 bytes to 4: refuse early what could never fit. */
	if (payload_len > max_len / 4 * 3) {
		r = SP_ERR_TOO_LARGE;
		goto out;
	}
	/*
	 * jansson can lose a member or a key while serialising when an allocation fails and
	 * still return text, so the text is read back and compared before it is signed: we
	 * never sign what is not exactly the claims.
	 */
	back = json_loadb(payload, payload_len, JSON_ALLOW_NUL, &jerr);
	if (back == NULL || !json_equal(back, claims))
		goto out; /* SP_ERR_NOMEM */
	size_t payload_b64_len = (payload_len + 2) / 3 * 4;
	size_t total = signer->header_b64_len + 1 + payload_b64_len + 1 + ES256_SIGNATURE_B64_LEN;
	if (total > max_len) {
		r = SP_ERR_TOO_LARGE;
		goto out;
	}
	if ((jws = malloc(total + 1)) == NULL)
		goto out;
	memcpy(jws, signer->header_b64, signer->header_b64_len);
	size_t n = signer->header_b64_len;
	jws[n++] = '.';
	if ((r = sp_jwk_base64url_encode((const uint8_t *)payload, payload_len, jws + n,
					 total + 1 - n)) < 0)
		goto out;
	n += strlen(jws + n);
	if ((r = es256_sign_b64(signer->key, jws, n, jws + n + 1)) < 0)
		goto out;
	jws[n] = '.';
	*out_jws = jws;
	jws = NULL;
	r = 0;
out:
	json_decref(back);
	free(jws);
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
 * produces, so a signature with extra bytes can never verify as a second spelling of
 * the same token. Decodes it into sig (RSA_SIGNATURE_MAX bytes) and sets *sig_len.
 */
static int decode_signature(const char *text, size_t len, const struct sp_jwks_entry *entry,
			    uint8_t *sig, size_t *sig_len, struct sp_diag *diag)
{
	size_t n = 0;
	size_t want = entry->alg == SP_JWK_ALG_ES256 ? ES256_SIGNATURE_LEN
						     : (size_t)EVP_PKEY_get_size(entry->key);
	*sig_len = 0;
	int r = sp_jwk_base64url_decode(text, len, sig, RSA_SIGNATURE_MAX, &n);
	if (r < 0 || n != want)
		return sp_diag_set(diag, SP_ERR_BAD_SIGNATURE,
				   "token signature is not %zu bytes of canonical base64url", want);
	*sig_len = n;
	return 0;
}

/*
 * Checks the signature over the signing input (header '.' payload, as sent) with
 * OpenSSL directly. ES256 signatures are R || S and are re-encoded as the DER
 * ECDSA-Sig-Value OpenSSL verifies; RS256 is PKCS#1 v1.5 with SHA-256. Returns 0,
 * SP_ERR_BAD_SIGNATURE, or SP_ERR_CRYPTO when OpenSSL could not do the work.
 */
static int verify_signature(const struct sp_jwks_entry *entry, const char *input,
			    size_t input_len, const uint8_t *sig, size_t sig_len)
{
	int r = SP_ERR_CRYPTO;
	EVP_MD_CTX *ctx = NULL;
	ECDSA_SIG *ecdsa = NULL;
	BIGNUM *br = NULL, *bs = NULL;
	unsigned char *der = NULL;
	const unsigned char *to_verify = sig;
	size_t to_verify_len = sig_len;

	if (entry->alg == SP_JWK_ALG_ES256) {
		if ((ecdsa = ECDSA_SIG_new()) == NULL ||
		    (br = BN_bin2bn(sig, ES256_SIGNATURE_LEN / 2, NULL)) == NULL ||
		    (bs = BN_bin2bn(sig + ES256_SIGNATURE_LEN / 2, ES256_SIGNATURE_LEN / 2,
				    NULL)) == NULL ||
		    ECDSA_SIG_set0(ecdsa, br, bs) != 1)
			goto out;
		br = bs = NULL; /* owned by ecdsa now */
		int der_len = i2d_ECDSA_SIG(ecdsa, &der);
		if (der_len <= 0)
			goto out;
		to_verify = der;
		to_verify_len = (size_t)der_len;
	}
	if ((ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, entry->key) != 1)
		goto out;
	int v = EVP_DigestVerify(ctx, to_verify, to_verify_len, (const unsigned char *)input,
				 input_len);
	r = v == 1 ? 0 : v == 0 ? SP_ERR_BAD_SIGNATURE : SP_ERR_CRYPTO;
	if (r < 0) {
		/* OpenSSL may answer "does not verify" when it only ran out of memory. */
		unsigned long e;
		while ((e = ERR_get_error()) != 0)
			if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE)
				r = SP_ERR_NOMEM;
	}
out:
	EVP_MD_CTX_free(ctx);
	OPENSSL_free(der);
	ECDSA_SIG_free(ecdsa);
	BN_free(br);
	BN_free(bs);
	return r;
}

int sp_token_verify_max(const char *jws, size_t len, size_t max_len, const struct sp_jwks *keys,
		    const char *expected_alg, json_t **claims_out, struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	enum sp_jwk_alg want;
	size_t dots[2] = {0, 0}, ndots = 0;
	json_t *header = NULL, *claims = NULL;
	const struct sp_jwks_entry *entry = NULL;
	uint8_t sig[RSA_SIGNATURE_MAX];
	size_t sig_bytes = 0;

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
	if ((r = decode_signature(sig_text, sig_len, entry, sig, &sig_bytes, diag)) < 0)
		goto out;

	/* The bytes are now known to be well formed; OpenSSL checks the signature. */
	r = verify_signature(entry, jws, dots[1], sig, sig_bytes);
	if (r == SP_ERR_BAD_SIGNATURE) {
		r = sp_diag_set(diag, r, "token signature does not verify with key \"%s\"",
				entry->kid);
		goto out;
	}
	if (r < 0) {
		r = sp_diag_set(diag, r, "token signature could not be checked");
		goto out;
	}
	if ((r = decode_json_object(jws + dots[0] + 1, payload_text_len, &claims)) < 0) {
		r = sp_diag_set(diag, r, "token payload is not a base64url JSON object");
		goto out;
	}
	*claims_out = claims;
	claims = NULL;
	r = 0;
out:
	json_decref(claims);
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
