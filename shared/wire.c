/* shared/wire.c — see wire.h. */
#include "shared/wire.h"

#include <string.h>

#include "shared/error.h"

static const uint8_t client_magic[4] = {'S', 'P', 'R', 'C'};
static const uint8_t connector_magic[4] = {'S', 'P', 'R', 'D'};
static const uint8_t register_magic[4] = {'S', 'P', 'R', 'K'};

/* Checks the magic and version of a preamble. 0, SP_ERR_AGAIN or a refusal. */
static int check_head(struct sp_reader *r, const uint8_t magic[4], uint8_t *version)
{
	/* Judge the magic on what has arrived so far, so garbage fails at its first byte. */
	size_t have = sp_reader_remaining(r) < 4 ? sp_reader_remaining(r) : 4;
	if (memcmp(r->data + r->pos, magic, have) != 0)
		return SP_ERR_INVALID;
	if (sp_reader_skip(r, 4) < 0 || sp_reader_u8(r, version) < 0)
		return SP_ERR_AGAIN;
	if (*version != SP_WIRE_VERSION)
		return SP_ERR_VERSION;
	return 0;
}

int sp_relay_client_hello_encode(const uint8_t *ticket, size_t ticket_len, struct sp_buf *out)
{
	if (ticket_len == 0 || ticket_len > SP_RELAY_TICKET_MAX)
		return SP_ERR_TOO_LARGE;
	int r = sp_buf_reserve(out, 4 + 1 + 2 + ticket_len);
	if (r < 0)
		return r;
	(void)sp_buf_put(out, client_magic, sizeof(client_magic));
	(void)sp_buf_put_u8(out, SP_WIRE_VERSION);
	(void)sp_buf_put_u16be(out, (uint16_t)ticket_len);
	(void)sp_buf_put(out, ticket, ticket_len);
	return 0;
}

int sp_relay_client_hello_decode(const uint8_t *data, size_t len,
                                 struct sp_relay_client_hello *out)
{
	struct sp_reader r;
	uint16_t ticket_len;
	memset(out, 0, sizeof(*out));
	sp_reader_init(&r, data, len);
	int rc = check_head(&r, client_magic, &out->version);
	if (rc < 0)
		return rc;
	if (sp_reader_u16be(&r, &ticket_len) < 0)
		return SP_ERR_AGAIN;
	if (ticket_len == 0 || ticket_len > SP_RELAY_TICKET_MAX)
		return SP_ERR_TOO_LARGE;
	if (sp_reader_view(&r, ticket_len, &out->ticket) < 0) {
		out->ticket = NULL;
		return SP_ERR_AGAIN;
	}
	out->ticket_len = ticket_len;
	return (int)r.pos;
}

int sp_relay_connector_hello_encode(const uint8_t pairing_id[SP_RELAY_PAIRING_ID_LEN],
                                    struct sp_buf *out)
{
	int r = sp_buf_reserve(out, 4 + 1 + SP_RELAY_PAIRING_ID_LEN);
	if (r < 0)
		return r;
	(void)sp_buf_put(out, connector_magic, sizeof(connector_magic));
	(void)sp_buf_put_u8(out, SP_WIRE_VERSION);
	(void)sp_buf_put(out, pairing_id, SP_RELAY_PAIRING_ID_LEN);
	return 0;
}

int sp_relay_connector_hello_decode(const uint8_t *data, size_t len,
                                    uint8_t pairing_id[SP_RELAY_PAIRING_ID_LEN])
{
	struct sp_reader r;
	uint8_t version;
	memset(pairing_id, 0, SP_RELAY_PAIRING_ID_LEN);
	sp_reader_init(&r, data, len);
	int rc = check_head(&r, connector_magic, &version);
	if (rc < 0)
		return rc;
	if (sp_reader_copy(&r, pairing_id, SP_RELAY_PAIRING_ID_LEN) < 0)
		return SP_ERR_AGAIN;
	return (int)r.pos;
}

