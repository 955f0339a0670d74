/* rules.c - the user's egress rules: compiled set, evaluation per new flow, hit counts
 *
 * Theory of operation
 * -------------------
 * The orchestrator (ringnet/_rules.py) parses the user's rules ("allow
 * tcp:10.0.0.0/8:443", "deny *.example.org", ...) into an array of struct
 * rn_rule_spec in order of precedence and hands it to every worker (at start,
 * and whenever the rules change); each worker compiles it here into a
 * struct rn_rules of its own (rn_rules_load(), between two loop passes, so a
 * decision sees the old set or the new one) and frees the old set.
 *
 * A new flow (TCP SYN, the first datagram of a UDP flow, an ICMP echo flow)
 * that passed the built-in protections (policy.c) is checked once by
 * rn_rules_check(); packets of existing flows never are. The first rule that
 * matches decides; a flow no rule matches is refused only with default_deny,
 * and never when it goes to the DNS forwarder (the DNS address, port 53),
 * which name rules depend on (an explicit rule still decides for it).
 * A rule matches when the protocol agrees (any, TCP, UDP, ICMP = ICMP or
 * ICMPv6 echo), the destination port lies in its range (a rule with ports
 * matches TCP and UDP only) and the destination, as the namespace names it
 * (so the gateway address, not the host loopback it maps to), lies in its
 * network, or, for a name rule, a name that ringnet's DNS forwarder resolved
 * to that address (names.c) is the rule's name, or lies below it ("*.NAME").
 *
 * The compiled set, so that the cost of a decision does not grow with the
 * number of rules:
 * - address rules: one binary trie per family over the prefixes; each node
 *   lists the rules whose prefix ends there, by precedence. A lookup walks
 *   the destination's bits (at most 33 or 129 nodes), and at each node takes
 *   the first listed rule that beats the best so far and matches protocol and
 *   port; rules that share one prefix but differ in ports are scanned in
 *   order (the only part that grows with the rules, and only with those of
 *   one prefix);
 * - name rules: an open-addressing hash table (SipHash) from a name, exact or
 *   wildcard, to its rules by precedence; a lookup tries each name the
 *   destination resolved from (at most RN_NAMES_PER_ADDR) exactly and each of
 *   its parent domains as a wildcard.
 * The rule that decides (lowest index) counts a hit in this worker's row of
 * the hit counters in the rules memfd, at the rule's slot (struct
 * rn_rule_spec.slot, stable while the rule exists); the orchestrator sums the
 * rows. Its slot is stored in the flow (struct rn_flow.rule, -1: the default
 * decided) for whoever reports on flows.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "policy.h"
#include "rules.h"
#include "worker.h"

#define RN_RULES_SHM_HDR	64u

/**
 * struct rn_rule - one compiled rule
 * @slot:	hit counter index
 * @action:	RN_RULE_ALLOW or RN_RULE_DENY
 * @proto:	0, 6, 17 or RN_RULE_ICMP
 * @port_lo:	first port (with @port_hi 0: any port)
 * @port_hi:	last port
 */
struct rn_rule {
	uint32_t slot;
	uint8_t action;
	uint8_t proto;
	uint16_t port_lo;
	uint16_t port_hi;
};

/**
 * struct rn_rule_node - a node of an address trie
 * @child:	next node for bit 0 and bit 1, 0 for none (node 0 is the root)
 * @first:	its rules start here in struct rn_rules.at
 * @n:		number of rules whose prefix ends here
 */
struct rn_rule_node {
	uint32_t child[2];
	uint32_t first;
	uint32_t n;
};

/**
 * struct rn_rule_name - an entry of the name hash table
 * @hash:	SipHash of the name (0: empty entry)
 * @off:	the name in struct rn_rules.pool
 * @len:	its length
 * @wild:	a "*.NAME" entry
 * @first:	its rules start here in struct rn_rules.at
 * @n:		number of rules
 */
struct rn_rule_name {
	uint64_t hash;
	uint32_t off;
	uint16_t len;
	uint8_t wild;
	uint32_t first;
	uint32_t n;
};

