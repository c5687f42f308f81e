/*
 * controller/admin_identity.c — the admin API's identity side (/api/v1): users, groups
 * and their members, policies, devices (approve, block), sessions (revoke), service
 * accounts and their keys, and admin API keys.
 *
 * Rules beyond the generic handlers of controller/admin_api.c:
 *   - groups mirrored from the IdP (source 'idp') are rewritten at every sign-in, so
 *     they cannot be edited or have members changed by hand (409);
 *   - disabling a user or blocking a device revokes their live sessions in the same
 *     transaction (the schema's triggers push the change to connectors);
 *   - secrets (API keys) are shown once in the creation answer and never again; public
 *     keys of service accounts are stored with their SPKI SHA-256 digest, never a
 *     private key;
 *   - revoking (sessions, API keys, service-account keys) keeps the row and sets
 *     revoked_at; revoking twice changes nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "controller/admin_api.h"
#include "controller/apikey.h"
#include "controller/auth.h"
#include "controller/routes.h"
#include "controller/store.h"
#include "shared/keys.h"
#include "shared/secret.h"

/* Runs `sql` with ?1 = now and ?2 = id. 0 or SP_ERR_DATABASE. */
static int exec_now_id(struct controller *c, const char *sql, int64_t now, const char *id)
{
	struct db_stmt *st = NULL;
	int r = SP_ERR_DATABASE;
	if (db_prepare(c->db, sql, &st) == 0) {
		db_bind_int64(st, 1, now);
		db_bind_text(st, 2, id, -1, DB_TRANSIENT);
		if (db_step(st) == DB_DONE)
			r = 0;
	}
	db_finalize(st);
	return r;
}

/* Opens a transaction and loads the row `id`; replies itself and returns NULL on failure. */
static json_t *begin_and_load(struct http_request *req, struct controller *c,
			      const struct admin_collection *coll, const char *id)
{
	struct sp_diag d = {{0}};
	json_t *obj = NULL;
	if (store_begin(c, &d) < 0) {
		http_reply_error(req, 503, "unavailable", "%s", d.message);
		return NULL;
	}
	int r = admin_load(c, coll, id, &obj);
	if (r < 0) {
		store_rollback(c);
		if (r == SP_ERR_NOT_FOUND)
			http_reply_error(req, 404, "not_found", "there is no %s with id \"%s\"",
					 coll->label, id);
		else
			http_reply_error(req, 500, "internal", "the %s could not be read",
					 coll->label);
	}
	return obj;
}

/* ---- users ---- */

static const char *const user_roles[] = {"user", "auditor", "admin", NULL};

static const struct admin_field user_fields[] = {
    {.name = "role",
     .column = "role",
     .type = ADMIN_FIELD_ENUM,
     .flags = ADMIN_UPDATE_ONLY,
     .values = user_roles},
    {.name = "disabled",
     .column = "disabled",
     .type = ADMIN_FIELD_BOOL,
     .flags = ADMIN_UPDATE_ONLY},
};

static const struct admin_filter user_filters[] = {
    {"email", "email = ?", ADMIN_FILTER_TEXT},
    {"kind", "kind = ?", ADMIN_FILTER_TEXT},
    {"role", "role = ?", ADMIN_FILTER_TEXT},
    {"disabled", "disabled = ?", ADMIN_FILTER_BOOL},
    {"group_id", "id IN (SELECT user_id FROM memberships WHERE group_id = ?)", ADMIN_FILTER_ID},
};

static const char *const user_bool_columns[] = {"email_verified", "disabled", NULL};

/* Disabling a user ends their sessions now, not at the next refresh, and their console
 * sessions for good (enabling them again must not revive a cookie taken meanwhile). */
static int user_after_update(struct controller *c, struct http_request *req, const char *id,
			     const json_t *before, const json_t *after, struct sp_diag *diag)
{
	(void)req;
	(void)diag;
	if (json_is_true(json_object_get(after, "disabled")))
		auth_console_end_user(c, id);
	if (json_is_true(json_object_get(after, "disabled")) &&
	    !json_is_true(json_object_get(before, "disabled")))
		return exec_now_id(c,
				   "UPDATE sessions SET revoked_at = ?1, revoke_reason ="
				   " 'user_disabled' WHERE user_id = ?2 AND revoked_at IS NULL",
				   c->now(), id);
	return 0;
}

/* The schema keeps service accounts at role user; say so before the CHECK does. */
static int user_check(const json_t *merged, struct sp_diag *diag)
{
	const char *kind = json_string_value(json_object_get(merged, "kind"));
	const char *role = json_string_value(json_object_get(merged, "role"));
	if (kind != NULL && role != NULL && strcmp(kind, "service") == 0 &&
	    strcmp(role, "user") != 0)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "field \"role\": a service account's role is always \"user\"");
	return 0;
}

