/* sandbox.c - self-isolation of a ringnet child once it is set up
 *
 * Theory of operation
 * -------------------
 * A worker holds sockets in the host's network namespace; the namespace
 * child holds the tun device. Processes inside the namespace are root there
 * and, when the user runs ringnet, have the user's uid on the host: without
 * more, they could ptrace a worker, take its fds with pidfd_getfd(), read its
 * memory, or open its memfds through /proc/PID/fd, and so reach the host's
 * network past every policy. And a bug in the packet path would run with the
 * user's whole authority. So each child, once set up, takes these steps in
 * this order (rn_sandbox_enter(); each is a bit of the mask the caller
 * passes, all in production):
 *
 * 1. no_new_privs: nothing it could exec gains privileges; it also lets an
 *    unprivileged process install a seccomp filter (step 6).
 * 2. user namespace (worker only): a worker runs in the host's user
 *    namespace, where the user has no right to make mounts; it unshares a
 *    user namespace of its own, mapping only its own uid and gid (setgroups
 *    denied), and holds every capability there only until step 5. Its
 *    network namespace does not change: sockets it creates afterwards are
 *    still the host's, as they must be. The namespace child needs no new one:
 *    it already is in a user namespace it created (or, for attach, joined),
 *    and it may have threads, which forbid unsharing a user namespace.
 * 3. mount namespace with an empty root: unshare(CLONE_NEWNS), make every
 *    mount private (nothing propagates back to the host), mount an empty
 *    read-only tmpfs (two inodes, nosuid, nodev, noexec) over /tmp (or /proc
 *    where there is no /tmp), and make it the root with pivot_root(".", "."),
 *    the form that needs no directory for the old root: the old root is
 *    stacked on the new one and unmounted at once (MNT_DETACH). No path then
 *    names anything of the host's, and /proc is gone for this process.
 *    Done while the process still holds its capabilities.
 * 4. not dumpable: PR_SET_DUMPABLE 0 makes /proc/PID/{fd,mem,environ,...},
 *    ptrace, process_vm_readv and pidfd_getfd need CAP_SYS_PTRACE in the
 *    user namespace the process was exec'd in (the host's), which nothing in
 *    the namespace has. Taken after step 2, whose id maps are written
 *    through /proc/self, which stops being ours to write once we are not
 *    dumpable.
 * 5. no capabilities: bounding set emptied (PR_CAPBSET_DROP), securebits
 *    set and locked (no root magic, no setuid fixups, no ambient raise),
 *    ambient set cleared, then capset() to all-zero permitted, effective and
 *    inheritable sets; checked with capget().
 * 6. seccomp: a BPF allow-list per role, installed with
 *    SECCOMP_FILTER_FLAG_TSYNC so every thread of the process gets it (the
 *    namespace child enters the sandbox before it starts its pump threads,
 *    which then inherit every step; TSYNC makes the filter hold even for a
 *    thread that existed before).
 *
 * Capabilities and namespaces belong to a thread, not to the process: steps
 * 2, 3 and 5 reach only the calling thread and the threads it starts
 * afterwards. Callers therefore enter the sandbox before starting threads.
 *
 * The filter: the audit architecture is checked first (a system call of
 * another ABI, int 0x80 on x86_64 or an x32 number, kills the process: no
 * code of ours makes one, so only injected code can get there, and the
 * orchestrator sees the child die of SIGSYS). Then the system call number is
 * compared with each rule of the role's list; a rule allows the call, allows
 * it only when one argument passes a check (a value among a few, or some
 * bits clear or set), or returns a chosen errno. Everything else returns
 * EPERM. EPERM rather than killing the process: a call the list forgot
 * (some rarely taken path of the interpreter, of libc, or of code added
 * later) then fails like a refused call, the C core or Python reports it, and
 * the child sends ERROR with the failing operation to the orchestrator
 * before it exits, instead of vanishing with SIGSYS and nothing in the log;
 * the protection is the same, since the call does not happen. clone3 returns
 * ENOSYS instead, so that glibc falls back to clone(), whose flags a filter
 * can read (clone3's are behind a pointer).
 *
 * Rules are matched in order, the busiest system calls first. The kernel
 * (5.11 and later) also caches, per system call number, the verdict of a
 * filter that allows a number whatever its arguments: those calls then cost
 * a bitmap test, not a run of the filter. Only the calls with argument checks
 * (socket, ioctl, fcntl, mmap, mprotect, kill, tgkill, clone, prctl,
 * newfstatat) run it.
 *
 * What each role needs was measured with strace -f on children serving TCP
 * (both ways, IPv4 and IPv6), UDP (both ways, GSO), DNS over UDP and TCP and
 * ICMP echo through ping sockets, through to their exit, and is explained
 * rule by rule in the table below. The Python interpreter keeps running
 * between two C calls (control messages, logging, exit), hence its share:
 * memory (malloc, pymalloc arenas), the GIL (futex), signals (the SIGTERM
 * handler), the control socket (recvmsg, sendmsg, poll). A code path added
 * later that makes another system call must add it here; the tests show a
 * refused call as an error naming the operation.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/securebits.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox.h"

#if defined(__x86_64__)
#define SB_AUDIT_ARCH		AUDIT_ARCH_X86_64
#define SB_X32_SYSCALL_BIT	0x40000000u
#elif defined(__aarch64__)
#define SB_AUDIT_ARCH		AUDIT_ARCH_AARCH64
#endif

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#undef SB_AUDIT_ARCH	/* argument checks below read the low word at offset 0 */
#endif

