/* controller/apikey.c — see apikey.h. */
#include "controller/apikey.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "controller/app.h"

int apikey_create(struct db *db, const char *name, const char *role, int64_t now,
		  char key_out[SP_SECRET_TEXT_MAX], char id_out[33], struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	char hash[SP_SECRET_HASH_HEX];
	struct db_stmt *st = NULL;

	key_out[0] = '\0';
	id_out[0] = '\0';
	size_t name_len = name != NULL ? strlen(name) : 0;
	if (name_len == 0 || name_len > 128)
		return sp_diag_set(diag, SP_ERR_INVALID, "name must be 1-128 characters");
	if (role == NULL || (strcmp(role, "admin") != 0 && strcmp(role, "auditor") != 0))
		return sp_diag_set(diag, SP_ERR_INVALID, "role must be \"admin\" or \"auditor\"");
	if ((r = sp_secret_new(APIKEY_KIND, key_out, SP_SECRET_TEXT_MAX)) < 0 ||
	    (r = sp_secret_hash(key_out, strlen(key_out), hash)) < 0 ||
	    (r = sp_random_hex(16, id_out, 33)) < 0) {
		sp_diag_set(diag, r, "cannot make a key: %s", sp_strerror(r));
		goto out;
	}
	/* The prefix lets a person tell keys apart in listings without revealing them. */
	char prefix[13];
	snprintf(prefix, sizeof(prefix), "%.12s", key_out);
	if (db_prepare(db,
		       "INSERT INTO api_keys (id, name, role, key_hash, prefix, created_at)"
		       " VALUES (?, ?, ?, ?, ?, ?)",
		       &st) != 0) {
		r = sp_diag_set(diag, SP_ERR_DATABASE, "cannot store the key: %s", db_errmsg(db));
		goto out;
	}
	db_bind_text(st, 1, id_out, -1, DB_STATIC);
	db_bind_text(st, 2, name, -1, DB_STATIC);
	db_bind_text(st, 3, role, -1, DB_STATIC);
	db_bind_text(st, 4, hash, -1, DB_STATIC);
	db_bind_text(st, 5, prefix, -1, DB_STATIC);
	db_bind_int64(st, 6, now);
	if (db_step(st) != DB_DONE) {
		r = sp_diag_set(diag, SP_ERR_DATABASE, "cannot store the key: %s", db_errmsg(db));
		goto out;
	}
	r = 0;
out:
	db_finalize(st);
	if (r < 0) {
		OPENSSL_cleanse(key_out, SP_SECRET_TEXT_MAX);
		key_out[0] = '\0';
		id_out[0] = '\0';
	}
	return r;
}

int apikey_authenticate(struct db *db, const char *presented, int64_t now,
			struct apikey_identity *out)
{
	int r = SP_ERR_NOT_FOUND;
	char hash[SP_SECRET_HASH_HEX];
	struct db_stmt *st = NULL;

	memset(out, 0, sizeof(*out));
	if (presented == NULL ||
	    sp_secret_check_format(APIKEY_KIND, presented, strlen(presented)) < 0)
		return SP_ERR_INVALID;
	if (sp_secret_hash(presented, strlen(presented), hash) < 0)
		return SP_ERR_CRYPTO;
	if (db_prepare(db,
		       "SELECT id, name, role, key_hash, last_used_at FROM api_keys"
		       " WHERE key_hash = ? AND revoked_at IS NULL"
		       " AND (expires_at IS NULL OR expires_at > ?)",
		       &st) != 0)
		return SP_ERR_DATABASE;
	db_bind_text(st, 1, hash, -1, DB_STATIC);
	db_bind_int64(st, 2, now);
	if (db_step(st) != DB_ROW)
		goto out;
	/* The index found it by equality; compare once more in constant time anyway. */
	if (!sp_secret_hash_equal((const char *)db_column_text(st, 3), hash))
		goto out;
	snprintf(out->id, sizeof(out->id), "%s", (const char *)db_column_text(st, 0));
	snprintf(out->name, sizeof(out->name), "%s", (const char *)db_column_text(st, 1));
	out->role =
	    strcmp((const char *)db_column_text(st, 2), "admin") == 0 ? ROLE_ADMIN : ROLE_AUDITOR;
	int64_t last_used = db_column_type(st, 4) == DB_NULL ? 0 : db_column_int64(st, 4);
	db_finalize(st);
	st = NULL;
	if (now - last_used >= 60 &&
	    db_prepare(db, "UPDATE api_keys SET last_used_at = ? WHERE id = ?", &st) == 0) {
		db_bind_int64(st, 1, now);
		db_bind_text(st, 2, out->id, -1, DB_STATIC);
		(void)db_step(st); /* bookkeeping only: a busy database must not refuse a key */
	}
	r = 0;
out:
	db_finalize(st);
	if (r < 0)
		memset(out, 0, sizeof(*out));
	return r;
}