static const struct admin_collection users = {
    .kind = "user",
    .label = "user",
    .table = "users",
    .key_column = "id",
    .select = "SELECT id, kind, issuer, subject, email, email_verified, display_name, role,"
	      " disabled, created_at, updated_at, last_sign_in_at FROM users",
    .select_key = "id",
    .fields = user_fields,
    .field_count = sizeof(user_fields) / sizeof(user_fields[0]),
    .filters = user_filters,
    .filter_count = sizeof(user_filters) / sizeof(user_filters[0]),
    .bool_columns = user_bool_columns,
    .timestamps = ADMIN_UPDATED_AT,
    .check = user_check,
    .after_update = user_after_update,
};

ADMIN_HANDLER(list_users, list, users)
ADMIN_HANDLER(get_user, get, users)
ADMIN_HANDLER(update_user, update, users)
ADMIN_HANDLER(delete_user, delete, users)

/* ---- groups ---- */

static const struct admin_field group_fields[] = {
    {.name = "name",
     .column = "name",
     .type = ADMIN_FIELD_TEXT,
     .flags = ADMIN_REQUIRED,
     .min = 1,
     .max = 256},
    {.name = "description",
     .column = "description",
     .type = ADMIN_FIELD_TEXT,
     .flags = ADMIN_NULLABLE,
     .min = 0,
     .max = 1024},
};

static const struct admin_filter group_filters[] = {
    {"name", "name = ?", ADMIN_FILTER_TEXT},
    {"source", "source = ?", ADMIN_FILTER_TEXT},
};

static int group_is_idp(const json_t *group)
{
	const char *source = json_string_value(json_object_get(group, "source"));
	return source != NULL && strcmp(source, "idp") == 0;
}

static void refuse_idp_group(struct http_request *req, const json_t *group)
{
	http_reply_error(
	    req, 409, "idp_managed",
	    "group \"%s\" is managed by the identity provider (source \"idp\"): change "
	    "it there; it is rewritten at every sign-in",
	    json_string_value(json_object_get(group, "name")));
}

/* IdP groups may be deleted (cleaning up after the IdP dropped one) but not edited. */
static int group_guard(struct http_request *req, const json_t *before, const char *op)
{
	if (strcmp(op, "update") == 0 && group_is_idp(before)) {
		refuse_idp_group(req, before);
		return 1;
	}
	return 0;
}

static const struct admin_collection groups = {
    .kind = "group",
    .label = "group",
    .table = "groups",
    .key_column = "id",
    .select = "SELECT id, name, source, description, created_at, updated_at FROM groups",
    .select_key = "id",
    .fields = group_fields,
    .field_count = sizeof(group_fields) / sizeof(group_fields[0]),
    .filters = group_filters,
    .filter_count = sizeof(group_filters) / sizeof(group_filters[0]),
    .timestamps = ADMIN_CREATED_AT | ADMIN_UPDATED_AT,
    .guard = group_guard,
};

ADMIN_HANDLER(list_groups, list, groups)
ADMIN_HANDLER(get_group, get, groups)
ADMIN_HANDLER(create_group, create, groups)
ADMIN_HANDLER(update_group, update, groups)
ADMIN_HANDLER(delete_group, delete, groups)

/* ---- group members ---- */

static const struct admin_collection members = {
    .kind = "membership",
    .label = "membership",
    .table = "memberships",
    .key_column = "user_id",
    .select = "SELECT m.user_id, m.group_id, m.source, m.created_at, u.kind, u.email,"
	      " u.display_name FROM memberships m JOIN users u ON u.id = m.user_id",
    .select_key = "m.user_id",
};

static void list_members(struct http_request *req, void *app)
{
	struct controller *c = app;
	char group_id[33];
	json_t *group = NULL;
	if (admin_path_id(req, 0, "group", group_id) < 0)
		return;
	int r = admin_load(c, &groups, group_id, &group);
	json_decref(group);
	if (r == SP_ERR_NOT_FOUND)
		http_reply_error(req, 404, "not_found", "there is no group with id \"%s\"",
				 group_id);
	else if (r < 0)
		http_reply_error(req, 500, "internal", "the group could not be read");
	else
		admin_list_scoped(req, c, &members, "m.group_id = ?", group_id);
}

/* The membership (user_id, group_id) into *out, or SP_ERR_NOT_FOUND / SP_ERR_DATABASE. */
static int load_membership(struct controller *c, const char *group_id, const char *user_id,
			   json_t **out)
{
	struct db_stmt *st = NULL;
	int r = SP_ERR_DATABASE;
	char sql[512];
	*out = NULL;
	snprintf(sql, sizeof(sql), "%s WHERE m.group_id = ? AND m.user_id = ?", members.select);
	if (db_prepare(c->db, sql, &st) == 0) {
		db_bind_text(st, 1, group_id, -1, DB_TRANSIENT);
		db_bind_text(st, 2, user_id, -1, DB_TRANSIENT);
		int step = db_step(st);
		if (step == DB_ROW)
			r = (*out = admin_row_object(st, &members)) != NULL ? 0 : SP_ERR_NOMEM;
		else if (step == DB_DONE)
			r = SP_ERR_NOT_FOUND;
	}
	db_finalize(st);
	return r;
}

