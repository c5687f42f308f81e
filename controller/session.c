/* controller/session.c — see session.h. */
#include "controller/session.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "controller/audit.h"
#include "controller/store.h"
#include "shared/keys.h"
#include "shared/token.h"

/*
 * Prepares sql and binds the arguments described by types: 's' a string (NULL binds
 * NULL), 'i' an int64_t. Returns the statement or NULL.
 */
static struct db_stmt *prepare(struct db *db, const char *sql, const char *types, va_list ap)
{
	struct db_stmt *st = NULL;
	if (db_prepare(db, sql, &st) != 0)
		return NULL;
	for (int i = 0; types[i] != '\0'; i++) {
		if (types[i] == 's') {
			const char *v = va_arg(ap, const char *);
			if (v != NULL)
				db_bind_text(st, i + 1, v, -1, DB_TRANSIENT);
			else
				db_bind_null(st, i + 1);
		} else {
			db_bind_int64(st, i + 1, va_arg(ap, int64_t));
		}
	}
	return st;
}

/* Runs a statement that returns no rows. 0 or SP_ERR_DATABASE. */
static int run(struct db *db, const char *sql, const char *types, ...)
{
	va_list ap;
	va_start(ap, types);
	struct db_stmt *st = prepare(db, sql, types, ap);
	va_end(ap);
	int r = st != NULL && db_step(st) == DB_DONE ? 0 : SP_ERR_DATABASE;
	db_finalize(st);
	return r;
}

/* A statement positioned on its first row, or NULL when there is none (or on error). */
static struct db_stmt *query_row(struct db *db, const char *sql, const char *types, ...)
{
	va_list ap;
	va_start(ap, types);
	struct db_stmt *st = prepare(db, sql, types, ap);
	va_end(ap);
	if (st != NULL && db_step(st) != DB_ROW) {
		db_finalize(st);
		st = NULL;
	}
	return st;
}

static void column_copy(struct db_stmt *st, int col, char *out, size_t size)
{
	const char *v = db_column_text(st, col);
	snprintf(out, size, "%s", v != NULL ? (const char *)v : "");
}

int session_email_listed(const char *list, const char *email)
{
	if (list == NULL || email == NULL || email[0] == '\0')
		return 0;
	size_t n = strlen(email);
	const char *p = list;
	while (*p != '\0') {
		while (*p == ',' || *p == ' ' || *p == '\t')
			p++;
		const char *end = p;
		while (*end != '\0' && *end != ',')
			end++;
		const char *last = end;
		while (last > p && (last[-1] == ' ' || last[-1] == '\t'))
			last--;
		if ((size_t)(last - p) == n && strncasecmp(p, email, n) == 0)
			return 1;
		p = end;
	}
	return 0;
}

static void audit_in(const struct http_request *req, struct audit_event *e)
{
	if (req != NULL)
		audit_from_request(e, req);
}

/* Replaces the user's 'idp' memberships by the named groups. Inside a transaction. */
static int sync_groups(struct controller *c, const char *user_id, const json_t *groups,
                       int64_t now, json_t *synced, struct sp_diag *diag)
{
	int r = run(c->db, "CREATE TEMP TABLE IF NOT EXISTS idp_groups_seen (id TEXT PRIMARY KEY)",
	            "");
	if (r == 0)
		r = run(c->db, "DELETE FROM idp_groups_seen", "");
	size_t i;
	const json_t *g;
	json_array_foreach(groups, i, g) {
		if (r < 0)
			break;
		if (i >= SESSION_MAX_GROUPS)
			break;
		if (!json_is_string(g) || json_string_length(g) == 0 || json_string_length(g) > 256)
			continue; /* not a name we can hold: ignored, never fatal to sign-in */
		const char *name = json_string_value(g);
		char id[33] = "", source[8] = "";
		struct db_stmt *st =
		    query_row(c->db, "SELECT id, source FROM groups WHERE name = ?", "s", name);
		if (st != NULL) {
			column_copy(st, 0, id, sizeof(id));
			column_copy(st, 1, source, sizeof(source));
			db_finalize(st);
			if (strcmp(source, "idp") != 0)
				continue;
		} else {
			if ((r = store_new_id(id)) < 0)
				break;
			r = run(c->db, "INSERT INTO groups (id, name, source, created_at, updated_at)"
			        " VALUES (?, ?, 'idp', ?, ?)", "ssii", id, name, now, now);
			if (r < 0)
				break;
		}
		r = run(c->db, "INSERT INTO memberships (user_id, group_id, source, created_at)"
		        " VALUES (?, ?, 'idp', ?) ON CONFLICT (user_id, group_id) DO NOTHING",
		        "ssi", user_id, id, now);
		if (r == 0)
			r = run(c->db,
				"INSERT INTO idp_groups_seen (id) VALUES (?)"
				" ON CONFLICT (id) DO NOTHING",
				"s", id);
		if (r == 0)
			json_array_append_new(synced, json_string(name));
	}
	if (r == 0)
		r = run(c->db,
			"DELETE FROM memberships WHERE user_id = ? AND source = 'idp'"
			" AND group_id NOT IN (SELECT id FROM idp_groups_seen)",
			"s", user_id);
	if (r < 0)
		return sp_diag_set(diag, SP_ERR_DATABASE, "cannot sync groups: %s",
				   db_errmsg(c->db));
	return 0;
}

