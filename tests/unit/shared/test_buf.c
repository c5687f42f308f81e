/* Unit tests for shared/buf.c and shared/error.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "shared/buf.h"
#include "shared/error.h"

static void test_buf_grows_to_max_and_no_further(void **state)
{
	(void)state;
	struct sp_buf b;
	sp_buf_init(&b, 100);
	uint8_t chunk[30];
	memset(chunk, 'a', sizeof(chunk));
	for (int i = 0; i < 3; i++)
		assert_int_equal(sp_buf_put(&b, chunk, sizeof(chunk)), 0);
	assert_int_equal(b.len, 90);
	/* 11 more would pass 100: refused, contents unchanged. */
	assert_int_equal(sp_buf_put(&b, chunk, 11), SP_ERR_TOO_LARGE);
	assert_int_equal(b.len, 90);
	assert_int_equal(sp_buf_put(&b, chunk, 10), 0);
	assert_int_equal(b.len, 100);
	assert_int_equal(sp_buf_put_u8(&b, 1), SP_ERR_TOO_LARGE);
	/* No room for the NUL either. */
	assert_null(sp_buf_cstr(&b));
	sp_buf_free(&b);
	sp_buf_free(&b); /* safe twice */
}

static void test_buf_fixed_never_allocates(void **state)
{
	(void)state;
	uint8_t storage[8];
	struct sp_buf b;
	sp_buf_init_fixed(&b, storage, sizeof(storage));
	assert_int_equal(sp_buf_put_u32be(&b, 0x01020304), 0);
	assert_int_equal(sp_buf_put_u16be(&b, 0x0506), 0);
	assert_int_equal(sp_buf_put_u32be(&b, 0x0708090a), SP_ERR_TOO_LARGE);
	assert_int_equal(b.len, 6);
	assert_ptr_equal(b.data, storage);
	const uint8_t want[] = {1, 2, 3, 4, 5, 6};
	assert_memory_equal(storage, want, sizeof(want));
	assert_int_equal(sp_buf_patch_u16be(&b, 4, 0xabcd), 0);
	assert_int_equal(storage[4], 0xab);
	assert_int_equal(sp_buf_patch_u16be(&b, 5, 1), SP_ERR_INVALID);
	sp_buf_free(&b); /* must not free caller storage */
}

static void test_buf_u64_is_all_or_nothing(void **state)
{
	(void)state;
	uint8_t storage[6];
	struct sp_buf b;
	sp_buf_init_fixed(&b, storage, sizeof(storage));
	assert_int_equal(sp_buf_put_u64be(&b, 1), SP_ERR_TOO_LARGE);
	assert_int_equal(b.len, 0);
}

static void test_buf_printf_and_cstr(void **state)
{
	(void)state;
	struct sp_buf b;
	sp_buf_init(&b, 0);
	assert_int_equal(sp_buf_printf(&b, "%s=%d", "port", 443), 0);
	assert_int_equal(sp_buf_put_str(&b, ";"), 0);
	assert_string_equal(sp_buf_cstr(&b), "port=443;");
	assert_int_equal(b.len, 9);
	sp_buf_reset(&b);
	assert_int_equal(b.len, 0);
	sp_buf_free_secret(&b);
	assert_null(b.data);

	struct sp_buf small;
	sp_buf_init(&small, 4);
	assert_int_equal(sp_buf_printf(&small, "%s", "abcd"), SP_ERR_TOO_LARGE);
	assert_int_equal(small.len, 0);
	sp_buf_free(&small);
}

static void test_reader_integers_big_endian(void **state)
{
	(void)state;
	const uint8_t bytes[] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x11, 0x22,
	                         0x33, 0x44, 0x55, 0x66, 0x77};
	struct sp_reader r;
	sp_reader_init(&r, bytes, sizeof(bytes));
	uint8_t u8;
	uint16_t u16;
	uint32_t u32;
	uint64_t u64;
	assert_int_equal(sp_reader_u8(&r, &u8), 0);
	assert_int_equal(u8, 0x12);
	assert_int_equal(sp_reader_u16be(&r, &u16), 0);
	assert_int_equal(u16, 0x3456);
	assert_int_equal(sp_reader_u32be(&r, &u32), 0);
	assert_int_equal(u32, 0x789abcde);
	assert_int_equal(sp_reader_u64be(&r, &u64), 0);
	assert_true(u64 == 0xf011223344556677ULL);
	assert_int_equal(sp_reader_remaining(&r), 0);
}

