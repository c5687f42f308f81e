/*
 * connector/dataplane.h — the data plane: one libevent 2.1 loop on the main thread that
 * accepts direct tunnels (TLS 1.3 + HTTP/2, shared/tunnel_tls.h), decides every stream
 * (connector/authorize.h), resolves names with c-ares inside the same loop, dials the
 * service and splices bytes both ways with backpressure, reports one flow event per
 * stream, cuts live flows that a new config revokes, serves /metrics and /healthz, and
 * drains on SIGTERM. docs/connector.md describes the lifecycle.
 *
 * Everything here runs on the loop thread. Ownership: dataplane_new allocates, the
 * caller runs dataplane_run and then dataplane_free (which closes every tunnel).
 */
#ifndef SALLYPORT_CONNECTOR_DATAPLANE_H
#define SALLYPORT_CONNECTOR_DATAPLANE_H

#include <stdint.h>

#include "connector/control.h"
#include "shared/error.h"

/* Settings of the data plane; borrowed strings. */
struct dataplane_options {
	const char *direct_listen;  /* "addr:port" or NULL */
	const char *metrics_listen; /* "addr:port" or NULL */
	const char *dns_servers;    /* c-ares CSV ("10.0.0.2,10.0.0.3:5353") or NULL */
	int64_t connect_timeout_ms; /* dialing a service */
	int64_t drain_grace_ms;	    /* SIGTERM: how long existing flows may run on */
	int64_t udp_idle_timeout_ms; /* a UDP flow without a datagram either way closes (60 s) */
};

struct dataplane;

/* Builds the loop, TLS context, listeners and resolver. Errors name the failing part. */
int dataplane_new(struct connector_shared *shared, const struct dataplane_options *opts,
		  struct dataplane **out, struct sp_diag *diag);
/* Runs until SIGTERM/SIGINT and the drain finish. */
int dataplane_run(struct dataplane *dp);
void dataplane_free(struct dataplane *dp);

#endif
