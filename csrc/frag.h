/* frag.h - IPv4 and IPv6 fragment reassembly: for worker.c only */
#ifndef RN_FRAG_H
#define RN_FRAG_H

#include "worker.h"

int rn_frag_input(struct rn_worker *w, struct rn_frame *f);
void rn_frag_free(struct rn_worker *w);

#endif /* RN_FRAG_H */
