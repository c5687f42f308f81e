/*
 * shared/tunnel_tls.h — a tunnel (shared/tunnel.h) behind a TLS memory connection
 * (shared/tls.h), so an event loop only moves ciphertext between a socket and this object:
 *
 *   socket bytes --sp_tunnel_tls_recv--> TLS --> sp_tunnel_recv --> callbacks
 *   sp_tunnel_send --> TLS --sp_tunnel_tls_flush--> sp_tunnel_tls_outbound_view --> socket
 *
 * The loop: after connecting (client) or accepting (server), and after every recv or
 * application call, call sp_tunnel_tls_flush, then send what sp_tunnel_tls_outbound_view
 * shows and sp_tunnel_tls_outbound_consume what the socket took. While the handshake runs,
 * tunnel bytes wait; the client's HTTP/2 preface and first requests follow its Finished.
 *
 * Ownership: sp_tunnel_tls_new borrows the SSL (made by sp_tls_conn_new_memory) and the
 * tunnel; the caller frees them after sp_tunnel_tls_free. One thread.
 */
#ifndef SALLYPORT_SHARED_TUNNEL_TLS_H
#define SALLYPORT_SHARED_TUNNEL_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "shared/error.h"
#include "shared/tunnel.h"

struct sp_tunnel_tls;

/* Joins ssl (a memory connection) and tunnel. Returns 0 and *out, SP_ERR_INVALID/NOMEM. */
int sp_tunnel_tls_new(SSL *ssl, struct sp_tunnel *tunnel, struct sp_tunnel_tls **out);
/* Frees the join (not the SSL or the tunnel). Safe on NULL. */
void sp_tunnel_tls_free(struct sp_tunnel_tls *tt);

/*
 * Feeds up to len ciphertext bytes from the socket (as much as TLS buffers: *used says
 * how many; offer the rest after flushing), advances the handshake, decrypts and passes
 * the plaintext to the tunnel (its callbacks run). len 0 only processes what is buffered.
 * Returns 0, or the TLS error (SP_ERR_TLS for a close_notify or a broken record,
 * SP_ERR_PEER_MISMATCH during the handshake...) or the tunnel's protocol error, with a
 * diag: the caller closes the connection (after a last flush, which may carry an alert or
 * GOAWAY).
 */
int sp_tunnel_tls_recv(struct sp_tunnel_tls *tt, const void *ciphertext, size_t len, size_t *used,
		       struct sp_diag *diag);
/*
 * Moves handshake messages and tunnel output into the outbound ciphertext buffer until it
 * is full (about SP_TLS_OUTBOUND_MAX) or nothing is left. Returns 0 or an error as above.
 */
int sp_tunnel_tls_flush(struct sp_tunnel_tls *tt, struct sp_diag *diag);
/* Ciphertext waiting for the socket (see sp_tls_outbound_view / _consume). */
int sp_tunnel_tls_outbound_view(struct sp_tunnel_tls *tt, const uint8_t **data, size_t *len);
int sp_tunnel_tls_outbound_consume(struct sp_tunnel_tls *tt, size_t n);
/* 1 when there is ciphertext to send or output a flush would produce. */
int sp_tunnel_tls_want_write(const struct sp_tunnel_tls *tt);
/* 1 once the TLS handshake has finished. */
int sp_tunnel_tls_handshake_done(const struct sp_tunnel_tls *tt);

#endif
