/*
 * controller/policy_store.c — the store side of policy.h: reading the rows a snapshot is
 * built from, keeping the current snapshot, memberships and session facts.
 */
#include <stdlib.h>
#include <string.h>

#include "controller/app.h"
#include "controller/policy.h"
#include "controller/store.h"
#include "shared/log.h"

/* Growable arrays of rows whose strings are heap copies of the columns. */
struct loaded_rows {
	struct policy_resource_row *resources;
	size_t resource_count, resource_cap;
	struct policy_rule_row *rules;
	size_t rule_count, rule_cap;
	struct policy_connector_row *connectors;
	size_t connector_count, connector_cap;
	int failed;
};

static const char *column(struct db_stmt *st, int i, int *failed)
{
	const char *text = db_column_text(st, i);
	if (text == NULL)
		return NULL;
	char *c = strdup((const char *)text);
	if (c == NULL)
		*failed = 1;
	return c;
}

/* Makes room for one more element of `size` bytes in *array. */
static int grow(void **array, size_t count, size_t *cap, size_t size)
{
	if (count < *cap)
		return 0;
	size_t next = *cap == 0 ? 64 : *cap * 2;
	void *p = realloc(*array, next * size);
	if (p == NULL)
		return SP_ERR_NOMEM;
	*array = p;
	*cap = next;
	return 0;
}

static void free_rows(struct loaded_rows *l)
{
	for (size_t i = 0; i < l->resource_count; i++) {
		struct policy_resource_row *r = &l->resources[i];
		free((char *)r->id), free((char *)r->network_id), free((char *)r->name);
		free((char *)r->address), free((char *)r->alias);
		free((char *)r->tcp_json), free((char *)r->udp_json);
	}
	for (size_t i = 0; i < l->rule_count; i++) {
		free((char *)l->rules[i].id), free((char *)l->rules[i].group_id);
		free((char *)l->rules[i].resource_id);
	}
	for (size_t i = 0; i < l->connector_count; i++) {
		struct policy_connector_row *c = &l->connectors[i];
		free((char *)c->id), free((char *)c->network_id), free((char *)c->name);
		free((char *)c->public_key_digest), free((char *)c->direct_address);
	}
	free(l->resources);
	free(l->rules);
	free(l->connectors);
}

static int read_rows(struct db *db, struct loaded_rows *l, int64_t *seq)
{
	struct db_stmt *st = NULL;
	int r = SP_ERR_DATABASE, step;
	if (db_prepare(db, "SELECT coalesce(max(seq), 0) FROM changes", &st) != 0 ||
	    db_step(st) != DB_ROW)
		goto out;
	*seq = db_column_int64(st, 0);
	db_finalize(st);

	if (db_prepare(db,
		       "SELECT id, network_id, name, address, alias, tcp_ports,"
		       " udp_ports, icmp FROM resources",
		       &st) != 0)
		goto out;
	while ((step = db_step(st)) == DB_ROW) {
		if (grow((void **)&l->resources, l->resource_count, &l->resource_cap,
		         sizeof(*l->resources)) < 0) {
			r = SP_ERR_NOMEM;
			goto out;
		}
		struct policy_resource_row *row = &l->resources[l->resource_count++];
		*row = (struct policy_resource_row){.id = column(st, 0, &l->failed),
						    .network_id = column(st, 1, &l->failed),
						    .name = column(st, 2, &l->failed),
						    .address = column(st, 3, &l->failed),
						    .alias = column(st, 4, &l->failed),
						    .tcp_json = column(st, 5, &l->failed),
						    .udp_json = column(st, 6, &l->failed),
						    .icmp = db_column_int(st, 7)};
	}
	if (step != DB_DONE)
		goto out;
	db_finalize(st);

	if (db_prepare(db,
		       "SELECT id, group_id, resource_id, require_mfa,"
		       " max_session_age_s FROM policies",
		       &st) != 0)
		goto out;
	while ((step = db_step(st)) == DB_ROW) {
		if (grow((void **)&l->rules, l->rule_count, &l->rule_cap, sizeof(*l->rules)) < 0) {
			r = SP_ERR_NOMEM;
			goto out;
		}
		l->rules[l->rule_count++] =
		    (struct policy_rule_row){.id = column(st, 0, &l->failed),
					     .group_id = column(st, 1, &l->failed),
					     .resource_id = column(st, 2, &l->failed),
					     .require_mfa = db_column_int(st, 3),
					     .max_session_age_s = db_column_int64(st, 4)};
	}
	if (step != DB_DONE)
		goto out;
	db_finalize(st);

	if (db_prepare(db,
		       "SELECT id, network_id, name, public_key_digest, direct_address"
		       " FROM connectors WHERE state = 'active'",
		       &st) != 0)
		goto out;
	while ((step = db_step(st)) == DB_ROW) {
		if (grow((void **)&l->connectors, l->connector_count, &l->connector_cap,
		         sizeof(*l->connectors)) < 0) {
			r = SP_ERR_NOMEM;
			goto out;
		}
		l->connectors[l->connector_count++] = (struct policy_connector_row){
			.id = column(st, 0, &l->failed), .network_id = column(st, 1, &l->failed),
			.name = column(st, 2, &l->failed),
			.public_key_digest = column(st, 3, &l->failed),
			.direct_address = column(st, 4, &l->failed)};
	}
	if (step != DB_DONE)
		goto out;
	r = l->failed ? SP_ERR_NOMEM : 0;
out:
	db_finalize(st);
	return r;
}

