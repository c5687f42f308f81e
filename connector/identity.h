/*
 * connector/identity.h — who this connector is: its P-256 key and the identity the
 * controller gave it at enrollment (connector id, network id, controller JWKS), kept
 * in the state directory:
 *
 *   STATE_DIR/            0700, created on first start
 *   STATE_DIR/connector.key   the private key, 0600 (shared/keys.h refuses looser)
 *   STATE_DIR/identity.json   {"connector_id", "network_id", "controller_jwks"}, 0600
 *
 * The first start enrolls with the one-time token; later starts reuse the files and
 * ignore the token. Owned by main; read-only after start except for `keys`, which only
 * the control thread replaces.
 */
#ifndef SALLYPORT_CONNECTOR_IDENTITY_H
#define SALLYPORT_CONNECTOR_IDENTITY_H

#include <openssl/evp.h>

#include "connector/connector_config.h"
#include "shared/error.h"
#include "shared/jwk.h"

struct connector_identity {
	char connector_id[CONNECTOR_ID_MAX + 1];
	char network_id[CONNECTOR_ID_MAX + 1];
	struct sp_jwks keys; /* controller keys from enrollment (refreshed by the control thread) */
	EVP_PKEY *key;	     /* our private key */
	int enrolled_now;    /* 1 when this start enrolled */
};

/* What enrollment needs. Borrowed strings. */
struct connector_enroll_params {
	const char *state_dir;
	const char *controller_url;
	const char *enroll_token; /* NULL: must already be enrolled */
	const char *name;
	const char *direct_address; /* NULL: none */
	const char *version;
};

/*
 * Loads the identity from the state dir, or enrolls (creating dir, key and identity file).
 * Errors carry one line a person can act on: SP_ERR_PERMISSION (state dir or file too
 * open), SP_ERR_NOT_FOUND (not enrolled and no token), SP_ERR_EXPIRED / SP_ERR_EXISTS /
 * SP_ERR_INVALID (the controller refused the token: unknown, expired, already used...),
 * SP_ERR_IO (controller unreachable).
 */
int connector_identity_load_or_enroll(const struct connector_enroll_params *p,
				      struct connector_identity *out, struct sp_diag *diag);

/* Releases the key and key set. Safe on a zeroed struct. */
void connector_identity_free(struct connector_identity *id);

#endif
