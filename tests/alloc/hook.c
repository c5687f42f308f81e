/*
 * tests/alloc/hook.c — the replacement malloc family and the failure loop (alloc_hook.h).
 *
 * glibc routes its own internal allocations (strdup, fopen, ...) through the malloc the
 * executable defines, and so do the shared libraries, so defining malloc, free, calloc,
 * realloc and the aligned forms here covers everything. The blocks themselves come from
 * glibc's __libc_* entry points. The live table is open addressing with linear probing
 * and backward-shift deletion, in static storage so it works before main.
 */
#include "tests/alloc/alloc_hook.h"

#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>

#include "shared/error.h"

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);
extern void *__libc_memalign(size_t alignment, size_t size);

void *malloc(size_t size);
void free(void *p);
void *calloc(size_t n, size_t size);
void *realloc(void *p, size_t size);
int posix_memalign(void **out, size_t alignment, size_t size);
void *aligned_alloc(size_t alignment, size_t size);
void *memalign(size_t alignment, size_t size);
void *valloc(size_t size);
void *pvalloc(size_t size);

#define TABLE_BITS 20
#define TABLE_SIZE ((size_t)1 << TABLE_BITS)

struct live_block {
	uintptr_t ptr; /* 0: empty slot */
	size_t size;
	uint64_t seq;
};

static struct live_block table[TABLE_SIZE];
static size_t live_count;
static size_t live_bytes;
static uint64_t next_seq = 1;
static uint64_t attempts;
static uint64_t countdown; /* 0: disarmed */
static int hit;
static void *hit_caller; /* return address of the allocation that was failed */
static int table_full;
static atomic_flag lock = ATOMIC_FLAG_INIT;

static void lock_take(void)
{
	while (atomic_flag_test_and_set_explicit(&lock, memory_order_acquire))
		;
}

static void lock_give(void)
{
	atomic_flag_clear_explicit(&lock, memory_order_release);
}

static size_t slot_of(uintptr_t p)
{
	uint64_t h = (uint64_t)p * UINT64_C(0x9E3779B97F4A7C15);
	return (size_t)(h >> (64 - TABLE_BITS));
}

static void table_add(void *p, size_t size)
{
	if (live_count >= TABLE_SIZE - TABLE_SIZE / 8) {
		table_full = 1;
		return;
	}
	size_t i = slot_of((uintptr_t)p);
	while (table[i].ptr != 0)
		i = (i + 1) & (TABLE_SIZE - 1);
	table[i].ptr = (uintptr_t)p;
	table[i].size = size;
	table[i].seq = next_seq++;
	live_count++;
	live_bytes += size;
}

static void table_remove(void *p)
{
	size_t i = slot_of((uintptr_t)p);
	while (table[i].ptr != (uintptr_t)p) {
		if (table[i].ptr == 0)
			return; /* not ours (table was full when it was made) */
		i = (i + 1) & (TABLE_SIZE - 1);
	}
	live_count--;
	live_bytes -= table[i].size;
	/* Backward-shift deletion keeps every probe chain unbroken. */
	size_t hole = i;
	size_t j = i;
	for (;;) {
		j = (j + 1) & (TABLE_SIZE - 1);
		if (table[j].ptr == 0)
			break;
		size_t home = slot_of(table[j].ptr);
		/* Move j into the hole unless its home lies cyclically in (hole, j]. */
		int stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
		if (!stays) {
			table[hole] = table[j];
			hole = j;
		}
	}
	table[hole].ptr = 0;
	table[hole].size = 0;
	table[hole].seq = 0;
}

/*
 * 1 when the current allocation is made inside one of jansson's json_load* parsers.
 * jansson 2.14's lexer is not safe when an allocation fails: lex_save ignores the error
 * of strbuffer_append_byte, so a character is silently dropped; the string scanner then
 * returns corrupted text or reads past the buffer and stops on assert(0) (an abort). No
 * caller can guard against that, so allocations inside a parse are never failed here
 * (our handling of a NULL from json_load* is the same as for malformed input, which
 * the unit tests cover). The frame walk runs only at the armed allocation.
 */
