/* names.c - which addresses ringnet's DNS forwarder handed out for which names
 *
 * Theory of operation
 * -------------------
 * A name rule (rules.c) matches a connection to an address only if a name
 * that matches it resolved to that address through ringnet's own DNS
 * forwarder. The worker that owns a DNS flow sees the answer; the flow to
 * the address it names hashes to any worker (flow.h). So the (name, address)
 * pairs live in one table in shared memory (the rules memfd the orchestrator
 * creates, ringnet/_rules.py) that every worker of the network maps
 * read-write: the worker that sees an answer writes the pairs before it
 * puts the answer into ring to_ns, so by the time the program connects
 * (which it can only do after reading the answer) every worker finds them.
 * Relaying them through the orchestrator would race with that connect.
 *
 * The table: RN_NAMES_SLOTS slots of struct rn_name_slot. A pair lives in the
 * RN_NAMES_WINDOW slots after SipHash(network key, address) (wrapping), so a
 * lookup by address reads at most one window, whatever the table holds. A
 * new pair refreshes the same pair's slot, else takes an empty or expired
 * slot of the window, else evicts the slot that expires first (counted by
 * the caller as names_evicted). Each slot has a sequence lock: a writer
 * takes it with a compare-and-swap from the even value it read while
 * choosing (so two workers never write one slot, and a slot changed since
 * the choice is left alone: that pair is then not learnt), writes, and
 * releases it with the next even value; a reader copies the slot and keeps
 * the copy only if the sequence was even and unchanged around the copy.
 * Only workers write the table (from answers of the configured upstreams:
 * rn_dns_is_upstream()); the namespace never maps it.
 *
 * Lifetime: a pair expires at the record's TTL plus RN_NAMES_GRACE_MS (the
 * program connects just after the answer, and TTL 0 is common), at most
 * RN_NAMES_TTL_MAX_S. Times are CLOCK_MONOTONIC, the same in every process.
 *
 * What is learnt from an answer (rn_names_learn()): a standard query
 * response (QR set, opcode 0, RCODE 0) with one question; every A and AAAA
 * record of class IN in the answer section whose owner is the question's
 * name, or a name the question's name leads to through CNAME records before
 * it (at most 8 names), is recorded under the question's name: the name the
 * program asked for, which is what a user writes in a rule. Names are
 * compared and stored in lower case without the final dot; an answer with a
 * label holding anything but letters, digits, '-' and '_' (a '.' inside a
 * label could pass for another name) teaches nothing. Answers over TCP are
 * not read (only UDP answers pass through a private copy; glibc uses TCP
 * only for answers too large for UDP).
 */
#include <errno.h>
#include <string.h>

#include "flow.h"
#include "names.h"
#include "packet.h"

#define RN_DNS_TYPE_A		1u
#define RN_DNS_TYPE_CNAME	5u
#define RN_DNS_TYPE_AAAA	28u
#define RN_DNS_CLASS_IN		1u
/* Names of one CNAME chain followed, the question's included */
#define RN_NAMES_CHAIN		8u
/* Compression pointers followed in one name */
#define RN_NAMES_JUMPS		32u

/**
 * rn_names_window() - the first slot of an address's window
 * @key:	the network's hash key
 * @family:	4 or 6
 * @addr:	address, 4 or 16 bytes
 *
 * Return: slot index
 */
static uint32_t rn_names_window(const uint8_t key[16], int family, const uint8_t *addr)
{
	uint8_t buf[17];

	buf[0] = (uint8_t)family;
	memcpy(buf + 1, addr, family == 6 ? 16 : 4);
	return (uint32_t)rn_siphash(key, buf, family == 6 ? 17 : 5) & (RN_NAMES_SLOTS - 1);
}

/**
 * rn_names_read() - copy a slot under its sequence lock
 * @s:		slot in shared memory
 * @out:	the copy
 *
 * Return: the even sequence value the copy belongs to, or -1 if the slot
 *	   was being written (the copy is then not to be used)
 */
static int64_t rn_names_read(const struct rn_name_slot *s, struct rn_name_slot *out)
{
	uint32_t a, b;

	a = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
	if (a & 1)
		return -1;
	out->family = s->family;
	out->len = s->len;
	out->expires = s->expires;
	memcpy(out->addr, s->addr, sizeof(out->addr));
	if (out->len <= RN_NAME_MAX)
		memcpy(out->name, s->name, out->len);
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	b = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);
	if (a != b || out->len > RN_NAME_MAX)
		return -1;
	out->name[out->len] = 0;
	return a;
}

