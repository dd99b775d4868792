/* loadgen: a closed-loop load generator for echo servers, in C so that the
 * client is never the bottleneck.
 *
 * One thread, one epoll set, non-blocking sockets.  Three modes:
 *
 *   echo   N connections are opened before the clock starts.  Each sends a
 *          message of S bytes, waits for all S bytes to come back, then sends
 *          the next one (request/response, one request in flight per
 *          connection).  Latency: first byte sent -> last byte received.
 *   churn  N slots.  Each slot connects, sends one S-byte request, reads the
 *          full reply, closes (client closes first), and starts over.
 *          Latency: connect() -> last byte of the reply.  rps = connections/s.
 *          Over TCP to 127.0.0.0/8, successive connections come from source
 *          addresses 127.0.0.2 .. 127.0.0.251 in turn: the client's
 *          TIME_WAIT sockets then never use up the ephemeral ports, which
 *          otherwise caps loopback churn at ~14k connections/s whatever the
 *          server (connect() can reuse a port only a second later).
 *   udp    (--udp HOST:PORT) N flows, each with its own connected UDP
 *          socket, opened before the clock starts.  Each flow sends one
 *          S-byte datagram, waits for its echo, then sends the next.  A
 *          datagram whose echo has not come back after --loss-timeout
 *          seconds (default 0.2) is counted as lost and the flow sends a
 *          new one (with a new sequence number, so a late echo of the lost
 *          one is recognised, counted as "late" and dropped).  rps =
 *          datagram round trips/s.  Latency: send -> echo of that datagram.
 *
 * Bounds: --duration seconds and/or --requests count (whichever comes first);
 * after that no new request starts, requests in flight finish ("drained",
 * not counted in rps but reported so the server's CPU can be divided by
 * everything it served), at most --timeout seconds.  A connection making no
 * progress for --timeout seconds is an error (udp: a flow that gets no echo
 * for --timeout seconds, whatever it resends).  In udp mode, a datagram
 * lost during the drain is given up (counted as lost), not resent.  alarm()
 * is a last resort.
 *
 * Checking: every message carries an 8-byte tag (connection, sequence) at
 * both ends, checked on the echo; --verify compares every byte.  udp: an
 * echo must also be exactly S bytes long.
 *
 * Output: one JSON line on stdout (requests, drained, bytes = payload bytes
 * echoed in the window, seconds, rps, latency percentiles in us; udp adds
 * losses and late).  Errors go to stderr, exit status 1 (2 for usage).
 *
 * Build: cc -O2 -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define READ_CHUNK (256 * 1024)
#define MAX_EVENTS 256
#define TAG_SIZE 8

/* Latency histogram: 1 us buckets up to 100 ms, then 100 us buckets up to
 * 10 s; anything slower lands in the last bucket. */
#define FINE_US 100000
#define COARSE_STEP 100
#define COARSE_N 100000
static uint64_t hist[FINE_US + COARSE_N];
static uint64_t hist_max_us;

enum mode { MODE_ECHO, MODE_CHURN, MODE_UDP };
enum state { ST_IDLE, ST_CONNECTING, ST_ACTIVE, ST_RETRY };

struct conn {
    int fd;
    int index;
    enum state state;
    uint64_t seq;      /* requests started on this connection/slot */
    size_t sent;       /* bytes of the current request sent (udp: 0 or S) */
    size_t recvd;      /* bytes of its echo received */
    int want_out;      /* EPOLLOUT currently in the interest set */
    double t_start;    /* request (echo, udp) or connect (churn) start */
    double t_progress; /* last time bytes moved (udp: last echo received) */
    unsigned char *msg;
};

static struct {
    enum mode mode;
    int unix_path_set;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int family;
    int conns;
    size_t size;
    double duration;
    uint64_t max_requests;
    double timeout;
    int verify;
    int udp_addr;        /* the address came from --udp */
    double loss_timeout; /* udp: an echo later than this is a loss */
} opt = {MODE_ECHO, 0, {0}, 0, 0, 10, 1024, 0.0, 0, 10.0, 0, 0, 0.2};

#define UDP_MAX 65507 /* largest UDP payload over IPv4 */

#define CHURN_SOURCES 250 /* source addresses 127.0.0.2 .. 127.0.0.251 */

