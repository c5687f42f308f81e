/*
 * Tests for connector/privdrop.c: the run-as decision, the /proc/<pid>/status parser and
 * the check of a dropped process (the system calls themselves are exercised by
 * tests/integration/connector_multi.py, which starts the connector as root).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "connector/privdrop.h"

static const char dropped[] = "Name:\tsallyport-conn\n"
			      "Umask:\t0077\n"
			      "State:\tS (sleeping)\n"
			      "Uid:\t65534\t65534\t65534\t65534\n"
			      "Gid:\t65534\t65534\t65534\t65534\n"
			      "Groups:\t\n"
			      "CapInh:\t0000000000000000\n"
			      "CapPrm:\t0000000000000000\n"
			      "CapEff:\t0000000000000000\n"
			      "CapBnd:\t0000000000000000\n"
			      "CapAmb:\t0000000000000000\n"
			      "NoNewPrivs:\t1\n"
			      "Seccomp:\t0\n";

static void test_decide(void **state)
{
	(void)state;
	enum connector_privdrop_action a = CONNECTOR_PRIVDROP_STAY_ROOT;
	struct sp_diag d = {{0}};
	assert_int_equal(connector_privdrop_decide(1000, NULL, 0, &a, &d), 0);
	assert_int_equal(a, CONNECTOR_PRIVDROP_NONE);
	assert_int_equal(connector_privdrop_decide(1000, "nobody", 0, &a, &d), 0);
	assert_int_equal(a, CONNECTOR_PRIVDROP_NONE);
	assert_int_equal(connector_privdrop_decide(0, "nobody", 0, &a, &d), 0);
	assert_int_equal(a, CONNECTOR_PRIVDROP_SWITCH);
	/* a user wins over the opt-out: never stay root when told whom to become */
	assert_int_equal(connector_privdrop_decide(0, "nobody", 1, &a, &d), 0);
	assert_int_equal(a, CONNECTOR_PRIVDROP_SWITCH);
	assert_int_equal(connector_privdrop_decide(0, NULL, 1, &a, &d), 0);
	assert_int_equal(a, CONNECTOR_PRIVDROP_STAY_ROOT);
	assert_int_equal(connector_privdrop_decide(0, NULL, 0, &a, &d), SP_ERR_INVALID);
	assert_int_equal(a, CONNECTOR_PRIVDROP_NONE);
	assert_non_null(strstr(d.message, "SALLYPORT_USER"));
	assert_non_null(strstr(d.message, "SALLYPORT_ALLOW_ROOT"));
	assert_int_equal(connector_privdrop_decide(0, "", 0, &a, &d), SP_ERR_INVALID);
}

static void test_parse_dropped(void **state)
{
	(void)state;
	struct connector_proc_status st;
	assert_int_equal(connector_proc_status_parse(dropped, strlen(dropped), &st), 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(st.uid[i], 65534);
		assert_int_equal(st.gid[i], 65534);
	}
	assert_int_equal(st.cap_bnd, 0);
	assert_int_equal(st.no_new_privs, 1);
	struct sp_diag d = {{0}};
	assert_int_equal(connector_privdrop_check(&st, 65534, 65534, &d), 0);
	assert_int_equal(connector_privdrop_check(&st, 65533, 65534, &d), SP_ERR_PERMISSION);
	assert_non_null(strstr(d.message, "uid slot 0"));
	assert_int_equal(connector_privdrop_check(&st, 65534, 100, &d), SP_ERR_PERMISSION);
	assert_non_null(strstr(d.message, "gid slot 0"));
}

static void replace(char *text, const char *from, const char *to)
{
	char *p = strstr(text, from);
	assert_non_null(p);
	assert_int_equal(strlen(from), strlen(to));
	memcpy(p, to, strlen(to));
}

