/* Unit tests for shared/keys.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/pem.h>

#include "shared/keys.h"

static char tmpdir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/sp-keys-XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void path_in_tmp(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", tmpdir, name);
}

static void test_save_load_roundtrip_same_pin(void **state)
{
	(void)state;
	char path[128];
	path_in_tmp(path, sizeof(path), "device.key");
	EVP_PKEY *key = NULL, *loaded = NULL;
	assert_int_equal(sp_key_generate(&key), 0);
	assert_true(sp_key_has_private(key));
	assert_int_equal(sp_key_save_private(key, path, NULL), 0);

	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);

	struct sp_diag d;
	assert_int_equal(sp_key_load_private(path, &loaded, &d), 0);
	uint8_t pin1[32], pin2[32];
	assert_int_equal(sp_key_spki_sha256(key, pin1), 0);
	assert_int_equal(sp_key_spki_sha256(loaded, pin2), 0);
	assert_memory_equal(pin1, pin2, 32);

	/* Never overwritten. */
	assert_int_equal(sp_key_save_private(key, path, &d), SP_ERR_EXISTS);
	assert_non_null(strstr(d.message, path));
	EVP_PKEY_free(key);
	EVP_PKEY_free(loaded);
}

static void test_loose_mode_is_refused_with_reason(void **state)
{
	(void)state;
	char path[128];
	path_in_tmp(path, sizeof(path), "loose.key");
	EVP_PKEY *key = NULL, *loaded = NULL;
	assert_int_equal(sp_key_generate(&key), 0);
	assert_int_equal(sp_key_save_private(key, path, NULL), 0);
	assert_int_equal(chmod(path, 0640), 0);
	struct sp_diag d;
	assert_int_equal(sp_key_load_private(path, &loaded, &d), SP_ERR_PERMISSION);
	assert_null(loaded);
	assert_non_null(strstr(d.message, "0640"));
	assert_non_null(strstr(d.message, "chmod 600"));
	EVP_PKEY_free(key);
}

static void test_symlink_and_directory_are_refused(void **state)
{
	(void)state;
	char target[128], link[128];
	path_in_tmp(target, sizeof(target), "real.key");
	path_in_tmp(link, sizeof(link), "link.key");
	EVP_PKEY *key = NULL, *loaded = NULL;
	assert_int_equal(sp_key_generate(&key), 0);
	assert_int_equal(sp_key_save_private(key, target, NULL), 0);
	assert_int_equal(symlink(target, link), 0);
	assert_int_equal(sp_key_load_private(link, &loaded, NULL), SP_ERR_PERMISSION);
	assert_int_equal(sp_key_load_private(tmpdir, &loaded, NULL), SP_ERR_PERMISSION);
	/* Creating through a symlink is refused too (O_NOFOLLOW / O_EXCL). */
	assert_true(sp_key_save_private(key, link, NULL) < 0);
	EVP_PKEY_free(key);
}

static void test_missing_file_and_load_or_create(void **state)
{
	(void)state;
	char path[128];
	path_in_tmp(path, sizeof(path), "new.key");
	EVP_PKEY *key = NULL, *again = NULL;
	struct sp_diag d;
	assert_int_equal(sp_key_load_private(path, &key, &d), SP_ERR_NOT_FOUND);
	int created = 0;
	assert_int_equal(sp_key_load_or_create(path, &key, &created, &d), 0);
	assert_int_equal(created, 1);
	assert_int_equal(sp_key_load_or_create(path, &again, &created, &d), 0);
	assert_int_equal(created, 0);
	uint8_t a[32], b[32];
	sp_key_spki_sha256(key, a);
	sp_key_spki_sha256(again, b);
	assert_memory_equal(a, b, 32);
	EVP_PKEY_free(key);
	EVP_PKEY_free(again);
}

static void test_garbage_and_wrong_curve_pem(void **state)
{
	(void)state;
	EVP_PKEY *key = NULL;
	struct sp_diag d;
	const char junk[] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
	assert_int_equal(sp_key_from_pem(junk, sizeof(junk) - 1, 1, &key, &d), SP_ERR_INVALID);
	assert_null(key);
	assert_int_equal(sp_key_from_pem("", 0, 0, &key, &d), SP_ERR_INVALID);

	EVP_PKEY *p384 = EVP_EC_gen("P-384");
	assert_non_null(p384);
	BIO *bio = BIO_new(BIO_s_mem());
	PEM_write_bio_PrivateKey(bio, p384, NULL, NULL, 0, NULL, NULL);
	char *mem = NULL;
	long n = BIO_get_mem_data(bio, &mem);
	assert_int_equal(sp_key_from_pem(mem, (size_t)n, 0, &key, &d), SP_ERR_UNSUPPORTED);
	assert_non_null(strstr(d.message, "P-256"));
	BIO_free(bio);
	EVP_PKEY_free(p384);
}

static void test_public_pem_only_when_allowed(void **state)
{
	(void)state;
	EVP_PKEY *key = NULL, *pub = NULL;
	assert_int_equal(sp_key_generate(&key), 0);
	char *pem = NULL;
	size_t len = 0;
	assert_int_equal(sp_key_public_pem(key, &pem, &len), 0);
	assert_int_equal(sp_key_from_pem(pem, len, 0, &pub, NULL), SP_ERR_INVALID);
	assert_int_equal(sp_key_from_pem(pem, len, 1, &pub, NULL), 0);
	assert_false(sp_key_has_private(pub));
	free(pem);
	char *priv = NULL;
	assert_int_equal(sp_key_private_pem(key, &priv, &len), 0);
	assert_non_null(strstr(priv, "PRIVATE KEY"));
	sp_key_free_pem(priv, len);
	EVP_PKEY_free(pub);
	EVP_PKEY_free(key);
}

static void test_coordinates_roundtrip_and_off_curve(void **state)
{
	(void)state;
	EVP_PKEY *key = NULL, *pub = NULL;
	uint8_t x[32], y[32];
	assert_int_equal(sp_key_generate(&key), 0);
	assert_int_equal(sp_key_public_coordinates(key, x, y), 0);
	assert_int_equal(sp_key_from_coordinates(x, y, &pub), 0);
	uint8_t a[32], b[32];
	sp_key_spki_sha256(key, a);
	sp_key_spki_sha256(pub, b);
	assert_memory_equal(a, b, 32);
	EVP_PKEY_free(pub);
	pub = NULL;
	y[31] ^= 1; /* no longer on the curve */
	assert_int_equal(sp_key_from_coordinates(x, y, &pub), SP_ERR_INVALID);
	assert_null(pub);
	EVP_PKEY_free(key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_save_load_roundtrip_same_pin),
		cmocka_unit_test(test_loose_mode_is_refused_with_reason),
		cmocka_unit_test(test_symlink_and_directory_are_refused),
		cmocka_unit_test(test_missing_file_and_load_or_create),
		cmocka_unit_test(test_garbage_and_wrong_curve_pem),
		cmocka_unit_test(test_public_pem_only_when_allowed),
		cmocka_unit_test(test_coordinates_roundtrip_and_off_curve),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
