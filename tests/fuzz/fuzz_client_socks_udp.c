/*
 * tests/fuzz/fuzz_client_socks_udp.c — the SOCKS5 UDP datagram header parser on hostile
 * bytes.
 *
 * Properties: the header length never exceeds the input and is at least the shortest
 * header (10 bytes: IPv4; 7 for a one-byte name); a parsed header names a NUL-terminated
 * host of printable characters and a non-zero port; every failure leaves the length 0
 * and the target zeroed, and is one of the documented codes; a parse depends only on the
 * header bytes (the same header followed by other payload parses the same), and any
 * truncation of a parsed header is invalid.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/proxy_parse.h"

#define REQUIRE(cond)                                                                        \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "fuzz_client_socks_udp: %s failed at line %d\n", #cond, \
				__LINE__);                                                   \
			abort();                                                             \
		}                                                                            \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_target t;
	size_t hl = 12345;
	int rc = socks5_parse_udp_header(data, size, &hl, &t);
	if (rc != 0) {
		REQUIRE(rc == SP_ERR_INVALID || rc == SP_ERR_UNSUPPORTED);
		REQUIRE(hl == 0 && t.host[0] == '\0' && t.port == 0 && t.is_ip == 0);
		return 0;
	}
	REQUIRE(hl <= size && hl >= 7);
	size_t n = strnlen(t.host, sizeof(t.host));
	REQUIRE(n > 0 && n <= PROXY_HOST_MAX);
	for (size_t i = 0; i < n; i++)
		REQUIRE(t.host[i] > 0x20 && t.host[i] < 0x7f);
	REQUIRE(t.port != 0);
	/* only the header counts: the header alone parses the same */
	struct proxy_target h;
	size_t hl2 = 0;
	REQUIRE(socks5_parse_udp_header(data, hl, &hl2, &h) == 0);
	REQUIRE(hl2 == hl && h.port == t.port && h.is_ip == t.is_ip &&
		strcmp(h.host, t.host) == 0);
	for (size_t k = 0; k < hl && k < 64; k++)
		REQUIRE(socks5_parse_udp_header(data, k, &hl2, &h) == SP_ERR_INVALID);
	return 0;
}
