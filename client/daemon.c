/*
 * client/daemon.c — the client daemon (see daemon.h): start-up and shutdown, the resource
 * list (verified by the controller thread, applied here on the loop: cut flows, loopback
 * listeners, DNS stub), the controller thread (refresh, resource list, change feed) and
 * the control socket. The data plane is client/daemon_flows.c.
 *
 * Ownership: daemon_run allocates struct daemon and frees it, with everything it holds,
 * before returning; the controller and grant threads are joined first.
 */
#include "client/daemon_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "client/api.h"
#include "client/control_proto.h"
#include "client/dns_stub.h"
#include "client/grant_cache.h"
#include "client/loopback.h"
#include "client/proxy_parse.h"
#include "client/resource_list.h"
#include "client/state.h"
#include "client/synthetic.h"
#include "shared/config.h"
#include "shared/jwk.h"
#include "shared/keys.h"
#include "shared/log.h"
#include "shared/resource_index.h"
#include "shared/tls.h"
#include "shared/tunnel.h"
#include "shared/tunnel_tls.h"

static char *access_token(struct daemon *d)
{
	pthread_mutex_lock(&d->lock);
	char *a = d->access != NULL ? strdup(d->access) : NULL;
	pthread_mutex_unlock(&d->lock);
	return a;
}

/* ---------- resource list ---------- */

static int resource_still_listed(const json_t *claims, const char *rid)
{
	size_t i;
	json_t *item;
	json_array_foreach(json_object_get(claims, "resources"), i, item)
	{
		const char *id = json_string_value(json_object_get(item, "id"));
		if (id != NULL && strcmp(id, rid) == 0)
			return 1;
	}
	return 0;
}

static void loopback_sync(struct daemon *d)
{
	struct loopback_listener plan[1024];
	size_t n = 0, all = 0;
	if (loopback_plan(d->lb, d->resources, d->nres, plan, 1024, &n, &all) < 0)
		SP_LOG_MSG(SP_LOG_WARN, "loopback plan truncated at 1024 listeners");
	d->ports_all = all;
	/* with the DNS stub, its synthetic table (over the same range) owns the addresses */
	for (size_t i = 0; i < n && d->stub != NULL; i++) {
		struct synthetic_mapping m;
		if (synthetic_assign(dns_stub_synthetic(d->stub), plan[i].name, strlen(plan[i].name),
				     (int64_t)plan[i].resource_position + 1, &m) == 0)
			memcpy(plan[i].addr, m.v4, 4);
	}
	/* close listeners no longer planned */
	struct listener **pp = &d->listeners;
	while (*pp != NULL) {
		struct listener *ls = *pp;
		int keep = ls->kind != FLOW_LOOPBACK;
		for (size_t i = 0; i < n && !keep; i++) {
			char a[INET_ADDRSTRLEN];
			inet_ntop(AF_INET, plan[i].addr, a, sizeof(a));
			keep = plan[i].port == ls->port && strcmp(a, ls->addr_text) == 0;
		}
		if (keep) {
			pp = &ls->next;
			continue;
		}
		*pp = ls->next;
		evconnlistener_free(ls->l);
		free(ls);
	}
	for (size_t i = 0; i < n; i++) {
		char a[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, plan[i].addr, a, sizeof(a));
		int have = 0;
		for (struct listener *ls = d->listeners; ls != NULL && !have; ls = ls->next)
			have = ls->kind == FLOW_LOOPBACK && ls->port == plan[i].port &&
			       strcmp(ls->addr_text, a) == 0;
		if (have)
			continue;
		struct sp_diag diag = {{0}};
		if (listen_on(d, FLOW_LOOPBACK, a, plan[i].port, plan[i].name, &diag) < 0)
			SP_LOG(SP_LOG_WARN, "loopback listener failed", SP_LOG_STR("why", diag.message));
	}
}

