/*
 * loadgen: a single-threaded epoll load generator for Server-Sent-Events servers.
 *
 * Opens N HTTP/1.1 connections (at most --concurrency of them handshaking at once),
 * sends one GET per connection, checks the response status, then parses the SSE body
 * incrementally (plain or Transfer-Encoding: chunked) and measures, per event, the
 * delivery latency from the "t" field (publish time, CLOCK_REALTIME ns) plus sequence
 * gaps, duplicates and misrouting.  The first --stall connections stop reading after
 * their response head, so the server's handling of slow consumers can be observed.
 *
 * stdout carries only the protocol lines READY / PROGRESS / DONE; the result is a JSON
 * file (--out); diagnostics go to stderr.  See herald_bench/loadgen.py for the Python side.
 *
 * Result keys beyond the obvious: "connect_failures" counts connections that never got a
 * response head (refused, reset, connect timeout, malformed head); "protocol_errors"
 * counts malformed heads / chunk framing / overlong lines (a malformed head is in both);
 * "seq_untracked" counts events whose seq was outside [0, SEQ_LIMIT) and so were left out
 * of completion; "end_reason" is complete | failed_or_closed | all_closed | timeout |
 * signal.  Latencies and completion are in microseconds, clamped at 0 when the sender's
 * clock is ahead.  Percentiles are nearest-rank.
 *
 * With --per-seq every event carries a seq of its own (one notification, whichever
 * connection it reaches): arrivals are counted per seq in any order, with no per-connection
 * order check, and the result gets "per_seq" (arrivals and largest latency of each seq), so
 * the caller can tell missing, duplicated and late events apart.
 *
 * Stalled connections write "\r\n" every --stall-probe seconds (see probe_stalled), and
 * at the end every open connection is reset rather than closed (see reset_all).
 *
 * Costs, measured on a 2-core VM: the parser itself is a few percent of the CPU; what
 * dominates is the kernel's read() path (on loopback each read also sends the ACK), so
 * ~8 M events per CPU-second when events arrive in batches, and ~5 us of system time per
 * read when every read carries a single small event (wide fan-out at low rates).
 *
 * Build: gcc -O2 -Wall -Wextra -o herald_bench/build/loadgen herald_bench/loadgen.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define RBUF_SIZE (64 * 1024)     /* one read(); the buffer is shared by all connections */
#define HEAD_MAX (64 * 1024)      /* larger response heads are a protocol error */
#define LINE_MAX_BYTES (1 << 20)  /* longest SSE line we carry across reads */
#define SEQ_LIMIT (1 << 24)       /* seq values tracked per event (completion); ~16.7 M */
#define MAX_EVENTS 1024
#define READS_PER_WAKE 4          /* full reads of one connection before serving others */
#define MAX_STATUSES 32
#define FD_RESERVE 32             /* fds kept free for stdio, epoll, the result file */

enum state { ST_IDLE, ST_CONNECTING, ST_SENDING, ST_HEAD, ST_BODY, ST_STALLED, ST_CLOSED };

/* Chunked-transfer decoder states. */
enum chunk_state { CH_SIZE0, CH_SIZE, CH_EXT, CH_DATA, CH_CRLF, CH_END };

/* Fields seen in the event being assembled. */
#define EV_DATA 1u
#define EV_SEQ 2u
#define EV_T 4u
#define EV_C 8u
#define EV_CTRL 16u /* a protocol event (Herald's "ready", "resumed"): not counted */

struct conn {
    int fd;
    uint8_t state;
    uint8_t chunked;
    uint8_t cstate;
    uint8_t evf;        /* EV_* flags of the current event */
    uint8_t have_seq;   /* last_seq is valid */
    uint8_t done;       /* already accounted for in g.pending */
    uint8_t queued;     /* in g.again */
    uint16_t sent;      /* request bytes written so far */
    uint32_t plen, pcap; /* partial head / partial line carried between reads */
    char *pbuf;
    uint64_t chunk_left;
    uint64_t events;
    int64_t last_seq;
    int64_t ev_seq, ev_t, ev_c;
};

struct status_count {
    int status;
    uint64_t count;
};

/* Options. */
static const char *opt_host = "127.0.0.1";
static int opt_port;
static const char *opt_paths;
static int opt_conns = 1;
static uint64_t opt_expect;
static double opt_timeout = 60.0;
static double opt_connect_timeout = 30.0;
static int opt_stall;
static double opt_stall_probe = 0.5;
static int opt_rcvbuf;
static int opt_concurrency = 1000;
static const char *opt_out;
static bool opt_fanout;
static bool opt_per_seq;

/* Run state and counters. */
static struct {
    struct conn *conns;
    char **paths;
    size_t npaths;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char hosthdr[300];
    int ep;
    char *rbuf;
    int64_t now_rt;     /* CLOCK_REALTIME of the read being parsed */
    int64_t t0;         /* CLOCK_MONOTONIC at start */
    int64_t ready_at;   /* CLOCK_MONOTONIC at READY, 0 before */

    int next;           /* next connection index to launch */
    int inflight;       /* connections connecting / waiting for their head */
    int open;           /* sockets currently open */
    int pending;        /* non-stalled connections neither complete nor gone */
    int nonstalled;
    int *again, *again_spare; /* connections to read again without an epoll edge */
    int nagain;

    uint64_t ok, ok_nonstalled, connect_failures, protocol_errors;
    struct status_count statuses[MAX_STATUSES];
    int nstatuses;
    uint64_t other_statuses;
    double *head_s;     /* seconds from start to response head, per head received */
    size_t nhead;

