/*
 * shared/keys.h — P-256 key pairs: generate, save, load, digest.
 *
 * Every identity in Sallyport (a device, a connector, a controller signing key) is a
 * NIST P-256 key held as an OpenSSL EVP_PKEY. Private keys are stored as unencrypted
 * PKCS#8 PEM in files created with mode 0600; a key file readable or writable by
 * group or others is refused, as is anything that is not a regular file.
 *
 * Parsing (sp_key_from_pem) is separate from file access (sp_key_load_private), so
 * the parser can be tested and fuzzed on bytes alone.
 *
 * Ownership: every EVP_PKEY returned through an out-parameter belongs to the caller,
 * who frees it with EVP_PKEY_free. Thread-safe as OpenSSL is.
 */
#ifndef SALLYPORT_SHARED_KEYS_H
#define SALLYPORT_SHARED_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "shared/error.h"

#define SP_KEY_SPKI_DIGEST_LEN 32
#define SP_KEY_COORD_LEN 32
/* Largest PEM we accept from a file; a P-256 PKCS#8 PEM is about 240 bytes. */
#define SP_KEY_PEM_MAX 16384

/* A fresh P-256 key pair. */
int sp_key_generate(EVP_PKEY **out);

/*
 * Parses a PEM private key (PKCS#8 or SEC1) or, when allow_public is set, a public
 * SubjectPublicKeyInfo PEM. Anything but a P-256 EC key is SP_ERR_UNSUPPORTED.
 */
int sp_key_from_pem(const char *pem, size_t len, int allow_public, EVP_PKEY **out,
                    struct sp_diag *diag);

/* PKCS#8 PEM of the private key into *out (caller frees with sp_key_free_pem). */
int sp_key_private_pem(EVP_PKEY *key, char **out, size_t *out_len);
/* SubjectPublicKeyInfo PEM of the public half (caller frees with free). */
int sp_key_public_pem(EVP_PKEY *key, char **out, size_t *out_len);
/* Wipes and frees a PEM returned by sp_key_private_pem. Safe on NULL. */
void sp_key_free_pem(char *pem, size_t len);

/*
 * Writes the private key to `path`, created with O_EXCL and mode 0600, flushed with
 * fsync. An existing file is SP_ERR_EXISTS: keys are never silently replaced.
 */
int sp_key_save_private(EVP_PKEY *key, const char *path, struct sp_diag *diag);
/*
 * Reads a private key file. Refuses (SP_ERR_PERMISSION) a file with any group or
 * other permission bit, a file not owned by the caller's effective uid (root may
 * read any), a symlink or a non-regular file.
 */
int sp_key_load_private(const char *path, EVP_PKEY **out, struct sp_diag *diag);
/* Loads `path` or, when it does not exist, generates and saves a new key there. */
int sp_key_load_or_create(const char *path, EVP_PKEY **out, int *created, struct sp_diag *diag);

/* DER SubjectPublicKeyInfo of the public half; caller frees *out with OPENSSL_free. */
int sp_key_spki_der(EVP_PKEY *key, uint8_t **out, size_t *out_len);
/* SHA-256 of the DER SubjectPublicKeyInfo: the pin used for connectors and devices. */
int sp_key_spki_sha256(EVP_PKEY *key, uint8_t out[SP_KEY_SPKI_DIGEST_LEN]);
/* The affine coordinates, each left-padded to 32 bytes (for JWKs). */
int sp_key_public_coordinates(EVP_PKEY *key, uint8_t x[SP_KEY_COORD_LEN],
                              uint8_t y[SP_KEY_COORD_LEN]);
/* A public-only P-256 key from affine coordinates; points not on the curve are refused. */
int sp_key_from_coordinates(const uint8_t x[SP_KEY_COORD_LEN], const uint8_t y[SP_KEY_COORD_LEN],
                            EVP_PKEY **out);
/* 1 for an EC P-256 key in named-curve form (explicit curve parameters are refused). */
int sp_key_is_p256(EVP_PKEY *key);
/* 1 when the key holds a private half. */
int sp_key_has_private(EVP_PKEY *key);

#endif
