/* shared/tls.c — see tls.h and docs/tls.md. */
#include "shared/tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "shared/buf.h"
#include "shared/secret.h"

#define TUNNEL_CIPHERSUITES                                                                      \
	"TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"
#define TUNNEL_GROUPS "X25519:P-256"
/* TLS 1.2 for the HTTPS listener: forward secrecy and AEAD only; the key is P-256. */
#define HTTPS_TLS12_CIPHERS                                                                      \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384"
#define HTTPS_GROUPS "X25519:P-256:P-384"
/* ALPN wire form: each name prefixed by its one-byte length. */
#define ALPN_WIRE_MAX (SP_TLS_ALPN_MAX_PROTOCOLS * (1 + SP_TLS_ALPN_NAME_MAX))
/* Certificate times we accept: 1970-01-01 to 9999-12-31 (GeneralizedTime's range). */
#define CERT_TIME_MIN 0
#define CERT_TIME_MAX INT64_C(253402300799)
/* sp_tls_handshake_pair gives up after this many rounds; a handshake takes about 4. */
#define PAIR_MAX_ROUNDS 64

/* Why our own checks refused a handshake; kept so sp_tls_error can say it precisely. */
enum peer_failure {
	FAILURE_NONE = 0,
	FAILURE_PIN_MISMATCH,   /* the peer's SPKI digest differs from the pin */
	FAILURE_NO_PIN,         /* a client connection was given no pin */
	FAILURE_KEY_TYPE,       /* the peer's certificate key is not EC P-256 */
	FAILURE_NO_CLIENT_ALPN, /* a client offered no ALPN at all */
	FAILURE_NO_COMMON_ALPN, /* a client offered ALPN, none of it ours */
	FAILURE_NO_SERVER_ALPN, /* a server selected no ALPN */
	FAILURE_INTERNAL,       /* our check could not run (allocation, digest) */
};

/*
 * Per-connection state, hung on the SSL as ex_data: allocated on first need (a pin set,
 * or a failure to record), freed by OpenSSL through free_ex_data when the SSL is freed.
 */
struct conn_state {
	int has_pin;
	uint8_t pin[SP_KEY_SPKI_DIGEST_LEN];
	enum peer_failure failure;
	uint8_t presented[SP_KEY_SPKI_DIGEST_LEN]; /* for FAILURE_PIN_MISMATCH */
	char detail[96];                           /* key type or the client's ALPN list */
};

/*
 * Per-context settings, hung on the SSL_CTX as ex_data: allocated by the *_ctx_new
 * functions, freed with the context. Callbacks receive it as their argument.
 */
struct ctx_config {
	int tunnel; /* TLS 1.3 tunnel rules: ALPN required, peer key checked */
	size_t alpn_len;
	uint8_t alpn[ALPN_WIRE_MAX];
};

static CRYPTO_ONCE indexes_once = CRYPTO_ONCE_STATIC_INIT;
static int conn_index = -1;
static int ctx_index = -1;

static void free_ex_data(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                         void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	free(ptr);
}

/* SSL_dup copies ex_data pointers; give the copy its own state so neither frees twice. */
static int dup_conn_state(CRYPTO_EX_DATA *to, const CRYPTO_EX_DATA *from, void **from_d, int idx,
                          long argl, void *argp)
{
	(void)to;
	(void)from;
	(void)idx;
	(void)argl;
	(void)argp;
	if (*from_d == NULL)
		return 1;
	struct conn_state *copy = malloc(sizeof(*copy));
	if (copy == NULL)
		return 0;
	memcpy(copy, *from_d, sizeof(*copy));
	*from_d = copy;
	return 1;
}

static void create_indexes(void)
{
	conn_index = SSL_get_ex_new_index(0, NULL, NULL, dup_conn_state, free_ex_data);
	ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_ex_data);
}

static int indexes_ready(void)
{
	return CRYPTO_THREAD_run_once(&indexes_once, create_indexes) == 1 && conn_index >= 0 &&
	       ctx_index >= 0;
}

static struct conn_state *conn_state(SSL *ssl, int create)
{
	if (ssl == NULL || !indexes_ready())
		return NULL;
	struct conn_state *state = SSL_get_ex_data(ssl, conn_index);
	if (state != NULL || !create)
		return state;
	state = calloc(1, sizeof(*state));
	if (state == NULL)
		return NULL;
	if (SSL_set_ex_data(ssl, conn_index, state) != 1) {
		free(state);
		return NULL;
	}
	return state;
}

static const struct ctx_config *ctx_config(SSL_CTX *ctx)
{
	if (ctx == NULL || !indexes_ready())
		return NULL;
	return SSL_CTX_get_ex_data(ctx, ctx_index);
}

/* Keeps the first failure: later callbacks on a dying handshake add nothing. */
static void record_failure(struct conn_state *state, enum peer_failure failure)
{
	if (state != NULL && state->failure == FAILURE_NONE)
		state->failure = failure;
}

/* "EC secp384r1", "RSA-2048", "ED25519-256": for diags about refused keys. */
static void describe_key(EVP_PKEY *key, char *out, size_t cap)
{
	char group[32];
	char encoding[32];
	size_t len = 0;
	if (key == NULL) {
		snprintf(out, cap, "unreadable");
		return;
	}
	if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC &&
	    EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
	                                   &len) == 1) {
		if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_EC_ENCODING, encoding,
		                                   sizeof(encoding), &len) == 1 &&
		    strcmp(encoding, OSSL_PKEY_EC_ENCODING_GROUP) != 0)
			snprintf(out, cap, "EC %s with explicit parameters", group);
		else
			snprintf(out, cap, "EC %s", group);
		return;
	}
	const char *type = EVP_PKEY_get0_type_name(key);
	snprintf(out, cap, "%s-%d", type != NULL ? type : "unknown", EVP_PKEY_get_bits(key));
}