#define SB_W	RN_SANDBOX_ROLE_WORKER
#define SB_N	RN_SANDBOX_ROLE_NSCHILD
#define SB_WN	(SB_W | SB_N)

#define SB_DENY	(SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))

/* What a rule does once the system call number matched */
enum sb_kind {
	SB_ALLOW,	/* allow */
	SB_ERRNO,	/* fail with @val[0] */
	SB_ARG_IN,	/* allow if the argument's low 32 bits are one of @val[] */
	SB_ARG_SELF,	/* allow if the argument is our process id */
	SB_ARG_MASK,	/* allow if (argument & @val[0]) == @val[1] */
};

#define SB_VALS_MAX	6

/**
 * struct sb_rule - one system call of an allow-list
 * @nr:		system call number
 * @roles:	SB_W, SB_N: roles whose list has it
 * @kind:	enum sb_kind
 * @arg:	argument checked (0-based), for the SB_ARG_* kinds
 * @nval:	values in @val
 * @val:	values for @kind
 *
 * Arguments checked are all int-sized for the kernel, or flags whose bits we
 * check live in the low word: only the low 32 bits are loaded.
 */
struct sb_rule {
	int nr;
	uint8_t roles;
	uint8_t kind;
	uint8_t arg;
	uint8_t nval;
	uint32_t val[SB_VALS_MAX];
};

#define ALLOW(name, roles)		{ __NR_##name, roles, SB_ALLOW, 0, 0, { 0 } }
#define FAIL(name, roles, e)		{ __NR_##name, roles, SB_ERRNO, 0, 1, { e } }
#define ARG_IN(name, roles, a, n, ...)	{ __NR_##name, roles, SB_ARG_IN, a, n, { __VA_ARGS__ } }
#define ARG_SELF(name, roles, a)	{ __NR_##name, roles, SB_ARG_SELF, a, 0, { 0 } }
#define ARG_MASK(name, roles, a, m, v)	{ __NR_##name, roles, SB_ARG_MASK, a, 2, { m, v } }

/* Namespace flags no thread of ours may create (CLONE_NEWTIME is left out:
 * clone() reads that bit as part of the exit signal, and only unshare() and
 * clone3() take it) */
#define SB_CLONE_NS	(CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | \
			 CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET)

