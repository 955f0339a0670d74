/* verdict.c - the on_connect hook's verdicts: asks, pending flows, cache (worker side)
 *
 * Theory of operation
 * -------------------
 * With NetworkConfig(on_connect=fn), a Python function in the orchestrator
 * decides about every new flow from the namespace: allow, deny, or redirect
 * to another address and port. It is asked once per flow, never per packet,
 * and the worker's loop never waits for it.
 *
 * Where: tcp_conn.c (the namespace's SYN) and dgram.c (a UDP flow's or an
 * echo flow's first datagram) call rn_verdict_check() once per new flow,
 * after the built-in destination policy (policy.c) admitted it; flows to the
 * DNS address's port 53 (ringnet's forwarder) are not asked. The egress
 * rules (rules.c, inside rn_policy_dest()) are evaluated before the hook.
 *
 * Asking: a flow without a decision is held, with no flow in the table yet:
 * its first frame (the SYN, the first datagram, the echo request) is copied
 * into a pending record (id, key, deadline) and counted hook_held. Frames of
 * the same key that arrive meanwhile (a retransmitted SYN, more datagrams,
 * more pings) are dropped and counted hook_absorbed: the namespace's own
 * retransmission covers them. After each intake batch worker.c calls
 * rn_verdict_send(), which writes the new asks (struct rn_verdict_ask, in
 * one message) on the worker's hook socket, a SOCK_SEQPACKET socket to the
 * orchestrator (ringnet/_hook.py) that Python handed over at set-up: no
 * Python runs in the worker on this path. An ask the socket does not take
 * (full) is tried again after the next batch. At most pending_max records
 * per worker exist; beyond that a new flow gets the fail mode at once
 * (hook_overflow).
 *
 * Answer: the hook socket is in the worker's epoll; rn_verdict_input()
 * reads the verdicts (struct rn_verdict_reply) as they come. The held frame
 * of each is then fed through the worker's input again
 * (rn_worker_reinput()), fully re-validated, and the call site that held it
 * finds the decision (the replay slot) instead of asking: the flow is
 * created and connected as if the verdict had been there at once, refused
 * (TCP: RST; UDP, echo: ICMP administratively prohibited, the refusals of
 * the policy), or connected to the redirect target. A redirect target is
 * named as the namespace would name it (the gateway address for host
 * loopback) and goes through rn_policy_dest() like any destination, so a
 * redirect cannot reach what the policy refuses (the namespace still sees
 * its original destination). A pending record whose verdict does not come
 * by its deadline (timeout_ms: the orchestrator's hook timeout plus a
 * margin; the orchestrator answers on its own timeout, so this only covers
 * a lost answer) gets the fail mode (hook_timeouts).
 *
 * Cache: verdicts are kept per (protocol, family, destination, port) for
 * cache_ms (0: no cache) in a direct-mapped table of RN_VERDICT_CACHE
 * entries indexed by SipHash under the worker's key (a collision evicts);
 * a hit decides at once (hook_cached). Fail-mode decisions are not cached.
 *
 * Accounting: the held frame's outcome is hook_held, an absorbed one's
 * hook_absorbed, a refused one's hook_denied; the replayed frame's own
 * outcome is not counted again (its effects are: tcp_connects, udp_in...).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "dns.h"
#include "policy.h"
#include "verdict.h"

#define RN_VERDICT_CACHE	1024u	/* cache entries per worker, a power of two */
#define RN_VERDICT_BATCH	64u	/* asks per message, verdicts per read */

/**
 * struct rn_verdict_target - a decision: kind and, for a redirect, where to
 * @kind:	enum rn_verdict_kind
 * @family:	4 or 6 (redirect)
 * @addr:	redirect address as the namespace names it
 * @port:	redirect port
 */
struct rn_verdict_target {
	uint8_t kind;
	uint8_t family;
	uint8_t addr[16];
	uint16_t port;
};