static int in_jansson_parse(void)
{
	void *frames[64];
	int n = backtrace(frames, 64);
	for (int i = 0; i < n; i++) {
		Dl_info info;
		if (dladdr(frames[i], &info) != 0 && info.dli_sname != NULL &&
		    strncmp(info.dli_sname, "json_load", 9) == 0 && info.dli_fname != NULL &&
		    strstr(info.dli_fname, "libjansson") != NULL)
			return 1;
	}
	return 0;
}

static uint64_t skipped_in_parse;
static int moved; /* the armed failure was moved past a parse in this call */

/* Counts one attempt; 1 when this one is the armed failure. Called without the lock. */
static int should_fail(void *caller)
{
	lock_take();
	attempts++;
	int armed_now = countdown != 0 && --countdown == 0;
	lock_give();
	if (!armed_now)
		return 0;
	if (in_jansson_parse()) {
		/* Not this one: the next allocation outside a parse fails instead. */
		lock_take();
		countdown = 1;
		skipped_in_parse++;
		moved = 1;
		lock_give();
		return 0;
	}
	hit = 1;
	hit_caller = caller;
	return 1;
}

/* backtrace() loads libgcc's unwinder on first use (allocating): do it up front. */
__attribute__((constructor)) static void hook_init(void)
{
	void *frames[4];
	(void)backtrace(frames, 4);
}

void *malloc(size_t size)
{
	if (should_fail(__builtin_return_address(0))) {
		errno = ENOMEM;
		return NULL;
	}
	lock_take();
	void *p = __libc_malloc(size);
	if (p != NULL)
		table_add(p, size);
	lock_give();
	return p;
}

void free(void *p)
{
	if (p == NULL)
		return;
	lock_take();
	table_remove(p);
	__libc_free(p);
	lock_give();
}

void *calloc(size_t n, size_t size)
{
	if (should_fail(__builtin_return_address(0))) {
		errno = ENOMEM;
		return NULL;
	}
	lock_take();
	void *p = __libc_calloc(n, size);
	if (p != NULL)
		table_add(p, n * size);
	lock_give();
	return p;
}

void *realloc(void *p, size_t size)
{
	if (p == NULL)
		return malloc(size);
	if (size == 0) {
		free(p);
		return NULL;
	}
	if (should_fail(__builtin_return_address(0))) {
		errno = ENOMEM;
		return NULL;
	}
	lock_take();
	/* The old block keeps its sequence number only when it did not move; either way it
	 * is one live block before and after, so the counts stay exact. */
	void *q = __libc_realloc(p, size);
	if (q != NULL) {
		table_remove(p);
		table_add(q, size);
	}
	lock_give();
	return q;
}

static void *aligned(size_t alignment, size_t size)
{
	if (should_fail(__builtin_return_address(0))) {
		errno = ENOMEM;
		return NULL;
	}
	lock_take();
	void *p = __libc_memalign(alignment, size);
	if (p != NULL)
		table_add(p, size);
	lock_give();
	return p;
}

int posix_memalign(void **out, size_t alignment, size_t size)
{
	if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0)
		return EINVAL;
	void *p = aligned(alignment, size);
	if (p == NULL)
		return ENOMEM;
	*out = p;
	return 0;
}

void *aligned_alloc(size_t alignment, size_t size)
{
	return aligned(alignment, size);
}

void *memalign(size_t alignment, size_t size)
{
	return aligned(alignment, size);
}

void *valloc(size_t size)
{
	return aligned(4096, size);
}

void *pvalloc(size_t size)
{
	return aligned(4096, (size + 4095) & ~(size_t)4095);
}

void alloc_hook_arm(uint64_t n)
{
	lock_take();
	countdown = n;
	hit = 0;
	moved = 0;
	lock_give();
}

void alloc_hook_pause(void)
{
	lock_take();
	countdown = 0;
	lock_give();
}

int alloc_hook_hit(void)
{
	return hit;
}

