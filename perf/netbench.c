// SPDX-License-Identifier: MIT
/* netbench.c - request/response and connection-rate loops for the perf harness.
 *
 * Built at run time by perf/sweep.py with the system compiler (cc -O2 -pthread).
 * Python would measure its own interpreter rather than the network stack: a
 * 1-byte round trip over host loopback takes about 10 us, a Python loop about as
 * much again.
 *
 *   netbench server ADDR PORT MAX_SECONDS   TCP and UDP echo on ADDR:PORT (PORT 0:
 *                                           any); prints "ready PORT" once
 *                                           listening; exits after MAX_SECONDS
 *   netbench rr ADDR PORT SECONDS STREAMS [MAX_OPS]
 *                                           STREAMS connections, each sending 1
 *                                           byte and waiting for the echo (the
 *                                           connect is not timed)
 *   netbench crr ADDR PORT SECONDS STREAMS MAX_CONNS
 *                                           STREAMS threads, each: connect, send 1
 *                                           byte, read the echo, close (FIN)
 *   netbench crr_rst ADDR PORT SECONDS STREAMS MAX_CONNS
 *                                           the same, closed with an RST
 *                                           (SO_LINGER 0): no TIME_WAIT anywhere
 *   netbench udp ADDR PORT TIMEOUT_MS       one datagram out and its echo back
 *
 * Clients print one JSON object on stdout and exit 0 when at least one operation
 * succeeded, 1 otherwise (the JSON then names the first error). Every loop is
 * bounded in time and count; every socket has 2 s send and receive timeouts.
 *
 * Theory of operation (latency). Every operation (one round trip; or connect,
 * round trip, close) is timed with CLOCK_MONOTONIC in three phases: connect,
 * round trip, close. The totals are kept (up to MAX_SAMPLES a thread) for p50,
 * p99, p99.9 and max; each phase's maximum is kept too. An operation over
 * SLOW_NS ("slow": the 2 ms budget for one connection) is counted, and
 * the MAX_SLOW slowest of each thread are kept with their start time (ms since
 * the run began), phases and thread; the JSON lists the OUTLIERS slowest of
 * all, so a stall can be placed in time and in the connection's life. The
 * run's start is printed on CLOCK_MONOTONIC and CLOCK_REALTIME (t0_mono_s,
 * t0_unix_s): t0 + t_ms lines an outlier up with a perf trace or a log.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_STREAMS 64
#define MAX_SECONDS 600
#define MAX_SAMPLES (1u << 22)      /* latency samples kept per thread */
#define IO_TIMEOUT_S 2
#define SLOW_NS 2000000u            /* an operation over 2 ms is "slow" */
#define MAX_SLOW 256                /* slow operations kept per thread */
#define OUTLIERS 32                 /* slowest operations printed */

enum mode { MODE_RR, MODE_CRR, MODE_CRR_RST };

/* one slow operation: when it started and where its time went */
struct slow_op {
	double t;                       /* start, seconds since the run began */
	uint32_t total_ns, connect_ns, rtt_ns, close_ns;
	int stream;
};

