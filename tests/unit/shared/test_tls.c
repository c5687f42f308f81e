/*
 * Unit tests for shared/tls.c. Every handshake here is a real OpenSSL handshake: in
 * memory through sp_tls_pump, and once over a loopback TCP connection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include "shared/keys.h"
#include "shared/tls.h"

/* 2026-01-01T00:00:00Z: the clock every test passes in. */
#define NOW INT64_C(1767225600)
#define YEAR INT64_C(31536000)

static const char *const alpn_sallyport[] = {SP_TLS_ALPN_SALLYPORT_1};
/* Wire forms for raw OpenSSL peers. */
static const unsigned char wire_sallyport[] = "\x0bsallyport/1";
static const unsigned char wire_http[] = "\x02h2\x08http/1.1";

static char tmpdir[64];

static int group_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/sp-tls-XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int group_teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static struct sp_tls_options tunnel_options(void)
{
	struct sp_tls_options opts;
	memset(&opts, 0, sizeof(opts));
	opts.alpn = alpn_sallyport;
	opts.alpn_count = 1;
	opts.now = NOW;
	return opts;
}

/* A connector (server) and a client, each with its key, context and memory connection. */
struct tunnel {
	EVP_PKEY *server_key;
	EVP_PKEY *client_key;
	SSL_CTX *server_ctx;
	SSL_CTX *client_ctx;
	SSL *server;
	SSL *client;
	uint8_t server_pin[SP_KEY_SPKI_DIGEST_LEN];
	uint8_t client_pin[SP_KEY_SPKI_DIGEST_LEN];
};

static void tunnel_keys(struct tunnel *t)
{
	memset(t, 0, sizeof(*t));
	assert_int_equal(sp_key_generate(&t->server_key), 0);
	assert_int_equal(sp_key_generate(&t->client_key), 0);
	assert_int_equal(sp_key_spki_sha256(t->server_key, t->server_pin), 0);
	assert_int_equal(sp_key_spki_sha256(t->client_key, t->client_pin), 0);
}

/* Contexts from the given options (NULL: defaults), connections, client pinned. */
static void tunnel_open(struct tunnel *t, const struct sp_tls_options *server_opts,
                        const struct sp_tls_options *client_opts)
{
	struct sp_tls_options defaults = tunnel_options();
	struct sp_diag d;
	assert_int_equal(sp_tls_server_ctx_new(t->server_key,
	                                       server_opts != NULL ? server_opts : &defaults,
	                                       &t->server_ctx, &d),
	                 0);
	assert_int_equal(sp_tls_client_ctx_new(t->client_key,
	                                       client_opts != NULL ? client_opts : &defaults,
	                                       &t->client_ctx, &d),
	                 0);
	assert_int_equal(sp_tls_conn_new_memory(t->server_ctx, &t->server), 0);
	assert_int_equal(sp_tls_conn_new_memory(t->client_ctx, &t->client), 0);
	assert_int_equal(sp_tls_set_expected_peer(t->client, t->server_pin), 0);
}

static void tunnel_new(struct tunnel *t)
{
	tunnel_keys(t);
	tunnel_open(t, NULL, NULL);
}

static void tunnel_free(struct tunnel *t)
{
	SSL_free(t->server);
	SSL_free(t->client);
	SSL_CTX_free(t->server_ctx);
	SSL_CTX_free(t->client_ctx);
	EVP_PKEY_free(t->server_key);
	EVP_PKEY_free(t->client_key);
	memset(t, 0, sizeof(*t));
}

/* A self-signed certificate for any key type, made with plain OpenSSL. */
static X509 *any_cert(EVP_PKEY *key)
{
	X509 *cert = X509_new();
	assert_non_null(cert);
	assert_int_equal(X509_set_version(cert, X509_VERSION_3), 1);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(cert), 7), 1);
	assert_non_null(ASN1_TIME_set(X509_getm_notBefore(cert), (time_t)(NOW - 3600)));
	assert_non_null(ASN1_TIME_set(X509_getm_notAfter(cert), (time_t)(NOW + YEAR)));
	X509_NAME *name = X509_get_subject_name(cert);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	                                            (const unsigned char *)"raw", -1, -1, 0),
	                 1);
	assert_int_equal(X509_set_issuer_name(cert, name), 1);
	assert_int_equal(X509_set_pubkey(cert, key), 1);
	assert_true(X509_sign(cert, key, EVP_sha256()) > 0);
	return cert;
}

/*
 * A context built with plain OpenSSL, for peers that break our rules. key may be NULL
 * (no certificate); alpn may be NULL (no ALPN: a client offers none, a server ignores it).
 */
static SSL_CTX *raw_ctx(int server, int max_version, EVP_PKEY *key, const unsigned char *alpn,
                        size_t alpn_len)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
	if (key != NULL) {
		X509 *cert = any_cert(key);
		assert_int_equal(SSL_CTX_use_certificate(ctx, cert), 1);
		assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
		X509_free(cert);
	}
	if (alpn != NULL && !server)
		assert_int_equal(SSL_CTX_set_alpn_protos(ctx, alpn, (unsigned int)alpn_len), 0);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	return ctx;
}

static void assert_contains(const char *haystack, const char *needle)
{
	if (strstr(haystack, needle) == NULL)
		fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

static void hex(const uint8_t *bytes, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", bytes[i]);
}

/* --- certificates ------------------------------------------------------------------ */

static void test_self_signed_cert_fields(void **state)
{
	(void)state;
	EVP_PKEY *key = NULL;
	X509 *cert = NULL, *other = NULL;
	assert_int_equal(sp_key_generate(&key), 0);
	assert_int_equal(sp_tls_self_signed_cert(key, "device-1", NOW, NOW + YEAR, &cert), 0);
	assert_int_equal(X509_get_version(cert), X509_VERSION_3);
	assert_int_equal(X509_get_signature_nid(cert), NID_ecdsa_with_SHA256);
	assert_int_equal(X509_verify(cert, key), 1);
	assert_int_equal(X509_NAME_cmp(X509_get_subject_name(cert), X509_get_issuer_name(cert)), 0);
	char cn[80];
	assert_int_equal(X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn,
	                                           sizeof(cn)),
	                 8);
	assert_string_equal(cn, "device-1");
	/* Exactly the dates passed in. */
	assert_int_equal(ASN1_TIME_cmp_time_t(X509_get0_notBefore(cert), (time_t)NOW), 0);
	assert_int_equal(ASN1_TIME_cmp_time_t(X509_get0_notAfter(cert), (time_t)(NOW + YEAR)), 0);
	/* v3 leaf: not a CA, signing only. */
	assert_int_equal(X509_check_ca(cert), 0);
	assert_true((X509_get_key_usage(cert) & KU_DIGITAL_SIGNATURE) != 0);
	assert_true((X509_get_key_usage(cert) & KU_KEY_CERT_SIGN) == 0);
	/* 16-byte positive serial, different each time. */
	BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
	assert_non_null(serial);
	assert_false(BN_is_negative(serial));
	assert_int_equal(BN_num_bytes(serial), 16);
	assert_int_equal(sp_tls_self_signed_cert(key, "device-1", NOW, NOW + YEAR, &other), 0);
	assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(cert),
	                                      X509_get0_serialNumber(other)),
	                     0);
	/* The certificate carries our key: same pin. */
	uint8_t a[32], b[32];
	assert_int_equal(sp_key_spki_sha256(key, a), 0);
	assert_int_equal(sp_key_spki_sha256(X509_get0_pubkey(cert), b), 0);
	assert_memory_equal(a, b, 32);
	BN_free(serial);
	X509_free(cert);
	X509_free(other);
	EVP_PKEY_free(key);
}

