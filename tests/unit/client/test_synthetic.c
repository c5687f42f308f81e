/* Unit tests for client/synthetic.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "client/synthetic.h"

static struct synthetic *make(const char *v4, const char *v6, size_t max)
{
	struct synthetic_config cfg = {.v4_range = v4, .v6_range = v6, .max_entries = max,
				       .hash_seed = 42};
	struct synthetic *s = NULL;
	struct sp_diag diag = {{0}};
	assert_int_equal(synthetic_new(&cfg, &s, &diag), 0);
	assert_non_null(s);
	return s;
}

static void assign(struct synthetic *s, const char *name, int64_t id, struct synthetic_mapping *m)
{
	assert_int_equal(synthetic_assign(s, name, strlen(name), id, m), 0);
}

static void test_defaults_and_first_addresses(void **state)
{
	(void)state;
	struct synthetic *s = make(NULL, SYNTHETIC_DEFAULT_V6, 0);
	assert_int_equal(synthetic_capacity(s), SYNTHETIC_DEFAULT_MAX_ENTRIES);
	assert_int_equal(synthetic_has_v6(s), 1);
	assert_int_equal(synthetic_v4_range(s)->prefix_len, 12);
	struct synthetic_mapping m;
	assign(s, "app.corp.test", 7, &m);
	const uint8_t v4[4] = {100, 96, 0, 1};
	assert_memory_equal(m.v4, v4, 4);
	assert_int_equal(m.has_v6, 1);
	const uint8_t v6[16] = {0xfd, 0x73, 0x70, 0x61, 0x6c, 0x6c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
	assert_memory_equal(m.v6, v6, 16);
	assert_int_equal(m.resource_id, 7);

	/* Stable: the same name gets the same addresses; resource id follows the latest. */
	struct synthetic_mapping again;
	assign(s, "app.corp.test", 9, &again);
	assert_memory_equal(again.v4, v4, 4);
	assert_memory_equal(again.v6, v6, 16);
	assert_int_equal(again.resource_id, 9);
	assert_int_equal(synthetic_count(s), 1);

	struct synthetic_mapping second;
	assign(s, "db.corp.test", 8, &second);
	const uint8_t v4b[4] = {100, 96, 0, 2};
	assert_memory_equal(second.v4, v4b, 4);
	assert_int_equal(second.v6[15], 2);
	assert_int_equal(synthetic_count(s), 2);
	synthetic_free(s);
}

static void test_reverse_lookup(void **state)
{
	(void)state;
	struct synthetic *s = make("10.200.0.0/16", "fd00:1:2:3::/64", 100);
	struct synthetic_mapping m;
	assign(s, "a.corp.test", 1, &m);
	assign(s, "b.corp.test", 2, &m);
	char name[SYNTHETIC_NAME_MAX + 1];
	int64_t id = -1;
	const uint8_t v4[4] = {10, 200, 0, 2};
	assert_int_equal(synthetic_reverse(s, AF_INET, v4, name, sizeof(name), &id), 0);
	assert_string_equal(name, "b.corp.test");
	assert_int_equal(id, 2);
	assert_int_equal(synthetic_reverse(s, AF_INET6, m.v6, name, sizeof(name), &id), 0);
	assert_string_equal(name, "b.corp.test");

	/* Unmapped offset, outside the range, network address, wrong family. */
	const uint8_t v4_free[4] = {10, 200, 0, 3};
	const uint8_t v4_out[4] = {10, 201, 0, 1};
	const uint8_t v4_net[4] = {10, 200, 0, 0};
	assert_int_equal(synthetic_reverse(s, AF_INET, v4_free, name, sizeof(name), &id),
			 SP_ERR_NOT_FOUND);
	assert_string_equal(name, "");
	assert_int_equal(id, 0);
	assert_int_equal(synthetic_reverse(s, AF_INET, v4_out, name, sizeof(name), &id),
			 SP_ERR_NOT_FOUND);
	assert_int_equal(synthetic_reverse(s, AF_INET, v4_net, name, sizeof(name), &id),
			 SP_ERR_NOT_FOUND);
	assert_int_equal(synthetic_reverse(s, AF_UNIX, v4, name, sizeof(name), &id),
			 SP_ERR_NOT_FOUND);
	/* An IPv6 address inside the /64 but above the 32-bit offsets is not ours. */
	uint8_t v6_high[16];
	memcpy(v6_high, m.v6, 16);
	v6_high[11] = 1;
	assert_int_equal(synthetic_reverse(s, AF_INET6, v6_high, name, sizeof(name), &id),
			 SP_ERR_NOT_FOUND);
	/* Too small a name buffer. */
	char tiny[5];
	assert_int_equal(synthetic_reverse(s, AF_INET, v4, tiny, sizeof(tiny), &id),
			 SP_ERR_TOO_LARGE);
	synthetic_free(s);
}