struct job {
	struct sockaddr_in addr;
	double seconds;
	uint64_t max_ops;               /* per thread */
	enum mode mode;
	int stream;
	double t0;                      /* the run's start (now_s()) */
	/* results */
	uint64_t ops;
	uint64_t errors;
	char error[128];
	uint32_t *lat_ns;               /* MAX_SAMPLES */
	uint64_t nlat;
	uint64_t per_second[MAX_SECONDS + 1];
	uint64_t nslow;                 /* operations over SLOW_NS */
	struct slow_op slow[MAX_SLOW];  /* the first MAX_SLOW of them */
	uint32_t max_connect_ns, max_rtt_ns, max_close_ns;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* set_timeouts() - 2 s send/receive timeouts (the send one also bounds connect()) */
static void set_timeouts(int fd)
{
	struct timeval tv = { .tv_sec = IO_TIMEOUT_S };

	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

/* note_error() - count an error, keep the first one's text. Return: -1 */
static int note_error(struct job *j, const char *what)
{
	/* a connect() or read() cut short by the 2 s timeout says EINPROGRESS or EAGAIN */
	int timed_out = errno == EINPROGRESS || errno == EAGAIN;

	if (!j->errors++)
		snprintf(j->error, sizeof(j->error), "%s: %s", what,
			 timed_out ? "no answer within 2 s" : strerror(errno ? errno : EIO));
	return -1;
}

/* tcp_connect() - a connected TCP socket with TCP_NODELAY. Return: fd, or -1 */
static int tcp_connect(struct job *j)
{
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return note_error(j, "socket");
	set_timeouts(fd);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&j->addr, sizeof(j->addr))) {
		note_error(j, "connect");
		close(fd);
		return -1;
	}
	return fd;
}

/* round_trip() - send one byte on @fd and read its echo. Return: 0, or -1 */
static int round_trip(struct job *j, int fd)
{
	char c = 'x';
	ssize_t n = write(fd, &c, 1);

	if (n != 1)
		return note_error(j, "write");
	n = read(fd, &c, 1);
	if (n != 1) {
		if (n == 0)
			errno = ECONNRESET;
		return note_error(j, "read");
	}
	return 0;
}

/**
 * ns() - a duration as whole nanoseconds, clamped to 0..4 s (it is kept as a uint32_t)
 * @seconds: the duration
 *
 * Return: nanoseconds
 */
static uint32_t ns(double seconds)
{
	double v = seconds * 1e9;

	return v > 4e9 ? 4000000000u : v < 0 ? 0 : (uint32_t)v;
}

/**
 * close_rst() - close a socket with an RST rather than a FIN (SO_LINGER with no timeout)
 * @fd: the connected socket; closed on return
 */
