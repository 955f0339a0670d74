/* worker.c - host stack worker: event loop, flow services, creation
 *
 * Theory of operation
 * -------------------
 * A worker is one host process serving one pair of rings shared with the
 * namespace child (shm.h): it consumes frames from ring to_worker and
 * produces frames into ring to_ns. The namespace side is untrusted; tap.c
 * is where its bytes enter.
 *
 * Event loop (rn_worker_run()): take up to RN_WORKER_BATCH frames from
 * to_worker, process each, then release the consumed bytes and publish the
 * produced frames once per batch, kicking the namespace's eventfd only if the
 * ring protocol says it waits (need_wakeup on to_ns, need_space on
 * to_worker), so a busy worker makes no syscall per frame. When to_worker is
 * empty the worker announces sleep (rn_ring_consumer_sleep()), re-checks, and
 * blocks in epoll_wait() on its doorbell eventfd, the watched control fds and
 * the host sockets of its flows, until the nearest timer deadline. A readable
 * control fd makes rn_worker_run() return 1 so that Python can handle the
 * message (a wait a signal interrupts returns 1 too, so that the caller's
 * signal handlers run); a busy worker looks at its epoll without blocking
 * after every batch. During a one-way stream of small UDP datagrams the
 * worker naps instead of blocking (rn_worker_nap(), moderate.h), leaving
 * NEED_WAKEUP clear, so that each wake-up moves a batch. A reply to a frame
 * (an echo reply, a RST) that does not fit in to_ns is dropped and counted
 * (ring_full); data from host sockets waits instead (see Flows).
 *
 * Frame intake and output (tap.c): each frame taken from to_worker is
 * copied, validated and dispatched to a protocol core by rn_tap_input(),
 * which also adds it to frames_in and to exactly one outcome counter; frames
 * to the namespace are reserved and committed through tap.c as well.
 *
 * Flows: protocol cores keep their flows in the worker's flow table
 * (flowtab.h) and their host sockets in the worker's epoll instance, with
 * epoll_data.ptr pointing at the flow's common header; struct rn_flow_ops of
 * the flow's type says what to do with its events (rn_worker_ops[]). Each
 * loop pass: frames from to_worker, then expired timers, then flows waiting
 * for room in to_ns, then host socket events (epoll_wait() without blocking
 * while the rings are busy, else blocking until the nearest timer deadline);
 * after the frames and after the events, flows that asked for it
 * (rn_worker_defer()) are flushed (ops->flush(): one ACK per flow per batch)
 * and to_ns is published once; closed flows are freed at the end. Control
 * fds and ev_worker carry tag pointers (rn_worker_tag_ctl, &w->ev_worker)
 * instead, and the on_connect hook's socket its verdict state (w->vd,
 * verdict.c: its new asks are sent after each intake batch).
 *
 * Backpressure towards the namespace: a flow that finds to_ns full stops
 * reading its host socket and queues itself (rn_worker_wait_room()). The
 * worker then waits as the ring's producer (rn_ring_producer_sleep():
 * need_space is set), and the namespace pump kicks ev_worker once it has
 * freed half the ring; when a largest frame fits again the waiting flows are
 * called back in order (ops->room()). Host data is never read unless there
 * is room for it, so nothing read from a host socket is ever dropped.
 *
 * File descriptors: at start the soft RLIMIT_NOFILE is raised to the hard
 * limit. Each flow holds at most one host socket and flows are capped at
 * max_flows, so fd use is bounded; a socket() that fails anyway (EMFILE)
 * refuses the flow, counted flows_refused_fd. Closed flows close their fd at
 * once (no lingering).
 *
 * Fault injection (tests only, fault.c): when params.faults is non-zero,
 * frames taken from to_worker go through rn_fault_input() and frames
 * committed to to_ns through rn_fault_commit(), which drop, duplicate or
 * reorder a fraction of them.
 *
 * Network emulation (netem.c): with either direction on (w->netem.active),
 * the same two hooks queue frames instead (rn_netem_input(),
 * rn_netem_tx_commit(); tap.c's reserve takes room in the down queue), every
 * pass releases what is due (rn_netem_run()), and a pass about to block arms
 * the emulation's timerfd (rn_netem_arm()), which wakes the epoll wait.
 *
 * Errors: a malformed frame is dropped; a ring whose indices or records are
 * impossible (rn_ring_peek(), rn_ring_reserve() return -EPROTO) ends the
 * worker: the error sticks in w->err and every later call returns it.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "capture.h"
#include "clock.h"
#include "fault.h"
#include "flow.h"
#include "flowtab.h"
#include "frag.h"
#include "forward.h"
#include "icmp.h"
#include "rules.h"
#include "netem.h"
#include "splice.h"
#include "slice.h"
#include "tap.h"
#include "tcp.h"
#include "udp.h"
#include "verdict.h"
#include "worker.h"

#define RN_WORKER_EVENTS	64

static void rn_worker_flush(struct rn_worker *w);

/**
 * rn_worker_kick() - wake the namespace side
 * @w:		worker
 */