/* The allow-lists of both roles, busiest first. */
static const struct sb_rule sb_rules[] = {
	/* Data path. Worker: host sockets, ring doorbells, timers. Pump
	 * threads: tun queues and doorbells (read/write), poll to sleep. */
	ALLOW(recvfrom, SB_W),		/* TCP data from host sockets (MSG_PEEK) */
	/* TCP data to host sockets, ICMP echo; control messages without fds
	 * (socket.sendall): the namespace child's ERROR and NS_SOCKET replies */
	ALLOW(sendto, SB_WN),
	ALLOW(recvmmsg, SB_W),		/* UDP datagrams from host sockets */
	ALLOW(sendmmsg, SB_W),		/* UDP datagrams (and GSO) to host sockets */
	ALLOW(read, SB_WN),		/* tun frames, eventfds, control socket */
	ALLOW(write, SB_WN),		/* tun frames, eventfds, log lines to stderr */
	ALLOW(getsockopt, SB_W),	/* SO_MEMINFO (send space), SO_ERROR of connects */
	ALLOW(futex, SB_WN),		/* the GIL, pump ring locks, thread joins */
#ifdef __NR_epoll_wait
	ALLOW(epoll_wait, SB_W),	/* the worker's event loop */
#endif
	ALLOW(epoll_pwait, SB_W),	/* same, where only the p-variant exists */
	ALLOW(epoll_ctl, SB_W),		/* host sockets in and out of the loop */
#ifdef __NR_poll
	ALLOW(poll, SB_WN),		/* pump threads sleep; Python's select.poll */
#endif
	ALLOW(ppoll, SB_WN),		/* same, where only ppoll exists */
	ALLOW(clock_nanosleep, SB_WN),	/* naps of wake-up moderation (usleep) */
	ALLOW(nanosleep, SB_WN),	/* same, older libcs */
	ALLOW(clock_gettime, SB_WN),	/* vDSO fallback: loop clock, time.monotonic() */
	ALLOW(timerfd_settime, SB_W),	/* network emulation's timer (netem.c) */
	ALLOW(gettimeofday, SB_WN),	/* vDSO fallback: time.time() for log records */
	ALLOW(recvmsg, SB_WN),		/* control messages, ICMP errors (IP_RECVERR) */
	ALLOW(sendmsg, SB_WN),		/* control messages (READY, FLOWS, ERROR) */
	/* New flows: host sockets of the two IP families only. No AF_UNIX
	 * (abstract sockets of the host's network namespace), no netlink, no
	 * packet sockets. The type is free: stream, datagram, ping sockets.
	 * Namespace child: sockets of the namespace, IPv4 and IPv6 only: for
	 * Network.socket() (ringnet/_nssocket.py), passed to the orchestrator,
	 * and the fresh TCP sockets of the splice route (splice.c), handed to
	 * the worker, which connects them. Without capabilities it cannot make
	 * raw ones, and such a socket reaches only what the tun device it holds
	 * reaches anyway. */
	ARG_IN(socket, SB_WN, 0, 2, AF_INET, AF_INET6),
	/* Namespace child: the splice socket of a worker replaced after a crash
	 * (ringnet/_supervise.py), a pair of unnamed unix sockets: it reaches
	 * nothing but its other end, passed to the new worker in HELLO. */
	ARG_IN(socketpair, SB_N, 0, 1, AF_UNIX),
	ALLOW(connect, SB_W),		/* TCP connects, connected UDP and ping sockets */
	/* Worker, splice route: two pipes per spliced connection, data moved
	 * socket -> pipe -> socket */
	ALLOW(splice, SB_W),
	ALLOW(pipe2, SB_W),
	ALLOW(bind, SB_W),		/* UDP sources picked for a flow */
	ALLOW(setsockopt, SB_W),	/* NODELAY, PEEK_OFF, RECVERR, buffers, UDP_GRO, LINGER */
	ALLOW(getsockname, SB_W),	/* a flow's host port */
	ALLOW(getpeername, SB_W),	/* a flow's host peer; a published port's client */
	ALLOW(accept4, SB_W),		/* clients of published ports (forward.c) */
	ALLOW(shutdown, SB_W),		/* TCP half-close */
	ALLOW(close, SB_WN),		/* flows' sockets, fds of control messages */
	ALLOW(getrandom, SB_WN),	/* TCP initial sequence numbers; Python's os.urandom */
	/* fcntl: file status and fd flags (O_NONBLOCK, FD_CLOEXEC) only; never
	 * F_SETOWN/F_SETSIG, which would send SIGIO to a process of our choice */
	ARG_IN(fcntl, SB_N, 1, 4, F_GETFD, F_SETFD, F_GETFL, F_SETFL),
	/* the worker also sizes the pipes of spliced connections (splice.c) */
	ARG_IN(fcntl, SB_W, 1, 5, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_SETPIPE_SZ),
	/* ioctl: the few requests Python's socket and os modules make on fds we
	 * hold (setblocking: FIONBIO; set_inheritable: FIOCLEX/FIONCLEX) and the
	 * socket queue sizes; never a tun (TUNSET*) or interface request. */
	ARG_IN(ioctl, SB_WN, 1, 5, FIONBIO, FIOCLEX, FIONCLEX, FIONREAD, TIOCOUTQ),
	/* Memory: malloc, pymalloc arenas, mappings of rings and counters
	 * (unmapped at exit), thread stacks. Never executable memory: no new
	 * code can be mapped or made executable. */
	ARG_MASK(mmap, SB_WN, 2, PROT_EXEC, 0),
	ARG_MASK(mprotect, SB_WN, 2, PROT_EXEC, 0),
	ALLOW(munmap, SB_WN),
	ALLOW(mremap, SB_WN),		/* realloc() of large blocks */
	ALLOW(madvise, SB_WN),		/* free() and thread exit give memory back */
	ALLOW(brk, SB_WN),
	/* Signals: Python's SIGTERM handler unwinds a child in order; glibc
	 * blocks signals around thread creation; abort() signals itself. */
	ALLOW(rt_sigaction, SB_WN),
	ALLOW(rt_sigprocmask, SB_WN),
	ALLOW(rt_sigreturn, SB_WN),
	ALLOW(sigaltstack, SB_WN),	/* faulthandler, when enabled */
	ALLOW(restart_syscall, SB_WN),
	ARG_SELF(kill, SB_WN, 0),	/* only ourselves: raise() in older libcs */
	ARG_SELF(tgkill, SB_WN, 0),	/* only threads of ours: raise(), abort() */
	/* Identity, for log lines (the ICMP one names our group) */
	ALLOW(getpid, SB_WN),
	ALLOW(gettid, SB_WN),
	ALLOW(getuid, SB_WN),
	ALLOW(geteuid, SB_WN),
	ALLOW(getgid, SB_WN),
	ALLOW(getegid, SB_WN),
	/* fstat() of an fd (glibc makes it newfstatat(fd, "", AT_EMPTY_PATH)):
	 * Python asks before using an fd. With a path, it would look at the
	 * empty root only; still refused. */
	ARG_MASK(newfstatat, SB_WN, 3, AT_EMPTY_PATH, AT_EMPTY_PATH),
	ALLOW(fstat, SB_WN),
	ALLOW(lseek, SB_WN),		/* Python's io on the standard streams */
	ALLOW(writev, SB_WN),		/* glibc's fatal error messages before abort() */
	ALLOW(sched_yield, SB_WN),	/* lock back-off in libc */
	/* Pump threads: created once at start (after the sandbox), named,
	 * registered with the kernel by glibc, stopped through an eventfd. */
	ARG_MASK(clone, SB_N, 0, CLONE_THREAD | SB_CLONE_NS, CLONE_THREAD),
#ifdef __NR_clone3
	FAIL(clone3, SB_WN, ENOSYS),	/* so that glibc falls back to clone() */
#endif
	ALLOW(set_robust_list, SB_N),	/* glibc, in every new thread */
#ifdef __NR_rseq
	ALLOW(rseq, SB_N),		/* glibc, in every new thread */
#endif
	ARG_IN(prctl, SB_N, 0, 1, PR_SET_NAME),	/* "rn-pump-N" thread names */
	ALLOW(eventfd2, SB_N),		/* the pump's stop doorbell */
	/* Pump threads ask for a short scheduler slice (slice.c), for
	 * themselves only (pid 0 is the calling thread) */
	ARG_IN(sched_getattr, SB_N, 0, 1, 0),
	ARG_IN(sched_setattr, SB_N, 0, 1, 0),
	/* The end: threads, then the process */
	ALLOW(exit, SB_WN),
	ALLOW(exit_group, SB_WN),
};

