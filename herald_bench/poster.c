/*
 * poster: an open-loop HTTP/1.1 POST load generator (one epoll thread, keep-alive).
 *
 * Request i (the i-th line of --bodies, one JSON body per line) is due at i / --rate
 * seconds after the start; it goes out on the first idle connection at or after that
 * moment, over at most --inflight keep-alive connections (so at most that many requests
 * are in flight; a request that finds none idle waits, and its wait counts in its
 * latency: the schedule, not the server, sets the send times).  Every occurrence of
 * the placeholder STAMP ("@@@@@@@@@@@@@@@@@@@", 19 bytes) in a body is replaced by the
 * request's due time (CLOCK_REALTIME, nanoseconds, 19 digits), so a receiver reading
 * the stamp measures from the moment the request was meant to be sent.
 *
 * Output: --out gets a JSON object {"requests": [[due, sent, answered, status], ...],
 * "cpu_user_s", "cpu_sys_s", "seconds"} (times CLOCK_REALTIME ns, status 0 when the
 * request failed: connection error or --timeout); with --answers, each answer's body
 * as one line "<index>\t<status>\t<body>" (line breaks in a body become spaces).
 * An answer needs a Content-Length (no chunked bodies); "Connection: close" is honoured.
 * Requests are never retried: a failed one may or may not have reached the server.
 *
 * Build: gcc -O2 -Wall -Wextra -o herald_bench/build/poster herald_bench/poster.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STAMP "@@@@@@@@@@@@@@@@@@@"
#define STAMP_LEN 19
#define HEAD_MAX 4096
#define MAX_HEADERS 8

struct request {
    char *body;
    size_t len;
    int64_t due, sent, answered; /* CLOCK_REALTIME ns */
    int status;
};

enum cstate { C_CLOSED, C_CONNECTING, C_IDLE, C_BUSY };

struct conn {
    int fd;
    enum cstate state;
    long req;           /* request in flight, -1 none */
    char *out;          /* head + body being sent */
    size_t outlen, outsent;
    char *in;           /* answer bytes so far */
    size_t inlen, incap;
    int64_t deadline;   /* CLOCK_MONOTONIC ns */
};

static const char *opt_host = "127.0.0.1", *opt_path = "/", *opt_bodies, *opt_out;
static const char *opt_answers, *opt_headers[MAX_HEADERS];
static int opt_port, opt_inflight = 32, nheaders;
static double opt_rate, opt_timeout = 30.0;

static struct request *reqs;
static long nreqs, finished; /* requests read, requests answered or failed */
static struct conn *conns;
static struct sockaddr_storage addr;
static socklen_t addrlen;
static int ep;
static FILE *answers;

static int64_t now_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "poster: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q)
        die("out of memory");
    return q;
}

static void load_bodies(void)
{
    FILE *f = fopen(opt_bodies, "r");
    if (!f)
        die(opt_bodies);
    char *line = NULL;
    size_t cap = 0, rcap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (!len)
            continue;
        if ((size_t)nreqs == rcap) {
            rcap = rcap ? rcap * 2 : 1024;
            reqs = xrealloc(reqs, rcap * sizeof *reqs);
        }
        reqs[nreqs++] = (struct request){.body = strdup(line), .len = (size_t)len};
    }
    free(line);
    fclose(f);
}

static void conn_close(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = C_CLOSED;
    c->inlen = 0;
}

/* The request on c failed (status 0); the connection is closed. */
static void fail(struct conn *c)
{
    if (c->req >= 0) {
        reqs[c->req].answered = now_ns(CLOCK_REALTIME);
        reqs[c->req].status = 0;
        finished++;
    }
    c->req = -1;
    conn_close(c);
}

static bool connect_conn(struct conn *c)
{
    c->fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return false;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&addr, addrlen) < 0 && errno != EINPROGRESS) {
        conn_close(c);
        return false;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET,
                             .data.u64 = (uint64_t)(c - conns)};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        conn_close(c);
        return false;
    }
    c->state = C_CONNECTING;
    return true;
}

static void flush_out(struct conn *c)
{
    while (c->outsent < c->outlen) {
        ssize_t w = send(c->fd, c->out + c->outsent, c->outlen - c->outsent, MSG_NOSIGNAL);
        if (w > 0)
            c->outsent += (size_t)w;
        else if (w < 0 && errno == EINTR)
            continue;
        else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        else {
            fail(c);
            return;
        }
    }
}

