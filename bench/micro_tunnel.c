/*
 * bench/micro_tunnel.c — the tunnel's data plane in memory: one stream's throughput as
 * plaintext HTTP/2 and through TLS 1.3 (AES-128-GCM, real handshake), and flows opened,
 * accepted and closed per second on a warm tunnel. Both ends run in this thread, so each
 * figure includes the work of sender and receiver together (a lower bound for one side).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "bench/micro.h"
#include "shared/keys.h"
#include "shared/tls.h"
#include "shared/tunnel.h"
#include "shared/tunnel_tls.h"

#define BENCH_TUNNEL_BYTES (256u << 20)
#define BENCH_TUNNEL_FLOWS 20000
#define BENCH_TUNNEL_BATCH 100

/* What the receiving side counts. */
struct bench_tunnel_app {
	uint64_t received;
	uint64_t opened;
	uint64_t closed;
	uint64_t results;
};

static void bench_on_open_request(struct sp_tunnel *t, int32_t stream,
				  const struct sp_tunnel_open_request *req, void *user)
{
	(void)req;
	struct bench_tunnel_app *app = user;
	app->opened++;
	(void)sp_tunnel_accept(t, stream);
	(void)sp_tunnel_end(t, stream);
}

static void bench_on_open_result(struct sp_tunnel *t, int32_t stream, int status,
				 enum sp_tunnel_reason reason, void *user)
{
	(void)reason;
	struct bench_tunnel_app *app = user;
	app->results++;
	if (status == 200)
		(void)sp_tunnel_end(t, stream);
}

/* The destination takes everything at once. */
static void bench_on_data(struct sp_tunnel *t, int32_t stream, const uint8_t *data, size_t len,
			  void *user)
{
	(void)data;
	struct bench_tunnel_app *app = user;
	app->received += len;
	(void)sp_tunnel_consumed(t, stream, len);
}

static void bench_on_closed(struct sp_tunnel *t, int32_t stream, uint32_t code, void *user)
{
	(void)t;
	(void)stream;
	(void)code;
	struct bench_tunnel_app *app = user;
	app->closed++;
}

static const struct sp_tunnel_callbacks bench_tunnel_callbacks = {
    .on_open_request = bench_on_open_request,
    .on_open_result = bench_on_open_result,
    .on_data = bench_on_data,
    .on_closed = bench_on_closed,
};

/* Plaintext: moves one side's output into the other. */
static int bench_move(struct sp_tunnel *from, struct sp_tunnel *to, struct sp_buf *buf)
{
	sp_buf_reset(buf);
	if (sp_tunnel_send(from, buf) != 0)
		return -1;
	if (buf->len > 0 && sp_tunnel_recv(to, buf->data, buf->len, NULL) != 0)
		return -1;
	return (int)(buf->len > 0);
}

/* Ciphertext: moves one side's TLS output into the other. */
static int bench_move_tls(struct sp_tunnel_tls *from, struct sp_tunnel_tls *to)
{
	const uint8_t *data;
	size_t len, used;
	if (sp_tunnel_tls_flush(from, NULL) != 0 ||
	    sp_tunnel_tls_outbound_view(from, &data, &len) != 0)
		return -1;
	if (len == 0)
		return 0;
	if (sp_tunnel_tls_recv(to, data, len, &used, NULL) != 0 ||
	    sp_tunnel_tls_outbound_consume(from, used) != 0)
		return -1;
	return 1;
}

struct bench_tls_pair {
	EVP_PKEY *client_key, *server_key;
	SSL_CTX *client_ctx, *server_ctx;
	SSL *client, *server;
	struct sp_tunnel_tls *client_tt, *server_tt;
};

static void bench_tls_pair_free(struct bench_tls_pair *p)
{
	sp_tunnel_tls_free(p->client_tt);
	sp_tunnel_tls_free(p->server_tt);
	SSL_free(p->client);
	SSL_free(p->server);
	SSL_CTX_free(p->client_ctx);
	SSL_CTX_free(p->server_ctx);
	EVP_PKEY_free(p->client_key);
	EVP_PKEY_free(p->server_key);
}