static void test_self_signed_cert_refuses_bad_input(void **state)
{
	(void)state;
	EVP_PKEY *key = NULL, *pub = NULL;
	X509 *cert = (X509 *)&cert; /* must come back NULL */
	char long_name[SP_TLS_COMMON_NAME_MAX + 2];
	memset(long_name, 'a', sizeof(long_name));
	long_name[SP_TLS_COMMON_NAME_MAX + 1] = '\0';

	assert_int_equal(sp_key_generate(&key), 0);
	assert_int_equal(sp_tls_self_signed_cert(NULL, "x", NOW, NOW + 1, &cert), SP_ERR_INVALID);
	assert_null(cert);
	assert_int_equal(sp_tls_self_signed_cert(key, NULL, NOW, NOW + 1, &cert), SP_ERR_INVALID);
	assert_int_equal(sp_tls_self_signed_cert(key, "", NOW, NOW + 1, &cert), SP_ERR_INVALID);
	assert_int_equal(sp_tls_self_signed_cert(key, long_name, NOW, NOW + 1, &cert),
	                 SP_ERR_INVALID);
	long_name[SP_TLS_COMMON_NAME_MAX] = '\0'; /* exactly the maximum is fine */
	assert_int_equal(sp_tls_self_signed_cert(key, long_name, NOW, NOW + 1, &cert), 0);
	X509_free(cert);
	assert_int_equal(sp_tls_self_signed_cert(key, "line\nbreak", NOW, NOW + 1, &cert),
	                 SP_ERR_INVALID);
	assert_int_equal(sp_tls_self_signed_cert(key, "bad \xff utf8", NOW, NOW + 1, &cert),
	                 SP_ERR_INVALID);
	assert_null(cert);
	assert_int_equal(sp_tls_self_signed_cert(key, "caf\xc3\xa9", NOW, NOW + 1, &cert), 0);
	X509_free(cert);
	/* Dates: empty or reversed interval, before 1970, after 9999. */
	assert_int_equal(sp_tls_self_signed_cert(key, "x", NOW, NOW, &cert), SP_ERR_INVALID);
	assert_int_equal(sp_tls_self_signed_cert(key, "x", NOW, NOW - 1, &cert), SP_ERR_INVALID);
	assert_int_equal(sp_tls_self_signed_cert(key, "x", -1, NOW, &cert), SP_ERR_INVALID);
	assert_int_equal(sp_tls_self_signed_cert(key, "x", NOW, INT64_C(253402300800), &cert),
	                 SP_ERR_INVALID);
	assert_int_equal(sp_tls_self_signed_cert(key, "x", 0, INT64_C(253402300799), &cert), 0);
	X509_free(cert);
	/* A public key cannot sign; other curves and types are not ours. */
	char *pem = NULL;
	size_t pem_len = 0;
	assert_int_equal(sp_key_public_pem(key, &pem, &pem_len), 0);
	assert_int_equal(sp_key_from_pem(pem, pem_len, 1, &pub, NULL), 0);
	free(pem);
	assert_int_equal(sp_tls_self_signed_cert(pub, "x", NOW, NOW + 1, &cert), SP_ERR_INVALID);
	EVP_PKEY *p384 = EVP_EC_gen("P-384");
	assert_int_equal(sp_tls_self_signed_cert(p384, "x", NOW, NOW + 1, &cert),
	                 SP_ERR_UNSUPPORTED);
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	assert_int_equal(sp_tls_self_signed_cert(ed, "x", NOW, NOW + 1, &cert), SP_ERR_UNSUPPORTED);
	assert_null(cert);
	EVP_PKEY_free(ed);
	EVP_PKEY_free(p384);
	EVP_PKEY_free(pub);
	EVP_PKEY_free(key);
}

/* --- contexts ---------------------------------------------------------------------- */

static void test_ctx_new_refuses_bad_options(void **state)
{
	(void)state;
	EVP_PKEY *key = NULL, *other = NULL;
	SSL_CTX *ctx = (SSL_CTX *)&ctx;
	struct sp_diag d;
	struct sp_tls_options opts = tunnel_options();
	assert_int_equal(sp_key_generate(&key), 0);
	assert_int_equal(sp_key_generate(&other), 0);

	assert_int_equal(sp_tls_server_ctx_new(key, NULL, &ctx, &d), SP_ERR_INVALID);
	assert_null(ctx);
	assert_int_equal(sp_tls_client_ctx_new(NULL, &opts, &ctx, &d), SP_ERR_INVALID);

	opts.alpn_count = 0;
	assert_int_equal(sp_tls_server_ctx_new(key, &opts, &ctx, &d), SP_ERR_INVALID);
	assert_contains(d.message, "options.alpn");
	opts.alpn = NULL;
	opts.alpn_count = 1;
	assert_int_equal(sp_tls_client_ctx_new(key, &opts, &ctx, &d), SP_ERR_INVALID);

	const char *const nine[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
	opts.alpn = nine;
	opts.alpn_count = 9;
	assert_int_equal(sp_tls_server_ctx_new(key, &opts, &ctx, &d), SP_ERR_TOO_LARGE);
	opts.alpn_count = 8;
	assert_int_equal(sp_tls_server_ctx_new(key, &opts, &ctx, &d), 0);
	SSL_CTX_free(ctx);

	char long_name[SP_TLS_ALPN_NAME_MAX + 2];
	memset(long_name, 'p', sizeof(long_name));
	long_name[SP_TLS_ALPN_NAME_MAX + 1] = '\0';
	const char *const bad_names[][2] = {
		{"sallyport/1", ""}, {"sallyport/1", long_name}, {"sallyport/1", "with space"},
		{"sallyport/1", "tab\t"}, {"sallyport/1", NULL},
	};
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
		opts.alpn = bad_names[i];
		opts.alpn_count = 2;
		assert_int_equal(sp_tls_client_ctx_new(key, &opts, &ctx, &d), SP_ERR_INVALID);
		assert_contains(d.message, "options.alpn[1]");
		assert_null(ctx);
	}
	opts = tunnel_options();

	/* Keys: other curves, public halves. */
	EVP_PKEY *p384 = EVP_EC_gen("P-384");
	assert_int_equal(sp_tls_server_ctx_new(p384, &opts, &ctx, &d), SP_ERR_UNSUPPORTED);
	assert_contains(d.message, "secp384r1");
	EVP_PKEY_free(p384);
	char *pem = NULL;
	size_t pem_len = 0;
	EVP_PKEY *pub = NULL;
	assert_int_equal(sp_key_public_pem(key, &pem, &pem_len), 0);
	assert_int_equal(sp_key_from_pem(pem, pem_len, 1, &pub, NULL), 0);
	free(pem);
	assert_int_equal(sp_tls_client_ctx_new(pub, &opts, &ctx, &d), SP_ERR_INVALID);
	assert_contains(d.message, "private");
	EVP_PKEY_free(pub);

	/* A P-256 key spelled with explicit curve parameters is not accepted either. */
	EVP_PKEY *explicit_key = NULL;
	assert_int_equal(sp_key_generate(&explicit_key), 0);
	assert_int_equal(EVP_PKEY_set_utf8_string_param(explicit_key, OSSL_PKEY_PARAM_EC_ENCODING,
	                                                OSSL_PKEY_EC_ENCODING_EXPLICIT),
	                 1);
	assert_int_equal(sp_tls_server_ctx_new(explicit_key, &opts, &ctx, &d), SP_ERR_UNSUPPORTED);
	assert_contains(d.message, "explicit");
	EVP_PKEY_free(explicit_key);

	/* A certificate for another key. */
	X509 *cert = NULL;
	assert_int_equal(sp_tls_self_signed_cert(other, "other", NOW, NOW + YEAR, &cert), 0);
	opts.certificate = cert;
	assert_int_equal(sp_tls_server_ctx_new(key, &opts, &ctx, &d), SP_ERR_INVALID);
	assert_contains(d.message, "options.certificate");
	X509_free(cert);
	opts.certificate = NULL;

	/* A clock that cannot be put in a certificate; a name that cannot either. */
	opts.now = -5;
	assert_int_equal(sp_tls_server_ctx_new(key, &opts, &ctx, &d), SP_ERR_INVALID);
	assert_contains(d.message, "options.now");
	opts.now = NOW;
	opts.common_name = "";
	assert_int_equal(sp_tls_server_ctx_new(key, &opts, &ctx, &d), SP_ERR_INVALID);
	assert_contains(d.message, "common_name");
	assert_null(ctx);

	EVP_PKEY_free(other);
	EVP_PKEY_free(key);
	/* Nothing is left on the error queue for the caller to trip over. */
	assert_int_equal(ERR_peek_error(), 0);
}

