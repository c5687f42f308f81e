/* Unit tests for shared/resource_name.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "shared/resource_name.h"

static void expect_name(const char *text, const char *normal)
{
	char out[SP_RESOURCE_NAME_BUF];
	size_t len = 99;
	struct sp_diag diag = {{0}};
	if (sp_resource_name_normalize(text, out, &len, &diag) != 0)
		fail_msg("\"%s\" refused: %s", text, diag.message);
	assert_string_equal(out, normal);
	assert_int_equal(len, strlen(normal));
}

static void expect_name_error(const char *text, const char *needle)
{
	char out[SP_RESOURCE_NAME_BUF];
	size_t len = 99;
	struct sp_diag diag = {{0}};
	assert_int_equal(sp_resource_name_normalize(text, out, &len, &diag), SP_ERR_INVALID);
	assert_string_equal(out, "");
	assert_int_equal(len, 0);
	if (strstr(diag.message, needle) == NULL)
		fail_msg("\"%s\": diag \"%s\" lacks \"%s\"", text, diag.message, needle);
}

static void expect_pattern(const char *text, const char *normal, unsigned literals, unsigned stars,
			   unsigned questions)
{
	char out[SP_RESOURCE_NAME_BUF];
	size_t len;
	struct sp_resource_name_specificity spec;
	struct sp_diag diag = {{0}};
	if (sp_resource_name_parse_pattern(text, out, &len, &spec, &diag) != 0)
		fail_msg("\"%s\" refused: %s", text, diag.message);
	assert_string_equal(out, normal);
	assert_int_equal(len, strlen(normal));
	assert_int_equal(spec.literals, literals);
	assert_int_equal(spec.stars, stars);
	assert_int_equal(spec.questions, questions);
}

static void expect_pattern_error(const char *text, const char *needle)
{
	char out[SP_RESOURCE_NAME_BUF];
	struct sp_resource_name_specificity spec = {1, 1, 1};
	struct sp_diag diag = {{0}};
	assert_int_equal(sp_resource_name_parse_pattern(text, out, NULL, &spec, &diag),
			 SP_ERR_INVALID);
	assert_int_equal(spec.literals + spec.stars + spec.questions, 0);
	if (strstr(diag.message, needle) == NULL)
		fail_msg("\"%s\": diag \"%s\" lacks \"%s\"", text, diag.message, needle);
}

static void test_names_accepted_and_normalised(void **state)
{
	(void)state;
	expect_name("grafana.corp.example", "grafana.corp.example");
	expect_name("Grafana.CORP.Example", "grafana.corp.example");
	expect_name("grafana.corp.example.", "grafana.corp.example");
	expect_name("grafana", "grafana");
	expect_name("a-b.c-d.e", "a-b.c-d.e");
	expect_name("1e100.net", "1e100.net");
	expect_name("10.1.2.3.corp", "10.1.2.3.corp");
	expect_name("_ldap._tcp.corp.example", "_ldap._tcp.corp.example");
	expect_name("xn--bcher-kva.example", "xn--bcher-kva.example");
	expect_name("a.b0", "a.b0");
}

static void test_names_refused(void **state)
{
	(void)state;
	expect_name_error("", "empty");
	expect_name_error(".", "empty");
	expect_name_error("a..b", "label 2 is empty");
	expect_name_error(".a", "label 1 is empty");
	expect_name_error("a.b..", "label 3 is empty");
	expect_name_error("-a.corp", "label 1 starts with a hyphen");
	expect_name_error("a.b-.corp", "label 2 ends with a hyphen");
	expect_name_error("a_b.corp", "'_' is only allowed as the first character");
	expect_name_error("_.corp", "lone '_'");
	expect_name_error("_-x.corp", "starts with a hyphen");
	expect_name_error("a b.corp", "character ' ' at position 2");
	expect_name_error("a\x80.corp", "byte 0x80 at position 2");
	expect_name_error("*.corp", "wildcards ('*', '?') are not allowed in a host name");
	expect_name_error("a?.corp", "wildcards");
	expect_name_error("10.1.2.3", "last label is all digits");
	expect_name_error("corp.123", "all digits");
	expect_name_error("a/b", "character '/'");
	expect_name_error("a:b", "character ':'");
	char out[SP_RESOURCE_NAME_BUF];
	assert_int_equal(sp_resource_name_normalize(NULL, out, NULL, NULL), SP_ERR_INVALID);
}

static void test_name_length_limits(void **state)
{
	(void)state;
	char label63[64], label64[65], name[300];
	memset(label63, 'a', 63);
	label63[63] = '\0';
	memset(label64, 'a', 64);
	label64[64] = '\0';
	snprintf(name, sizeof(name), "%s.corp", label63);
	expect_name(name, name);
	snprintf(name, sizeof(name), "%s.corp", label64);
	expect_name_error(name, "label 1 is longer than 63 characters");

	/* 253 characters: four labels of 63 plus dots and one more char = 63*4+3 = 255 is too
	 * long; build exactly 253 = 63+1+63+1+63+1+61. */
	snprintf(name, sizeof(name), "%s.%s.%s.%.61s", label63, label63, label63, label63);
	assert_int_equal(strlen(name), 253);
	expect_name(name, name);
	/* With a trailing dot it is still fine. */
	char dotted[302];
	snprintf(dotted, sizeof(dotted), "%s.", name);
	expect_name(dotted, name);
	/* 254 is too long. */
	snprintf(name, sizeof(name), "%s.%s.%s.%.62s", label63, label63, label63, label63);
	assert_int_equal(strlen(name), 254);
	expect_name_error(name, "longer than 253 characters");
}

