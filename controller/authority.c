/* controller/authority.c — see authority.h. */
#include "controller/authority.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "shared/keys.h"

#define DAY (24 * 3600)

static const struct authority_periods default_periods = {
	.sign_period_s = 30 * DAY,
	.publish_lead_s = DAY,
	.max_token_lifetime_s = DAY,
};

static int db_error(struct db *db, struct sp_diag *diag, const char *what)
{
	return sp_diag_set(diag, SP_ERR_DATABASE, "signing keys: %s: %s", what, db_errmsg(db));
}

/* Generates a key valid from not_before and stores it. */
static int create_key(struct authority *a, struct db *db, int64_t now, int64_t not_before,
		      struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	EVP_PKEY *key = NULL;
	char *pem = NULL;
	size_t pem_len = 0;
	char kid[SP_JWK_THUMBPRINT_LEN + 1];
	struct db_stmt *st = NULL;

	if ((r = sp_key_generate(&key)) < 0 || (r = sp_key_private_pem(key, &pem, &pem_len)) < 0 ||
	    (r = sp_jwk_thumbprint(key, kid)) < 0) {
		r = sp_diag_set(diag, r, "signing keys: cannot make a key: %s", sp_strerror(r));
		goto out;
	}
	/* The kid is the key's own thumbprint: stable, unique, and checkable by anyone. */
	int64_t not_after = not_before + a->periods.sign_period_s;
	if (db_prepare(db,
		       "INSERT INTO signing_keys (kid, algorithm, private_key_pem, created_at,"
		       " not_before, not_after, retire_after) VALUES (?, 'ES256', ?, ?, ?, ?, ?)",
		       &st) != 0) {
		r = db_error(db, diag, "prepare insert");
		goto out;
	}
	db_bind_text(st, 1, kid, -1, DB_STATIC);
	db_bind_text(st, 2, pem, (int)pem_len, DB_STATIC);
	db_bind_int64(st, 3, now);
	db_bind_int64(st, 4, not_before);
	db_bind_int64(st, 5, not_after);
	db_bind_int64(st, 6, not_after + a->periods.max_token_lifetime_s);
	if (db_step(st) != DB_DONE) {
		r = db_error(db, diag, "insert");
		goto out;
	}
	r = 0;
out:
	db_finalize(st);
	sp_key_free_pem(pem, pem_len);
	EVP_PKEY_free(key);
	return r;
}

static void clear_loaded(struct authority *a)
{
	sp_jwks_free(&a->published);
	sp_token_signer_free(a->signer);
	a->signer = NULL;
	free(a->jwks_document);
	a->jwks_document = NULL;
	a->jwks_length = 0;
	a->active_kid[0] = '\0';
	a->active_not_after = 0;
}

/* Reads every unretired key: all are published, the newest already valid one signs. */
static int load(struct authority *a, struct db *db, int64_t now, struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	struct db_stmt *st = NULL;
	int64_t best_not_before = -1;
	int64_t earliest_event = INT64_MAX;

	clear_loaded(a);
	sp_jwks_init(&a->published);
	if (db_prepare(db,
		       "SELECT kid, private_key_pem, not_before, not_after, retire_after"
		       " FROM signing_keys WHERE retire_after > ? ORDER BY not_before",
		       &st) != 0)
		return db_error(db, diag, "prepare select");
	db_bind_int64(st, 1, now);
	int step;
	while ((step = db_step(st)) == DB_ROW) {
		const char *kid = (const char *)db_column_text(st, 0);
		const char *pem = (const char *)db_column_text(st, 1);
		int pem_len = db_column_bytes(st, 1);
		int64_t not_before = db_column_int64(st, 2);
		int64_t not_after = db_column_int64(st, 3);
		int64_t retire_after = db_column_int64(st, 4);
		EVP_PKEY *key = NULL;
		r = sp_key_from_pem(pem, (size_t)pem_len, 0, &key, diag);
		if (r == 0)
			r = sp_jwks_add_es256(&a->published, kid, key);
		if (r == 0 && not_before <= now && now < not_after && not_before > best_not_before) {
			struct sp_token_signer *signer = NULL;
			r = sp_token_signer_new(key, kid, &signer);
			if (r == 0) {
				sp_token_signer_free(a->signer);
				a->signer = signer;
				snprintf(a->active_kid, sizeof(a->active_kid), "%s", kid);
				a->active_not_after = not_after;
				best_not_before = not_before;
			}
		}
		EVP_PKEY_free(key);
		if (r < 0) {
			sp_diag_set(diag, r, "signing key %s cannot be used: %s", kid, sp_strerror(r));
			goto out;
		}
		/* The next moment something changes: a key starts or stops signing or retires. */
		int64_t events[3] = {not_before, not_after, retire_after};
		for (size_t i = 0; i < 3; i++)
			if (events[i] > now && events[i] < earliest_event)
				earliest_event = events[i];
	}
	if (step != DB_DONE) {
		r = db_error(db, diag, "select");
		goto out;
	}
	if (a->signer == NULL) {
		r = sp_diag_set(diag, SP_ERR_NOT_FOUND, "signing keys: no key is valid now");
		goto out;
	}
	if ((r = sp_jwks_serialize(&a->published, &a->jwks_document, &a->jwks_length)) < 0) {
		sp_diag_set(diag, r, "signing keys: cannot write the JWKS");
		goto out;
	}
	a->next_check = earliest_event;
	if (a->active_not_after - a->periods.publish_lead_s < a->next_check)
		a->next_check = a->active_not_after - a->periods.publish_lead_s;
	r = 0;
out:
	db_finalize(st);
	return r;
}