static void apply_claims(struct daemon *d, json_t *claims)
{
	char *text = json_dumps(claims, JSON_COMPACT);
	struct sp_resource *res = NULL;
	size_t count = 0;
	struct sp_resource_index *index = NULL;
	struct sp_diag diag = {{0}};
	if (text == NULL || resource_list_parse(text, strlen(text), &res, &count, &diag) < 0 ||
	    sp_resource_index_build(res, count, &index, &diag) < 0) {
		SP_LOG(SP_LOG_ERROR, "resource list unusable", SP_LOG_STR("why", diag.message));
		free(text);
		sp_resource_list_free(res, count);
		json_decref(claims);
		return;
	}
	free(text);
	sp_resource_index_free(d->index);
	sp_resource_list_free(d->resources, d->nres);
	json_decref(d->claims);
	d->claims = claims;
	d->resources = res;
	d->nres = count;
	d->index = index;
	/* a removed resource: its grant goes, its live flows are cut */
	for (struct flow *f = d->flows, *next; f != NULL; f = next) {
		next = f->next;
		if (f->resource_id[0] != '\0' && !resource_still_listed(claims, f->resource_id)) {
			grant_cache_remove(&d->grants, f->resource_id);
			record_denial(d, f, "resource_removed", "client");
			flow_close(f, 1);
		}
	}
	for (size_t i = d->grants.count; i-- > 0;)
		if (!resource_still_listed(claims, d->grants.entries[i].resource_id))
			grant_cache_remove(&d->grants, d->grants.entries[i].resource_id);
	if (d->stub != NULL && dns_stub_set_resources(d->stub, res, count, &diag) < 0)
		SP_LOG(SP_LOG_WARN, "DNS stub kept its old resources", SP_LOG_STR("why", diag.message));
	(void)sysdns_set_resources(d->sysdns, res, count);
	if (d->o->mode == DAEMON_MODE_LOOPBACK)
		loopback_sync(d);
	if (d->o->mode == DAEMON_MODE_TUN)
		tun_sync(d);
	SP_LOG(SP_LOG_INFO, "resource list", SP_LOG_UINT("resources", count),
	       SP_LOG_INT("seq", json_integer_value(json_object_get(claims, "seq"))));
}

static void on_notify(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct daemon *d = arg;
	char buf[64];
	while (read(fd, buf, sizeof(buf)) > 0) {
	}
	pthread_mutex_lock(&d->lock);
	json_t *claims = d->pending_claims;
	d->pending_claims = NULL;
	struct grant_result *results = d->grant_results;
	d->grant_results = NULL;
	pthread_mutex_unlock(&d->lock);
	if (claims != NULL)
		apply_claims(d, claims);
	while (results != NULL) {
		struct grant_result *r = results;
		results = r->next;
		if (r->connector_id[0] != '\0') {
			tunnel_ticket_ready(d, r);
			free_secret(r->ticket);
			free(r);
			continue;
		}
		int ok = r->grant != NULL && grant_cache_put(&d->grants, r->resource_id, r->grant,
							      r->expires_at, now_s()) == 0;
		if (r->grant != NULL && !ok)
			snprintf(r->reason, sizeof(r->reason), "bad_grant");
		for (struct flow *f = d->flows, *next; f != NULL; f = next) {
			next = f->next;
			if (!f->waiting_grant || strcmp(f->resource_id, r->resource_id) != 0)
				continue;
			f->waiting_grant = 0;
			if (ok)
				flow_dispatch(f);
			else
				flow_refuse(f, r->reason, r->origin, "no grant from the controller");
		}
		free_secret(r->grant);
		free(r);
	}
	if (d->stop)
		event_base_loopbreak(d->base);
}

/* ---------- controller thread ---------- */

void notify_loop(struct daemon *d)
{
	char b = 1;
	ssize_t n = write(d->notify[1], &b, 1);
	(void)n;
}

static void ctl_sleep(struct daemon *d, int seconds)
{
	for (int i = 0; i < seconds * 10 && !d->stop; i++)
		usleep(100 * 1000);
}

static void set_ctl_error(struct daemon *d, const char *msg)
{
	pthread_mutex_lock(&d->lock);
	snprintf(d->ctl_error, sizeof(d->ctl_error), "%s", msg);
	pthread_mutex_unlock(&d->lock);
}

