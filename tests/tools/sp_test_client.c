/*
 * sp_test_client — a test harness standing in for the Sallyport client, so the
 * connector can be tested end to end before the real client exists. NOT a product:
 * it mints its own access token from the controller's database (the test owns it).
 *
 *   sp_test_client keygen KEYFILE
 *       creates a P-256 device key (0600) if absent; prints {"jkt", "public_key_pem"}
 *   sp_test_client connect --url URL --db CONTROLLER.db --user ID --session ID
 *                          --device ID --device-key KEYFILE --resource ID
 *                          --target HOST:PORT [--tls-key KEYFILE] [--stats]
 *       mints an access token (docs/protocol.md §1.3) with the controller's active
 *       signing key, fetches a grant (POST /api/client/v1/grants) and the resource list
 *       (GET /api/client/v1/resources: the connector's direct address and key digest),
 *       opens a TLS tunnel pinned to that digest presenting the device key (or
 *       --tls-key, to test key binding), opens one stream to --target and relays
 *       stdin -> stream and stream -> stdout.
 *       With --udp the stream is a datagram flow (docs/protocol.md §2.1): every stdin
 *       line is one datagram, every datagram received is one stdout line (both hex with
 *       --hex); after stdin ends it waits for --expect N datagrams (default 1) or --wait
 *       S seconds (default 5), then ends the stream.
 *   sp_test_client forward --listen 127.0.0.1:PORT (and the connect options but --tls-key)
 *       the stand-in for the client's loopback mode: every TCP connection accepted on
 *       PORT becomes a NEW stream to --target on one shared warm tunnel (another tunnel is
 *       dialed only past the stream limit); the grant is fetched again 60 s before it
 *       expires. Runs until killed.
 *
 *   --relay (connect and forward): the tunnel goes through the relay (docs/protocol.md §3):
 *       a ticket from POST /api/client/v1/relay-tickets, the first relay it lists (or
 *       --relay-addr HOST:PORT), "SPRC" + ticket, the status byte, then the same TLS.
 *       --ticket-save FILE writes {"ticket", "relay"}; --ticket-load FILE uses that ticket
 *       again instead of asking for one (a replay test).
 *
 * Exit: 0 stream ended cleanly; 3 refused (stderr "refused: REASON"); 4 no grant
 * (stderr "grant refused: CODE" or "ticket refused: CODE"); 5 reset (stderr "reset: CODE");
 * 6 refused by the relay (stderr "relay refused: NAME"); 1 other errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <sqlite3.h>

#include "shared/jwk.h"
#include "shared/keys.h"
#include "shared/tls.h"
#include "shared/token.h"
#include "shared/tunnel.h"
#include "shared/tunnel_tls.h"
#include "shared/wire.h"

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *msg)
{
	fprintf(stderr, "sp_test_client: %s\n", msg);
	exit(1);
}

/* ---- HTTP ---- */

struct body {
	char *data;
	size_t len;
};

static size_t on_body(char *p, size_t size, size_t n, void *user)
{
	struct body *b = user;
	char *g = realloc(b->data, b->len + size * n + 1);
	if (g == NULL)
		return 0;
	b->data = g;
	memcpy(b->data + b->len, p, size * n);
	b->len += size * n;
	b->data[b->len] = '\0';
	return size * n;
}

static long http(const char *url, const char *path, const char *post, const char *bearer,
		 json_t **out)
{
	CURL *c = curl_easy_init();
	char full[2048], auth[20000];
	snprintf(full, sizeof(full), "%s%s", url, path);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", bearer);
	struct curl_slist *h = curl_slist_append(NULL, auth);
	h = curl_slist_append(h, "Content-Type: application/json");
	struct body b = {0};
	curl_easy_setopt(c, CURLOPT_URL, full);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	if (post != NULL)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, post);
	long status = 0;
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	*out = b.data != NULL ? json_loads(b.data, 0, NULL) : NULL;
	free(b.data);
	return status;
}

/* ---- access token from the controller's database ---- */

static char *mint_access_token(const char *db_path, const char *url, const char *user,
			       const char *session, const char *device, const char *jkt)
{
	sqlite3 *db = NULL;
	if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		die("cannot open the controller database");
	sqlite3_busy_timeout(db, 5000);
	sqlite3_stmt *st = NULL;
	int64_t now = (int64_t)time(NULL);
	if (sqlite3_prepare_v2(db,
			       "SELECT kid, private_key_pem FROM signing_keys WHERE not_before <= ?"
			       " AND not_after > ? ORDER BY not_before DESC LIMIT 1",
			       -1, &st, NULL) != SQLITE_OK)
		die("signing_keys query failed");
	sqlite3_bind_int64(st, 1, now);
	sqlite3_bind_int64(st, 2, now);
	if (sqlite3_step(st) != SQLITE_ROW)
		die("no active signing key in the controller database");
	const char *kid = (const char *)sqlite3_column_text(st, 0);
	const char *pem = (const char *)sqlite3_column_text(st, 1);
	EVP_PKEY *key = NULL;
	if (sp_key_from_pem(pem, strlen(pem), 0, &key, NULL) < 0)
		die("cannot parse the signing key");
	json_t *claims = json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:{s:s}}", "v", 1,
				   "typ", "access", "iss", url, "aud", "sallyport:controller", "iat",
				   (json_int_t)now, "exp", (json_int_t)(now + 600), "sub", user,
				   "sid", session, "dev", device, "cnf", "jkt", jkt);
	char *jws = NULL;
	if (claims == NULL || sp_token_sign_es256(key, kid, claims, &jws) < 0)
		die("cannot sign the access token");
	json_decref(claims);
	EVP_PKEY_free(key);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return jws;
}

static json_t *jws_payload(const char *jws)
{
	const char *a = strchr(jws, '.');
	const char *b = a != NULL ? strchr(a + 1, '.') : NULL;
	if (b == NULL)
		return NULL;
	size_t cap = (size_t)(b - a) + 4;
	uint8_t *buf = malloc(cap);
	size_t len = 0;
	json_t *out = NULL;
	if (buf != NULL &&
	    sp_jwk_base64url_decode(a + 1, (size_t)(b - a - 1), buf, cap, &len) == 0)
		out = json_loadb((const char *)buf, len, 0, NULL);
	free(buf);
	return out;
}