#define SB_PROG_MAX	1024u

/**
 * struct sb_prog - a BPF program being assembled
 * @ins:	instructions
 * @n:		instructions used
 * @overflow:	set when an instruction did not fit
 */
struct sb_prog {
	struct sock_filter ins[SB_PROG_MAX];
	unsigned int n;
	int overflow;
};

/**
 * sb_emit() - append one instruction
 * @p:		program
 * @code:	BPF opcode
 * @jt:		jump if true (relative)
 * @jf:		jump if false (relative)
 * @k:		operand
 */
static void sb_emit(struct sb_prog *p, uint16_t code, uint8_t jt, uint8_t jf, uint32_t k)
{
	if (p->n >= SB_PROG_MAX) {
		p->overflow = 1;
		return;
	}
	p->ins[p->n++] = (struct sock_filter){ code, jt, jf, k };
}

/* Offset of the low word of argument @i in struct seccomp_data (little endian) */
#define SB_ARG_LO(i)	((uint32_t)(offsetof(struct seccomp_data, args) + 8u * (i)))

/**
 * sb_emit_rule() - append the instructions of one rule
 * @p:		program
 * @r:		rule
 * @self:	our process id, for SB_ARG_SELF
 *
 * The accumulator holds the system call number on entry; every path of the
 * rule's body ends in a return, so it still holds it for the next rule when
 * the number did not match.
 */