/**
 * rn_names_put() - record that @name resolved to @addr
 * @tab:	the table, RN_NAMES_SLOTS slots
 * @now:	CLOCK_MONOTONIC ms
 * @key:	the network's hash key
 * @family:	4 or 6
 * @addr:	address, network order
 * @name:	lower case, no final dot
 * @nlen:	bytes of @name, at most RN_NAME_MAX
 * @ttl_s:	the record's TTL, seconds
 *
 * Return: 0 if recorded (or refreshed), 1 if recorded by evicting a pair
 *	   still alive, -EBUSY if the chosen slot changed meanwhile (another
 *	   worker wrote it: not recorded), -EINVAL for a bad argument
 */
int rn_names_put(struct rn_name_slot *tab, int64_t now, const uint8_t key[16], int family,
		 const uint8_t *addr, const char *name, uint32_t nlen, uint32_t ttl_s)
{
	uint32_t alen = family == 6 ? 16 : 4, start, i, idx, victim = 0, seq;
	int64_t vseq = -1, s, vexp = 0;
	struct rn_name_slot c, *t;
	int found = 0, live = 0;

	if ((family != 4 && family != 6) || nlen > RN_NAME_MAX || (nlen && !name))
		return -EINVAL;
	if (ttl_s > RN_NAMES_TTL_MAX_S)
		ttl_s = RN_NAMES_TTL_MAX_S;
	start = rn_names_window(key, family, addr);
	for (i = 0; i < RN_NAMES_WINDOW; i++) {
		idx = (start + i) & (RN_NAMES_SLOTS - 1);
		s = rn_names_read(&tab[idx], &c);
		if (s < 0)
			continue;
		if (c.expires && c.family == family && !memcmp(c.addr, addr, alen) &&
		    c.len == nlen && !memcmp(c.name, name, nlen)) {
			victim = idx, vseq = s, found = 1;
			break;
		}
		if (!c.expires || c.expires <= now) {
			if (vseq < 0 || vexp > 0) {
				victim = idx, vseq = s, vexp = 0;
			}
			continue;
		}
		if (vseq < 0 || (vexp > 0 && c.expires < vexp))
			victim = idx, vseq = s, vexp = c.expires;
	}
	if (vseq < 0)
		return -EBUSY;
	live = !found && vexp > 0;
	t = &tab[victim];
	seq = (uint32_t)vseq;
	if (!__atomic_compare_exchange_n(&t->seq, &seq, seq + 1, 0, __ATOMIC_ACQUIRE,
					 __ATOMIC_RELAXED))
		return -EBUSY;
	__atomic_thread_fence(__ATOMIC_RELEASE);
	t->family = (uint8_t)family;
	t->len = (uint8_t)nlen;
	memset(t->addr, 0, sizeof(t->addr));
	memcpy(t->addr, addr, alen);
	memcpy(t->name, name, nlen);
	t->name[nlen] = 0;
	t->expires = now + (int64_t)ttl_s * 1000 + RN_NAMES_GRACE_MS;
	__atomic_store_n(&t->seq, seq + 2, __ATOMIC_RELEASE);
	return live;
}

/**
 * rn_names_lookup() - the names that resolved to an address and have not expired
 * @tab:	the table
 * @now:	CLOCK_MONOTONIC ms
 * @key:	the network's hash key
 * @family:	4 or 6
 * @addr:	address, network order
 * @out:	filled with up to @max names
 * @max:	entries of @out
 *
 * Reads one window (RN_NAMES_WINDOW slots); a slot being written is skipped.
 *
 * Return: names found, 0..@max
 */
int rn_names_lookup(const struct rn_name_slot *tab, int64_t now, const uint8_t key[16],
		    int family, const uint8_t *addr, struct rn_name_hit *out, uint32_t max)
{
	uint32_t alen = family == 6 ? 16 : 4, start, i, n = 0;
	struct rn_name_slot c;

	if (family != 4 && family != 6)
		return 0;
	start = rn_names_window(key, family, addr);
	for (i = 0; i < RN_NAMES_WINDOW && n < max; i++) {
		if (rn_names_read(&tab[(start + i) & (RN_NAMES_SLOTS - 1)], &c) < 0)
			continue;
		if (!c.expires || c.expires <= now || c.family != family ||
		    memcmp(c.addr, addr, alen))
			continue;
		out[n].len = c.len;
		memcpy(out[n].name, c.name, (size_t)c.len + 1);
		n++;
	}
	return (int)n;
}

