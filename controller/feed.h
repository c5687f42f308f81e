/*
 * controller/feed.h — wakes long-polling clients and connectors when something changes.
 *
 * The store numbers every change with a sequence (the `changes` table). A feed request
 * names the last sequence its sender has seen; when the controller is already past it the
 * handler answers at once, otherwise it parks the request here with a deadline.
 * feed_publish() (called after a committed change) resumes every parked request whose
 * sequence is behind; a timer thread resumes the ones whose deadline has passed. The
 * handler, called again, answers with whatever is current.
 *
 * Ownership: the feed belongs to the controller; feed_free resumes everything still
 * parked (so the HTTP server can stop) and joins the timer thread. Parked requests are
 * borrowed: the HTTP server cannot complete a suspended request, so each stays valid
 * until this module resumes it, and it is removed from the list in the same step.
 * Thread-safe.
 */
#ifndef SALLYPORT_CONTROLLER_FEED_H
#define SALLYPORT_CONTROLLER_FEED_H

#include <stddef.h>
#include <stdint.h>

#include "controller/http.h"

#define FEED_MAX_WAITERS 100000

struct feed;

/* tick_ms: how often deadlines are checked (e.g. 50). */
int feed_new(int64_t initial_seq, unsigned tick_ms, struct feed **out);
void feed_free(struct feed *feed);

int64_t feed_seq(struct feed *feed);
/* Records that the store reached `seq` and wakes the requests behind it. */
void feed_publish(struct feed *feed, int64_t seq);
/* Resumes every parked request now (used when shutting down). */
void feed_wake_all(struct feed *feed);

/*
 * Parks req until the sequence passes `after` or `timeout_ms` passes. Returns 1 when it
 * parked the request (the handler returns and is called again later), 0 when the feed is
 * already past `after` (answer now), SP_ERR_TOO_LARGE when FEED_MAX_WAITERS are parked.
 */
int feed_wait(struct feed *feed, struct http_request *req, int64_t after, unsigned timeout_ms);

size_t feed_waiting(struct feed *feed);

#endif