/* ---- tunnel ---- */

struct client {
	int32_t stream;
	int status;
	enum sp_tunnel_reason reason;
	int closed;
	uint32_t close_code;
	int remote_ended;
	struct sp_tunnel *tunnel;
	uint64_t bytes;
	double opened_at, first_byte_at;
	int udp, hex;		/* --udp: datagram frames; --hex: lines are hex */
	uint8_t *rx;		/* --udp: stream bytes not yet a whole frame */
	size_t rx_len;
	uint64_t datagrams;	/* --udp: datagrams received */
};

static void write_all(const void *data, size_t len)
{
	const uint8_t *p = data;
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(1, p + done, len - done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			die("stdout write failed");
		done += (size_t)n;
	}
}

/* --udp: prints every whole datagram in c->rx as one line (hex with --hex). */
static void udp_print(struct client *c)
{
	size_t off = 0;
	for (;;) {
		const uint8_t *payload = NULL;
		size_t len = 0;
		int r = sp_udp_frame_decode(c->rx + off, c->rx_len - off, &payload, &len);
		if (r == SP_ERR_AGAIN)
			break;
		if (r < 0)
			die("bad datagram frame from the connector");
		if (c->hex) {
			char pair[3];
			for (size_t i = 0; i < len; i++) {
				snprintf(pair, sizeof(pair), "%02x", payload[i]);
				write_all(pair, 2);
			}
		} else {
			write_all(payload, len);
		}
		write_all("\n", 1);
		c->datagrams++;
		off += (size_t)r;
	}
	memmove(c->rx, c->rx + off, c->rx_len - off);
	c->rx_len -= off;
}

static void on_open_result(struct sp_tunnel *t, int32_t stream, int status,
			   enum sp_tunnel_reason reason, void *user)
{
	(void)t;
	(void)stream;
	struct client *c = user;
	c->status = status;
	c->reason = reason;
}

static void on_data(struct sp_tunnel *t, int32_t stream, const uint8_t *data, size_t len,
		    void *user)
{
	struct client *c = user;
	if (c->first_byte_at == 0)
		c->first_byte_at = mono();
	if (c->udp) {
		uint8_t *g = realloc(c->rx, c->rx_len + len);
		if (g == NULL)
			die("out of memory");
		c->rx = g;
		memcpy(c->rx + c->rx_len, data, len);
		c->rx_len += len;
		udp_print(c);
	} else {
		write_all(data, len);
	}
	c->bytes += len;
	sp_tunnel_consumed(t, stream, len);
}

static void on_remote_end(struct sp_tunnel *t, int32_t stream, void *user)
{
	(void)t;
	(void)stream;
	((struct client *)user)->remote_ended = 1;
}

static void on_closed(struct sp_tunnel *t, int32_t stream, uint32_t code, void *user)
{
	(void)t;
	(void)stream;
	struct client *c = user;
	c->closed = 1;
	c->close_code = code;
}

static int hex_to_bytes(const char *hex, uint8_t *out, size_t n)
{
	if (strlen(hex) != n * 2)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (uint8_t)v;
	}
	return 0;
}

/* Connects to HOST:PORT; -1 when the connection is refused or fails (the caller decides). */
static int dial_try(const char *hostport)
{
	char host[256];
	const char *colon = strrchr(hostport, ':');
	if (colon == NULL || (size_t)(colon - hostport) >= sizeof(host))
		die("bad direct address");
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = '\0';
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
		die("cannot resolve the direct address");
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1 || connect(fd, res->ai_addr, res->ai_addrlen) == -1) {
		if (fd != -1)
			close(fd);
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

static int dial(const char *hostport)
{
	int fd = dial_try(hostport);
	if (fd == -1)
		die("cannot connect to the connector");
	return fd;
}

static void pump_out(int fd, struct sp_tunnel_tls *tt)
{
	for (;;) {
		if (sp_tunnel_tls_flush(tt, NULL) < 0)
			die("tunnel flush failed");
		const uint8_t *data;
		size_t len = 0;
		sp_tunnel_tls_outbound_view(tt, &data, &len);
		if (len == 0)
			return;
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
		if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			poll(&p, 1, 1000);
			continue;
		}
		if (n == -1)
			die("send to the connector failed");
		sp_tunnel_tls_outbound_consume(tt, (size_t)n);
	}
}

static const char *arg(int argc, char **argv, const char *name)
{
	for (int i = 2; i + 1 < argc; i++)
		if (strcmp(argv[i], name) == 0)
			return argv[i + 1];
	return NULL;
}

static int has_flag(int argc, char **argv, const char *name)
{
	for (int i = 2; i < argc; i++)
		if (strcmp(argv[i], name) == 0)
			return 1;
	return 0;
}

static const char *need(int argc, char **argv, const char *name)
{
	const char *v = arg(argc, argv, name);
	if (v == NULL) {
		fprintf(stderr, "sp_test_client: %s is required\n", name);
		exit(1);
	}
	return v;
}

static int command_keygen(const char *path)
{
	EVP_PKEY *key = NULL;
	int created = 0;
	if (sp_key_load_or_create(path, &key, &created, NULL) < 0)
		die("cannot create the key");
	char jkt[SP_JWK_THUMBPRINT_LEN + 1];
	char *pem = NULL;
	size_t pem_len = 0;
	sp_jwk_thumbprint(key, jkt);
	sp_key_public_pem(key, &pem, &pem_len);
	json_t *o = json_pack("{s:s, s:s%}", "jkt", jkt, "public_key_pem", pem, pem_len);
	char *text = json_dumps(o, JSON_COMPACT);
	printf("%s\n", text);
	free(text);
	json_decref(o);
	sp_key_free_pem(pem, pem_len);
	EVP_PKEY_free(key);
	return 0;
}

