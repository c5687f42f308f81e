/*
 * controller/auth.h — sign-in over HTTP: the browser flow against the company IdP
 * (/auth/login, /auth/callback), the device flow for headless clients (/auth/device...),
 * client sessions (/api/client/v1/session...) and the admin
 * console's cookie sessions (/auth/session, /auth/logout, and the gate's cookie check).
 *
 * Short-lived sign-in state is kept in memory, each table with a hard cap, not in the
 * database: pending logins (state, nonce, PKCE verifier; AUTH_PENDING_TTL_S, at most
 * AUTH_PENDING_MAX), the one-time codes handed to native clients (AUTH_CODE_TTL_S, at
 * most AUTH_CODES_MAX) and console sessions (AUTH_CONSOLE_TTL_S, at most
 * AUTH_CONSOLE_MAX) and device authorization grants (RFC 8628; AUTH_DEVICE_TTL_S, at most
 * AUTH_DEVICE_MAX), and the jti of service account assertions until they expire (at most
 * AUTH_JTI_MAX). A restart therefore ends sign-ins in progress and console sessions
 * (admins sign in again), and replicas behind a load balancer need sticky routing for
 * the /auth/ paths; client sessions and refresh tokens are in the database (controller/session.h)
 * and survive both. Every secret in those tables (codes, cookies) is kept as SHA-256.
 *
 * The IdP round trips of a callback run on a short-lived worker thread (at most
 * AUTH_WORKERS_MAX at once) while the request is suspended, so a slow IdP never stalls
 * the HTTP thread; everything else, and all use of the store, runs on the HTTP thread.
 *
 * Ownership: auth_open makes c->auth on the main thread before the HTTP server starts;
 * auth_drain runs before the server stops, auth_close (wipes and frees) after.
 */
#ifndef SALLYPORT_CONTROLLER_AUTH_H
#define SALLYPORT_CONTROLLER_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "controller/app.h"
#include "controller/oidc_client.h"
#include "shared/secret.h"

#define AUTH_PENDING_TTL_S 600
#define AUTH_PENDING_MAX 1024
#define AUTH_CODE_TTL_S 300
#define AUTH_CODES_MAX 1024
#define AUTH_CONSOLE_TTL_S (12 * 3600)
#define AUTH_CONSOLE_MAX 1024
#define AUTH_DEVICE_TTL_S 600
#define AUTH_DEVICE_MAX 256
#define AUTH_DEVICE_INTERVAL_S 5
#define AUTH_JTI_MAX 4096
#define AUTH_WORKERS_MAX 16
#define AUTH_CONSOLE_COOKIE "sp_console"
#define AUTH_LOGIN_COOKIE "sp_login"

int auth_open(struct controller *c, struct sp_diag *diag);
/* Refuses new callback workers and waits for running ones (each ends within the IdP
 * timeouts). Call before http_server_stop: workers resume suspended requests. */
void auth_drain(struct controller *c);
void auth_close(struct controller *c);

/* The OIDC client, or NULL when sign-in is not configured (for tests). */
struct oidc_client *auth_oidc(struct controller *c);

/* A console session found by its cookie. */
struct auth_console_identity {
	char user_id[33];
	char email[321];
	unsigned role; /* ROLE_ADMIN, ROLE_AUDITOR or ROLE_NONE (a signed-in plain user) */
};

/*
 * For the gate: authenticates the console cookie of req and, for a method other than
 * GET/HEAD, checks the X-CSRF-Token header against the session's token. 0, or
 * SP_ERR_NOT_FOUND (no or unknown cookie, user gone or disabled), SP_ERR_PERMISSION
 * (CSRF token missing or wrong).
 */
int auth_console_authenticate(struct controller *c, struct http_request *req,
                              struct auth_console_identity *out);

/*
 * Opens a console session for user_id (the callback does this after a console sign-in):
 * the cookie value (shown once; only its hash is kept) and the session's CSRF token.
 */
int auth_console_create(struct controller *c, const char *user_id,
                        char secret[SP_SECRET_TEXT_MAX], char csrf[33]);

/* Ends every console session of user_id (its cookies stop working for good), as
 * disabling the user does: enabling the user again later does not revive them. */
void auth_console_end_user(struct controller *c, const char *user_id);

/* RFC 8252 loopback redirect: http://127.0.0.1:PORT/... or http://[::1]:PORT/..., no
 * userinfo, query allowed, no fragment, at most 512 bytes. 1 when acceptable. Pure. */
int auth_loopback_redirect_ok(const char *uri);

/* A device user code as typed ("bcdf-ghjk", "BCDF GHJK") → "BCDFGHJK": 1 when it is 8
 * characters of the code alphabet, else 0. Pure. */
int auth_user_code_normalize(const char *in, char out[9]);

/*
 * The value of `name` in an application/x-www-form-urlencoded body of body_len bytes
 * (no NUL needed). Only values of 1..size-1 characters A-Z a-z 0-9 are accepted (the
 * forms we serve carry nothing else); 0, or -1 when absent or anything else. Pure.
 */
int auth_form_value(const uint8_t *body, size_t body_len, const char *name, char *out,
                    size_t size);

#endif