/**
 * struct rn_rules - a compiled rule set
 * @count:	rules
 * @default_deny: refuse flows no rule matches
 * @rule:	the rules by precedence
 * @trie:	root node index of each family's trie ([0]: IPv4, [1]: IPv6)
 * @node:	trie nodes of both families
 * @nnode:	nodes used
 * @nnames:	name rules
 * @nmask:	name table size minus one (power of two), or 0 without names
 * @names:	name hash table
 * @at:		rule indexes, grouped per node and per name entry
 * @pool:	names of the name entries
 * @key:	SipHash key for the name table (fixed per set)
 */
struct rn_rules {
	uint32_t count;
	uint32_t default_deny;
	struct rn_rule *rule;
	uint32_t trie[2];
	struct rn_rule_node *node;
	uint32_t nnode;
	uint32_t nnames;
	uint32_t nmask;
	struct rn_rule_name *names;
	uint32_t *at;
	char *pool;
	uint8_t key[16];
};

/**
 * struct rn_rules_ctx - a worker's rules: its compiled set and the shared memory
 * @set:	the compiled set, or NULL (no rules: everything allowed)
 * @names:	the name table in the rules memfd, or NULL before rn_rules_attach()
 * @hits:	this worker's row of hit counters in the rules memfd
 */
struct rn_rules_ctx {
	struct rn_rules *set;
	struct rn_name_slot *names;
	uint64_t *hits;
};

/**
 * rn_rules_shm_size() - size of the rules memfd
 * @nworkers:	workers of the network
 *
 * Return: bytes: header, name table, one row of hit counters per worker
 */
size_t rn_rules_shm_size(uint32_t nworkers)
{
	return RN_RULES_SHM_HDR + (size_t)RN_NAMES_SLOTS * sizeof(struct rn_name_slot) +
	       (size_t)nworkers * RN_RULES_MAX * sizeof(uint64_t);
}

/**
 * rn_rules_shm_init() - write the header of a new (zeroed) rules memfd
 * @shm:	its mapping, rn_rules_shm_size(@nworkers) bytes
 * @nworkers:	workers of the network
 */
void rn_rules_shm_init(void *shm, uint32_t nworkers)
{
	struct rn_rules_shm *h = shm;

	h->magic = RN_RULES_SHM_MAGIC;
	h->nworkers = nworkers;
	h->slots = RN_NAMES_SLOTS;
	h->rules_max = RN_RULES_MAX;
}

/**
 * rn_rules_name_hash() - SipHash of a name table key
 * @r:		rule set (its key)
 * @name:	name
 * @len:	its length
 * @wild:	a wildcard key
 *
 * Return: the hash, never 0 (0 marks an empty entry)
 */
static uint64_t rn_rules_name_hash(const struct rn_rules *r, const char *name, uint32_t len,
				   int wild)
{
	uint8_t buf[RN_NAME_MAX + 2];
	uint64_t h;

	buf[0] = (uint8_t)wild;
	memcpy(buf + 1, name, len);
	h = rn_siphash(r->key, buf, len + 1);
	return h ? h : 1;
}

/**
 * rn_rules_name_find() - the name table entry of a key
 * @r:		rule set
 * @name:	name
 * @len:	its length
 * @wild:	look for the wildcard entry
 *
 * Return: the entry, or its empty slot (hash 0) when there is none
 */
static struct rn_rule_name *rn_rules_name_find(const struct rn_rules *r, const char *name,
					       uint32_t len, int wild)
{
	uint64_t h = rn_rules_name_hash(r, name, len, wild);
	uint32_t i = (uint32_t)h & r->nmask;
	struct rn_rule_name *e;

	for (;; i = (i + 1) & r->nmask) {
		e = &r->names[i];
		if (!e->hash || (e->hash == h && e->len == len && e->wild == wild &&
				 !memcmp(r->pool + e->off, name, len)))
			return e;
	}
}

/**
 * rn_rules_check_spec() - whether a rule from the orchestrator is well formed
 * @s:		the rule
 *
 * Return: 0, or -EINVAL
 */
