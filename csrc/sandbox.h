/* sandbox.h - self-isolation of a ringnet child once it is set up
 *
 * A worker or the namespace child calls rn_sandbox_enter() after its set-up
 * (rings adopted, host sockets' namespace joined, tun opened) and before it
 * serves traffic. From then on it has no filesystem, no capabilities, cannot
 * be ptraced or have its memory or fds taken by other processes of the same
 * user, and may make only the system calls its loop and the Python
 * interpreter between two C calls need. See sandbox.c for the theory of
 * operation and the per-role allow-lists.
 */
#ifndef RN_SANDBOX_H
#define RN_SANDBOX_H

#include <stdint.h>

/* Roles: each has its own seccomp allow-list */
#define RN_SANDBOX_ROLE_WORKER		1u	/* host stack worker */
#define RN_SANDBOX_ROLE_NSCHILD		2u	/* namespace child and its pump threads */

/* Steps, in the order rn_sandbox_enter() takes them (bits of a mask) */
#define RN_SANDBOX_NO_NEW_PRIVS		0x01u	/* PR_SET_NO_NEW_PRIVS */
#define RN_SANDBOX_USERNS		0x02u	/* own user namespace, own ids mapped */
#define RN_SANDBOX_MOUNTNS		0x04u	/* own mount namespace, empty read-only root */
#define RN_SANDBOX_NOT_DUMPABLE		0x08u	/* PR_SET_DUMPABLE 0 */
#define RN_SANDBOX_NO_CAPS		0x10u	/* capabilities, bounding and ambient sets empty */
#define RN_SANDBOX_SECCOMP		0x20u	/* the role's system call allow-list */
#define RN_SANDBOX_ALL			0x3fu
/* Not a step: the check, before steps 2, 3 and 5, that no other thread exists */
#define RN_SANDBOX_ONE_THREAD		0x40u

/**
 * struct rn_sandbox_params - what to isolate
 * @role:	RN_SANDBOX_ROLE_*, selects the allow-list
 * @steps:	RN_SANDBOX_* steps to take (RN_SANDBOX_ALL in production; tests
 *		take some alone to look at one layer)
 */
struct rn_sandbox_params {
	uint32_t role;
	uint32_t steps;
};

/**
 * struct rn_sandbox_report - what rn_sandbox_enter() did
 * @applied:	steps that took effect
 * @failed:	the step that failed (rn_sandbox_enter() stops there), or 0
 * @err:	its errno, or 0
 * @nrules:	system calls the installed filter allows (some only with
 *		checked arguments)
 */
struct rn_sandbox_report {
	uint32_t applied;
	uint32_t failed;
	int32_t err;
	uint32_t nrules;
};

int rn_sandbox_enter(const struct rn_sandbox_params *p, struct rn_sandbox_report *out);
const char *rn_sandbox_step_name(uint32_t step);
const char *rn_sandbox_step_call(uint32_t step);

#endif /* RN_SANDBOX_H */
