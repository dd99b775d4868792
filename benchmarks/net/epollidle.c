/* epollidle: a c1 echo server in C that waits for each request with one of
 * four epoll patterns, to show what a latency-bound (c1) cell measures on
 * a VM.  One connection at a time; per request: recv, send, recv again
 * until EAGAIN, then wait:
 *
 *   add-del        EPOLL_CTL_ADD before the wait, EPOLL_CTL_DEL after it
 *                  (aloop's sock_* operations before EPOLLONESHOT, the
 *                  stdlib's and uvloop's add_reader/remove_reader);
 *   oneshot        EPOLLONESHOT, re-armed with one EPOLL_CTL_MOD per wait
 *                  (aloop's sock_* operations now);
 *   persistent     registered once, level-triggered (aloop's and uvloop's
 *                  transports, rawecho);
 *   oneshot+churn  oneshot, plus an ADD and a DEL of an unrelated eventfd
 *                  per wait: work that changes nothing but frees an epoll
 *                  item.
 *
 * When the connection closes it prints one JSON line on stdout:
 * {"mode": ..., "requests": N, "cpu_us": server CPU (user+sys) per request}.
 * It first prints {"event": "ready", "port": N}.  alarm(120) bounds it.
 * epollidle.py runs the four modes against loadgen, alternating.
 *
 * Build: cc -O2 -o epollidle epollidle.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

enum { ADD_DEL, ONESHOT, PERSISTENT, ONESHOT_CHURN };
static const char *const mode_names[] = {"add-del", "oneshot", "persistent",
                                         "oneshot+churn"};

static double
cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void
ctl(int ep, int op, int fd, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(ep, op, fd, &ev) < 0) {
        perror("epoll_ctl");
        exit(1);
    }
}

/* Serve one connection; the number of requests (reads) it answered. */
static long
serve(int ep, int c, int mode, int dummy)
{
    static char buf[256 * 1024];
    long requests = 0;
    int registered = 0;
    if (mode == PERSISTENT) {
        ctl(ep, EPOLL_CTL_ADD, c, EPOLLIN);
    }
    for (;;) {
        ssize_t n = recv(c, buf, sizeof buf, 0);
        if (n > 0) {
            if (send(c, buf, (size_t)n, MSG_NOSIGNAL) != n) {
                break; /* the load generator sends one request at a time */
            }
            requests++;
            continue;
        }
        if (n == 0 || errno != EAGAIN) {
            break;
        }
        if (mode == ADD_DEL) {
            ctl(ep, EPOLL_CTL_ADD, c, EPOLLIN);
        } else if (mode == ONESHOT || mode == ONESHOT_CHURN) {
            if (mode == ONESHOT_CHURN) {
                ctl(ep, EPOLL_CTL_ADD, dummy, EPOLLIN);
                ctl(ep, EPOLL_CTL_DEL, dummy, 0);
            }
            ctl(ep, registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c,
                EPOLLIN | EPOLLONESHOT);
            registered = 1;
        }
        struct epoll_event out[4];
        if (epoll_wait(ep, out, 4, -1) < 0 && errno != EINTR) {
            perror("epoll_wait");
            exit(1);
        }
        if (mode == ADD_DEL) {
            ctl(ep, EPOLL_CTL_DEL, c, 0);
        }
    }
    return requests;
}

int
main(int argc, char **argv)
{
    int mode = -1;
    for (int i = 0; i < 4 && argc == 2; i++) {
        if (strcmp(argv[1], mode_names[i]) == 0) {
            mode = i;
        }
    }
    if (mode < 0) {
        fprintf(stderr, "usage: epollidle add-del|oneshot|persistent|"
                        "oneshot+churn\n");
        return 2;
    }
    alarm(120);
    int one = 1;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(l, 16) < 0 || getsockname(l, (struct sockaddr *)&a, &alen)) {
        perror("listen");
        return 1;
    }
    printf("{\"event\": \"ready\", \"port\": %d}\n", ntohs(a.sin_port));
    fflush(stdout);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int dummy = eventfd(0, EFD_CLOEXEC);
    for (;;) {
        int c = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
            perror("accept4");
            return 1;
        }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        double t0 = cpu_seconds();
        long requests = serve(ep, c, mode, dummy);
        double cpu = cpu_seconds() - t0;
        close(c);
        printf("{\"mode\": \"%s\", \"requests\": %ld, \"cpu_us\": %.2f}\n",
               mode_names[mode], requests,
               requests ? cpu * 1e6 / (double)requests : 0.0);
        fflush(stdout);
    }
}
