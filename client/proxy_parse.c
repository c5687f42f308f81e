/*
 * client/proxy_parse.c — SOCKS5 and HTTP CONNECT request parsers (see proxy_parse.h).
 */
#include "client/proxy_parse.h"

#include <arpa/inet.h>
#include <string.h>

#include "shared/buf.h"

int socks5_parse_greeting(const uint8_t *data, size_t len, size_t *used, int *no_auth)
{
	struct sp_reader r;
	uint8_t ver = 0, n = 0;
	const uint8_t *methods = NULL;
	*used = 0;
	*no_auth = 0;
	sp_reader_init(&r, data, len);
	if (sp_reader_u8(&r, &ver) < 0)
		return SP_ERR_AGAIN;
	if (ver != 5)
		return SP_ERR_INVALID;
	if (sp_reader_u8(&r, &n) < 0)
		return SP_ERR_AGAIN;
	if (n == 0)
		return SP_ERR_INVALID;
	if (sp_reader_view(&r, n, &methods) < 0)
		return SP_ERR_AGAIN;
	for (size_t i = 0; i < n; i++)
		if (methods[i] == 0)
			*no_auth = 1;
	*used = 2u + n;
	return 0;
}

static int host_is_valid(const char *host, size_t len)
{
	if (len == 0 || len > PROXY_HOST_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)host[i];
		if (c <= 0x20 || c >= 0x7f || c == '/' || c == '@' || c == '[' || c == ']' ||
		    c == '?' || c == '#' || c == '\\')
			return 0;
	}
	return 1;
}

/* Copies a checked host name (nlen < sizeof(out->host)) and notes whether it is an address. */
static void set_host(struct proxy_target *out, const uint8_t *name, uint8_t nlen)
{
	memcpy(out->host, name, nlen);
	out->host[nlen] = '\0';
	uint8_t probe[16];
	out->is_ip = inet_pton(AF_INET, out->host, probe) == 1 ||
		     inet_pton(AF_INET6, out->host, probe) == 1;
}

int socks5_parse_request(const uint8_t *data, size_t len, size_t *used, struct proxy_target *out,
			 uint8_t *reply_code)
{
	struct sp_reader r;
	uint8_t ver = 0, cmd = 0, rsv = 0, atyp = 0;
	uint16_t port = 0;
	memset(out, 0, sizeof(*out));
	*used = 0;
	*reply_code = SOCKS5_REPLY_GENERAL_FAILURE;
	sp_reader_init(&r, data, len);
	if (sp_reader_u8(&r, &ver) < 0 || sp_reader_u8(&r, &cmd) < 0 || sp_reader_u8(&r, &rsv) < 0 ||
	    sp_reader_u8(&r, &atyp) < 0)
		return SP_ERR_AGAIN;
	if (ver != 5 || rsv != 0)
		return SP_ERR_INVALID;
	if (cmd != SOCKS5_CMD_CONNECT && cmd != SOCKS5_CMD_UDP_ASSOCIATE) {
		*reply_code = SOCKS5_REPLY_COMMAND_NOT_SUPPORTED;
		return SP_ERR_UNSUPPORTED;
	}
	if (atyp == 1 || atyp == 4) {
		uint8_t addr[16];
		size_t alen = atyp == 1 ? 4 : 16;
		if (sp_reader_copy(&r, addr, alen) < 0)
			return SP_ERR_AGAIN;
		if (inet_ntop(atyp == 1 ? AF_INET : AF_INET6, addr, out->host, sizeof(out->host)) ==
		    NULL)
			return SP_ERR_INVALID;
		out->is_ip = 1;
	} else if (atyp == 3) {
		uint8_t nlen = 0;
		const uint8_t *name = NULL;
		if (sp_reader_u8(&r, &nlen) < 0 || sp_reader_view(&r, nlen, &name) < 0)
			return SP_ERR_AGAIN;
		if (!host_is_valid((const char *)name, nlen))
			return SP_ERR_INVALID;
		set_host(out, name, nlen);
	} else {
		*reply_code = SOCKS5_REPLY_ADDRESS_NOT_SUPPORTED;
		return SP_ERR_UNSUPPORTED;
	}
	if (sp_reader_u16be(&r, &port) < 0) {
		memset(out, 0, sizeof(*out));
		return SP_ERR_AGAIN;
	}
	if (port == 0 && cmd == SOCKS5_CMD_CONNECT) {
		memset(out, 0, sizeof(*out));
		return SP_ERR_INVALID;
	}
	out->port = port;
	out->command = cmd;
	*used = len - sp_reader_remaining(&r);
	return 0;
}