    uint64_t events, comments, control, dups, gaps, misrouted, closed_early, complete;
    uint64_t stalled_closed;
    int64_t stalled_first, stalled_last;   /* CLOCK_MONOTONIC ns */
    int64_t first_seq_min, first_seq_max;
    bool have_first_seq;
    uint64_t seq_untracked;                /* seq < 0 or >= SEQ_LIMIT */

    uint32_t *lat;      /* every latency, microseconds */
    size_t nlat, caplat;
    uint64_t lat_sum;

    /* Per seq: how many connections got it, and the largest latency + 1 (0 = no "t"). */
    uint32_t *seq_cnt, *seq_lat;
    size_t seq_cap;
    int64_t seq_hi;

    uint64_t errors_logged;
} g;

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) { stop_signal = sig; }

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t mono_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "loadgen: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(2);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q)
        die("out of memory%s", "");
    return q;
}

/* Log the first few socket errors only: with thousands of connections one cause is enough. */
static void log_error(int idx, const char *what, int err)
{
    if (g.errors_logged++ < 10)
        fprintf(stderr, "loadgen: conn %d: %s: %s\n", idx, what, strerror(err));
    else if (g.errors_logged == 11)
        fprintf(stderr, "loadgen: (further connection errors not shown)\n");
}

/* ---------------------------------------------------------------- bookkeeping */

static bool is_stalled(const struct conn *c) { return (c - g.conns) < opt_stall; }

/* The connection will never count towards the "all complete" condition again. */
static void mark_done(struct conn *c)
{
    if (!c->done && !is_stalled(c)) {
        c->done = 1;
        g.pending--;
    }
}

static void conn_close(struct conn *c)
{
    if (c->state == ST_CONNECTING || c->state == ST_SENDING || c->state == ST_HEAD)
        g.inflight--;
    if (c->fd >= 0) {
        close(c->fd); /* also removes it from the epoll set */
        c->fd = -1;
        g.open--;
    }
    free(c->pbuf);
    c->pbuf = NULL;
    c->plen = c->pcap = 0;
    c->state = ST_CLOSED;
}

/* The connection never got a response head. */
static void handshake_failed(struct conn *c)
{
    g.connect_failures++;
    mark_done(c);
    conn_close(c);
}

static void count_status(int status)
{
    for (int i = 0; i < g.nstatuses; i++) {
        if (g.statuses[i].status == status) {
            g.statuses[i].count++;
            return;
        }
    }
    if (g.nstatuses < MAX_STATUSES) {
        g.statuses[g.nstatuses].status = status;
        g.statuses[g.nstatuses++].count = 1;
    } else {
        g.other_statuses++;
    }
}

static int pbuf_append(struct conn *c, const char *p, size_t n, size_t limit)
{
    size_t need = (size_t)c->plen + n;
    if (need > limit)
        return -1;
    if (need > c->pcap) {
        size_t cap = c->pcap ? c->pcap : 256;
        while (cap < need)
            cap *= 2;
        c->pbuf = xrealloc(c->pbuf, cap);
        c->pcap = (uint32_t)cap;
    }
    memcpy(c->pbuf + c->plen, p, n);
    c->plen = (uint32_t)need;
    return 0;
}

static void seq_track(int64_t seq, bool has_lat, uint32_t lat)
{
    if (seq < 0 || seq >= SEQ_LIMIT) {
        g.seq_untracked++;
        return;
    }
    size_t s = (size_t)seq;
    if (s >= g.seq_cap) {
        size_t cap = g.seq_cap ? g.seq_cap : 4096;
        while (cap <= s)
            cap *= 2;
        g.seq_cnt = xrealloc(g.seq_cnt, cap * sizeof *g.seq_cnt);
        g.seq_lat = xrealloc(g.seq_lat, cap * sizeof *g.seq_lat);
        memset(g.seq_cnt + g.seq_cap, 0, (cap - g.seq_cap) * sizeof *g.seq_cnt);
        memset(g.seq_lat + g.seq_cap, 0, (cap - g.seq_cap) * sizeof *g.seq_lat);
        g.seq_cap = cap;
    }
    g.seq_cnt[s]++;
    /* Same event, same "t" everywhere: the latest arrival is the largest latency. */
    if (has_lat && lat + 1 > g.seq_lat[s])
        g.seq_lat[s] = lat + 1;
    if (seq > g.seq_hi)
        g.seq_hi = seq;
}

/* ---------------------------------------------------------------- SSE parsing */

/* Parse an integer after a JSON key's colon: optional blanks, optional '-', digits. */
static bool parse_int(const char *p, const char *end, int64_t *out)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    bool neg = false;
    if (p < end && *p == '-') {
        neg = true;
        p++;
    }
    int64_t v = 0;
    int digits = 0;
    while (p < end && *p >= '0' && *p <= '9' && digits < 19) {
        v = v * 10 + (*p++ - '0');
        digits++;
    }
    if (!digits)
        return false;
    *out = neg ? -v : v;
    return true;
}

/*
 * Find "seq":N, "t":N and "c":N in one data line.  Only quote positions are examined
 * (memchr), and "t" must be followed directly by '":' so "ts": never matches.  The first
 * occurrence within an event wins.
 */
static void scan_data(struct conn *c, const char *s, const char *end)
{
    const char *q = s;
    while (q < end && (q = memchr(q, '"', (size_t)(end - q))) != NULL) {
        q++;
        size_t rem = (size_t)(end - q);
        if (rem >= 3 && q[1] == '"' && q[2] == ':') {
            int64_t v;
            if (q[0] == 't' && !(c->evf & EV_T) && parse_int(q + 3, end, &v)) {
                c->ev_t = v;
                c->evf |= EV_T;
            } else if (q[0] == 'c' && !(c->evf & EV_C) && parse_int(q + 3, end, &v)) {
                c->ev_c = v;
                c->evf |= EV_C;
            }
            q += 3;
        } else if (rem >= 5 && q[0] == 's' && memcmp(q, "seq\":", 5) == 0) {
            int64_t v;
            if (!(c->evf & EV_SEQ) && parse_int(q + 5, end, &v)) {
                c->ev_seq = v;
                c->evf |= EV_SEQ;
            }
            q += 5;
        }
    }
}

