/*
 * tests/alloc/alloc_store.c — allocation-failure injection over the controller's OpenID
 * Connect parsers and the store: opening a new database file and migrating it with the
 * real migrations (tests/alloc/alloc_hook.h describes the loop).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "controller/oidc.h"
#include "db/migrations.h"
#include "shared/migrate.h"
#include "tests/alloc/alloc_hook.h"

#define WRONG(...)                                                                                 \
	do {                                                                                       \
		fprintf(stderr, "    wrong: " __VA_ARGS__);                                         \
		fputc('\n', stderr);                                                               \
		return ALLOC_WRONG;                                                                \
	} while (0)

#define ISSUER "https://idp.example.com"

static const char discovery_doc[] =
    "{\"issuer\":\"https://idp.example.com\","
    "\"authorization_endpoint\":\"https://idp.example.com/auth\","
    "\"token_endpoint\":\"https://idp.example.com/token\","
    "\"jwks_uri\":\"https://idp.example.com/jwks\","
    "\"userinfo_endpoint\":\"https://idp.example.com/me\","
    "\"device_authorization_endpoint\":\"https://idp.example.com/device\","
    "\"id_token_signing_alg_values_supported\":[\"ES256\",\"RS256\"],"
    "\"code_challenge_methods_supported\":[\"S256\"],"
    "\"response_types_supported\":[\"code\"]}";

static const char token_doc[] =
    "{\"access_token\":\"at-0123456789abcdef\",\"id_token\":\"aaaa.bbbb.cccc\","
    "\"token_type\":\"bearer\",\"expires_in\":300,\"refresh_token\":\"rt-0123456789\"}";

static int run_discovery(void *ctx)
{
	(void)ctx;
	struct oidc_provider p;
	memset(&p, 0x5a, sizeof(p));
	struct sp_diag diag;
	int r = oidc_discovery_parse(discovery_doc, strlen(discovery_doc), ISSUER, &p, &diag);
	if (r < 0) {
		if (p.issuer[0] != '\0')
			WRONG("discovery failed (%d) with the issuer set", r);
		return r;
	}
	if (strcmp(p.token_endpoint, "https://idp.example.com/token") != 0 ||
	    strcmp(p.device_authorization_endpoint, "https://idp.example.com/device") != 0 ||
	    p.end_session_endpoint[0] != '\0' || !p.supports_es256 || !p.supports_rs256)
		WRONG("discovery: wrong provider fields");
	return 0;
}

static int run_token_response(void *ctx)
{
	(void)ctx;
	struct oidc_token_response t;
	memset(&t, 0, sizeof(t));
	struct sp_diag diag;
	int r = oidc_token_response_parse(token_doc, strlen(token_doc), &t, &diag);
	if (r < 0) {
		int left = t.id_token != NULL || t.access_token != NULL || t.refresh_token != NULL;
		oidc_token_response_clear(&t);
		if (left)
			WRONG("token response failed (%d) with strings left", r);
		return r;
	}
	int wrong = t.id_token == NULL || strcmp(t.id_token, "aaaa.bbbb.cccc") != 0 ||
		    t.refresh_token == NULL || strcmp(t.refresh_token, "rt-0123456789") != 0 ||
		    t.access_token == NULL || t.expires_in != 300;
	oidc_token_response_clear(&t);
	if (wrong)
		WRONG("token response: wrong fields");
	return 0;
}

struct store_ctx {
	char dir[64];
	char path[96];
};

static void remove_db(const struct store_ctx *s)
{
	char side[128];
	unlink(s->path);
	snprintf(side, sizeof(side), "%s-wal", s->path);
	unlink(side);
	snprintf(side, sizeof(side), "%s-shm", s->path);
	unlink(side);
	snprintf(side, sizeof(side), "%s-journal", s->path);
	unlink(side);
}

static int run_store(void *ctx)
{
	struct store_ctx *s = ctx;
	remove_db(s);
	sqlite3 *db = (sqlite3 *)&db;
	struct sp_diag diag;
	int r = sp_db_open(s->path, &db, &diag);
	if (r < 0) {
		if (db != NULL)
			WRONG("db_open failed (%d) with a connection", r);
		return r;
	}
	int applied = -1;
	r = sp_migrate(db, sp_migrations, sp_migrations_count, &applied, &diag);
	alloc_hook_pause(); /* the checks below are not under test */
	int version = -1;
	int vr = sp_migrate_current_version(db, &version);
	sp_db_close(db);
	if (r < 0) {
		if (getenv("ALLOC_DEBUG") != NULL)
			fprintf(stderr, "    migrate: %d after %d: %s\n", r, applied, diag.message);
		/* Every migration may be committed when restoring the connection's
		 * foreign_keys setting afterwards fails: that is still an error (the
		 * connection is not as it was), and the schema must then be complete. */
		if (applied < 0 || (size_t)applied > sp_migrations_count ||
		    ((size_t)applied == sp_migrations_count &&
		     version != sp_migrations[sp_migrations_count - 1].version))
			WRONG("migrate failed (%d) reporting %d applied, version %d", r, applied,
			      version);
		return r;
	}
	if ((size_t)applied != sp_migrations_count || vr != 0 ||
	    version != sp_migrations[sp_migrations_count - 1].version)
		WRONG("migrate: applied %d, version %d (%d)", applied, version, vr);
	return 0;
}

int main(int argc, char **argv)
{
	struct store_ctx store;
	snprintf(store.dir, sizeof(store.dir), "/tmp/sallyport-alloc-XXXXXX");
	if (mkdtemp(store.dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(store.path, sizeof(store.path), "%s/controller.db", store.dir);

	/* jansson reports an allocation failure as malformed JSON; sqlite's SQLITE_NOMEM
	 * comes back as SP_ERR_DATABASE from the store, and a failure inside OpenSSL (the
	 * migrations' sha256) as SP_ERR_CRYPTO. */
	static const int json_ops[] = {SP_ERR_NOMEM, SP_ERR_INVALID, 0};
	static const int store_ops[] = {SP_ERR_NOMEM, SP_ERR_DATABASE, SP_ERR_CRYPTO, 0};
	const struct alloc_op ops[] = {
	    {"oidc_discovery_parse", run_discovery, NULL, json_ops, 0},
	    {"oidc_token_response_parse", run_token_response, NULL, json_ops, 0},
	    {"store_open_migrate", run_store, &store, store_ops, 0},
	};
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		int wanted = argc < 2;
		for (int a = 1; a < argc; a++)
			wanted |= strcmp(argv[a], ops[i].name) == 0;
		if (wanted)
			alloc_check_op(&ops[i]);
	}
	remove_db(&store);
	rmdir(store.dir);
	return alloc_summary();
}