/* Grant + the connector of the resource's network, as {"grant", "direct", "digest"}; NULL
 * (after printing "grant refused: CODE") when the controller refuses the grant. */
static json_t *fetch_grant_and_connector(int argc, char **argv, const char *url,
					 const char *resource, EVP_PKEY *device_key)
{
	char jkt[SP_JWK_THUMBPRINT_LEN + 1];
	sp_jwk_thumbprint(device_key, jkt);
	char *access = mint_access_token(need(argc, argv, "--db"), url, need(argc, argv, "--user"),
					 need(argc, argv, "--session"), need(argc, argv, "--device"),
					 jkt);

	char body[256];
	snprintf(body, sizeof(body), "{\"resource_id\":\"%s\"}", resource);
	json_t *answer = NULL;
	long status = http(url, "/api/client/v1/grants", body, access, &answer);
	if (status != 200) {
		const char *code = json_string_value(
		    json_object_get(json_object_get(answer, "error"), "code"));
		fprintf(stderr, "grant refused: %s (HTTP %ld)\n", code != NULL ? code : "?", status);
		json_decref(answer);
		free(access);
		return NULL;
	}
	char *grant = strdup(json_string_value(json_object_get(answer, "grant")));
	json_decref(answer);
	status = http(url, "/api/client/v1/resources", NULL, access, &answer);
	if (status != 200)
		die("resource list refused");
	json_t *list = jws_payload(json_string_value(json_object_get(answer, "document")));
	json_decref(answer);
	/* the resource's network, then its first connector with a direct address */
	const char *network = NULL, *direct = NULL, *digest = NULL, *connector_id = NULL;
	size_t i;
	json_t *item;
	json_array_foreach(json_object_get(list, "resources"), i, item)
	{
		if (strcmp(json_string_value(json_object_get(item, "id")), resource) == 0)
			network = json_string_value(json_object_get(item, "network_id"));
	}
	const char *want_network = arg(argc, argv, "--network");
	if (network == NULL)
		network = want_network; /* a resource outside the list: say which network */
	json_array_foreach(json_object_get(list, "networks"), i, item)
	{
		if (network == NULL || strcmp(json_string_value(json_object_get(item, "id")), network) != 0)
			continue;
		json_t *conn = json_array_get(json_object_get(item, "connectors"), 0);
		direct = json_string_value(json_object_get(conn, "direct_address"));
		digest = json_string_value(json_object_get(conn, "public_key_digest"));
		connector_id = json_string_value(json_object_get(conn, "id"));
	}
	int relay = has_flag(argc, argv, "--relay");
	if ((direct == NULL && !relay) || digest == NULL || connector_id == NULL)
		die("no connector with a direct address for the resource's network");
	json_t *out = json_pack("{s:s, s:s?, s:s, s:s}", "grant", grant, "direct", direct, "digest",
				digest, "connector_id", connector_id);
	free(grant);
	free(access);
	json_decref(list);
	return out;
}

/* Through the relay: a ticket (fetched, or --ticket-load), "SPRC" + ticket, the status
 * byte. Exits 4 when the controller refuses the ticket, 6 when the relay refuses it. */
static int relay_dial(int argc, char **argv, const char *url, EVP_PKEY *device_key,
		      json_t *saved)
{
	json_t *ticket_doc = NULL;
	const char *load = arg(argc, argv, "--ticket-load");
	if (load != NULL) {
		ticket_doc = json_load_file(load, 0, NULL);
		if (ticket_doc == NULL)
			die("cannot read --ticket-load file");
	} else {
		char jkt[SP_JWK_THUMBPRINT_LEN + 1];
		sp_jwk_thumbprint(device_key, jkt);
		char *access = mint_access_token(need(argc, argv, "--db"), url,
						 need(argc, argv, "--user"),
						 need(argc, argv, "--session"),
						 need(argc, argv, "--device"), jkt);
		char body[256];
		snprintf(body, sizeof(body), "{\"connector_id\":\"%s\"}",
			 json_string_value(json_object_get(saved, "connector_id")));
		json_t *answer = NULL;
		long status = http(url, "/api/client/v1/relay-tickets", body, access, &answer);
		free(access);
		if (status != 200) {
			const char *code = json_string_value(
			    json_object_get(json_object_get(answer, "error"), "code"));
			fprintf(stderr, "ticket refused: %s (HTTP %ld)\n", code != NULL ? code : "?",
				status);
			exit(4);
		}
		const char *relay = arg(argc, argv, "--relay-addr");
		if (relay == NULL)
			relay = json_string_value(json_array_get(json_object_get(answer, "relays"), 0));
		if (relay == NULL)
			die("the controller lists no relay");
		ticket_doc = json_pack("{s:O, s:s}", "ticket", json_object_get(answer, "ticket"),
				       "relay", relay);
		json_decref(answer);
		const char *save = arg(argc, argv, "--ticket-save");
		if (save != NULL && json_dump_file(ticket_doc, save, 0) < 0)
			die("cannot write --ticket-save file");
	}
	const char *ticket = json_string_value(json_object_get(ticket_doc, "ticket"));
	const char *relay = json_string_value(json_object_get(ticket_doc, "relay"));
	if (ticket == NULL || relay == NULL)
		die("no ticket or relay");
	struct sp_buf hello;
	sp_buf_init(&hello, 16 + SP_RELAY_TICKET_MAX);
	if (sp_relay_client_hello_encode((const uint8_t *)ticket, strlen(ticket), &hello) < 0)
		die("cannot encode the relay preamble");
	int fd = dial(relay);
	size_t off = 0;
	while (off < hello.len) {
		ssize_t n = send(fd, hello.data + off, hello.len - off, MSG_NOSIGNAL);
		if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			poll(&p, 1, 1000);
			continue;
		}
		if (n <= 0)
			die("send to the relay failed");
		off += (size_t)n;
	}
	sp_buf_free(&hello);
	json_decref(ticket_doc);
	uint8_t status = 0xff;
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 10000) <= 0)
			die("no answer from the relay");
		ssize_t n = recv(fd, &status, 1, 0);
		if (n == 1)
			break;
		if (n == 0)
			die("the relay closed the connection without a status");
		if (errno != EAGAIN && errno != EINTR)
			die("recv from the relay failed");
	}
	if (status != SP_RELAY_PAIRED) {
		fprintf(stderr, "relay refused: %s\n", sp_relay_status_name(status));
		exit(6);
	}
	return fd;
}