/* ALPN names are opaque bytes on the wire; we only ever configure printable ASCII ones. */
static int alpn_byte_printable(uint8_t c)
{
	return c > 0x20 && c < 0x7f;
}

/*
 * Writes an ALPN wire list as "a,b,c" into out (always NUL-terminated), replacing bytes
 * that are not printable with '?'. The list may come from the peer.
 */
static void alpn_describe(const uint8_t *wire, size_t wire_len, char *out, size_t cap)
{
	struct sp_reader reader;
	size_t pos = 0;
	uint8_t len;
	const uint8_t *name;

	if (cap == 0)
		return;
	out[0] = '\0';
	sp_reader_init(&reader, wire, wire_len);
	while (sp_reader_u8(&reader, &len) == 0 && sp_reader_view(&reader, len, &name) == 0) {
		if (pos > 0 && pos + 1 < cap)
			out[pos++] = ',';
		for (size_t i = 0; i < len && pos + 1 < cap; i++)
			out[pos++] = alpn_byte_printable(name[i]) ? (char)name[i] : '?';
		out[pos] = '\0';
	}
	if (pos == 0)
		snprintf(out, cap, "(none)");
}

/* 1 when the wire list `list` contains `name`. */
static int alpn_list_contains(const uint8_t *list, size_t list_len, const uint8_t *name,
                              size_t name_len)
{
	struct sp_reader reader;
	uint8_t len;
	const uint8_t *entry;

	sp_reader_init(&reader, list, list_len);
	while (sp_reader_u8(&reader, &len) == 0 && sp_reader_view(&reader, len, &entry) == 0) {
		if (len == name_len && memcmp(entry, name, name_len) == 0)
			return 1;
	}
	return 0;
}

/* Builds config->alpn from the options; tunnels need at least one name. */
static int build_alpn(const struct sp_tls_options *opts, int required, struct ctx_config *config,
                      struct sp_diag *diag)
{
	struct sp_buf wire;
	size_t count = opts != NULL ? opts->alpn_count : 0;

	config->alpn_len = 0;
	if (count == 0) {
		if (required)
			return sp_diag_set(diag, SP_ERR_INVALID,
			                   "options.alpn: a tunnel needs at least one ALPN name");
		return 0;
	}
	if (opts->alpn == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "options.alpn is NULL but alpn_count is %zu",
		                   count);
	if (count > SP_TLS_ALPN_MAX_PROTOCOLS)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "options.alpn: %zu names, at most %d",
		                   count, SP_TLS_ALPN_MAX_PROTOCOLS);
	sp_buf_init_fixed(&wire, config->alpn, sizeof(config->alpn));
	for (size_t i = 0; i < count; i++) {
		const char *name = opts->alpn[i];
		size_t len = name != NULL ? strnlen(name, SP_TLS_ALPN_NAME_MAX + 1) : 0;
		if (len == 0 || len > SP_TLS_ALPN_NAME_MAX)
			return sp_diag_set(diag, SP_ERR_INVALID,
			                   "options.alpn[%zu]: a name must have 1 to %d bytes", i,
			                   SP_TLS_ALPN_NAME_MAX);
		for (size_t j = 0; j < len; j++) {
			if (!alpn_byte_printable((uint8_t)name[j]))
				return sp_diag_set(diag, SP_ERR_INVALID,
				                   "options.alpn[%zu]: byte %zu is not printable ASCII",
				                   i, j);
		}
		if (sp_buf_put_u8(&wire, (uint8_t)len) < 0 || sp_buf_put(&wire, name, len) < 0)
			return sp_diag_set(diag, SP_ERR_INTERNAL, "options.alpn: wire form overflow");
	}
	config->alpn_len = wire.len;
	return 0;
}

/* Server: picks our most preferred name that the client offered, or refuses. */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *out_len,
                       const unsigned char *offered, unsigned int offered_len, void *arg)
{
	const struct ctx_config *config = arg;
	struct sp_reader ours;
	uint8_t len;
	const uint8_t *name;

	sp_reader_init(&ours, config->alpn, config->alpn_len);
	while (sp_reader_u8(&ours, &len) == 0 && sp_reader_view(&ours, len, &name) == 0) {
		if (alpn_list_contains(offered, offered_len, name, len)) {
			*out = name;
			*out_len = len;
			return SSL_TLSEXT_ERR_OK;
		}
	}
	struct conn_state *state = conn_state(ssl, 1);
	if (state != NULL && state->failure == FAILURE_NONE)
		alpn_describe(offered, offered_len, state->detail, sizeof(state->detail));
	record_failure(state, FAILURE_NO_COMMON_ALPN);
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Tunnel servers: a ClientHello without ALPN never gets a select callback, so refuse here. */
static int require_client_alpn(SSL *ssl, int *alert, void *arg)
{
	const unsigned char *ext = NULL;
	size_t ext_len = 0;
	(void)arg;
	if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext,
	                              &ext_len) == 1)
		return SSL_CLIENT_HELLO_SUCCESS;
	record_failure(conn_state(ssl, 1), FAILURE_NO_CLIENT_ALPN);
	*alert = SSL_AD_NO_APPLICATION_PROTOCOL;
	return SSL_CLIENT_HELLO_ERROR;
}

