/*
 * client/daemon.h — the client daemon: sessions, resource list, tunnels and local listeners.
 *
 * One event-loop thread (libevent) owns the listeners, local connections, tunnels and
 * the control socket; one controller thread keeps the access token fresh (refresh-token
 * rotation), fetches and verifies the signed resource list and long-polls the change
 * feed, handing each new list to the loop through a pipe. Grants are fetched on the loop
 * thread (a short blocking call, cached per resource until shortly before exp).
 * docs/client.md describes the modes, the control protocol and the limits.
 */
#ifndef SALLYPORT_CLIENT_DAEMON_H
#define SALLYPORT_CLIENT_DAEMON_H
#include "shared/error.h"

enum daemon_mode {
	DAEMON_MODE_PROXY = 1,
	DAEMON_MODE_LOOPBACK = 2,
	DAEMON_MODE_TUN = 3, /* root or CAP_NET_ADMIN: client/daemon_tun.c */
};

/* Settings for daemon_run; strings borrowed for the daemon's lifetime. */
struct daemon_options {
	const char *state_dir;
	enum daemon_mode mode;
	const char *socks_addr;	    /* proxy mode: "127.0.0.1:1080" */
	const char *http_addr;	    /* proxy mode: "127.0.0.1:3128" */
	const char *loopback_range; /* loopback mode: "127.77.0.0/16" */
	const char *dns_addr;	    /* loopback/tun mode: DNS stub listen "ADDR:PORT" or NULL */
	const char *dns_upstreams;  /* the stub's upstreams "ADDR[:PORT],..."; NULL: system */
	const char *tun_range;	    /* tun mode: synthetic IPv4 CIDR; NULL: SYNTHETIC_DEFAULT_V4 */
	const char *tun_range6;	    /* tun mode: IPv6 CIDR or "off"; NULL: SYNTHETIC_DEFAULT_V6 */
	const char *tun_device;	    /* tun mode: device name; NULL: TUN_RULES_DEFAULT_DEVICE */
	int system_dns;		    /* point the system resolver at the stub (client/sysdns.h) */
};

/*
 * Runs the daemon until `down` (control socket), SIGTERM or SIGINT. Returns 0, or an
 * error with a diag when it could not start (not signed in, socket in use...).
 */
int daemon_run(const struct daemon_options *opts, struct sp_diag *diag);
#endif