void rn_worker_kick(struct rn_worker *w)
{
	uint64_t one = 1;

	/* EAGAIN means the counter is saturated: the kick is pending anyway */
	if (write(w->ev_ns, &one, sizeof(one)) == sizeof(one))
		rn_ctr_add(w->ctr, RN_WCTR_kicks, 1);
}

/**
 * rn_worker_batch() - process up to RN_WORKER_BATCH frames, then sync the rings
 * @w:		worker
 *
 * Consumed bytes are released and replies published once, at the end, with
 * at most one kick of the namespace side.
 *
 * Return: frames processed, or negative errno when the worker must stop
 */
static int rn_worker_batch(struct rn_worker *w)
{
	const uint8_t *frame;
	unsigned int n;
	uint32_t len;
	int rc, kick;

	if (w->err)
		return w->err;
	for (n = 0; n < RN_WORKER_BATCH; n++) {
		rc = rn_ring_peek(&w->rx, &frame, &len);
		if (rc < 0)
			return rn_worker_fatal(w, rc);
		if (!rc)
			break;
		/* The capture sees the frame as the namespace sent it (capture.c) */
		if (w->cap && w->cap->snaplen)
			rn_capture_frame(w, frame, len, RN_CAP_DIR_OUT);
		/* One branch for both hooks, which are exclusive */
		if (w->fin.on | w->netem.up.on)
			rc = rn_netem_input(w, frame, len);
		else
			rc = rn_tap_input(w, frame, len);
		if (rc < 0)
			return rc;
		rn_ring_consume(&w->rx);
	}
	if (n < RN_WORKER_BATCH && (rc = rn_fault_input_held(w)) < 0)
		return rc;
	rn_worker_flush(w);
	rn_fault_tx_held(w);
	kick = rn_ring_release(&w->rx);
	kick |= rn_ring_publish(&w->tx);
	if (kick)
		rn_worker_kick(w);
	return (int)n;
}

/* Tag pointers in epoll_data for the fds that are not flows */
static char rn_worker_tag_ctl;

/* Protocol cores by flow type; a NULL entry has no flows */
static const struct rn_flow_ops *const rn_worker_ops[RN_FLOW_TYPES] = {
	[RN_FLOW_NONE] = NULL,
	[RN_FLOW_TCP] = &rn_tcp_ops,
	[RN_FLOW_UDP] = &rn_udp_ops,
	[RN_FLOW_ICMP] = &rn_icmp_ops,
	[RN_FLOW_FWD] = &rn_fwd_ops,	/* listeners, never in the table */
	[RN_FLOW_SPLICE] = &rn_splice_ops,
};

/* Gauge counters of open flows by type */
static const unsigned int rn_worker_open_ctr[RN_FLOW_TYPES] = {
	[RN_FLOW_NONE] = RN_WCTR_COUNT,
	[RN_FLOW_TCP] = RN_WCTR_flows_open_tcp,
	[RN_FLOW_UDP] = RN_WCTR_flows_open_udp,
	[RN_FLOW_ICMP] = RN_WCTR_flows_open_icmp,
	[RN_FLOW_FWD] = RN_WCTR_COUNT,
	[RN_FLOW_SPLICE] = RN_WCTR_flows_open_splice,
};

