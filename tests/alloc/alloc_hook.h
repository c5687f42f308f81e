/*
 * tests/alloc/alloc_hook.h — the allocation-failure harness of the alloc.* tests.
 *
 * alloc_hook.c defines the process's malloc family (glibc lets an executable replace it;
 * the real work is forwarded to __libc_malloc and friends), so every allocation of our
 * code and of the libraries under it (OpenSSL, jansson, cjose, sqlite, nghttp2) passes
 * through it. It does two things:
 *   - failure injection: alloc_hook_arm(n) makes the n-th allocation from now fail once
 *     (NULL, errno ENOMEM); alloc_hook_hit() says whether it has happened;
 *   - live accounting: every live block is kept in a table (pointer, size, sequence
 *     number), so a test can compare the live count before and after a call.
 *
 * alloc_check_op() runs one operation with failure at allocation 1, 2, ... until an
 * iteration completes without reaching the armed failure, asserting after each that
 * the result is 0 or an allowed error, and that no block allocated during it is live.
 * Single-threaded use only.
 */
#ifndef SALLYPORT_TESTS_ALLOC_HOOK_H
#define SALLYPORT_TESTS_ALLOC_HOOK_H

#include <stddef.h>
#include <stdint.h>

/* Makes allocation number n (1-based, counted from this call) fail once; 0 disarms. */
void alloc_hook_arm(uint64_t n);
/* Disarms without forgetting a hit: checks after the call under test never fail. */
void alloc_hook_pause(void);
/* 1 once the armed failure has been returned since the last alloc_hook_arm. */
int alloc_hook_hit(void);
/* Allocation attempts (failed ones included) since the process started. */
uint64_t alloc_hook_attempts(void);
/* Live blocks and their bytes. */
size_t alloc_hook_live_count(void);
size_t alloc_hook_live_bytes(void);
/* Sequence number the next allocation will get. */
uint64_t alloc_hook_next_seq(void);
/* Prints (stderr) up to `max` live blocks with sequence number >= since; returns how many. */
size_t alloc_hook_report_since(uint64_t since, size_t max);

/*
 * One operation under test. run() performs the call on its fixed input, checks the
 * outputs and frees them; it returns 0 on success, the sp_err of a failed call (then it
 * has checked that the outputs are empty), or ALLOC_WRONG (> 0) after printing what was
 * wrong (a success with a wrong result, an output left set on failure, an error outside
 * the allowed set).
 */
#define ALLOC_WRONG 1000

struct alloc_op {
	const char *name;
	int (*run)(void *ctx);
	void *ctx;
	/* Errors a failed allocation may produce, 0-terminated; NULL means SP_ERR_NOMEM only. */
	const int *allowed;
	/* The operation must not allocate at all (checked on the warm-up call). */
	int expect_no_alloc;
};

/* Runs the loop described above; prints one line; returns 0 when every point was clean. */
int alloc_check_op(const struct alloc_op *op);

/* Ends the program: prints "alloc: N passed, M failed" and returns the exit status. */
int alloc_summary(void);

#endif