static void *ctl_main(void *arg)
{
	struct daemon *d = arg;
	struct sp_jwks keys;
	sp_jwks_init(&keys);
	int have_keys = 0, need_fetch = 1, backoff = 1;
	int64_t seq = -1;
	while (!d->stop) {
		struct sp_diag diag = {{0}};
		pthread_mutex_lock(&d->lock);
		int need_refresh = d->access == NULL || d->access_exp - now_s() < 120;
		pthread_mutex_unlock(&d->lock);
		if (need_refresh) {
			char *access = NULL;
			int64_t exp = 0;
			/* refresh on a copy: the loop thread reads the session for status */
			pthread_mutex_lock(&d->lock);
			json_t *copy = json_deep_copy(d->session);
			pthread_mutex_unlock(&d->lock);
			if (copy == NULL) {
				ctl_sleep(d, 1);
				continue;
			}
			int rc = api_refresh(d->o->state_dir, copy, &access, &exp, &diag);
			pthread_mutex_lock(&d->lock);
			json_decref(d->session);
			d->session = copy; /* holds the newest refresh token whatever happened */
			pthread_mutex_unlock(&d->lock);
			if (rc < 0) {
				set_ctl_error(d, diag.message);
				SP_LOG(SP_LOG_WARN, "session refresh failed", SP_LOG_STR("why", diag.message));
				if (rc == SP_ERR_PERMISSION) {
					pthread_mutex_lock(&d->lock);
					free_secret(d->access);
					d->access = NULL;
					pthread_mutex_unlock(&d->lock);
				}
				ctl_sleep(d, backoff);
				backoff = backoff < 30 ? backoff * 2 : 30;
				continue;
			}
			pthread_mutex_lock(&d->lock);
			free_secret(d->access);
			d->access = access;
			d->access_exp = exp;
			pthread_mutex_unlock(&d->lock);
		}
		char *access = access_token(d);
		if (access == NULL)
			continue;
		if (!have_keys && api_fetch_jwks(d->controller, &keys, &diag) == 0)
			have_keys = 1;
		if (need_fetch && have_keys) {
			json_t *claims = NULL;
			int rc = api_fetch_resources(d->controller, access, d->device_id, &keys, now_s(),
						     &claims, &diag);
			if (rc == 0) {
				seq = json_integer_value(json_object_get(claims, "seq"));
				pthread_mutex_lock(&d->lock);
				json_decref(d->pending_claims);
				d->pending_claims = claims;
				d->ctl_error[0] = '\0';
				pthread_mutex_unlock(&d->lock);
				notify_loop(d);
				need_fetch = 0;
			} else {
				set_ctl_error(d, diag.message);
				SP_LOG(SP_LOG_WARN, "resource list fetch failed",
				       SP_LOG_STR("why", diag.message));
			}
		}
		if (!have_keys || need_fetch) {
			free_secret(access);
			ctl_sleep(d, backoff);
			backoff = backoff < 30 ? backoff * 2 : 30;
			continue;
		}
		backoff = 1;
		char path[128];
		snprintf(path, sizeof(path), "/api/client/v1/feed?after=%lld&timeout=25",
			 (long long)seq);
		long status = 0;
		json_t *ans = NULL;
		int rc = api_call(d->controller, "GET", path, NULL, access, 40, &status, &ans, &diag);
		free_secret(access);
		if (rc < 0 || status != 200) {
			if (status == 401) {
				pthread_mutex_lock(&d->lock);
				d->access_exp = 0;
				pthread_mutex_unlock(&d->lock);
			}
			json_decref(ans);
			ctl_sleep(d, 2);
			continue;
		}
		seq = json_integer_value(json_object_get(ans, "seq"));
		size_t i;
		json_t *kind;
		json_array_foreach(json_object_get(ans, "changes"), i, kind)
		{
			const char *k = json_string_value(kind);
			if (k != NULL && strcmp(k, "resources") == 0)
				need_fetch = 1;
			if (k != NULL && strcmp(k, "session") == 0) {
				need_fetch = 1;
				pthread_mutex_lock(&d->lock);
				d->access_exp = 0;
				pthread_mutex_unlock(&d->lock);
			}
		}
		json_decref(ans);
	}
	sp_jwks_free(&keys);
	return NULL;
}

/* ---------- control socket ---------- */

static const char *mode_name(enum daemon_mode mode)
{
	return mode == DAEMON_MODE_PROXY ? "proxy" : mode == DAEMON_MODE_TUN ? "tun" : "loopback";
}

