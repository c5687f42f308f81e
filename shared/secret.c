/* shared/secret.c — see secret.h. */
#include "shared/secret.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>


#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "shared/error.h"
#include "shared/jwk.h"

#define SECRET_RANDOM_BYTES 32
#define SECRET_ENCODED_LEN 43 /* base64url of 32 bytes without padding */

static int kind_is_valid(const char *kind)
{
	size_t n = strlen(kind);
	if (n == 0 || n > SP_SECRET_KIND_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (kind[i] < 'a' || kind[i] > 'z')
			return 0;
	return 1;
}

int sp_secret_new(const char *kind, char *out, size_t out_size)
{
	uint8_t raw[SECRET_RANDOM_BYTES];
	if (out_size > 0)
		out[0] = '\0';
	if (!kind_is_valid(kind) || out_size < SP_SECRET_TEXT_MAX)
		return SP_ERR_INVALID;
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return SP_ERR_CRYPTO;
	char encoded[SECRET_ENCODED_LEN + 1];
	int r = sp_jwk_base64url_encode(raw, sizeof(raw), encoded, sizeof(encoded));
	OPENSSL_cleanse(raw, sizeof(raw));
	if (r < 0 || strlen(encoded) != SECRET_ENCODED_LEN) {
		OPENSSL_cleanse(encoded, sizeof(encoded));
		return r < 0 ? r : SP_ERR_INTERNAL;
	}
	size_t k = strlen(kind);
	memcpy(out, kind, k);
	out[k] = '_';
	memcpy(out + k + 1, encoded, SECRET_ENCODED_LEN);
	out[k + 1 + SECRET_ENCODED_LEN] = '\0';
	OPENSSL_cleanse(encoded, sizeof(encoded));
	return 0;
}

int sp_secret_check_format(const char *kind, const char *text, size_t len)
{
	size_t k = strlen(kind);
	if (text == NULL || len != k + 1 + SECRET_ENCODED_LEN || memcmp(text, kind, k) != 0 ||
	    text[k] != '_')
		return SP_ERR_INVALID;
	for (size_t i = k + 1; i < len; i++) {
		char c = text[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return SP_ERR_INVALID;
	}
	return 0;
}

int sp_secret_hash(const char *text, size_t len, char out[SP_SECRET_HASH_HEX])
{
	uint8_t md[32];
	unsigned int md_len = 0;
	out[0] = '\0';
	if (EVP_Digest(text, len, md, &md_len, EVP_sha256(), NULL) != 1 || md_len != sizeof(md))
		return SP_ERR_CRYPTO;
	sp_hex_encode(md, sizeof(md), out);
	return 0;
}

int sp_secret_hash_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la != SP_SECRET_HASH_HEX - 1 || lb != SP_SECRET_HASH_HEX - 1)
		return 0;
	return CRYPTO_memcmp(a, b, la) == 0;
}

void sp_hex_encode(const uint8_t *bytes, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 0x0f];
	}
	out[2 * n] = '\0';
}

int sp_random_hex(size_t n, char *out, size_t out_size)
{
	uint8_t raw[64];
	if (out_size > 0)
		out[0] = '\0';
	if (n == 0 || n > sizeof(raw) || out_size < 2 * n + 1)
		return SP_ERR_INVALID;
	if (RAND_bytes(raw, (int)n) != 1)
		return SP_ERR_CRYPTO;
	sp_hex_encode(raw, n, out);
	OPENSSL_cleanse(raw, n);
	return 0;
}