static int bench_tls_pair_new(struct bench_tls_pair *p, struct sp_tunnel *client,
			      struct sp_tunnel *server)
{
	static const char *const alpn[] = {SP_TLS_ALPN_SALLYPORT_1};
	struct sp_tls_options opts = {.alpn = alpn, .alpn_count = 1, .now = 1767225600};
	uint8_t pin[SP_KEY_SPKI_DIGEST_LEN];
	memset(p, 0, sizeof(*p));
	if (sp_key_generate(&p->client_key) != 0 || sp_key_generate(&p->server_key) != 0 ||
	    sp_key_spki_sha256(p->server_key, pin) != 0 ||
	    sp_tls_server_ctx_new(p->server_key, &opts, &p->server_ctx, NULL) != 0 ||
	    sp_tls_client_ctx_new(p->client_key, &opts, &p->client_ctx, NULL) != 0 ||
	    sp_tls_conn_new_memory(p->server_ctx, &p->server) != 0 ||
	    sp_tls_conn_new_memory(p->client_ctx, &p->client) != 0 ||
	    sp_tls_set_expected_peer(p->client, pin) != 0 ||
	    sp_tunnel_tls_new(p->client, client, &p->client_tt) != 0 ||
	    sp_tunnel_tls_new(p->server, server, &p->server_tt) != 0)
		return -1;
	return 0;
}

/* Sends `bytes` on one stream from client to server; returns seconds or < 0. */
static double bench_one_stream(int with_tls, uint64_t bytes, const char **cipher)
{
	struct bench_tunnel_app client_app = {0}, server_app = {0};
	struct sp_tunnel *client = NULL, *server = NULL;
	struct bench_tls_pair pair;
	struct sp_buf buf;
	double seconds = -1;
	memset(&pair, 0, sizeof(pair));
	sp_buf_init(&buf, 1u << 20);
	static uint8_t chunk[64 * 1024];
	memset(chunk, 0x5a, sizeof(chunk));
	/* A long-lived flow: the server accepts it below, neither side ends it. */
	struct sp_tunnel_callbacks client_cb = bench_tunnel_callbacks;
	struct sp_tunnel_callbacks server_cb = bench_tunnel_callbacks;
	client_cb.on_open_result = NULL;
	server_cb.on_open_request = NULL;
	if (sp_tunnel_new(SP_TUNNEL_CLIENT, &client_cb, &client_app, NULL, &client) != 0 ||
	    sp_tunnel_new(SP_TUNNEL_SERVER, &server_cb, &server_app, NULL, &server) != 0)
		goto out;
	if (with_tls && bench_tls_pair_new(&pair, client, server) != 0)
		goto out;
	struct sp_tunnel_open_request req = {"bench.example:9000", SP_TUNNEL_PROTO_TCP,
					     "eyJhbGciOiJFUzI1NiJ9.e30.c2ln",
					     "00000000000000000000000000000001"};
	int32_t id;
	if (sp_tunnel_open(client, &req, &id, NULL) != 0)
		goto out;
	/* Open and accept before the clock starts. */
	for (int i = 0; i < 8; i++) {
		if (with_tls) {
			if (bench_move_tls(pair.client_tt, pair.server_tt) < 0 ||
			    bench_move_tls(pair.server_tt, pair.client_tt) < 0)
				goto out;
		} else if (bench_move(client, server, &buf) < 0 ||
			   bench_move(server, client, &buf) < 0) {
			goto out;
		}
		if (i == 2)
			(void)sp_tunnel_accept(server, id);
	}
	if (with_tls && cipher != NULL)
		*cipher = SSL_get_cipher_name(pair.client);
	uint64_t written = 0;
	double start = bench_now();
	while (server_app.received < bytes) {
		while (written < bytes) {
			size_t took = 0;
			if (sp_tunnel_write(client, id, chunk, sizeof(chunk), &took) != 0)
				goto out;
			if (took == 0)
				break;
			written += took;
		}
		int moved;
		if (with_tls)
			moved = bench_move_tls(pair.client_tt, pair.server_tt) |
				bench_move_tls(pair.server_tt, pair.client_tt);
		else
			moved = bench_move(client, server, &buf) | bench_move(server, client, &buf);
		if (moved < 0)
			goto out;
		if (moved == 0 && written == bytes && server_app.received < bytes)
			goto out; /* stalled */
	}
	seconds = bench_now() - start;
out:
	if (with_tls)
		bench_tls_pair_free(&pair);
	sp_tunnel_free(client);
	sp_tunnel_free(server);
	sp_buf_free(&buf);
	return seconds;
}

