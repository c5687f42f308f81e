/*
 * tests/fuzz/fuzz_client_socks.c — the SOCKS5 greeting and request parsers on hostile bytes.
 *
 * The input is parsed as a greeting, then (from where the greeting ended, or from the
 * start when it was incomplete) as a request, whole and at every prefix length up to 64.
 * Properties: "used" never exceeds the input; a complete request is a CONNECT or a UDP
 * ASSOCIATE and names a NUL-terminated host of printable characters and a non-zero port
 * (a UDP ASSOCIATE may name port 0); a prefix of a complete request is never complete
 * with a different length, and never malformed (truncation only asks for more bytes).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/proxy_parse.h"

#define REQUIRE(cond)                                                                        \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "fuzz_client_socks: %s failed at line %d\n", #cond,   \
				__LINE__);                                                   \
			abort();                                                             \
		}                                                                            \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t used = 0;
	int no_auth = 0;
	int rc = socks5_parse_greeting(data, size, &used, &no_auth);
	REQUIRE(used <= size);
	REQUIRE(rc == 0 || used == 0);
	const uint8_t *req = rc == 0 ? data + used : data;
	size_t len = rc == 0 ? size - used : size;
	struct proxy_target t;
	uint8_t code = 0;
	size_t req_used = 0;
	rc = socks5_parse_request(req, len, &req_used, &t, &code);
	REQUIRE(req_used <= len);
	if (rc == 0) {
		size_t hl = strnlen(t.host, sizeof(t.host));
		REQUIRE(hl > 0 && hl <= PROXY_HOST_MAX);
		for (size_t i = 0; i < hl; i++)
			REQUIRE(t.host[i] > 0x20 && t.host[i] < 0x7f);
		REQUIRE(t.port != 0 || t.command == SOCKS5_CMD_UDP_ASSOCIATE);
		REQUIRE(t.command == SOCKS5_CMD_CONNECT || t.command == SOCKS5_CMD_UDP_ASSOCIATE);
		for (size_t n = 0; n < req_used && n < 64; n++) {
			struct proxy_target p;
			size_t pu = 0;
			int prc = socks5_parse_request(req, n, &pu, &p, &code);
			REQUIRE(prc == SP_ERR_AGAIN);
		}
	} else {
		REQUIRE(req_used == 0);
		REQUIRE(rc == SP_ERR_AGAIN || rc == SP_ERR_INVALID || rc == SP_ERR_UNSUPPORTED);
	}
	return 0;
}