/* A socket to the connector: direct, or through the relay with --relay. */
static int tunnel_dial(int argc, char **argv, const char *url, EVP_PKEY *device_key,
		       json_t *saved)
{
	if (has_flag(argc, argv, "--relay"))
		return relay_dial(argc, argv, url, device_key, saved);
	const char *direct = json_string_value(json_object_get(saved, "direct"));
	if (direct == NULL)
		die("no connector with a direct address");
	return dial(direct);
}

static int command_connect(int argc, char **argv)
{
	const char *url = need(argc, argv, "--url");
	const char *target = need(argc, argv, "--target");
	const char *resource = need(argc, argv, "--resource");
	EVP_PKEY *device_key = NULL, *tls_key = NULL;
	if (sp_key_load_private(need(argc, argv, "--device-key"), &device_key, NULL) < 0)
		die("cannot load --device-key");
	const char *tls_path = arg(argc, argv, "--tls-key");
	if (tls_path != NULL && sp_key_load_private(tls_path, &tls_key, NULL) < 0)
		die("cannot load --tls-key");
	/* --load FILE: reuse a grant and connector saved by an earlier run (--save FILE), so
	 * a flow can be opened while the controller is away. */
	const char *load = arg(argc, argv, "--load");
	json_t *saved = NULL;
	if (load != NULL) {
		saved = json_load_file(load, 0, NULL);
		if (saved == NULL)
			die("cannot read --load file");
	} else {
		saved = fetch_grant_and_connector(argc, argv, url, resource, device_key);
		if (saved == NULL) {
			EVP_PKEY_free(device_key);
			EVP_PKEY_free(tls_key);
			return 4;
		}
		const char *save = arg(argc, argv, "--save");
		if (save != NULL && json_dump_file(saved, save, 0) < 0)
			die("cannot write --save file");
	}
	const char *grant = json_string_value(json_object_get(saved, "grant"));
	const char *digest = json_string_value(json_object_get(saved, "digest"));
	if (grant == NULL || digest == NULL)
		die("no grant or no connector");
	uint8_t pin[SP_KEY_SPKI_DIGEST_LEN];
	if (hex_to_bytes(digest, pin, sizeof(pin)) < 0)
		die("bad public_key_digest");

	const char *alpn[] = {SP_TLS_ALPN_SALLYPORT_1};
	struct sp_tls_options o = {.alpn = alpn, .alpn_count = 1, .now = (int64_t)time(NULL)};
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	struct sp_diag d = {{0}};
	if (sp_tls_client_ctx_new(tls_key != NULL ? tls_key : device_key, &o, &ctx, &d) < 0 ||
	    sp_tls_conn_new_memory(ctx, &ssl) < 0 || sp_tls_set_expected_peer(ssl, pin) < 0)
		die(d.message[0] ? d.message : "tls setup failed");
	struct client c = {0};
	struct sp_tunnel_callbacks cb = {.on_open_result = on_open_result,
					 .on_data = on_data,
					 .on_remote_end = on_remote_end,
					 .on_closed = on_closed};
	struct sp_tunnel *t = NULL;
	struct sp_tunnel_tls *tt = NULL;
	if (sp_tunnel_new(SP_TUNNEL_CLIENT, &cb, &c, NULL, &t) < 0 || sp_tunnel_tls_new(ssl, t, &tt) < 0)
		die("tunnel setup failed");
	c.tunnel = t;
	char flow_id[SP_TUNNEL_FLOW_ID_LEN + 1];
	uint8_t rnd[16];
	RAND_bytes(rnd, sizeof(rnd));
	for (size_t k = 0; k < 16; k++)
		snprintf(flow_id + 2 * k, 3, "%02x", rnd[k]);
	c.udp = has_flag(argc, argv, "--udp");
	c.hex = has_flag(argc, argv, "--hex");
	struct sp_tunnel_open_request req = {.authority = target,
					     .proto = c.udp ? SP_TUNNEL_PROTO_UDP : SP_TUNNEL_PROTO_TCP,
					     .grant = grant,
					     .flow_id = flow_id};
	int fd = tunnel_dial(argc, argv, url, device_key, saved);
	c.opened_at = mono();
	if (sp_tunnel_open(t, &req, &c.stream, &d) < 0)
		die(d.message);
	pump_out(fd, tt);

	int stdin_open = 1;
	int ended = 0;
	uint8_t buf[65536];
	int rc = 0;
	/* --udp: after stdin ends, wait for --expect datagrams (default 1) or --wait seconds */
	const char *expect_text = arg(argc, argv, "--expect");
	const char *wait_text = arg(argc, argv, "--wait");
	uint64_t expect = expect_text != NULL ? strtoull(expect_text, NULL, 10) : 1;
	double wait_s = wait_text != NULL ? strtod(wait_text, NULL) : 5.0;
	double stdin_closed_at = 0;
	struct sp_buf line;
	sp_buf_init(&line, SP_UDP_DATAGRAM_MAX * 2 + 1);
	while (!c.closed) {
		struct pollfd p[2] = {{.fd = fd, .events = POLLIN},
				      {.fd = 0, .events = POLLIN}};
		int n_fds = stdin_open && c.status == 200 ? 2 : 1;
		if (poll(p, (nfds_t)n_fds, c.udp ? 100 : 30000) == -1 && errno != EINTR)
			die("poll failed");
		if (c.udp && !stdin_open && !ended && !has_flag(argc, argv, "--hold") &&
		    (c.datagrams >= expect || mono() - stdin_closed_at > wait_s)) {
			sp_tunnel_end(t, c.stream);
			ended = 1;
		}
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = recv(fd, buf, sizeof(buf), 0);
			if (n == 0) {
				fprintf(stderr, "connection closed by the connector\n");
				rc = 5;
				break;
			}
			if (n > 0) {
				size_t off = 0;
				while (off < (size_t)n) {
					size_t used = 0;
					if (sp_tunnel_tls_recv(tt, buf + off, (size_t)n - off, &used, &d) < 0) {
						fprintf(stderr, "tunnel error: %s\n", d.message);
						rc = 1;
						goto done;
					}
					off += used;
					pump_out(fd, tt);
				}
			}
		}
		if (c.udp && n_fds == 2 && (p[1].revents & (POLLIN | POLLHUP))) {
			ssize_t n = read(0, buf, 16384);
			if (n <= 0) {
				stdin_open = 0;
				stdin_closed_at = mono();
			}
			/* every whole line is one datagram */
			for (ssize_t i = 0; i < n; i++) {
				if (buf[i] != '\n') {
					if (sp_buf_put(&line, buf + i, 1) < 0)
						die("datagram line too long");
					continue;
				}
				uint8_t dgram[SP_UDP_DATAGRAM_MAX];
				size_t dlen = line.len;
				if (c.hex) {
					dlen = line.len / 2;
					if (line.len % 2 != 0)
						die("odd hex line");
					for (size_t k = 0; k < dlen; k++) {
						char pair[3] = {(char)line.data[2 * k],
								(char)line.data[2 * k + 1], 0};
						dgram[k] = (uint8_t)strtoul(pair, NULL, 16);
					}
				} else {
					if (dlen > sizeof(dgram))
						die("datagram too long");
					memcpy(dgram, line.data, dlen);
				}
				struct sp_buf frame;
				sp_buf_init(&frame, dlen + 2);
				size_t acc = 0;
				if (sp_udp_frame_encode(dgram, dlen, &frame) < 0 ||
				    sp_tunnel_write(t, c.stream, frame.data, frame.len, &acc) < 0 ||
				    acc != frame.len)
					die("cannot queue the datagram");
				sp_buf_free(&frame);
				sp_buf_reset(&line);
			}
		} else if (n_fds == 2 && (p[1].revents & (POLLIN | POLLHUP))) {
			ssize_t n = read(0, buf, 16384);
			if (n <= 0) {
				stdin_open = 0;
				if (!has_flag(argc, argv, "--hold") && !ended) {
					sp_tunnel_end(t, c.stream);
					ended = 1;
				}
			} else {
				size_t acc = 0;
				sp_tunnel_write(t, c.stream, buf, (size_t)n, &acc);
			}
		}
		/* the service finished: with --hold our side ends now */
		if (c.remote_ended && !ended && !c.closed) {
			sp_tunnel_end(t, c.stream);
			ended = 1;
		}
		pump_out(fd, tt);
	}
	if (c.status != 200 && c.status != 0) {
		fprintf(stderr, "refused: %s\n", sp_tunnel_reason_name(c.reason));
		rc = 3;
	} else if (c.closed && c.close_code != 0) {
		fprintf(stderr, "reset: %u\n", c.close_code);
		rc = 5;
	} else if (c.status == 0 && rc == 0) {
		fprintf(stderr, "closed without an answer\n");
		rc = 5;
	}
	if (has_flag(argc, argv, "--stats")) {
		double end = mono();
		fprintf(stderr, "stats: first_byte_ms=%.2f bytes=%llu seconds=%.3f MiB/s=%.1f\n",
			c.first_byte_at > 0 ? (c.first_byte_at - c.opened_at) * 1000 : -1.0,
			(unsigned long long)c.bytes, end - c.opened_at,
			(double)c.bytes / (1024.0 * 1024.0) / (end - c.opened_at));
	}