int session_provision_user(struct controller *c, const json_t *claims, const json_t *groups,
                           const char *client, const struct http_request *req,
                           struct session_user *out, struct sp_diag *diag)
{
	memset(out, 0, sizeof(*out));
	const char *iss = json_string_value(json_object_get(claims, "iss"));
	const char *sub = json_string_value(json_object_get(claims, "sub"));
	const char *email_claim = json_string_value(json_object_get(claims, "email"));
	if (iss == NULL || sub == NULL || email_claim == NULL || strlen(email_claim) >= sizeof(out->email))
		return sp_diag_set(diag, SP_ERR_CLAIM, "the ID token lacks iss, sub or email");
	for (size_t i = 0; email_claim[i] != '\0'; i++)
		out->email[i] = (char)tolower((unsigned char)email_claim[i]);
	const char *name = json_string_value(json_object_get(claims, "name"));
	if (name == NULL || name[0] == '\0')
		name = json_string_value(json_object_get(claims, "preferred_username"));
	if (name == NULL || name[0] == '\0')
		name = out->email;
	snprintf(out->display_name, sizeof(out->display_name), "%.256s", name);
	/* Cut at a character boundary if the cap fell inside a UTF-8 sequence. */
	size_t dn = strlen(out->display_name);
	while (dn > 0 && ((unsigned char)out->display_name[dn - 1] & 0xC0) == 0x80)
		dn--;
	if (dn > 0 && ((unsigned char)out->display_name[dn - 1] & 0x80) != 0 &&
	    strlen(out->display_name) == 256)
		out->display_name[dn - 1] = '\0';
	int admin = session_email_listed(c->settings.admin_emails, out->email);
	int64_t now = c->now();
	json_t *synced = json_array();
	int r = store_begin(c, diag);
	if (r < 0)
		goto out;
	struct db_stmt *st = query_row(c->db,
				       "SELECT id, role, disabled FROM users"
				       " WHERE issuer = ? AND subject = ?",
				       "ss", iss, sub);
	int disabled = 0;
	if (st != NULL) {
		column_copy(st, 0, out->id, sizeof(out->id));
		column_copy(st, 1, out->role, sizeof(out->role));
		disabled = db_column_int(st, 2);
		db_finalize(st);
		if (disabled) {
			r = sp_diag_set(diag, SP_ERR_PERMISSION, "the user %s is disabled", out->email);
			goto out;
		}
		if (admin)
			snprintf(out->role, sizeof(out->role), "admin");
		r = run(c->db, "UPDATE users SET email = ?, email_verified = 1, display_name = ?,"
		        " role = ?, updated_at = ?, last_sign_in_at = ? WHERE id = ?", "sssiis",
		        out->email, out->display_name, out->role, now, now, out->id);
	} else {
		snprintf(out->role, sizeof(out->role), "%s", admin ? "admin" : "user");
		if ((r = store_new_id(out->id)) == 0)
			r = run(c->db, "INSERT INTO users (id, kind, issuer, subject, email, email_verified,"
			        " display_name, role, created_at, updated_at, last_sign_in_at)"
			        " VALUES (?, 'person', ?, ?, ?, 1, ?, ?, ?, ?, ?)", "ssssssiii", out->id,
			        iss, sub, out->email, out->display_name, out->role, now, now, now);
	}
	if (r < 0) {
		r = sp_diag_set(diag, SP_ERR_DATABASE, "cannot store the user: %s",
				db_errmsg(c->db));
		goto out;
	}
	if ((r = sync_groups(c, out->id, groups, now, synced, diag)) < 0)
		goto out;
	json_t *after = json_pack("{s:s, s:s, s:s, s:O, s:s}", "email", out->email, "role", out->role,
	                          "client", client, "groups", synced, "method", "oidc");
	struct audit_event e = {.time = now, .action = "auth.sign_in", .target_type = "user",
	                        .target_id = out->id, .after = after};
	audit_in(req, &e);
	e.actor_type = "user";
	e.actor_id = out->id;
	e.actor_label = out->email;
	r = audit_record(c->db, &e);
	json_decref(after);
	if (r < 0) {
		sp_diag_set(diag, r, "cannot record the sign-in");
		goto out;
	}
	r = store_commit(c, diag);
out:
	if (r < 0)
		store_rollback(c);
	json_decref(synced);
	return r;
}

