/* The lower bound: the leanest responder there can be, for comparison only.
 *
 * An rtnetlink listener (RTMGRP_LINK, 4 MiB buffer, like wgnapid) that, for
 * each new link named b*, hands the name to one of 4 threads which open
 * /sys/class/net/NAME/threaded and write "1\n". No read before, no read-back,
 * no policy, no log, no retry: what is left is the kernel's own cost and the
 * scheduling of two CPUs. Speaks the protocol of bench/alternatives.py: prints
 * "ready"; on SIGUSR1 prints "cpu SELF_NS 0 SEEN OK FAILED 0".
 */
#define _GNU_SOURCE
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
#include <unistd.h>

#define THREADS 4
#define QLEN 65536
#define MAX_IFINDEX (1 << 20)

static char queue[QLEN][16];
static unsigned head, tail;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t nonempty = PTHREAD_COND_INITIALIZER;
static unsigned long seen_count, ok, failed;
static unsigned char seen[MAX_IFINDEX];

static void write_threaded(const char *name)
{
	char path[64];
	snprintf(path, sizeof path, "/sys/class/net/%s/threaded", name);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	int good = fd >= 0 && write(fd, "1\n", 2) == 2;
	if (fd >= 0)
		close(fd);
	__atomic_add_fetch(good ? &ok : &failed, 1, __ATOMIC_RELAXED);
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
	for (;;) {
		struct pollfd fds[2] = {{.fd = sfd, .events = POLLIN}, {.fd = sock, .events = POLLIN}};
		if (poll(fds, 2, -1) < 0)
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