/* Opens, accepts and closes `flows` streams, BENCH_TUNNEL_BATCH at a time. */
static double bench_flows(uint64_t flows)
{
	struct bench_tunnel_app client_app = {0}, server_app = {0};
	struct sp_tunnel *client = NULL, *server = NULL;
	struct sp_buf buf;
	double seconds = -1;
	sp_buf_init(&buf, 1u << 20);
	if (sp_tunnel_new(SP_TUNNEL_CLIENT, &bench_tunnel_callbacks, &client_app, NULL, &client) !=
		0 ||
	    sp_tunnel_new(SP_TUNNEL_SERVER, &bench_tunnel_callbacks, &server_app, NULL, &server) !=
		0)
		goto out;
	/* Warm: SETTINGS exchanged. */
	for (int i = 0; i < 4; i++)
		if (bench_move(client, server, &buf) < 0 || bench_move(server, client, &buf) < 0)
			goto out;
	/* A realistic grant: about 1 KiB, indexed by HPACK after its first use. */
	char grant[1024];
	memset(grant, 'g', sizeof(grant) - 1);
	grant[300] = '.';
	grant[700] = '.';
	grant[sizeof(grant) - 1] = '\0';
	double start = bench_now();
	uint64_t opened = 0;
	while (client_app.closed < flows) {
		for (int i = 0; i < BENCH_TUNNEL_BATCH && opened < flows; i++) {
			char flow_id[SP_TUNNEL_FLOW_ID_LEN + 1];
			snprintf(flow_id, sizeof(flow_id), "%032llx", (unsigned long long)opened);
			struct sp_tunnel_open_request req = {"bench.example:9000",
							     SP_TUNNEL_PROTO_TCP, grant, flow_id};
			int32_t id;
			if (sp_tunnel_open(client, &req, &id, NULL) != 0)
				goto out;
			opened++;
		}
		int moved = 1;
		while (moved > 0)
			moved = bench_move(client, server, &buf) | bench_move(server, client, &buf);
		if (moved < 0)
			goto out;
	}
	seconds = bench_now() - start;
out:
	sp_tunnel_free(client);
	sp_tunnel_free(server);
	sp_buf_free(&buf);
	return seconds;
}

int bench_tunnel(void)
{
	double s = bench_one_stream(0, BENCH_TUNNEL_BYTES, NULL);
	if (s < 0) {
		printf("  tunnel: plaintext transfer failed\n");
		return 1;
	}
	bench_report("one stream, plaintext HTTP/2", (double)BENCH_TUNNEL_BYTES / s / 1e6, "MB/s",
		     "256 MiB, both ends in one thread");
	const char *cipher = NULL;
	s = bench_one_stream(1, BENCH_TUNNEL_BYTES, &cipher);
	if (s < 0) {
		printf("  tunnel: TLS transfer failed\n");
		return 1;
	}
	char note[96];
	snprintf(note, sizeof(note), "%s, encrypt + decrypt in one thread",
		 cipher != NULL ? cipher : "?");
	bench_report("one stream, HTTP/2 in TLS 1.3", (double)BENCH_TUNNEL_BYTES / s / 1e6, "MB/s",
		     note);
	s = bench_flows(BENCH_TUNNEL_FLOWS);
	if (s < 0) {
		printf("  tunnel: flow churn failed\n");
		return 1;
	}
	bench_report("flows opened+accepted+closed", (double)BENCH_TUNNEL_FLOWS / s, "flows/s",
		     "warm tunnel, 100 in flight, 1 KiB grant");
	return 0;
}
