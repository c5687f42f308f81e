/*
 * controller/oidc_client.h — the controller's OpenID Connect relying party: the parts that
 * talk to the company IdP (libcurl) and the validation of what it answers.
 *
 * Discovery is lazy: nothing is fetched at start-up, so the controller starts while the
 * IdP is down, and the first sign-in fetches `ISSUER/.well-known/openid-configuration`
 * (retried at most every OIDC_RETRY_S seconds after a failure). The provider's JWKS is
 * fetched at the first ID token, kept OIDC_JWKS_MAX_AGE_S seconds, and refetched early
 * only for a `kid` it does not hold: once per unknown kid, and at most once every
 * OIDC_REFETCH_MIN_INTERVAL_S seconds, so a stream of forged kids cannot make the
 * controller hammer the IdP.
 *
 * Every fetch: https, or http to a loopback host only (oidc_url_is_acceptable), no
 * redirects followed, connect timeout 5 s, whole-transfer timeout 10 s, answer at most
 * OIDC_DOCUMENT_MAX bytes. Fetches block the calling (HTTP) thread for at most that long.
 *
 * ID token rules (oidc_client_validate_id_token): the signature with the provider's JWKS,
 * the algorithm being ES256 or RS256 and offered by the provider's discovery document (the
 * key found by kid must be of that algorithm, so an RSA key never verifies an EC
 * signature nor the reverse); then iss = issuer exactly, aud holding the client id, azp
 * equal to the client id when present and required with several audiences, exp and iat
 * with OIDC_SKEW_S seconds of skew, nonce equal to the one sent; sub present; and
 * email present with email_verified exactly true.
 *
 * Ownership: one struct oidc_client per controller, used from the HTTP thread only;
 * oidc_client_free releases the key set and wipes the client secret.
 */
#ifndef SALLYPORT_CONTROLLER_OIDC_CLIENT_H
#define SALLYPORT_CONTROLLER_OIDC_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "controller/oidc.h"
#include "shared/error.h"
#include "shared/jwk.h"

#define OIDC_SKEW_S 60
#define OIDC_RETRY_S 5
#define OIDC_JWKS_MAX_AGE_S 3600
#define OIDC_REFETCH_MIN_INTERVAL_S 10
#define OIDC_CONNECT_TIMEOUT_S 5
#define OIDC_TRANSFER_TIMEOUT_S 10

struct oidc_client {
	char issuer[OIDC_URL_MAX];
	char client_id[256];
	char client_secret[512];
	int secret_post; /* client_secret_post instead of client_secret_basic */

	int discovered;
	int64_t discovery_failed_at;
	struct oidc_provider provider;
	char scopes[2048]; /* the discovery document's scopes_supported, space-separated */

	struct sp_jwks jwks;
	int jwks_loaded;
	int64_t jwks_fetched_at;
	int64_t jwks_refetched_at;           /* last early refetch for an unknown kid */
	char jwks_refetched_for[SP_JWK_KID_MAX + 1];

	/* For tests and metrics: how often each document was fetched. */
	unsigned discovery_fetches;
	unsigned jwks_fetches;
};

/* Copies the configuration; no network. secret may be NULL or "" (a public client). */
int oidc_client_init(struct oidc_client *cl, const char *issuer, const char *client_id,
                     const char *client_secret, int secret_post, struct sp_diag *diag);
void oidc_client_free(struct oidc_client *cl);

/* Fetches discovery unless done; SP_ERR_IO (IdP unreachable) or SP_ERR_INVALID with diag. */
int oidc_client_discover(struct oidc_client *cl, int64_t now, struct sp_diag *diag);

/*
 * Exchanges an authorization code at the token endpoint (grant authorization_code, the
 * same redirect_uri as in the authorization request, the PKCE verifier). *out is
 * cleared with oidc_token_response_clear by the caller.
 */
int oidc_client_exchange_code(struct oidc_client *cl, const char *code, const char *redirect_uri,
                              const char *code_verifier, struct oidc_token_response *out,
                              struct sp_diag *diag);

/*
 * Validates an ID token by the rules above and returns its claims (caller json_decref).
 * May fetch the JWKS. Errors are the shared/token.h codes with a diag naming the check.
 */
int oidc_client_validate_id_token(struct oidc_client *cl, const char *id_token,
                                  const char *nonce, int64_t now, json_t **claims,
                                  struct sp_diag *diag);

/*
 * The pure claim rules of an already signature-checked ID token (also used by tests):
 * everything above but the signature.
 */
int oidc_check_id_token_claims(const json_t *claims, const char *issuer, const char *client_id,
                               const char *nonce, int64_t now, struct sp_diag *diag);

/* 1 when discovery listed `scope` in scopes_supported. */
int oidc_client_offers_scope(const struct oidc_client *cl, const char *scope);

/* GET userinfo with the access token; the answer's sub must equal `subject`. */
int oidc_client_userinfo(struct oidc_client *cl, const char *access_token, const char *subject,
                         json_t **out, struct sp_diag *diag);

#endif
