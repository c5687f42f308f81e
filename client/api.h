/*
 * client/api.h — the client's calls to the controller (/api/client/v1, /.well-known).
 *
 * Blocking libcurl requests with short timeouts; each call makes its own handle, so the
 * daemon's controller thread and its event-loop thread may both call in. Answers are
 * JSON (at most API_ANSWER_MAX bytes). http:// is allowed (tests, loopback); a production
 * controller is https and curl verifies it with the system trust store.
 *
 * Ownership: every json_t handed out is the caller's (json_decref); strings too (free).
 */
#ifndef SALLYPORT_CLIENT_API_H
#define SALLYPORT_CLIENT_API_H
#include <stdint.h>
#include <jansson.h>
#include "shared/error.h"
#include "shared/jwk.h"

#define API_ANSWER_MAX ((size_t)5 << 20)

/*
 * One request: method "GET" or "POST", url = base + path, JSON body text or NULL, bearer
 * token or NULL. Sets *status (0 when no answer came) and *answer (parsed JSON or NULL).
 * Returns 0 when an HTTP answer came, SP_ERR_IO otherwise (diag has curl's reason).
 */
int api_call(const char *base, const char *method, const char *path, const char *body,
	     const char *bearer, long timeout_s, long *status, json_t **answer,
	     struct sp_diag *diag);

/* A flag that, once non-zero, makes every running and later call fail at once (stop). */
void api_set_abort_flag(volatile int *flag);

/* The error code of a {"error":{"code"}} answer, or "?" */
const char *api_error_code(const json_t *answer);

/*
 * Rotates the session's refresh token: POST /session/refresh, then stores the new refresh
 * token in `session` and saves it in state_dir before returning. *access (free, wiped by
 * the caller) and *access_exp. SP_ERR_PERMISSION for a 401 (signed out), SP_ERR_IO.
 */
int api_refresh(const char *state_dir, json_t *session, char **access, int64_t *access_exp,
		struct sp_diag *diag);

/* GET /.well-known/jwks.json into *keys (sp_jwks_free). */
int api_fetch_jwks(const char *base, struct sp_jwks *keys, struct sp_diag *diag);

/*
 * GET /api/client/v1/resources, verified with keys (refetched once on an unknown kid):
 * ES256, typ "resources", iss = base, aud sallyport:client:<device_id>, exp. *claims is
 * the payload, *text the JSON of it (free), for the resource_list parser.
 * SP_ERR_PERMISSION for a 401/403 (the code in diag).
 */
int api_fetch_resources(const char *base, const char *access, const char *device_id,
			struct sp_jwks *keys, int64_t now, json_t **claims, struct sp_diag *diag);
#endif