/**
 * struct rn_verdict_pending - a held flow waiting for its verdict
 * @id:		ask id (0: free record)
 * @sent:	written on the hook socket (rn_verdict_send())
 * @key:	flow key
 * @deadline:	when the fail mode applies, in w->now milliseconds
 * @frame:	copy of the flow's first frame (virtio-net header and IP packet)
 * @len:	its length
 */
struct rn_verdict_pending {
	uint32_t id;
	uint8_t sent;
	struct rn_flow_key key;
	int64_t deadline;
	uint8_t *frame;
	uint32_t len;
};

/**
 * struct rn_verdict_entry - a cached verdict
 * @expires:	w->now milliseconds after which it is stale (0: empty)
 * @family:	key: address family
 * @proto:	key: IP protocol
 * @dport:	key: destination port
 * @daddr:	key: destination address
 * @to:		the decision
 */
struct rn_verdict_entry {
	int64_t expires;
	uint8_t family;
	uint8_t proto;
	uint16_t dport;
	uint8_t daddr[16];
	struct rn_verdict_target to;
};

/**
 * struct rn_verdict - a worker's verdict state (w->vd; NULL without a hook)
 * @fd:		the hook socket (the caller keeps owning it); its epoll tag is
 *		this struct
 * @cache_ms:	how long a verdict is kept (0: not at all)
 * @timeout_ms:	how long a pending record waits for its verdict
 * @max:	pending records at most
 * @fail_open:	the fail mode allows (else denies)
 * @next_id:	last ask id handed out
 * @n:		records in use
 * @unsent:	records not yet written on the hook socket
 * @replay:	the key being replayed with its decision, or NULL
 * @replay_to:	that decision
 * @pend:	@max records
 * @cache:	cached verdicts
 */
struct rn_verdict {
	int fd;
	uint32_t cache_ms;
	uint32_t timeout_ms;
	uint32_t max;
	int fail_open;
	uint32_t next_id;
	uint32_t n;
	uint32_t unsent;
	const struct rn_flow_key *replay;
	struct rn_verdict_target replay_to;
	struct rn_verdict_pending *pend;
	struct rn_verdict_entry cache[RN_VERDICT_CACHE];
};

/**
 * rn_verdict_setup() - turn the hook on for a worker
 * @w:		worker (no verdict state yet)
 * @fd:		the hook socket, non-blocking SOCK_SEQPACKET to the orchestrator
 *		(the caller keeps owning it)
 * @cache_ms:	how long verdicts are cached per destination (0: no cache)
 * @pending_max: flows held waiting for a verdict at most (1..4096)
 * @timeout_ms:	how long a held flow waits before the fail mode applies (> 0)
 * @fail_open:	the fail mode allows (else it denies)
 *
 * Return: 0, -EINVAL for bad arguments or a second call, -ENOMEM, or
 *	   negative errno from epoll_ctl()
 */
int rn_verdict_setup(struct rn_worker *w, int fd, uint32_t cache_ms, uint32_t pending_max,
		     uint32_t timeout_ms, int fail_open)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct rn_verdict *vd;

	if (!w || w->vd || fd < 0 || !pending_max || pending_max > 4096 || !timeout_ms)
		return -EINVAL;
	vd = calloc(1, sizeof(*vd));
	if (!vd)
		return -ENOMEM;
	vd->pend = calloc(pending_max, sizeof(*vd->pend));
	if (!vd->pend) {
		free(vd);
		return -ENOMEM;
	}
	vd->fd = fd;
	vd->cache_ms = cache_ms;
	vd->timeout_ms = timeout_ms;
	vd->max = pending_max;
	vd->fail_open = !!fail_open;
	ev.data.ptr = vd;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev)) {
		int rc = -errno;

		free(vd->pend);
		free(vd);
		return rc;
	}
	w->vd = vd;
	return 0;
}

/**
 * rn_verdict_free() - release a worker's verdict state and held frames
 * @w:		worker
 */