static json_t *status_json(struct daemon *d)
{
	json_t *s = json_object();
	json_object_set_new(s, "state", json_string("up"));
	json_object_set_new(s, "mode", json_string(mode_name(d->o->mode)));
	json_object_set_new(s, "controller", json_string(d->controller));
	json_object_set_new(s, "device_id", json_string(d->device_id));
	pthread_mutex_lock(&d->lock);
	json_t *v = json_object_get(d->session, "session_id");
	if (v != NULL)
		json_object_set_new(s, "session_id", json_deep_copy(v));
	if ((v = json_object_get(d->session, "user")) != NULL)
		json_object_set_new(s, "user", json_deep_copy(v));
	pthread_mutex_unlock(&d->lock);
	json_object_set_new(s, "resources", json_integer((json_int_t)d->nres));
	json_object_set_new(s, "resource_list_seq",
			    json_integer(json_integer_value(json_object_get(d->claims, "seq"))));
	pthread_mutex_lock(&d->lock);
	json_object_set_new(s, "signed_in", json_boolean(d->access != NULL));
	if (d->ctl_error[0] != '\0')
		json_object_set_new(s, "controller_error", json_string(d->ctl_error));
	pthread_mutex_unlock(&d->lock);
	json_t *tunnels = json_array();
	for (struct tunnel *tn = d->tunnels; tn != NULL; tn = tn->next) {
		struct sp_tunnel_stats st;
		sp_tunnel_get_stats(tn->t, &st);
		json_array_append_new(
		    tunnels,
		    json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "connector_id",
			      tn->connector_id, "connector", tn->connector_name, "network_id",
			      tn->network_id, "address", tn->address, "path",
			      tn->relayed ? "relayed" : "direct", "streams_open",
			      (json_int_t)st.streams_open, "streams_total",
			      (json_int_t)st.streams_total, "bytes_in", (json_int_t)st.bytes_in,
			      "bytes_out", (json_int_t)st.bytes_out));
		json_object_set_new(json_array_get(tunnels, json_array_size(tunnels) - 1), "state",
				    json_string(tn->handshake_done ? "up" : "connecting"));
	}
	json_object_set_new(s, "tunnels", tunnels);
	json_t *active = json_array();
	for (struct flow *f = d->flows; f != NULL; f = f->next)
		if (f->state == F_OPEN || f->state == F_OPENING)
			json_array_append_new(
			    active, json_pack("{s:s, s:i, s:s, s:s, s:s, s:I, s:I}", "host", f->host,
					      "port", (int)f->port, "protocol",
					      f->kind == FLOW_UDP ? "udp" : "tcp", "resource_id",
					      f->resource_id, "state",
					      f->state == F_OPEN ? "open" : "opening", "bytes_up",
					      (json_int_t)f->up, "bytes_down", (json_int_t)f->down));
	json_object_set_new(s, "flows",
			    json_pack("{s:I, s:I, s:I, s:o}", "active", (json_int_t)d->flows_active,
				      "total", (json_int_t)d->flows_total, "refused",
				      (json_int_t)d->flows_refused, "open", active));
	json_t *den = json_array();
	for (size_t i = 0; i < d->denials_count; i++) {
		size_t k = (d->denials_next + DENIALS_MAX - 1 - i) % DENIALS_MAX;
		struct denial *x = &d->denials[k];
		json_array_append_new(den, json_pack("{s:I, s:s, s:s, s:s, s:s}", "time",
						     (json_int_t)x->time, "target", x->target,
						     "resource_id", x->resource_id, "reason",
						     x->reason, "by", x->origin));
	}
	json_object_set_new(s, "denials", den);
	json_t *ls = json_array();
	for (struct listener *l = d->listeners; l != NULL; l = l->next)
		json_array_append_new(
		    ls, json_pack("{s:s, s:s, s:i, s:s}", "kind",
				  l->kind == FLOW_SOCKS	 ? "socks5"
				  : l->kind == FLOW_HTTP ? "http-connect"
				  : l->kind == FLOW_TUN	 ? "tun"
							 : "loopback",
				  "address", l->addr_text, "port", (int)l->port, "name", l->name));
	json_object_set_new(s, "listeners", ls);
	if (d->stub != NULL)
		json_object_set_new(s, "dns", json_string(d->o->dns_addr));
	if (d->sysdns != NULL)
		json_object_set_new(s, "system_dns", json_string(sysdns_mode_name(d->sysdns)));
	if (d->o->mode == DAEMON_MODE_LOOPBACK)
		json_object_set_new(s, "resources_all_ports_not_listened",
				    json_integer((json_int_t)d->ports_all));
	if (d->o->mode == DAEMON_MODE_TUN)
		json_object_set_new(s, "tun", tun_status(d));
	return s;
}

