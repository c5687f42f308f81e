/*
 * shared/tls.h — TLS for Sallyport tunnels (OpenSSL 3), pinned by key, not by CA.
 *
 * Every tunnel between a client and a connector is TLS 1.3 end to end, possibly through
 * a relay that only splices bytes. There is no certificate authority:
 *   - the client knows the connector's key as the SHA-256 of its SubjectPublicKeyInfo
 *     (from the signed resource list) and sets it on each connection with
 *     sp_tls_set_expected_peer(); the handshake itself fails when the server presents
 *     another key (SP_ERR_PEER_MISMATCH);
 *   - the client authenticates with its device key in a self-signed certificate; the
 *     connector accepts any certificate whose key is EC P-256 and afterwards reads the
 *     key (sp_tls_peer_key, sp_tls_peer_spki_sha256) to check it against a grant.
 * Certificates are only envelopes for keys here: no chain is built, no name and no
 * validity date is checked. docs/tls.md explains the choices (versions, suites, ALPN,
 * dates, why session tickets are off).
 *
 * The event loop does not hand sockets to OpenSSL. A connection made with
 * sp_tls_conn_new_memory() reads ciphertext from an inbound memory buffer the loop fills
 * (sp_tls_feed) and writes ciphertext to an outbound buffer the loop empties
 * (sp_tls_outbound_view / sp_tls_outbound_consume). sp_tls_pump() joins two such
 * connections directly, which is how tests and benchmarks run real handshakes without
 * sockets.
 *
 * Ownership: SSL_CTX and SSL objects returned here belong to the caller and are freed
 * with SSL_CTX_free / SSL_free, which also release everything this module attached to
 * them (memory BIOs, pins, ALPN lists). Per-connection calls are not thread-safe; a
 * context may be shared by connections on several threads as OpenSSL allows. Errors are
 * read from OpenSSL's per-thread error queue, so translate a failure (sp_tls_error) on
 * the thread that saw it, before making other OpenSSL calls.
 */
#ifndef SALLYPORT_SHARED_TLS_H
#define SALLYPORT_SHARED_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "shared/error.h"
#include "shared/keys.h"

/* The ALPN name Sallyport tunnels speak today. */
#define SP_TLS_ALPN_SALLYPORT_1 "sallyport/1"
/* At most this many ALPN names in options, each 1..SP_TLS_ALPN_NAME_MAX printable bytes. */
#define SP_TLS_ALPN_MAX_PROTOCOLS 8
#define SP_TLS_ALPN_NAME_MAX 64
/* Longest common name sp_tls_self_signed_cert accepts (X.520 ub-common-name). */
#define SP_TLS_COMMON_NAME_MAX 64
/* Lifetime of the certificate a context makes for its key (peers ignore the dates). */
#define SP_TLS_GENERATED_CERT_LIFETIME (365 * 24 * 3600)
/* Ciphertext a memory connection holds unread before sp_tls_feed refuses more. */
#define SP_TLS_INBOUND_MAX (64 * 1024)
/* Plaintext plus pending ciphertext beyond which sp_tls_write asks the caller to flush. */
#define SP_TLS_OUTBOUND_MAX (256 * 1024)

/*
 * Settings for a context. Owned by the caller, read only during the *_ctx_new call
 * (nothing in it is kept by reference; the certificate is up-referenced).
 */
struct sp_tls_options {
	/* ALPN names, most preferred first. Tunnels need 1..SP_TLS_ALPN_MAX_PROTOCOLS. */
	const char *const *alpn;
	size_t alpn_count;
	/* Our certificate for the key, or NULL to have a self-signed one made. */
	X509 *certificate;
	/* Unix seconds; a made certificate is valid from now - 1 hour (tunnels only). */
	int64_t now;
	/* Subject CN of a made certificate; NULL means "sallyport". */
	const char *common_name;
};

/*
 * The result of one side of sp_tls_handshake_pair. Caller-owned, usually on the stack.
 */
struct sp_tls_outcome {
	int result;           /* 0 or a negative enum sp_err */
	struct sp_diag diag;  /* why, when result < 0 */
};

/*
 * A self-signed X.509 v3 certificate for `key` (EC P-256 with its private half): random
 * positive 16-byte serial (126 random bits), subject = issuer = CN=common_name, validity
 * [not_before, not_after] in Unix seconds, basicConstraints CA:FALSE and keyUsage
 * digitalSignature (both critical), signed ECDSA with SHA-256. Returns 0 and *out (free
 * with X509_free); SP_ERR_INVALID for a missing private half, an empty or over-long
 * name or not_after <= not_before; SP_ERR_UNSUPPORTED for any key but P-256.
 */
