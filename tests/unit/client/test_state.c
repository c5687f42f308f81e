/* Unit tests for client/state.c: the state directory and the session file. */
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
#include <jansson.h>

#include "client/state.h"

static char base[256];

static int setup(void **state)
{
	(void)state;
	snprintf(base, sizeof(base), "/tmp/sp-client-state-XXXXXX");
	assert_non_null(mkdtemp(base));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
	assert_int_equal(system(cmd), 0);
	unsetenv("SALLYPORT_STATE_DIR");
	return 0;
}

static void test_dir_created_0700_and_tightened(void **state)
{
	(void)state;
	char want[512], dir[STATE_PATH_MAX];
	snprintf(want, sizeof(want), "%s/a/b/sallyport", base);
	setenv("SALLYPORT_STATE_DIR", want, 1);
	struct sp_diag diag = {{0}};
	assert_int_equal(state_dir_open(dir, sizeof(dir), &diag), 0);
	assert_string_equal(dir, want);
	struct stat st;
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(chmod(dir, 0755), 0);
	assert_int_equal(state_dir_open(dir, sizeof(dir), &diag), 0);
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	/* a file in the way */
	char file[600];
	snprintf(file, sizeof(file), "%s/plain", base);
	FILE *f = fopen(file, "w");
	assert_non_null(f);
	fclose(f);
	setenv("SALLYPORT_STATE_DIR", file, 1);
	assert_int_equal(state_dir_open(dir, sizeof(dir), &diag), SP_ERR_INVALID);
	assert_non_null(strstr(diag.message, "not a directory"));
	/* too long */
	char longp[STATE_PATH_MAX + 10];
	memset(longp, 'a', sizeof(longp));
	longp[0] = '/';
	longp[sizeof(longp) - 1] = '\0';
	setenv("SALLYPORT_STATE_DIR", longp, 1);
	assert_int_equal(state_dir_open(dir, sizeof(dir), &diag), SP_ERR_TOO_LARGE);
}

static void test_session_round_trip(void **state)
{
	(void)state;
	struct sp_diag diag = {{0}};
	json_t *s = NULL;
	assert_int_equal(state_session_load(base, &s, &diag), SP_ERR_NOT_FOUND);
	assert_null(s);
	assert_non_null(strstr(diag.message, "sallyport login"));
	json_t *in = json_pack("{s:s, s:s, s:s, s:s}", "controller", "https://ctl.example",
			       "device_id", "d1", "session_id", "s1", "refresh_token", "spr_x");
	assert_int_equal(state_session_save(base, in, &diag), 0);
	char path[STATE_PATH_MAX];
	assert_int_equal(state_path(base, "session.json", path, sizeof(path)), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(state_session_load(base, &s, &diag), 0);
	assert_true(json_equal(in, s));
	json_decref(s);
	/* a readable-by-others file is refused */
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(state_session_load(base, &s, &diag), SP_ERR_PERMISSION);
	assert_non_null(strstr(diag.message, "0600"));
	/* saving again replaces it with 0600 */
	assert_int_equal(state_session_save(base, in, &diag), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	json_decref(in);
	/* wrong shapes */
	const char *bad[] = {"[]", "{\"controller\":\"x\"}", "not json",
			     "{\"controller\":\"x\",\"device_id\":\"d\",\"refresh_token\":5}"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		FILE *f = fopen(path, "w");
		assert_non_null(f);
		fputs(bad[i], f);
		fclose(f);
		assert_int_equal(state_session_load(base, &s, &diag), SP_ERR_INVALID);
		assert_null(s);
	}
	assert_int_equal(state_session_forget(base), 0);
	assert_int_equal(state_session_forget(base), 0); /* absent is fine */
	assert_int_equal(state_session_load(base, &s, &diag), SP_ERR_NOT_FOUND);
}

static void test_path(void **state)
{
	(void)state;
	char out[16];
	assert_int_equal(state_path("/a", "b", out, sizeof(out)), 0);
	assert_string_equal(out, "/a/b");
	assert_int_equal(state_path("/aaaaaaaaaa", "bbbbbbbb", out, sizeof(out)), SP_ERR_TOO_LARGE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_dir_created_0700_and_tightened, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_session_round_trip, setup, teardown),
	    cmocka_unit_test(test_path),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
