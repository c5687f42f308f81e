/*
 * shared/token.h — signed tokens: ES256 compact JWS with a `kid`, verified against a
 * key set, and the JWT claim checks every Sallyport token goes through.
 *
 * The controller signs flow grants, signed resource lists and connector configs;
 * connectors and clients verify them with the controller keys they hold (struct
 * sp_jwks). The controller also verifies OpenID Connect ID tokens from the company
 * IdP, signed with ES256 or RS256.
 *
 * Verification is in two steps the caller always runs both of:
 *   1. sp_token_verify: the signature, against exactly one algorithm the caller
 *      expects. The header is inspected before any signature work; `none`, HS*,
 *      a missing alg or any algorithm other than the expected one is refused
 *      (SP_ERR_BAD_ALGORITHM), as is a `crit` header. An unknown kid is
 *      SP_ERR_NOT_FOUND, so the caller can refetch the key set once and retry.
 *   2. sp_token_check_claims: iss, aud (and azp), exp, nbf, iat, cnf.jkt and nonce
 *      against struct sp_token_expect, with the clock passed in.
 * See docs/tokens.md for the reasons behind each rule.
 *
 * Everything here is sans-I/O and never reads the clock.
 */
#ifndef SALLYPORT_SHARED_TOKEN_H
#define SALLYPORT_SHARED_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "shared/error.h"
#include "shared/jwk.h"

/* Longest compact JWS accepted by sp_token_verify or produced by signing, in bytes. */
#define SP_TOKEN_MAX_LEN 16384
/*
 * Signed documents (a client's resource list, a connector's config) carry thousands of
 * entries; they are fetched over HTTP with a body limit, never sent in headers, and use
 * the *_max forms with this bound.
 */
#define SP_TOKEN_DOCUMENT_MAX_LEN ((size_t)4 << 20)
/* Largest clock skew a caller may allow, in seconds. */
#define SP_TOKEN_MAX_SKEW_S 300
/* Most entries an `aud` array may hold. */
#define SP_TOKEN_MAX_AUDIENCES 16

/*
 * An ES256 signing key with its protected header encoded once. Made by
 * sp_token_signer_new, released by sp_token_signer_free (safe on NULL). It keeps its
 * own copy of the private key (OpenSSL clears it on release) and no reference to the
 * caller's EVP_PKEY. Use from one thread at a time (one signer per thread is cheap).
 */
struct sp_token_signer;

/* A signer for a P-256 private key, writing `kid` (a valid JWK kid) into each header. */
int sp_token_signer_new(EVP_PKEY *priv, const char *kid, struct sp_token_signer **out);
void sp_token_signer_free(struct sp_token_signer *signer);

/*
 * Signs the claims (a JSON object) as a compact JWS with the protected header
 * {"alg":"ES256","kid":...,"typ":"JWT"}. *out_jws is NUL-terminated and freed by
 * the caller with free(). The serialised claims are read back and compared with
 * `claims` before signing (jansson may lose a member when an allocation fails while
 * serialising); a difference is SP_ERR_NOMEM. A token longer than SP_TOKEN_MAX_LEN is
 * SP_ERR_TOO_LARGE: we never mint what we would refuse to verify.
 */
int sp_token_signer_sign(struct sp_token_signer *signer, const json_t *claims, char **out_jws);

/* The same with another length bound (SP_TOKEN_DOCUMENT_MAX_LEN for documents). */
int sp_token_signer_sign_max(struct sp_token_signer *signer, const json_t *claims, size_t max_len,
			     char **out_jws);

/* One-shot form of the two calls above, for code that signs rarely. */
int sp_token_sign_es256(EVP_PKEY *priv, const char *kid, const json_t *claims, char **out_jws);

/*
 * Verifies a compact JWS of `len` bytes (no NUL needed) against `keys` and, on
 * success, sets *claims_out to its payload, a JSON object the caller releases with
 * json_decref. expected_alg is "ES256" or "RS256" (anything else is
 * SP_ERR_UNSUPPORTED); the key found by kid must be of that algorithm.
 *
 * Errors: SP_ERR_TOO_LARGE (over SP_TOKEN_MAX_LEN), SP_ERR_INVALID (not three
 * non-empty base64url parts, header not a JSON object, kid missing, payload not a
 * JSON object), SP_ERR_BAD_ALGORITHM, SP_ERR_UNSUPPORTED (crit), SP_ERR_NOT_FOUND
 * (no key with that kid), SP_ERR_BAD_SIGNATURE. The claims are NOT checked here.
 */
int sp_token_verify(const char *jws, size_t len, const struct sp_jwks *keys,
		    const char *expected_alg, json_t **claims_out, struct sp_diag *diag);
/* The same with another length bound (SP_TOKEN_DOCUMENT_MAX_LEN for documents). */
int sp_token_verify_max(const char *jws, size_t len, size_t max_len, const struct sp_jwks *keys,
			const char *expected_alg, json_t **claims_out, struct sp_diag *diag);

/*
 * What the claims of one token must say. Owned by the caller (usually on the
 * stack); strings are borrowed for the duration of the call.
 */
struct sp_token_expect {
	const char *issuer;   /* required: iss must equal it */
	const char *audience; /* required: aud must equal it or, as an array, hold it */
	/*
	 * The OIDC rule for several audiences: azp must then be present and equal this
	 * (our client id). When azp is present it must equal this in any case. NULL
	 * means `audience`.
	 */
	const char *authorized_party;
	int64_t now;	    /* the caller's clock, Unix seconds */
	int64_t max_skew_s; /* 0..SP_TOKEN_MAX_SKEW_S, allowed on exp, nbf and iat */
	const char *jkt;    /* when set, cnf.jkt must equal it (key binding) */
	const char *nonce;  /* when set, nonce must equal it (OIDC login) */
	int require_exp;    /* exp must be present (every Sallyport token sets it) */
};

/*
 * Checks claims against e. Present time claims must be integers. Returns 0 or the
 * first failure: SP_ERR_ISSUER, SP_ERR_AUDIENCE, SP_ERR_EXPIRED (now > exp + skew),
 * SP_ERR_NOT_YET_VALID (nbf or iat > now + skew), SP_ERR_KEY_BINDING, or
 * SP_ERR_CLAIM for a missing or mistyped claim or a wrong nonce; the diag names the
 * claim. SP_ERR_INVALID for a bad expectation (no issuer or audience, skew out of
 * range).
 */
int sp_token_check_claims(const json_t *claims, const struct sp_token_expect *e,
			  struct sp_diag *diag);

/*
 * Copies the string member `name` ("kid", "alg") of a compact JWS's protected header into
 * out WITHOUT verifying anything: only for choosing which key or rule to verify with.
 * SP_ERR_NOT_FOUND when absent, SP_ERR_INVALID for a malformed header or a non-string,
 * SP_ERR_TOO_LARGE when it does not fit in size bytes (or holds a NUL).
 */
int sp_token_header_string(const char *jws, size_t len, const char *name, char *out, size_t size);

#endif