static int rn_rules_check_spec(const struct rn_rule_spec *s)
{
	static const uint8_t zero[16];
	unsigned int bits, full, rest;

	if (s->action != RN_RULE_ALLOW && s->action != RN_RULE_DENY)
		return -EINVAL;
	if (s->proto && s->proto != 6 && s->proto != 17 && s->proto != RN_RULE_ICMP)
		return -EINVAL;
	if (s->slot >= RN_RULES_MAX || s->port_lo > s->port_hi)
		return -EINVAL;
	if (s->family == 0)
		return s->name_len && s->name_len <= RN_NAME_MAX &&
		       !memchr(s->name, 0, s->name_len) ? 0 : -EINVAL;
	if (s->family != 4 && s->family != 6)
		return -EINVAL;
	bits = s->family == 4 ? 32 : 128;
	if (s->plen > bits)
		return -EINVAL;
	/* bits past the prefix must be zero */
	full = s->plen / 8;
	rest = s->plen % 8;
	if (rest && (s->addr[full] & (0xffu >> rest)))
		return -EINVAL;
	full += rest ? 1 : 0;
	return memcmp(s->addr + full, zero, bits / 8 - full) ? -EINVAL : 0;
}

/**
 * rn_rules_bit() - bit @i of an address, most significant first
 * @a:		address
 * @i:		bit index
 *
 * Return: 0 or 1
 */
static unsigned int rn_rules_bit(const uint8_t *a, unsigned int i)
{
	return (a[i / 8] >> (7 - i % 8)) & 1;
}

/**
 * rn_rules_destroy() - free a compiled rule set
 * @r:		the set, or NULL
 */
void rn_rules_destroy(struct rn_rules *r)
{
	if (!r)
		return;
	free(r->rule);
	free(r->node);
	free(r->names);
	free(r->at);
	free(r->pool);
	free(r);
}

/**
 * rn_rules_build() - compile a rule set from the orchestrator's array
 * @blob:	struct rn_rules_blob, then its rules
 * @len:	bytes of @blob
 * @out:	set to the compiled set (rn_rules_destroy() frees it)
 *
 * Return: 0, -EINVAL for a malformed set (a bad header, count or rule: the
 *	   index of the first bad rule is not reported, the orchestrator checked
 *	   them all), -ENOMEM
 */
int rn_rules_build(const void *blob, size_t len, struct rn_rules **out)
{
	const struct rn_rules_blob *h = blob;
	const struct rn_rule_spec *s;
	struct rn_rule_node *nd;
	struct rn_rule_name *e;
	struct rn_rules *r;
	uint32_t i, j, cur, nmax = 1, nat = 0, pool = 0, fam, *fill = NULL;
	int rc = -ENOMEM;

	*out = NULL;
	if (len < sizeof(*h) || h->magic != RN_RULES_MAGIC || h->version != RN_RULES_VERSION ||
	    h->count > RN_RULES_MAX || len != sizeof(*h) + (size_t)h->count * sizeof(*s))
		return -EINVAL;
	s = (const struct rn_rule_spec *)(h + 1);
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->count = h->count;
	r->default_deny = !!h->default_deny;
	memcpy(r->key, "ringnet-rules-v1", 16);
	for (i = 0; i < h->count; i++) {
		if (rn_rules_check_spec(&s[i])) {
			rc = -EINVAL;
			goto fail;
		}
		if (s[i].family)
			nmax += s[i].plen + 1u;
		else
			r->nnames++;
	}
	r->rule = calloc(h->count ? h->count : 1, sizeof(*r->rule));
	r->node = calloc(nmax + 1, sizeof(*r->node));
	r->at = calloc(h->count ? h->count : 1, sizeof(*r->at));
	r->pool = malloc((size_t)r->nnames * (RN_NAME_MAX + 1) + 1);
	if (r->nnames) {
		for (j = 4; j < 2 * r->nnames; j <<= 1)
			;
		r->nmask = j - 1;
		r->names = calloc(j, sizeof(*r->names));
	}
	if (!r->rule || !r->node || !r->at || !r->pool || (r->nnames && !r->names))
		goto fail;

	/* pass 1: trie nodes and name entries, counting the rules of each */
	r->nnode = 2;		/* node 0: IPv4 root, node 1: IPv6 root */
	r->trie[0] = 0;
	r->trie[1] = 1;
	for (i = 0; i < h->count; i++) {
		r->rule[i].slot = s[i].slot;
		r->rule[i].action = s[i].action;
		r->rule[i].proto = s[i].proto;
		r->rule[i].port_lo = s[i].port_lo;
		r->rule[i].port_hi = s[i].port_hi;
		if (!s[i].family) {
			e = rn_rules_name_find(r, s[i].name, s[i].name_len, s[i].wild);
			if (!e->hash) {
				e->hash = rn_rules_name_hash(r, s[i].name, s[i].name_len, s[i].wild);
				e->off = pool;
				e->len = s[i].name_len;
				e->wild = s[i].wild;
				memcpy(r->pool + pool, s[i].name, s[i].name_len);
				pool += s[i].name_len;
			}
			e->n++;
			continue;
		}
		fam = s[i].family == 6;
		cur = r->trie[fam];
		for (j = 0; j < s[i].plen; j++) {
			nd = &r->node[cur];
			if (!nd->child[rn_rules_bit(s[i].addr, j)]) {
				if (r->nnode >= nmax + 1) {
					rc = -EINVAL;
					goto fail;
				}
				nd->child[rn_rules_bit(s[i].addr, j)] = r->nnode++;
			}
			cur = r->node[cur].child[rn_rules_bit(s[i].addr, j)];
		}
		r->node[cur].n++;
	}
	/* pass 2: place each rule's index in its node's or name's group, in order */
	for (i = 0; i < r->nnode; i++) {
		r->node[i].first = nat;
		nat += r->node[i].n;
	}
	for (i = 0; r->nnames && i <= r->nmask; i++) {
		r->names[i].first = nat;
		nat += r->names[i].n;
	}
	fill = calloc((size_t)r->nnode + (r->nnames ? r->nmask + 1 : 0), sizeof(*fill));
	if (!fill)
		goto fail;
	for (i = 0; i < h->count; i++) {
		if (!s[i].family) {
			e = rn_rules_name_find(r, s[i].name, s[i].name_len, s[i].wild);
			j = (uint32_t)(e - r->names);
			r->at[e->first + fill[r->nnode + j]++] = i;
			continue;
		}
		cur = r->trie[s[i].family == 6];
		for (j = 0; j < s[i].plen; j++)
			cur = r->node[cur].child[rn_rules_bit(s[i].addr, j)];
		r->at[r->node[cur].first + fill[cur]++] = i;
	}
	free(fill);
	*out = r;
	return 0;
fail:
	rn_rules_destroy(r);
	return rc;
}

