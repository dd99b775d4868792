/* rawecho: the physical ceiling for the network benchmarks -- a plain C,
 * single-threaded, level-triggered epoll server on TCP, a unix socket or
 * UDP.
 *
 *   --mode echo  (default) writes back whatever it reads.  One 256 KiB read
 *                buffer is shared by all connections; a partial write keeps
 *                the rest in a per-connection buffer and stops reading that
 *                connection until it is flushed (backpressure).
 *   --mode http  answers every request (a header block ending in CRLFCRLF,
 *                no body) with the same fixed response as servers.py --mode
 *                http, in one send per batch of requests read.
 *   --mode udp   a UDP socket on 127.0.0.1 (--port only): every datagram is
 *                sent back to its source with sendto.  One wake-up reads
 *                and answers datagrams (recvfrom) until the socket is empty.
 *                An echo the kernel will not take (EAGAIN, ENOBUFS) is
 *                dropped, as UDP allows, and counted ("dropped" in the exit
 *                line).
 *
 * It speaks the same control protocol as servers.py: one JSON line
 * {"event": "ready", "port": N} on stdout once it listens; SIGUSR1 takes a
 * resource-usage mark and prints {"event": "mark"}; SIGTERM prints
 * {"event": "exit", "cpu": user+sys seconds since the mark, ...} and exits.
 * Signals arrive through a signalfd, so none is lost while in epoll_wait.
 * --lifetime SEC (default 600) bounds the process with alarm().
 *
 * Build: cc -O2 -o rawecho rawecho.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define READ_CHUNK (256 * 1024)
#define MAX_EVENTS 256
#define HTTP_MAX_REQUEST 8192

static const char HTTP_RESPONSE[] =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 13\r\n"
    "\r\n"
    "Hello, World!";

struct conn {
    int fd;
    int reading;   /* EPOLLIN in the interest set */
    char *pending; /* unsent output (malloc'd), or NULL */
    size_t pending_len, pending_off;
    char *req; /* http: partial request bytes */
    size_t req_len;
};

static int epfd, listen_fd, sig_fd, is_unix, http_mode, udp_mode;
static unsigned long long udp_dropped;
static char readbuf[READ_CHUNK];
static char *http_out;      /* n copies of the response */
static size_t http_out_cap; /* in responses */
static struct rusage mark;

static void
die(const char *what)
{
    fprintf(stderr, "rawecho: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void
ep_ctl(int op, int fd, uint32_t events, void *ptr)
{
    struct epoll_event ev = {0};
    ev.events = events;
    ev.data.ptr = ptr;
    if (epoll_ctl(epfd, op, fd, &ev) < 0)
        die("epoll_ctl");
}

static void
conn_close(struct conn *c)
{
    close(c->fd);
    free(c->pending);
    free(c->req);
    free(c);
}

/* Send data; keep what the kernel did not take and stop reading until it
 * is flushed.  Returns -1 if the connection was closed. */
static int
conn_write(struct conn *c, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(c->fd, data + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            c->pending_len = len - off;
            c->pending_off = 0;
            c->pending = malloc(c->pending_len);
            if (!c->pending)
                die("malloc");
            memcpy(c->pending, data + off, c->pending_len);
            c->reading = 0;
            ep_ctl(EPOLL_CTL_MOD, c->fd, EPOLLOUT, c);
            return 0;
        } else {
            conn_close(c);
            return -1;
        }
    }
    return 0;
}

static void
conn_flush(struct conn *c)
{
    while (c->pending_off < c->pending_len) {
        ssize_t n = send(c->fd, c->pending + c->pending_off,
                         c->pending_len - c->pending_off, MSG_NOSIGNAL);
        if (n > 0)
            c->pending_off += n;
        else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && errno == EAGAIN)
            return;
        else {
            conn_close(c);
            return;
        }
    }
    free(c->pending);
    c->pending = NULL;
    c->reading = 1;
    ep_ctl(EPOLL_CTL_MOD, c->fd, EPOLLIN, c);
}