/**
 * rn_worker_now_ms() - monotonic clock in milliseconds
 *
 * Return: milliseconds since an arbitrary point
 */
int64_t rn_worker_now_ms(void)
{
	return rn_mono_ns() / 1000000;
}

/**
 * rn_worker_flow_add() - put a new flow into the worker's table
 * @w:		worker
 * @f:		flow with key, type and fd (or -1) set, zeroed otherwise
 *
 * Return: 0, -ENOSPC at the max_flows cap, -EEXIST if the key is taken,
 *	   -EINVAL for a bad type
 */
int rn_worker_flow_add(struct rn_worker *w, struct rn_flow *f)
{
	int rc;

	f->flags = 0;
	f->events = 0;
	f->wnext = NULL;
	rc = rn_flowtab_insert(&w->flows, f, w->now);
	if (!rc) {
		rn_ctr_add(w->ctr, rn_worker_open_ctr[f->type], 1);
		rn_capture_flow(w, f, RN_CAP_EV_OPEN);
	}
	return rc;
}

/**
 * rn_worker_flow_watch() - set the epoll events wanted for a flow's host socket
 * @w:		worker
 * @f:		flow with a host socket in f->fd
 * @events:	EPOLLIN, EPOLLOUT, EPOLLRDHUP... (0: stop watching); level
 *		triggered
 *
 * Does nothing when @events are already registered.
 *
 * Return: 0, or negative errno from epoll_ctl()
 */
int rn_worker_flow_watch(struct rn_worker *w, struct rn_flow *f, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = f };
	int op;

	if (f->fd < 0 || f->events == events)
		return 0;
	if (!events)
		op = EPOLL_CTL_DEL;
	else
		op = f->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	if (epoll_ctl(w->epfd, op, f->fd, &ev))
		return -errno;
	f->events = events;
	return 0;
}

/**
 * rn_worker_flow_timer() - arm, move or disarm a flow's timer
 * @w:		worker
 * @f:		flow in the table
 * @deadline:	when ops->timer() should run, in w->now milliseconds (0: never)
 */
void rn_worker_flow_timer(struct rn_worker *w, struct rn_flow *f, int64_t deadline)
{
	rn_flowtab_timer(&w->flows, f, deadline);
}

/**
 * rn_worker_wait_room() - call ops->room() for @f once to_ns has room again
 * @w:		worker
 * @f:		flow that could not reserve a frame; it stopped reading its host
 *		socket until then
 *
 * A flow already waiting keeps its place.
 */
void rn_worker_wait_room(struct rn_worker *w, struct rn_flow *f)
{
	if (f->flags & (RN_FLOW_F_ROOM_WAIT | RN_FLOW_F_CLOSED))
		return;
	f->flags |= RN_FLOW_F_ROOM_WAIT;
	f->wnext = NULL;
	*w->room_tail = f;
	w->room_tail = &f->wnext;
	rn_ctr_add(w->ctr, RN_WCTR_room_waits, 1);
}

/**
 * rn_worker_defer() - call ops->flush() for @f when the current batch is done
 * @w:		worker
 * @f:		flow (deferring twice in one batch calls flush once)
 */
void rn_worker_defer(struct rn_worker *w, struct rn_flow *f)
{
	if (f->flags & (RN_FLOW_F_DEFER | RN_FLOW_F_CLOSED))
		return;
	f->flags |= RN_FLOW_F_DEFER;
	f->dnext = w->deferred;
	w->deferred = f;
}

/**
 * rn_worker_flush() - run ops->flush() of every deferred flow
 * @w:		worker
 *
 * Flows that defer themselves again during their flush wait for the next
 * call, so this always ends.
 */
static void rn_worker_flush(struct rn_worker *w)
{
	const struct rn_flow_ops *ops;
	struct rn_flow *f, *list = w->deferred;

	w->deferred = NULL;
	while ((f = list) && !w->err) {
		list = f->dnext;
		f->dnext = NULL;
		f->flags &= ~RN_FLOW_F_DEFER;
		/* A hook may close flows further down this list: skip those */
		if (f->flags & RN_FLOW_F_CLOSED)
			continue;
		ops = rn_worker_ops[f->type];
		if (ops && ops->flush)
			ops->flush(w, f);
	}
	while ((f = list)) {
		list = f->dnext;
		f->flags &= ~RN_FLOW_F_DEFER;
		rn_worker_defer(w, f);
	}
}

