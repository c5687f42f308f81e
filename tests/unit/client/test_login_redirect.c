/* Unit tests for client/login_redirect.c: the sign-in redirect's request line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "client/login_redirect.h"

static char code[LOGIN_VALUE_MAX + 1], state[LOGIN_VALUE_MAX + 1];

static int parse(const char *req)
{
	return login_parse_redirect(req, strlen(req), code, state);
}

static void test_good(void **s)
{
	(void)s;
	assert_int_equal(parse("GET /cb?code=spn_abc-_9&state=St.~1 HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
	assert_string_equal(code, "spn_abc-_9");
	assert_string_equal(state, "St.~1");
	assert_int_equal(parse("GET /cb?state=s&x=1&code=c HTTP/1.0\r\n"), 0);
	assert_string_equal(code, "c");
	assert_string_equal(state, "s");
	assert_int_equal(parse("GET /cb?iss=a&code=c&state=s&flag HTTP/1.1\r\n"), 0);
}

static void test_refused(void **s)
{
	(void)s;
	assert_int_equal(parse("GET /cb?code=c&state=s HTTP/1.1"), SP_ERR_AGAIN);
	assert_int_equal(parse(""), SP_ERR_AGAIN);
	assert_int_equal(parse("POST /cb?code=c&state=s HTTP/1.1\r\n"), SP_ERR_INVALID);
	assert_int_equal(parse("GET /cb?code=c&state=s HTTP/2\r\n"), SP_ERR_INVALID);
	assert_int_equal(parse("GET /cb?code=c&state=s\r\n"), SP_ERR_INVALID);
	assert_int_equal(parse("GET /favicon.ico HTTP/1.1\r\n"), SP_ERR_NOT_FOUND);
	assert_int_equal(parse("GET /cb?state=s HTTP/1.1\r\n"), SP_ERR_NOT_FOUND);
	assert_int_equal(parse("GET /cb?code=c HTTP/1.1\r\n"), SP_ERR_NOT_FOUND);
	assert_int_equal(parse("GET /cb?code=&state=s HTTP/1.1\r\n"), SP_ERR_INVALID);
	assert_int_equal(parse("GET /cb?code=a%20b&state=s HTTP/1.1\r\n"), SP_ERR_INVALID);
	assert_int_equal(parse("GET /cb?code=a&code=b&state=s HTTP/1.1\r\n"), SP_ERR_INVALID);
	assert_int_equal(parse("GET /cb?code=a&state=s&state=t HTTP/1.1\r\n"), SP_ERR_INVALID);
	assert_string_equal(code, "");
	assert_string_equal(state, "");
	char big[LOGIN_VALUE_MAX + 64];
	memset(big, 'a', sizeof(big));
	int n = snprintf(big, sizeof(big), "GET /cb?state=s&code=");
	memset(big + n, 'a', LOGIN_VALUE_MAX + 1);
	memcpy(big + n + LOGIN_VALUE_MAX + 1, " HTTP/1.1\r\n", 12);
	assert_int_equal(parse(big), SP_ERR_INVALID);
	/* exactly LOGIN_VALUE_MAX fits */
	memcpy(big + n + LOGIN_VALUE_MAX, " HTTP/1.1\r\n", 12);
	assert_int_equal(parse(big), 0);
	assert_int_equal(strlen(code), LOGIN_VALUE_MAX);
	static char huge[LOGIN_REQUEST_MAX + 1];
	memset(huge, 'G', sizeof(huge));
	assert_int_equal(login_parse_redirect(huge, sizeof(huge), code, state), SP_ERR_TOO_LARGE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good),
	    cmocka_unit_test(test_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