static int refuse_peer(X509_STORE_CTX *store, struct conn_state *state, enum peer_failure failure,
                       int x509_error)
{
	record_failure(state, failure);
	X509_STORE_CTX_set_error(store, x509_error);
	return 0;
}

/*
 * Replaces OpenSSL's chain verification for tunnel peers (no chain, no trust store, no
 * dates, no names): the leaf's key must be EC P-256 and, when a pin was set, hash to it.
 * A client also requires the server to have selected an ALPN name; EncryptedExtensions
 * precedes the server's Certificate in TLS 1.3, so the answer is known here. Returns 1
 * to continue the handshake, 0 to abort it with an alert.
 */
static int verify_tunnel_peer(X509_STORE_CTX *store, void *arg)
{
	const struct ctx_config *config = arg;
	SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
	X509 *leaf = X509_STORE_CTX_get0_cert(store);
	struct conn_state *state = conn_state(ssl, 1);
	uint8_t presented[SP_KEY_SPKI_DIGEST_LEN];

	if (ssl == NULL || leaf == NULL || state == NULL)
		return refuse_peer(store, state, FAILURE_INTERNAL, X509_V_ERR_UNSPECIFIED);
	EVP_PKEY *key = X509_get0_pubkey(leaf);
	if (!sp_key_is_p256(key)) {
		if (state->failure == FAILURE_NONE)
			describe_key(key, state->detail, sizeof(state->detail));
		return refuse_peer(store, state, FAILURE_KEY_TYPE, X509_V_ERR_CERT_REJECTED);
	}
	if (sp_key_spki_sha256(key, presented) < 0)
		return refuse_peer(store, state, FAILURE_INTERNAL, X509_V_ERR_UNSPECIFIED);
	if (state->has_pin) {
		if (CRYPTO_memcmp(presented, state->pin, sizeof(presented)) != 0) {
			if (state->failure == FAILURE_NONE)
				memcpy(state->presented, presented, sizeof(presented));
			return refuse_peer(store, state, FAILURE_PIN_MISMATCH,
			                   X509_V_ERR_CERT_REJECTED);
		}
	} else if (!SSL_is_server(ssl)) {
		return refuse_peer(store, state, FAILURE_NO_PIN, X509_V_ERR_APPLICATION_VERIFICATION);
	}
	if (!SSL_is_server(ssl) && config->tunnel) {
		const unsigned char *selected = NULL;
		unsigned int selected_len = 0;
		SSL_get0_alpn_selected(ssl, &selected, &selected_len);
		if (selected_len == 0 ||
		    !alpn_list_contains(config->alpn, config->alpn_len, selected, selected_len))
			return refuse_peer(store, state, FAILURE_NO_SERVER_ALPN,
			                   X509_V_ERR_APPLICATION_VERIFICATION);
	}
	return 1;
}

int sp_tls_self_signed_cert(EVP_PKEY *key, const char *common_name, int64_t not_before,
                            int64_t not_after, X509 **out)
{
	int r = SP_ERR_CRYPTO;
	X509 *cert = NULL;
	BIGNUM *serial = NULL;
	X509_EXTENSION *ext = NULL;
	uint8_t serial_bytes[16];
	X509V3_CTX v3;
	size_t cn_len;

	*out = NULL;
	if (key == NULL || common_name == NULL)
		return SP_ERR_INVALID;
	cn_len = strnlen(common_name, SP_TLS_COMMON_NAME_MAX + 1);
	if (cn_len == 0 || cn_len > SP_TLS_COMMON_NAME_MAX)
		return SP_ERR_INVALID;
	for (size_t i = 0; i < cn_len; i++) {
		unsigned char c = (unsigned char)common_name[i];
		if (c < 0x20 || c == 0x7f)
			return SP_ERR_INVALID;
	}
	if (!sp_key_is_p256(key))
		return SP_ERR_UNSUPPORTED;
	if (!sp_key_has_private(key))
		return SP_ERR_INVALID;
	if (not_before < CERT_TIME_MIN || not_after > CERT_TIME_MAX || not_after <= not_before)
		return SP_ERR_INVALID;

	if ((cert = X509_new()) == NULL) {
		r = SP_ERR_NOMEM;
		goto out;
	}
	if (X509_set_version(cert, X509_VERSION_3) != 1)
		goto out;
	/* 16 random bytes, top bit clear (positive), next bit set (never zero, fixed length). */
	if (RAND_bytes(serial_bytes, sizeof(serial_bytes)) != 1)
		goto out;
	serial_bytes[0] = (uint8_t)((serial_bytes[0] & 0x7f) | 0x40);
	if ((serial = BN_bin2bn(serial_bytes, sizeof(serial_bytes), NULL)) == NULL ||
	    BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert)) == NULL)
		goto out;
	if (ASN1_TIME_set(X509_getm_notBefore(cert), (time_t)not_before) == NULL ||
	    ASN1_TIME_set(X509_getm_notAfter(cert), (time_t)not_after) == NULL)
		goto out;
	X509_NAME *name = X509_get_subject_name(cert);
	if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)common_name,
	                               (int)cn_len, -1, 0) != 1) {
		r = SP_ERR_INVALID; /* not UTF-8 */
		goto out;
	}
	if (X509_set_issuer_name(cert, name) != 1 || X509_set_pubkey(cert, key) != 1)
		goto out;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
	if ((ext = X509V3_EXT_nconf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:FALSE")) ==
	            NULL ||
	    X509_add_ext(cert, ext, -1) != 1)
		goto out;
	X509_EXTENSION_free(ext);
	if ((ext = X509V3_EXT_nconf_nid(NULL, &v3, NID_key_usage, "critical,digitalSignature")) ==
	            NULL ||
	    X509_add_ext(cert, ext, -1) != 1)
		goto out;
	if (X509_sign(cert, key, EVP_sha256()) <= 0)
		goto out;
	*out = cert;
	cert = NULL;
	r = 0;
out:
	X509_EXTENSION_free(ext);
	BN_free(serial);
	X509_free(cert);
	ERR_clear_error();
	return r;
}

