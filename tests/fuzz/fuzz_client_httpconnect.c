/*
 * tests/fuzz/fuzz_client_httpconnect.c — the HTTP CONNECT request parser on hostile bytes.
 *
 * Properties: "used" never exceeds the input and ends right after "\r\n\r\n"; a complete
 * request names a host without spaces, '@', '/' or control characters and a port 1..65535;
 * every authority the parser accepts parses again identically through
 * proxy_parse_authority; an input without the empty line is AGAIN below the size cap and
 * TOO_LARGE at or above it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/proxy_parse.h"

#define REQUIRE(cond)                                                                        \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "fuzz_client_httpconnect: %s failed at line %d\n",   \
				#cond, __LINE__);                                            \
			abort();                                                             \
		}                                                                            \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int has_end(const uint8_t *data, size_t size)
{
	size_t cap = size < PROXY_HTTP_REQUEST_MAX ? size : PROXY_HTTP_REQUEST_MAX;
	for (size_t i = 3; i < cap; i++)
		if (memcmp(data + i - 3, "\r\n\r\n", 4) == 0)
			return 1;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_target t;
	size_t used = 0;
	int rc = http_connect_parse(data, size, &used, &t);
	REQUIRE(used <= size);
	if (!has_end(data, size)) {
		REQUIRE(rc == (size >= PROXY_HTTP_REQUEST_MAX ? SP_ERR_TOO_LARGE : SP_ERR_AGAIN));
		return 0;
	}
	if (rc != 0) {
		REQUIRE(used == 0);
		REQUIRE(rc == SP_ERR_INVALID || rc == SP_ERR_UNSUPPORTED);
		return 0;
	}
	REQUIRE(used >= 4 && memcmp(data + used - 4, "\r\n\r\n", 4) == 0);
	REQUIRE(memcmp(data, "CONNECT ", 8) == 0);
	size_t hl = strnlen(t.host, sizeof(t.host));
	REQUIRE(hl > 0 && hl <= PROXY_HOST_MAX);
	for (size_t i = 0; i < hl; i++)
		REQUIRE(t.host[i] > 0x20 && t.host[i] < 0x7f && t.host[i] != '@' && t.host[i] != '/');
	REQUIRE(t.port >= 1);
	char again[PROXY_HOST_MAX + 16];
	int n = snprintf(again, sizeof(again), strchr(t.host, ':') ? "[%s]:%u" : "%s:%u", t.host,
			 t.port);
	struct proxy_target u;
	REQUIRE(n > 0 && proxy_parse_authority(again, (size_t)n, &u) == 0);
	REQUIRE(strcmp(u.host, t.host) == 0 && u.port == t.port && u.is_ip == t.is_ip);
	return 0;
}
