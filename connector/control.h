/*
 * connector/control.h — the control plane: two threads talking to the controller with
 * blocking libcurl, and the state they share with the data-plane thread.
 *
 *   control thread   fetches and verifies the signed config (GET /api/connector/v1/config,
 *                    refetching /.well-known/jwks.json once on an unknown kid), hands it to
 *                    the data plane, then long-polls the feed and refetches on "config";
 *                    jittered exponential backoff on failure.
 *   reporter thread  heartbeat every 15 s (logs clock skew over 60 s), flow-event
 *                    batches from the bounded queue, and the relay-connector token with
 *                    the relay list (POST /api/connector/v1/relay-token), renewed 2 min
 *                    before it expires or when a relay refuses it.
 *
 * Handoff: the control thread puts a new config in `pending` under `lock` (freeing any
 * pending one the data plane has not taken yet) and calls event_active(config_event);
 * the data plane takes it under the lock and then owns it. The last good config keeps
 * working while the controller is away.
 *
 * struct connector_shared is owned by main and outlives all threads.
 */
#ifndef SALLYPORT_CONNECTOR_CONTROL_H
#define SALLYPORT_CONNECTOR_CONTROL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <event2/event.h>

#include "connector/connector_config.h"
#include "connector/flow_events.h"
#include "connector/identity.h"
#include "connector/relay_link.h"

#define CONNECTOR_HEARTBEAT_INTERVAL_S 15
#define CONNECTOR_CLOCK_SKEW_WARN_S 60
/* Health: the controller answered within this many seconds. */
#define CONNECTOR_CONTROLLER_FRESH_S 60

struct connector_shared {
	/* set before the threads start, read-only afterwards */
	const char *controller_url;
	const struct connector_identity *identity;
	const char *direct_address; /* NULL: none */
	const char *version;

	atomic_int stop;
	atomic_llong last_controller_ok; /* unix time of the last successful exchange */
	atomic_int has_config;		 /* the data plane holds a config */
	atomic_llong config_seq;
	atomic_llong config_iat; /* iat of the config handed over last */
	atomic_llong config_fetches;
	atomic_llong controller_errors;
	atomic_llong flow_events_sent;
	atomic_llong clock_skew_s;

	pthread_mutex_t lock;
	struct connector_config *pending; /* guarded by lock */
	struct event *config_event;	  /* made by the data plane before threads start */

	struct connector_flow_queue flows;

	/* relay (connector/relay_io.c): guarded by lock */
	char *relay_token;                 /* relay-connector token, NULL until fetched */
	int64_t relay_token_expires;       /* its exp */
	struct connector_relay_addr relays[CONNECTOR_RELAY_MAX];
	size_t relay_count;
	int relay_token_stale;             /* a relay refused the token: fetch another now */
	struct event *relay_event;         /* made by the data plane before threads start */
};

/* Data-plane thread: copies the relay token (caller frees with free_secret semantics:
 * OPENSSL_cleanse + free) and list. *token NULL when none is held. */
int connector_shared_relay_get(struct connector_shared *s, char **token,
                               struct connector_relay_addr relays[CONNECTOR_RELAY_MAX],
                               size_t *count);
/* Data-plane thread: a relay refused the token (bad or expired): fetch another soon. */
void connector_shared_relay_token_refused(struct connector_shared *s);

int connector_shared_init(struct connector_shared *s);
void connector_shared_destroy(struct connector_shared *s);

/* Takes the pending config, if any (data-plane thread). The caller owns it. */
struct connector_config *connector_shared_take_config(struct connector_shared *s);

/* 1 when the controller answered recently and a config is in use. */
int connector_shared_ready(struct connector_shared *s, int64_t now);

/* Starts / joins both threads. connector_control_stop sets stop and wakes them. */
int connector_control_start(struct connector_shared *s, pthread_t threads[2]);
void connector_control_stop(struct connector_shared *s, pthread_t threads[2]);

/* A connector token (docs/protocol.md §1.4) signed with key, kid = iss = connector id. */
int connector_token_make(EVP_PKEY *key, const char *connector_id, int64_t now, char **out);

#endif