/* Protocol settings every tunnel context shares (see docs/tls.md for the reasons). */
static int apply_tunnel_protocol(SSL_CTX *ctx)
{
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, TUNNEL_CIPHERSUITES) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, TUNNEL_GROUPS) != 1 || SSL_CTX_set_num_tickets(ctx, 0) != 1)
		return SP_ERR_CRYPTO;
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	return 0;
}

/* Hands config to ctx (freed with it), whatever the outcome. */
static int attach_config(SSL_CTX *ctx, struct ctx_config *config)
{
	if (SSL_CTX_set_ex_data(ctx, ctx_index, config) != 1) {
		free(config);
		return SP_ERR_NOMEM;
	}
	return 0;
}

static int tunnel_ctx_new(int server, EVP_PKEY *key, const struct sp_tls_options *opts,
                          SSL_CTX **out, struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	SSL_CTX *ctx = NULL;
	X509 *made = NULL;
	X509 *cert;
	struct ctx_config *config = NULL;
	char described[64];

	*out = NULL;
	if (!indexes_ready())
		return sp_diag_set(diag, SP_ERR_CRYPTO, "cannot register OpenSSL ex_data indexes");
	if (key == NULL || opts == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "a tunnel context needs a key and options");
	if (!sp_key_is_p256(key)) {
		describe_key(key, described, sizeof(described));
		return sp_diag_set(diag, SP_ERR_UNSUPPORTED,
		                   "our key is %s; tunnels use EC P-256 keys", described);
	}
	if (!sp_key_has_private(key))
		return sp_diag_set(diag, SP_ERR_INVALID, "our key has no private half");
	if ((config = calloc(1, sizeof(*config))) == NULL)
		return SP_ERR_NOMEM;
	config->tunnel = 1;
	if ((r = build_alpn(opts, 1, config, diag)) < 0)
		goto out;

	cert = opts->certificate;
	if (cert == NULL) {
		if (opts->now < CERT_TIME_MIN + 3600 ||
		    opts->now > CERT_TIME_MAX - SP_TLS_GENERATED_CERT_LIFETIME) {
			r = sp_diag_set(diag, SP_ERR_INVALID, "options.now %lld is out of range",
			                (long long)opts->now);
			goto out;
		}
		r = sp_tls_self_signed_cert(key,
		                            opts->common_name != NULL ? opts->common_name : "sallyport",
		                            opts->now - 3600, opts->now + SP_TLS_GENERATED_CERT_LIFETIME,
		                            &made);
		if (r < 0) {
			sp_diag_set(diag, r, "cannot make our certificate (options.common_name?): %s",
			            sp_strerror(r));
			goto out;
		}
		cert = made;
	}

	if ((ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method())) == NULL) {
		r = sp_diag_set(diag, SP_ERR_CRYPTO, "SSL_CTX_new failed");
		goto out;
	}
	r = attach_config(ctx, config);
	config = NULL; /* ctx owns it now, or it is freed */
	if (r < 0)
		goto out;
	const struct ctx_config *attached = ctx_config(ctx);
	if ((r = apply_tunnel_protocol(ctx)) < 0) {
		sp_diag_set(diag, r, "OpenSSL refused the tunnel protocol settings");
		goto out;
	}
	if (SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		r = sp_diag_set(diag, SP_ERR_INVALID,
		                "options.certificate does not hold our key or is unusable");
		goto out;
	}
	if (server) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
		SSL_CTX_set_alpn_select_cb(ctx, select_alpn, (void *)attached);
		SSL_CTX_set_client_hello_cb(ctx, require_client_alpn, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		/* Note the inverted convention: 0 is success here. */
		if (SSL_CTX_set_alpn_protos(ctx, attached->alpn, (unsigned int)attached->alpn_len) !=
		    0) {
			r = sp_diag_set(diag, SP_ERR_CRYPTO, "OpenSSL refused our ALPN list");
			goto out;
		}
	}
	SSL_CTX_set_cert_verify_callback(ctx, verify_tunnel_peer, (void *)attached);
	*out = ctx;
	ctx = NULL;
	r = 0;
out:
	SSL_CTX_free(ctx);
	X509_free(made);
	free(config);
	ERR_clear_error();
	return r;
}

int sp_tls_server_ctx_new(EVP_PKEY *key, const struct sp_tls_options *opts, SSL_CTX **out,
                          struct sp_diag *diag)
{
	return tunnel_ctx_new(1, key, opts, out, diag);
}

int sp_tls_client_ctx_new(EVP_PKEY *device_key, const struct sp_tls_options *opts,
                          SSL_CTX **out, struct sp_diag *diag)
{
	return tunnel_ctx_new(0, device_key, opts, out, diag);
}

