/*
 * shared/tunnel.h — the flows of one Sallyport tunnel, multiplexed as HTTP/2 streams.
 *
 * A tunnel (client <-> connector, directly or through a blind relay) is TLS 1.3 carrying
 * HTTP/2. Each flow is one HTTP/2 stream opened CONNECT-style (docs/protocol.md §2):
 *
 *   :method CONNECT, :authority host:port, sallyport-proto tcp|udp,
 *   sallyport-grant <JWS>, sallyport-flow <32 lower-case hex>
 *
 * and answered `:status 200` (then bytes flow both ways as DATA) or a 4xx/5xx with
 * `sallyport-reason`. Half-close is END_STREAM, abort is RST_STREAM. docs/tunnel.md
 * explains the stream lifecycle, flow control and the limits.
 *
 * This module is sans-I/O: it sees plaintext HTTP/2 bytes only. The caller feeds what
 * the peer sent (sp_tunnel_recv) and takes what must go out (sp_tunnel_send); TLS goes
 * around both (shared/tunnel_tls.h composes the two). Application events arrive through
 * callbacks, synchronously, from inside sp_tunnel_recv and sp_tunnel_send.
 *
 * Inside a callback the application may call sp_tunnel_accept/refuse/write/end/reset/
 * consumed/open/shutdown and the stream user-pointer functions, but never sp_tunnel_recv,
 * sp_tunnel_send or sp_tunnel_free.
 *
 * Ownership: sp_tunnel_new allocates the tunnel, sp_tunnel_free releases it and all its
 * streams (no on_closed callbacks fire then). Per-stream user pointers stay the
 * application's. Not thread-safe: one tunnel belongs to one event-loop thread.
 */
#ifndef SALLYPORT_SHARED_TUNNEL_H
#define SALLYPORT_SHARED_TUNNEL_H

#include <stddef.h>
#include <stdint.h>

#include "shared/buf.h"
#include "shared/error.h"

/* Longest :authority ("host:port", IPv6 literal in brackets). */
#define SP_TUNNEL_AUTHORITY_MAX 262
/* Longest sallyport-grant value (base64url segments joined by dots). */
#define SP_TUNNEL_GRANT_MAX 8192
/* sallyport-flow is exactly this many lower-case hex digits (128 bits). */
#define SP_TUNNEL_FLOW_ID_LEN 32

/* Defaults for struct sp_tunnel_options fields left 0. */
#define SP_TUNNEL_DEFAULT_STREAM_WINDOW (1024 * 1024)
#define SP_TUNNEL_DEFAULT_CONNECTION_WINDOW (16 * 1024 * 1024)
#define SP_TUNNEL_DEFAULT_MAX_STREAMS 1024
#define SP_TUNNEL_DEFAULT_MAX_HEADER_LIST (16 * 1024)
#define SP_TUNNEL_DEFAULT_MAX_QUEUED (1024 * 1024)

/* HTTP/2 error codes the application passes to sp_tunnel_reset or sees in on_closed. */
#define SP_TUNNEL_NO_ERROR 0x0
#define SP_TUNNEL_PROTOCOL_ERROR 0x1
#define SP_TUNNEL_INTERNAL_ERROR 0x2
#define SP_TUNNEL_REFUSED_STREAM 0x7
#define SP_TUNNEL_CANCEL 0x8

enum sp_tunnel_role {
	SP_TUNNEL_CLIENT = 1, /* opens streams (the Sallyport client) */
	SP_TUNNEL_SERVER = 2, /* answers them (the connector) */
};

enum sp_tunnel_proto {
	SP_TUNNEL_PROTO_TCP = 1, /* a byte stream */
	SP_TUNNEL_PROTO_UDP = 2, /* datagrams framed as shared/wire.h sp_udp_frame */
};

/*
 * Why a stream was refused: the value of `sallyport-reason`. NONE on success; UNKNOWN
 * when a refusal carried no reason or one this build does not know.
 */
enum sp_tunnel_reason {
	SP_TUNNEL_REASON_NONE = 0,
	SP_TUNNEL_REASON_NO_POLICY,
	SP_TUNNEL_REASON_PORT_NOT_ALLOWED,
	SP_TUNNEL_REASON_REVOKED,
	SP_TUNNEL_REASON_EXPIRED,
	SP_TUNNEL_REASON_DNS_ERROR,
	SP_TUNNEL_REASON_CONNECT_FAILED,
	SP_TUNNEL_REASON_BAD_GRANT,
	SP_TUNNEL_REASON_CONNECTOR_UNAVAILABLE,
	SP_TUNNEL_REASON_BAD_REQUEST,
	SP_TUNNEL_REASON_OVERLOADED,
	SP_TUNNEL_REASON_UNKNOWN,
};

/* The wire name ("port_not_allowed"); "" for NONE, "unknown" for UNKNOWN or out of range. */
const char *sp_tunnel_reason_name(enum sp_tunnel_reason reason);
/* The reason named by the len bytes at name; UNKNOWN when none matches exactly. */
enum sp_tunnel_reason sp_tunnel_reason_parse(const char *name, size_t len);