static void control_release(struct daemon *d, struct bufferevent *bev)
{
	for (size_t i = 0; i < sizeof(d->control_conns) / sizeof(d->control_conns[0]); i++)
		if (d->control_conns[i] == bev)
			d->control_conns[i] = NULL;
	bufferevent_free(bev);
}

static void control_done(struct bufferevent *bev, void *arg)
{
	control_release(arg, bev);
}

static void control_read(struct bufferevent *bev, void *arg)
{
	struct daemon *d = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len = 0;
	char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
	if (line == NULL) {
		if (evbuffer_get_length(in) > CONTROL_LINE_MAX)
			control_release(d, bev);
		return;
	}
	enum control_cmd cmd = 0;
	struct sp_diag diag = {{0}};
	json_t *reply;
	int rc = control_parse(line, len, &cmd, &diag);
	free(line);
	if (rc < 0)
		reply = json_pack("{s:{s:s}}", "error", "message", diag.message);
	else if (cmd == CONTROL_STATUS)
		reply = status_json(d);
	else if (cmd == CONTROL_RESOURCES)
		reply = json_pack("{s:O?, s:O?, s:I}", "resources",
				  json_object_get(d->claims, "resources"), "networks",
				  json_object_get(d->claims, "networks"), "seq",
				  json_integer_value(json_object_get(d->claims, "seq")));
	else {
		reply = json_pack("{s:s}", "state", "stopping");
		d->stop = 1;
		event_base_loopexit(d->base, &(struct timeval){0, 100000});
	}
	char *text = reply != NULL ? json_dumps(reply, JSON_COMPACT) : NULL;
	json_decref(reply);
	if (text != NULL) {
		bufferevent_write(bev, text, strlen(text));
		bufferevent_write(bev, "\n", 1);
		free(text);
	}
	bufferevent_disable(bev, EV_READ);
	bufferevent_setcb(bev, NULL, control_done, NULL, d);
}

static void control_event(struct bufferevent *bev, short what, void *arg)
{
	(void)what;
	control_release(arg, bev);
}

static void on_control(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int slen,
		       void *arg)
{
	(void)l;
	(void)sa;
	(void)slen;
	struct daemon *d = arg;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == -1 ||
	    (cred.uid != geteuid() && cred.uid != 0)) {
		SP_LOG(SP_LOG_WARN, "control connection refused",
		       SP_LOG_INT("uid", clen == sizeof(cred) ? (int64_t)cred.uid : -1));
		close(fd);
		return;
	}
	size_t slot = 0, cap = sizeof(d->control_conns) / sizeof(d->control_conns[0]);
	while (slot < cap && d->control_conns[slot] != NULL)
		slot++;
	if (slot == cap || d->stop) {
		close(fd);
		return;
	}
	struct bufferevent *bev = bufferevent_socket_new(d->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		close(fd);
		return;
	}
	d->control_conns[slot] = bev;
	bufferevent_setcb(bev, control_read, NULL, control_event, d);
	bufferevent_enable(bev, EV_READ);
}

static int control_open(struct daemon *d, struct sp_diag *diag)
{
	if (state_path(d->o->state_dir, "control.sock", d->control_path, sizeof(d->control_path)) <
	    0)
		return SP_ERR_TOO_LARGE;
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	if (strlen(d->control_path) >= sizeof(un.sun_path))
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "control socket path too long: %s",
				   d->control_path);
	memcpy(un.sun_path, d->control_path, strlen(d->control_path) + 1);
	/* a live daemon answers; a stale socket file is removed */
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe != -1 && connect(probe, (struct sockaddr *)&un, sizeof(un)) == 0) {
		close(probe);
		return sp_diag_set(diag, SP_ERR_EXISTS, "the daemon is already up (%s)",
				   d->control_path);
	}
	if (probe != -1)
		close(probe);
	(void)unlink(d->control_path);
	mode_t old = umask(0177);
	d->control = evconnlistener_new_bind(d->base, on_control, d,
					     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16,
					     (struct sockaddr *)&un, (int)sizeof(un));
	umask(old);
	if (d->control == NULL)
		return sp_diag_set(diag, SP_ERR_IO, "cannot listen on %s: %s", d->control_path,
				   strerror(errno));
	if (chmod(d->control_path, 0600) == -1)
		return sp_diag_set(diag, SP_ERR_IO, "chmod %s: %s", d->control_path, strerror(errno));
	return 0;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	struct daemon *d = arg;
	d->stop = 1;
	event_base_loopbreak(d->base);
}

/* ---------- run ---------- */