/* The reason of the first error on this thread's queue, or a fallback. Leaves the queue. */
static const char *queued_reason(void)
{
	unsigned long e = ERR_peek_error();
	const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;
	return reason != NULL ? reason : "unknown OpenSSL error";
}

int sp_tls_https_server_ctx_new(const char *cert_path, const char *key_path,
                                const struct sp_tls_options *opts, SSL_CTX **out,
                                struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	SSL_CTX *ctx = NULL;
	EVP_PKEY *key = NULL;
	struct ctx_config *config = NULL;
	struct stat st;

	*out = NULL;
	if (!indexes_ready())
		return sp_diag_set(diag, SP_ERR_CRYPTO, "cannot register OpenSSL ex_data indexes");
	if (cert_path == NULL || key_path == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "HTTPS needs a certificate and a key file");
	if ((config = calloc(1, sizeof(*config))) == NULL)
		return SP_ERR_NOMEM;
	if ((r = build_alpn(opts, 0, config, diag)) < 0)
		goto out;
	/* The key first: its file checks (0600, owner, no symlink) matter most. */
	if ((r = sp_key_load_private(key_path, &key, diag)) < 0)
		goto out;
	if (stat(cert_path, &st) == -1) {
		r = sp_diag_set(diag, errno == ENOENT ? SP_ERR_NOT_FOUND : SP_ERR_IO,
		                "certificate file %s: %s", cert_path, strerror(errno));
		goto out;
	}
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		r = sp_diag_set(diag, SP_ERR_CRYPTO, "SSL_CTX_new failed");
		goto out;
	}
	r = attach_config(ctx, config);
	config = NULL;
	if (r < 0)
		goto out;
	const struct ctx_config *attached = ctx_config(ctx);
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, 0) != 1 ||
	    SSL_CTX_set_cipher_list(ctx, HTTPS_TLS12_CIPHERS) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, TUNNEL_CIPHERSUITES) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, HTTPS_GROUPS) != 1 ||
	    SSL_CTX_set_num_tickets(ctx, 0) != 1) {
		r = sp_diag_set(diag, SP_ERR_CRYPTO, "OpenSSL refused the HTTPS protocol settings");
		goto out;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "certificate file %s: %s", cert_path,
		                queued_reason());
		goto out;
	}
	if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
		r = sp_diag_set(diag, SP_ERR_INVALID,
		                "the certificate in %s does not belong to the key in %s", cert_path,
		                key_path);
		goto out;
	}
	if (attached->alpn_len > 0)
		SSL_CTX_set_alpn_select_cb(ctx, select_alpn, (void *)attached);
	*out = ctx;
	ctx = NULL;
	r = 0;
out:
	SSL_CTX_free(ctx);
	EVP_PKEY_free(key);
	free(config);
	ERR_clear_error();
	return r;
}

int sp_tls_conn_new_memory(SSL_CTX *ctx, SSL **out)
{
	SSL *ssl = NULL;
	BIO *inbound = NULL;
	BIO *outbound = NULL;

	*out = NULL;
	if (ctx == NULL)
		return SP_ERR_INVALID;
	ssl = SSL_new(ctx);
	inbound = BIO_new(BIO_s_mem());
	outbound = BIO_new(BIO_s_mem());
	if (ssl == NULL || inbound == NULL || outbound == NULL) {
		SSL_free(ssl);
		BIO_free(inbound);
		BIO_free(outbound);
		ERR_clear_error();
		return SP_ERR_NOMEM;
	}
	/* An empty buffer means "try again later", not end of stream. */
	BIO_set_mem_eof_return(inbound, -1);
	BIO_set_mem_eof_return(outbound, -1);
	SSL_set_bio(ssl, inbound, outbound);
	if (SSL_is_server(ssl))
		SSL_set_accept_state(ssl);
	else
		SSL_set_connect_state(ssl);
	*out = ssl;
	return 0;
}

int sp_tls_set_expected_peer(SSL *ssl, const uint8_t pin[SP_KEY_SPKI_DIGEST_LEN])
{
	if (ssl == NULL || pin == NULL)
		return SP_ERR_INVALID;
	if (!indexes_ready())
		return SP_ERR_CRYPTO;
	struct conn_state *state = conn_state(ssl, 1);
	if (state == NULL)
		return SP_ERR_NOMEM;
	memcpy(state->pin, pin, SP_KEY_SPKI_DIGEST_LEN);
	state->has_pin = 1;
	return 0;
}

int sp_tls_peer_key(SSL *ssl, EVP_PKEY **out)
{
	*out = NULL;
	if (ssl == NULL || !SSL_is_init_finished(ssl) || SSL_get_verify_result(ssl) != X509_V_OK)
		return SP_ERR_INVALID;
	X509 *cert = SSL_get0_peer_certificate(ssl);
	if (cert == NULL)
		return SP_ERR_NOT_FOUND;
	EVP_PKEY *key = X509_get0_pubkey(cert);
	if (key == NULL || EVP_PKEY_up_ref(key) != 1) {
		ERR_clear_error();
		return SP_ERR_CRYPTO;
	}
	*out = key;
	return 0;
}

int sp_tls_peer_spki_sha256(SSL *ssl, uint8_t out[SP_KEY_SPKI_DIGEST_LEN])
{
	EVP_PKEY *key = NULL;
	memset(out, 0, SP_KEY_SPKI_DIGEST_LEN);
	int r = sp_tls_peer_key(ssl, &key);
	if (r < 0)
		return r;
	r = sp_key_spki_sha256(key, out);
	EVP_PKEY_free(key);
	return r;
}

