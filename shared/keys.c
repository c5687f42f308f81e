/* shared/keys.c — see keys.h. */
#include "shared/keys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

/*
 * 1 for a P-256 key in named-curve form, 0 for any other key, SP_ERR_CRYPTO when an EC
 * key's curve cannot be read (OpenSSL failed, e.g. out of memory): that must not be
 * reported as "not P-256".
 */
static int p256_check(EVP_PKEY *key)
{
	char group[32];
	char encoding[32];
	size_t len = 0;
	if (key == NULL || EVP_PKEY_get_base_id(key) != EVP_PKEY_EC)
		return 0;
	if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
	                                   &len) != 1)
		return SP_ERR_CRYPTO;
	if (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)
		return 0;
	/* A key spelled with explicit curve parameters has another SPKI (and so another pin):
	 * refuse it outright rather than let two encodings of one key exist. */
	if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_EC_ENCODING, encoding,
	                                   sizeof(encoding), &len) == 1 &&
	    strcmp(encoding, OSSL_PKEY_EC_ENCODING_GROUP) != 0)
		return 0;
	return 1;
}

int sp_key_is_p256(EVP_PKEY *key)
{
	return p256_check(key) == 1;
}

int sp_key_generate(EVP_PKEY **out)
{
	*out = EVP_EC_gen("P-256");
	return *out != NULL ? 0 : SP_ERR_CRYPTO;
}

int sp_key_has_private(EVP_PKEY *key)
{
	BIGNUM *priv = NULL;
	int has = EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &priv) == 1;
	BN_clear_free(priv);
	return has;
}

int sp_key_from_pem(const char *pem, size_t len, int allow_public, EVP_PKEY **out,
                    struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	EVP_PKEY *key = NULL;
	BIO *bio = NULL;

	*out = NULL;
	if (len == 0 || len > SP_KEY_PEM_MAX || len > INT32_MAX)
		return sp_diag_set(diag, SP_ERR_INVALID, "key PEM is empty or larger than %d bytes",
		                   SP_KEY_PEM_MAX);
	bio = BIO_new_mem_buf(pem, (int)len);
	if (bio == NULL)
		return SP_ERR_NOMEM;
	key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	if (key == NULL && allow_public) {
		(void)BIO_reset(bio);
		key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	}
	if (key == NULL) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "not a PEM %skey",
		                allow_public ? "private or public " : "private ");
		goto out;
	}
	if (!sp_key_is_p256(key)) {
		r = sp_diag_set(diag, SP_ERR_UNSUPPORTED, "key is not an EC P-256 key");
		goto out;
	}
	*out = key;
	key = NULL;
	r = 0;
out:
	EVP_PKEY_free(key);
	BIO_free(bio);
	return r;
}

static int bio_take(BIO *bio, char **out, size_t *out_len)
{
	char *mem = NULL;
	long n = BIO_get_mem_data(bio, &mem);
	if (n <= 0)
		return SP_ERR_CRYPTO;
	char *copy = malloc((size_t)n + 1);
	if (copy == NULL)
		return SP_ERR_NOMEM;
	memcpy(copy, mem, (size_t)n);
	copy[n] = '\0';
	OPENSSL_cleanse(mem, (size_t)n);
	*out = copy;
	*out_len = (size_t)n;
	return 0;
}

int sp_key_private_pem(EVP_PKEY *key, char **out, size_t *out_len)
{
	int r = SP_ERR_CRYPTO;
	*out = NULL;
	*out_len = 0;
	BIO *bio = BIO_new(BIO_s_secmem());
	if (bio == NULL)
		bio = BIO_new(BIO_s_mem());
	if (bio == NULL)
		return SP_ERR_NOMEM;
	if (PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) == 1)
		r = bio_take(bio, out, out_len);
	BIO_free(bio);
	return r;
}

int sp_key_public_pem(EVP_PKEY *key, char **out, size_t *out_len)
{
	int r = SP_ERR_CRYPTO;
	*out = NULL;
	*out_len = 0;
	BIO *bio = BIO_new(BIO_s_mem());
	if (bio == NULL)
		return SP_ERR_NOMEM;
	if (PEM_write_bio_PUBKEY(bio, key) == 1)
		r = bio_take(bio, out, out_len);
	BIO_free(bio);
	return r;
}