done:
	sp_buf_free(&line);
	free(c.rx);
	sp_tunnel_tls_free(tt);
	sp_tunnel_free(t);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd);
	json_decref(saved);
	EVP_PKEY_free(device_key);
	EVP_PKEY_free(tls_key);
	return rc;
}

/* ---- forward mode: a loopback listener, one stream per accepted connection ---- */

/*
 * The stand-in for the client's loopback mode. Every accepted TCP connection becomes a new
 * stream on a shared warm tunnel; a second tunnel is dialed only when the first is at its
 * stream limit (or went away). The grant is fetched again when it nears expiry.
 */

enum fwd_kind { FWD_LISTENER = 1, FWD_TUNNEL, FWD_FLOW };

struct fwd;

struct fwd_tunnel {
	enum fwd_kind kind;
	struct fwd *fw;
	int fd;
	SSL *ssl;
	struct sp_tunnel *t;
	struct sp_tunnel_tls *tt;
	int want_out; /* EPOLLOUT armed */
	int dead;
	size_t flows;
	struct fwd_flow *flow_list;
	struct fwd_tunnel *next;
};

struct fwd_flow {
	enum fwd_kind kind;
	struct fwd_tunnel *tun;
	int fd;
	int32_t stream;
	uint8_t *up;	/* local bytes the stream queue did not take yet */
	size_t up_len;
	uint8_t *down;	/* tunnel bytes the local socket did not take yet */
	size_t down_len, down_cap;
	int local_eof, ended, remote_ended, closed;
	uint32_t events; /* what epoll watches now */
	struct fwd_flow *prev, *next; /* on the tunnel's list; on fw->dead once closed */
};

struct fwd {
	int ep;
	int argc;
	char **argv;
	const char *url, *resource, *target;
	EVP_PKEY *device_key;
	SSL_CTX *ctx;
	json_t *saved; /* {"grant", "direct", "digest"} */
	int64_t grant_exp;
	uint8_t pin[SP_KEY_SPKI_DIGEST_LEN];
	struct fwd_tunnel *tunnels;
	struct fwd_flow *dead; /* closed flows, freed after the epoll batch */
	uint64_t accepted, refused;
};

