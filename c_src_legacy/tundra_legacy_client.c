/*
 * A 0.x Tundra client, written for this project from the 0.x wire layout
 * (see native/tundra_core/src/legacy.rs): it asks tundra_server for a
 * device with the fixed C-struct request, receives the device fd with the
 * reply, then answers one ICMPv6 echo request arriving on the device,
 * checking the 4-byte packet-information header 0.x devices carry.
 *
 *   tundra_legacy_client SOCKET ADDRESS PEER NETMASK MTU
 *
 * Prints "device NAME" once the device exists, then "pi flags=0x.. proto=0x.."
 * for the echo request it answers, and exits 0. Exits 1 on any failure,
 * 2 if no echo request came within 20 seconds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#define ADDR_LEN 46 /* INET6_ADDRSTRLEN */
#define NAME_LEN 16 /* IFNAMSIZ */

struct tundra_request {
    uint32_t type; /* 0: create */
    uint64_t size; /* sizeof the rest: 152 */
    char addr[ADDR_LEN];
    char dstaddr[ADDR_LEN];
    char netmask[ADDR_LEN];
    int mtu;
};

struct tundra_reply {
    uint32_t type;
    uint64_t size; /* 24 */
    char name[NAME_LEN];
};

_Static_assert(sizeof(struct tundra_request) == 160, "0.x request is 160 bytes");
_Static_assert(offsetof(struct tundra_request, addr) == 16, "addr at 16");
_Static_assert(offsetof(struct tundra_request, mtu) == 156, "mtu at 156");
_Static_assert(sizeof(struct tundra_reply) == 32, "0.x reply is 32 bytes");

static int fail(const char *what) {
    perror(what);
    return 1;
}

static void copy_field(char *dst, const char *src) {
    strncpy(dst, src, ADDR_LEN - 1);
    dst[ADDR_LEN - 1] = '\0';
}

/* Creates the device through the server; returns its fd, or -1. */
static int create_device(const char *path, const char *addr, const char *peer,
                         const char *netmask, int mtu, char name[NAME_LEN]) {
    int sock = socket(AF_UNIX, SOCK_STREAM, 0);
    if (sock < 0) return fail("socket"), -1;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strncpy(sun.sun_path, path, sizeof(sun.sun_path) - 1);
    if (connect(sock, (struct sockaddr *)&sun, sizeof(sun)) < 0) return fail("connect"), -1;

    struct tundra_request req;
    memset(&req, 0, sizeof(req));
    req.type = 0;
    req.size = 152;
    copy_field(req.addr, addr);
    copy_field(req.dstaddr, peer);
    copy_field(req.netmask, netmask);
    req.mtu = mtu;
    if (write(sock, &req, sizeof(req)) != (ssize_t)sizeof(req)) return fail("write request"), -1;

    struct tundra_reply reply;
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control;
    struct iovec iov = {.iov_base = &reply, .iov_len = sizeof(reply)};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = control.buf, .msg_controllen = sizeof(control.buf),
    };
    ssize_t got = recvmsg(sock, &msg, 0);
    close(sock);
    if (got != (ssize_t)sizeof(reply) || reply.size != 24) {
        fprintf(stderr, "no valid reply (%zd bytes)\n", got);
        return -1;
    }
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    if (!cmsg || cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) {
        fprintf(stderr, "reply without a device fd\n");
        return -1;
    }
    int fd;
    memcpy(&fd, CMSG_DATA(cmsg), sizeof(fd));
    memcpy(name, reply.name, NAME_LEN);
    name[NAME_LEN - 1] = '\0';
    return fd;
}

/* RFC 1624 incremental update of a checksum for one 16-bit word. */
static uint16_t checksum_update(uint16_t sum, uint16_t old_word, uint16_t new_word) {
    uint32_t s = (uint16_t)~sum + (uint16_t)~old_word + new_word;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s SOCKET ADDRESS PEER NETMASK MTU\n", argv[0]);
        return 1;
    }
    char name[NAME_LEN];
    int fd = create_device(argv[1], argv[2], argv[3], argv[4], atoi(argv[5]), name);
    if (fd < 0) return 1;
    printf("device %s\n", name);
    fflush(stdout);
    alarm(20); /* SIGALRM ends the process: exit by signal, never a hang */

    unsigned char pkt[65536 + 4];
    for (;;) {
        ssize_t n = read(fd, pkt, sizeof(pkt));
        if (n < 0) return fail("read");
        /* 4-byte header: flags, then the EtherType (big endian). */
        if (n < 4 + 40 + 8) continue;
        unsigned flags = (pkt[0] << 8) | pkt[1];
        unsigned proto = (pkt[2] << 8) | pkt[3];
        unsigned char *ip = pkt + 4;
        /* IPv6, next header ICMPv6, type 128 (echo request). */
        if (proto != 0x86dd || (ip[0] >> 4) != 6 || ip[6] != 58 || ip[40] != 128) continue;

        unsigned char tmp[16];
        memcpy(tmp, ip + 8, 16);
        memcpy(ip + 8, ip + 24, 16);
        memcpy(ip + 24, tmp, 16);
        ip[40] = 129; /* echo reply; addresses swapped leave the sum alone */
        uint16_t sum = (ip[42] << 8) | ip[43];
        sum = checksum_update(sum, 128 << 8 | ip[41], 129 << 8 | ip[41]);
        ip[42] = sum >> 8;
        ip[43] = sum & 0xff;
        if (write(fd, pkt, n) != n) return fail("write reply");
        printf("pi flags=0x%04x proto=0x%04x\n", flags, proto);
        return 0;
    }
}