/* PUT adds (201, or 200 when already a member); DELETE removes (204). */
static void change_member(struct http_request *req, struct controller *c, int adding)
{
	char group_id[33], user_id[33], target[80];
	json_t *group = NULL, *user = NULL, *membership = NULL;
	struct db_stmt *st = NULL;
	if (admin_path_id(req, 0, "group", group_id) < 0 ||
	    admin_path_id(req, 1, "user", user_id) < 0)
		return;
	if ((group = begin_and_load(req, c, &groups, group_id)) == NULL)
		return;
	if (group_is_idp(group)) {
		store_rollback(c);
		refuse_idp_group(req, group);
		goto out;
	}
	int r = admin_load(c, &users, user_id, &user);
	if (r < 0) {
		store_rollback(c);
		if (r == SP_ERR_NOT_FOUND)
			http_reply_error(req, 404, "not_found", "there is no user with id \"%s\"",
					 user_id);
		else
			http_reply_error(req, 500, "internal", "the user could not be read");
		goto out;
	}
	r = load_membership(c, group_id, user_id, &membership);
	if (r < 0 && r != SP_ERR_NOT_FOUND) {
		store_rollback(c);
		http_reply_error(req, 500, "internal", "the membership could not be read");
		goto out;
	}
	if (adding && r == 0) { /* already a member: nothing changes */
		store_rollback(c);
		http_reply_json(req, 200, membership);
		membership = NULL;
		goto out;
	}
	if (!adding && r == SP_ERR_NOT_FOUND) {
		store_rollback(c);
		http_reply_error(req, 404, "not_found",
				 "user \"%s\" is not a member of group \"%s\"", user_id, group_id);
		goto out;
	}
	if (db_prepare(c->db,
		       adding ? "INSERT INTO memberships (user_id, group_id, source,"
				" created_at) VALUES (?2, ?3, 'local', ?1)"
			      : "DELETE FROM memberships WHERE user_id = ?2"
				" AND group_id = ?3",
		       &st) != 0) {
		admin_reply_store_error(req, c, "membership", !adding);
		goto out;
	}
	if (adding)
		db_bind_int64(st, 1, c->now());
	db_bind_text(st, 2, user_id, -1, DB_TRANSIENT);
	db_bind_text(st, 3, group_id, -1, DB_TRANSIENT);
	if (db_step(st) != DB_DONE) {
		admin_reply_store_error(req, c, "membership", !adding);
		goto out;
	}
	if (adding) {
		json_decref(membership);
		membership = NULL;
		if (load_membership(c, group_id, user_id, &membership) < 0) {
			admin_reply_store_error(req, c, "membership", 0);
			goto out;
		}
	}
	snprintf(target, sizeof(target), "%s:%s", user_id, group_id);
	if (admin_audit(c, req, adding ? "group.member_add" : "group.member_remove", "membership",
			target, adding ? NULL : membership, adding ? membership : NULL) < 0) {
		admin_reply_store_error(req, c, "membership", !adding);
		goto out;
	}
	if (admin_commit(req, c) < 0)
		goto out;
	if (adding) {
		http_reply_json(req, 201, membership);
		membership = NULL;
	} else {
		http_reply_text(req, 204, "application/json", "", 0);
	}
out:
	db_finalize(st);
	json_decref(group);
	json_decref(user);
	json_decref(membership);
}

static void add_member(struct http_request *req, void *app)
{
	change_member(req, app, 1);
}
static void remove_member(struct http_request *req, void *app)
{
	change_member(req, app, 0);
}

/* ---- policies ---- */

static json_t *false_value(void)
{
	return json_false();
}
static json_t *zero_value(void)
{
	return json_integer(0);
}

static const struct admin_field policy_fields[] = {
    {.name = "group_id",
     .column = "group_id",
     .type = ADMIN_FIELD_ID,
     .flags = ADMIN_REQUIRED,
     .ref_table = "groups",
     .ref_label = "group"},
    {.name = "resource_id",
     .column = "resource_id",
     .type = ADMIN_FIELD_ID,
     .flags = ADMIN_REQUIRED,
     .ref_table = "resources",
     .ref_label = "resource"},
    {.name = "require_mfa",
     .column = "require_mfa",
     .type = ADMIN_FIELD_BOOL,
     .default_value = false_value},
    {.name = "max_session_age_s",
     .column = "max_session_age_s",
     .type = ADMIN_FIELD_INT,
     .min = 0,
     .max = 31622400,
     .default_value = zero_value},
};

static const struct admin_filter policy_filters[] = {
    {"group_id", "group_id = ?", ADMIN_FILTER_ID},
    {"resource_id", "resource_id = ?", ADMIN_FILTER_ID},
};

static const char *const policy_bool_columns[] = {"require_mfa", NULL};

static const struct admin_collection policies = {
    .kind = "policy",
    .label = "policy",
    .table = "policies",
    .key_column = "id",
    .select = "SELECT id, group_id, resource_id, require_mfa, max_session_age_s, created_at,"
	      " updated_at FROM policies",
    .select_key = "id",
    .fields = policy_fields,
    .field_count = sizeof(policy_fields) / sizeof(policy_fields[0]),
    .filters = policy_filters,
    .filter_count = sizeof(policy_filters) / sizeof(policy_filters[0]),
    .bool_columns = policy_bool_columns,
    .timestamps = ADMIN_CREATED_AT | ADMIN_UPDATED_AT,
};

