/* names.h - which addresses ringnet's DNS forwarder handed out for which names
 *
 * For rules.c (name rules: does a name that resolved to this address match?),
 * udp_rx.c (answers from an upstream are learnt before the namespace sees
 * them) and Python (the table lives in the rules memfd, ringnet/_rules.py;
 * names.cdef for tests). See names.c for the table and the parsing.
 */
#ifndef RN_NAMES_H
#define RN_NAMES_H

#include <stdint.h>

/* Slots of the shared table (a power of two) and the window a key may live in */
#define RN_NAMES_SLOTS		8192u
#define RN_NAMES_WINDOW		16u
/* Longest name kept, as text without the final dot (RFC 1035: 253) */
#define RN_NAME_MAX		253u
/* Names one address may be found under in one lookup (the window bounds it too) */
#define RN_NAMES_PER_ADDR	RN_NAMES_WINDOW
/* An entry lives for the record's TTL plus this grace (a TTL of 0 is common for
 * load-balanced names, and the program connects just after the answer) ... */
#define RN_NAMES_GRACE_MS	2000
/* ... and never longer than a day */
#define RN_NAMES_TTL_MAX_S	86400u

/**
 * struct rn_name_slot - one (name, address) pair in the shared table
 * @seq:	sequence lock: odd while a worker writes the slot
 * @family:	4 or 6; 0: never used
 * @len:	bytes of @name used
 * @expires:	CLOCK_MONOTONIC ms after which the pair is forgotten; 0: empty
 * @addr:	the address, network order, IPv4 in the first 4 bytes
 * @name:	the name the program asked for, lower case, no final dot
 */
struct rn_name_slot {
	uint32_t seq;
	uint8_t family;
	uint8_t len;
	uint8_t pad[2];
	int64_t expires;
	uint8_t addr[16];
	char name[256];
};

/**
 * struct rn_name_hit - a name found for an address (a reader's private copy)
 * @len:	bytes of @name
 * @name:	the name, NUL-terminated
 */
struct rn_name_hit {
	uint32_t len;
	char name[256];
};

int rn_names_learn(struct rn_name_slot *tab, int64_t now, const uint8_t key[16],
		   const uint8_t *msg, uint32_t len, uint32_t *evicted);
int rn_names_put(struct rn_name_slot *tab, int64_t now, const uint8_t key[16], int family,
		 const uint8_t *addr, const char *name, uint32_t nlen, uint32_t ttl_s);
int rn_names_lookup(const struct rn_name_slot *tab, int64_t now, const uint8_t key[16],
		    int family, const uint8_t *addr, struct rn_name_hit *out, uint32_t max);

#endif /* RN_NAMES_H */