/* --- tunnel handshakes ------------------------------------------------------------- */

static void test_pinned_handshake_succeeds_and_both_see_peer(void **state)
{
	(void)state;
	struct tunnel t;
	struct sp_tls_outcome c, s;
	uint8_t digest[32];
	EVP_PKEY *peer = (EVP_PKEY *)&peer;
	tunnel_new(&t);

	/* Before the handshake nothing is known about the peer. */
	assert_int_equal(sp_tls_peer_key(t.client, &peer), SP_ERR_INVALID);
	assert_null(peer);
	assert_int_equal(sp_tls_peer_spki_sha256(t.server, digest), SP_ERR_INVALID);

	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), 0);
	assert_int_equal(c.result, 0);
	assert_int_equal(s.result, 0);
	/* Each side sees the other's key digest. */
	assert_int_equal(sp_tls_peer_spki_sha256(t.client, digest), 0);
	assert_memory_equal(digest, t.server_pin, 32);
	assert_int_equal(sp_tls_peer_spki_sha256(t.server, digest), 0);
	assert_memory_equal(digest, t.client_pin, 32);
	assert_int_equal(sp_tls_peer_key(t.server, &peer), 0);
	assert_int_equal(EVP_PKEY_eq(peer, t.client_key), 1);
	EVP_PKEY_free(peer);

	/* TLS 1.3, one of our suites, our ALPN, a full handshake. */
	assert_int_equal(SSL_version(t.client), TLS1_3_VERSION);
	const char *suite = SSL_get_cipher_name(t.server);
	assert_true(strcmp(suite, "TLS_AES_128_GCM_SHA256") == 0 ||
	            strcmp(suite, "TLS_CHACHA20_POLY1305_SHA256") == 0 ||
	            strcmp(suite, "TLS_AES_256_GCM_SHA384") == 0);
	char proto[SP_TLS_ALPN_NAME_MAX + 1];
	assert_int_equal(sp_tls_selected_protocol(t.client, proto), 0);
	assert_string_equal(proto, "sallyport/1");
	assert_int_equal(sp_tls_selected_protocol(t.server, proto), 0);
	assert_string_equal(proto, "sallyport/1");
	assert_int_equal(SSL_session_reused(t.client), 0);
	/* Stepping a finished handshake is harmless. */
	assert_int_equal(sp_tls_handshake_step(t.client, NULL), 0);
	tunnel_free(&t);
}

static void test_no_resumption_is_possible(void **state)
{
	(void)state;
	struct tunnel t;
	struct sp_tls_outcome c, s;
	tunnel_new(&t);
	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), 0);
	/* The server sent no ticket, so the client holds nothing it could resume. */
	uint8_t byte;
	assert_true(SSL_read(t.client, &byte, 1) <= 0);
	assert_int_equal(sp_tls_error(t.client, -1, NULL), SP_ERR_AGAIN);
	SSL_SESSION *session = SSL_get1_session(t.client);
	assert_non_null(session);
	assert_int_equal(SSL_SESSION_is_resumable(session), 0);

	/* Offering that session anyway still gives a full, pinned handshake. */
	SSL *client2 = NULL, *server2 = NULL;
	assert_int_equal(sp_tls_conn_new_memory(t.client_ctx, &client2), 0);
	assert_int_equal(sp_tls_conn_new_memory(t.server_ctx, &server2), 0);
	assert_int_equal(sp_tls_set_expected_peer(client2, t.server_pin), 0);
	assert_int_equal(SSL_set_session(client2, session), 1);
	assert_int_equal(sp_tls_handshake_pair(client2, server2, &c, &s), 0);
	assert_int_equal(SSL_session_reused(client2), 0);
	SSL_SESSION_free(session);
	SSL_free(client2);
	SSL_free(server2);
	tunnel_free(&t);
}

static void test_wrong_pin_is_peer_mismatch(void **state)
{
	(void)state;
	struct tunnel t;
	struct sp_tls_outcome c, s;
	uint8_t wrong[32];
	char expected_hex[65], actual_hex[65];
	tunnel_new(&t);
	memcpy(wrong, t.server_pin, 32);
	wrong[31] ^= 0x01;
	assert_int_equal(sp_tls_set_expected_peer(t.client, wrong), 0);

	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), SP_ERR_PEER_MISMATCH);
	assert_int_equal(c.result, SP_ERR_PEER_MISMATCH);
	hex(wrong, 32, expected_hex);
	hex(t.server_pin, 32, actual_hex);
	assert_contains(c.diag.message, expected_hex);
	assert_contains(c.diag.message, actual_hex);
	assert_contains(c.diag.message, "pin");
	/* The server hears the client's alert. */
	assert_int_equal(s.result, SP_ERR_TLS);
	assert_contains(s.diag.message, "bad certificate");
	/* No peer identity comes out of a failed handshake. */
	EVP_PKEY *peer = NULL;
	assert_int_equal(sp_tls_peer_key(t.client, &peer), SP_ERR_INVALID);
	assert_null(peer);
	assert_int_equal(ERR_peek_error(), 0);
	tunnel_free(&t);
}