/**
 * rn_rules_matches() - whether a rule's protocol and ports admit a flow
 * @ru:		the rule
 * @k:		the flow's key
 *
 * Return: true if they do
 */
static int rn_rules_matches(const struct rn_rule *ru, const struct rn_flow_key *k)
{
	int icmp = k->proto == 1 || k->proto == 58;

	if (ru->proto == RN_RULE_ICMP ? !icmp : ru->proto && ru->proto != k->proto)
		return 0;
	if (!ru->port_lo && !ru->port_hi)
		return 1;
	if (k->proto != 6 && k->proto != 17)
		return 0;
	return k->dport >= ru->port_lo && k->dport <= ru->port_hi;
}

/**
 * rn_rules_scan() - the first rule of a group that matches, if it beats @best
 * @r:		rule set
 * @first:	the group in r->at
 * @n:		its length
 * @k:		the flow's key
 * @best:	index of the best rule so far, or -1
 *
 * Return: the new best index
 */
static int rn_rules_scan(const struct rn_rules *r, uint32_t first, uint32_t n,
			 const struct rn_flow_key *k, int best)
{
	uint32_t i, idx;

	for (i = 0; i < n; i++) {
		idx = r->at[first + i];
		if (best >= 0 && idx >= (uint32_t)best)
			break;
		if (rn_rules_matches(&r->rule[idx], k))
			return (int)idx;
	}
	return best;
}

/**
 * rn_rules_lookup() - the first rule that matches a new flow
 * @r:		compiled set (NULL: none matches)
 * @k:		the flow's key as the namespace sees it
 * @names:	names that resolved to k->daddr through ringnet's DNS
 * @nnames:	entries of @names
 *
 * Return: the rule's index (precedence), or -1 if none matches
 */