static void fwd_watch(struct fwd *fw, int fd, void *ptr, uint32_t events, int op)
{
	struct epoll_event ev = {.events = events, .data.ptr = ptr};
	if (epoll_ctl(fw->ep, op, fd, &ev) == -1 && op != EPOLL_CTL_DEL)
		die("epoll_ctl failed");
}

static void fwd_flow_events(struct fwd_flow *f)
{
	uint32_t want = 0;
	if (!f->local_eof && f->up_len == 0)
		want |= EPOLLIN;
	if (f->down_len > 0)
		want |= EPOLLOUT;
	if (want == f->events)
		return;
	/* nothing to watch: leave epoll, or a hung-up socket would be reported forever */
	fwd_watch(f->tun->fw, f->fd, f, want,
		  want == 0 ? EPOLL_CTL_DEL : f->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD);
	f->events = want;
}

/* Sends what the tunnel has; arms EPOLLOUT when the socket is full. */
static void fwd_tunnel_pump(struct fwd_tunnel *tu)
{
	if (tu->dead)
		return;
	for (;;) {
		if (sp_tunnel_tls_flush(tu->tt, NULL) < 0) {
			tu->dead = 1;
			return;
		}
		const uint8_t *data;
		size_t len = 0;
		sp_tunnel_tls_outbound_view(tu->tt, &data, &len);
		if (len == 0)
			break;
		ssize_t n = send(tu->fd, data, len, MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN) {
			if (!tu->want_out) {
				fwd_watch(tu->fw, tu->fd, tu, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
				tu->want_out = 1;
			}
			return;
		}
		if (n == -1) {
			tu->dead = 1;
			return;
		}
		sp_tunnel_tls_outbound_consume(tu->tt, (size_t)n);
	}
	if (tu->want_out) {
		fwd_watch(tu->fw, tu->fd, tu, EPOLLIN, EPOLL_CTL_MOD);
		tu->want_out = 0;
	}
}

/* Closes the local socket and parks the flow until the current epoll batch is done. */
static void fwd_flow_retire(struct fwd_flow *f)
{
	struct fwd_tunnel *tu = f->tun;
	struct fwd *fw = tu->fw;
	fwd_watch(fw, f->fd, NULL, 0, EPOLL_CTL_DEL);
	close(f->fd);
	f->fd = -1;
	f->closed = 1;
	tu->flows--;
	if (f->prev != NULL)
		f->prev->next = f->next;
	else
		tu->flow_list = f->next;
	if (f->next != NULL)
		f->next->prev = f->prev;
	f->prev = NULL;
	f->next = fw->dead;
	fw->dead = f;
}

/* Local -> stream: the part the queue did not take waits in f->up (reading pauses). */
static void fwd_flow_push_up(struct fwd_flow *f)
{
	struct sp_tunnel *t = f->tun->t;
	if (f->up_len > 0) {
		size_t acc = 0;
		if (sp_tunnel_write(t, f->stream, f->up, f->up_len, &acc) < 0)
			return;
		f->up_len -= acc;
		memmove(f->up, f->up + acc, f->up_len);
	}
	if (f->up_len == 0 && f->local_eof && !f->ended) {
		sp_tunnel_end(t, f->stream);
		f->ended = 1;
	}
}

static void fwd_flow_readable(struct fwd_flow *f)
{
	uint8_t buf[65536];
	/* a few reads per wakeup while the stream takes everything: fewer, larger sends */
	for (int round = 0; round < 4 && !f->local_eof && f->up_len == 0; round++) {
		ssize_t n = recv(f->fd, buf, sizeof(buf), 0);
		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n == -1) {
			sp_tunnel_reset(f->tun->t, f->stream, SP_TUNNEL_CANCEL);
			f->local_eof = 1;
		} else if (n == 0) {
			f->local_eof = 1;
		} else {
			size_t acc = 0;
			if (sp_tunnel_write(f->tun->t, f->stream, buf, (size_t)n, &acc) < 0) {
				sp_tunnel_reset(f->tun->t, f->stream, SP_TUNNEL_CANCEL);
				f->local_eof = 1;
			} else if (acc < (size_t)n) {
				if (f->up == NULL && (f->up = malloc(sizeof(buf))) == NULL)
					die("out of memory");
				f->up_len = (size_t)n - acc;
				memcpy(f->up, buf + acc, f->up_len);
			}
			if ((size_t)n < sizeof(buf))
				break;
		}
	}
	fwd_flow_push_up(f);
	fwd_flow_events(f);
}