static void test_reader_truncation_leaves_cursor(void **state)
{
	(void)state;
	const uint8_t bytes[] = {1, 2, 3};
	struct sp_reader r;
	sp_reader_init(&r, bytes, sizeof(bytes));
	uint32_t u32 = 99;
	assert_int_equal(sp_reader_u32be(&r, &u32), SP_ERR_TRUNCATED);
	assert_int_equal(u32, 0);
	assert_int_equal(r.pos, 0);
	uint64_t u64 = 99;
	assert_int_equal(sp_reader_u64be(&r, &u64), SP_ERR_TRUNCATED);
	assert_true(u64 == 0);
	uint8_t out[4] = {9, 9, 9, 9};
	assert_int_equal(sp_reader_copy(&r, out, 4), SP_ERR_TRUNCATED);
	assert_int_equal(out[0], 0);
	assert_int_equal(sp_reader_skip(&r, 4), SP_ERR_TRUNCATED);
	assert_int_equal(sp_reader_skip(&r, 3), 0);
	uint8_t u8 = 7;
	assert_int_equal(sp_reader_u8(&r, &u8), SP_ERR_TRUNCATED);
	assert_int_equal(u8, 0);
	uint16_t u16 = 7;
	assert_int_equal(sp_reader_u16be(&r, &u16), SP_ERR_TRUNCATED);
	assert_int_equal(sp_reader_seek(&r, 4), SP_ERR_TRUNCATED);
	assert_int_equal(sp_reader_seek(&r, 1), 0);
	const uint8_t *view;
	assert_int_equal(sp_reader_view(&r, 2, &view), 0);
	assert_int_equal(view[0], 2);
	assert_int_equal(view[1], 3);
}

static void test_reader_null_data_is_empty(void **state)
{
	(void)state;
	struct sp_reader r;
	sp_reader_init(&r, NULL, 10);
	assert_int_equal(sp_reader_remaining(&r), 0);
}

static void test_error_names(void **state)
{
	(void)state;
	assert_string_equal(sp_err_name(SP_OK), "ok");
	assert_string_equal(sp_err_name(SP_ERR_TRUNCATED), "truncated");
	assert_string_equal(sp_err_name(SP_ERR_AGAIN), "again");
	assert_string_equal(sp_err_name(-1000), "unknown");
	assert_string_equal(sp_err_name(5), "unknown");
	assert_string_equal(sp_strerror(SP_ERR_EXPIRED), "expired");
	struct sp_diag d;
	assert_int_equal(sp_diag_set(&d, SP_ERR_INVALID, "field %s", "port"), SP_ERR_INVALID);
	assert_string_equal(d.message, "field port");
	assert_int_equal(sp_diag_set(NULL, SP_ERR_IO, "x"), SP_ERR_IO);
}

static void test_diag_echo(void **state)
{
	(void)state;
	char out[8];
	assert_string_equal(sp_diag_echo("abc", 3, out, sizeof(out)), "abc");
	assert_string_equal(sp_diag_echo("a\"b\x01" "c", 5, out, sizeof(out)), "a?b?c");
	assert_string_equal(sp_diag_echo("1234567", 7, out, sizeof(out)), "1234567");
	assert_string_equal(sp_diag_echo("12345678", 8, out, sizeof(out)), "1234...");
	char tiny[3] = "xx";
	assert_string_equal(sp_diag_echo("abc", 3, tiny, sizeof(tiny)), "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buf_grows_to_max_and_no_further),
		cmocka_unit_test(test_buf_fixed_never_allocates),
		cmocka_unit_test(test_buf_u64_is_all_or_nothing),
		cmocka_unit_test(test_buf_printf_and_cstr),
		cmocka_unit_test(test_reader_integers_big_endian),
		cmocka_unit_test(test_reader_truncation_leaves_cursor),
		cmocka_unit_test(test_reader_null_data_is_empty),
		cmocka_unit_test(test_error_names),
		cmocka_unit_test(test_diag_echo),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