static void test_client_without_pin_is_refused(void **state)
{
	(void)state;
	struct tunnel t;
	struct sp_tls_outcome c, s;
	tunnel_keys(&t);
	struct sp_tls_options opts = tunnel_options();
	assert_int_equal(sp_tls_server_ctx_new(t.server_key, &opts, &t.server_ctx, NULL), 0);
	assert_int_equal(sp_tls_client_ctx_new(t.client_key, &opts, &t.client_ctx, NULL), 0);
	assert_int_equal(sp_tls_conn_new_memory(t.server_ctx, &t.server), 0);
	assert_int_equal(sp_tls_conn_new_memory(t.client_ctx, &t.client), 0);
	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), SP_ERR_INVALID);
	assert_contains(c.diag.message, "sp_tls_set_expected_peer");
	assert_int_equal(s.result, SP_ERR_TLS);
	tunnel_free(&t);
}

static void test_server_may_pin_the_client(void **state)
{
	(void)state;
	struct tunnel t;
	struct sp_tls_outcome c, s;
	uint8_t wrong[32];

	tunnel_new(&t);
	assert_int_equal(sp_tls_set_expected_peer(t.server, t.client_pin), 0);
	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), 0);
	SSL_free(t.server);
	SSL_free(t.client);

	/* A different device: the server refuses after the client thought it was done. */
	assert_int_equal(sp_tls_conn_new_memory(t.server_ctx, &t.server), 0);
	assert_int_equal(sp_tls_conn_new_memory(t.client_ctx, &t.client), 0);
	assert_int_equal(sp_tls_set_expected_peer(t.client, t.server_pin), 0);
	memset(wrong, 0xab, sizeof(wrong));
	assert_int_equal(sp_tls_set_expected_peer(t.server, wrong), 0);
	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), SP_ERR_PEER_MISMATCH);
	assert_int_equal(s.result, SP_ERR_PEER_MISMATCH);
	assert_contains(s.diag.message, "abababab");
	assert_int_equal(c.result, SP_ERR_TLS);
	assert_contains(c.diag.message, "bad certificate");
	tunnel_free(&t);
}

static void test_client_without_certificate_is_refused(void **state)
{
	(void)state;
	struct tunnel t;
	struct sp_tls_outcome c, s;
	tunnel_keys(&t);
	tunnel_open(&t, NULL, NULL);
	SSL_free(t.client);
	SSL_CTX *raw = raw_ctx(0, TLS1_3_VERSION, NULL, wire_sallyport, sizeof(wire_sallyport) - 1);
	assert_int_equal(sp_tls_conn_new_memory(raw, &t.client), 0);

	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), SP_ERR_TLS);
	assert_int_equal(s.result, SP_ERR_TLS);
	assert_contains(s.diag.message, "did not return a certificate");
	/* The client believed itself done; the alert reaches it afterwards. */
	assert_int_equal(c.result, SP_ERR_TLS);
	assert_contains(c.diag.message, "certificate required");
	SSL_CTX_free(raw);
	tunnel_free(&t);
}

/* A raw client presenting `key` in a certificate against our server. */
static void expect_client_key_refused(EVP_PKEY *key, const char *described)
{
	struct tunnel t;
	struct sp_tls_outcome c, s;
	tunnel_keys(&t);
	tunnel_open(&t, NULL, NULL);
	SSL_free(t.client);
	SSL_CTX *raw = raw_ctx(0, TLS1_3_VERSION, key, wire_sallyport, sizeof(wire_sallyport) - 1);
	assert_int_equal(sp_tls_conn_new_memory(raw, &t.client), 0);
	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), SP_ERR_BAD_ALGORITHM);
	assert_int_equal(s.result, SP_ERR_BAD_ALGORITHM);
	assert_contains(s.diag.message, described);
	assert_contains(s.diag.message, "P-256");
	assert_contains(c.diag.message, "bad certificate");
	SSL_CTX_free(raw);
	tunnel_free(&t);
}

static void test_client_key_not_p256_is_refused(void **state)
{
	(void)state;
	EVP_PKEY *p384 = EVP_EC_gen("P-384");
	EVP_PKEY *rsa = EVP_RSA_gen(2048);
	assert_non_null(p384);
	assert_non_null(rsa);
	expect_client_key_refused(p384, "EC secp384r1");
	expect_client_key_refused(rsa, "RSA-2048");
	EVP_PKEY_free(p384);
	EVP_PKEY_free(rsa);
}

static void test_server_key_not_p256_is_refused_by_client(void **state)
{
	(void)state;
	struct tunnel t;
	struct sp_tls_outcome c, s;
	EVP_PKEY *p384 = EVP_EC_gen("P-384");
	tunnel_keys(&t);
	tunnel_open(&t, NULL, NULL);
	SSL_free(t.server);
	/* A raw server with a P-384 key that selects our ALPN is still refused by key type. */
	SSL_CTX *raw = raw_ctx(1, TLS1_3_VERSION, p384, NULL, 0);
	assert_int_equal(sp_tls_conn_new_memory(raw, &t.server), 0);
	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), SP_ERR_BAD_ALGORITHM);
	assert_contains(c.diag.message, "EC secp384r1");
	SSL_CTX_free(raw);
	EVP_PKEY_free(p384);
	tunnel_free(&t);
}

static void test_tls12_peers_are_refused(void **state)
{
	(void)state;
	struct tunnel t;
	struct sp_tls_outcome c, s;
	EVP_PKEY *raw_key = NULL;
	assert_int_equal(sp_key_generate(&raw_key), 0);

	/* A client that stops at TLS 1.2. */
	tunnel_keys(&t);
	tunnel_open(&t, NULL, NULL);
	SSL_free(t.client);
	SSL_CTX *raw = raw_ctx(0, TLS1_2_VERSION, raw_key, wire_sallyport,
	                       sizeof(wire_sallyport) - 1);
	assert_int_equal(sp_tls_conn_new_memory(raw, &t.client), 0);
	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), SP_ERR_TLS);
	assert_int_equal(s.result, SP_ERR_TLS);
	assert_string_equal(s.diag.message, "TLS handshake failed: unsupported protocol (Sallyport "
	                                    "tunnels require TLS 1.3)");
	assert_contains(c.diag.message, "protocol version");
	SSL_CTX_free(raw);
	tunnel_free(&t);

	/* A server that stops at TLS 1.2. */
	tunnel_keys(&t);
	tunnel_open(&t, NULL, NULL);
	SSL_free(t.server);
	raw = raw_ctx(1, TLS1_2_VERSION, raw_key, NULL, 0);
	assert_int_equal(sp_tls_conn_new_memory(raw, &t.server), 0);
	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), SP_ERR_TLS);
	assert_true(strstr(c.diag.message, "protocol") != NULL);
	assert_int_equal(s.result, SP_ERR_TLS);
	SSL_CTX_free(raw);
	tunnel_free(&t);
	EVP_PKEY_free(raw_key);
}

