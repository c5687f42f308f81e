/*
 * client/daemon_internal.h — types and functions shared by the daemon's two files:
 * client/daemon.c (start-up, resource list, controller thread, control socket),
 * client/daemon_flows.c (local connections, tunnels, listeners, the grant thread),
 * client/daemon_tun.c (tun mode) and client/daemon_udp.c (tun mode's UDP flows).
 * Not a public interface: only those files include it.
 *
 * Threads: everything here belongs to the event-loop thread except the fields of struct
 * daemon marked "under lock", which the controller and grant threads share with it.
 */
#ifndef SALLYPORT_CLIENT_DAEMON_INTERNAL_H
#define SALLYPORT_CLIENT_DAEMON_INTERNAL_H
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include "client/daemon.h"
#include "client/dns_stub.h"
#include "client/grant_cache.h"
#include "client/loopback.h"
#include "client/proxy_parse.h"
#include "client/state.h"
#include "client/synthetic.h"
#include "client/tun_rules.h"
#include "client/sysdns.h"
#include "shared/resource_index.h"
#include "shared/tunnel.h"
#include "shared/tunnel_tls.h"

#define DENIALS_MAX 32
#define CONNECTOR_BACKOFF_MAX_S 30
#define LOCAL_OUT_HIGH (1024 * 1024)
#define MAX_FLOWS 4096
#define ID_MAX 64
/* A direct tunnel not through its TLS handshake within this long gives way to the relay. */
#define TUNNEL_DIRECT_TIMEOUT_S 5
/* A relayed tunnel (ticket, relay, pairing, handshake) gets this long. */
#define TUNNEL_RELAY_TIMEOUT_S 15

/*
 * FLOW_TUN is a listener kind only: its connections become FLOW_LOOPBACK flows. FLOW_UDP:
 * a datagram flow of tun mode (no bufferevent; its local side is f->udp, daemon_udp.c).
 */
enum flow_kind { FLOW_LOOPBACK = 1, FLOW_SOCKS, FLOW_HTTP, FLOW_TUN, FLOW_UDP };
enum flow_state { F_SOCKS_GREETING = 1, F_SOCKS_REQUEST, F_HTTP_REQUEST, F_OPENING, F_OPEN };

struct daemon;
struct udp_flow;

/* Where a relayed tunnel is (docs/client.md "Relay"); direct tunnels stay at RELAY_NONE. */
enum relay_phase {
	RELAY_NONE = 0,
	RELAY_WAIT_TICKET,  /* the grant thread fetches a ticket */
	RELAY_CONNECTING,   /* TCP to the relay, then the "SPRC" preamble */
	RELAY_WAIT_STATUS,  /* preamble sent, waiting for the status byte */
	RELAY_PAIRED,       /* the relay splices: TLS runs as on a direct tunnel */
};

struct tunnel {
	struct daemon *d;
	char connector_id[ID_MAX + 1];
	char connector_name[ID_MAX + 1];
	char network_id[ID_MAX + 1];
	char address[300];
	int fd;
	int tcp_connected;
	int handshake_done;
	int dead;
	struct event *ev_read, *ev_write;
	struct event *ev_kick; /* runs tunnel_pump outside tunnel callbacks */
	struct event *ev_timeout; /* not up in time: the tunnel fails (and the flows move on) */
	int relayed;
	enum relay_phase relay_phase;
	uint8_t *relay_hello;     /* "SPRC" + ticket (a secret: wiped), until sent */
	size_t relay_hello_len, relay_hello_off;
	SSL *ssl;
	struct sp_tunnel *t;
	struct sp_tunnel_tls *tt;
	int64_t started;
	struct tunnel *prev, *next;
};

struct flow {
	struct daemon *d;
	enum flow_kind kind;
	enum flow_state state;
	struct bufferevent *bev;
	struct tunnel *tn;
	int32_t stream;
	char host[PROXY_HOST_MAX + 1];
	uint16_t port;
	char resource_id[ID_MAX + 1];
	char network_id[ID_MAX + 1];
	size_t unconsumed;
	int remote_end;
	int stream_closed;
	int read_blocked;
	int dead;
	unsigned attempts;
	int waiting_grant; /* a grant for resource_id is being fetched */
	uint64_t up, down;
	struct udp_flow *udp; /* FLOW_UDP only (client/daemon_udp.c) */
	struct flow *prev, *next;
};

