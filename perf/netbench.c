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
 *   netbench rr ADDR PORT SECONDS STREAMS   STREAMS connections, each sending 1
 *                                           byte and waiting for the echo
 *   netbench crr ADDR PORT SECONDS STREAMS MAX_CONNS
 *                                           STREAMS threads, each: connect, send 1
 *                                           byte, read the echo, close
 *   netbench udp ADDR PORT TIMEOUT_MS       one datagram out and its echo back
 *
 * Clients print one JSON object on stdout and exit 0 when at least one operation
 * succeeded, 1 otherwise (the JSON then names the first error). Every loop is
 * bounded in time and count; every socket has 2 s send and receive timeouts.
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

struct job {
	struct sockaddr_in addr;
	double seconds;
	uint64_t max_ops;               /* per thread */
	int crr;
	/* results */
	uint64_t ops;
	uint64_t errors;
	char error[128];
	uint32_t *lat_ns;               /* MAX_SAMPLES */
	uint64_t nlat;
	uint64_t per_second[MAX_SECONDS + 1];
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

static void *client_thread(void *arg)
{
	struct job *j = arg;
	double t0 = now_s(), end = t0 + j->seconds;
	int fd = -1;

	while (j->ops < j->max_ops) {
		double a = now_s(), b;

		if (a >= end)
			break;
		if (fd < 0 && (fd = tcp_connect(j)) < 0) {
			if (!j->crr || j->errors > 100)
				break;
			continue;
		}
		if (round_trip(j, fd)) {
			close(fd);
			fd = -1;
			if (!j->crr || j->errors > 100)
				break;
			continue;
		}
		if (j->crr) {
			close(fd);
			fd = -1;
		}
		b = now_s();
		j->ops++;
		if (j->nlat < MAX_SAMPLES)
			j->lat_ns[j->nlat++] = (uint32_t)((b - a) * 1e9 > 4e9 ? 4e9 : (b - a) * 1e9);
		j->per_second[(int)(b - t0) > MAX_SECONDS ? MAX_SECONDS : (int)(b - t0)]++;
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

/* run_clients() - the rr and crr modes; prints the JSON result. Return: exit code */
static int run_clients(struct sockaddr_in *addr, double seconds, int streams, int crr,
		       uint64_t max_conns)
{
	struct job *jobs = calloc(streams, sizeof(*jobs));
	pthread_t th[MAX_STREAMS];
	uint64_t ops = 0, errors = 0, nlat = 0;
	const char *error = "";
	uint32_t *all;
	double t0, elapsed;
	int i, secs;

	if (!jobs)
		return 2;
	t0 = now_s();
	for (i = 0; i < streams; i++) {
		jobs[i].addr = *addr;
		jobs[i].seconds = seconds;
		jobs[i].crr = crr;
		jobs[i].max_ops = crr ? (max_conns + streams - 1) / streams : UINT64_MAX;
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
	       "\"error\": \"%s\", \"samples\": %llu", ops ? "true" : "false",
	       (unsigned long long)ops, elapsed, ops / elapsed, (unsigned long long)errors, error,
	       (unsigned long long)nlat);
	if (nlat)
		printf(", \"p50_us\": %.3f, \"p99_us\": %.3f, \"max_us\": %.3f", all[nlat / 2] / 1e3,
		       all[(uint64_t)(nlat * 0.99)] / 1e3, all[nlat - 1] / 1e3);
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
		fprintf(stderr, "usage: netbench server|rr|crr|udp ADDR PORT ... (see netbench.c)\n");
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
		return run_clients(&addr, seconds, streams, 0, 0);
	if (!strcmp(argv[1], "crr") && argc >= 7)
		return run_clients(&addr, seconds, streams, 1, strtoull(argv[6], NULL, 10));
	return 2;
}