ADMIN_HANDLER(list_policies, list, policies)
ADMIN_HANDLER(get_policy, get, policies)
ADMIN_HANDLER(create_policy, create, policies)
ADMIN_HANDLER(update_policy, update, policies)
ADMIN_HANDLER(delete_policy, delete, policies)

/* ---- devices ---- */

static const struct admin_filter device_filters[] = {
    {"user_id", "user_id = ?", ADMIN_FILTER_ID},
    {"state", "state = ?", ADMIN_FILTER_TEXT},
};

static const struct admin_collection devices = {
    .kind = "device",
    .label = "device",
    .table = "devices",
    .key_column = "id",
    .select = "SELECT id, user_id, public_key_thumbprint, name, state, first_seen_at,"
	      " last_seen_at, updated_at FROM devices",
    .select_key = "id",
    .filters = device_filters,
    .filter_count = sizeof(device_filters) / sizeof(device_filters[0]),
};

ADMIN_HANDLER(list_devices, list, devices)
ADMIN_HANDLER(get_device, get, devices)
ADMIN_HANDLER(delete_device, delete, devices)

/* Approves or blocks a device; blocking also revokes its live sessions. */
static void set_device_state(struct http_request *req, struct controller *c, const char *state,
			     const char *action)
{
	char id[33];
	json_t *before = NULL, *after = NULL;
	int64_t now = c->now();
	if (admin_path_id(req, 0, "device", id) < 0)
		return;
	if ((before = begin_and_load(req, c, &devices, id)) == NULL)
		return;
	if (strcmp(json_string_value(json_object_get(before, "state")), state) == 0) {
		store_rollback(c); /* already so: nothing changes */
		http_reply_json(req, 200, before);
		return;
	}
	struct db_stmt *st = NULL;
	int r = SP_ERR_DATABASE;
	if (db_prepare(c->db, "UPDATE devices SET state = ?3, updated_at = ?1 WHERE id = ?2",
		       &st) == 0) {
		db_bind_int64(st, 1, now);
		db_bind_text(st, 2, id, -1, DB_TRANSIENT);
		db_bind_text(st, 3, state, -1, DB_STATIC);
		r = db_step(st) == DB_DONE ? 0 : SP_ERR_DATABASE;
	}
	db_finalize(st);
	if (r == 0 && strcmp(state, "blocked") == 0)
		r = exec_now_id(c,
				"UPDATE sessions SET revoked_at = ?1, revoke_reason ="
				" 'device_blocked' WHERE device_id = ?2 AND revoked_at IS NULL",
				now, id);
	if (r == 0)
		r = admin_load(c, &devices, id, &after);
	if (r == 0)
		r = admin_audit(c, req, action, "device", id, before, after);
	if (r < 0) {
		admin_reply_store_error(req, c, "device", 0);
		goto out;
	}
	if (admin_commit(req, c) < 0)
		goto out;
	http_reply_json(req, 200, after);
	after = NULL;
out:
	json_decref(before);
	json_decref(after);
}

static void approve_device(struct http_request *req, void *app)
{
	set_device_state(req, app, "approved", "device.approve");
}

static void block_device(struct http_request *req, void *app)
{
	set_device_state(req, app, "blocked", "device.block");
}

/* ---- revocation shared by sessions, API keys and service-account keys ---- */

/*
 * Sets revoked_at on the row `id` of coll (via update_sql, ?1 = now, ?2 = id), then runs
 * extra_sql (same parameters) when given, audits `action` and answers 204. A row already
 * revoked answers 204 and changes nothing. When `owner_column` is given, the row must
 * also have owner_column = owner (a key under its service account), else 404.
 */
static void revoke_row(struct http_request *req, struct controller *c,
		       const struct admin_collection *coll, const char *id,
		       const char *owner_column, const char *owner, const char *update_sql,
		       const char *extra_sql, const char *action)
{
	json_t *before = NULL, *after = NULL;
	int64_t now = c->now();
	if ((before = begin_and_load(req, c, coll, id)) == NULL)
		return;
	if (owner_column != NULL &&
	    strcmp(json_string_value(json_object_get(before, owner_column)), owner) != 0) {
		store_rollback(c);
		http_reply_error(req, 404, "not_found", "there is no %s with id \"%s\" here",
				 coll->label, id);
		goto out;
	}
	if (!json_is_null(json_object_get(before, "revoked_at"))) {
		store_rollback(c);
		http_reply_text(req, 204, "application/json", "", 0);
		goto out;
	}
	int r = exec_now_id(c, update_sql, now, id);
	if (r == 0 && extra_sql != NULL)
		r = exec_now_id(c, extra_sql, now, id);
	if (r == 0)
		r = admin_load(c, coll, id, &after);
	if (r == 0)
		r = admin_audit(c, req, action, coll->kind, id, before, after);
	if (r < 0) {
		admin_reply_store_error(req, c, coll->label, 0);
		goto out;
	}
	if (admin_commit(req, c) < 0)
		goto out;
	http_reply_text(req, 204, "application/json", "", 0);
out:
	json_decref(before);
	json_decref(after);
}