void sp_key_free_pem(char *pem, size_t len)
{
	if (pem == NULL)
		return;
	OPENSSL_cleanse(pem, len);
	free(pem);
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int sp_key_save_private(EVP_PKEY *key, const char *path, struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	char *pem = NULL;
	size_t pem_len = 0;
	int fd = -1;

	if ((r = sp_key_private_pem(key, &pem, &pem_len)) < 0)
		return sp_diag_set(diag, r, "cannot encode private key: %s", sp_strerror(r));
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd == -1) {
		r = sp_diag_set(diag, errno == EEXIST ? SP_ERR_EXISTS : SP_ERR_IO,
		                "cannot create key file %s: %s", path, strerror(errno));
		goto out;
	}
	/* The umask may have cleared bits but can never add any; be explicit anyway. */
	if (fchmod(fd, 0600) == -1 || write_all(fd, pem, pem_len) == -1 || fsync(fd) == -1) {
		r = sp_diag_set(diag, SP_ERR_IO, "cannot write key file %s: %s", path,
		                strerror(errno));
		(void)unlink(path);
		goto out;
	}
	r = 0;
out:
	if (fd != -1)
		(void)close(fd);
	sp_key_free_pem(pem, pem_len);
	return r;
}

int sp_key_load_private(const char *path, EVP_PKEY **out, struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	char buf[SP_KEY_PEM_MAX];
	size_t len = 0;
	struct stat st;
	int fd;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd == -1) {
		if (errno == ENOENT)
			return sp_diag_set(diag, SP_ERR_NOT_FOUND, "key file %s does not exist", path);
		if (errno == ELOOP)
			return sp_diag_set(diag, SP_ERR_PERMISSION, "key file %s is a symbolic link",
			                   path);
		return sp_diag_set(diag, SP_ERR_IO, "cannot open key file %s: %s", path,
		                   strerror(errno));
	}
	if (fstat(fd, &st) == -1) {
		r = sp_diag_set(diag, SP_ERR_IO, "cannot stat key file %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = sp_diag_set(diag, SP_ERR_PERMISSION, "key file %s is not a regular file", path);
		goto out;
	}
	if ((st.st_mode & 077) != 0) {
		r = sp_diag_set(diag, SP_ERR_PERMISSION,
		                "key file %s has mode %04o; it must not be accessible to group or "
		                "others (chmod 600 %s)",
		                path, (unsigned)(st.st_mode & 07777), path);
		goto out;
	}
	if (geteuid() != 0 && st.st_uid != geteuid()) {
		r = sp_diag_set(diag, SP_ERR_PERMISSION, "key file %s is owned by uid %u, not by us",
		                path, (unsigned)st.st_uid);
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			r = sp_diag_set(diag, SP_ERR_IO, "cannot read key file %s: %s", path,
			                strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == sizeof(buf)) {
			r = sp_diag_set(diag, SP_ERR_TOO_LARGE, "key file %s is larger than %d bytes",
			                path, SP_KEY_PEM_MAX);
			goto out;
		}
	}
	r = sp_key_from_pem(buf, len, 0, out, diag);
	if (r < 0 && diag != NULL) {
		char inner[sizeof(diag->message)];
		memcpy(inner, diag->message, sizeof(inner));
		sp_diag_set(diag, r, "key file %s: %.200s", path, inner);
	}
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	(void)close(fd);
	return r;
}

int sp_key_load_or_create(const char *path, EVP_PKEY **out, int *created, struct sp_diag *diag)
{
	*created = 0;
	int r = sp_key_load_private(path, out, diag);
	if (r != SP_ERR_NOT_FOUND)
		return r;
	EVP_PKEY *key = NULL;
	if ((r = sp_key_generate(&key)) < 0)
		return sp_diag_set(diag, r, "cannot generate a key: %s", sp_strerror(r));
	if ((r = sp_key_save_private(key, path, diag)) < 0) {
		EVP_PKEY_free(key);
		return r;
	}
	*out = key;
	*created = 1;
	return 0;
}