/* An empty line: the event that has at least one data line is complete. */
static void dispatch(struct conn *c)
{
    unsigned f = c->evf;
    c->evf = 0;
    if (!(f & EV_DATA))
        return;
    if (f & EV_CTRL) {
        g.control++;
        return;
    }
    c->events++;
    g.events++;

    uint32_t lat = 0;
    bool has_lat = false;
    if (f & EV_T) {
        int64_t d = g.now_rt - c->ev_t;
        /* Clocks of another host may run behind: clamp to 0 rather than wrap. */
        int64_t us = d <= 0 ? 0 : d / 1000;
        lat = us >= UINT32_MAX - 1 ? UINT32_MAX - 1 : (uint32_t)us;
        has_lat = true;
        if (g.nlat == g.caplat) {
            g.caplat = g.caplat ? g.caplat * 2 : 1 << 16;
            g.lat = xrealloc(g.lat, g.caplat * sizeof *g.lat);
        }
        g.lat[g.nlat++] = lat;
        g.lat_sum += lat;
    }

    if ((f & EV_SEQ) && opt_per_seq) {
        seq_track(c->ev_seq, has_lat, lat); /* duplicates count too: per_seq shows them */
    } else if (f & EV_SEQ) {
        int64_t s = c->ev_seq;
        if (!c->have_seq) {
            c->have_seq = 1;
            c->last_seq = s;
            if (!g.have_first_seq || s < g.first_seq_min)
                g.first_seq_min = s;
            if (!g.have_first_seq || s > g.first_seq_max)
                g.first_seq_max = s;
            g.have_first_seq = true;
            seq_track(s, has_lat, lat);
        } else if (s <= c->last_seq) {
            /* Not counted per seq: a duplicate must not make an event look complete. */
            g.dups++;
        } else {
            if (s > c->last_seq + 1)
                g.gaps += (uint64_t)(s - c->last_seq - 1);
            c->last_seq = s;
            seq_track(s, has_lat, lat);
        }
    }

    if ((f & EV_C) && c->ev_c != (int64_t)(c - g.conns))
        g.misrouted++;

    if (opt_expect && c->events == opt_expect) {
        g.complete++;
        mark_done(c);
    }
}

static void sse_line(struct conn *c, const char *s, size_t len)
{
    if (len && s[len - 1] == '\r')
        len--;
    if (len == 0) {
        dispatch(c);
        return;
    }
    if (s[0] == ':') {
        g.comments++;
        return;
    }
    if (len >= 6 && memcmp(s, "event:", 6) == 0) {
        const char *v = s + 6 + (len > 6 && s[6] == ' ');
        size_t vl = len - (size_t)(v - s);
        if ((vl == 5 && memcmp(v, "ready", 5) == 0) || (vl == 7 && memcmp(v, "resumed", 7) == 0))
            c->evf |= EV_CTRL;
        return;
    }
    /* "data" alone is a data field with an empty value. id/retry need no work. */
    if (len >= 4 && memcmp(s, "data", 4) == 0 && (len == 4 || s[4] == ':')) {
        c->evf |= EV_DATA;
        if (len > 5)
            scan_data(c, s + 5, s + len);
    }
}

/* Feed body bytes to the line splitter; only a trailing partial line is copied. */
static int sse_feed(struct conn *c, const char *p, size_t n)
{
    const char *end = p + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return pbuf_append(c, p, (size_t)(end - p), LINE_MAX_BYTES);
        if (c->plen) {
            if (pbuf_append(c, p, (size_t)(nl - p), LINE_MAX_BYTES) < 0)
                return -1;
            sse_line(c, c->pbuf, c->plen);
            c->plen = 0;
        } else {
            sse_line(c, p, (size_t)(nl - p));
        }
        p = nl + 1;
    }
    return 0;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Body bytes: de-chunk when needed, then SSE. Returns -1 on a protocol error. */
static int body_feed(struct conn *c, const char *p, size_t n)
{
    if (!c->chunked)
        return sse_feed(c, p, n);
    const char *end = p + n;
    while (p < end) {
        switch (c->cstate) {
        case CH_SIZE0:
        case CH_SIZE: {
            char ch = *p++;
            int v = hexval(ch);
            if (v >= 0) {
                if (c->chunk_left >> 56)
                    return -1;
                c->chunk_left = c->chunk_left * 16 + (uint64_t)v;
                c->cstate = CH_SIZE;
            } else if (ch == '\r') {
                /* the '\n' decides */
            } else if (ch == '\n') {
                if (c->cstate == CH_SIZE0)
                    break; /* tolerate a stray blank line */
                c->cstate = c->chunk_left ? CH_DATA : CH_END;
            } else if (c->cstate == CH_SIZE && (ch == ';' || ch == ' ' || ch == '\t')) {
                c->cstate = CH_EXT;
            } else {
                return -1;
            }
            break;
        }
        case CH_EXT: {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl)
                return 0;
            p = nl + 1;
            c->cstate = c->chunk_left ? CH_DATA : CH_END;
            break;
        }
        case CH_DATA: {
            size_t take = (size_t)(end - p);
            if (take > c->chunk_left)
                take = (size_t)c->chunk_left;
            if (sse_feed(c, p, take) < 0)
                return -1;
            p += take;
            c->chunk_left -= take;
            if (!c->chunk_left)
                c->cstate = CH_CRLF;
            break;
        }
        case CH_CRLF: {
            char ch = *p++;
            if (ch == '\n')
                c->cstate = CH_SIZE0;
            else if (ch != '\r')
                return -1;
            break;
        }
        case CH_END:
            return 0; /* last chunk: ignore trailers, the server closes next */
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- response head */

/* Offset just past the blank line ending the head ("\r\n\r\n" or "\n\n"), or 0. */
static size_t head_end(const char *s, size_t len)
{
    const char *p = s, *end = s + len;
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        p++;
        if (p < end && *p == '\n')
            return (size_t)(p + 1 - s);
        if (p + 1 < end && p[0] == '\r' && p[1] == '\n')
            return (size_t)(p + 2 - s);
    }
    return 0;
}

/* Case-insensitive: does the header block contain "Transfer-Encoding: ...chunked"? */
static bool head_is_chunked(const char *s, size_t len)
{
    static const char name[] = "transfer-encoding:";
    const size_t nlen = sizeof name - 1;
    const char *p = s, *end = s + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        if ((size_t)(eol - p) > nlen && strncasecmp(p, name, nlen) == 0) {
            for (const char *v = p + nlen; v + 7 <= eol; v++)
                if (strncasecmp(v, "chunked", 7) == 0)
                    return true;
        }
        p = eol + 1;
    }
    return false;
}