/**
 * rn_worker_defer_unlink() - take @f off the deferred list
 * @w:		worker
 * @f:		flow on the list, or on the list rn_worker_flush() is working
 *		through (then it stays linked there, and is skipped as closed)
 */
static void rn_worker_defer_unlink(struct rn_worker *w, struct rn_flow *f)
{
	struct rn_flow **pp = &w->deferred;

	while (*pp && *pp != f)
		pp = &(*pp)->dnext;
	if (!*pp)
		return;
	*pp = f->dnext;
	f->dnext = NULL;
	f->flags &= ~RN_FLOW_F_DEFER;
}

/**
 * rn_worker_room_unlink() - take @f off the room wait list
 * @w:		worker
 * @f:		flow on the list, or on the list rn_worker_room() is working
 *		through (then it stays linked there, and is skipped as closed)
 */
static void rn_worker_room_unlink(struct rn_worker *w, struct rn_flow *f)
{
	struct rn_flow **pp = &w->room_head;

	while (*pp && *pp != f)
		pp = &(*pp)->wnext;
	if (!*pp)
		return;
	*pp = f->wnext;
	if (w->room_tail == &f->wnext)
		w->room_tail = pp;
	f->wnext = NULL;
	f->flags &= ~RN_FLOW_F_ROOM_WAIT;
}

/**
 * rn_worker_flow_close() - end a flow: table, timer, epoll, fd, then memory
 * @w:		worker
 * @f:		flow in the table (closing a closed flow does nothing)
 *
 * The fd is closed at once; ops->release() runs now; the struct is freed
 * with free() at the end of the current loop pass, and until then the flow
 * is marked closed so that no hook runs for it again.
 */
void rn_worker_flow_close(struct rn_worker *w, struct rn_flow *f)
{
	const struct rn_flow_ops *ops = rn_worker_ops[f->type];

	if (f->flags & RN_FLOW_F_CLOSED)
		return;
	if (f->flags & RN_FLOW_F_ROOM_WAIT)
		rn_worker_room_unlink(w, f);
	if (f->flags & RN_FLOW_F_DEFER)
		rn_worker_defer_unlink(w, f);
	rn_capture_flow(w, f, RN_CAP_EV_CLOSE);
	rn_flowtab_remove(&w->flows, f);
	rn_ctr_add(w->ctr, rn_worker_open_ctr[f->type], (uint64_t)-1);
	if (f->fd >= 0) {
		/* close() removes it from epoll too */
		close(f->fd);
		f->fd = -1;
		f->events = 0;
	}
	if (ops && ops->release)
		ops->release(w, f);
	f->flags |= RN_FLOW_F_CLOSED;
	f->cnext = w->closed;
	w->closed = f;
}

/**
 * rn_worker_reap() - free the flows closed during this loop pass
 * @w:		worker
 */
static void rn_worker_reap(struct rn_worker *w)
{
	struct rn_flow *f;

	while ((f = w->closed)) {
		w->closed = f->cnext;
		free(f);
	}
}

/**
 * rn_worker_timers() - run the timer hooks of every flow whose deadline passed
 * @w:		worker
 */
static void rn_worker_timers(struct rn_worker *w)
{
	const struct rn_flow_ops *ops;
	struct rn_flow *f;
	unsigned int n = 0;

	while (!w->err && (f = rn_flowtab_expired(&w->flows, w->now))) {
		ops = rn_worker_ops[f->type];
		if (ops && ops->timer)
			ops->timer(w, f);
		n++;
	}
	if (n)
		rn_ctr_add(w->ctr, RN_WCTR_timer_runs, n);
}