void session_grant_clear(struct session_grant *g)
{
	if (g == NULL)
		return;
	free(g->access_token);
	OPENSSL_cleanse(g, sizeof(*g));
}

int session_sign_access_token(struct controller *c, struct session_grant *g)
{
	int64_t now = c->now();
	free(g->access_token);
	g->access_token = NULL;
	json_t *claims = json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:{s:s}}", "v", 1,
	                           "typ", "access", "iss", c->settings.public_url, "aud",
	                           ACCESS_TOKEN_AUDIENCE, "iat", (json_int_t)now, "exp",
	                           (json_int_t)(now + SESSION_ACCESS_TTL_S), "sub", g->user_id,
	                           "sid", g->session_id, "dev", g->device_id, "cnf", "jkt", g->jkt);
	if (claims == NULL)
		return SP_ERR_NOMEM;
	int r = authority_sign(&c->authority, claims, &g->access_token);
	json_decref(claims);
	if (r == 0)
		g->access_token_expires_at = now + SESSION_ACCESS_TTL_S;
	return r;
}

/* Issues a new refresh token of family_id for the session. Inside a transaction. */
static int issue_refresh(struct controller *c, struct session_grant *g, const char *family_id,
                         int64_t now)
{
	char id[33], hash[SP_SECRET_HASH_HEX];
	int r;
	if ((r = sp_secret_new(SESSION_REFRESH_KIND, g->refresh_token, sizeof(g->refresh_token))) < 0 ||
	    (r = sp_secret_hash(g->refresh_token, strlen(g->refresh_token), hash)) < 0 ||
	    (r = store_new_id(id)) < 0)
		return r;
	return run(c->db, "INSERT INTO refresh_tokens (id, session_id, family_id, token_hash,"
	           " issued_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)", "ssssii", id, g->session_id,
	           family_id, hash, now, g->session_expires_at > now ? g->session_expires_at : now + 1);
}