void rn_verdict_free(struct rn_worker *w)
{
	struct rn_verdict *vd = w->vd;
	uint32_t i;

	if (!vd)
		return;
	for (i = 0; i < vd->max; i++)
		free(vd->pend[i].frame);
	free(vd->pend);
	free(vd);
	w->vd = NULL;
}

/**
 * rn_verdict_slot() - the cache entry a destination maps to
 * @w:		worker
 * @k:		flow key (protocol, family, destination address and port)
 *
 * Return: the entry (maybe another destination's, or empty)
 */
static struct rn_verdict_entry *rn_verdict_slot(struct rn_worker *w, const struct rn_flow_key *k)
{
	uint8_t b[20];

	b[0] = k->family;
	b[1] = k->proto;
	b[2] = (uint8_t)(k->dport >> 8);
	b[3] = (uint8_t)k->dport;
	memcpy(b + 4, k->daddr, 16);
	return &w->vd->cache[rn_siphash(w->p.hash_key, b, sizeof(b)) & (RN_VERDICT_CACHE - 1)];
}

/**
 * rn_verdict_cached() - a fresh cached verdict for @k's destination
 * @w:		worker
 * @k:		flow key
 *
 * Return: the decision, or NULL
 */
static const struct rn_verdict_target *rn_verdict_cached(struct rn_worker *w,
							 const struct rn_flow_key *k)
{
	const struct rn_verdict_entry *e;

	if (!w->vd->cache_ms)
		return NULL;
	e = rn_verdict_slot(w, k);
	if (!e->expires || e->expires <= w->now || e->family != k->family ||
	    e->proto != k->proto || e->dport != k->dport || memcmp(e->daddr, k->daddr, 16))
		return NULL;
	return &e->to;
}

/**
 * rn_verdict_remember() - cache a verdict for @k's destination
 * @w:		worker
 * @k:		flow key
 * @to:		the decision
 */
static void rn_verdict_remember(struct rn_worker *w, const struct rn_flow_key *k,
				const struct rn_verdict_target *to)
{
	struct rn_verdict_entry *e;

	if (!w->vd->cache_ms)
		return;
	e = rn_verdict_slot(w, k);
	e->expires = w->now + w->vd->cache_ms;
	e->family = k->family;
	e->proto = k->proto;
	e->dport = k->dport;
	memcpy(e->daddr, k->daddr, 16);
	e->to = *to;
}

/**
 * rn_verdict_key_eq() - whether two flow keys name the same flow
 * @a:		key
 * @b:		key
 *
 * Return: true if equal (keys are zeroed before being filled)
 */
static int rn_verdict_key_eq(const struct rn_flow_key *a, const struct rn_flow_key *b)
{
	return a->family == b->family && a->proto == b->proto && a->sport == b->sport &&
	       a->dport == b->dport && !memcmp(a->saddr, b->saddr, 16) &&
	       !memcmp(a->daddr, b->daddr, 16);
}

/**
 * rn_verdict_find() - the pending record of a flow key
 * @vd:		verdict state
 * @k:		flow key
 *
 * Return: the record, or NULL
 */
static struct rn_verdict_pending *rn_verdict_find(struct rn_verdict *vd,
						  const struct rn_flow_key *k)
{
	uint32_t i;

	for (i = 0; i < vd->max; i++)
		if (vd->pend[i].id && rn_verdict_key_eq(&vd->pend[i].key, k))
			return &vd->pend[i];
	return NULL;
}

/**
 * rn_verdict_hold() - hold a new flow's first frame and queue an ask for it
 * @w:		worker
 * @f:		the frame (shm and len: the whole frame as received)
 * @k:		its flow key
 *
 * Return: 0, or -ENOSPC (all records in use) / -ENOMEM
 */