static void sb_emit_rule(struct sb_prog *p, const struct sb_rule *r, uint32_t self)
{
	uint32_t vals[SB_VALS_MAX];
	unsigned int n = r->nval, i;

	switch (r->kind) {
	case SB_ALLOW:
		sb_emit(p, BPF_JMP | BPF_JEQ | BPF_K, 0, 1, (uint32_t)r->nr);
		sb_emit(p, BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ALLOW);
		return;
	case SB_ERRNO:
		sb_emit(p, BPF_JMP | BPF_JEQ | BPF_K, 0, 1, (uint32_t)r->nr);
		sb_emit(p, BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ERRNO | (r->val[0] & SECCOMP_RET_DATA));
		return;
	case SB_ARG_MASK:
		/* ld arg; and mask; jeq value -> allow; deny; allow */
		sb_emit(p, BPF_JMP | BPF_JEQ | BPF_K, 0, 5, (uint32_t)r->nr);
		sb_emit(p, BPF_LD | BPF_W | BPF_ABS, 0, 0, SB_ARG_LO(r->arg));
		sb_emit(p, BPF_ALU | BPF_AND | BPF_K, 0, 0, r->val[0]);
		sb_emit(p, BPF_JMP | BPF_JEQ | BPF_K, 1, 0, r->val[1]);
		sb_emit(p, BPF_RET | BPF_K, 0, 0, SB_DENY);
		sb_emit(p, BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ALLOW);
		return;
	case SB_ARG_SELF:
		vals[0] = self;
		n = 1;
		break;
	default: /* SB_ARG_IN */
		memcpy(vals, r->val, sizeof(vals));
		break;
	}
	/* ld arg; jeq v0 -> allow; ... jeq vn-1 -> allow; deny; allow */
	sb_emit(p, BPF_JMP | BPF_JEQ | BPF_K, 0, (uint8_t)(n + 3), (uint32_t)r->nr);
	sb_emit(p, BPF_LD | BPF_W | BPF_ABS, 0, 0, SB_ARG_LO(r->arg));
	for (i = 0; i < n; i++)
		sb_emit(p, BPF_JMP | BPF_JEQ | BPF_K, (uint8_t)(n - i), 0, vals[i]);
	sb_emit(p, BPF_RET | BPF_K, 0, 0, SB_DENY);
	sb_emit(p, BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ALLOW);
}

