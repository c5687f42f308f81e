/*
 * shared/wire.h — Sallyport's own byte formats on the data plane (docs/protocol.md §2.1
 * and §3): the relay preambles, the relay's answer byte, and UDP datagram framing.
 *
 * Each decoder is incremental: given the bytes received so far it returns SP_ERR_AGAIN
 * while a complete item has not arrived, the number of bytes consumed (> 0) when one has,
 * or another negative code when the bytes can never become valid (the caller closes the
 * connection). Nothing here does I/O or allocates.
 */
#ifndef SALLYPORT_SHARED_WIRE_H
#define SALLYPORT_SHARED_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "shared/buf.h"

#define SP_WIRE_VERSION 1
#define SP_RELAY_TICKET_MAX 4096
#define SP_RELAY_PAIRING_ID_LEN 16
#define SP_RELAY_TOKEN_MAX 4096
#define SP_RELAY_DIAL_LEN (1 + SP_RELAY_PAIRING_ID_LEN)
#define SP_UDP_DATAGRAM_MAX 65507

/* Relay answer to a client (one byte). */
enum sp_relay_status {
	SP_RELAY_PAIRED = 0,
	SP_RELAY_BAD_TICKET = 1,
	SP_RELAY_EXPIRED = 2,
	SP_RELAY_REPLAYED = 3,
	SP_RELAY_CONNECTOR_UNAVAILABLE = 4,
	SP_RELAY_OVERLOADED = 5,
};

/* A client's first bytes to the relay: "SPRC", version, ticket length, ticket. */
struct sp_relay_client_hello {
	uint8_t version;
	const uint8_t *ticket; /* points into the decoder's input */
	size_t ticket_len;
};

int sp_relay_client_hello_encode(const uint8_t *ticket, size_t ticket_len, struct sp_buf *out);
/* Returns bytes consumed, SP_ERR_AGAIN, SP_ERR_INVALID (bad magic), SP_ERR_VERSION or
 * SP_ERR_TOO_LARGE (ticket length 0 or over SP_RELAY_TICKET_MAX). */
int sp_relay_client_hello_decode(const uint8_t *data, size_t len,
                                 struct sp_relay_client_hello *out);

/* A connector's data connection: "SPRD", version, pairing id. */
int sp_relay_connector_hello_encode(const uint8_t pairing_id[SP_RELAY_PAIRING_ID_LEN],
                                    struct sp_buf *out);
int sp_relay_connector_hello_decode(const uint8_t *data, size_t len,
                                    uint8_t pairing_id[SP_RELAY_PAIRING_ID_LEN]);

/* A connector's control connection: "SPRK", version, token length, relay-connector token. */
struct sp_relay_register {
	uint8_t version;
	const uint8_t *token; /* points into the decoder's input */
	size_t token_len;
};

int sp_relay_register_encode(const uint8_t *token, size_t token_len, struct sp_buf *out);
/* Returns bytes consumed, SP_ERR_AGAIN, SP_ERR_INVALID (bad magic), SP_ERR_VERSION or
 * SP_ERR_TOO_LARGE (token length 0 or over SP_RELAY_TOKEN_MAX). */
int sp_relay_register_decode(const uint8_t *data, size_t len, struct sp_relay_register *out);

/* Relay -> connector on the control connection: "D" then a pairing id. */
int sp_relay_dial_encode(const uint8_t pairing_id[SP_RELAY_PAIRING_ID_LEN], struct sp_buf *out);
/* Returns SP_RELAY_DIAL_LEN, SP_ERR_AGAIN, or SP_ERR_INVALID for another message type. */
int sp_relay_dial_decode(const uint8_t *data, size_t len,
                         uint8_t pairing_id[SP_RELAY_PAIRING_ID_LEN]);

/* A human name for a relay status byte ("connector_unavailable"); "unknown" otherwise. */
const char *sp_relay_status_name(uint8_t status);

/* UDP datagram framing inside a stream: u16 length then the payload. */
int sp_udp_frame_encode(const uint8_t *payload, size_t len, struct sp_buf *out);
/* Returns bytes consumed with *payload and *payload_len set, SP_ERR_AGAIN, or
 * SP_ERR_TOO_LARGE for a length over SP_UDP_DATAGRAM_MAX. */
int sp_udp_frame_decode(const uint8_t *data, size_t len, const uint8_t **payload,
                        size_t *payload_len);

#endif