/* ---- sessions ---- */

static const struct admin_filter session_filters[] = {
    {"user_id", "user_id = ?", ADMIN_FILTER_ID},
    {"device_id", "device_id = ?", ADMIN_FILTER_ID},
    {"revoked", "(revoked_at IS NOT NULL) = ?", ADMIN_FILTER_BOOL},
};

static const char *const session_json_columns[] = {"amr", NULL};

static const struct admin_collection sessions = {
    .kind = "session",
    .label = "session",
    .table = "sessions",
    .key_column = "id",
    .select = "SELECT id, user_id, device_id, auth_method, auth_time, amr, created_at,"
	      " last_used_at, expires_at, revoked_at, revoke_reason FROM sessions",
    .select_key = "id",
    .filters = session_filters,
    .filter_count = sizeof(session_filters) / sizeof(session_filters[0]),
    .json_columns = session_json_columns,
};

ADMIN_HANDLER(list_sessions, list, sessions)
ADMIN_HANDLER(get_session, get, sessions)

static void revoke_session(struct http_request *req, void *app)
{
	char id[33];
	if (admin_path_id(req, 0, "session", id) < 0)
		return;
	revoke_row(req, app, &sessions, id, NULL, NULL,
		   "UPDATE sessions SET revoked_at = ?1, revoke_reason = 'admin' WHERE id = ?2",
		   "UPDATE refresh_tokens SET revoked_at = ?1 WHERE session_id = ?2"
		   " AND revoked_at IS NULL",
		   "session.revoke");
}

/* ---- API keys ---- */

static const char *const api_key_roles[] = {"admin", "auditor", NULL};

static const struct admin_field api_key_fields[] = {
    {.name = "name",
     .column = "name",
     .type = ADMIN_FIELD_TEXT,
     .flags = ADMIN_REQUIRED,
     .min = 1,
     .max = 128},
    {.name = "role",
     .column = "role",
     .type = ADMIN_FIELD_ENUM,
     .flags = ADMIN_REQUIRED,
     .values = api_key_roles},
};

static const struct admin_filter api_key_filters[] = {
    {"role", "role = ?", ADMIN_FILTER_TEXT},
    {"revoked", "(revoked_at IS NOT NULL) = ?", ADMIN_FILTER_BOOL},
};

static const struct admin_collection api_keys = {
    .kind = "api_key",
    .label = "API key",
    .table = "api_keys",
    .key_column = "id",
    .select = "SELECT id, name, role, prefix, created_at, expires_at, last_used_at, revoked_at"
	      " FROM api_keys",
    .select_key = "id",
    .fields = api_key_fields,
    .field_count = sizeof(api_key_fields) / sizeof(api_key_fields[0]),
    .filters = api_key_filters,
    .filter_count = sizeof(api_key_filters) / sizeof(api_key_filters[0]),
};

ADMIN_HANDLER(list_api_keys, list, api_keys)
ADMIN_HANDLER(get_api_key, get, api_keys)

static void create_api_key(struct http_request *req, void *app)
{
	struct controller *c = app;
	json_t *body = http_body_json_object(req), *values = NULL, *after = NULL;
	struct sp_diag d = {{0}};
	char key[SP_SECRET_TEXT_MAX] = "", id[33];
	if (body == NULL)
		return;
	if (admin_fields_check(body, api_key_fields, 2, 1, &values, &d) < 0) {
		http_reply_error(req, 400, "invalid", "%s", d.message);
		goto out;
	}
	if (store_begin(c, &d) < 0) {
		http_reply_error(req, 503, "unavailable", "%s", d.message);
		goto out;
	}
	if (apikey_create(c->db, json_string_value(json_object_get(values, "name")),
			  json_string_value(json_object_get(values, "role")), c->now(), key, id,
			  &d) < 0 ||
	    admin_load(c, &api_keys, id, &after) < 0 ||
	    admin_audit(c, req, "api_key.create", "api_key", id, NULL, after) < 0) {
		admin_reply_store_error(req, c, "API key", 0);
		goto out;
	}
	if (admin_commit(req, c) < 0)
		goto out;
	json_object_set_new(after, "key", json_string(key)); /* shown this once */
	http_reply_json(req, 201, after);
	after = NULL;
out:
	OPENSSL_cleanse(key, sizeof(key));
	json_decref(body);
	json_decref(values);
	json_decref(after);
}

static void revoke_api_key(struct http_request *req, void *app)
{
	char id[33];
	if (admin_path_id(req, 0, "API key", id) < 0)
		return;
	revoke_row(req, app, &api_keys, id, NULL, NULL,
		   "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2", NULL, "api_key.revoke");
}

/* ---- service accounts ---- */

static const struct admin_field service_account_fields[] = {
    {.name = "name",
     .column = "name",
     .type = ADMIN_FIELD_TEXT,
     .flags = ADMIN_REQUIRED,
     .min = 1,
     .max = 128},
    {.name = "description",
     .column = "description",
     .type = ADMIN_FIELD_TEXT,
     .flags = ADMIN_NULLABLE,
     .min = 0,
     .max = 1024},
};

