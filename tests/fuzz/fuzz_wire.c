/*
 * Fuzz target: the data plane's own byte formats (relay preambles and dial messages, UDP
 * framing). Every decoded item is re-encoded and must decode to the same bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shared/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sp_buf again;
	struct sp_relay_client_hello h;
	int n = sp_relay_client_hello_decode(data, size, &h);
	if (n > 0) {
		if ((size_t)n > size || h.ticket_len == 0)
			abort();
		sp_buf_init(&again, 8192);
		if (sp_relay_client_hello_encode(h.ticket, h.ticket_len, &again) != 0 ||
		    again.len != (size_t)n || memcmp(again.data, data, again.len) != 0)
			abort();
		sp_buf_free(&again);
	}
	uint8_t id[SP_RELAY_PAIRING_ID_LEN];
	n = sp_relay_connector_hello_decode(data, size, id);
	if (n > 0 && n != 4 + 1 + SP_RELAY_PAIRING_ID_LEN)
		abort();
	struct sp_relay_register k;
	n = sp_relay_register_decode(data, size, &k);
	if (n > 0) {
		if ((size_t)n > size || k.token_len == 0 || k.token_len > SP_RELAY_TOKEN_MAX)
			abort();
		sp_buf_init(&again, 8192);
		if (sp_relay_register_encode(k.token, k.token_len, &again) != 0 ||
		    again.len != (size_t)n || memcmp(again.data, data, again.len) != 0)
			abort();
		sp_buf_free(&again);
	}
	/* A stream of dial messages, as the connector reads its control connection. */
	size_t at = 0;
	while (at < size) {
		n = sp_relay_dial_decode(data + at, size - at, id);
		if (n <= 0)
			break;
		if (n != SP_RELAY_DIAL_LEN || memcmp(id, data + at + 1, sizeof(id)) != 0)
			abort();
		at += (size_t)n;
	}
	/* A stream of UDP frames. */
	size_t off = 0;
	while (off < size) {
		const uint8_t *payload;
		size_t len;
		n = sp_udp_frame_decode(data + off, size - off, &payload, &len);
		if (n <= 0)
			break;
		if ((size_t)n != len + 2 || off + (size_t)n > size)
			abort();
		off += (size_t)n;
	}
	return 0;
}