/*
 * One flow-open request. On the client the caller owns it and sp_tunnel_open copies what
 * it needs. On the server the tunnel owns it and the strings (NUL-terminated) are valid
 * only during on_open_request: copy what you keep.
 */
struct sp_tunnel_open_request {
	const char *authority; /* "host:port" */
	enum sp_tunnel_proto proto;
	const char *grant;   /* the grant JWS */
	const char *flow_id; /* SP_TUNNEL_FLOW_ID_LEN lower-case hex digits */
};

struct sp_tunnel;

/*
 * Application callbacks; any may be NULL. `user` is the pointer given to sp_tunnel_new.
 * Copied by sp_tunnel_new.
 */
struct sp_tunnel_callbacks {
	/* Server: a valid open request; answer now or later with sp_tunnel_accept/refuse. */
	void (*on_open_request)(struct sp_tunnel *t, int32_t stream,
				const struct sp_tunnel_open_request *req, void *user);
	/*
	 * Client: the server's answer. status 200 with reason NONE, or 400..599 with a reason.
	 * A stream that closes before any answer (refused by the stream limit or GOAWAY,
	 * reset) sees only on_closed.
	 */
	void (*on_open_result)(struct sp_tunnel *t, int32_t stream, int status,
			       enum sp_tunnel_reason reason, void *user);
	/*
	 * Bytes from the peer. They count against the peer's flow-control windows until the
	 * application calls sp_tunnel_consumed for them.
	 */
	void (*on_data)(struct sp_tunnel *t, int32_t stream, const uint8_t *data, size_t len,
			void *user);
	/* The peer half-closed the stream (END_STREAM): no more on_data. */
	void (*on_remote_end)(struct sp_tunnel *t, int32_t stream, void *user);
	/*
	 * The stream's queue has room again after an sp_tunnel_write accepted less than it
	 * was given (fired from sp_tunnel_send once the queue is at most half full).
	 */
	void (*on_writable)(struct sp_tunnel *t, int32_t stream, void *user);
	/* The stream is gone (error_code 0 for a clean close); its id is invalid afterwards. */
	void (*on_closed)(struct sp_tunnel *t, int32_t stream, uint32_t error_code, void *user);
};

/* Limits; a field left 0 takes its SP_TUNNEL_DEFAULT_*. Owned by the caller, copied. */
struct sp_tunnel_options {
	uint32_t stream_window;	    /* bytes a peer may send on one stream unconsumed */
	uint32_t connection_window; /* ... on all streams together */
	uint32_t max_streams;	    /* concurrent streams (server: advertised and enforced) */
	uint32_t max_header_list;   /* request/response header bytes (RFC 9113 size rule) */
	size_t max_queued;	    /* bytes sp_tunnel_write buffers per stream */
};

/* Counters; filled by sp_tunnel_get_stats. */
struct sp_tunnel_stats {
	uint64_t streams_open;	/* streams not yet closed */
	uint64_t streams_total; /* streams ever opened (client) or requested (server) */
	uint64_t bytes_in;	/* DATA payload bytes received */
	uint64_t bytes_out;	/* DATA payload bytes sent */
};

/*
 * A tunnel of the given role with its HTTP/2 session (the client's connection preface and
 * both sides' SETTINGS are queued, so sp_tunnel_want_write is 1 at once). cb and opts may
 * be NULL. Returns 0 and *out (sp_tunnel_free), SP_ERR_INVALID for a bad role or a
 * window above 2^31-1 or below 16 KiB, SP_ERR_NOMEM.
 */
int sp_tunnel_new(enum sp_tunnel_role role, const struct sp_tunnel_callbacks *cb, void *user,
		  const struct sp_tunnel_options *opts, struct sp_tunnel **out);
/* Frees the tunnel and every stream without callbacks. Safe on NULL. */
void sp_tunnel_free(struct sp_tunnel *t);

/*
 * Feeds len plaintext HTTP/2 bytes from the peer and runs the callbacks they cause.
 * Returns 0, or SP_ERR_INVALID for a protocol error (a bad preface, flooding, a malformed
 * frame: the diag says which) after which the tunnel accepts nothing more: send what
 * sp_tunnel_send still gives and close. Some connection errors are answered with a
 * GOAWAY first: recv returns 0, sp_tunnel_send gives the GOAWAY, and from then on
 * sp_tunnel_is_done is 1 and recv returns SP_ERR_INVALID. SP_ERR_NOMEM when an allocation
 * failed, here or earlier (nghttp2 ends the connection with GOAWAY INTERNAL_ERROR when it
 * cannot build a frame of ours; later calls then return SP_ERR_NOMEM).
 */
int sp_tunnel_recv(struct sp_tunnel *t, const void *in, size_t len, struct sp_diag *diag);
/*
 * Appends the bytes the tunnel wants to send to out, up to out's max (what does not fit
 * stays for the next call). Returns 0 (possibly having appended nothing), SP_ERR_NOMEM,
 * or SP_ERR_INVALID after a fatal error.
 */