static const struct admin_filter service_account_filters[] = {
    {"name", "s.name = ?", ADMIN_FILTER_TEXT},
};

static const char *const service_account_bool_columns[] = {"disabled", NULL};

#define SERVICE_ACCOUNT_SELECT                                                                     \
	"SELECT s.user_id AS id, s.name, s.description, u.disabled, s.created_at"                  \
	" FROM service_accounts s JOIN users u ON u.id = s.user_id"

static const struct admin_collection service_accounts = {
    .kind = "service_account",
    .label = "service account",
    .table = "service_accounts",
    .key_column = "user_id",
    .select = SERVICE_ACCOUNT_SELECT,
    .select_key = "s.user_id",
    .fields = service_account_fields,
    .field_count = sizeof(service_account_fields) / sizeof(service_account_fields[0]),
    .filters = service_account_filters,
    .filter_count = sizeof(service_account_filters) / sizeof(service_account_filters[0]),
    .bool_columns = service_account_bool_columns,
};

/* Deleting removes the users row; its service_accounts row, keys and sessions cascade. */
static const struct admin_collection service_accounts_by_user = {
    .kind = "service_account",
    .label = "service account",
    .table = "users",
    .key_column = "id",
    .select = SERVICE_ACCOUNT_SELECT,
    .select_key = "s.user_id",
    .bool_columns = service_account_bool_columns,
};

ADMIN_HANDLER(list_service_accounts, list, service_accounts)
ADMIN_HANDLER(get_service_account, get, service_accounts)
ADMIN_HANDLER(update_service_account, update, service_accounts)
ADMIN_HANDLER(delete_service_account, delete, service_accounts_by_user)

/* A users row of kind 'service' plus its service_accounts row, in one transaction. */
static void create_service_account(struct http_request *req, void *app)
{
	struct controller *c = app;
	json_t *body = http_body_json_object(req), *values = NULL, *after = NULL;
	struct sp_diag d = {{0}};
	struct db_stmt *st = NULL;
	char id[33];
	if (body == NULL)
		return;
	if (admin_fields_check(body, service_account_fields, 2, 1, &values, &d) < 0) {
		http_reply_error(req, 400, "invalid", "%s", d.message);
		goto out;
	}
	const char *name = json_string_value(json_object_get(values, "name"));
	const char *description = json_string_value(json_object_get(values, "description"));
	int64_t now = c->now();
	if (store_new_id(id) < 0 || store_begin(c, &d) < 0) {
		http_reply_error(req, 503, "unavailable", "the store cannot take a change now");
		goto out;
	}
	if (db_prepare(c->db,
		       "INSERT INTO users (id, kind, display_name, created_at,"
		       " updated_at) VALUES (?1, 'service', ?2, ?3, ?3)",
		       &st) != 0) {
		admin_reply_store_error(req, c, "service account", 0);
		goto out;
	}
	db_bind_text(st, 1, id, -1, DB_STATIC);
	db_bind_text(st, 2, name, -1, DB_TRANSIENT);
	db_bind_int64(st, 3, now);
	if (db_step(st) != DB_DONE) {
		admin_reply_store_error(req, c, "service account", 0);
		goto out;
	}
	db_finalize(st);
	st = NULL;
	if (db_prepare(c->db,
		       "INSERT INTO service_accounts (user_id, name, description,"
		       " created_at) VALUES (?1, ?2, ?3, ?4)",
		       &st) != 0) {
		admin_reply_store_error(req, c, "service account", 0);
		goto out;
	}
	db_bind_text(st, 1, id, -1, DB_STATIC);
	db_bind_text(st, 2, name, -1, DB_TRANSIENT);
	if (description != NULL)
		db_bind_text(st, 3, description, -1, DB_TRANSIENT);
	else
		db_bind_null(st, 3);
	db_bind_int64(st, 4, now);
	if (db_step(st) != DB_DONE || admin_load(c, &service_accounts, id, &after) < 0 ||
	    admin_audit(c, req, "service_account.create", "service_account", id, NULL, after) < 0) {
		admin_reply_store_error(req, c, "service account", 0);
		goto out;
	}
	if (admin_commit(req, c) < 0)
		goto out;
	http_reply_json(req, 201, after);
	after = NULL;
out:
	db_finalize(st);
	json_decref(body);
	json_decref(values);
	json_decref(after);
}

/* ---- service-account keys ---- */

#define SERVICE_KEY_DEFAULT_TTL_S (365LL * 86400)

static const struct admin_collection service_account_keys = {
    .kind = "service_account_key",
    .label = "service account key",
    .table = "service_account_keys",
    .key_column = "id",
    .select = "SELECT id, service_account_id, name, public_key_digest, public_key_pem,"
	      " created_at, expires_at, last_used_at, revoked_at FROM service_account_keys",
    .select_key = "id",
};

static const struct admin_field service_key_fields[] = {
    {.name = "public_key_pem",
     .column = "public_key_pem",
     .type = ADMIN_FIELD_TEXT,
     .flags = ADMIN_REQUIRED | ADMIN_MULTILINE,
     .min = 1,
     .max = SP_KEY_PEM_MAX},
    {.name = "name",
     .column = "name",
     .type = ADMIN_FIELD_TEXT,
     .flags = ADMIN_NULLABLE,
     .min = 1,
     .max = 128},
    {.name = "expires_at",
     .column = "expires_at",
     .type = ADMIN_FIELD_INT,
     .min = 1,
     .max = 253402300799LL},
};

