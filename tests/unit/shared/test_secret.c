/* Unit tests for shared/secret.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "shared/error.h"
#include "shared/secret.h"

static void test_new_secret_shape_and_uniqueness(void **state)
{
	(void)state;
	char a[SP_SECRET_TEXT_MAX], b[SP_SECRET_TEXT_MAX];
	assert_int_equal(sp_secret_new("spk", a, sizeof(a)), 0);
	assert_int_equal(sp_secret_new("spk", b, sizeof(b)), 0);
	assert_int_equal(strlen(a), 3 + 1 + 43);
	assert_memory_equal(a, "spk_", 4);
	assert_string_not_equal(a, b);
	assert_int_equal(sp_secret_check_format("spk", a, strlen(a)), 0);
	assert_int_equal(sp_secret_check_format("spe", a, strlen(a)), SP_ERR_INVALID);
}

static void test_bad_kinds_and_sizes(void **state)
{
	(void)state;
	char out[SP_SECRET_TEXT_MAX];
	assert_int_equal(sp_secret_new("", out, sizeof(out)), SP_ERR_INVALID);
	assert_int_equal(sp_secret_new("ABC", out, sizeof(out)), SP_ERR_INVALID);
	assert_int_equal(sp_secret_new("waytoolong", out, sizeof(out)), SP_ERR_INVALID);
	assert_int_equal(sp_secret_new("spk", out, 10), SP_ERR_INVALID);
	assert_string_equal(out, "");
	char hex[9];
	assert_int_equal(sp_random_hex(4, hex, sizeof(hex)), 0);
	assert_int_equal(strlen(hex), 8);
	assert_int_equal(sp_random_hex(5, hex, sizeof(hex)), SP_ERR_INVALID);
	assert_int_equal(sp_random_hex(0, hex, sizeof(hex)), SP_ERR_INVALID);
}

static void test_format_refusals(void **state)
{
	(void)state;
	const char good[] = "spk_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ";
	assert_int_equal(sp_secret_check_format("spk", good, strlen(good)), 0);
	const char *bad[] = {
		"spk_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP",   /* 42 chars */
		"spk_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQR", /* 44 chars */
		"spk-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ",  /* no underscore */
		"spk_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP=",  /* padding */
		"spk_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP ",  /* space */
		"",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(sp_secret_check_format("spk", bad[i], strlen(bad[i])),
		                 SP_ERR_INVALID);
	assert_int_equal(sp_secret_check_format("spk", NULL, 0), SP_ERR_INVALID);
}

static void test_hash_known_value_and_compare(void **state)
{
	(void)state;
	char h[SP_SECRET_HASH_HEX], h2[SP_SECRET_HASH_HEX];
	assert_int_equal(sp_secret_hash("abc", 3, h), 0);
	assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	assert_int_equal(sp_secret_hash("abd", 3, h2), 0);
	assert_true(sp_secret_hash_equal(h, h));
	assert_false(sp_secret_hash_equal(h, h2));
	assert_false(sp_secret_hash_equal(h, "ba78"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_secret_shape_and_uniqueness),
		cmocka_unit_test(test_bad_kinds_and_sizes),
		cmocka_unit_test(test_format_refusals),
		cmocka_unit_test(test_hash_known_value_and_compare),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