/**
 * rn_worker_room() - call back the flows waiting for room in to_ns, if any
 * @w:		worker
 *
 * to_ns is published first, so the namespace side can drain what is there.
 * If a largest frame still does not fit, need_space stays set in to_ns and
 * the pump's kick on ev_worker brings us back here.
 *
 * Return: 0, or negative errno (-EPROTO: the namespace corrupted to_ns)
 */
static int rn_worker_room(struct rn_worker *w)
{
	const struct rn_flow_ops *ops;
	struct rn_flow *f, *list;
	int rc;

	if (!w->room_head)
		return 0;
	if (w->netem.down.on) {
		/* Flows reserve in the emulation queue, not in the ring */
		if (!rn_netem_room(w))
			return 0;
	} else {
		if (rn_ring_publish(&w->tx))
			rn_worker_kick(w);
		rc = rn_ring_producer_sleep(&w->tx, RN_FRAME_MAX);
		if (rc < 0)
			return rn_worker_fatal(w, rc);
		if (rc)
			return 0;
	}

	/* Take the whole list: a flow that runs out of room again re-queues */
	list = w->room_head;
	w->room_head = NULL;
	w->room_tail = &w->room_head;
	while ((f = list) && !w->err) {
		list = f->wnext;
		f->wnext = NULL;
		f->flags &= ~RN_FLOW_F_ROOM_WAIT;
		/* A hook may close flows further down this list: skip those */
		if (f->flags & RN_FLOW_F_CLOSED)
			continue;
		ops = rn_worker_ops[f->type];
		if (ops && ops->room)
			ops->room(w, f);
	}
	/* Not reached only after a fatal error: keep the rest queued anyway */
	while ((f = list)) {
		list = f->wnext;
		f->flags &= ~RN_FLOW_F_ROOM_WAIT;
		rn_worker_wait_room(w, f);
	}
	return w->err;
}

/**
 * rn_worker_sync() - flush deferred flows, publish to_ns, kick if needed
 * @w:		worker
 */
static void rn_worker_sync(struct rn_worker *w)
{
	rn_worker_flush(w);
	rn_fault_tx_held(w);
	if (rn_ring_publish(&w->tx))
		rn_worker_kick(w);
}

/**
 * rn_worker_events() - wait for and dispatch epoll events
 * @w:		worker
 * @wait:	epoll_wait() timeout, ms (0: do not block, -1: forever)
 * @ctl:	set to 1 when a control fd is readable or hung up, or a signal
 *		interrupted the wait (the caller's signal handlers must run)
 *
 * Return: number of events, or negative errno from epoll_wait() (EINTR is 0)
 */
static int rn_worker_events(struct rn_worker *w, int wait, int *ctl)
{
	struct epoll_event ev[RN_WORKER_EVENTS];
	const struct rn_flow_ops *ops;
	struct rn_flow *f;
	int n, i;
	uint64_t v;

	n = epoll_wait(w->epfd, ev, RN_WORKER_EVENTS, wait);
	if (n < 0 && errno == EINTR) {
		*ctl = 1;
		return 0;
	}
	if (n < 0)
		return -errno;
	w->now = rn_worker_now_ms();
	for (i = 0; i < n && !w->err; i++) {
		void *tag = ev[i].data.ptr;

		if (tag == &rn_worker_tag_ctl) {
			*ctl = 1;
		} else if (tag == &w->ev_worker) {
			if (read(w->ev_worker, &v, sizeof(v)) < 0 && errno != EAGAIN)
				return -errno;
		} else if (tag == &w->netem) {
			rn_netem_timer_event(w);
		} else if (w->vd && tag == (void *)w->vd) {
			int rc = rn_verdict_input(w);	/* on_connect verdicts */

			if (rc < 0)
				return rn_worker_fatal(w, rc);
		} else {
			f = tag;
			if (f->flags & RN_FLOW_F_CLOSED)
				continue;
			ops = rn_worker_ops[f->type];
			rn_ctr_add(w->ctr, RN_WCTR_host_events, 1);
			if (ops && ops->event) {
				ops->event(w, f, ev[i].events);
			} else {
				rn_flow_end(f, RN_FLOW_END_ERROR);
				rn_worker_flow_close(w, f);
			}
		}
	}
	return n;
}

