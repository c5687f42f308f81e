/*
 * connector/connector_config.h — the connector's own view of its signed config
 * (docs/protocol.md §1.6): the controller keys it verifies with, its network, the
 * resources of that network and the revocation sets.
 *
 * Built by the control thread from a verified config document (connector_config_from_claims)
 * and handed to the data-plane thread, which then owns it and frees it with
 * connector_config_free when a newer one replaces it. Read-only once built.
 */
#ifndef SALLYPORT_CONNECTOR_CONNECTOR_CONFIG_H
#define SALLYPORT_CONNECTOR_CONNECTOR_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "shared/error.h"
#include "shared/jwk.h"
#include "shared/resource.h"

/* Ids in Sallyport are 32 lower-case hex digits; we keep up to 64 characters. */
#define CONNECTOR_ID_MAX 64

/* One resource of the config with the controller's string id. Owned by its config. */
struct connector_resource {
	char id[CONNECTOR_ID_MAX + 1];
	struct sp_resource resource; /* parsed by shared/resource.h */
};

/* A sorted set of ids (bsearch). Owned by its config. */
struct connector_id_set {
	char **ids;
	size_t count;
};

/*
 * An "access ended" revocation (docs/protocol.md §1.6, revocations.access): grants of
 * `user` for `resource` issued at or before `at` are refused and their live flows cut.
 * Either id may be "*" (the controller's fallback past CONNECTOR_ACCESS_REVOCATIONS_MAX
 * pairs: every resource of the user, or every user).
 */
#define CONNECTOR_ACCESS_REVOCATIONS_MAX 10000
#define CONNECTOR_ACCESS_ANY "*"
struct connector_access_revocation {
	char user[CONNECTOR_ID_MAX + 1];
	char resource[CONNECTOR_ID_MAX + 1];
	int64_t at;
};

struct connector_config {
	char issuer[512];			   /* the controller's public URL (iss) */
	char network_id[CONNECTOR_ID_MAX + 1];	   /* the network this connector serves */
	int64_t seq;				   /* change-feed seq the document was built at */
	int64_t issued_at;			   /* iat of the document (0 when absent) */
	int64_t expires_at;			   /* exp of the document */
	struct sp_jwks keys;			   /* controller keys (grants are verified with them) */
	struct connector_resource *resources;	   /* sorted by id */
	size_t resource_count;
	struct connector_id_set revoked_sessions;
	struct connector_id_set revoked_devices;
	struct connector_id_set revoked_users;
	struct connector_access_revocation *access; /* sorted by (user, resource), unique */
	size_t access_count;
};

/*
 * Builds a config from the claims of a config document whose signature was already
 * verified: checks v, typ, aud (sallyport:connector:<connector_id>), exp against now
 * (60 s skew), network_id == expected_network, then parses resources and revocations.
 * The keys are copied from `keys`. Returns 0 and *out (connector_config_free), or
 * SP_ERR_INVALID / SP_ERR_AUDIENCE / SP_ERR_EXPIRED / SP_ERR_NOMEM with a diag.
 */
int connector_config_from_claims(const json_t *claims, const char *connector_id,
				 const char *expected_network, const struct sp_jwks *keys,
				 int64_t now, struct connector_config **out, struct sp_diag *diag);

/*
 * 1 when the verified config `next` is older than the one in use, which was built at
 * change seq `cur_seq` and issued at `cur_iat` (cur_seq < 0: none in use yet): a lower
 * seq AND an iat no later. Such a document is a replay of an earlier, still unexpired
 * config (it could bring back revoked sessions or deleted resources) and is refused. A
 * controller whose database was restored (lower seq) issues documents with a newer iat,
 * so it is not shut out; nor is one whose clock stepped back (its seq still grows).
 */
int connector_config_is_older(int64_t cur_seq, int64_t cur_iat,
			      const struct connector_config *next);

/* Releases everything. Safe on NULL. */
void connector_config_free(struct connector_config *cfg);

/* The resource with this id, or NULL. */
const struct connector_resource *connector_config_find_resource(const struct connector_config *cfg,
								 const char *id);

/* 1 when id is in the set. */
int connector_id_set_contains(const struct connector_id_set *set, const char *id);

/*
 * The latest `at` of the access revocations that cover a grant of `user` for `resource`
 * (the pair itself, the user with resource "*", or "*" with "*"), or -1 when none does.
 * A grant with iat <= the result is revoked.
 */
int64_t connector_access_revoked_at(const struct connector_config *cfg, const char *user,
				    const char *resource);

/* Copies a key set (entries re-referenced). 0 or SP_ERR_NOMEM. */
int connector_jwks_copy(const struct sp_jwks *from, struct sp_jwks *to);

#endif