static void test_alpn_without_common_protocol_is_refused(void **state)
{
	(void)state;
	struct tunnel t;
	struct sp_tls_outcome c, s;
	EVP_PKEY *raw_key = NULL;
	assert_int_equal(sp_key_generate(&raw_key), 0);

	/* A client offering only HTTP protocols. */
	tunnel_keys(&t);
	tunnel_open(&t, NULL, NULL);
	SSL_free(t.client);
	SSL_CTX *raw = raw_ctx(0, TLS1_3_VERSION, raw_key, wire_http, sizeof(wire_http) - 1);
	assert_int_equal(sp_tls_conn_new_memory(raw, &t.client), 0);
	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), SP_ERR_TLS);
	assert_int_equal(s.result, SP_ERR_TLS);
	assert_string_equal(s.diag.message, "no common application protocol: client offered "
	                                    "h2,http/1.1, we accept sallyport/1");
	assert_contains(c.diag.message, "no application protocol");
	SSL_CTX_free(raw);
	tunnel_free(&t);

	/* A client offering no ALPN at all. */
	tunnel_keys(&t);
	tunnel_open(&t, NULL, NULL);
	SSL_free(t.client);
	raw = raw_ctx(0, TLS1_3_VERSION, raw_key, NULL, 0);
	assert_int_equal(sp_tls_conn_new_memory(raw, &t.client), 0);
	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), SP_ERR_TLS);
	assert_string_equal(s.diag.message,
	                    "client offered no application protocol (ALPN); we accept sallyport/1");
	assert_contains(c.diag.message, "no application protocol");
	SSL_CTX_free(raw);
	tunnel_free(&t);

	/* A server that ignores ALPN (selects nothing): our client refuses it. */
	tunnel_keys(&t);
	tunnel_open(&t, NULL, NULL);
	SSL_CTX_free(t.server_ctx);
	SSL_free(t.server);
	t.server_ctx = raw_ctx(1, TLS1_3_VERSION, t.server_key, NULL, 0);
	assert_int_equal(sp_tls_conn_new_memory(t.server_ctx, &t.server), 0);
	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), SP_ERR_TLS);
	assert_string_equal(c.diag.message, "server selected no application protocol of ours "
	                                    "(ALPN); we offered sallyport/1");
	tunnel_free(&t);

	/* Two Sallyport versions that share nothing. */
	const char *const v2[] = {"sallyport/2"};
	struct sp_tls_options server_opts = tunnel_options();
	server_opts.alpn = v2;
	tunnel_keys(&t);
	tunnel_open(&t, &server_opts, NULL);
	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), SP_ERR_TLS);
	assert_contains(s.diag.message, "client offered sallyport/1, we accept sallyport/2");
	tunnel_free(&t);

	/* The server's preference wins when several are shared. */
	const char *const server_pref[] = {"sallyport/2", "sallyport/1"};
	const char *const client_pref[] = {"sallyport/1", "sallyport/2"};
	struct sp_tls_options client_opts = tunnel_options();
	server_opts.alpn = server_pref;
	server_opts.alpn_count = 2;
	client_opts.alpn = client_pref;
	client_opts.alpn_count = 2;
	tunnel_keys(&t);
	tunnel_open(&t, &server_opts, &client_opts);
	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), 0);
	char proto[SP_TLS_ALPN_NAME_MAX + 1];
	assert_int_equal(sp_tls_selected_protocol(t.client, proto), 0);
	assert_string_equal(proto, "sallyport/2");
	tunnel_free(&t);
	EVP_PKEY_free(raw_key);
}

static void test_certificate_dates_are_ignored(void **state)
{
	(void)state;
	struct tunnel t;
	struct sp_tls_outcome c, s;
	X509 *expired = NULL, *future = NULL;
	tunnel_keys(&t);
	/* The server's certificate expired a year ago; the client's starts in ten years. */
	assert_int_equal(sp_tls_self_signed_cert(t.server_key, "old", NOW - 2 * YEAR, NOW - YEAR,
	                                         &expired),
	                 0);
	assert_int_equal(sp_tls_self_signed_cert(t.client_key, "new", NOW + 10 * YEAR,
	                                         NOW + 11 * YEAR, &future),
	                 0);
	struct sp_tls_options server_opts = tunnel_options();
	struct sp_tls_options client_opts = tunnel_options();
	server_opts.certificate = expired;
	client_opts.certificate = future;
	tunnel_open(&t, &server_opts, &client_opts);
	X509_free(expired);
	X509_free(future);
	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), 0);
	uint8_t digest[32];
	assert_int_equal(sp_tls_peer_spki_sha256(t.client, digest), 0);
	assert_memory_equal(digest, t.server_pin, 32);
	assert_int_equal(sp_tls_peer_spki_sha256(t.server, digest), 0);
	assert_memory_equal(digest, t.client_pin, 32);
	tunnel_free(&t);
}

/* --- data -------------------------------------------------------------------------- */

static void fill_pattern(uint8_t *p, size_t n, uint32_t seed)
{
	uint32_t x = seed;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (uint8_t)x;
	}
}

static void sha256(const uint8_t *p, size_t n, uint8_t out[32])
{
	unsigned int len = 0;
	assert_int_equal(EVP_Digest(p, n, out, &len, EVP_sha256(), NULL), 1);
}

static void test_one_mebibyte_round_trip(void **state)
{
	(void)state;
	const size_t total = 1024 * 1024;
	struct tunnel t;
	struct sp_tls_outcome c, s;
	uint8_t *sent = malloc(total), *at_server = malloc(total), *echoed = malloc(total);
	uint8_t buf[20000];
	size_t written = 0, server_got = 0, client_got = 0;
	size_t chunk_no = 0;
	assert_non_null(sent);
	assert_non_null(at_server);
	assert_non_null(echoed);
	fill_pattern(sent, total, 0x5a11f0u);
	tunnel_new(&t);
	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), 0);

	for (int rounds = 0; client_got < total; rounds++) {
		assert_true(rounds < 100000);
		/* Chunks of 1..16384 bytes, several records at once now and then. */
		if (written < total) {
			size_t n = 1 + (chunk_no * 7919) % 16384;
			if (n > total - written)
				n = total - written;
			int r = sp_tls_write(t.client, sent + written, n, NULL);
			if (r == 0) {
				written += n;
				chunk_no++;
			} else {
				assert_int_equal(r, SP_ERR_AGAIN);
			}
		}
		assert_int_equal(sp_tls_pump(t.client, t.server, NULL), 0);
		/* The server echoes what it reads, through the wrappers. */
		for (;;) {
			size_t n = 0;
			int r = sp_tls_read(t.server, buf, sizeof(buf), &n, NULL);
			if (r == SP_ERR_AGAIN)
				break;
			assert_int_equal(r, 0);
			assert_true(server_got + n <= total);
			memcpy(at_server + server_got, buf, n);
			server_got += n;
			assert_int_equal(sp_tls_write(t.server, buf, n, NULL), 0);
		}
		assert_int_equal(sp_tls_pump(t.client, t.server, NULL), 0);
		/* The client reads with plain OpenSSL calls and sp_tls_error. */
		for (;;) {
			int n = SSL_read(t.client, buf, sizeof(buf));
			if (n <= 0) {
				assert_int_equal(sp_tls_error(t.client, n, NULL), SP_ERR_AGAIN);
				break;
			}
			assert_true(client_got + (size_t)n <= total);
			memcpy(echoed + client_got, buf, (size_t)n);
			client_got += (size_t)n;
		}
	}
	uint8_t want[32], got_server[32], got_client[32];
	sha256(sent, total, want);
	sha256(at_server, server_got, got_server);
	sha256(echoed, client_got, got_client);
	assert_int_equal(server_got, total);
	assert_memory_equal(want, got_server, 32);
	assert_memory_equal(want, got_client, 32);

	/* A clean close: the server reads close_notify. */
	assert_int_equal(SSL_shutdown(t.client), 0);
	assert_int_equal(sp_tls_pump(t.client, t.server, NULL), 0);
	struct sp_diag d;
	size_t n = 99;
	assert_int_equal(sp_tls_read(t.server, buf, sizeof(buf), &n, &d), SP_ERR_TLS);
	assert_int_equal(n, 0);
	assert_contains(d.message, "closed by the peer");
	assert_true((SSL_get_shutdown(t.server) & SSL_RECEIVED_SHUTDOWN) != 0);
	free(sent);
	free(at_server);
	free(echoed);
	tunnel_free(&t);
}

