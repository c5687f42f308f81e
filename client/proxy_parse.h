/*
 * client/proxy_parse.h — the requests the client's local proxies accept, parsed from bytes.
 *
 * Two listeners on loopback (docs/client.md, "proxy" mode) take a destination from a local
 * program: SOCKS5 (RFC 1928: the "no authentication" method only, CONNECT and UDP
 * ASSOCIATE with its datagram header, IPv4, IPv6 or a host name) and HTTP CONNECT ("CONNECT host:port HTTP/1.x", headers ignored). The
 * parsers are pure functions over the bytes received so far: they say "need more"
 * (SP_ERR_AGAIN), "complete" (0, with how many bytes the request used) or "malformed".
 * Nothing is read, written or allocated here.
 */
#ifndef SALLYPORT_CLIENT_PROXY_PARSE_H
#define SALLYPORT_CLIENT_PROXY_PARSE_H
#include <stddef.h>
#include <stdint.h>
#include "shared/error.h"

/* Longest host text (a SOCKS5 name is at most 255 bytes; IPv6 text is shorter). */
#define PROXY_HOST_MAX 255
/* An HTTP CONNECT request (request line and headers) larger than this is refused. */
#define PROXY_HTTP_REQUEST_MAX 8192

/* SOCKS5 reply codes (RFC 1928 §6) the client sends. */
#define SOCKS5_REPLY_OK 0x00
#define SOCKS5_REPLY_GENERAL_FAILURE 0x01
#define SOCKS5_REPLY_NOT_ALLOWED 0x02
#define SOCKS5_REPLY_HOST_UNREACHABLE 0x04
#define SOCKS5_REPLY_COMMAND_NOT_SUPPORTED 0x07
#define SOCKS5_REPLY_ADDRESS_NOT_SUPPORTED 0x08
/* SOCKS5 commands (RFC 1928 §4) the client serves. */
#define SOCKS5_CMD_CONNECT 0x01
#define SOCKS5_CMD_UDP_ASSOCIATE 0x03

/* A destination taken from a request. Caller-owned (usually on the stack). */
struct proxy_target {
	char host[PROXY_HOST_MAX + 1]; /* a name, dotted IPv4 or IPv6 text (no brackets) */
	uint16_t port;		       /* 1..65535 */
	int is_ip;		       /* 1 when host is an IP literal */
	uint8_t command;	       /* SOCKS5: SOCKS5_CMD_*; 0 for HTTP CONNECT */
};

/*
 * The SOCKS5 greeting (VER 5, NMETHODS 1..255, METHODS). Returns 0 with *used and
 * *no_auth (1 when method 0 "no authentication" is offered), SP_ERR_AGAIN when more bytes
 * are needed, SP_ERR_INVALID for another version or zero methods.
 */
int socks5_parse_greeting(const uint8_t *data, size_t len, size_t *used, int *no_auth);

/*
 * The SOCKS5 request (VER 5, CMD, RSV 0, ATYP, DST.ADDR, DST.PORT). Returns 0 with *used
 * and *out (out->command CONNECT or UDP ASSOCIATE; for UDP ASSOCIATE DST is where the
 * program will send from, port 0 allowed); SP_ERR_AGAIN for more; SP_ERR_UNSUPPORTED for
 * another command (*reply_code = 0x07) or an unknown address type (0x08); SP_ERR_INVALID
 * for a bad version or reserved byte, an empty or NUL-holding name or a CONNECT to port 0
 * (*reply_code 0x01).
 * *reply_code says which SOCKS5 reply to send on failure.
 */
int socks5_parse_request(const uint8_t *data, size_t len, size_t *used, struct proxy_target *out,
			 uint8_t *reply_code);

/*
 * The header of one datagram a program sends to a SOCKS5 UDP relay (RFC 1928 §7: RSV 0 0,
 * FRAG, ATYP, DST.ADDR, DST.PORT, then the payload). A datagram is whole, so there is no
 * "need more": returns 0 with *header_len (the payload starts there; it may be empty) and
 * *out; SP_ERR_UNSUPPORTED for FRAG other than 0 (fragments are not reassembled: such a
 * datagram is dropped) or an unknown address type; SP_ERR_INVALID for a truncated header,
 * non-zero RSV, an empty, NUL-holding or otherwise invalid name, or port 0. On failure
 * *header_len is 0 and *out zeroed.
 */
int socks5_parse_udp_header(const uint8_t *data, size_t len, size_t *header_len,
			    struct proxy_target *out);

/*
 * An HTTP CONNECT request up to and including the empty line that ends its headers.
 * "CONNECT host:port HTTP/1.0|1.1" where host is a name, IPv4, or [IPv6]; headers are
 * skipped. Returns 0 with *used and *out; SP_ERR_AGAIN while the empty line has not
 * arrived (and the request is below PROXY_HTTP_REQUEST_MAX); SP_ERR_TOO_LARGE above it;
 * SP_ERR_UNSUPPORTED for another method (answer 405); SP_ERR_INVALID otherwise (400).
 */
int http_connect_parse(const uint8_t *data, size_t len, size_t *used, struct proxy_target *out);

/*
 * Parses "host:port" (host a name, IPv4 or [IPv6]; port 1..65535 without sign) of len
 * bytes into *out. SP_ERR_INVALID otherwise. Shared by the HTTP parser and the tests.
 */
int proxy_parse_authority(const char *text, size_t len, struct proxy_target *out);
#endif
