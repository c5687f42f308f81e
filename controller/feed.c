/* controller/feed.c — see feed.h. */
#include "controller/feed.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "shared/error.h"
#include "shared/clock.h"

struct waiter {
	struct http_request *req;
	int64_t after;
	int64_t deadline_ms;
};

struct feed {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t timer;
	int timer_started;
	int stopping;
	unsigned tick_ms;
	int64_t seq;
	struct waiter *waiters; /* unordered; removal swaps with the last */
	size_t count;
	size_t cap;
};

/* Resumes and removes waiter i. Caller holds the lock. */
static void release_waiter(struct feed *feed, size_t i)
{
	http_resume(feed->waiters[i].req);
	feed->waiters[i] = feed->waiters[feed->count - 1];
	feed->count--;
}

static void *timer_main(void *arg)
{
	struct feed *feed = arg;
	pthread_mutex_lock(&feed->lock);
	while (!feed->stopping) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += (long)feed->tick_ms * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		int r = pthread_cond_timedwait(&feed->wake, &feed->lock, &until);
		if (r != 0 && r != ETIMEDOUT)
			break;
		int64_t now = sp_monotonic_ms();
		for (size_t i = 0; i < feed->count;) {
			if (feed->waiters[i].deadline_ms <= now)
				release_waiter(feed, i);
			else
				i++;
		}
	}
	pthread_mutex_unlock(&feed->lock);
	return NULL;
}

int feed_new(int64_t initial_seq, unsigned tick_ms, struct feed **out)
{
	*out = NULL;
	struct feed *feed = calloc(1, sizeof(*feed));
	if (feed == NULL)
		return SP_ERR_NOMEM;
	feed->seq = initial_seq;
	feed->tick_ms = tick_ms != 0 ? tick_ms : 50;
	pthread_mutex_init(&feed->lock, NULL);
	pthread_cond_init(&feed->wake, NULL);
	if (pthread_create(&feed->timer, NULL, timer_main, feed) != 0) {
		pthread_cond_destroy(&feed->wake);
		pthread_mutex_destroy(&feed->lock);
		free(feed);
		return SP_ERR_INTERNAL;
	}
	feed->timer_started = 1;
	*out = feed;
	return 0;
}

void feed_wake_all(struct feed *feed)
{
	pthread_mutex_lock(&feed->lock);
	while (feed->count > 0)
		release_waiter(feed, feed->count - 1);
	pthread_mutex_unlock(&feed->lock);
}

void feed_free(struct feed *feed)
{
	if (feed == NULL)
		return;
	pthread_mutex_lock(&feed->lock);
	feed->stopping = 1;
	while (feed->count > 0)
		release_waiter(feed, feed->count - 1);
	pthread_cond_signal(&feed->wake);
	pthread_mutex_unlock(&feed->lock);
	if (feed->timer_started)
		pthread_join(feed->timer, NULL);
	pthread_cond_destroy(&feed->wake);
	pthread_mutex_destroy(&feed->lock);
	free(feed->waiters);
	free(feed);
}

int64_t feed_seq(struct feed *feed)
{
	pthread_mutex_lock(&feed->lock);
	int64_t seq = feed->seq;
	pthread_mutex_unlock(&feed->lock);
	return seq;
}

void feed_publish(struct feed *feed, int64_t seq)
{
	pthread_mutex_lock(&feed->lock);
	if (seq > feed->seq)
		feed->seq = seq;
	for (size_t i = 0; i < feed->count;) {
		if (feed->waiters[i].after < feed->seq)
			release_waiter(feed, i);
		else
			i++;
	}
	pthread_mutex_unlock(&feed->lock);
}

int feed_wait(struct feed *feed, struct http_request *req, int64_t after, unsigned timeout_ms)
{
	int r = 0;
	pthread_mutex_lock(&feed->lock);
	if (feed->seq > after || feed->stopping)
		goto out;
	if (feed->count == feed->cap) {
		size_t cap = feed->cap != 0 ? feed->cap * 2 : 64;
		if (cap > FEED_MAX_WAITERS)
			cap = FEED_MAX_WAITERS;
		if (cap == feed->count) {
			r = SP_ERR_TOO_LARGE;
			goto out;
		}
		struct waiter *grown = realloc(feed->waiters, cap * sizeof(*grown));
		if (grown == NULL) {
			r = SP_ERR_NOMEM;
			goto out;
		}
		feed->waiters = grown;
		feed->cap = cap;
	}
	feed->waiters[feed->count++] = (struct waiter){
		.req = req, .after = after, .deadline_ms = sp_monotonic_ms() + timeout_ms};
	/* Suspend under the lock so no publish can resume the request before it is parked. */
	http_suspend(req);
	r = 1;
out:
	pthread_mutex_unlock(&feed->lock);
	return r;
}

size_t feed_waiting(struct feed *feed)
{
	pthread_mutex_lock(&feed->lock);
	size_t n = feed->count;
	pthread_mutex_unlock(&feed->lock);
	return n;
}
