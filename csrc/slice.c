/* slice.c - a short scheduler slice for the data path's threads (issue 12)
 *
 * Theory of operation
 * -------------------
 * Every frame crosses two threads of ours (a pump thread, a worker), each
 * woken by a doorbell or a host socket, and each wake-up waits until the
 * scheduler runs the thread. On a busy machine the CPU is then often held by
 * a task that is not waiting for anything (a compiler, say). Linux's fair
 * scheduler (EEVDF, 6.6 and later) runs the task with the earliest virtual
 * deadline, the time it became eligible plus its slice (3 ms by default), and
 * a waking task preempts the running one only when its deadline is earlier;
 * otherwise it waits until the running task's slice is used up, which the
 * scheduler notices at a tick: with CONFIG_HZ=250 a wake-up that loses waits
 * 4, 8, 12 ms. Those were the 13-16 ms connections of issue 12 (perf sched
 * latency showed our threads waiting up to 5 ms to run after being woken).
 *
 * Since Linux 6.12 a task may ask for its own slice, without privileges:
 * sched_setattr() with sched_runtime for SCHED_OTHER / SCHED_BATCH, 100 us to
 * 100 ms. A task with a shorter slice gets earlier deadlines, and a waking
 * task whose slice is shorter than the running task's preempts it at once.
 * Its share of the CPU does not change (that is the weight, from nice): it
 * only runs sooner and in shorter pieces. The threads of the data path run a
 * few microseconds per wake-up, so RN_SLICE_US (100 us) is what they use.
 *
 * rn_slice_set() changes only the calling thread, keeps its policy and nice
 * value, and leaves real-time and SCHED_IDLE threads alone. Threads started
 * afterwards inherit it. On kernels before 6.12 the kernel accepts the call and
 * ignores the slice; where sched_setattr() does not exist the call fails
 * harmlessly. The worker calls it in rn_worker_new(), before its sandbox; the
 * pump threads at their start, after the namespace child's sandbox, whose
 * allow-list has sched_getattr and sched_setattr for the calling thread only
 * (pid 0).
 */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "slice.h"

/**
 * struct rn_sched_attr - the kernel's struct sched_attr (first version, 48 bytes)
 * @size:		sizeof this struct
 * @sched_policy:	SCHED_OTHER, SCHED_BATCH, ...
 * @sched_flags:	SCHED_FLAG_*
 * @sched_nice:		nice value (fair policies)
 * @sched_priority:	static priority (real-time policies)
 * @sched_runtime:	for fair policies since 6.12: the slice, in ns
 * @sched_deadline:	SCHED_DEADLINE only
 * @sched_period:	SCHED_DEADLINE only
 */
struct rn_sched_attr {
	uint32_t size;
	uint32_t sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime;
	uint64_t sched_deadline;
	uint64_t sched_period;
};

/**
 * rn_slice_set() - ask the scheduler for a short slice for the calling thread
 * @slice_us:	slice in microseconds (the kernel clamps it to 100..100,000)
 *
 * Return: 0, 1 if the thread's policy is not a fair one (left alone), or
 *	   negative errno of sched_getattr() / sched_setattr() (ENOSYS on
 *	   kernels without them): the thread keeps its slice then
 */
int rn_slice_set(uint32_t slice_us)
{
#if defined(SYS_sched_getattr) && defined(SYS_sched_setattr)
	struct rn_sched_attr a;

	memset(&a, 0, sizeof(a));
	if (syscall(SYS_sched_getattr, 0, &a, sizeof(a), 0))
		return -errno;
	if (a.sched_policy != SCHED_OTHER && a.sched_policy != SCHED_BATCH)
		return 1;
	a.size = sizeof(a);
	a.sched_flags = 0;
	a.sched_runtime = (uint64_t)slice_us * 1000u;
	if (syscall(SYS_sched_setattr, 0, &a, 0))
		return -errno;
	return 0;
#else
	(void)slice_us;
	return -ENOSYS;
#endif
}
