/*
 * Unit tests for shared/tunnel.c and shared/tunnel_tls.c. Two tunnels (client and server)
 * exchange bytes in memory; one test runs them through real TLS 1.3 (shared/tls.h), and
 * malformed requests come from a raw nghttp2 client that sends whatever it is told.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>

#include "shared/buf.h"
#include "shared/keys.h"
#include "shared/tls.h"
#include "shared/tunnel.h"
#include "shared/tunnel_tls.h"

#define MAX_FLOWS 1100
#define NOW INT64_C(1767225600)

static const char *const GRANT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJkZXZpY2UifQ.c2lnbmF0dXJl";
static const char *const FLOW = "0123456789abcdef0123456789abcdef";

/* What one side's application saw and does on one stream. */
struct flow {
	int requests; /* server: on_open_request calls */
	char authority[SP_TUNNEL_AUTHORITY_MAX + 1];
	char flow_id[SP_TUNNEL_FLOW_ID_LEN + 1];
	enum sp_tunnel_proto proto;
	int results; /* client: on_open_result calls */
	int status;
	enum sp_tunnel_reason reason;
	int remote_end;
	int closed;
	uint32_t close_code;
	int writable;
	/* Received bytes, kept until the app "uses" them. */
	uint8_t *pending;
	size_t pending_len;
	size_t received;     /* all bytes ever received */
	EVP_MD_CTX *hash_in; /* SHA-256 of received bytes, when hashing */
	/* Bytes this side still has to send from a generator (client tests). */
	size_t to_send;
	size_t sent;
	int end_after_send;
	int ended;
	int mismatch; /* a received byte differed from the stream's pattern */
};

/* One side: a tunnel and what its application does. */
struct side {
	struct sp_tunnel *t;
	struct flow flows[MAX_FLOWS];
	int accept;	    /* server: accept every request */
	int echo;	    /* move received bytes back to the peer */
	int consume;	    /* call sp_tunnel_consumed for received bytes */
	int check_pattern;  /* compare received bytes against pattern_byte */
	int refuse_status;  /* server: refuse with this status ... */
	int refuse_by_flow; /* ... and the reason numbered by the flow id's last digit */
	int requests;
	int results;
	int closed;
};

static struct flow *flow_of(struct side *s, int32_t id)
{
	assert_true(id > 0 && id / 2 < MAX_FLOWS);
	return &s->flows[id / 2];
}

/* Byte k of stream id's test data. */
static uint8_t pattern_byte(int32_t id, size_t k)
{
	return (uint8_t)((uint32_t)id * 31u + (uint32_t)k * 7u + (uint32_t)(k >> 9));
}

static void on_open_request(struct sp_tunnel *t, int32_t stream,
			    const struct sp_tunnel_open_request *req, void *user)
{
	struct side *s = user;
	struct flow *f = flow_of(s, stream);
	f->requests++;
	s->requests++;
	snprintf(f->authority, sizeof(f->authority), "%s", req->authority);
	snprintf(f->flow_id, sizeof(f->flow_id), "%s", req->flow_id);
	f->proto = req->proto;
	if (s->refuse_status != 0) {
		enum sp_tunnel_reason reason = SP_TUNNEL_REASON_BAD_GRANT;
		if (s->refuse_by_flow) {
			char last = req->flow_id[SP_TUNNEL_FLOW_ID_LEN - 1];
			reason =
			    (enum sp_tunnel_reason)(last <= '9' ? last - '0' : last - 'a' + 10);
		}
		assert_int_equal(sp_tunnel_refuse(t, stream, s->refuse_status, reason), 0);
	} else if (s->accept) {
		assert_int_equal(sp_tunnel_accept(t, stream), 0);
		/* Answered once only. */
		assert_int_equal(sp_tunnel_accept(t, stream), SP_ERR_INVALID);
	}
}

static void on_open_result(struct sp_tunnel *t, int32_t stream, int status,
			   enum sp_tunnel_reason reason, void *user)
{
	(void)t;
	struct side *s = user;
	struct flow *f = flow_of(s, stream);
	f->results++;
	s->results++;
	f->status = status;
	f->reason = reason;
}

static void on_data(struct sp_tunnel *t, int32_t stream, const uint8_t *data, size_t len,
		    void *user)
{
	(void)t;
	struct side *s = user;
	struct flow *f = flow_of(s, stream);
	if (s->check_pattern)
		for (size_t i = 0; i < len; i++)
			if (data[i] != pattern_byte(stream, f->received + i))
				f->mismatch = 1;
	if (f->hash_in != NULL)
		assert_int_equal(EVP_DigestUpdate(f->hash_in, data, len), 1);
	f->received += len;
	if (s->echo) {
		uint8_t *grown = realloc(f->pending, f->pending_len + len);
		assert_non_null(grown);
		f->pending = grown;
		memcpy(f->pending + f->pending_len, data, len);
		f->pending_len += len;
	} else if (s->consume) {
		assert_int_equal(sp_tunnel_consumed(t, stream, len), 0);
	}
}

static void on_remote_end(struct sp_tunnel *t, int32_t stream, void *user)
{
	(void)t;
	struct side *s = user;
	flow_of(s, stream)->remote_end++;
}

static void on_writable(struct sp_tunnel *t, int32_t stream, void *user)
{
	(void)t;
	struct side *s = user;
	flow_of(s, stream)->writable++;
}

static void on_closed(struct sp_tunnel *t, int32_t stream, uint32_t code, void *user)
{
	(void)t;
	struct side *s = user;
	struct flow *f = flow_of(s, stream);
	f->closed++;
	f->close_code = code;
	s->closed++;
}

static const struct sp_tunnel_callbacks callbacks = {
    .on_open_request = on_open_request,
    .on_open_result = on_open_result,
    .on_data = on_data,
    .on_remote_end = on_remote_end,
    .on_writable = on_writable,
    .on_closed = on_closed,
};

static struct side *side_new(enum sp_tunnel_role role, const struct sp_tunnel_options *opts)
{
	struct side *s = calloc(1, sizeof(*s));
	assert_non_null(s);
	assert_int_equal(sp_tunnel_new(role, &callbacks, s, opts, &s->t), 0);
	s->consume = 1;
	return s;
}

static void side_free(struct side *s)
{
	if (s == NULL)
		return;
	sp_tunnel_free(s->t);
	for (size_t i = 0; i < MAX_FLOWS; i++) {
		free(s->flows[i].pending);
		EVP_MD_CTX_free(s->flows[i].hash_in);
	}
	free(s);
}

/* The application's work between network events: echo what it holds, send generated data. */
static void side_service(struct side *s)
{
	for (int32_t i = 0; i < MAX_FLOWS; i++) {
		struct flow *f = &s->flows[i];
		int32_t id = i * 2 + 1;
		if (f->closed)
			continue;
		if (s->echo && f->pending_len > 0) {
			size_t took = 0;
			int r = sp_tunnel_write(s->t, id, f->pending, f->pending_len, &took);
			if (r == 0 && took > 0) {
				assert_int_equal(sp_tunnel_consumed(s->t, id, took), 0);
				memmove(f->pending, f->pending + took, f->pending_len - took);
				f->pending_len -= took;
			}
		}
		if (s->echo && f->remote_end && f->pending_len == 0 && !f->ended) {
			if (sp_tunnel_end(s->t, id) == 0)
				f->ended = 1;
		}
		while (f->sent < f->to_send) {
			uint8_t chunk[16384];
			size_t n = f->to_send - f->sent;
			if (n > sizeof(chunk))
				n = sizeof(chunk);
			for (size_t k = 0; k < n; k++)
				chunk[k] = pattern_byte(id, f->sent + k);
			size_t took = 0;
			if (sp_tunnel_write(s->t, id, chunk, n, &took) != 0 || took == 0)
				break;
			f->sent += took;
		}
		if (f->end_after_send && f->sent == f->to_send && !f->ended &&
		    sp_tunnel_end(s->t, id) == 0)
			f->ended = 1;
	}
}

/* Moves everything one side wants to send to the other; returns bytes moved. */
static size_t transfer(struct side *from, struct side *to)
{
	struct sp_buf out;
	sp_buf_init(&out, 64 * 1024);
	assert_int_equal(sp_tunnel_send(from->t, &out), 0);
	size_t n = out.len;
	if (n > 0)
		assert_int_equal(sp_tunnel_recv(to->t, out.data, out.len, NULL), 0);
	sp_buf_free(&out);
	return n;
}

