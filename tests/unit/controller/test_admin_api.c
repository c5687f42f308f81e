/*
 * Tests for the pure helpers of controller/admin_api.c (limits, cursors, ids, text,
 * request-body field checking with unknown-field refusal and canonical forms, constraint
 * messages) and for the shared connector enrollment token function on a migrated sqlite
 * database.
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

#include "controller/admin_api.h"
#include "controller/db.h"

static void ids(void **state)
{
	(void)state;
	assert_true(admin_id_valid("0123456789abcdef0123456789abcdef"));
	assert_false(admin_id_valid("0123456789ABCDEF0123456789abcdef"));
	assert_false(admin_id_valid("0123456789abcdef0123456789abcde"));
	assert_false(admin_id_valid("0123456789abcdef0123456789abcdef0"));
	assert_false(admin_id_valid("0123456789abcdef0123456789abcdeg"));
	assert_false(admin_id_valid("' OR 1=1 --"));
	assert_false(admin_id_valid(""));
	assert_false(admin_id_valid(NULL));
}

static void limits_and_integers(void **state)
{
	(void)state;
	unsigned limit = 0;
	struct sp_diag d = {{0}};
	assert_int_equal(admin_parse_limit(NULL, 100, 1000, &limit, &d), 0);
	assert_int_equal(limit, 100);
	assert_int_equal(admin_parse_limit("1", 100, 1000, &limit, &d), 0);
	assert_int_equal(limit, 1);
	assert_int_equal(admin_parse_limit("1000", 100, 1000, &limit, &d), 0);
	assert_int_equal(limit, 1000);
	static const char *const bad[] = {"0",	 "1001", "-1", "",
					  "10x", "1e3",	 " 5", "99999999999999999999"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(admin_parse_limit(bad[i], 100, 1000, &limit, &d), SP_ERR_INVALID);
		assert_int_equal(limit, 100);
		assert_non_null(strstr(d.message, "limit"));
	}
	int64_t n = -1;
	assert_int_equal(admin_parse_int("1700000000", "since", &n, &d), 0);
	assert_int_equal(n, 1700000000);
	assert_int_equal(admin_parse_int("17a", "since", &n, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "since"));
	assert_int_equal(n, 0);
}

static void text_values(void **state)
{
	(void)state;
	struct sp_diag d = {{0}};
	assert_int_equal(admin_text_check("eng'; DROP TABLE users;--", 25, 1, 128, "name", &d), 0);
	assert_int_equal(admin_text_check("", 0, 1, 128, "name", &d), SP_ERR_INVALID);
	assert_string_equal(d.message, "field \"name\" must be 1 to 128 bytes long");
	assert_int_equal(admin_text_check("a\nb", 3, 1, 128, "name", &d), SP_ERR_INVALID);
	assert_string_equal(d.message, "field \"name\" holds a control character at byte 2");
	assert_int_equal(admin_text_check("ab", 3, 1, 128, "name", &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "NUL"));
}

static json_t *all(void)
{
	return json_string("all");
}
static json_t *yes(void)
{
	return json_true();
}
static const char *const states[] = {"active", "disabled", NULL};
static const struct admin_field fields[] = {
    {.name = "name",
     .column = "name",
     .type = ADMIN_FIELD_TEXT,
     .flags = ADMIN_REQUIRED,
     .min = 1,
     .max = 16},
    {.name = "network_id",
     .column = "network_id",
     .type = ADMIN_FIELD_ID,
     .flags = ADMIN_REQUIRED | ADMIN_CREATE_ONLY},
    {.name = "address", .column = "address", .type = ADMIN_FIELD_ADDRESS},
    {.name = "alias", .column = "alias", .type = ADMIN_FIELD_ALIAS, .flags = ADMIN_NULLABLE},
    {.name = "tcp", .column = "tcp_ports", .type = ADMIN_FIELD_PORTS, .default_value = all},
    {.name = "icmp", .column = "icmp", .type = ADMIN_FIELD_BOOL, .default_value = yes},
    {.name = "age", .column = "age", .type = ADMIN_FIELD_INT, .min = 0, .max = 100},
    {.name = "state",
     .column = "state",
     .type = ADMIN_FIELD_ENUM,
     .flags = ADMIN_UPDATE_ONLY,
     .values = states},
};
#define NFIELDS (sizeof(fields) / sizeof(fields[0]))
#define NET "\"network_id\":\"0123456789abcdef0123456789abcdef\""

/* Checks `text` and returns the error message, or "" with *out set on success. */
static const char *check(const char *text, int creating, json_t **out)
{
	static struct sp_diag d;
	memset(&d, 0, sizeof(d));
	json_t *body = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
	assert_non_null(body);
	json_t *values = NULL;
	int r = admin_fields_check(body, fields, NFIELDS, creating, &values, &d);
	json_decref(body);
	if (r < 0) {
		assert_int_equal(r, SP_ERR_INVALID);
		assert_null(values);
		return d.message;
	}
	if (out != NULL)
		*out = values;
	else
		json_decref(values);
	return "";
}

