/*
 * controller/oidc.h — the controller as an OpenID Connect relying party: the pure parts.
 *
 * Parsing the provider's discovery document, making PKCE pairs, building the
 * authorization request URL and reading token-endpoint answers are pure functions over
 * bytes, so they are unit-tested and fuzzed without a network. Fetching (libcurl) and
 * ID-token validation live in controller/oidc_client.c.
 *
 * Rules enforced here:
 * - the discovery document's `issuer` must equal the configured issuer exactly
 *   (OpenID Connect Discovery 1.0 §4.3), or a provider could speak for another;
 * - every endpoint must be https, except http to a loopback host (tests, local IdPs);
 * - the provider must offer ES256 or RS256 ID-token signatures, and S256 PKCE when it
 *   lists PKCE methods at all.
 */
#ifndef SALLYPORT_CONTROLLER_OIDC_H
#define SALLYPORT_CONTROLLER_OIDC_H

#include <stddef.h>
#include <stdint.h>

#include "shared/buf.h"
#include "shared/error.h"

#define OIDC_URL_MAX 512
#define OIDC_DOCUMENT_MAX (256 * 1024)

struct oidc_provider {
	char issuer[OIDC_URL_MAX];
	char authorization_endpoint[OIDC_URL_MAX];
	char token_endpoint[OIDC_URL_MAX];
	char jwks_uri[OIDC_URL_MAX];
	char userinfo_endpoint[OIDC_URL_MAX];             /* "" when not offered */
	char device_authorization_endpoint[OIDC_URL_MAX]; /* "" when not offered */
	char end_session_endpoint[OIDC_URL_MAX];          /* "" when not offered */
	int supports_es256;
	int supports_rs256;
};

int oidc_discovery_parse(const char *json, size_t len, const char *expected_issuer,
                         struct oidc_provider *out, struct sp_diag *diag);

/* 1 when url is https://..., or http:// to 127.0.0.0/8, [::1] or localhost. */
int oidc_url_is_acceptable(const char *url);

/* PKCE (RFC 7636): a 43-character verifier and its S256 challenge. */
struct oidc_pkce {
	char verifier[64];
	char challenge[64];
};
int oidc_pkce_new(struct oidc_pkce *out);
/* BASE64URL(SHA256(verifier)); verifier must be 43-128 unreserved characters. */
int oidc_pkce_challenge(const char *verifier, char out[64]);

struct oidc_auth_request {
	const char *client_id;
	const char *redirect_uri;
	const char *scope;          /* "openid email profile" + groups scope */
	const char *state;
	const char *nonce;
	const char *code_challenge; /* S256 */
	const char *prompt;         /* NULL or "login", "consent" */
};
/* The full authorization URL, parameters percent-encoded, into out (text, no NUL counted). */
int oidc_authorization_url(const struct oidc_provider *provider,
                           const struct oidc_auth_request *request, struct sp_buf *out);

/* A token endpoint answer. Strings are heap copies; free with oidc_token_response_clear. */
struct oidc_token_response {
	char *id_token;
	char *access_token;
	char *refresh_token;
	char token_type[32];
	int64_t expires_in;
};
/*
 * Parses a successful answer (id_token and access_token required, token_type Bearer) or
 * turns an error answer ({"error":"invalid_grant",...}) into SP_ERR_INVALID with the
 * provider's words in diag.
 */
int oidc_token_response_parse(const char *json, size_t len, struct oidc_token_response *out,
                              struct sp_diag *diag);
void oidc_token_response_clear(struct oidc_token_response *response);

#endif