/* "HTTP/1.x NNN ..." -> NNN, or -1. */
static int parse_status(const char *s, size_t len)
{
    if (len < 12 || memcmp(s, "HTTP/1.", 7) != 0 || s[8] != ' ')
        return -1;
    int st = 0;
    for (int i = 9; i < 12; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        st = st * 10 + (s[i] - '0');
    }
    return st;
}

/*
 * Bytes read while waiting for the head.  Returns the number of leading bytes of p that
 * belonged to the head (the rest is body), or -1 while the head is incomplete / when the
 * connection was closed because of it.
 */
static ssize_t head_feed(struct conn *c, const char *p, size_t n)
{
    const char *buf = p;
    size_t len = n, old = c->plen;
    if (old) {
        if (pbuf_append(c, p, n, HEAD_MAX) < 0) {
            g.protocol_errors++;
            handshake_failed(c);
            return -1;
        }
        buf = c->pbuf;
        len = c->plen;
    }
    size_t hend = head_end(buf, len);
    if (!hend) {
        if (!old && pbuf_append(c, p, n, HEAD_MAX) < 0) {
            g.protocol_errors++;
            handshake_failed(c);
        }
        return -1;
    }

    int64_t now = mono_ns();
    g.head_s[g.nhead++] = (double)(now - g.t0) / 1e9;
    int status = parse_status(buf, hend);
    if (status < 0) {
        g.protocol_errors++;
        handshake_failed(c);
        return -1;
    }
    if (status != 200) {
        count_status(status);
        mark_done(c);
        conn_close(c);
        return -1;
    }
    g.inflight--; /* leaves the handshake phase: state changes below */
    g.ok++;
    if (!is_stalled(c))
        g.ok_nonstalled++;
    c->chunked = head_is_chunked(buf, hend);
    c->plen = 0;
    /* The head was incomplete before this read, so it ends inside p. */
    size_t consumed = hend - old;

    if (is_stalled(c)) {
        /* Never read again; still learn when the server drops the connection. */
        struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET,
                                 .data.u64 = (uint64_t)(c - g.conns)};
        if (epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
            log_error((int)(c - g.conns), "epoll_ctl", errno);
        free(c->pbuf);
        c->pbuf = NULL;
        c->pcap = 0;
        c->state = ST_STALLED;
        return -1;
    }
    c->state = ST_BODY;
    return (ssize_t)consumed;
}

/* ---------------------------------------------------------------- socket events */

static void peer_closed(struct conn *c)
{
    if (c->state == ST_HEAD) {
        handshake_failed(c);
        return;
    }
    if (!opt_expect || c->events < opt_expect)
        g.closed_early++;
    mark_done(c);
    conn_close(c);
}

/* Bytes of one read: the head first if still awaited. False once c stops reading. */
static bool consume(struct conn *c, const char *p, size_t n)
{
    if (c->state == ST_HEAD) {
        ssize_t used = head_feed(c, p, n);
        if (used < 0)
            return c->state == ST_HEAD;
        p += used;
        n -= (size_t)used;
    }
    if (n && body_feed(c, p, n) < 0) {
        g.protocol_errors++;
        mark_done(c);
        conn_close(c);
        return false;
    }
    return true;
}

static void requeue(struct conn *c)
{
    if (!c->queued) {
        c->queued = 1;
        g.again[g.nagain++] = (int)(c - g.conns);
    }
}