/* http: append the bytes to the request buffer, answer every complete
 * request in one send. */
static int
http_handle(struct conn *c, const char *data, size_t len)
{
    size_t start = 0, nresp = 0, i;
    char *req = realloc(c->req, c->req_len + len);
    if (!req)
        die("realloc");
    c->req = req;
    memcpy(req + c->req_len, data, len);
    c->req_len += len;
    for (;;) {
        char *end = memmem(req + start, c->req_len - start, "\r\n\r\n", 4);
        if (!end)
            break;
        start = end + 4 - req;
        nresp++;
    }
    memmove(req, req + start, c->req_len - start);
    c->req_len -= start;
    if (c->req_len > HTTP_MAX_REQUEST) {
        conn_close(c);
        return -1;
    }
    if (nresp == 0)
        return 0;
    if (nresp > http_out_cap) {
        http_out = realloc(http_out, nresp * (sizeof HTTP_RESPONSE - 1));
        if (!http_out)
            die("realloc");
        for (i = http_out_cap; i < nresp; i++)
            memcpy(http_out + i * (sizeof HTTP_RESPONSE - 1), HTTP_RESPONSE,
                   sizeof HTTP_RESPONSE - 1);
        http_out_cap = nresp;
    }
    return conn_write(c, http_out, nresp * (sizeof HTTP_RESPONSE - 1));
}

static void
conn_readable(struct conn *c)
{
    while (c->reading) {
        ssize_t n = recv(c->fd, readbuf, sizeof readbuf, 0);
        if (n > 0) {
            int rc = http_mode ? http_handle(c, readbuf, n)
                               : conn_write(c, readbuf, n);
            if (rc < 0)
                return;
            if (n < (ssize_t)sizeof readbuf)
                return; /* level-triggered: epoll says if there is more */
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            return;
        } else { /* EOF or error */
            conn_close(c);
            return;
        }
    }
}

static void
accept_all(void)
{
    for (;;) {
        int one = 1;
        struct conn *c;
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN)
                return;
            die("accept4");
        }
        if (!is_unix)
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c = calloc(1, sizeof *c);
        if (!c)
            die("calloc");
        c->fd = fd;
        c->reading = 1;
        ep_ctl(EPOLL_CTL_ADD, fd, EPOLLIN, c);
    }
}

/* udp: answer every queued datagram (the socket is non-blocking). */
static void
udp_echo_all(void)
{
    for (;;) {
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof from;
        ssize_t n = recvfrom(listen_fd, readbuf, sizeof readbuf, 0,
                             (struct sockaddr *)&from, &fromlen);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return;
            if (errno == ECONNREFUSED)
                continue; /* an ICMP error for an earlier echo */
            die("recvfrom");
        }
        while (sendto(listen_fd, readbuf, n, 0, (struct sockaddr *)&from,
                      fromlen) < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == ENOBUFS || errno == ECONNREFUSED) {
                udp_dropped++;
                break;
            }
            die("sendto");
        }
    }
}

static double
tv_s(struct timeval tv)
{
    return tv.tv_sec + tv.tv_usec * 1e-6;
}

/* Returns 1 when the server should exit. */
static int
on_signal(void)
{
    struct signalfd_siginfo si;
    struct rusage ru;
    if (read(sig_fd, &si, sizeof si) != sizeof si)
        return 0;
    getrusage(RUSAGE_SELF, &ru);
    if (si.ssi_signo == SIGUSR1) {
        mark = ru;
        printf("{\"event\": \"mark\"}\n");
        fflush(stdout);
        return 0;
    }
    printf(
        "{\"event\": \"exit\", \"cpu\": %.6f, \"user\": %.6f, "
        "\"sys\": %.6f, \"cpu_total\": %.6f, \"maxrss_kb\": %ld, "
        "\"dropped\": %llu}\n",
        tv_s(ru.ru_utime) + tv_s(ru.ru_stime) - tv_s(mark.ru_utime) -
            tv_s(mark.ru_stime),
        tv_s(ru.ru_utime) - tv_s(mark.ru_utime),
        tv_s(ru.ru_stime) - tv_s(mark.ru_stime),
        tv_s(ru.ru_utime) + tv_s(ru.ru_stime), ru.ru_maxrss, udp_dropped);
    fflush(stdout);
    return 1;
}

