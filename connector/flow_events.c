/*
 * connector/flow_events.c — see flow_events.h.
 */
#include "connector/flow_events.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int connector_flow_queue_init(struct connector_flow_queue *q)
{
	memset(q, 0, sizeof(*q));
	q->items = calloc(CONNECTOR_FLOW_EVENTS_MAX, sizeof(*q->items));
	if (q->items == NULL)
		return -2;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->nonempty, NULL);
	return 0;
}

void connector_flow_queue_destroy(struct connector_flow_queue *q)
{
	if (q->items == NULL)
		return;
	for (size_t i = 0; i < q->count; i++)
		json_decref(q->items[(q->head + i) % CONNECTOR_FLOW_EVENTS_MAX]);
	free(q->items);
	q->items = NULL;
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->nonempty);
}

static int set_optional(json_t *o, const char *key, const char *value)
{
	if (value == NULL || value[0] == '\0')
		return 0;
	return json_object_set_new(o, key, json_string(value));
}

json_t *connector_flow_event_json(const struct connector_flow_event *ev)
{
	json_t *o = json_pack("{s:s, s:I, s:s, s:s, s:I, s:I, s:I}", "flow_id", ev->flow_id, "time",
			      (json_int_t)ev->time, "protocol", ev->protocol, "decision",
			      ev->allowed ? "allow" : "deny", "bytes_up", (json_int_t)ev->bytes_up,
			      "bytes_down", (json_int_t)ev->bytes_down, "duration_ms",
			      (json_int_t)ev->duration_ms);
	if (o == NULL)
		return NULL;
	if (set_optional(o, "reason", ev->reason) < 0 ||
	    set_optional(o, "user_id", ev->user_id) < 0 ||
	    set_optional(o, "device_id", ev->device_id) < 0 ||
	    set_optional(o, "session_id", ev->session_id) < 0 ||
	    set_optional(o, "resource_id", ev->resource_id) < 0 ||
	    set_optional(o, "destination_host", ev->destination_host) < 0 ||
	    set_optional(o, "destination_ip", ev->destination_ip) < 0 ||
	    (ev->destination_port != 0 &&
	     json_object_set_new(o, "destination_port", json_integer(ev->destination_port)) < 0)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

void connector_flow_queue_push(struct connector_flow_queue *q, const struct connector_flow_event *ev)
{
	json_t *o = connector_flow_event_json(ev);
	pthread_mutex_lock(&q->lock);
	if (o == NULL || q->count == CONNECTOR_FLOW_EVENTS_MAX) {
		q->dropped++;
		pthread_mutex_unlock(&q->lock);
		json_decref(o);
		return;
	}
	q->items[(q->head + q->count) % CONNECTOR_FLOW_EVENTS_MAX] = o;
	q->count++;
	q->queued_total++;
	pthread_cond_signal(&q->nonempty);
	pthread_mutex_unlock(&q->lock);
}

void connector_flow_queue_take(struct connector_flow_queue *q, size_t max, int wait_ms, json_t **out)
{
	*out = NULL;
	pthread_mutex_lock(&q->lock);
	if (q->count == 0 && wait_ms > 0) {
		struct timespec deadline;
		clock_gettime(CLOCK_REALTIME, &deadline);
		deadline.tv_sec += wait_ms / 1000;
		deadline.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
		if (deadline.tv_nsec >= 1000000000L) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&q->nonempty, &q->lock, &deadline);
	}
	if (q->count > 0) {
		json_t *array = json_array();
		size_t n = q->count < max ? q->count : max;
		for (size_t i = 0; array != NULL && i < n; i++) {
			json_array_append_new(array, q->items[q->head]);
			q->items[q->head] = NULL;
			q->head = (q->head + 1) % CONNECTOR_FLOW_EVENTS_MAX;
			q->count--;
		}
		*out = array;
	}
	pthread_mutex_unlock(&q->lock);
}

void connector_flow_queue_wake(struct connector_flow_queue *q)
{
	pthread_mutex_lock(&q->lock);
	pthread_cond_broadcast(&q->nonempty);
	pthread_mutex_unlock(&q->lock);
}

uint64_t connector_flow_queue_dropped(struct connector_flow_queue *q)
{
	pthread_mutex_lock(&q->lock);
	uint64_t n = q->dropped;
	pthread_mutex_unlock(&q->lock);
	return n;
}

size_t connector_flow_queue_length(struct connector_flow_queue *q)
{
	pthread_mutex_lock(&q->lock);
	size_t n = q->count;
	pthread_mutex_unlock(&q->lock);
	return n;
}