/* Pumps both ways (with application service) until nothing moves. */
static void pump(struct side *c, struct side *s)
{
	for (int rounds = 0; rounds < 100000; rounds++) {
		side_service(c);
		side_service(s);
		size_t moved = transfer(c, s) + transfer(s, c);
		if (moved == 0) {
			side_service(c);
			side_service(s);
			if (!sp_tunnel_want_write(c->t) && !sp_tunnel_want_write(s->t))
				return;
		}
	}
	fail_msg("pump did not settle");
}

static struct sp_tunnel_open_request request(const char *flow_id)
{
	struct sp_tunnel_open_request req = {
	    .authority = "db.internal.example:5432",
	    .proto = SP_TUNNEL_PROTO_TCP,
	    .grant = GRANT,
	    .flow_id = flow_id != NULL ? flow_id : FLOW,
	};
	return req;
}

static int32_t open_flow(struct side *c, const char *flow_id)
{
	struct sp_tunnel_open_request req = request(flow_id);
	int32_t id = 0;
	struct sp_diag d;
	int r = sp_tunnel_open(c->t, &req, &id, &d);
	assert_int_equal(r, 0);
	assert_true(id > 0 && (id & 1) == 1);
	return id;
}

static void sha256_start(EVP_MD_CTX **ctx)
{
	*ctx = EVP_MD_CTX_new();
	assert_non_null(*ctx);
	assert_int_equal(EVP_DigestInit_ex(*ctx, EVP_sha256(), NULL), 1);
}

static void sha256_of_pattern(int32_t id, size_t len, uint8_t out[32])
{
	EVP_MD_CTX *ctx;
	sha256_start(&ctx);
	uint8_t chunk[4096];
	for (size_t off = 0; off < len; off += sizeof(chunk)) {
		size_t n = len - off < sizeof(chunk) ? len - off : sizeof(chunk);
		for (size_t k = 0; k < n; k++)
			chunk[k] = pattern_byte(id, off + k);
		assert_int_equal(EVP_DigestUpdate(ctx, chunk, n), 1);
	}
	unsigned int len_out = 0;
	assert_int_equal(EVP_DigestFinal_ex(ctx, out, &len_out), 1);
	EVP_MD_CTX_free(ctx);
}

static void sha256_final(EVP_MD_CTX *ctx, uint8_t out[32])
{
	unsigned int len_out = 0;
	assert_int_equal(EVP_DigestFinal_ex(ctx, out, &len_out), 1);
}

/* ---- tests ---- */

static void test_tunnel_open_accept_echo_4mib(void **state)
{
	(void)state;
	struct side *c = side_new(SP_TUNNEL_CLIENT, NULL);
	struct side *s = side_new(SP_TUNNEL_SERVER, NULL);
	s->accept = 1;
	s->echo = 1;
	int32_t id = open_flow(c, NULL);
	struct flow *cf = flow_of(c, id);
	struct flow *sf = flow_of(s, id);
	sha256_start(&cf->hash_in);
	sha256_start(&sf->hash_in);
	cf->to_send = 4u << 20;
	cf->end_after_send = 1;
	/* Written before the answer: queued, sent after the 200. */
	side_service(c);
	assert_true(sp_tunnel_queued(c->t, id) > 0);
	pump(c, s);

	assert_int_equal(sf->requests, 1);
	assert_string_equal(sf->authority, "db.internal.example:5432");
	assert_string_equal(sf->flow_id, FLOW);
	assert_int_equal(sf->proto, SP_TUNNEL_PROTO_TCP);
	assert_int_equal(cf->results, 1);
	assert_int_equal(cf->status, 200);
	assert_int_equal(cf->reason, SP_TUNNEL_REASON_NONE);
	assert_int_equal(sf->received, 4u << 20);
	assert_int_equal(cf->received, 4u << 20);
	uint8_t want[32], got_server[32], got_client[32];
	sha256_of_pattern(id, 4u << 20, want);
	sha256_final(sf->hash_in, got_server);
	sha256_final(cf->hash_in, got_client);
	assert_memory_equal(want, got_server, 32);
	assert_memory_equal(want, got_client, 32);
	assert_int_equal(sf->remote_end, 1);
	assert_int_equal(cf->remote_end, 1);
	assert_int_equal(cf->closed, 1);
	assert_int_equal(sf->closed, 1);
	assert_int_equal(cf->close_code, 0);
	assert_int_equal(sf->close_code, 0);

	struct sp_tunnel_stats cs, ss;
	sp_tunnel_get_stats(c->t, &cs);
	sp_tunnel_get_stats(s->t, &ss);
	assert_int_equal(cs.streams_open, 0);
	assert_int_equal(cs.streams_total, 1);
	assert_int_equal(cs.bytes_out, 4u << 20);
	assert_int_equal(cs.bytes_in, 4u << 20);
	assert_int_equal(ss.bytes_in, 4u << 20);
	assert_int_equal(ss.bytes_out, 4u << 20);
	assert_int_equal(ss.streams_open, 0);
	/* The stream is gone: its id means nothing any more. */
	size_t took = 1;
	assert_int_equal(sp_tunnel_write(c->t, id, "x", 1, &took), SP_ERR_NOT_FOUND);
	assert_int_equal(took, 0);
	assert_int_equal(sp_tunnel_consumed(c->t, id, 1), SP_ERR_NOT_FOUND);
	assert_int_equal(sp_tunnel_end(c->t, id), SP_ERR_NOT_FOUND);
	assert_int_equal(sp_tunnel_reset(c->t, id, SP_TUNNEL_CANCEL), SP_ERR_NOT_FOUND);
	assert_int_equal(sp_tunnel_is_done(c->t), 0); /* no GOAWAY yet: the tunnel stays up */
	side_free(c);
	side_free(s);
}

static void test_tunnel_200_concurrent_streams(void **state)
{
	(void)state;
	struct side *c = side_new(SP_TUNNEL_CLIENT, NULL);
	struct side *s = side_new(SP_TUNNEL_SERVER, NULL);
	s->accept = 1;
	s->echo = 1;
	c->check_pattern = 1;
	s->check_pattern = 1;
	/* Until the server's SETTINGS arrive a client assumes at most 100 streams. */
	pump(c, s);
	int32_t ids[200];
	for (int i = 0; i < 200; i++) {
		char flow_id[SP_TUNNEL_FLOW_ID_LEN + 1];
		snprintf(flow_id, sizeof(flow_id), "%032x", i);
		ids[i] = open_flow(c, flow_id);
		struct flow *f = flow_of(c, ids[i]);
		f->to_send = 10000 + (size_t)i * 97;
		f->end_after_send = 1;
	}
	pump(c, s);
	assert_int_equal(s->requests, 200);
	assert_int_equal(c->results, 200);
	for (int i = 0; i < 200; i++) {
		struct flow *cf = flow_of(c, ids[i]);
		struct flow *sf = flow_of(s, ids[i]);
		char flow_id[SP_TUNNEL_FLOW_ID_LEN + 1];
		snprintf(flow_id, sizeof(flow_id), "%032x", i);
		assert_string_equal(sf->flow_id, flow_id);
		assert_int_equal(sf->received, cf->to_send);
		assert_int_equal(cf->received, cf->to_send);
		assert_false(cf->mismatch);
		assert_false(sf->mismatch);
		assert_int_equal(cf->closed, 1);
		assert_int_equal(cf->close_code, 0);
	}
	struct sp_tunnel_stats st;
	sp_tunnel_get_stats(s->t, &st);
	assert_int_equal(st.streams_total, 200);
	assert_int_equal(st.streams_open, 0);
	side_free(c);
	side_free(s);
}