/* In one transaction: delete retired keys; make sure a key signs now; add a successor
 * when the active one ends within publish_lead_s. */
static int maintain(struct authority *a, struct db *db, int64_t now, struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	struct db_stmt *st = NULL;
	if (db_begin_immediate(db) != 0)
		return db_error(db, diag, "begin");
	if (db_prepare(db, "DELETE FROM signing_keys WHERE retire_after <= ?", &st) != 0) {
		r = db_error(db, diag, "prepare delete");
		goto out;
	}
	db_bind_int64(st, 1, now);
	if (db_step(st) != DB_DONE) {
		r = db_error(db, diag, "delete");
		goto out;
	}
	db_finalize(st);
	st = NULL;
	/* The latest not_after among keys that sign now or later. */
	if (db_prepare(db,
		       "SELECT max(not_after), count(*) FROM signing_keys"
		       " WHERE not_after > ? AND not_before <= ?",
		       &st) != 0) {
		r = db_error(db, diag, "prepare select");
		goto out;
	}
	db_bind_int64(st, 1, now);
	db_bind_int64(st, 2, now);
	if (db_step(st) != DB_ROW) {
		r = db_error(db, diag, "select");
		goto out;
	}
	int64_t current_end = db_column_int64(st, 0);
	int64_t signing_now = db_column_int64(st, 1);
	db_finalize(st);
	st = NULL;
	if (signing_now == 0) {
		if ((r = create_key(a, db, now, now, diag)) < 0)
			goto out;
		current_end = now + a->periods.sign_period_s;
	}
	if (current_end - now <= a->periods.publish_lead_s) {
		/* A successor starting when the current key ends, unless one exists already. */
		if (db_prepare(db, "SELECT count(*) FROM signing_keys WHERE not_before > ?", &st) !=
		    0) {
			r = db_error(db, diag, "prepare successor");
			goto out;
		}
		db_bind_int64(st, 1, now);
		if (db_step(st) != DB_ROW) {
			r = db_error(db, diag, "select successor");
			goto out;
		}
		int64_t successors = db_column_int64(st, 0);
		db_finalize(st);
		st = NULL;
		if (successors == 0 && (r = create_key(a, db, now, current_end, diag)) < 0)
			goto out;
	}
	if (db_commit(db) != 0) {
		r = db_error(db, diag, "commit");
		goto out;
	}
	return 0;
out:
	db_finalize(st);
	db_rollback(db);
	return r;
}

int authority_open(struct authority *a, struct db *db, const struct authority_periods *periods,
		   int64_t now, struct sp_diag *diag)
{
	memset(a, 0, sizeof(*a));
	sp_jwks_init(&a->published);
	a->periods = periods != NULL ? *periods : default_periods;
	if (a->periods.sign_period_s <= 0 || a->periods.publish_lead_s <= 0 ||
	    a->periods.publish_lead_s >= a->periods.sign_period_s ||
	    a->periods.max_token_lifetime_s <= 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "signing key periods are inconsistent");
	int r = maintain(a, db, now, diag);
	if (r == 0)
		r = load(a, db, now, diag);
	if (r < 0)
		authority_close(a);
	return r;
}

int authority_refresh(struct authority *a, struct db *db, int64_t now, struct sp_diag *diag)
{
	if (now < a->next_check)
		return 0;
	int r = maintain(a, db, now, diag);
	if (r == 0)
		r = load(a, db, now, diag);
	return r;
}

void authority_close(struct authority *a)
{
	if (a == NULL)
		return;
	clear_loaded(a);
	memset(a, 0, sizeof(*a));
}

int authority_sign(struct authority *a, const json_t *claims, char **out)
{
	*out = NULL;
	if (a->signer == NULL)
		return SP_ERR_NOT_FOUND;
	return sp_token_signer_sign(a->signer, claims, out);
}

int authority_sign_document(struct authority *a, const json_t *claims, char **out)
{
	*out = NULL;
	if (a->signer == NULL)
		return SP_ERR_NOT_FOUND;
	return sp_token_signer_sign_max(a->signer, claims, SP_TOKEN_DOCUMENT_MAX_LEN, out);
}

const char *authority_jwks(const struct authority *a, size_t *length)
{
	*length = a->jwks_length;
	return a->jwks_document;
}