uint64_t alloc_hook_attempts(void)
{
	return attempts;
}

size_t alloc_hook_live_count(void)
{
	return live_count;
}

size_t alloc_hook_live_bytes(void)
{
	return live_bytes;
}

uint64_t alloc_hook_next_seq(void)
{
	return next_seq;
}

size_t alloc_hook_report_since(uint64_t since, size_t max)
{
	size_t found = 0;
	for (size_t i = 0; i < TABLE_SIZE; i++) {
		if (table[i].ptr == 0 || table[i].seq < since)
			continue;
		if (found < max)
			fprintf(stderr, "    live block #%llu: %zu bytes at %p\n",
				(unsigned long long)table[i].seq, table[i].size, (void *)table[i].ptr);
		found++;
	}
	return found;
}

/* ---- the failure loop ---- */

static unsigned passed;
static unsigned failed;

/*
 * jansson 2.14 drops a character from a string being parsed when growing its buffer
 * fails (lex_save ignores strbuffer_append_byte's error), so a document parsed while an
 * allocation inside libjansson fails may come back "successfully" with a corrupted
 * string. No caller can detect that. When the failed allocation was made by libjansson,
 * a wrong result (a success with wrong content, or an error like "wrong issuer") is
 * therefore counted as a library fault and tolerated; a crash or a leak never is.
 */
static int hit_in_jansson(void)
{
	Dl_info info;
	if (hit_caller == NULL || dladdr(hit_caller, &info) == 0 || info.dli_fname == NULL)
		return 0;
	return strstr(info.dli_fname, "libjansson") != NULL;
}

static unsigned jansson_faults;

/*
 * OpenSSL keeps per-thread state (the error queue with its message buffers, the
 * per-thread random generators) that it allocates on first use and keeps until the
 * thread stops. It is not ours and is legitimately kept across calls, so it is released
 * before taking the baseline and again before comparing: OPENSSL_thread_stop frees it
 * for the calling thread, and the next call allocates it afresh (those allocations are
 * then failure points too).
 */
static void settle(void)
{
	ERR_clear_error();
	OPENSSL_thread_stop();
}

static int allowed_error(const struct alloc_op *op, int r)
{
	if (op->allowed == NULL)
		return r == SP_ERR_NOMEM;
	for (const int *a = op->allowed; *a != 0; a++)
		if (*a == r)
			return 1;
	return 0;
}

/* Returns 0 when clean; prints the problem otherwise. */
static int one_call(const struct alloc_op *op, uint64_t fail_at, int check_leaks, int *result,
		    int *was_hit, uint64_t *allocs)
{
	settle();
	size_t base_count = live_count;
	size_t base_bytes = live_bytes;
	uint64_t base_seq = next_seq;
	alloc_hook_arm(fail_at);
	uint64_t before = attempts;
	int r = op->run(op->ctx);
	*allocs = attempts - before;
	*was_hit = hit;
	alloc_hook_arm(0);
	settle();
	*result = r;
	int bad = 0;
	int wrong = r == ALLOC_WRONG || r > 0 || (r < 0 && !allowed_error(op, r));
	if (wrong && *was_hit && hit_in_jansson()) {
		fprintf(stderr, "  %s: failure at allocation %llu (in libjansson): result %d "
				"tolerated as jansson's fault\n",
			op->name, (unsigned long long)fail_at, r);
		jansson_faults++;
		*result = SP_ERR_NOMEM;
	} else if (r == ALLOC_WRONG) {
		fprintf(stderr, "  %s: failure at allocation %llu: wrong result (above)\n", op->name,
			(unsigned long long)fail_at);
		bad = 1;
	} else if (r > 0 || (r < 0 && !allowed_error(op, r))) {
		fprintf(stderr, "  %s: failure at allocation %llu: unexpected result %d (%s)\n",
			op->name, (unsigned long long)fail_at, r, sp_err_name(r));
		bad = 1;
	} else if (r < 0 && !*was_hit) {
		fprintf(stderr, "  %s: failed with %d (%s) though no allocation failed\n", op->name,
			r, sp_err_name(r));
		bad = 1;
	}
	if (check_leaks && (live_count != base_count || live_bytes != base_bytes)) {
		fprintf(stderr,
			"  %s: failure at allocation %llu (result %d): leak: %zd blocks, %zd bytes\n",
			op->name, (unsigned long long)fail_at, r,
			(ssize_t)(live_count - base_count), (ssize_t)(live_bytes - base_bytes));
		alloc_hook_report_since(base_seq, 8);
		bad = 1;
	}
	if (table_full) {
		fprintf(stderr, "  %s: the live table overflowed\n", op->name);
		bad = 1;
	}
	return bad;
}