static void test_tunnel_refusal_reasons_reach_client(void **state)
{
	(void)state;
	struct side *c = side_new(SP_TUNNEL_CLIENT, NULL);
	struct side *s = side_new(SP_TUNNEL_SERVER, NULL);
	s->refuse_status = 403;
	s->refuse_by_flow = 1;
	int32_t ids[SP_TUNNEL_REASON_UNKNOWN];
	for (int r = SP_TUNNEL_REASON_NO_POLICY; r < SP_TUNNEL_REASON_UNKNOWN; r++) {
		char flow_id[SP_TUNNEL_FLOW_ID_LEN + 1];
		snprintf(flow_id, sizeof(flow_id), "%032x", r); /* reason in the last digit */
		ids[r] = open_flow(c, flow_id);
		flow_of(c, ids[r])->to_send = 1000; /* queued; never sent */
	}
	pump(c, s);
	for (int r = SP_TUNNEL_REASON_NO_POLICY; r < SP_TUNNEL_REASON_UNKNOWN; r++) {
		struct flow *cf = flow_of(c, ids[r]);
		assert_int_equal(cf->results, 1);
		assert_int_equal(cf->status, 403);
		assert_int_equal(cf->reason, r);
		assert_int_equal(cf->closed, 1);
		assert_int_equal(cf->received, 0);
		assert_int_equal(flow_of(s, ids[r])->received, 0);
		assert_int_equal(flow_of(s, ids[r])->closed, 1);
	}
	struct sp_tunnel_stats cs;
	sp_tunnel_get_stats(c->t, &cs);
	assert_int_equal(cs.bytes_out, 0);
	assert_int_equal(cs.streams_open, 0);
	side_free(c);
	side_free(s);
}

static void test_tunnel_refuse_and_accept_argument_errors(void **state)
{
	(void)state;
	struct side *c = side_new(SP_TUNNEL_CLIENT, NULL);
	struct side *s = side_new(SP_TUNNEL_SERVER, NULL);
	int32_t id = open_flow(c, NULL);
	pump(c, s);
	assert_int_equal(flow_of(s, id)->requests, 1);
	assert_int_equal(sp_tunnel_refuse(s->t, id, 200, SP_TUNNEL_REASON_REVOKED), SP_ERR_INVALID);
	assert_int_equal(sp_tunnel_refuse(s->t, id, 600, SP_TUNNEL_REASON_REVOKED), SP_ERR_INVALID);
	assert_int_equal(sp_tunnel_refuse(s->t, id, 403, SP_TUNNEL_REASON_NONE), SP_ERR_INVALID);
	assert_int_equal(sp_tunnel_refuse(s->t, id, 403, SP_TUNNEL_REASON_UNKNOWN), SP_ERR_INVALID);
	assert_int_equal(sp_tunnel_accept(s->t, id + 2), SP_ERR_NOT_FOUND);
	assert_int_equal(sp_tunnel_accept(c->t, id), SP_ERR_NOT_FOUND); /* client side */
	assert_int_equal(sp_tunnel_refuse(s->t, id, 502, SP_TUNNEL_REASON_CONNECT_FAILED), 0);
	assert_int_equal(sp_tunnel_accept(s->t, id), SP_ERR_INVALID);
	pump(c, s);
	assert_int_equal(flow_of(c, id)->status, 502);
	assert_int_equal(flow_of(c, id)->reason, SP_TUNNEL_REASON_CONNECT_FAILED);
	side_free(c);
	side_free(s);
}

/* ---- malformed requests from a raw nghttp2 client ---- */

struct raw_client {
	nghttp2_session *session;
	int status[64];
	char reason[64][32];
	int closed[64];
};

static int raw_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
			 size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
			 void *user_data)
{
	(void)session;
	(void)flags;
	struct raw_client *rc = user_data;
	int32_t i = frame->hd.stream_id / 2;
	if (i >= 64)
		return 0;
	if (namelen == 7 && memcmp(name, ":status", 7) == 0)
		rc->status[i] = (int)strtol((const char *)value, NULL, 10);
	if (namelen == 16 && memcmp(name, "sallyport-reason", 16) == 0 && valuelen < 32) {
		memcpy(rc->reason[i], value, valuelen);
		rc->reason[i][valuelen] = '\0';
	}
	return 0;
}

static int raw_on_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
			void *user_data)
{
	(void)session;
	(void)error_code;
	struct raw_client *rc = user_data;
	if (stream_id / 2 < 64)
		rc->closed[stream_id / 2]++;
	return 0;
}

static void raw_new(struct raw_client *rc)
{
	memset(rc, 0, sizeof(*rc));
	nghttp2_session_callbacks *cbs;
	nghttp2_option *opt;
	assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
	assert_int_equal(nghttp2_option_new(&opt), 0);
	nghttp2_option_set_no_http_messaging(opt, 1);
	nghttp2_session_callbacks_set_on_header_callback(cbs, raw_on_header);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, raw_on_close);
	assert_int_equal(nghttp2_session_client_new2(&rc->session, cbs, rc, opt), 0);
	nghttp2_session_callbacks_del(cbs);
	nghttp2_option_del(opt);
	assert_int_equal(nghttp2_submit_settings(rc->session, NGHTTP2_FLAG_NONE, NULL, 0), 0);
}

/* Pumps a raw client against a server side until quiet. */
static void raw_pump(struct raw_client *rc, struct side *s)
{
	for (int rounds = 0; rounds < 1000; rounds++) {
		size_t moved = 0;
		const uint8_t *data;
		ssize_t n;
		while ((n = nghttp2_session_mem_send(rc->session, &data)) > 0) {
			assert_int_equal(sp_tunnel_recv(s->t, data, (size_t)n, NULL), 0);
			moved += (size_t)n;
		}
		struct sp_buf out;
		sp_buf_init(&out, 1 << 20);
		assert_int_equal(sp_tunnel_send(s->t, &out), 0);
		if (out.len > 0)
			assert_int_equal(nghttp2_session_mem_recv(rc->session, out.data, out.len),
					 (ssize_t)out.len);
		moved += out.len;
		sp_buf_free(&out);
		if (moved == 0)
			return;
	}
	fail_msg("raw pump did not settle");
}

#define NV(n, v)                                                                                   \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE     \
	}