/* Stream -> local: window is given back only for bytes the local socket took. */
static void fwd_flow_writable(struct fwd_flow *f)
{
	size_t done = 0;
	while (done < f->down_len) {
		ssize_t n = send(f->fd, f->down + done, f->down_len - done, MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			break;
		if (n == -1) {
			sp_tunnel_reset(f->tun->t, f->stream, SP_TUNNEL_CANCEL);
			done = f->down_len;
			break;
		}
		done += (size_t)n;
	}
	if (done > 0) {
		sp_tunnel_consumed(f->tun->t, f->stream, done);
		f->down_len -= done;
		memmove(f->down, f->down + done, f->down_len);
	}
	if (f->down_len == 0 && f->remote_ended)
		shutdown(f->fd, SHUT_WR);
	fwd_flow_events(f);
}

static void fwd_on_data(struct sp_tunnel *t, int32_t stream, const uint8_t *data, size_t len,
			void *user)
{
	(void)user;
	struct fwd_flow *f = sp_tunnel_stream_user(t, stream);
	if (f == NULL) {
		sp_tunnel_consumed(t, stream, len);
		return;
	}
	size_t done = 0;
	if (f->down_len == 0) {
		while (done < len) {
			ssize_t n = send(f->fd, data + done, len - done, MSG_NOSIGNAL);
			if (n == -1 && errno == EINTR)
				continue;
			if (n == -1)
				break;
			done += (size_t)n;
		}
		if (done > 0)
			sp_tunnel_consumed(t, stream, done);
	}
	if (done < len) {
		size_t rest = len - done;
		if (f->down_len + rest > f->down_cap) {
			size_t cap = f->down_len + rest;
			uint8_t *g = realloc(f->down, cap);
			if (g == NULL)
				die("out of memory");
			f->down = g;
			f->down_cap = cap;
		}
		memcpy(f->down + f->down_len, data + done, rest);
		f->down_len += rest;
	}
	fwd_flow_events(f);
}

static void fwd_on_remote_end(struct sp_tunnel *t, int32_t stream, void *user)
{
	(void)user;
	struct fwd_flow *f = sp_tunnel_stream_user(t, stream);
	if (f == NULL)
		return;
	f->remote_ended = 1;
	if (f->down_len == 0)
		shutdown(f->fd, SHUT_WR);
}

static void fwd_on_writable(struct sp_tunnel *t, int32_t stream, void *user)
{
	(void)user;
	struct fwd_flow *f = sp_tunnel_stream_user(t, stream);
	if (f == NULL)
		return;
	fwd_flow_push_up(f);
	fwd_flow_events(f);
}

static void fwd_on_open_result(struct sp_tunnel *t, int32_t stream, int status,
			       enum sp_tunnel_reason reason, void *user)
{
	struct fwd_tunnel *tu = user;
	if (status != 200) {
		tu->fw->refused++;
		fprintf(stderr, "refused: %s\n", sp_tunnel_reason_name(reason));
	}
	(void)t;
	(void)stream;
}

static void fwd_on_closed(struct sp_tunnel *t, int32_t stream, uint32_t code, void *user)
{
	(void)user;
	(void)code;
	struct fwd_flow *f = sp_tunnel_stream_user(t, stream);
	if (f != NULL) {
		if (code != 0) {
			struct linger l = {.l_onoff = 1, .l_linger = 0};
			setsockopt(f->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
		}
		fwd_flow_retire(f);
	}
}

static void fwd_tunnel_free(struct fwd_tunnel *tu)
{
	while (tu->flow_list != NULL)
		fwd_flow_retire(tu->flow_list);
	sp_tunnel_tls_free(tu->tt);
	sp_tunnel_free(tu->t);
	SSL_free(tu->ssl);
	fwd_watch(tu->fw, tu->fd, NULL, 0, EPOLL_CTL_DEL);
	close(tu->fd);
	free(tu);
}

static void fwd_refresh_grant(struct fwd *fw)
{
	if (fw->saved != NULL && fw->grant_exp - (int64_t)time(NULL) > 60)
		return;
	json_t *fresh = fetch_grant_and_connector(fw->argc, fw->argv, fw->url, fw->resource,
						  fw->device_key);
	if (fresh == NULL)
		die("cannot fetch a grant");
	json_decref(fw->saved);
	fw->saved = fresh;
	json_t *claims = jws_payload(json_string_value(json_object_get(fresh, "grant")));
	fw->grant_exp = (int64_t)json_integer_value(json_object_get(claims, "exp"));
	if (fw->grant_exp == 0)
		fw->grant_exp = (int64_t)time(NULL) + 120;
	json_decref(claims);
	if (hex_to_bytes(json_string_value(json_object_get(fresh, "digest")), fw->pin,
			 sizeof(fw->pin)) < 0)
		die("bad public_key_digest");
}

/* A tunnel that can take another stream, dialled when none can; NULL when the connector
 * cannot be reached (the caller refuses the local connection; the next one dials again,
 * as the client does after a connector restart). */
static struct fwd_tunnel *fwd_tunnel_get(struct fwd *fw)
{
	for (struct fwd_tunnel *tu = fw->tunnels; tu != NULL; tu = tu->next)
		if (!tu->dead && sp_tunnel_can_open(tu->t) && !sp_tunnel_peer_going_away(tu->t))
			return tu;
	int fd = has_flag(fw->argc, fw->argv, "--relay")
		     ? tunnel_dial(fw->argc, fw->argv, fw->url, fw->device_key, fw->saved)
		     : dial_try(json_string_value(json_object_get(fw->saved, "direct")));
	if (fd == -1) {
		fprintf(stderr, "cannot connect to the connector: refusing a local connection\n");
		return NULL;
	}
	struct fwd_tunnel *tu = calloc(1, sizeof(*tu));
	if (tu == NULL)
		die("out of memory");
	tu->kind = FWD_TUNNEL;
	tu->fw = fw;
	struct sp_tunnel_callbacks cb = {.on_open_result = fwd_on_open_result,
					 .on_data = fwd_on_data,
					 .on_remote_end = fwd_on_remote_end,
					 .on_writable = fwd_on_writable,
					 .on_closed = fwd_on_closed};
	/* below the connector's advertised limit, so no open is refused for it */
	struct sp_tunnel_options o = {.max_streams = 1000};
	if (sp_tls_conn_new_memory(fw->ctx, &tu->ssl) < 0 ||
	    sp_tls_set_expected_peer(tu->ssl, fw->pin) < 0 ||
	    sp_tunnel_new(SP_TUNNEL_CLIENT, &cb, tu, &o, &tu->t) < 0 ||
	    sp_tunnel_tls_new(tu->ssl, tu->t, &tu->tt) < 0)
		die("tunnel setup failed");
	tu->fd = fd;
	fwd_watch(fw, tu->fd, tu, EPOLLIN, EPOLL_CTL_ADD);
	tu->next = fw->tunnels;
	fw->tunnels = tu;
	return tu;
}

static void fwd_accept(struct fwd *fw, int lfd)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EMFILE || errno == ENFILE)
				fprintf(stderr, "accept: out of file descriptors\n");
			return;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		fwd_refresh_grant(fw);
		struct fwd_tunnel *tu = fwd_tunnel_get(fw);
		if (tu == NULL) {
			close(fd);
			continue;
		}
		struct fwd_flow *f = calloc(1, sizeof(*f));
		if (f == NULL)
			die("out of memory");
		f->kind = FWD_FLOW;
		f->tun = tu;
		f->fd = fd;
		char flow_id[SP_TUNNEL_FLOW_ID_LEN + 1];
		uint8_t rnd[16];
		RAND_bytes(rnd, sizeof(rnd));
		for (size_t k = 0; k < 16; k++)
			snprintf(flow_id + 2 * k, 3, "%02x", rnd[k]);
		struct sp_tunnel_open_request req = {
		    .authority = fw->target,
		    .proto = SP_TUNNEL_PROTO_TCP,
		    .grant = json_string_value(json_object_get(fw->saved, "grant")),
		    .flow_id = flow_id};
		struct sp_diag d = {{0}};
		if (sp_tunnel_open(tu->t, &req, &f->stream, &d) < 0) {
			fprintf(stderr, "open failed: %s\n", d.message);
			close(fd);
			free(f);
			continue;
		}
		sp_tunnel_set_stream_user(tu->t, f->stream, f);
		tu->flows++;
		f->next = tu->flow_list;
		if (tu->flow_list != NULL)
			tu->flow_list->prev = f;
		tu->flow_list = f;
		fw->accepted++;
		f->events = EPOLLIN;
		fwd_watch(fw, fd, f, EPOLLIN, EPOLL_CTL_ADD);
	}
}

