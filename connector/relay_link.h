/*
 * connector/relay_link.h — the connector's side of the relay control connection
 * (docs/protocol.md §3), without I/O: reading the relay's status byte and dial messages,
 * the reconnect backoff, when to renew the relay-connector token, and the relay list the
 * controller hands out. connector/relay_io.c moves the bytes on the data-plane thread.
 *
 * Everything here is a pure function over its arguments (the clock and random numbers are
 * passed in); nothing allocates.
 */
#ifndef SALLYPORT_CONNECTOR_RELAY_LINK_H
#define SALLYPORT_CONNECTOR_RELAY_LINK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>

#include "shared/config.h"
#include "shared/error.h"
#include "shared/wire.h"

/* Relays a connector registers with at once (one control connection each). */
#define CONNECTOR_RELAY_MAX 8
/* The token is renewed this long before it expires (it lives 600 s). */
#define CONNECTOR_RELAY_TOKEN_RENEW_S 120
/* Reconnect backoff: doubles from the minimum up to the maximum, full jitter over the
 * upper half. */
#define CONNECTOR_RELAY_BACKOFF_MIN_MS 500
#define CONNECTOR_RELAY_BACKOFF_MAX_MS 30000
/* A control connection is connected and answered with the status byte within this long,
 * or it is closed and retried: a relay that hangs, or whose host vanished, mid-registration
 * is not waited for until TCP gives up (minutes). */
#define CONNECTOR_RELAY_REGISTER_TIMEOUT_MS 10000
/* A dial is answered (data connection open and preamble sent) within this long. */
#define CONNECTOR_RELAY_DIAL_TIMEOUT_MS 5000

enum connector_relay_state {
	CONNECTOR_RELAY_AWAIT_STATUS = 0, /* preamble sent, no status byte yet */
	CONNECTOR_RELAY_REGISTERED,	  /* status 0 received: dial messages follow */
	CONNECTOR_RELAY_CLOSED,		  /* refused or broken: the caller closes */
};

/* The reader of one control connection; zero it (or connector_relay_parser_reset) per
 * connection. */
struct connector_relay_parser {
	enum connector_relay_state state;
};

enum connector_relay_event_kind {
	CONNECTOR_RELAY_EV_REGISTERED = 1,
	CONNECTOR_RELAY_EV_REFUSED, /* status holds the relay's refusal */
	CONNECTOR_RELAY_EV_DIAL,    /* pairing_id holds the pairing to answer */
};

struct connector_relay_event {
	enum connector_relay_event_kind kind;
	uint8_t status;
	uint8_t pairing_id[SP_RELAY_PAIRING_ID_LEN];
};

void connector_relay_parser_reset(struct connector_relay_parser *p);

/*
 * Reads one item from the bytes the relay sent (data, len: what is buffered, unconsumed).
 * Returns the bytes consumed (> 0) with *ev filled in, SP_ERR_AGAIN when the item is not
 * complete, or SP_ERR_INVALID for bytes that can never be valid (a message other than a
 * dial, or anything after a refusal); then the state is CLOSED.
 */
int connector_relay_parse(struct connector_relay_parser *p, const uint8_t *data, size_t len,
			  struct connector_relay_event *ev);

/* The wait before reconnect attempt number `failures` (1 for the first failure), with
 * `random` a uniformly random 32-bit number. */
int64_t connector_relay_backoff_ms(unsigned failures, uint32_t random);

/* 1 when a token expiring at expires_at (0: none held) should be fetched now. */
int connector_relay_token_due(int64_t expires_at, int64_t now);

/* One relay address from the controller's list. */
struct connector_relay_addr {
	char text[SP_CONFIG_HOST_MAX + 8]; /* "host:port" as the controller sent it */
	char host[SP_CONFIG_HOST_MAX];
	uint16_t port;
	struct sockaddr_storage sa; /* resolved by the caller (connector/control.c) */
	socklen_t sa_len;	    /* 0: not resolved */
};

/*
 * Reads the "relays" member of a relay-token answer: an array of "host:port" strings.
 * Keeps at most CONNECTOR_RELAY_MAX, skips duplicates. A missing member is an empty list;
 * SP_ERR_INVALID (diag names the entry) for anything else malformed.
 */
int connector_relay_list_parse(const json_t *relays, struct connector_relay_addr *out,
			       size_t *count, struct sp_diag *diag);

#endif
