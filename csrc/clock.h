/* clock.h - the data path's one clock: CLOCK_MONOTONIC in nanoseconds
 *
 * Wake-up moderation (moderate.c), busy polling (busypoll.c) and the worker's
 * millisecond loop clock (worker.c) read the time here; clock_gettime() is a
 * vDSO call on common clock sources, a system call otherwise (both sandboxes
 * allow it).
 */
#ifndef RN_CLOCK_H
#define RN_CLOCK_H

#include <stdint.h>
#include <time.h>

/**
 * rn_mono_ns() - CLOCK_MONOTONIC in nanoseconds
 *
 * Return: nanoseconds since an arbitrary point before boot ended (> 0)
 */
static inline int64_t rn_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#endif /* RN_CLOCK_H */