static void fields_canonical_forms(void **state)
{
	(void)state;
	json_t *v = NULL;
	assert_string_equal(check("{\"name\":\"g\"," NET ",\"address\":\"Grafana.Corp.Example.\","
				  "\"alias\":\"G.SP\",\"tcp\":[\"443\",\"22\",\"23\"]}",
				  1, &v),
			    "");
	assert_string_equal(json_string_value(json_object_get(v, "address")),
			    "grafana.corp.example");
	assert_string_equal(json_string_value(json_object_get(v, "alias")), "g.sp");
	char *tcp = json_dumps(json_object_get(v, "tcp"), JSON_COMPACT);
	assert_string_equal(tcp, "[\"22-23\",\"443\"]");
	free(tcp);
	assert_true(json_is_true(json_object_get(v, "icmp"))); /* default */
	assert_null(json_object_get(v, "age"));		       /* no default: the column's */
	json_decref(v);

	assert_string_equal(check("{\"name\":\"g\"," NET
				  ",\"address\":\"10.1.2.0/24\",\"alias\":null,"
				  "\"tcp\":\"none\"}",
				  1, &v),
			    "");
	assert_true(json_is_null(json_object_get(v, "alias")));
	assert_string_equal(json_string_value(json_object_get(v, "tcp")), "none");
	json_decref(v);

	/* An update carries only what was given: no defaults, no required fields. */
	assert_string_equal(check("{\"state\":\"disabled\"}", 0, &v), "");
	assert_int_equal(json_object_size(v), 1);
	json_decref(v);
}