static void test_write_bounds_outbound_buffer(void **state)
{
	(void)state;
	struct tunnel t;
	struct sp_tls_outcome c, s;
	struct sp_diag d;
	uint8_t *data = calloc(1, SP_TLS_OUTBOUND_MAX + 1);
	uint8_t buf[100];
	size_t got = 7;
	assert_non_null(data);
	tunnel_new(&t);
	assert_int_equal(sp_tls_handshake_pair(t.client, t.server, &c, &s), 0);

	assert_int_equal(sp_tls_write(t.client, data, SP_TLS_OUTBOUND_MAX + 1, &d),
	                 SP_ERR_TOO_LARGE);
	assert_contains(d.message, "at most");
	assert_int_equal(sp_tls_outbound_pending(t.client), 0);
	assert_int_equal(sp_tls_write(t.client, data, 200 * 1024, NULL), 0);
	size_t pending = sp_tls_outbound_pending(t.client);
	assert_true(pending > 200 * 1024);
	/* Another 100 KiB would pass the bound: flush first. */
	assert_int_equal(sp_tls_write(t.client, data, 100 * 1024, NULL), SP_ERR_AGAIN);
	assert_int_equal(sp_tls_outbound_pending(t.client), pending);
	assert_int_equal(sp_tls_write(t.client, data, 0, NULL), 0);
	assert_int_equal(sp_tls_outbound_consume(t.client, pending), 0);
	assert_int_equal(sp_tls_write(t.client, data, 100 * 1024, NULL), 0);

	/* Argument checks. */
	assert_int_equal(sp_tls_write(t.client, NULL, 1, NULL), SP_ERR_INVALID);
	assert_int_equal(sp_tls_write(NULL, data, 1, NULL), SP_ERR_INVALID);
	assert_int_equal(sp_tls_read(t.server, buf, 0, &got, NULL), SP_ERR_INVALID);
	assert_int_equal(got, 0);
	assert_int_equal(sp_tls_read(t.server, NULL, 1, &got, NULL), SP_ERR_INVALID);
	/* The server got the tail of a stream whose head was dropped: a record error. */
	assert_int_equal(sp_tls_pump(t.client, t.server, NULL), 0);
	assert_int_equal(sp_tls_read(t.server, buf, sizeof(buf), &got, &d), SP_ERR_TLS);
	assert_contains(d.message, "TLS connection failed");
	free(data);
	tunnel_free(&t);
}

/* --- memory I/O edges -------------------------------------------------------------- */

static void test_memory_io_bounds_and_misuse(void **state)
{
	(void)state;
	struct tunnel t;
	struct sp_diag d;
	static uint8_t big[SP_TLS_INBOUND_MAX + 1];
	const uint8_t *view;
	size_t len;
	tunnel_new(&t);

	/* Inbound is capped, all or nothing. */
	assert_int_equal(sp_tls_inbound_room(t.server), SP_TLS_INBOUND_MAX);
	assert_int_equal(sp_tls_feed(t.server, big, sizeof(big)), SP_ERR_TOO_LARGE);
	assert_int_equal(sp_tls_inbound_room(t.server), SP_TLS_INBOUND_MAX);
	assert_int_equal(sp_tls_feed(t.server, big, 100), 0);
	assert_int_equal(sp_tls_inbound_room(t.server), SP_TLS_INBOUND_MAX - 100);
	assert_int_equal(sp_tls_feed(t.server, big, SP_TLS_INBOUND_MAX - 99), SP_ERR_TOO_LARGE);
	assert_int_equal(sp_tls_feed(t.server, NULL, 0), 0);
	assert_int_equal(sp_tls_feed(t.server, NULL, 1), SP_ERR_INVALID);
	/* 100 zero bytes are not a ClientHello. */
	assert_int_equal(sp_tls_handshake_step(t.server, &d), SP_ERR_TLS);
	assert_contains(d.message, "TLS handshake failed");
	assert_int_equal(ERR_peek_error(), 0);

	/* The client's ClientHello waits in its outbound buffer until consumed. */
	assert_int_equal(sp_tls_outbound_view(t.client, &view, &len), 0);
	assert_int_equal(len, 0);
	assert_int_equal(sp_tls_handshake_step(t.client, &d), SP_ERR_AGAIN);
	size_t pending = sp_tls_outbound_pending(t.client);
	assert_true(pending > 100);
	assert_int_equal(sp_tls_outbound_view(t.client, &view, &len), 0);
	assert_int_equal(len, pending);
	assert_int_equal(view[0], 0x16); /* handshake record */
	assert_int_equal(sp_tls_outbound_consume(t.client, pending + 1), SP_ERR_INVALID);
	assert_int_equal(sp_tls_outbound_consume(t.client, 5), 0);
	assert_int_equal(sp_tls_outbound_pending(t.client), pending - 5);
	assert_int_equal(sp_tls_outbound_consume(t.client, pending - 5), 0);
	assert_int_equal(sp_tls_outbound_view(t.client, &view, &len), 0);
	assert_int_equal(len, 0);

	/* The network closes before the server answers. */
	assert_int_equal(sp_tls_feed_eof(t.client), 0);
	assert_int_equal(sp_tls_handshake_step(t.client, &d), SP_ERR_TLS);
	assert_contains(d.message, "TLS handshake failed");

	/* A connection on a socket is not a memory connection. */
	SSL *fd_conn = SSL_new(t.client_ctx);
	assert_int_equal(SSL_set_fd(fd_conn, 0), 1);
	assert_int_equal(sp_tls_feed(fd_conn, big, 1), SP_ERR_INVALID);
	assert_int_equal(sp_tls_feed_eof(fd_conn), SP_ERR_INVALID);
	assert_int_equal(sp_tls_inbound_room(fd_conn), 0);
	assert_int_equal(sp_tls_outbound_pending(fd_conn), 0);
	assert_int_equal(sp_tls_outbound_view(fd_conn, &view, &len), SP_ERR_INVALID);
	assert_int_equal(sp_tls_outbound_consume(fd_conn, 0), SP_ERR_INVALID);
	assert_int_equal(sp_tls_pump(fd_conn, t.server, NULL), SP_ERR_INVALID);
	assert_int_equal(sp_tls_pump(t.server, NULL, NULL), SP_ERR_INVALID);
	SSL_free(fd_conn);

	/* Argument checks. */
	SSL *conn = (SSL *)&conn;
	assert_int_equal(sp_tls_conn_new_memory(NULL, &conn), SP_ERR_INVALID);
	assert_null(conn);
	assert_int_equal(sp_tls_set_expected_peer(NULL, t.server_pin), SP_ERR_INVALID);
	assert_int_equal(sp_tls_set_expected_peer(t.client, NULL), SP_ERR_INVALID);
	assert_int_equal(sp_tls_handshake_step(NULL, NULL), SP_ERR_INVALID);
	assert_int_equal(sp_tls_error(NULL, -1, NULL), SP_ERR_INVALID);
	assert_int_equal(sp_tls_error(t.client, 1, NULL), 0);
	char proto[SP_TLS_ALPN_NAME_MAX + 1];
	assert_int_equal(sp_tls_selected_protocol(t.client, proto), SP_ERR_NOT_FOUND);
	assert_string_equal(proto, "");
	tunnel_free(&t);
}