static void on_readable(struct conn *c, uint32_t evmask)
{
    for (int reads = 0;; reads++) {
        if (reads == READS_PER_WAKE) {
            /* Fairness: let the others in, and come back without waiting for an edge. */
            requeue(c);
            return;
        }
        ssize_t r = read(c->fd, g.rbuf, RBUF_SIZE);
        if (r > 0) {
            /* One timestamp per read: all events in it arrived together. */
            g.now_rt = clock_ns(CLOCK_REALTIME);
            if (!consume(c, g.rbuf, (size_t)r))
                return;
            /* Edge-triggered: a short read drained the socket; later data re-arms the edge.
             * After a FIN/error, read on until read() reports it. */
            if ((size_t)r < RBUF_SIZE && !(evmask & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
                return;
            continue;
        }
        if (r == 0) {
            peer_closed(c);
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        if (errno == EINTR)
            continue;
        if (c->state == ST_HEAD)
            log_error((int)(c - g.conns), "read", errno);
        peer_closed(c);
        return;
    }
}

/* Connections left with unread data by the READS_PER_WAKE cap. */
static void drain_requeued(void)
{
    int *list = g.again, n = g.nagain;
    g.again = g.again_spare;
    g.again_spare = list;
    g.nagain = 0;
    for (int i = 0; i < n; i++) {
        struct conn *c = &g.conns[list[i]];
        c->queued = 0;
        if (c->state == ST_HEAD || c->state == ST_BODY)
            on_readable(c, EPOLLIN | EPOLLRDHUP); /* read until EAGAIN (or the cap) */
    }
}

static void try_send(struct conn *c)
{
    char req[9000];
    const char *path = g.paths[(size_t)(c - g.conns) % g.npaths];
    int len = snprintf(req, sizeof req,
                       "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n"
                       "Cache-Control: no-cache\r\n\r\n",
                       path, g.hosthdr);
    while (c->sent < len) {
        ssize_t w = send(c->fd, req + c->sent, (size_t)(len - c->sent), MSG_NOSIGNAL);
        if (w > 0) {
            c->sent = (uint16_t)(c->sent + w);
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return; /* EPOLLOUT will come back */
        } else {
            log_error((int)(c - g.conns), "send", errno);
            handshake_failed(c);
            return;
        }
    }
    c->state = ST_HEAD;
}

static void stalled_gone(struct conn *c)
{
    int64_t now = mono_ns();
    if (!g.stalled_closed)
        g.stalled_first = now;
    g.stalled_last = now;
    g.stalled_closed++;
    conn_close(c);
}

static void on_event(struct conn *c, uint32_t e)
{
    switch (c->state) {
    case ST_CONNECTING: {
        int err = 0;
        socklen_t el = sizeof err;
        if (!(e & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
            err = errno;
        if (err || (e & (EPOLLERR | EPOLLHUP))) {
            log_error((int)(c - g.conns), "connect", err ? err : ECONNRESET);
            handshake_failed(c);
            return;
        }
        c->state = ST_SENDING;
    }
        /* fall through */
    case ST_SENDING:
        if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            try_send(c);
        if (c->state != ST_HEAD)
            return;
        if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            on_readable(c, e);
        return;
    case ST_HEAD:
    case ST_BODY:
        if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            on_readable(c, e);
        return;
    case ST_STALLED:
        if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            stalled_gone(c);
        return;
    default:
        return;
    }
}

static void launch(int idx)
{
    struct conn *c = &g.conns[idx];
    c->fd = -1;
    c->state = ST_IDLE;
    int fd = socket(g.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error(idx, "socket", errno);
        handshake_failed(c);
        return;
    }
    c->fd = fd;
    g.open++;
    /* Only stalled connections get the small receive buffer: readers must stay fast. */
    if (opt_rcvbuf > 0 && is_stalled(c)
        && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &opt_rcvbuf, sizeof opt_rcvbuf) < 0)
        log_error(idx, "SO_RCVBUF", errno);
    if (connect(fd, (struct sockaddr *)&g.addr, g.addrlen) < 0 && errno != EINPROGRESS) {
        log_error(idx, "connect", errno);
        handshake_failed(c);
        return;
    }
    /* Registered once; edge-triggered, so EPOLLOUT stays quiet after the connect edge. */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                             .data.u64 = (uint64_t)idx};
    if (epoll_ctl(g.ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        log_error(idx, "epoll_ctl", errno);
        handshake_failed(c);
        return;
    }
    c->state = ST_CONNECTING;
    g.inflight++;
}

/*
 * A server that closes a stalled connection normally (close/shutdown, no SO_LINGER 0)
 * queues its FIN behind the unsent bytes the stalled client never reads, so the client
 * never sees it.  Writing "\r\n" now and then fixes that without reading: once the server
 * socket is closed, incoming data makes its kernel answer with a RST (RFC 1122 4.2.2.13),
 * which raises EPOLLERR/EPOLLHUP here.  While the server is still streaming, a bare CRLF
 * is what HTTP/1.1 servers ignore between requests (RFC 9112 2.2).
 */
static void probe_stalled(void)
{
    for (int i = 0; i < opt_stall && i < g.next; i++) {
        struct conn *c = &g.conns[i];
        if (c->state != ST_STALLED)
            continue;
        if (send(c->fd, "\r\n", 2, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN &&
            errno != EWOULDBLOCK && errno != EINTR)
            stalled_gone(c);
    }
}

/* ---------------------------------------------------------------- statistics */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank: the smallest value with at least p*n values at or below it (1-based). */
static size_t rank_of(double p, size_t n)
{
    double x = p * (double)n;
    size_t r = (size_t)x;
    if ((double)r < x)
        r++;
    if (r < 1)
        r = 1;
    if (r > n)
        r = n;
    return r;
}

/*
 * Exact percentiles of a uint32 array without sorting it: a histogram of the high 16 bits
 * finds the bucket holding each rank, a histogram of the low 16 bits inside that bucket
 * finds the value.  Linear passes, no copy of the (possibly huge) array.  ps ascending.
 */
static void percentiles_u32(const uint32_t *a, size_t n, const double *ps, int np, uint32_t *out)
{
    static uint64_t hi[65536], lo[65536];
    memset(hi, 0, sizeof hi);
    for (size_t i = 0; i < n; i++)
        hi[a[i] >> 16]++;
    long lo_bucket = -1;
    size_t cum = 0, b = 0;
    for (int k = 0; k < np; k++) {
        size_t r = rank_of(ps[k], n);
        while (cum + hi[b] < r)
            cum += hi[b++];
        if ((long)b != lo_bucket) {
            memset(lo, 0, sizeof lo);
            for (size_t i = 0; i < n; i++)
                if ((a[i] >> 16) == b)
                    lo[a[i] & 0xffff]++;
            lo_bucket = (long)b;
        }
        size_t need = r - cum, c2 = 0, l = 0;
        while (c2 + lo[l] < need)
            c2 += lo[l++];
        out[k] = (uint32_t)((b << 16) | l);
    }
}

static uint32_t max_u32(const uint32_t *a, size_t n)
{
    uint32_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (a[i] > m)
            m = a[i];
    return m;
}

/* --per-seq: arrivals and largest latency (us, -1 without "t") of every seq 0..seq_hi. */
static void write_per_seq(FILE *f)
{
    fprintf(f, "  \"per_seq\": {\"count\": [");
    for (int64_t s = 0; s <= g.seq_hi; s++)
        fprintf(f, "%s%u", s ? "," : "", g.seq_cnt[s]);
    fprintf(f, "], \"max_latency_us\": [");
    for (int64_t s = 0; s <= g.seq_hi; s++)
        fprintf(f, "%s%" PRId64, s ? "," : "", (int64_t)g.seq_lat[s] - 1);
    fprintf(f, "]},\n");
}

static void write_result(int64_t end_mono, const char *end_reason)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", opt_out);
    FILE *f = fopen(tmp, "w");
    if (!f)
        die("cannot write %s", tmp);

    fprintf(f, "{\n  \"conns\": %d,\n  \"ok\": %" PRIu64 ",\n  \"http_errors\": {", opt_conns,
            g.ok);
    for (int i = 0; i < g.nstatuses; i++)
        fprintf(f, "%s\"%d\": %" PRIu64, i ? ", " : "", g.statuses[i].status, g.statuses[i].count);
    if (g.other_statuses)
        fprintf(f, "%s\"other\": %" PRIu64, g.nstatuses ? ", " : "", g.other_statuses);
    fprintf(f, "},\n  \"connect_failures\": %" PRIu64 ",\n", g.connect_failures);
    fprintf(f, "  \"protocol_errors\": %" PRIu64 ",\n", g.protocol_errors);

    qsort(g.head_s, g.nhead, sizeof *g.head_s, cmp_double);
    if (g.nhead) {
        fprintf(f, "  \"connect_s\": {\"p50\": %.6f, \"p99\": %.6f, \"max\": %.6f},\n",
                g.head_s[rank_of(0.5, g.nhead) - 1], g.head_s[rank_of(0.99, g.nhead) - 1],
                g.head_s[g.nhead - 1]);
        fprintf(f, "  \"ready_s\": %.6f,\n", g.head_s[g.nhead - 1]);
    } else {
        fprintf(f, "  \"connect_s\": {\"p50\": null, \"p99\": null, \"max\": null},\n");
        fprintf(f, "  \"ready_s\": null,\n");
    }

    fprintf(f, "  \"events_received\": %" PRIu64 ",\n  \"expected_per_conn\": %" PRIu64 ",\n",
            g.events, opt_expect);
    fprintf(f, "  \"conns_complete\": %" PRIu64 ",\n", g.complete);

    static const double lps[] = {0.5, 0.9, 0.99, 0.999};
    uint32_t lv[4];
    if (g.nlat) {
        percentiles_u32(g.lat, g.nlat, lps, 4, lv);
        fprintf(f,
                "  \"latency_us\": {\"count\": %zu, \"p50\": %u, \"p90\": %u, \"p99\": %u, "
                "\"p999\": %u, \"max\": %u, \"mean\": %.1f},\n",
                g.nlat, lv[0], lv[1], lv[2], lv[3], max_u32(g.lat, g.nlat),
                (double)g.lat_sum / (double)g.nlat);
    } else {
        fprintf(f, "  \"latency_us\": {\"count\": 0, \"p50\": null, \"p90\": null, \"p99\": null, "
                   "\"p999\": null, \"max\": null, \"mean\": null},\n");
    }


    /* Completion: events that every non-stalled connection with a 200 head received. */
    uint64_t target = g.ok_nonstalled, incomplete = 0;
    size_t ncomp = 0;
    uint32_t *comp = NULL;
    if (target && g.seq_hi >= 0) {
        comp = xrealloc(NULL, ((size_t)g.seq_hi + 1) * sizeof *comp);
        for (size_t s = 0; s <= (size_t)g.seq_hi; s++) {
            if (g.seq_cnt[s] >= target) {
                if (g.seq_lat[s])
                    comp[ncomp++] = g.seq_lat[s] - 1;
            } else if (g.seq_cnt[s]) {
                incomplete++;
            }
        }
    }
    static const double cps[] = {0.5, 0.9, 0.99};
    uint32_t cv[3];
    if (ncomp) {
        percentiles_u32(comp, ncomp, cps, 3, cv);
        fprintf(f,
                "  \"completion_us\": {\"events\": %zu, \"p50\": %u, \"p90\": %u, \"p99\": %u, "
                "\"max\": %u},\n",
                ncomp, cv[0], cv[1], cv[2], max_u32(comp, ncomp));
    } else {
        fprintf(f, "  \"completion_us\": {\"events\": 0, \"p50\": null, \"p90\": null, "
                   "\"p99\": null, \"max\": null},\n");
    }
    free(comp);
    if (opt_fanout)
        fprintf(f, "  \"incomplete_events\": %" PRIu64 ",\n", incomplete);
    else
        fprintf(f, "  \"incomplete_events\": null,\n");

    fprintf(f, "  \"duplicates_or_reordered\": %" PRIu64 ",\n  \"gaps\": %" PRIu64 ",\n", g.dups,
            g.gaps);
    fprintf(f, "  \"misrouted\": %" PRIu64 ",\n  \"closed_early\": %" PRIu64 ",\n", g.misrouted,
            g.closed_early);
    fprintf(f, "  \"stalled\": %d,\n  \"stalled_closed\": %" PRIu64 ",\n", opt_stall,
            g.stalled_closed);
    /* Relative to READY; negative when the server dropped them before READY. */
    int64_t ref = g.ready_at ? g.ready_at : end_mono;
    if (g.stalled_closed)
        fprintf(f, "  \"stalled_closed_first_s\": %.6f,\n  \"stalled_closed_last_s\": %.6f,\n",
                (double)(g.stalled_first - ref) / 1e9, (double)(g.stalled_last - ref) / 1e9);
    else
        fprintf(f, "  \"stalled_closed_first_s\": null,\n  \"stalled_closed_last_s\": null,\n");
    fprintf(f, "  \"comments\": %" PRIu64 ",\n", g.comments);
    fprintf(f, "  \"control_events\": %" PRIu64 ",\n", g.control);
    if (g.have_first_seq)
        fprintf(f, "  \"first_seq\": {\"min\": %" PRId64 ", \"max\": %" PRId64 "},\n",
                g.first_seq_min, g.first_seq_max);
    else
        fprintf(f, "  \"first_seq\": {\"min\": null, \"max\": null},\n");
    fprintf(f, "  \"seq_untracked\": %" PRIu64 ",\n", g.seq_untracked);
    if (opt_per_seq)
        write_per_seq(f);
    fprintf(f, "  \"duration_s\": %.6f,\n",
            g.ready_at ? (double)(end_mono - g.ready_at) / 1e9 : 0.0);
    fprintf(f, "  \"end_reason\": \"%s\",\n", end_reason);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    fprintf(f, "  \"cpu_user_s\": %.6f,\n  \"cpu_sys_s\": %.6f,\n  \"max_rss_kb\": %ld\n}\n",
            (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
            (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6, ru.ru_maxrss);
    if (fclose(f) != 0 || rename(tmp, opt_out) != 0)
        die("cannot write %s", opt_out);
}

/* ---------------------------------------------------------------- setup */

static void load_paths(const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f)
        die("cannot open --paths file %s", file);
    char *line = NULL;
    size_t cap = 0, pcap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (!len)
            continue;
        if (len > 8000)
            die("request target longer than 8000 bytes in %s", file);
        if (g.npaths == pcap) {
            pcap = pcap ? pcap * 2 : 64;
            g.paths = xrealloc(g.paths, pcap * sizeof *g.paths);
        }
        g.paths[g.npaths++] = strdup(line);
    }
    free(line);
    fclose(f);
    if (!g.npaths)
        die("no request targets in %s", file);
}

static void resolve(void)
{
    char port[16];
    snprintf(port, sizeof port, "%d", opt_port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(opt_host, port, &hints, &res);
    if (rc != 0)
        die("cannot resolve host: %s", gai_strerror(rc));
    memcpy(&g.addr, res->ai_addr, res->ai_addrlen);
    g.addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    if (strchr(opt_host, ':'))
        snprintf(g.hosthdr, sizeof g.hosthdr, "[%s]:%d", opt_host, opt_port);
    else
        snprintf(g.hosthdr, sizeof g.hosthdr, "%s:%d", opt_host, opt_port);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            fprintf(stderr, "loadgen: cannot raise RLIMIT_NOFILE: %s\n", strerror(errno));
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (rlim_t)opt_conns + FD_RESERVE > rl.rlim_cur) {
        fprintf(stderr, "loadgen: --conns %d needs more than the open-file limit %llu allows\n",
                opt_conns, (unsigned long long)rl.rlim_cur);
        exit(2);
    }
}

static double parse_double(const char *s, const char *name)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || v < 0)
        die("bad value for %s", name);
    return v;
}

static long parse_long(const char *s, const char *name, long lo, long hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi)
        die("bad value for %s", name);
    return v;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --port P --paths FILE --out FILE [--host H] [--conns N] [--expect E]\n"
            "               [--timeout S] [--connect-timeout S] [--stall K] [--stall-probe S]\n"
            "               [--rcvbuf BYTES] [--concurrency C] [--fanout] [--per-seq]\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {"paths", required_argument, NULL, 'P'},
        {"conns", required_argument, NULL, 'n'},
        {"expect", required_argument, NULL, 'e'},
        {"timeout", required_argument, NULL, 't'},
        {"connect-timeout", required_argument, NULL, 'T'},
        {"stall", required_argument, NULL, 's'},
        {"stall-probe", required_argument, NULL, 'S'},
        {"rcvbuf", required_argument, NULL, 'r'},
        {"concurrency", required_argument, NULL, 'c'},
        {"out", required_argument, NULL, 'o'},
        {"fanout", no_argument, NULL, 'f'},
        {"per-seq", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, '?'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h': opt_host = optarg; break;
        case 'p': opt_port = (int)parse_long(optarg, "--port", 1, 65535); break;
        case 'P': opt_paths = optarg; break;
        case 'n': opt_conns = (int)parse_long(optarg, "--conns", 1, 1000000); break;
        case 'e': opt_expect = (uint64_t)parse_long(optarg, "--expect", 0, 1L << 62); break;
        case 't': opt_timeout = parse_double(optarg, "--timeout"); break;
        case 'T': opt_connect_timeout = parse_double(optarg, "--connect-timeout"); break;
        case 's': opt_stall = (int)parse_long(optarg, "--stall", 0, 1000000); break;
        case 'S': opt_stall_probe = parse_double(optarg, "--stall-probe"); break;
        case 'r': opt_rcvbuf = (int)parse_long(optarg, "--rcvbuf", 1, 1L << 30); break;
        case 'c': opt_concurrency = (int)parse_long(optarg, "--concurrency", 1, 1000000); break;
        case 'o': opt_out = optarg; break;
        case 'f': opt_fanout = true; break;
        case 'q': opt_per_seq = true; break;
        default: usage();
        }
    }
    if (optind != argc || !opt_port || !opt_paths || !opt_out)
        usage();
    if (opt_stall > opt_conns)
        opt_stall = opt_conns;
}