static void test_tunnel_malformed_requests_get_400(void **state)
{
	(void)state;
	static char big_grant[SP_TUNNEL_GRANT_MAX + 2];
	memset(big_grant, 'A', SP_TUNNEL_GRANT_MAX + 1);
	big_grant[SP_TUNNEL_GRANT_MAX + 1] = '\0';
	static char max_grant[SP_TUNNEL_GRANT_MAX + 1];
	memset(max_grant, 'A', SP_TUNNEL_GRANT_MAX);
	max_grant[SP_TUNNEL_GRANT_MAX] = '\0';
	struct {
		nghttp2_nv nv[8];
		size_t count;
		int ok;
	} cases[] = {
	    /* 0: the valid reference */
	    {{NV(":method", "CONNECT"), NV(":authority", "a.example:443"),
	      NV("sallyport-proto", "tcp"), NV("sallyport-grant", GRANT),
	      NV("sallyport-flow", FLOW)},
	     5,
	     1},
	    /* missing :authority */
	    {{NV(":method", "CONNECT"), NV("sallyport-proto", "tcp"), NV("sallyport-grant", GRANT),
	      NV("sallyport-flow", FLOW)},
	     4,
	     0},
	    /* a :path present */
	    {{NV(":method", "CONNECT"), NV(":authority", "a.example:443"), NV(":path", "/"),
	      NV("sallyport-proto", "tcp"), NV("sallyport-grant", GRANT),
	      NV("sallyport-flow", FLOW)},
	     6,
	     0},
	    /* bad ports */
	    {{NV(":method", "CONNECT"), NV(":authority", "a.example:0"),
	      NV("sallyport-proto", "tcp"), NV("sallyport-grant", GRANT),
	      NV("sallyport-flow", FLOW)},
	     5,
	     0},
	    {{NV(":method", "CONNECT"), NV(":authority", "a.example:65536"),
	      NV("sallyport-proto", "tcp"), NV("sallyport-grant", GRANT),
	      NV("sallyport-flow", FLOW)},
	     5,
	     0},
	    {{NV(":method", "CONNECT"), NV(":authority", "a.example"), NV("sallyport-proto", "tcp"),
	      NV("sallyport-grant", GRANT), NV("sallyport-flow", FLOW)},
	     5,
	     0},
	    /* oversize grant */
	    {{NV(":method", "CONNECT"), NV(":authority", "a.example:443"),
	      NV("sallyport-proto", "tcp"), NV("sallyport-grant", big_grant),
	      NV("sallyport-flow", FLOW)},
	     5,
	     0},
	    /* missing sallyport-grant */
	    {{NV(":method", "CONNECT"), NV(":authority", "a.example:443"),
	      NV("sallyport-proto", "tcp"), NV("sallyport-flow", FLOW)},
	     4,
	     0},
	    /* wrong method, proto, flow id, :scheme, duplicate grant, upper-case name */
	    {{NV(":method", "GET"), NV(":authority", "a.example:443"), NV("sallyport-proto", "tcp"),
	      NV("sallyport-grant", GRANT), NV("sallyport-flow", FLOW)},
	     5,
	     0},
	    {{NV(":method", "CONNECT"), NV(":authority", "a.example:443"),
	      NV("sallyport-proto", "sctp"), NV("sallyport-grant", GRANT),
	      NV("sallyport-flow", FLOW)},
	     5,
	     0},
	    {{NV(":method", "CONNECT"), NV(":authority", "a.example:443"),
	      NV("sallyport-proto", "tcp"), NV("sallyport-grant", GRANT),
	      NV("sallyport-flow", "0123456789ABCDEF0123456789abcdef")},
	     5,
	     0},
	    {{NV(":method", "CONNECT"), NV(":scheme", "https"), NV(":authority", "a.example:443"),
	      NV("sallyport-proto", "tcp"), NV("sallyport-grant", GRANT),
	      NV("sallyport-flow", FLOW)},
	     6,
	     0},
	    {{NV(":method", "CONNECT"), NV(":authority", "a.example:443"),
	      NV("sallyport-proto", "tcp"), NV("sallyport-grant", GRANT),
	      NV("sallyport-grant", GRANT), NV("sallyport-flow", FLOW)},
	     6,
	     0},
	    {{NV(":method", "CONNECT"), NV(":authority", "a.example:443"),
	      NV("sallyport-proto", "tcp"), NV("sallyport-grant", GRANT),
	      NV("sallyport-flow", FLOW), NV("bad name", "x")},
	     6,
	     0},
	    /* a pseudo-header after a regular one; a grant with a bad character */
	    {{NV(":method", "CONNECT"), NV("sallyport-proto", "tcp"),
	      NV(":authority", "a.example:443"), NV("sallyport-grant", GRANT),
	      NV("sallyport-flow", FLOW)},
	     5,
	     0},
	    {{NV(":method", "CONNECT"), NV(":authority", "a.example:443"),
	      NV("sallyport-proto", "tcp"), NV("sallyport-grant", "abc def"),
	      NV("sallyport-flow", FLOW)},
	     5,
	     0},
	    /* a grant of exactly the maximum is fine */
	    {{NV(":method", "CONNECT"), NV(":authority", "[2001:db8::1]:8443"),
	      NV("sallyport-proto", "udp"), NV("sallyport-grant", max_grant),
	      NV("sallyport-flow", FLOW)},
	     5,
	     1},
	};
	size_t ncases = sizeof(cases) / sizeof(cases[0]);
	struct side *s = side_new(SP_TUNNEL_SERVER, NULL);
	s->accept = 1;
	struct raw_client rc;
	raw_new(&rc);
	int32_t ids[32];
	for (size_t i = 0; i < ncases; i++) {
		ids[i] = nghttp2_submit_request(rc.session, NULL, cases[i].nv, cases[i].count, NULL,
						NULL);
		assert_true(ids[i] > 0);
		raw_pump(&rc, s);
	}
	int expected_requests = 0;
	for (size_t i = 0; i < ncases; i++) {
		int32_t id = ids[i];
		if (cases[i].ok) {
			expected_requests++;
			assert_int_equal(flow_of(s, id)->requests, 1);
			assert_int_equal(rc.status[id / 2], 200);
		} else {
			assert_int_equal(flow_of(s, id)->requests, 0);
			assert_int_equal(rc.status[id / 2], 400);
			assert_string_equal(rc.reason[id / 2], "bad_request");
			assert_int_equal(rc.closed[id / 2], 1);
			assert_int_equal(flow_of(s, id)->closed, 0); /* the app never knew it */
		}
	}
	assert_int_equal(s->requests, expected_requests);
	assert_int_equal(flow_of(s, ids[ncases - 1])->proto, SP_TUNNEL_PROTO_UDP);
	assert_string_equal(flow_of(s, ids[ncases - 1])->authority, "[2001:db8::1]:8443");
	nghttp2_session_del(rc.session);
	side_free(s);
}

static void test_tunnel_header_list_limit(void **state)
{
	(void)state;
	struct sp_tunnel_options opts = {.max_header_list = 1024};
	struct side *s = side_new(SP_TUNNEL_SERVER, &opts);
	s->accept = 1;
	struct raw_client rc;
	raw_new(&rc);
	static char grant[1100];
	memset(grant, 'g', sizeof(grant) - 1);
	grant[sizeof(grant) - 1] = '\0';
	nghttp2_nv nv[] = {NV(":method", "CONNECT"), NV(":authority", "a.example:443"),
			   NV("sallyport-proto", "tcp"), NV("sallyport-grant", grant),
			   NV("sallyport-flow", FLOW)};
	int32_t id = nghttp2_submit_request(rc.session, NULL, nv, 5, NULL, NULL);
	raw_pump(&rc, s);
	assert_int_equal(rc.status[id / 2], 400);
	assert_int_equal(s->requests, 0);
	nghttp2_session_del(rc.session);
	side_free(s);
}

static void test_tunnel_half_close_client_first(void **state)
{
	(void)state;
	struct side *c = side_new(SP_TUNNEL_CLIENT, NULL);
	struct side *s = side_new(SP_TUNNEL_SERVER, NULL);
	s->accept = 1;
	c->check_pattern = 1;
	int32_t id = open_flow(c, NULL);
	struct flow *cf = flow_of(c, id);
	struct flow *sf = flow_of(s, id);
	cf->to_send = 5000;
	cf->end_after_send = 1;
	pump(c, s);
	assert_int_equal(sf->received, 5000);
	assert_int_equal(sf->remote_end, 1);
	assert_int_equal(cf->closed, 0);
	/* Our side is closed for writing. */
	size_t took = 0;
	assert_int_equal(sp_tunnel_write(c->t, id, "x", 1, &took), SP_ERR_INVALID);
	/* The server still talks: bytes from its generator reach the client. */
	for (size_t k = 0; k < 70000; k += 1000) {
		uint8_t chunk[1000];
		for (size_t j = 0; j < sizeof(chunk); j++)
			chunk[j] = pattern_byte(id, k + j);
		assert_int_equal(sp_tunnel_write(s->t, id, chunk, sizeof(chunk), &took), 0);
		assert_int_equal(took, sizeof(chunk));
	}
	pump(c, s);
	assert_int_equal(cf->received, 70000);
	assert_false(cf->mismatch);
	assert_int_equal(cf->remote_end, 0);
	assert_int_equal(sp_tunnel_end(s->t, id), 0);
	assert_int_equal(sp_tunnel_end(s->t, id), 0); /* twice is harmless */
	pump(c, s);
	assert_int_equal(cf->remote_end, 1);
	assert_int_equal(cf->closed, 1);
	assert_int_equal(sf->closed, 1);
	assert_int_equal(cf->close_code, 0);
	side_free(c);
	side_free(s);
}

static void test_tunnel_half_close_server_first(void **state)
{
	(void)state;
	struct side *c = side_new(SP_TUNNEL_CLIENT, NULL);
	struct side *s = side_new(SP_TUNNEL_SERVER, NULL);
	s->accept = 1;
	s->check_pattern = 1;
	int32_t id = open_flow(c, NULL);
	pump(c, s);
	assert_int_equal(sp_tunnel_end(s->t, id), 0);
	pump(c, s);
	struct flow *cf = flow_of(c, id);
	struct flow *sf = flow_of(s, id);
	assert_int_equal(cf->remote_end, 1);
	assert_int_equal(cf->closed, 0);
	cf->to_send = 300000;
	cf->end_after_send = 1;
	pump(c, s);
	assert_int_equal(sf->received, 300000);
	assert_false(sf->mismatch);
	assert_int_equal(sf->remote_end, 1);
	assert_int_equal(cf->closed, 1);
	assert_int_equal(sf->closed, 1);
	side_free(c);
	side_free(s);
}

