/* Unit tests for shared/portset.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "shared/portset.h"

/* Canonical text of a set, into a static buffer (tests only). */
static const char *portset_text(const struct sp_portset *set)
{
	static char text[4096];
	struct sp_buf buf;
	sp_buf_init_fixed(&buf, text, sizeof(text));
	assert_int_equal(sp_portset_format(set, &buf), 0);
	assert_non_null(sp_buf_cstr(&buf));
	return text;
}

/* Parses text, expecting success, and checks the canonical form. */
static void expect_canonical(const char *text, const char *canonical)
{
	struct sp_portset set;
	struct sp_diag diag = {{0}};
	assert_int_equal(sp_portset_parse(text, &set, &diag), 0);
	assert_string_equal(portset_text(&set), canonical);
	sp_portset_free(&set);
}

/* Parses text, expecting err, an empty set and a diag containing `needle`. */
static void expect_error(const char *text, int err, const char *needle)
{
	struct sp_portset set;
	struct sp_diag diag = {{0}};
	assert_int_equal(sp_portset_parse(text, &set, &diag), err);
	assert_int_equal(set.count, 0);
	assert_null(set.ranges);
	if (strstr(diag.message, needle) == NULL)
		fail_msg("diag \"%s\" lacks \"%s\"", diag.message, needle);
}

static void test_keywords(void **state)
{
	(void)state;
	struct sp_portset set;
	assert_int_equal(sp_portset_parse("all", &set, NULL), 0);
	assert_true(sp_portset_is_all(&set));
	assert_false(sp_portset_is_none(&set));
	assert_false(sp_portset_contains(&set, 0));
	assert_true(sp_portset_contains(&set, 1));
	assert_true(sp_portset_contains(&set, 65535));
	sp_portset_free(&set);
	sp_portset_free(&set);
	assert_int_equal(sp_portset_parse("none", &set, NULL), 0);
	assert_true(sp_portset_is_none(&set));
	assert_false(sp_portset_contains(&set, 22));
	sp_portset_free(&set);
	sp_portset_free(NULL);
}

static void test_boundaries(void **state)
{
	(void)state;
	expect_canonical("1", "1");
	expect_canonical("65535", "65535");
	expect_canonical("1-65535", "all");
	expect_canonical("1-100,101-65535", "all");
	expect_error("0", SP_ERR_INVALID, "port 0 is out of range 1-65535");
	expect_error("65536", SP_ERR_INVALID, "port 65536 is out of range");
	expect_error("99999999999999999999", SP_ERR_INVALID, "out of range");
	expect_error("0-10", SP_ERR_INVALID, "port 0 is out of range");
	expect_error("10-65536", SP_ERR_INVALID, "65536 is out of range");
}

static void test_reversed_range_refused(void **state)
{
	(void)state;
	expect_error("8100-8000", SP_ERR_INVALID, "range start 8100 is above its end 8000");
	expect_error("22,8100-8000", SP_ERR_INVALID, "item 2");
}

static void test_merging(void **state)
{
	(void)state;
	expect_canonical("443,22,443", "22,443");
	expect_canonical("8000-8100,8050-8200", "8000-8200");
	expect_canonical("22,23,24", "22-24"); /* touching ranges merge */
	expect_canonical("22-22", "22");
	expect_canonical("100-200,150,300,1-99", "1-200,300");
	expect_canonical("10-20,5-30", "5-30"); /* containment */
	expect_canonical("10,12", "10,12");	/* a gap stays */
	expect_canonical("65535,65534", "65534-65535");
}

static void test_syntax_errors(void **state)
{
	(void)state;
	expect_error("", SP_ERR_INVALID, "empty");
	expect_error("22,", SP_ERR_INVALID, "item 2: a port number is missing");
	expect_error(",22", SP_ERR_INVALID, "item 1: a port number is missing");
	expect_error("22,,23", SP_ERR_INVALID, "item 2");
	expect_error(" 22", SP_ERR_INVALID, "digits only");
	expect_error("22 ", SP_ERR_INVALID, "digits only");
	expect_error("+22", SP_ERR_INVALID, "digits only");
	expect_error("-22", SP_ERR_INVALID, "missing");
	expect_error("22-", SP_ERR_INVALID, "missing");
	expect_error("1-2-3", SP_ERR_INVALID, "digits only");
	expect_error("022", SP_ERR_INVALID, "leading zero");
	expect_error("ALL", SP_ERR_INVALID, "digits only");
	expect_error("ssh", SP_ERR_INVALID, "\"ssh\" is not a port number");
	expect_error("2\x01", SP_ERR_INVALID, "\"2?\"");
	struct sp_portset set;
	assert_int_equal(sp_portset_parse(NULL, &set, NULL), SP_ERR_INVALID);
}

