/*
 * controller/apikey.h — admin API keys: made by `sallyport-controller admin-key create`
 * or through the API, shown once, stored as a SHA-256 hash, presented as
 * `Authorization: Bearer spk_...`.
 */
#ifndef SALLYPORT_CONTROLLER_APIKEY_H
#define SALLYPORT_CONTROLLER_APIKEY_H

#include <stdint.h>

#include "controller/db.h"

#include "shared/error.h"
#include "shared/secret.h"

#define APIKEY_KIND "spk"

struct apikey_identity {
	char id[33];
	char name[129];
	unsigned role; /* ROLE_ADMIN or ROLE_AUDITOR */
};

/*
 * Creates a key named `name` with role "admin" or "auditor". The secret is written to
 * key_out (shown to the person once, never stored); the new row's id to id_out.
 */
int apikey_create(struct db *db, const char *name, const char *role, int64_t now,
		  char key_out[SP_SECRET_TEXT_MAX], char id_out[33], struct sp_diag *diag);

/*
 * Finds the unrevoked, unexpired key for a presented secret. SP_ERR_INVALID for text that
 * is not shaped like a key, SP_ERR_NOT_FOUND for an unknown, revoked or expired key.
 * Records last_used_at at most once a minute per key.
 */
int apikey_authenticate(struct db *db, const char *presented, int64_t now,
			struct apikey_identity *out);

#endif