int session_create(struct controller *c, const char *user_id, const char *auth_method,
                   int64_t auth_time, const char *amr_json, const char *device_public_key_pem,
                   const char *device_name, const struct http_request *req,
                   struct session_grant *out, struct sp_diag *diag)
{
	memset(out, 0, sizeof(*out));
	EVP_PKEY *key = NULL;
	char *pem = NULL;
	size_t pem_len = 0;
	int r;
	if (device_public_key_pem == NULL ||
	    sp_key_from_pem(device_public_key_pem, strlen(device_public_key_pem), 1, &key, NULL) < 0 ||
	    !sp_key_is_p256(key) || sp_key_has_private(key))
		return sp_diag_set(diag, SP_ERR_INVALID, "device_public_key_pem must be a P-256 public "
		                   "key in PEM (SubjectPublicKeyInfo) form");
	if (device_name != NULL && (strlen(device_name) == 0 || strlen(device_name) > 256)) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "device_name must be 1-256 characters");
		goto fail_key;
	}
	if ((r = sp_jwk_thumbprint(key, out->jkt)) < 0 ||
	    (r = sp_key_public_pem(key, &pem, &pem_len)) < 0) {
		sp_diag_set(diag, r, "cannot read the device key");
		goto fail_key;
	}
	int64_t now = c->now();
	snprintf(out->user_id, sizeof(out->user_id), "%s", user_id);
	if ((r = store_begin(c, diag)) < 0)
		goto fail_key;
	struct db_stmt *st =
	    query_row(c->db, "SELECT disabled, email FROM users WHERE id = ?", "s", user_id);
	char email[321] = "";
	if (st == NULL || db_column_int(st, 0) != 0) {
		db_finalize(st);
		r = sp_diag_set(diag, SP_ERR_PERMISSION, "the user is unknown or disabled");
		goto out;
	}
	column_copy(st, 1, email, sizeof(email));
	db_finalize(st);
	st = query_row(c->db, "SELECT id, user_id, state FROM devices WHERE public_key_thumbprint = ?",
	               "s", out->jkt);
	const char *action = "device.register";
	if (st != NULL) {
		char owner[33], state[16];
		column_copy(st, 0, out->device_id, sizeof(out->device_id));
		column_copy(st, 1, owner, sizeof(owner));
		column_copy(st, 2, state, sizeof(state));
		db_finalize(st);
		if (strcmp(owner, user_id) != 0) {
			r = sp_diag_set(diag, SP_ERR_EXISTS, "this device key is registered to another "
			                "user; make a new device key");
			goto out;
		}
		if (strcmp(state, "blocked") == 0) {
			r = sp_diag_set(diag, SP_ERR_PERMISSION, "this device is blocked by an admin");
			goto out;
		}
		action = NULL;
		r = run(c->db, "UPDATE devices SET last_seen_at = ?, name = coalesce(?, name) WHERE id = ?",
		        "iss", now, device_name, out->device_id);
	} else {
		char approval[16] = "auto";
		st = query_row(c->db, "SELECT device_approval FROM settings WHERE id = 1", "");
		if (st != NULL) {
			column_copy(st, 0, approval, sizeof(approval));
			db_finalize(st);
		}
		if ((r = store_new_id(out->device_id)) == 0)
			r = run(c->db, "INSERT INTO devices (id, user_id, public_key_thumbprint,"
			        " public_key_pem, name, state, first_seen_at, last_seen_at, updated_at)"
			        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", "ssssssiii", out->device_id, user_id,
			        out->jkt, pem, device_name,
			        strcmp(approval, "auto") == 0 ? "approved" : "pending", now, now, now);
	}
	char family[33];
	out->session_expires_at = now + (c->settings.session_ttl_s > 0 ? c->settings.session_ttl_s
	                                                              : 30 * 86400);
	if (r == 0 && (r = store_new_id(out->session_id)) == 0 && (r = store_new_id(family)) == 0)
		r = run(c->db, "INSERT INTO sessions (id, user_id, device_id, auth_method, auth_time,"
		        " amr, created_at, last_used_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
		        "ssssisiii", out->session_id, user_id, out->device_id, auth_method, auth_time,
		        amr_json != NULL ? amr_json : "[]", now, now, out->session_expires_at);
	if (r == 0)
		r = issue_refresh(c, out, family, now);
	if (r < 0) {
		r = sp_diag_set(diag, SP_ERR_DATABASE, "cannot store the session: %s",
				db_errmsg(c->db));
		goto out;
	}
	struct audit_event e = {.time = now, .target_type = "device", .target_id = out->device_id};
	audit_in(req, &e);
	e.actor_type = "user";
	e.actor_id = user_id;
	e.actor_label = email;
	if (action != NULL) {
		json_t *after = json_pack("{s:s, s:s, s:s*}", "user_id", user_id, "thumbprint", out->jkt,
		                          "name", device_name);
		e.action = action;
		e.after = after;
		r = audit_record(c->db, &e);
		json_decref(after);
	}
	json_t *sess = json_pack("{s:s, s:s, s:s, s:I}", "device_id", out->device_id, "auth_method",
	                         auth_method, "family", family, "expires_at",
	                         (json_int_t)out->session_expires_at);
	e.action = "session.create";
	e.target_type = "session";
	e.target_id = out->session_id;
	e.after = sess;
	if (r == 0)
		r = audit_record(c->db, &e);
	json_decref(sess);
	if (r < 0) {
		sp_diag_set(diag, r, "cannot record the session");
		goto out;
	}
	if ((r = store_commit(c, diag)) < 0)
		goto out;
	r = session_sign_access_token(c, out);
	if (r < 0)
		sp_diag_set(diag, r, "cannot sign the access token");
