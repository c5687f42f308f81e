/*
 * controller/relay_api.h — relay tickets and relay-connector tokens (docs/protocol.md §1.2
 * and §3): who may have one, and their claims. The routes are in relay_api.c.
 */
#ifndef SALLYPORT_CONTROLLER_RELAY_API_H
#define SALLYPORT_CONTROLLER_RELAY_API_H

#include <stdint.h>

#include <jansson.h>

#include "controller/policy.h"

/*
 * 1 when connector_id is an active connector of the snapshot whose remote network holds at
 * least one resource the subject may reach at time now (the decision a grant gets), else 0.
 */
int relay_ticket_allowed(const struct policy_snapshot *snapshot,
                         const struct policy_subject *subject, const char *connector_id,
                         int64_t now);

/* {v, typ "relay-ticket", aud, iat, exp = iat + 60, cid, jti}; NULL when out of memory. */
json_t *relay_ticket_claims(const char *connector_id, const char *jti, int64_t now);
/* {v, typ "relay-connector", aud, iat, exp = iat + 600, cid}; NULL when out of memory. */
json_t *relay_connector_token_claims(const char *connector_id, int64_t now);

/*
 * The relay addresses handed to connectors and clients ("relays" in both answers,
 * docs/protocol.md §3): the entries of relay_public (comma-separated host:port) when it is
 * set; otherwise relay_listen with its port replaced by bound_port (the in-process relay's
 * port, 0 when it is not running: then an empty array). NULL when out of memory.
 */
json_t *relay_public_list(const char *relay_public, const char *relay_listen,
                          uint16_t bound_port);

#endif