int sp_tls_selected_protocol(SSL *ssl, char out[SP_TLS_ALPN_NAME_MAX + 1])
{
	const unsigned char *selected = NULL;
	unsigned int len = 0;
	out[0] = '\0';
	if (ssl == NULL)
		return SP_ERR_INVALID;
	SSL_get0_alpn_selected(ssl, &selected, &len);
	if (len == 0)
		return SP_ERR_NOT_FOUND;
	if (len > SP_TLS_ALPN_NAME_MAX)
		return SP_ERR_TOO_LARGE;
	for (unsigned int i = 0; i < len; i++)
		out[i] = alpn_byte_printable(selected[i]) ? (char)selected[i] : '?';
	out[len] = '\0';
	return 0;
}

/* The diag for a handshake our own checks refused. */
static int describe_recorded_failure(SSL *ssl, const struct conn_state *state,
                                     struct sp_diag *diag)
{
	const struct ctx_config *config = ctx_config(SSL_get_SSL_CTX(ssl));
	char expected[2 * SP_KEY_SPKI_DIGEST_LEN + 1];
	char presented[2 * SP_KEY_SPKI_DIGEST_LEN + 1];
	char ours[128];

	if (config != NULL)
		alpn_describe(config->alpn, config->alpn_len, ours, sizeof(ours));
	else
		snprintf(ours, sizeof(ours), "(unknown)");
	switch (state->failure) {
	case FAILURE_PIN_MISMATCH:
		sp_hex_encode(state->pin, sizeof(state->pin), expected);
		sp_hex_encode(state->presented, sizeof(state->presented), presented);
		return sp_diag_set(diag, SP_ERR_PEER_MISMATCH,
		                   "peer key does not match the pin: expected SPKI sha256 %s, "
		                   "presented %s",
		                   expected, presented);
	case FAILURE_NO_PIN:
		return sp_diag_set(diag, SP_ERR_INVALID,
		                   "no expected server key was set on this connection "
		                   "(sp_tls_set_expected_peer)");
	case FAILURE_KEY_TYPE:
		return sp_diag_set(diag, SP_ERR_BAD_ALGORITHM,
		                   "peer certificate key is %s; only EC P-256 keys are accepted",
		                   state->detail);
	case FAILURE_NO_CLIENT_ALPN:
		return sp_diag_set(diag, SP_ERR_TLS,
		                   "client offered no application protocol (ALPN); we accept %s",
		                   ours);
	case FAILURE_NO_COMMON_ALPN:
		return sp_diag_set(diag, SP_ERR_TLS,
		                   "no common application protocol: client offered %s, we accept %s",
		                   state->detail, ours);
	case FAILURE_NO_SERVER_ALPN:
		return sp_diag_set(diag, SP_ERR_TLS,
		                   "server selected no application protocol of ours (ALPN); we "
		                   "offered %s",
		                   ours);
	case FAILURE_INTERNAL:
	case FAILURE_NONE:
		break;
	}
	return sp_diag_set(diag, SP_ERR_INTERNAL, "peer certificate check could not run");
}

/* Tunnels say why a version refusal happened; "unsupported protocol" alone puzzles people. */
static const char *version_hint(SSL *ssl)
{
	const struct ctx_config *config = ctx_config(SSL_get_SSL_CTX(ssl));
	int reason = ERR_GET_REASON(ERR_peek_error());
	if (config == NULL || !config->tunnel)
		return "";
	if (reason == SSL_R_UNSUPPORTED_PROTOCOL || reason == SSL_R_TLSV1_ALERT_PROTOCOL_VERSION ||
	    reason == SSL_R_WRONG_VERSION_NUMBER)
		return " (Sallyport tunnels require TLS 1.3)";
	return "";
}

static int describe_ssl_failure(SSL *ssl, struct sp_diag *diag)
{
	const struct conn_state *state = conn_state(ssl, 0);
	if (state != NULL && state->failure != FAILURE_NONE)
		return describe_recorded_failure(ssl, state, diag);
	/* OpenSSL records a verify result even when told not to verify: ignore it then. */
	long verify = SSL_get_verify_result(ssl);
	if (verify != X509_V_OK && SSL_get_verify_mode(ssl) != SSL_VERIFY_NONE)
		return sp_diag_set(diag, SP_ERR_TLS, "peer certificate refused: %s",
		                   X509_verify_cert_error_string(verify));
	/* After a fatal error OpenSSL no longer reports the handshake as finished; a Finished
	 * message received from the peer tells that the failure came later. */
	uint8_t finished[EVP_MAX_MD_SIZE];
	int after_handshake = SSL_get_peer_finished(ssl, finished, sizeof(finished)) > 0;
	return sp_diag_set(diag, SP_ERR_TLS, "TLS %s failed: %s%s",
	                   after_handshake ? "connection" : "handshake", queued_reason(),
	                   version_hint(ssl));
}

