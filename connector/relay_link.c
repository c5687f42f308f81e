/* connector/relay_link.c — see relay_link.h. */
#include "connector/relay_link.h"

#include <string.h>

void connector_relay_parser_reset(struct connector_relay_parser *p)
{
	p->state = CONNECTOR_RELAY_AWAIT_STATUS;
}

int connector_relay_parse(struct connector_relay_parser *p, const uint8_t *data, size_t len,
			  struct connector_relay_event *ev)
{
	memset(ev, 0, sizeof(*ev));
	switch (p->state) {
	case CONNECTOR_RELAY_AWAIT_STATUS:
		if (len < 1)
			return SP_ERR_AGAIN;
		ev->status = data[0];
		if (data[0] == SP_RELAY_PAIRED) {
			ev->kind = CONNECTOR_RELAY_EV_REGISTERED;
			p->state = CONNECTOR_RELAY_REGISTERED;
		} else {
			ev->kind = CONNECTOR_RELAY_EV_REFUSED;
			p->state = CONNECTOR_RELAY_CLOSED;
		}
		return 1;
	case CONNECTOR_RELAY_REGISTERED: {
		int r = sp_relay_dial_decode(data, len, ev->pairing_id);
		if (r == SP_ERR_AGAIN)
			return r;
		if (r < 0) {
			p->state = CONNECTOR_RELAY_CLOSED;
			return SP_ERR_INVALID;
		}
		ev->kind = CONNECTOR_RELAY_EV_DIAL;
		return r;
	}
	case CONNECTOR_RELAY_CLOSED:
	default:
		return SP_ERR_INVALID;
	}
}

int64_t connector_relay_backoff_ms(unsigned failures, uint32_t random)
{
	int64_t base = CONNECTOR_RELAY_BACKOFF_MIN_MS;
	for (unsigned i = 1; i < failures && base < CONNECTOR_RELAY_BACKOFF_MAX_MS; i++)
		base *= 2;
	if (base > CONNECTOR_RELAY_BACKOFF_MAX_MS)
		base = CONNECTOR_RELAY_BACKOFF_MAX_MS;
	int64_t half = base / 2;
	return half + (int64_t)(random % (uint32_t)(half + 1));
}

int connector_relay_token_due(int64_t expires_at, int64_t now)
{
	return expires_at == 0 || now >= expires_at - CONNECTOR_RELAY_TOKEN_RENEW_S;
}

int connector_relay_list_parse(const json_t *relays, struct connector_relay_addr *out,
			       size_t *count, struct sp_diag *diag)
{
	*count = 0;
	if (relays == NULL)
		return 0;
	if (!json_is_array(relays))
		return sp_diag_set(diag, SP_ERR_INVALID, "relays: must be an array");
	for (size_t i = 0; i < json_array_size(relays); i++) {
		const json_t *item = json_array_get(relays, i);
		const char *text = json_string_value(item);
		struct connector_relay_addr a;
		memset(&a, 0, sizeof(a));
		if (text == NULL || json_string_length(item) >= sizeof(a.text) ||
		    strlen(text) != json_string_length(item) ||
		    sp_config_parse_address(text, a.host, sizeof(a.host), &a.port, NULL) < 0 ||
		    a.port == 0)
			return sp_diag_set(diag, SP_ERR_INVALID, "relays[%zu]: must be host:port",
					   i);
		memcpy(a.text, text, strlen(text) + 1);
		int seen = 0;
		for (size_t k = 0; k < *count && !seen; k++)
			seen = strcmp(out[k].text, a.text) == 0;
		if (seen || *count == CONNECTOR_RELAY_MAX)
			continue;
		out[(*count)++] = a;
	}
	return 0;
}
