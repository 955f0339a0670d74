/* dns.h - the DNS forwarder's upstream resolvers, replaceable while running */
#ifndef RN_DNS_H
#define RN_DNS_H

#include <stdint.h>

#include "worker.h"

int rn_dns_set_upstreams(struct rn_worker *w, const struct rn_dns_upstream *ups, uint32_t n);

#endif /* RN_DNS_H */
