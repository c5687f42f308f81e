/* controller/change_watch.c — see change_watch.h. */
#include "controller/change_watch.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "controller/db.h"

struct change_watch {
	struct db *db;		/* this thread's own read-only connection */
	struct db_stmt *latest; /* SELECT max(seq) */
	struct feed *feed;
	unsigned interval_ms;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	int stopping;
};

static void publish_latest(struct change_watch *w)
{
	if (db_step(w->latest) == DB_ROW) {
		int64_t seq = db_column_int64(w->latest, 0);
		/* feed_publish ignores a sequence it has already reached. */
		if (seq > feed_seq(w->feed))
			feed_publish(w->feed, seq);
	}
	/* Reset ends the read transaction, so the next step sees newer commits. */
	db_reset(w->latest);
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

int change_watch_start(const struct db_driver *driver, const char *db_path, struct feed *feed,
		       unsigned interval_ms, struct change_watch **out, struct sp_diag *diag)
{
	*out = NULL;
	struct change_watch *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return SP_ERR_NOMEM;
	w->feed = feed;
	w->interval_ms = interval_ms != 0 ? interval_ms : CHANGE_WATCH_DEFAULT_INTERVAL_MS;
	int r;
	struct sp_diag open_diag = {{0}};
	if ((r = db_open(driver, db_path, DB_OPEN_READ_ONLY, &w->db, &open_diag)) < 0 ||
	    (r = db_prepare(w->db, "SELECT coalesce(max(seq), 0) FROM changes", &w->latest)) < 0) {
		r = sp_diag_set(diag, SP_ERR_DATABASE, "change watcher cannot read %s: %s", db_path,
				w->db != NULL ? db_errmsg(w->db) : open_diag.message);
		db_finalize(w->latest);
		db_close(w->db);
		free(w);
		return r;
	}
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->wake, NULL);
	if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
		pthread_cond_destroy(&w->wake);
		pthread_mutex_destroy(&w->lock);
		db_finalize(w->latest);
		db_close(w->db);
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
	db_finalize(w->latest);
	db_close(w->db);
	free(w);
}
