/* controller/change_watch.c — see change_watch.h. */
#include "controller/change_watch.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include <sqlite3.h>

struct change_watch {
	sqlite3 *db;          /* this thread's own read-only connection */
	sqlite3_stmt *latest; /* SELECT max(seq) */
	struct feed *feed;
	unsigned interval_ms;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	int stopping;
};

static void publish_latest(struct change_watch *w)
{
	if (sqlite3_step(w->latest) == SQLITE_ROW) {
		int64_t seq = sqlite3_column_int64(w->latest, 0);
		/* feed_publish ignores a sequence it has already reached. */
		if (seq > feed_seq(w->feed))
			feed_publish(w->feed, seq);
	}
	/* Reset ends the read transaction, so the next step sees newer commits. */
	sqlite3_reset(w->latest);
}

static void *watch_main(void *arg)
{
	struct change_watch *w = arg;
	pthread_mutex_lock(&w->lock);
	while (!w->stopping) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += (long)w->interval_ms * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		int r = pthread_cond_timedwait(&w->wake, &w->lock, &until);
		if (r != 0 && r != ETIMEDOUT)
			break;
		if (w->stopping)
			break;
		pthread_mutex_unlock(&w->lock);
		publish_latest(w);
		pthread_mutex_lock(&w->lock);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

int change_watch_start(const char *db_path, struct feed *feed, unsigned interval_ms,
                       struct change_watch **out, struct sp_diag *diag)
{
	*out = NULL;
	struct change_watch *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return SP_ERR_NOMEM;
	w->feed = feed;
	w->interval_ms = interval_ms != 0 ? interval_ms : CHANGE_WATCH_DEFAULT_INTERVAL_MS;
	int r;
	if (sqlite3_open_v2(db_path, &w->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
	            SQLITE_OK ||
	    sqlite3_busy_timeout(w->db, 1000) != SQLITE_OK ||
	    sqlite3_prepare_v2(w->db, "SELECT coalesce(max(seq), 0) FROM changes", -1, &w->latest,
	                       NULL) != SQLITE_OK) {
		r = sp_diag_set(diag, SP_ERR_DATABASE, "change watcher cannot read %s: %s", db_path,
		                w->db != NULL ? sqlite3_errmsg(w->db) : "out of memory");
		sqlite3_finalize(w->latest);
		sqlite3_close(w->db);
		free(w);
		return r;
	}
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->wake, NULL);
	if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
		pthread_cond_destroy(&w->wake);
		pthread_mutex_destroy(&w->lock);
		sqlite3_finalize(w->latest);
		sqlite3_close(w->db);
		free(w);
		return sp_diag_set(diag, SP_ERR_INTERNAL, "cannot start the change watcher thread");
	}
	*out = w;
	return 0;
}

void change_watch_stop(struct change_watch *w)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->lock);
	w->stopping = 1;
	pthread_cond_signal(&w->wake);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->thread, NULL);
	pthread_cond_destroy(&w->wake);
	pthread_mutex_destroy(&w->lock);
	sqlite3_finalize(w->latest);
	sqlite3_close(w->db);
	free(w);
}