int rn_rules_lookup(const struct rn_rules *r, const struct rn_flow_key *k,
		    const struct rn_name_hit *names, uint32_t nnames)
{
	uint32_t cur, bits, i, j, len;
	const struct rn_rule_node *nd;
	const struct rn_rule_name *e;
	const char *nm;
	int best = -1;

	if (!r || (k->family != 4 && k->family != 6))
		return -1;
	bits = k->family == 6 ? 128 : 32;
	cur = r->trie[k->family == 6];
	for (i = 0;; i++) {
		nd = &r->node[cur];
		if (nd->n)
			best = rn_rules_scan(r, nd->first, nd->n, k, best);
		if (i == bits || !(cur = nd->child[rn_rules_bit(k->daddr, i)]))
			break;
	}
	for (i = 0; r->nnames && i < nnames; i++) {
		nm = names[i].name;
		len = names[i].len;
		if (len > RN_NAME_MAX)
			continue;
		e = rn_rules_name_find(r, nm, len, 0);
		if (e->hash)
			best = rn_rules_scan(r, e->first, e->n, k, best);
		/* each parent domain, as a wildcard: "a.b.c" tries "b.c" and "c" */
		for (j = 0; j < len; j++) {
			if (nm[j] != '.')
				continue;
			e = rn_rules_name_find(r, nm + j + 1, len - j - 1, 1);
			if (e->hash)
				best = rn_rules_scan(r, e->first, e->n, k, best);
		}
	}
	return best;
}

/**
 * rn_rules_slot() - the hit counter slot of a rule
 * @r:		compiled set
 * @idx:	rule index from rn_rules_lookup()
 *
 * Return: its slot, or UINT32_MAX for a bad index
 */
uint32_t rn_rules_slot(const struct rn_rules *r, int idx)
{
	return r && idx >= 0 && (uint32_t)idx < r->count ? r->rule[idx].slot : UINT32_MAX;
}

/**
 * rn_rules_action() - what a rule does
 * @r:		compiled set
 * @idx:	rule index from rn_rules_lookup()
 *
 * Return: RN_RULE_ALLOW or RN_RULE_DENY, 0 for a bad index
 */
int rn_rules_action(const struct rn_rules *r, int idx)
{
	return r && idx >= 0 && (uint32_t)idx < r->count ? r->rule[idx].action : 0;
}

/**
 * rn_rules_ctx() - a worker's rules context, created on first use
 * @w:		worker
 *
 * Return: the context, or NULL without memory
 */
static struct rn_rules_ctx *rn_rules_ctx(struct rn_worker *w)
{
	if (!w->rules)
		w->rules = calloc(1, sizeof(*w->rules));
	return w->rules;
}

/**
 * rn_rules_attach() - give a worker the rules memfd's mapping (name table, hit counters)
 * @w:		worker
 * @shm:	the mapping, read-write; it must outlive the worker
 * @len:	its length
 *
 * Return: 0, -EINVAL if the header or the size disagrees with this worker, -ENOMEM
 */
int rn_rules_attach(struct rn_worker *w, void *shm, size_t len)
{
	const struct rn_rules_shm *h = shm;
	struct rn_rules_ctx *c;

	if (!shm || len < RN_RULES_SHM_HDR || h->magic != RN_RULES_SHM_MAGIC ||
	    h->slots != RN_NAMES_SLOTS || h->rules_max != RN_RULES_MAX ||
	    h->nworkers != w->p.nworkers || w->p.index >= h->nworkers ||
	    len != rn_rules_shm_size(h->nworkers))
		return -EINVAL;
	c = rn_rules_ctx(w);
	if (!c)
		return -ENOMEM;
	c->names = (struct rn_name_slot *)((uint8_t *)shm + RN_RULES_SHM_HDR);
	c->hits = (uint64_t *)(c->names + RN_NAMES_SLOTS) + (size_t)w->p.index * RN_RULES_MAX;
	return 0;
}

/**
 * rn_rules_load() - replace a worker's rule set
 * @w:		worker
 * @blob:	struct rn_rules_blob and its rules (copied; the caller keeps it)
 * @len:	bytes of @blob
 *
 * Called between loop passes; new flows are judged by the new set, open
 * flows stay open.
 *
 * Return: 0, or the error of rn_rules_build() (the old set stays)
 */