static void test_tunnel_reset_mid_transfer_returns_window(void **state)
{
	(void)state;
	struct side *c = side_new(SP_TUNNEL_CLIENT, NULL);
	struct side *s = side_new(SP_TUNNEL_SERVER, NULL);
	s->accept = 1;
	s->consume = 0; /* the server never uses what it gets */
	/*
	 * 40 streams of 512 KiB each pass 16 MiB, the connection window: every reset must
	 * give its unconsumed bytes back or the last streams would stall.
	 */
	for (int i = 0; i < 40; i++) {
		int32_t id = open_flow(c, NULL);
		struct flow *cf = flow_of(c, id);
		struct flow *sf = flow_of(s, id);
		cf->to_send = 512 * 1024;
		pump(c, s);
		assert_int_equal(sf->received, 512 * 1024);
		if (i % 2 == 0)
			assert_int_equal(sp_tunnel_reset(c->t, id, SP_TUNNEL_CANCEL), 0);
		else
			assert_int_equal(sp_tunnel_reset(s->t, id, SP_TUNNEL_CANCEL), 0);
		pump(c, s);
		assert_int_equal(cf->closed, 1);
		assert_int_equal(sf->closed, 1);
		assert_int_equal(cf->close_code, SP_TUNNEL_CANCEL);
		assert_int_equal(sf->close_code, SP_TUNNEL_CANCEL);
	}
	/* A reset while bytes are still queued drops them. */
	int32_t id = open_flow(c, NULL);
	pump(c, s);
	flow_of(c, id)->to_send = 3u << 20;
	side_service(c);
	assert_true(sp_tunnel_queued(c->t, id) > 0);
	assert_int_equal(sp_tunnel_reset(c->t, id, SP_TUNNEL_CANCEL), 0);
	assert_int_equal(sp_tunnel_queued(c->t, id), 0);
	flow_of(c, id)->to_send = 0;
	pump(c, s);
	assert_int_equal(flow_of(s, id)->closed, 1);
	assert_true(flow_of(s, id)->received < (3u << 20));
	side_free(c);
	side_free(s);
}

static void test_tunnel_backpressure(void **state)
{
	(void)state;
	struct sp_tunnel_options copts = {.max_queued = 32 * 1024};
	struct sp_tunnel_options sopts = {.stream_window = 64 * 1024};
	struct side *c = side_new(SP_TUNNEL_CLIENT, &copts);
	struct side *s = side_new(SP_TUNNEL_SERVER, &sopts);
	s->accept = 1;
	s->consume = 0;
	int32_t id = open_flow(c, NULL);
	pump(c, s);
	struct flow *cf = flow_of(c, id);
	struct flow *sf = flow_of(s, id);
	cf->to_send = 1u << 20;
	pump(c, s);
	/* The peer's window (64 KiB) went out; our queue (32 KiB) holds the rest. */
	assert_int_equal(sf->received, 64 * 1024);
	assert_int_equal(cf->sent, 64 * 1024 + 32 * 1024);
	assert_int_equal(sp_tunnel_queued(c->t, id), 32 * 1024);
	size_t took = 1;
	assert_int_equal(sp_tunnel_write(c->t, id, "x", 1, &took), 0);
	assert_int_equal(took, 0);
	int writable = cf->writable;
	pump(c, s);
	assert_int_equal(cf->writable, writable); /* nothing moves until consumed */
	assert_int_equal(sf->received, 64 * 1024);
	/* Consuming more than was delivered is refused. */
	assert_int_equal(sp_tunnel_consumed(s->t, id, 64 * 1024 + 1), SP_ERR_INVALID);
	/* The destination takes the bytes: the window reopens and the sender resumes. */
	assert_int_equal(sp_tunnel_consumed(s->t, id, 64 * 1024), 0);
	transfer(s, c); /* WINDOW_UPDATE */
	transfer(c, s); /* DATA from the queue */
	assert_int_equal(cf->writable, writable + 1);
	s->consume = 1;
	assert_int_equal(sp_tunnel_consumed(s->t, id, sf->received - 64 * 1024), 0);
	pump(c, s);
	assert_int_equal(cf->sent, 1u << 20);
	assert_int_equal(sf->received, 1u << 20);
	side_free(c);
	side_free(s);
}

static void test_tunnel_max_concurrent_streams(void **state)
{
	(void)state;
	struct sp_tunnel_options sopts = {.max_streams = 4};
	/* Opened before the server's SETTINGS arrive: the server refuses the extra two. */
	struct side *c = side_new(SP_TUNNEL_CLIENT, NULL);
	struct side *s = side_new(SP_TUNNEL_SERVER, &sopts);
	s->accept = 1;
	int32_t ids[6];
	for (int i = 0; i < 6; i++)
		ids[i] = open_flow(c, NULL);
	pump(c, s);
	int accepted = 0, refused = 0;
	for (int i = 0; i < 6; i++) {
		struct flow *f = flow_of(c, ids[i]);
		if (f->results == 1 && f->status == 200 && f->closed == 0)
			accepted++;
		if (f->results == 0 && f->closed == 1 && f->close_code == SP_TUNNEL_REFUSED_STREAM)
			refused++;
	}
	assert_int_equal(accepted, 4);
	assert_int_equal(refused, 2);
	assert_int_equal(s->requests, 4);
	/* Now the client knows the limit and refuses a fifth itself. */
	assert_int_equal(sp_tunnel_can_open(c->t), 0);
	struct sp_tunnel_open_request req = request(NULL);
	int32_t id = 99;
	assert_int_equal(sp_tunnel_open(c->t, &req, &id, NULL), SP_ERR_TOO_LARGE);
	assert_int_equal(id, 0);
	/* Closing one makes room. */
	assert_int_equal(sp_tunnel_reset(c->t, ids[0], SP_TUNNEL_CANCEL), 0);
	pump(c, s);
	assert_int_equal(sp_tunnel_can_open(c->t), 1);
	id = open_flow(c, NULL);
	pump(c, s);
	assert_int_equal(flow_of(c, id)->status, 200);
	side_free(c);
	side_free(s);

	/* The client's own limit. */
	struct sp_tunnel_options copts = {.max_streams = 2};
	c = side_new(SP_TUNNEL_CLIENT, &copts);
	open_flow(c, NULL);
	open_flow(c, NULL);
	assert_int_equal(sp_tunnel_open(c->t, &req, &id, NULL), SP_ERR_TOO_LARGE);
	side_free(c);
}

static void test_tunnel_goaway_drain(void **state)
{
	(void)state;
	struct side *c = side_new(SP_TUNNEL_CLIENT, NULL);
	struct side *s = side_new(SP_TUNNEL_SERVER, NULL);
	s->accept = 1;
	s->echo = 1;
	int32_t id = open_flow(c, NULL);
	pump(c, s);
	assert_int_equal(sp_tunnel_shutdown(s->t), 0);
	assert_int_equal(sp_tunnel_shutdown(s->t), 0);
	pump(c, s);
	assert_int_equal(sp_tunnel_peer_going_away(c->t), 1);
	assert_int_equal(sp_tunnel_can_open(c->t), 0);
	struct sp_tunnel_open_request req = request(NULL);
	int32_t other = 0;
	assert_int_equal(sp_tunnel_open(c->t, &req, &other, NULL), SP_ERR_INVALID);
	assert_int_equal(sp_tunnel_is_done(c->t), 0);
	assert_int_equal(sp_tunnel_is_done(s->t), 0);
	/* The existing flow carries on to its end. */
	struct flow *cf = flow_of(c, id);
	cf->to_send = 200000;
	cf->end_after_send = 1;
	c->check_pattern = 1;
	pump(c, s);
	assert_int_equal(cf->received, 200000);
	assert_false(cf->mismatch);
	assert_int_equal(cf->closed, 1);
	assert_int_equal(cf->close_code, 0);
	assert_int_equal(sp_tunnel_is_done(c->t), 1);
	assert_int_equal(sp_tunnel_is_done(s->t), 1);
	side_free(c);
	side_free(s);
}