int policy_snapshot_load(struct db *db, struct policy_snapshot **out, struct sp_diag *diag)
{
	*out = NULL;
	struct loaded_rows l;
	memset(&l, 0, sizeof(l));
	int64_t seq = 0;
	/* One read transaction, so the sequence and the rows describe the same moment. */
	int own = !db_in_transaction(db);
	if (own && db_begin_read(db) != 0)
		return sp_diag_set(diag, SP_ERR_DATABASE, "cannot read the policies: %s",
				   db_errmsg(db));
	int r = read_rows(db, &l, &seq);
	if (r == SP_ERR_DATABASE)
		sp_diag_set(diag, r, "cannot read the policies: %s", db_errmsg(db));
	if (own)
		db_commit(db);
	if (r == 0) {
		struct policy_rows rows = {.resources = l.resources,
		                           .resource_count = l.resource_count,
		                           .rules = l.rules,
		                           .rule_count = l.rule_count,
		                           .connectors = l.connectors,
		                           .connector_count = l.connector_count};
		r = policy_snapshot_build(&rows, seq, out, diag);
	} else if (r == SP_ERR_NOMEM) {
		sp_diag_set(diag, r, "out of memory reading the policies");
	}
	free_rows(&l);
	return r;
}

int policy_current(struct controller *c, const struct policy_snapshot **out,
                   struct sp_diag *diag)
{
	*out = NULL;
	if (c->policy == NULL && (c->policy = calloc(1, sizeof(*c->policy))) == NULL)
		return sp_diag_set(diag, SP_ERR_NOMEM, "out of memory");
	struct policy_state *p = c->policy;
	/* One primary-key probe per request; rows are read again only after a change. */
	int64_t seq = store_latest_change(c);
	if (p->snapshot == NULL || p->snapshot->seq != seq) {
		struct policy_snapshot *fresh = NULL;
		int r = policy_snapshot_load(c->db, &fresh, diag);
		if (r < 0)
			return r;
		if (fresh->skipped_resources > 0)
			SP_LOG(SP_LOG_WARN, "resources left out of the policy snapshot",
			       SP_LOG_UINT("count", fresh->skipped_resources));
		policy_snapshot_free(p->snapshot);
		p->snapshot = fresh;
		p->rebuilds++;
	}
	*out = p->snapshot;
	return 0;
}

void policy_state_free(struct controller *c)
{
	if (c->policy == NULL)
		return;
	policy_snapshot_free(c->policy->snapshot);
	free(c->policy);
	c->policy = NULL;
}

void policy_groups_free(struct policy_groups *g)
{
	if (g == NULL)
		return;
	free(g->ids);
	free(g->list);
	memset(g, 0, sizeof(*g));
}

int policy_load_groups(struct db *db, const char *user_id, struct policy_groups *out)
{
	memset(out, 0, sizeof(*out));
	struct db_stmt *st = NULL;
	size_t cap = 0;
	int r = SP_ERR_DATABASE, step;
	/* The primary key (user_id, group_id) yields them sorted by group id. */
	if (db_prepare(db,
		       "SELECT group_id FROM memberships WHERE user_id = ?"
		       " ORDER BY group_id",
		       &st) != 0)
		goto out;
	db_bind_text(st, 1, user_id, -1, DB_STATIC);
	while ((step = db_step(st)) == DB_ROW) {
		const char *id = (const char *)db_column_text(st, 0);
		if (id == NULL || strlen(id) >= sizeof(out->ids[0]))
			continue;
		if (grow((void **)&out->ids, out->count, &cap, sizeof(out->ids[0])) < 0) {
			r = SP_ERR_NOMEM;
			goto out;
		}
		memcpy(out->ids[out->count++], id, strlen(id) + 1);
	}
	if (step != DB_DONE)
		goto out;
	out->list = calloc(out->count + 1, sizeof(*out->list));
	if (out->list == NULL) {
		r = SP_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < out->count; i++)
		out->list[i] = out->ids[i];
	r = 0;
out:
	db_finalize(st);
	if (r < 0)
		policy_groups_free(out);
	return r;
}

int policy_amr_has_mfa(const char *amr_json, size_t len)
{
	json_t *amr = json_loadb(amr_json, len, 0, NULL);
	int found = 0;
	size_t i;
	json_t *v;
	json_array_foreach(amr, i, v) {
		if (json_is_string(v) && strcmp(json_string_value(v), POLICY_AMR_MFA) == 0)
			found = 1;
	}
	json_decref(amr);
	return found;
}

int policy_load_session(struct db *db, const char *session_id, int *mfa, int64_t *auth_time)
{
	*mfa = 0;
	*auth_time = 0;
	struct db_stmt *st = NULL;
	int r = SP_ERR_DATABASE;
	if (db_prepare(db, "SELECT auth_time, amr FROM sessions WHERE id = ?", &st) != 0)
		goto out;
	db_bind_text(st, 1, session_id, -1, DB_STATIC);
	int step = db_step(st);
	if (step == DB_DONE) {
		r = SP_ERR_NOT_FOUND;
	} else if (step == DB_ROW) {
		*auth_time = db_column_int64(st, 0);
		const char *amr = (const char *)db_column_text(st, 1);
		*mfa = amr != NULL && policy_amr_has_mfa(amr, (size_t)db_column_bytes(st, 1));
		r = 0;
	}
out:
	db_finalize(st);
	return r;
}