static void test_check_refuses(void **state)
{
	(void)state;
	struct connector_proc_status st;
	struct sp_diag d = {{0}};
	char text[sizeof(dropped)];

	memcpy(text, dropped, sizeof(dropped));
	replace(text, "CapBnd:\t0000000000000000", "CapBnd:\t000001ffffffffff");
	assert_int_equal(connector_proc_status_parse(text, strlen(text), &st), 0);
	assert_true(st.cap_bnd == 0x1ffffffffffULL);
	assert_int_equal(connector_privdrop_check(&st, 65534, 65534, &d), SP_ERR_PERMISSION);
	assert_non_null(strstr(d.message, "CapBnd"));

	memcpy(text, dropped, sizeof(dropped));
	replace(text, "CapEff:\t0000000000000000", "CapEff:\t0000000000001000");
	assert_int_equal(connector_proc_status_parse(text, strlen(text), &st), 0);
	assert_int_equal(connector_privdrop_check(&st, 65534, 65534, &d), SP_ERR_PERMISSION);
	assert_non_null(strstr(d.message, "CapEff"));

	/* saved uid still root: the way back is open */
	memcpy(text, dropped, sizeof(dropped));
	replace(text, "Uid:\t65534\t65534\t65534\t", "Uid:\t65534\t65534\t0\t\t\t\t\t");
	assert_int_equal(connector_proc_status_parse(text, strlen(text), &st), 0);
	assert_int_equal(st.uid[2], 0);
	assert_int_equal(connector_privdrop_check(&st, 65534, 65534, &d), SP_ERR_PERMISSION);
	assert_non_null(strstr(d.message, "uid slot 2"));

	memcpy(text, dropped, sizeof(dropped));
	replace(text, "NoNewPrivs:\t1", "NoNewPrivs:\t0");
	assert_int_equal(connector_proc_status_parse(text, strlen(text), &st), 0);
	assert_int_equal(connector_privdrop_check(&st, 65534, 65534, &d), SP_ERR_PERMISSION);
	assert_non_null(strstr(d.message, "no_new_privs"));
}

static void test_parse_malformed(void **state)
{
	(void)state;
	struct connector_proc_status st;
	char text[sizeof(dropped)];
	/* a line missing */
	const char *no_bnd = strstr(dropped, "CapBnd");
	assert_int_equal(connector_proc_status_parse(dropped, (size_t)(no_bnd - dropped), &st),
			 SP_ERR_INVALID);
	/* a bad hex digit, too few ids, NoNewPrivs out of range */
	memcpy(text, dropped, sizeof(dropped));
	replace(text, "CapPrm:\t0000000000000000", "CapPrm:\t00000000000000g0");
	assert_int_equal(connector_proc_status_parse(text, strlen(text), &st), SP_ERR_INVALID);
	memcpy(text, dropped, sizeof(dropped));
	replace(text, "Gid:\t65534\t65534\t65534\t65534", "Gid:\t65534\t65534\t65534\t     ");
	assert_int_equal(connector_proc_status_parse(text, strlen(text), &st), SP_ERR_INVALID);
	memcpy(text, dropped, sizeof(dropped));
	replace(text, "NoNewPrivs:\t1", "NoNewPrivs:\t2");
	assert_int_equal(connector_proc_status_parse(text, strlen(text), &st), SP_ERR_INVALID);
	/* seventeen hex digits do not fit */
	const char *long_cap = "Uid:\t1\t1\t1\t1\nGid:\t1\t1\t1\t1\nCapInh:\t00000000000000000\n"
			       "CapPrm:\t0\nCapEff:\t0\nCapBnd:\t0\nCapAmb:\t0\nNoNewPrivs:\t1\n";
	assert_int_equal(connector_proc_status_parse(long_cap, strlen(long_cap), &st),
			 SP_ERR_INVALID);
	/* the same line twice */
	const char *twice = "Uid:\t1\t1\t1\t1\nUid:\t1\t1\t1\t1\nGid:\t1\t1\t1\t1\nCapInh:\t0\n"
			    "CapPrm:\t0\nCapEff:\t0\nCapBnd:\t0\nCapAmb:\t0\nNoNewPrivs:\t1\n";
	assert_int_equal(connector_proc_status_parse(twice, strlen(twice), &st), SP_ERR_INVALID);
	assert_int_equal(connector_proc_status_parse("", 0, &st), SP_ERR_INVALID);
}

static void test_lookup(void **state)
{
	(void)state;
	uid_t uid = 1;
	gid_t gid = 1;
	struct sp_diag d = {{0}};
	assert_int_equal(connector_privdrop_lookup("root", &uid, &gid, &d), SP_ERR_INVALID);
	assert_int_equal(uid, 0);
	assert_int_equal(connector_privdrop_lookup("no-such-user-sallyport", &uid, &gid, &d),
			 SP_ERR_NOT_FOUND);
	assert_non_null(strstr(d.message, "no such user"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decide),
		cmocka_unit_test(test_parse_dropped),
		cmocka_unit_test(test_check_refuses),
		cmocka_unit_test(test_parse_malformed),
		cmocka_unit_test(test_lookup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
