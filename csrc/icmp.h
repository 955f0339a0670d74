/* icmp.h - ICMP and ICMPv6 towards the worker: echo replies for the gateway */
#ifndef RN_ICMP_H
#define RN_ICMP_H

#include "worker.h"

int rn_icmp_input(struct rn_worker *w, struct rn_frame *f);

#endif /* RN_ICMP_H */