static void test_v4_only_has_no_v6(void **state)
{
	(void)state;
	struct synthetic *s = make("100.64.0.0/24", NULL, 0);
	assert_int_equal(synthetic_has_v6(s), 0);
	assert_null(synthetic_v6_range(s));
	/* /24: 256 addresses, minus network and broadcast. */
	assert_int_equal(synthetic_capacity(s), 254);
	struct synthetic_mapping m;
	assign(s, "x.test", 1, &m);
	assert_int_equal(m.has_v6, 0);
	uint8_t zero[16] = {0};
	assert_memory_equal(m.v6, zero, 16);
	char name[64];
	assert_int_equal(synthetic_reverse(s, AF_INET6, zero, name, sizeof(name), NULL),
			 SP_ERR_NOT_FOUND);
	synthetic_free(s);
}

static void test_exhaustion_never_hands_out_network_or_broadcast(void **state)
{
	(void)state;
	/* /29: 8 addresses, 6 usable: .1 to .6. */
	struct synthetic *s = make("192.0.2.0/29", NULL, 1000);
	assert_int_equal(synthetic_capacity(s), 6);
	struct synthetic_mapping m;
	char name[32];
	for (int i = 0; i < 6; i++) {
		snprintf(name, sizeof(name), "n%d.test", i);
		assign(s, name, i, &m);
		assert_int_equal(m.v4[3], i + 1);
	}
	assert_int_equal(synthetic_count(s), 6);
	/* Full: the least recently used (n0, .1) is evicted and its address is reused. */
	assign(s, "n6.test", 6, &m);
	assert_int_equal(m.v4[3], 1);
	assert_int_equal(synthetic_count(s), 6);
	assert_int_equal(synthetic_find(s, "n0.test", 7, &m), SP_ERR_NOT_FOUND);
	/* Use n1 so n2 becomes the oldest; the next name takes n2's address (.3). */
	assign(s, "n1.test", 1, &m);
	assert_int_equal(m.v4[3], 2);
	assign(s, "n7.test", 7, &m);
	assert_int_equal(m.v4[3], 3);
	assert_int_equal(synthetic_find(s, "n2.test", 7, &m), SP_ERR_NOT_FOUND);
	assert_int_equal(synthetic_find(s, "n1.test", 7, &m), 0);
	assert_int_equal(m.v4[3], 2);
	/* Every mapped address is distinct and reverses to its own name. */
	const char *live[] = {"n1.test", "n3.test", "n4.test", "n5.test", "n6.test", "n7.test"};
	uint8_t seen[8] = {0};
	for (size_t i = 0; i < 6; i++) {
		assert_int_equal(synthetic_find(s, live[i], strlen(live[i]), &m), 0);
		assert_true(m.v4[3] >= 1 && m.v4[3] <= 6);
		assert_int_equal(seen[m.v4[3]], 0);
		seen[m.v4[3]] = 1;
		char back[32];
		assert_int_equal(synthetic_reverse(s, AF_INET, m.v4, back, sizeof(back), NULL), 0);
		assert_string_equal(back, live[i]);
	}
	synthetic_free(s);
}

static void test_eviction_reuses_addresses_late(void **state)
{
	(void)state;
	/* Cap 3 names in a /24: evicted addresses are not reused until the cursor wraps. */
	struct synthetic *s = make("198.51.100.0/24", NULL, 3);
	assert_int_equal(synthetic_capacity(s), 3);
	struct synthetic_mapping m;
	char name[32];
	for (int i = 0; i < 10; i++) {
		snprintf(name, sizeof(name), "h%d.test", i);
		assign(s, name, i, &m);
		assert_int_equal(m.v4[3], i + 1);
		assert_true(synthetic_count(s) <= 3);
	}
	assert_int_equal(synthetic_count(s), 3);
	assert_int_equal(synthetic_find(s, "h6.test", 7, &m), SP_ERR_NOT_FOUND);
	assert_int_equal(synthetic_find(s, "h9.test", 7, &m), 0);
	assert_int_equal(m.v4[3], 10);
	/* An address freed by eviction no longer reverses to the old name. */
	const uint8_t old[4] = {198, 51, 100, 1};
	assert_int_equal(synthetic_reverse(s, AF_INET, old, name, sizeof(name), NULL),
			 SP_ERR_NOT_FOUND);
	synthetic_free(s);
}

static void test_cursor_wraps_and_skips_live_addresses(void **state)
{
	(void)state;
	/* /29 with 6 usable, cap 4: after the wrap the cursor must skip the ones in use. */
	struct synthetic *s = make("192.0.2.8/29", NULL, 4);
	struct synthetic_mapping m;
	assign(s, "keep.test", 0, &m); /* .9 */
	assert_int_equal(m.v4[3], 9);
	char name[32];
	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "t%d.test", i);
		assign(s, name, i, &m);
		assign(s, "keep.test", 0, &m); /* keep it recent */
		assert_int_equal(m.v4[3], 9);
	}
	/* t0..t2 took .10 .11 .12; t3 and t4 evicted t0 and t1 and took .13 .14. */
	uint8_t used[16] = {0};
	int live = 0;
	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "t%d.test", i);
		if (synthetic_find(s, name, strlen(name), &m) == 0) {
			assert_true(m.v4[3] >= 9 && m.v4[3] <= 14);
			assert_int_not_equal(m.v4[3], 9);
			assert_int_equal(used[m.v4[3]], 0);
			used[m.v4[3]] = 1;
			live++;
		}
	}
	assert_int_equal(live, 3);
	/* t2, t3, t4 survive (t0 and t1 were the oldest); t3 got .13, t4 .14. */
	assert_int_equal(synthetic_find(s, "t4.test", 7, &m), 0);
	assert_int_equal(m.v4[3], 14);
	/* Next: cursor wraps to .9 (live: skipped), takes .10 (t0's, freed). */
	assign(s, "t5.test", 5, &m);
	assert_int_equal(m.v4[3], 10);
	synthetic_free(s);
}

