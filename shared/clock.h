/*
 * shared/clock.h — the clocks the programs read. Pure code never calls these: it takes the
 * time as an argument; the event loops and threads that drive it read the clock here.
 */
#ifndef SALLYPORT_SHARED_CLOCK_H
#define SALLYPORT_SHARED_CLOCK_H

#include <stdint.h>

/* Milliseconds on a clock that never jumps (timeouts, deadlines, durations). */
int64_t sp_monotonic_ms(void);
/* Milliseconds since the Unix epoch (timestamps people and peers read). */
int64_t sp_realtime_ms(void);

#endif