static void test_patterns(void **state)
{
	(void)state;
	expect_pattern("*.corp.example", "*.corp.example", 13, 1, 0);
	expect_pattern("*.CORP.example.", "*.corp.example", 13, 1, 0);
	expect_pattern("db-??.corp.example", "db-??.corp.example", 16, 0, 2);
	expect_pattern("db-*.corp.example", "db-*.corp.example", 16, 1, 0);
	expect_pattern("**.corp", "*.corp", 5, 1, 0);
	expect_pattern("a***b*?.corp", "a*b*?.corp", 7, 2, 1);
	expect_pattern("*-db.corp", "*-db.corp", 8, 1, 0);
	expect_pattern("_*._tcp.corp", "_*._tcp.corp", 11, 1, 0);
	expect_pattern("*.*.corp", "*.*.corp", 6, 2, 0);
}

static void test_patterns_refused(void **state)
{
	(void)state;
	expect_pattern_error("*", "last label must not hold a wildcard");
	expect_pattern_error("corp.*", "last label must not hold a wildcard");
	expect_pattern_error("*.c?m", "last label must not hold a wildcard");
	expect_pattern_error("*.123", "all digits");
	expect_pattern_error("corp.example", "no wildcard; use it as a plain name");
	expect_pattern_error("-*.corp", "starts with a hyphen");
	expect_pattern_error("*-.corp", "ends with a hyphen");
	expect_pattern_error("*..corp", "label 2 is empty");
	expect_pattern_error("a_*.corp", "'_' is only allowed");
	expect_pattern_error("*.co rp", "character ' '");
	expect_pattern_error("[ab].corp", "character '['");
	expect_pattern_error("", "empty");
}

/* The reference: a plain dynamic programme over (pattern position, name position). */
static bool dp_match(const char *pattern, const char *name)
{
	size_t pl = strlen(pattern), nl = strlen(name);
	bool *m = calloc((pl + 1) * (nl + 1), sizeof(bool));
	assert_non_null(m);
#define M(i, j) m[(i) * (nl + 1) + (j)]
	M(pl, nl) = true;
	for (size_t i = pl; i-- > 0;)
		for (size_t j = nl + 1; j-- > 0;) {
			if (pattern[i] == '*')
				M(i, j) = M(i + 1, j) || (j < nl && M(i, j + 1));
			else if (j < nl &&
				 (pattern[i] == name[j] || (pattern[i] == '?' && name[j] != '.')))
				M(i, j) = M(i + 1, j + 1);
		}
	bool result = M(0, 0);
#undef M
	free(m);
	return result;
}

static bool matches(const char *pattern, const char *name)
{
	bool got = sp_resource_name_pattern_matches(pattern, strlen(pattern), name, strlen(name));
	assert_int_equal(got, dp_match(pattern, name));
	return got;
}

