/* Unit tests for controller/router.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "controller/router.h"
#include "shared/error.h"

static const struct route table[] = {
	{"GET", "/healthz", NULL, 0},
	{"GET", "/api/v1/resources", NULL, 1},
	{"POST", "/api/v1/resources", NULL, 2},
	{"GET", "/api/v1/resources/{id}", NULL, 3},
	{"DELETE", "/api/v1/resources/{id}", NULL, 4},
	{"PUT", "/api/v1/groups/{id}/members/{user_id}", NULL, 5},
	{"GET", "/", NULL, 6},
};
#define TABLE_LEN (sizeof(table) / sizeof(table[0]))

static void test_exact_and_captures(void **state)
{
	(void)state;
	struct route_match m;
	assert_int_equal(router_match(table, TABLE_LEN, "GET", "/healthz", &m), 0);
	assert_int_equal(m.route->flags, 0);
	assert_int_equal(router_match(table, TABLE_LEN, "GET", "/api/v1/resources/r-1", &m), 0);
	assert_int_equal(m.route->flags, 3);
	assert_int_equal(m.param_count, 1);
	assert_string_equal(router_param(&m, 0), "r-1");
	assert_string_equal(router_param(&m, 1), "");
	assert_int_equal(
		router_match(table, TABLE_LEN, "PUT", "/api/v1/groups/g1/members/u2", &m), 0);
	assert_string_equal(router_param(&m, 0), "g1");
	assert_string_equal(router_param(&m, 1), "u2");
	assert_int_equal(router_match(table, TABLE_LEN, "GET", "/", &m), 0);
	assert_int_equal(m.route->flags, 6);
}

static void test_method_not_allowed_lists_allow(void **state)
{
	(void)state;
	struct route_match m;
	assert_int_equal(router_match(table, TABLE_LEN, "PATCH", "/api/v1/resources/x", &m),
	                 SP_ERR_UNSUPPORTED);
	assert_string_equal(m.allow, "GET, DELETE");
	assert_null(m.route);
}

static void test_unknown_and_unclean_paths(void **state)
{
	(void)state;
	struct route_match m;
	assert_int_equal(router_match(table, TABLE_LEN, "GET", "/api/v1/resources/", &m),
	                 SP_ERR_INVALID); /* empty last segment */
	assert_int_equal(router_match(table, TABLE_LEN, "GET", "/api/v1/nothing", &m),
	                 SP_ERR_NOT_FOUND);
	assert_int_equal(router_match(table, TABLE_LEN, "GET", "/api/v1/resources/a/b", &m),
	                 SP_ERR_NOT_FOUND);
	assert_int_equal(router_match(table, TABLE_LEN, "GET", "/api/../healthz", &m),
	                 SP_ERR_INVALID);
	assert_int_equal(router_match(table, TABLE_LEN, "GET", "/./healthz", &m), SP_ERR_INVALID);
	assert_int_equal(router_match(table, TABLE_LEN, "GET", "//healthz", &m), SP_ERR_INVALID);
	assert_int_equal(router_match(table, TABLE_LEN, "GET", "healthz", &m), SP_ERR_INVALID);
	assert_int_equal(router_match(table, TABLE_LEN, "GET", "", &m), SP_ERR_INVALID);
	assert_int_equal(router_match(table, TABLE_LEN, "GET", "/api/v1/resources/a b", &m),
	                 SP_ERR_INVALID);
	assert_int_equal(router_match(table, TABLE_LEN, "GET", "/api/v1/resources/a\x7f", &m),
	                 SP_ERR_INVALID);
}

/* A trailing '/' matches only a pattern written with it; no folding either way. */
static void test_trailing_slash_patterns(void **state)
{
	(void)state;
	static const struct route slash[] = {
		{"GET", "/admin", NULL, 1},
		{"GET", "/admin/", NULL, 2},
		{"GET", "/admin/app.js", NULL, 3},
		{"GET", "/site/{id}/", NULL, 4},
		{"GET", "/api/v1/resources/{id}", NULL, 5},
	};
	const size_t n = sizeof(slash) / sizeof(slash[0]);
	struct route_match m;
	assert_int_equal(router_match(slash, n, "GET", "/admin/", &m), 0);
	assert_int_equal(m.route->flags, 2);
	assert_int_equal(router_match(slash, n, "GET", "/admin", &m), 0);
	assert_int_equal(m.route->flags, 1);
	assert_int_equal(router_match(slash, n, "GET", "/site/s1/", &m), 0);
	assert_int_equal(m.route->flags, 4);
	assert_string_equal(router_param(&m, 0), "s1");
	assert_int_equal(router_match(slash, n, "POST", "/admin/", &m), SP_ERR_UNSUPPORTED);
	assert_string_equal(m.allow, "GET");
	assert_int_equal(router_match(slash, n, "GET", "/site/s1", &m), SP_ERR_NOT_FOUND);
	assert_int_equal(router_match(slash, n, "GET", "/admin/nope", &m), SP_ERR_NOT_FOUND);
	assert_int_equal(router_match(slash, n, "GET", "/admin/app.js/", &m), SP_ERR_INVALID);
	assert_int_equal(router_match(slash, n, "GET", "/api/v1/resources/", &m), SP_ERR_INVALID);
	assert_int_equal(router_match(slash, n, "GET", "/admin//", &m), SP_ERR_INVALID);
	assert_int_equal(router_match(slash, n, "GET", "/admin/../", &m), SP_ERR_INVALID);
	assert_int_equal(router_match(slash, n, "GET", "/admin/./", &m), SP_ERR_INVALID);
	assert_int_equal(router_match(slash, n, "GET", "/site//", &m), SP_ERR_INVALID);
	assert_int_equal(router_match(slash, n, "GET", "/site/a b/", &m), SP_ERR_INVALID);
	assert_int_equal(router_match(slash, n, "GET", "//", &m), SP_ERR_INVALID);
}

static void test_oversize_capture_and_path(void **state)
{
	(void)state;
	struct route_match m;
	char path[ROUTER_MAX_PATH + 16];
	snprintf(path, sizeof(path), "%s", "/api/v1/resources/");
	size_t used = strlen(path);
	memset(path + used, 'a', ROUTER_MAX_PARAM_LEN);
	path[used + ROUTER_MAX_PARAM_LEN] = '\0';
	assert_int_equal(router_match(table, TABLE_LEN, "GET", path, &m), SP_ERR_INVALID);
	path[used + ROUTER_MAX_PARAM_LEN - 1] = '\0'; /* 127 chars fits */
	assert_int_equal(router_match(table, TABLE_LEN, "GET", path, &m), 0);
	memset(path, 'a', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = '\0';
	assert_int_equal(router_match(table, TABLE_LEN, "GET", path, &m), SP_ERR_INVALID);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exact_and_captures),
		cmocka_unit_test(test_method_not_allowed_lists_allow),
		cmocka_unit_test(test_unknown_and_unclean_paths),
		cmocka_unit_test(test_trailing_slash_patterns),
		cmocka_unit_test(test_oversize_capture_and_path),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
