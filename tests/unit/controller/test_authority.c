/*
 * Tests for controller/authority.c on a real migrated sqlite database: first key,
 * successor published ahead, switch-over, retirement, and tokens verifying against
 * the published JWKS throughout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "controller/authority.h"
#include "controller/db.h"

#define T0 1700000000
#define DAY 86400

static char dir[64];
static struct db *db;

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/sp-authority-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	char path[128];
	snprintf(path, sizeof(path), "%s/controller.db", dir);
	int applied = 0;
	if (db_open(&db_sqlite_driver, path, 0, &db, NULL) < 0 ||
	    db_migrate(db, &applied, NULL) < 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	db_close(db);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int64_t key_count(void)
{
	struct db_stmt *st;
	db_prepare(db, "SELECT count(*) FROM signing_keys", &st);
	db_step(st);
	int64_t n = db_column_int64(st, 0);
	db_finalize(st);
	return n;
}

/* Signs with the authority and verifies against its own published JWKS. */
static int sign_and_verify(struct authority *a, const struct authority *published_by,
                           char kid_out[64])
{
	json_t *claims = json_pack("{s:s}", "sub", "u1");
	char *jws = NULL;
	int r = authority_sign(a, claims, &jws);
	json_decref(claims);
	if (r < 0)
		return r;
	size_t len = 0;
	const char *doc = authority_jwks(published_by, &len);
	struct sp_jwks keys;
	r = sp_jwks_parse(doc, len, &keys, NULL);
	json_t *back = NULL;
	if (r == 0)
		r = sp_token_verify(jws, strlen(jws), &keys, "ES256", &back, NULL);
	snprintf(kid_out, 64, "%s", a->active_kid);
	json_decref(back);
	sp_jwks_free(&keys);
	free(jws);
	return r;
}

static void test_lifecycle(void **state)
{
	(void)state;
	struct authority a;
	struct sp_diag d;
	struct authority_periods p = {.sign_period_s = 10 * DAY, .publish_lead_s = DAY,
	                              .max_token_lifetime_s = DAY / 2};
	assert_int_equal(authority_open(&a, db, &p, T0, &d), 0);
	assert_int_equal(key_count(), 1);
	assert_int_equal(a.published.count, 1);
	char kid1[64], kid2[64];
	assert_int_equal(sign_and_verify(&a, &a, kid1), 0);
	assert_int_equal(strlen(kid1), 43);

	/* Reopening does not create another key. */
	authority_close(&a);
	assert_int_equal(authority_open(&a, db, &p, T0 + 60, &d), 0);
	assert_int_equal(key_count(), 1);

	/* Nothing due: refresh is a no-op. */
	assert_int_equal(authority_refresh(&a, db, T0 + 5 * DAY, &d), 0);
	assert_int_equal(a.published.count, 1);

	/* Within the publish lead: successor published, old key still signs. */
	assert_int_equal(authority_refresh(&a, db, T0 + 9 * DAY + 60, &d), 0);
	assert_int_equal(a.published.count, 2);
	assert_int_equal(sign_and_verify(&a, &a, kid2), 0);
	assert_string_equal(kid1, kid2);

	/* Past the old key's end: the successor signs; the old one is still published. */
	assert_int_equal(authority_refresh(&a, db, T0 + 10 * DAY, &d), 0);
	assert_int_equal(sign_and_verify(&a, &a, kid2), 0);
	assert_string_not_equal(kid1, kid2);
	assert_int_equal(a.published.count, 2);

	/* Past retire_after of the first key: it leaves the JWKS and the table. */
	assert_int_equal(authority_refresh(&a, db, T0 + 10 * DAY + DAY / 2, &d), 0);
	assert_int_equal(a.published.count, 1);
	assert_int_equal(key_count(), 1);
	authority_close(&a);
}

static void test_long_outage_makes_a_fresh_key(void **state)
{
	(void)state;
	struct authority a;
	/* A year later every key has expired: a new one is made at once. */
	assert_int_equal(authority_open(&a, db, NULL, T0 + 365 * DAY, NULL), 0);
	char kid[64];
	assert_int_equal(sign_and_verify(&a, &a, kid), 0);
	assert_int_equal(a.published.count, 1);
	authority_close(&a);
}

static void test_bad_periods(void **state)
{
	(void)state;
	struct authority a;
	struct sp_diag d;
	struct authority_periods p = {.sign_period_s = DAY, .publish_lead_s = DAY,
	                              .max_token_lifetime_s = 1};
	assert_int_equal(authority_open(&a, db, &p, T0, &d), SP_ERR_INVALID);
	assert_null(a.signer);
	char *out = NULL;
	assert_int_equal(authority_sign(&a, NULL, &out), SP_ERR_NOT_FOUND);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lifecycle),
		cmocka_unit_test(test_long_outage_makes_a_fresh_key),
		cmocka_unit_test(test_bad_periods),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