int daemon_run(const struct daemon_options *o, struct sp_diag *diag)
{
	struct daemon *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return SP_ERR_NOMEM;
	int rc = 0;
	d->o = o;
	d->notify[0] = d->notify[1] = -1;
	d->tun_fd = -1;
	d->udp_fd[0] = d->udp_fd[1] = -1;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->grant_cond, NULL);
	grant_cache_init(&d->grants);
	api_set_abort_flag(&d->stop);
	rc = state_session_load(o->state_dir, &d->session, diag);
	if (rc < 0)
		goto out;
	snprintf(d->controller, sizeof(d->controller), "%s",
		 json_string_value(json_object_get(d->session, "controller")));
	snprintf(d->device_id, sizeof(d->device_id), "%s",
		 json_string_value(json_object_get(d->session, "device_id")));
	char key_path[STATE_PATH_MAX];
	state_path(o->state_dir, "device.key", key_path, sizeof(key_path));
	rc = sp_key_load_private(key_path, &d->key, diag);
	if (rc < 0)
		goto out;
	const char *alpn[] = {SP_TLS_ALPN_SALLYPORT_1};
	struct sp_tls_options topts = {.alpn = alpn, .alpn_count = 1, .now = now_s()};
	rc = sp_tls_client_ctx_new(d->key, &topts, &d->tls_ctx, diag);
	if (rc < 0)
		goto out;
	d->base = event_base_new();
	if (d->base == NULL || pipe2(d->notify, O_NONBLOCK | O_CLOEXEC) == -1) {
		rc = sp_diag_set(diag, SP_ERR_IO, "event loop setup failed");
		goto out;
	}
	d->ev_notify = event_new(d->base, d->notify[0], EV_READ | EV_PERSIST, on_notify, d);
	d->ev_reaper = event_new(d->base, -1, 0, on_reaper, d);
	d->ev_sigterm = evsignal_new(d->base, SIGTERM, on_signal, d);
	d->ev_sigint = evsignal_new(d->base, SIGINT, on_signal, d);
	event_add(d->ev_notify, NULL);
	event_add(d->ev_sigterm, NULL);
	event_add(d->ev_sigint, NULL);
	rc = control_open(d, diag);
	if (rc < 0)
		goto out;
	if (o->mode == DAEMON_MODE_PROXY) {
		char host[256];
		uint16_t port = 0;
		if (o->socks_addr != NULL && o->socks_addr[0] != '\0') {
			rc = parse_listen(o->socks_addr, host, sizeof(host), &port, diag);
			if (rc == 0)
				rc = listen_on(d, FLOW_SOCKS, host, port, NULL, diag);
			if (rc < 0)
				goto out;
		}
		if (o->http_addr != NULL && o->http_addr[0] != '\0') {
			rc = parse_listen(o->http_addr, host, sizeof(host), &port, diag);
			if (rc == 0)
				rc = listen_on(d, FLOW_HTTP, host, port, NULL, diag);
			if (rc < 0)
				goto out;
		}
	} else {
		if (o->mode == DAEMON_MODE_LOOPBACK)
			rc = loopback_new(o->loopback_range, &d->lb, diag);
		if (rc < 0)
			goto out;
		if (o->dns_addr != NULL && o->dns_addr[0] != '\0') {
			char host[256];
			uint16_t port = 0;
			rc = parse_listen(o->dns_addr, host, sizeof(host), &port, diag);
			if (rc < 0)
				goto out;
			struct dns_stub_config dc = {
			    .listen_address = host,
			    .listen_port = port,
			    .upstreams = o->dns_upstreams,
			    .synthetic_v4 = o->loopback_range != NULL ? o->loopback_range
								      : LOOPBACK_DEFAULT_RANGE,
			    .synthetic_v6 = "off",
			};
			if (o->mode == DAEMON_MODE_TUN) {
				dc.synthetic_v4 = o->tun_range; /* NULL: the stub's default */
				dc.synthetic_v6 = o->tun_range6;
			}
			if (o->system_dns) {
				/* the stub forwards to the resolvers the system had, not to itself */
				struct sysdns_options so = {.state_dir = o->state_dir,
							    .stub_addr = host,
							    .stub_port = port};
				rc = sysdns_prepare(&so, &d->sysdns, diag);
				if (rc < 0)
					goto out;
				if (dc.upstreams == NULL)
					dc.upstreams = sysdns_upstreams_text(d->sysdns);
				if (dc.upstreams[0] == '\0') {
					rc = sp_diag_set(diag, SP_ERR_NOT_FOUND,
							 "resolv.conf names no nameserver but the stub: "
							 "give --dns-upstream");
					goto out;
				}
			}
			rc = dns_stub_new(d->base, &dc, &d->stub, diag);
			if (rc == 0 && d->sysdns != NULL)
				rc = sysdns_apply(d->sysdns, diag);
			if (rc < 0)
				goto out;
		}
		if (o->mode == DAEMON_MODE_TUN) {
			rc = tun_start(d, diag);
			if (rc < 0)
				goto out;
		}
	}
	if (pthread_create(&d->ctl_thread, NULL, ctl_main, d) != 0) {
		rc = sp_diag_set(diag, SP_ERR_IO, "cannot start the controller thread");
		goto out;
	}
	d->ctl_started = 1;
	if (pthread_create(&d->grant_thread, NULL, grant_main, d) != 0) {
		rc = sp_diag_set(diag, SP_ERR_IO, "cannot start the grant thread");
		goto out;
	}
	d->grant_started = 1;
	SP_LOG(SP_LOG_INFO, "sallyport up", SP_LOG_STR("controller", d->controller),
	       SP_LOG_STR("mode", mode_name(o->mode)),
	       SP_LOG_STR("control", d->control_path));
	event_base_dispatch(d->base);
	SP_LOG_MSG(SP_LOG_INFO, "sallyport stopping");