static void test_item_and_text_caps(void **state)
{
	(void)state;
	size_t cap = (SP_PORTSET_MAX_ITEMS + 1) * 6 + 1;
	char *text = malloc(cap);
	assert_non_null(text);
	size_t len = 0;
	/* Exactly the maximum number of items parses (1, 3, 5, ...: no merging). */
	for (int i = 0; i < SP_PORTSET_MAX_ITEMS; i++)
		len += (size_t)snprintf(text + len, cap - len, "%s%d", i ? "," : "", 2 * i + 1);
	struct sp_portset set;
	assert_int_equal(sp_portset_parse(text, &set, NULL), 0);
	assert_int_equal(set.count, SP_PORTSET_MAX_ITEMS);
	assert_true(sp_portset_contains(&set, 2047));
	assert_false(sp_portset_contains(&set, 2046));
	assert_false(sp_portset_contains(&set, 2049));
	sp_portset_free(&set);
	/* One more is refused. */
	snprintf(text + len, cap - len, ",%d", 5000);
	expect_error(text, SP_ERR_TOO_LARGE, "more than 1024 items");
	free(text);

	char *huge = malloc(SP_PORTSET_TEXT_MAX + 2);
	assert_non_null(huge);
	memset(huge, '1', SP_PORTSET_TEXT_MAX + 1);
	huge[SP_PORTSET_TEXT_MAX + 1] = '\0';
	expect_error(huge, SP_ERR_TOO_LARGE, "longer than");
	free(huge);
}

static void test_contains_binary_search(void **state)
{
	(void)state;
	struct sp_portset set;
	assert_int_equal(sp_portset_parse("22,80,443,8000-8100,9000-9001,65535", &set, NULL), 0);
	assert_int_equal(set.count, 6);
	/* Check every port against the obvious definition. */
	for (uint32_t p = 0; p <= 65535; p++) {
		bool want = p == 22 || p == 80 || p == 443 || (p >= 8000 && p <= 8100) ||
			    p == 9000 || p == 9001 || p == 65535;
		if (sp_portset_contains(&set, (uint16_t)p) != want)
			fail_msg("port %u: expected %d", p, want);
	}
	sp_portset_free(&set);
}