static void test_stalled_pair_is_reported(void **state)
{
	(void)state;
	struct tunnel t;
	struct sp_tls_outcome a, b;
	tunnel_new(&t);
	/* Two servers wait for each other's ClientHello forever. */
	SSL *server2 = NULL;
	assert_int_equal(sp_tls_conn_new_memory(t.server_ctx, &server2), 0);
	assert_int_equal(sp_tls_handshake_pair(t.server, server2, &a, &b), SP_ERR_TLS);
	assert_contains(a.diag.message, "stalled");
	assert_contains(b.diag.message, "stalled");
	SSL_free(server2);
	tunnel_free(&t);
}

/* --- controller HTTPS -------------------------------------------------------------- */

static void write_cert_pem(const char *path, X509 *cert)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, cert), 1);
	assert_int_equal(fclose(f), 0);
}

static void test_https_ctx_from_files(void **state)
{
	(void)state;
	char cert_path[128], key_path[128], other_cert_path[128], junk_path[128];
	EVP_PKEY *key = NULL, *other = NULL;
	X509 *cert = NULL, *other_cert = NULL;
	SSL_CTX *ctx = NULL;
	struct sp_diag d;
	snprintf(cert_path, sizeof(cert_path), "%s/https.crt", tmpdir);
	snprintf(key_path, sizeof(key_path), "%s/https.key", tmpdir);
	snprintf(other_cert_path, sizeof(other_cert_path), "%s/other.crt", tmpdir);
	snprintf(junk_path, sizeof(junk_path), "%s/junk.crt", tmpdir);
	assert_int_equal(sp_key_generate(&key), 0);
	assert_int_equal(sp_key_generate(&other), 0);
	assert_int_equal(sp_key_save_private(key, key_path, NULL), 0);
	assert_int_equal(sp_tls_self_signed_cert(key, "controller", NOW, NOW + YEAR, &cert), 0);
	assert_int_equal(sp_tls_self_signed_cert(other, "other", NOW, NOW + YEAR, &other_cert), 0);
	write_cert_pem(cert_path, cert);
	write_cert_pem(other_cert_path, other_cert);
	FILE *f = fopen(junk_path, "w");
	assert_non_null(f);
	fputs("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", f);
	fclose(f);

	const char *const http[] = {"http/1.1"};
	struct sp_tls_options opts;
	memset(&opts, 0, sizeof(opts));
	opts.alpn = http;
	opts.alpn_count = 1;
	assert_int_equal(sp_tls_https_server_ctx_new(cert_path, key_path, &opts, &ctx, &d), 0);

	/* TLS 1.2 and 1.3 clients both get in; ALPN http/1.1 is chosen. */
	const int versions[] = {TLS1_2_VERSION, TLS1_3_VERSION};
	for (size_t i = 0; i < 2; i++) {
		SSL_CTX *raw = raw_ctx(0, versions[i], NULL, wire_http, sizeof(wire_http) - 1);
		SSL *client = NULL, *server = NULL;
		struct sp_tls_outcome c, s;
		assert_int_equal(sp_tls_conn_new_memory(raw, &client), 0);
		assert_int_equal(sp_tls_conn_new_memory(ctx, &server), 0);
		assert_int_equal(sp_tls_handshake_pair(client, server, &c, &s), 0);
		assert_int_equal(SSL_version(server), versions[i]);
		char proto[SP_TLS_ALPN_NAME_MAX + 1];
		assert_int_equal(sp_tls_selected_protocol(server, proto), 0);
		assert_string_equal(proto, "http/1.1");
		/* No client certificate was asked for. */
		EVP_PKEY *peer = NULL;
		assert_int_equal(sp_tls_peer_key(server, &peer), SP_ERR_NOT_FOUND);
		SSL_free(client);
		SSL_free(server);
		SSL_CTX_free(raw);
	}
	/* A TLS 1.1 client is refused. */
	{
		SSL_CTX *raw = raw_ctx(0, TLS1_1_VERSION, NULL, NULL, 0);
		SSL_CTX_set_security_level(raw, 0);
		SSL *client = NULL, *server = NULL;
		struct sp_tls_outcome c, s;
		assert_int_equal(sp_tls_conn_new_memory(raw, &client), 0);
		assert_int_equal(sp_tls_conn_new_memory(ctx, &server), 0);
		assert_int_equal(sp_tls_handshake_pair(client, server, &c, &s), SP_ERR_TLS);
		assert_int_equal(s.result, SP_ERR_TLS);
		SSL_free(client);
		SSL_free(server);
		SSL_CTX_free(raw);
	}
	SSL_CTX_free(ctx);
	ctx = NULL;

	/* Without options there is no ALPN, and that is fine for HTTPS. */
	assert_int_equal(sp_tls_https_server_ctx_new(cert_path, key_path, NULL, &ctx, &d), 0);
	SSL_CTX_free(ctx);

	/* The key file must be 0600. */
	assert_int_equal(chmod(key_path, 0644), 0);
	assert_int_equal(sp_tls_https_server_ctx_new(cert_path, key_path, &opts, &ctx, &d),
	                 SP_ERR_PERMISSION);
	assert_null(ctx);
	assert_contains(d.message, key_path);
	assert_contains(d.message, "0644");
	assert_int_equal(chmod(key_path, 0600), 0);

	/* Missing, malformed and mismatched certificates. */
	char missing[160];
	snprintf(missing, sizeof(missing), "%s/missing.crt", tmpdir);
	assert_int_equal(sp_tls_https_server_ctx_new(missing, key_path, NULL, &ctx, &d),
	                 SP_ERR_NOT_FOUND);
	assert_contains(d.message, missing);
	assert_int_equal(sp_tls_https_server_ctx_new(junk_path, key_path, NULL, &ctx, &d),
	                 SP_ERR_INVALID);
	assert_contains(d.message, junk_path);
	assert_int_equal(sp_tls_https_server_ctx_new(other_cert_path, key_path, NULL, &ctx, &d),
	                 SP_ERR_INVALID);
	assert_contains(d.message, "does not belong");
	assert_int_equal(sp_tls_https_server_ctx_new(cert_path, missing, NULL, &ctx, &d),
	                 SP_ERR_NOT_FOUND);
	assert_int_equal(sp_tls_https_server_ctx_new(NULL, key_path, NULL, &ctx, &d),
	                 SP_ERR_INVALID);
	assert_null(ctx);
	assert_int_equal(ERR_peek_error(), 0);

	X509_free(cert);
	X509_free(other_cert);
	EVP_PKEY_free(key);
	EVP_PKEY_free(other);
}

