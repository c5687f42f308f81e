/* shared/tunnel_tls.c — a tunnel behind a TLS memory connection (see the header). */
#include "shared/tunnel_tls.h"

#include <stdlib.h>
#include <string.h>

#include "shared/buf.h"
#include "shared/tls.h"

/* Plaintext moved per step: a few full TLS records, well under SP_TLS_OUTBOUND_MAX. */
#define TUNNEL_TLS_CHUNK (64 * 1024)

/* Owned by the caller of sp_tunnel_tls_new; borrows ssl and tunnel. */
struct sp_tunnel_tls {
	SSL *ssl;
	struct sp_tunnel *tunnel;
	int handshake_done;
	int failed;
	/* Tunnel output taken but refused by TLS for now (outbound full): written first. */
	struct sp_buf pending;
	uint8_t scratch[TUNNEL_TLS_CHUNK];
};

int sp_tunnel_tls_new(SSL *ssl, struct sp_tunnel *tunnel, struct sp_tunnel_tls **out)
{
	if (out == NULL)
		return SP_ERR_INVALID;
	*out = NULL;
	if (ssl == NULL || tunnel == NULL)
		return SP_ERR_INVALID;
	struct sp_tunnel_tls *tt = calloc(1, sizeof(*tt));
	if (tt == NULL)
		return SP_ERR_NOMEM;
	tt->ssl = ssl;
	tt->tunnel = tunnel;
	sp_buf_init(&tt->pending, TUNNEL_TLS_CHUNK);
	*out = tt;
	return 0;
}

void sp_tunnel_tls_free(struct sp_tunnel_tls *tt)
{
	if (tt == NULL)
		return;
	sp_buf_free(&tt->pending);
	OPENSSL_cleanse(tt->scratch, sizeof(tt->scratch));
	free(tt);
}

static int handshake(struct sp_tunnel_tls *tt, struct sp_diag *diag)
{
	if (tt->handshake_done)
		return 0;
	int r = sp_tls_handshake_step(tt->ssl, diag);
	if (r == 0)
		tt->handshake_done = 1;
	return r;
}

/* Decrypts what is buffered and hands it to the tunnel. */
static int drain_plaintext(struct sp_tunnel_tls *tt, struct sp_diag *diag)
{
	for (;;) {
		size_t got = 0;
		int r = sp_tls_read(tt->ssl, tt->scratch, sizeof(tt->scratch), &got, diag);
		if (r == SP_ERR_AGAIN)
			return 0;
		if (r < 0)
			return r;
		r = sp_tunnel_recv(tt->tunnel, tt->scratch, got, diag);
		if (r < 0)
			return r;
	}
}

int sp_tunnel_tls_recv(struct sp_tunnel_tls *tt, const void *ciphertext, size_t len, size_t *used,
		       struct sp_diag *diag)
{
	if (used != NULL)
		*used = 0;
	if (tt == NULL || used == NULL || (ciphertext == NULL && len > 0))
		return SP_ERR_INVALID;
	if (tt->failed)
		return sp_diag_set(diag, SP_ERR_INVALID, "tunnel connection already failed");
	const uint8_t *in = ciphertext;
	int r = 0;
	do {
		size_t room = sp_tls_inbound_room(tt->ssl);
		size_t n = len - *used < room ? len - *used : room;
		if (n > 0) {
			r = sp_tls_feed(tt->ssl, in + *used, n);
			if (r < 0)
				goto out;
			*used += n;
		}
		r = handshake(tt, diag);
		if (r == SP_ERR_AGAIN) {
			r = 0;
			/* More handshake input may still be offered; otherwise wait for the peer.
			 */
			if (n == 0)
				break;
			continue;
		}
		if (r < 0)
			goto out;
		r = drain_plaintext(tt, diag);
		if (r < 0)
			goto out;
		if (n == 0)
			break;
	} while (*used < len);
out:
	if (r < 0)
		tt->failed = 1;
	return r;
}

int sp_tunnel_tls_flush(struct sp_tunnel_tls *tt, struct sp_diag *diag)
{
	if (tt == NULL)
		return SP_ERR_INVALID;
	int r = handshake(tt, diag);
	if (r == SP_ERR_AGAIN)
		return 0;
	if (r < 0) {
		tt->failed = 1;
		return r;
	}
	for (;;) {
		if (tt->pending.len == 0) {
			if (!sp_tunnel_want_write(tt->tunnel))
				return 0;
			r = sp_tunnel_send(tt->tunnel, &tt->pending);
			if (r < 0)
				return r;
			if (tt->pending.len == 0)
				return 0;
		}
		r = sp_tls_write(tt->ssl, tt->pending.data, tt->pending.len, diag);
		if (r == SP_ERR_AGAIN)
			return 0; /* the socket must take some ciphertext first */
		if (r < 0) {
			tt->failed = 1;
			return r;
		}
		sp_buf_reset(&tt->pending);
	}
}

int sp_tunnel_tls_outbound_view(struct sp_tunnel_tls *tt, const uint8_t **data, size_t *len)
{
	if (tt == NULL)
		return SP_ERR_INVALID;
	return sp_tls_outbound_view(tt->ssl, data, len);
}

int sp_tunnel_tls_outbound_consume(struct sp_tunnel_tls *tt, size_t n)
{
	if (tt == NULL)
		return SP_ERR_INVALID;
	return sp_tls_outbound_consume(tt->ssl, n);
}

int sp_tunnel_tls_want_write(const struct sp_tunnel_tls *tt)
{
	if (tt == NULL)
		return 0;
	if (sp_tls_outbound_pending(tt->ssl) > 0)
		return 1;
	return tt->handshake_done && (tt->pending.len > 0 || sp_tunnel_want_write(tt->tunnel));
}

int sp_tunnel_tls_handshake_done(const struct sp_tunnel_tls *tt)
{
	return tt != NULL && tt->handshake_done;
}