static void fields_refusals(void **state)
{
	(void)state;
	assert_string_equal(check("{\"name\":\"g\"," NET ",\"bogus\":1}", 1, NULL),
			    "unknown field \"bogus\"");
	assert_string_equal(check("{" NET "}", 1, NULL), "field \"name\" is missing");
	assert_string_equal(check("{\"name\":7," NET "}", 1, NULL),
			    "field \"name\" must be a string");
	assert_string_equal(check("{\"name\":null," NET "}", 1, NULL),
			    "field \"name\" must not be null");
	assert_string_equal(check("{\"name\":\"01234567890123456\"," NET "}", 1, NULL),
			    "field \"name\" must be 1 to 16 bytes long");
	assert_string_equal(check("{\"name\":\"g\",\"network_id\":\"12\"}", 1, NULL),
			    "field \"network_id\" must be an id (32 lower-case hex digits)");
	assert_string_equal(check("{\"name\":\"g\"," NET ",\"icmp\":\"yes\"}", 1, NULL),
			    "field \"icmp\" must be true or false");
	assert_string_equal(check("{\"name\":\"g\"," NET ",\"age\":101}", 1, NULL),
			    "field \"age\" must be between 0 and 100");
	assert_string_equal(check("{\"name\":\"g\"," NET ",\"age\":1.5}", 1, NULL),
			    "field \"age\" must be an integer");
	/* update-only on create, create-only on update */
	assert_string_equal(check("{\"name\":\"g\"," NET ",\"state\":\"active\"}", 1, NULL),
			    "unknown field \"state\"");
	assert_string_equal(check("{" NET "}", 0, NULL), "field \"network_id\" cannot be changed");
	assert_string_equal(check("{\"state\":\"revoked\"}", 0, NULL),
			    "field \"state\" must be one of: active, disabled");
	/* addresses and ports as the shared resource parser sees them */
	assert_non_null(strstr(check("{\"address\":\"10.0.0.1/24\"}", 0, NULL),
			       "field \"address\": \"10.0.0.1/24\" has host bits set"));
	assert_non_null(strstr(check("{\"address\":\"*.\"}", 0, NULL), "field \"address\": "));
	assert_non_null(strstr(check("{\"alias\":\"*.sp\"}", 0, NULL), "field \"alias\": "));
	assert_string_equal(check("{\"tcp\":[\"0\"]}", 0, NULL),
			    "tcp[0]: port 0 is out of range 1-65535");
	assert_non_null(strstr(check("{\"tcp\":[\"22\",\"8100-8000\"]}", 0, NULL), "tcp[1]: "));
	assert_non_null(strstr(check("{\"tcp\":\"some\"}", 0, NULL), "tcp"));
	assert_non_null(strstr(check("{\"tcp\":[22]}", 0, NULL), "tcp[0]"));

	json_t *arr = json_array(), *out = NULL;
	struct sp_diag d;
	assert_int_equal(admin_fields_check(arr, fields, NFIELDS, 1, &out, &d), SP_ERR_INVALID);
	assert_null(out);
	json_decref(arr);
}

/* PEM text may span lines; other control characters stay refused. */
static void multiline_text(void **state)
{
	(void)state;
	static const struct admin_field pem[] = {
	    {.name = "pem",
	     .column = "pem",
	     .type = ADMIN_FIELD_TEXT,
	     .flags = ADMIN_REQUIRED | ADMIN_MULTILINE,
	     .min = 1,
	     .max = 64},
	};
	struct sp_diag d = {{0}};
	json_t *out = NULL;
	json_t *body = json_pack("{s:s}", "pem", "-----BEGIN\r\nAAAA\n-----END\n");
	assert_int_equal(admin_fields_check(body, pem, 1, 1, &out, &d), 0);
	json_decref(out);
	json_decref(body);
	body = json_pack("{s:s}", "pem", "AAAA\tBBBB");
	assert_int_equal(admin_fields_check(body, pem, 1, 1, &out, &d), SP_ERR_INVALID);
	assert_string_equal(d.message, "field \"pem\" holds a control character at byte 5");
	json_decref(body);
	body = json_loads("{\"pem\":\"AA\\u0000\\nBB\"}", JSON_ALLOW_NUL, NULL);
	assert_non_null(body);
	assert_int_equal(admin_fields_check(body, pem, 1, 1, &out, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "NUL"));
	json_decref(body);
	/* without the flag a line break is refused */
	assert_non_null(
	    strstr(check("{\"name\":\"a\\nb\"," NET "}", 1, NULL), "control character"));
}