/* Build request i's bytes on c, stamping its due time; send once connected. */
static void start_request(struct conn *c, long i, int64_t due_rt)
{
    struct request *r = &reqs[i];
    char stamp[STAMP_LEN + 1];
    snprintf(stamp, sizeof stamp, "%019" PRId64, due_rt);
    for (char *p = r->body; (p = strstr(p, STAMP)) != NULL; p += STAMP_LEN)
        memcpy(p, stamp, STAMP_LEN);
    char head[HEAD_MAX];
    int n = snprintf(head, sizeof head,
                     "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n", opt_path, opt_host, opt_port, r->len);
    for (int h = 0; h < nheaders; h++)
        n += snprintf(head + n, sizeof head - (size_t)n, "%s\r\n", opt_headers[h]);
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    c->out = xrealloc(c->out, (size_t)n + r->len);
    memcpy(c->out, head, (size_t)n);
    memcpy(c->out + n, r->body, r->len);
    c->outlen = (size_t)n + r->len;
    c->outsent = 0;
    c->req = i;
    c->inlen = 0;
    r->due = due_rt;
    r->sent = now_ns(CLOCK_REALTIME);
    c->deadline = now_ns(CLOCK_MONOTONIC) + (int64_t)(opt_timeout * 1e9);
    if (c->state == C_CLOSED && !connect_conn(c)) {
        fail(c);
        return;
    }
    if (c->state == C_IDLE) {
        c->state = C_BUSY;
        flush_out(c);
    }
}

static void record_answer(struct conn *c, int status, const char *body, size_t blen)
{
    struct request *r = &reqs[c->req];
    r->answered = now_ns(CLOCK_REALTIME);
    r->status = status;
    finished++;
    if (answers) {
        fprintf(answers, "%ld\t%d\t", c->req, status);
        for (size_t k = 0; k < blen; k++)
            fputc(body[k] == '\n' || body[k] == '\r' ? ' ' : body[k], answers);
        fputc('\n', answers);
    }
    c->req = -1;
}

/* A header's value in the head [s, end), or NULL. */
static const char *header(const char *s, const char *end, const char *name)
{
    size_t nlen = strlen(name);
    for (const char *p = s; p < end;) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            break;
        if ((size_t)(eol - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':')
            return p + nlen + 1;
        p = eol + 1;
    }
    return NULL;
}

/* Parse what has arrived; finish the request once its whole answer is in. */
static void parse_answer(struct conn *c)
{
    char *hend = memmem(c->in, c->inlen, "\r\n\r\n", 4);
    if (!hend)
        return;
    size_t hlen = (size_t)(hend - c->in) + 4;
    const char *cl = header(c->in, hend + 2, "content-length");
    if (c->inlen < 12 || memcmp(c->in, "HTTP/1.", 7) != 0 || !cl) {
        fail(c); /* malformed, or no Content-Length: not supported */
        return;
    }
    size_t blen = strtoul(cl, NULL, 10);
    if (c->inlen < hlen + blen)
        return;
    const char *conn_hdr = header(c->in, hend + 2, "connection");
    bool close_after = conn_hdr && strncasecmp(conn_hdr + strspn(conn_hdr, " "), "close", 5) == 0;
    record_answer(c, atoi(c->in + 9), c->in + hlen, blen);
    if (close_after || c->inlen > hlen + blen) {
        conn_close(c); /* extra bytes: the server spoke out of turn */
        return;
    }
    c->inlen = 0;
    c->state = C_IDLE;
}

static void on_event(struct conn *c, uint32_t e)
{
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err || (e & (EPOLLERR | EPOLLHUP))) {
            fail(c);
            return;
        }
        if (!(e & EPOLLOUT))
            return;
        c->state = c->req >= 0 ? C_BUSY : C_IDLE;
    }
    if (c->state == C_BUSY && (e & EPOLLOUT))
        flush_out(c);
    if (c->fd < 0 || !(e & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)))
        return;
    for (;;) {
        if (c->incap - c->inlen < 65536) {
            c->incap = c->incap ? c->incap * 2 : 131072;
            c->in = xrealloc(c->in, c->incap);
        }
        ssize_t r = read(c->fd, c->in + c->inlen, c->incap - c->inlen);
        if (r > 0) {
            c->inlen += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        /* EOF or error: a request in flight failed; an idle connection just closed. */
        if (c->req >= 0)
            parse_answer(c);
        if (c->req >= 0)
            fail(c);
        else
            conn_close(c);
        return;
    }
    if (c->req >= 0)
        parse_answer(c);
    else if (c->inlen)
        conn_close(c);
}

