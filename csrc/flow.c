/* flow.c - flow key extraction, keyed flow hashes, owner selection (flow.h) */
#include <errno.h>
#include <string.h>

#include "flow.h"
#include "shm.h"

#define ROTL64(x, b)	(uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static inline uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

#define SIPROUND(v0, v1, v2, v3) do {					\
	v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);	\
	v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;			\
	v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;			\
	v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);	\
} while (0)

/**
 * rn_siphash() - SipHash-2-4 of @data under @key
 * @key:	16-byte secret
 * @data:	message
 * @len:	message length
 *
 * Return: the 64-bit hash
 */
uint64_t rn_siphash(const uint8_t key[16], const uint8_t *data, uint32_t len)
{
	uint64_t k0 = le64(key), k1 = le64(key + 8), m, b = (uint64_t)len << 56;
	uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
	uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
	uint32_t i, left = len & 7;

	for (i = 0; i + 8 <= len; i += 8) {
		m = le64(data + i);
		v3 ^= m;
		SIPROUND(v0, v1, v2, v3);
		SIPROUND(v0, v1, v2, v3);
		v0 ^= m;
	}
	for (; left; left--)
		b |= (uint64_t)data[i + left - 1] << (8 * (left - 1));
	v3 ^= b;
	SIPROUND(v0, v1, v2, v3);
	SIPROUND(v0, v1, v2, v3);
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND(v0, v1, v2, v3);
	SIPROUND(v0, v1, v2, v3);
	SIPROUND(v0, v1, v2, v3);
	SIPROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

static inline uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/**
 * l4_ports() - fill the ports of @k from the transport header at @l4
 * @k:		key with proto set
 * @l4:		transport header
 * @left:	bytes available from @l4
 */
static void l4_ports(struct rn_flow_key *k, const uint8_t *l4, uint32_t left)
{
	switch (k->proto) {
	case 6:		/* TCP */
	case 17:	/* UDP */
	case 136:	/* UDP-Lite */
		if (left >= 4) {
			k->sport = be16(l4);
			k->dport = be16(l4 + 2);
		}
		break;
	case 1:		/* ICMP echo request/reply */
		if (left >= 8 && (l4[0] == 8 || l4[0] == 0))
			k->sport = k->dport = be16(l4 + 4);
		break;
	case 58:	/* ICMPv6 echo request/reply */
		if (left >= 8 && (l4[0] == 128 || l4[0] == 129))
			k->sport = k->dport = be16(l4 + 4);
		break;
	}
}

/**
 * rn_flow_key_parse() - extract the flow key of an IP packet (no vnet header)
 * @pkt:	IPv4 or IPv6 packet
 * @len:	bytes available at @pkt
 * @k:		filled on success; ports stay 0 where the packet has none
 *
 * Only what the key needs is checked here; the worker validates the rest.
 *
 * Return: 0, or -EINVAL if no key can be found (too short, bad version)
 */
int rn_flow_key_parse(const uint8_t *pkt, uint32_t len, struct rn_flow_key *k)
{
	uint32_t ihl;

	memset(k, 0, sizeof(*k));
	if (len < 1)
		return -EINVAL;
	switch (pkt[0] >> 4) {
	case 4:
		ihl = (pkt[0] & 0xfu) * 4u;
		if (len < 20 || ihl < 20 || ihl > len)
			return -EINVAL;
		k->family = 4;
		k->proto = pkt[9];
		memcpy(k->saddr, pkt + 12, 4);
		memcpy(k->daddr, pkt + 16, 4);
		/* A fragment (MF set or offset non-zero) hashes on addresses */
		if (be16(pkt + 6) & 0x3fff)
			return 0;
		l4_ports(k, pkt + ihl, len - ihl);
		return 0;
	case 6:
		if (len < 40)
			return -EINVAL;
		k->family = 6;
		k->proto = pkt[6];
		memcpy(k->saddr, pkt + 8, 16);
		memcpy(k->daddr, pkt + 24, 16);
		l4_ports(k, pkt + 40, len - 40);
		return 0;
	}
	return -EINVAL;
}

/**
 * rn_flow_hash() - symmetric keyed hash of a flow key
 * @key:	per-network secret
 * @k:		flow key
 *
 * Return: the same value for @k and for @k with source and destination swapped
 */
uint64_t rn_flow_hash(const uint8_t key[16], const struct rn_flow_key *k)
{
	uint8_t buf[2 + 2 * 16 + 4];
	unsigned int alen = k->family == 6 ? 16 : 4;
	const uint8_t *lo = k->saddr, *hi = k->daddr;
	uint16_t plo = k->sport, phi = k->dport;
	int c = memcmp(k->saddr, k->daddr, alen);

	if (c > 0 || (c == 0 && k->sport > k->dport)) {
		lo = k->daddr;
		hi = k->saddr;
		plo = k->dport;
		phi = k->sport;
	}
	buf[0] = k->family;
	buf[1] = k->proto;
	memcpy(buf + 2, lo, alen);
	memcpy(buf + 2 + alen, hi, alen);
	buf[2 + 2 * alen] = (uint8_t)(plo >> 8);
	buf[3 + 2 * alen] = (uint8_t)plo;
	buf[4 + 2 * alen] = (uint8_t)(phi >> 8);
	buf[5 + 2 * alen] = (uint8_t)phi;
	return rn_siphash(key, buf, 6 + 2 * alen);
}

/**
 * rn_flow_by_source() - whether @k is owned by its namespace endpoint alone
 * @k:		flow key as seen from the namespace
 *
 * UDP keys with a source port: a UDP flow belongs to the worker of its
 * namespace source (address, port), so that every flow of one source is in
 * one worker and shares one host port there (udp.c: endpoint-independent
 * mapping). Keys without ports (fragments, truncated headers) hash on the
 * address pair, as every other protocol's do.
 *
 * Return: true for a key rn_flow_source_hash() owns
 */
static int rn_flow_by_source(const struct rn_flow_key *k)
{
	return k->proto == 17 && k->sport != 0;
}

/**
 * rn_flow_source_hash() - keyed hash of a key's namespace endpoint
 * @key:	per-network secret
 * @k:		flow key as seen from the namespace: saddr and sport are hashed
 *
 * Family and protocol are hashed too; the message is shorter than any
 * rn_flow_hash() message of the same family, so the two never hash alike
 * by construction.
 *
 * Return: the hash of (family, proto, saddr, sport)
 */
static uint64_t rn_flow_source_hash(const uint8_t key[16], const struct rn_flow_key *k)
{
	uint8_t buf[2 + 16 + 2];
	unsigned int alen = k->family == 6 ? 16 : 4;

	buf[0] = k->family;
	buf[1] = k->proto;
	memcpy(buf + 2, k->saddr, alen);
	buf[2 + alen] = (uint8_t)(k->sport >> 8);
	buf[3 + alen] = (uint8_t)k->sport;
	return rn_siphash(key, buf, 4 + alen);
}

/**
 * rn_flow_owner_key() - the worker that owns the flow @k
 * @key:	per-network secret
 * @nworkers:	number of workers, at least 1
 * @k:		flow key as seen from the namespace (saddr, sport: its side)
 *
 * A UDP flow belongs to the worker of its namespace source
 * (rn_flow_by_source()); any other to the symmetric hash of its 5-tuple
 * (rn_flow_hash()), the same for @k and for @k turned round.
 *
 * Return: worker index below @nworkers
 */
uint32_t rn_flow_owner_key(const uint8_t key[16], uint32_t nworkers,
			   const struct rn_flow_key *k)
{
	if (nworkers <= 1)
		return 0;
	if (rn_flow_by_source(k))
		return (uint32_t)(rn_flow_source_hash(key, k) % nworkers);
	return (uint32_t)(rn_flow_hash(key, k) % nworkers);
}

/**
 * rn_flow_owner() - the worker that owns a frame's flow
 * @key:	per-network secret
 * @nworkers:	number of workers, at least 1
 * @frame:	virtio-net header followed by an IP packet, from the namespace
 *		(its source is the namespace side of the flow; any bytes)
 * @len:	frame length
 *
 * Return: worker index below @nworkers; 0 for frames without a flow key
 */
uint32_t rn_flow_owner(const uint8_t key[16], uint32_t nworkers, const uint8_t *frame,
		       uint32_t len)
{
	struct rn_flow_key k;

	if (nworkers <= 1 || len <= RN_VNET_HDR_LEN ||
	    rn_flow_key_parse(frame + RN_VNET_HDR_LEN, len - RN_VNET_HDR_LEN, &k))
		return 0;
	return rn_flow_owner_key(key, nworkers, &k);
}

/**
 * rn_flow_pick_port() - choose a far-end port so that a new flow hashes to @want
 * @key:	per-network secret
 * @nworkers:	number of workers
 * @want:	worker that must own the flow
 * @k:		flow key as seen from the namespace; @k->dport is set to the
 *		chosen port
 * @lo:		lowest acceptable port
 * @hi:		highest acceptable port
 * @start:	where to begin the search (wraps within lo..hi)
 *
 * Used by a worker that opens a flow towards the namespace from an address
 * and port of its choosing (forward.c: a client shown from the gateway), so
 * that the namespace's replies reach the same worker. The owner of a UDP
 * flow does not depend on the far end (rn_flow_by_source()): then @start
 * (or @lo) is the port if @want owns the namespace endpoint, and no port is
 * otherwise, found without a search.
 *
 * Return: the port, or -EADDRNOTAVAIL if no port in range hashes to @want
 */
int rn_flow_pick_port(const uint8_t key[16], uint32_t nworkers, uint32_t want,
		      struct rn_flow_key *k, uint16_t lo, uint16_t hi, uint16_t start)
{
	uint32_t span, i, port;

	if (lo > hi || want >= (nworkers ? nworkers : 1))
		return -EADDRNOTAVAIL;
	if (start < lo || start > hi)
		start = lo;
	if (rn_flow_by_source(k)) {
		if (rn_flow_owner_key(key, nworkers, k) != want)
			return -EADDRNOTAVAIL;
		k->dport = start;
		return (int)start;
	}
	span = (uint32_t)hi - lo + 1;
	for (i = 0; i < span; i++) {
		port = lo + ((uint32_t)start - lo + i) % span;
		k->dport = (uint16_t)port;
		if (rn_flow_owner_key(key, nworkers, k) == want)
			return (int)port;
	}
	return -EADDRNOTAVAIL;
}