static void test_wildcard_semantics(void **state)
{
	(void)state;
	/* '*' needs the literal suffix, so the apex never matches. */
	assert_true(matches("*.a.b", "x.a.b"));
	assert_false(matches("*.a.b", "a.b"));
	assert_false(matches("*.a.b", "xa.b"));
	/* '*' crosses dots. */
	assert_true(matches("*.a.b", "x.y.a.b"));
	assert_true(matches("*.a.b", "x.y.z.a.b"));
	/* '*' matches zero characters where the pattern allows it. */
	assert_true(matches("db*.corp", "db.corp"));
	assert_true(matches("db*.corp", "db-7.corp"));
	/* '?' is exactly one character, never a dot. */
	assert_true(matches("db-??.corp", "db-01.corp"));
	assert_false(matches("db-??.corp", "db-1.corp"));
	assert_false(matches("db-??.corp", "db-001.corp"));
	assert_false(matches("a?b.corp", "a.b.corp"));
	assert_true(matches("a?b.corp", "axb.corp"));
	/* Several stars, with backtracking. */
	assert_true(matches("*a*b.corp", "xxaxxbxxb.corp"));
	assert_false(matches("*a*b.corp", "xxbxxa.corp"));
	assert_true(matches("*-*-*.corp", "a-b-c.corp"));
	assert_false(matches("*-*-*.corp", "a-b.corp"));
	assert_true(matches("*.*.corp", "a.b.corp"));
	assert_false(matches("*.*.corp", "a.corp"));
	/* Suffix anchoring: the pattern must reach the end of the name. */
	assert_false(matches("*.corp", "a.corp.evil"));
	assert_false(matches("*.corp", "a.corpx"));
	assert_false(matches("*.corp", "evilcorp"));
	/* Empty inputs never crash. */
	assert_true(sp_resource_name_pattern_matches("*", 1, "", 0));
	assert_false(sp_resource_name_pattern_matches("a", 1, "", 0));
	assert_true(sp_resource_name_pattern_matches("", 0, "", 0));
}

/* The matcher agrees with the DP reference on many random small inputs. */
static void test_matcher_against_reference(void **state)
{
	(void)state;
	const char pattern_chars[] = "ab.-*?";
	const char name_chars[] = "ab.-";
	srand(12345);
	for (int round = 0; round < 200000; round++) {
		char pattern[12], name[14];
		size_t pl = (size_t)(rand() % 10), nl = (size_t)(rand() % 13);
		for (size_t i = 0; i < pl; i++)
			pattern[i] = pattern_chars[rand() % 6];
		pattern[pl] = '\0';
		for (size_t i = 0; i < nl; i++)
			name[i] = name_chars[rand() % 4];
		name[nl] = '\0';
		bool got = sp_resource_name_pattern_matches(pattern, pl, name, nl);
		if (got != dp_match(pattern, name))
			fail_msg("pattern \"%s\" name \"%s\": got %d", pattern, name, got);
	}
}

static void test_specificity_order(void **state)
{
	(void)state;
	struct sp_resource_name_specificity question2 = {16, 0, 2}, star1 = {16, 1, 0},
					    longer = {20, 3, 0}, question1 = {16, 0, 1};
	/* Same literals: no '*' beats one '*'. */
	assert_true(sp_resource_name_specificity_compare(&question2, &star1) < 0);
	assert_true(sp_resource_name_specificity_compare(&star1, &question2) > 0);
	/* More literals beats everything else. */
	assert_true(sp_resource_name_specificity_compare(&longer, &question2) < 0);
	/* Then fewer '?'. */
	assert_true(sp_resource_name_specificity_compare(&question1, &question2) < 0);
	assert_int_equal(sp_resource_name_specificity_compare(&star1, &star1), 0);
}

static void expect_key(const char *pattern, const char *key)
{
	size_t offset;
	assert_int_equal(sp_resource_name_pattern_key(pattern, strlen(pattern), &offset), 0);
	assert_string_equal(pattern + offset, key);
}

static void test_pattern_key(void **state)
{
	(void)state;
	expect_key("*.corp.example", "corp.example");
	expect_key("db-??.corp.example", "corp.example");
	expect_key("db-*x.corp", "corp");
	expect_key("*.b.*.corp.example", "corp.example");
	size_t offset;
	assert_int_equal(sp_resource_name_pattern_key("corp.example", 12, &offset), SP_ERR_INVALID);
	assert_int_equal(sp_resource_name_pattern_key("corp.*", 6, &offset), SP_ERR_INVALID);
	assert_int_equal(sp_resource_name_pattern_key("corp.", 5, &offset), SP_ERR_INVALID);
	assert_int_equal(sp_resource_name_pattern_key("*.", 2, &offset), SP_ERR_INVALID);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names_accepted_and_normalised),
	    cmocka_unit_test(test_names_refused),
	    cmocka_unit_test(test_name_length_limits),
	    cmocka_unit_test(test_patterns),
	    cmocka_unit_test(test_patterns_refused),
	    cmocka_unit_test(test_wildcard_semantics),
	    cmocka_unit_test(test_matcher_against_reference),
	    cmocka_unit_test(test_specificity_order),
	    cmocka_unit_test(test_pattern_key),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