/**
 * sb_build() - assemble the filter of one role
 * @p:		program to fill
 * @role:	RN_SANDBOX_ROLE_*
 * @nrules:	set to the number of rules of the role
 *
 * Return: 0, -ENOSYS on an architecture the filter does not know, -E2BIG if
 * the program did not fit
 */
static int sb_build(struct sb_prog *p, uint32_t role, uint32_t *nrules)
{
#ifdef SB_AUDIT_ARCH
	uint32_t self = (uint32_t)getpid();
	size_t i;

	p->n = 0;
	p->overflow = 0;
	*nrules = 0;
	sb_emit(p, BPF_LD | BPF_W | BPF_ABS, 0, 0, offsetof(struct seccomp_data, arch));
	sb_emit(p, BPF_JMP | BPF_JEQ | BPF_K, 1, 0, SB_AUDIT_ARCH);
	sb_emit(p, BPF_RET | BPF_K, 0, 0, SECCOMP_RET_KILL_PROCESS);
	sb_emit(p, BPF_LD | BPF_W | BPF_ABS, 0, 0, offsetof(struct seccomp_data, nr));
#ifdef SB_X32_SYSCALL_BIT
	sb_emit(p, BPF_JMP | BPF_JGE | BPF_K, 0, 1, SB_X32_SYSCALL_BIT);
	sb_emit(p, BPF_RET | BPF_K, 0, 0, SECCOMP_RET_KILL_PROCESS);
#endif
	for (i = 0; i < sizeof(sb_rules) / sizeof(sb_rules[0]); i++) {
		if (!(sb_rules[i].roles & role))
			continue;
		sb_emit_rule(p, &sb_rules[i], self);
		if (sb_rules[i].kind != SB_ERRNO)
			(*nrules)++;
	}
	sb_emit(p, BPF_RET | BPF_K, 0, 0, SB_DENY);
	return p->overflow ? -E2BIG : 0;
#else
	(void)p;
	(void)role;
	*nrules = 0;
	return -ENOSYS;
#endif
}

/**
 * sb_seccomp() - install the role's filter on every thread
 * @role:	RN_SANDBOX_ROLE_*
 * @nrules:	set to the number of system calls allowed
 *
 * Return: 0 or negative errno (-ESRCH: a thread of ours has another filter)
 */
static int sb_seccomp(uint32_t role, uint32_t *nrules)
{
	static struct sb_prog prog;	/* 8 KiB: not on the stack */
	struct sock_fprog fprog;
	long rc;
	int err;

	if ((err = sb_build(&prog, role, nrules)))
		return err;
	fprog.len = (unsigned short)prog.n;
	fprog.filter = prog.ins;
	rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fprog);
	if (rc < 0)
		return -errno;
	return rc ? -ESRCH : 0;	/* rc > 0: the id of a thread that could not sync */
}

/**
 * sb_write_file() - write a short string to a file (the /proc/self id maps)
 * @path:	file
 * @text:	contents
 *
 * Return: 0 or negative errno
 */
static int sb_write_file(const char *path, const char *text)
{
	size_t len = strlen(text);
	ssize_t n;
	int fd, err = 0;

	if ((fd = open(path, O_WRONLY | O_CLOEXEC)) < 0)
		return -errno;
	n = write(fd, text, len);
	if (n < 0)
		err = -errno;
	else if ((size_t)n != len)
		err = -EIO;
	close(fd);
	return err;
}

/**
 * sb_userns() - move into a new user namespace, keeping our uid and gid
 *
 * The process must be single-threaded (EINVAL otherwise).
 *
 * Return: 0 or negative errno
 */
