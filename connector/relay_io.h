/*
 * connector/relay_io.h — the connector's relay connections on the data-plane thread
 * (docs/protocol.md §3, docs/connector.md "Relay"): one control connection per relay the
 * controller lists, registered with the relay-connector token the reporter thread fetches
 * (connector/control.h), reconnected with jittered backoff; every dial message becomes a
 * new data connection to that relay which, after its "SPRD" preamble, is handed to the
 * data plane as one more inbound tunnel socket.
 *
 * The byte-level decisions are in connector/relay_link.h. Ownership: the data plane makes
 * the struct connector_relays with its event base and frees it before the base; every
 * function runs on that loop's thread.
 */
#ifndef SALLYPORT_CONNECTOR_RELAY_IO_H
#define SALLYPORT_CONNECTOR_RELAY_IO_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "connector/control.h"

/* Takes an open, connected socket whose next bytes are the client's TLS (peer: a label for
 * logs). The callee owns fd from then on. */
typedef void (*connector_relay_adopt_fn)(void *arg, int fd, const char *peer);

struct connector_relay_counters {
	uint64_t registrations; /* control connections the relay accepted */
	uint64_t refusals;	/* control connections the relay refused (status byte) */
	uint64_t dials;		/* dials answered: data connection handed to the data plane */
	uint64_t dials_failed;	/* dials that could not be answered */
	size_t registered;	/* control connections registered now */
};

struct connector_relays;

int connector_relays_new(struct event_base *base, struct connector_shared *shared,
			 connector_relay_adopt_fn adopt, void *arg, struct connector_relays **out);
/* Takes the current token and relay list from shared: connects to new relays, drops the
 * ones no longer listed, uses the new token for the next registrations. */
void connector_relays_update(struct connector_relays *r);
/* Draining: closes every control connection and pending dial; no more reconnects. */
void connector_relays_stop(struct connector_relays *r);
const struct connector_relay_counters *connector_relays_counters(const struct connector_relays *r);
/* Closes everything and frees. Safe on NULL. */
void connector_relays_free(struct connector_relays *r);

#endif