static void expect_json_error(const char *json, const char *needle)
{
	json_error_t jerr;
	json_t *value = json_loads(json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	assert_non_null(value);
	struct sp_portset set;
	struct sp_diag diag = {{0}};
	int r = sp_portset_from_json(value, "tcp", &set, &diag);
	json_decref(value);
	assert_true(r == SP_ERR_INVALID || r == SP_ERR_TOO_LARGE);
	assert_int_equal(set.count, 0);
	if (strstr(diag.message, needle) == NULL)
		fail_msg("diag \"%s\" lacks \"%s\"", diag.message, needle);
}

static void expect_json_canonical(const char *json, const char *canonical_json)
{
	json_error_t jerr;
	json_t *value = json_loads(json, JSON_DECODE_ANY, &jerr);
	assert_non_null(value);
	struct sp_portset set, again;
	assert_int_equal(sp_portset_from_json(value, "udp", &set, NULL), 0);
	json_decref(value);
	json_t *out = NULL;
	assert_int_equal(sp_portset_to_json(&set, &out), 0);
	char *text = json_dumps(out, JSON_ENCODE_ANY | JSON_COMPACT);
	assert_string_equal(text, canonical_json);
	/* The canonical form parses back to the same set. */
	assert_int_equal(sp_portset_from_json(out, "udp", &again, NULL), 0);
	assert_true(sp_portset_equal(&set, &again));
	free(text);
	json_decref(out);
	sp_portset_free(&set);
	sp_portset_free(&again);
}

static void test_json_forms(void **state)
{
	(void)state;
	expect_json_canonical("\"all\"", "\"all\"");
	expect_json_canonical("\"none\"", "\"none\"");
	expect_json_canonical("[]", "\"none\"");
	expect_json_canonical("[\"53\"]", "[\"53\"]");
	expect_json_canonical("[\"443\", \"22\", \"8000-8100\", \"8050\"]",
			      "[\"22\",\"443\",\"8000-8100\"]");
	expect_json_canonical("[\"1-65535\"]", "\"all\"");
	expect_json_canonical("[\"1-1000\", \"1001-65535\"]", "\"all\"");
}

static void test_json_errors(void **state)
{
	(void)state;
	expect_json_error("22", "tcp: must be \"all\", \"none\" or an array");
	expect_json_error("true", "tcp: must be");
	expect_json_error("null", "tcp: must be");
	expect_json_error("{}", "tcp: must be");
	expect_json_error("\"some\"", "tcp: a string must be \"all\" or \"none\"");
	expect_json_error("\"22\"", "tcp: a string must be");
	expect_json_error("[22]", "tcp[0]: must be a string");
	expect_json_error("[\"22\", 443]", "tcp[1]: must be a string");
	expect_json_error("[\"22\", [\"443\"]]", "tcp[1]: must be a string");
	expect_json_error("[\"0\"]", "tcp[0]: port 0 is out of range");
	expect_json_error("[\"65536\"]", "tcp[0]: port 65536 is out of range");
	expect_json_error("[\"22\", \"8100-8000\"]", "tcp[1]: range start 8100 is above its end");
	expect_json_error("[\"all\"]", "tcp[0]: \"all\" is not a port number");
	expect_json_error("[\"22,23\"]", "tcp[0]");
	expect_json_error("[\"\"]", "tcp[0]: a port number is missing");
	expect_json_error("\"all\\u0000x\"", "tcp: a string must be");

	/* Too many items. */
	json_t *array = json_array();
	for (int i = 0; i <= SP_PORTSET_MAX_ITEMS; i++)
		json_array_append_new(array, json_string("22"));
	struct sp_portset set;
	struct sp_diag diag = {{0}};
	assert_int_equal(sp_portset_from_json(array, "udp", &set, &diag), SP_ERR_TOO_LARGE);
	assert_non_null(strstr(diag.message, "udp: more than 1024 items"));
	json_decref(array);
	assert_int_equal(sp_portset_from_json(NULL, NULL, &set, &diag), SP_ERR_INVALID);
}

static void test_copy_and_equal(void **state)
{
	(void)state;
	struct sp_portset a, b, c, none;
	assert_int_equal(sp_portset_parse("22,80-81", &a, NULL), 0);
	assert_int_equal(sp_portset_copy(&a, &b), 0);
	assert_true(sp_portset_equal(&a, &b));
	assert_true(b.ranges != a.ranges);
	assert_int_equal(sp_portset_parse("22,80", &c, NULL), 0);
	assert_false(sp_portset_equal(&a, &c));
	assert_int_equal(sp_portset_parse("none", &none, NULL), 0);
	struct sp_portset none_copy;
	assert_int_equal(sp_portset_copy(&none, &none_copy), 0);
	assert_true(sp_portset_equal(&none, &none_copy));
	assert_false(sp_portset_equal(&none, &a));
	sp_portset_free(&a);
	sp_portset_free(&b);
	sp_portset_free(&c);
	sp_portset_free(&none);
	sp_portset_free(&none_copy);
}

static void test_format_respects_buffer_cap(void **state)
{
	(void)state;
	struct sp_portset set;
	assert_int_equal(sp_portset_parse("22,443,8000-8100", &set, NULL), 0);
	char small[8];
	struct sp_buf buf;
	sp_buf_init_fixed(&buf, small, sizeof(small));
	assert_int_equal(sp_portset_format(&set, &buf), SP_ERR_TOO_LARGE);
	sp_portset_free(&set);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_keywords),
	    cmocka_unit_test(test_boundaries),
	    cmocka_unit_test(test_reversed_range_refused),
	    cmocka_unit_test(test_merging),
	    cmocka_unit_test(test_syntax_errors),
	    cmocka_unit_test(test_item_and_text_caps),
	    cmocka_unit_test(test_contains_binary_search),
	    cmocka_unit_test(test_json_forms),
	    cmocka_unit_test(test_json_errors),
	    cmocka_unit_test(test_copy_and_equal),
	    cmocka_unit_test(test_format_respects_buffer_cap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
