/* slice.h - a short scheduler slice for the data path's threads (issue 12)
 *
 * See slice.c for the theory of operation.
 */
#ifndef RN_SLICE_H
#define RN_SLICE_H

#include <stdint.h>

/* The slice asked for by worker processes and pump threads, microseconds
 * (the kernel takes 100 to 100,000) */
#define RN_SLICE_US	100u

int rn_slice_set(uint32_t slice_us);

#endif /* RN_SLICE_H */
