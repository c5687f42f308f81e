/*
 * controller/authority.h — the controller's signing keys: creation, rotation, the
 * published JWKS, and signing.
 *
 * Every token the controller issues (grants, resource lists, connector configs, relay
 * tickets) is an ES256 JWS signed by the *active* key. Key lifecycle, all times in the
 * signing_keys table:
 *
 *   created ── not_before ──────── not_after ──────── retire_after
 *              │ signs tokens      │ no longer signs   │ dropped from JWKS, deleted
 *   published in the JWKS from creation until retire_after
 *
 * A successor is created `publish_lead_s` before the active key's not_after, so every
 * verifier has fetched it before the first token it signs; a key stays published for
 * `max_token_lifetime_s` after it stops signing, so no valid token outlives its key.
 * Private keys live in the database (protected by the file mode of the database and
 * its directory, see docs/schema.md).
 *
 * Ownership: the controller owns one struct authority and uses it from the HTTP thread
 * only. authority_close releases keys and wipes cached private material.
 */
#ifndef SALLYPORT_CONTROLLER_AUTHORITY_H
#define SALLYPORT_CONTROLLER_AUTHORITY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include "controller/db.h"

#include "shared/error.h"
#include "shared/jwk.h"
#include "shared/token.h"

struct authority_periods {
	int64_t sign_period_s;        /* how long a key signs (default 30 days) */
	int64_t publish_lead_s;       /* successor published this long ahead (default 1 day) */
	int64_t max_token_lifetime_s; /* kept in the JWKS this long after (default 1 day) */
};

struct authority {
	struct authority_periods periods;
	struct sp_jwks published;        /* every key not yet retired */
	struct sp_token_signer *signer;  /* the active key */
	char active_kid[SP_JWK_THUMBPRINT_LEN + 1];
	int64_t active_not_after;
	char *jwks_document;             /* cached serialized JWKS */
	size_t jwks_length;
	int64_t next_check;              /* when authority_refresh has work to do next */
};

/* Loads keys (creating the first one if the table is empty). periods may be NULL. */
int authority_open(struct authority *a, struct db *db, const struct authority_periods *periods,
		   int64_t now, struct sp_diag *diag);
/*
 * Brings keys up to date at time `now`: creates a successor when due, switches the
 * active key, deletes retired keys, and reloads. Cheap when nothing is due. Writes happen
 * in one transaction.
 */
int authority_refresh(struct authority *a, struct db *db, int64_t now, struct sp_diag *diag);
void authority_close(struct authority *a);

/* Signs the claims with the active key. *out is freed by the caller with free(). */
int authority_sign(struct authority *a, const json_t *claims, char **out);
/* The same for signed documents (resource lists, connector configs), up to
 * SP_TOKEN_DOCUMENT_MAX_LEN bytes. */
int authority_sign_document(struct authority *a, const json_t *claims, char **out);
/* The JWKS document ({"keys":[...]}), valid until the next refresh. */
const char *authority_jwks(const struct authority *a, size_t *length);

#endif