static void test_tunnel_client_shutdown(void **state)
{
	(void)state;
	struct side *c = side_new(SP_TUNNEL_CLIENT, NULL);
	struct side *s = side_new(SP_TUNNEL_SERVER, NULL);
	s->accept = 1;
	pump(c, s);
	assert_int_equal(sp_tunnel_shutdown(c->t), 0);
	struct sp_tunnel_open_request req = request(NULL);
	int32_t id = 0;
	assert_int_equal(sp_tunnel_open(c->t, &req, &id, NULL), SP_ERR_INVALID);
	pump(c, s);
	assert_int_equal(sp_tunnel_peer_going_away(s->t), 1);
	assert_int_equal(sp_tunnel_is_done(c->t), 1);
	assert_int_equal(sp_tunnel_is_done(s->t), 1);
	side_free(c);
	side_free(s);
}

static void test_tunnel_garbage_instead_of_preface(void **state)
{
	(void)state;
	struct side *s = side_new(SP_TUNNEL_SERVER, NULL);
	static const char garbage[] = "GET / HTTP/1.1\r\nHost: example\r\n\r\n";
	struct sp_diag d;
	memset(&d, 0, sizeof(d));
	assert_int_equal(sp_tunnel_recv(s->t, garbage, sizeof(garbage) - 1, &d), SP_ERR_INVALID);
	assert_true(strlen(d.message) > 0);
	/* Stays failed. */
	assert_int_equal(sp_tunnel_recv(s->t, garbage, 3, NULL), SP_ERR_INVALID);
	struct sp_buf out;
	sp_buf_init(&out, 1 << 16);
	assert_int_equal(sp_tunnel_send(s->t, &out), 0);
	sp_buf_free(&out);
	assert_int_equal(sp_tunnel_is_done(s->t), 1);
	side_free(s);

	/* A client that gets garbage instead of SETTINGS. */
	struct side *c = side_new(SP_TUNNEL_CLIENT, NULL);
	static const uint8_t junk[] = {0, 0, 4, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
	/* A connection error: answered with GOAWAY(PROTOCOL_ERROR), then the tunnel is done. */
	int r = sp_tunnel_recv(c->t, junk, sizeof(junk), NULL);
	assert_true(r == 0 || r == SP_ERR_INVALID);
	sp_buf_init(&out, 1 << 16);
	assert_int_equal(sp_tunnel_send(c->t, &out), 0);
	/* The last frame is GOAWAY (type 7) with error code PROTOCOL_ERROR (1). */
	assert_true(out.len >= 17);
	sp_buf_free(&out);
	assert_int_equal(sp_tunnel_is_done(c->t), 1);
	assert_int_equal(sp_tunnel_recv(c->t, junk, sizeof(junk), NULL), SP_ERR_INVALID);
	struct sp_tunnel_open_request req = request(NULL);
	int32_t id;
	assert_int_equal(sp_tunnel_open(c->t, &req, &id, NULL), SP_ERR_INVALID);
	side_free(c);
}

static void test_tunnel_request_check(void **state)
{
	(void)state;
	struct sp_tunnel_open_request req = request(NULL);
	struct sp_diag d;
	assert_int_equal(sp_tunnel_request_check(&req, &d), 0);
	const char *good[] = {"a:1", "10.0.0.1:65535", "[::1]:22", "[fe80::1%25eth0]:80",
			      "x-y_z.example:8080"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		req.authority = good[i];
		assert_int_equal(sp_tunnel_request_check(&req, &d), 0);
	}
	const char *bad[] = {"",	   ":443",	 "host:",	"host:0",
			     "host:00443", "host:65536", "host:123456", "host:+1",
			     "a:b:443",	   "ho st:80",	 "host\x01:80", "user@host:80",
			     "host/x:80",  "[::1:80",	 "[]:80",	"[::1]x:80",
			     "host:8a"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		req.authority = bad[i];
		assert_int_equal(sp_tunnel_request_check(&req, &d), SP_ERR_INVALID);
	}
	char long_host[SP_TUNNEL_AUTHORITY_MAX + 8];
	memset(long_host, 'a', sizeof(long_host));
	memcpy(long_host + SP_TUNNEL_AUTHORITY_MAX - 3, ":80", 4);
	req.authority = long_host;
	assert_int_equal(sp_tunnel_request_check(&req, &d), 0);
	memset(long_host, 'a', sizeof(long_host));
	memcpy(long_host + SP_TUNNEL_AUTHORITY_MAX - 2, ":80", 4);
	assert_int_equal(sp_tunnel_request_check(&req, &d), SP_ERR_TOO_LARGE);
	req = request(NULL);
	req.grant = "";
	assert_int_equal(sp_tunnel_request_check(&req, &d), SP_ERR_INVALID);
	req.grant = "a+b";
	assert_int_equal(sp_tunnel_request_check(&req, &d), SP_ERR_INVALID);
	req.grant = NULL;
	assert_int_equal(sp_tunnel_request_check(&req, &d), SP_ERR_INVALID);
	req = request("0123456789abcdef0123456789abcde");
	assert_int_equal(sp_tunnel_request_check(&req, &d), SP_ERR_INVALID);
	req = request("0123456789abcdef0123456789abcdef0");
	assert_int_equal(sp_tunnel_request_check(&req, &d), SP_ERR_INVALID);
	req = request("0123456789abcdeg0123456789abcdef");
	assert_int_equal(sp_tunnel_request_check(&req, &d), SP_ERR_INVALID);
	req = request(NULL);
	req.proto = (enum sp_tunnel_proto)3;
	assert_int_equal(sp_tunnel_request_check(&req, &d), SP_ERR_INVALID);
	assert_int_equal(sp_tunnel_request_check(NULL, NULL), SP_ERR_INVALID);

	/* sp_tunnel_open validates too, and only on a client. */
	struct side *c = side_new(SP_TUNNEL_CLIENT, NULL);
	req = request(NULL);
	req.authority = "host:0";
	int32_t id = 5;
	assert_int_equal(sp_tunnel_open(c->t, &req, &id, &d), SP_ERR_INVALID);
	assert_int_equal(id, 0);
	assert_non_null(strstr(d.message, "port"));
	struct side *s = side_new(SP_TUNNEL_SERVER, NULL);
	req = request(NULL);
	assert_int_equal(sp_tunnel_open(s->t, &req, &id, NULL), SP_ERR_INVALID);
	assert_int_equal(sp_tunnel_can_open(s->t), 0);
	side_free(c);
	side_free(s);
}

static void test_tunnel_reason_names(void **state)
{
	(void)state;
	for (int r = SP_TUNNEL_REASON_NO_POLICY; r < SP_TUNNEL_REASON_UNKNOWN; r++) {
		const char *name = sp_tunnel_reason_name((enum sp_tunnel_reason)r);
		assert_int_equal(sp_tunnel_reason_parse(name, strlen(name)), r);
	}
	assert_string_equal(sp_tunnel_reason_name(SP_TUNNEL_REASON_PORT_NOT_ALLOWED),
			    "port_not_allowed");
	assert_string_equal(sp_tunnel_reason_name(SP_TUNNEL_REASON_NONE), "");
	assert_string_equal(sp_tunnel_reason_name((enum sp_tunnel_reason)99), "unknown");
	assert_int_equal(sp_tunnel_reason_parse("revoke", 6), SP_TUNNEL_REASON_UNKNOWN);
	assert_int_equal(sp_tunnel_reason_parse("revokedd", 8), SP_TUNNEL_REASON_UNKNOWN);
	assert_int_equal(sp_tunnel_reason_parse("", 0), SP_TUNNEL_REASON_UNKNOWN);
	assert_int_equal(sp_tunnel_reason_parse(NULL, 3), SP_TUNNEL_REASON_UNKNOWN);
}

static void test_tunnel_new_and_argument_errors(void **state)
{
	(void)state;
	struct sp_tunnel *t = (struct sp_tunnel *)&t;
	assert_int_equal(sp_tunnel_new((enum sp_tunnel_role)0, NULL, NULL, NULL, &t),
			 SP_ERR_INVALID);
	assert_null(t);
	struct sp_tunnel_options opts = {.stream_window = 1000};
	assert_int_equal(sp_tunnel_new(SP_TUNNEL_CLIENT, NULL, NULL, &opts, &t), SP_ERR_INVALID);
	opts.stream_window = 0x80000000u;
	assert_int_equal(sp_tunnel_new(SP_TUNNEL_CLIENT, NULL, NULL, &opts, &t), SP_ERR_INVALID);
	assert_int_equal(sp_tunnel_new(SP_TUNNEL_CLIENT, NULL, NULL, NULL, NULL), SP_ERR_INVALID);
	/* No callbacks at all still works. */
	assert_int_equal(sp_tunnel_new(SP_TUNNEL_CLIENT, NULL, NULL, NULL, &t), 0);
	assert_int_equal(sp_tunnel_want_write(t), 1);
	struct sp_tunnel_open_request req = request(NULL);
	int32_t id;
	assert_int_equal(sp_tunnel_open(t, &req, &id, NULL), 0);
	assert_int_equal(sp_tunnel_set_stream_user(t, id, &id), 0);
	assert_ptr_equal(sp_tunnel_stream_user(t, id), &id);
	assert_null(sp_tunnel_stream_user(t, id + 2));
	assert_int_equal(sp_tunnel_set_stream_user(t, id + 2, &id), SP_ERR_NOT_FOUND);
	size_t took;
	assert_int_equal(sp_tunnel_write(t, id, NULL, 1, &took), SP_ERR_INVALID);
	assert_int_equal(sp_tunnel_write(t, id, "x", 1, NULL), SP_ERR_INVALID);
	assert_int_equal(sp_tunnel_write(t, id, "", 0, &took), 0);
	assert_int_equal(sp_tunnel_consumed(t, id, 1), SP_ERR_INVALID);
	assert_int_equal(sp_tunnel_consumed(t, id, 0), 0);
	assert_int_equal(sp_tunnel_recv(t, NULL, 1, NULL), SP_ERR_INVALID);
	assert_int_equal(sp_tunnel_send(t, NULL), SP_ERR_INVALID);
	/* A tiny output buffer gets the bytes a few at a time. */
	struct sp_buf out;
	uint8_t small[7];
	sp_buf_init_fixed(&out, small, sizeof(small));
	assert_int_equal(sp_tunnel_send(t, &out), 0);
	assert_int_equal(out.len, 7);
	assert_memory_equal(small, "PRI * H", 7);
	assert_int_equal(sp_tunnel_want_write(t), 1);
	sp_tunnel_free(t);
	sp_tunnel_free(NULL);
	assert_int_equal(sp_tunnel_is_done(NULL), 1);
	assert_int_equal(sp_tunnel_want_write(NULL), 0);
	struct sp_tunnel_stats st;
	sp_tunnel_get_stats(NULL, &st);
	assert_int_equal(st.streams_open, 0);
}

/* Small output buffers: frames are split across sp_tunnel_send calls and still arrive. */
static void test_tunnel_split_output(void **state)
{
	(void)state;
	struct side *c = side_new(SP_TUNNEL_CLIENT, NULL);
	struct side *s = side_new(SP_TUNNEL_SERVER, NULL);
	s->accept = 1;
	s->echo = 1;
	int32_t id = open_flow(c, NULL);
	struct flow *cf = flow_of(c, id);
	cf->to_send = 100000;
	cf->end_after_send = 1;
	c->check_pattern = 1;
	for (int rounds = 0; rounds < 200000 && cf->closed == 0; rounds++) {
		side_service(c);
		side_service(s);
		uint8_t storage[97];
		struct sp_buf out;
		sp_buf_init_fixed(&out, storage, sizeof(storage));
		assert_int_equal(sp_tunnel_send(c->t, &out), 0);
		assert_int_equal(sp_tunnel_recv(s->t, out.data, out.len, NULL), 0);
		sp_buf_init_fixed(&out, storage, sizeof(storage));
		assert_int_equal(sp_tunnel_send(s->t, &out), 0);
		/* Byte by byte. */
		for (size_t i = 0; i < out.len; i++)
			assert_int_equal(sp_tunnel_recv(c->t, storage + i, 1, NULL), 0);
	}
	assert_int_equal(cf->received, 100000);
	assert_false(cf->mismatch);
	assert_int_equal(cf->closed, 1);
	side_free(c);
	side_free(s);
}

/* ---- through TLS ---- */

struct tls_end {
	EVP_PKEY *key;
	SSL_CTX *ctx;
	SSL *ssl;
	struct sp_tunnel_tls *tt;
};

/* Moves ciphertext from a to b as a socket would; returns bytes moved. */
static size_t tls_move(struct tls_end *a, struct tls_end *b)
{
	const uint8_t *data;
	size_t len;
	assert_int_equal(sp_tunnel_tls_flush(a->tt, NULL), 0);
	assert_int_equal(sp_tunnel_tls_outbound_view(a->tt, &data, &len), 0);
	if (len == 0)
		return 0;
	size_t used = 0;
	struct sp_diag d;
	int r = sp_tunnel_tls_recv(b->tt, data, len, &used, &d);
	if (r != 0)
		fail_msg("tls recv: %s", d.message);
	assert_true(used > 0);
	assert_int_equal(sp_tunnel_tls_outbound_consume(a->tt, used), 0);
	return used;
}

static void test_tunnel_through_tls(void **state)
{
	(void)state;
	static const char *const alpn[] = {SP_TLS_ALPN_SALLYPORT_1};
	struct sp_tls_options opts = {.alpn = alpn, .alpn_count = 1, .now = NOW};
	struct tls_end ce = {0}, se = {0};
	uint8_t pin[SP_KEY_SPKI_DIGEST_LEN];
	struct sp_diag d;
	assert_int_equal(sp_key_generate(&ce.key), 0);
	assert_int_equal(sp_key_generate(&se.key), 0);
	assert_int_equal(sp_key_spki_sha256(se.key, pin), 0);
	assert_int_equal(sp_tls_server_ctx_new(se.key, &opts, &se.ctx, &d), 0);
	assert_int_equal(sp_tls_client_ctx_new(ce.key, &opts, &ce.ctx, &d), 0);
	assert_int_equal(sp_tls_conn_new_memory(se.ctx, &se.ssl), 0);
	assert_int_equal(sp_tls_conn_new_memory(ce.ctx, &ce.ssl), 0);
	assert_int_equal(sp_tls_set_expected_peer(ce.ssl, pin), 0);

	struct side *c = side_new(SP_TUNNEL_CLIENT, NULL);
	struct side *s = side_new(SP_TUNNEL_SERVER, NULL);
	s->accept = 1;
	s->echo = 1;
	assert_int_equal(sp_tunnel_tls_new(ce.ssl, c->t, &ce.tt), 0);
	assert_int_equal(sp_tunnel_tls_new(se.ssl, s->t, &se.tt), 0);
	struct sp_tunnel_tls *none = (struct sp_tunnel_tls *)&none;
	assert_int_equal(sp_tunnel_tls_new(NULL, c->t, &none), SP_ERR_INVALID);
	assert_null(none);

	int32_t id = open_flow(c, NULL);
	struct flow *cf = flow_of(c, id);
	struct flow *sf = flow_of(s, id);
	sha256_start(&cf->hash_in);
	cf->to_send = 4u << 20;
	cf->end_after_send = 1;
	for (int rounds = 0; rounds < 100000; rounds++) {
		side_service(c);
		side_service(s);
		size_t moved = tls_move(&ce, &se) + tls_move(&se, &ce);
		if (moved == 0 && !sp_tunnel_tls_want_write(ce.tt) &&
		    !sp_tunnel_tls_want_write(se.tt) && cf->closed)
			break;
	}
	assert_int_equal(sp_tunnel_tls_handshake_done(ce.tt), 1);
	assert_int_equal(sp_tunnel_tls_handshake_done(se.tt), 1);
	assert_int_equal(cf->status, 200);
	assert_int_equal(sf->received, 4u << 20);
	assert_int_equal(cf->received, 4u << 20);
	uint8_t want[32], got[32];
	sha256_of_pattern(id, 4u << 20, want);
	sha256_final(cf->hash_in, got);
	assert_memory_equal(want, got, 32);
	assert_int_equal(cf->closed, 1);
	assert_int_equal(cf->close_code, 0);

	/* A broken record is a TLS error, reported, not a crash. */
	uint8_t junk[64];
	memset(junk, 0x17, sizeof(junk));
	size_t used = 0;
	assert_true(sp_tunnel_tls_recv(se.tt, junk, sizeof(junk), &used, &d) < 0);
	assert_true(sp_tunnel_tls_recv(se.tt, junk, sizeof(junk), &used, &d) < 0);

	sp_tunnel_tls_free(ce.tt);
	sp_tunnel_tls_free(se.tt);
	sp_tunnel_tls_free(NULL);
	side_free(c);
	side_free(s);
	SSL_free(ce.ssl);
	SSL_free(se.ssl);
	SSL_CTX_free(ce.ctx);
	SSL_CTX_free(se.ctx);
	EVP_PKEY_free(ce.key);
	EVP_PKEY_free(se.key);
}

/* Reset before the request ever left: no frame for the peer, one on_closed, tunnel fine. */
static void test_tunnel_reset_before_send(void **state)
{
	(void)state;
	struct side *c = side_new(SP_TUNNEL_CLIENT, NULL);
	struct side *s = side_new(SP_TUNNEL_SERVER, NULL);
	s->accept = 1;
	pump(c, s);
	int32_t id = open_flow(c, NULL);
	size_t took = 0;
	assert_int_equal(sp_tunnel_write(c->t, id, "abc", 3, &took), 0);
	assert_int_equal(sp_tunnel_reset(c->t, id, SP_TUNNEL_CANCEL), 0);
	pump(c, s);
	assert_int_equal(flow_of(c, id)->closed, 1);
	assert_int_equal(flow_of(c, id)->results, 0);
	assert_int_equal(s->requests, 0);
	struct sp_tunnel_stats st;
	sp_tunnel_get_stats(c->t, &st);
	assert_int_equal(st.streams_open, 0);
	/* The tunnel is still healthy. */
	int32_t next = open_flow(c, NULL);
	pump(c, s);
	assert_int_equal(flow_of(c, next)->status, 200);
	assert_int_equal(s->requests, 1);
	side_free(c);
	side_free(s);
}

/* A request still queued when the server's GOAWAY arrives is refused locally. */
static void test_tunnel_goaway_crosses_open(void **state)
{
	(void)state;
	struct side *c = side_new(SP_TUNNEL_CLIENT, NULL);
	struct side *s = side_new(SP_TUNNEL_SERVER, NULL);
	s->accept = 1;
	pump(c, s);
	int32_t id = open_flow(c, NULL);
	assert_int_equal(sp_tunnel_shutdown(s->t), 0);
	transfer(s, c); /* GOAWAY reaches the client before its HEADERS left */
	pump(c, s);
	assert_int_equal(flow_of(c, id)->closed, 1);
	assert_int_equal(flow_of(c, id)->close_code, SP_TUNNEL_REFUSED_STREAM);
	assert_int_equal(flow_of(c, id)->results, 0);
	assert_int_equal(s->requests, 0);
	assert_int_equal(sp_tunnel_is_done(c->t), 1);
	assert_int_equal(sp_tunnel_is_done(s->t), 1);
	side_free(c);
	side_free(s);
}

/* A connector with another key: the client's handshake fails, no HTTP/2 byte is exchanged. */
static void test_tunnel_tls_wrong_pin(void **state)
{
	(void)state;
	static const char *const alpn[] = {SP_TLS_ALPN_SALLYPORT_1};
	struct sp_tls_options opts = {.alpn = alpn, .alpn_count = 1, .now = NOW};
	struct tls_end ce = {0}, se = {0};
	uint8_t pin[SP_KEY_SPKI_DIGEST_LEN];
	struct sp_diag d;
	assert_int_equal(sp_key_generate(&ce.key), 0);
	assert_int_equal(sp_key_generate(&se.key), 0);
	assert_int_equal(sp_key_spki_sha256(ce.key, pin), 0); /* the wrong key's digest */
	assert_int_equal(sp_tls_server_ctx_new(se.key, &opts, &se.ctx, &d), 0);
	assert_int_equal(sp_tls_client_ctx_new(ce.key, &opts, &ce.ctx, &d), 0);
	assert_int_equal(sp_tls_conn_new_memory(se.ctx, &se.ssl), 0);
	assert_int_equal(sp_tls_conn_new_memory(ce.ctx, &ce.ssl), 0);
	assert_int_equal(sp_tls_set_expected_peer(ce.ssl, pin), 0);
	struct side *c = side_new(SP_TUNNEL_CLIENT, NULL);
	struct side *s = side_new(SP_TUNNEL_SERVER, NULL);
	assert_int_equal(sp_tunnel_tls_new(ce.ssl, c->t, &ce.tt), 0);
	assert_int_equal(sp_tunnel_tls_new(se.ssl, s->t, &se.tt), 0);
	open_flow(c, NULL);
	assert_int_equal(sp_tunnel_tls_want_write(ce.tt), 0); /* nothing before the handshake */
	int client_result = 0;
	for (int i = 0; i < 10 && client_result == 0; i++) {
		const uint8_t *data;
		size_t len, used;
		assert_int_equal(sp_tunnel_tls_flush(ce.tt, NULL), 0);
		assert_int_equal(sp_tunnel_tls_outbound_view(ce.tt, &data, &len), 0);
		if (len > 0) {
			assert_int_equal(sp_tunnel_tls_recv(se.tt, data, len, &used, NULL), 0);
			assert_int_equal(sp_tunnel_tls_outbound_consume(ce.tt, used), 0);
		}
		assert_int_equal(sp_tunnel_tls_flush(se.tt, NULL), 0);
		assert_int_equal(sp_tunnel_tls_outbound_view(se.tt, &data, &len), 0);
		if (len > 0) {
			client_result = sp_tunnel_tls_recv(ce.tt, data, len, &used, &d);
			assert_int_equal(sp_tunnel_tls_outbound_consume(se.tt, used), 0);
		}
	}
	assert_int_equal(client_result, SP_ERR_PEER_MISMATCH);
	assert_int_equal(sp_tunnel_tls_handshake_done(ce.tt), 0);
	assert_int_equal(s->requests, 0);
	size_t used;
	assert_true(sp_tunnel_tls_recv(ce.tt, "x", 1, &used, NULL) < 0);
	sp_tunnel_tls_free(ce.tt);
	sp_tunnel_tls_free(se.tt);
	side_free(c);
	side_free(s);
	SSL_free(ce.ssl);
	SSL_free(se.ssl);
	SSL_CTX_free(ce.ctx);
	SSL_CTX_free(se.ctx);
	EVP_PKEY_free(ce.key);
	EVP_PKEY_free(se.key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tunnel_open_accept_echo_4mib),
	    cmocka_unit_test(test_tunnel_200_concurrent_streams),
	    cmocka_unit_test(test_tunnel_refusal_reasons_reach_client),
	    cmocka_unit_test(test_tunnel_refuse_and_accept_argument_errors),
	    cmocka_unit_test(test_tunnel_malformed_requests_get_400),
	    cmocka_unit_test(test_tunnel_header_list_limit),
	    cmocka_unit_test(test_tunnel_half_close_client_first),
	    cmocka_unit_test(test_tunnel_half_close_server_first),
	    cmocka_unit_test(test_tunnel_reset_mid_transfer_returns_window),
	    cmocka_unit_test(test_tunnel_backpressure),
	    cmocka_unit_test(test_tunnel_max_concurrent_streams),
	    cmocka_unit_test(test_tunnel_goaway_drain),
	    cmocka_unit_test(test_tunnel_reset_before_send),
	    cmocka_unit_test(test_tunnel_goaway_crosses_open),
	    cmocka_unit_test(test_tunnel_client_shutdown),
	    cmocka_unit_test(test_tunnel_garbage_instead_of_preface),
	    cmocka_unit_test(test_tunnel_request_check),
	    cmocka_unit_test(test_tunnel_reason_names),
	    cmocka_unit_test(test_tunnel_new_and_argument_errors),
	    cmocka_unit_test(test_tunnel_split_output),
	    cmocka_unit_test(test_tunnel_through_tls),
	    cmocka_unit_test(test_tunnel_tls_wrong_pin),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