int socks5_parse_udp_header(const uint8_t *data, size_t len, size_t *header_len,
			    struct proxy_target *out)
{
	struct sp_reader r;
	uint16_t rsv = 0xffff, port = 0;
	uint8_t frag = 0, atyp = 0;
	int rc = SP_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	*header_len = 0;
	sp_reader_init(&r, data, len);
	if (sp_reader_u16be(&r, &rsv) < 0 || sp_reader_u8(&r, &frag) < 0 ||
	    sp_reader_u8(&r, &atyp) < 0 || rsv != 0)
		goto out;
	if (frag != 0) {
		rc = SP_ERR_UNSUPPORTED;
		goto out;
	}
	if (atyp == 1 || atyp == 4) {
		uint8_t addr[16];
		size_t alen = atyp == 1 ? 4 : 16;
		if (sp_reader_copy(&r, addr, alen) < 0 ||
		    inet_ntop(atyp == 1 ? AF_INET : AF_INET6, addr, out->host, sizeof(out->host)) ==
			NULL)
			goto out;
		out->is_ip = 1;
	} else if (atyp == 3) {
		uint8_t nlen = 0;
		const uint8_t *name = NULL;
		if (sp_reader_u8(&r, &nlen) < 0 || sp_reader_view(&r, nlen, &name) < 0 ||
		    !host_is_valid((const char *)name, nlen))
			goto out;
		set_host(out, name, nlen);
	} else {
		rc = SP_ERR_UNSUPPORTED;
		goto out;
	}
	if (sp_reader_u16be(&r, &port) < 0 || port == 0)
		goto out;
	out->port = port;
	*header_len = len - sp_reader_remaining(&r);
	return 0;
out:
	memset(out, 0, sizeof(*out));
	return rc;
}

int proxy_parse_authority(const char *text, size_t len, struct proxy_target *out)
{
	memset(out, 0, sizeof(*out));
	const char *host = text;
	size_t host_len;
	const char *rest;
	if (len > 0 && text[0] == '[') {
		const char *close = memchr(text, ']', len);
		if (close == NULL)
			return SP_ERR_INVALID;
		host = text + 1;
		host_len = (size_t)(close - host);
		rest = close + 1;
		if (rest >= text + len || *rest != ':')
			return SP_ERR_INVALID;
	} else {
		const char *colon = NULL;
		for (size_t i = 0; i < len; i++)
			if (text[i] == ':')
				colon = text + i;
		if (colon == NULL)
			return SP_ERR_INVALID;
		host_len = (size_t)(colon - text);
		rest = colon;
		if (memchr(text, ':', host_len) != NULL)
			return SP_ERR_INVALID; /* IPv6 without brackets */
	}
	if (!host_is_valid(host, host_len) && !(text[0] == '[' && host_len > 0 &&
						host_len <= PROXY_HOST_MAX))
		return SP_ERR_INVALID;
	const char *digits = rest + 1;
	size_t dlen = (size_t)(text + len - digits);
	if (dlen == 0 || dlen > 5 || digits[0] == '0')
		return SP_ERR_INVALID;
	uint32_t port = 0;
	for (size_t i = 0; i < dlen; i++) {
		if (digits[i] < '0' || digits[i] > '9')
			return SP_ERR_INVALID;
		port = port * 10u + (uint32_t)(digits[i] - '0');
	}
	if (port == 0 || port > 65535)
		return SP_ERR_INVALID;
	memcpy(out->host, host, host_len);
	out->host[host_len] = '\0';
	uint8_t probe[16];
	if (text[0] == '[') {
		if (inet_pton(AF_INET6, out->host, probe) != 1) {
			memset(out, 0, sizeof(*out));
			return SP_ERR_INVALID;
		}
		out->is_ip = 1;
	} else {
		out->is_ip = inet_pton(AF_INET, out->host, probe) == 1;
	}
	out->port = (uint16_t)port;
	return 0;
}

/* Position just past the first "\r\n\r\n" in data, or 0 when absent. */
static size_t find_header_end(const uint8_t *data, size_t len)
{
	for (size_t i = 3; i < len; i++)
		if (data[i - 3] == '\r' && data[i - 2] == '\n' && data[i - 1] == '\r' && data[i] == '\n')
			return i + 1;
	return 0;
}

int http_connect_parse(const uint8_t *data, size_t len, size_t *used, struct proxy_target *out)
{
	memset(out, 0, sizeof(*out));
	*used = 0;
	size_t scan = len < PROXY_HTTP_REQUEST_MAX ? len : PROXY_HTTP_REQUEST_MAX;
	size_t end = find_header_end(data, scan);
	if (end == 0)
		return len >= PROXY_HTTP_REQUEST_MAX ? SP_ERR_TOO_LARGE : SP_ERR_AGAIN;
	const char *line = (const char *)data;
	const char *eol = memchr(line, '\r', end);
	size_t line_len = (size_t)(eol - line);
	const char *sp1 = memchr(line, ' ', line_len);
	if (sp1 == NULL)
		return SP_ERR_INVALID;
	if ((size_t)(sp1 - line) != 7 || memcmp(line, "CONNECT", 7) != 0)
		return SP_ERR_UNSUPPORTED;
	const char *target = sp1 + 1;
	const char *sp2 = memchr(target, ' ', (size_t)(eol - target));
	if (sp2 == NULL)
		return SP_ERR_INVALID;
	size_t version_len = (size_t)(eol - (sp2 + 1));
	if (version_len != 8 ||
	    (memcmp(sp2 + 1, "HTTP/1.1", 8) != 0 && memcmp(sp2 + 1, "HTTP/1.0", 8) != 0))
		return SP_ERR_INVALID;
	/* every header line must be well formed: no bare CR or LF, no NUL */
	for (size_t i = 0; i < end; i++) {
		if (data[i] == 0)
			return SP_ERR_INVALID;
		if (data[i] == '\n' && (i == 0 || data[i - 1] != '\r'))
			return SP_ERR_INVALID;
		if (data[i] == '\r' && (i + 1 >= end || data[i + 1] != '\n'))
			return SP_ERR_INVALID;
	}
	int rc = proxy_parse_authority(target, (size_t)(sp2 - target), out);
	if (rc < 0)
		return rc;
	*used = end;
	return 0;
}
