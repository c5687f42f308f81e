/* controller/store.c — see store.h. */
#include "controller/store.h"

#include <string.h>

#include "shared/log.h"
#include "shared/secret.h"

int store_begin(struct controller *c, struct sp_diag *diag)
{
	if (db_begin_immediate(c->db) != 0)
		return sp_diag_set(diag, SP_ERR_DATABASE, "cannot start a transaction: %s",
				   db_errmsg(c->db));
	return 0;
}

int64_t store_latest_change(struct controller *c)
{
	struct db_stmt *st = NULL;
	int64_t seq = 0;
	if (db_prepare(c->db, "SELECT coalesce(max(seq), 0) FROM changes", &st) == 0 &&
	    db_step(st) == DB_ROW)
		seq = db_column_int64(st, 0);
	db_finalize(st);
	return seq;
}

int store_commit(struct controller *c, struct sp_diag *diag)
{
	int64_t seq = store_latest_change(c);
	if (db_commit(c->db) != 0) {
		int r = store_is_full(c)
			    ? sp_diag_set(diag, SP_ERR_IO,
					  "the database disk is full: the change was not saved")
			    : sp_diag_set(diag, SP_ERR_DATABASE, "cannot commit: %s",
					  db_errmsg(c->db));
		store_rollback(c);
		return r;
	}
	if (c->feed != NULL)
		feed_publish(c->feed, seq);
	return 0;
}

int store_is_full(struct controller *c)
{
	if (!db_storage_full(c->db))
		return 0;
	SP_LOG(SP_LOG_ERROR,
	       "the database disk is full: changes are refused until space is freed in the state "
	       "directory",
	       SP_LOG_STR("database", c->settings.database),
	       SP_LOG_STR("error", db_errmsg(c->db)));
	return 1;
}

void store_rollback(struct controller *c)
{
	db_rollback(c->db);
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

json_t *store_row_json(struct db_stmt *st, const char *const *json_columns)
{
	json_t *row = json_object();
	if (row == NULL)
		return NULL;
	int n = db_column_count(st);
	for (int i = 0; i < n; i++) {
		const char *name = db_column_name(st, i);
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
		switch (db_column_type(st, i)) {
		case DB_INT:
			value = json_integer((json_int_t)db_column_int64(st, i));
			break;
		case DB_FLOAT:
			value = json_real(db_column_double(st, i));
			break;
		case DB_NULL:
			value = json_null();
			break;
		default: {
			const char *text = (const char *)db_column_text(st, i);
			size_t text_len = (size_t)db_column_bytes(st, i);
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