static void list_service_account_keys(struct http_request *req, void *app)
{
	struct controller *c = app;
	char id[33];
	json_t *account = NULL;
	if (admin_path_id(req, 0, "service account", id) < 0)
		return;
	int r = admin_load(c, &service_accounts, id, &account);
	json_decref(account);
	if (r == SP_ERR_NOT_FOUND)
		http_reply_error(req, 404, "not_found",
				 "there is no service account with id \"%s\"", id);
	else if (r < 0)
		http_reply_error(req, 500, "internal", "the service account could not be read");
	else
		admin_list_scoped(req, c, &service_account_keys, "service_account_id = ?", id);
}

/*
 * Checks a PEM public key for a service account: a P-256 SubjectPublicKeyInfo, never a
 * private key. Fills the canonical public PEM (caller frees) and the SPKI SHA-256 digest
 * in hex. Pure apart from OpenSSL.
 */
static int service_key_digest(const char *pem, size_t len, char **public_pem, char digest_hex[65],
			      struct sp_diag *diag)
{
	EVP_PKEY *key = NULL;
	uint8_t digest[SP_KEY_SPKI_DIGEST_LEN];
	size_t out_len = 0;
	struct sp_diag inner = {{0}};
	*public_pem = NULL;
	int r = sp_key_from_pem(pem, len, 1, &key, &inner);
	if (r < 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "field \"public_key_pem\": %s",
				   inner.message);
	if (sp_key_has_private(key)) {
		EVP_PKEY_free(key);
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "field \"public_key_pem\" holds a private key;"
				   " send only the public key (openssl pkey -pubout)");
	}
	r = sp_key_spki_sha256(key, digest);
	if (r == 0)
		r = sp_key_public_pem(key, public_pem, &out_len);
	EVP_PKEY_free(key);
	if (r < 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "field \"public_key_pem\" cannot be read");
	sp_hex_encode(digest, sizeof(digest), digest_hex);
	return 0;
}

static void create_service_account_key(struct http_request *req, void *app)
{
	struct controller *c = app;
	char account_id[33], id[33], digest[65];
	char *public_pem = NULL;
	json_t *body = NULL, *values = NULL, *account = NULL, *after = NULL;
	struct db_stmt *st = NULL;
	struct sp_diag d = {{0}};
	int64_t now = c->now();
	if (admin_path_id(req, 0, "service account", account_id) < 0)
		return;
	if ((body = http_body_json_object(req)) == NULL)
		return;
	if (admin_fields_check(body, service_key_fields, 3, 1, &values, &d) < 0) {
		http_reply_error(req, 400, "invalid", "%s", d.message);
		goto out;
	}
	const json_t *pem = json_object_get(values, "public_key_pem");
	if (service_key_digest(json_string_value(pem), json_string_length(pem), &public_pem, digest,
			       &d) < 0) {
		http_reply_error(req, 400, "invalid", "%s", d.message);
		goto out;
	}
	int64_t expires_at =
	    json_object_get(values, "expires_at") != NULL
		? (int64_t)json_integer_value(json_object_get(values, "expires_at"))
		: now + SERVICE_KEY_DEFAULT_TTL_S;
	if (expires_at <= now) {
		http_reply_error(req, 400, "invalid", "field \"expires_at\" must be in the future");
		goto out;
	}
	if ((account = begin_and_load(req, c, &service_accounts, account_id)) == NULL)
		goto out;
	if (store_new_id(id) < 0 ||
	    db_prepare(c->db,
		       "INSERT INTO service_account_keys (id, service_account_id,"
		       " name, public_key_digest, public_key_pem, created_at,"
		       " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
		       &st) != 0) {
		admin_reply_store_error(req, c, "service account key", 0);
		goto out;
	}
	const char *name = json_string_value(json_object_get(values, "name"));
	db_bind_text(st, 1, id, -1, DB_STATIC);
	db_bind_text(st, 2, account_id, -1, DB_STATIC);
	if (name != NULL)
		db_bind_text(st, 3, name, -1, DB_TRANSIENT);
	else
		db_bind_null(st, 3);
	db_bind_text(st, 4, digest, -1, DB_STATIC);
	db_bind_text(st, 5, public_pem, -1, DB_STATIC);
	db_bind_int64(st, 6, now);
	db_bind_int64(st, 7, expires_at);
	if (db_step(st) != DB_DONE || admin_load(c, &service_account_keys, id, &after) < 0 ||
	    admin_audit(c, req, "service_account_key.create", "service_account_key", id, NULL,
			after) < 0) {
		admin_reply_store_error(req, c, "service account key", 0);
		goto out;
	}
	if (admin_commit(req, c) < 0)
		goto out;
	http_reply_json(req, 201, after);
	after = NULL;
out:
	db_finalize(st);
	free(public_pem);
	json_decref(body);
	json_decref(values);
	json_decref(account);
	json_decref(after);
}

