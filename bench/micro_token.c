/*
 * bench/micro_token.c — ES256 signing and verifying through shared/token.c next to
 * raw OpenSSL ECDSA P-256 / SHA-256 over a message of the same length, in the same
 * run, so the ratio shows what the JOSE layer (JSON, base64url, header checks)
 * costs on top of the curve arithmetic.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "bench/micro.h"
#include "shared/jwk.h"
#include "shared/keys.h"
#include "shared/token.h"

#define BENCH_SECONDS 1.0

/* A realistic flow grant: ten claims, about 400 bytes of JSON. */
static json_t *bench_grant(void)
{
	return json_pack(
	    "{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:{s:s}, s:[s, s]}", "iss",
	    "https://controller.example", "sub", "device-7f3a9c2e", "aud", "connector-eu-1", "iat",
	    (json_int_t)1700000000, "nbf", (json_int_t)1700000000, "exp", (json_int_t)1700000300,
	    "jti", "b4c1d5e0-3f1a-4c2e-9d7b-2a6f8e0c1d23", "resource", "db.internal.example:5432",
	    "cnf", "jkt", "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I", "groups", "engineering",
	    "oncall");
}

struct bench_state {
	EVP_PKEY *key;
	struct sp_token_signer *signer;
	struct sp_jwks keys;
	json_t *claims;
	char *token; /* one signed token for the verify loops */
	size_t token_len;
	size_t input_len; /* bytes signed: header "." payload */
	uint8_t *message; /* input_len bytes for the raw loops */
	uint8_t der[80];  /* a raw DER signature over message */
	size_t der_len;
};

static int raw_sign_once(struct bench_state *s, uint8_t *sig, size_t *sig_len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx != NULL && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, s->key) == 1 &&
		 EVP_DigestSign(ctx, sig, sig_len, s->message, s->input_len) == 1;
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : -1;
}

static int raw_verify_once(struct bench_state *s, EVP_PKEY *pub)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub) == 1 &&
		 EVP_DigestVerify(ctx, s->der, s->der_len, s->message, s->input_len) == 1;
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : -1;
}

static int bench_setup(struct bench_state *s)
{
	memset(s, 0, sizeof(*s));
	sp_jwks_init(&s->keys);
	if (sp_key_generate(&s->key) < 0 || sp_token_signer_new(s->key, "k1", &s->signer) < 0 ||
	    sp_jwks_add_es256(&s->keys, "k1", s->key) < 0 || (s->claims = bench_grant()) == NULL ||
	    sp_token_signer_sign(s->signer, s->claims, &s->token) < 0)
		return -1;
	s->token_len = strlen(s->token);
	s->input_len = (size_t)(strrchr(s->token, '.') - s->token);
	if ((s->message = malloc(s->input_len)) == NULL)
		return -1;
	memcpy(s->message, s->token, s->input_len);
	s->der_len = sizeof(s->der);
	return raw_sign_once(s, s->der, &s->der_len);
}

static void bench_teardown(struct bench_state *s)
{
	free(s->message);
	free(s->token);
	json_decref(s->claims);
	sp_jwks_free(&s->keys);
	sp_token_signer_free(s->signer);
	EVP_PKEY_free(s->key);
}

int bench_token(void)
{
	struct bench_state s;
	double start, elapsed;
	uint64_t n;
	int failed = 0;

	if (bench_setup(&s) < 0) {
		printf("  token: setup failed\n");
		bench_teardown(&s);
		return 1;
	}
	const struct sp_jwks_entry *entry = sp_jwks_find(&s.keys, "k1");
	char note[96];
	snprintf(note, sizeof(note), "token %zu bytes, signed input %zu bytes", s.token_len,
		 s.input_len);

	/* Ours: sign. */
	for (n = 0, start = bench_now(); (elapsed = bench_now() - start) < BENCH_SECONDS; n++) {
		char *token = NULL;
		if (sp_token_signer_sign(s.signer, s.claims, &token) < 0)
			failed = 1;
		bench_sink((uint64_t)(uintptr_t)token);
		free(token);
	}
	double ours_sign = (double)n / elapsed;
	bench_report("ES256 sign via sp_token_signer_sign", ours_sign, "ops/s", note);

	/* Ours: verify (the payload is parsed into claims, which are then released). */
	for (n = 0, start = bench_now(); (elapsed = bench_now() - start) < BENCH_SECONDS; n++) {
		json_t *claims = NULL;
		if (sp_token_verify(s.token, s.token_len, &s.keys, "ES256", &claims, NULL) < 0)
			failed = 1;
		json_decref(claims);
	}
	double ours_verify = (double)n / elapsed;
	bench_report("ES256 verify via sp_token_verify", ours_verify, "ops/s", NULL);

	/* Ours: verify and check the claims, as a connector does for each flow. */
	struct sp_token_expect expect = {
	    .issuer = "https://controller.example",
	    .audience = "connector-eu-1",
	    .now = 1700000100,
	    .max_skew_s = 60,
	    .jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
	    .require_exp = 1,
	};
	for (n = 0, start = bench_now(); (elapsed = bench_now() - start) < BENCH_SECONDS; n++) {
		json_t *claims = NULL;
		if (sp_token_verify(s.token, s.token_len, &s.keys, "ES256", &claims, NULL) < 0 ||
		    sp_token_check_claims(claims, &expect, NULL) < 0)
			failed = 1;
		json_decref(claims);
	}
	bench_report("ES256 verify + claim checks", (double)n / elapsed, "ops/s", NULL);

	/* Raw OpenSSL over the same bytes. */
	for (n = 0, start = bench_now(); (elapsed = bench_now() - start) < BENCH_SECONDS; n++) {
		uint8_t sig[80];
		size_t sig_len = sizeof(sig);
		if (raw_sign_once(&s, sig, &sig_len) < 0)
			failed = 1;
		bench_sink(sig[0]);
	}
	double raw_sign = (double)n / elapsed;
	bench_report("raw OpenSSL ECDSA P-256 SHA-256 sign", raw_sign, "ops/s",
		     "EVP_DigestSign, same message length");

	for (n = 0, start = bench_now(); (elapsed = bench_now() - start) < BENCH_SECONDS; n++)
		if (raw_verify_once(&s, entry->key) < 0)
			failed = 1;
	double raw_verify = (double)n / elapsed;
	bench_report("raw OpenSSL ECDSA P-256 SHA-256 verify", raw_verify, "ops/s",
		     "EVP_DigestVerify, same message length");

	/* As percentages, since the report prints one decimal. */
	bench_report("ratio ours/raw, sign", 100.0 * ours_sign / raw_sign, "%", NULL);
	bench_report("ratio ours/raw, verify", 100.0 * ours_verify / raw_verify, "%",
		     "target >= 70%");

	bench_teardown(&s);
	if (failed)
		printf("  token: an operation failed during the run\n");
	return failed;
}