static int sb_userns(void)
{
	char map[64];
	uid_t uid = getuid();
	gid_t gid = getgid();
	int err;

	if (unshare(CLONE_NEWUSER))
		return -errno;
	err = sb_write_file("/proc/self/setgroups", "deny");
	if (err && err != -ENOENT)	/* ENOENT: kernels before 3.19 have no such file */
		return err;
	snprintf(map, sizeof(map), "%u %u 1\n", (unsigned int)gid, (unsigned int)gid);
	if ((err = sb_write_file("/proc/self/gid_map", map)))
		return err;
	snprintf(map, sizeof(map), "%u %u 1\n", (unsigned int)uid, (unsigned int)uid);
	return sb_write_file("/proc/self/uid_map", map);
}

/**
 * sb_empty_root() - new mount namespace whose root is an empty read-only tmpfs
 *
 * Needs CAP_SYS_ADMIN in the current user namespace.
 *
 * Return: 0 or negative errno
 */
static int sb_empty_root(void)
{
	static const char *const where[] = { "/tmp", "/proc", "/dev" };
	const unsigned long flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY;
	size_t i;
	int err = -ENOENT;

	if (unshare(CLONE_NEWNS))
		return -errno;
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
		return -errno;
	for (i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
		if (!mount("ringnet-sandbox", where[i], "tmpfs", flags,
			   "size=4k,nr_inodes=2,mode=0555")) {
			err = 0;
			break;
		}
		err = -errno;
	}
	if (err)
		return err;
	if (chdir(where[i]))
		return -errno;
	/* The old root ends up stacked on "." and is detached right away */
	if (syscall(SYS_pivot_root, ".", "."))
		return -errno;
	if (umount2(".", MNT_DETACH))
		return -errno;
	if (chdir("/"))
		return -errno;
	return 0;
}

/**
 * sb_drop_caps() - empty every capability set of the calling thread
 *
 * Return: 0 or negative errno (-EPERM: a capability we hold could not be
 * dropped)
 */
static int sb_drop_caps(void)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
	unsigned long cap;
	int i;

	for (cap = 0; cap < 64; cap++) {
		int in = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);

		if (in < 0)	/* EINVAL: past the last capability this kernel has */
			break;
		if (in && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0))
			return -errno;
	}
	if (prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED |
		  SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED |
		  SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE |
		  SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED, 0, 0, 0))
		return -errno;
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) && errno != EINVAL)
		return -errno;	/* EINVAL: no ambient capabilities before 4.3 */
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data))
		return -errno;
	if (syscall(SYS_capget, &hdr, data))
		return -errno;
	for (i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) {
		if (data[i].effective || data[i].permitted || data[i].inheritable)
			return -EPERM;
	}
	return 0;
}

/**
 * sb_threads() - threads of this process, from /proc/self/stat
 *
 * Return: the count, or negative errno
 */
static int sb_threads(void)
{
	char buf[1024], *p;
	ssize_t n;
	int fd, threads = 0;

	if ((fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC)) < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	buf[n] = '\0';
	/* After the command name (which may hold anything, so after the last
	 * ')'), num_threads is the 18th field: state is the 1st. */
	if (!(p = strrchr(buf, ')')) ||
	    sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %d",
		   &threads) != 1 || threads < 1)
		return -EIO;
	return threads;
}

/**
 * sb_step() - take one step
 * @step:	RN_SANDBOX_* bit
 * @role:	RN_SANDBOX_ROLE_*
 * @nrules:	set by the seccomp step
 *
 * Return: 0 or negative errno
 */
static int sb_step(uint32_t step, uint32_t role, uint32_t *nrules)
{
	switch (step) {
	case RN_SANDBOX_NO_NEW_PRIVS:
		return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ? -errno : 0;
	case RN_SANDBOX_USERNS:
		return sb_userns();
	case RN_SANDBOX_MOUNTNS:
		return sb_empty_root();
	case RN_SANDBOX_NOT_DUMPABLE:
		if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0))
			return -errno;
		return prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0 ? 0 : -EPERM;
	case RN_SANDBOX_NO_CAPS:
		return sb_drop_caps();
	case RN_SANDBOX_SECCOMP:
		return sb_seccomp(role, nrules);
	}
	return -EINVAL;
}

