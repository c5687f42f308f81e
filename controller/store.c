/* controller/store.c — see store.h. */
#include "controller/store.h"

#include <string.h>

#include "shared/log.h"
#include "shared/secret.h"

int store_begin(struct controller *c, struct sp_diag *diag)
{
	if (sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		return sp_diag_set(diag, SP_ERR_DATABASE, "cannot start a transaction: %s",
		                   sqlite3_errmsg(c->db));
	return 0;
}

int64_t store_latest_change(struct controller *c)
{
	sqlite3_stmt *st = NULL;
	int64_t seq = 0;
	if (sqlite3_prepare_v2(c->db, "SELECT coalesce(max(seq), 0) FROM changes", -1, &st,
	                       NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		seq = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return seq;
}

int store_commit(struct controller *c, struct sp_diag *diag)
{
	int64_t seq = store_latest_change(c);
	if (sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		int r = store_is_full(c)
			    ? sp_diag_set(diag, SP_ERR_IO,
					  "the database disk is full: the change was not saved")
			    : sp_diag_set(diag, SP_ERR_DATABASE, "cannot commit: %s",
					  sqlite3_errmsg(c->db));
		store_rollback(c);
		return r;
	}
	if (c->feed != NULL)
		feed_publish(c->feed, seq);
	return 0;
}

int store_is_full(struct controller *c)
{
	if ((sqlite3_extended_errcode(c->db) & 0xff) != SQLITE_FULL)
		return 0;
	SP_LOG(SP_LOG_ERROR,
	       "the database disk is full: changes are refused until space is freed in the state "
	       "directory",
	       SP_LOG_STR("database", sqlite3_db_filename(c->db, "main")),
	       SP_LOG_STR("error", sqlite3_errmsg(c->db)));
	return 1;
}

void store_rollback(struct controller *c)
{
	if (!sqlite3_get_autocommit(c->db))
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
}

int store_new_id(char id[33])
{
	return sp_random_hex(16, id, 33);
}

static int listed(const char *name, const char *const *list)
{
	for (size_t i = 0; list != NULL && list[i] != NULL; i++)
		if (strcmp(name, list[i]) == 0)
			return 1;
	return 0;
}

json_t *store_row_json(sqlite3_stmt *st, const char *const *json_columns)
{
	json_t *row = json_object();
	if (row == NULL)
		return NULL;
	int n = sqlite3_column_count(st);
	for (int i = 0; i < n; i++) {
		const char *name = sqlite3_column_name(st, i);
		size_t len = strlen(name);
		int is_json = listed(name, json_columns) ||
		              (len > 5 && strcmp(name + len - 5, "_json") == 0);
		char key[128];
		snprintf(key, sizeof(key), "%.*s", (int)(is_json && len > 5 &&
		                                         strcmp(name + len - 5, "_json") == 0
		                                                 ? len - 5
		                                                 : len),
		         name);
		json_t *value;
		switch (sqlite3_column_type(st, i)) {
		case SQLITE_INTEGER:
			value = json_integer((json_int_t)sqlite3_column_int64(st, i));
			break;
		case SQLITE_FLOAT:
			value = json_real(sqlite3_column_double(st, i));
			break;
		case SQLITE_NULL:
			value = json_null();
			break;
		default: {
			const char *text = (const char *)sqlite3_column_text(st, i);
			size_t text_len = (size_t)sqlite3_column_bytes(st, i);
			value = is_json ? json_loadb(text, text_len, JSON_DECODE_ANY, NULL) : NULL;
			if (value == NULL)
				value = json_stringn(text, text_len);
		}
		}
		if (value == NULL || json_object_set_new(row, key, value) < 0) {
			json_decref(row);
			return NULL;
		}
	}
	return row;
}