static int rn_verdict_hold(struct rn_worker *w, const struct rn_frame *f,
			   const struct rn_flow_key *k)
{
	struct rn_verdict *vd = w->vd;
	struct rn_verdict_pending *p = NULL;
	uint32_t i;

	if (vd->n >= vd->max)
		return -ENOSPC;
	for (i = 0; i < vd->max && !p; i++)
		if (!vd->pend[i].id)
			p = &vd->pend[i];
	if (!p)
		return -ENOSPC;
	p->frame = malloc(f->len);
	if (!p->frame)
		return -ENOMEM;
	/* Copied once; the replay validates this private copy from scratch */
	memcpy(p->frame, f->shm, f->len);
	p->len = f->len;
	p->key = *k;
	p->sent = 0;
	p->deadline = w->now + vd->timeout_ms;
	if (!++vd->next_id)
		vd->next_id = 1;
	p->id = vd->next_id;
	vd->n++;
	vd->unsent++;
	rn_ctr_add(w->ctr, RN_WCTR_hook_asks, 1);
	return 0;
}

/**
 * rn_verdict_decided() - turn a decision into the call site's instruction
 * @w:		worker
 * @k:		flow key
 * @to:		the decision
 * @d:		the policy's host destination, replaced for a redirect
 * @ctr:	set to the outcome counter when refusing
 *
 * Return: RN_VERDICT_GO or RN_VERDICT_REFUSE
 */
static int rn_verdict_decided(struct rn_worker *w, const struct rn_flow_key *k,
			      const struct rn_verdict_target *to, struct rn_policy_dest *d,
			      int *ctr)
{
	struct rn_policy_dest rd;
	struct rn_flow_key rk;
	int reason;

	if (to->kind == RN_VERDICT_ALLOW)
		return RN_VERDICT_GO;
	*ctr = RN_WCTR_hook_denied;
	if (to->kind != RN_VERDICT_REDIRECT)
		return RN_VERDICT_REFUSE;
	if (to->family != k->family) {
		/* A redirect keeps the flow's family (UDP shares one socket per source) */
		rn_ctr_add(w->ctr, RN_WCTR_hook_redirect_refused, 1);
		return RN_VERDICT_REFUSE;
	}
	rk = *k;
	memset(rk.daddr, 0, sizeof(rk.daddr));
	memcpy(rk.daddr, to->addr, to->family == 6 ? 16 : 4);
	rk.dport = to->port;
	/* The policy has the last word on where a redirect goes */
	reason = rn_policy_dest(&w->p, rn_dns_current(w), &rk, &rd);
	if (reason) {
		rn_ctr_add(w->ctr, RN_WCTR_hook_redirect_refused, 1);
		return RN_VERDICT_REFUSE;
	}
	*d = rd;
	return RN_VERDICT_GO;
}

/**
 * rn_verdict_check() - what becomes of a new flow the policy admitted
 * @w:		worker
 * @f:		its first frame (held if the hook must be asked)
 * @k:		its flow key
 * @d:		the policy's host destination; a redirect replaces it
 * @ctr:	set to the frame's outcome counter unless RN_VERDICT_GO
 *
 * Return: RN_VERDICT_GO (no hook, a DNS flow, allowed, redirected: go on
 *	   with @d), RN_VERDICT_REFUSE (refuse as the policy refuses; *ctr is
 *	   hook_denied) or RN_VERDICT_WAIT (held or absorbed: *ctr is
 *	   hook_held or hook_absorbed)
 */
int rn_verdict_check(struct rn_worker *w, const struct rn_frame *f, const struct rn_flow_key *k,
		     struct rn_policy_dest *d, int *ctr)
{
	struct rn_verdict *vd = w->vd;
	const struct rn_verdict_target *to;
	struct rn_verdict_target fail;
	int rc;