int sp_key_spki_der(EVP_PKEY *key, uint8_t **out, size_t *out_len)
{
	*out = NULL;
	*out_len = 0;
	unsigned char *der = NULL;
	int n = i2d_PUBKEY(key, &der);
	if (n <= 0)
		return SP_ERR_CRYPTO;
	*out = der;
	*out_len = (size_t)n;
	return 0;
}

int sp_key_spki_sha256(EVP_PKEY *key, uint8_t out[SP_KEY_SPKI_DIGEST_LEN])
{
	uint8_t *der = NULL;
	size_t der_len = 0;
	unsigned int md_len = 0;
	memset(out, 0, SP_KEY_SPKI_DIGEST_LEN);
	int r = sp_key_spki_der(key, &der, &der_len);
	if (r < 0)
		return r;
	if (EVP_Digest(der, der_len, out, &md_len, EVP_sha256(), NULL) != 1)
		r = SP_ERR_CRYPTO;
	OPENSSL_free(der);
	return r;
}

int sp_key_public_coordinates(EVP_PKEY *key, uint8_t x[SP_KEY_COORD_LEN],
                              uint8_t y[SP_KEY_COORD_LEN])
{
	int r = SP_ERR_CRYPTO;
	BIGNUM *bx = NULL, *by = NULL;
	memset(x, 0, SP_KEY_COORD_LEN);
	memset(y, 0, SP_KEY_COORD_LEN);
	int p256 = p256_check(key);
	if (p256 < 0)
		return p256;
	if (p256 == 0)
		return SP_ERR_UNSUPPORTED;
	if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &bx) != 1 ||
	    EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &by) != 1)
		goto out;
	if (BN_bn2binpad(bx, x, SP_KEY_COORD_LEN) != SP_KEY_COORD_LEN ||
	    BN_bn2binpad(by, y, SP_KEY_COORD_LEN) != SP_KEY_COORD_LEN)
		goto out;
	r = 0;
out:
	BN_free(bx);
	BN_free(by);
	return r;
}

/*
 * What a refusal by OpenSSL means: SP_ERR_NOMEM when its error queue holds an allocation
 * failure (OpenSSL cannot otherwise tell "out of memory" from "this point is not on the
 * curve"), else `refusal`. Empties the queue.
 */
static int openssl_refusal(int refusal)
{
	int nomem = 0;
	unsigned long e;
	while ((e = ERR_get_error()) != 0)
		if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE)
			nomem = 1;
	return nomem ? SP_ERR_NOMEM : refusal;
}

int sp_key_from_coordinates(const uint8_t x[SP_KEY_COORD_LEN], const uint8_t y[SP_KEY_COORD_LEN],
                            EVP_PKEY **out)
{
	int r = SP_ERR_CRYPTO;
	uint8_t point[1 + 2 * SP_KEY_COORD_LEN];
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY_CTX *check = NULL;

	*out = NULL;
	point[0] = 0x04; /* uncompressed */
	memcpy(point + 1, x, SP_KEY_COORD_LEN);
	memcpy(point + 1 + SP_KEY_COORD_LEN, y, SP_KEY_COORD_LEN);
	if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
	    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) != 1 ||
	    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)) != 1 ||
	    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL)
		goto out;
	if ((ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) != 1) 
		goto out;
	if (EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1) {
		r = openssl_refusal(SP_ERR_INVALID);
		goto out;
	}
	/* fromdata decodes the point; make sure it is on the curve before anyone verifies with it. */
	if ((check = EVP_PKEY_CTX_new_from_pkey(NULL, *out, NULL)) == NULL ||
	    EVP_PKEY_public_check(check) != 1) {
		r = openssl_refusal(check == NULL ? SP_ERR_NOMEM : SP_ERR_INVALID);
		EVP_PKEY_free(*out);
		*out = NULL;
		goto out;
	}
	r = 0;
out:
	EVP_PKEY_CTX_free(check);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	return r;
}