int sp_tls_self_signed_cert(EVP_PKEY *key, const char *common_name, int64_t not_before,
                            int64_t not_after, X509 **out);

/*
 * The connector's tunnel context: TLS 1.3 only, the three AEAD suites, groups X25519 and
 * P-256, no compression, no renegotiation, no session tickets or resumption, ALPN
 * required (a client offering none, or none in common, is refused), and a client
 * certificate required whose key must be EC P-256 (dates and issuer are not checked).
 * `key` is our P-256 key with its private half; opts->alpn is required. Returns 0 and
 * *out, or SP_ERR_INVALID / SP_ERR_UNSUPPORTED / SP_ERR_CRYPTO with a diag.
 */
int sp_tls_server_ctx_new(EVP_PKEY *key, const struct sp_tls_options *opts, SSL_CTX **out,
                          struct sp_diag *diag);

/*
 * The client's tunnel context: the same protocol settings, presenting `device_key` in a
 * certificate, and verifying the server only by the pin each connection is given with
 * sp_tls_set_expected_peer (a connection without one fails its handshake). The server
 * must select one of opts->alpn. Errors as sp_tls_server_ctx_new.
 */
int sp_tls_client_ctx_new(EVP_PKEY *device_key, const struct sp_tls_options *opts,
                          SSL_CTX **out, struct sp_diag *diag);

/*
 * The controller's HTTPS listener context: TLS 1.2 and 1.3, ECDHE with AEAD suites only,
 * no compression, renegotiation or tickets, no client certificate. The certificate chain
 * is read from the PEM file `cert_path` (leaf first); the private key from `key_path`
 * through sp_key_load_private, so it must be P-256 and the file mode 0600 (a looser mode
 * is SP_ERR_PERMISSION). opts may be NULL; its alpn, when given, is offered (a client
 * with ALPN but nothing in common is refused). certificate, now and common_name are
 * ignored. Returns 0 and *out, or an error with a diag naming the file.
 */
int sp_tls_https_server_ctx_new(const char *cert_path, const char *key_path,
                                const struct sp_tls_options *opts, SSL_CTX **out,
                                struct sp_diag *diag);

/*
 * A connection on `ctx` (server or client as the context was made) whose I/O goes through
 * two memory buffers (see the top of this file). Returns 0 and *out (SSL_free), or
 * SP_ERR_NOMEM.
 */
int sp_tls_conn_new_memory(SSL_CTX *ctx, SSL **out);

/*
 * Requires the peer's key to hash (SHA-256 of its DER SubjectPublicKeyInfo) to `pin`.
 * Call before the handshake; a later call replaces the pin. Mandatory on client tunnel
 * connections, optional on servers (a connector that already knows the device). The pin
 * is compared in constant time while the peer's Certificate message is processed, so a
 * mismatch aborts the handshake, reported by sp_tls_error as SP_ERR_PEER_MISMATCH.
 * Returns 0, or SP_ERR_NOMEM / SP_ERR_CRYPTO.
 */
int sp_tls_set_expected_peer(SSL *ssl, const uint8_t pin[SP_KEY_SPKI_DIGEST_LEN]);

/*
 * The peer's public key after a successful, verified handshake (an extra reference:
 * the caller frees it with EVP_PKEY_free). SP_ERR_INVALID before the handshake has finished,
 * SP_ERR_NOT_FOUND when the peer sent no certificate. *out is NULL on failure.
 */
int sp_tls_peer_key(SSL *ssl, EVP_PKEY **out);
/* SHA-256 of the peer's SubjectPublicKeyInfo, as sp_key_spki_sha256; errors as above. */
int sp_tls_peer_spki_sha256(SSL *ssl, uint8_t out[SP_KEY_SPKI_DIGEST_LEN]);
/*
 * The ALPN name both sides agreed on, NUL-terminated into out (SP_TLS_ALPN_NAME_MAX + 1
 * bytes). SP_ERR_NOT_FOUND when none was negotiated; out is "" then.
 */
int sp_tls_selected_protocol(SSL *ssl, char out[SP_TLS_ALPN_NAME_MAX + 1]);