	if (!vd || d->dns)
		return RN_VERDICT_GO;
	if (vd->replay && rn_verdict_key_eq(vd->replay, k))
		return rn_verdict_decided(w, k, &vd->replay_to, d, ctr);
	to = rn_verdict_cached(w, k);
	if (to) {
		rn_ctr_add(w->ctr, RN_WCTR_hook_cached, 1);
		return rn_verdict_decided(w, k, to, d, ctr);
	}
	if (rn_verdict_find(vd, k)) {
		*ctr = RN_WCTR_hook_absorbed;
		return RN_VERDICT_WAIT;
	}
	rc = rn_verdict_hold(w, f, k);
	if (!rc) {
		*ctr = RN_WCTR_hook_held;
		return RN_VERDICT_WAIT;
	}
	rn_ctr_add(w->ctr, RN_WCTR_hook_overflow, 1);
	memset(&fail, 0, sizeof(fail));
	fail.kind = vd->fail_open ? RN_VERDICT_ALLOW : RN_VERDICT_DENY;
	return rn_verdict_decided(w, k, &fail, d, ctr);
}

/**
 * rn_verdict_send() - write the asks not yet sent on the hook socket
 * @w:		worker (without a hook: nothing to do)
 *
 * One message of up to RN_VERDICT_BATCH asks at a time; what the socket
 * refuses (full, or gone) stays unsent and is tried after the next batch
 * (its deadline still runs).
 */
