/* udp.h - UDP between the namespace and host sockets: for worker.c only */
#ifndef RN_UDP_H
#define RN_UDP_H

#include "worker.h"

extern const struct rn_flow_ops rn_udp_ops;

int rn_udp_input(struct rn_worker *w, struct rn_frame *f);
void rn_udp_flush(struct rn_worker *w);
void rn_udp_free(struct rn_worker *w);

#endif /* RN_UDP_H */