static void write_out(double seconds)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", opt_out);
    FILE *f = fopen(tmp, "w");
    if (!f)
        die(tmp);
    fprintf(f, "{\"requests\": [");
    for (long i = 0; i < nreqs; i++)
        fprintf(f, "%s[%" PRId64 ", %" PRId64 ", %" PRId64 ", %d]", i ? ",\n" : "\n",
                reqs[i].due, reqs[i].sent, reqs[i].answered, reqs[i].status);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    fprintf(f, "],\n\"cpu_user_s\": %.6f, \"cpu_sys_s\": %.6f, \"seconds\": %.6f}\n",
            (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
            (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6, seconds);
    if (fclose(f) != 0 || rename(tmp, opt_out) != 0)
        die(opt_out);
}

static void usage(void)
{
    fprintf(stderr, "usage: poster --port P --bodies FILE --out FILE [--host H] [--path P]\n"
                    "              [--header 'Name: value']... [--rate R] [--inflight N]\n"
                    "              [--timeout S] [--answers FILE]\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'h'},    {"port", required_argument, NULL, 'p'},
        {"path", required_argument, NULL, 'P'},    {"bodies", required_argument, NULL, 'b'},
        {"out", required_argument, NULL, 'o'},     {"answers", required_argument, NULL, 'a'},
        {"header", required_argument, NULL, 'H'},  {"rate", required_argument, NULL, 'r'},
        {"inflight", required_argument, NULL, 'n'}, {"timeout", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h': opt_host = optarg; break;
        case 'p': opt_port = atoi(optarg); break;
        case 'P': opt_path = optarg; break;
        case 'b': opt_bodies = optarg; break;
        case 'o': opt_out = optarg; break;
        case 'a': opt_answers = optarg; break;
        case 'H':
            if (nheaders == MAX_HEADERS)
                usage();
            opt_headers[nheaders++] = optarg;
            break;
        case 'r': opt_rate = atof(optarg); break;
        case 'n': opt_inflight = atoi(optarg); break;
        case 't': opt_timeout = atof(optarg); break;
        default: usage();
        }
    }
    if (optind != argc || opt_port <= 0 || !opt_bodies || !opt_out || opt_inflight < 1 ||
        opt_rate < 0 || opt_timeout <= 0)
        usage();
}

static void resolve(void)
{
    char port[16];
    snprintf(port, sizeof port, "%d", opt_port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(opt_host, port, &hints, &res) != 0) {
        fprintf(stderr, "poster: cannot resolve %s\n", opt_host);
        exit(2);
    }
    memcpy(&addr, res->ai_addr, res->ai_addrlen);
    addrlen = res->ai_addrlen;
    freeaddrinfo(res);
}

/* A connection free for the next request (idle first, then closed), or NULL. */
static struct conn *free_conn(void)
{
    struct conn *closed = NULL;
    for (int k = 0; k < opt_inflight; k++) {
        if (conns[k].state == C_IDLE)
            return &conns[k];
        if (conns[k].state == C_CLOSED && !closed)
            closed = &conns[k];
    }
    return closed;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    load_bodies();
    resolve();
    if (opt_answers && !(answers = fopen(opt_answers, "w")))
        die(opt_answers);
    conns = calloc((size_t)opt_inflight, sizeof *conns);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || ep < 0)
        die("setup");
    for (int k = 0; k < opt_inflight; k++) {
        conns[k] = (struct conn){.fd = -1, .req = -1};
        connect_conn(&conns[k]); /* warm: connections are open before the clock starts */
    }
    struct epoll_event evs[256];
    for (int64_t until = now_ns(CLOCK_MONOTONIC) + 200000000; now_ns(CLOCK_MONOTONIC) < until;) {
        int n = epoll_wait(ep, evs, 256, 10);
        for (int k = 0; k < n; k++)
            on_event(&conns[evs[k].data.u64], evs[k].events);
    }

    int64_t t0 = now_ns(CLOCK_MONOTONIC), rt0 = now_ns(CLOCK_REALTIME);
    long next = 0;
    while (finished < nreqs) {
        int64_t now = now_ns(CLOCK_MONOTONIC);
        int64_t due = opt_rate > 0 ? t0 + (int64_t)((double)next * 1e9 / opt_rate) : now;
        struct conn *c;
        while (next < nreqs && due <= now && (c = free_conn()) != NULL) {
            start_request(c, next++, rt0 + (due - t0));
            due = opt_rate > 0 ? t0 + (int64_t)((double)next * 1e9 / opt_rate) : now;
        }
        int timeout = 100;
        if (next < nreqs && due > now && (due - now + 999999) / 1000000 < timeout)
            timeout = (int)((due - now + 999999) / 1000000); /* never early: no spinning */
        int n = epoll_wait(ep, evs, 256, timeout);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int k = 0; k < n; k++)
            on_event(&conns[evs[k].data.u64], evs[k].events);
        now = now_ns(CLOCK_MONOTONIC);
        for (int k = 0; k < opt_inflight; k++)
            if (conns[k].req >= 0 && now > conns[k].deadline)
                fail(&conns[k]);
    }
    write_out((double)(now_ns(CLOCK_MONOTONIC) - t0) / 1e9);
    if (answers)
        fclose(answers);
    return 0;
}