/**
 * rn_sandbox_enter() - isolate the calling process (see the theory of operation)
 * @p:		role and steps
 * @out:	what was done; on failure, which step failed and why
 *
 * Takes the steps of @p->steps in order and stops at the first that fails:
 * the caller is expected to give up then (the process is half isolated).
 * Steps 2, 3 and 5 act on the calling thread only, so when any of them is
 * asked for, a process with another thread fails first with
 * RN_SANDBOX_ONE_THREAD and EBUSY: call before starting threads.
 *
 * Return: 0, or the negative errno of the failed step (-EINVAL for an
 * unknown role or step, -ENOSYS for the seccomp step on an architecture the
 * filter does not know)
 */
int rn_sandbox_enter(const struct rn_sandbox_params *p, struct rn_sandbox_report *out)
{
	uint32_t step;
	int err;

	memset(out, 0, sizeof(*out));
	if ((p->role != RN_SANDBOX_ROLE_WORKER && p->role != RN_SANDBOX_ROLE_NSCHILD) ||
	    (p->steps & ~RN_SANDBOX_ALL)) {
		out->err = EINVAL;
		return -EINVAL;
	}
	if (p->steps & (RN_SANDBOX_USERNS | RN_SANDBOX_MOUNTNS | RN_SANDBOX_NO_CAPS)) {
		err = sb_threads();
		if (err != 1) {
			out->failed = RN_SANDBOX_ONE_THREAD;
			out->err = err < 0 ? -err : EBUSY;
			return -out->err;
		}
	}
	for (step = RN_SANDBOX_NO_NEW_PRIVS; step & RN_SANDBOX_ALL; step <<= 1) {
		if (!(p->steps & step))
			continue;
		if ((err = sb_step(step, p->role, &out->nrules))) {
			out->failed = step;
			out->err = -err;
			return err;
		}
		out->applied |= step;
	}
	return 0;
}

/**
 * rn_sandbox_step_name() - what a step protects, for log lines
 * @step:	one RN_SANDBOX_* bit
 *
 * Return: a static string ("?" for an unknown step)
 */
const char *rn_sandbox_step_name(uint32_t step)
{
	switch (step) {
	case RN_SANDBOX_NO_NEW_PRIVS:	return "no_new_privs";
	case RN_SANDBOX_USERNS:		return "own user namespace";
	case RN_SANDBOX_MOUNTNS:	return "empty mount namespace";
	case RN_SANDBOX_NOT_DUMPABLE:	return "not dumpable";
	case RN_SANDBOX_NO_CAPS:	return "no capabilities";
	case RN_SANDBOX_SECCOMP:	return "seccomp allow-list";
	case RN_SANDBOX_ONE_THREAD:	return "single thread";
	}
	return "?";
}

/**
 * rn_sandbox_step_call() - the system calls a step makes, for error messages
 * @step:	one RN_SANDBOX_* bit
 *
 * Return: a static string ("?" for an unknown step)
 */
const char *rn_sandbox_step_call(uint32_t step)
{
	switch (step) {
	case RN_SANDBOX_NO_NEW_PRIVS:	return "prctl(PR_SET_NO_NEW_PRIVS)";
	case RN_SANDBOX_USERNS:		return "unshare(CLONE_NEWUSER) and id maps";
	case RN_SANDBOX_MOUNTNS:	return "unshare(CLONE_NEWNS), tmpfs mount, pivot_root";
	case RN_SANDBOX_NOT_DUMPABLE:	return "prctl(PR_SET_DUMPABLE, 0)";
	case RN_SANDBOX_NO_CAPS:	return "prctl(PR_CAPBSET_DROP), capset";
	case RN_SANDBOX_SECCOMP:	return "seccomp(SECCOMP_SET_MODE_FILTER, TSYNC)";
	case RN_SANDBOX_ONE_THREAD:	return "a look at /proc/self/stat for other threads";
	}
	return "?";
}