/**
 * rn_worker_nap() - at an idle point, nap instead of blocking during a stream
 * @w:		worker, to_worker drained, nothing deferred
 * @ctl:	set to 1 when a control fd is readable
 *
 * Feeds the moderation state with the UDP datagrams moved since the last
 * call. Host sockets are polled without blocking first when a nap may be due,
 * so that the worker naps only when it really has nothing to do. The ring's
 * NEED_WAKEUP stays clear during a nap: the pump does not kick.
 *
 * Return: 1 if the worker found events or napped (the pass ends without
 *	   blocking), 0 if it should block now, negative errno from epoll_wait()
 */
static int rn_worker_nap(struct rn_worker *w, int *ctl)
{
	uint64_t up = w->ctr[RN_WCTR_udp_in], down = w->ctr[RN_WCTR_udp_out];
	int rc;

	rn_mod_up(&w->mod, up - w->mod_up);
	rn_mod_down(&w->mod, down - w->mod_down);
	w->mod_up = up;
	w->mod_down = down;
	if (!rn_mod_may_nap(&w->mod))
		return 0;
	rc = rn_worker_events(w, 0, ctl);
	if (rc < 0)
		return rc;
	if (rc) {
		rn_worker_sync(w);
		rn_worker_reap(w);
		return 1;
	}
	if (!rn_mod_idle(&w->mod))
		return 0;
	rn_ctr_add(w->ctr, RN_WCTR_naps, 1);
	return 1;
}

/**
 * rn_worker_pass() - one pass of the loop: frames, timers, room, events
 * @w:		worker
 * @block:	may block in epoll_wait() when the rings are idle
 * @deadline:	if blocking, wake up by this time at the latest (0: no limit)
 * @frames:	set to the number of frames taken from to_worker
 * @ctl:	set to 1 when a control fd is readable
 *
 * Return: 0, or negative errno when the worker must stop
 */
static int rn_worker_pass(struct rn_worker *w, int block, int64_t deadline, int *frames,
			  int *ctl)
{
	int n, idle, spin = 0, wait = 0, rc;
	int64_t next, now_ns = rn_mono_ns();

	w->now = now_ns / 1000000;	/* rn_worker_now_ms(), and busy polling's time */
	n = rn_worker_batch(w);
	if (n < 0)
		return n;
	*frames = n;
	if (w->netem.active && (rc = rn_netem_run(w)) < 0)
		return rc;
	rn_worker_timers(w);
	rc = rn_verdict_expire(w);
	if (!rc)
		rc = rn_worker_room(w);
	if (rc < 0)
		return rc;
	rn_worker_sync(w);
	rn_verdict_send(w);	/* the on_connect hook's new asks, if any (verdict.c) */

	idle = block && n < (int)RN_WORKER_BATCH && !w->deferred;
	if (idle && (rc = rn_worker_nap(w, ctl)))
		return rc < 0 ? rc : w->err;
	/* Request/response traffic: look again for a while (busypoll.h) */
	if (n && rn_bpoll_active(&w->bp) && rn_bpoll_work(&w->bp, now_ns))
		rn_ctr_add(w->ctr, RN_WCTR_poll_hits, 1);
	if (idle && w->bp.max_ns && rn_bpoll_idle(&w->bp, now_ns,
						   w->ctr[RN_WCTR_bytes_in] + w->ctr[RN_WCTR_bytes_out])) {
		spin = 1;
		idle = 0;
	}
	idle = idle && rn_ring_consumer_sleep(&w->rx);
	if (idle) {
		next = rn_verdict_next(w, rn_flowtab_next_deadline(&w->flows));
		if (deadline && (!next || deadline < next))
			next = deadline;
		if (!next)
			wait = -1;
		else if (next > w->now)
			wait = next - w->now > INT32_MAX ? INT32_MAX : (int)(next - w->now);
		if (w->netem.active && rn_netem_arm(w))
			wait = 0;
	}
	rc = rn_worker_events(w, wait, ctl);
	if (idle)
		rn_ring_consumer_awake(&w->rx);
	if (rc < 0)
		return rc;
	if (idle && wait)
		rn_ctr_add(w->ctr, RN_WCTR_wakeups, 1);
	if (rc > 0 && rn_bpoll_active(&w->bp) && rn_bpoll_work(&w->bp, rn_mono_ns()))
		rn_ctr_add(w->ctr, RN_WCTR_poll_hits, 1);
	rn_worker_sync(w);
	rn_worker_reap(w);
	if (spin && !rc && !w->err) {
		rn_ctr_add(w->ctr, RN_WCTR_polls, 1);
		sched_yield();
	}
	return w->err;
}