int sp_tls_error(SSL *ssl, int ret, struct sp_diag *diag)
{
	int saved_errno = errno;
	int r;
	if (ssl == NULL) {
		ERR_clear_error();
		return SP_ERR_INVALID;
	}
	int kind = SSL_get_error(ssl, ret);

	switch (kind) {
	case SSL_ERROR_NONE:
		r = 0;
		break;
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
	case SSL_ERROR_WANT_CONNECT:
	case SSL_ERROR_WANT_ACCEPT:
		r = SP_ERR_AGAIN;
		break;
	case SSL_ERROR_ZERO_RETURN:
		r = sp_diag_set(diag, SP_ERR_TLS, "TLS connection closed by the peer");
		break;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() != 0)
			r = describe_ssl_failure(ssl, diag);
		else if (ret == 0 || saved_errno == 0) /* EOF, or nothing to say */
			r = sp_diag_set(diag, SP_ERR_TLS,
			                "connection closed in the middle of TLS (no close_notify)");
		else
			r = sp_diag_set(diag, SP_ERR_IO, "TLS transport error: %s",
			                strerror(saved_errno));
		break;
	case SSL_ERROR_SSL:
		r = describe_ssl_failure(ssl, diag);
		break;
	default:
		r = sp_diag_set(diag, SP_ERR_INTERNAL, "unexpected OpenSSL state %d", kind);
		break;
	}
	ERR_clear_error();
	return r;
}

int sp_tls_handshake_step(SSL *ssl, struct sp_diag *diag)
{
	if (ssl == NULL)
		return SP_ERR_INVALID;
	/* SSL_get_error reads the queue: it must hold only what this call adds. */
	ERR_clear_error();
	int ret = SSL_do_handshake(ssl);
	if (ret != 1)
		return sp_tls_error(ssl, ret, diag);
	const struct ctx_config *config = ctx_config(SSL_get_SSL_CTX(ssl));
	if (config != NULL && config->tunnel) {
		const unsigned char *selected = NULL;
		unsigned int len = 0;
		SSL_get0_alpn_selected(ssl, &selected, &len);
		if (len == 0)
			return sp_diag_set(diag, SP_ERR_TLS,
			                   "handshake finished without an application protocol");
	}
	return 0;
}

static BIO *memory_bio(BIO *bio)
{
	return bio != NULL && BIO_method_type(bio) == BIO_TYPE_MEM ? bio : NULL;
}

int sp_tls_read(SSL *ssl, void *buf, size_t cap, size_t *got, struct sp_diag *diag)
{
	*got = 0;
	if (ssl == NULL || buf == NULL || cap == 0)
		return SP_ERR_INVALID;
	int want = cap > INT32_MAX ? INT32_MAX : (int)cap;
	ERR_clear_error();
	int n = SSL_read(ssl, buf, want);
	if (n <= 0)
		return sp_tls_error(ssl, n, diag);
	*got = (size_t)n;
	return 0;
}

int sp_tls_write(SSL *ssl, const void *buf, size_t len, struct sp_diag *diag)
{
	if (ssl == NULL || (buf == NULL && len > 0))
		return SP_ERR_INVALID;
	if (len == 0)
		return 0;
	if (len > SP_TLS_OUTBOUND_MAX)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "TLS write of %zu bytes; at most %d at once",
		                   len, SP_TLS_OUTBOUND_MAX);
	BIO *outbound = memory_bio(SSL_get_wbio(ssl));
	if (outbound != NULL && BIO_ctrl_pending(outbound) + len > SP_TLS_OUTBOUND_MAX)
		return SP_ERR_AGAIN;
	ERR_clear_error();
	int n = SSL_write(ssl, buf, (int)len);
	if (n <= 0)
		return sp_tls_error(ssl, n, diag);
	/* Without SSL_MODE_ENABLE_PARTIAL_WRITE a successful write is always whole. */
	return (size_t)n == len ? 0 : SP_ERR_INTERNAL;
}

size_t sp_tls_inbound_room(SSL *ssl)
{
	BIO *inbound = ssl != NULL ? memory_bio(SSL_get_rbio(ssl)) : NULL;
	if (inbound == NULL)
		return 0;
	size_t pending = BIO_ctrl_pending(inbound);
	return pending >= SP_TLS_INBOUND_MAX ? 0 : SP_TLS_INBOUND_MAX - pending;
}

int sp_tls_feed(SSL *ssl, const void *bytes, size_t len)
{
	BIO *inbound = ssl != NULL ? memory_bio(SSL_get_rbio(ssl)) : NULL;
	if (inbound == NULL)
		return SP_ERR_INVALID;
	if (len == 0)
		return 0;
	if (bytes == NULL)
		return SP_ERR_INVALID;
	if (len > sp_tls_inbound_room(ssl))
		return SP_ERR_TOO_LARGE;
	/* len <= SP_TLS_INBOUND_MAX, so it fits an int. */
	if (BIO_write(inbound, bytes, (int)len) != (int)len) {
		ERR_clear_error();
		return SP_ERR_NOMEM;
	}
	return 0;
}

int sp_tls_feed_eof(SSL *ssl)
{
	BIO *inbound = ssl != NULL ? memory_bio(SSL_get_rbio(ssl)) : NULL;
	if (inbound == NULL)
		return SP_ERR_INVALID;
	BIO_set_mem_eof_return(inbound, 0);
	return 0;
}

size_t sp_tls_outbound_pending(SSL *ssl)
{
	BIO *outbound = ssl != NULL ? memory_bio(SSL_get_wbio(ssl)) : NULL;
	return outbound != NULL ? BIO_ctrl_pending(outbound) : 0;
}