out:
	if (r < 0)
		store_rollback(c);
fail_key:
	EVP_PKEY_free(key);
	if (pem != NULL)
		sp_key_free_pem(pem, pem_len);
	if (r < 0)
		session_grant_clear(out);
	return r;
}

/* Revokes session and family inside an open transaction. */
static int revoke_locked(struct controller *c, const char *session_id, const char *reason,
                         int64_t now)
{
	int r = run(c->db, "UPDATE sessions SET revoked_at = ?, revoke_reason = ?"
	            " WHERE id = ? AND revoked_at IS NULL", "iss", now, reason, session_id);
	if (r == 0)
		r = run(c->db, "UPDATE refresh_tokens SET revoked_at = ?"
		        " WHERE session_id = ? AND revoked_at IS NULL", "is", now, session_id);
	return r;
}

int session_refresh(struct controller *c, const char *refresh_token,
                    const struct http_request *req, struct session_grant *out,
                    struct sp_diag *diag)
{
	memset(out, 0, sizeof(*out));
	char hash[SP_SECRET_HASH_HEX];
	if (refresh_token == NULL ||
	    sp_secret_check_format(SESSION_REFRESH_KIND, refresh_token, strlen(refresh_token)) < 0)
		return sp_diag_set(diag, SP_ERR_NOT_FOUND, "refresh_token is not a Sallyport refresh "
		                   "token (spr_...)");
	int r = sp_secret_hash(refresh_token, strlen(refresh_token), hash);
	if (r < 0)
		return r;
	int64_t now = c->now();
	if ((r = store_begin(c, diag)) < 0)
		return r;
	struct db_stmt *st = query_row(
	    c->db,
	    "SELECT t.id, t.family_id, t.expires_at, t.used_at, t.revoked_at, s.id, s.user_id,"
	    " s.device_id, s.expires_at, s.revoked_at, u.disabled, v.state,"
	    " v.public_key_thumbprint, u.email, t.token_hash"
	    " FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id"
	    " JOIN users u ON u.id = s.user_id JOIN devices v ON v.id = s.device_id"
	    " WHERE t.token_hash = ?",
	    "s", hash);
	if (st == NULL || !sp_secret_hash_equal((const char *)db_column_text(st, 14), hash)) {
		db_finalize(st);
		r = sp_diag_set(diag, SP_ERR_NOT_FOUND, "the refresh token is unknown");
		goto out;
	}
	char token_id[33], family[33], email[321];
	column_copy(st, 0, token_id, sizeof(token_id));
	column_copy(st, 1, family, sizeof(family));
	int64_t token_expires = db_column_int64(st, 2);
	int used = db_column_type(st, 3) != DB_NULL;
	int token_revoked = db_column_type(st, 4) != DB_NULL;
	column_copy(st, 5, out->session_id, sizeof(out->session_id));
	column_copy(st, 6, out->user_id, sizeof(out->user_id));
	column_copy(st, 7, out->device_id, sizeof(out->device_id));
	out->session_expires_at = db_column_int64(st, 8);
	int session_revoked = db_column_type(st, 9) != DB_NULL;
	int disabled = db_column_int(st, 10);
	int blocked = strcmp((const char *)db_column_text(st, 11), "blocked") == 0;
	column_copy(st, 12, out->jkt, sizeof(out->jkt));
	column_copy(st, 13, email, sizeof(email));
	db_finalize(st);