/* --- over a real socket ------------------------------------------------------------ */

/* The connector side: a plain blocking OpenSSL server on the accepted socket, echoing. */
struct echo_server {
	SSL_CTX *ctx;
	int fd;
	int result;
	size_t echoed;
	uint8_t peer_pin[SP_KEY_SPKI_DIGEST_LEN];
};

static void *echo_server_run(void *arg)
{
	struct echo_server *es = arg;
	uint8_t buf[16384];
	SSL *ssl = SSL_new(es->ctx);
	es->result = SP_ERR_INTERNAL;
	if (ssl == NULL || SSL_set_fd(ssl, es->fd) != 1)
		goto out;
	int ret = SSL_accept(ssl);
	if (ret != 1) {
		es->result = sp_tls_error(ssl, ret, NULL);
		goto out;
	}
	if ((es->result = sp_tls_peer_spki_sha256(ssl, es->peer_pin)) < 0)
		goto out;
	for (;;) {
		int n = SSL_read(ssl, buf, sizeof(buf));
		if (n <= 0)
			break;
		if (SSL_write(ssl, buf, n) != n) {
			es->result = SP_ERR_IO;
			break;
		}
		es->echoed += (size_t)n;
	}
	ERR_clear_error();
	(void)SSL_shutdown(ssl);
out:
	SSL_free(ssl);
	close(es->fd);
	return NULL;
}

static void send_outbound(SSL *ssl, int fd)
{
	const uint8_t *data;
	size_t len;
	assert_int_equal(sp_tls_outbound_view(ssl, &data, &len), 0);
	while (len > 0) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
		assert_true(n > 0);
		assert_int_equal(sp_tls_outbound_consume(ssl, (size_t)n), 0);
		assert_int_equal(sp_tls_outbound_view(ssl, &data, &len), 0);
	}
}

static void receive_inbound(SSL *ssl, int fd)
{
	uint8_t buf[8192];
	size_t room = sp_tls_inbound_room(ssl);
	assert_true(room > 0);
	ssize_t n = recv(fd, buf, room < sizeof(buf) ? room : sizeof(buf), 0);
	assert_true(n > 0);
	assert_int_equal(sp_tls_feed(ssl, buf, (size_t)n), 0);
}

static void test_handshake_and_echo_over_loopback_tcp(void **state)
{
	(void)state;
	struct tunnel t;
	struct sockaddr_in addr;
	socklen_t addr_len = sizeof(addr);
	int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (listener == -1)
		skip();
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(listener, (struct sockaddr *)&addr, sizeof(addr)) == -1 ||
	    listen(listener, 1) == -1 ||
	    getsockname(listener, (struct sockaddr *)&addr, &addr_len) == -1) {
		close(listener);
		skip();
	}
	int client_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_not_equal(client_fd, -1);
	assert_int_equal(connect(client_fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	int server_fd = accept(listener, NULL, NULL);
	assert_int_not_equal(server_fd, -1);
	close(listener);

	tunnel_new(&t);
	struct echo_server es = {.ctx = t.server_ctx, .fd = server_fd};
	pthread_t thread;
	assert_int_equal(pthread_create(&thread, NULL, echo_server_run, &es), 0);

	/* The client drives its memory connection over the socket, as the event loop will. */
	struct sp_diag d;
	int r;
	while ((r = sp_tls_handshake_step(t.client, &d)) == SP_ERR_AGAIN) {
		send_outbound(t.client, client_fd);
		receive_inbound(t.client, client_fd);
	}
	assert_int_equal(r, 0);
	send_outbound(t.client, client_fd);
	uint8_t digest[32];
	assert_int_equal(sp_tls_peer_spki_sha256(t.client, digest), 0);
	assert_memory_equal(digest, t.server_pin, 32);

	/* 256 KiB in 4 KiB pieces, each echoed back. */
	const size_t total = 256 * 1024, piece = 4096;
	uint8_t *sent = malloc(total), *back = malloc(total);
	assert_non_null(sent);
	assert_non_null(back);
	fill_pattern(sent, total, 77);
	size_t got = 0;
	for (size_t off = 0; off < total; off += piece) {
		assert_int_equal(SSL_write(t.client, sent + off, (int)piece), (int)piece);
		send_outbound(t.client, client_fd);
		while (got < off + piece) {
			int n = SSL_read(t.client, back + got, (int)(total - got));
			if (n > 0) {
				got += (size_t)n;
				continue;
			}
			assert_int_equal(sp_tls_error(t.client, n, NULL), SP_ERR_AGAIN);
			receive_inbound(t.client, client_fd);
		}
	}
	assert_int_equal(got, total);
	assert_memory_equal(sent, back, total);
	assert_int_equal(SSL_shutdown(t.client), 0);
	send_outbound(t.client, client_fd);
	assert_int_equal(pthread_join(thread, NULL), 0);
	close(client_fd);

	assert_int_equal(es.result, 0);
	assert_int_equal(es.echoed, total);
	assert_memory_equal(es.peer_pin, t.client_pin, 32);
	free(sent);
	free(back);
	tunnel_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_self_signed_cert_fields),
		cmocka_unit_test(test_self_signed_cert_refuses_bad_input),
		cmocka_unit_test(test_ctx_new_refuses_bad_options),
		cmocka_unit_test(test_pinned_handshake_succeeds_and_both_see_peer),
		cmocka_unit_test(test_no_resumption_is_possible),
		cmocka_unit_test(test_wrong_pin_is_peer_mismatch),
		cmocka_unit_test(test_client_without_pin_is_refused),
		cmocka_unit_test(test_server_may_pin_the_client),
		cmocka_unit_test(test_client_without_certificate_is_refused),
		cmocka_unit_test(test_client_key_not_p256_is_refused),
		cmocka_unit_test(test_server_key_not_p256_is_refused_by_client),
		cmocka_unit_test(test_tls12_peers_are_refused),
		cmocka_unit_test(test_alpn_without_common_protocol_is_refused),
		cmocka_unit_test(test_certificate_dates_are_ignored),
		cmocka_unit_test(test_one_mebibyte_round_trip),
		cmocka_unit_test(test_write_bounds_outbound_buffer),
		cmocka_unit_test(test_memory_io_bounds_and_misuse),
		cmocka_unit_test(test_stalled_pair_is_reported),
		cmocka_unit_test(test_https_ctx_from_files),
		cmocka_unit_test(test_handshake_and_echo_over_loopback_tcp),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
