/* rules.h - the user's egress rules: compiled set, evaluation per new flow, hit counts
 *
 * For policy.c (rn_rules_check() once a new flow passed the built-in
 * protections), udp_rx.c (rn_rules_learn(): DNS answers feed the name table)
 * and Python (rules.cdef: loading a set into a worker, attaching the shared
 * memory, and the matcher itself for unit tests). See rules.c.
 */
#ifndef RN_RULES_H
#define RN_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "flow.h"
#include "names.h"

/* Rules in one set; also the length of each worker's hit array */
#define RN_RULES_MAX		16384u
#define RN_RULES_MAGIC		0x4c555252u	/* "RRUL" */
#define RN_RULES_VERSION	1u
#define RN_RULES_SHM_MAGIC	0x4d485352u	/* "RSHM" */

/* struct rn_rule_spec.action */
#define RN_RULE_ALLOW		1u
#define RN_RULE_DENY		2u
/* struct rn_rule_spec.proto: 0 any; IPPROTO_ICMP also means ICMPv6 */
#define RN_RULE_ICMP		1u

/**
 * struct rn_rule_spec - one rule as the orchestrator hands it to workers
 * @slot:	the rule's hit counter, index into a worker's hit array (stable
 *		while the rule exists, whatever its position)
 * @action:	RN_RULE_ALLOW or RN_RULE_DENY
 * @proto:	0 (any), 6, 17, or RN_RULE_ICMP (ICMP and ICMPv6 echo)
 * @family:	4 or 6 for an address rule, 0 for a name rule
 * @plen:	prefix length of an address rule
 * @port_lo:	first destination port; 0 with @port_hi 0: any port (and any
 *		protocol, ICMP included); a port range matches TCP and UDP only
 * @port_hi:	last destination port
 * @wild:	name rule "*.NAME": names strictly below NAME
 * @name_len:	bytes of @name
 * @addr:	network of an address rule, network order (bits past @plen zero)
 * @name:	name of a name rule, lower case, no final dot
 */
struct rn_rule_spec {
	uint32_t slot;
	uint8_t action;
	uint8_t proto;
	uint8_t family;
	uint8_t plen;
	uint16_t port_lo;
	uint16_t port_hi;
	uint8_t wild;
	uint8_t name_len;
	uint8_t pad[2];
	uint8_t addr[16];
	char name[256];
};

/**
 * struct rn_rules_blob - header of a rule set (then @count struct rn_rule_spec)
 * @magic:	RN_RULES_MAGIC
 * @version:	RN_RULES_VERSION
 * @count:	rules, in order of precedence (first match wins)
 * @default_deny: flows no rule matches are refused (the DNS forwarder excepted)
 */
struct rn_rules_blob {
	uint32_t magic;
	uint32_t version;
	uint32_t count;
	uint32_t default_deny;
};

/**
 * struct rn_rules_shm - header of the rules memfd every worker maps
 * @magic:	RN_RULES_SHM_MAGIC
 * @nworkers:	rows of hit counters after the name table
 * @slots:	RN_NAMES_SLOTS (checked)
 * @rules_max:	RN_RULES_MAX (checked)
 *
 * Layout: this header padded to 64 bytes, the name table (RN_NAMES_SLOTS
 * struct rn_name_slot), then @nworkers rows of RN_RULES_MAX uint64_t hit
 * counters, one row per worker, written only by that worker.
 */
struct rn_rules_shm {
	uint32_t magic;
	uint32_t nworkers;
	uint32_t slots;
	uint32_t rules_max;
};

struct rn_rules;
struct rn_worker;

size_t rn_rules_shm_size(uint32_t nworkers);
void rn_rules_shm_init(void *shm, uint32_t nworkers);
int rn_rules_build(const void *blob, size_t len, struct rn_rules **out);
void rn_rules_destroy(struct rn_rules *r);
int rn_rules_lookup(const struct rn_rules *r, const struct rn_flow_key *k,
		    const struct rn_name_hit *names, uint32_t nnames);
uint32_t rn_rules_slot(const struct rn_rules *r, int idx);
int rn_rules_action(const struct rn_rules *r, int idx);

int rn_rules_attach(struct rn_worker *w, void *shm, size_t len);
int rn_rules_load(struct rn_worker *w, const void *blob, size_t len);
int rn_rules_load_fd(struct rn_worker *w, int fd, size_t len);
int rn_rules_check(struct rn_worker *w, const struct rn_flow_key *k, int dns, int32_t *rule);
void rn_rules_learn(struct rn_worker *w, const uint8_t *msg, uint32_t len);
void rn_rules_free(struct rn_worker *w);

#endif /* RN_RULES_H */
