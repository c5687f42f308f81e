/*
 * shared/secret.h — bearer secrets: API keys, enrollment tokens, refresh tokens,
 * session cookies.
 *
 * A secret is shown to its holder once, in the form "<kind>_<43 base64url chars>"
 * (256 random bits; the kind prefix such as "spk" or "spe" tells a person what it is and
 * lets secret scanners find leaked ones). The controller stores only its SHA-256 in hex
 * and finds a presented secret by hashing it; equality of hashes is tested in constant
 * time. Nothing here logs or keeps a secret.
 */
#ifndef SALLYPORT_SHARED_SECRET_H
#define SALLYPORT_SHARED_SECRET_H

#include <stddef.h>
#include <stdint.h>

#define SP_SECRET_KIND_MAX 8
/* kind + '_' + 43 + NUL */
#define SP_SECRET_TEXT_MAX (SP_SECRET_KIND_MAX + 1 + 43 + 1)
#define SP_SECRET_HASH_HEX 65

/*
 * Writes a new secret "<kind>_<random>" into out (size >= SP_SECRET_TEXT_MAX).
 * kind is 1..8 lower-case letters. SP_ERR_INVALID for a bad kind, SP_ERR_CRYPTO when the
 * random generator fails.
 */
int sp_secret_new(const char *kind, char *out, size_t out_size);

/*
 * Checks the shape of a presented secret without knowing its value: the expected kind,
 * the underscore and 43 base64url characters. SP_ERR_INVALID otherwise.
 */
int sp_secret_check_format(const char *kind, const char *text, size_t len);

/* SHA-256 of the text as 64 lower-case hex digits + NUL. */
int sp_secret_hash(const char *text, size_t len, char out[SP_SECRET_HASH_HEX]);

/* Constant-time equality of two NUL-terminated hex hashes. 1 when equal. */
int sp_secret_hash_equal(const char *a, const char *b);

/* n bytes as 2n lower-case hex characters + NUL into out (room for 2n + 1). */
void sp_hex_encode(const uint8_t *bytes, size_t n, char *out);

/* n random bytes as 2n lower-case hex characters + NUL (ids, nonces). out_size >= 2n+1. */
int sp_random_hex(size_t n, char *out, size_t out_size);

#endif