static int epfd;
static double deadline; /* end of the measured window */
static struct conn *conns;
static unsigned char readbuf[READ_CHUNK];
static uint64_t n_done, n_drained, n_retries;
static uint64_t n_losses, n_late; /* udp */
static double t_last_done;
static int stopping; /* no new requests start */
static int in_flight;

static void
die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void
hist_add(double seconds)
{
    uint64_t us = (uint64_t)(seconds * 1e6);
    size_t b;
    if (us < FINE_US)
        b = us;
    else if ((us - FINE_US) / COARSE_STEP < COARSE_N)
        b = FINE_US + (us - FINE_US) / COARSE_STEP;
    else
        b = FINE_US + COARSE_N - 1;
    hist[b]++;
    if (us > hist_max_us)
        hist_max_us = us;
}

static double
hist_pct(double p)
{
    uint64_t total = 0, want, acc = 0;
    size_t i, n = FINE_US + COARSE_N;
    for (i = 0; i < n; i++)
        total += hist[i];
    if (total == 0)
        return 0.0;
    want = (uint64_t)(p / 100.0 * total + 0.5);
    if (want < 1)
        want = 1;
    for (i = 0; i < n; i++) {
        acc += hist[i];
        if (acc >= want)
            return i < FINE_US ? (double)i
                               : FINE_US + (double)(i - FINE_US) * COARSE_STEP;
    }
    return (double)hist_max_us;
}

/* ---- addresses and sockets ------------------------------------------- */

static void
parse_inet(const char *spec, int socktype)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    struct addrinfo hints = {0}, *res;
    int rc;
    if (!colon || (size_t)(colon - spec) >= sizeof host)
        die("--tcp and --udp want HOST:PORT, got %s", spec);
    memcpy(host, spec, colon - spec);
    host[colon - spec] = '\0';
    hints.ai_socktype = socktype;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0)
        die("bad address %s: %s", spec, gai_strerror(rc));
    memcpy(&opt.addr, res->ai_addr, res->ai_addrlen);
    opt.addrlen = res->ai_addrlen;
    opt.family = res->ai_family;
    freeaddrinfo(res);
}

static void
parse_unix(const char *path)
{
    struct sockaddr_un *sun = (struct sockaddr_un *)&opt.addr;
    if (strlen(path) >= sizeof sun->sun_path)
        die("unix path too long: %s", path);
    sun->sun_family = AF_UNIX;
    strcpy(sun->sun_path, path);
    opt.addrlen = sizeof *sun;
    opt.family = AF_UNIX;
}

