/*
 * controller/session.h — signed-in users and client sessions in the store: provisioning a
 * person at sign-in (with IdP group sync), device registration, sessions bound to device
 * keys, rotating refresh tokens with reuse detection, access tokens and revocation.
 *
 * Every function runs its own transaction (store_begin .. store_commit) with its audit
 * event, on the HTTP thread. The HTTP handlers in controller/auth.c stay thin around them.
 *
 * Refresh tokens ("spr_..." from shared/secret.h) are stored as SHA-256 only. Each use
 * marks the presented token used and issues the next one of the same family; presenting
 * a used (or revoked) token again is taken as theft: the session is revoked with reason
 * 'refresh_token_reuse', every token of the family revoked, and an audit event written.
 *
 * Access tokens are docs/protocol.md §1.3, signed by the authority, SESSION_ACCESS_TTL_S
 * long; controller/gate.c checks them.
 */
#ifndef SALLYPORT_CONTROLLER_SESSION_H
#define SALLYPORT_CONTROLLER_SESSION_H

#include <stdint.h>

#include <jansson.h>

#include "controller/app.h"
#include "shared/error.h"
#include "shared/jwk.h"
#include "shared/secret.h"

#define SESSION_ACCESS_TTL_S 600
#define SESSION_REFRESH_KIND "spr"
#define SESSION_MAX_GROUPS 256

/* A person as the store knows them after sign-in. */
struct session_user {
	char id[33];
	char email[321];
	char display_name[257];
	char role[16]; /* user, auditor, admin */
};

/*
 * Provisions or updates the person named by validated ID token claims (iss = issuer,
 * sub, email lower-cased, name/preferred_username as display name), makes them admin
 * when their e-mail is in settings.admin_emails, and replaces their 'idp' memberships by
 * `groups` (a JSON array of group names, or NULL for none), creating 'idp' groups as
 * needed. A group name already used by a 'local' group is skipped (an IdP must not be able
 * to put people into groups admins manage by hand). Records auth.sign_in in the same
 * transaction with `client` ("console", "native"). req may be NULL (tests).
 * SP_ERR_PERMISSION for a disabled user (audited as failed by the caller).
 */
int session_provision_user(struct controller *c, const json_t *claims, const json_t *groups,
                           const char *client, const struct http_request *req,
                           struct session_user *out, struct sp_diag *diag);

/* What a new or refreshed client session hands back. */
struct session_grant {
	char session_id[33];
	char device_id[33];
	char user_id[33];
	char jkt[SP_JWK_THUMBPRINT_LEN + 1];
	char refresh_token[SP_SECRET_TEXT_MAX];
	char *access_token; /* heap; session_grant_clear frees it */
	int64_t access_token_expires_at;
	int64_t session_expires_at;
};
void session_grant_clear(struct session_grant *g);

/*
 * Registers (or finds) the device of a P-256 public key PEM for user_id and opens a
 * session: expires_at = now + settings.session_ttl_s, auth_method ("oidc",
 * "device_code", "service_key"), auth_time and amr (a JSON array text, or NULL).
 * A new device is 'approved' when settings.device_approval is 'auto', else 'pending'.
 * SP_ERR_INVALID for a bad key or name, SP_ERR_EXISTS when the key is bound to another
 * user, SP_ERR_PERMISSION when the device is blocked or the user disabled.
 */
int session_create(struct controller *c, const char *user_id, const char *auth_method,
                   int64_t auth_time, const char *amr_json, const char *device_public_key_pem,
                   const char *device_name, const struct http_request *req,
                   struct session_grant *out, struct sp_diag *diag);

/*
 * Rotates a refresh token. SP_ERR_NOT_FOUND (unknown or malformed), SP_ERR_EXPIRED
 * (token or session over), SP_ERR_PERMISSION (session revoked, user disabled, device
 * blocked), SP_ERR_KEY_BINDING for reuse of a used token (the session is revoked then).
 */
int session_refresh(struct controller *c, const char *refresh_token,
                    const struct http_request *req, struct session_grant *out,
                    struct sp_diag *diag);

/*
 * Verifies a service account's sign-in assertion: a compact ES256 JWS whose kid is the id
 * of a live service_account_keys row (not revoked, not expired, its account's user not
 * disabled), signed by that key, with iss = the service account's user id, aud =
 * settings.public_url, iat and exp with exp - iat <= SESSION_SERVICE_MAX_LIFETIME_S, a jti
 * of 16-128 characters, and cnf.jkt = device_jkt (the assertion names the device key the
 * session will be bound to, so a copy of it is useless with any other key). Pure of side
 * effects but for the key's last_used_at. The caller keeps jti single-use.
 */
#define SESSION_SERVICE_MAX_LIFETIME_S 300
int session_service_verify(struct controller *c, const char *assertion, const char *device_jkt,
                           char user_id[33], char jti[129], int64_t *exp,
                           struct sp_diag *diag);

/* The RFC 7638 thumbprint of a P-256 public key PEM. SP_ERR_INVALID for anything else. */
int session_key_thumbprint(const char *pem, char out[SP_JWK_THUMBPRINT_LEN + 1]);

/* Revokes a session and its refresh tokens with a reason of the schema; audited. */
int session_revoke(struct controller *c, const char *session_id, const char *reason,
                   const struct http_request *req, struct sp_diag *diag);

/* A signed access token (docs/protocol.md §1.3) for the grant's ids; fills access_*. */
int session_sign_access_token(struct controller *c, struct session_grant *g);

/* {"access_token", "access_token_expires_at", "refresh_token", "session_id", "device_id",
 *  "user": {"id","email","display_name","role"}} (user looked up by g->user_id). */
json_t *session_response(struct controller *c, const struct session_grant *g);

/*
 * 1 when the claims hold integer iat and exp with iat <= exp and exp - iat <= max_s, else
 * 0. The span is computed without signed overflow, so an iat near INT64_MIN cannot wrap
 * the difference below the limit. Used for connector tokens and service assertions. Pure.
 */
int session_lifetime_within(const json_t *claims, int64_t max_s);

/* 1 when email (any case) is in the comma-separated list. Pure. */
int session_email_listed(const char *list, const char *email);

#endif