struct listener {
	struct daemon *d;
	struct evconnlistener *l;
	enum flow_kind kind;
	char name[256];
	char addr_text[64];
	uint16_t port;
	struct listener *next;
};

struct denial {
	int64_t time;
	char target[PROXY_HOST_MAX + 8];
	char resource_id[ID_MAX + 1];
	char reason[48];
	char origin[16];
};

/* A grant the loop asks the grant thread for (heap; the thread frees it). */
struct grant_request {
	char resource_id[ID_MAX + 1];
	char connector_id[ID_MAX + 1]; /* set: a relay ticket for this connector instead */
	struct grant_request *next;
};

/* The grant thread's answer (heap; the loop frees it): a grant or a refusal reason. */
struct grant_result {
	char resource_id[ID_MAX + 1];
	char *grant;
	int64_t expires_at;
	char reason[48];
	char origin[16];
	char connector_id[ID_MAX + 1]; /* set: the answer to a ticket request */
	char *ticket;                  /* the relay ticket (secret) */
	char relay[300];               /* the relay to present it to */
	struct grant_result *next;
};

struct connector_health {
	char id[ID_MAX + 1];
	int64_t retry_at; /* relayed (or the connector as a whole) */
	int64_t backoff;
	int64_t direct_retry_at; /* its direct address failed: relayed until then */
	int64_t direct_backoff;
};

struct daemon {
	const struct daemon_options *o;
	struct event_base *base;
	json_t *session;
	char controller[1024];
	char device_id[ID_MAX + 1];
	EVP_PKEY *key;
	SSL_CTX *tls_ctx;
	/* shared with the controller and grant threads: under lock */
	pthread_mutex_t lock;
	char *access;
	int64_t access_exp;
	json_t *pending_claims;
	char ctl_error[256];
	volatile int stop;
	int notify[2];
	struct event *ev_notify, *ev_reaper, *ev_sigterm, *ev_sigint;
	/* loop thread only */
	json_t *claims;
	struct sp_resource *resources;
	size_t nres;
	struct sp_resource_index *index;
	struct grant_cache grants;
	struct tunnel *tunnels;
	struct flow *flows, *zombies;
	struct tunnel *dead_tunnels;
	size_t flows_active;
	uint64_t flows_total, flows_refused;
	struct denial denials[DENIALS_MAX];
	size_t denials_count, denials_next;
	struct connector_health health[64];
	size_t health_count;
	unsigned spread_next; /* new flows take a network's connectors in turn */
	struct listener *listeners;
	struct loopback *lb;
	struct dns_stub *stub; /* loopback/tun mode with --dns: names answered with our addresses */
	struct sysdns *sysdns; /* system resolver pointed at the stub (system_dns), or NULL */
	/* tun mode (client/daemon_tun.c) */
	struct synthetic *syn_own; /* the synthetic table when there is no DNS stub */
	int tun_fd;		   /* the TUN device; -1 when none */
	int tun_applied;	   /* routes, rules and the nft table may exist */
	struct tun_rules tun;
	size_t ports_all;
	/* tun mode's UDP (client/daemon_udp.c): transparent sockets on 127.0.0.1 and ::1 */
	int udp_fd[2];
	struct event *udp_ev[2];
	size_t udp_active;	/* FLOW_UDP flows now (at most UDP_FLOWS_MAX) */
	int64_t udp_idle_ms;	/* a datagram flow ends after this long without a datagram */
	struct evconnlistener *control;
	struct bufferevent *control_conns[16]; /* open control connections (freed at exit) */
	char control_path[STATE_PATH_MAX];
	pthread_t ctl_thread;
	int ctl_started;
	/* grant fetches (worker thread), both lists under lock */
	struct grant_request *grant_queue;
	struct grant_result *grant_results;
	pthread_cond_t grant_cond;
	pthread_t grant_thread;
	int grant_started;
};

static inline int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

