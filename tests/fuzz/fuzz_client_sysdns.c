/*
 * tests/fuzz/fuzz_client_sysdns.c — the resolv.conf parser and the marker parser on hostile
 * bytes (client/sysdns.h).
 *
 * The input is parsed as resolv.conf; when it parses, the upstream list and the rendered
 * file are built from it and the rendered file is parsed again. Properties: counts stay
 * within their caps; every nameserver is a NUL-terminated address of a known family;
 * every kept line is shorter than the line cap and holds no newline; the rendered file is
 * marked as ours, names exactly the stub, and keeps the same lines. The input is also
 * parsed as a marker: a marker that parses renders and parses back to the same fields.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "client/sysdns.h"

#define REQUIRE(cond)                                                                              \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz_client_sysdns: %s failed at line %d\n", #cond,       \
				__LINE__);                                                         \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct sysdns_resolv parsed, again;

static void check_resolv(const uint8_t *data, size_t size)
{
	if (sysdns_resolv_parse(data, size, &parsed, NULL) < 0)
		return;
	REQUIRE(parsed.ns_count <= SYSDNS_NAMESERVERS_MAX);
	REQUIRE(parsed.kept_count <= SYSDNS_KEPT_LINES_MAX);
	for (size_t i = 0; i < parsed.ns_count; i++) {
		REQUIRE(memchr(parsed.ns[i].addr, '\0', sizeof(parsed.ns[i].addr)) != NULL);
		REQUIRE(parsed.ns[i].family == AF_INET || parsed.ns[i].family == AF_INET6);
	}
	for (size_t i = 0; i < parsed.kept_count; i++) {
		REQUIRE(strlen(parsed.kept[i]) < SYSDNS_LINE_MAX);
		REQUIRE(strchr(parsed.kept[i], '\n') == NULL);
	}
	char up[SYSDNS_NAMESERVERS_MAX * (SYSDNS_ADDR_MAX + 8)];
	size_t dropped = 0;
	int rc = sysdns_upstreams(&parsed, "127.83.80.53", 53, up, sizeof(up), &dropped);
	REQUIRE(rc == 0 || rc == SP_ERR_NOT_FOUND);
	REQUIRE(strstr(up, "127.83.80.53:") == NULL);
	struct sp_buf out;
	sp_buf_init(&out, 2 * SYSDNS_RESOLV_MAX);
	REQUIRE(sysdns_resolv_render(&parsed, "127.83.80.53", "saved in /x", &out) == 0);
	REQUIRE(sysdns_resolv_parse(out.data, out.len, &again, NULL) == 0);
	REQUIRE(again.managed == 1);
	REQUIRE(again.ns_count == 1 && strcmp(again.ns[0].addr, "127.83.80.53") == 0);
	REQUIRE(again.kept_count == parsed.kept_count);
	for (size_t i = 0; i < parsed.kept_count; i++)
		REQUIRE(strcmp(again.kept[i], parsed.kept[i]) == 0);
	sp_buf_free(&out);
}

static void check_marker(const uint8_t *data, size_t size)
{
	struct sysdns_marker m, back;
	if (sysdns_marker_parse((const char *)data, size, &m, NULL) < 0)
		return;
	struct sp_buf out;
	sp_buf_init(&out, 4 * SYSDNS_MARKER_MAX);
	REQUIRE(sysdns_marker_render(&m, &out) == 0);
	REQUIRE(sysdns_marker_parse((const char *)out.data, out.len, &back, NULL) == 0);
	REQUIRE(back.pid == m.pid && back.start == m.start && back.kind == m.kind);
	REQUIRE(strcmp(back.path, m.path) == 0 && strcmp(back.written, m.written) == 0);
	sp_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_resolv(data, size);
	check_marker(data, size);
	uint64_t start = 0;
	(void)sysdns_proc_start((const char *)data, size, &start);
	return 0;
}
