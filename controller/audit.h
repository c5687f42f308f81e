/*
 * controller/audit.h — writes audit events: every admin mutation, every sign-in and
 * every refusal worth a person's attention. Callers record inside the same transaction
 * as the change they describe, so an acknowledged change always has its event.
 */
#ifndef SALLYPORT_CONTROLLER_AUDIT_H
#define SALLYPORT_CONTROLLER_AUDIT_H

#include <stdint.h>

#include <jansson.h>
#include "controller/db.h"

#include "controller/http.h"

struct audit_event {
	int64_t time;
	const char *actor_type;  /* user, api_key, service_account, connector, system */
	const char *actor_id;    /* may be NULL */
	const char *actor_label; /* may be NULL */
	const char *action;      /* "group.create", "auth.sign_in" ... */
	const char *outcome;     /* success, denied, failed; NULL means success */
	const char *target_type; /* may be NULL */
	const char *target_id;   /* may be NULL */
	const json_t *before;    /* may be NULL */
	const json_t *after;     /* may be NULL */
	const char *request_id;  /* may be NULL */
	const char *source_address; /* may be NULL */
};

/* 0 or SP_ERR_DATABASE. */
int audit_record(struct db *db, const struct audit_event *event);

/* Fills actor, request id and source address of `event` from an HTTP request. */
void audit_from_request(struct audit_event *event, const struct http_request *req);

#endif