void rn_verdict_send(struct rn_worker *w)
{
	struct rn_verdict_ask out[RN_VERDICT_BATCH];
	struct rn_verdict *vd = w->vd;
	struct rn_verdict_pending *taken[RN_VERDICT_BATCH];
	uint32_t i, n;

	if (!vd)
		return;
	while (vd->unsent) {
		for (i = 0, n = 0; i < vd->max && n < RN_VERDICT_BATCH; i++) {
			struct rn_verdict_pending *p = &vd->pend[i];

			if (!p->id || p->sent)
				continue;
			memset(&out[n], 0, sizeof(out[n]));
			out[n].id = p->id;
			out[n].family = p->key.family;
			out[n].proto = p->key.proto;
			out[n].sport = p->key.sport;
			out[n].dport = p->key.dport;
			memcpy(out[n].saddr, p->key.saddr, 16);
			memcpy(out[n].daddr, p->key.daddr, 16);
			taken[n++] = p;
		}
		if (!n || send(vd->fd, out, n * sizeof(out[0]), MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
			return;
		for (i = 0; i < n; i++)
			taken[i]->sent = 1;
		vd->unsent -= n;
	}
}

/**
 * rn_verdict_resolve() - end a pending record: cache, then replay its frame
 * @w:		worker
 * @p:		the record
 * @to:		the decision
 * @cache:	remember it for the destination
 *
 * Return: 0, or negative errno when the worker must stop
 */
static int rn_verdict_resolve(struct rn_worker *w, struct rn_verdict_pending *p,
			      const struct rn_verdict_target *to, int cache)
{
	struct rn_verdict *vd = w->vd;
	struct rn_flow_key key = p->key;
	uint8_t *frame = p->frame;
	uint32_t len = p->len;
	int rc;

	if (!p->sent)
		vd->unsent--;
	p->id = 0;
	p->frame = NULL;
	vd->n--;
	if (cache)
		rn_verdict_remember(w, &key, to);
	vd->replay = &key;
	vd->replay_to = *to;
	rc = rn_worker_reinput(w, frame, len);
	vd->replay = NULL;
	free(frame);
	if (to->kind == RN_VERDICT_DENY)
		rn_ctr_add(w->ctr, RN_WCTR_hook_verdicts_deny, 1);
	else if (to->kind == RN_VERDICT_REDIRECT)
		rn_ctr_add(w->ctr, RN_WCTR_hook_verdicts_redirect, 1);
	return rc < 0 ? rn_worker_fatal(w, rc) : 0;
}

/**
 * rn_verdict_apply() - the orchestrator's verdict for an ask
 * @w:		worker
 * @r:		the verdict (an unknown or expired id is ignored)
 *
 * The held frame goes through the worker's input again and meets the
 * decision where it was held.
 *
 * Return: 0, -EINVAL for a malformed verdict (the orchestrator is trusted:
 *	   a bug), another negative errno when the worker must stop
 */
static int rn_verdict_apply(struct rn_worker *w, const struct rn_verdict_reply *r)
{
	struct rn_verdict *vd = w->vd;
	struct rn_verdict_target to;
	uint32_t i;

	memset(&to, 0, sizeof(to));
	to.kind = r->kind;
	if (r->kind == RN_VERDICT_REDIRECT) {
		if (r->family != 4 && r->family != 6)
			return -EINVAL;
		to.family = r->family;
		memcpy(to.addr, r->addr, r->family == 6 ? 16 : 4);
		to.port = r->port;
	} else if (r->kind != RN_VERDICT_ALLOW && r->kind != RN_VERDICT_DENY) {
		return -EINVAL;
	}
	if (!r->id)
		return 0;
	for (i = 0; i < vd->max; i++)
		if (vd->pend[i].id == r->id)
			return rn_verdict_resolve(w, &vd->pend[i], &to, 1);
	return 0;
}

/**
 * rn_verdict_input() - read and apply the verdicts waiting on the hook socket
 * @w:		worker (the hook socket's epoll event)
 *
 * A malformed message is dropped and counted (hook_bad_verdicts); at end of
 * file (the orchestrator closed it) the socket is no longer watched.
 *
 * Return: 0, or negative errno when the worker must stop
 */
int rn_verdict_input(struct rn_worker *w)
{
	struct rn_verdict_reply in[RN_VERDICT_BATCH];
	struct rn_verdict *vd = w->vd;
	ssize_t len;
	uint32_t i;
	int rc;

	if (!vd)
		return 0;
	w->now = rn_worker_now_ms();
	for (;;) {
		len = recv(vd->fd, in, sizeof(in), MSG_DONTWAIT | MSG_TRUNC);
		if (len < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -errno;
		if (len == 0) {
			epoll_ctl(w->epfd, EPOLL_CTL_DEL, vd->fd, NULL);
			return 0;
		}
		if ((size_t)len > sizeof(in) || len % sizeof(in[0])) {
			rn_ctr_add(w->ctr, RN_WCTR_hook_bad_verdicts, 1);
			continue;
		}
		for (i = 0; i < (size_t)len / sizeof(in[0]); i++) {
			rc = rn_verdict_apply(w, &in[i]);
			if (rc == -EINVAL)
				rn_ctr_add(w->ctr, RN_WCTR_hook_bad_verdicts, 1);
			else if (rc < 0)
				return rc;
		}
	}
}

/**
 * rn_verdict_next() - the earlier of @next and the nearest pending deadline
 * @w:		worker
 * @next:	a deadline in w->now milliseconds (0: none)
 *
 * Return: the deadline the loop must wake up by (0: none)
 */
int64_t rn_verdict_next(const struct rn_worker *w, int64_t next)
{
	const struct rn_verdict *vd = w->vd;
	uint32_t i;

	if (!vd || !vd->n)
		return next;
	for (i = 0; i < vd->max; i++)
		if (vd->pend[i].id && (!next || vd->pend[i].deadline < next))
			next = vd->pend[i].deadline;
	return next;
}

/**
 * rn_verdict_expire() - apply the fail mode to held flows past their deadline
 * @w:		worker
 *
 * Return: 0, or negative errno when the worker must stop
 */
int rn_verdict_expire(struct rn_worker *w)
{
	struct rn_verdict *vd = w->vd;
	struct rn_verdict_target fail;
	uint32_t i;
	int rc;

	if (!vd || !vd->n)
		return 0;
	memset(&fail, 0, sizeof(fail));
	fail.kind = vd->fail_open ? RN_VERDICT_ALLOW : RN_VERDICT_DENY;
	for (i = 0; i < vd->max && !w->err; i++) {
		if (!vd->pend[i].id || vd->pend[i].deadline > w->now)
			continue;
		rn_ctr_add(w->ctr, RN_WCTR_hook_timeouts, 1);
		rc = rn_verdict_resolve(w, &vd->pend[i], &fail, 0);
		if (rc < 0)
			return rc;
	}
	return w->err;
}