static void close_rst(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/**
 * record() - account one finished operation: its total, phases, second and slowness
 * @j: the thread's job
 * @a: start (now_s())
 * @c: connected (rr: right after @a, its connection is older than the operation)
 * @d: the echo read
 * @b: closed (rr: right after @d, the connection stays open)
 */
static void record(struct job *j, double a, double c, double d, double b)
{
	uint32_t total = ns(b - a), cn = ns(c - a), rt = ns(d - c), cl = ns(b - d);

	j->ops++;
	if (j->nlat < MAX_SAMPLES)
		j->lat_ns[j->nlat++] = total;
	j->per_second[(int)(b - j->t0) > MAX_SECONDS ? MAX_SECONDS : (int)(b - j->t0)]++;
	if (cn > j->max_connect_ns)
		j->max_connect_ns = cn;
	if (rt > j->max_rtt_ns)
		j->max_rtt_ns = rt;
	if (cl > j->max_close_ns)
		j->max_close_ns = cl;
	if (total > SLOW_NS) {
		struct slow_op op = { a - j->t0, total, cn, rt, cl, j->stream };
		uint64_t i, low = 0;

		if (j->nslow < MAX_SLOW) {
			j->slow[j->nslow] = op;
		} else {
			/* full: the fastest kept one makes room (slow operations are rare) */
			for (i = 1; i < MAX_SLOW; i++)
				if (j->slow[i].total_ns < j->slow[low].total_ns)
					low = i;
			if (total > j->slow[low].total_ns)
				j->slow[low] = op;
		}
		j->nslow++;
	}
}

/**
 * client_thread() - one stream's loop (rr, crr or crr_rst) until its time or count ends
 * @arg: its struct job
 *
 * Return: NULL (the results are in the job)
 */
static void *client_thread(void *arg)
{
	struct job *j = arg;
	double end = j->t0 + j->seconds;
	int per_conn = j->mode != MODE_RR, fd = -1;

	while (j->ops < j->max_ops) {
		double a = now_s(), b, c, d;

		if (a >= end)
			break;
		if (fd < 0) {
			if ((fd = tcp_connect(j)) < 0) {
				if (!per_conn || j->errors > 100)
					break;
				continue;
			}
			/* rr: the connection is set up once, outside any timed operation */
			if (!per_conn)
				a = now_s();
		}
		c = now_s();
		if (round_trip(j, fd)) {
			close(fd);
			fd = -1;
			if (!per_conn || j->errors > 100)
				break;
			continue;
		}
		d = now_s();
		if (per_conn) {
			if (j->mode == MODE_CRR_RST)
				close_rst(fd);
			else
				close(fd);
			fd = -1;
		}
		b = now_s();
		record(j, a, c, d, b);
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/**
 * cmp_slow() - qsort() order of struct slow_op: slowest first
 * @a: one
 * @b: the other
 *
 * Return: negative when @a is slower, positive when faster, else 0
 */
static int cmp_slow(const void *a, const void *b)
{
	uint32_t x = ((const struct slow_op *)a)->total_ns, y = ((const struct slow_op *)b)->total_ns;

	return x > y ? -1 : x < y;
}

/**
 * print_slow() - print the slow-operation figures of a run as JSON members: the threshold,
 *		  the count, each phase's maximum and the OUTLIERS slowest (sorts each job's list)
 * @jobs: the finished jobs
 * @streams: how many
 */
static void print_slow(struct job *jobs, int streams)
{
	static struct slow_op top[MAX_STREAMS * OUTLIERS];
	uint32_t mc = 0, mr = 0, ml = 0;
	uint64_t nslow = 0;
	int i, n = 0;
	uint64_t k;

	for (i = 0; i < streams; i++) {
		nslow += jobs[i].nslow;
		mc = jobs[i].max_connect_ns > mc ? jobs[i].max_connect_ns : mc;
		mr = jobs[i].max_rtt_ns > mr ? jobs[i].max_rtt_ns : mr;
		ml = jobs[i].max_close_ns > ml ? jobs[i].max_close_ns : ml;
	}
	printf(", \"slow_threshold_us\": %.0f, \"slow\": %llu, \"max_connect_us\": %.3f, "
	       "\"max_rtt_us\": %.3f, \"max_close_us\": %.3f, \"outliers\": [", SLOW_NS / 1e3,
	       (unsigned long long)nslow, mc / 1e3, mr / 1e3, ml / 1e3);
	/* the slowest OUTLIERS of each thread's kept ones, then the slowest OUTLIERS overall */
	for (i = 0; i < streams; i++) {
		struct job *j = &jobs[i];
		uint64_t kept = j->nslow < MAX_SLOW ? j->nslow : MAX_SLOW;

		qsort(j->slow, kept, sizeof(j->slow[0]), cmp_slow);
		for (k = 0; k < kept && k < OUTLIERS && n < (int)(sizeof(top) / sizeof(top[0])); k++)
			top[n++] = j->slow[k];
	}
	qsort(top, n, sizeof(top[0]), cmp_slow);
	for (i = 0; i < n && i < OUTLIERS; i++)
		printf("%s{\"t_ms\": %.3f, \"us\": %.3f, \"connect_us\": %.3f, \"rtt_us\": %.3f, "
		       "\"close_us\": %.3f, \"stream\": %d}", i ? ", " : "", top[i].t * 1e3,
		       top[i].total_ns / 1e3, top[i].connect_ns / 1e3, top[i].rtt_ns / 1e3,
		       top[i].close_ns / 1e3, top[i].stream);
	printf("]");
}

/**
 * run_clients() - the rr, crr and crr_rst modes; prints the JSON result
 * @addr: the echo server
 * @seconds: how long to run
 * @streams: client threads
 * @mode: what one operation is
 * @max_ops: operations at most, over all threads (0: no bound)
 *
 * Return: exit code (0 when some operation succeeded)
 */
static int run_clients(struct sockaddr_in *addr, double seconds, int streams, enum mode mode,
		       uint64_t max_ops)
{
	struct job *jobs = calloc(streams, sizeof(*jobs));
	pthread_t th[MAX_STREAMS];
	uint64_t ops = 0, errors = 0, nlat = 0;
	const char *error = "";
	uint32_t *all;
	double t0, t0_unix, elapsed;
	struct timespec real;
	int i, secs;

	if (!jobs)
		return 2;
	clock_gettime(CLOCK_REALTIME, &real);
	t0 = now_s();
	t0_unix = real.tv_sec + real.tv_nsec / 1e9;
	for (i = 0; i < streams; i++) {
		jobs[i].addr = *addr;
		jobs[i].seconds = seconds;
		jobs[i].mode = mode;
		jobs[i].stream = i;
		jobs[i].t0 = t0;
		jobs[i].max_ops = max_ops ? (max_ops + streams - 1) / streams : UINT64_MAX;
		jobs[i].lat_ns = malloc(MAX_SAMPLES * sizeof(uint32_t));
		if (!jobs[i].lat_ns || pthread_create(&th[i], NULL, client_thread, &jobs[i]))
			return 2;
	}
	for (i = 0; i < streams; i++)
		pthread_join(th[i], NULL);
	elapsed = now_s() - t0;
	for (i = 0; i < streams; i++) {
		ops += jobs[i].ops;
		errors += jobs[i].errors;
		nlat += jobs[i].nlat;
		if (!*error && jobs[i].errors)
			error = jobs[i].error;
	}
	all = malloc((nlat ? nlat : 1) * sizeof(uint32_t));
	if (!all)
		return 2;
	for (nlat = 0, i = 0; i < streams; i++) {
		memcpy(all + nlat, jobs[i].lat_ns, jobs[i].nlat * sizeof(uint32_t));
		nlat += jobs[i].nlat;
	}
	qsort(all, nlat, sizeof(uint32_t), cmp_u32);
	printf("{\"ok\": %s, \"ops\": %llu, \"seconds\": %.6f, \"ops_per_s\": %.3f, \"errors\": %llu, "
	       "\"error\": \"%s\", \"samples\": %llu, \"t0_mono_s\": %.6f, \"t0_unix_s\": %.6f",
	       ops ? "true" : "false", (unsigned long long)ops, elapsed, ops / elapsed,
	       (unsigned long long)errors, error, (unsigned long long)nlat, t0, t0_unix);
	if (nlat)
		printf(", \"p50_us\": %.3f, \"p99_us\": %.3f, \"p999_us\": %.3f, \"max_us\": %.3f",
		       all[nlat / 2] / 1e3, all[(uint64_t)(nlat * 0.99)] / 1e3,
		       all[(uint64_t)(nlat * 0.999)] / 1e3, all[nlat - 1] / 1e3);
	print_slow(jobs, streams);
	printf(", \"per_second\": [");
	secs = (int)seconds + (seconds > (int)seconds);
	for (i = 0; i < secs && i <= MAX_SECONDS; i++) {
		uint64_t n = 0;
		int k;

		for (k = 0; k < streams; k++)
			n += jobs[k].per_second[i];
		printf("%s%llu", i ? ", " : "", (unsigned long long)n);
	}
	printf("]}\n");
	return ops ? 0 : 1;
}

/* udp_once() - one datagram to @addr and its echo. Return: exit code */
static int udp_once(struct sockaddr_in *addr, int timeout_ms)
{
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = timeout_ms % 1000 * 1000 };
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	char buf[64];
	double t0 = now_s();
	ssize_t n;

	if (fd < 0)
		return 2;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (sendto(fd, "ping", 4, 0, (struct sockaddr *)addr, sizeof(*addr)) != 4 ||
	    (n = recv(fd, buf, sizeof(buf), 0)) != 4 || memcmp(buf, "ping", 4)) {
		printf("{\"ok\": false, \"error\": \"udp echo: %s\"}\n",
		       errno == EAGAIN ? "no reply in time" : errno ? strerror(errno) : "wrong reply");
		return 1;
	}
	printf("{\"ok\": true, \"rtt_us\": %.3f}\n", (now_s() - t0) * 1e6);
	return 0;
}

/* serve() - TCP and UDP echo until @max_seconds pass. Return: exit code */
static int serve(struct sockaddr_in *addr, double max_seconds)
{
	int one = 1, lfd, ufd, ep;
	struct epoll_event ev = { .events = EPOLLIN }, evs[64];
	socklen_t len = sizeof(*addr);
	double end = now_s() + max_seconds;
	char buf[65536];

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	ufd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (lfd < 0 || ufd < 0 || ep < 0)
		return 2;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)addr, sizeof(*addr)) || listen(lfd, 4096) ||
	    getsockname(lfd, (struct sockaddr *)addr, &len) ||
	    bind(ufd, (struct sockaddr *)addr, sizeof(*addr))) {
		fprintf(stderr, "netbench server: %s\n", strerror(errno));
		return 2;
	}
	ev.data.fd = lfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	ev.data.fd = ufd;
	epoll_ctl(ep, EPOLL_CTL_ADD, ufd, &ev);
	printf("ready %d\n", ntohs(addr->sin_port));
	fflush(stdout);
	while (now_s() < end) {
		int i, n = epoll_wait(ep, evs, 64, 200);

		for (i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			ssize_t r;

			if (fd == lfd) {
				int c;

				while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
					setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					ev.data.fd = c;
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
				}
			} else if (fd == ufd) {
				struct sockaddr_in from;
				socklen_t flen = sizeof(from);

				r = recvfrom(ufd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);
				if (r > 0)
					sendto(ufd, buf, r, 0, (struct sockaddr *)&from, flen);
			} else {
				r = read(fd, buf, sizeof(buf));
				/* 1-byte requests: a short write is not expected; a full
				 * send buffer ends this connection */
				if (r <= 0 ? !(r < 0 && errno == EAGAIN) : write(fd, buf, r) != r)
					close(fd);
			}
		}
	}
	return 0;
}

