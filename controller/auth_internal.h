/*
 * controller/auth_internal.h — what the sign-in files share: the in-memory tables of
 * struct auth_state and the helpers controller/auth.c lends controller/auth_device.c.
 * Not for other modules (they use controller/auth.h).
 *
 * Ownership: as in auth.h. Every table is used on the HTTP thread only, except what
 * struct auth_state says about the callback workers.
 */
#ifndef SALLYPORT_CONTROLLER_AUTH_INTERNAL_H
#define SALLYPORT_CONTROLLER_AUTH_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include <jansson.h>

#include "controller/auth.h"
#include "controller/session.h"
#include "shared/secret.h"

#define LOGIN_BINDING_KIND "spl"
#define CONSOLE_KIND "spc"
#define NATIVE_CODE_KIND "spn"

/* A browser sign-in between /auth/login and /auth/callback. */
struct pending_login {
	int in_use;
	int used;
	int64_t expires;
	char state[33];
	char nonce[33];
	char verifier[64];
	char browser_hash[SP_SECRET_HASH_HEX]; /* of the sp_login cookie */
	int kind;                /* LOGIN_CONSOLE, LOGIN_NATIVE or LOGIN_DEVICE */
	char user_code[9];       /* device: the device grant this sign-in approves */
	char redirect_uri[513];  /* native: the client's loopback listener */
	char challenge[64];      /* native: the client's PKCE S256 challenge */
	char client_state[257];  /* native: the client's state, echoed back */
	char address[64];        /* the client address that started it (slot quota) */
};

/* At most this many pending sign-ins per client address; past it, that address's oldest
 * is replaced, so one source cannot fill the table and lock everyone out of signing in. */
#define AUTH_PENDING_PER_ADDRESS (AUTH_PENDING_MAX / 8)

/*
 * The slot a new pending sign-in from `address` takes: the address's oldest when it holds
 * AUTH_PENDING_PER_ADDRESS already; else a free slot; else (the table full from many
 * addresses) the oldest completed one, else the oldest of all. Never NULL for n > 0. Pure.
 */
struct pending_login *auth_pending_slot(struct pending_login *table, size_t n,
                                        const char *address);

enum { LOGIN_CONSOLE = 0, LOGIN_NATIVE = 1, LOGIN_DEVICE = 2 };
extern const char *const auth_login_kind_names[]; /* by kind */

/*
 * A device authorization grant (RFC 8628): made by POST /auth/device/code, approved by a
 * person who enters the user code at /auth/device, signs in at the IdP and confirms;
 * redeemed once by POST /auth/device/token.
 */
struct device_grant {
	int in_use;
	int64_t expires;
	int64_t interval;
	int64_t last_poll;
	char device_code_hash[SP_SECRET_HASH_HEX];
	char user_code[9];          /* 8 characters of DEVICE_CODE_ALPHABET, shown as XXXX-XXXX */
	char public_key_pem[1024];
	char device_name[257];
	int status;                 /* DEVICE_PENDING, DEVICE_SIGNED_IN, DEVICE_APPROVED, DEVICE_DENIED */
	char confirm_hash[SP_SECRET_HASH_HEX]; /* of the token in the confirmation form */
	char user_id[33];
	char email[321];
	int64_t auth_time;
	char amr[1025];
	char address[64];           /* the client address that asked for it (slot quota) */
};
enum { DEVICE_PENDING = 0, DEVICE_SIGNED_IN = 1, DEVICE_APPROVED = 2, DEVICE_DENIED = 3 };

/* The device-grant counterpart of AUTH_PENDING_PER_ADDRESS. */
#define AUTH_DEVICE_PER_ADDRESS (AUTH_DEVICE_MAX / 8)

/*
 * The slot a new device grant from `address` takes: the address's oldest when it holds
 * AUTH_DEVICE_PER_ADDRESS already; else a free slot; else the one that expires first
 * (lingering expired grants go before live ones). Never NULL for n > 0. Pure.
 */
struct device_grant *auth_device_slot(struct device_grant *table, size_t n,
                                      const char *address);

/* A one-time code for a native client, redeemed at POST /api/client/v1/session. */
struct native_code {
	int in_use;
	int64_t expires;
	char hash[SP_SECRET_HASH_HEX];
	char user_id[33];
	int64_t auth_time;
	char amr[1025];
	char challenge[64];
};

struct console_session {
	int in_use;
	int64_t expires;
	char hash[SP_SECRET_HASH_HEX];
	char user_id[33];
	char csrf[33];
};

/* A service account assertion's jti, kept until its exp so it is used once. */
struct seen_jti {
	int64_t expires;
	char jti[129];
};

struct auth_state {
	int configured;
	struct oidc_client oidc;
	char callback_uri[600];
		struct pending_login pending[AUTH_PENDING_MAX];
	struct native_code codes[AUTH_CODES_MAX];
	struct console_session console[AUTH_CONSOLE_MAX];
	struct device_grant devices[AUTH_DEVICE_MAX];
	char device_uri[600];
	struct seen_jti jtis[AUTH_JTI_MAX];
	/* Callback workers (see struct callback_job). */
	pthread_mutex_t oidc_lock;    /* the OIDC client, used by one worker at a time */
	pthread_mutex_t workers_lock; /* workers, stopping, and each job's done flag */
	pthread_cond_t workers_idle;
	unsigned workers;
	int stopping;
};

/* Records a refused sign-in (audit event, metric, log) and answers with status. */
void auth_refuse_sign_in(struct controller *c, struct http_request *req, unsigned status,
                         const char *reason, const char *detail, const char *client);
/* Drops expired entries of every table. */
void auth_purge_expired(struct auth_state *a, int64_t now);
/* Stores a pending login made from template (kind and its fields) and redirects to the IdP. */
void auth_start_login(struct controller *c, struct http_request *req,
                      const struct pending_login *template);
/* An integer claim >= 0, or fallback. */
int64_t auth_claim_int(const json_t *claims, const char *name, int64_t fallback);
/* The amr claim as JSON array text of strings (at most 1024 bytes), or "[]". */
void auth_amr_text(const json_t *claims, char *out, size_t size);
/* The body's string members named in names; any other member or type answers 400. */
int auth_body_strings(struct http_request *req, json_t *body, const char *const *names,
                      const char **values, const int *required);
/* Answers with the session answer of g (session.h). */
void auth_reply_grant(struct http_request *req, struct controller *c, unsigned status,
                      struct session_grant *g);

/* controller/auth_device.c: the device flow's routes, and the callback's last step for it. */
void auth_device_signed_in(struct controller *c, struct http_request *req,
                           const char *user_code, const struct session_user *user,
                           const json_t *claims);
void auth_handle_device_code(struct http_request *req, void *app);
void auth_handle_device_page(struct http_request *req, void *app);
void auth_handle_device_approve(struct http_request *req, void *app);
void auth_handle_device_token(struct http_request *req, void *app);

#endif