int sp_relay_register_encode(const uint8_t *token, size_t token_len, struct sp_buf *out)
{
	if (token_len == 0 || token_len > SP_RELAY_TOKEN_MAX)
		return SP_ERR_TOO_LARGE;
	int r = sp_buf_reserve(out, 4 + 1 + 2 + token_len);
	if (r < 0)
		return r;
	(void)sp_buf_put(out, register_magic, sizeof(register_magic));
	(void)sp_buf_put_u8(out, SP_WIRE_VERSION);
	(void)sp_buf_put_u16be(out, (uint16_t)token_len);
	(void)sp_buf_put(out, token, token_len);
	return 0;
}

int sp_relay_register_decode(const uint8_t *data, size_t len, struct sp_relay_register *out)
{
	struct sp_reader r;
	uint16_t token_len;
	memset(out, 0, sizeof(*out));
	sp_reader_init(&r, data, len);
	int rc = check_head(&r, register_magic, &out->version);
	if (rc < 0)
		return rc;
	if (sp_reader_u16be(&r, &token_len) < 0)
		return SP_ERR_AGAIN;
	if (token_len == 0 || token_len > SP_RELAY_TOKEN_MAX)
		return SP_ERR_TOO_LARGE;
	if (sp_reader_view(&r, token_len, &out->token) < 0) {
		out->token = NULL;
		return SP_ERR_AGAIN;
	}
	out->token_len = token_len;
	return (int)r.pos;
}

int sp_relay_dial_encode(const uint8_t pairing_id[SP_RELAY_PAIRING_ID_LEN], struct sp_buf *out)
{
	int r = sp_buf_reserve(out, SP_RELAY_DIAL_LEN);
	if (r < 0)
		return r;
	(void)sp_buf_put_u8(out, 'D');
	(void)sp_buf_put(out, pairing_id, SP_RELAY_PAIRING_ID_LEN);
	return 0;
}

int sp_relay_dial_decode(const uint8_t *data, size_t len,
                         uint8_t pairing_id[SP_RELAY_PAIRING_ID_LEN])
{
	memset(pairing_id, 0, SP_RELAY_PAIRING_ID_LEN);
	if (len == 0)
		return SP_ERR_AGAIN;
	if (data[0] != 'D')
		return SP_ERR_INVALID;
	if (len < SP_RELAY_DIAL_LEN)
		return SP_ERR_AGAIN;
	memcpy(pairing_id, data + 1, SP_RELAY_PAIRING_ID_LEN);
	return SP_RELAY_DIAL_LEN;
}

const char *sp_relay_status_name(uint8_t status)
{
	switch (status) {
	case SP_RELAY_PAIRED:
		return "paired";
	case SP_RELAY_BAD_TICKET:
		return "bad_ticket";
	case SP_RELAY_EXPIRED:
		return "expired";
	case SP_RELAY_REPLAYED:
		return "replayed";
	case SP_RELAY_CONNECTOR_UNAVAILABLE:
		return "connector_unavailable";
	case SP_RELAY_OVERLOADED:
		return "overloaded";
	default:
		return "unknown";
	}
}

int sp_udp_frame_encode(const uint8_t *payload, size_t len, struct sp_buf *out)
{
	if (len > SP_UDP_DATAGRAM_MAX)
		return SP_ERR_TOO_LARGE;
	int r = sp_buf_reserve(out, 2 + len);
	if (r < 0)
		return r;
	(void)sp_buf_put_u16be(out, (uint16_t)len);
	(void)sp_buf_put(out, payload, len);
	return 0;
}

int sp_udp_frame_decode(const uint8_t *data, size_t len, const uint8_t **payload,
                        size_t *payload_len)
{
	struct sp_reader r;
	uint16_t n;
	*payload = NULL;
	*payload_len = 0;
	sp_reader_init(&r, data, len);
	if (sp_reader_u16be(&r, &n) < 0)
		return SP_ERR_AGAIN;
	if (n > SP_UDP_DATAGRAM_MAX)
		return SP_ERR_TOO_LARGE;
	if (sp_reader_view(&r, n, payload) < 0) {
		*payload = NULL;
		return SP_ERR_AGAIN;
	}
	*payload_len = n;
	return (int)r.pos;
}