/*
 * Advances the handshake as far as the buffered input allows. Returns 0 once it has
 * finished (tunnel contexts also make sure a protocol was selected), SP_ERR_AGAIN when
 * it needs more input (first send what sp_tls_outbound_view shows), or the error from
 * sp_tls_error. Calling it again after it returned 0 returns 0.
 */
int sp_tls_handshake_step(SSL *ssl, struct sp_diag *diag);

/*
 * Translates the result `ret` of an SSL_* call on `ssl` into an sp_err and a diag, and
 * empties this thread's OpenSSL error queue. 0 for success; SP_ERR_AGAIN when OpenSSL
 * wants more input or output; SP_ERR_PEER_MISMATCH for a pinned key that differed
 * (diag names expected and presented digests in hex); SP_ERR_BAD_ALGORITHM for a peer
 * key that is not P-256; SP_ERR_INVALID for a client connection that was given no pin;
 * SP_ERR_IO for a socket error (errno in the diag); SP_ERR_TLS for every other
 * handshake or record failure, including a peer's close_notify ("closed by the peer";
 * check SSL_get_shutdown to tell a clean close apart).
 */
int sp_tls_error(SSL *ssl, int ret, struct sp_diag *diag);

/*
 * Reads decrypted application data into buf (cap bytes at most) and sets *got. Returns 0
 * with *got > 0, SP_ERR_AGAIN when no complete record is buffered (feed more), or the
 * error from sp_tls_error (a close_notify from the peer is SP_ERR_TLS, see there).
 */
int sp_tls_read(SSL *ssl, void *buf, size_t cap, size_t *got, struct sp_diag *diag);
/*
 * Encrypts all len bytes into the outbound buffer (or, on a socket connection, sends
 * them). On a memory connection the pending ciphertext stays under about
 * SP_TLS_OUTBOUND_MAX: SP_ERR_AGAIN when this write would pass it (send, consume, retry),
 * SP_ERR_TOO_LARGE when len alone exceeds it. After SP_ERR_AGAIN from OpenSSL itself
 * (socket connections), retry with the same buf and len. Other errors as sp_tls_error.
 */
int sp_tls_write(SSL *ssl, const void *buf, size_t len, struct sp_diag *diag);

/* Bytes sp_tls_feed will accept now (SP_TLS_INBOUND_MAX minus what is unread). */
size_t sp_tls_inbound_room(SSL *ssl);
/*
 * Appends ciphertext received from the network. All or nothing: SP_ERR_TOO_LARGE when
 * len exceeds sp_tls_inbound_room, SP_ERR_INVALID when ssl is not a memory connection.
 */
int sp_tls_feed(SSL *ssl, const void *bytes, size_t len);
/* Tells the connection the network side has closed: reads past the fed bytes see EOF. */
int sp_tls_feed_eof(SSL *ssl);
/* Ciphertext waiting to be sent (0 for a connection that is not a memory connection). */
size_t sp_tls_outbound_pending(SSL *ssl);
/*
 * Points *data at the ciphertext waiting to be sent (valid until the next call on ssl)
 * and sets *len; *len is 0 when there is none. SP_ERR_INVALID for a non-memory connection.
 */
int sp_tls_outbound_view(SSL *ssl, const uint8_t **data, size_t *len);
/* Drops the first n bytes of the outbound ciphertext (after they were sent). */
int sp_tls_outbound_consume(SSL *ssl, size_t n);

/*
 * Moves pending ciphertext from a to b and from b to a, as much as each side's inbound
 * room allows, and adds the number of bytes moved to *moved (may be NULL). Both must be
 * memory connections (SP_ERR_INVALID otherwise).
 */
int sp_tls_pump(SSL *a, SSL *b, size_t *moved);

/*
 * Runs the handshakes of two memory connections against each other until both have
 * finished, one has failed and the other has seen the failure, or nothing moves any
 * more. Each side's result and diag go into its outcome. When a side fails after its
 * peer believed the handshake done (a server refusing a client certificate), the alert
 * is delivered and the peer's outcome shows it. Returns 0 when both succeeded, else the
 * error of the side that failed first (the cause; the other side usually reports the
 * alert it received), or the stall error when neither failed but nothing moved.
 */
int sp_tls_handshake_pair(SSL *a, SSL *b, struct sp_tls_outcome *outcome_a,
                          struct sp_tls_outcome *outcome_b);

#endif