	struct audit_event e = {.time = now, .target_type = "session", .target_id = out->session_id};
	audit_in(req, &e);
	e.actor_type = "user";
	e.actor_id = out->user_id;
	e.actor_label = email;
	if (used || (token_revoked && !session_revoked)) {
		/* A used token again: someone holds a copy. End the session for both holders. */
		json_t *after = json_pack("{s:s, s:s, s:s}", "reason", "refresh_token_reuse", "family",
		                          family, "token_id", token_id);
		e.action = "session.revoke";
		e.outcome = "denied";
		e.after = after;
		r = revoke_locked(c, out->session_id, "refresh_token_reuse", now);
		if (r == 0)
			r = run(c->db, "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ?"
			        " AND revoked_at IS NULL", "is", now, family);
		if (r == 0)
			r = audit_record(c->db, &e);
		json_decref(after);
		if (r == 0)
			r = store_commit(c, diag);
		if (r < 0) {
			sp_diag_set(diag, SP_ERR_DATABASE, "cannot revoke the session");
			goto out;
		}
		r = sp_diag_set(diag, SP_ERR_KEY_BINDING, "this refresh token was already used: the "
		                "session is revoked; sign in again");
		goto out;
	}
	if (session_revoked || token_revoked || disabled || blocked) {
		r = sp_diag_set(diag, SP_ERR_PERMISSION, "the session is revoked, the user disabled or "
		                "the device blocked; sign in again");
		goto out;
	}
	if (token_expires <= now || out->session_expires_at <= now) {
		r = sp_diag_set(diag, SP_ERR_EXPIRED, "the session has expired; sign in again");
		goto out;
	}
	r = run(c->db, "UPDATE refresh_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL", "is",
	        now, token_id);
	if (r == 0 && db_changes(c->db) != 1)
		r = SP_ERR_DATABASE;
	if (r == 0)
		r = issue_refresh(c, out, family, now);
	if (r == 0)
		r = run(c->db, "UPDATE sessions SET last_used_at = ? WHERE id = ?", "is", now,
		        out->session_id);
	if (r == 0)
		r = run(c->db, "UPDATE devices SET last_seen_at = ? WHERE id = ?", "is", now,
		        out->device_id);
	if (r == 0)
		r = store_commit(c, diag);
	if (r < 0) {
		r = sp_diag_set(diag, SP_ERR_DATABASE, "cannot rotate the refresh token");
		goto out;
	}
	r = session_sign_access_token(c, out);
	if (r < 0)
		sp_diag_set(diag, r, "cannot sign the access token");
out:
	store_rollback(c);
	if (r < 0)
		session_grant_clear(out);
	return r;
}

int session_revoke(struct controller *c, const char *session_id, const char *reason,
                   const struct http_request *req, struct sp_diag *diag)
{
	int64_t now = c->now();
	int r = store_begin(c, diag);
	if (r < 0)
		return r;
	r = revoke_locked(c, session_id, reason, now);
	json_t *after = json_pack("{s:s}", "reason", reason);
	struct audit_event e = {.time = now, .action = "session.revoke", .target_type = "session",
	                        .target_id = session_id, .after = after};
	audit_in(req, &e);
	if (r == 0)
		r = audit_record(c->db, &e);
	json_decref(after);
	if (r == 0)
		r = store_commit(c, diag);
	if (r < 0) {
		store_rollback(c);
		return sp_diag_set(diag, SP_ERR_DATABASE, "cannot revoke the session");
	}
	return 0;
}

json_t *session_response(struct controller *c, const struct session_grant *g)
{
	json_t *user = NULL;
	struct db_stmt *st = query_row(c->db,
				       "SELECT id, email, display_name, role FROM users"
				       " WHERE id = ?",
				       "s", g->user_id);
	if (st != NULL) {
		user = store_row_json(st, NULL);
		db_finalize(st);
	}
	if (user == NULL)
		return NULL;
	return json_pack("{s:s, s:I, s:s, s:s, s:s, s:I, s:o}", "access_token", g->access_token,
	                 "access_token_expires_at", (json_int_t)g->access_token_expires_at,
	                 "refresh_token", g->refresh_token, "session_id", g->session_id, "device_id",
	                 g->device_id, "session_expires_at", (json_int_t)g->session_expires_at,
	                 "user", user);
}

int session_key_thumbprint(const char *pem, char out[SP_JWK_THUMBPRINT_LEN + 1])
{
	EVP_PKEY *key = NULL;
	out[0] = '\0';
	int r = SP_ERR_INVALID;
	if (pem != NULL && sp_key_from_pem(pem, strlen(pem), 1, &key, NULL) == 0 &&
	    sp_key_is_p256(key) && !sp_key_has_private(key))
		r = sp_jwk_thumbprint(key, out);
	EVP_PKEY_free(key);
	return r < 0 ? SP_ERR_INVALID : 0;
}

