/* udp.h - UDP between the namespace and host sockets: for worker.c (and rn_udp_set_uso()) */
#ifndef RN_UDP_H
#define RN_UDP_H

#include "worker.h"

extern const struct rn_flow_ops rn_udp_ops;

int rn_udp_input(struct rn_worker *w, struct rn_frame *f);
void rn_udp_flush(struct rn_worker *w);
int rn_udp_set_uso(struct rn_worker *w, int on);
void rn_udp_free(struct rn_worker *w);

#endif /* RN_UDP_H */