static void
set_nodelay(int fd)
{
    int one = 1;
    if (opt.family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int
is_loopback_v4(void)
{
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&opt.addr;
    return opt.family == AF_INET && (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
}

/* Churn over TCP loopback: bind the next source address; the port is
 * chosen by connect() (IP_BIND_ADDRESS_NO_PORT) for the whole 4-tuple. */
static void
bind_next_source(int fd)
{
    static unsigned next;
    int one = 1;
    struct sockaddr_in src = {0};
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(0x7f000002u + next++ % CHURN_SOURCES);
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0)
        die("bind to a source address: %s", strerror(errno));
}

static void
ep_set(struct conn *c, int op, int want_out)
{
    struct epoll_event ev = {0};
    ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0);
    ev.data.ptr = c;
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    c->want_out = want_out;
}

static void
conn_close(struct conn *c)
{
    if (c->fd >= 0) {
        close(c->fd); /* also leaves the epoll set */
        c->fd = -1;
    }
    c->state = ST_IDLE;
}

/* ---- messages ---------------------------------------------------------- */

static void
msg_fill(struct conn *c)
{
    /* xorshift bytes: a shifted or mixed-up echo does not compare equal */
    uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(c->index + 1);
    size_t i;
    for (i = 0; i < opt.size; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c->msg[i] = (unsigned char)x;
    }
}

static void
msg_tag(struct conn *c)
{
    uint64_t tag = ((uint64_t)c->index << 40) | (c->seq & 0xFFFFFFFFFFull);
    size_t n = opt.size < TAG_SIZE ? opt.size : TAG_SIZE;
    memcpy(c->msg, &tag, n);
    if (opt.size >= 2 * TAG_SIZE)
        memcpy(c->msg + opt.size - TAG_SIZE, &tag, TAG_SIZE);
}

/* Compare received bytes [off, off+n) with what was sent: all of them with
 * --verify, else only where they overlap the two tags. */
static int
msg_check(const struct conn *c, size_t off, const unsigned char *p, size_t n)
{
    size_t lo, hi, tail;
    if (opt.verify)
        return memcmp(c->msg + off, p, n) == 0;
    lo = off;
    hi = off + n < TAG_SIZE ? off + n : TAG_SIZE;
    if (lo < hi && memcmp(c->msg + lo, p, hi - lo) != 0)
        return 0;
    tail = opt.size > TAG_SIZE ? opt.size - TAG_SIZE : 0;
    lo = off > tail ? off : tail;
    hi = off + n;
    if (lo < hi && memcmp(c->msg + lo, p + (lo - off), hi - lo) != 0)
        return 0;
    return 1;
}

/* ---- request state machine -------------------------------------------- */

static void
conn_send(struct conn *c, double t);

static void
request_start(struct conn *c, double t)
{
    c->seq++;
    c->sent = c->recvd = 0;
    if (opt.mode != MODE_UDP || c->seq == 1)
        c->t_progress = t; /* udp: a resend is no progress */
    msg_tag(c);
    if (opt.mode != MODE_CHURN)
        c->t_start = t;
    in_flight++;
    conn_send(c, t);
}

static void
churn_connect(struct conn *c, double t)
{
    int fd = socket(opt.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    c->fd = fd;
    c->t_start = c->t_progress = t;
    set_nodelay(fd);
    if (is_loopback_v4())
        bind_next_source(fd);
    if (connect(fd, (struct sockaddr *)&opt.addr, opt.addrlen) == 0) {
        c->state = ST_ACTIVE;
        ep_set(c, EPOLL_CTL_ADD, 0);
        request_start(c, t);
    } else if (errno == EINPROGRESS) {
        c->state = ST_CONNECTING;
        ep_set(c, EPOLL_CTL_ADD, 1);
    } else if (errno == EAGAIN) { /* unix socket: listen backlog full */
        close(fd);
        c->fd = -1;
        c->state = ST_RETRY;
        n_retries++;
    } else {
        die("connect: %s", strerror(errno));
    }
}

/* A request finished, or the slot is free: start the next one if allowed. */
static void
next_request(struct conn *c, double t)
{
    if (t >= deadline ||
        (opt.max_requests && n_done + in_flight >= opt.max_requests))
        stopping = 1;
    if (stopping) {
        if (opt.mode == MODE_CHURN)
            c->state = ST_IDLE;
        return;
    }
    if (opt.mode == MODE_CHURN)
        churn_connect(c, t);
    else
        request_start(c, t);
}

static void
request_done(struct conn *c, double t)
{
    in_flight--;
    if (t > deadline) {
        n_drained++;
    } else {
        n_done++;
        t_last_done = t;
        hist_add(t - c->t_start);
    }
    if (opt.mode == MODE_CHURN)
        conn_close(c);
    next_request(c, t);
}

static void
udp_send(struct conn *c)
{
    for (;;) {
        ssize_t n = send(c->fd, c->msg, opt.size, 0);
        if (n == (ssize_t)opt.size) {
            c->sent = opt.size;
            if (c->want_out)
                ep_set(c, EPOLL_CTL_MOD, 0);
            return;
        }
        if (n >= 0)
            die("flow %d: short datagram send (%zd of %zu bytes)", c->index, n,
                opt.size);
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == ENOBUFS) {
            if (!c->want_out)
                ep_set(c, EPOLL_CTL_MOD, 1);
            return;
        }
        die("send on flow %d: %s", c->index, strerror(errno));
    }
}

static void
conn_send(struct conn *c, double t)
{
    if (opt.mode == MODE_UDP) {
        c->sent = 0;
        udp_send(c);
        return;
    }
    while (c->sent < opt.size) {
        ssize_t n =
            send(c->fd, c->msg + c->sent, opt.size - c->sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->sent += n;
            c->t_progress = t;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            if (!c->want_out)
                ep_set(c, EPOLL_CTL_MOD, 1);
            return;
        } else {
            die("send on connection %d: %s", c->index, strerror(errno));
        }
    }
    if (c->want_out)
        ep_set(c, EPOLL_CTL_MOD, 0);
}

static void
conn_recv(struct conn *c, double t)
{
    while (c->recvd < opt.size) {
        size_t want = opt.size - c->recvd;
        ssize_t n =
            recv(c->fd, readbuf, want < READ_CHUNK ? want : READ_CHUNK, 0);
        if (n > 0) {
            if (!msg_check(c, c->recvd, readbuf, (size_t)n))
                die("connection %d: echo differs from the request "
                    "(request %llu, bytes %zu..%zu)",
                    c->index, (unsigned long long)c->seq, c->recvd,
                    c->recvd + n);
            c->recvd += n;
            c->t_progress = t;
        } else if (n == 0) {
            die("connection %d: server closed the connection after %zu of "
                "%zu bytes",
                c->index, c->recvd, opt.size);
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN) {
            return;
        } else {
            die("recv on connection %d: %s", c->index, strerror(errno));
        }
    }
    request_done(c, t);
}

/* udp: read every datagram queued on the flow's socket.  The echo of the
 * datagram in flight completes the request; the echo of an earlier one
 * (given up as lost) is counted as late and dropped. */
static void
udp_recv(struct conn *c, double t)
{
    for (;;) {
        uint64_t tag, want;
        ssize_t n = recv(c->fd, readbuf, sizeof readbuf, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return;
            die("recv on flow %d: %s%s", c->index, strerror(errno),
                errno == ECONNREFUSED ? " (is the server up?)" : "");
        }
        if ((size_t)n != opt.size)
            die("flow %d: echo of %zd bytes, expected %zu", c->index, n,
                opt.size);
        memcpy(&tag, readbuf, TAG_SIZE);
        want = ((uint64_t)c->index << 40) | (c->seq & 0xFFFFFFFFFFull);
        if (tag >> 40 == (uint64_t)c->index &&
            ((tag & 0xFFFFFFFFFFull) < (want & 0xFFFFFFFFFFull) ||
             (tag == want && c->recvd))) {
            n_late++; /* an echo given up on: the server did serve it */
            continue;
        }
        if (tag != want || !c->sent || c->recvd ||
            !msg_check(c, 0, readbuf, opt.size))
            die("flow %d: echo differs from the datagram sent (request "
                "%llu)",
                c->index, (unsigned long long)c->seq);
        c->recvd = opt.size;
        c->t_progress = t;
        request_done(c, t);
    }
}

/* udp: the datagram in flight is overdue: count a loss, send a new one (or
 * give up when stopping). */
static void
udp_check_loss(struct conn *c, double t)
{
    if (c->state != ST_ACTIVE || c->recvd || t - c->t_start < opt.loss_timeout)
        return;
    n_losses++;
    if (stopping) {
        c->recvd = opt.size; /* nothing in flight any more */
        in_flight--;
        return;
    }
    in_flight--;
    request_start(c, t);
}

/* udp: the earliest time a datagram in flight becomes a loss, or 0. */
static double
udp_next_loss(void)
{
    double next = 0;
    int i;
    for (i = 0; i < opt.conns; i++) {
        const struct conn *c = &conns[i];
        double due = c->t_start + opt.loss_timeout;
        if (c->state == ST_ACTIVE && !c->recvd && (next == 0 || due < next))
            next = due;
    }
    return next;
}

static void
on_event(struct conn *c, uint32_t events, double t)
{
    if (opt.mode == MODE_UDP) {
        if ((events & EPOLLOUT) && !c->sent && !c->recvd)
            udp_send(c);
        if (events & (EPOLLIN | EPOLLERR))
            udp_recv(c, t);
        return;
    }
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err)
            die("connect: %s", strerror(err));
        c->state = ST_ACTIVE;
        ep_set(c, EPOLL_CTL_MOD, 0);
        request_start(c, t);
        return;
    }
    if (c->state != ST_ACTIVE)
        return;
    if (events & (EPOLLOUT | EPOLLERR))
        conn_send(c, t);
    if (c->state == ST_ACTIVE && c->fd >= 0 &&
        (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        conn_recv(c, t);
}

/* ---- setup ------------------------------------------------------------- */

static void
echo_connect_all(void)
{
    int i;
    for (i = 0; i < opt.conns; i++) {
        struct conn *c = &conns[i];
        int fd = socket(
            opt.family,
            (opt.mode == MODE_UDP ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC,
            0);
        if (fd < 0)
            die("socket: %s", strerror(errno));
        /* blocking connect: done before the clock starts (udp: sets the
         * peer and binds an ephemeral port: one socket per flow) */
        if (connect(fd, (struct sockaddr *)&opt.addr, opt.addrlen) < 0)
            die("connect: %s", strerror(errno));
        if (opt.mode != MODE_UDP)
            set_nodelay(fd);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        c->fd = fd;
        c->state = ST_ACTIVE;
        ep_set(c, EPOLL_CTL_ADD, 0);
    }
}

static void
usage(void)
{
    fputs(
        "usage: loadgen (--tcp HOST:PORT | --unix PATH) [--mode echo|churn]\n"
        "       loadgen --udp HOST:PORT --mode udp [--loss-timeout SEC]\n"
        "               [--conns N] [--size BYTES] [--duration SEC]\n"
        "               [--requests N] [--timeout SEC] [--verify]\n"
        "at least one of --duration and --requests; --timeout (default 10)\n"
        "bounds stalls and the drain at the end.  udp: --conns is the\n"
        "number of flows, --size the payload (8 to 65507 bytes), and an\n"
        "echo missing after --loss-timeout (default 0.2) is a loss.\n",
        stderr);
    exit(2);
}

static void
parse_args(int argc, char **argv)
{
    int i, have_addr = 0;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--verify")) {
            opt.verify = 1;
            continue;
        }
        if (!v)
            usage();
        i++;
        if (!strcmp(a, "--tcp")) {
            parse_inet(v, SOCK_STREAM);
            have_addr = 1;
        } else if (!strcmp(a, "--udp")) {
            parse_inet(v, SOCK_DGRAM);
            opt.udp_addr = have_addr = 1;
        } else if (!strcmp(a, "--unix")) {
            parse_unix(v);
            have_addr = 1;
        } else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "echo"))
                opt.mode = MODE_ECHO;
            else if (!strcmp(v, "churn"))
                opt.mode = MODE_CHURN;
            else if (!strcmp(v, "udp"))
                opt.mode = MODE_UDP;
            else
                usage();
        } else if (!strcmp(a, "--conns")) {
            opt.conns = atoi(v);
        } else if (!strcmp(a, "--size")) {
            opt.size = strtoul(v, NULL, 10);
        } else if (!strcmp(a, "--duration")) {
            opt.duration = atof(v);
        } else if (!strcmp(a, "--requests")) {
            opt.max_requests = strtoull(v, NULL, 10);
        } else if (!strcmp(a, "--timeout")) {
            opt.timeout = atof(v);
        } else if (!strcmp(a, "--loss-timeout")) {
            opt.loss_timeout = atof(v);
        } else {
            usage();
        }
    }
    if (!have_addr || opt.conns < 1 || opt.size < 1 || opt.timeout <= 0 ||
        (opt.duration <= 0 && opt.max_requests == 0))
        usage();
    /* udp goes with --udp, and --udp with udp */
    if ((opt.mode == MODE_UDP) != opt.udp_addr ||
        (opt.mode == MODE_UDP &&
         (opt.size < TAG_SIZE || opt.size > UDP_MAX || opt.loss_timeout <= 0 ||
          opt.loss_timeout >= opt.timeout)))
        usage();
}