static int parse_addr(const char *host, const char *port, struct sockaddr_in *a)
{
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)atoi(port));
	return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

int main(int argc, char **argv)
{
	struct sockaddr_in addr;
	double seconds;
	int streams;

	setvbuf(stdout, NULL, _IOFBF, 1 << 16);
	if (argc < 5 || parse_addr(argv[2], argv[3], &addr)) {
		fprintf(stderr, "usage: netbench server|rr|crr|crr_rst|udp ADDR PORT ... (see netbench.c)\n");
		return 2;
	}
	if (!strcmp(argv[1], "server"))
		return serve(&addr, atof(argv[4]));
	if (!strcmp(argv[1], "udp"))
		return udp_once(&addr, atoi(argv[4]));
	if (argc < 6)
		return 2;
	seconds = atof(argv[4]);
	streams = atoi(argv[5]);
	if (seconds <= 0 || seconds > MAX_SECONDS || streams < 1 || streams > MAX_STREAMS)
		return 2;
	if (!strcmp(argv[1], "rr"))
		return run_clients(&addr, seconds, streams, MODE_RR,
				   argc >= 7 ? strtoull(argv[6], NULL, 10) : 0);
	if (!strcmp(argv[1], "crr") && argc >= 7)
		return run_clients(&addr, seconds, streams, MODE_CRR, strtoull(argv[6], NULL, 10));
	if (!strcmp(argv[1], "crr_rst") && argc >= 7)
		return run_clients(&addr, seconds, streams, MODE_CRR_RST, strtoull(argv[6], NULL, 10));
	return 2;
}
