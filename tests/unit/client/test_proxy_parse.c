/* Unit tests for client/proxy_parse.c: SOCKS5 and HTTP CONNECT requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "client/proxy_parse.h"

static void test_greeting(void **state)
{
	(void)state;
	size_t used = 9;
	int no_auth = 9;
	const uint8_t ok[] = {5, 2, 2, 0, 0xee};
	assert_int_equal(socks5_parse_greeting(ok, sizeof(ok), &used, &no_auth), 0);
	assert_int_equal(used, 4);
	assert_int_equal(no_auth, 1);
	const uint8_t auth_only[] = {5, 1, 2};
	assert_int_equal(socks5_parse_greeting(auth_only, 3, &used, &no_auth), 0);
	assert_int_equal(no_auth, 0);
	/* truncation at every length */
	for (size_t n = 0; n < 4; n++)
		assert_int_equal(socks5_parse_greeting(ok, n, &used, &no_auth), SP_ERR_AGAIN);
	const uint8_t v4[] = {4, 1, 0};
	assert_int_equal(socks5_parse_greeting(v4, 3, &used, &no_auth), SP_ERR_INVALID);
	const uint8_t zero[] = {5, 0};
	assert_int_equal(socks5_parse_greeting(zero, 2, &used, &no_auth), SP_ERR_INVALID);
	assert_int_equal(used, 0);
}

static void test_udp_header(void **state)
{
	(void)state;
	struct proxy_target t;
	size_t hl = 99;
	const uint8_t v4[] = {0, 0, 0, 1, 100, 96, 0, 2, 0, 53, 0xab, 0xcd};
	assert_int_equal(socks5_parse_udp_header(v4, sizeof(v4), &hl, &t), 0);
	assert_int_equal(hl, 10);
	assert_string_equal(t.host, "100.96.0.2");
	assert_int_equal(t.port, 53);
	assert_int_equal(t.is_ip, 1);
	/* an empty payload is a datagram too */
	assert_int_equal(socks5_parse_udp_header(v4, 10, &hl, &t), 0);
	assert_int_equal(hl, 10);
	const uint8_t name[] = {0, 0, 0, 3, 6, 'd', 'n', 's', '.', 's', 'p', 0x14, 0xe9, 'q'};
	assert_int_equal(socks5_parse_udp_header(name, sizeof(name), &hl, &t), 0);
	assert_int_equal(hl, sizeof(name) - 1);
	assert_string_equal(t.host, "dns.sp");
	assert_int_equal(t.port, 5353);
	assert_int_equal(t.is_ip, 0);
	uint8_t v6[22] = {0, 0, 0, 4, 0xfd};
	v6[19] = 1;
	v6[20] = 0;
	v6[21] = 53;
	assert_int_equal(socks5_parse_udp_header(v6, sizeof(v6), &hl, &t), 0);
	assert_int_equal(hl, 22);
	assert_string_equal(t.host, "fd00::1");
	/* every truncation of a header is invalid, never "need more" */
	for (size_t n = 0; n < 10; n++) {
		assert_int_equal(socks5_parse_udp_header(v4, n, &hl, &t), SP_ERR_INVALID);
		assert_int_equal(hl, 0);
		assert_string_equal(t.host, "");
	}
	/* RSV, FRAG, ATYP, name and port */
	const uint8_t rsv[] = {0, 1, 0, 1, 10, 0, 0, 1, 0, 53};
	assert_int_equal(socks5_parse_udp_header(rsv, sizeof(rsv), &hl, &t), SP_ERR_INVALID);
	const uint8_t frag[] = {0, 0, 1, 1, 10, 0, 0, 1, 0, 53};
	assert_int_equal(socks5_parse_udp_header(frag, sizeof(frag), &hl, &t), SP_ERR_UNSUPPORTED);
	const uint8_t atyp[] = {0, 0, 0, 2, 10, 0, 0, 1, 0, 53};
	assert_int_equal(socks5_parse_udp_header(atyp, sizeof(atyp), &hl, &t), SP_ERR_UNSUPPORTED);
	const uint8_t empty[] = {0, 0, 0, 3, 0, 0, 53};
	assert_int_equal(socks5_parse_udp_header(empty, sizeof(empty), &hl, &t), SP_ERR_INVALID);
	const uint8_t nul[] = {0, 0, 0, 3, 2, 'a', 0, 0, 53};
	assert_int_equal(socks5_parse_udp_header(nul, sizeof(nul), &hl, &t), SP_ERR_INVALID);
	const uint8_t port0[] = {0, 0, 0, 1, 10, 0, 0, 1, 0, 0};
	assert_int_equal(socks5_parse_udp_header(port0, sizeof(port0), &hl, &t), SP_ERR_INVALID);
	assert_int_equal(hl, 0);
	assert_string_equal(t.host, "");
}

