/*
 * Fuzz target: the relay's byte stream as the connector reads it (connector/relay_link.h):
 * a status byte, then dial messages, fed in pieces whose sizes come from the input. Every
 * call must consume within what it was given, and after a refusal or a bad message
 * nothing more is accepted.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "connector/relay_link.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t piece = (size_t)(data[0] % 40) + 1;
	data++;
	size--;
	struct connector_relay_parser p;
	connector_relay_parser_reset(&p);
	size_t have = 0, off = 0; /* bytes "received" so far; bytes consumed */
	int closed = 0;
	while (off < size) {
		have = have + piece > size ? size : have + piece;
		for (;;) {
			struct connector_relay_event ev;
			int n = connector_relay_parse(&p, data + off, have - off, &ev);
			if (n == SP_ERR_AGAIN)
				break;
			if (n < 0) {
				if (p.state != CONNECTOR_RELAY_CLOSED)
					abort();
				return 0;
			}
			if (closed || (size_t)n > have - off)
				abort();
			if (ev.kind == CONNECTOR_RELAY_EV_DIAL && n != SP_RELAY_DIAL_LEN)
				abort();
			if (ev.kind == CONNECTOR_RELAY_EV_REFUSED)
				closed = 1;
			off += (size_t)n;
			if (off == have)
				break;
		}
		if (have == size)
			break;
	}
	return 0;
}