static void constraint_messages(void **state)
{
	(void)state;
	char m[256];
	assert_int_equal(admin_constraint_status(DB_CONSTRAINT_UNIQUE, "alias",
						 "UNIQUE constraint failed: resources.alias",
						 "resource", 0, m, sizeof(m)),
			 409);
	assert_string_equal(m, "a resource with this alias already exists");
	assert_int_equal(admin_constraint_status(DB_CONSTRAINT_UNIQUE, "group_id, resource_id",
						 "UNIQUE constraint failed: policies.group_id, "
						 "policies.resource_id",
						 "policy", 0, m, sizeof(m)),
			 409);
	assert_string_equal(m, "a policy with this group_id and resource_id already exists");
	assert_int_equal(
	    admin_constraint_status(DB_CONSTRAINT_UNIQUE, "", "duplicate", "user", 0, m, sizeof(m)),
	    409);
	assert_string_equal(m, "this user already exists");
	assert_int_equal(admin_constraint_status(DB_CONSTRAINT_FOREIGN_KEY, NULL,
						 "FOREIGN KEY constraint failed", "remote network",
						 1, m, sizeof(m)),
			 409);
	assert_non_null(strstr(m, "still in use"));
	assert_int_equal(admin_constraint_status(DB_CONSTRAINT_FOREIGN_KEY, NULL,
						 "FOREIGN KEY constraint failed", "policy", 0, m,
						 sizeof(m)),
			 404);
	assert_int_equal(admin_constraint_status(DB_CONSTRAINT_RULE, NULL, "the last admin", "user",
						 0, m, sizeof(m)),
			 409);
	assert_string_equal(m, "the user cannot be changed: the last admin");
	assert_int_equal(admin_constraint_status(DB_CONSTRAINT_CHECK, NULL,
						 "CHECK constraint failed: role", "user", 0, m,
						 sizeof(m)),
			 400);
	assert_int_equal(admin_constraint_status(DB_CONSTRAINT_NONE, NULL, "disk I/O error", "user",
						 0, m, sizeof(m)),
			 500);
	assert_string_equal(m, "the store failed: disk I/O error");
}

static void enrollment_tokens(void **state)
{
	(void)state;
	char dir[64], path[128], cmd[160];
	snprintf(dir, sizeof(dir), "/tmp/sp-admin-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/controller.db", dir);
	struct db *db = NULL;
	int applied = 0;
	assert_int_equal(db_open(&db_sqlite_driver, path, 0, &db, NULL), 0);
	assert_int_equal(db_migrate(db, &applied, NULL), 0);
	assert_int_equal(db_exec(db, "INSERT INTO remote_networks (id, name, created_at,"
				     " updated_at) VALUES ('0123456789abcdef0123456789abcdef',"
				     " 'vpc', 1, 1)"),
			 0);
	char token[SP_SECRET_TEXT_MAX], id[33];
	json_t *after = NULL;
	struct sp_diag d = {{0}};
	assert_int_equal(admin_connector_token_create(db, "0123456789abcdef0123456789abcdef", 1000,
						      3600, token, id, &after, &d),
			 0);
	assert_int_equal(strncmp(token, "spe_", 4), 0);
	assert_int_equal(json_integer_value(json_object_get(after, "expires_at")), 4600);
	assert_null(json_object_get(after, "token"));
	char *text = json_dumps(after, 0);
	assert_null(strstr(text, token + 4)); /* the audit object holds no secret */
	free(text);
	json_decref(after);

	/* stored as its SHA-256 only */
	char hash[SP_SECRET_HASH_HEX];
	assert_int_equal(sp_secret_hash(token, strlen(token), hash), 0);
	struct db_stmt *st;
	assert_int_equal(db_prepare(db,
				    "SELECT token_hash, network_id FROM"
				    " connector_enrollment_tokens WHERE id = ?",
				    &st),
			 0);
	db_bind_text(st, 1, id, -1, DB_STATIC);
	assert_int_equal(db_step(st), DB_ROW);
	assert_string_equal((const char *)db_column_text(st, 0), hash);
	db_finalize(st);

	assert_int_equal(admin_connector_token_create(db, "ffffffffffffffffffffffffffffffff", 1000,
						      3600, token, id, &after, &d),
			 SP_ERR_NOT_FOUND);
	assert_null(after);
	assert_string_equal(token, "");
	assert_int_equal(admin_connector_token_create(db, "0123456789abcdef0123456789abcdef", 1000,
						      59, token, id, &after, &d),
			 SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "ttl_s"));
	db_close(db);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(ids),
	    cmocka_unit_test(limits_and_integers),
	    cmocka_unit_test(text_values),
	    cmocka_unit_test(fields_canonical_forms),
	    cmocka_unit_test(fields_refusals),
	    cmocka_unit_test(multiline_text),
	    cmocka_unit_test(constraint_messages),
	    cmocka_unit_test(enrollment_tokens),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
