/* The lower bound: the leanest responder there can be, for comparison only.
 *
 * An rtnetlink listener (RTMGRP_LINK, 4 MiB buffer, like wgnapid) that, for
 * each new link named b*, hands the name to one of 4 threads which open
 * /sys/class/net/NAME/threaded and write "1\n". No read before, no read-back,
 * no policy, no log: what is left is the kernel's own cost and the
 * scheduling of two CPUs. Speaks the protocol of bench/alternatives.py: prints
 * "ready"; on SIGUSR1 prints "cpu SELF_NS 0 SEEN OK FAILED 0".
 *
 * Waiting links (the write fails with EOPNOTSUPP: no NAPI yet) are the lower
 * bound of wgnapid's retries: the fd is kept open, and every RETRY_MS (0.9 x
 * the bench's pending_max_delay of 2 s) all of them are written again in one
 * wake-up of the main thread; a link is forgotten once a write succeeds or
 * fails otherwise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define THREADS 4
#define QLEN 65536
#define MAX_IFINDEX (1 << 20)
#define RETRY_MS 1800
#define MAX_WAITING (1 << 17)

static char queue[QLEN][16];
static unsigned head, tail;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t nonempty = PTHREAD_COND_INITIALIZER;
static unsigned long seen_count, ok, failed;
static unsigned char seen[MAX_IFINDEX];
static int waiting[MAX_WAITING];
static unsigned n_waiting;
static pthread_mutex_t waiting_lock = PTHREAD_MUTEX_INITIALIZER;

static void write_threaded(const char *name)
{
	char path[64];
	snprintf(path, sizeof path, "/sys/class/net/%s/threaded", name);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	int good = fd >= 0 && write(fd, "1\n", 2) == 2;
	if (fd >= 0 && !good && errno == EOPNOTSUPP) {
		pthread_mutex_lock(&waiting_lock);
		if (n_waiting < MAX_WAITING) {
			waiting[n_waiting++] = fd;
			fd = -1;
		}
		pthread_mutex_unlock(&waiting_lock);
		if (fd < 0)
			return;
	}
	if (fd >= 0)
		close(fd);
	__atomic_add_fetch(good ? &ok : &failed, 1, __ATOMIC_RELAXED);
}

/* One wake-up: every waiting link written again, on its kept fd. */
static void retry_waiting(void)
{
	pthread_mutex_lock(&waiting_lock);
	unsigned kept = 0;
	for (unsigned i = 0; i < n_waiting; i++) {
		int fd = waiting[i];
		if (pwrite(fd, "1\n", 2, 0) < 0 && errno == EOPNOTSUPP) {
			waiting[kept++] = fd;
			continue;
		}
		close(fd);
		__atomic_add_fetch(&ok, 1, __ATOMIC_RELAXED);
	}
	n_waiting = kept;
	pthread_mutex_unlock(&waiting_lock);
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void *writer(void *arg)
{
	(void)arg;
	for (;;) {
		char name[16];
		pthread_mutex_lock(&lock);
		while (head == tail)
			pthread_cond_wait(&nonempty, &lock);
		memcpy(name, queue[head++ % QLEN], sizeof name);
		pthread_mutex_unlock(&lock);
		write_threaded(name);
	}
	return NULL;
}

static void report_cpu(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	long long ns = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
		       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
	printf("cpu %lld 0 %lu %lu %lu 0\n", ns, seen_count,
	       __atomic_load_n(&ok, __ATOMIC_RELAXED), __atomic_load_n(&failed, __ATOMIC_RELAXED));
	fflush(stdout);
}

int main(void)
{
	/* Signals through a signalfd polled with the socket: a flag set by a
	 * handler just before a blocking recv would be seen only at the next
	 * message, which after a burst never comes. Blocked before the threads
	 * start, so they inherit the mask. */
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC);

	int sock = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	int size = 4 << 20;
	setsockopt(sock, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
	struct sockaddr_nl addr = {.nl_family = AF_NETLINK, .nl_groups = RTMGRP_LINK};
	if (sfd < 0 || sock < 0 || bind(sock, (struct sockaddr *)&addr, sizeof addr) < 0) {
		perror("floor: netlink/signalfd");
		return 1;
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_t t;
		pthread_create(&t, NULL, writer, NULL);
	}
	printf("ready\n");
	fflush(stdout);

	static char buf[1 << 20];
	long long next_retry = now_ms() + RETRY_MS;
	for (;;) {
		struct pollfd fds[2] = {{.fd = sfd, .events = POLLIN}, {.fd = sock, .events = POLLIN}};
		long long left = next_retry - now_ms();
		int timeout = n_waiting ? (left > 0 ? (int)left : 0) : -1;
		int r = poll(fds, 2, timeout);
		if (n_waiting && now_ms() >= next_retry) {
			retry_waiting();
			next_retry = now_ms() + RETRY_MS;
		} else if (!n_waiting) {
			next_retry = now_ms() + RETRY_MS;
		}
		if (r <= 0)
			continue;
		if (fds[0].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof si) == sizeof si) {
				if (si.ssi_signo != SIGUSR1)
					return 0;
				report_cpu();
			}
		}
		if (!(fds[1].revents & POLLIN))
			continue;
		ssize_t n = recv(sock, buf, sizeof buf, MSG_DONTWAIT);
		if (n < 0)
			continue;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type != RTM_NEWLINK)
				continue;
			struct ifinfomsg *ifi = NLMSG_DATA(h);
			if (ifi->ifi_index <= 0 || ifi->ifi_index >= MAX_IFINDEX || seen[ifi->ifi_index])
				continue;
			const char *name = NULL;
			int len = IFLA_PAYLOAD(h);
			for (struct rtattr *a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len))
				if (a->rta_type == IFLA_IFNAME)
					name = RTA_DATA(a);
			if (!name || name[0] != 'b')
				continue;
			seen[ifi->ifi_index] = 1;
			seen_count++;
			pthread_mutex_lock(&lock);
			strncpy(queue[tail % QLEN], name, 15);
			queue[tail++ % QLEN][15] = '\0';
			pthread_cond_signal(&nonempty);
			pthread_mutex_unlock(&lock);
		}
	}
}