static void test_request_kinds(void **state)
{
	(void)state;
	struct proxy_target t;
	size_t used = 0;
	uint8_t code = 0;
	const uint8_t ipv4[] = {5, 1, 0, 1, 10, 0, 0, 7, 0x01, 0xbb, 'x'};
	assert_int_equal(socks5_parse_request(ipv4, sizeof(ipv4), &used, &t, &code), 0);
	assert_int_equal(used, 10);
	assert_string_equal(t.host, "10.0.0.7");
	assert_int_equal(t.port, 443);
	assert_int_equal(t.is_ip, 1);
	const uint8_t name[] = {5, 1, 0, 3, 6, 'w', 'e', 'b', '.', 's', 'p', 0x1f, 0x90};
	assert_int_equal(socks5_parse_request(name, sizeof(name), &used, &t, &code), 0);
	assert_int_equal(used, sizeof(name));
	assert_string_equal(t.host, "web.sp");
	assert_int_equal(t.port, 8080);
	assert_int_equal(t.is_ip, 0);
	const uint8_t ipname[] = {5, 1, 0, 3, 3, '1', '.', '2', 0, 80};
	assert_int_equal(socks5_parse_request(ipname, sizeof(ipname), &used, &t, &code), 0);
	assert_int_equal(t.is_ip, 0); /* "1.2" is not a dotted quad */
	uint8_t v6[22] = {5, 1, 0, 4};
	v6[4] = 0xfd;
	v6[19] = 1;
	v6[20] = 0;
	v6[21] = 22;
	assert_int_equal(socks5_parse_request(v6, sizeof(v6), &used, &t, &code), 0);
	assert_string_equal(t.host, "fd00::1");
	assert_int_equal(t.port, 22);
	assert_int_equal(t.is_ip, 1);
}

static void test_request_errors(void **state)
{
	(void)state;
	struct proxy_target t;
	size_t used = 0;
	uint8_t code = 0;
	const uint8_t name[] = {5, 1, 0, 3, 6, 'w', 'e', 'b', '.', 's', 'p', 0x1f, 0x90};
	for (size_t n = 0; n < sizeof(name); n++) {
		assert_int_equal(socks5_parse_request(name, n, &used, &t, &code), SP_ERR_AGAIN);
		assert_int_equal(used, 0);
		assert_string_equal(t.host, "");
	}
	const uint8_t bind[] = {5, 2, 0, 1, 1, 2, 3, 4, 0, 80};
	assert_int_equal(socks5_parse_request(bind, sizeof(bind), &used, &t, &code),
			 SP_ERR_UNSUPPORTED);
	assert_int_equal(code, SOCKS5_REPLY_COMMAND_NOT_SUPPORTED);
	const uint8_t udp[] = {5, 3, 0, 1, 1, 2, 3, 4, 0, 80};
	assert_int_equal(socks5_parse_request(udp, sizeof(udp), &used, &t, &code), 0);
	assert_int_equal(t.command, SOCKS5_CMD_UDP_ASSOCIATE);
	assert_string_equal(t.host, "1.2.3.4");
	/* UDP ASSOCIATE from "any address, any port" */
	const uint8_t udp0[] = {5, 3, 0, 1, 0, 0, 0, 0, 0, 0};
	assert_int_equal(socks5_parse_request(udp0, sizeof(udp0), &used, &t, &code), 0);
	assert_int_equal(t.command, SOCKS5_CMD_UDP_ASSOCIATE);
	assert_int_equal(t.port, 0);
	assert_int_equal(used, 10);
	const uint8_t conn0[] = {5, 1, 0, 1, 1, 2, 3, 4, 0, 0};
	assert_int_equal(socks5_parse_request(conn0, sizeof(conn0), &used, &t, &code),
			 SP_ERR_INVALID);
	const uint8_t atyp[] = {5, 1, 0, 9, 1, 2, 3, 4, 0, 80};
	assert_int_equal(socks5_parse_request(atyp, sizeof(atyp), &used, &t, &code),
			 SP_ERR_UNSUPPORTED);
	assert_int_equal(code, SOCKS5_REPLY_ADDRESS_NOT_SUPPORTED);
	const uint8_t rsv[] = {5, 1, 1, 1, 1, 2, 3, 4, 0, 80};
	assert_int_equal(socks5_parse_request(rsv, sizeof(rsv), &used, &t, &code), SP_ERR_INVALID);
	assert_int_equal(code, SOCKS5_REPLY_GENERAL_FAILURE);
	const uint8_t port0[] = {5, 1, 0, 1, 1, 2, 3, 4, 0, 0};
	assert_int_equal(socks5_parse_request(port0, sizeof(port0), &used, &t, &code),
			 SP_ERR_INVALID);
	const uint8_t empty[] = {5, 1, 0, 3, 0, 0, 80};
	assert_int_equal(socks5_parse_request(empty, sizeof(empty), &used, &t, &code),
			 SP_ERR_INVALID);
	const uint8_t nul[] = {5, 1, 0, 3, 3, 'a', 0, 'b', 0, 80};
	assert_int_equal(socks5_parse_request(nul, sizeof(nul), &used, &t, &code), SP_ERR_INVALID);
	const uint8_t space[] = {5, 1, 0, 3, 3, 'a', ' ', 'b', 0, 80};
	assert_int_equal(socks5_parse_request(space, sizeof(space), &used, &t, &code),
			 SP_ERR_INVALID);
	/* the longest name (255) fits */
	uint8_t longest[4 + 1 + 255 + 2] = {5, 1, 0, 3, 255};
	memset(longest + 5, 'a', 255);
	longest[260] = 0;
	longest[261] = 80;
	assert_int_equal(socks5_parse_request(longest, sizeof(longest), &used, &t, &code), 0);
	assert_int_equal(strlen(t.host), 255);
}