int rn_rules_load(struct rn_worker *w, const void *blob, size_t len)
{
	struct rn_rules_ctx *c = rn_rules_ctx(w);
	struct rn_rules *r;
	int rc;

	if (!c)
		return -ENOMEM;
	rc = rn_rules_build(blob, len, &r);
	if (rc)
		return rc;
	rn_rules_destroy(c->set);
	c->set = r->count || r->default_deny ? r : NULL;
	if (!c->set)
		rn_rules_destroy(r);
	return 0;
}

/**
 * rn_rules_load_fd() - replace a worker's rule set with the one in a memfd
 * @w:		worker
 * @fd:		the orchestrator's memfd holding the set (the caller keeps it)
 * @len:	bytes of the set, from offset 0
 *
 * Maps it privately rather than reading it: every worker gets the same
 * open file, so a shared file offset would race.
 *
 * Return: 0, -EINVAL if the file is shorter than @len or the set malformed,
 *	   negative errno of fstat()/mmap(), -ENOMEM
 */
int rn_rules_load_fd(struct rn_worker *w, int fd, size_t len)
{
	struct stat st;
	void *m;
	int rc;

	if (fstat(fd, &st))
		return -errno;
	if (len < sizeof(struct rn_rules_blob) || (uint64_t)st.st_size < len)
		return -EINVAL;
	m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED)
		return -errno;
	rc = rn_rules_load(w, m, len);
	munmap(m, len);
	return rc;
}

/**
 * rn_rules_check() - judge a new flow by the worker's rules
 * @w:		worker
 * @k:		the flow's key as the namespace sees it
 * @dns:	the flow goes to the DNS forwarder (never refused by the default)
 * @rule:	set to the slot of the rule that decided, -1 for the default
 *
 * Counts a hit for the deciding rule, or rules_default; a refusal counts
 * policy_rule (the caller counts policy_refused).
 *
 * Return: 0 to allow the flow, 1 to refuse it
 */
int rn_rules_check(struct rn_worker *w, const struct rn_flow_key *k, int dns, int32_t *rule)
{
	struct rn_name_hit names[RN_NAMES_PER_ADDR];
	struct rn_rules_ctx *c = w->rules;
	int idx, n = 0, deny;
	uint32_t slot;

	*rule = -1;
	if (!c || !c->set)
		return 0;
	if (c->names && c->set->nnames)
		n = rn_names_lookup(c->names, w->now, w->p.hash_key, k->family, k->daddr, names,
				    RN_NAMES_PER_ADDR);
	idx = rn_rules_lookup(c->set, k, names, (uint32_t)n);
	if (idx < 0) {
		rn_ctr_add(w->ctr, RN_WCTR_rules_default, 1);
		deny = c->set->default_deny && !dns;
	} else {
		slot = c->set->rule[idx].slot;
		*rule = (int32_t)slot;
		if (c->hits)
			__atomic_fetch_add(&c->hits[slot], 1, __ATOMIC_RELAXED);
		deny = c->set->rule[idx].action == RN_RULE_DENY;
	}
	if (deny)
		rn_ctr_add(w->ctr, RN_WCTR_policy_rule, 1);
	return deny;
}

/**
 * rn_rules_learn() - learn the names a DNS answer from an upstream hands out
 * @w:		worker
 * @msg:	the answer (private copy)
 * @len:	its length
 *
 * Counts names_learned, names_evicted and names_bad (names.c says what is learnt).
 */
void rn_rules_learn(struct rn_worker *w, const uint8_t *msg, uint32_t len)
{
	struct rn_rules_ctx *c = w->rules;
	uint32_t evicted = 0;
	int n;

	if (!c || !c->names)
		return;
	n = rn_names_learn(c->names, w->now, w->p.hash_key, msg, len, &evicted);
	if (n < 0)
		rn_ctr_add(w->ctr, RN_WCTR_names_bad, 1);
	else if (n)
		rn_ctr_add(w->ctr, RN_WCTR_names_learned, (uint64_t)n);
	if (evicted)
		rn_ctr_add(w->ctr, RN_WCTR_names_evicted, evicted);
}

/**
 * rn_rules_free() - free a worker's rules (the memfd mapping stays the caller's)
 * @w:		worker
 */
void rn_rules_free(struct rn_worker *w)
{
	if (!w->rules)
		return;
	rn_rules_destroy(w->rules->set);
	free(w->rules);
	w->rules = NULL;
}