/**
 * rn_names_decode() - a (possibly compressed) domain name of a DNS message as text
 * @msg:	the message
 * @len:	its length
 * @off:	where the name starts
 * @out:	lower-case text without the final dot, NUL-terminated
 *		(RN_NAME_MAX + 1 bytes)
 * @olen:	set to the text's length
 * @next:	set to the offset after the name where it started
 *
 * Return: 0, or -EBADMSG for a name running out of the message, looping,
 *	   too long, or with a label byte other than a letter, digit, '-', '_'
 */
static int rn_names_decode(const uint8_t *msg, uint32_t len, uint32_t off, char *out,
			   uint32_t *olen, uint32_t *next)
{
	uint32_t n = 0, jumps = 0, l, i;
	int jumped = 0;
	uint8_t c;

	for (;;) {
		if (off >= len)
			return -EBADMSG;
		l = msg[off];
		if ((l & 0xc0) == 0xc0) {
			if (off + 1 >= len || ++jumps > RN_NAMES_JUMPS)
				return -EBADMSG;
			if (!jumped)
				*next = off + 2;
			jumped = 1;
			off = ((l & 0x3f) << 8) | msg[off + 1];
			continue;
		}
		if (l & 0xc0)
			return -EBADMSG;
		if (!l) {
			if (!jumped)
				*next = off + 1;
			break;
		}
		if (off + 1 + l > len || n + (n ? 1 : 0) + l > RN_NAME_MAX)
			return -EBADMSG;
		if (n)
			out[n++] = '.';
		for (i = 0; i < l; i++) {
			c = msg[off + 1 + i];
			if (c >= 'A' && c <= 'Z')
				c = (uint8_t)(c - 'A' + 'a');
			if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
				return -EBADMSG;
			out[n++] = (char)c;
		}
		off += 1 + l;
	}
	out[n] = 0;
	*olen = n;
	return 0;
}

/**
 * rn_names_learn() - record the addresses an answer from an upstream hands out
 * @tab:	the table
 * @now:	CLOCK_MONOTONIC ms
 * @key:	the network's hash key
 * @msg:	the answer, a private copy
 * @len:	its length
 * @evicted:	incremented for each pair that evicted a live one
 *
 * See the theory of operation for what is learnt.
 *
 * Return: pairs recorded (0 for an answer that is no positive response),
 *	   or -EBADMSG for a malformed one (nothing more is read from it)
 */
int rn_names_learn(struct rn_name_slot *tab, int64_t now, const uint8_t key[16],
		   const uint8_t *msg, uint32_t len, uint32_t *evicted)
{
	char chain[RN_NAMES_CHAIN][RN_NAME_MAX + 1], owner[RN_NAME_MAX + 1];
	uint32_t clen[RN_NAMES_CHAIN], nchain = 1, olen, off, an, i, j, type, cls, ttl, rdlen;
	int learnt = 0, rc, in;

	if (len < 12)
		return -EBADMSG;
	/* QR set, opcode 0, RCODE 0, one question */
	if (!(msg[2] & 0x80) || (msg[2] & 0x78) || (msg[3] & 0x0f) || rn_be16(msg + 4) != 1)
		return 0;
	an = rn_be16(msg + 6);
	if (rn_names_decode(msg, len, 12, chain[0], &clen[0], &off) || off + 4 > len)
		return -EBADMSG;
	off += 4;
	for (i = 0; i < an; i++) {
		if (rn_names_decode(msg, len, off, owner, &olen, &off) || off + 10 > len)
			return -EBADMSG;
		type = rn_be16(msg + off);
		cls = rn_be16(msg + off + 2);
		ttl = rn_be32(msg + off + 4);
		rdlen = rn_be16(msg + off + 8);
		off += 10;
		if (off + rdlen > len)
			return -EBADMSG;
		for (in = 0, j = 0; j < nchain && !in; j++)
			in = clen[j] == olen && !memcmp(chain[j], owner, olen);
		if (in && cls == RN_DNS_CLASS_IN) {
			if (type == RN_DNS_TYPE_CNAME && nchain < RN_NAMES_CHAIN) {
				if (rn_names_decode(msg, off + rdlen, off, chain[nchain], &clen[nchain],
						    &j))
					return -EBADMSG;
				nchain++;
			} else if ((type == RN_DNS_TYPE_A && rdlen == 4) ||
				   (type == RN_DNS_TYPE_AAAA && rdlen == 16)) {
				rc = rn_names_put(tab, now, key, rdlen == 4 ? 4 : 6, msg + off,
						  chain[0], clen[0], ttl > 0x7fffffffu ? 0 : ttl);
				if (rc >= 0)
					learnt++;
				if (rc == 1 && evicted)
					(*evicted)++;
			}
		}
		off += rdlen;
	}
	return learnt;
}
