/* api.h - everything the cffi extension exposes to Python, in one include
 *
 * The declarations Python sees are the *.cdef files beside this one (one per C
 * module); this header makes the real definitions visible to the generated
 * wrapper so that the compiler checks the two agree.
 */
#ifndef RN_API_H
#define RN_API_H

#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include "ring.h"
#include "shm.h"
#include "counters.h"
#include "flow.h"
#include "worker.h"
#include "flowstats.h"
#include "dns.h"
#include "policy.h"
#include "names.h"
#include "rules.h"
#include "udp.h"
#include "tcp.h"
#include "forward.h"
#include "splice.h"
#include "pump.h"
#include "sandbox.h"
#include "verdict.h"
#include "capture.h"

#endif /* RN_API_H */
