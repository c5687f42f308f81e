/*
 * shared/jwk.h — JSON Web Keys: P-256 public keys as JWKs, their RFC 7638
 * thumbprints, and key sets (JWKS) looked up by `kid`.
 *
 * Sallyport signs with ES256 only, so every key it publishes is an EC P-256 public
 * key. A key set may also hold RSA public keys (RS256), because some company IdPs
 * sign their OpenID Connect ID tokens with RSA; those are accepted only when they
 * come from a JWKS document and are at least 2048 bits.
 *
 * Parsing is strict where it matters for security and lenient where a foreign
 * document may legitimately hold things we do not use:
 *   - a key we would use (EC P-256 or RSA) must be well formed: coordinates exactly
 *     32 bytes of canonical unpadded base64url, the point on the curve, no private
 *     member (`d`, RSA primes...) in a public document; otherwise the whole document
 *     is refused;
 *   - keys of another type or curve, keys for another algorithm, keys marked
 *     `"use":"enc"`, and keys without a usable `kid` are skipped, not fatal;
 *   - a `kid` used twice among the kept keys is refused (SP_ERR_EXISTS).
 *
 * The thumbprint is the one used for key binding (`cnf.jkt` in flow grants): SHA-256
 * over the exact JSON {"crv":"P-256","kty":"EC","x":"...","y":"..."}, encoded as
 * base64url without padding (43 characters).
 *
 * Ownership: struct sp_jwks belongs to the caller (usually inside a longer-lived
 * struct). sp_jwks_init zeroes it; sp_jwks_free releases every entry and is safe on
 * a zeroed or already-freed set. A set is read-only once built, so several threads
 * may look keys up and verify with it at once; adding needs exclusive access.
 * Replace a set by building a new one and swapping (struct copy), then freeing the
 * old one.
 */
#ifndef SALLYPORT_SHARED_JWK_H
#define SALLYPORT_SHARED_JWK_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "shared/error.h"

/* base64url (no padding) of a SHA-256 digest. */
#define SP_JWK_THUMBPRINT_LEN 43
/* Longest `kid` kept; a kid is 1..SP_JWK_KID_MAX printable ASCII characters. */
#define SP_JWK_KID_MAX 128
/* Most keys one set holds. */
#define SP_JWKS_MAX_KEYS 64
/* Most entries a JWKS document's "keys" array may list, kept or skipped. */
#define SP_JWKS_MAX_LISTED 256
/* Largest JWKS document accepted, in bytes. */
#define SP_JWKS_DOC_MAX 65536
/* RSA moduli accepted for RS256, in bits. */
#define SP_JWK_RSA_MIN_BITS 2048
#define SP_JWK_RSA_MAX_BITS 8192

/* The signature algorithm a key in a set verifies; a key verifies exactly one. */
enum sp_jwk_alg {
	SP_JWK_ALG_NONE = 0,
	SP_JWK_ALG_ES256 = 1, /* EC P-256, ECDSA with SHA-256 */
	SP_JWK_ALG_RS256 = 2, /* RSA >= 2048 bits, PKCS#1 v1.5 with SHA-256 */
};

/* One key of a set. Owned by its struct sp_jwks; never freed on its own. */
struct sp_jwks_entry {
	char kid[SP_JWK_KID_MAX + 1];
	enum sp_jwk_alg alg;
	EVP_PKEY *key;		/* the public key */
};

/* A set of public keys looked up by kid. See the ownership note above. */
struct sp_jwks {
	struct sp_jwks_entry *entries; /* heap array of `capacity` slots, `count` used */
	size_t count;
	size_t capacity;
};

/*
 * Strict base64url without padding: only A-Z a-z 0-9 - _, no '=', no whitespace, and
 * the canonical encoding only (unused trailing bits zero). Decodes `len` characters
 * into `out` (at most `out_max` bytes) and sets *out_len. SP_ERR_INVALID for any
 * other text, SP_ERR_TOO_LARGE when the result would not fit.
 */
int sp_jwk_base64url_decode(const char *text, size_t len, uint8_t *out, size_t out_max,
			    size_t *out_len);
/* Encodes into `out` (NUL-terminated, no padding); SP_ERR_TOO_LARGE when out_size is short. */
int sp_jwk_base64url_encode(const uint8_t *data, size_t len, char *out, size_t out_size);

/* The RFC 7638 thumbprint of a P-256 key (public or private), NUL-terminated. */
int sp_jwk_thumbprint(EVP_PKEY *key, char out[SP_JWK_THUMBPRINT_LEN + 1]);

/*
 * The public half of a P-256 key as a JWK object with kty, crv, x, y, kid,
 * "alg":"ES256" and "use":"sig" (never `d`). kid must be a valid kid (see
 * SP_JWK_KID_MAX). The caller releases *out with json_decref.
 */
int sp_jwk_export_public(EVP_PKEY *key, const char *kid, json_t **out);

/*
 * Parses one public JWK object into a P-256 EVP_PKEY (caller frees). kty must be "EC"
 * and crv "P-256"; `alg`, when present, must be "ES256" and `use` "sig". Another
 * kty, crv, alg or use is SP_ERR_UNSUPPORTED; a malformed key, a point off the curve
 * or a private `d` is SP_ERR_INVALID. The kid is not looked at.
 */
int sp_jwk_parse_public(const json_t *jwk, EVP_PKEY **out, struct sp_diag *diag);

/* An empty set (no allocation). */
void sp_jwks_init(struct sp_jwks *set);
/* Releases every key; the set is empty afterwards. Safe on NULL and on an empty set. */
void sp_jwks_free(struct sp_jwks *set);

/*
 * Adds a P-256 public key under kid (the set takes its own reference; the caller
 * keeps `key`). Only the public half is kept. SP_ERR_EXISTS for a kid already in
 * the set, SP_ERR_TOO_LARGE past SP_JWKS_MAX_KEYS, SP_ERR_INVALID for a bad kid,
 * SP_ERR_UNSUPPORTED for a key that is not P-256.
 */
int sp_jwks_add_es256(struct sp_jwks *set, const char *kid, EVP_PKEY *key);

/*
 * Parses a JWKS document ({"keys":[...]}, at most SP_JWKS_DOC_MAX bytes) into *out,
 * which is initialised here and left empty on failure. The rules are in the comment
 * at the top of this file. A document that parses but yields no usable key is
 * still a success with count 0 (the caller decides whether that is an error).
 */
int sp_jwks_parse(const char *doc, size_t len, struct sp_jwks *out, struct sp_diag *diag);

/* The entry for kid, or NULL. */
const struct sp_jwks_entry *sp_jwks_find(const struct sp_jwks *set, const char *kid);

/*
 * The set as a JWKS document object {"keys":[...]} (EC keys as sp_jwk_export_public
 * writes them; RSA keys with n and e). Caller releases *out with json_decref.
 */
int sp_jwks_to_json(const struct sp_jwks *set, json_t **out);
/* The same as compact JSON text; the caller frees *out with free(). */
int sp_jwks_serialize(const struct sp_jwks *set, char **out, size_t *out_len);

#endif
