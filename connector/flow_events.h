/*
 * connector/flow_events.h — the bounded queue of flow events (one per stream, allowed
 * or denied) between the data-plane thread, which pushes, and the reporter thread, which
 * takes batches for POST /api/connector/v1/flow-events (docs/protocol.md §1.7).
 *
 * Bounded at CONNECTOR_FLOW_EVENTS_MAX; when full, new events are dropped and counted
 * (a controller that is away must not make the connector run out of memory). Owned by
 * main; every function is thread-safe.
 */
#ifndef SALLYPORT_CONNECTOR_FLOW_EVENTS_H
#define SALLYPORT_CONNECTOR_FLOW_EVENTS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define CONNECTOR_FLOW_EVENTS_MAX 10000
#define CONNECTOR_FLOW_EVENTS_BATCH 1000

/* One flow's record, filled by the data plane. Strings "" when unknown. */
struct connector_flow_event {
	char flow_id[33];
	int64_t time;	    /* start, unix seconds */
	const char *protocol; /* "tcp" / "udp" (static) */
	int allowed;
	const char *reason; /* static wire name, or NULL */
	char user_id[65];
	char device_id[65];
	char session_id[65];
	char resource_id[65];
	char destination_host[256];
	char destination_ip[46];
	uint16_t destination_port;
	uint64_t bytes_up;   /* client -> service */
	uint64_t bytes_down; /* service -> client */
	uint64_t duration_ms;
};

struct connector_flow_queue {
	pthread_mutex_t lock;
	pthread_cond_t nonempty;
	json_t **items; /* ring of CONNECTOR_FLOW_EVENTS_MAX event objects */
	size_t head;
	size_t count;
	uint64_t dropped;
	uint64_t queued_total;
};

int connector_flow_queue_init(struct connector_flow_queue *q);
/* Frees queued events. */
void connector_flow_queue_destroy(struct connector_flow_queue *q);

/* The JSON event of docs/protocol.md §1.7 (new reference) or NULL without memory. */
json_t *connector_flow_event_json(const struct connector_flow_event *ev);

/* Queues the event (dropped and counted when full). */
void connector_flow_queue_push(struct connector_flow_queue *q, const struct connector_flow_event *ev);

/*
 * Takes up to max events into a new JSON array (*out, NULL when none); waits up to
 * wait_ms for the first one.
 */
void connector_flow_queue_take(struct connector_flow_queue *q, size_t max, int wait_ms, json_t **out);

/* Wakes a waiting taker (shutdown). */
void connector_flow_queue_wake(struct connector_flow_queue *q);

uint64_t connector_flow_queue_dropped(struct connector_flow_queue *q);
size_t connector_flow_queue_length(struct connector_flow_queue *q);

#endif