static void fwd_tunnel_readable(struct fwd_tunnel *tu)
{
	uint8_t buf[65536];
	for (int round = 0; round < 4 && !tu->dead; round++) {
		ssize_t n = recv(tu->fd, buf, sizeof(buf), 0);
		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			fprintf(stderr, "tunnel closed by the connector\n");
			tu->dead = 1;
			return;
		}
		size_t off = 0;
		while (off < (size_t)n) {
			size_t used = 0;
			struct sp_diag d = {{0}};
			if (sp_tunnel_tls_recv(tu->tt, buf + off, (size_t)n - off, &used, &d) < 0) {
				fprintf(stderr, "tunnel error: %s\n", d.message);
				tu->dead = 1;
				return;
			}
			off += used;
			if (used == 0)
				fwd_tunnel_pump(tu);
		}
		if ((size_t)n < sizeof(buf))
			return;
	}
}

static int command_forward(int argc, char **argv)
{
	struct fwd fw = {.argc = argc, .argv = argv};
	fw.url = need(argc, argv, "--url");
	fw.target = need(argc, argv, "--target");
	fw.resource = need(argc, argv, "--resource");
	const char *listen_at = need(argc, argv, "--listen");
	if (sp_key_load_private(need(argc, argv, "--device-key"), &fw.device_key, NULL) < 0)
		die("cannot load --device-key");
	fwd_refresh_grant(&fw);
	const char *alpn[] = {SP_TLS_ALPN_SALLYPORT_1};
	struct sp_tls_options o = {.alpn = alpn, .alpn_count = 1, .now = (int64_t)time(NULL)};
	struct sp_diag d = {{0}};
	if (sp_tls_client_ctx_new(fw.device_key, &o, &fw.ctx, &d) < 0)
		die(d.message[0] ? d.message : "tls setup failed");

	const char *colon = strrchr(listen_at, ':');
	if (colon == NULL)
		die("--listen wants 127.0.0.1:PORT");
	long port = strtol(colon + 1, NULL, 10);
	if (port <= 0 || port > 65535)
		die("--listen wants 127.0.0.1:PORT");
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (lfd == -1 || bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(lfd, 4096) == -1)
		die("cannot listen on --listen");
	fw.ep = epoll_create1(EPOLL_CLOEXEC);
	if (fw.ep == -1)
		die("epoll_create1 failed");
	enum fwd_kind listener = FWD_LISTENER;
	fwd_watch(&fw, lfd, &listener, EPOLLIN, EPOLL_CTL_ADD);
	/* warm the tunnel before the first connection arrives */
	fwd_tunnel_pump(fwd_tunnel_get(&fw));
	fprintf(stderr, "forwarding 127.0.0.1:%s -> %s\n", colon + 1, fw.target);

	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(fw.ep, evs, 256, 1000);
		if (n == -1 && errno != EINTR)
			die("epoll_wait failed");
		for (int i = 0; i < n; i++) {
			enum fwd_kind *kind = evs[i].data.ptr;
			if (*kind == FWD_LISTENER) {
				fwd_accept(&fw, lfd);
			} else if (*kind == FWD_TUNNEL) {
				struct fwd_tunnel *tu = evs[i].data.ptr;
				if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					fwd_tunnel_readable(tu);
			} else {
				struct fwd_flow *f = evs[i].data.ptr;
				if (f->closed)
					continue;
				if (evs[i].events & EPOLLOUT)
					fwd_flow_writable(f);
				if (!f->closed && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
					fwd_flow_readable(f);
			}
		}
		/* every tunnel sends what the events produced; dead ones are dropped */
		struct fwd_tunnel **link = &fw.tunnels;
		while (*link != NULL) {
			struct fwd_tunnel *tu = *link;
			fwd_tunnel_pump(tu);
			if (tu->dead) {
				*link = tu->next;
				/* its flows are freed without callbacks: close their sockets */
				fprintf(stderr, "dropping a tunnel with %zu flows\n", tu->flows);
				fwd_tunnel_free(tu);
				continue;
			}
			link = &tu->next;
		}
		while (fw.dead != NULL) {
			struct fwd_flow *f = fw.dead;
			fw.dead = f->next;
			free(f->up);
			free(f->down);
			free(f);
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && strcmp(argv[1], "keygen") == 0)
		return command_keygen(argv[2]);
	if (argc >= 2 && strcmp(argv[1], "connect") == 0) {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		int rc = command_connect(argc, argv);
		curl_global_cleanup();
		return rc;
	}
	if (argc >= 2 && strcmp(argv[1], "forward") == 0) {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		signal(SIGPIPE, SIG_IGN);
		return command_forward(argc, argv);
	}
	fprintf(stderr, "usage: sp_test_client keygen KEYFILE | connect --url ... (see source)\n");
	return 1;
}
