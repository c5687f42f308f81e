/*
 * tests/fuzz/fuzz_token.c — fuzzes the token module's three input surfaces.
 *
 * The first byte picks the mode (its value modulo 4; the seeds use '0'..'3'):
 *   0  the rest is a compact JWS, verified as ES256 against a fixed key set, and
 *      when it verifies its claims are checked too;
 *   1  the rest is a JWKS document; what parses must serialise and parse again to
 *      the same keys;
 *   2  the rest is a JSON claim set, checked against two expectations;
 *   3  the rest is one JWK object; what parses must have a thumbprint, and the
 *      compact JWS path is also tried with RS256 expected.
 * Nothing may crash or leak, whatever the input.
 *
 * The fixed key below exists only for this fuzzer and its seeds, so that the seed
 * tokens it signed stay valid; it protects nothing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "shared/jwk.h"
#include "shared/keys.h"
#include "shared/token.h"

static const char fuzz_key_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgUPkIKMSFd6pTinNw\n"
    "mGkNVCOQRrw4ylmn2E9eOiOuP72hRANCAASTRxXh4fpxE53uO+AgIlVbRXzoLspb\n"
    "w1L9z6AkATWdqmz1L0g1krh29VMx+hy/CKPsYT5z5Ugiuw4gEFKOL7Ht\n"
    "-----END PRIVATE KEY-----\n";

/* The verifying set, built once and kept for the whole run (never freed on purpose). */
static struct sp_jwks fuzz_keys;
static int fuzz_ready;

static void fuzz_init(void)
{
	EVP_PKEY *key = NULL;
	if (fuzz_ready)
		return;
	sp_jwks_init(&fuzz_keys);
	if (sp_key_from_pem(fuzz_key_pem, sizeof(fuzz_key_pem) - 1, 0, &key, NULL) < 0 ||
	    sp_jwks_add_es256(&fuzz_keys, "fuzz-k1", key) < 0)
		abort();
	EVP_PKEY_free(key);
	fuzz_ready = 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_init();
	return 0;
}

static void check_claims_both_ways(const json_t *claims)
{
	struct sp_diag diag;
	const struct sp_token_expect strict = {
	    .issuer = "https://controller.example",
	    .audience = "connector-eu-1",
	    .now = 1700000000,
	    .max_skew_s = 60,
	    .jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
	    .nonce = "n-0S6_WzA2Mj",
	    .require_exp = 1,
	};
	const struct sp_token_expect loose = {
	    .issuer = "https://idp.example",
	    .audience = "sallyport-web",
	    .authorized_party = "sallyport-web",
	    .now = 1700000000,
	    .max_skew_s = SP_TOKEN_MAX_SKEW_S,
	};
	(void)sp_token_check_claims(claims, &strict, &diag);
	(void)sp_token_check_claims(claims, &loose, NULL);
}

static void fuzz_verify(const char *text, size_t len, const char *alg)
{
	struct sp_diag diag;
	json_t *claims = NULL;
	int r = sp_token_verify(text, len, &fuzz_keys, alg, &claims, &diag);
	if (r == 0) {
		if (!json_is_object(claims))
			abort();
		check_claims_both_ways(claims);
	} else if (claims != NULL) {
		abort();
	}
	json_decref(claims);
}

static void fuzz_jwks(const char *text, size_t len)
{
	struct sp_diag diag;
	struct sp_jwks set, again;
	char *doc = NULL;
	size_t doc_len = 0;

	if (sp_jwks_parse(text, len, &set, &diag) < 0) {
		if (set.count != 0 || set.entries != NULL)
			abort();
		return;
	}
	/* Round trip: every kept key serialises and reads back under the same kid. */
	if (sp_jwks_serialize(&set, &doc, &doc_len) < 0)
		abort();
	if (sp_jwks_parse(doc, doc_len, &again, &diag) < 0 || again.count != set.count)
		abort();
	for (size_t i = 0; i < set.count; i++) {
		const struct sp_jwks_entry *e = sp_jwks_find(&again, set.entries[i].kid);
		if (e == NULL || e->alg != set.entries[i].alg ||
		    EVP_PKEY_eq(e->key, set.entries[i].key) != 1)
			abort();
	}
	free(doc);
	sp_jwks_free(&again);
	sp_jwks_free(&set);
}

static void fuzz_claims(const char *text, size_t len)
{
	json_t *claims = json_loadb(text, len, JSON_DECODE_ANY, NULL);
	if (claims == NULL)
		return;
	check_claims_both_ways(claims);
	json_decref(claims);
}

static void fuzz_one_jwk(const char *text, size_t len)
{
	struct sp_diag diag;
	EVP_PKEY *key = NULL;
	char thumbprint[SP_JWK_THUMBPRINT_LEN + 1];
	json_t *jwk = json_loadb(text, len, JSON_DECODE_ANY, NULL);
	if (jwk != NULL && sp_jwk_parse_public(jwk, &key, &diag) == 0) {
		if (sp_jwk_thumbprint(key, thumbprint) < 0 || strlen(thumbprint) != 43)
			abort();
		EVP_PKEY_free(key);
	}
	json_decref(jwk);
	fuzz_verify(text, len, "RS256");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_init();
	if (size == 0)
		return 0;
	const char *rest = (const char *)data + 1;
	size_t len = size - 1;
	switch (data[0] % 4) {
	case 0:
		fuzz_verify(rest, len, "ES256");
		break;
	case 1:
		fuzz_jwks(rest, len);
		break;
	case 2:
		fuzz_claims(rest, len);
		break;
	default:
		fuzz_one_jwk(rest, len);
		break;
	}
	return 0;
}