int alloc_check_op(const struct alloc_op *op)
{
	int result = 0;
	int was_hit = 0;
	uint64_t allocs = 0;
	/*
	 * Warm-up: one-time initialisation that libraries keep for the life of the process
	 * (OpenSSL's providers and method caches, sqlite's globals, glibc's time zone) happens
	 * here, unarmed and without the leak check; from then on a call must leave nothing.
	 */
	int bad = one_call(op, 0, 0, &result, &was_hit, &allocs);
	uint64_t warm_allocs = allocs;
	if (!bad && result != 0) {
		fprintf(stderr, "  %s: the warm-up call failed: %d (%s)\n", op->name, result,
			sp_err_name(result));
		bad = 1;
	}
	if (!bad)
		bad = one_call(op, 0, 1, &result, &was_hit, &allocs);
	uint64_t plain_allocs = allocs;
	if (!bad && op->expect_no_alloc && (warm_allocs != 0 || plain_allocs != 0)) {
		fprintf(stderr, "  %s: expected no allocation, saw %llu\n", op->name,
			(unsigned long long)plain_allocs);
		bad = 1;
	}
	uint64_t points = 0;
	unsigned by_code[64] = {0};
	jansson_faults = 0;
	skipped_in_parse = 0;
	unsigned nomem = 0;
	unsigned other = 0;
	unsigned recovered = 0;
	/* ALLOC_FROM=n starts at failure point n (for debugging one point). */
	uint64_t first = 1;
	const char *from = getenv("ALLOC_FROM");
	if (from != NULL)
		first = strtoull(from, NULL, 10);
	for (uint64_t n = first; !bad; n++) {
		bad = one_call(op, n, 1, &result, &was_hit, &allocs);
		if (!was_hit)
			break; /* the call needed fewer than n allocations: every point was tried */
		if (moved)
			continue; /* the allocation that failed is point n + 1's too: count it once */
		points++;
		if (result == SP_ERR_NOMEM)
			nomem++;
		else if (result < 0)
			other++;
		else
			recovered++;
		if (result < 0 && result > -64)
			by_code[-result]++;
		if (n > 1000000) {
			fprintf(stderr, "  %s: no end after a million points\n", op->name);
			bad = 1;
		}
	}
	if (bad) {
		printf("%s: FAILED after %llu failure points\n", op->name, (unsigned long long)points);
		failed++;
		return -1;
	}
	if (op->expect_no_alloc)
		printf("%s: 0 allocations, all clean\n", op->name);
	else
	{
		char codes[256] = "";
		size_t used = 0;
		for (int c = 1; c < 64; c++)
			if (by_code[c] != 0 && used < sizeof(codes))
				used += (size_t)snprintf(codes + used, sizeof(codes) - used, " %s %u",
							 sp_err_name(-c), by_code[c]);
		printf("%s: %llu failure points, all clean (errors:%s; recovered %u; jansson "
		       "faults %u; %llu allocations per call, those inside json_load* not "
		       "failed)\n",
		       op->name, (unsigned long long)points, codes, recovered, jansson_faults,
		       (unsigned long long)plain_allocs);
	}
	fflush(stdout);
	passed++;
	return 0;
}

int alloc_summary(void)
{
	printf("alloc: %u passed, %u failed\n", passed, failed);
	return failed == 0 ? 0 : 1;
}