int
main(int argc, char **argv)
{
    struct epoll_event evs[MAX_EVENTS];
    double t0, t_end, drain_deadline = 0, t;
    double max_duration;
    int i;

    parse_args(argc, argv);
    /* With only a count, the run is still bounded in time. */
    max_duration = opt.duration > 0 ? opt.duration : 600.0;
    alarm((unsigned)(max_duration + 3 * opt.timeout + 5));

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1: %s", strerror(errno));
    conns = calloc(opt.conns, sizeof *conns);
    if (!conns)
        die("out of memory");
    for (i = 0; i < opt.conns; i++) {
        conns[i].fd = -1;
        conns[i].index = i;
        conns[i].msg = malloc(opt.size);
        if (!conns[i].msg)
            die("out of memory");
        msg_fill(&conns[i]);
    }
    if (opt.mode != MODE_CHURN)
        echo_connect_all(); /* echo connections, udp flows */

    t0 = now_s();
    deadline = t0 + max_duration;
    for (i = 0; i < opt.conns; i++)
        next_request(&conns[i], t0);

    for (;;) {
        int n, retry_pending = 0, timeout_ms;
        t = now_s();
        if (!stopping && t >= deadline)
            stopping = 1;
        if (stopping && drain_deadline == 0)
            drain_deadline = t + opt.timeout;
        if (opt.mode == MODE_CHURN)
            for (i = 0; i < opt.conns; i++) {
                if (conns[i].state != ST_RETRY)
                    continue;
                if (stopping)
                    conns[i].state = ST_IDLE;
                else
                    churn_connect(&conns[i], t);
                retry_pending |= conns[i].state == ST_RETRY;
            }
        if (stopping && in_flight == 0 &&
            !(opt.mode == MODE_CHURN && retry_pending))
            break;
        if (stopping && t > drain_deadline)
            die("%d request(s) still unanswered %.1f s after the end",
                in_flight, opt.timeout);
        for (i = 0; i < opt.conns && opt.mode == MODE_UDP; i++)
            if (t - conns[i].t_progress > opt.timeout && !conns[i].recvd)
                die("flow %d: no echo for %.1f s (%llu datagrams lost in "
                    "all)",
                    i, opt.timeout, (unsigned long long)n_losses);
        for (i = 0; i < opt.conns && opt.mode != MODE_UDP; i++)
            if (conns[i].fd >= 0 && conns[i].state != ST_IDLE &&
                t - conns[i].t_progress > opt.timeout &&
                (conns[i].sent < opt.size || conns[i].recvd < opt.size ||
                 conns[i].state == ST_CONNECTING))
                die("connection %d made no progress for %.1f s (sent %zu, "
                    "received %zu of %zu)",
                    i, opt.timeout, conns[i].sent, conns[i].recvd, opt.size);

        timeout_ms = retry_pending ? 1 : 100;
        if (!stopping && (deadline - t) * 1000 < timeout_ms)
            timeout_ms = (int)((deadline - t) * 1000) + 1;
        if (opt.mode == MODE_UDP) {
            double due = udp_next_loss();
            if (due && (due - t) * 1000 < timeout_ms)
                timeout_ms = due > t ? (int)((due - t) * 1000) + 1 : 0;
        }
        n = epoll_wait(epfd, evs, MAX_EVENTS, timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait: %s", strerror(errno));
        }
        t = now_s();
        for (i = 0; i < n; i++)
            on_event(evs[i].data.ptr, evs[i].events, t);
        if (opt.mode == MODE_UDP)
            for (i = 0; i < opt.conns; i++)
                udp_check_loss(&conns[i], t);
    }

    /* The window ends at the deadline, or at the last request when the
     * count bound came first. */
    t_end = now_s() >= deadline ? deadline : t_last_done;
    for (i = 0; i < opt.conns; i++)
        conn_close(&conns[i]);

    {
        double secs = t_end - t0;
        double rps = secs > 0 ? n_done / secs : 0.0;
        printf(
            "{\"mode\": \"%s\", \"family\": \"%s\", \"conns\": %d, "
            "\"size\": %zu, \"requests\": %llu, \"drained\": %llu, "
            "\"bytes\": %llu, \"seconds\": %.6f, \"rps\": %.2f, "
            "\"mb_per_s\": %.3f, \"p50_us\": %.0f, \"p90_us\": %.0f, "
            "\"p99_us\": %.0f, \"max_us\": %llu, \"connect_retries\": "
            "%llu, \"losses\": %llu, \"late\": %llu, \"verify\": %s}\n",
            opt.mode == MODE_ECHO    ? "echo"
            : opt.mode == MODE_CHURN ? "churn"
                                     : "udp",
            opt.family == AF_UNIX ? "unix"
            : opt.udp_addr        ? "udp"
                                  : "tcp",
            opt.conns, opt.size, (unsigned long long)n_done,
            (unsigned long long)n_drained,
            (unsigned long long)(n_done * opt.size), secs, rps,
            secs > 0 ? n_done * opt.size / secs / 1e6 : 0.0, hist_pct(50),
            hist_pct(90), hist_pct(99), (unsigned long long)hist_max_us,
            (unsigned long long)n_retries, (unsigned long long)n_losses,
            (unsigned long long)n_late, opt.verify ? "true" : "false");
    }
    return 0;
}