/**
 * rn_worker_poll() - process everything now pending, without blocking
 * @w:		worker
 *
 * Frames in to_worker, expired timers, flows waiting for room and ready host
 * sockets, until a pass finds no frames.
 *
 * Return: number of frames processed, or negative errno (-EPROTO: a ring is
 *	   corrupted, the worker is finished)
 */
int rn_worker_poll(struct rn_worker *w)
{
	int n, total = 0, ctl = 0, rc;

	if (w->err)
		return w->err;
	do {
		rc = rn_worker_pass(w, 0, 0, &n, &ctl);
		if (rc < 0)
			return rc;
		total += n;
	} while (n == (int)RN_WORKER_BATCH);
	return total;
}

/**
 * rn_worker_run() - run the event loop until a control fd is readable or timeout
 * @w:		worker
 * @timeout_ms:	give up after this long, < 0 for never
 *
 * Return: 1 when a watched fd is readable or hung up, or a signal interrupted
 *	   the wait (so that the caller's signal handlers run: Python's run only
 *	   once the call returns), 0 on timeout, negative errno on a fatal error
 *	   (-EPROTO: a ring is corrupted)
 */
int rn_worker_run(struct rn_worker *w, int timeout_ms)
{
	int64_t deadline = 0;
	int n, ctl = 0, rc;

	if (w->err)
		return w->err;
	if (timeout_ms >= 0)
		deadline = rn_worker_now_ms() + timeout_ms;
	for (;;) {
		rc = rn_worker_pass(w, 1, deadline, &n, &ctl);
		if (rc < 0)
			return rc;
		if (ctl)
			return 1;
		if (deadline && w->now >= deadline)
			return 0;
	}
}

/**
 * rn_worker_watch_fd() - make rn_worker_run() return 1 when @fd is readable
 * @w:		worker
 * @fd:		control fd; the caller keeps owning it
 *
 * Return: 0, or negative errno from epoll_ctl() (-EEXIST if already watched)
 */
int rn_worker_watch_fd(struct rn_worker *w, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN };

	if (fd < 0 || fd == w->ev_worker)
		return -EINVAL;
	ev.data.ptr = &rn_worker_tag_ctl;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev))
		return -errno;
	return 0;
}

/**
 * rn_worker_params_ok() - check parameters that do not depend on the mapping
 * @p:		parameters
 *
 * Return: true if they are acceptable
 */
static int rn_worker_params_ok(const struct rn_worker_params *p)
{
	return p->nworkers >= 1 && p->index < p->nworkers &&
	       p->mtu >= 1280 && p->mtu <= 65520;
}

/**
 * rn_worker_nofile() - raise the soft limit on open files to the hard limit
 *
 * Each flow holds at most one host socket; the limit, not the flow count,
 * would otherwise be the first thing a busy namespace runs into. Failure is
 * harmless (socket() then fails with EMFILE and the flow is refused).
 */
static void rn_worker_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur >= rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
}

/**
 * rn_worker_new() - create a worker on a shared mapping
 * @out:	set to the new worker on success
 * @p:		parameters, copied
 * @shm:	the worker's mapping (shm.h layout), page aligned
 * @shm_len:	its length, must be rn_shm_size(p->ring_size)
 * @counters:	RN_CTR_SLOTS counters owned by this worker
 * @ev_worker_fd: eventfd the worker blocks on (caller keeps owning it)
 * @ev_ns_fd:	eventfd that wakes the namespace side (caller keeps owning it)
 *
 * Attaches to_worker as consumer and to_ns as producer, adopting their
 * control blocks (validated by rn_ring_attach()). Rings must be large enough
 * for two RN_FRAME_MAX records each, that is at least 512 KiB. The flow table
 * is sized for p->max_flows (0 counts as 1), the soft RLIMIT_NOFILE is
 * raised to the hard limit, and the calling thread asks for a short scheduler
 * slice (slice.c).
 *
 * Return: 0, -EINVAL for bad parameters, -EPROTO for a bad shared header or
 *	   ring, -ENOMEM, or another negative errno from epoll
 */
