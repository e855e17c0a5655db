/*
 * echo-client: drives an echo server with N keep-alive connections, one message in flight on
 * each, until R round trips have completed; then closes every connection and prints
 * `ROUNDTRIPS <R>`. A plain epoll loop on one thread, so its own cost stays out of the
 * server's count (bench/instructions.sh runs it on the other core).
 *
 *   cc -O2 -o echo-client bench/echo-client.c
 *   echo-client HOST:PORT CONNECTIONS ROUNDTRIPS [MESSAGE_BYTES]
 *
 * Every reply is checked byte for byte against what was sent; a short, wrong or closed reply
 * ends the run with an error (exit 1).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

struct conn {
    int fd;
    size_t got; /* bytes of the current reply received */
};

static void die(const char *what) {
    perror(what);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST:PORT CONNECTIONS ROUNDTRIPS [MESSAGE_BYTES]\n", argv[0]);
        return 2;
    }
    char host[64];
    const char *colon = strrchr(argv[1], ':');
    if (!colon || (size_t)(colon - argv[1]) >= sizeof host) {
        fprintf(stderr, "bad address %s (want HOST:PORT)\n", argv[1]);
        return 2;
    }
    memcpy(host, argv[1], colon - argv[1]);
    host[colon - argv[1]] = 0;
    long conns = atol(argv[2]);
    long target = atol(argv[3]);
    long size = argc > 4 ? atol(argv[4]) : 64;
    if (conns < 1 || target < 1 || size < 1 || size > 65536) {
        fprintf(stderr, "CONNECTIONS and ROUNDTRIPS must be >= 1, MESSAGE_BYTES 1..65536\n");
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "bad IPv4 address %s\n", host);
        return 2;
    }
    char *msg = malloc(size), *reply = malloc(size);
    for (long i = 0; i < size; i++)
        msg[i] = (char)('a' + i % 26);

    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    struct conn *cs = calloc(conns, sizeof *cs);
    for (long i = 0; i < conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            die("socket");
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
            die("connect");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        cs[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            die("epoll_ctl");
    }
    /* One message in flight per connection; a new one goes out when its reply is whole. */
    long sent = 0, done = 0;
    for (long i = 0; i < conns && sent < target; i++, sent++)
        if (write(cs[i].fd, msg, size) != size)
            die("write");
    struct epoll_event evs[256];
    while (done < target) {
        int n = epoll_wait(ep, evs, 256, 10000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("epoll_wait");
        if (n == 0) {
            fprintf(stderr, "echo-client: no reply for 10 s (%ld of %ld done)\n", done, target);
            return 1;
        }
        for (int e = 0; e < n; e++) {
            struct conn *c = &cs[evs[e].data.u64];
            ssize_t r = read(c->fd, reply + c->got, size - c->got);
            if (r < 0 && errno == EAGAIN)
                continue;
            if (r <= 0) {
                fprintf(stderr, "echo-client: connection closed or failed mid-reply\n");
                return 1;
            }
            if (memcmp(reply + c->got, msg + c->got, r) != 0) {
                fprintf(stderr, "echo-client: reply differs from the message\n");
                return 1;
            }
            c->got += r;
            if (c->got < (size_t)size)
                continue;
            c->got = 0;
            done++;
            if (sent < target) {
                sent++;
                if (write(c->fd, msg, size) != size)
                    die("write");
            }
        }
    }
    for (long i = 0; i < conns; i++)
        close(cs[i].fd);
    printf("ROUNDTRIPS %ld\n", done);
    return 0;
}