static void
listen_on(const char *unix_path, int port)
{
    int one = 1;
    if (unix_path) {
        struct sockaddr_un sun = {0};
        if (strlen(unix_path) >= sizeof sun.sun_path) {
            fprintf(stderr, "rawecho: unix path too long\n");
            exit(2);
        }
        sun.sun_family = AF_UNIX;
        strcpy(sun.sun_path, unix_path);
        unlink(unix_path);
        listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (listen_fd < 0 ||
            bind(listen_fd, (struct sockaddr *)&sun, sizeof sun) < 0)
            die("bind");
    } else {
        struct sockaddr_in sin = {0};
        socklen_t len = sizeof sin;
        sin.sin_family = AF_INET;
        sin.sin_port = htons(port);
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        listen_fd = socket(
            AF_INET, (udp_mode ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK, 0);
        if (listen_fd < 0)
            die("socket");
        setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(listen_fd, (struct sockaddr *)&sin, sizeof sin) < 0)
            die("bind");
        getsockname(listen_fd, (struct sockaddr *)&sin, &len);
        port = ntohs(sin.sin_port);
    }
    if (!udp_mode && listen(listen_fd, 1024) < 0)
        die("listen");
    printf("{\"event\": \"ready\", \"port\": %d}\n", unix_path ? 0 : port);
    fflush(stdout);
}

static void
usage(void)
{
    fputs(
        "usage: rawecho (--port N | --unix PATH) [--mode echo|http] "
        "[--lifetime SEC]\n"
        "       rawecho --port N --mode udp [--lifetime SEC]\n",
        stderr);
    exit(2);
}

int
main(int argc, char **argv)
{
    const char *unix_path = NULL;
    int port = -1, lifetime = 600, i;
    sigset_t sigs;
    struct epoll_event evs[MAX_EVENTS];

    for (i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--unix"))
            unix_path = argv[i + 1];
        else if (!strcmp(argv[i], "--mode") && !strcmp(argv[i + 1], "echo"))
            http_mode = udp_mode = 0;
        else if (!strcmp(argv[i], "--mode") && !strcmp(argv[i + 1], "http"))
            http_mode = 1, udp_mode = 0;
        else if (!strcmp(argv[i], "--mode") && !strcmp(argv[i + 1], "udp"))
            udp_mode = 1, http_mode = 0;
        else if (!strcmp(argv[i], "--lifetime"))
            lifetime = atoi(argv[i + 1]);
        else
            usage();
    }
    if (i != argc || (port < 0) == (unix_path == NULL) || lifetime <= 0 ||
        (udp_mode && unix_path))
        usage();
    alarm(lifetime);
    is_unix = unix_path != NULL;

    sigemptyset(&sigs);
    sigaddset(&sigs, SIGUSR1);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    sig_fd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (sig_fd < 0 || epfd < 0)
        die("signalfd/epoll_create1");

    getrusage(RUSAGE_SELF, &mark);
    listen_on(unix_path, port);
    ep_ctl(EPOLL_CTL_ADD, listen_fd, EPOLLIN, &listen_fd);
    ep_ctl(EPOLL_CTL_ADD, sig_fd, EPOLLIN, &sig_fd);

    for (;;) {
        int n = epoll_wait(epfd, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            struct conn *c = p;
            if (p == &listen_fd && udp_mode)
                udp_echo_all();
            else if (p == &listen_fd)
                accept_all();
            else if (p == &sig_fd) {
                if (on_signal()) {
                    if (unix_path)
                        unlink(unix_path);
                    return 0;
                }
            } else if (c->pending)
                conn_flush(c);
            else
                conn_readable(c);
        }
    }
}