int session_service_verify(struct controller *c, const char *assertion, const char *device_jkt,
                           char user_id[33], char jti[129], int64_t *exp,
                           struct sp_diag *diag)
{
	user_id[0] = '\0';
	jti[0] = '\0';
	*exp = 0;
	char kid[64];
	if (assertion == NULL || strlen(assertion) > SP_TOKEN_MAX_LEN ||
	    sp_token_header_string(assertion, strlen(assertion), "kid", kid, sizeof(kid)) < 0 || strlen(kid) != 32)
		return sp_diag_set(diag, SP_ERR_INVALID, "assertion must be a compact JWS whose kid is "
		                   "a service account key id");
	int64_t now = c->now();
	EVP_PKEY *key = NULL;
	struct db_stmt *st = query_row(
	    c->db,
	    "SELECT k.public_key_pem, k.service_account_id FROM service_account_keys k"
	    " JOIN users u ON u.id = k.service_account_id WHERE k.id = ? AND k.revoked_at IS NULL"
	    " AND k.expires_at > ? AND u.disabled = 0",
	    "si", kid, now);
	if (st != NULL) {
		if (sp_key_from_pem((const char *)db_column_text(st, 0),
				    (size_t)db_column_bytes(st, 0), 1, &key, NULL) < 0)
			key = NULL;
		column_copy(st, 1, user_id, 33);
		db_finalize(st);
	}
	if (key == NULL) {
		user_id[0] = '\0';
		return sp_diag_set(diag, SP_ERR_NOT_FOUND, "the service account key is unknown, "
		                   "revoked or expired, or its account is disabled");
	}
	struct sp_jwks keys;
	json_t *claims = NULL;
	sp_jwks_init(&keys);
	int r = sp_jwks_add_es256(&keys, kid, key);
	EVP_PKEY_free(key);
	if (r == 0)
		r = sp_token_verify(assertion, strlen(assertion), &keys, "ES256", &claims, diag);
	sp_jwks_free(&keys);
	if (r == 0) {
		struct sp_token_expect e = {.issuer = user_id,
		                            .audience = c->settings.public_url,
		                            .now = now,
		                            .max_skew_s = 60,
		                            .jkt = device_jkt,
		                            .require_exp = 1};
		r = sp_token_check_claims(claims, &e, diag);
	}
	if (r == 0) {
		const json_t *id = json_object_get(claims, "jti");
		if (!session_lifetime_within(claims, SESSION_SERVICE_MAX_LIFETIME_S))
			r = sp_diag_set(diag, SP_ERR_CLAIM, "the assertion must have iat and live at most "
			                "%d seconds", SESSION_SERVICE_MAX_LIFETIME_S);
		else if (!json_is_string(id) || json_string_length(id) < 16 ||
		         json_string_length(id) > 128)
			r = sp_diag_set(diag, SP_ERR_CLAIM, "the assertion needs a jti of 16-128 "
			                "characters");
		else {
			snprintf(jti, 129, "%s", json_string_value(id));
			*exp = (int64_t)json_integer_value(json_object_get(claims, "exp"));
		}
	}
	json_decref(claims);
	if (r < 0) {
		user_id[0] = '\0';
		jti[0] = '\0';
		return r;
	}
	(void)run(c->db, "UPDATE service_account_keys SET last_used_at = ? WHERE id = ?", "is", now,
	          kid);
	return 0;
}

int session_lifetime_within(const json_t *claims, int64_t max_s)
{
	const json_t *iat = json_object_get(claims, "iat");
	const json_t *exp = json_object_get(claims, "exp");
	if (!json_is_integer(iat) || !json_is_integer(exp) || max_s < 0)
		return 0;
	int64_t from = (int64_t)json_integer_value(iat), to = (int64_t)json_integer_value(exp);
	if (to < from)
		return 0;
	/* to >= from, so the unsigned difference is exact even across the sign. */
	return (uint64_t)to - (uint64_t)from <= (uint64_t)max_s;
}