/*
 * Close what is still open with an RST (SO_LINGER 0) instead of a FIN: a normal close
 * would leave one TIME_WAIT socket per connection on this side for 60 s, and with tens of
 * thousands of them the kernel's port search makes the next run's connects slow (measured:
 * 10k TIME_WAIT sockets turned a 0.3 s connect phase into 1 s of system CPU).
 */
static void reset_all(void)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    for (int i = 0; i < g.next; i++) {
        struct conn *c = &g.conns[i];
        if (c->fd >= 0) {
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            conn_close(c);
        }
    }
}

/* ---------------------------------------------------------------- main loop */

static int ms_until(int64_t deadline, int64_t now)
{
    if (deadline <= now)
        return 0;
    int64_t ms = (deadline - now + 999999) / 1000000;
    return ms > 1000000 ? 1000000 : (int)ms;
}

static void print_progress(void)
{
    printf("PROGRESS events=%" PRIu64 " conns_done=%" PRIu64 "\n", g.events, g.complete);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    g.t0 = mono_ns();
    setvbuf(stdout, NULL, _IOLBF, 0);
    raise_nofile();
    load_paths(opt_paths);
    resolve();

    /* SIGTERM/SIGINT are only delivered inside epoll_pwait: no lost wake-up. */
    sigset_t block, waitmask;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &waitmask);
    sigdelset(&waitmask, SIGTERM);
    sigdelset(&waitmask, SIGINT);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    g.conns = calloc((size_t)opt_conns, sizeof *g.conns);
    g.head_s = calloc((size_t)opt_conns, sizeof *g.head_s);
    g.rbuf = malloc(RBUF_SIZE);
    g.again = malloc((size_t)opt_conns * sizeof *g.again);
    g.again_spare = malloc((size_t)opt_conns * sizeof *g.again_spare);
    if (!g.conns || !g.head_s || !g.rbuf || !g.again || !g.again_spare)
        die("out of memory%s", "");
    for (int i = 0; i < opt_conns; i++)
        g.conns[i].fd = -1;
    g.nonstalled = opt_conns - opt_stall;
    g.pending = g.nonstalled;
    g.seq_hi = -1;
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    if (g.ep < 0)
        die("epoll_create1: %s", strerror(errno));

    struct epoll_event evs[MAX_EVENTS];
    int64_t connect_deadline = g.t0 + (int64_t)(opt_connect_timeout * 1e9);
    int64_t end_deadline = 0, next_progress = 0;
    int64_t probe_every = opt_stall && opt_stall_probe > 0 ? (int64_t)(opt_stall_probe * 1e9) : 0;
    int64_t next_probe = g.t0 + probe_every;
    const char *reason = "";

    for (;;) {
        while (!g.ready_at && g.next < opt_conns && g.inflight < opt_concurrency)
            launch(g.next++);

        int64_t now = mono_ns();
        bool all_settled = g.next == opt_conns && g.inflight == 0;
        if (!g.ready_at && !all_settled && now >= connect_deadline) {
            int late = 0;
            for (int i = 0; i < opt_conns; i++) {
                struct conn *c = &g.conns[i];
                if (i >= g.next || c->state == ST_CONNECTING || c->state == ST_SENDING ||
                    c->state == ST_HEAD) {
                    late++;
                    handshake_failed(c);
                }
            }
            g.next = opt_conns;
            all_settled = true;
            fprintf(stderr, "loadgen: connect timeout: %d connections not ready\n", late);
        }
        if (!g.ready_at && all_settled) {
            g.ready_at = now;
            end_deadline = now + (int64_t)(opt_timeout * 1e9);
            next_progress = now + 500000000;
            printf("READY conns=%d ok=%" PRIu64 " failed=%" PRIu64 " seconds=%.3f\n", opt_conns,
                   g.ok, (uint64_t)opt_conns - g.ok, (double)(now - g.t0) / 1e9);
            fflush(stdout);
        }
        if (g.ready_at) {
            if (now >= next_progress) {
                print_progress();
                while (next_progress <= now)
                    next_progress += 500000000;
            }
            /* All non-stalled connections have their events, or nothing is left to watch. */
            if (opt_expect && g.nonstalled > 0 && g.pending == 0) {
                reason = g.complete == (uint64_t)g.nonstalled ? "complete" : "failed_or_closed";
                break;
            }
            if (g.open == 0) {
                reason = "all_closed";
                break;
            }
            if (now >= end_deadline) {
                reason = "timeout";
                break;
            }
        }
        if (stop_signal) {
            reason = "signal";
            break;
        }
        if (probe_every && now >= next_probe) {
            probe_stalled();
            next_probe = now + probe_every;
        }

        int tmo;
        if (g.ready_at) {
            int a = ms_until(next_progress, now), b = ms_until(end_deadline, now);
            tmo = a < b ? a : b;
        } else {
            tmo = ms_until(connect_deadline, now);
        }
        if (probe_every && ms_until(next_probe, now) < tmo)
            tmo = ms_until(next_probe, now);
        if (g.nagain)
            tmo = 0;
        int n = epoll_pwait(g.ep, evs, MAX_EVENTS, tmo, &waitmask);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++)
            on_event(&g.conns[evs[i].data.u64], evs[i].events);
        if (g.nagain)
            drain_requeued();
    }

    int64_t end = mono_ns();
    if (g.ready_at)
        print_progress();
    write_result(end, reason);
    reset_all();
    printf("DONE\n");
    fflush(stdout);
    return 0;
}
