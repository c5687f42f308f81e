/*
 * Tests for connector/identity.c paths that need no controller: the state directory's
 * mode, a missing token, a saved identity reused, a loose identity file refused.
 */
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

#include "connector/identity.h"
#include "shared/jwk.h"
#include "shared/keys.h"

static char root[64];

static int setup(void **state)
{
	(void)state;
	snprintf(root, sizeof(root), "/tmp/sp-identity-XXXXXX");
	assert_non_null(mkdtemp(root));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static void test_state_dir_created_0700_and_token_required(void **state)
{
	(void)state;
	char dir[128];
	snprintf(dir, sizeof(dir), "%s/state", root);
	struct connector_enroll_params p = {.state_dir = dir, .controller_url = "http://127.0.0.1:1",
					    .name = "c1", .version = "t"};
	struct connector_identity id;
	struct sp_diag d = {{0}};
	assert_int_equal(connector_identity_load_or_enroll(&p, &id, &d), SP_ERR_NOT_FOUND);
	assert_non_null(strstr(d.message, "SALLYPORT_ENROLL_TOKEN"));
	connector_identity_free(&id);
	struct stat st;
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	char key[160];
	snprintf(key, sizeof(key), "%s/connector.key", dir);
	assert_int_equal(stat(key, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_open_state_dir_refused(void **state)
{
	(void)state;
	char dir[128];
	snprintf(dir, sizeof(dir), "%s/open", root);
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_int_equal(chmod(dir, 0755), 0);
	struct connector_enroll_params p = {.state_dir = dir, .controller_url = "http://127.0.0.1:1",
					    .enroll_token = "spe_x", .name = "c1", .version = "t"};
	struct connector_identity id;
	struct sp_diag d = {{0}};
	assert_int_equal(connector_identity_load_or_enroll(&p, &id, &d), SP_ERR_PERMISSION);
	assert_non_null(strstr(d.message, "chmod 700"));
	connector_identity_free(&id);
}

static void write_identity(const char *dir, mode_t mode)
{
	EVP_PKEY *k = NULL;
	assert_int_equal(sp_key_generate(&k), 0);
	json_t *jwk = NULL;
	assert_int_equal(sp_jwk_export_public(k, "kid1", &jwk), 0);
	json_t *doc = json_pack("{s:s, s:s, s:{s:[o]}}", "connector_id",
				"0123456789abcdef0123456789abcdef", "network_id",
				"fedcba9876543210fedcba9876543210", "controller_jwks", "keys", jwk);
	char path[160];
	snprintf(path, sizeof(path), "%s/identity.json", dir);
	assert_int_equal(json_dump_file(doc, path, 0), 0);
	assert_int_equal(chmod(path, mode), 0);
	json_decref(doc);
	EVP_PKEY_free(k);
}

static void test_saved_identity_reused_without_token(void **state)
{
	(void)state;
	char dir[128];
	snprintf(dir, sizeof(dir), "%s/saved", root);
	assert_int_equal(mkdir(dir, 0700), 0);
	write_identity(dir, 0600);
	struct connector_enroll_params p = {.state_dir = dir, .controller_url = "http://127.0.0.1:1",
					    .name = "c1", .version = "t"};
	struct connector_identity id;
	struct sp_diag d = {{0}};
	assert_int_equal(connector_identity_load_or_enroll(&p, &id, &d), 0);
	assert_string_equal(id.connector_id, "0123456789abcdef0123456789abcdef");
	assert_string_equal(id.network_id, "fedcba9876543210fedcba9876543210");
	assert_int_equal(id.keys.count, 1);
	assert_int_equal(id.enrolled_now, 0);
	assert_non_null(id.key);
	connector_identity_free(&id);
}

static void test_loose_identity_file_refused(void **state)
{
	(void)state;
	char dir[128];
	snprintf(dir, sizeof(dir), "%s/loose", root);
	assert_int_equal(mkdir(dir, 0700), 0);
	write_identity(dir, 0644);
	struct connector_enroll_params p = {.state_dir = dir, .controller_url = "http://127.0.0.1:1",
					    .name = "c1", .version = "t"};
	struct connector_identity id;
	struct sp_diag d = {{0}};
	assert_int_equal(connector_identity_load_or_enroll(&p, &id, &d), SP_ERR_PERMISSION);
	assert_non_null(strstr(d.message, "chmod 600"));
	connector_identity_free(&id);
}

static void test_controller_unreachable(void **state)
{
	(void)state;
	char dir[128];
	snprintf(dir, sizeof(dir), "%s/unreachable", root);
	/* port 1 on loopback: connection refused at once */
	struct connector_enroll_params p = {.state_dir = dir, .controller_url = "http://127.0.0.1:1",
					    .enroll_token = "spe_x", .name = "c1", .version = "t"};
	struct connector_identity id;
	struct sp_diag d = {{0}};
	assert_int_equal(connector_identity_load_or_enroll(&p, &id, &d), SP_ERR_IO);
	assert_non_null(strstr(d.message, "unreachable"));
	connector_identity_free(&id);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_state_dir_created_0700_and_token_required, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_open_state_dir_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_saved_identity_reused_without_token, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_loose_identity_file_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_controller_unreachable, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