int rn_worker_new(struct rn_worker **out, const struct rn_worker_params *p, void *shm,
		  size_t shm_len, uint64_t *counters, int ev_worker_fd, int ev_ns_fd)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct rn_shm_hdr hdr;
	struct rn_worker *w;
	int rc;

	if (!out || !p || !shm || !counters || ev_worker_fd < 0 || ev_ns_fd < 0)
		return -EINVAL;
	*out = NULL;
	if (!rn_worker_params_ok(p) || p->ring_size < RN_RING_MIN_SIZE ||
	    p->ring_size > RN_RING_MAX_SIZE || shm_len != rn_shm_size(p->ring_size))
		return -EINVAL;

	memcpy(&hdr, shm, sizeof(hdr));
	if (hdr.magic != RN_SHM_MAGIC || hdr.version != RN_SHM_VERSION)
		return -EPROTO;

	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->p = *p;
	rn_mod_init(&w->mod, p->coalesce_us);
	rn_bpoll_init(&w->bp, p->busy_poll_us);
	w->ctr = counters;
	w->ev_worker = ev_worker_fd;
	w->ev_ns = ev_ns_fd;
	w->epfd = -1;
	w->netem.tfd = -1;
	w->room_tail = &w->room_head;
	w->now = rn_worker_now_ms();

	rc = rn_ring_attach(&w->rx, rn_shm_to_worker(shm, p->ring_size), p->ring_size,
			    RN_FRAME_MAX, 0);
	if (!rc)
		rc = rn_ring_attach(&w->tx, rn_shm_to_ns(shm, p->ring_size), p->ring_size,
				    RN_FRAME_MAX, 0);
	if (!rc)
		rc = rn_flowtab_init(&w->flows, p->max_flows ? p->max_flows : 1, p->hash_key);
	if (!rc)
		rc = rn_fault_init(&w->fin, &p->faults, 2ull * p->index + 1);
	if (!rc)
		rc = rn_fault_init(&w->fout, &p->faults, 2ull * p->index + 2);
	if (rc)
		goto fail;

	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epfd < 0) {
		rc = -errno;
		goto fail;
	}
	ev.data.ptr = &w->ev_worker;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, ev_worker_fd, &ev)) {
		rc = -errno;
		goto fail;
	}
	rc = rn_netem_init(w);
	if (rc)
		goto fail;
	rn_worker_nofile();
	rn_slice_set(RN_SLICE_US);	/* best effort: wake-ups preempt sooner */

	*out = w;
	return 0;
fail:
	if (w->epfd >= 0)
		close(w->epfd);
	rn_flowtab_fini(&w->flows);
	rn_fault_fini(&w->fin);
	rn_fault_fini(&w->fout);
	rn_netem_fini(w);
	free(w);
	return rc;
}

/**
 * rn_worker_free() - destroy a worker; the mapping and eventfds stay the caller's
 * @w:		worker, or NULL
 */
void rn_worker_free(struct rn_worker *w)
{
	struct rn_flow *f;

	if (!w)
		return;
	while ((f = rn_flowtab_first(&w->flows))) {
		rn_flow_end(f, RN_FLOW_END_SHUTDOWN);
		rn_worker_flow_close(w, f);
	}
	rn_worker_reap(w);
	rn_capture_free(w);
	rn_fwd_free(w);
	rn_splice_free(w);
	rn_udp_free(w);
	rn_tcp_free(w);
	rn_frag_free(w);
	rn_rules_free(w);
	rn_verdict_free(w);
	rn_flowtab_fini(&w->flows);
	rn_fault_fini(&w->fin);
	rn_fault_fini(&w->fout);
	rn_netem_fini(w);
	close(w->epfd);
	free(w);
}