int sp_tunnel_send(struct sp_tunnel *t, struct sp_buf *out);
/* 1 when sp_tunnel_send has bytes to give. */
int sp_tunnel_want_write(const struct sp_tunnel *t);
/*
 * 1 when the tunnel is finished: after a GOAWAY (sent or received) or a fatal error,
 * no stream is left and nothing remains to send. The caller then closes the connection.
 */
int sp_tunnel_is_done(const struct sp_tunnel *t);

/*
 * Checks an open request: authority "host:port" (host a name or IPv4 of printable
 * characters without ':' '/' '@' or whitespace, or a bracketed IPv6 literal; port 1..65535
 * in decimal without leading zeros; at most SP_TUNNEL_AUTHORITY_MAX), proto tcp or udp,
 * grant 1..SP_TUNNEL_GRANT_MAX of base64url characters and dots, flow id exactly 32
 * lower-case hex. Returns 0 or SP_ERR_INVALID / SP_ERR_TOO_LARGE with a diag naming the
 * field.
 */
int sp_tunnel_request_check(const struct sp_tunnel_open_request *req, struct sp_diag *diag);

/*
 * 1 when sp_tunnel_open would be allowed now: a client tunnel, not draining, below both
 * our max_streams and the server's advertised limit.
 */
int sp_tunnel_can_open(const struct sp_tunnel *t);
/*
 * Client: opens a flow (one HEADERS frame; no round trip but the answer). Bytes written
 * before the 200 are queued and sent after it. Returns 0 and *stream; SP_ERR_INVALID for
 * a server tunnel, a draining one or a bad request (diag says which field);
 * SP_ERR_TOO_LARGE when the stream limit is reached or stream ids are exhausted;
 * SP_ERR_NOMEM.
 */
int sp_tunnel_open(struct sp_tunnel *t, const struct sp_tunnel_open_request *req, int32_t *stream,
		   struct sp_diag *diag);
/*
 * Server: answers an open request `:status 200`; DATA may flow from then on. Returns 0,
 * SP_ERR_NOT_FOUND for an unknown or closed stream, SP_ERR_INVALID when already answered.
 */
int sp_tunnel_accept(struct sp_tunnel *t, int32_t stream);
/*
 * Server: answers with status (400..599) and `sallyport-reason` (not NONE or UNKNOWN),
 * ending the stream. Errors as sp_tunnel_accept; SP_ERR_INVALID for a bad status/reason.
 */
int sp_tunnel_refuse(struct sp_tunnel *t, int32_t stream, int status, enum sp_tunnel_reason reason);

/*
 * Queues up to len bytes for the peer and sets *accepted to how many were taken: fewer
 * than len (possibly 0) when the stream's queue (max_queued) is full — backpressure;
 * on_writable says when to try again. Queued bytes go out as DATA within HTTP/2 flow
 * control. Returns 0; SP_ERR_NOT_FOUND for an unknown stream; SP_ERR_INVALID after
 * sp_tunnel_end or on a refused stream.
 */
int sp_tunnel_write(struct sp_tunnel *t, int32_t stream, const void *data, size_t len,
		    size_t *accepted);
/* Bytes queued on the stream and not yet sent (0 for an unknown stream). */
size_t sp_tunnel_queued(const struct sp_tunnel *t, int32_t stream);
/* Half-closes our side: END_STREAM once the queue has drained. Errors as sp_tunnel_write. */
int sp_tunnel_end(struct sp_tunnel *t, int32_t stream);
/* Aborts the stream with RST_STREAM(code); on_closed follows. SP_ERR_NOT_FOUND. */
int sp_tunnel_reset(struct sp_tunnel *t, int32_t stream, uint32_t code);
/*
 * Tells the peer n more bytes delivered by on_data have been used (written to the
 * destination socket), reopening its flow-control windows. SP_ERR_NOT_FOUND for an
 * unknown stream; SP_ERR_INVALID when n exceeds what was delivered and not yet consumed.
 */
int sp_tunnel_consumed(struct sp_tunnel *t, int32_t stream, size_t n);

/* The application's pointer for a stream (NULL when unset or the stream is unknown). */
void *sp_tunnel_stream_user(const struct sp_tunnel *t, int32_t stream);
/* Sets it. SP_ERR_NOT_FOUND for an unknown stream. */
int sp_tunnel_set_stream_user(struct sp_tunnel *t, int32_t stream, void *user);

/*
 * Graceful drain: sends GOAWAY naming the last stream the peer opened. No new streams are
 * accepted (client: sp_tunnel_open fails); existing ones continue until they close, then
 * sp_tunnel_is_done. Returns 0, SP_ERR_NOMEM; calling it again does nothing.
 */
int sp_tunnel_shutdown(struct sp_tunnel *t);
/* 1 once the peer sent GOAWAY (open no more streams here). */
int sp_tunnel_peer_going_away(const struct sp_tunnel *t);

void sp_tunnel_get_stats(const struct sp_tunnel *t, struct sp_tunnel_stats *out);

#endif