static void test_bad_config(void **state)
{
	(void)state;
	struct synthetic *s = (struct synthetic *)1;
	struct sp_diag diag = {{0}};
	struct synthetic_config cfg = {.v4_range = "fd00::/64"};
	assert_int_equal(synthetic_new(&cfg, &s, &diag), SP_ERR_INVALID);
	assert_null(s);
	assert_non_null(strstr(diag.message, "not an IPv4 network"));
	cfg.v4_range = "10.0.0.0/31";
	assert_int_equal(synthetic_new(&cfg, &s, &diag), SP_ERR_INVALID);
	assert_non_null(strstr(diag.message, "too small"));
	cfg.v4_range = "10.0.0.1/8";
	assert_int_equal(synthetic_new(&cfg, &s, &diag), SP_ERR_INVALID);
	assert_non_null(strstr(diag.message, "IPv4 synthetic range"));
	cfg.v4_range = NULL;
	cfg.v6_range = "100.64.0.0/10";
	assert_int_equal(synthetic_new(&cfg, &s, &diag), SP_ERR_INVALID);
	assert_non_null(strstr(diag.message, "not an IPv6 network"));
	cfg.v6_range = "fd00::/127";
	assert_int_equal(synthetic_new(&cfg, &s, &diag), SP_ERR_INVALID);
	cfg.v6_range = NULL;
	cfg.max_entries = SYNTHETIC_MAX_ENTRIES_LIMIT + 1;
	assert_int_equal(synthetic_new(&cfg, &s, &diag), SP_ERR_INVALID);
	assert_non_null(strstr(diag.message, "max_entries"));
	synthetic_free(NULL);
}

static void test_small_v6_range_limits_the_pool(void **state)
{
	(void)state;
	/* A /124 (16 addresses) limits a /12 IPv4 range to 14 usable slots. */
	struct synthetic *s = make(NULL, "fd00::/124", 0);
	assert_int_equal(synthetic_capacity(s), 14);
	synthetic_free(s);
}

static void test_bad_names(void **state)
{
	(void)state;
	struct synthetic *s = make(NULL, NULL, 4);
	struct synthetic_mapping m;
	assert_int_equal(synthetic_assign(s, "", 0, 1, &m), SP_ERR_INVALID);
	static char big[SYNTHETIC_NAME_MAX + 2];
	memset(big, 'a', sizeof(big) - 1);
	assert_int_equal(synthetic_assign(s, big, SYNTHETIC_NAME_MAX + 1, 1, &m), SP_ERR_INVALID);
	assert_int_equal(synthetic_assign(s, big, SYNTHETIC_NAME_MAX, 1, &m), 0);
	assert_int_equal(synthetic_find(s, "", 0, &m), SP_ERR_NOT_FOUND);
	/* Names are compared exactly: the caller passes lower-cased text. */
	assert_int_equal(synthetic_assign(s, "A.test", 6, 1, &m), 0);
	assert_int_equal(synthetic_find(s, "a.test", 6, &m), SP_ERR_NOT_FOUND);
	assert_int_equal(synthetic_count(s), 2);
	synthetic_free(s);
}

static void test_many_names_at_default_cap(void **state)
{
	(void)state;
	struct synthetic *s = make(NULL, SYNTHETIC_DEFAULT_V6, 1000);
	struct synthetic_mapping m;
	char name[32];
	for (int i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "host%d.corp.test", i);
		assign(s, name, i, &m);
	}
	assert_int_equal(synthetic_count(s), 1000);
	/* The last 1000 survive, with offsets 4001..5000. */
	assert_int_equal(synthetic_find(s, "host3999.corp.test", 18, &m), SP_ERR_NOT_FOUND);
	assert_int_equal(synthetic_find(s, "host4000.corp.test", 18, &m), 0);
	assert_int_equal(m.v4[2], 4001 >> 8);
	assert_int_equal(m.v4[3], 4001 & 0xff);
	synthetic_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults_and_first_addresses),
	    cmocka_unit_test(test_reverse_lookup),
	    cmocka_unit_test(test_v4_only_has_no_v6),
	    cmocka_unit_test(test_exhaustion_never_hands_out_network_or_broadcast),
	    cmocka_unit_test(test_eviction_reuses_addresses_late),
	    cmocka_unit_test(test_cursor_wraps_and_skips_live_addresses),
	    cmocka_unit_test(test_bad_config),
	    cmocka_unit_test(test_small_v6_range_limits_the_pool),
	    cmocka_unit_test(test_bad_names),
	    cmocka_unit_test(test_many_names_at_default_cap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