static void revoke_service_account_key(struct http_request *req, void *app)
{
	char account_id[33], id[33];
	if (admin_path_id(req, 0, "service account", account_id) < 0 ||
	    admin_path_id(req, 1, "service account key", id) < 0)
		return;
	revoke_row(req, app, &service_account_keys, id, "service_account_id", account_id,
		   "UPDATE service_account_keys SET revoked_at = ?1 WHERE id = ?2", NULL,
		   "service_account_key.revoke");
}

const struct route admin_identity_routes[] = {
    {"GET", "/api/v1/users", (void *)list_users, ROUTE_ADMIN_READ},
    {"GET", "/api/v1/users/{id}", (void *)get_user, ROUTE_ADMIN_READ},
    {"PATCH", "/api/v1/users/{id}", (void *)update_user, ROUTE_ADMIN_WRITE},
    {"DELETE", "/api/v1/users/{id}", (void *)delete_user, ROUTE_ADMIN_WRITE},
    {"GET", "/api/v1/groups", (void *)list_groups, ROUTE_ADMIN_READ},
    {"POST", "/api/v1/groups", (void *)create_group, ROUTE_ADMIN_WRITE},
    {"GET", "/api/v1/groups/{id}", (void *)get_group, ROUTE_ADMIN_READ},
    {"PATCH", "/api/v1/groups/{id}", (void *)update_group, ROUTE_ADMIN_WRITE},
    {"DELETE", "/api/v1/groups/{id}", (void *)delete_group, ROUTE_ADMIN_WRITE},
    {"GET", "/api/v1/groups/{id}/members", (void *)list_members, ROUTE_ADMIN_READ},
    {"PUT", "/api/v1/groups/{id}/members/{user_id}", (void *)add_member, ROUTE_ADMIN_WRITE},
    {"DELETE", "/api/v1/groups/{id}/members/{user_id}", (void *)remove_member, ROUTE_ADMIN_WRITE},
    {"GET", "/api/v1/policies", (void *)list_policies, ROUTE_ADMIN_READ},
    {"POST", "/api/v1/policies", (void *)create_policy, ROUTE_ADMIN_WRITE},
    {"GET", "/api/v1/policies/{id}", (void *)get_policy, ROUTE_ADMIN_READ},
    {"PATCH", "/api/v1/policies/{id}", (void *)update_policy, ROUTE_ADMIN_WRITE},
    {"DELETE", "/api/v1/policies/{id}", (void *)delete_policy, ROUTE_ADMIN_WRITE},
    {"GET", "/api/v1/devices", (void *)list_devices, ROUTE_ADMIN_READ},
    {"GET", "/api/v1/devices/{id}", (void *)get_device, ROUTE_ADMIN_READ},
    {"DELETE", "/api/v1/devices/{id}", (void *)delete_device, ROUTE_ADMIN_WRITE},
    {"POST", "/api/v1/devices/{id}/approve", (void *)approve_device, ROUTE_ADMIN_WRITE},
    {"POST", "/api/v1/devices/{id}/block", (void *)block_device, ROUTE_ADMIN_WRITE},
    {"GET", "/api/v1/sessions", (void *)list_sessions, ROUTE_ADMIN_READ},
    {"GET", "/api/v1/sessions/{id}", (void *)get_session, ROUTE_ADMIN_READ},
    {"DELETE", "/api/v1/sessions/{id}", (void *)revoke_session, ROUTE_ADMIN_WRITE},
    {"GET", "/api/v1/api-keys", (void *)list_api_keys, ROUTE_ADMIN_READ},
    {"POST", "/api/v1/api-keys", (void *)create_api_key, ROUTE_ADMIN_WRITE},
    {"GET", "/api/v1/api-keys/{id}", (void *)get_api_key, ROUTE_ADMIN_READ},
    {"DELETE", "/api/v1/api-keys/{id}", (void *)revoke_api_key, ROUTE_ADMIN_WRITE},
    {"GET", "/api/v1/service-accounts", (void *)list_service_accounts, ROUTE_ADMIN_READ},
    {"POST", "/api/v1/service-accounts", (void *)create_service_account, ROUTE_ADMIN_WRITE},
    {"GET", "/api/v1/service-accounts/{id}", (void *)get_service_account, ROUTE_ADMIN_READ},
    {"PATCH", "/api/v1/service-accounts/{id}", (void *)update_service_account, ROUTE_ADMIN_WRITE},
    {"DELETE", "/api/v1/service-accounts/{id}", (void *)delete_service_account, ROUTE_ADMIN_WRITE},
    {"GET", "/api/v1/service-accounts/{id}/keys", (void *)list_service_account_keys,
     ROUTE_ADMIN_READ},
    {"POST", "/api/v1/service-accounts/{id}/keys", (void *)create_service_account_key,
     ROUTE_ADMIN_WRITE},
    {"DELETE", "/api/v1/service-accounts/{id}/keys/{key_id}", (void *)revoke_service_account_key,
     ROUTE_ADMIN_WRITE},
};
const size_t admin_identity_route_count =
    sizeof(admin_identity_routes) / sizeof(admin_identity_routes[0]);