int sp_tls_outbound_view(SSL *ssl, const uint8_t **data, size_t *len)
{
	BIO *outbound = ssl != NULL ? memory_bio(SSL_get_wbio(ssl)) : NULL;
	char *mem = NULL;
	*data = NULL;
	*len = 0;
	if (outbound == NULL)
		return SP_ERR_INVALID;
	long n = BIO_get_mem_data(outbound, &mem);
	if (n > 0 && mem != NULL) {
		*data = (const uint8_t *)mem;
		*len = (size_t)n;
	}
	return 0;
}

int sp_tls_outbound_consume(SSL *ssl, size_t n)
{
	BIO *outbound = ssl != NULL ? memory_bio(SSL_get_wbio(ssl)) : NULL;
	uint8_t scratch[4096];
	if (outbound == NULL || n > BIO_ctrl_pending(outbound))
		return SP_ERR_INVALID;
	while (n > 0) {
		int chunk = (int)(n < sizeof(scratch) ? n : sizeof(scratch));
		if (BIO_read(outbound, scratch, chunk) != chunk) {
			ERR_clear_error();
			return SP_ERR_INTERNAL;
		}
		n -= (size_t)chunk;
	}
	return 0;
}

static int move_ciphertext(SSL *from, SSL *to, size_t *moved)
{
	const uint8_t *data;
	size_t len;
	int r = sp_tls_outbound_view(from, &data, &len);
	if (r < 0)
		return r;
	size_t room = sp_tls_inbound_room(to);
	size_t n = len < room ? len : room;
	if (n == 0)
		return 0;
	if ((r = sp_tls_feed(to, data, n)) < 0 || (r = sp_tls_outbound_consume(from, n)) < 0)
		return r;
	*moved += n;
	return 0;
}

int sp_tls_pump(SSL *a, SSL *b, size_t *moved)
{
	size_t total = 0;
	int r;
	if (a == NULL || b == NULL || memory_bio(SSL_get_rbio(a)) == NULL ||
	    memory_bio(SSL_get_wbio(a)) == NULL || memory_bio(SSL_get_rbio(b)) == NULL ||
	    memory_bio(SSL_get_wbio(b)) == NULL)
		return SP_ERR_INVALID;
	if ((r = move_ciphertext(a, b, &total)) < 0 || (r = move_ciphertext(b, a, &total)) < 0)
		return r;
	if (moved != NULL)
		*moved += total;
	return 0;
}

/*
 * A side that finished its handshake learns of its peer's late refusal only when it next
 * reads. Peek (which keeps any application data) so the alert shows in its outcome.
 */
static void surface_late_failure(SSL *ssl, struct sp_tls_outcome *outcome)
{
	uint8_t byte;
	ERR_clear_error();
	int ret = SSL_peek(ssl, &byte, 1);
	if (ret > 0)
		return;
	struct sp_diag diag;
	int r = sp_tls_error(ssl, ret, &diag);
	if (r < 0 && r != SP_ERR_AGAIN) {
		outcome->result = r;
		outcome->diag = diag;
	}
}

static void mark_stalled(struct sp_tls_outcome *outcome, int rounds)
{
	if (outcome->result == SP_ERR_AGAIN)
		outcome->result = sp_diag_set(&outcome->diag, SP_ERR_TLS,
		                              "handshake stalled: the peer sent nothing more "
		                              "(round %d)",
		                              rounds);
}

int sp_tls_handshake_pair(SSL *a, SSL *b, struct sp_tls_outcome *outcome_a,
                          struct sp_tls_outcome *outcome_b)
{
	const struct sp_tls_outcome *first_failure = NULL;
	int round;
	memset(outcome_a, 0, sizeof(*outcome_a));
	memset(outcome_b, 0, sizeof(*outcome_b));
	outcome_a->result = SP_ERR_AGAIN;
	outcome_b->result = SP_ERR_AGAIN;
	for (round = 1; round <= PAIR_MAX_ROUNDS; round++) {
		size_t moved = 0;
		if (outcome_a->result == SP_ERR_AGAIN) {
			outcome_a->result = sp_tls_handshake_step(a, &outcome_a->diag);
			if (outcome_a->result < 0 && outcome_a->result != SP_ERR_AGAIN &&
			    first_failure == NULL)
				first_failure = outcome_a;
		}
		if (outcome_b->result == SP_ERR_AGAIN) {
			outcome_b->result = sp_tls_handshake_step(b, &outcome_b->diag);
			if (outcome_b->result < 0 && outcome_b->result != SP_ERR_AGAIN &&
			    first_failure == NULL)
				first_failure = outcome_b;
		}
		int r = sp_tls_pump(a, b, &moved);
		if (r < 0) {
			if (outcome_a->result == SP_ERR_AGAIN)
				outcome_a->result = sp_diag_set(&outcome_a->diag, r, "pump failed");
			if (outcome_b->result == SP_ERR_AGAIN)
				outcome_b->result = sp_diag_set(&outcome_b->diag, r, "pump failed");
			break;
		}
		if (outcome_a->result != SP_ERR_AGAIN && outcome_b->result != SP_ERR_AGAIN)
			break;
		if (moved == 0)
			break;
	}
	mark_stalled(outcome_a, round);
	mark_stalled(outcome_b, round);
	if (outcome_a->result < 0 && outcome_b->result == 0)
		surface_late_failure(b, outcome_b);
	else if (outcome_b->result < 0 && outcome_a->result == 0)
		surface_late_failure(a, outcome_a);
	if (first_failure != NULL)
		return first_failure->result;
	return outcome_a->result < 0 ? outcome_a->result : outcome_b->result;
}