static int http(const char *text, struct proxy_target *t, size_t *used)
{
	return http_connect_parse((const uint8_t *)text, strlen(text), used, t);
}

static void test_http_connect(void **state)
{
	(void)state;
	struct proxy_target t;
	size_t used = 0;
	const char *req = "CONNECT web.sp:443 HTTP/1.1\r\nHost: web.sp:443\r\n\r\nTLS";
	assert_int_equal(http(req, &t, &used), 0);
	assert_int_equal(used, strlen(req) - 3);
	assert_string_equal(t.host, "web.sp");
	assert_int_equal(t.port, 443);
	assert_int_equal(http("CONNECT 10.1.2.3:22 HTTP/1.0\r\n\r\n", &t, &used), 0);
	assert_int_equal(t.is_ip, 1);
	assert_int_equal(http("CONNECT [fd00::5]:8443 HTTP/1.1\r\n\r\n", &t, &used), 0);
	assert_string_equal(t.host, "fd00::5");
	assert_int_equal(t.port, 8443);
	assert_int_equal(t.is_ip, 1);
	/* incomplete: every prefix asks for more */
	for (size_t n = 0; n < strlen(req) - 3; n++)
		assert_int_equal(http_connect_parse((const uint8_t *)req, n, &used, &t), SP_ERR_AGAIN);
}

static void test_http_connect_errors(void **state)
{
	(void)state;
	struct proxy_target t;
	size_t used = 0;
	assert_int_equal(http("GET http://x/ HTTP/1.1\r\n\r\n", &t, &used), SP_ERR_UNSUPPORTED);
	assert_int_equal(http("CONNECTX a:1 HTTP/1.1\r\n\r\n", &t, &used), SP_ERR_UNSUPPORTED);
	assert_int_equal(http("CONNECT a:1 HTTP/2.0\r\n\r\n", &t, &used), SP_ERR_INVALID);
	assert_int_equal(http("CONNECT a:1\r\n\r\n", &t, &used), SP_ERR_INVALID);
	assert_int_equal(http("CONNECT a HTTP/1.1\r\n\r\n", &t, &used), SP_ERR_INVALID);
	assert_int_equal(http("CONNECT a:0 HTTP/1.1\r\n\r\n", &t, &used), SP_ERR_INVALID);
	assert_int_equal(http("CONNECT a:65536 HTTP/1.1\r\n\r\n", &t, &used), SP_ERR_INVALID);
	assert_int_equal(http("CONNECT a:080 HTTP/1.1\r\n\r\n", &t, &used), SP_ERR_INVALID);
	assert_int_equal(http("CONNECT a:+80 HTTP/1.1\r\n\r\n", &t, &used), SP_ERR_INVALID);
	assert_int_equal(http("CONNECT fd00::1:80 HTTP/1.1\r\n\r\n", &t, &used), SP_ERR_INVALID);
	assert_int_equal(http("CONNECT [zz]:80 HTTP/1.1\r\n\r\n", &t, &used), SP_ERR_INVALID);
	assert_int_equal(http("CONNECT [fd00::1 HTTP/1.1\r\n\r\n", &t, &used), SP_ERR_INVALID);
	assert_int_equal(http("CONNECT a@b:80 HTTP/1.1\r\n\r\n", &t, &used), SP_ERR_INVALID);
	assert_int_equal(http("CONNECT :80 HTTP/1.1\r\n\r\n", &t, &used), SP_ERR_INVALID);
	assert_int_equal(http("CONNECT a:80 HTTP/1.1\nX: y\r\n\r\n", &t, &used), SP_ERR_INVALID);
	assert_int_equal(used, 0);
	assert_string_equal(t.host, "");
	/* oversize without an end of headers */
	static uint8_t big[PROXY_HTTP_REQUEST_MAX + 10];
	memset(big, 'a', sizeof(big));
	assert_int_equal(http_connect_parse(big, sizeof(big), &used, &t), SP_ERR_TOO_LARGE);
	assert_int_equal(http_connect_parse(big, PROXY_HTTP_REQUEST_MAX - 1, &used, &t),
			 SP_ERR_AGAIN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_greeting),
	    cmocka_unit_test(test_request_kinds),
	    cmocka_unit_test(test_udp_header),
	    cmocka_unit_test(test_request_errors),
	    cmocka_unit_test(test_http_connect),
	    cmocka_unit_test(test_http_connect_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
