/*
 * Fuzz target: a connector's side of a tunnel fed hostile HTTP/2 bytes. The server tunnel
 * accepts every valid open and echoes what it receives; its output is drained and thrown
 * away. Inputs starting with a 0 byte play a connector against a client tunnel instead
 * (answers, DATA, resets, GOAWAY). The input goes in two pieces (split at a point chosen
 * by its last byte) so frames that straddle reads are exercised too. No crash, no leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shared/buf.h"
#include "shared/tunnel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_open_request(struct sp_tunnel *t, int32_t stream,
			      const struct sp_tunnel_open_request *req, void *user)
{
	(void)user;
	/* What the tunnel hands over must already be valid. */
	if (sp_tunnel_request_check(req, NULL) != 0)
		abort();
	if (req->flow_id[0] == 'f')
		(void)sp_tunnel_refuse(t, stream, 403, SP_TUNNEL_REASON_NO_POLICY);
	else
		(void)sp_tunnel_accept(t, stream);
}

static void fuzz_data(struct sp_tunnel *t, int32_t stream, const uint8_t *data, size_t len,
		      void *user)
{
	(void)user;
	size_t took = 0;
	if (sp_tunnel_write(t, stream, data, len, &took) != 0 || took < len) {
		(void)sp_tunnel_reset(t, stream, SP_TUNNEL_CANCEL);
		return;
	}
	(void)sp_tunnel_consumed(t, stream, len);
}

static void fuzz_remote_end(struct sp_tunnel *t, int32_t stream, void *user)
{
	(void)user;
	(void)sp_tunnel_end(t, stream);
}

static void drain(struct sp_tunnel *t)
{
	struct sp_buf out;
	sp_buf_init(&out, 256 * 1024);
	for (int i = 0; i < 64 && sp_tunnel_want_write(t); i++) {
		sp_buf_reset(&out);
		if (sp_tunnel_send(t, &out) != 0)
			break;
	}
	sp_buf_free(&out);
}

static void fuzz_open_result(struct sp_tunnel *t, int32_t stream, int status,
			     enum sp_tunnel_reason reason, void *user)
{
	(void)user;
	if (status == 200 ? reason != SP_TUNNEL_REASON_NONE
			  : (status < 400 || status > 599 || reason == SP_TUNNEL_REASON_NONE))
		abort();
	if (status == 200)
		(void)sp_tunnel_end(t, stream);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct sp_tunnel_callbacks cb = {
	    .on_open_request = fuzz_open_request,
	    .on_open_result = fuzz_open_result,
	    .on_data = fuzz_data,
	    .on_remote_end = fuzz_remote_end,
	};
	struct sp_tunnel_options opts = {.max_streams = 16, .max_queued = 64 * 1024};
	struct sp_tunnel *t = NULL;
	/*
	 * A client's bytes start with the preface ("PRI ..."), a server's with a frame header
	 * whose first length byte is almost always 0: inputs starting with 0 play the server
	 * against a client tunnel that has opened two flows.
	 */
	int client = size > 0 && data[0] == 0;
	if (sp_tunnel_new(client ? SP_TUNNEL_CLIENT : SP_TUNNEL_SERVER, &cb, NULL, &opts, &t) != 0)
		return 0;
	if (client) {
		struct sp_tunnel_open_request req = {"db.example:5432", SP_TUNNEL_PROTO_TCP,
						     "eyJhbGciOiJFUzI1NiJ9.e30.c2ln",
						     "0123456789abcdef0123456789abcdef"};
		int32_t id;
		size_t took;
		if (sp_tunnel_open(t, &req, &id, NULL) == 0)
			(void)sp_tunnel_write(t, id, "hello", 5, &took);
		req.proto = SP_TUNNEL_PROTO_UDP;
		(void)sp_tunnel_open(t, &req, &id, NULL);
		drain(t);
	}
	size_t split = size > 0 ? (size_t)data[size - 1] * size / 256 : 0;
	if (sp_tunnel_recv(t, data, split, NULL) == 0) {
		drain(t);
		if (sp_tunnel_recv(t, data + split, size - split, NULL) == 0 && size > 0)
			(void)sp_tunnel_shutdown(t);
	}
	drain(t);
	(void)sp_tunnel_is_done(t);
	sp_tunnel_free(t);
	return 0;
}