out:
	d->stop = 1;
	/* first, so the system resolver never points at a stub that is gone */
	sysdns_restore(d->sysdns);
	d->sysdns = NULL;
	pthread_mutex_lock(&d->lock);
	pthread_cond_broadcast(&d->grant_cond);
	pthread_mutex_unlock(&d->lock);
	if (d->grant_started)
		pthread_join(d->grant_thread, NULL);
	if (d->ctl_started)
		pthread_join(d->ctl_thread, NULL);
	while (d->grant_queue != NULL) {
		struct grant_request *rq = d->grant_queue;
		d->grant_queue = rq->next;
		free(rq);
	}
	while (d->grant_results != NULL) {
		struct grant_result *r = d->grant_results;
		d->grant_results = r->next;
		free_secret(r->grant);
		free_secret(r->ticket);
		free(r);
	}
	while (d->flows != NULL)
		flow_close(d->flows, 1);
	while (d->tunnels != NULL)
		tunnel_fail(d->tunnels, "daemon stopping");
	if (d->ev_reaper != NULL)
		on_reaper(-1, 0, d);
	while (d->listeners != NULL) {
		struct listener *ls = d->listeners;
		d->listeners = ls->next;
		evconnlistener_free(ls->l);
		free(ls);
	}
	tun_stop(d);
	for (size_t i = 0; i < sizeof(d->control_conns) / sizeof(d->control_conns[0]); i++)
		if (d->control_conns[i] != NULL)
			bufferevent_free(d->control_conns[i]);
	if (d->base != NULL)
		event_base_loop(d->base, EVLOOP_NONBLOCK); /* let freed bufferevents finalize */
	if (d->control != NULL) {
		evconnlistener_free(d->control);
		(void)unlink(d->control_path);
	}
	if (d->ev_notify != NULL)
		event_free(d->ev_notify);
	if (d->ev_reaper != NULL)
		event_free(d->ev_reaper);
	if (d->ev_sigterm != NULL)
		event_free(d->ev_sigterm);
	if (d->ev_sigint != NULL)
		event_free(d->ev_sigint);
	if (d->base != NULL)
		event_base_free(d->base);
	if (d->notify[0] != -1)
		close(d->notify[0]);
	if (d->notify[1] != -1)
		close(d->notify[1]);
	dns_stub_free(d->stub);
	loopback_free(d->lb);
	grant_cache_free(&d->grants);
	sp_resource_index_free(d->index);
	sp_resource_list_free(d->resources, d->nres);
	json_decref(d->claims);
	json_decref(d->pending_claims);
	json_decref(d->session);
	free_secret(d->access);
	SSL_CTX_free(d->tls_ctx);
	EVP_PKEY_free(d->key);
	pthread_cond_destroy(&d->grant_cond);
	pthread_mutex_destroy(&d->lock);
	api_set_abort_flag(NULL);
	free(d);
	return rc;
}