/* Wipes and frees a secret string. Safe on NULL. */
static inline void free_secret(char *s)
{
	if (s != NULL) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

/* daemon.c: wakes the loop (a byte on the notify pipe) from any thread. */
void notify_loop(struct daemon *d);

/* daemon_flows.c */
/* Records a refused flow for status (the last DENIALS_MAX). */
void record_denial(struct daemon *d, const struct flow *f, const char *reason, const char *origin);
/* Closes the local side (RST when rst) and resets the stream; freed later by on_reaper. */
void flow_close(struct flow *f, int rst);
/* Refuses the flow: RST for loopback, the proxy's error reply otherwise; recorded. */
void flow_refuse(struct flow *f, const char *reason, const char *origin, const char *text);
/* Opens the flow's stream (after its grant is cached) on a tunnel of its network. */
void flow_dispatch(struct flow *f);
/* Finds the resource for f->host:f->port (TCP, or UDP for FLOW_UDP) and starts the flow. */
void flow_start(struct flow *f);
/* Ends a tunnel: unanswered flows fail over, open ones are cut; freed by on_reaper. */
void tunnel_fail(struct tunnel *tn, const char *why);
/* Listens on addr_text:port for connections of kind (name: the loopback name). */
int listen_on(struct daemon *d, enum flow_kind kind, const char *addr_text, uint16_t port,
	      const char *name, struct sp_diag *diag);
/* "ADDR:PORT" into host and port. */
int parse_listen(const char *text, char *host, size_t hsize, uint16_t *port,
		 struct sp_diag *diag);
/* The grant thread's body (arg: struct daemon). */
void *grant_main(void *arg);
/* A ticket answer from the grant thread: the relayed tunnel waiting for it goes on (or
 * fails). Takes nothing from r. */
void tunnel_ticket_ready(struct daemon *d, const struct grant_result *r);
/* Frees closed flows and tunnels (the reaper event's handler). */
void on_reaper(evutil_socket_t fd, short what, void *arg);
/* Serves connections accepted on a bound, listening socket fd (owned from then on). */
int listen_adopt(struct daemon *d, enum flow_kind kind, evutil_socket_t fd, const char *addr_text,
		 uint16_t port, struct sp_diag *diag);

/* daemon_tun.c: tun mode */
/*
 * Removes leftovers of an earlier run, opens the transparent listeners, the device, the
 * routes, rules and the nft table. On failure everything made is removed again.
 */
int tun_start(struct daemon *d, struct sp_diag *diag);
/* Gives every exact protected name its synthetic address (after a new resource list). */
void tun_sync(struct daemon *d);
/*
 * The protected name and port a connection accepted on a tun listener was dialled to
 * (its local address, a synthetic one). SP_ERR_NOT_FOUND, with the address text in host,
 * when the address stands for no name now.
 */
int tun_flow_target(struct daemon *d, evutil_socket_t fd, char *host, size_t hsize,
		    uint16_t *port);
/* The protected name for a synthetic address (family, addr); as tun_flow_target. */
int tun_addr_target(struct daemon *d, int family, const uint8_t *addr, char *host,
		    size_t hsize);
/* Status: device, ranges and the names with their addresses. */
json_t *tun_status(struct daemon *d);
/* Removes the table, rules and device (safe to call twice, and when tun_start failed). */
void tun_stop(struct daemon *d);

/* daemon_udp.c: tun mode's UDP flows */
/*
 * Opens the transparent UDP socket of family on the loopback address (port picked by the
 * kernel, in *port) and serves the datagrams tproxied to it. Stopped by udp_stop.
 */
int udp_start(struct daemon *d, int family, uint16_t *port, struct sp_diag *diag);
/* Closes the UDP sockets (after every flow was closed). Safe to call twice. */
void udp_stop(struct daemon *d);
/* The flow's stream is open: the datagrams that waited go out. */
void udp_flow_opened(struct flow *f);
/* Stream bytes from the connector (frames, possibly split): each whole one is answered. */
void udp_flow_data(struct flow *f, const uint8_t *data, size_t len);
/* The stream takes bytes again: the rest of a frame that did not fit goes out. */
void udp_flow_writable(struct flow *f);
/*
 * Frees the local side of a closing flow (from flow_close); for a SOCKS5 UDP association
 * it closes the relay socket and every datagram flow of the association.
 */
void udp_flow_release(struct flow *f);
/*
 * A SOCKS5 UDP ASSOCIATE request on the connection of f (kind FLOW_SOCKS): opens the UDP
 * relay socket next to the proxy's address and answers with it; the association lasts as
 * long as the connection. Refuses with a SOCKS5 error when the socket cannot be made.
 */
void udp_socks_associate(struct flow *f);
#endif
